//! Outpost's own operators for the CPU backend, swapped into tract's graph where
//! tract's kernel is slow: convolutions in the decluttered graph (where they still
//! carry their geometry), other ops in the optimised one. Each replaces one tract op
//! exactly (same inputs, outputs and semantics) and is tested against a naive
//! implementation.

pub mod activation;
pub mod axis_softmax;
pub mod channels_last;
pub mod depthwise;
pub mod depthwise_hwc;
pub mod direct_conv;
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

/// `dst[i] = src[first + i · step]` for every `i` of `dst`: a row of an image
/// at a stride, as im2col and the direct convolutions' padded copies take it.
///
/// # Panics
/// If `src` is too short (a caller's bug).
pub(crate) fn gather_row<T: Copy>(dst: &mut [T], src: &[T], first: usize, step: usize) {
    if dst.is_empty() {
        return;
    }
    match step {
        1 => dst.copy_from_slice(&src[first..first + dst.len()]),
        // Pairs: a shape the compiler vectorises better than a stepped iterator.
        2 => {
            let src = &src[first..];
            assert!(
                src.len() > 2 * (dst.len() - 1),
                "gather_row: source too short"
            );
            for (o, pair) in dst.iter_mut().zip(src.chunks(2)) {
                *o = pair[0];
            }
        }
        _ => {
            for (o, x) in dst.iter_mut().zip((first..).step_by(step)) {
                *o = src[x];
            }
        }
    }
}

/// Replaces tract ops in a decluttered (not yet optimised) model, where the
/// convolutions still carry their geometry; returns how many were replaced.
/// Depthwise convolutions are replaced where Outpost's op is measured faster
/// ([`depthwise::Depthwise::beats_tract`]).
pub fn rewrite_decluttered(model: &mut TypedModel) -> TractResult<usize> {
    rewrite_decluttered_with(model, true, true)
}

