//! The activations of a QDQ (INT8) model: each quantised layer's input goes
//! through `QuantizeLinear` (f32 → u8) then `DequantizeLinear` (u8 → f32).
//!
//! tract runs each of those as its own scalar pass over the tensor: on the INT8
//! EfficientNet-Lite0 the pairs took 13 of its 27 ms, and the zero `Pad` in front
//! of each depthwise convolution (which sits before the pair, so tract cannot fold
//! it into the convolution) another 4.5. Here:
//! - a pair becomes one [`FakeQuant`] node, `f32 → f32`, a vectorised loop that
//!   the epilogue of the op before it can absorb ([`super::activation`]);
//! - a zero `Pad` before a pair before a convolution moves into the convolution's
//!   padding (the pair maps 0 to 0, so padding before or after it is the same);
//! - a pair in front of a convolution with INT8 weights goes into Outpost's INT8
//!   product ([`super::qgemm_conv`]), which quantises its input itself.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::{Pad, PadMode};
use tract_onnx::tract_core::ops::cnn::{Conv, PaddingSpec};
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};

/// Per-tensor `u8` quantisation as tract's `QuantizeLinearU8` computes it,
/// `q = clamp(round_half_even(x · inv) + zero, 0, 255)`, and its inverse as
/// `DequantizeLinearF32` does, `(q − zero) · scale`. Floats as bits (hashable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct U8Quant {
    /// `1 / scale` as tract stores it in the quantiser (bits).
    pub inv: u32,
    /// The scale of the dequantiser (bits).
    pub scale: u32,
    /// The zero point.
    pub zero: u8,
}

