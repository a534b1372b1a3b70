//! `outpost-trainer compile` (and `quantize --dataset`): one signed package with
//! FP32, INT8 and the report; the report's numbers pinned for a small fixed setup;
//! mixed precision under an accuracy budget; the runtime reproducing the reported
//! accuracy from the package.

mod common;

use common::{effnet, imagenet_split, json_out, trainer};

use std::path::Path;
use std::process::Output;

use outpost_runtime::package::manifest::Precision;
use outpost_runtime::package::{Package, TrustedKeys};
use outpost_runtime::{Config, ImageInput, Predictor};

/// Keys in `dir/keys`, the split of the first `first` images (at most `eval_max`
/// evaluated), then `compile` of EfficientNet-Lite0 into `dir/eff.opk`.
fn compile(dir: &Path, first: usize, eval_max: usize, extra: &[&str]) -> Output {
    imagenet_split(dir, first, eval_max);
    let keys = dir.join("keys");
    if !keys.exists() {
        assert!(trainer(&["keygen", "--out", keys.to_str().unwrap()])
            .status
            .success());
    }
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let labels = effnet().join("labels.txt");
    let labels = match extra.iter().position(|a| *a == "--labels") {
        Some(i) => extra[i + 1].to_string(),
        None => labels.to_str().unwrap().to_string(),
    };
    let mut args: Vec<String> = [
        "compile",
        "--model",
        effnet().join("model.onnx").to_str().unwrap(),
        "--labels",
        &labels,
        "--preprocess",
        &path("p.json"),
        "--calibration",
        &path("calib"),
        "--dataset",
        &path("eval.tsv"),
        "--key",
        &path("keys"),
        "--out",
        &path("eff.opk"),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rest = extra.iter();
    while let Some(a) = rest.next() {
        if *a == "--labels" {
            rest.next();
        } else {
            args.push(a.to_string());
        }
    }
    trainer(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn trusted(dir: &Path) -> Vec<std::path::PathBuf> {
    vec![dir.join("keys/public.key")]
}

/// Top-1 of a package on `dir/eval.tsv`, run by the runtime itself.
fn runtime_top1(dir: &Path, precision: Option<Precision>) -> (f64, Precision) {
    let predictor = Predictor::open(
        dir.join("eff.opk"),
        &Config {
            threads: Some(2),
            precision,
            trusted_keys: Some(trusted(dir)),
            ..Config::default()
        },
    )
    .unwrap();
    let list = std::fs::read_to_string(dir.join("eval.tsv")).unwrap();
    let (mut right, mut total) = (0, 0);
    for line in list.lines().skip(1) {
        let (file, class) = line.split_once('\t').unwrap();
        let bytes = std::fs::read(file).unwrap();
        let p = predictor.infer(ImageInput::Encoded(&bytes)).unwrap();
        let best = p.classifications().unwrap()[0].index;
        right += usize::from(best == class.parse::<usize>().unwrap());
        total += 1;
    }
    (right as f64 / total as f64, predictor.precision())
}

/// The report's numbers that must not drift, rounded where floats are involved.
fn pinned(report: &serde_json::Value) -> serde_json::Value {
    let round = |v: &serde_json::Value, digits: i32| {
        let f = 10f64.powi(digits);
        (v.as_f64().unwrap() * f).round() / f
    };
    let layers = report["layers"].as_array().unwrap();
    serde_json::json!({
        "verdict": {
            "metric": report["verdict"]["metric"],
            "fp32": round(&report["verdict"]["fp32"], 6),
            "int8": round(&report["verdict"]["int8"], 6),
            "loss_points": round(&report["verdict"]["loss_points"], 4),
            "good_enough": report["verdict"]["good_enough"],
        },
        "top5": [round(&report["fp32"]["top5"], 6), round(&report["int8"]["top5"], 6)],
        "dataset_images": report["dataset"]["images"],
        "size": report["size"]["fp32_bytes"].as_u64().unwrap().to_string() + " -> "
            + &report["size"]["int8_bytes"].as_u64().unwrap().to_string(),
        "calibration": {
            "method": report["calibration"]["method"],
            "images": report["calibration"]["images"],
            "weights": report["calibration"]["weights"],
            "activations": report["calibration"]["activations"],
            "folded_batch_norms": report["calibration"]["folded_batch_norms"],
        },
        "kept_fp32": report["kept_fp32"],
        "layers": layers.len(),
        "worst_layers": layers.iter().take(3).map(|l| {
            serde_json::json!([l["node"], round(&l["cosine"], 3)])
        }).collect::<Vec<_>>(),
    })
}

/// Compares with the golden file; `OUTPOST_UPDATE_GOLDEN=1` rewrites it.
fn check_golden(name: &str, actual: &serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("OUTPOST_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let golden =
        std::fs::read_to_string(&path).expect("golden file (OUTPOST_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&golden).unwrap(),
        *actual,
        "report drifted from {}; actual:\n{text}",
        path.display()
    );
}

/// Checks the page stands alone and says what the JSON says.
fn check_html(html: &str, report: &serde_json::Value) {
    for banned in ["http:", "https:", "<script", " src=", "@import", "url("] {
        assert!(
            !html.contains(banned),
            "report.html must not contain {banned:?}"
        );
    }
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(html, opts).expect("well-formed XHTML");
    let by_id = |id: &str| {
        doc.descendants()
            .find(|n| n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("no #{id}"))
    };
    let verdict = by_id("verdict");
    assert_eq!(
        verdict.attribute("class").unwrap().contains("good"),
        report["verdict"]["good_enough"].as_bool().unwrap()
    );
    assert_eq!(
        verdict.text().unwrap(),
        report["verdict"]["summary"].as_str().unwrap()
    );
    // FP32 and INT8 top-1 appear in the metrics table as percentages.
    let metrics: String = by_id("metrics")
        .descendants()
        .filter_map(|n| n.text())
        .collect();
    for key in ["fp32", "int8"] {
        let v = format!("{:.2}%", report["verdict"][key].as_f64().unwrap() * 100.0);
        assert!(metrics.contains(&v), "{metrics} lacks {v}");
    }
    // One bar per layer in the sensitivity chart.
    let bars = doc.descendants().filter(|n| n.has_tag_name("rect")).count();
    assert_eq!(bars, report["layers"].as_array().unwrap().len());
    assert!(by_id("calibration")
        .descendants()
        .any(|n| n.text() == Some("method")));
}

/// A small fixed setup (16 calibration images, 48 evaluated, minmax): the report
/// is pinned, the package holds both models and the report, and `evaluate` on the
/// package at each precision gives the reported numbers.
#[test]
fn golden_report_of_a_small_fixed_setup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = compile(
        d,
        160,
        48,
        &[
            "--method",
            "minmax",
            "--threads",
            "2",
            "--latency-runs",
            "3",
        ],
    );
    let report = json_out(&o);
    check_golden("effnet_small_minmax.json", &pinned(&report));
    assert!(report["latency"]["fp32_ms"].as_f64().unwrap() > 0.0);
    assert!(report["latency"]["int8_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(report["latency"]["threads"], 2);

    // The package: both models for cpu (FP32 also pre-optimised), the report
    // inside equal to the one beside it.
    let keys = TrustedKeys::load(&trusted(d)).unwrap();
    let package = Package::open(d.join("eff.opk"), &keys).unwrap();
    let files: Vec<(&str, &str)> = package
        .manifest()
        .artifacts
        .iter()
        .map(|a| (a.file.as_str(), a.precision.as_str()))
        .collect();
    assert_eq!(
        files,
        [
            ("model.onnx", "fp32"),
            ("model.nnef.tar", "fp32"),
            ("model_int8.onnx", "int8"),
            ("report.json", "int8"),
            ("report.html", "int8")
        ]
    );
    assert_eq!(package.manifest().default_precision, None);
    let beside = d.join("eff.report");
    for name in ["report.json", "report.html"] {
        assert_eq!(
            package.artifact(name).unwrap(),
            std::fs::read(beside.join(name)).unwrap(),
            "{name}"
        );
    }
    let inside: serde_json::Value =
        serde_json::from_slice(&package.artifact("report.json").unwrap()).unwrap();
    assert_eq!(inside, report);
    check_html(
        std::str::from_utf8(&package.artifact("report.html").unwrap()).unwrap(),
        &report,
    );

    // `evaluate` on the package reproduces both numbers.
    for (precision, key) in [("int8", "int8"), ("fp32", "fp32")] {
        let v = json_out(&trainer(&[
            "evaluate",
            "--model",
            d.join("eff.opk").to_str().unwrap(),
            "--trusted-key",
            d.join("keys/public.key").to_str().unwrap(),
            "--precision",
            precision,
            "--dataset",
            d.join("eval.tsv").to_str().unwrap(),
            "--json",
        ]));
        assert_eq!(v["top1"], report["verdict"][key], "{precision}");
        assert_eq!(v["top5"], report[key]["top5"], "{precision}");
    }
}

/// Under a budget the fully quantised model misses, the most sensitive layers stay
/// FP32 until it holds; the runtime picks INT8 from the package by default and
/// gets exactly the accuracy the report gives.
#[test]
fn accuracy_budget_keeps_the_most_sensitive_layers_in_fp32() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = compile(
        d,
        160,
        48,
        &[
            "--method",
            "minmax",
            "--accuracy-budget",
            "0.5",
            "--default-precision",
            "int8",
            "--latency-runs",
            "1",
        ],
    );
    let report = json_out(&o);
    let mixed = &report["mixed_precision"];
    let trials = mixed["trials"].as_array().unwrap();
    // The fully quantised model must miss the budget, or nothing is tested.
    assert!(
        trials[0]["loss_points"].as_f64().unwrap() > 0.5,
        "{trials:?}"
    );
    assert_eq!(mixed["met"], true);
    assert!(report["verdict"]["loss_points"].as_f64().unwrap() <= 0.5);
    assert_eq!(report["verdict"]["good_enough"], true);

    // Kept: a prefix of the sensitivity ranking, all for the budget, and the
    // chart marks exactly those as FP32.
    let kept: Vec<&str> = report["kept_fp32"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert_eq!(k["reason"], "accuracy budget");
            k["node"].as_str().unwrap()
        })
        .collect();
    assert!(!kept.is_empty());
    let layers = report["layers"].as_array().unwrap();
    let ranking: Vec<&str> = layers.iter().map(|l| l["node"].as_str().unwrap()).collect();
    assert_eq!(kept, ranking[..kept.len()]);
    let fp32_rows: Vec<&str> = layers
        .iter()
        .filter(|l| l["precision"] == "fp32")
        .map(|l| l["node"].as_str().unwrap())
        .collect();
    assert_eq!(fp32_rows, kept);
    // The chosen count is the smallest tried that met the budget.
    let chosen = trials
        .iter()
        .filter(|t| t["loss_points"].as_f64().unwrap() <= 0.5 + 1e-9)
        .map(|t| t["kept_fp32"].as_u64().unwrap())
        .min()
        .unwrap();
    assert_eq!(chosen as usize, kept.len());

    // The device side: INT8 by default, the reported accuracy.
    let (top1, precision) = runtime_top1(d, None);
    assert_eq!(precision, Precision::Int8);
    assert_eq!(top1, report["verdict"]["int8"].as_f64().unwrap());
    let (top1, precision) = runtime_top1(d, Some(Precision::Fp32));
    assert_eq!(precision, Precision::Fp32);
    assert_eq!(top1, report["verdict"]["fp32"].as_f64().unwrap());
}

#[test]
fn bad_compile_requests_are_clear_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let two = d.join("two.txt");
    std::fs::write(&two, "a\nb\n").unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["--accuracy-budget=-1"], "--accuracy-budget -1"),
        (&["--accuracy-budget", "NaN"], "0 or more"),
        (&["--labels", two.to_str().unwrap()], "labels list 2"),
    ];
    for (extra, needle) in cases {
        let o = compile(d, 20, 5, extra);
        assert!(!o.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!d.join("eff.opk").exists());
    }
    // Without --dataset there is nothing to measure.
    let o = trainer(&[
        "compile",
        "--model",
        effnet().join("model.onnx").to_str().unwrap(),
        "--labels",
        effnet().join("labels.txt").to_str().unwrap(),
        "--preprocess",
        d.join("p.json").to_str().unwrap(),
        "--calibration",
        d.join("calib").to_str().unwrap(),
        "--key",
        d.join("keys").to_str().unwrap(),
        "--out",
        d.join("eff.opk").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--dataset is required"));
    // A budget needs a dataset to be measured on.
    let o = trainer(&[
        "quantize",
        "--model",
        effnet().join("model.onnx").to_str().unwrap(),
        "--preprocess",
        d.join("p.json").to_str().unwrap(),
        "--calibration",
        d.join("calib").to_str().unwrap(),
        "--accuracy-budget",
        "1",
        "--out",
        d.join("int8.onnx").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--dataset"));
    assert!(!d.join("int8.onnx").exists());
    assert!(!d.join("eff.opk").exists());
}

/// EfficientNet-Lite0 with the fixed split of issue 3: every 10th image of
/// `imagenet-sample` (from the first) calibrates, the other 900 evaluate. With the
/// default method and a 1.0-point budget, INT8 top-1 is within a point of FP32,
/// the INT8 model is at most 30% of the size, and the runtime running the package
/// gets the top-1 the report gives. Slow in debug builds, hence ignored.
#[test]
#[ignore]
fn efficientnet_int8_on_900_images_within_one_point_and_the_runtime_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = compile(
        d,
        1000,
        900,
        &[
            "--accuracy-budget",
            "1.0",
            "--latency-runs",
            "5",
            "--default-precision",
            "int8",
        ],
    );
    let report = json_out(&o);
    assert_eq!(report["calibration"]["images"], 100);
    assert_eq!(report["dataset"]["images"], 900);
    let v = &report["verdict"];
    eprintln!(
        "EfficientNet-Lite0, 900 images: {}; size {:.1}%; latency FP32 {:.1} ms, INT8 {:.1} ms; kept FP32: {}",
        v["summary"],
        report["size"]["ratio"].as_f64().unwrap() * 100.0,
        report["latency"]["fp32_ms"].as_f64().unwrap(),
        report["latency"]["int8_ms"].as_f64().unwrap(),
        report["kept_fp32"]
    );
    assert_eq!(report["mixed_precision"]["met"], true);
    assert!(v["loss_points"].as_f64().unwrap() <= 1.0 + 1e-9);
    assert!(report["size"]["ratio"].as_f64().unwrap() <= 0.30);
    let (top1, precision) = runtime_top1(d, None);
    assert_eq!(precision, Precision::Int8);
    assert_eq!(top1, v["int8"].as_f64().unwrap());
}
