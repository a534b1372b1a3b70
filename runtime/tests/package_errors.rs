//! Every way a package can be bad fails with its own code, and is never run.

mod common;

use common::*;
use ed25519_dalek::SigningKey;
use outpost_runtime::package::manifest::Manifest;
use outpost_runtime::package::signing::{key_file_text, SignatureFile};
use outpost_runtime::package::{Package, TrustedKeys, MANIFEST_FILE, SIGNATURE_FILE};
use outpost_runtime::{Config, ImageInput, Predictor};

fn open_code(pkg: &TestPackage) -> u32 {
    Predictor::open(&pkg.path, &pkg.config())
        .expect_err("a bad package must not open")
        .code()
}

/// Byte range of an entry's data inside the archive.
fn entry_range(archive: &[u8], name: &str) -> std::ops::Range<usize> {
    let mut a = tar::Archive::new(archive);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let start = e.raw_file_position() as usize;
            return start..start + e.size() as usize;
        }
    }
    panic!("no entry {name}");
}

/// Writes a tar with exactly these entries.
fn raw_archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *bytes).unwrap();
    }
    b.into_inner().unwrap()
}

fn rewrite(pkg: &TestPackage, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(&pkg.path).unwrap();
    f(&mut bytes);
    std::fs::write(&pkg.path, bytes).unwrap();
}

#[test]
fn a_good_package_opens_from_file_bytes_and_directory() {
    let pkg = cls_package();
    let p = pkg.open();
    assert_eq!(p.manifest().labels, vec!["0", "180"]);
    // Same files unpacked in a directory.
    let dir = pkg.dir.path().join("unpacked");
    std::fs::create_dir(&dir).unwrap();
    let bytes = std::fs::read(&pkg.path).unwrap();
    tar::Archive::new(&bytes[..]).unpack(&dir).unwrap();
    Predictor::open(&dir, &pkg.config()).unwrap();
    let trusted = TrustedKeys::load(std::slice::from_ref(&pkg.key_dir)).unwrap();
    Package::from_bytes(bytes, &trusted).unwrap();
}

#[test]
fn tampered_manifest_is_refused() {
    let pkg = cls_package();
    rewrite(&pkg, |b| {
        let r = entry_range(b, MANIFEST_FILE);
        // Change the model name's first letter: still valid JSON, no longer signed.
        let text = String::from_utf8(b[r.clone()].to_vec()).unwrap();
        let at = r.start + text.find("\"test\"").unwrap() + 1;
        b[at] = b'T';
    });
    assert_eq!(open_code(&pkg), 3004);
}

#[test]
fn tampered_artifact_is_refused() {
    let pkg = cls_package();
    rewrite(&pkg, |b| {
        let r = entry_range(b, "model.onnx");
        b[r.start + r.len() / 2] ^= 0x01;
    });
    assert_eq!(open_code(&pkg), 3006);
    // The same from memory and from a directory (same-size tampering, so only
    // the hash can tell).
    let bytes = std::fs::read(&pkg.path).unwrap();
    let trusted = TrustedKeys::load(std::slice::from_ref(&pkg.key_dir)).unwrap();
    let from_memory = Package::from_bytes(bytes.clone(), &trusted).unwrap();
    assert_eq!(from_memory.artifact("model.onnx").unwrap_err().code(), 3006);
    let dir = pkg.dir.path().join("unpacked");
    std::fs::create_dir(&dir).unwrap();
    tar::Archive::new(&bytes[..]).unpack(&dir).unwrap();
    let err = Predictor::open(&dir, &pkg.config()).unwrap_err();
    assert_eq!(err.code(), 3006);
}

