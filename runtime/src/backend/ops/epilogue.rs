//! What follows a matrix product in the graph and can run inside it: constant
//! scales and shifts per output channel (unfolded batch norms, PP-LCNet's
//! learnable affine blocks, a channel mix's bias), folded into its weight and
//! bias; then activations ([`Pointwise`]), applied as it writes its output.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;

use super::activation::{Activation, Pointwise};
use super::gemm_conv::WeightLayout;

/// The output channels of a product as the epilogue sees them.
#[derive(Debug, Clone, Copy)]
pub struct Channels {
    /// Output channels (M).
    pub m: usize,
    /// Weights per output channel (K).
    pub k: usize,
    /// The output axis of the channels.
    pub axis: usize,
    /// The output's rank.
    pub rank: usize,
    /// The weight's layout.
    pub weight: WeightLayout,
}

/// The nodes after a product that it absorbs.
#[derive(Debug, Clone, PartialEq)]
pub struct Epilogue {
    /// Per-channel factor (length M) applied to the product and its bias, if any.
    pub scale: Option<Vec<f32>>,
    /// Per-channel term (length M) added after the scale, if any.
    pub shift: Option<Vec<f32>>,
    /// The activations after both.
    pub pointwise: Pointwise,
    /// The node whose output the fused product replaces.
    pub last: usize,
    /// The shape-only ops (unit axes added or removed, reshapes) the walk went
    /// through, to wire again after the fused product.
    pub reshapes: Vec<Box<dyn TypedOp>>,
}

impl Epilogue {
    /// Walks from node `id` (which computes `op`) through its only consumers:
    /// first `Mul` and `Add` by constants per output channel, then activations.
    /// `foldable` says whether the weight and bias are constants (or the bias
    /// absent), which scales and shifts must fold into.
    pub fn after(
        model: &TypedModel,
        id: usize,
        op: &Channels,
        foldable: bool,
    ) -> TractResult<Epilogue> {
        let mut epilogue = Epilogue {
            scale: None,
            shift: None,
            pointwise: Pointwise::default(),
            last: id,
            reshapes: Vec::new(),
        };
        let outputs = model.output_outlets()?;
        // Where the walk is, the channels' axis there (`None` once a reshape
        // has mixed them), and the shape ops passed since the last fused node.
        let (mut at, mut channels) = (id, Some(*op));
        let mut pending: Vec<Box<dyn TypedOp>> = Vec::new();
        loop {
            let outlet = OutletId::new(at, 0);
            if outputs.contains(&outlet) {
                break;
            }
            let [succ] = &*model.node(at).outputs[0].successors else {
                // Two consumers: a gate `x · clamp(αx + β)` has the same shape.
                if let Some((gate, end)) = gate_after(model, at)? {
                    if let Some(p) = epilogue.pointwise.then(gate) {
                        epilogue.pointwise = p;
                        epilogue.reshapes.append(&mut pending);
                        (epilogue.last, at) = (end, end);
                        continue;
                    }
                }
                break;
            };
            let next = model.node(succ.node);
            if let Some(axis_op) = next.op_as::<AxisOp>() {
                if !matches!(
                    axis_op,
                    AxisOp::Add(_) | AxisOp::Rm(_) | AxisOp::Reshape(..)
                ) {
                    break;
                }
                channels = match channels {
                    Some(c) => channels_after_reshape(model, outlet, next.id.into(), c)?,
                    None => None,
                };
                pending.push(next.op.clone());
                at = next.id;
                continue;
            }
            if !same_fact(model, outlet, next.id.into())? {
                break;
            }
            let constant = match &channels {
                Some(c) if foldable && epilogue.pointwise.is_identity() => {
                    channel_constant(model, next, succ.slot, c)?
                }
                _ => None,
            };
            if let Some((name, values)) = constant {
                let m = op.m;
                let per = |v: &[f32], o: usize| if v.len() == 1 { v[0] } else { v[o] };
                match name {
                    "Mul" => {
                        let scale = epilogue.scale.get_or_insert_with(|| vec![1.0; m]);
                        for (o, s) in scale.iter_mut().enumerate() {
                            *s *= per(&values, o);
                        }
                        if let Some(shift) = &mut epilogue.shift {
                            for (o, s) in shift.iter_mut().enumerate() {
                                *s *= per(&values, o);
                            }
                        }
                    }
                    "Add" => {
                        let shift = epilogue.shift.get_or_insert_with(|| vec![0.0; m]);
                        for (o, s) in shift.iter_mut().enumerate() {
                            *s += per(&values, o);
                        }
                    }
                    _ => break,
                }
                epilogue.reshapes.append(&mut pending);
                (epilogue.last, at) = (next.id, next.id);
                continue;
            }
            let step = Activation::of_node(model, next, succ.slot);
            let Some(composed) = step.and_then(|step| epilogue.pointwise.then(step)) else {
                break;
            };
            epilogue.pointwise = composed;
            epilogue.reshapes.append(&mut pending);
            (epilogue.last, at) = (next.id, next.id);
        }
        Ok(epilogue)
    }

