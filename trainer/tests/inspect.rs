//! `inspect`: numbers pinned against an independent calculation.
//!
//! The expected parameter counts and MACs come from a Python script over the same
//! files that shares no code with tract: it reads the tensors with `onnx` and takes
//! every intermediate shape from onnxruntime 1.32 (running the model with every tensor
//! exposed as an output), then applies the counting rules of `inspect`'s documentation.
//! Cross-checks against published figures: EfficientNet-Lite0 has 4.65 M parameters and
//! about 0.4 G MACs at 224; this YOLOv8 model is the "s" size (11.2 M parameters, 28.6
//! GFLOPs at 640 for 80 classes).
//!
//! The script (`pip install onnx onnxruntime numpy`; argument `MODEL.onnx@1x3x224x224`):
//!
//! ```text
//! import sys, onnx, numpy as np, onnxruntime as ort
//! from onnx import helper, TensorProto as T
//! FLOAT = {T.FLOAT, T.FLOAT16, T.DOUBLE, T.BFLOAT16}
//! path, s = sys.argv[1].split("@"); shape = [int(v) for v in s.split("x")]
//! m = onnx.load(path); g = m.graph
//! params = sum(int(np.prod(t.dims)) for t in g.initializer if t.data_type in FLOAT)
//! for n in g.node:
//!     for a in n.attribute if n.op_type == "Constant" else []:
//!         if a.name == "value" and a.t.data_type in FLOAT: params += int(np.prod(a.t.dims))
//!         if a.name == "value_float": params += 1
//!         if a.name == "value_floats": params += len(a.floats)
//! names = [o for n in g.node for o in n.output if o]
//! del g.output[:]; g.output.extend(helper.make_empty_tensor_value_info(o) for o in names)
//! inits = {t.name for t in g.initializer}
//! x = [i.name for i in g.input if i.name not in inits][0]
//! sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
//! outs = sess.run(None, {x: np.random.rand(*shape).astype(np.float32)})
//! shp = {**dict(zip(names, [o.shape for o in outs])), x: tuple(shape),
//!        **{t.name: tuple(t.dims) for t in g.initializer}}
//! macs = 0
//! for n in g.node:
//!     at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
//!     if n.op_type == "Conv":
//!         macs += int(np.prod(shp[n.output[0]])) * int(np.prod(shp[n.input[1]][1:]))
//!     elif n.op_type == "ConvTranspose":
//!         macs += int(np.prod(shp[n.input[0]])) * int(np.prod(shp[n.input[1]][1:]))
//!     elif n.op_type == "Gemm":
//!         a = shp[n.input[0]]
//!         macs += int(np.prod(shp[n.output[0]])) * (a[0] if at.get("transA") else a[1])
//!     elif n.op_type == "MatMul":
//!         macs += int(np.prod(shp[n.output[0]])) * shp[n.input[0]][-1]
//! print(params, macs)
//! ```

use std::path::{Path, PathBuf};

use outpost_trainer::inspect::{inspect, render_text, Dim, Inspection};
use outpost_trainer::TrainerError;

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

fn model(rel: &str) -> Vec<u8> {
    std::fs::read(shared().join("models").join(rel)).expect("shared model")
}

fn fixed(dims: &[u64]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
}

fn efficientnet() -> Inspection {
    inspect(&model("efficientnet_lite0/model.onnx"), None).expect("inspect efficientnet")
}

#[test]
fn efficientnet_lite0_numbers() {
    let i = efficientnet();
    // 4,631,000 in 100 float initializers + 83 float scalars in Constant nodes.
    assert_eq!(i.parameters, 4_631_083);
    assert_eq!(i.parameter_bytes, 4 * 4_631_083);
    // Conv 383,907,552 + Gemm 1,280,000 (1280 x 1000).
    assert_eq!(i.macs, 385_187_552);
    assert_eq!(i.macs_by_op["Conv"], 383_907_552);
    assert_eq!(i.macs_by_op["Gemm"], 1_280_000);
    assert_eq!(i.flops, 2 * 385_187_552);
    assert!(i.macs_complete, "{:?}", i.notes);

    assert_eq!(i.operators["Conv"], 49);
    assert_eq!(i.operators["Gemm"], 1);
    assert_eq!(i.operators["Constant"], 220);
    assert_eq!(i.nodes, 450);
    assert_eq!(i.operators.values().sum::<usize>(), i.nodes);
    assert_eq!(i.opset, 13);
    assert!(i.producer.starts_with("pytorch"), "{}", i.producer);

    assert_eq!(i.inputs.len(), 1);
    assert_eq!(i.inputs[0].name, "image");
    assert_eq!(i.inputs[0].shape, fixed(&[1, 3, 224, 224]));
    assert_eq!(i.inputs[0].elem_type, "float32");
    assert_eq!(i.outputs.len(), 1);
    assert_eq!(i.outputs[0].name, "logits");
    assert_eq!(i.outputs[0].shape, fixed(&[1, 1000]));
    // The file declares the batch symbolically; the analysed shape resolves it.
    assert_eq!(
        i.outputs[0].declared_shape,
        vec![Dim::Symbolic("Gemmlogits_dim_0".into()), Dim::Fixed(1000)]
    );

    assert_eq!(i.unsupported["cpu"], Vec::<String>::new());
    assert!(i.runs_on("cpu"));
}

