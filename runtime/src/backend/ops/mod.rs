//! Outpost's own operators for the CPU backend, swapped into tract's graph where
//! tract's kernel is slow: convolutions in the decluttered graph (where they still
//! carry their geometry), other ops in the optimised one. Each replaces one tract op
//! exactly (same inputs, outputs and semantics) and is tested against a naive
//! implementation.

pub mod activation;
pub mod axis_softmax;
pub mod depthwise;
pub mod epilogue;
pub mod gemm_conv;
pub mod qgemm_conv;
pub mod quant;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::TypedModelPatch;
use tract_onnx::tract_core::ops::cast::Cast;
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
    remove_noop_casts(model)?;
    // A QDQ model: quantise-dequantise pairs first, as the INT8 products and the
    // epilogues look for them.
    let mut replaced = quant::fuse_pairs(model)?;
    if replaced > 0 {
        quant::fold_constants(model)?;
        quant::fold_pads(model)?;
        // The portable INT8 kernel (no SIMD: armv7, or a build without it) is
        // slower than the f32 products; there the pairs stay fused and f32 runs.
        if qgemm_conv::enabled() {
            replaced += replace_quantized(model)?;
        }
    }
    replaced += replace_depthwise(model, depthwise::Depthwise::beats_tract)?;
    if gemm_conv::enabled() {
        replaced += replace_gemm(model, |_| true)?;
    }
    Ok(replaced)
}

/// Removes casts to the type their input already has. A model read back from
/// NNEF has one around most element-wise ops and constants (tract's declutter
/// would remove them, but a second declutter costs up to 40% of the load);
/// without them, constants are visible as such to the epilogue search.
fn remove_noop_casts(model: &mut TypedModel) -> TractResult<()> {
    let mut removed = 0;
    for id in 0..model.nodes.len() {
        let node = model.node(id);
        let Some(cast) = node.op_as::<Cast>() else {
            continue;
        };
        if node.inputs.len() != 1 || model.outlet_fact(node.inputs[0])?.datum_type != cast.to {
            continue;
        }
        if let Some(patch) = TypedModelPatch::shunt_one_op(model, node)? {
            patch.apply(model)?;
            removed += 1;
        }
    }
    if removed > 0 {
        model.compact()?;
    }
    Ok(())
}

/// Replaces every group-1 convolution and 1×1 channel mix (`EinSum`) that
/// [`gemm_conv::GemmConv`] can run and `keep` accepts, with the constant
/// scales, shifts and activations that follow it ([`epilogue::Epilogue`]).
pub fn replace_gemm(
    model: &mut TypedModel,
    keep: impl Fn(&gemm_conv::GemmConv) -> bool,
) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes.len() {
        let node = model.node(id);
        let Some((op, inputs)) = gemm_candidate(model, id)?.filter(|(op, _)| keep(op)) else {
            continue;
        };
        let channels = op.channels();
        let name = format!("{}.outpost", node.name);
        replace_with_epilogue(
            model,
            id,
            &inputs,
            channels,
            false,
            |pointwise, patch, taps| {
                patch.wire_node(name, gemm_conv::GemmConv { pointwise, ..op }, taps)
            },
        )?;
        replaced += 1;
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
}

