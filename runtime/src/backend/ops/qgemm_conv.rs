//! Convolutions (group 1) and 1×1 channel mixes of a QDQ model, run in INT8.
//!
//! In a QDQ model each quantised layer reads `dequantize(quantize(x))` and a
//! weight that is `int8 · scale` per output channel. tract runs that layer in
//! f32 on the dequantised values, so INT8 costs the quantise passes and saves
//! nothing. This op quantises its input itself (the same rounding as tract's
//! `QuantizeLinear`), multiplies `u8` activations by `i8` weights with exact
//! `i32` sums ([`routines::qgemm`](crate::backend::routines::qgemm)), and writes
//! `f32`: `(Σ − zero · Σw) · scale_x · scale_w + bias`, then the activations
//! that followed in the graph ([`super::epilogue`]). The result is the QDQ
//! model's, up to the order of float rounding.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::activation::Pointwise;
use super::activation::{Activation, PointwiseKernels};
use super::gemm_conv::{GemmConv, WeightLayout};
use super::quant::{U8Quant, Values, ValuesMut};
use super::ConvGeometry;
use crate::backend::parallel::{self, SharedOutput};
use crate::backend::routines::qgemm::{
    pack_columns, pack_points, product, product_channels_last, Dst, Kernel, PackedWeights, Post,
    CL_ROWS, MR, NR,
};

thread_local! {
    /// The thread's quantised input image, im2col block and packed block, kept
    /// between inferences so that steady-state inference allocates nothing here.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    static QUANTIZED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The thread's `f32` block of values on their way to levels, where
    /// activations the store cannot run (SiLU) come between.
    static VALUES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Input values per run of the quantiser when it is split over threads.
const QUANTIZE_RUN: usize = 4096;

/// Output channels per `f32` block on the way to levels (a multiple of
/// [`CL_ROWS`]).
const LEVEL_ROWS: usize = 64;

/// Blocks of the im2col matrix (and of its packed form) hold about this many
/// bytes: a quarter of a 1 MiB L2, beside the weights.
const BLOCK_BYTES: usize = 1 << 18;

/// The INT8 form of a [`GemmConv`]; its one input is the f32 tensor the QDQ
/// model quantised.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct QGemmConv {
    /// Images in the batch.
    pub images: usize,
    /// Output channels (M), input channels times taps (K), output points (N).
    pub mnk: [usize; 3],
    /// The im2col step; `None` when the input already is the `[K, N]` matrix.
    pub im2col: Option<ConvGeometry>,
    /// How the input is quantised.
    pub input: U8Quant,
    /// Whether the input tensor already holds the `u8` levels of `input` (written
    /// by the INT8 op before), rather than `f32` values to quantise.
    pub input_levels: bool,
    /// Where set, the output is the `u8` levels of this quantisation of the
    /// values (after the activations), for an INT8 op after it to read.
    pub output_levels: Option<U8Quant>,
    /// The packed weights, with the scales and bias.
    pub weights: Arc<PackedWeights>,
    /// The output shape tract expects.
    pub output_shape: TVec<usize>,
    /// The activations applied to each block of the output as it is written.
    pub pointwise: Pointwise,
    /// The input is channels-last, `[N, K]` (only without im2col), written so by
    /// the op before it ([`super::channels_last`]).
    pub input_channels_last: bool,
    /// The output is channels-last, `[N, M]`, for a channels-last op after it.
    pub output_channels_last: bool,
}

/// Whether QDQ products run in INT8 here: where a vector kernel exists
/// (x86-64 with AVX2 or AVX-512 VNNI, aarch64 NEON), unless `OUTPOST_INT8=off` (an escape
/// hatch, and the "before" of benchmarks).
pub fn enabled() -> bool {
    Kernel::native() != Kernel::Portable
        && std::env::var("OUTPOST_INT8").map_or(true, |v| v != "off")
}

/// Per output channel, the weight as `int8 · scale` with `scale = max|w| / 127`
/// (how QDQ quantisers, Outpost's trainer included, choose it), when every
/// weight is within 10⁻³ of a level; `None` for weights that are not INT8.
pub fn int8_rows(weight: &[f32], m: usize, k: usize) -> Option<(Vec<i8>, Vec<f32>)> {
    if weight.len() != m * k || k == 0 {
        return None;
    }
    let mut levels = Vec::with_capacity(m * k);
    let mut scales = Vec::with_capacity(m);
    for row in weight.chunks_exact(k) {
        let max = row.iter().fold(0f32, |a, w| a.max(w.abs()));
        if !max.is_finite() {
            return None;
        }
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        for w in row {
            let level = w / scale;
            let rounded = level.round();
            if !((level - rounded).abs() <= 1e-3 && rounded.abs() <= 127.0) {
                return None;
            }
            levels.push(rounded as i8);
        }
        scales.push(scale);
    }
    Some((levels, scales))
}

