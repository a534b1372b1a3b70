//! Helpers shared by the trainer's end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared`, relative to the workspace root.
pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// Runs `outpost-trainer` with two CPU threads.
pub fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost-trainer"))
        .args(args)
        .env("OUTPOST_THREADS", "2")
        .output()
        .expect("outpost-trainer runs")
}

/// EfficientNet-Lite0's `preprocess` object.
pub const EFFNET_PREPROCESS: &str = r#"{"resize":{"mode":"short_side_center_crop","short_side":256,"width":224,"height":224},"mean":[127,127,127],"std":[128,128,128]}"#;

/// The EfficientNet-Lite0 model folder (model.onnx, labels.txt).
pub fn effnet() -> PathBuf {
    shared().join("models/efficientnet_lite0")
}

/// The fixed split of issue 3 over the first `first` images of imagenet-sample's
/// labels.tsv: every 10th (from the first) is copied into `dir/calib`, the others
/// are listed in `dir/eval.tsv`, at most `eval_max` of them. Also writes
/// EfficientNet's preprocessing to `dir/p.json`.
pub fn imagenet_split(dir: &Path, first: usize, eval_max: usize) {
    let sample = shared().join("datasets/imagenet-sample");
    std::fs::create_dir_all(dir.join("calib")).unwrap();
    let tsv = std::fs::read_to_string(sample.join("labels.tsv")).unwrap();
    let mut list = String::from("file\tclass_index\n");
    let mut listed = 0;
    for (i, line) in tsv.lines().skip(1).take(first).enumerate() {
        let (file, class) = line.split_once('\t').unwrap();
        if i % 10 == 0 {
            std::fs::copy(sample.join(file), dir.join("calib").join(file)).unwrap();
        } else if listed < eval_max {
            list.push_str(&format!("{}\t{class}\n", sample.join(file).display()));
            listed += 1;
        }
    }
    std::fs::write(dir.join("eval.tsv"), list).unwrap();
    std::fs::write(dir.join("p.json"), EFFNET_PREPROCESS).unwrap();
}

/// Parses a successful command's JSON stdout.
pub fn json_out(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}