/// The [`gemm_conv::GemmConv`] that can run node `id` (a group-1 convolution
/// or a 1×1 channel mix), with its inputs in the op's order: (image, weight[, bias]).
fn gemm_candidate(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<(gemm_conv::GemmConv, Vec<OutletId>)>> {
    use gemm_conv::GemmConv;
    let node = model.node(id);
    if let Some(conv) = node.op_as::<Conv>() {
        let op = GemmConv::for_conv(conv, model.outlet_fact(node.inputs[0])?);
        return Ok(op.map(|op| (op, node.inputs.to_vec())));
    }
    let (Some(einsum), [a, b]) = (node.op_as::<EinSum>(), &*node.inputs) else {
        return Ok(None);
    };
    let facts = [model.outlet_fact(*a)?, model.outlet_fact(*b)?];
    let out = model.outlet_fact(OutletId::new(id, 0))?;
    let Some((op, weight_slot)) = GemmConv::for_einsum(einsum, facts, out) else {
        tracing::debug!(node = %node.name, axes = %einsum.axes, ?facts, "product left to tract");
        return Ok(None);
    };
    let inputs = vec![node.inputs[1 - weight_slot], node.inputs[weight_slot]];
    Ok(Some((op, inputs)))
}

/// Replaces every product that [`gemm_candidate`] finds whose image comes
/// through a [`quant::FakeQuant`] and whose weight is INT8 per output channel
/// by [`qgemm_conv::QGemmConv`], which quantises the image itself. Walks
/// backwards, so that a product takes its quantised input before the op that
/// computes it looks for an epilogue (which would absorb the pair otherwise).
pub fn replace_quantized(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in (0..model.nodes.len()).rev() {
        let Some((op, mut inputs)) = gemm_candidate(model, id)? else {
            continue;
        };
        let source = model.node(inputs[0].node);
        let Some(quant::FakeQuant(quantization)) = source.op_as::<quant::FakeQuant>().cloned()
        else {
            continue;
        };
        let weight = model.outlet_fact(inputs[1])?.konst.clone();
        let int8 = match &weight {
            Some(w) => {
                let w = w.cast_to::<f32>()?;
                let values = w.try_as_plain_ram()?;
                let values = values.as_slice::<f32>()?;
                let rows = match op.weight {
                    gemm_conv::WeightLayout::OutputMajor => values.to_vec(),
                    gemm_conv::WeightLayout::InputMajor => (0..op.m * op.k)
                        .map(|i| values[(i % op.k) * op.m + i / op.k])
                        .collect(),
                };
                qgemm_conv::int8_rows(&rows, op.m, op.k).is_some()
            }
            None => false,
        };
        if !int8 {
            continue;
        }
        inputs[0] = source.inputs[0];
        let name = format!("{}.outpost_int8", model.node(id).name);
        let channels = op.channels();
        replace_with_epilogue(
            model,
            id,
            &inputs,
            channels,
            false,
            |pointwise, patch, taps| {
                let konst = |tap: Option<&OutletId>| -> TractResult<Option<Vec<f32>>> {
                    let Some(tap) = tap else {
                        return Ok(Some(Vec::new()));
                    };
                    let Some(k) = patch.outlet_fact(*tap)?.konst.clone() else {
                        return Ok(None);
                    };
                    let k = k.cast_to::<f32>()?;
                    let values = k.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
                    Ok(Some(values))
                };
                let (weight, bias) = (konst(taps.get(1))?, konst(taps.get(2))?);
                let q = weight.zip(bias).and_then(|(w, b)| {
                    qgemm_conv::QGemmConv::new(&op, &w, &b, quantization, pointwise.clone())
                });
                match q {
                    Some(q) => patch.wire_node(name, q, &taps[..1]),
                    // Scales folded from the epilogue left the weight off its levels:
                    // the f32 product, on the dequantised input.
                    None => {
                        let x = patch.wire_node(
                            format!("{name}.fake_quant"),
                            quant::FakeQuant(quantization),
                            &taps[..1],
                        )?;
                        let mut taps = taps.to_vec();
                        taps[0] = x[0];
                        patch.wire_node(name, gemm_conv::GemmConv { pointwise, ..op }, &taps)
                    }
                }
            },
        )?;
        replaced += 1;
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
}

/// Replaces every depthwise convolution by [`depthwise::Depthwise`] where `keep`
/// accepts it, or where an epilogue follows it to fuse (tract would run that as
/// a separate pass).
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
        let Some(op) = depthwise::Depthwise::for_conv(conv, input) else {
            continue;
        };
        let inputs = model.node(id).inputs.to_vec();
        let channels = op.channels();
        let name = format!("{}.outpost", model.node(id).name);
        let keep = keep(&op);
        let fused = replace_with_epilogue(
            model,
            id,
            &inputs,
            channels,
            !keep,
            |pointwise, patch, taps| {
                patch.wire_node(name, depthwise::Depthwise { pointwise, ..op }, taps)
            },
        )?;
        replaced += usize::from(fused);
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
}

/// Wires `make(pointwise)` in place of node `id` and of the epilogue after it
/// ([`epilogue::Epilogue::after`]), its scales and shifts folded into the
/// weight and bias; `inputs` are (image, weight[, bias]). With
/// `only_with_epilogue`, nothing changes unless there is an epilogue; returns
/// whether the node was replaced.
fn replace_with_epilogue(
    model: &mut TypedModel,
    id: usize,
    inputs: &[OutletId],
    channels: epilogue::Channels,
    only_with_epilogue: bool,
    make: impl FnOnce(
        activation::Pointwise,
        &mut TypedModelPatch,
        &[OutletId],
    ) -> TractResult<TVec<OutletId>>,
) -> TractResult<bool> {
    let name = model.node(id).name.clone();
    let weight = model.outlet_fact(inputs[1])?.konst.clone();
    // `Some(None)`: no bias; `None`: a computed one, which scales cannot fold into.
    let bias = match inputs.get(2) {
        Some(b) => model.outlet_fact(*b)?.konst.clone().map(Some),
        None => Some(None),
    };
    let foldable = weight.is_some() && bias.is_some();
    let epilogue = epilogue::Epilogue::after(model, id, &channels, foldable)?;
    if only_with_epilogue && epilogue.last == id {
        return Ok(false);
    }
    let mut patch = TypedModelPatch::default();
    let mut taps = patch.taps(model, inputs)?;
    if let Some(w) = &weight {
        if let Some(folded) = epilogue.fold_weight(&channels, w)? {
            taps[1] = patch.add_const(format!("{name}.outpost_weight"), folded)?;
        }
    }
    if let Some(bias) = &bias {
        if let Some(folded) = epilogue.fold_bias(&channels, bias.as_deref())? {
            let folded = patch.add_const(format!("{name}.outpost_bias"), folded)?;
            match taps.get_mut(2) {
                Some(tap) => *tap = folded,
                None => taps.push(folded),
            }
        }
    }
    let mut wire = make(epilogue.pointwise, &mut patch, &taps)?;
    for (i, op) in epilogue.reshapes.into_iter().enumerate() {
        wire = patch.wire_node(format!("{name}.outpost.reshape{i}"), op, &wire)?;
    }
    patch.shunt_outside(model, epilogue.last.into(), wire[0])?;
    patch.apply(model)?;
    Ok(true)
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
