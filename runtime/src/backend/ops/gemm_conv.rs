//! Convolutions and 1×1 channel mixes as one matrix product per image, on the
//! `gemm` crate's kernels (AVX-512 / AVX2+FMA on x86-64, NEON on aarch64).
//!
//! tract runs these as its `OptMatMul` after im2col. On the models we ship that ran
//! at 3–10 GMAC/s on one core of an AVX-512 Xeon (EfficientNet-Lite0's stem at
//! K = 27: 3 GMAC/s; YOLOv8's 3×3 stride-2 convolutions: 6 GMAC/s), while `gemm`
//! runs the same shapes at 40–65 GMAC/s, measured in one session on that machine.
//!
//! The product is `out[o, p] = bias[o] + Σ_k weight[o, k] · cols[k, p]`, in NCHW
//! order, where `p` walks the output points of one image and `k` the input
//! channels times the kernel taps. For a 1×1 convolution with stride 1 and no
//! padding (tract declutters those into an `EinSum`) `cols` is the input itself;
//! otherwise it is the im2col matrix, built in a per-thread scratch buffer.
//!
//! Where Outpost has a direct kernel (x86-64 with AVX2 + FMA or AVX-512), the
//! products with im2col then move to [`super::direct_conv`], which reads the
//! padded input in place instead of building that matrix.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;
use tract_onnx::tract_core::ops::einsum::EinSum;

use super::activation::{Pointwise, PointwiseKernels};
use super::epilogue::Channels;
use super::ConvGeometry;
use crate::backend::parallel::{self, SharedOutput};
use crate::backend::routines::point_gemm::{self, PointWeights};

thread_local! {
    /// The thread's im2col matrix, kept between inferences so that steady-state
    /// inference allocates nothing here.
    static COLS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `gemm` has vector kernels for this CPU architecture. Elsewhere (armv7)
/// its portable loop is slower than tract's NEON kernels, so tract keeps the work.
pub const GEMM_HAS_SIMD: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Whether the CPU backend runs products here: where `gemm` has vector kernels,
/// unless `OUTPOST_GEMM=off` (an escape hatch, and the "before" of benchmarks).
pub fn enabled() -> bool {
    GEMM_HAS_SIMD && std::env::var("OUTPOST_GEMM").map_or(true, |v| v != "off")
}

/// The im2col matrix is built and multiplied in blocks of whole output rows of
/// about this many values (1 MiB, half a core's L2 on current x86 and ARM
/// server cores), so that a block is still in cache when the product reads it
/// and a large convolution does not need its whole matrix in memory. Measured on
/// YOLOv8's 3×3 shapes: 4 MiB blocks ran the product at 7–30 GMAC/s, 1 MiB
/// blocks at 40–60 (one whole matrix was slower still).
const COLS_BLOCK: usize = 1 << 18;

/// The im2col step of a convolution larger than 1×1.
impl ConvGeometry {
    /// Writes the `[channels · KH · KW, rows · OW]` matrix of `image` (`[C, H, W]`)
    /// for the output rows `rows` into `cols`; padding reads as `zero`.
    pub(crate) fn fill<T: Copy>(
        &self,
        image: &[T],
        cols: &mut [T],
        rows: std::ops::Range<usize>,
        zero: T,
    ) {
        let [h, w] = self.input_hw;
        let ow = self.output_hw[1];
        let [kh, kw] = self.kernel_hw;
        let [sh, sw] = self.strides;
        let [dh, dw] = self.dilations;
        let [top, left] = self.pad_before;
        let mut matrix_rows = cols.chunks_exact_mut(rows.len() * ow);
        for c in 0..self.channels {
            let plane = &image[c * h * w..(c + 1) * h * w];
            for ky in 0..kh {
                for kx in 0..kw {
                    let Some(row) = matrix_rows.next() else {
                        return;
                    };
                    // Output columns whose input column `ox·sw + kx·dw − left` is
                    // inside the image: [first, end).
                    let shift = kx * dw;
                    let first = left.saturating_sub(shift).div_ceil(sw).min(ow);
                    let end = if w + left > shift {
                        ((w + left - shift - 1) / sw + 1).min(ow)
                    } else {
                        0
                    }
                    .max(first);
                    for (oy, out) in rows.clone().zip(row.chunks_exact_mut(ow)) {
                        let y = (oy * sh + ky * dh).checked_sub(top).filter(|&y| y < h);
                        let Some(y) = y else {
                            out.fill(zero);
                            continue;
                        };
                        let src = &plane[y * w..(y + 1) * w];
                        out[..first].fill(zero);
                        out[end..].fill(zero);
                        // first ≥ ceil((left − shift) / sw), so the subtraction holds.
                        let x0 = first * sw + shift - left;
                        super::gather_row(&mut out[first..end], src, x0, sw);
                    }
                }
            }
        }
    }
}

/// How the weight matrix is laid out in memory.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[M, K]` row-major: a convolution kernel (OIHW) or an `OI` matrix.
    OutputMajor,
    /// `[K, M]` row-major (an `IO` matrix).
    InputMajor,
}

/// A convolution (group 1) or a 1×1 channel mix as `images` matrix products;
/// inputs are (image, weight) or (image, weight, bias).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct GemmConv {
    /// Images in the batch (the input's leading axis, or 1).
    pub images: usize,
    /// Output channels (M).
    pub m: usize,
    /// Input channels times kernel taps (K).
    pub k: usize,
    /// Output points per image (N).
    pub n: usize,
    /// The weight's layout.
    pub weight: WeightLayout,
    /// The im2col step; `None` when the input already is the `[K, N]` matrix.
    pub im2col: Option<ConvGeometry>,
    /// The output shape tract expects.
    pub output_shape: TVec<usize>,
    /// The output axis of the M output channels.
    pub channel_axis: usize,
    /// The activations applied to each block of the output as it is written.
    pub pointwise: Pointwise,
    /// The input is channels-last, `[N, K]` (only without im2col): written so by
    /// the op before it ([`super::channels_last`]).
    pub input_channels_last: bool,
    /// The output is channels-last, `[N, M]`, for a channels-last op after it.
    pub output_channels_last: bool,
    /// The weights packed for [`point_gemm`], which then runs the products
    /// (only with a channels-last output and an NCHW input or im2col, where
    /// the CPU has that kernel: see [`GemmConv::with_point_weights`]).
    pub points: Option<std::sync::Arc<PointWeights>>,
}

