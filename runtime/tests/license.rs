//! Licence enforcement end to end: a licensed package opens only with a valid licence
//! in the licence directory, and each failure has its own 2xxx code. Licences are
//! signed here with the licensing crate, as the activation server signs them.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use ed25519_dalek::SigningKey;
use outpost_runtime::outpost_licensing::license_file::KeyEndorsement;
use outpost_runtime::outpost_licensing::{
    key_id, unix_now, Claims, Fingerprint, LicenseFile, LicenseKind, LicenseStore, Serial,
};
use outpost_runtime::package::manifest::{LicenseKey, LicenseRequirement, Manifest};
use outpost_runtime::{Config, ImageInput, Predictor};

const VENDOR: &str = "acme";
const PRODUCT: &str = "ocr-orientation";

/// The licence server's key for these tests (fixed seed: reproducible files).
fn server_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn requirement(keys: &[&SigningKey]) -> LicenseRequirement {
    LicenseRequirement {
        vendor: VENDOR.into(),
        product_id: PRODUCT.into(),
        edition: Some("standard".into()),
        keys: keys
            .iter()
            .map(|k| LicenseKey {
                key_id: key_id(&k.verifying_key()),
                public_key: hex::encode(k.verifying_key().as_bytes()),
            })
            .collect(),
        server: None,
    }
}

fn licensed(mut m: Manifest) -> Manifest {
    m.license = Some(requirement(&[&server_key()]));
    m
}

/// The small orientation classifier, sold per device.
fn licensed_cls() -> TestPackage {
    let onnx = cls_onnx();
    write_package(&licensed(cls_manifest(&onnx)), onnx)
}

/// A valid per-device licence for this machine.
fn claims() -> Claims {
    let now = unix_now();
    Claims {
        serial: Serial::generate().unwrap(),
        kind: LicenseKind::PerDevice,
        vendor: VENDOR.into(),
        models: vec![PRODUCT.into()],
        edition: "standard".into(),
        fingerprint: Some(Fingerprint::of_this_device(VENDOR).unwrap()),
        package_name: None,
        issued_at: now - 3600,
        expires_at: now + 90 * 86_400,
        activation_id: "act-test".into(),
        key_id: String::new(),
    }
}

fn sign(c: Claims) -> LicenseFile {
    LicenseFile::sign(c, &server_key(), None)
}

struct Device {
    pkg: TestPackage,
    licenses: tempfile::TempDir,
}

impl Device {
    fn new(pkg: TestPackage) -> Device {
        Device {
            pkg,
            licenses: tempfile::tempdir().unwrap(),
        }
    }
    fn store(&self) -> LicenseStore {
        LicenseStore::new(self.licenses.path())
    }
    fn install(&self, lic: &LicenseFile) {
        self.store().install(lic).unwrap();
    }
    fn config(&self) -> Config {
        Config {
            license_dir: Some(self.licenses.path().to_path_buf()),
            ..self.pkg.config()
        }
    }
    fn open_with(&self, config: &Config) -> Result<Predictor, outpost_runtime::Error> {
        Predictor::open(&self.pkg.path, config)
    }
    fn code(&self) -> u32 {
        self.open_with(&self.config()).unwrap_err().code()
    }
}

fn text_lines() -> Vec<u8> {
    std::fs::read(shared().join("images/text_lines.png")).unwrap()
}

#[test]
fn licensed_package_needs_a_licence_and_runs_with_one() {
    let d = Device::new(licensed_cls());
    let err = d.open_with(&d.config()).unwrap_err();
    assert_eq!(err.code(), 2013, "{err}");
    assert!(
        err.to_string().contains("outpost license activate"),
        "{err}"
    );

    let lic = sign(claims());
    d.install(&lic);
    let p = d.open_with(&d.config()).unwrap();
    assert_eq!(p.license().unwrap(), &lic.claims);
    // The licensed model gives exactly the open model's result.
    let open = cls_package().open();
    let image = text_lines();
    let a = p.infer(ImageInput::Encoded(&image)).unwrap();
    let b = open.infer(ImageInput::Encoded(&image)).unwrap();
    assert_eq!(a.classifications().unwrap(), b.classifications().unwrap());
    assert!(open.license().is_none());
}

#[test]
fn efficientnet_under_licence_matches_the_reference() {
    let s = shared().join("models/efficientnet_lite0");
    let onnx = std::fs::read(s.join("model.onnx")).unwrap();
    let m = manifest_for(
        &onnx,
        "image",
        outpost_runtime::package::manifest::Task::Classification,
        efficientnet_preprocess(),
        labels(&s.join("labels.txt")),
    );
    let d = Device::new(write_package(&licensed(m), onnx));
    assert_eq!(d.code(), 2013);
    d.install(&sign(claims()));
    let p = d.open_with(&d.config()).unwrap();
    let image = std::fs::read(shared().join("images/chelsea.jpg")).unwrap();
    let top = p.infer(ImageInput::Encoded(&image)).unwrap();
    let top = top.classifications().unwrap();
    let reference = load_json(&shared().join("reference/efficientnet_lite0_top5.json"));
    let want = &reference["chelsea.jpg"];
    for (i, c) in top.iter().take(3).enumerate() {
        assert_eq!(c.index as u64, want[i]["index"].as_u64().unwrap());
        let conf = want[i]["confidence"].as_f64().unwrap() as f32;
        // The runtime-core end-to-end tolerance (image resizing differs from PIL's).
        assert!(
            (c.confidence - conf).abs() <= 0.03,
            "{} vs {conf}",
            c.confidence
        );
    }
}

