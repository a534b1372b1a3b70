//! `outpost-trainer evaluate`: accuracy on label lists and ImageFolder trees,
//! against onnxruntime's reference answers, with bad inputs reported.

mod common;

use common::{shared, trainer};

use std::path::Path;
use std::process::Output;

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

#[test]
fn label_list_accuracy_matches_onnxruntime_reference() {
    let dir = tempfile::tempdir().unwrap();
    let sample = shared().join("datasets/imagenet-sample");
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(shared().join("reference/efficientnet_lite0_imagenet_sample.json")).unwrap(),
    )
    .unwrap();
    // Every 20th image: 50 images, absolute paths in the list.
    let tsv = std::fs::read_to_string(sample.join("labels.tsv")).unwrap();
    let rows: Vec<(&str, usize)> = tsv
        .lines()
        .skip(1)
        .step_by(20)
        .map(|l| {
            let (f, c) = l.split_once('\t').unwrap();
            (f, c.trim().parse().unwrap())
        })
        .collect();
    let mut list = String::from("file\tclass_index\n");
    let (mut ref_top1, mut ref_top5) = (0, 0);
    for (f, c) in &rows {
        list.push_str(&format!("{}\t{c}\n", sample.join(f).display()));
        let top: Vec<usize> = reference["top5_by_image"][f]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        ref_top1 += usize::from(top[0] == *c);
        ref_top5 += usize::from(top.contains(c));
    }
    std::fs::write(dir.path().join("list.tsv"), list).unwrap();
    std::fs::write(
        dir.path().join("p.json"),
        r#"{"resize":{"mode":"short_side_center_crop","short_side":256,"width":224,"height":224},"mean":[127,127,127],"std":[128,128,128]}"#,
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let eff = shared().join("models/efficientnet_lite0");
    let v = json(&trainer(&[
        "evaluate",
        "--model",
        eff.join("model.onnx").to_str().unwrap(),
        "--preprocess",
        &format!("{d}/p.json"),
        "--labels",
        eff.join("labels.txt").to_str().unwrap(),
        "--dataset",
        &format!("{d}/list.tsv"),
        "--json",
    ]));
    let n = rows.len() as f64;
    assert_eq!(v["images"], rows.len());
    let (top1, top5) = (v["top1"].as_f64().unwrap(), v["top5"].as_f64().unwrap());
    eprintln!(
        "50 images: top-1 {top1} (onnxruntime {}), top-5 {top5} (onnxruntime {})",
        ref_top1 as f64 / n,
        ref_top5 as f64 / n
    );
    assert!((top1 - ref_top1 as f64 / n).abs() <= 1.0 / n + 1e-9);
    assert!((top5 - ref_top5 as f64 / n).abs() <= 1.0 / n + 1e-9);
    assert!(v["per_class"].as_array().unwrap().len() == 50);
}

/// An ImageFolder tree for the PP-OCR orientation classifier, in a temp dir.
fn orientation_tree(dir: &Path) {
    for (class, image) in [("0", "text_lines.png"), ("180", "text_upside_down.png")] {
        std::fs::create_dir_all(dir.join("data").join(class)).unwrap();
        std::fs::copy(
            shared().join("images").join(image),
            dir.join("data").join(class).join(image),
        )
        .unwrap();
    }
    std::fs::write(dir.join("labels.txt"), "0\n180\n").unwrap();
    std::fs::write(
        dir.join("p.json"),
        r#"{"resize":{"mode":"stretch","width":192,"height":48},"mean":[127.5,127.5,127.5],"std":[127.5,127.5,127.5]}"#,
    )
    .unwrap();
}

fn evaluate_cls(dir: &Path) -> Output {
    let d = dir.to_str().unwrap();
    trainer(&[
        "evaluate",
        "--model",
        shared().join("models/ppocr_v4/cls.onnx").to_str().unwrap(),
        "--preprocess",
        &format!("{d}/p.json"),
        "--labels",
        &format!("{d}/labels.txt"),
        "--dataset",
        &format!("{d}/data"),
        "--json",
    ])
}

#[test]
fn image_folder_counts_classes_and_skips_corrupt_images_by_name() {
    let dir = tempfile::tempdir().unwrap();
    orientation_tree(dir.path());
    std::fs::write(
        dir.path().join("data/0/broken.jpg"),
        b"\xFF\xD8\xFFnot really",
    )
    .unwrap();
    let v = json(&evaluate_cls(dir.path()));
    assert_eq!(v["images"], 2);
    assert_eq!(v["top1"], 1.0);
    let skipped = v["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0]["file"].as_str().unwrap().ends_with("broken.jpg"));
    assert_eq!(skipped[0]["error_code"], 1101);
    let per_class = v["per_class"].as_array().unwrap();
    assert_eq!(per_class[1]["label"], "180");
}

#[test]
fn bad_datasets_and_mismatched_labels_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    orientation_tree(dir.path());
    std::fs::create_dir_all(dir.path().join("data/90")).unwrap();
    let o = evaluate_cls(dir.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"90\" in"));

    let dir = tempfile::tempdir().unwrap();
    orientation_tree(dir.path());
    std::fs::write(dir.path().join("labels.txt"), "0\n90\n180\n").unwrap();
    let o = evaluate_cls(dir.path());
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("3012") && err.contains("3 classes"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    orientation_tree(dir.path());
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let o = evaluate_cls(dir.path());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no images"));
}