    /// The weight with the scale folded in: each output channel's row (or
    /// column, for an input-major weight) times its factor.
    pub fn fold_weight(&self, op: &Channels, weight: &Tensor) -> TractResult<Option<Tensor>> {
        let Some(scale) = &self.scale else {
            return Ok(None);
        };
        let weight = weight.cast_to::<f32>()?;
        let values = weight.to_plain_array_view::<f32>()?;
        ensure!(
            values.len() == op.m * op.k,
            "weight has {} values",
            values.len()
        );
        let folded: Vec<f32> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let o = match op.weight {
                    WeightLayout::OutputMajor => i / op.k,
                    WeightLayout::InputMajor => i % op.m,
                };
                v * scale[o]
            })
            .collect();
        Ok(Some(tensor1(&folded).into_shape(weight.shape())?))
    }

    /// The bias once scaled and shifted: `bias · scale + shift` per channel,
    /// from no bias, one, or one per channel; `None` when nothing changes it.
    pub fn fold_bias(&self, op: &Channels, bias: Option<&Tensor>) -> TractResult<Option<Tensor>> {
        if self.scale.is_none() && self.shift.is_none() {
            return Ok(None);
        }
        let bias: Vec<f32> = match bias {
            None => vec![0.0],
            Some(b) => b
                .cast_to::<f32>()?
                .to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect(),
        };
        ensure!(
            bias.len() == 1 || bias.len() == op.m,
            "bias has {} values",
            bias.len()
        );
        let folded: Vec<f32> = (0..op.m)
            .map(|o| {
                let b = if bias.len() == 1 { bias[0] } else { bias[o] };
                let s = self.scale.as_ref().map_or(1.0, |s| s[o]);
                let t = self.shift.as_ref().map_or(0.0, |t| t[o]);
                b * s + t
            })
            .collect();
        Ok(Some(tensor1(&folded)))
    }
}

/// When `node` is a `Mul` or `Add` of its input `slot` by a constant that is one
/// value or one per output channel of `op`: the op's name and the values.
fn channel_constant(
    model: &TypedModel,
    node: &TypedNode,
    slot: usize,
    op: &Channels,
) -> TractResult<Option<(&'static str, Vec<f32>)>> {
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    let name = match bin.0.name() {
        "Mul" => "Mul",
        "Add" => "Add",
        _ => return Ok(None),
    };
    if node.inputs.len() != 2 {
        return Ok(None);
    }
    let other = model.outlet_fact(node.inputs[1 - slot])?;
    let Some(konst) = &other.konst else {
        return Ok(None);
    };
    let out_rank = op.rank;
    if konst.datum_type() != f32::datum_type() || konst.rank() > out_rank {
        return Ok(None);
    }
    // The constant's shape as the op broadcasts it against the product's output.
    let padded: Vec<usize> = std::iter::repeat_n(1, out_rank - konst.rank())
        .chain(konst.shape().iter().copied())
        .collect();
    let per_channel = padded
        .iter()
        .enumerate()
        .all(|(axis, d)| *d == 1 || (axis == op.axis && *d == op.m));
    if !per_channel {
        return Ok(None);
    }
    let values: Vec<f32> = konst
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect();
    Ok(Some((name, values)))
}

