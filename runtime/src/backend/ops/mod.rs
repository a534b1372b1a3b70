//! Outpost's own operators for the CPU backend, swapped into tract's graph where
//! tract's kernel is slow: convolutions in the decluttered graph (where they still
//! carry their geometry), other ops in the optimised one. Each replaces one tract op
//! exactly (same inputs, outputs and semantics) and is tested against a naive
//! implementation.

pub mod axis_softmax;
pub mod depthwise;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// Replaces tract ops in a decluttered (not yet optimised) model, where the
/// convolutions still carry their geometry; returns how many were replaced.
/// Depthwise convolutions are replaced where Outpost's op is measured faster
/// ([`depthwise::Depthwise::beats_tract`]).
pub fn rewrite_decluttered(model: &mut TypedModel) -> TractResult<usize> {
    replace_depthwise(model, depthwise::Depthwise::beats_tract)
}

/// Replaces every depthwise convolution `keep` accepts by [`depthwise::Depthwise`].
pub fn replace_depthwise(
    model: &mut TypedModel,
    keep: impl Fn(&depthwise::Depthwise) -> bool,
) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes.len() {
        let Some(conv) = model.node(id).op_as::<Conv>() else {
            continue;
        };
        let input = model.outlet_fact(model.node(id).inputs[0])?;
        if let Some(op) = depthwise::Depthwise::for_conv(conv, input).filter(|op| keep(op)) {
            model.node_mut(id).op = Box::new(op);
            replaced += 1;
        }
    }
    Ok(replaced)
}

/// Replaces slow tract ops in an optimised model; returns how many were replaced.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes.len() {
        let Some(op) = model.node(id).op_as::<Softmax>() else {
            continue;
        };
        // tract's softmax is fast along the last axis only; YOLOv8's DFL head
        // takes it over axis 1 of [1, 16, 4, 8400], a third of the model's time.
        let rank = model.outlet_fact(model.node(id).inputs[0])?.rank();
        let dt = model.outlet_fact(model.node(id).inputs[0])?.datum_type;
        if let ([axis], SoftmaxKind::Softmax, true) =
            (op.axes.as_slice(), op.kind, dt == f32::datum_type())
        {
            if *axis + 1 < rank {
                model.node_mut(id).op = Box::new(axis_softmax::AxisSoftmax { axis: *axis });
                replaced += 1;
            }
        }
    }
    Ok(replaced)
}
