//! Helpers shared by the end-to-end tests: fixtures from `../shared`, signed
//! packages built in temporary directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use outpost_runtime::package::manifest::{
    ArtifactFormat, DecoderSpec, InputSpec, Manifest, ModelInfo, Precision, Preprocess, Task,
    FORMAT_VERSION,
};
use outpost_runtime::package::signing::{key_file_text, PUBLIC_KEY_FILE};
use outpost_runtime::package::{describe_artifact, PackageWriter};
use outpost_runtime::{Config, Predictor};

/// `../shared`, relative to the workspace root.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let arr: ndarray::ArrayD<f32> = ndarray_npy::read_npy(path).expect("reference npy");
    (arr.shape().to_vec(), arr.iter().copied().collect())
}

/// YOLOv8's `[1, 4 + classes, n]` output against onnxruntime's: box coordinates
/// within 0.05 px, class scores within 1e-3.
pub fn assert_yolov8_output_matches_reference(actual: &[f32], expected: &[f32], n: usize) {
    assert_eq!(actual.len(), expected.len());
    let (mut box_err, mut score_err) = (0.0f32, 0.0f32);
    for (i, (a, b)) in actual.iter().zip(expected).enumerate() {
        let d = (a - b).abs();
        if i / n < 4 {
            box_err = box_err.max(d);
        } else {
            score_err = score_err.max(d);
        }
    }
    eprintln!("max abs difference: boxes {box_err:.5} px, class scores {score_err:e}");
    assert!(box_err <= 0.05, "box coordinates off by {box_err} px");
    assert!(score_err <= 1e-3, "class scores off by {score_err}");
}

pub fn load_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("reference json")).expect("valid json")
}

pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

pub fn efficientnet_preprocess() -> Preprocess {
    serde_json::from_str(
        r#"{"color":"RGB","layout":"NCHW","resize":{"mode":"short_side_center_crop","short_side":256,"width":224,"height":224},"mean":[127,127,127],"std":[128,128,128]}"#,
    )
    .unwrap()
}

pub fn yolov8_preprocess() -> Preprocess {
    serde_json::from_str(
        r#"{"color":"RGB","layout":"NCHW","resize":{"mode":"letterbox","width":640,"height":640,"pad_value":114},"mean":[0,0,0],"std":[255,255,255]}"#,
    )
    .unwrap()
}

pub fn labels(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// A manifest for one ONNX model.
pub fn manifest_for(
    onnx: &[u8],
    input: &str,
    task: Task,
    preprocess: Preprocess,
    labels: Vec<String>,
) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        model: ModelInfo {
            name: "test".into(),
            version: "1".into(),
        },
        task,
        inputs: vec![InputSpec {
            name: input.into(),
            shape: preprocess.tensor_shape().to_vec(),
            preprocess,
        }],
        decoder: DecoderSpec::default_for(task),
        threshold: None,
        labels,
        artifacts: vec![describe_artifact(
            "model.onnx",
            ArtifactFormat::Onnx,
            "cpu",
            Precision::Fp32,
            onnx,
        )],
        license: None,
        default_precision: None,
    }
}

/// A signed package in a temporary directory, with the public key beside it.
pub struct TestPackage {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub key_dir: PathBuf,
}

impl TestPackage {
    pub fn config(&self) -> Config {
        Config {
            trusted_keys: Some(vec![self.key_dir.clone()]),
            threads: Some(1),
            ..Config::default()
        }
    }

    pub fn open(&self) -> Predictor {
        Predictor::open(&self.path, &self.config()).expect("package opens")
    }
}

pub fn write_package(manifest: &Manifest, onnx: Vec<u8>) -> TestPackage {
    write_package_with(manifest, vec![("model.onnx", onnx)])
}

/// A signed package of these files (the manifest must list them).
pub fn write_package_with(manifest: &Manifest, files: Vec<(&str, Vec<u8>)>) -> TestPackage {
    let dir = tempfile::tempdir().unwrap();
    let key = signing_key();
    let key_dir = dir.path().join("keys");
    std::fs::create_dir_all(&key_dir).unwrap();
    std::fs::write(
        key_dir.join(PUBLIC_KEY_FILE),
        key_file_text(key.verifying_key().as_bytes()),
    )
    .unwrap();
    let mut writer = PackageWriter::new();
    for (name, bytes) in files {
        writer.add_file(name, bytes).unwrap();
    }
    let bytes = writer.finish(manifest, &key).unwrap();
    let path = dir.path().join("model.opk");
    std::fs::write(&path, bytes).unwrap();
    TestPackage { dir, path, key_dir }
}

pub fn efficientnet_package() -> TestPackage {
    let s = shared().join("models/efficientnet_lite0");
    let onnx = std::fs::read(s.join("model.onnx")).unwrap();
    let m = manifest_for(
        &onnx,
        "image",
        Task::Classification,
        efficientnet_preprocess(),
        labels(&s.join("labels.txt")),
    );
    write_package(&m, onnx)
}

pub fn yolov8_package() -> TestPackage {
    let s = shared().join("models/yolov8_fall");
    let onnx = std::fs::read(s.join("model.onnx")).unwrap();
    let m = manifest_for(
        &onnx,
        "images",
        Task::Detection,
        yolov8_preprocess(),
        labels(&s.join("labels.txt")),
    );
    write_package(&m, onnx)
}

pub fn cls_preprocess() -> Preprocess {
    serde_json::from_str(
        r#"{"color":"RGB","layout":"NCHW","resize":{"mode":"stretch","width":192,"height":48},"mean":[127.5,127.5,127.5],"std":[127.5,127.5,127.5]}"#,
    )
    .unwrap()
}

/// The small PP-OCR orientation classifier (585 KB): quick to load in error tests.
pub fn cls_onnx() -> Vec<u8> {
    std::fs::read(shared().join("models/ppocr_v4/cls.onnx")).unwrap()
}

pub fn cls_manifest(onnx: &[u8]) -> Manifest {
    let mut m = manifest_for(
        onnx,
        "x",
        Task::Classification,
        cls_preprocess(),
        vec!["0".into(), "180".into()],
    );
    // The model ends in a softmax already.
    m.decoder = DecoderSpec::Classification {
        softmax: false,
        top_k: 2,
    };
    m
}

pub fn cls_package() -> TestPackage {
    let onnx = cls_onnx();
    write_package(&cls_manifest(&onnx), onnx)
}
