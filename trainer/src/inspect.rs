//! `outpost-trainer inspect`: what is inside an ONNX model, for people and for scripts.
//!
//! [`inspect`] reads the ONNX protobuf and reports the inputs and outputs, the operator
//! histogram, the parameter count, the multiply-accumulates of one inference, and the
//! operators a target cannot run. [`render_text`] turns the result into a report a
//! person reads; the [`Inspection`] itself serialises to JSON with `serde`.
//!
//! # What is counted
//!
//! **Parameters** ([`Inspection::parameters`]) are the stored weights, counted exactly
//! from the tensors in the file (their `dims`, never their values):
//!
//! - every floating-point initializer (`float`, `float16`, `double`, `bfloat16`, and the
//!   8- and 4-bit float formats), including sparse initializers (their stored values)
//!   and initializers of nested graphs (`If`, `Loop`, `Scan` bodies);
//! - every floating-point tensor held by a `Constant` node (`value`, `value_float`,
//!   `value_floats`): exporters such as paddle2onnx store all weights that way. Small
//!   float constants (a `Clip` bound, a `Pad` value) are float tensors too and count;
//! - integer tensors are *not* weights (shapes, axes, indices), with one exception:
//!   quantised weights, i.e. an integer tensor consumed as the data input of
//!   `DequantizeLinear`, or as the weight input of `QLinearConv`, `QLinearMatMul`,
//!   `ConvInteger` or `MatMulInteger`;
//! - quantisation parameters are not weights, whatever their type: a tensor consumed as
//!   a scale or zero point of `QuantizeLinear`, `DequantizeLinear` or the operators
//!   above. So a QDQ INT8 model reports the same parameter count as the FP32 model it
//!   was made from (its weights are int8, its biases stay float).
//!
//! [`Inspection::parameter_bytes`] is the storage those tensors take at their element
//! type (4 bytes per `float`, 2 per `float16`, 1 per `int8`, ...).
//!
//! **MACs** ([`Inspection::macs`]) are the multiply-accumulates of one inference at the
//! analysed input shape, from the shapes tract infers for every tensor:
//!
//! - `Conv`, `ConvInteger`, `QLinearConv` (plain, grouped and depthwise alike):
//!   `output elements × (input channels / group) × kernel elements`;
//! - `ConvTranspose`: `input elements × (output channels / group) × kernel elements`;
//! - `Gemm`: `output elements × K`;
//! - `MatMul`, `MatMulInteger`, `QLinearMatMul`: `output elements × K` (K the shared
//!   dimension; batch dimensions included through the output).
//!
//! Bias additions, normalisation, activations, pooling, resizing and other element-wise
//! work are not counted, nor are `Einsum`, recurrent (`LSTM`, `GRU`, `RNN`) or
//! attention nodes; a note lists such nodes when the model has them. Only the top-level
//! graph is counted. [`Inspection::flops`] is `2 × macs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};

use serde::Serialize;
use tract_onnx::model::{Onnx, ParsingContext};
use tract_onnx::pb::{self, tensor_proto::DataType};
use tract_onnx::prelude::*;

use crate::TrainerError;

/// The targets [`Inspection::unsupported`] reports on.
///
/// `cpu` is the runtime's CPU backend, tract-onnx 0.23.
pub const TARGETS: &[&str] = &["cpu"];

/// One dimension of a tensor shape: a number, or a symbolic name (`"?"` when the file
/// gives neither). Serialises as a JSON number or string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A symbolic or unknown size, such as `"batch"` or `"?"`.
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// A model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    /// The tensor's name in the graph.
    pub name: String,
    /// The shape at the analysed input shape: numbers wherever tract resolved them,
    /// otherwise the dimension as declared in the file.
    pub shape: Vec<Dim>,
    /// The shape as declared in the file (symbolic dimensions stay symbolic).
    pub declared_shape: Vec<Dim>,
    /// The element type in ONNX terms, lower case: `float32`, `int64`, `uint8`, ...
    pub elem_type: String,
}