/// [`rewrite_decluttered`], with or without [`pass_levels`] and the
/// channels-last chains (tests compare them).
fn rewrite_decluttered_with(
    model: &mut TypedModel,
    levels: bool,
    chains: bool,
) -> TractResult<usize> {
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
    if levels && replaced > 0 && qgemm_conv::enabled() {
        pass_levels(model)?;
    }
    if gemm_conv::enabled() {
        replaced += replace_gemm(model, |_| true)?;
    }
    // f32 and INT8 chains alike.
    if chains && channels_last::enabled() {
        channels_last::rewrite(model)?;
    }
    if gemm_conv::enabled() && direct_conv::enabled() {
        direct_conv::rewrite(model)?;
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

/// Lets INT8 ops hand each other `u8` levels instead of `f32` values, where one
/// op's output goes only to the next: an INT8 product that quantises its input,
/// or a depthwise convolution whose input went through a quantise-dequantise
/// pair (absorbed as the producer's last activation). The producer then writes
/// the levels its consumer would have computed, and the consumer reads them, so
/// the results are bit for bit the same with a quarter of the memory traffic
/// (EfficientNet's expanded tensors are its largest). Returns how many edges.
pub fn pass_levels(model: &mut TypedModel) -> TractResult<usize> {
    use depthwise::Depthwise;
    use qgemm_conv::QGemmConv;
    let outputs = model.output_outlets()?.to_vec();
    let mut passed = 0;
    for id in 0..model.nodes.len() {
        let node = model.node(id);
        let ([output], false) = (&*node.outputs, outputs.contains(&OutletId::new(id, 0))) else {
            continue;
        };
        let [next] = &*output.successors else {
            continue;
        };
        if next.slot != 0 {
            continue;
        }
        let consumer = model.node(next.node);
        let last_pair = |pointwise: &activation::Pointwise| match pointwise.0.last() {
            Some(activation::Activation::FakeQuant(q)) => Some(*q),
            _ => None,
        };
        // The producer's new op, writing levels of `quant` (after dropping its
        // last step, the pair, for a consumer that dequantises).
        let producer_levels =
            |quant: quant::U8Quant, drop_pair: bool| -> Option<Box<dyn TypedOp>> {
                node.op_as::<QGemmConv>()
                    .and_then(|op| op.writing_levels(quant, drop_pair))
                    .map(|op| Box::new(op) as Box<dyn TypedOp>)
                    .or_else(|| {
                        node.op_as::<Depthwise>()
                            .and_then(|op| op.writing_levels(quant, drop_pair))
                            .map(|op| Box::new(op) as Box<dyn TypedOp>)
                    })
            };
        let ops = if let Some(c) = consumer.op_as::<QGemmConv>().filter(|c| !c.input_levels) {
            // The product quantises its input itself: the producer does it instead.
            producer_levels(c.input, false).map(|p| {
                let c = QGemmConv {
                    input_levels: true,
                    ..c.clone()
                };
                (p, Box::new(c) as Box<dyn TypedOp>)
            })
        } else if let Some(d) = consumer
            .op_as::<Depthwise>()
            .filter(|d| d.input_levels.is_none())
        {
            // The producer's last step is the pair: it writes the pair's levels.
            let pointwise = if let Some(p) = node.op_as::<QGemmConv>() {
                Some(&p.pointwise)
            } else {
                node.op_as::<Depthwise>().map(|p| &p.pointwise)
            };
            pointwise.and_then(last_pair).and_then(|q| {
                producer_levels(q, true).map(|p| {
                    let d = Depthwise {
                        input_levels: Some(q),
                        ..d.clone()
                    };
                    (p, Box::new(d) as Box<dyn TypedOp>)
                })
            })
        } else {
            None
        };
        let Some((producer, consumer)) = ops else {
            continue;
        };
        let next = next.node;
        let shape = model.outlet_fact(OutletId::new(id, 0))?.shape.clone();
        model.node_mut(id).op = producer;
        model.node_mut(id).outputs[0].fact = u8::fact(shape);
        model.node_mut(next).op = consumer;
        passed += 1;
    }
    Ok(passed)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::ops::depthwise::tests::depthwise_conv;
    use crate::backend::ops::gemm_conv::tests::values;
    use crate::backend::ops::qgemm_conv::tests::{run, wire_pair};
    use tract_onnx::tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::math::{max, min};

    /// A `[1, c, hw, hw]` test image, values in about ±2.
    pub(crate) fn image(c: usize, hw: usize, seed: usize) -> Tensor {
        let input: Vec<f32> = values(c * hw * hw, seed).iter().map(|v| v * 2.0).collect();
        tensor1(&input).into_shape(&[1, c, hw, hw]).unwrap()
    }

    /// `model` through [`rewrite_decluttered_with`].
    fn rewritten(model: &TypedModel, levels: bool, chains: bool) -> TypedModel {
        let mut model = model.clone();
        rewrite_decluttered_with(&mut model, levels, chains).unwrap();
        model
    }

    /// The ops of `model` that write `u8` levels, in order.
    fn u8_writers(model: &TypedModel) -> Vec<String> {
        model
            .nodes
            .iter()
            .filter(|n| {
                n.outputs
                    .iter()
                    .any(|o| o.fact.datum_type == u8::datum_type())
            })
            .map(|n| n.op.name().to_string())
            .collect()
    }

    /// The INT8 blocks the levels and chain tests run: (channels, expanded,
    /// size, kernel, stride), strides 1 and 2, kernels 3 and 5, small and odd
    /// planes, channel counts with and without whole vectors.
    pub(crate) const BLOCKS: [(usize, usize, usize, usize, usize); 6] = [
        (8, 24, 7, 5, 1),
        (4, 16, 23, 3, 2),
        (6, 20, 14, 5, 2),
        (3, 10, 30, 3, 1),
        (5, 12, 9, 5, 1),
        (4, 15, 17, 3, 2),
    ];

    /// `min(max(x, 0), 6)` as ONNX writes ReLU6.
    pub(crate) fn relu6(m: &mut TypedModel, name: &str, x: OutletId) -> OutletId {
        let zero = m
            .add_const(format!("{name}.0"), tensor4(&[[[[0f32]]]]))
            .unwrap();
        let six = m
            .add_const(format!("{name}.6"), tensor4(&[[[[6f32]]]]))
            .unwrap();
        let y = m
            .wire_node(format!("{name}.max"), max(), &[x, zero])
            .unwrap()[0];
        m.wire_node(format!("{name}.min"), min(), &[y, six])
            .unwrap()[0]
    }

    /// A 1×1 convolution with weights on INT8 levels per output channel.
    fn mix(
        m: &mut TypedModel,
        name: &str,
        x: OutletId,
        c: usize,
        o: usize,
        seed: usize,
    ) -> OutletId {
        let weight: Vec<f32> = (0..o * c)
            .map(|i| {
                let level = if i % c == 0 {
                    127.0
                } else {
                    (values(1, i + seed)[0] * 127.0).round()
                };
                level * 0.01 * (1.0 + (i / c) as f32 * 0.05)
            })
            .collect();
        let w = m
            .add_const(
                format!("{name}.w"),
                tensor1(&weight).into_shape(&[o, c, 1, 1]).unwrap(),
            )
            .unwrap();
        let b = m
            .add_const(format!("{name}.b"), tensor1(&values(o, seed + 3)))
            .unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(1, 1),
                padding: PaddingSpec::Valid,
                dilations: None,
                strides: None,
                input_channels: c,
                output_channels: o,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        m.wire_node(name, conv, &[x, w, b]).unwrap()[0]
    }

    /// An inverted-residual block as a QDQ model writes it (EfficientNet-Lite's):
    /// Q/DQ → 1×1 expand → ReLU6 → Q/DQ → depthwise → ReLU6 → Q/DQ → 1×1 project.
    fn block(
        c: usize,
        e: usize,
        hw: usize,
        kernel: usize,
        stride: usize,
        seed: usize,
    ) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, c, hw, hw])).unwrap();
        let x = wire_pair(&mut m, "in", x, 0.02, 120);
        let y = mix(&mut m, "expand", x, c, e, seed);
        let y = relu6(&mut m, "expand.relu", y);
        let y = wire_pair(&mut m, "expanded", y, 6.0 / 255.0, 0);
        let k: Vec<f32> = values(e * kernel * kernel, seed + 7)
            .iter()
            .map(|v| v * 0.5)
            .collect();
        let k = m
            .add_const(
                "dw.k",
                tensor1(&k).into_shape(&[e, 1, kernel, kernel]).unwrap(),
            )
            .unwrap();
        let b = m.add_const("dw.b", tensor1(&values(e, seed + 11))).unwrap();
        let pad = kernel / 2;
        let padding = PaddingSpec::Explicit(tvec!(pad, pad), tvec!(pad, pad));
        let dw = depthwise_conv(DataFormat::NCHW, e, kernel, padding, stride, 1);
        let y = m.wire_node("dw", dw, &[y, k, b]).unwrap()[0];
        let y = relu6(&mut m, "dw.relu", y);
        let y = wire_pair(&mut m, "dw.out", y, 6.0 / 255.0, 0);
        let y = mix(&mut m, "project", y, e, c, seed + 5);
        m.select_output_outlets(&[y]).unwrap();
        m.into_decluttered().unwrap()
    }

    /// An INT8 block as a channels-last chain: the expand product writes `[N,
    /// M]` levels, the depthwise convolution reads and writes channels-last
    /// levels, the project product reads them. Its outputs are those of the
    /// NCHW ops (a level may move by one step where the depthwise sums, taken in
    /// another order, round the other way) and tract's within the tolerance of
    /// the levels test. Strides 1 and 2, kernels 3 and 5, channel counts with and
    /// without whole tiles, small and odd planes, 1 and 2 threads.
    #[test]
    fn int8_chains_match_the_nchw_ops() {
        if !qgemm_conv::enabled() || !channels_last::enabled() {
            return;
        }
        // Besides the blocks: whole tiles of 32 channels, and more channels than
        // points with enough work to split by channels.
        let more = [(16, 96, 12, 3, 1), (64, 384, 7, 3, 1)];
        for (seed, &(c, e, hw, kernel, stride)) in BLOCKS.iter().chain(&more).enumerate() {
            if cfg!(target_arch = "aarch64") && e >= 16 {
                continue;
            }
            let model = block(c, e, hw, kernel, stride, seed);
            let (nchw, chain) = (
                rewritten(&model, true, false),
                rewritten(&model, true, true),
            );
            let dw = chain
                .nodes
                .iter()
                .filter_map(|n| n.op_as::<depthwise_hwc::DepthwiseHwc>())
                .collect::<Vec<_>>();
            assert!(
                dw.len() == 1 && dw[0].input_levels.is_some() && dw[0].output_levels.is_some(),
                "case {seed}: {chain}"
            );
            let products = chain
                .nodes
                .iter()
                .filter_map(|n| n.op_as::<qgemm_conv::QGemmConv>())
                .map(|q| (q.input_channels_last, q.output_channels_last))
                .collect::<Vec<_>>();
            assert_eq!(
                products,
                [(false, true), (true, false)],
                "case {seed}: {chain}"
            );
            let input = image(c, hw, seed + 1);
            let want = run(&model, &input);
            let step = 127.0 * 0.01 * 1.5 * 6.0 / 255.0 * e as f32;
            for threads in [1, 2] {
                let (a, b) = crate::backend::parallel::with_threads(threads, || {
                    (run(&nchw, &input), run(&chain, &input))
                });
                assert_eq!(b.len(), want.len());
                let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
                assert!(
                    same * 10 >= a.len() * 9,
                    "case {seed} threads {threads}: {same} of {} equal",
                    a.len()
                );
                for (i, (g, w)) in b.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= step, "case {seed} at {i}: {g} vs {w}");
                }
            }
        }
    }

    /// A product whose activation the INT8 store cannot run (SiLU, as YOLOv8
    /// follows every convolution with it) still writes levels for the INT8
    /// product after it, through `f32` blocks: bit for bit the outputs of the
    /// plain rewrite, whose second product quantises the `f32` tensor itself.
    /// Products split by points and by channels (more channels than points),
    /// 1 and 2 threads.
    #[test]
    fn levels_after_silu_change_no_output() {
        if !qgemm_conv::enabled() {
            return;
        }
        // (channels, mixed, size)
        for (seed, &(c, e, hw)) in [(8, 24, 7), (5, 70, 20), (64, 300, 8), (16, 130, 40)]
            .iter()
            .enumerate()
        {
            let mut m = TypedModel::default();
            let x = m.add_source("x", f32::fact([1, c, hw, hw])).unwrap();
            let x = wire_pair(&mut m, "in", x, 0.02, 120);
            let y = mix(&mut m, "first", x, c, e, seed);
            let y = m
                .wire_node(
                    "first.silu",
                    tract_onnx::tract_core::ops::nn::silu::silu(),
                    &[y],
                )
                .unwrap()[0];
            let y = wire_pair(&mut m, "mixed", y, 0.05, 10);
            let y = mix(&mut m, "second", y, e, c, seed + 5);
            m.select_output_outlets(&[y]).unwrap();
            let model = m.into_decluttered().unwrap();
            let (plain, levels) = (
                rewritten(&model, false, false),
                rewritten(&model, true, false),
            );
            let writers = u8_writers(&levels);
            assert_eq!(writers, ["OutpostQGemmConv"], "case {seed}: {levels}");
            let input = image(c, hw, seed + 1);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let want = bits(&run(&plain, &input));
            for threads in [1, 2] {
                let got = crate::backend::parallel::with_threads(threads, || run(&levels, &input));
                assert_eq!(bits(&got), want, "case {seed} threads {threads}");
            }
        }
    }

    /// With levels passed between the INT8 ops, a block gives bit for bit the
    /// outputs of the same rewrite without them (and tract's, within the one
    /// output step the INT8 products may move a value): the expand product
    /// writes `u8`, the depthwise convolution reads and writes `u8`, the project
    /// product reads `u8`. Strides 1 and 2, kernels 3 and 5, small and odd
    /// planes, 1 and 2 threads.
    #[test]
    fn levels_between_int8_ops_change_no_output() {
        if !qgemm_conv::enabled() {
            return;
        }
        for (seed, &(c, e, hw, kernel, stride)) in BLOCKS.iter().enumerate() {
            // On aarch64 tract moves depthwise convolutions of 16 channels or more
            // to channels-last for its NEON routine, and Outpost's ops leave those
            // to tract.
            if cfg!(target_arch = "aarch64") && e >= 16 {
                continue;
            }
            let model = block(c, e, hw, kernel, stride, seed);
            let (plain, levels) = (
                rewritten(&model, false, false),
                rewritten(&model, true, false),
            );
            let u8_edges = u8_writers(&levels);
            assert_eq!(
                u8_edges,
                ["OutpostQGemmConv", "OutpostDepthwise"],
                "case {seed}: {levels}"
            );
            assert!(plain
                .nodes
                .iter()
                .all(|n| n.outputs[0].fact.datum_type != u8::datum_type()));
            let input = image(c, hw, seed + 1);
            let want = run(&model, &input);
            for threads in [1, 2] {
                let (a, b) = crate::backend::parallel::with_threads(threads, || {
                    (run(&plain, &input), run(&levels, &input))
                });
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a), bits(&b), "case {seed} threads {threads}");
                assert_eq!(a.len(), want.len());
                // The project product's output scale: its weights and the input step.
                let step = 127.0 * 0.01 * 1.5 * 6.0 / 255.0 * e as f32;
                for (i, (g, w)) in a.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= step, "case {seed} at {i}: {g} vs {w}");
                }
            }
        }
    }
}
