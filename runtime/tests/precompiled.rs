//! Pre-optimised CPU artifacts (tract NNEF made at packaging time): the same
//! outputs as the ONNX model, within the reference tolerances, and the fallbacks
//! when such an artifact is unusable.

mod common;

use common::*;
use outpost_runtime::backend::cpu::{precompile, CpuBackend};
use outpost_runtime::backend::Backend;
use outpost_runtime::package::describe_artifact;
use outpost_runtime::package::manifest::{ArtifactFormat, Manifest, Precision};
use outpost_runtime::ImageInput;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn efficientnet_precompiled_matches_reference_logits_and_the_onnx_path() {
    let r = shared().join("reference");
    let (shape, input) = read_npy(&r.join("efficientnet_lite0_chelsea_input.npy"));
    let (_, expected) = read_npy(&r.join("efficientnet_lite0_chelsea_logits.npy"));
    let onnx = std::fs::read(shared().join("models/efficientnet_lite0/model.onnx")).unwrap();
    let nnef = precompile(&onnx, "image", &shape).unwrap();
    let precompiled = CpuBackend::load_precompiled(&nnef, "image", &shape, 1).unwrap();
    let out = precompiled.run(&shape, input.clone()).unwrap();
    assert_eq!(out[0].shape, vec![1, 1000]);
    assert_eq!(out[0].name, "logits");
    let vs_reference = max_abs_diff(&out[0].data, &expected);
    let from_onnx = CpuBackend::load(&onnx, "image", &shape, 1).unwrap();
    let vs_onnx = max_abs_diff(&out[0].data, &from_onnx.run(&shape, input).unwrap()[0].data);
    eprintln!(
        "max abs logit difference: {vs_reference:e} vs onnxruntime, {vs_onnx:e} vs ONNX path"
    );
    assert!(vs_reference <= 1e-3, "{vs_reference}");
    assert!(vs_onnx <= 1e-5, "{vs_onnx}");
}

/// YOLOv8 keeps its ONNX output name and Outpost's own kernels through the NNEF
/// round trip.
#[test]
fn yolov8_precompiled_matches_reference_output_and_keeps_outpost_kernels() {
    let r = shared().join("reference");
    let (shape, input) = read_npy(&r.join("yolov8_fall_astronaut_input.npy"));
    let (out_shape, expected) = read_npy(&r.join("yolov8_fall_astronaut_output.npy"));
    let onnx = std::fs::read(shared().join("models/yolov8_fall/model.onnx")).unwrap();
    let nnef = precompile(&onnx, "images", &shape).unwrap();
    let backend = CpuBackend::load_precompiled(&nnef, "images", &shape, 1).unwrap();
    let out = backend.run(&shape, input.clone()).unwrap();
    assert_eq!(out[0].shape, out_shape);
    assert_eq!(out[0].name, "output0");
    assert_yolov8_output_matches_reference(&out[0].data, &expected, out_shape[2]);
    let profile = backend.profile(&shape, &input, 1).unwrap().unwrap();
    let count = |op: &str| profile.nodes.iter().filter(|n| n.op == op).count();
    assert_eq!(count("OutpostAxisSoftmax"), 1);
    assert_eq!(count("Softmax"), 0);
}

/// The PP-OCR classifier's manifest with its model as ONNX, pre-optimised, or both.
fn cls_with(onnx: &[u8], nnef: &[u8], with_onnx: bool) -> TestPackage {
    let mut manifest: Manifest = cls_manifest(onnx);
    let mut files = Vec::new();
    if with_onnx {
        files.push(("model.onnx", onnx.to_vec()));
    } else {
        manifest.artifacts.clear();
    }
    manifest.artifacts.push(describe_artifact(
        "model.nnef.tar",
        ArtifactFormat::Nnef,
        "cpu",
        Precision::Fp32,
        nnef,
    ));
    files.push(("model.nnef.tar", nnef.to_vec()));
    write_package_with(&manifest, files)
}

#[test]
fn package_prefers_the_precompiled_artifact_with_the_same_results() {
    let onnx = cls_onnx();
    let nnef = precompile(&onnx, "x", &[1, 3, 48, 192]).unwrap();
    let plain = cls_package().open();
    assert_eq!(plain.artifact(), "model.onnx");
    for with_onnx in [true, false] {
        let p = cls_with(&onnx, &nnef, with_onnx).open();
        assert_eq!(p.artifact(), "model.nnef.tar");
        for name in ["text_upside_down.png", "text_lines.png"] {
            let img = std::fs::read(shared().join("images").join(name)).unwrap();
            let a = plain.infer(ImageInput::Encoded(&img)).unwrap();
            let b = p.infer(ImageInput::Encoded(&img)).unwrap();
            let (a, b) = (a.classifications().unwrap(), b.classifications().unwrap());
            assert_eq!(a[0].label, b[0].label, "{name}");
            for (x, y) in a.iter().zip(b) {
                assert!((x.confidence - y.confidence).abs() <= 1e-5, "{name}");
            }
        }
    }
}