/// What [`inspect`] found in a model. Serialises to the JSON of `inspect --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// The producer named in the file with its version, e.g. `pytorch 2.1.0`; empty
    /// when the file names none.
    pub producer: String,
    /// The version of the default (`ai.onnx`) operator set; 0 when the file imports none.
    pub opset: i64,
    /// The graph inputs that are not initializers, in order.
    pub inputs: Vec<TensorInfo>,
    /// The graph outputs, in order.
    pub outputs: Vec<TensorInfo>,
    /// Nodes per operator type, over the graph and its nested graphs. Operators of a
    /// domain other than the default one are keyed `domain:OpType`.
    pub operators: BTreeMap<String, usize>,
    /// Number of nodes, over the graph and its nested graphs.
    pub nodes: usize,
    /// Exact number of weights (see the module documentation for the rule).
    pub parameters: u64,
    /// Bytes those weights take at their stored element types.
    pub parameter_bytes: u64,
    /// Multiply-accumulates of one inference at the analysed input shape (see the
    /// module documentation for what is counted).
    pub macs: u64,
    /// `2 × macs`.
    pub flops: u64,
    /// [`Inspection::macs`] per operator type.
    pub macs_by_op: BTreeMap<String, u64>,
    /// Whether `macs` covers the whole model. False when a counted node has unknown
    /// shapes or the model has operators tract cannot load; `macs` is then a lower
    /// bound and `notes` says why.
    pub macs_complete: bool,
    /// Target name → operator types that target cannot run (sorted, empty when it runs
    /// them all). `cpu`: the operators tract-onnx 0.23 cannot load.
    pub unsupported: BTreeMap<String, Vec<String>>,
    /// Things a reader should know: nodes whose work is not counted, shapes that could
    /// not be analysed, and the like.
    pub notes: Vec<String>,
}

impl Inspection {
    /// Whether `target` (one of [`TARGETS`]) can run every operator of the model.
    pub fn runs_on(&self, target: &str) -> bool {
        self.unsupported
            .get(target)
            .is_some_and(|ops| ops.is_empty())
    }
}

