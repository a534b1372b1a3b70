//! Detection evaluation: mAP against YOLO txt ground truth, and INT8-vs-FP32
//! agreement for YOLOv8.

mod common;

use common::{shared, trainer};

use std::path::{Path, PathBuf};
use std::process::Output;

const YOLO_PRE: &str = r#"{"resize":{"mode":"letterbox","width":640,"height":640,"pad_value":114},"mean":[0,0,0],"std":[255,255,255]}"#;

fn image_path(name: &str) -> PathBuf {
    let photo = shared().join("images").join(name);
    if photo.exists() {
        photo
    } else {
        shared().join("datasets/imagenet-sample").join(name)
    }
}

fn evaluate(dir: &Path, model: &Path, extra: &[&str]) -> Output {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let mut args: Vec<String> = vec![
        "evaluate".into(),
        "--model".into(),
        model.to_str().unwrap().into(),
        "--task".into(),
        "detection".into(),
        "--preprocess".into(),
        p("p.json"),
        "--labels".into(),
        shared()
            .join("models/yolov8_fall/labels.txt")
            .to_str()
            .unwrap()
            .into(),
        "--dataset".into(),
        p("images"),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    trainer(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The images of `yolov8_fall_detections.json` with the reference boxes written
/// as YOLO txt labels in a sibling `labels/` folder.
fn reference_as_yolo(dir: &Path) {
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(shared().join("reference/yolov8_fall_detections.json")).unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("labels")).unwrap();
    std::fs::write(dir.join("p.json"), YOLO_PRE).unwrap();
    for (name, boxes) in reference.as_object().unwrap() {
        std::fs::copy(image_path(name), dir.join("images").join(name)).unwrap();
        let mut txt = String::new();
        for b in boxes.as_array().unwrap() {
            let f = |k: &str| b[k].as_f64().unwrap();
            txt.push_str(&format!(
                "{} {} {} {} {}\n",
                b["index"],
                (f("x1") + f("x2")) / 2.0,
                (f("y1") + f("y2")) / 2.0,
                f("x2") - f("x1"),
                f("y2") - f("y1")
            ));
        }
        let stem = Path::new(name).file_stem().unwrap().to_str().unwrap();
        std::fs::write(dir.join("labels").join(format!("{stem}.txt")), txt).unwrap();
    }
}

/// The same reference boxes as Pascal VOC xml (in `Annotations/`) and as one
/// COCO json file, in pixels.
fn reference_as_voc_and_coco(dir: &Path) {
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(shared().join("reference/yolov8_fall_detections.json")).unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("Annotations")).unwrap();
    let (mut images, mut annotations) = (Vec::new(), Vec::new());
    for (id, (name, boxes)) in reference.as_object().unwrap().iter().enumerate() {
        let bytes = std::fs::read(image_path(name)).unwrap();
        let rgb = outpost_runtime::ImageInput::Encoded(&bytes)
            .to_rgb()
            .unwrap();
        let (w, h) = (f64::from(rgb.width), f64::from(rgb.height));
        images.push(serde_json::json!({"id": id, "file_name": name, "width": w, "height": h}));
        let mut xml = format!(
            "<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        );
        for b in boxes.as_array().unwrap() {
            let f = |k: &str| b[k].as_f64().unwrap();
            let (x1, y1, x2, y2) = (f("x1") * w, f("y1") * h, f("x2") * w, f("y2") * h);
            let label = b["label"].as_str().unwrap();
            xml.push_str(&format!(
                "<object><name>{label}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            ));
            annotations.push(serde_json::json!({
                "id": annotations.len(), "image_id": id, "category_id": b["index"].as_u64().unwrap() + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1]
            }));
        }
        xml.push_str("</annotation>");
        let stem = Path::new(name).file_stem().unwrap().to_str().unwrap();
        std::fs::write(dir.join("Annotations").join(format!("{stem}.xml")), xml).unwrap();
    }
    let coco = serde_json::json!({
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "Normal"}, {"id": 2, "name": "Fall"}],
    });
    std::fs::write(dir.join("coco.json"), coco.to_string()).unwrap();
}

#[test]
fn voc_xml_and_coco_json_ground_truth_give_the_same_map() {
    let dir = tempfile::tempdir().unwrap();
    reference_as_yolo(dir.path());
    std::fs::remove_dir_all(dir.path().join("labels")).unwrap();
    reference_as_voc_and_coco(dir.path());
    let model = shared().join("models/yolov8_fall/model.onnx");
    let voc = evaluate(dir.path(), &model, &[]);
    assert!(
        voc.status.success(),
        "{}",
        String::from_utf8_lossy(&voc.stderr)
    );
    let voc: serde_json::Value = serde_json::from_slice(&voc.stdout).unwrap();
    let coco_path = dir.path().join("coco.json");
    let coco = evaluate(
        dir.path(),
        &model,
        &["--annotations", coco_path.to_str().unwrap()],
    );
    assert!(
        coco.status.success(),
        "{}",
        String::from_utf8_lossy(&coco.stderr)
    );
    let coco: serde_json::Value = serde_json::from_slice(&coco.stdout).unwrap();
    for v in [&voc, &coco] {
        assert_eq!(v["truth_boxes"], 8, "{v}");
        assert!(v["map50"].as_f64().unwrap() >= 0.99, "{v}");
    }
    assert_eq!(voc["truth"], "label-files");
    assert_eq!(coco["truth"], "coco-json");
    assert!((voc["map50_95"].as_f64().unwrap() - coco["map50_95"].as_f64().unwrap()).abs() < 1e-6);
    // A category that is not a label is refused by name.
    std::fs::write(
        &coco_path,
        r#"{"images":[],"annotations":[],"categories":[{"id":1,"name":"Dog"}]}"#,
    )
    .unwrap();
    let o = evaluate(
        dir.path(),
        &model,
        &["--annotations", coco_path.to_str().unwrap()],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"Dog\""));
}