/// A gate `x · clamp(α·x + β, lo, hi)` over the output of node `id`, built from
/// its two consumers: a chain of `Mul(α)`, `Add(β)`, `Min`/`Max` on one side and
/// the `Mul` joining it back to `x`. Returns the activation and the joining node.
fn gate_after(model: &TypedModel, id: usize) -> TractResult<Option<(Activation, usize)>> {
    let x = OutletId::new(id, 0);
    let succs = &model.node(id).outputs[0].successors;
    if succs.len() != 2 || model.output_outlets()?.contains(&x) {
        return Ok(None);
    }
    let scalar_of = |node: &TypedNode, slot: usize| -> Option<(String, f32)> {
        let bin = node.op_as::<TypedBinOp>()?;
        let [a, b] = &*node.inputs else { return None };
        let konst = model
            .outlet_fact(if slot == 0 { *b } else { *a })
            .ok()?
            .konst
            .clone()?;
        let rank = model.outlet_fact(node.inputs[slot]).ok()?.rank();
        (konst.datum_type() == f32::datum_type() && konst.len() == 1 && konst.rank() <= rank).then(
            || {
                Some((
                    bin.0.name().to_string(),
                    konst.cast_to_scalar::<f32>().ok()?,
                ))
            },
        )?
    };
    for start in succs {
        let (mut alpha, mut beta, mut clamp) = (1.0f32, 0.0f32, Activation::Identity);
        let mut at = (start.node, start.slot);
        loop {
            let node = model.node(at.0);
            // The join: `x · gate`, the gate being this node's input.
            if let Some(bin) = node.op_as::<TypedBinOp>() {
                let other = node.inputs.get(1 - at.1.min(1));
                if bin.0.name() == "Mul" && at.0 != start.node && other == Some(&x) {
                    let Activation::Clamp { lo, hi } = clamp else {
                        break;
                    };
                    let (lo, hi) = (f32::from_bits(lo), f32::from_bits(hi));
                    if !(lo.is_finite() && hi.is_finite()) {
                        break;
                    }
                    let same = same_fact(model, x, node.id.into())?;
                    return Ok(same.then(|| (Activation::gate(alpha, beta, lo, hi), node.id)));
                }
            }
            let Some((name, c)) = scalar_of(node, at.1) else {
                break;
            };
            match name.as_str() {
                "Mul" if clamp == Activation::Identity => (alpha, beta) = (alpha * c, beta * c),
                "Add" if clamp == Activation::Identity => beta += c,
                "Max" | "Min" => {
                    let step = if name == "Max" {
                        Activation::clamp(c, f32::INFINITY)
                    } else {
                        Activation::clamp(f32::NEG_INFINITY, c)
                    };
                    let Some(next) = clamp.then(step) else {
                        break;
                    };
                    clamp = next;
                }
                _ => break,
            }
            let [next] = &*node.outputs[0].successors else {
                break;
            };
            if model.output_outlets()?.contains(&node.id.into()) {
                break;
            }
            at = (next.node, next.slot);
        }
    }
    Ok(None)
}

/// Whether two outlets carry tensors of the same type and shape.
fn same_fact(model: &TypedModel, a: OutletId, b: OutletId) -> TractResult<bool> {
    let (a, b) = (model.outlet_fact(a)?, model.outlet_fact(b)?);
    Ok(a.datum_type == b.datum_type && a.shape == b.shape)
}