impl GemmConv {
    /// The op for `conv` on a concrete f32 input, if it is a float convolution of
    /// group 1 over NCHW or CHW with an OIHW kernel; `None` leaves it to tract.
    pub fn for_conv(conv: &Conv, input: &TypedFact) -> Option<GemmConv> {
        let im2col = ConvGeometry::of(conv, input).filter(|_| conv.group == 1)?;
        let (batch, channels, kernel_hw) = (im2col.batch, im2col.channels, im2col.kernel_hw);
        let ([h, w], output_hw) = (im2col.input_hw, im2col.output_hw);
        let spec = &conv.pool_spec;
        // A 1×1 kernel at stride 1 without padding reads the input as it is.
        let direct = kernel_hw == [1, 1]
            && im2col.strides == [1, 1]
            && im2col.pad_before == [0, 0]
            && output_hw == [h, w];
        let mut output_shape: TVec<usize> = batch.into_iter().collect();
        output_shape.extend([spec.output_channels, output_hw[0], output_hw[1]]);
        Some(GemmConv {
            images: batch.unwrap_or(1),
            m: spec.output_channels,
            k: channels * kernel_hw[0] * kernel_hw[1],
            n: output_hw[0] * output_hw[1],
            weight: WeightLayout::OutputMajor,
            im2col: (!direct).then_some(im2col),
            channel_axis: usize::from(batch.is_some()),
            output_shape,
            pointwise: Pointwise::default(),
            input_channels_last: false,
            output_channels_last: false,
            points: None,
        })
    }

    /// The op for an `EinSum` that is a channel mix, and which of its two inputs
    /// is the weight: a weight with two axes `O` and `I` (in either order, plus
    /// axes of length 1) times an input whose only axis longer than 1 before the
    /// others is `I`, giving an output whose same axes follow `O` in the same order.
    /// That is how tract declutters 1×1 convolutions (`IHW,OI->OHW`, or
    /// `mk,kn->mn` once spatial axes are merged). Axes of length 1 may come and
    /// go. `None` leaves anything else to tract.
    pub fn for_einsum(
        op: &EinSum,
        inputs: [&TypedFact; 2],
        output: &TypedFact,
    ) -> Option<(GemmConv, usize)> {
        let f32_dt = f32::datum_type();
        if op.q_params.is_some()
            || op.operating_dt != f32_dt
            || inputs
                .iter()
                .chain([&output])
                .any(|f| f.datum_type != f32_dt)
        {
            return None;
        }
        let (ins, outs) = op.axes.to_strs();
        let ([a, b], [o_axes]) = (&*ins, &*outs) else {
            return None;
        };
        let axes = |s: &str, f: &TypedFact| -> Option<Vec<(char, usize)>> {
            let shape = f.shape.as_concrete()?;
            (s.chars().count() == shape.len())
                .then(|| s.chars().zip(shape.iter().copied()).collect())
        };
        let (a, b, o) = (
            axes(a, inputs[0])?,
            axes(b, inputs[1])?,
            axes(o_axes, output)?,
        );
        // The weight is the second input in tract's ONNX form, the first in its NNEF form.
        if let Some(op) = Self::channel_mix(&a, &b, &o) {
            return Some((op, 1));
        }
        Self::channel_mix(&b, &a, &o).map(|op| (op, 0))
    }

    /// [`GemmConv::for_einsum`] for one choice of weight: axes as (label, length).
    fn channel_mix(
        x: &[(char, usize)],
        w: &[(char, usize)],
        out: &[(char, usize)],
    ) -> Option<GemmConv> {
        let has = |axes: &[(char, usize)], c: char| axes.iter().any(|(a, _)| *a == c);
        // The contracted axis is in the input and the weight, the output channel
        // axis in the weight and the output; the weight has nothing else but axes
        // of length 1.
        let (mut i, mut o) = (None, None);
        for (pos, &(c, d)) in w.iter().enumerate() {
            match (has(x, c), has(out, c)) {
                (true, false) if i.is_none() => i = Some((pos, c, d)),
                (false, true) if o.is_none() => o = Some((pos, c, d)),
                _ if d == 1 => {}
                _ => return None,
            }
        }
        let ((i_pos, i, k), (o_pos, o, m)) = (i?, o?);
        // The axes that matter: longer than 1, or the two channel axes.
        let kept = |axes: &[(char, usize)]| -> Vec<(char, usize)> {
            axes.iter()
                .filter(|(a, d)| *d > 1 || *a == i || *a == o)
                .copied()
                .collect()
        };
        let (xk, ok) = (kept(x), kept(out));
        let (Some((x_first, x_rest)), Some((o_first, o_rest))) =
            (xk.split_first(), ok.split_first())
        else {
            return None;
        };
        if *x_first != (i, k)
            || *o_first != (o, m)
            || k == 0
            || m == 0
            || out.iter().any(|(_, d)| *d == 0)
            || x_rest != o_rest
        {
            return None;
        }
        Some(GemmConv {
            images: 1,
            m,
            k,
            n: x_rest.iter().map(|(_, d)| d).product(),
            weight: if o_pos < i_pos {
                WeightLayout::OutputMajor
            } else {
                WeightLayout::InputMajor
            },
            im2col: None,
            output_shape: out.iter().map(|(_, d)| *d).collect(),
            channel_axis: out.iter().position(|(a, _)| *a == o)?,
            pointwise: Pointwise::default(),
            input_channels_last: false,
            output_channels_last: false,
            points: None,
        })
    }