/// The data of a tensor that an INT8 op reads: `f32` values, or the `u8`
/// levels the INT8 op before it wrote.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    /// Plain values.
    F32(&'a [f32]),
    /// Quantised levels.
    U8(&'a [u8]),
}

impl Values<'_> {
    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::U8(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The data of a tensor that an INT8 op writes: `f32` values or `u8` levels.
#[derive(Debug)]
pub enum ValuesMut<'a> {
    /// Plain values.
    F32(&'a mut [f32]),
    /// Quantised levels.
    U8(&'a mut [u8]),
}

impl ValuesMut<'_> {
    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            ValuesMut::F32(v) => v.len(),
            ValuesMut::U8(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Adding then subtracting 1.5 · 2²³ rounds an `f32` of magnitude below 2²² to
/// the nearest integer, ties to even (the FPU's default rounding), in a form the
/// compiler vectorises on every target.
const ROUNDING: f32 = 12_582_912.0;

impl U8Quant {
    /// The quantisation of tract's quantiser (`inv`, `zero`) and dequantiser
    /// (`scale`), when they use the same zero point.
    pub fn of_pair(q: &QuantizeLinearU8, dq: &DequantizeLinearF32) -> Option<U8Quant> {
        (i32::from(q.zero_point) == dq.zero_point && q.scale.is_finite() && dq.scale.is_finite())
            .then(|| U8Quant {
                inv: q.scale.to_bits(),
                scale: dq.scale.to_bits(),
                zero: q.zero_point,
            })
    }

    /// `[1 / scale, zero, scale]`, as the INT8 kernels' stores take them.
    pub fn steps(&self) -> [f32; 3] {
        [
            f32::from_bits(self.inv),
            f32::from(self.zero),
            f32::from_bits(self.scale),
        ]
    }

    /// The values of `levels` into `out`: `(q − zero) · scale`, the arithmetic of
    /// [`U8Quant::fake`]'s dequantise, so the values are bit for bit those a
    /// pair gives.
    pub fn dequantize(&self, levels: &[u8], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked above).
            return unsafe { self.dequantize_avx2(levels, out) };
        }
        self.dequantize_loop(levels, out)
    }

    /// [`U8Quant::dequantize`] with AVX2, 8 levels a step (the same two
    /// roundings: the subtraction is exact, then one multiply).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn dequantize_avx2(&self, levels: &[u8], out: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = levels.len().min(out.len());
        let zero = _mm256_set1_ps(f32::from(self.zero));
        let scale = _mm256_set1_ps(f32::from_bits(self.scale));
        let mut done = 0;
        while done + 8 <= n {
            // SAFETY: 8 bytes read from `levels` and 8 values written to `out` at
            // `done`, and `done + 8 ≤ n`.
            unsafe {
                let q = _mm_loadl_epi64(levels.as_ptr().add(done) as *const __m128i);
                let x = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q));
                let x = _mm256_mul_ps(_mm256_sub_ps(x, zero), scale);
                _mm256_storeu_ps(out.as_mut_ptr().add(done), x);
            }
            done += 8;
        }
        self.dequantize_loop(&levels[done..n], &mut out[done..n])
    }

    #[inline(always)]
    fn dequantize_loop(&self, levels: &[u8], out: &mut [f32]) {
        let (zero, scale) = (f32::from(self.zero), f32::from_bits(self.scale));
        for (x, &q) in out.iter_mut().zip(levels) {
            *x = (f32::from(q) - zero) * scale;
        }
    }

    /// The quantised level of `x` as an `f32` in 0..=255.
    // max/min rather than clamp: NaN goes to a bound here, as in the vector code.
    #[allow(clippy::manual_clamp)]
    #[inline(always)]
    fn level(inv: f32, zero: f32, x: f32) -> f32 {
        // Beyond ±1024 the final clamp saturates anyway; NaN becomes 0.
        let t = (x * inv).max(-1024.0).min(1024.0);
        ((t + ROUNDING) - ROUNDING + zero).max(0.0).min(255.0)
    }

    /// Quantises `xs` into `out`.
    pub fn quantize(&self, xs: &[f32], out: &mut [u8]) {
        self.quantize_clamped(xs, out, [f32::NEG_INFINITY, f32::INFINITY]);
    }

    /// Quantises `min(max(x, lo), hi)` of each of `xs` into `out`: a clamp (a
    /// ReLU6) before the quantiser, in the same pass. NaN goes to `lo`, as the
    /// separate clamp would send it; with no bounds (±∞) this is
    /// [`U8Quant::quantize`] exactly, since NaN and −∞ both give level 0.
    pub fn quantize_clamped(&self, xs: &[f32], out: &mut [u8], [lo, hi]: [f32; 2]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked above).
            return unsafe { self.quantize_avx2(xs, out, [lo, hi]) };
        }
        self.quantize_loop(xs, out, [lo, hi])
    }

    /// Replaces each value by its quantised-then-dequantised value.
    pub fn fake(&self, xs: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked above).
            return unsafe { self.fake_avx2(xs) };
        }
        self.fake_loop(xs)
    }

    /// [`U8Quant::quantize_clamped`] with AVX2: 32 values a step, rounded by the
    /// conversion (the FPU's default, ties to even) and clamped by the
    /// saturating packs.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn quantize_avx2(&self, xs: &[f32], out: &mut [u8], [lo, hi]: [f32; 2]) {
        use std::arch::x86_64::*;
        let n = xs.len().min(out.len());
        let inv = _mm256_set1_ps(f32::from_bits(self.inv));
        let (below, above) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let (lo_t, hi_t) = (_mm256_set1_ps(-1024.0), _mm256_set1_ps(1024.0));
        let zero = _mm256_set1_epi32(i32::from(self.zero));
        // packs work within 128-bit lanes: this puts the 8 groups of 4 back in order.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut done = 0;
        while done + 32 <= n {
            // SAFETY: 32 values read from `xs` and 32 bytes written to `out`
            // at `done`, and `done + 32 ≤ n`.
            unsafe {
                let level = |at: usize| {
                    // max_ps returns its second operand for NaN: NaN goes to `lo`,
                    // then (as −∞ or a number) through the same steps.
                    let x = _mm256_loadu_ps(xs.as_ptr().add(at));
                    let x = _mm256_min_ps(_mm256_max_ps(x, below), above);
                    let v = _mm256_mul_ps(x, inv);
                    let v = _mm256_min_ps(_mm256_max_ps(v, lo_t), hi_t);
                    _mm256_add_epi32(_mm256_cvtps_epi32(v), zero)
                };
                let a = _mm256_packs_epi32(level(done), level(done + 8));
                let b = _mm256_packs_epi32(level(done + 16), level(done + 24));
                let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), order);
                _mm256_storeu_si256(out.as_mut_ptr().add(done) as *mut __m256i, bytes);
            }
            done += 32;
        }
        self.quantize_loop(&xs[done..n], &mut out[done..n], [lo, hi])
    }

    /// [`U8Quant::fake`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fake_avx2(&self, xs: &mut [f32]) {
        self.fake_loop(xs)
    }

    // max/min rather than clamp: NaN goes to `lo`, as in the vector code.
    #[allow(clippy::manual_clamp)]
    #[inline(always)]
    fn quantize_loop(&self, xs: &[f32], out: &mut [u8], [lo, hi]: [f32; 2]) {
        let (inv, zero) = (f32::from_bits(self.inv), f32::from(self.zero));
        for (q, &x) in out.iter_mut().zip(xs) {
            *q = Self::level(inv, zero, x.max(lo).min(hi)) as u8;
        }
    }

    #[inline(always)]
    fn fake_loop(&self, xs: &mut [f32]) {
        let (inv, zero, scale) = (
            f32::from_bits(self.inv),
            f32::from(self.zero),
            f32::from_bits(self.scale),
        );
        for x in xs {
            *x = (Self::level(inv, zero, *x) - zero) * scale;
        }
    }
}

