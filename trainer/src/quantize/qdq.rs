//! The QDQ rewrite of an ONNX graph: int8 per-channel weights behind
//! `DequantizeLinear`, and uint8 per-tensor activations through a
//! `QuantizeLinear`/`DequantizeLinear` pair, in front of each quantised
//! Conv, Gemm and MatMul. This is the standard form that onnxruntime, TensorRT and
//! rknn-toolkit2 read.

use std::collections::{BTreeMap, BTreeSet};

use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, AttributeProto, GraphProto, NodeProto,
    TensorProto,
};

use crate::{Result, TrainerError};

/// One node to quantise: its activation input and its weight initializer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Position in `graph.node`.
    pub node: usize,
    /// Node name (or `op_type#index` when unnamed).
    pub name: String,
    /// Op type.
    pub op: String,
    /// Activation input tensor.
    pub activation: String,
    /// Weight initializer.
    pub weight: String,
    /// Output-channel axis of the weight.
    pub axis: usize,
}

/// Op types this quantiser handles.
pub const QUANTIZABLE_OPS: [&str; 3] = ["Conv", "Gemm", "MatMul"];

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

/// A display name for a node.
pub fn node_name(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!("{}#{index}", node.op_type)
    } else {
        node.name.clone()
    }
}

/// The nodes that can be quantised, less those skipped by name or op type.
/// Without per-channel weight scales, grouped (depthwise) convolutions stay FP32:
/// one scale for all their channels loses too much.
pub fn targets(
    graph: &GraphProto,
    skip_nodes: &[String],
    skip_ops: &[String],
    per_channel: bool,
) -> Vec<Target> {
    let inits: BTreeMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut out = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        let name = node_name(node, i);
        if !QUANTIZABLE_OPS.contains(&node.op_type.as_str())
            || skip_ops
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&node.op_type))
            || skip_nodes.contains(&name)
            || node.input.len() < 2
        {
            continue;
        }
        let Some(weight) = inits.get(node.input[1].as_str()) else {
            continue;
        };
        if weight.data_type != DataType::Float as i32 || inits.contains_key(node.input[0].as_str())
        {
            continue;
        }
        if !per_channel && attr_i(node, "group").unwrap_or(1) > 1 {
            continue;
        }
        let axis = match node.op_type.as_str() {
            "Conv" if weight.dims.len() >= 3 => 0,
            "Gemm" if weight.dims.len() == 2 && attr_i(node, "transA").unwrap_or(0) == 0 => {
                if attr_i(node, "transB").unwrap_or(0) == 1 {
                    0
                } else {
                    1
                }
            }
            "MatMul" if weight.dims.len() == 2 => 1,
            _ => continue,
        };
        out.push(Target {
            node: i,
            name,
            op: node.op_type.clone(),
            activation: node.input[0].clone(),
            weight: node.input[1].clone(),
            axis,
        });
    }
    out
}

/// Float values of an initializer.
pub fn float_values(t: &TensorProto) -> Result<Vec<f32>> {
    if t.data_type != DataType::Float as i32 {
        return Err(TrainerError::Invalid(format!("{} is not float", t.name)));
    }
    if !t.raw_data.is_empty() {
        if !t.raw_data.len().is_multiple_of(4) {
            return Err(TrainerError::Invalid(format!(
                "{} has ragged raw data",
                t.name
            )));
        }
        return Ok(t
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect());
    }
    Ok(t.float_data.clone())
}

fn tensor(name: String, data_type: DataType, dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name,
        data_type: data_type as i32,
        dims,
        raw_data: raw,
        ..TensorProto::default()
    }
}

fn node(
    op: &str,
    name: String,
    input: Vec<String>,
    output: String,
    axis: Option<i64>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name,
        input,
        output: vec![output],
        attribute: axis
            .map(|i| AttributeProto {
                name: "axis".into(),
                r#type: AttributeType::Int as i32,
                i,
                ..AttributeProto::default()
            })
            .into_iter()
            .collect(),
        ..NodeProto::default()
    }
}