    /// This product run by [`point_gemm`] with `weight` (its constant weight
    /// input), where it writes channels-last from an NCHW input or im2col and
    /// the CPU has that kernel (AVX-512); otherwise run by `gemm`.
    pub fn with_point_weights(self, weight: &Tensor) -> GemmConv {
        if !self.output_channels_last || self.input_channels_last || !point_gemm::available() {
            return GemmConv {
                points: None,
                ..self
            };
        }
        let strides = match self.weight {
            WeightLayout::OutputMajor => [self.k, 1],
            WeightLayout::InputMajor => [1, self.m],
        };
        let packed = weight.cast_to::<f32>().ok().and_then(|w| {
            let w = w.try_as_plain_ram().ok()?;
            let w = w.as_slice::<f32>().ok()?;
            (w.len() == self.m * self.k).then(|| PointWeights::new(w, self.m, self.k, strides))?
        });
        GemmConv {
            points: packed.map(std::sync::Arc::new),
            ..self
        }
    }

    /// The output channels, for [`super::epilogue::Epilogue`].
    pub fn channels(&self) -> Channels {
        Channels {
            m: self.m,
            k: self.k,
            axis: self.channel_axis,
            rank: self.output_shape.len(),
            weight: self.weight,
        }
    }

    /// Multiply-adds per run.
    pub fn macs(&self) -> usize {
        self.images * self.m * self.k * self.n
    }

    /// Runs the products; `image` is `images` inputs of `K·N` values (or of
    /// `C·H·W` with im2col), `weight` `M·K` values, `bias` none, one, or `M`.
    pub fn compute(
        &self,
        image: &[f32],
        weight: &[f32],
        bias: &[f32],
        output: &mut [f32],
    ) -> TractResult<()> {
        let (m, k, n) = (self.m, self.k, self.n);
        let per_image_in = match &self.im2col {
            Some(g) => g.channels * g.input_hw[0] * g.input_hw[1],
            None => k * n,
        };
        ensure!(
            image.len() == self.images * per_image_in,
            "convolution input has {} values, expected {}",
            image.len(),
            self.images * per_image_in
        );
        ensure!(
            weight.len() == m * k,
            "weight has {} values, expected {}",
            weight.len(),
            m * k
        );
        ensure!(
            bias.len() <= 1 || bias.len() == m,
            "bias has {} values",
            bias.len()
        );
        ensure!(output.len() == self.images * m * n);
        let split = Split::choose(self, parallel::threads_for_product(m * n * k));
        for (img, out) in output.chunks_exact_mut(m * n).enumerate() {
            let input = &image[img * per_image_in..(img + 1) * per_image_in];
            let out = SharedOutput(out.as_mut_ptr());
            // SAFETY (both calls): the sizes are checked above, and the parts write
            // disjoint blocks of `out`.
            match split {
                Some(split) => parallel::run_parts(split.parts, |p| {
                    let (channels, units) = split.part(self, p);
                    unsafe { self.part(input, weight, bias, out.get(), channels, units) }
                })?,
                None => unsafe {
                    self.part(input, weight, bias, out.get(), 0..m, 0..self.units())?
                },
            }
        }
        Ok(())
    }

    /// What a part of the work walks besides output channels: output rows with
    /// im2col, output points without.
    fn units(&self) -> usize {
        match &self.im2col {
            Some(g) => g.output_hw[0],
            None => self.n,
        }
    }