#[test]
fn yolov8_numbers() {
    let i = inspect(&model("yolov8_fall/model.onnx"), None).expect("inspect yolov8");
    // 132 float initializers; the 12 int64 initializers (shapes) are not weights.
    // 11,126,358 of them feed Conv nodes (exactly Ultralytics' YOLOv8s count, 11,156,544,
    // less the 80-to-2-class change of the three classification convs); the other
    // 42,005 are the head's float constants: anchor points (2 x 16,800), strides
    // (8,400), Resize scales (4) and a divisor (1).
    assert_eq!(i.parameters, 11_168_363);
    assert_eq!(i.parameter_bytes, 4 * 11_168_363);
    assert_eq!(i.macs, 14_217_446_400);
    assert_eq!(i.macs_by_op["Conv"], 14_217_446_400);
    assert!(i.macs_complete, "{:?}", i.notes);
    assert_eq!(i.operators["Conv"], 64);
    assert_eq!(i.nodes, 233);
    assert_eq!(i.inputs[0].name, "images");
    assert_eq!(i.inputs[0].shape, fixed(&[1, 3, 640, 640]));
    assert_eq!(i.outputs[0].name, "output0");
    assert_eq!(i.outputs[0].shape, fixed(&[1, 6, 8400]));
    assert!(i.runs_on("cpu"), "{:?}", i.unsupported);
}

