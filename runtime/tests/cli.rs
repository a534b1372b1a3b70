//! The `outpost` binary: info, infer (JSON and table), bench, and error exits.

mod common;

use std::process::{Command, Output};

use common::*;

fn outpost(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_outpost"));
    cmd.args(args)
        .env_remove("OUTPOST_THREADS")
        .env_remove("OUTPOST_TRUSTED_KEYS");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("outpost runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn info_prints_the_manifest_summary() {
    let pkg = cls_package();
    let key = pkg.key_dir.to_str().unwrap();
    let o = outpost(
        &["info", pkg.path.to_str().unwrap(), "--trusted-key", key],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    for needle in [
        "classification",
        "model.onnx",
        "[1, 3, 48, 192]",
        "verified",
        "labels      2",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // The key can also come from the environment.
    let o = outpost(
        &["info", pkg.path.to_str().unwrap(), "--json"],
        &[("OUTPOST_TRUSTED_KEYS", key)],
    );
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["labels"], serde_json::json!(["0", "180"]));
}

/// A package from `outpost-trainer compile` carries the trainer's report; `info`
/// prints its verdict, and copes with a report that holds none.
#[test]
fn info_prints_the_signed_report_verdict() {
    use outpost_runtime::package::describe_artifact;
    use outpost_runtime::package::manifest::{ArtifactFormat, Precision};
    let onnx = cls_onnx();
    for (report, needle) in [
        (
            r#"{"verdict":{"summary":"INT8 is good enough: top-1 99.00% against 99.10% in FP32"}}"#,
            "report      INT8 is good enough: top-1 99.00% against 99.10% in FP32",
        ),
        ("not json", "report      report.json holds no verdict"),
    ] {
        let mut m = cls_manifest(&onnx);
        m.artifacts.push(describe_artifact(
            "report.json",
            ArtifactFormat::Other,
            "cpu",
            Precision::Int8,
            report.as_bytes(),
        ));
        let pkg = write_package_with(
            &m,
            vec![
                ("model.onnx", onnx.clone()),
                ("report.json", report.as_bytes().to_vec()),
            ],
        );
        let key = pkg.key_dir.to_str().unwrap();
        let o = outpost(
            &["info", pkg.path.to_str().unwrap(), "--trusted-key", key],
            &[],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(stdout(&o).contains(needle), "{}", stdout(&o));
    }
    // A package without a report prints no report line.
    let pkg = cls_package();
    let key = pkg.key_dir.to_str().unwrap();
    let o = outpost(
        &["info", pkg.path.to_str().unwrap(), "--trusted-key", key],
        &[],
    );
    assert!(!stdout(&o).contains("report "));
}

/// `outpost infer --json` on one shared photo; must succeed.
fn infer_json(pkg: &TestPackage, photo: &str, extra: &[&str]) -> serde_json::Value {
    let image = shared().join("images").join(photo);
    let mut args = vec![
        "infer",
        pkg.path.to_str().unwrap(),
        image.to_str().unwrap(),
        "--json",
        "--trusted-key",
        pkg.key_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = outpost(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn infer_prints_easyedge_json_for_classification_and_detection() {
    let pkg = efficientnet_package();
    let v = infer_json(&pkg, "chelsea.jpg", &["--top-k", "3"]);
    assert_eq!(v[0]["error_code"], 0);
    let results = v[0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["index"], 282);
    assert_eq!(results[0]["label"], "tiger cat");
    assert!(results[0]["confidence"].as_f64().unwrap() > 0.3);
    assert!(v[0]["cost_ms"].as_f64().unwrap() > 0.0);

    let pkg = yolov8_package();
    let v = infer_json(&pkg, "astronaut.jpg", &[]);
    let boxes = v[0]["results"].as_array().unwrap();
    assert_eq!(boxes.len(), 1);
    assert_eq!(boxes[0]["label"], "Normal");
    for k in ["x1", "y1", "x2", "y2"] {
        let c = boxes[0][k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c), "{k} = {c}");
    }
    assert!((boxes[0]["x2"].as_f64().unwrap() - 0.7523).abs() < 0.01);
}

#[test]
fn infer_reports_bad_images_with_codes_and_fails() {
    let pkg = cls_package();
    let bad = pkg.dir.path().join("bad.jpg");
    std::fs::write(&bad, b"not an image").unwrap();
    let good = shared().join("images/text_lines.png");
    let key = pkg.key_dir.to_str().unwrap();
    let o = outpost(
        &[
            "infer",
            pkg.path.to_str().unwrap(),
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--json",
            "--trusted-key",
            key,
        ],
        &[],
    );
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["error_code"], 0);
    assert_eq!(v[1]["error_code"], 1101);
    // A table for people.
    let o = outpost(
        &[
            "infer",
            pkg.path.to_str().unwrap(),
            good.to_str().unwrap(),
            "--trusted-key",
            key,
        ],
        &[],
    );
    assert!(stdout(&o).contains("confidence"));
    // A tampered package: the message carries the code.
    let mut bytes = std::fs::read(&pkg.path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&pkg.path, bytes).unwrap();
    let o = outpost(
        &[
            "infer",
            pkg.path.to_str().unwrap(),
            good.to_str().unwrap(),
            "--trusted-key",
            key,
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("error 3006"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn bench_json_has_every_stage_and_honours_outpost_threads() {
    let pkg = cls_package();
    let image = shared().join("images/text_lines.png");
    let o = outpost(
        &[
            "bench",
            pkg.path.to_str().unwrap(),
            image.to_str().unwrap(),
            "--json",
            "--runs",
            "5",
            "--trusted-key",
            pkg.key_dir.to_str().unwrap(),
        ],
        &[("OUTPOST_THREADS", "2")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["threads"], 2);
    assert!(v["load_ms"].as_f64().unwrap() > 0.0);
    assert!(v["first_ms"].as_f64().unwrap() > 0.0);
    for stage in ["decode", "preprocess", "model", "postprocess"] {
        let s = &v["stages"][stage];
        let median = s["median_ms"].as_f64().unwrap();
        let p90 = s["p90_ms"].as_f64().unwrap();
        assert!(median >= 0.0 && p90 >= median, "{stage}: {s}");
    }
    assert!(v["stages"]["model"]["median_ms"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 1.0);
    // Without an image it generates one; the table form is readable.
    let o = outpost(
        &[
            "bench",
            pkg.path.to_str().unwrap(),
            "--runs",
            "2",
            "--trusted-key",
            pkg.key_dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success());
    assert!(stdout(&o).contains("preprocess"));
}

/// `bench --profile`: every timed node of the optimised graph, grouped by operator;
/// with one run, the nodes' times fit inside the whole run's.
#[test]
fn bench_profile_accounts_for_every_node() {
    let pkg = cls_package();
    let run = |runs: &str, json: bool| {
        let mut args = vec![
            "bench",
            pkg.path.to_str().unwrap(),
            "--profile",
            "--runs",
            runs,
            "--trusted-key",
            pkg.key_dir.to_str().unwrap(),
        ];
        if json {
            args.push("--json");
        }
        let o = outpost(&args, &[("OUTPOST_THREADS", "1")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    let v: serde_json::Value = serde_json::from_slice(&run("1", true).stdout).unwrap();
    let p = &v["profile"];
    assert_eq!(p["runs"], 1);
    let nodes = p["nodes"].as_array().unwrap();
    let by_op = p["by_op"].as_array().unwrap();
    // The PP-OCR classifier has dozens of convolutions; each node is named and typed.
    assert!(nodes.len() > 20, "{}", nodes.len());
    assert!(nodes
        .iter()
        .all(|n| !n["node"].as_str().unwrap().is_empty() && !n["op"].as_str().unwrap().is_empty()));
    let counted: u64 = by_op.iter().map(|o| o["nodes"].as_u64().unwrap()).sum();
    assert_eq!(counted as usize, nodes.len());
    let share: f64 = by_op.iter().map(|o| o["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-9, "{share}");
    for op in by_op {
        let sum: f64 = nodes
            .iter()
            .filter(|n| n["op"] == op["op"])
            .map(|n| n["ms"].as_f64().unwrap())
            .sum();
        assert!((sum - op["ms"].as_f64().unwrap()).abs() < 1e-9);
    }
    // Slowest first.
    let ms: Vec<f64> = nodes.iter().map(|n| n["ms"].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]));
    let total: f64 = ms.iter().sum();
    assert!(
        total <= p["total_ms"].as_f64().unwrap(),
        "{total} > {}",
        p["total_ms"]
    );
    // The table names the operators.
    let text = stdout(&run("2", false));
    assert!(text.contains("model stage by operator"), "{text}");
    assert!(text.contains(by_op[0]["op"].as_str().unwrap()), "{text}");
}