impl QGemmConv {
    /// The INT8 form of `base` with its (folded) f32 `weight` and `bias`, for an
    /// input quantised by `input`; `None` when the weight is not INT8 per output
    /// channel.
    pub fn new(
        base: &GemmConv,
        weight: &[f32],
        bias: &[f32],
        input: U8Quant,
        pointwise: Pointwise,
    ) -> Option<QGemmConv> {
        let (m, k) = (base.m, base.k);
        if weight.len() != m * k || !(bias.len() <= 1 || bias.len() == m) {
            return None;
        }
        let weight: Vec<f32> = match base.weight {
            WeightLayout::OutputMajor => weight.to_vec(),
            WeightLayout::InputMajor => (0..m * k).map(|i| weight[(i % k) * m + i / k]).collect(),
        };
        let (levels, weight_scales) = int8_rows(&weight, m, k)?;
        let scale_x = f32::from_bits(input.scale);
        let scales: Vec<f32> = weight_scales.iter().map(|s| s * scale_x).collect();
        let shifts: Vec<f32> = (0..m)
            .map(|o| match bias {
                [] => 0.0,
                [b] => *b,
                _ => bias[o],
            })
            .collect();
        let weights = PackedWeights::new(
            &levels,
            m,
            k,
            input.zero,
            &scales,
            &shifts,
            Kernel::native(),
        );
        Some(QGemmConv {
            images: base.images,
            mnk: [m, base.n, k],
            im2col: base.im2col.clone(),
            input,
            input_levels: false,
            output_levels: None,
            weights: Arc::new(weights),
            output_shape: base.output_shape.clone(),
            pointwise,
            input_channels_last: false,
            output_channels_last: false,
        })
    }

    /// Values in one input image.
    fn image_len(&self) -> usize {
        match &self.im2col {
            Some(g) => g.channels * g.input_hw[0] * g.input_hw[1],
            None => self.mnk[2] * self.mnk[1],
        }
    }

    /// What a part walks besides output channels: output rows with im2col,
    /// points without.
    fn units(&self) -> usize {
        match &self.im2col {
            Some(g) => g.output_hw[0],
            None => self.mnk[1],
        }
    }

    /// This op writing the levels of `quant` instead of f32 values (without its
    /// last activation, a quantise-dequantise pair, if `drop_pair`). Where every
    /// activation runs in the kernel's store the levels are stored directly;
    /// otherwise (a SiLU, or a pair already) each block goes through `f32`
    /// values in cache, the activations, then the quantiser the next op would
    /// have run on them.
    pub fn writing_levels(&self, quant: U8Quant, drop_pair: bool) -> Option<QGemmConv> {
        let mut op = self.clone();
        if drop_pair {
            op.pointwise.0.pop();
        }
        self.output_levels.is_none().then(|| {
            op.output_levels = Some(quant);
            op
        })
    }