#[test]
fn dynamic_input_needs_a_shape() {
    let bytes = model("ppocr_v4/det.onnx");
    let err = inspect(&bytes, None).expect_err("det.onnx has a dynamic input");
    assert!(matches!(err, TrainerError::Invalid(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("`x`"), "{msg}");
    assert!(msg.contains("--input-shape"), "{msg}");

    let i = inspect(&bytes, Some(&[1, 3, 640, 640])).expect("inspect det at 640");
    assert_eq!(i.inputs[0].shape, fixed(&[1, 3, 640, 640]));
    assert_eq!(i.inputs[0].declared_shape[1], Dim::Fixed(3));
    assert!(matches!(i.inputs[0].declared_shape[0], Dim::Symbolic(_)));
    assert_eq!(i.outputs[0].shape, fixed(&[1, 1, 640, 640]));
    // Every weight sits in one of 342 float Constant nodes; no initializers.
    assert_eq!(i.parameters, 1_171_841);
    // Conv 2,233,122,944 + ConvTranspose 68,812,800.
    assert_eq!(i.macs_by_op["Conv"], 2_233_122_944);
    assert_eq!(i.macs_by_op["ConvTranspose"], 68_812_800);
    assert_eq!(i.macs, 2_301_935_744);
    assert_eq!(i.operators["Conv"], 62);
    assert_eq!(i.operators["ConvTranspose"], 2);
    assert!(i.runs_on("cpu"), "{:?}", i.unsupported);
}

#[test]
fn wrong_rank_is_refused() {
    let err = inspect(
        &model("efficientnet_lite0/model.onnx"),
        Some(&[3, 224, 224]),
    )
    .expect_err("rank 3 for a rank-4 input");
    assert!(matches!(err, TrainerError::Invalid(_)), "{err:?}");
}

#[test]
fn a_shape_the_model_cannot_take_is_code_3012() {
    // The YOLOv8 head adds a fixed 8400-anchor grid: 320x320 gives 2100 boxes.
    let err = inspect(&model("yolov8_fall/model.onnx"), Some(&[1, 3, 320, 320]))
        .expect_err("the anchor grid is fixed at 640");
    match err {
        TrainerError::Runtime(e) => assert_eq!(e.code(), 3012, "{e}"),
        other => panic!("expected code 3012, got {other:?}"),
    }
}

#[test]
fn not_onnx_is_code_3011() {
    let labels = std::fs::read(shared().join("models/efficientnet_lite0/labels.txt")).unwrap();
    let image = std::fs::read(shared().join("images/chelsea.jpg")).unwrap();
    for bytes in [labels, image, Vec::new()] {
        match inspect(&bytes, None) {
            Err(TrainerError::Runtime(e)) => {
                assert_eq!(e.code(), 3011, "{e}");
                assert!(e.to_string().contains("not an ONNX model"), "{e}");
            }
            other => panic!("expected code 3011, got {other:?}"),
        }
    }
}

#[test]
fn unsupported_operator_is_listed() {
    // A hand-made model: y = NoSuchOp(x), in a custom domain tract knows nothing about.
    let i = inspect(&tiny_model("NoSuchOp", "example.custom"), None).expect("inspect tiny");
    assert_eq!(
        i.unsupported["cpu"],
        vec!["example.custom:NoSuchOp".to_string()]
    );
    assert!(!i.runs_on("cpu"));
    assert!(!i.macs_complete);
    assert_eq!(i.operators["example.custom:NoSuchOp"], 1);
    let text = render_text(&i);
    assert!(
        text.contains("cannot run: example.custom:NoSuchOp"),
        "{text}"
    );

    // A standard operator tract knows but cannot build as written (Cast without `to`).
    let bad = inspect(&tiny_model("Cast", ""), None).expect("inspect bad cast");
    assert_eq!(bad.unsupported["cpu"], vec!["Cast".to_string()]);
    assert!(!bad.macs_complete);

    let ok = inspect(&tiny_model("Relu", ""), None).expect("inspect relu");
    assert!(ok.runs_on("cpu"));
    assert_eq!(ok.macs, 0);
    assert!(ok.macs_complete);
}

#[test]
fn quantised_weights_count_and_shape_tensors_do_not() {
    // y = Conv(x, DequantizeLinear(w_int8, w_scale, w_zero_point), b), x [1, 1, 5, 5].
    let i = inspect(&qdq_conv_model(), None).expect("inspect qdq conv");
    // int8 w (18) + float bias (2); the scale, the zero point and the int64 initializer
    // are not weights.
    assert_eq!(i.parameters, 18 + 2);
    assert_eq!(i.parameter_bytes, 18 + 2 * 4);
    // y [1, 2, 3, 3] x (1 input channel x 3 x 3 kernel).
    assert_eq!(i.macs, 18 * 9);
    assert_eq!(i.outputs[0].shape, fixed(&[1, 2, 3, 3]));
    assert!(i.runs_on("cpu"), "{:?}", i.unsupported);
    assert_eq!(i.operators["DequantizeLinear"], 1);
}

#[test]
fn json_has_the_documented_keys() {
    let i = efficientnet();
    let v: serde_json::Value = serde_json::to_value(&i).unwrap();
    assert_eq!(v["parameters"], 4_631_083);
    assert_eq!(v["macs"], 385_187_552u64);
    assert_eq!(v["flops"], 770_375_104u64);
    assert_eq!(v["operators"]["Conv"], 49);
    assert_eq!(v["inputs"][0]["name"], "image");
    assert_eq!(v["inputs"][0]["shape"], serde_json::json!([1, 3, 224, 224]));
    assert_eq!(v["outputs"][0]["declared_shape"][0], "Gemmlogits_dim_0");
    assert_eq!(v["unsupported"]["cpu"], serde_json::json!([]));
}

#[test]
fn text_report_reads_well() {
    let text = render_text(&efficientnet());
    for needle in [
        "ONNX opset 13",
        "image",
        "[1, 3, 224, 224]",
        "logits",
        "[1, 1000]",
        "4,631,083",
        "385.19 M MACs",
        "Conv",
        "cpu      runs every operator",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from\n{text}");
    }
}

// ---------------------------------------------------------------------------------------
// A minimal ONNX protobuf writer, enough for a one-node model with a float input
// [1, 4] and a float output.

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

fn field_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | 2), out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn field_int(tag: u32, v: u64, out: &mut Vec<u8>) {
    varint(u64::from(tag << 3), out);
    varint(v, out);
}

fn value_info(name: &str) -> Vec<u8> {
    value_info_shaped(name, &[1, 4])
}

fn value_info_shaped(name: &str, dims: &[u64]) -> Vec<u8> {
    // TypeProto.Tensor { elem_type = FLOAT, shape = dims }
    let mut shape = Vec::new();
    for &d in dims {
        let mut dim = Vec::new();
        field_int(1, d, &mut dim);
        field_bytes(1, &dim, &mut shape);
    }
    let mut tensor = Vec::new();
    field_int(1, 1, &mut tensor);
    field_bytes(2, &shape, &mut tensor);
    let mut ty = Vec::new();
    field_bytes(1, &tensor, &mut ty);
    let mut vi = Vec::new();
    field_bytes(1, name.as_bytes(), &mut vi);
    field_bytes(2, &ty, &mut vi);
    vi
}

fn tiny_model(op_type: &str, domain: &str) -> Vec<u8> {
    let mut node = Vec::new();
    field_bytes(1, b"x", &mut node);
    field_bytes(2, b"y", &mut node);
    field_bytes(3, b"n0", &mut node);
    field_bytes(4, op_type.as_bytes(), &mut node);
    if !domain.is_empty() {
        field_bytes(7, domain.as_bytes(), &mut node);
    }
    let mut graph = Vec::new();
    field_bytes(1, &node, &mut graph);
    field_bytes(2, b"g", &mut graph);
    field_bytes(11, &value_info("x"), &mut graph);
    field_bytes(12, &value_info("y"), &mut graph);
    let mut opset = Vec::new();
    field_int(2, 13, &mut opset);
    let mut m = Vec::new();
    field_int(1, 8, &mut m); // ir_version
    field_bytes(2, b"outpost-test", &mut m); // producer_name
    field_bytes(7, &graph, &mut m);
    field_bytes(8, &opset, &mut m);
    if !domain.is_empty() {
        let mut custom = Vec::new();
        field_bytes(1, domain.as_bytes(), &mut custom);
        field_int(2, 1, &mut custom);
        field_bytes(8, &custom, &mut m);
    }
    m
}

fn node(inputs: &[&str], output: &str, op_type: &str) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        field_bytes(1, i.as_bytes(), &mut n);
    }
    field_bytes(2, output.as_bytes(), &mut n);
    field_bytes(3, output.as_bytes(), &mut n);
    field_bytes(4, op_type.as_bytes(), &mut n);
    n
}