/// Inspects an ONNX model.
///
/// `input_shape` fixes the shape of the (first) input for the MAC count; without it
/// every input must have a fully fixed declared shape.
///
/// # Errors
///
/// - [`outpost_runtime::Error::ModelLoad`] (code 3011) when the bytes are not an ONNX
///   model;
/// - [`TrainerError::Invalid`] when an input has symbolic dimensions and no
///   `input_shape` is given, or `input_shape` does not fit the declared input;
/// - [`outpost_runtime::Error::ModelMismatch`] (code 3012) when tract, which runs every
///   operator of the model, cannot infer the shapes at that input shape.
pub fn inspect(
    onnx_bytes: &[u8],
    input_shape: Option<&[usize]>,
) -> Result<Inspection, TrainerError> {
    let onnx = tract_onnx::onnx();
    let proto = decode(&onnx, onnx_bytes)?;
    let graph = proto.graph.as_ref().expect("checked by decode");

    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0);
    let producer = [proto.producer_name.trim(), proto.producer_version.trim()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");

    // Operators, nodes, parameters: over the graph and every nested graph.
    let mut all_nodes = Vec::new();
    collect_nodes(graph, &mut all_nodes);
    let mut operators = BTreeMap::new();
    for node in &all_nodes {
        *operators.entry(op_key(node)).or_insert(0) += 1;
    }
    let (parameters, parameter_bytes) = count_parameters(graph, &all_nodes);

    // Inputs and the shapes to analyse at (checked before anything slow).
    let initializer_names: HashSet<&str> = graph.initializer.iter().map(|t| &*t.name).collect();
    let real_inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializer_names.contains(&*i.name))
        .collect();
    let mut notes = Vec::new();
    let shapes = resolve_input_shapes(&real_inputs, input_shape, &mut notes)?;

    // Target support.
    let mut cpu_unsupported: BTreeSet<String> = all_nodes
        .iter()
        .filter(|n| !onnx.op_register.0.contains_key(&n.op_type))
        .map(|n| op_key(n))
        .collect();

    let mut macs_by_op = BTreeMap::new();
    let mut macs_complete = true;
    let mut resolved: HashMap<String, Vec<usize>> = HashMap::new();
    match onnx.parse(&proto, None) {
        Err(e) => {
            let failed = failing_builders(&onnx, &proto, opset);
            if failed.is_empty() {
                notes.push(format!("tract cannot load the model: {e:#}"));
            }
            cpu_unsupported.extend(failed);
            macs_complete = false;
            notes.push("MACs not counted: tract cannot load the model to infer its shapes".into());
        }
        Ok(parsed) => {
            let mut model = parsed.model;
            let model_inputs = model.input_outlets().map_err(load_err)?.to_vec();
            for (ix, shape) in shapes.iter().enumerate() {
                if ix >= model_inputs.len() {
                    break;
                }
                let fact = model.input_fact(ix).map_err(load_err)?.clone();
                model
                    .set_input_fact(ix, fact.with_shape(shape.clone()))
                    .map_err(load_err)?;
            }
            if !cpu_unsupported.is_empty() {
                // What an operator tract does not know computes is unknown.
                macs_complete = false;
                notes.push(format!(
                    "MACs leave out the work of the unsupported operators ({})",
                    cpu_unsupported
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Err(e) = model.analyse(true) {
                if cpu_unsupported.is_empty() {
                    return Err(outpost_runtime::Error::ModelMismatch(format!(
                        "cannot infer the model's shapes at input {}: {e:#}",
                        shapes
                            .iter()
                            .map(|s| fmt_usizes(s))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                    .into());
                }
                notes.push(
                    "shapes past the unsupported operators are unknown, so MACs are a lower bound"
                        .into(),
                );
            }
            for (name, outlet) in &parsed.outlets_by_name {
                if let Some(shape) = model
                    .outlet_fact(*outlet)
                    .ok()
                    .and_then(|f| f.shape.as_concrete_finite().ok().flatten())
                {
                    resolved.insert(name.clone(), shape.to_vec());
                }
            }
            let mut unknown = 0usize;
            for node in &graph.node {
                match node_macs(node, &resolved) {
                    Some(Some(m)) => {
                        *macs_by_op.entry(node.op_type.clone()).or_insert(0u64) += m;
                    }
                    Some(None) => unknown += 1,
                    None => {}
                }
            }
            if unknown > 0 {
                macs_complete = false;
                notes.push(format!(
                    "{unknown} compute node(s) have unknown shapes and are not counted in MACs"
                ));
            }
        }
    }
    let uncounted: BTreeMap<String, usize> = graph
        .node
        .iter()
        .filter(|n| {
            matches!(
                &*n.op_type,
                "Einsum" | "LSTM" | "GRU" | "RNN" | "Attention" | "MultiHeadAttention"
            )
        })
        .fold(BTreeMap::new(), |mut acc, n| {
            *acc.entry(op_key(n)).or_insert(0) += 1;
            acc
        });
    if !uncounted.is_empty() {
        notes.push(format!(
            "MACs leave out {}",
            uncounted
                .iter()
                .map(|(op, n)| format!("{n} {op} node(s)"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if graph.node.len() != all_nodes.len() {
        notes.push(format!(
            "{} node(s) are inside nested graphs; MACs count the top-level graph only",
            all_nodes.len() - graph.node.len()
        ));
    }

    let inputs = real_inputs
        .iter()
        .enumerate()
        .map(|(ix, vi)| {
            let mut info = tensor_info(vi, resolved.get(&vi.name));
            if let Some(shape) = shapes.get(ix) {
                info.shape = shape.iter().map(|&d| Dim::Fixed(d as u64)).collect();
            }
            info
        })
        .collect();
    let outputs = graph
        .output
        .iter()
        .map(|vi| tensor_info(vi, resolved.get(&vi.name)))
        .collect();
    let macs: u64 = macs_by_op.values().sum();
    let mut unsupported = BTreeMap::new();
    unsupported.insert("cpu".to_string(), cpu_unsupported.into_iter().collect());

    Ok(Inspection {
        producer,
        opset,
        inputs,
        outputs,
        operators,
        nodes: all_nodes.len(),
        parameters,
        parameter_bytes,
        macs,
        flops: macs.saturating_mul(2),
        macs_by_op,
        macs_complete,
        unsupported,
        notes,
    })
}

/// Renders an [`Inspection`] as a report for people.
pub fn render_text(insp: &Inspection) -> String {
    let mut s = String::new();
    let producer = if insp.producer.is_empty() {
        "unknown producer"
    } else {
        &insp.producer
    };
    let _ = writeln!(s, "Model       {producer}, ONNX opset {}", insp.opset);

    let width = insp
        .inputs
        .iter()
        .chain(&insp.outputs)
        .map(|t| t.name.chars().count())
        .max()
        .unwrap_or(0);
    for (title, tensors) in [("Inputs", &insp.inputs), ("Outputs", &insp.outputs)] {
        let _ = writeln!(s, "{title}");
        for t in tensors {
            let _ = write!(
                s,
                "  {:width$}  {:8}  {}",
                t.name,
                t.elem_type,
                fmt_dims(&t.shape)
            );
            if t.shape != t.declared_shape {
                let _ = write!(s, "  (declared {})", fmt_dims(&t.declared_shape));
            }
            s.push('\n');
        }
    }

    let _ = writeln!(
        s,
        "Parameters  {} ({})",
        group_digits(insp.parameters),
        human_bytes(insp.parameter_bytes)
    );
    let at = insp
        .inputs
        .iter()
        .map(|t| fmt_dims(&t.shape))
        .collect::<Vec<_>>()
        .join(", ");
    let bound = if insp.macs_complete { "" } else { "at least " };
    let _ = writeln!(
        s,
        "Compute     {bound}{} MACs = {} FLOPs, one inference at {at}",
        human_count(insp.macs),
        human_count(insp.flops)
    );
    let mut by_op: Vec<_> = insp.macs_by_op.iter().collect();
    by_op.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, m) in by_op {
        let share = if insp.macs > 0 {
            100.0 * *m as f64 / insp.macs as f64
        } else {
            0.0
        };
        let _ = writeln!(s, "  {op:16} {:>10} MACs  {share:5.1}%", human_count(*m));
    }

    let _ = writeln!(
        s,
        "Operators   {} nodes, {} types",
        insp.nodes,
        insp.operators.len()
    );
    let mut ops: Vec<_> = insp.operators.iter().collect();
    ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in ops {
        let _ = writeln!(s, "  {op:24} {n:>6}");
    }

    let _ = writeln!(s, "Targets");
    for (target, ops) in &insp.unsupported {
        if ops.is_empty() {
            let _ = writeln!(s, "  {target:8} runs every operator");
        } else {
            let _ = writeln!(s, "  {target:8} cannot run: {}", ops.join(", "));
        }
    }
    if !insp.notes.is_empty() {
        let _ = writeln!(s, "Notes");
        for n in &insp.notes {
            let _ = writeln!(s, "  - {n}");
        }
    }
    s
}

/// Parses an input shape as written on the command line: dimensions separated by `x`
/// or `,`, e.g. `1x3x640x640` or `1,3,640,640`.
///
/// # Errors
///
/// [`TrainerError::Invalid`] when a dimension is not a positive integer.
pub fn parse_shape(text: &str) -> Result<Vec<usize>, TrainerError> {
    let invalid = || {
        TrainerError::Invalid(format!(
            "input shape {text:?}: expected positive integers separated by `x`, e.g. 1x3x640x640"
        ))
    };
    let dims = text
        .trim()
        .split(['x', 'X', ','])
        .map(|d| match d.trim().parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(invalid()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(dims)
}

// ---------------------------------------------------------------------------------------
// Reading the protobuf.

fn not_onnx(why: impl fmt::Display) -> TrainerError {
    outpost_runtime::Error::ModelLoad(format!("not an ONNX model: {why}")).into()
}

fn load_err(e: TractError) -> TrainerError {
    outpost_runtime::Error::ModelLoad(format!("{e:#}")).into()
}

fn decode(onnx: &Onnx, bytes: &[u8]) -> Result<pb::ModelProto, TrainerError> {
    if bytes.is_empty() {
        return Err(not_onnx("the file is empty"));
    }
    let proto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| not_onnx(format!("{e:#}")))?;
    // Protobuf decoding accepts many byte strings; an ONNX model has an IR version and
    // a graph.
    if proto.ir_version <= 0 || proto.graph.is_none() {
        return Err(not_onnx("no ONNX graph in the file"));
    }
    Ok(proto)
}

fn op_key(node: &pb::NodeProto) -> String {
    if node.domain.is_empty() || node.domain == "ai.onnx" {
        node.op_type.clone()
    } else {
        format!("{}:{}", node.domain, node.op_type)
    }
}

fn subgraphs(node: &pb::NodeProto) -> impl Iterator<Item = &pb::GraphProto> {
    node.attribute
        .iter()
        .flat_map(|a| a.g.iter().chain(a.graphs.iter()))
}

fn collect_nodes<'a>(graph: &'a pb::GraphProto, out: &mut Vec<&'a pb::NodeProto>) {
    for node in &graph.node {
        out.push(node);
        for g in subgraphs(node) {
            collect_nodes(g, out);
        }
    }
}

fn collect_graphs<'a>(graph: &'a pb::GraphProto, out: &mut Vec<&'a pb::GraphProto>) {
    out.push(graph);
    for node in &graph.node {
        for g in subgraphs(node) {
            collect_graphs(g, out);
        }
    }
}

/// Element size in bits of a weight type, `None` for types that are never weights
/// (integers, bool, string, complex).
fn float_bits(data_type: i32) -> Option<u64> {
    match DataType::try_from(data_type).ok()? {
        DataType::Float => Some(32),
        DataType::Double => Some(64),
        DataType::Float16 | DataType::Bfloat16 => Some(16),
        DataType::Float8e4m3fn
        | DataType::Float8e4m3fnuz
        | DataType::Float8e5m2
        | DataType::Float8e5m2fnuz => Some(8),
        DataType::Float4e2m1 => Some(4),
        _ => None,
    }
}

fn int_bits(data_type: i32) -> Option<u64> {
    match DataType::try_from(data_type).ok()? {
        DataType::Int4 | DataType::Uint4 => Some(4),
        DataType::Int8 | DataType::Uint8 => Some(8),
        DataType::Int16 | DataType::Uint16 => Some(16),
        DataType::Int32 | DataType::Uint32 => Some(32),
        DataType::Int64 | DataType::Uint64 => Some(64),
        _ => None,
    }
}

fn elements(dims: &[i64]) -> u64 {
    dims.iter()
        .map(|&d| u64::try_from(d).unwrap_or(0))
        .fold(1u64, u64::saturating_mul)
}

/// Tensor names that hold quantised weights (the data input of `DequantizeLinear`, the
/// weight input of the integer convolution and matrix-product operators), and tensor
/// names that hold quantisation parameters (scales and zero points).
fn quantisation_names<'a>(nodes: &[&'a pb::NodeProto]) -> (HashSet<&'a str>, HashSet<&'a str>) {
    let mut weights = HashSet::new();
    let mut params = HashSet::new();
    for n in nodes {
        let (weight, qparams): (Option<usize>, &[usize]) = match &*n.op_type {
            "DequantizeLinear" => (Some(0), &[1, 2]),
            "QuantizeLinear" => (None, &[1, 2]),
            "ConvInteger" | "MatMulInteger" => (Some(1), &[2, 3]),
            "QLinearConv" | "QLinearMatMul" => (Some(3), &[1, 2, 4, 5, 6, 7]),
            _ => continue,
        };
        if let Some(w) = weight.and_then(|ix| n.input.get(ix)) {
            weights.insert(&**w);
        }
        params.extend(
            qparams
                .iter()
                .filter_map(|&ix| n.input.get(ix))
                .map(|s| &**s),
        );
    }
    params.remove("");
    (weights, params)
}

fn count_parameters(graph: &pb::GraphProto, nodes: &[&pb::NodeProto]) -> (u64, u64) {
    let (quantised, qparams) = quantisation_names(nodes);
    let mut count = 0u64;
    let mut bits = 0u64;
    let mut add = |name: &str, data_type: i32, n: u64| {
        if qparams.contains(name) {
            return;
        }
        let b = float_bits(data_type).or_else(|| {
            if quantised.contains(name) {
                int_bits(data_type)
            } else {
                None
            }
        });
        if let Some(b) = b {
            count = count.saturating_add(n);
            bits = bits.saturating_add(n.saturating_mul(b));
        }
    };
    let mut graphs = Vec::new();
    collect_graphs(graph, &mut graphs);
    for g in graphs {
        for t in &g.initializer {
            add(&t.name, t.data_type, elements(&t.dims));
        }
        for s in &g.sparse_initializer {
            if let Some(v) = &s.values {
                add(&v.name, v.data_type, elements(&v.dims));
            }
        }
    }
    for node in nodes.iter().filter(|n| n.op_type == "Constant") {
        let out = node.output.first().map(|s| &**s).unwrap_or("");
        for a in &node.attribute {
            match &*a.name {
                "value" => {
                    if let Some(t) = &a.t {
                        add(out, t.data_type, elements(&t.dims));
                    }
                }
                "sparse_value" => {
                    if let Some(v) = a.sparse_tensor.as_ref().and_then(|s| s.values.as_ref()) {
                        add(out, v.data_type, elements(&v.dims));
                    }
                }
                "value_float" => add(out, DataType::Float as i32, 1),
                "value_floats" => add(out, DataType::Float as i32, a.floats.len() as u64),
                _ => {}
            }
        }
    }
    (count, bits.div_ceil(8))
}

fn elem_type_name(data_type: i32) -> String {
    match DataType::try_from(data_type) {
        Ok(DataType::Float) => "float32".into(),
        Ok(DataType::Double) => "float64".into(),
        Ok(DataType::Undefined) | Err(_) => "?".into(),
        Ok(t) => t.as_str_name().to_ascii_lowercase(),
    }
}

fn declared(vi: &pb::ValueInfoProto) -> (Vec<Dim>, String) {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) =
        vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return (Vec::new(), "?".into());
    };
    let dims = t
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match &d.value {
                    Some(Value::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as u64),
                    Some(Value::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                    _ => Dim::Symbolic("?".into()),
                })
                .collect()
        })
        .unwrap_or_default();
    (dims, elem_type_name(t.elem_type))
}

fn tensor_info(vi: &pb::ValueInfoProto, resolved: Option<&Vec<usize>>) -> TensorInfo {
    let (declared_shape, elem_type) = declared(vi);
    let shape = match resolved {
        Some(r) => r.iter().map(|&d| Dim::Fixed(d as u64)).collect(),
        None => declared_shape.clone(),
    };
    TensorInfo {
        name: vi.name.clone(),
        shape,
        declared_shape,
        elem_type,
    }
}

/// The concrete shape of every real input: `input_shape` for the first one, the
/// declared shape for the others.
fn resolve_input_shapes(
    inputs: &[&pb::ValueInfoProto],
    input_shape: Option<&[usize]>,
    notes: &mut Vec<String>,
) -> Result<Vec<Vec<usize>>, TrainerError> {
    let mut shapes = Vec::new();
    for (ix, vi) in inputs.iter().enumerate() {
        let (dims, _) = declared(vi);
        match input_shape.filter(|_| ix == 0) {
            Some(given) => {
                if given.contains(&0) {
                    return Err(TrainerError::Invalid(format!(
                        "input shape {} has a zero dimension",
                        fmt_usizes(given)
                    )));
                }
                if !dims.is_empty() && dims.len() != given.len() {
                    return Err(TrainerError::Invalid(format!(
                        "input `{}` has rank {} ({}), the given input shape {} has rank {}",
                        vi.name,
                        dims.len(),
                        fmt_dims(&dims),
                        fmt_usizes(given),
                        given.len()
                    )));
                }
                let differs = dims
                    .iter()
                    .zip(given)
                    .any(|(d, &g)| matches!(d, Dim::Fixed(v) if *v != g as u64));
                if differs {
                    notes.push(format!(
                        "input `{}` is declared {}, analysed at {}",
                        vi.name,
                        fmt_dims(&dims),
                        fmt_usizes(given)
                    ));
                }
                shapes.push(given.to_vec());
            }
            None => {
                let fixed: Option<Vec<usize>> = dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(v) => Some(*v as usize),
                        Dim::Symbolic(_) => None,
                    })
                    .collect();
                match fixed {
                    Some(f) if !dims.is_empty() => shapes.push(f),
                    _ => {
                        let hint = if ix == 0 {
                            "pass --input-shape with a number for every dimension, e.g. \
                             --input-shape 1x3x640x640"
                        } else {
                            "only the first input's shape can be given (--input-shape), the \
                             others must be declared with fixed sizes"
                        };
                        let declared = if dims.is_empty() {
                            "(no shape declared)".to_string()
                        } else {
                            fmt_dims(&dims)
                        };
                        return Err(TrainerError::Invalid(format!(
                            "input `{}` has a dynamic shape {declared}; counting MACs needs a \
                             concrete one: {hint}",
                            vi.name
                        )));
                    }
                }
            }
        }
    }
    Ok(shapes)
}