    /// Runs the op on `images` inputs into `output`: `f32` values or levels, as
    /// [`QGemmConv::input_levels`] and [`QGemmConv::output_levels`] say.
    pub fn compute(&self, input: Values<'_>, output: ValuesMut<'_>) -> TractResult<()> {
        let [m, n, k] = self.mnk;
        let per_image = self.image_len();
        ensure!(
            input.len() == self.images * per_image,
            "convolution input has {} values, expected {}",
            input.len(),
            self.images * per_image
        );
        ensure!(output.len() == self.images * m * n);
        ensure!(
            matches!(input, Values::U8(_)) == self.input_levels
                && matches!(output, ValuesMut::U8(_)) == self.output_levels.is_some(),
            "INT8 convolution called with the wrong tensor types"
        );
        let threads = parallel::threads_for_product(m * n * k);
        // More channels than points: each thread takes whole panels of channels.
        let by_channels = self.im2col.is_none() && m > n;
        // Channels-last products split channels in blocks of their kernel's panel.
        let block = match self.output_channels_last {
            true => CL_ROWS,
            false => MR,
        };
        let parts = if by_channels {
            m.div_ceil(block)
        } else {
            self.units()
        }
        .min(threads)
        .max(1);
        let part = |p: usize| {
            let share = |total: usize| total * p / parts..total * (p + 1) / parts;
            if by_channels {
                let panels = share(m.div_ceil(block));
                (
                    (panels.start * block).min(m)..(panels.end * block).min(m),
                    0..self.units(),
                )
            } else {
                (0..m, share(self.units()))
            }
        };
        let out_base = match output {
            ValuesMut::F32(o) => Dst::F32(o.as_mut_ptr()),
            ValuesMut::U8(o) => Dst::U8(o.as_mut_ptr()),
        };
        for image in 0..self.images {
            // SAFETY: image `image`'s `m × n` block of the output (its size is checked above).
            let out = SharedOutput(unsafe { out_base.add(image * m * n) });
            let at = image * per_image..(image + 1) * per_image;
            QUANTIZED.with_borrow_mut(|scratch| -> TractResult<()> {
                let quantized = match &input {
                    Values::U8(levels) => &levels[at],
                    Values::F32(values) => {
                        scratch.resize(per_image, 0);
                        // Split over the threads too: on one thread this pass was
                        // a tenth of YOLOv8's INT8 time.
                        let values = &values[at];
                        parallel::par_chunks_mut(
                            scratch,
                            QUANTIZE_RUN,
                            per_image,
                            |first, run| {
                                let from = first * QUANTIZE_RUN;
                                self.input.quantize(&values[from..from + run.len()], run);
                                Ok(())
                            },
                        )?;
                        &scratch[..]
                    }
                };
                match parts {
                    2.. => parallel::run_parts(parts, |p| {
                        let (rows, units) = part(p);
                        // SAFETY: parts write disjoint blocks of `out`.
                        unsafe { self.part(quantized, out.get(), rows, units) }
                    }),
                    // SAFETY: the whole output of this image.
                    _ => unsafe { self.part(quantized, out.get(), 0..m, 0..self.units()) },
                }
            })?;
        }
        Ok(())
    }

    /// Computes output channels `rows` at the points `units` covers (output
    /// rows with im2col, points without) of one image.
    ///
    /// # Safety
    /// `out` points to the image's `M × N` output, of which this call writes
    /// only the block `rows × units`; `rows.start` is a multiple of [`MR`]
    /// ([`CL_ROWS`] for a channels-last output).
    unsafe fn part(
        &self,
        quantized: &[u8],
        out: Dst,
        rows: std::ops::Range<usize>,
        units: std::ops::Range<usize>,
    ) -> TractResult<()> {
        let [m, n, k] = self.mnk;
        let zero = self.input.zero;
        let (mut post, rest) = store_steps(&self.pointwise);
        // Levels through an `f32` block: those of `q`, after the store's steps
        // and `rest`.
        let mut via_values = None;
        if let Some(q) = self.output_levels {
            match rest.is_empty() && post.fake_quant.is_none() {
                true => post.fake_quant = Some(q.steps()),
                false => via_values = Some(q),
            }
        }
        let activation = PointwiseKernels::of(rest)?;
        // The output of channels `o..` at points `p..` is runs of contiguous
        // values, `gap` apart: a run per channel (channels-first) or per point
        // (channels-last).
        let (cl, gap) = (
            self.output_channels_last,
            if self.output_channels_last { m } else { n },
        );
        let offset = |o: usize, p: usize| if cl { p * m + o } else { o * n + p };
        // `rows` × `columns` into `at`, runs `stride` apart; returns the runs'
        // length and count.
        // SAFETY (callers): `at` holds the block's runs.
        let multiply = |rows: std::ops::Range<usize>, packed: &[u8], columns, at, stride| unsafe {
            let w = &self.weights;
            if cl {
                product_channels_last(w, rows.clone(), packed, columns, at, stride, &post);
                (rows.len(), columns)
            } else {
                product(w, rows.clone(), packed, columns, at, stride, &post);
                (columns, rows.len())
            }
        };
        // SAFETY: the caller's contract: these rows and columns are this part's.
        let run = |packed: &[u8], first: usize, columns: usize| -> TractResult<()> {
            if let (Some(q), Dst::U8(levels)) = (via_values, out) {
                return VALUES.with_borrow_mut(|block| {
                    for chunk in rows.clone().step_by(LEVEL_ROWS) {
                        let chunk = chunk..(chunk + LEVEL_ROWS).min(rows.end);
                        block.resize(chunk.len() * columns, 0.0);
                        // The block's runs are contiguous.
                        let stride = if cl { chunk.len() } else { columns };
                        let values = Dst::F32(block.as_mut_ptr());
                        let (len, _) = multiply(chunk.clone(), packed, columns, values, stride);
                        activation.apply(block)?;
                        let at = offset(chunk.start, first);
                        for (i, run) in block.chunks_exact(len).enumerate() {
                            // SAFETY: the levels of this part (the caller's contract).
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(levels.add(at + i * gap), len)
                            };
                            q.quantize(run, dst);
                        }
                    }
                    Ok(())
                });
            }
            // SAFETY: this part's block of `out` (the caller's contract).
            let at = unsafe { out.add(offset(rows.start, first)) };
            let (len, count) = multiply(rows.clone(), packed, columns, at, gap);
            if let (false, Dst::F32(at)) = (activation.is_identity(), at) {
                for r in 0..count {
                    // SAFETY: run `r` of this part's block.
                    activation
                        .apply(unsafe { std::slice::from_raw_parts_mut(at.add(r * gap), len) })?;
                }
            }
            Ok(())
        };
        SCRATCH.with_borrow_mut(|(cols, packed)| match &self.im2col {
            None => {
                let points = (BLOCK_BYTES / k).max(NR) / NR * NR;
                for first in units.clone().step_by(points) {
                    let columns = points.min(units.end - first);
                    match self.input_channels_last {
                        true => pack_points(&quantized[first * k..], k, columns, zero, packed),
                        false => pack_columns(&quantized[first..], k, n, columns, zero, packed),
                    }
                    run(packed, first, columns)?;
                }
                Ok(())
            }
            Some(geometry) => {
                let ow = geometry.output_hw[1];
                let block_rows = (BLOCK_BYTES / (k * ow)).clamp(1, units.len().max(1));
                cols.resize(k * block_rows * ow, zero);
                for first in units.clone().step_by(block_rows) {
                    let block = first..(first + block_rows).min(units.end);
                    let columns = block.len() * ow;
                    let cols = &mut cols[..k * columns];
                    geometry.fill(quantized, cols, block, zero);
                    pack_columns(cols, k, columns, columns, zero, packed);
                    run(packed, first * ow, columns)?;
                }
                Ok(())
            }
        })
    }
}