fn initializer(name: &str, data_type: u64, dims: &[u64], raw: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        field_int(1, d, &mut t);
    }
    field_int(2, data_type, &mut t);
    field_bytes(8, name.as_bytes(), &mut t);
    field_bytes(9, raw, &mut t);
    t
}

fn qdq_conv_model() -> Vec<u8> {
    const FLOAT: u64 = 1;
    const INT8: u64 = 3;
    const INT64: u64 = 7;
    let mut graph = Vec::new();
    field_bytes(
        1,
        &node(&["w_q", "w_scale", "w_zp"], "w", "DequantizeLinear"),
        &mut graph,
    );
    field_bytes(1, &node(&["x", "w", "b"], "y", "Conv"), &mut graph);
    field_bytes(2, b"g", &mut graph);
    let w: Vec<u8> = (0..18).map(|v| v as u8).collect();
    let inits = [
        initializer("w_q", INT8, &[2, 1, 3, 3], &w),
        initializer("w_scale", FLOAT, &[], &0.5f32.to_le_bytes()),
        initializer("w_zp", INT8, &[], &[0]),
        initializer("b", FLOAT, &[2], &[0u8; 8]),
        initializer(
            "unused_shape",
            INT64,
            &[2],
            &[1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0],
        ),
    ];
    for t in &inits {
        field_bytes(5, t, &mut graph);
    }
    field_bytes(11, &value_info_shaped("x", &[1, 1, 5, 5]), &mut graph);
    field_bytes(12, &value_info_shaped("y", &[1, 2, 3, 3]), &mut graph);
    let mut opset = Vec::new();
    field_int(2, 13, &mut opset);
    let mut m = Vec::new();
    field_int(1, 8, &mut m);
    field_bytes(7, &graph, &mut m);
    field_bytes(8, &opset, &mut m);
    m
}
