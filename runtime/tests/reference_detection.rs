//! YOLOv8 (fall detection) against onnxruntime's reference outputs.

mod common;

use common::*;
use outpost_runtime::backend::cpu::CpuBackend;
use outpost_runtime::backend::Backend;
use outpost_runtime::decoder::detection::iou;
use outpost_runtime::ImageInput;

#[test]
fn model_alone_matches_reference_output() {
    let r = shared().join("reference");
    let (shape, input) = read_npy(&r.join("yolov8_fall_astronaut_input.npy"));
    let (out_shape, expected) = read_npy(&r.join("yolov8_fall_astronaut_output.npy"));
    let onnx = std::fs::read(shared().join("models/yolov8_fall/model.onnx")).unwrap();
    let backend = CpuBackend::load(&onnx, "images", &shape, 1).unwrap();
    let out = backend.run(&shape, input).unwrap();
    assert_eq!(out[0].shape, out_shape);
    assert_yolov8_output_matches_reference(&out[0].data, &expected, out_shape[2]);
}

/// The DFL head's softmax over axis 1 runs on Outpost's kernel, not tract's slow
/// strided path (the outputs are checked above).
#[test]
fn dfl_softmax_runs_on_the_axis_softmax_kernel() {
    let onnx = std::fs::read(shared().join("models/yolov8_fall/model.onnx")).unwrap();
    let shape = [1, 3, 640, 640];
    let backend = CpuBackend::load(&onnx, "images", &shape, 1).unwrap();
    let profile = backend
        .profile(&shape, &vec![0.5; 3 * 640 * 640], 1)
        .unwrap()
        .unwrap();
    let count = |op: &str| profile.nodes.iter().filter(|n| n.op == op).count();
    assert_eq!(count("OutpostAxisSoftmax"), 1);
    assert_eq!(count("Softmax"), 0);
}

fn image_path(name: &str) -> std::path::PathBuf {
    let photo = shared().join("images").join(name);
    if photo.exists() {
        photo
    } else {
        shared().join("datasets/imagenet-sample").join(name)
    }
}

#[test]
fn end_to_end_boxes_match_reference_detections() {
    let reference = load_json(&shared().join("reference/yolov8_fall_detections.json"));
    let predictor = yolov8_package().open();
    let (mut worst_conf, mut worst_iou, mut matched) = (0.0f32, 1.0f32, 0);
    for (name, expected) in reference.as_object().unwrap() {
        let bytes = std::fs::read(image_path(name)).unwrap();
        let got = predictor.infer(ImageInput::Encoded(&bytes)).unwrap();
        let got = got.detections().unwrap().to_vec();
        let mut used = vec![false; got.len()];
        for e in expected.as_array().unwrap() {
            let conf = e["confidence"].as_f64().unwrap() as f32;
            let class = e["index"].as_u64().unwrap() as usize;
            let rect = ["x1", "y1", "x2", "y2"].map(|k| e[k].as_f64().unwrap() as f32);
            let best = got
                .iter()
                .enumerate()
                .filter(|(i, d)| !used[*i] && d.index == class)
                .map(|(i, d)| (i, iou(&rect, &[d.x1, d.y1, d.x2, d.y2]), d.confidence))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((i, overlap, c)) if overlap >= 0.95 && (c - conf).abs() <= 0.03 => {
                    used[i] = true;
                    matched += 1;
                    worst_conf = worst_conf.max((c - conf).abs());
                    worst_iou = worst_iou.min(overlap);
                }
                _ => assert!(
                    conf < 0.30,
                    "{name}: reference box {e} (confidence {conf}) has no match in {got:?}"
                ),
            }
        }
        for (d, used) in got.iter().zip(&used) {
            assert!(
                *used || d.confidence < 0.30,
                "{name}: extra box {d:?} not in the reference"
            );
        }
    }
    eprintln!(
        "matched {matched} reference boxes; worst IoU {worst_iou:.4}, worst confidence difference {worst_conf:.4}"
    );
    assert!(matched >= 6, "too few boxes matched: {matched}");
}
