//! INT8 weights of a QDQ ONNX model, dequantised once on the protobuf before
//! tract reads it.
//!
//! A QDQ model stores each weight as an int8 initializer behind a
//! `DequantizeLinear`. tract-onnx expands a per-channel one into `Cast`, `Sub` and
//! `Mul` nodes and folds them while typing the model, through generic broadcasting
//! loops: half of an INT8 package's load (about 190 ms of EfficientNet-Lite0's
//! 380). Here each such node becomes an f32 initializer, computed with the same
//! float operations (`(q − zero) · scale`), so tract sees exactly the constant it
//! would have folded.

use std::collections::HashMap;

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, TensorProto};

/// An initializer's values as `f32`, from int8, uint8, int32 or float data (raw
/// or typed); `None` for anything else (external data included).
fn values(t: &TensorProto) -> Option<Vec<f32>> {
    if !t.external_data.is_empty() {
        return None;
    }
    let raw = &t.raw_data;
    match DataType::try_from(t.data_type).ok()? {
        DataType::Int8 if !raw.is_empty() => {
            Some(raw.iter().map(|&b| f32::from(b as i8)).collect())
        }
        DataType::Uint8 if !raw.is_empty() => Some(raw.iter().map(|&b| f32::from(b)).collect()),
        DataType::Int8 | DataType::Uint8 | DataType::Int32 if raw.is_empty() => {
            Some(t.int32_data.iter().map(|&v| v as f32).collect())
        }
        DataType::Float if !raw.is_empty() => raw.len().is_multiple_of(4).then(|| {
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        }),
        DataType::Float => Some(t.float_data.clone()),
        _ => None,
    }
}