/// The leading activations the INT8 kernels apply as they store (a clamp, then
/// a quantise-dequantise pair), and the rest, applied after. Borrows the rest,
/// so that a part whose steps all run in the store allocates nothing.
fn store_steps(pointwise: &Pointwise) -> (Post, &[Activation]) {
    let mut post = Post::default();
    let mut steps = pointwise.0.as_slice();
    if let [Activation::Clamp { lo, hi }, rest @ ..] = steps {
        post.clamp = Some([f32::from_bits(*lo), f32::from_bits(*hi)]);
        steps = rest;
    }
    if let [Activation::FakeQuant(q), rest @ ..] = steps {
        post.fake_quant = Some(q.steps());
        steps = rest;
    }
    (post, steps)
}

impl Op for QGemmConv {
    fn name(&self) -> StaticName {
        "OutpostQGemmConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let [m, n, k] = self.mnk;
        let mut info = vec![format!(
            "M={m} K={k} N={n} images={} kernel {:?}",
            self.images,
            self.weights.kernel()
        )];
        if !self.pointwise.is_identity() {
            info.push(format!("then {:?}", self.pointwise.0));
        }
        if self.input_levels {
            info.push("reads u8 levels".into());
        }
        if let Some(q) = self.output_levels {
            info.push(format!("writes u8 levels of {q:?}"));
        }
        match (self.input_channels_last, self.output_channels_last) {
            (true, true) => info.push("channels-last input and output".into()),
            (true, false) => info.push("channels-last input".into()),
            (false, true) => info.push("channels-last output".into()),
            (false, false) => {}
        }
        Ok(info)
    }

    op_as_typed_op!();
}

