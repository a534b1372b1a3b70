//! The Swift API. The sources in `ios/` (the Swift module `Outpost`, and the
//! header and module map of its C module `OutpostFFI`) must be what uniffi
//! generates from this library now. The functions behind them must give the CLI's
//! results and the documented error codes. There is no Swift compiler here, so
//! these tests call the same Rust functions that the generated Swift calls.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod support;

use camino::Utf8PathBuf;
use outpost::swift::{
    license_import, license_status, Config, ModelTask, OutpostError, PixelFormat, Predictor,
};
use serde_json::Value;
use support::{assert_same_results, check_generated, cli_results, lib_dir, root};
use uniffi_bindgen::bindings::{generate_swift_bindings, SwiftBindingsOptions};

#[test]
fn the_checked_in_swift_bindings_are_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = Utf8PathBuf::from_path_buf(tmp.path().to_path_buf()).unwrap();
    let library = Utf8PathBuf::from_path_buf(lib_dir().join("liboutpost.so")).unwrap();
    let config = Utf8PathBuf::from_path_buf(root().join("ios/uniffi.toml")).unwrap();
    generate_swift_bindings(SwiftBindingsOptions {
        generate_swift_sources: true,
        generate_headers: true,
        generate_modulemap: true,
        source: library,
        out_dir: out_dir.clone(),
        xcframework: false,
        module_name: Some("OutpostFFI".into()),
        modulemap_filename: Some("module.modulemap".into()),
        metadata_no_deps: true,
        link_frameworks: Vec::new(),
        config: Some(config),
    })
    .expect("uniffi generates the Swift bindings");
    let mut generated: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    generated.sort();
    assert_eq!(
        generated,
        ["Outpost.swift", "OutpostFFI.h", "module.modulemap"],
        "uniffi wrote other files than ios/ holds"
    );
    for (file, checked_in) in [
        ("Outpost.swift", "ios/Sources/Outpost/Outpost.swift"),
        ("OutpostFFI.h", "ios/include/OutpostFFI.h"),
        ("module.modulemap", "ios/include/module.modulemap"),
    ] {
        check_generated(
            &root().join(checked_in),
            &std::fs::read(tmp.path().join(file)).unwrap(),
            "OUTPOST_BLESS=1 cargo test --workspace --test swift_api",
        );
    }
}

fn config_for(package: &common::TestPackage) -> Config {
    Config {
        threads: Some(1),
        trusted_keys: vec![package.key_dir.to_string_lossy().into_owned()],
        ..Config::default()
    }
}

fn open(package: &common::TestPackage) -> std::sync::Arc<Predictor> {
    Predictor::new(
        package.path.to_string_lossy().into_owned(),
        config_for(package),
    )
    .expect("package opens")
}

/// The `results` array of a `Results.json`.
fn json_results(json: &str) -> Value {
    serde_json::from_str::<Value>(json).unwrap()["results"].clone()
}

#[test]
fn classification_and_detection_match_the_cli() {
    let images = common::shared().join("images");
    let classifier = common::efficientnet_package();
    let p = open(&classifier);
    let info = p.info();
    assert_eq!(info.task, ModelTask::Classification);
    assert_eq!(info.labels.len(), 1000);
    assert_eq!(info.input_shape, [1, 3, 224, 224]);
    for name in ["chelsea.jpg", "coffee.jpg"] {
        let image = images.join(name);
        let results = p.infer(std::fs::read(&image).unwrap()).unwrap();
        assert_eq!(results.task, ModelTask::Classification);
        let json = json_results(&results.json);
        assert_same_results(&json, &cli_results(&classifier, &image), name);
        // The typed records hold what the JSON holds.
        assert_eq!(
            results.classifications.len(),
            json.as_array().unwrap().len()
        );
        for (c, j) in results.classifications.iter().zip(json.as_array().unwrap()) {
            assert_eq!(Some(c.index as u64), j["index"].as_u64());
            assert_eq!(Some(c.label.as_str()), j["label"].as_str());
            assert_eq!(
                Some(c.confidence),
                j["confidence"].as_f64().map(|x| x as f32)
            );
        }
    }

    let detector = common::yolov8_package();
    let p = open(&detector);
    let image = images.join("astronaut.jpg");
    let results = p.infer(std::fs::read(&image).unwrap()).unwrap();
    assert_eq!(results.task, ModelTask::Detection);
    assert!(!results.detections.is_empty());
    let json = json_results(&results.json);
    assert_same_results(&json, &cli_results(&detector, &image), "astronaut.jpg");
    for (d, j) in results.detections.iter().zip(json.as_array().unwrap()) {
        assert_eq!(Some(d.label.as_str()), j["label"].as_str());
        assert_eq!(Some(d.x1), j["x1"].as_f64().map(|x| x as f32));
        assert_eq!(Some(d.y2), j["y2"].as_f64().map(|x| x as f32));
    }
}