/// Replaces every `DequantizeLinear` whose inputs are all initializers (int8 or
/// uint8 values, f32 scales, per tensor or along `axis`) by an f32 initializer
/// holding its output, and drops the initializers nothing reads any more.
/// Returns how many nodes were replaced; anything it does not recognise is left
/// to tract.
pub fn dequantize_weights(graph: &mut GraphProto) -> usize {
    let index: HashMap<String, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    let mut folded = Vec::new();
    let mut keep = vec![true; graph.node.len()];
    for (n, node) in graph.node.iter().enumerate() {
        if node.op_type != "DequantizeLinear" || node.input.len() < 2 || node.output.len() != 1 {
            continue;
        }
        let init = |i: usize| {
            node.input
                .get(i)
                .and_then(|name| index.get(name))
                .map(|&k| &graph.initializer[k])
        };
        let (Some(x), Some(scale)) = (init(0), init(1)) else {
            continue;
        };
        if !matches!(
            DataType::try_from(x.data_type),
            Ok(DataType::Int8 | DataType::Uint8)
        ) || scale.data_type != DataType::Float as i32
        {
            continue;
        }
        let zero = match node.input.get(2).filter(|name| !name.is_empty()) {
            Some(_) => match init(2).and_then(values) {
                Some(z) => z,
                None => continue,
            },
            None => vec![0.0],
        };
        let (Some(q), Some(scales)) = (values(x), values(scale)) else {
            continue;
        };
        let dims: Vec<usize> = x.dims.iter().map(|&d| d.max(0) as usize).collect();
        if dims.iter().product::<usize>() != q.len()
            || scales.is_empty()
            || zero.len() != scales.len() && zero.len() != 1
        {
            continue;
        }
        // The channel of element `i`: its index along `axis` (default 1), or 0
        // for one scale.
        let channel: Box<dyn Fn(usize) -> usize> = if scales.len() == 1 {
            Box::new(|_| 0)
        } else {
            let rank = dims.len() as i64;
            let axis = node
                .attribute
                .iter()
                .find(|a| a.name == "axis")
                .map_or(1, |a| a.i);
            let axis = if axis < 0 { axis + rank } else { axis };
            if !(0..rank).contains(&axis) || dims[axis as usize] != scales.len() {
                continue;
            }
            let inner: usize = dims[axis as usize + 1..].iter().product();
            let len = scales.len();
            Box::new(move |i| (i / inner) % len)
        };
        let data: Vec<u8> = q
            .iter()
            .enumerate()
            .flat_map(|(i, &v)| {
                let c = channel(i);
                let z = if zero.len() == 1 { zero[0] } else { zero[c] };
                ((v - z) * scales[c]).to_le_bytes()
            })
            .collect();
        folded.push(TensorProto {
            name: node.output[0].clone(),
            dims: x.dims.clone(),
            data_type: DataType::Float as i32,
            raw_data: data,
            ..Default::default()
        });
        keep[n] = false;
    }
    let replaced = folded.len();
    if replaced == 0 {
        return 0;
    }
    let mut kept = keep.iter();
    graph.node.retain(|_| *kept.next().unwrap_or(&true));
    let read: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().map(|o| o.name.as_str()))
        .collect();
    let read: std::collections::HashSet<String> = read.into_iter().map(str::to_string).collect();
    let removed: std::collections::HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| !read.contains(&t.name))
        .map(|t| t.name.clone())
        .collect();
    graph.initializer.retain(|t| !removed.contains(&t.name));
    // Older models also list initializers as graph inputs.
    graph.input.retain(|i| !removed.contains(&i.name));
    graph.initializer.extend(folded);
    replaced
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ops::qgemm_conv::tests::run as run_model;
    use tract_onnx::pb::{
        tensor_shape_proto::{dimension, Dimension},
        type_proto, AttributeProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto,
        TypeProto, ValueInfoProto,
    };
    use tract_onnx::prelude::*;

    fn init(name: &str, dims: &[i64], data_type: DataType, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: data_type as i32,
            raw_data: raw,
            ..Default::default()
        }
    }

    fn f32_raw(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn value(name: &str) -> ValueInfoProto {
        let dim = |d| Dimension {
            value: Some(dimension::Value::DimValue(d)),
            ..Default::default()
        };
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: DataType::Float as i32,
                    shape: Some(TensorShapeProto {
                        dim: vec![dim(3), dim(4)],
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], output: &str, axis: Option<i64>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: axis
                .map(|a| AttributeProto {
                    name: "axis".into(),
                    i: a,
                    r#type: 2,
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            ..Default::default()
        }
    }

    /// `x + DQ(w) + DQ(u)`: `w` int8 per channel along axis 0 (zero points per
    /// channel), `u` uint8 per tensor; `w` also listed as a graph input, as older
    /// exporters do.
    fn model() -> ModelProto {
        let w: Vec<u8> = (0..12u8)
            .map(|i| i.wrapping_mul(23).wrapping_sub(127))
            .collect();
        let u: Vec<u8> = (0..12u8).map(|i| i * 21).collect();
        let graph = GraphProto {
            node: vec![
                node(
                    "DequantizeLinear",
                    &["w", "w_scale", "w_zero"],
                    "w_f",
                    Some(0),
                ),
                node("DequantizeLinear", &["u", "u_scale", "u_zero"], "u_f", None),
                node("Add", &["x", "w_f"], "y", None),
                node("Add", &["y", "u_f"], "z", None),
            ],
            initializer: vec![
                init("w", &[3, 4], DataType::Int8, w),
                init(
                    "w_scale",
                    &[3],
                    DataType::Float,
                    f32_raw(&[0.013, 0.5, 1.0 / 3.0]),
                ),
                init("w_zero", &[3], DataType::Int8, vec![0, 5, 251]),
                init("u", &[3, 4], DataType::Uint8, u),
                init("u_scale", &[], DataType::Float, f32_raw(&[0.07])),
                init("u_zero", &[], DataType::Uint8, vec![128]),
            ],
            input: vec![value("x"), value("w")],
            output: vec![value("z")],
            ..Default::default()
        };
        ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(graph),
            ..Default::default()
        }
    }

    fn run(proto: &ModelProto) -> Vec<f32> {
        let model = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .unwrap()
            .with_input_fact(0, f32::fact([3, 4]).into())
            .unwrap()
            .into_optimized()
            .unwrap();
        run_model(&model, &Tensor::zero::<f32>(&[3, 4]).unwrap())
    }

    /// The folded initializers give tract's values bit for bit; the nodes, the
    /// int8 initializers and the stale graph input are gone.
    #[test]
    fn dequantised_initializers_equal_what_tract_computes() {
        let original = model();
        let mut folded = original.clone();
        let graph = folded.graph.as_mut().unwrap();
        assert_eq!(dequantize_weights(graph), 2);
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Add", "Add"]);
        let names: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w_f", "u_f"]);
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(inputs, ["x"]);
        let (want, got) = (run(&original), run(&folded));
        assert_eq!(
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // Not a comparison of zeros.
        assert!(want.iter().any(|v| *v != 0.0));
    }

    /// What it does not recognise stays for tract: a computed input, float
    /// values, a bad axis, a wrong number of scales.
    #[test]
    fn anything_else_is_left_alone() {
        let cases: [fn(&mut GraphProto); 4] = [
            |g| g.node[0].input[0] = "x".into(),
            |g| g.initializer[0].data_type = DataType::Float as i32,
            |g| g.node[0].attribute[0].i = 5,
            |g| g.initializer[1].raw_data.truncate(8),
        ];
        for (i, break_it) in cases.iter().enumerate() {
            let mut proto = model();
            let graph = proto.graph.as_mut().unwrap();
            break_it(graph);
            assert_eq!(dequantize_weights(graph), 1, "case {i}");
            assert_eq!(graph.node[0].op_type, "DequantizeLinear", "case {i}");
        }
    }
}