impl EvalOp for QGemmConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let input = input.try_as_plain_ram()?;
        let input = if self.input_levels {
            Values::U8(input.as_slice::<u8>()?)
        } else {
            Values::F32(input.as_slice::<f32>()?)
        };
        // SAFETY: `compute` writes every output value.
        let mut output = unsafe {
            match self.output_levels {
                Some(_) => Tensor::uninitialized::<u8>(&self.output_shape)?,
                None => Tensor::uninitialized::<f32>(&self.output_shape)?,
            }
        };
        {
            let mut out = output.try_as_plain_ram_mut()?;
            let out = match self.output_levels {
                Some(_) => ValuesMut::U8(out.as_slice_mut::<u8>()?),
                None => ValuesMut::F32(out.as_slice_mut::<f32>()?),
            };
            self.compute(input, out)?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for QGemmConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(match self.output_levels {
            Some(_) => u8::fact(&*self.output_shape),
            None => f32::fact(&*self.output_shape),
        }))
    }

    as_op!();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::ops::gemm_conv::tests::values;
    use tract_onnx::tract_core::ops::array::{Pad, PadMode};
    use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::math::{max, min};
    use tract_onnx::tract_core::ops::nn::DataFormat;
    use tract_onnx::tract_core::ops::quant::{quantize_linear_u8, DequantizeLinearF32};

    /// One QDQ layer: `x → [Pad] → Q → DQ → Conv(int8 · scale, bias) → ReLU6 →
    /// Q → DQ`, as the trainer writes it and tract reads it.
    struct Layer {
        c: usize,
        o: usize,
        hw: [usize; 2],
        kernel: usize,
        stride: usize,
        dilation: usize,
        /// Zero padding in the convolution (top/left, bottom/right).
        padding: (usize, usize),
        /// A separate `Pad` node before the quantiser, as EfficientNet's.
        pad_node: Option<(usize, usize)>,
    }

    /// A `QuantizeLinear` / `DequantizeLinear` pair after `x`, as tract reads it.
    pub(crate) fn wire_pair(
        m: &mut TypedModel,
        name: &str,
        x: OutletId,
        scale: f32,
        zero: u8,
    ) -> OutletId {
        let q = m
            .wire_node(
                format!("{name}.q"),
                quantize_linear_u8(1.0 / scale, zero),
                &[x],
            )
            .unwrap();
        m.wire_node(
            format!("{name}.dq"),
            DequantizeLinearF32::new(scale, zero as i32),
            &q,
        )
        .unwrap()[0]
    }

    fn qdq_model(l: &Layer, seed: usize) -> TypedModel {
        let mut m = TypedModel::default();
        let [h, w] = l.hw;
        let mut x = m.add_source("x", f32::fact([1, l.c, h, w])).unwrap();
        if let Some((before, after)) = l.pad_node {
            let pad = Pad {
                pads: vec![(0, 0), (0, 0), (before, after), (before, after)],
                mode: PadMode::Constant(Arc::new(0f32.into())),
            };
            x = m.wire_node("pad", pad, &[x]).unwrap()[0];
        }
        let x = wire_pair(&mut m, "input", x, 0.021, 117);
        let taps = l.c * l.kernel * l.kernel;
        // Weights on INT8 levels, one scale per output channel (the largest at ±127).
        let weight: Vec<f32> = (0..l.o * taps)
            .map(|i| {
                let (o, j) = (i / taps, i % taps);
                let level = if j == 0 {
                    127.0
                } else {
                    (values(1, i + seed)[0] * 127.0).round()
                };
                level * 0.004 * (1.0 + o as f32 * 0.1)
            })
            .collect();
        let weight = tensor1(&weight)
            .into_shape(&[l.o, l.c, l.kernel, l.kernel])
            .unwrap();
        let bias = tensor1(
            &values(l.o, seed + 9)
                .iter()
                .map(|v| v * 0.3)
                .collect::<Vec<_>>(),
        );
        let w = m.add_const("w", weight).unwrap();
        let b = m.add_const("b", bias).unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(l.kernel, l.kernel),
                padding: PaddingSpec::Explicit(
                    tvec!(l.padding.0, l.padding.0),
                    tvec!(l.padding.1, l.padding.1),
                ),
                dilations: Some(tvec!(l.dilation, l.dilation)),
                strides: Some(tvec!(l.stride, l.stride)),
                input_channels: l.c,
                output_channels: l.o,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let y = m.wire_node("conv", conv, &[x, w, b]).unwrap()[0];
        let zero = m.add_const("zero", tensor4(&[[[[0f32]]]])).unwrap();
        let six = m.add_const("six", tensor4(&[[[[6f32]]]])).unwrap();
        let y = m.wire_node("relu", max(), &[y, zero]).unwrap()[0];
        let y = m.wire_node("relu6", min(), &[y, six]).unwrap()[0];
        let y = wire_pair(&mut m, "output", y, 6.0 / 255.0, 0);
        m.select_output_outlets(&[y]).unwrap();
        m.into_decluttered().unwrap()
    }

    /// The model's first output on `input`, as f32 values.
    pub(crate) fn run(model: &TypedModel, input: &Tensor) -> Vec<f32> {
        let out = model
            .clone()
            .into_runnable()
            .unwrap()
            .run(tvec!(input.clone().into_tvalue()))
            .unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    /// The rewritten layer (pair fused, `Pad` folded, INT8 product with ReLU6
    /// and the next pair in its epilogue) gives tract's outputs for the same QDQ
    /// graph: all within one output step (0.024), and nearly all equal — the
    /// INT8 sums are exact where tract's f32 ones round, which can move a value
    /// across a rounding boundary of the output quantiser. With 1 and 2 threads,
    /// over kernels, strides, dilations, paddings, a `Pad` node and odd sizes.
    #[test]
    fn rewritten_qdq_layers_match_tract() {
        // (c, o, [h, w], kernel, stride, dilation, padding, Pad node)
        type Row = (
            usize,
            usize,
            [usize; 2],
            usize,
            usize,
            usize,
            (usize, usize),
            Option<(usize, usize)>,
        );
        let rows: [Row; 5] = [
            (16, 40, [13, 11], 1, 1, 1, (0, 0), None),
            (3, 16, [33, 30], 3, 2, 1, (0, 0), Some((0, 1))),
            (8, 24, [17, 19], 3, 1, 2, (2, 2), None),
            (5, 9, [10, 12], 5, 2, 1, (1, 2), Some((1, 1))),
            (64, 10, [7, 7], 1, 1, 1, (0, 0), None),
        ];
        let layers = rows.map(
            |(c, o, hw, kernel, stride, dilation, padding, pad_node)| Layer {
                c,
                o,
                hw,
                kernel,
                stride,
                dilation,
                padding,
                pad_node,
            },
        );
        for (case, layer) in layers.iter().enumerate() {
            let model = qdq_model(layer, case);
            let mut rewritten = model.clone();
            let replaced = crate::backend::ops::rewrite_decluttered(&mut rewritten).unwrap();
            assert!(replaced > 0, "case {case}: nothing replaced");
            let ops: Vec<String> = rewritten
                .nodes
                .iter()
                .map(|n| n.op.name().to_string())
                .collect();
            if enabled() {
                assert!(
                    ops.iter().any(|o| o == "OutpostQGemmConv"),
                    "case {case}: {ops:?}"
                );
                for gone in [
                    "Pad",
                    "QuantizeLinearU8",
                    "DequantizeLinearF32",
                    "Max",
                    "Min",
                ] {
                    assert!(
                        !ops.iter().any(|o| o.contains(gone)),
                        "case {case}: {gone} left in {ops:?}"
                    );
                }
            }
            let [h, w] = layer.hw;
            let input: Vec<f32> = values(layer.c * h * w, case)
                .iter()
                .map(|v| v * 2.5)
                .collect();
            let input = tensor1(&input).into_shape(&[1, layer.c, h, w]).unwrap();
            let want = run(&model, &input);
            for threads in [1, 2] {
                let got =
                    crate::backend::parallel::with_threads(threads, || run(&rewritten, &input));
                assert_eq!(got.len(), want.len());
                let step = 6.0 / 255.0;
                let mut differ = 0;
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= step * 1.01,
                        "case {case} threads {threads} at {i}: {g} vs {e}"
                    );
                    differ += usize::from(g != e);
                }
                assert!(
                    differ * 100 <= got.len(),
                    "case {case}: {differ} of {} differ",
                    got.len()
                );
            }
        }
    }

    /// Weights not on INT8 levels per output channel stay in f32.
    #[test]
    fn only_int8_weights_are_recognised() {
        let levels: Vec<f32> = vec![127.0, -3.0, 64.0, 0.0, -127.0, 1.0];
        let on: Vec<f32> = levels.iter().map(|l| l * 0.01).collect();
        let (q, s) = int8_rows(&on, 2, 3).unwrap();
        assert_eq!(q, vec![127, -3, 64, 0, -127, 1]);
        assert!((s[0] - 0.01).abs() < 1e-9 && (s[1] - 0.01).abs() < 1e-9);
        let mut off = on.clone();
        off[1] += 0.003;
        assert!(int8_rows(&off, 2, 3).is_none());
        assert!(int8_rows(&[f32::NAN, 1.0], 1, 2).is_none());
        // An all-zero row is INT8 (scale 1).
        assert_eq!(int8_rows(&[0.0; 4], 2, 2).unwrap().0, vec![0; 4]);
    }
}