    /// Computes the output channels `channels` of one image at the points that
    /// `units` covers: output rows with im2col, points without.
    ///
    /// # Safety
    /// `input` holds one image and `weight` M·K values; `out` points to the
    /// image's `M × N` output, of which this call writes only the block of
    /// `channels` × `units`; `bias` is none, one, or M values.
    unsafe fn part(
        &self,
        input: &[f32],
        weight: &[f32],
        bias: &[f32],
        out: *mut f32,
        channels: std::ops::Range<usize>,
        units: std::ops::Range<usize>,
    ) -> TractResult<()> {
        let (k, n) = (self.k, self.n);
        let m = channels.len();
        let (lhs_cs, lhs_rs) = match self.weight {
            WeightLayout::OutputMajor => (1, k as isize),
            WeightLayout::InputMajor => (self.m as isize, 1),
        };
        // Where output channel `o` and point `p` go: `o · rs + p · cs`.
        let (dst_rs, dst_cs) = match self.output_channels_last {
            false => (n, 1),
            true => (1, self.m),
        };
        // From here on, `weight` and `out` start at the part's first channel.
        // SAFETY: the caller's contract: `channels` is within M.
        let (weight, out) = unsafe {
            (
                weight.as_ptr().offset(channels.start as isize * lhs_rs),
                out.add(channels.start * dst_rs),
            )
        };
        // The point kernel clamps in registers where the activation is a clamp
        // alone (ReLU, ReLU6); any other activation runs, whole and in order,
        // on each block the kernel has written.
        let points = self.points.as_deref();
        let unclamped = [f32::NEG_INFINITY, f32::INFINITY];
        let (activation, clamp) = match (points, self.pointwise.split_last_clamp()) {
            (Some(_), ([], clamp)) => (PointwiseKernels::of(&[])?, clamp),
            _ => (self.pointwise.kernels()?, unclamped),
        };
        // The output values of the columns `first..first + columns`, as runs:
        // `f(run, values)` for each run of consecutive values.
        let for_runs = |first: usize, columns: usize, f: &mut dyn FnMut(usize, &mut [f32])| {
            // Runs of `len` values, `count` of them `gap` apart, from point `first`.
            let (len, count, gap) = match self.output_channels_last {
                false => (columns, m, n),
                true if m == self.m => (columns * m, 1, 0),
                true => (m, columns, self.m),
            };
            for run in 0..count {
                // SAFETY: the caller's contract: these values are this part's.
                f(run, unsafe {
                    std::slice::from_raw_parts_mut(out.add(first * dst_cs + run * gap), len)
                });
            }
        };
        // Writes the bias into the columns a product is about to add to, on this
        // part's thread and while they are in cache (one pass over the whole
        // output on the calling thread before the parts held EfficientNet-Lite0
        // at 2 threads to 8.8 ms against 7.7).
        let fill_bias = |first: usize, columns: usize| match bias {
            [] => {}
            [b] => for_runs(first, columns, &mut |_, values| values.fill(*b)),
            _ if self.output_channels_last => {
                let bias = &bias[channels.clone()];
                for_runs(first, columns, &mut |_, values| {
                    for point in values.chunks_exact_mut(m) {
                        point.copy_from_slice(bias);
                    }
                })
            }
            _ => for_runs(first, columns, &mut |run, values| {
                values.fill(bias[channels.start + run])
            }),
        };
        // Applies the activation to the columns `first..first + columns` the
        // product has just written, while they are in cache.
        let activate = |first: usize, columns: usize| -> TractResult<()> {
            let mut result = Ok(());
            if !activation.is_identity() {
                for_runs(first, columns, &mut |_, values| {
                    if result.is_ok() {
                        result = activation.apply(values);
                    }
                });
            }
            result
        };
        let accumulate = !bias.is_empty();
        // `out[.., first..first + columns] = bias + weight · rhs`, where rhs has
        // K rows `rhs_rs` apart and `columns` columns `rhs_cs` apart.
        let product =
            |rhs: *const f32, rhs_rs: usize, rhs_cs: usize, columns: usize, first: usize| {
                if let Some(points) = points {
                    debug_assert!(rhs_cs == 1 && self.output_channels_last);
                    // SAFETY: the caller's contract; `rhs` holds K rows of
                    // `columns`, and `out` less the part's first channel is the
                    // output's first value of point 0.
                    return unsafe {
                        point_gemm::product(
                            rhs,
                            rhs_rs,
                            columns,
                            points,
                            channels.clone(),
                            bias,
                            clamp,
                            out.sub(channels.start).add(first * dst_cs),
                            dst_cs,
                        )
                    };
                }
                fill_bias(first, columns);
                // SAFETY: the caller's contract; `rhs` holds K rows of `columns`.
                unsafe {
                    gemm::gemm(
                        m,
                        columns,
                        k,
                        out.add(first * dst_cs),
                        dst_cs as isize,
                        dst_rs as isize,
                        accumulate,
                        weight,
                        lhs_cs,
                        lhs_rs,
                        rhs,
                        rhs_cs as isize,
                        rhs_rs as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            };
        // Where input channel `c` of point `p` is (without im2col): `c · rs + p · cs`.
        let (rhs_rs, rhs_cs) = match self.input_channels_last {
            false => (n, 1),
            true => (1, k),
        };
        match &self.im2col {
            // The product in one call where nothing else runs on its output
            // (`gemm` adds a bias on top of the output as it is).
            None if activation.is_identity() && (points.is_some() || !accumulate) => {
                let rhs = input[units.start * rhs_cs..].as_ptr();
                product(rhs, rhs_rs, rhs_cs, units.len(), units.start);
                Ok(())
            }
            // With a bias or an activation, the points go in blocks whose output
            // stays in cache.
            None => {
                let block = (COLS_BLOCK / m.max(1)).max(256);
                for first in units.clone().step_by(block) {
                    let columns = block.min(units.end - first);
                    product(
                        input[first * rhs_cs..].as_ptr(),
                        rhs_rs,
                        rhs_cs,
                        columns,
                        first,
                    );
                    activate(first, columns)?;
                }
                Ok(())
            }
            Some(geometry) => COLS.with_borrow_mut(|cols| {
                let ow = geometry.output_hw[1];
                let rows = (COLS_BLOCK / (k * ow)).clamp(1, units.len());
                cols.resize(k * rows * ow, 0.0);
                for first in units.clone().step_by(rows) {
                    let block = first..(first + rows).min(units.end);
                    let columns = block.len() * ow;
                    let cols = &mut cols[..k * columns];
                    geometry.fill(input, cols, block, 0.0);
                    product(cols.as_ptr(), columns, 1, columns, first * ow);
                    activate(first * ow, columns)?;
                }
                Ok(())
            }),
        }
    }
}

/// How the products of one image are shared between threads.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Split {
    parts: usize,
    /// Each part computes some output channels at every point, rather than every
    /// channel at some points (or output rows).
    by_channels: bool,
}

impl Split {
    /// Channel blocks start at multiples of this: whole vectors of `gemm`'s
    /// microkernels on AVX2, AVX-512 and NEON.
    const CHANNEL_ALIGN: usize = 16;

    /// Where channel blocks start: [`Split::CHANNEL_ALIGN`], or whole panels
    /// of the point kernel's weights.
    fn align(conv: &GemmConv) -> usize {
        match conv.points {
            Some(_) => point_gemm::PANEL,
            None => Self::CHANNEL_ALIGN,
        }
    }

    /// The split for `threads` threads, or `None` to run on the calling thread.
    ///
    /// Splitting the points gives each thread the whole weight matrix and a narrow
    /// product. Where there are more channels than points (the deep layers of a
    /// mobile network: 1152 channels at 7×7) splitting the channels instead gives
    /// each thread part of the weights at full width: EfficientNet-Lite0's ten such
    /// layers ran 25% faster at 2 threads. im2col convolutions always split output
    /// rows, so that each thread builds only its own part of the matrix.
    fn choose(conv: &GemmConv, threads: usize) -> Option<Split> {
        let by_channels = conv.im2col.is_none() && conv.m > conv.n;
        let parts = if by_channels {
            conv.m.div_ceil(Self::align(conv))
        } else {
            conv.units()
        }
        .min(threads);
        (parts > 1).then_some(Split { parts, by_channels })
    }