#[test]
fn open_models_need_no_licence() {
    let pkg = cls_package();
    let licenses = tempfile::tempdir().unwrap();
    let config = Config {
        license_dir: Some(licenses.path().join("never-created")),
        serial: Some("not a serial".into()),
        ..pkg.config()
    };
    let p = Predictor::open(&pkg.path, &config).unwrap();
    assert!(p.license().is_none());
    assert!(!licenses.path().join("never-created").exists());
}

#[test]
fn each_rule_fails_with_its_own_code() {
    type Edit = fn(&mut Claims);
    let cases: [(u32, &str, Edit); 7] = [
        (2004, "expired", |c| c.expires_at = unix_now() - 60),
        (2011, "licence copied from another machine", |c| {
            let mut facts =
                outpost_runtime::outpost_licensing::fingerprint::MachineFacts::default();
            for (k, v) in [
                ("machine", "m2"),
                ("board", "b2"),
                ("cpu", "c2"),
                ("mac", "02:00:00:00:00:02"),
            ] {
                facts.values.insert(k.into(), v.into());
            }
            c.fingerprint = Some(Fingerprint::from_facts(&facts, VENDOR).unwrap());
        }),
        (2009, "another vendor", |c| c.vendor = "globex".into()),
        (2009, "another model", |c| c.models = vec!["yolov8".into()]),
        (2016, "another edition", |c| c.edition = "lite".into()),
        (2008, "another app", |c| {
            c.kind = LicenseKind::ProductLine;
            c.package_name = Some("com.other.app".into());
        }),
        (2012, "issued after the device's clock", |c| {
            c.issued_at = unix_now() + 86_400
        }),
    ];
    for (code, what, edit) in cases {
        let d = Device::new(licensed_cls());
        let mut c = claims();
        edit(&mut c);
        d.install(&sign(c));
        let err = d.open_with(&d.config()).unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err}");
    }
}

#[test]
fn serial_setting_picks_the_licence_and_is_checked_offline() {
    let d = Device::new(licensed_cls());
    let lic = sign(claims());
    d.install(&lic);
    let with_serial = |s: &str| Config {
        serial: Some(s.into()),
        ..d.config()
    };
    // Its own serial, typed in lower case without dashes: runs.
    let typed = lic.claims.serial.compact().to_lowercase();
    d.open_with(&with_serial(&typed)).unwrap();
    // A typo: 2001, before anything else.
    let mut bad = lic.claims.serial.compact().into_bytes();
    bad[5] = if bad[5] == b'A' { b'B' } else { b'A' };
    let err = d
        .open_with(&with_serial(std::str::from_utf8(&bad).unwrap()))
        .unwrap_err();
    assert_eq!(err.code(), 2001, "{err}");
    assert!(
        !err.to_string().contains(&lic.claims.serial.compact()),
        "{err}"
    );
    // Another, well-formed serial that was never activated here: 2013.
    let other = Serial::generate().unwrap().to_string();
    assert_eq!(d.open_with(&with_serial(&other)).unwrap_err().code(), 2013);
}

#[test]
fn product_line_licences_bind_the_app() {
    let d = Device::new(licensed_cls());
    let mut c = claims();
    c.kind = LicenseKind::ProductLine;
    c.package_name = Some("com.acme.scanner".into());
    d.install(&sign(c));
    assert_eq!(d.code(), 2008, "no app id set");
    let app = |id: &str| Config {
        app_id: Some(id.into()),
        ..d.config()
    };
    assert_eq!(
        d.open_with(&app("com.acme.other")).unwrap_err().code(),
        2008
    );
    d.open_with(&app("com.acme.scanner")).unwrap();
}

