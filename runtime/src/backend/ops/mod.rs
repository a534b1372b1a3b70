//! Outpost's own operators for the CPU backend, swapped into tract's graph where
//! tract's kernel is slow: convolutions in the decluttered graph (where they still
//! carry their geometry), other ops in the optimised one. Each replaces one tract op
//! exactly (same inputs, outputs and semantics) and is tested against a naive
//! implementation.

pub mod axis_softmax;
pub mod depthwise;
pub mod gemm_conv;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::TypedModelPatch;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::cnn::KernelFormat;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::DataFormat;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// The geometry of a float 2-D convolution over NCHW or CHW with an OIHW kernel,
/// on a concrete input: what Outpost's convolution ops need to know.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size; `None` for a CHW tensor (tract's declutter drops a batch of 1).
    pub batch: Option<usize>,
    /// Input channels.
    pub channels: usize,
    /// Input height and width.
    pub input_hw: [usize; 2],
    /// Output height and width.
    pub output_hw: [usize; 2],
    /// Kernel height and width.
    pub kernel_hw: [usize; 2],
    /// Strides along H and W.
    pub strides: [usize; 2],
    /// Dilations along H and W.
    pub dilations: [usize; 2],
    /// Zero padding before the first row and column.
    pub pad_before: [usize; 2],
}

impl ConvGeometry {
    /// The geometry of `conv` on `input`; `None` for a quantised, non-f32,
    /// non-2-D or channels-last convolution, a non-OIHW kernel, or an empty output.
    pub fn of(conv: &Conv, input: &TypedFact) -> Option<ConvGeometry> {
        let spec = &conv.pool_spec;
        if conv.q_params.is_some()
            || input.datum_type != f32::datum_type()
            || !matches!(spec.data_format, DataFormat::NCHW | DataFormat::CHW)
            || conv.kernel_fmt != KernelFormat::OIHW
            || spec.rank() != 2
        {
            return None;
        }
        let (batch, channels, h, w) = match *input.shape.as_concrete()? {
            [n, c, h, w] if spec.data_format == DataFormat::NCHW => (Some(n), c, h, w),
            [c, h, w] if spec.data_format == DataFormat::CHW => (None, c, h, w),
            _ => return None,
        };
        if channels != spec.input_channels || channels == 0 || spec.output_channels == 0 {
            return None;
        }
        let padding = spec.computed_padding(&[h, w]);
        let output_hw = [padding[0].convoluted, padding[1].convoluted];
        if output_hw.contains(&0) {
            return None;
        }
        let (strides, dilations) = (spec.strides(), spec.dilations());
        Some(ConvGeometry {
            batch,
            channels,
            input_hw: [h, w],
            output_hw,
            kernel_hw: [spec.kernel_shape[0], spec.kernel_shape[1]],
            strides: [strides[0], strides[1]],
            dilations: [dilations[0], dilations[1]],
            pad_before: [padding[0].pad_before, padding[1].pad_before],
        })
    }
}

/// Replaces tract ops in a decluttered (not yet optimised) model, where the
/// convolutions still carry their geometry; returns how many were replaced.
/// Depthwise convolutions are replaced where Outpost's op is measured faster
/// ([`depthwise::Depthwise::beats_tract`]).
pub fn rewrite_decluttered(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = replace_depthwise(model, depthwise::Depthwise::beats_tract)?;
    if gemm_conv::enabled() {
        replaced += replace_gemm(model, |_| true)?;
    }
    Ok(replaced)
}

/// Replaces every group-1 convolution and 1×1 channel mix (`EinSum`) that
/// [`gemm_conv::GemmConv`] can run and `keep` accepts, absorbing the bias `Add`
/// that follows a channel mix.
pub fn replace_gemm(
    model: &mut TypedModel,
    keep: impl Fn(&gemm_conv::GemmConv) -> bool,
) -> TractResult<usize> {
    use gemm_conv::GemmConv;
    let mut replaced = 0;
    for id in 0..model.nodes.len() {
        let node = model.node(id);
        if let Some(conv) = node.op_as::<Conv>() {
            let op = GemmConv::for_conv(conv, model.outlet_fact(node.inputs[0])?);
            if let Some(op) = op.filter(|op| keep(op)) {
                model.node_mut(id).op = Box::new(op);
                replaced += 1;
            }
            continue;
        }
        let (Some(einsum), [a, b]) = (node.op_as::<EinSum>(), &*node.inputs) else {
            continue;
        };
        let facts = [model.outlet_fact(*a)?, model.outlet_fact(*b)?];
        let found = GemmConv::for_einsum(einsum, facts, model.outlet_fact(OutletId::new(id, 0))?);
        let Some((op, weight_slot)) = found.filter(|(op, _)| keep(op)) else {
            tracing::debug!(node = %node.name, axes = %einsum.axes, ?facts, "product left to tract");
            continue;
        };
        replaced += 1;
        // The op takes (input, weight[, bias]); the bias of a following Add joins it.
        let mut patch = TypedModelPatch::default();
        let mut taps = patch.taps(
            model,
            &[node.inputs[1 - weight_slot], node.inputs[weight_slot]],
        )?;
        let mut last = id;
        if let Some((add, bias)) = bias_add_after(model, id, &op)? {
            taps.push(patch.add_const(format!("{}.outpost_bias", node.name), bias)?);
            last = add;
        }
        let wire = patch.wire_node(format!("{}.outpost_gemm", node.name), op, &taps)?;
        patch.shunt_outside(model, last.into(), wire[0])?;
        patch.apply(model)?;
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
}

/// The bias of an `Add` that is the only consumer of node `id` (the product
/// `op` runs) and adds a constant per output channel or a scalar: the node id
/// of the `Add` and the bias, flattened to one value per channel (or one).
fn bias_add_after(
    model: &TypedModel,
    id: usize,
    op: &gemm_conv::GemmConv,
) -> TractResult<Option<(usize, Tensor)>> {
    let [succ] = &*model.node(id).outputs[0].successors else {
        return Ok(None);
    };
    let add = model.node(succ.node);
    let Some(bin) = add.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if bin.0.name() != "Add" || add.inputs.len() != 2 {
        return Ok(None);
    }
    let other = model.outlet_fact(add.inputs[1 - succ.slot])?;
    let Some(konst) = &other.konst else {
        return Ok(None);
    };
    let out_rank = op.output_shape.len();
    if konst.datum_type() != f32::datum_type()
        || konst.rank() > out_rank
        || model
            .outlet_fact(OutletId::new(add.id, 0))?
            .shape
            .as_concrete()
            != Some(&*op.output_shape)
    {
        return Ok(None);
    }
    // The bias's shape as the Add broadcasts it against the product's output.
    let padded: Vec<usize> = std::iter::repeat_n(1, out_rank - konst.rank())
        .chain(konst.shape().iter().copied())
        .collect();
    let per_channel = padded
        .iter()
        .enumerate()
        .all(|(axis, d)| *d == 1 || (axis == op.channel_axis && *d == op.m));
    if !per_channel {
        return Ok(None);
    }
    let values: Vec<f32> = konst
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect();
    Ok(Some((add.id, tensor1(&values))))
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