/// Artifacts are hashed when read: a device never reads (or pays for) one it
/// does not run, and a tampered one it does not run cannot reach it. Checking the
/// whole package still finds it.
#[test]
fn tampered_artifact_the_device_does_not_run_is_found_by_a_full_check() {
    let onnx = cls_onnx();
    let mut manifest = cls_manifest(&onnx);
    let notes = b"notes for another target".to_vec();
    manifest
        .artifacts
        .push(outpost_runtime::package::describe_artifact(
            "notes.txt",
            outpost_runtime::package::manifest::ArtifactFormat::Other,
            "cpu",
            outpost_runtime::package::manifest::Precision::Fp32,
            &notes,
        ));
    let pkg = write_package_with(&manifest, vec![("model.onnx", onnx), ("notes.txt", notes)]);
    rewrite(&pkg, |b| {
        let r = entry_range(b, "notes.txt");
        b[r.start] ^= 0x01;
    });
    let p = pkg.open();
    let img = std::fs::read(shared().join("images/text_upside_down.png")).unwrap();
    assert_eq!(
        p.infer(ImageInput::Encoded(&img))
            .unwrap()
            .classifications()
            .unwrap()[0]
            .label,
        "180"
    );
    let trusted = TrustedKeys::load(std::slice::from_ref(&pkg.key_dir)).unwrap();
    let package = Package::open(&pkg.path, &trusted).unwrap();
    assert_eq!(
        package.artifact("model.onnx").unwrap().len(),
        manifest.artifacts[0].size as usize
    );
    assert_eq!(package.verify_artifacts().unwrap_err().code(), 3006);
    assert_eq!(package.artifact("notes.txt").unwrap_err().code(), 3006);
    // Only listed artifacts can be read.
    assert_eq!(package.artifact(MANIFEST_FILE).unwrap_err().code(), 3009);
}

#[test]
fn truncated_packages_are_refused() {
    for cut in [0.5, 0.999, 0.0] {
        let pkg = cls_package();
        rewrite(&pkg, |b| {
            let len = (b.len() as f64 * cut) as usize;
            b.truncate(len);
        });
        assert_eq!(open_code(&pkg), 3002, "cut at {cut}");
    }
    // Cut exactly between entries, after the end-of-archive marker is gone.
    let pkg = cls_package();
    rewrite(&pkg, |b| {
        let r = entry_range(b, SIGNATURE_FILE);
        b.truncate(r.end.div_ceil(512) * 512);
    });
    assert_eq!(open_code(&pkg), 3002);
}

#[test]
fn unsigned_package_is_refused() {
    let pkg = cls_package();
    rewrite(&pkg, |b| {
        let m = b[entry_range(b, MANIFEST_FILE)].to_vec();
        let model = b[entry_range(b, "model.onnx")].to_vec();
        *b = raw_archive(&[(MANIFEST_FILE, &m), ("model.onnx", &model)]);
    });
    assert_eq!(open_code(&pkg), 3003);
}

#[test]
fn package_signed_by_another_key_is_refused() {
    let pkg = cls_package();
    let other = SigningKey::from_bytes(&[9; 32]);
    std::fs::write(
        pkg.key_dir.join("public.key"),
        key_file_text(other.verifying_key().as_bytes()),
    )
    .unwrap();
    assert_eq!(open_code(&pkg), 3005);
}

#[test]
fn unknown_format_version_is_refused_even_when_signed() {
    let pkg = cls_package();
    rewrite(&pkg, |b| {
        let m = b[entry_range(b, MANIFEST_FILE)].to_vec();
        let mut v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        v["format_version"] = 2.into();
        let m = serde_json::to_vec_pretty(&v).unwrap();
        let sig = SignatureFile::sign(&signing_key(), &m).to_json();
        let model = b[entry_range(b, "model.onnx")].to_vec();
        *b = raw_archive(&[
            (MANIFEST_FILE, &m),
            (SIGNATURE_FILE, &sig),
            ("model.onnx", &model),
        ]);
    });
    assert_eq!(open_code(&pkg), 3007);
}

#[test]
fn unlisted_missing_and_garbage_entries_are_refused() {
    let onnx = cls_onnx();
    let manifest = cls_manifest(&onnx);
    let m = manifest.to_canonical_json();
    let sig = SignatureFile::sign(&signing_key(), &m).to_json();
    let pkg = cls_package();
    // An extra file no signature covers.
    std::fs::write(
        &pkg.path,
        raw_archive(&[
            (MANIFEST_FILE, &m),
            (SIGNATURE_FILE, &sig),
            ("model.onnx", &onnx),
            ("evil.sh", b"rm -rf /"),
        ]),
    )
    .unwrap();
    assert_eq!(open_code(&pkg), 3002);
    // The artifact is missing.
    std::fs::write(
        &pkg.path,
        raw_archive(&[(MANIFEST_FILE, &m), (SIGNATURE_FILE, &sig)]),
    )
    .unwrap();
    assert_eq!(open_code(&pkg), 3009);
    // Not an archive at all.
    std::fs::write(&pkg.path, vec![0x42; 4096]).unwrap();
    assert_eq!(open_code(&pkg), 3002);
    // A signed, well-formed manifest that breaks the schema.
    let mut bad: serde_json::Value = serde_json::from_slice(&m).unwrap();
    bad["labels"] = serde_json::json!([]);
    let bad = serde_json::to_vec(&bad).unwrap();
    let sig = SignatureFile::sign(&signing_key(), &bad).to_json();
    std::fs::write(
        &pkg.path,
        raw_archive(&[
            (MANIFEST_FILE, &bad),
            (SIGNATURE_FILE, &sig),
            ("model.onnx", &onnx),
        ]),
    )
    .unwrap();
    assert_eq!(open_code(&pkg), 3008);
    let _: Manifest = manifest;
}