/// Per-channel symmetric int8: scale = max|w| / 127 per output channel.
pub fn quantize_weight(values: &[f32], dims: &[i64], axis: usize) -> (Vec<i8>, Vec<f32>) {
    let dims: Vec<usize> = dims.iter().map(|&d| d.max(0) as usize).collect();
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let channel_of = |i: usize| (i / inner) % channels;
    let mut amax = vec![0.0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = channel_of(i);
        amax[c] = amax[c].max(v.abs());
    }
    let scales: Vec<f32> = amax
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let q = values
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[channel_of(i)]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// Asymmetric uint8 parameters for a range containing zero.
pub fn activation_params(lo: f32, hi: f32) -> (f32, u8) {
    let scale = (hi - lo) / 255.0;
    if scale.is_nan() || scale <= f32::EPSILON {
        return (1.0, 0);
    }
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

/// Rewrites `graph` in place. `ranges` gives each target activation's range.
/// Weights are per-channel when `per_channel` (ONNX opset 13 and later), else one
/// scale per tensor (opsets 10 to 12, whose `DequantizeLinear` has no axis).
pub fn rewrite(
    graph: &mut GraphProto,
    targets: &[Target],
    ranges: &BTreeMap<String, (f32, f32)>,
    per_channel: bool,
) -> Result<()> {
    let mut new_inits = Vec::new();
    let mut weight_nodes = Vec::new();
    // Quantise every weight once, even if several nodes share it.
    let weights: BTreeMap<&str, usize> = targets
        .iter()
        .map(|t| (t.weight.as_str(), t.axis))
        .collect();
    for (&w, &axis) in &weights {
        let init = graph
            .initializer
            .iter()
            .find(|t| t.name == w)
            .ok_or_else(|| TrainerError::Invalid(format!("initializer {w} vanished")))?;
        let (q, scales) = if per_channel {
            quantize_weight(&float_values(init)?, &init.dims, axis)
        } else {
            let n: i64 = init.dims.iter().product();
            quantize_weight(&float_values(init)?, &[1, n], 0)
        };
        let channels = if per_channel {
            vec![scales.len() as i64]
        } else {
            vec![]
        };
        new_inits.push(tensor(
            format!("{w}_quantized"),
            DataType::Int8,
            init.dims.clone(),
            q.iter().map(|&v| v as u8).collect(),
        ));
        new_inits.push(tensor(
            format!("{w}_scale"),
            DataType::Float,
            channels.clone(),
            scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        ));
        new_inits.push(tensor(
            format!("{w}_zero_point"),
            DataType::Int8,
            channels,
            vec![0; scales.len()],
        ));
        weight_nodes.push(node(
            "DequantizeLinear",
            format!("{w}_DequantizeLinear"),
            vec![
                format!("{w}_quantized"),
                format!("{w}_scale"),
                format!("{w}_zero_point"),
            ],
            format!("{w}_dequantized"),
            per_channel.then_some(axis as i64),
        ));
    }

    // One Q/DQ pair per activation, placed just before its first quantised consumer.
    let mut first_use: BTreeMap<&str, usize> = BTreeMap::new();
    for t in targets {
        let e = first_use.entry(t.activation.as_str()).or_insert(t.node);
        *e = (*e).min(t.node);
    }
    let mut before: BTreeMap<usize, Vec<NodeProto>> = BTreeMap::new();
    for (&a, &at) in &first_use {
        let (lo, hi) = ranges
            .get(a)
            .copied()
            .ok_or_else(|| TrainerError::Invalid(format!("no calibration range for {a}")))?;
        let (scale, zp) = activation_params(lo, hi);
        new_inits.push(tensor(
            format!("{a}_scale"),
            DataType::Float,
            vec![],
            scale.to_le_bytes().to_vec(),
        ));
        new_inits.push(tensor(
            format!("{a}_zero_point"),
            DataType::Uint8,
            vec![],
            vec![zp],
        ));
        let params = [format!("{a}_scale"), format!("{a}_zero_point")];
        before.entry(at).or_default().extend([
            node(
                "QuantizeLinear",
                format!("{a}_QuantizeLinear"),
                vec![a.to_string(), params[0].clone(), params[1].clone()],
                format!("{a}_quantized"),
                None,
            ),
            node(
                "DequantizeLinear",
                format!("{a}_DequantizeLinear"),
                vec![
                    format!("{a}_quantized"),
                    params[0].clone(),
                    params[1].clone(),
                ],
                format!("{a}_dequantized"),
                None,
            ),
        ]);
    }

    // Point the quantised nodes at the dequantised tensors.
    for t in targets {
        let n = &mut graph.node[t.node];
        n.input[0] = format!("{}_dequantized", t.activation);
        n.input[1] = format!("{}_dequantized", t.weight);
    }

    // Drop float weights nothing else reads.
    let still_used: BTreeSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().map(|o| o.name.as_str()))
        .collect();
    let unused: BTreeSet<String> = weights
        .keys()
        .filter(|w| !still_used.contains(**w))
        .map(|w| w.to_string())
        .collect();
    graph.initializer.retain(|t| !unused.contains(&t.name));
    graph.input.retain(|i| !unused.contains(&i.name));
    graph.initializer.extend(new_inits);

    let old = std::mem::take(&mut graph.node);
    let mut nodes = weight_nodes;
    for (i, n) in old.into_iter().enumerate() {
        if let Some(pre) = before.remove(&i) {
            nodes.extend(pre);
        }
        nodes.push(n);
    }
    graph.node = nodes;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_symmetric_per_channel() {
        // Two output channels of two values each.
        let (q, s) = quantize_weight(&[1.0, -0.5, 0.0, 0.0], &[2, 2, 1, 1], 0);
        assert_eq!(s, vec![1.0 / 127.0, 1.0]);
        assert_eq!(q, vec![127, -64, 0, 0]);
        // Axis 1 of a [K, N] MatMul weight.
        let (q, s) = quantize_weight(&[2.0, 1.0, -2.0, 0.5], &[2, 2], 1);
        assert_eq!(s, vec![2.0 / 127.0, 1.0 / 127.0]);
        assert_eq!(q, vec![127, 127, -127, 64]);
    }

    #[test]
    fn activations_map_zero_exactly() {
        let (s, zp) = activation_params(-1.0, 3.0);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(zp, 64);
        assert_eq!(activation_params(0.0, 6.0).1, 0);
        assert_eq!(activation_params(0.0, 0.0), (1.0, 0));
    }
}
