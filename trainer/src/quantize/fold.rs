//! Graph clean-ups before quantisation: constants become initializers, and each
//! BatchNormalization that follows a Conv is folded into the Conv's weights.

use std::collections::BTreeMap;

use tract_onnx::pb::{tensor_proto::DataType, GraphProto, TensorProto};

use super::qdq::float_values;
use crate::Result;

/// Moves `Constant` nodes holding a tensor (`value`) into the initializer list,
/// so weights stored either way are found alike. Returns how many moved.
pub fn constants_to_initializers(graph: &mut GraphProto) -> usize {
    let mut moved = 0;
    let mut kept = Vec::with_capacity(graph.node.len());
    for node in std::mem::take(&mut graph.node) {
        let tensor = (node.op_type == "Constant" && node.output.len() == 1)
            .then(|| node.attribute.iter().find(|a| a.name == "value"))
            .flatten()
            .and_then(|a| a.t.clone());
        match tensor {
            Some(mut t) => {
                t.name = node.output[0].clone();
                graph.initializer.push(t);
                moved += 1;
            }
            None => kept.push(node),
        }
    }
    graph.node = kept;
    moved
}

fn float_tensor(name: String, dims: Vec<i64>, values: &[f32]) -> TensorProto {
    TensorProto {
        name,
        dims,
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

/// Folds `Conv -> BatchNormalization` pairs (the Conv output read by nothing
/// else, all parameters constant) into the Conv. Returns how many were folded.
pub fn fold_batch_norm(graph: &mut GraphProto) -> Result<usize> {
    let mut readers: BTreeMap<String, usize> = BTreeMap::new();
    for n in &graph.node {
        for i in &n.input {
            *readers.entry(i.clone()).or_default() += 1;
        }
    }
    for o in &graph.output {
        *readers.entry(o.name.clone()).or_default() += 1;
    }
    let producer: BTreeMap<String, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i)))
        .collect();
    let mut folded = Vec::new();
    for (bn_index, bn) in graph.node.iter().enumerate() {
        if bn.op_type != "BatchNormalization" || bn.input.len() != 5 || bn.output.len() != 1 {
            continue;
        }
        let Some(&conv_index) = producer.get(&bn.input[0]) else {
            continue;
        };
        let conv = &graph.node[conv_index];
        if conv.op_type != "Conv" || readers.get(&bn.input[0]) != Some(&1) {
            continue;
        }
        let init = |name: &str| graph.initializer.iter().find(|t| t.name == name);
        let params: Option<Vec<&TensorProto>> = bn.input[1..].iter().map(|n| init(n)).collect();
        let (Some(params), Some(weight)) = (params, conv.input.get(1).and_then(|w| init(w))) else {
            continue;
        };
        let values = |t: &TensorProto| float_values(t).ok();
        let (Some(gamma), Some(beta), Some(mean), Some(var), Some(w)) = (
            values(params[0]),
            values(params[1]),
            values(params[2]),
            values(params[3]),
            values(weight),
        ) else {
            continue;
        };
        let channels = gamma.len();
        let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match init(b).and_then(values) {
                Some(v) => v,
                None => continue,
            },
            None => vec![0.0; channels],
        };
        if [beta.len(), mean.len(), var.len(), bias.len()] != [channels; 4]
            || weight.dims.first() != Some(&(channels as i64))
        {
            continue;
        }
        let eps = bn
            .attribute
            .iter()
            .find(|a| a.name == "epsilon")
            .map_or(1e-5, |a| a.f);
        let factor: Vec<f32> = (0..channels)
            .map(|c| gamma[c] / (var[c] + eps).sqrt())
            .collect();
        let per = w.len() / channels;
        let new_w: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(i, v)| v * factor[i / per])
            .collect();
        let new_b: Vec<f32> = (0..channels)
            .map(|c| (bias[c] - mean[c]) * factor[c] + beta[c])
            .collect();
        folded.push((conv_index, bn_index, new_w, weight.dims.clone(), new_b));
    }
    let count = folded.len();
    let mut drop = Vec::new();
    for (conv_index, bn_index, w, dims, b) in folded {
        let out = graph.node[bn_index].output[0].clone();
        let conv_name = if graph.node[conv_index].name.is_empty() {
            out.clone()
        } else {
            graph.node[conv_index].name.clone()
        };
        let (w_name, b_name) = (
            format!("{conv_name}_folded_weight"),
            format!("{conv_name}_folded_bias"),
        );
        graph
            .initializer
            .push(float_tensor(w_name.clone(), dims, &w));
        graph
            .initializer
            .push(float_tensor(b_name.clone(), vec![b.len() as i64], &b));
        let conv = &mut graph.node[conv_index];
        conv.input.truncate(1);
        conv.input.push(w_name);
        conv.input.push(b_name);
        conv.output = vec![out];
        drop.push(bn_index);
    }
    let mut index = 0;
    graph.node.retain(|_| {
        let keep = !drop.contains(&index);
        index += 1;
        keep
    });
    // Initializers nothing reads any more (the old weights and BN parameters).
    let used: std::collections::BTreeSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    graph.initializer.retain(|t| used.contains(&t.name));
    Ok(count)
}