#[test]
fn tampered_corrupted_and_foreign_licences_are_refused() {
    // Tampered: a later expiry written into the file breaks the signature.
    let d = Device::new(licensed_cls());
    let lic = sign(claims());
    let path = d.store().install(&lic).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let later = lic.claims.expires_at + 365 * 86_400;
    let text = text.replace(&lic.claims.expires_at.to_string(), &later.to_string());
    std::fs::write(&path, text).unwrap();
    assert_eq!(d.code(), 2015);

    // Corrupted (truncated) file: 2014, naming the file.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = d.open_with(&d.config()).unwrap_err();
    assert_eq!(err.code(), 2014, "{err}");
    assert!(err.to_string().contains(&file_name(&path)), "{err}");

    // Signed by a key the package does not trust.
    let d = Device::new(licensed_cls());
    d.install(&LicenseFile::sign(
        claims(),
        &SigningKey::from_bytes(&[7; 32]),
        None,
    ));
    assert_eq!(d.code(), 2015);
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn rotated_server_keys_still_open_old_packages() {
    let d = Device::new(licensed_cls());
    let new_key = SigningKey::from_bytes(&[43; 32]);
    let endorsement = KeyEndorsement::new(&server_key(), &new_key.verifying_key());
    d.install(&LicenseFile::sign(claims(), &new_key, Some(endorsement)));
    d.open_with(&d.config()).unwrap();
}

#[test]
fn clock_moved_backwards_is_refused() {
    let d = Device::new(licensed_cls());
    d.install(&sign(claims()));
    d.open_with(&d.config()).unwrap();
    // The device saw a time a day ahead of now (the clock was since turned back).
    std::fs::write(
        d.licenses.path().join("clock.json"),
        format!("{{\"last_seen\": {}}}", unix_now() + 86_400),
    )
    .unwrap();
    let err = d.open_with(&d.config()).unwrap_err();
    assert_eq!(err.code(), 2012, "{err}");
}

#[test]
fn a_malformed_licence_section_is_a_manifest_error() {
    let onnx = cls_onnx();
    let mut m = licensed(cls_manifest(&onnx));
    if let Some(l) = m.license.as_mut() {
        l.keys[0].key_id = "0000000000000000".into();
    }
    // The package writer refuses it, and so does the manifest parser on a device.
    let err = outpost_runtime::package::PackageWriter::new()
        .finish(&m, &signing_key())
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), 3008, "{err}");
    let err = Manifest::parse(&m.to_canonical_json()).unwrap_err();
    assert_eq!(err.code(), 3008, "{err}");
    assert!(err.to_string().contains("license.keys"), "{err}");
}

// ---- the CLI ----

fn outpost(args: &[&str], license_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .env_remove("OUTPOST_SERIAL")
        .env_remove("OUTPOST_APP_ID")
        .env("OUTPOST_LICENSE_DIR", license_dir)
        .output()
        .expect("outpost runs")
}

#[test]
fn cli_imports_lists_and_enforces_licences() {
    let d = Device::new(licensed_cls());
    let dir = d.licenses.path();
    let key = d.pkg.key_dir.to_str().unwrap().to_string();
    let pkg = d.pkg.path.to_str().unwrap().to_string();
    let image = shared().join("images/text_lines.png");
    let image = image.to_str().unwrap();

    let o = outpost(&["infer", &pkg, image, "--trusted-key", &key], dir);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("error 2013"));

    // A licence for another device is refused at import when the package is named.
    let work = tempfile::tempdir().unwrap();
    let mut foreign = claims();
    foreign.fingerprint = Some(Fingerprint::parse(&format!("v1;cpu={}", "ab".repeat(16))).unwrap());
    let foreign_file = work.path().join("foreign.json");
    std::fs::write(&foreign_file, sign(foreign).to_json()).unwrap();
    let o = outpost(
        &[
            "license",
            "import",
            foreign_file.to_str().unwrap(),
            "--package",
            &pkg,
            "--trusted-key",
            &key,
        ],
        dir,
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("error 2011"),
        "{o:?}"
    );
    assert!(
        LicenseStore::new(dir).list().unwrap().is_empty(),
        "nothing installed"
    );

    // Garbage: 2014.
    let junk = work.path().join("junk.json");
    std::fs::write(&junk, b"\x00\x01licence?").unwrap();
    let o = outpost(&["license", "import", junk.to_str().unwrap()], dir);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("error 2014"),
        "{o:?}"
    );

    // The good one installs, shows up in status, and opens the package.
    let lic = sign(claims());
    let good = work.path().join("licence.json");
    std::fs::write(&good, lic.to_json()).unwrap();
    let o = outpost(
        &[
            "license",
            "import",
            good.to_str().unwrap(),
            "--package",
            &pkg,
            "--trusted-key",
            &key,
        ],
        dir,
    );
    assert!(o.status.success(), "{o:?}");
    let o = outpost(
        &[
            "license",
            "status",
            "--json",
            "--package",
            &pkg,
            "--trusted-key",
            &key,
        ],
        dir,
    );
    assert!(o.status.success(), "{o:?}");
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = status["licenses"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], "active");
    assert_eq!(rows[0]["models"][0], PRODUCT);
    assert_eq!(rows[0]["serial"], lic.claims.serial.masked());
    assert!(rows[0]["days_left"].as_u64().unwrap() >= 89);
    assert_eq!(status["package"]["error_code"], 0);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !text.contains(&lic.claims.serial.compact()),
        "status shows the full serial"
    );

    let o = outpost(
        &["infer", &pkg, image, "--trusted-key", &key, "--json"],
        dir,
    );
    assert!(o.status.success(), "{o:?}");
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let open = cls_package().open();
    let want = open
        .infer(ImageInput::Encoded(&std::fs::read(image).unwrap()))
        .unwrap();
    let want = want.classifications().unwrap();
    let got = &out[0]["results"][0];
    assert_eq!(
        got["index"].as_u64().unwrap(),
        want[0].index as u64,
        "{out}"
    );
}