    /// Part `p`'s output channels and units (see [`GemmConv::part`]).
    fn part(&self, conv: &GemmConv, p: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let share = |total: usize| total * p / self.parts..total * (p + 1) / self.parts;
        if self.by_channels {
            let align = Self::align(conv);
            let blocks = share(conv.m.div_ceil(align));
            let channels = (blocks.start * align).min(conv.m)..(blocks.end * align).min(conv.m);
            (channels, 0..conv.units())
        } else {
            (0..conv.m, share(conv.units()))
        }
    }
}

impl Op for GemmConv {
    fn name(&self) -> StaticName {
        "OutpostGemmConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = vec![format!(
            "M={} K={} N={} images={} weight {:?}",
            self.m, self.k, self.n, self.images, self.weight
        )];
        if !self.pointwise.is_identity() {
            info.push(format!("then {:?}", self.pointwise.0));
        }
        match (self.input_channels_last, self.output_channels_last) {
            (false, false) => {}
            (input, output) => info.push(format!("channels-last input {input}, output {output}")),
        }
        if self.points.is_some() {
            info.push("point kernel (AVX-512)".into());
        }
        if let Some(g) = &self.im2col {
            info.push(format!(
                "im2col {}ch {:?} kernel {:?} stride {:?} dilation {:?} pad {:?}",
                g.channels, g.input_hw, g.kernel_hw, g.strides, g.dilations, g.pad_before
            ));
        }
        Ok(info)
    }

    op_as_typed_op!();
}