/// A `QuantizeLinear` / `DequantizeLinear` pair as one `f32 → f32` op.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FakeQuant(pub U8Quant);

impl Op for FakeQuant {
    fn name(&self) -> StaticName {
        "OutpostFakeQuant".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale {} zero {}",
            f32::from_bits(self.0.scale),
            self.0.zero
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for FakeQuant {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let mut output = input.into_tensor();
        self.0
            .fake(output.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FakeQuant {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == f32::datum_type(),
            "FakeQuant takes f32"
        );
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// The quantiser's parameters, if `node` is tract's `QuantizeLinearU8` on f32.
fn quantizer(node: &TypedNode) -> Option<&QuantizeLinearU8> {
    let ew = node.op_as::<ElementWiseOp>()?;
    ew.0.downcast_ref::<QuantizeLinearU8>()
}

/// Replaces each `QuantizeLinearU8` whose only consumer is a
/// `DequantizeLinearF32` with the same zero point by one [`FakeQuant`]; returns
/// how many.
pub fn fuse_pairs(model: &mut TypedModel) -> TractResult<usize> {
    let mut fused = 0;
    for id in 0..model.nodes.len() {
        let node = model.node(id);
        let Some(q) = quantizer(node) else {
            continue;
        };
        if model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
            continue;
        }
        let Some(dq_node) = model.single_succ(id)? else {
            continue;
        };
        let Some(quant) = dq_node
            .op_as::<DequantizeLinearF32>()
            .and_then(|dq| U8Quant::of_pair(q, dq))
        else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(model, node.inputs[0])?;
        let out = patch.wire_node(&dq_node.name, FakeQuant(quant), &[input])?;
        patch.shunt_outside(model, dq_node.id.into(), out[0])?;
        patch.apply(model)?;
        fused += 1;
    }
    if fused > 0 {
        model.compact()?;
    }
    Ok(fused)
}

/// Evaluates once every node whose inputs are all constants: in a QDQ model, the
/// dequantisation of INT8 weights (`Cast`, `Sub`, `Mul`). tract keeps those that
/// make a constant larger than their inputs (f32 weights from int8 ones), which
/// then run at every inference (0.35 ms of EfficientNet-Lite0's classifier)
/// and hide the weight from the INT8 product. Returns how many.
pub fn fold_constants(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::konst::Const;
    use tract_onnx::tract_core::ops::source::TypedSource;
    let mut folded = 0;
    for id in 0..model.nodes.len() {
        let node = model.node(id);
        if node.op_is::<Const>() || node.op_is::<TypedSource>() || node.outputs.len() != 1 {
            continue;
        }
        let Some(inputs) = model
            .node_input_facts(id)?
            .iter()
            .map(|f| f.konst.clone().map(|k| k.into_tvalue()))
            .collect::<Option<TVec<TValue>>>()
        else {
            continue;
        };
        if inputs.is_empty() {
            continue;
        }
        let Ok(Some(mut outputs)) = node.op.eval_out_of_plan(inputs) else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let name = node.name.clone();
        let wire = patch.add_const(name, outputs.remove(0).into_tensor())?;
        patch.shunt_outside(model, id.into(), wire)?;
        patch.apply(model)?;
        folded += 1;
    }
    if folded > 0 {
        model.compact()?;
    }
    Ok(folded)
}

/// Moves a constant-zero spatial `Pad` that feeds a [`FakeQuant`] that feeds a
/// 2-D NCHW/CHW convolution into the convolution's padding; returns how many.
pub fn fold_pads(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    for id in 0..model.nodes.len() {
        let Some(conv) = model.node(id).op_as::<Conv>() else {
            continue;
        };
        let fq = model.node(model.node(id).inputs[0].node);
        let Some(fake) = fq.op_as::<FakeQuant>() else {
            continue;
        };
        let pad_node = model.node(fq.inputs[0].node);
        let (Some(pad), Some(_)) = (pad_node.op_as::<Pad>(), model.single_succ(pad_node.id)?)
        else {
            continue;
        };
        if model.single_succ(fq.id)?.is_none() {
            continue;
        }
        let Some(padding) = merged_padding(conv, pad) else {
            continue;
        };
        let mut conv = conv.clone();
        conv.pool_spec.padding = padding;
        let name = model.node(id).name.clone();
        let mut patch = TypedModelPatch::default();
        let mut taps = patch.taps(model, &model.node(id).inputs)?;
        let x = patch.tap_model(model, pad_node.inputs[0])?;
        taps[0] = patch.wire_node(&fq.name, fake.clone(), &[x])?[0];
        let out = patch.wire_node(&name, conv, &taps)?;
        patch.shunt_outside(model, id.into(), out[0])?;
        patch.apply(model)?;
        folded += 1;
    }
    if folded > 0 {
        model.compact()?;
    }
    Ok(folded)
}

/// The convolution's padding with `pad`'s added, when `pad` pads only the two
/// spatial axes of an NCHW or CHW input with zeros and the convolution's own
/// padding is explicit or none.
fn merged_padding(conv: &Conv, pad: &Pad) -> Option<PaddingSpec> {
    let PadMode::Constant(value) = &pad.mode else {
        return None;
    };
    if value.cast_to_scalar::<f32>().ok()? != 0.0 || conv.pool_spec.rank() != 2 {
        return None;
    }
    let spatial = match pad.pads.len() {
        4 if conv.pool_spec.data_format == tract_onnx::tract_core::ops::nn::DataFormat::NCHW => {
            &pad.pads[2..]
        }
        3 if conv.pool_spec.data_format == tract_onnx::tract_core::ops::nn::DataFormat::CHW => {
            &pad.pads[1..]
        }
        _ => return None,
    };
    if pad.pads[..pad.pads.len() - 2].iter().any(|p| *p != (0, 0)) {
        return None;
    }
    let (before, after): (TVec<usize>, TVec<usize>) = match &conv.pool_spec.padding {
        PaddingSpec::Valid => (tvec!(0, 0), tvec!(0, 0)),
        PaddingSpec::Explicit(b, a) if b.len() == 2 && a.len() == 2 => (b.clone(), a.clone()),
        _ => return None,
    };
    Some(PaddingSpec::Explicit(
        before.iter().zip(spatial).map(|(b, p)| b + p.0).collect(),
        after.iter().zip(spatial).map(|(a, p)| a + p.1).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tract_pair(x: f32, inv: f32, scale: f32, zero: u8) -> f32 {
        let q = tract_onnx::tract_core::ops::quant::quantize_linear_f32_u8(x, inv, zero as i32);
        (q as i32 - zero as i32) as f32 * scale
    }

    /// The vectorised pair gives tract's values bit for bit, ties and
    /// saturation included.
    #[test]
    fn fake_quant_matches_tract_pair_bit_for_bit() {
        for (scale, zero) in [(0.0235f32, 0u8), (0.05, 128), (0.5, 255), (1.0 / 3.0, 17)] {
            let quant = U8Quant {
                inv: (1.0 / scale).to_bits(),
                scale: scale.to_bits(),
                zero,
            };
            let mut xs: Vec<f32> = (-4000..4000).map(|i| i as f32 * scale * 0.25).collect();
            xs.extend([1e5, -1e5, 0.0, -0.0]);
            let expected: Vec<f32> = xs
                .iter()
                .map(|&x| tract_pair(x, 1.0 / scale, scale, zero))
                .collect();
            let mut got = xs.clone();
            quant.fake(&mut got);
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                assert_eq!(g, e, "scale {scale} zero {zero}: {}", xs[i]);
            }
            let mut q = vec![0u8; xs.len()];
            quant.quantize(&xs, &mut q);
            let tract_q: Vec<u8> = xs
                .iter()
                .map(|&x| {
                    tract_onnx::tract_core::ops::quant::quantize_linear_f32_u8(
                        x,
                        1.0 / scale,
                        zero as i32,
                    )
                })
                .collect();
            for (i, (g, e)) in q.iter().zip(&tract_q).enumerate() {
                assert_eq!(g, e, "scale {scale} zero {zero}: {}", xs[i]);
            }
        }
    }

    /// Beyond `i32` after scaling, values saturate (tract's own loop wraps
    /// around there: 1e9 at scale 0.05 comes out as the lowest level).
    #[test]
    fn huge_values_saturate() {
        let quant = U8Quant {
            inv: 20f32.to_bits(),
            scale: 0.05f32.to_bits(),
            zero: 128,
        };
        // 40 values: the vector loop and the scalar tail both see each case.
        let case = [1e9f32, -1e9, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        let xs: Vec<f32> = case.iter().copied().cycle().take(40).collect();
        let mut q = vec![0u8; xs.len()];
        quant.quantize(&xs, &mut q);
        let mut ys = xs.clone();
        quant.fake(&mut ys);
        for (i, (q, y)) in q.iter().zip(&ys).enumerate() {
            assert_eq!(*q, [255, 0, 255, 0, 0][i % 5], "{}", xs[i]);
            assert_eq!(*y, [6.35, -6.4, 6.35, -6.4, -6.4][i % 5], "{}", xs[i]);
        }
    }

    /// The fused clamp-and-quantise equals a clamp then the quantiser, value for
    /// value, NaN and infinities included, in the vector loop and the scalar tail.
    #[test]
    fn clamped_quantisation_is_a_clamp_then_the_quantiser() {
        let quant = U8Quant {
            inv: (255.0f32 / 6.0).to_bits(),
            scale: (6.0f32 / 255.0).to_bits(),
            zero: 0,
        };
        let mut xs: Vec<f32> = (-300..700).map(|i| i as f32 * 0.0117).collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            1e30,
            -1e30,
            6.0,
            0.0,
        ]);
        for bounds in [
            [0.0f32, 6.0],
            [-1.0, 3.5],
            [f32::NEG_INFINITY, f32::INFINITY],
        ] {
            let clamped: Vec<f32> = xs.iter().map(|x| x.max(bounds[0]).min(bounds[1])).collect();
            let mut want = vec![0u8; xs.len()];
            quant.quantize_loop(&clamped, &mut want, [f32::NEG_INFINITY, f32::INFINITY]);
            for len in [xs.len(), 31, 33, 7] {
                let mut got = vec![0u8; len];
                quant.quantize_clamped(&xs[..len], &mut got, bounds);
                assert_eq!(got, want[..len], "bounds {bounds:?} len {len}");
            }
        }
    }

    /// Dequantising levels gives the pair's values bit for bit, for every level,
    /// in the vector loop and the scalar tail.
    #[test]
    fn dequantised_levels_are_the_pair_values() {
        for (scale, zero) in [(0.0235f32, 0u8), (0.05, 128), (1.0 / 3.0, 17)] {
            let quant = U8Quant {
                inv: (1.0 / scale).to_bits(),
                scale: scale.to_bits(),
                zero,
            };
            let levels: Vec<u8> = (0..=255).chain(0..=12).collect();
            let mut got = vec![f32::NAN; levels.len()];
            quant.dequantize(&levels, &mut got);
            for (q, g) in levels.iter().zip(&got) {
                let want = tract_pair(
                    (f32::from(*q) - f32::from(zero)) * scale,
                    1.0 / scale,
                    scale,
                    zero,
                );
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "level {q} scale {scale} zero {zero}"
                );
            }
        }
    }
}
