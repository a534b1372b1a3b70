//! Outpost's own operators for the CPU backend, swapped into tract's optimised
//! graph where tract's kernel is slow. Each replaces one tract op exactly (same
//! inputs, outputs and semantics) and is tested against a naive implementation.

pub mod axis_softmax;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

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