impl EvalOp for GemmConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        ensure!(
            inputs.len() == 2 || inputs.len() == 3,
            "OutpostGemmConv takes 2 or 3 inputs"
        );
        let (image, weight) = (inputs[0].cast_to::<f32>()?, inputs[1].cast_to::<f32>()?);
        let bias = inputs.get(2).map(|b| b.cast_to::<f32>()).transpose()?;
        let (image, weight) = (image.try_as_plain_ram()?, weight.try_as_plain_ram()?);
        let bias = bias.as_ref().map(|b| b.try_as_plain_ram()).transpose()?;
        let bias: &[f32] = match &bias {
            Some(b) => b.as_slice::<f32>()?,
            None => &[],
        };
        // SAFETY: `compute` writes every output value (the bias fill or the
        // product, which does not read the destination without a bias).
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape)? };
        {
            let mut out = output.try_as_plain_ram_mut()?;
            self.compute(
                image.as_slice::<f32>()?,
                weight.as_slice::<f32>()?,
                bias,
                out.as_slice_mut::<f32>()?,
            )?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for GemmConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    as_op!();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::ops::activation::Activation;
    use tract_onnx::tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// tract's float NCHW convolution with a square OIHW kernel and no dilation.
    /// A square NCHW/OIHW convolution with stride 1 and no dilation.
    pub(crate) fn nchw_conv(
        c: usize,
        o: usize,
        kernel: usize,
        padding: PaddingSpec,
        group: usize,
    ) -> Conv {
        Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(kernel, kernel),
                padding,
                dilations: None,
                strides: None,
                input_channels: c,
                output_channels: o,
            },
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        }
    }

    /// Deterministic values in [-1, 1].
    pub(crate) fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + seed * 131) as f32 * 0.37).sin())
            .collect()
    }

    /// Convolution (group 1, NCHW, OIHW) by definition in f64 over an input padded
    /// explicitly with `pads` = (top, left, bottom, right).
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &[f32],
        (n, c, h, w): (usize, usize, usize, usize),
        k: &[f32],
        (o, kh, kw): (usize, usize, usize),
        bias: &[f32],
        (pt, pl, pb, pr): (usize, usize, usize, usize),
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> (Vec<f32>, usize, usize) {
        let (hp, wp) = (h + pt + pb, w + pl + pr);
        let oh = (hp - dilation[0] * (kh - 1) - 1) / stride[0] + 1;
        let ow = (wp - dilation[1] * (kw - 1) - 1) / stride[1] + 1;
        let mut out = vec![0f32; n * o * oh * ow];
        for img in 0..n {
            for oc in 0..o {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = bias[if bias.len() == 1 { 0 } else { oc }] as f64;
                        for ic in 0..c {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let y =
                                        (oy * stride[0] + ky * dilation[0]) as isize - pt as isize;
                                    let xx =
                                        (ox * stride[1] + kx * dilation[1]) as isize - pl as isize;
                                    if y < 0 || xx < 0 || y as usize >= h || xx as usize >= w {
                                        continue;
                                    }
                                    s += k[((oc * c + ic) * kh + ky) * kw + kx] as f64
                                        * x[((img * c + ic) * h + y as usize) * w + xx as usize]
                                            as f64;
                                }
                            }
                        }
                        out[((img * o + oc) * oh + oy) * ow + ox] = s as f32;
                    }
                }
            }
        }
        (out, oh, ow)
    }

    /// (batch (0: CHW), in channels, h, w, out channels, kh, kw, stride, dilation,
    /// padding, scalar bias)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        PaddingSpec,
        bool,
    );

    /// Builds tract's Conv for `case`, declutters it, lets `replace_gemm` swap in
    /// the op, runs it and compares with the definition; returns how many ops
    /// were replaced.
    fn run_case(seed: usize, case: &Case) -> usize {
        let (batch_axis, c, h, w, o, kh, kw, stride, dilation, ref padding, scalar_bias) = *case;
        let batch = batch_axis.max(1);
        let (format, in_shape): (_, TVec<usize>) = if batch_axis == 0 {
            (DataFormat::CHW, tvec!(c, h, w))
        } else {
            (DataFormat::NCHW, tvec!(batch, c, h, w))
        };
        let x = values(batch * c * h * w, seed);
        let k = values(o * c * kh * kw, seed + 1);
        let b = if scalar_bias {
            vec![0.25]
        } else {
            values(o, seed + 2)
        };
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: format,
                kernel_shape: tvec!(kh, kw),
                padding: padding.clone(),
                dilations: Some(dilation[..].into()),
                strides: Some(stride[..].into()),
                input_channels: c,
                output_channels: o,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let computed = conv.pool_spec.computed_padding(&[h, w]);
        let mut model = TypedModel::default();
        let input = model.add_source("x", f32::fact(&in_shape)).unwrap();
        let kernel = model
            .add_const("k", tensor1(&k).into_shape(&[o, c, kh, kw]).unwrap())
            .unwrap();
        let bias = model
            .add_const(
                "b",
                if scalar_bias {
                    tensor0(b[0])
                } else {
                    tensor1(&b)
                },
            )
            .unwrap();
        let out = model
            .wire_node("conv", conv, &[input, kernel, bias])
            .unwrap();
        model.select_output_outlets(&out).unwrap();
        let mut model = model.into_decluttered().unwrap();
        let replaced = super::super::replace_gemm(&mut model, |_| true).unwrap();
        assert!(
            model
                .nodes
                .iter()
                .all(|n| n.op_as::<EinSum>().is_none() && n.op_as::<Conv>().is_none()),
            "case {seed}: a product was left to tract: {model}"
        );
        // The same model with its im2col products on the direct kernels, each
        // kernel this CPU has.
        let mut models = vec![model.clone()];
        for kernel in crate::backend::routines::direct_conv::Kernel::all_native() {
            let mut direct = model.clone();
            let count = super::super::direct_conv::rewrite_with(&mut direct, kernel).unwrap();
            let im2col = model
                .nodes
                .iter()
                .filter(|n| n.op_as::<GemmConv>().is_some_and(|op| op.im2col.is_some()))
                .count();
            assert!(count >= im2col, "case {seed} {kernel:?}: {direct}");
            if count > 0 {
                models.push(direct);
            }
        }
        let pads = (
            computed[0].pad_before,
            computed[1].pad_before,
            computed[0].pad_after,
            computed[1].pad_after,
        );
        for model in models {
            check_case(seed, model, &x, &in_shape, case, (&k, &b), pads);
        }
        replaced
    }

    /// Runs `model` on `x` and compares with the definition.
    fn check_case(
        seed: usize,
        model: TypedModel,
        x: &[f32],
        in_shape: &[usize],
        case: &Case,
        (k, b): (&[f32], &[f32]),
        pads: (usize, usize, usize, usize),
    ) {
        let (batch_axis, c, h, w, o, kh, kw, stride, dilation, _, _) = *case;
        let batch = batch_axis.max(1);
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let xt = tensor1(x).into_shape(in_shape).unwrap();
        let got = plan.run(tvec!(xt.into_tvalue())).unwrap().remove(0);
        let (want, oh, ow) = naive_conv(
            x,
            (batch, c, h, w),
            k,
            (o, kh, kw),
            b,
            pads,
            stride,
            dilation,
        );
        let mut want_shape: TVec<usize> = in_shape.into();
        let rank = want_shape.len();
        want_shape[rank - 3] = o;
        want_shape[rank - 2] = oh;
        want_shape[rank - 1] = ow;
        assert_eq!(got.shape(), &*want_shape, "case {seed}");
        let got: Vec<f32> = got
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                "case {seed} at {i}: got {g}, want {w}"
            );
        }
    }

    #[test]
    fn convolutions_match_the_definition_on_odd_shapes_strides_padding_and_dilation() {
        let ex = |t: usize, l: usize, b: usize, r: usize| {
            PaddingSpec::Explicit(tvec!(t, l), tvec!(b, r))
        };
        let cases: Vec<Case> = vec![
            (1, 3, 17, 19, 5, 3, 3, [2, 2], [1, 1], ex(1, 1, 1, 1), false),
            (0, 7, 13, 11, 9, 3, 3, [1, 1], [1, 1], ex(1, 1, 1, 1), false),
            (2, 4, 10, 9, 3, 3, 3, [1, 2], [1, 1], ex(0, 1, 2, 0), true),
            (1, 5, 15, 14, 6, 5, 5, [2, 1], [1, 1], ex(2, 2, 2, 2), false),
            (0, 3, 16, 18, 4, 3, 3, [1, 1], [2, 3], ex(2, 3, 2, 3), false),
            (1, 2, 9, 20, 3, 1, 3, [1, 1], [1, 1], ex(0, 1, 0, 1), false),
            (
                0,
                6,
                8,
                8,
                5,
                3,
                3,
                [3, 3],
                [1, 1],
                PaddingSpec::Valid,
                false,
            ),
            (
                1,
                4,
                7,
                9,
                8,
                3,
                3,
                [2, 2],
                [1, 1],
                PaddingSpec::SameUpper,
                true,
            ),
            (
                0,
                3,
                6,
                7,
                2,
                2,
                2,
                [1, 1],
                [1, 1],
                PaddingSpec::SameLower,
                false,
            ),
            // Padding wider than the kernel reaches, and a kernel as wide as the input.
            (1, 2, 4, 5, 3, 3, 5, [1, 1], [1, 1], ex(3, 0, 3, 0), false),
            // An im2col matrix over COLS_BLOCK: two blocks of 22 and 18 rows.
            (
                1,
                128,
                40,
                40,
                8,
                3,
                3,
                [1, 1],
                [1, 1],
                ex(1, 1, 1, 1),
                false,
            ),
            // 1×1: a channel mix (tract declutters it into an EinSum plus an Add).
            (
                0,
                16,
                7,
                9,
                24,
                1,
                1,
                [1, 1],
                [1, 1],
                PaddingSpec::Valid,
                false,
            ),
            (
                1,
                33,
                5,
                5,
                17,
                1,
                1,
                [1, 1],
                [1, 1],
                PaddingSpec::Valid,
                true,
            ),
            (
                0,
                8,
                1,
                1,
                12,
                1,
                1,
                [1, 1],
                [1, 1],
                PaddingSpec::Valid,
                false,
            ),
            // 1×1 with stride or padding stays a convolution (im2col).
            (
                0,
                5,
                9,
                9,
                7,
                1,
                1,
                [2, 2],
                [1, 1],
                PaddingSpec::Valid,
                false,
            ),
            (1, 5, 6, 6, 3, 1, 1, [1, 1], [1, 1], ex(1, 1, 1, 1), false),
        ];
        for (seed, case) in cases.iter().enumerate() {
            assert!(run_case(seed, case) >= 1, "case {seed} was not replaced");
        }
    }

    #[test]
    fn threads_split_the_work_without_changing_the_result() {
        use super::super::activation::Activation;
        let conv = |c, o, kernel| nchw_conv(c, o, kernel, PaddingSpec::SameUpper, 1);
        // An im2col convolution in several blocks per thread, a direct 1×1 one,
        // one with fewer output rows than threads, and direct ones with more
        // channels than points (split by channels: a whole number of blocks, and
        // a last block shorter than the others).
        for (c, o, hw, kernel) in [
            (96, 16, 45, 3),
            (64, 48, 37, 1),
            (1024, 64, 2, 3),
            (512, 200, 7, 1),
            (1100, 40, 5, 1),
        ] {
            let fact = f32::fact([2, c, hw, hw]);
            let op = GemmConv::for_conv(&conv(c, o, kernel), &fact).unwrap();
            assert_eq!(op.im2col.is_none(), kernel == 1);
            let x = values(2 * c * hw * hw, 5);
            let w = values(o * c * kernel * kernel, 6);
            let b = values(o, 7);
            let mut variants = vec![(op.clone(), w.clone())];
            // With an activation, applied by each part to its own block.
            let mut relu6 = op.clone();
            relu6.pointwise = Pointwise(vec![Activation::clamp(0.0, 6.0)]);
            variants.push((relu6, w.clone()));
            if kernel == 1 {
                // The same weights stored input-major (`[C, O]`).
                let mut transposed = vec![0f32; w.len()];
                for (i, v) in w.iter().enumerate() {
                    transposed[(i % c) * o + i / c] = *v;
                }
                let mut input_major = op.clone();
                input_major.weight = WeightLayout::InputMajor;
                variants.push((input_major, transposed));
            }
            for (op, w) in &variants {
                let mut single = vec![0f32; 2 * o * hw * hw];
                op.compute(&x, w, &b, &mut single).unwrap();
                for threads in [2, 3] {
                    let split = Split::choose(op, threads).unwrap();
                    assert_eq!(split.by_channels, kernel == 1 && o > hw * hw);
                    let mut multi = vec![0f32; single.len()];
                    crate::backend::parallel::with_threads(threads, || {
                        op.compute(&x, w, &b, &mut multi)
                    })
                    .unwrap();
                    for (s, m) in single.iter().zip(&multi) {
                        assert!(
                            (s - m).abs() <= 1e-5 * (1.0 + s.abs()),
                            "{c}→{o} at {hw}×{hw}, {threads} threads ({op:?}): {s} vs {m}"
                        );
                    }
                }
            }
        }
    }

    /// Channels-last input and output give the NCHW results transposed, on one
    /// thread and split between threads (by points and by channels), with and
    /// without an activation.
    #[test]
    fn channels_last_layouts_give_the_transposed_results() {
        use super::super::activation::Activation;
        let conv = |c, o, kernel| nchw_conv(c, o, kernel, PaddingSpec::SameUpper, 1);
        // (in channels, out channels, size, kernel): im2col, direct, and direct
        // with more channels than points (split by channels).
        for (c, o, hw, kernel) in [(24, 40, 29, 3), (64, 48, 37, 1), (512, 200, 7, 1)] {
            let fact = f32::fact([1, c, hw, hw]);
            let mut op = GemmConv::for_conv(&conv(c, o, kernel), &fact).unwrap();
            let n = hw * hw;
            let x = values(c * n, 5);
            let w = values(o * c * kernel * kernel, 6);
            let b = values(o, 7);
            for pointwise in [vec![], vec![Activation::clamp(0.0, 0.5)]] {
                op.pointwise = Pointwise(pointwise);
                let mut want = vec![0f32; o * n];
                op.compute(&x, &w, &b, &mut want).unwrap();
                let transpose = |v: &[f32], rows: usize, cols: usize| -> Vec<f32> {
                    (0..v.len())
                        .map(|i| v[(i % rows) * cols + i / rows])
                        .collect()
                };
                let x_last = transpose(&x, c, n);
                let want_last = transpose(&want, o, n);
                let inputs_last = if kernel == 1 {
                    vec![false, true]
                } else {
                    vec![false]
                };
                for input_last in inputs_last {
                    for output_last in [false, true] {
                        let op = GemmConv {
                            input_channels_last: input_last,
                            output_channels_last: output_last,
                            ..op.clone()
                        };
                        let x = if input_last { &x_last } else { &x };
                        let want = if output_last { &want_last } else { &want };
                        for threads in [1, 2, 3] {
                            let mut got = vec![f32::NAN; want.len()];
                            crate::backend::parallel::with_threads(threads, || {
                                op.compute(x, &w, &b, &mut got)
                            })
                            .unwrap();
                            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                                assert!(
                                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                    "{c}→{o} {hw}×{hw} in {input_last} out {output_last} \
                                     {threads} threads at {i}: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn channel_splits_cover_every_channel_once_in_aligned_blocks() {
        let fact = f32::fact([1, 64, 3, 3]);
        for o in [17, 40, 48, 200] {
            let op =
                GemmConv::for_conv(&nchw_conv(64, o, 1, PaddingSpec::Valid, 1), &fact).unwrap();
            for threads in [2, 3, 4, 16] {
                let split = Split::choose(&op, threads).unwrap();
                assert!(split.by_channels);
                assert_eq!(split.parts, threads.min(o.div_ceil(16)));
                let mut next = 0;
                for p in 0..split.parts {
                    let (channels, units) = split.part(&op, p);
                    assert_eq!(units, 0..9);
                    assert_eq!(channels.start, next);
                    assert!(channels.start % 16 == 0 && !channels.is_empty());
                    next = channels.end;
                }
                assert_eq!(next, o);
            }
            assert_eq!(Split::choose(&op, 1), None);
        }
    }

    /// The point kernel runs a clamp alone in registers, and any other
    /// activation whole and in order after its sums (an affine map before a
    /// clamp, here, where clamping first would change every value): its
    /// outputs are `gemm`'s within rounding, for 1 and 2 threads.
    #[test]
    fn point_kernel_runs_activations_in_order() {
        if !point_gemm::available() {
            return;
        }
        let (m, k, n) = (72, 24, 700);
        let bits = |x: f32| x.to_bits();
        let clamp = Activation::Clamp {
            lo: bits(0.0),
            hi: bits(1.0),
        };
        let affine = Activation::Affine {
            scale: bits(3.0),
            shift: bits(-0.5),
        };
        let (weight, input, bias) = (values(m * k, 1), values(k * n, 2), values(m, 3));
        for steps in [vec![], vec![clamp], vec![affine, clamp]] {
            let plain = GemmConv {
                images: 1,
                m,
                k,
                n,
                weight: WeightLayout::OutputMajor,
                im2col: None,
                output_shape: tvec![n, m],
                channel_axis: 1,
                pointwise: Pointwise(steps.clone()),
                input_channels_last: false,
                output_channels_last: true,
                points: None,
            };
            let fast = plain.clone().with_point_weights(&tensor1(&weight));
            assert!(fast.points.is_some());
            for threads in [1, 2] {
                let run = |op: &GemmConv| {
                    let mut out = vec![f32::NAN; m * n];
                    parallel::with_threads(threads, || {
                        op.compute(&input, &weight, &bias, &mut out).unwrap()
                    });
                    out
                };
                let (want, got) = (run(&plain), run(&fast));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-5, "{steps:?} at {i}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn channel_mix_with_an_input_major_weight() {
        // out[o, p] = Σ_i w[i, o] · x[i, p], as an einsum "ip,io->op".
        let (i, o, p) = (6, 5, 11);
        let x = values(i * p, 3);
        let w = values(i * o, 4);
        let mut model = TypedModel::default();
        let xs = model.add_source("x", f32::fact([i, p])).unwrap();
        let ws = model
            .add_const("w", tensor1(&w).into_shape(&[i, o]).unwrap())
            .unwrap();
        let axes = AxesMapping::from_strs(&["ip", "io"], &["op"]).unwrap();
        let op = EinSum {
            axes,
            operating_dt: f32::datum_type(),
            q_params: None,
        };
        let out = model.wire_node("mix", op, &[xs, ws]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let (op, weight_slot) = GemmConv::for_einsum(
            model.node(out[0].node).op_as::<EinSum>().unwrap(),
            [&f32::fact([i, p]), &f32::fact([i, o])],
            &f32::fact([o, p]),
        )
        .expect("a channel mix");
        assert_eq!(weight_slot, 1);
        assert_eq!(
            (op.m, op.k, op.n, op.weight),
            (o, i, p, WeightLayout::InputMajor)
        );
        let mut got = vec![0f32; o * p];
        op.compute(&x, &w, &[], &mut got).unwrap();
        for oc in 0..o {
            for pt in 0..p {
                let want: f64 = (0..i)
                    .map(|ic| w[ic * o + oc] as f64 * x[ic * p + pt] as f64)
                    .sum();
                assert!((got[oc * p + pt] as f64 - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn leaves_other_products_to_tract() {
        let facts =
            |a: &[usize], b: &[usize], c: &[usize]| (f32::fact(a), f32::fact(b), f32::fact(c));
        let mix = |x: &str, w: &str, o: &str, (fx, fw, fo): (TypedFact, TypedFact, TypedFact)| {
            let op = EinSum {
                axes: AxesMapping::from_strs(&[x, w], &[o]).unwrap(),
                operating_dt: f32::datum_type(),
                q_params: None,
            };
            GemmConv::for_einsum(&op, [&fx, &fw], &fo).map(|(_, slot)| slot)
        };
        assert_eq!(
            mix("ihw", "oi", "ohw", facts(&[4, 3, 3], &[5, 4], &[5, 3, 3])),
            Some(1)
        );
        // The weight first, spatial axes merged, as in tract's NNEF form.
        assert_eq!(
            mix("mk", "kn", "mn", facts(&[5, 4], &[4, 9], &[5, 9])),
            Some(0)
        );
        assert_eq!(
            mix(
                "amk",
                "akn",
                "amn",
                facts(&[1, 5, 4], &[1, 4, 9], &[1, 5, 9])
            ),
            Some(0)
        );
        // A batch of two images ahead of the channels.
        assert!(mix(
            "nihw",
            "oi",
            "nohw",
            facts(&[2, 4, 3, 3], &[5, 4], &[2, 5, 3, 3])
        )
        .is_none());
        // A batched matrix product (attention).
        assert!(mix(
            "bmk",
            "bkn",
            "bmn",
            facts(&[2, 3, 4], &[2, 4, 5], &[2, 3, 5])
        )
        .is_none());
        // Spatial axes reordered in the output.
        assert!(mix("ihw", "oi", "owh", facts(&[4, 3, 2], &[5, 4], &[5, 2, 3])).is_none());
        // The output channel axis after the spatial ones (channels-last).
        assert!(mix("ihw", "oi", "hwo", facts(&[4, 3, 2], &[5, 4], &[3, 2, 5])).is_none());
        let conv = |group: usize, q: bool| Conv {
            q_params: q.then(i8::datum_type),
            ..nchw_conv(4, 4, 3, PaddingSpec::Valid, group)
        };
        let fact = f32::fact([1, 4, 8, 8]);
        assert!(GemmConv::for_conv(&conv(1, false), &fact).is_some());
        assert!(GemmConv::for_conv(&conv(2, false), &fact).is_none());
        assert!(GemmConv::for_conv(&conv(1, true), &fact).is_none());
        assert!(GemmConv::for_conv(&conv(1, false), &f16::fact([1, 4, 8, 8])).is_none());
    }

    #[test]
    fn rejects_inputs_of_the_wrong_size() {
        let fact = f32::fact([1, 2, 5, 5]);
        let conv = nchw_conv(2, 3, 3, PaddingSpec::Valid, 1);
        let op = GemmConv::for_conv(&conv, &fact).unwrap();
        let mut out = vec![0f32; 3 * 9];
        assert!(op.compute(&[0.0; 49], &[0.0; 54], &[], &mut out).is_err());
        assert!(op.compute(&[0.0; 50], &[0.0; 53], &[], &mut out).is_err());
        assert!(op
            .compute(&[0.0; 50], &[0.0; 54], &[0.0; 2], &mut out)
            .is_err());
        assert!(op.compute(&[0.0; 50], &[0.0; 54], &[1.0], &mut out).is_ok());
    }
}