#[test]
fn yolov8_fp32_reproduces_reference_boxes_as_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    reference_as_yolo(dir.path());
    let model = shared().join("models/yolov8_fall/model.onnx");
    let o = evaluate(dir.path(), &model, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("{v}");
    assert_eq!(v["images"], 13);
    assert_eq!(v["truth"], "label-files");
    assert_eq!(v["truth_boxes"], 8);
    assert!(v["map50"].as_f64().unwrap() >= 0.99, "{v}");
    assert!(v["map50_95"].as_f64().unwrap() >= 0.95, "{v}");

    // A label naming a class the model does not have is an error with the file and line.
    std::fs::write(dir.path().join("labels/rocket.txt"), "7 0.5 0.5 0.1 0.1\n").unwrap();
    let o = evaluate(dir.path(), &model, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rocket.txt line 1"), "{err}");
}

/// INT8 from our quantiser agrees with FP32 (pseudo ground truth) at mAP@0.5 >= 0.90.
/// Calibration: every 50th imagenet-sample image from the first (20); evaluation:
/// every 50th from the 26th (20 others). Slow in debug builds, hence ignored.
#[test]
#[ignore]
fn yolov8_int8_agrees_with_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.json"), YOLO_PRE).unwrap();
    std::fs::create_dir_all(d.join("calib")).unwrap();
    std::fs::create_dir_all(d.join("images")).unwrap();
    let sample = shared().join("datasets/imagenet-sample");
    let mut files: Vec<_> = std::fs::read_dir(&sample)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().unwrap();
        match i % 50 {
            0 => std::fs::copy(f, d.join("calib").join(name))
                .map(|_| ())
                .unwrap(),
            25 => std::fs::copy(f, d.join("images").join(name))
                .map(|_| ())
                .unwrap(),
            _ => {}
        }
    }
    let fp32 = shared().join("models/yolov8_fall/model.onnx");
    let o = trainer(&[
        "quantize",
        "--model",
        fp32.to_str().unwrap(),
        "--preprocess",
        d.join("p.json").to_str().unwrap(),
        "--calibration",
        d.join("calib").to_str().unwrap(),
        "--method",
        "minmax",
        "--task",
        "detection",
        "--labels",
        shared()
            .join("models/yolov8_fall/labels.txt")
            .to_str()
            .unwrap(),
        "--dataset",
        d.join("images").to_str().unwrap(),
        "--latency-runs",
        "1",
        "--json",
        "--out",
        d.join("int8.onnx").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // No labels beside the images: the report measures agreement with FP32.
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["verdict"]["metric"], "map50");
    assert!(report["dataset"]["truth"]
        .as_str()
        .unwrap()
        .contains("agreement with the FP32"));
    assert_eq!(report["fp32"]["map50"], 1.0);
    assert!(report["int8"]["truth_boxes"].as_u64().unwrap() > 0);
    // `evaluate` with the FP32 model as reference gives the same agreement.
    let o = evaluate(
        d,
        &d.join("int8.onnx"),
        &["--reference-model", fp32.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("YOLOv8 INT8 vs FP32 on 20 images: {v}");
    assert_eq!(v["truth"], "reference-model");
    assert!(v["truth_boxes"].as_u64().unwrap() > 0);
    assert_eq!(v["map50"], report["int8"]["map50"]);
    assert_eq!(v["map50_95"], report["int8"]["map50_95"]);
    assert!(v["map50"].as_f64().unwrap() >= 0.90, "{v}");
}
