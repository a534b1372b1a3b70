//! `outpost-trainer keygen` and `package`: deterministic output, checks that refuse
//! broken packages, and a package the runtime then runs.

mod common;

use common::{shared, trainer};

use std::path::{Path, PathBuf};
use std::process::Output;

use outpost_runtime::package::{Package, TrustedKeys};
use outpost_runtime::{Config, ImageInput, Predictor};

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let o = trainer(&["keygen", "--out", keys.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::write(
            dir.path().join("cls.json"),
            r#"{"color":"RGB","layout":"NCHW","resize":{"mode":"stretch","width":192,"height":48},"mean":[127.5,127.5,127.5],"std":[127.5,127.5,127.5]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("cls.txt"), "0\n180\n").unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn package(&self, model: &Path, labels: &str, task: &str, pre: &str, out: &str) -> Output {
        trainer(&[
            "package",
            "--model",
            model.to_str().unwrap(),
            "--labels",
            &self.path(labels),
            "--task",
            task,
            "--preprocess",
            &self.path(pre),
            "--key",
            &self.path("keys"),
            "--out",
            &self.path(out),
        ])
    }
}

fn cls_model() -> PathBuf {
    shared().join("models/ppocr_v4/cls.onnx")
}

#[test]
fn same_inputs_give_byte_identical_packages_that_run() {
    let f = Fixture::new();
    for out in ["a.opk", "b.opk"] {
        let o = f.package(&cls_model(), "cls.txt", "classification", "cls.json", out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let a = std::fs::read(f.path("a.opk")).unwrap();
    assert_eq!(a, std::fs::read(f.path("b.opk")).unwrap());
    let config = Config {
        trusted_keys: Some(vec![f.path("keys").into()]),
        threads: Some(1),
        ..Config::default()
    };
    let p = Predictor::open(f.path("a.opk"), &config).unwrap();
    assert_eq!(p.manifest().model.name, "cls");
    let img = std::fs::read(shared().join("images/text_upside_down.png")).unwrap();
    let got = p.infer(ImageInput::Encoded(&img)).unwrap();
    let got = got.classifications().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].label, "180", "{got:?}");
    let img = std::fs::read(shared().join("images/text_lines.png")).unwrap();
    let got = p.infer(ImageInput::Encoded(&img)).unwrap();
    assert_eq!(got.classifications().unwrap()[0].label, "0");
}

#[test]
fn mismatches_are_clear_errors_and_write_nothing() {
    let f = Fixture::new();
    std::fs::write(f.dir.path().join("three.txt"), "a\nb\nc\n").unwrap();
    std::fs::write(f.dir.path().join("empty.txt"), "\n").unwrap();
    std::fs::write(
        f.dir.path().join("eff.json"),
        r#"{"resize":{"mode":"stretch","width":200,"height":200},"mean":[0,0,0],"std":[1,1,1]}"#,
    )
    .unwrap();
    std::fs::write(f.dir.path().join("not.onnx"), b"this is not a model").unwrap();
    std::fs::write(
        f.dir.path().join("bad.json"),
        r#"{"resize":{"mode":"zoom"}}"#,
    )
    .unwrap();
    let eff = shared().join("models/efficientnet_lite0/model.onnx");
    let cases: Vec<(PathBuf, &str, &str, &str, &str)> = vec![
        (
            cls_model(),
            "three.txt",
            "classification",
            "cls.json",
            "3 classes",
        ),
        (cls_model(), "cls.txt", "detection", "cls.json", "YOLOv8"),
        (
            cls_model(),
            "empty.txt",
            "classification",
            "cls.json",
            "no labels",
        ),
        (
            eff,
            "cls.txt",
            "classification",
            "eff.json",
            "[1, 3, 224, 224]",
        ),
        (
            f.dir.path().join("not.onnx"),
            "cls.txt",
            "classification",
            "cls.json",
            "3011",
        ),
        (
            cls_model(),
            "cls.txt",
            "classification",
            "bad.json",
            "preprocess",
        ),
    ];
    for (model, labels, task, pre, needle) in cases {
        let o = f.package(&model, labels, task, pre, "out.opk");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{needle}: should fail");
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
        assert!(!f.dir.path().join("out.opk").exists());
    }
}

#[test]
fn keygen_refuses_to_overwrite_a_key() {
    let f = Fixture::new();
    let before = std::fs::read(f.dir.path().join("keys/private.key")).unwrap();
    let o = trainer(&["keygen", "--out", &f.path("keys")]);
    assert!(!o.status.success());
    assert_eq!(
        before,
        std::fs::read(f.dir.path().join("keys/private.key")).unwrap()
    );
}

#[test]
fn int8_artifact_is_packaged_and_chosen_when_asked_or_by_default() {
    let f = Fixture::new();
    let calib = f.dir.path().join("calib");
    std::fs::create_dir_all(&calib).unwrap();
    std::fs::copy(
        shared().join("images/text_lines.png"),
        calib.join("text_lines.png"),
    )
    .unwrap();
    let o = trainer(&[
        "quantize",
        "--model",
        cls_model().to_str().unwrap(),
        "--preprocess",
        &f.path("cls.json"),
        "--calibration",
        calib.to_str().unwrap(),
        "--method",
        "minmax",
        "--out",
        &f.path("int8.onnx"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let package = |out: &str, default: &[&str]| {
        let mut args = vec![
            "package".to_string(),
            "--model".into(),
            cls_model().to_str().unwrap().into(),
            "--labels".into(),
            f.path("cls.txt"),
            "--task".into(),
            "classification".into(),
            "--preprocess".into(),
            f.path("cls.json"),
            "--int8".into(),
            f.path("int8.onnx"),
            "--key".into(),
            f.path("keys"),
            "--out".into(),
            f.path(out),
        ];
        args.extend(default.iter().map(|s| s.to_string()));
        let o = trainer(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    package("both.opk", &[]);
    package("int8.opk", &["--default-precision", "int8"]);
    package("onnx_only.opk", &["--no-precompiled"]);
    let config = |precision| Config {
        trusted_keys: Some(vec![f.path("keys").into()]),
        threads: Some(1),
        precision,
        ..Config::default()
    };
    use outpost_runtime::package::manifest::Precision;
    let img = std::fs::read(shared().join("images/text_upside_down.png")).unwrap();
    let fp32 = Predictor::open(f.path("both.opk"), &config(None)).unwrap();
    assert_eq!(fp32.precision(), Precision::Fp32);
    let int8 = Predictor::open(f.path("both.opk"), &config(Some(Precision::Int8))).unwrap();
    assert_eq!(int8.precision(), Precision::Int8);
    let by_default = Predictor::open(f.path("int8.opk"), &config(None)).unwrap();
    assert_eq!(by_default.precision(), Precision::Int8);
    let asked_fp32 = Predictor::open(f.path("int8.opk"), &config(Some(Precision::Fp32))).unwrap();
    assert_eq!(asked_fp32.precision(), Precision::Fp32);
    // Same decoder and labels; INT8 output differs from FP32 but not by much.
    let a = fp32.infer(ImageInput::Encoded(&img)).unwrap();
    let b = int8.infer(ImageInput::Encoded(&img)).unwrap();
    let (a, b) = (a.classifications().unwrap(), b.classifications().unwrap());
    assert_eq!(a.len(), b.len());
    assert_ne!(a, b, "the INT8 artifact should really run");

    // FP32 ships pre-optimised, and the device loads it; without it
    // (`--no-precompiled`) the ONNX model gives the same results. INT8 (QDQ) ships
    // as ONNX alone: tract 0.23 cannot save QuantizeLinear as NNEF.
    let keys = TrustedKeys::load(&[f.path("keys").into()]).unwrap();
    let listed = |name: &str| -> Vec<(String, String)> {
        let package = Package::open(f.path(name), &keys).unwrap();
        package
            .manifest()
            .artifacts
            .iter()
            .map(|a| (a.file.clone(), a.precision.as_str().to_string()))
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(f, p)| (f.to_string(), p.to_string()))
            .collect()
    };
    assert_eq!(
        listed("both.opk"),
        pairs(&[
            ("model.onnx", "fp32"),
            ("model.nnef.tar", "fp32"),
            ("model_int8.onnx", "int8"),
        ])
    );
    assert_eq!(
        listed("onnx_only.opk"),
        pairs(&[("model.onnx", "fp32"), ("model_int8.onnx", "int8")])
    );
    assert_eq!(fp32.artifact(), "model.nnef.tar");
    assert_eq!(int8.artifact(), "model_int8.onnx");
    {
        let (precision, precompiled, expected) = (Precision::Fp32, &fp32, "model.onnx");
        let plain = Predictor::open(f.path("onnx_only.opk"), &config(Some(precision))).unwrap();
        assert_eq!(plain.artifact(), expected);
        for name in ["text_upside_down.png", "text_lines.png"] {
            let img = std::fs::read(shared().join("images").join(name)).unwrap();
            let x = plain.infer(ImageInput::Encoded(&img)).unwrap();
            let y = precompiled.infer(ImageInput::Encoded(&img)).unwrap();
            let (x, y) = (x.classifications().unwrap(), y.classifications().unwrap());
            assert_eq!(x.len(), y.len());
            for (x, y) in x.iter().zip(y) {
                assert_eq!(x.index, y.index, "{name} {precision:?}");
                assert!(
                    (x.confidence - y.confidence).abs() <= 1e-5,
                    "{name} {precision:?}: {x:?} vs {y:?}"
                );
            }
        }
    }

    // No FP16 artifact: a clear error.
    let err = Predictor::open(f.path("both.opk"), &config(Some(Precision::Fp16))).unwrap_err();
    assert_eq!(err.code(), 3010);
    assert!(err.to_string().contains("fp16"));
}

#[test]
fn licence_flags_write_the_license_section_the_runtime_enforces() {
    let f = Fixture::new();
    // The licence server's key: same file format as keygen's.
    let o = trainer(&["keygen", "--out", &f.path("server")]);
    assert!(o.status.success());
    let base = [
        "package",
        "--model",
        cls_model().to_str().unwrap(),
        "--labels",
        &f.path("cls.txt"),
        "--preprocess",
        &f.path("cls.json"),
        "--key",
        &f.path("keys"),
        "--no-precompiled",
    ]
    .map(String::from)
    .to_vec();
    let run = |extra: &[&str], out: &str| {
        let mut args = base.clone();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--out".to_string(), f.path(out)]);
        trainer(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let server_pub = f.path("server/public.key");
    let o = run(
        &[
            "--license-vendor",
            "acme",
            "--license-key",
            &server_pub,
            "--license-edition",
            "standard",
            "--license-server",
            "https://lic.acme.example",
        ],
        "licensed.opk",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trusted = TrustedKeys::load(&[f.path("keys").into()]).unwrap();
    let pkg = Package::open(f.path("licensed.opk"), &trusted).unwrap();
    let l = pkg.manifest().license.clone().expect("license section");
    assert_eq!(l.vendor, "acme");
    assert_eq!(l.product_id, "cls", "product defaults to the model name");
    assert_eq!(l.edition.as_deref(), Some("standard"));
    assert_eq!(l.server.as_deref(), Some("https://lic.acme.example"));
    let server_key =
        outpost_runtime::package::signing::read_public_key(Path::new(&server_pub)).unwrap();
    assert_eq!(l.keys.len(), 1);
    assert_eq!(l.keys[0].public_key, hex::encode(server_key.as_bytes()));
    // Without a licence the runtime refuses it.
    let licenses = tempfile::tempdir().unwrap();
    let config = Config {
        trusted_keys: Some(vec![f.path("keys").into()]),
        license_dir: Some(licenses.path().into()),
        threads: Some(1),
        ..Config::default()
    };
    let err = Predictor::open(f.path("licensed.opk"), &config).unwrap_err();
    assert_eq!(err.code(), 2013, "{err}");

    // A vendor without a key, a bad vendor id, or a bad server URL are refused.
    let o = run(&["--license-vendor", "acme"], "x.opk");
    assert!(!o.status.success());
    let o = run(
        &["--license-vendor", "ACME!", "--license-key", &server_pub],
        "y.opk",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("3008"), "{o:?}");
    let o = run(
        &[
            "--license-vendor",
            "acme",
            "--license-key",
            &server_pub,
            "--license-server",
            "ftp://x",
        ],
        "z.opk",
    );
    assert!(!o.status.success());
    assert!(!Path::new(&f.path("y.opk")).exists());
}