#[test]
fn unreadable_precompiled_artifact_falls_back_to_onnx_or_is_a_load_error() {
    let onnx = cls_onnx();
    // Signed and hashed like any artifact, but not NNEF (e.g. made by a tract this
    // runtime cannot read).
    let junk = b"graph.nnef is not here".repeat(40);
    let p = cls_with(&onnx, &junk, true).open();
    assert_eq!(p.artifact(), "model.onnx");
    let img = std::fs::read(shared().join("images/text_upside_down.png")).unwrap();
    let got = p.infer(ImageInput::Encoded(&img)).unwrap();
    assert_eq!(got.classifications().unwrap()[0].label, "180");

    let alone = cls_with(&onnx, &junk, false);
    let err = outpost_runtime::Predictor::open(&alone.path, &alone.config()).unwrap_err();
    assert_eq!(err.code(), 3011, "{err}");
    assert!(err.to_string().contains("NNEF"), "{err}");
}

#[test]
fn precompiled_artifact_for_another_input_is_refused() {
    let onnx = cls_onnx();
    // Made for a wider input than the manifest's 48x192.
    let nnef = precompile(&onnx, "x", &[1, 3, 48, 320]).unwrap();
    let err = CpuBackend::load_precompiled(&nnef, "x", &[1, 3, 48, 192], 1).unwrap_err();
    assert_eq!(err.code(), 3012, "{err}");
    let err = CpuBackend::load_precompiled(&nnef, "image", &[1, 3, 48, 320], 1).unwrap_err();
    assert_eq!(err.code(), 3012, "{err}");
    let pkg = cls_with(&onnx, &nnef, false);
    let err = outpost_runtime::Predictor::open(&pkg.path, &pkg.config()).unwrap_err();
    assert_eq!(err.code(), 3012, "{err}");
}

#[test]
fn precompiling_the_same_model_twice_gives_the_same_bytes() {
    let onnx = cls_onnx();
    let a = precompile(&onnx, "x", &[1, 3, 48, 192]).unwrap();
    let b = precompile(&onnx, "x", &[1, 3, 48, 192]).unwrap();
    assert!(a == b, "NNEF bytes differ between two runs");
    let err = precompile(b"not a model", "x", &[1, 3, 48, 192]).unwrap_err();
    assert_eq!(err.code(), 3011);
}

/// `nnef` with its entries passed through `edit` (`None` drops one), then `append`.
fn edit_archive(
    nnef: &[u8],
    mut edit: impl FnMut(&str, Vec<u8>) -> Option<Vec<u8>>,
    append: &[(&str, &[u8])],
) -> Vec<u8> {
    use std::io::Read;
    let mut out = tar::Builder::new(Vec::new());
    for entry in tar::Archive::new(nnef).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if let Some(data) = edit(&path, data) {
            let mut header = entry.header().clone();
            header.set_size(data.len() as u64);
            out.append_data(&mut header, &path, data.as_slice())
                .unwrap();
        }
    }
    for (path, data) in append {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        out.append_data(&mut header, path, *data).unwrap();
    }
    out.into_inner().unwrap()
}

/// The graph the trainer ships already parsed gives the model tract's own parser
/// gives (an archive from an older trainer has only the text), bit for bit.
#[test]
fn parsed_graph_and_tract_text_parser_give_the_same_model() {
    use outpost_runtime::backend::precompiled::{self, GRAPH_BINARY};
    let onnx = cls_onnx();
    let shape = [1, 3, 48, 192];
    let nnef = precompile(&onnx, "x", &shape).unwrap();
    let mut has_binary = false;
    let text_only = edit_archive(
        &nnef,
        |path, data| {
            has_binary |= path == GRAPH_BINARY;
            (path != GRAPH_BINARY).then_some(data)
        },
        &[],
    );
    assert!(has_binary);
    let (a, b) = (
        precompiled::read(&nnef).unwrap(),
        precompiled::read(&text_only).unwrap(),
    );
    assert_eq!(a.nodes.len(), b.nodes.len());
    for (x, y) in a.nodes.iter().zip(&b.nodes) {
        assert_eq!((&x.name, x.op.name()), (&y.name, y.op.name()));
        assert_eq!(x.outputs[0].fact, y.outputs[0].fact, "{}", x.name);
    }
    let input: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|i| (i as f32 * 0.37).sin())
        .collect();
    let run = |bytes: &[u8]| {
        let backend = CpuBackend::load_precompiled(bytes, "x", &shape, 1).unwrap();
        backend.run(&shape, input.clone()).unwrap()[0].data.clone()
    };
    assert_eq!(run(&nnef), run(&text_only));

    // With an entry it does not know, tract's reader reads the archive.
    let extra = edit_archive(&nnef, |_, data| Some(data), &[("NOTES.txt", b"hello")]);
    assert_eq!(run(&extra), run(&text_only));
}

/// A damaged parsed graph is a load error (3011), not a panic or another model.
#[test]
fn damaged_parsed_graph_is_a_load_error() {
    use outpost_runtime::backend::precompiled::GRAPH_BINARY;
    let onnx = cls_onnx();
    let shape = [1, 3, 48, 192];
    let nnef = precompile(&onnx, "x", &shape).unwrap();
    for cut in [0usize, 5, 100, 1000] {
        let damaged = edit_archive(
            &nnef,
            |path, mut data| {
                if path == GRAPH_BINARY {
                    data.truncate(cut);
                }
                Some(data)
            },
            &[],
        );
        let err = CpuBackend::load_precompiled(&damaged, "x", &shape, 1).unwrap_err();
        assert_eq!(err.code(), 3011, "{err}");
    }
}