/// The channels after a shape-only op from `from` to `to` that keeps them
/// whole on one axis (the same count of values before it), or `None`.
fn channels_after_reshape(
    model: &TypedModel,
    from: OutletId,
    to: OutletId,
    c: Channels,
) -> TractResult<Option<Channels>> {
    let (Some(a), Some(b)) = (
        model
            .outlet_fact(from)?
            .shape
            .as_concrete()
            .map(|s| s.to_vec()),
        model
            .outlet_fact(to)?
            .shape
            .as_concrete()
            .map(|s| s.to_vec()),
    ) else {
        return Ok(None);
    };
    if c.axis >= a.len() || a[c.axis] != c.m {
        return Ok(None);
    }
    let before: usize = a[..c.axis].iter().product();
    let axis = (0..b.len()).find(|&j| b[j] == c.m && b[..j].iter().product::<usize>() == before);
    Ok(axis.map(|axis| Channels {
        axis,
        rank: b.len(),
        ..c
    }))
}

#[cfg(test)]
mod tests {
    use super::super::depthwise::tests::depthwise_conv;
    use super::super::gemm_conv::tests::{nchw_conv, values};
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec};
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::nn::DataFormat;
    use tract_onnx::tract_core::ops::{math, nn};

    /// Wires `tail` (tract ops, as ONNX exporters leave them) after `x`.
    fn wire_tail(model: &mut TypedModel, x: OutletId, tail: &str, channels: usize) -> OutletId {
        let mut konst = |name: &str, t: Tensor| model.add_const(name, t).unwrap();
        let scalar = |v: f32| tensor0(v).broadcast_into_rank(4).unwrap();
        let per_channel = |seed: usize| {
            tensor1(&values(channels, seed))
                .into_shape(&[1, channels, 1, 1])
                .unwrap()
        };
        let consts: Vec<(&str, Tensor)> = match tail {
            "bn_relu6" => vec![("s", per_channel(3)), ("t", per_channel(4))],
            _ => vec![],
        };
        let mut named: std::collections::HashMap<&str, OutletId> =
            consts.into_iter().map(|(n, t)| (n, konst(n, t))).collect();
        for (n, v) in [
            ("zero", 0.0),
            ("six", 6.0),
            ("one", 1.0),
            ("a", 0.2),
            ("b", 0.5),
            ("lab_s", 1.3),
            ("lab_t", -0.2),
        ] {
            named.insert(n, konst(n, scalar(v)));
        }
        let mut wire = |name: &str, op: Box<dyn TypedOp>, inputs: &[OutletId]| {
            model.wire_node(name, op, inputs).unwrap()[0]
        };
        let c = |n: &str| named[n];
        match tail {
            "relu6" => {
                let y = wire("max", Box::new(math::max()), &[x, c("zero")]);
                wire("min", Box::new(math::min()), &[c("six"), y])
            }
            "silu" => {
                let s = wire("sigmoid", Box::new(nn::sigmoid()), &[x]);
                wire("mul", Box::new(math::mul()), &[x, s])
            }
            "hardswish" => wire("hs", Box::new(nn::hard_swish()), &[x]),
            "gate_lab" => {
                let g = wire("g.mul", Box::new(math::mul()), &[x, c("a")]);
                let g = wire("g.add", Box::new(math::add()), &[g, c("b")]);
                let g = wire("g.min", Box::new(math::min()), &[g, c("one")]);
                let g = wire("g.max", Box::new(math::max()), &[g, c("zero")]);
                let y = wire("gated", Box::new(math::mul()), &[g, x]);
                let y = wire("lab.mul", Box::new(math::mul()), &[y, c("lab_s")]);
                wire("lab.add", Box::new(math::add()), &[c("lab_t"), y])
            }
            "bn_relu6" => {
                let y = wire("bn.mul", Box::new(math::mul()), &[x, c("s")]);
                let y = wire("bn.add", Box::new(math::add()), &[y, c("t")]);
                let y = wire("max", Box::new(math::max()), &[y, c("zero")]);
                wire("min", Box::new(math::min()), &[c("six"), y])
            }
            _ => unreachable!("{tail}"),
        }
    }

    /// Runs `conv` then `tail` as tract alone runs it and after Outpost's rewrite
    /// (at `threads`): the tail's nodes must be gone and the outputs agree.
    fn check(conv: Conv, hw: usize, tail: &str, threads: usize) {
        let c = conv.pool_spec.input_channels;
        let o = conv.pool_spec.output_channels;
        let [kh, kw] = [
            conv.pool_spec.kernel_shape[0],
            conv.pool_spec.kernel_shape[1],
        ];
        let per_group = c / conv.group;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, c, hw, hw])).unwrap();
        let k = tensor1(&values(o * per_group * kh * kw, 1))
            .into_shape(&[o, per_group, kh, kw])
            .unwrap();
        let k = model.add_const("k", k).unwrap();
        let b = model.add_const("b", tensor1(&values(o, 2))).unwrap();
        let y = model.wire_node("conv", conv, &[x, k, b]).unwrap()[0];
        let y = wire_tail(&mut model, y, tail, o);
        model.select_output_outlets(&[y]).unwrap();
        let model = model.into_decluttered().unwrap();
        let input = tensor1(&values(c * hw * hw, 5))
            .into_shape(&[1, c, hw, hw])
            .unwrap();
        let run = |model: TypedModel| {
            let plan = model.into_optimized().unwrap().into_runnable().unwrap();
            let go = || plan.run(tvec!(input.clone().into_tvalue()));
            let out = if threads > 1 {
                crate::backend::parallel::with_threads(threads, go)
            } else {
                go()
            };
            out.unwrap().remove(0).into_tensor()
        };
        let want = run(model.clone());
        let mut fused = model;
        let replaced = super::super::replace_depthwise(&mut fused, |_| false).unwrap()
            + super::super::replace_gemm(&mut fused, |_| true).unwrap();
        assert_eq!(replaced, 1, "{tail}: {fused}");
        assert!(
            fused
                .nodes
                .iter()
                .all(|n| n.op_as::<TypedBinOp>().is_none() && n.op_as::<ElementWiseOp>().is_none()),
            "{tail} was not fused: {fused}"
        );
        let got = run(fused);
        assert_eq!(got.shape(), want.shape());
        let (got, want) = (
            got.to_plain_array_view::<f32>().unwrap().to_owned(),
            want.to_plain_array_view::<f32>().unwrap().to_owned(),
        );
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            assert!(
                (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                "{tail}, {threads} threads, at {i}: got {g}, tract gives {w}"
            );
        }
    }

    fn conv(c: usize, o: usize, kernel: usize, stride: usize) -> Conv {
        let mut conv = nchw_conv(c, o, kernel, PaddingSpec::SameUpper, 1);
        conv.pool_spec.strides = Some(tvec!(stride, stride));
        conv
    }

    #[test]
    fn tails_run_inside_products_and_depthwise_convolutions_as_tract_runs_them() {
        let tails = ["relu6", "silu", "hardswish", "gate_lab", "bn_relu6"];
        for tail in tails {
            for threads in [1, 2] {
                // A channel mix (an EinSum once decluttered) and an im2col convolution.
                check(conv(6, 20, 1, 1), 23, tail, threads);
                check(conv(6, 20, 3, 2), 23, tail, threads);
                // Depthwise: short rows (Outpost's op anyway) and stride 2 at long
                // rows (tract's, but for the tail to fuse).
                for (hw, stride) in [(9, 1), (40, 2)] {
                    let dw =
                        depthwise_conv(DataFormat::NCHW, 12, 3, PaddingSpec::SameUpper, stride, 1);
                    check(dw, hw, tail, threads);
                }
            }
        }
    }
}