/// Operator types whose tract builder rejects a node (run when parsing failed, to name
/// the operators responsible).
fn failing_builders(onnx: &Onnx, proto: &pb::ModelProto, opset: i64) -> BTreeSet<String> {
    fn walk<'a>(
        onnx: &'a Onnx,
        proto: &'a pb::ModelProto,
        opset: i64,
        parents: &mut Vec<&'a pb::GraphProto>,
        graph: &'a pb::GraphProto,
        out: &mut BTreeSet<String>,
    ) {
        parents.push(graph);
        for node in &graph.node {
            if let Some(builder) = onnx.op_register.0.get(&node.op_type) {
                let ctx = ParsingContext {
                    onnx_operator_set_version: opset,
                    framework: onnx,
                    model: proto,
                    parent_graphs: parents.clone(),
                    model_dir: None,
                    template: Default::default(),
                };
                if builder(&ctx, node).is_err() {
                    out.insert(op_key(node));
                }
            }
            for g in subgraphs(node) {
                walk(onnx, proto, opset, parents, g, out);
            }
        }
        parents.pop();
    }
    let mut out = BTreeSet::new();
    if let Some(graph) = &proto.graph {
        walk(onnx, proto, opset, &mut Vec::new(), graph, &mut out);
    }
    out
}

// ---------------------------------------------------------------------------------------
// MACs.