#[test]
fn missing_package_and_missing_trust_are_config_errors() {
    let pkg = cls_package();
    let err = Predictor::open(pkg.dir.path().join("nope.opk"), &pkg.config()).unwrap_err();
    assert_eq!(err.code(), 3001);
    let no_keys = Config {
        trusted_keys: Some(vec![]),
        ..Config::default()
    };
    assert_eq!(
        Predictor::open(&pkg.path, &no_keys).unwrap_err().code(),
        1003
    );
    let missing_key = Config {
        trusted_keys: Some(vec![pkg.dir.path().join("absent.key")]),
        ..Config::default()
    };
    assert_eq!(
        Predictor::open(&pkg.path, &missing_key).unwrap_err().code(),
        1004
    );
    let gpu = Config {
        backend: Some(outpost_runtime::BackendKind::Gpu),
        ..pkg.config()
    };
    assert_eq!(Predictor::open(&pkg.path, &gpu).unwrap_err().code(), 4001);
}

#[test]
fn corrupt_truncated_and_empty_images_are_errors() {
    let p = cls_package().open();
    let jpeg = std::fs::read(shared().join("images/chelsea.jpg")).unwrap();
    let png = std::fs::read(shared().join("images/text_lines.png")).unwrap();
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        ("empty", vec![], 1102),
        ("text", b"hello".to_vec(), 1101),
        ("jpeg header only", jpeg[..200].to_vec(), 1101),
        ("png cut short", png[..png.len() / 3].to_vec(), 1101),
        (
            "jpeg with garbage body",
            {
                let mut v = jpeg[..2].to_vec();
                v.extend_from_slice(&[0xFF; 300]);
                v
            },
            1101,
        ),
    ];
    for (name, bytes, code) in cases {
        let err = p.infer(ImageInput::Encoded(&bytes)).expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err}");
    }
    // A truncated JPEG body decodes what it has (libjpeg fills the rest) or fails
    // cleanly; it never panics.
    let _ = p.infer(ImageInput::Encoded(&jpeg[..jpeg.len() / 2]));
}

/// Random byte flips, truncations and extensions of a good package, from memory
/// and from a file: each one opens or fails with a package code, and never panics.
#[test]
fn mutated_packages_never_panic() {
    let pkg = cls_package();
    let good = std::fs::read(&pkg.path).unwrap();
    let trusted = TrustedKeys::load(std::slice::from_ref(&pkg.key_dir)).unwrap();
    // Mutations are concentrated on the headers, manifest and signature, where
    // the parsing happens (the model's bytes are only hashed).
    let model = entry_range(&good, "model.onnx");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let path = pkg.dir.path().join("mutated.opk");
    for round in 0..600 {
        let mut bytes = good.clone();
        match round % 4 {
            0 | 1 => {
                for _ in 0..1 + next() % 8 {
                    let at = (next() % model.start as u64) as usize;
                    bytes[at] ^= 1 << (next() % 8);
                }
            }
            2 => bytes.truncate((next() % bytes.len() as u64) as usize),
            _ => bytes.extend((0..next() % 2048).map(|_| next() as u8)),
        }
        let from_memory = Package::from_bytes(bytes.clone(), &trusted);
        std::fs::write(&path, &bytes).unwrap();
        let from_file = Package::open(&path, &trusted);
        for result in [from_memory, from_file] {
            match result {
                Ok(p) => {
                    if let Err(e) = p.verify_artifacts() {
                        assert!((3000..3100).contains(&e.code()), "round {round}: {e}");
                    }
                }
                Err(e) => assert!((3000..3100).contains(&e.code()), "round {round}: {e}"),
            }
        }
    }
}