#[test]
fn rgba_pixels_with_padded_rows_equal_the_encoded_image() {
    // What the Swift wrapper does with a CGImage: draw it into RGBA rows.
    let rgb = image::open(common::shared().join("images/chelsea.jpg"))
        .unwrap()
        .into_rgb8();
    let (w, h) = rgb.dimensions();
    let mut png = Vec::new();
    rgb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let stride = w as usize * 4 + 12;
    let mut pixels = vec![0u8; stride * h as usize];
    for (x, y, p) in rgb.enumerate_pixels() {
        let at = y as usize * stride + x as usize * 4;
        pixels[at..at + 4].copy_from_slice(&[p[0], p[1], p[2], 255]);
    }
    let p = open(&common::efficientnet_package());
    let from_png = p.infer(png).unwrap();
    let from_pixels = p
        .infer_pixels(pixels, w, h, stride as u32, PixelFormat::Rgba8)
        .unwrap();
    assert_eq!(from_pixels.classifications, from_png.classifications);
    assert_eq!(from_pixels.json, from_png.json);
}

fn code_of<T>(r: Result<T, OutpostError>) -> (u32, OutpostError) {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => (e.code(), e),
    }
}

#[test]
fn errors_carry_their_codes_and_groups() {
    let package = common::cls_package();
    let (code, e) = code_of(Predictor::new("/no/such.opk".into(), config_for(&package)));
    assert_eq!(code, 3001);
    assert!(matches!(e, OutpostError::Package { .. }), "{e:?}");

    let bad = Config {
        backend: Some("tpu".into()),
        ..config_for(&package)
    };
    let (code, e) = code_of(Predictor::new(package.path.to_string_lossy().into(), bad));
    assert_eq!(code, 1001);
    assert!(matches!(e, OutpostError::Input { .. }), "{e:?}");
    assert!(e.to_string().starts_with("1001: "), "{e}");

    let p = open(&package);
    assert_eq!(code_of(p.infer(b"not an image".to_vec())).0, 1101);
    assert_eq!(code_of(p.infer(Vec::new())).0, 1102);
    let short = p.infer_pixels(vec![0; 10], 8, 8, 24, PixelFormat::Rgb8);
    assert_eq!(code_of(short).0, 1103);
    let narrow_stride = p.infer_pixels(vec![0; 256], 8, 8, 4, PixelFormat::Rgba8);
    assert_eq!(code_of(narrow_stride).0, 1103);

    // Licences: an empty store, then a file that is not a licence.
    let tmp = tempfile::tempdir().unwrap();
    let store = Config {
        license_dir: Some(tmp.path().join("licenses").to_string_lossy().into()),
        ..Config::default()
    };
    let status = license_status(None, store.clone()).unwrap();
    assert!(status.licenses.is_empty());
    assert_eq!(status.package, None);
    let junk = tmp.path().join("junk.lic");
    std::fs::write(&junk, b"{not a licence").unwrap();
    let (code, e) = code_of(license_import(
        junk.to_string_lossy().into(),
        None,
        store.clone(),
    ));
    assert_eq!(code / 1000, 2, "{e:?}");
    assert!(matches!(e, OutpostError::License { .. }), "{e:?}");
    assert!(license_status(None, store).unwrap().licenses.is_empty());
}