fn product(dims: &[usize]) -> u64 {
    dims.iter()
        .map(|&d| d as u64)
        .fold(1u64, u64::saturating_mul)
}

fn attr_int(node: &pb::NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// `None`: not a counted operator. `Some(None)`: counted, but a shape is unknown.
fn node_macs(node: &pb::NodeProto, shapes: &HashMap<String, Vec<usize>>) -> Option<Option<u64>> {
    let shape = |ix: usize, outputs: bool| -> Option<&Vec<usize>> {
        let names = if outputs { &node.output } else { &node.input };
        names.get(ix).and_then(|n| shapes.get(n))
    };
    let m = match &*node.op_type {
        "Conv" | "ConvInteger" | "QLinearConv" => {
            let w_ix = if node.op_type == "QLinearConv" { 3 } else { 1 };
            (|| {
                let y = shape(0, true)?;
                let w = shape(w_ix, false)?;
                Some(product(y).saturating_mul(product(w.get(1..)?)))
            })()
        }
        "ConvTranspose" => (|| {
            let x = shape(0, false)?;
            let w = shape(1, false)?;
            Some(product(x).saturating_mul(product(w.get(1..)?)))
        })(),
        "Gemm" => (|| {
            let a = shape(0, false)?;
            let y = shape(0, true)?;
            let k = if attr_int(node, "transA").unwrap_or(0) != 0 {
                *a.first()?
            } else {
                *a.get(1)?
            };
            Some(product(y).saturating_mul(k as u64))
        })(),
        "MatMul" | "MatMulInteger" | "QLinearMatMul" => (|| {
            let a = shape(0, false)?;
            let y = shape(0, true)?;
            Some(product(y).saturating_mul(*a.last()? as u64))
        })(),
        _ => return None,
    };
    Some(m)
}

// ---------------------------------------------------------------------------------------
// Formatting.

fn fmt_dims(dims: &[Dim]) -> String {
    format!(
        "[{}]",
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn fmt_usizes(dims: &[usize]) -> String {
    format!(
        "[{}]",
        dims.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human_count(n: u64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in UNITS {
        if n as f64 >= scale {
            return format!("{:.2} {unit}", n as f64 / scale);
        }
    }
    n.to_string()
}

fn human_bytes(n: u64) -> String {
    const UNITS: [(f64, &str); 3] = [
        (1024.0 * 1024.0 * 1024.0, "GiB"),
        (1024.0 * 1024.0, "MiB"),
        (1024.0, "KiB"),
    ];
    for (scale, unit) in UNITS {
        if n as f64 >= scale {
            return format!("{:.1} {unit}", n as f64 / scale);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(4_631_083), "4,631,083");
    }

    #[test]
    fn counts_are_human() {
        assert_eq!(human_count(12), "12");
        assert_eq!(human_count(385_187_552), "385.19 M");
        assert_eq!(human_bytes(18_524_332), "17.7 MiB");
    }

    #[test]
    fn dims_serialise_as_numbers_or_strings() {
        let dims = vec![Dim::Fixed(1), Dim::Symbolic("batch".into())];
        assert_eq!(serde_json::to_string(&dims).unwrap(), r#"[1,"batch"]"#);
    }

    #[test]
    fn shapes_parse() {
        assert_eq!(parse_shape("1x3x640x640").unwrap(), vec![1, 3, 640, 640]);
        assert_eq!(parse_shape(" 1, 3, 48,320 ").unwrap(), vec![1, 3, 48, 320]);
        for bad in ["", "1x", "1x3x0x4", "1x-3", "axb", "1.5x2"] {
            assert!(
                matches!(parse_shape(bad), Err(TrainerError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn garbage_is_not_onnx() {
        for bytes in [&b""[..], b"hello, world", &[0xff; 64]] {
            match inspect(bytes, None) {
                Err(TrainerError::Runtime(e)) => assert_eq!(e.code(), 3011, "{e}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
