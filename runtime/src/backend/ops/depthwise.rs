//! Depthwise 2-D convolution (NCHW or CHW, one group per channel) over a zero-padded
//! copy of each channel plane.
//!
//! tract's `DepthWiseConv` splits every plane into zones (the centre, each border
//! strip, each corner) and walks each zone row by row per channel. On the small
//! planes of a backbone's deep layers (14×14 or 7×7 with 672–1152 channels) that walk
//! costs more than the multiply-adds: EfficientNet-Lite0's 5×5 layers at 14×14 ran at
//! about 3 GMAC/s. This op copies each plane into a padded scratch plane once and
//! then needs no borders:
//! - short rows at stride 1: the whole plane is one run of `(OH - 1) * PW + OW`
//!   points over the flattened padded plane (the `PW - OW` points between rows are
//!   computed and dropped), so the inner kernel sees long vectors;
//! - otherwise: one run per output row.
//!
//! The runs go to tract-linalg's `depthwise_w` routine for this CPU (Outpost's
//! AVX2+FMA kernel on x86-64, tract's NEON kernel on aarch64) or, where none exists,
//! to a scalar loop. Planes are spread over tract's thread pool. The backend uses the
//! op only where it is measured faster than tract's ([`Depthwise::beats_tract`]).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;

use super::activation::{Pointwise, PointwiseKernels};
use super::epilogue::Channels;
use super::gemm_conv::WeightLayout;
use super::quant::{U8Quant, Values, ValuesMut};
use super::ConvGeometry;

/// The thread's padded plane, flattened run and (for an output of levels) `f32`
/// output plane.
type Scratch = (Vec<f32>, Vec<f32>, Vec<f32>);

thread_local! {
    /// Kept between inferences so that steady-state inference allocates nothing here.
    static SCRATCH: std::cell::RefCell<Scratch> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Output rows at least this long run one by one; shorter ones as one flattened run.
const LONG_ROW: usize = 32;
/// At stride 2, rows up to this long run as one flattened run.
const SHORT_ROW_STRIDE_2: usize = 16;

/// A depthwise convolution with fixed geometry (channels = groups = output
/// channels); inputs are (image, kernel, bias).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Depthwise {
    /// The convolution's geometry.
    pub geometry: ConvGeometry,
    /// The activations applied to each output plane as it is written.
    pub pointwise: Pointwise,
    /// Where set, the input tensor holds the `u8` levels of this quantisation
    /// (written by the INT8 op before), which the padded copy dequantises.
    pub input_levels: Option<U8Quant>,
    /// Where set, the output is the `u8` levels of this quantisation of the
    /// values (after the activations), for the INT8 op after it to read.
    pub output_levels: Option<U8Quant>,
}

impl std::ops::Deref for Depthwise {
    type Target = ConvGeometry;

    fn deref(&self) -> &ConvGeometry {
        &self.geometry
    }
}

impl Depthwise {
    /// The op for `conv` on a concrete f32 NCHW input, if it is a float depthwise
    /// convolution with an OIHW kernel; `None` leaves the node to tract.
    pub fn for_conv(conv: &Conv, input: &TypedFact) -> Option<Depthwise> {
        let g = ConvGeometry::of(conv, input)?;
        if conv.group != g.channels || conv.pool_spec.output_channels != g.channels {
            return None;
        }
        Some(Depthwise {
            geometry: g,
            pointwise: Pointwise::default(),
            input_levels: None,
            output_levels: None,
        })
    }

    /// This op writing the levels of `quant` instead of f32 values (without its
    /// last activation, a quantise-dequantise pair, if `drop_pair`).
    pub fn writing_levels(&self, quant: U8Quant, drop_pair: bool) -> Option<Depthwise> {
        let mut op = self.clone();
        if drop_pair {
            op.pointwise.0.pop();
        }
        op.output_levels.is_none().then(|| {
            op.output_levels = Some(quant);
            op
        })
    }

    /// Whether this op runs this geometry faster than tract's `DepthWiseConv`.
    ///
    /// Measured on EfficientNet-Lite0 (release, 1 thread, Xeon with AVX-512): with
    /// short rows (14×14 and 7×7 planes, 3×3 and 5×5) this op takes a third to a half
    /// of tract's time (1.0 → 0.35 ms for 672 channels at 14×14, 5×5), as the flattened
    /// run replaces tract's per-zone walk. With long rows (56 and 112 wide) or
    /// stride 2, copying the plane into its padded scratch costs more than tract's
    /// zones (0.38 → 0.62 ms at 112×112, 0.76 → 1.30 ms at 112 → 56, stride 2).
    pub fn beats_tract(&self) -> bool {
        self.strides == [1, 1] && self.output_hw[1] < LONG_ROW
    }

    /// The output channels, for [`super::epilogue::Epilogue`].
    pub fn channels(&self) -> Channels {
        Channels {
            m: self.channels,
            k: self.kernel_hw[0] * self.kernel_hw[1],
            axis: usize::from(self.batch.is_some()),
            rank: 3 + usize::from(self.batch.is_some()),
            weight: WeightLayout::OutputMajor,
        }
    }

    /// `[N, C, OH, OW]`, or `[C, OH, OW]` without a batch axis.
    fn output_shape(&self) -> TVec<usize> {
        let [oh, ow] = self.output_hw;
        let mut shape: TVec<usize> = self.batch.into_iter().collect();
        shape.extend([self.channels, oh, ow]);
        shape
    }

    /// Height and width of the padded plane the output reads: exactly what the last
    /// output point's last tap reaches.
    fn padded_hw(&self) -> [usize; 2] {
        let reach = |d: usize| {
            (self.output_hw[d] - 1) * self.strides[d]
                + (self.kernel_hw[d] - 1) * self.dilations[d]
                + 1
        };
        [reach(0), reach(1)]
    }

    /// Runs the convolution; `image` is `[batch, channels, H, W]`, `kernel`
    /// `[channels, 1, KH, KW]`, `bias` one value per channel or a single value.
    /// `image` and `output` are `f32` values or levels, as
    /// [`Depthwise::input_levels`] and [`Depthwise::output_levels`] say.
    pub fn compute(
        &self,
        image: Values<'_>,
        kernel: &[f32],
        bias: &[f32],
        output: ValuesMut<'_>,
    ) -> TractResult<()> {
        ensure!(
            matches!(image, Values::U8(_)) == self.input_levels.is_some()
                && matches!(output, ValuesMut::U8(_)) == self.output_levels.is_some(),
            "depthwise convolution called with the wrong tensor types"
        );
        let [h, w] = self.input_hw;
        let [oh, ow] = self.output_hw;
        let [kh, kw] = self.kernel_hw;
        let [ph, pw] = self.padded_hw();
        let taps = kh * kw;
        let offsets: Vec<isize> = (0..kh)
            .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| (ky * self.dilations[0] * pw + kx * self.dilations[1]) as isize)
            .collect();
        let ker = crate::backend::routines::depthwise_w::for_this_cpu();
        let run = |input: *const f32, out: *mut f32, k: &[f32], b: f32, len: usize, s: isize| {
            // SAFETY: every run below stays inside the padded plane (sized by
            // `padded_hw` to the last tap of the last point) and writes `len` points
            // of a buffer that holds them.
            unsafe { ker(input, out, k, &offsets, b, len, s) }
        };
        // Rows short enough to run as one flattened run over the plane (which
        // computes the `pw - ow` points between rows and drops them): at stride
        // 2 those are more than half, worth it only while a row is at most one
        // vector, which would otherwise run as one chain of dependent FMAs.
        let flat_stride = match self.strides {
            [1, 1] if ow < LONG_ROW => Some(1),
            [2, 2] if ow <= SHORT_ROW_STRIDE_2 => Some(2),
            _ => None,
        };
        let plane_out = oh * ow;
        let total = output.len();
        let [top, left] = self.pad_before;
        let per_plane =
            |plane_ix: usize, out: &mut [f32], padded: &mut Vec<f32>, flat: &mut Vec<f32>| {
                let c = plane_ix % self.channels;
                let at = plane_ix * h * w..(plane_ix + 1) * h * w;
                // One write per padded value: zeros where the input does not reach (a
                // level's zero point is the value 0).
                padded.resize(ph * pw, 0.0);
                let (l, cols) = (left.min(pw), w.min(pw.saturating_sub(left)));
                for (py, row) in padded.chunks_exact_mut(pw).enumerate() {
                    match py.checked_sub(top).filter(|&y| y < h) {
                        Some(y) => {
                            row[..l].fill(0.0);
                            let dst = &mut row[l..l + cols];
                            match (image, self.input_levels) {
                                (Values::U8(levels), Some(q)) => {
                                    q.dequantize(&levels[at.clone()][y * w..][..cols], dst)
                                }
                                (Values::F32(values), _) => {
                                    dst.copy_from_slice(&values[at.clone()][y * w..][..cols])
                                }
                                // Excluded by the check on entry.
                                (Values::U8(_), None) => {}
                            }
                            row[l + cols..].fill(0.0);
                        }
                        None => row.fill(0.0),
                    }
                }
                let k = &kernel[c * taps..(c + 1) * taps];
                let b = if bias.len() == 1 { bias[0] } else { bias[c] };
                let [sh, sw] = self.strides;
                if let Some(stride) = flat_stride {
                    // Short rows: one run over the flattened plane, then keep the
                    // first `ow` points of every padded row. At stride s, point
                    // `y · pw + x` reads from `s · (y · pw + x)`, row `s · y`'s
                    // column `s · x`, as the output point (y, x) should.
                    let len = (oh - 1) * pw + ow;
                    flat.resize(len, 0.0);
                    run(padded.as_ptr(), flat.as_mut_ptr(), k, b, len, stride);
                    for (y, row) in out.chunks_exact_mut(ow).enumerate() {
                        row.copy_from_slice(&flat[y * pw..y * pw + ow]);
                    }
                } else {
                    for (y, row) in out.chunks_exact_mut(ow).enumerate() {
                        // SAFETY: row `y * sh` of the padded plane exists (padded_hw).
                        let start = unsafe { padded.as_ptr().add(y * sh * pw) };
                        run(start, row.as_mut_ptr(), k, b, ow, sw as isize);
                    }
                }
            };
        match output {
            ValuesMut::F32(output) => crate::backend::parallel::par_chunks_mut(
                output,
                plane_out,
                total,
                |first, chunk| {
                    let pointwise = self.pointwise.kernels()?;
                    SCRATCH.with_borrow_mut(|(padded, flat, _)| {
                        for (ix, out) in chunk.chunks_exact_mut(plane_out).enumerate() {
                            per_plane(first + ix, out, padded, flat);
                            pointwise.apply(out)?;
                        }
                        Ok(())
                    })
                },
            ),
            ValuesMut::U8(output) => {
                let q = self
                    .output_levels
                    .context("depthwise levels without a quantisation")?;
                // A last clamp (ReLU6) runs in the quantiser's pass.
                let (steps, bounds) = self.pointwise.split_last_clamp();
                crate::backend::parallel::par_chunks_mut(
                    output,
                    plane_out,
                    total,
                    |first, chunk| {
                        let before = PointwiseKernels::of(steps)?;
                        SCRATCH.with_borrow_mut(|(padded, flat, plane)| {
                            plane.resize(plane_out, 0.0);
                            for (ix, out) in chunk.chunks_exact_mut(plane_out).enumerate() {
                                per_plane(first + ix, plane, padded, flat);
                                before.apply(plane)?;
                                q.quantize_clamped(plane, out, bounds);
                            }
                            Ok(())
                        })
                    },
                )
            }
        }
    }
}

impl Op for Depthwise {
    fn name(&self) -> StaticName {
        "OutpostDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}ch {:?} kernel {:?} stride {:?} dilation {:?} pad {:?}",
            self.channels,
            self.input_hw,
            self.kernel_hw,
            self.strides,
            self.dilations,
            self.pad_before
        )]
        .into_iter()
        .chain((!self.pointwise.is_identity()).then(|| format!("then {:?}", self.pointwise.0)))
        .chain(self.input_levels.map(|_| "reads u8 levels".to_string()))
        .chain(
            self.output_levels
                .map(|q| format!("writes u8 levels of {q:?}")),
        )
        .collect())
    }

    op_as_typed_op!();
}

impl EvalOp for Depthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (image, kernel, bias) = args_3!(inputs);
        let shape = self.output_shape();
        let expected =
            self.batch.unwrap_or(1) * self.channels * self.input_hw[0] * self.input_hw[1];
        let (kernel, bias) = (kernel.cast_to::<f32>()?, bias.cast_to::<f32>()?);
        let (image, kernel, bias) = (
            image.try_as_plain_ram()?,
            kernel.try_as_plain_ram()?,
            bias.try_as_plain_ram()?,
        );
        let image = match self.input_levels {
            Some(_) => Values::U8(image.as_slice::<u8>()?),
            None => Values::F32(image.as_slice::<f32>()?),
        };
        let (kernel, bias) = (kernel.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        ensure!(
            image.len() == expected,
            "depthwise input has {} values, expected {expected}",
            image.len()
        );
        ensure!(kernel.len() == self.channels * self.kernel_hw[0] * self.kernel_hw[1]);
        ensure!(bias.len() == 1 || bias.len() == self.channels);
        // SAFETY: `compute` writes every output value.
        let mut output = unsafe {
            match self.output_levels {
                Some(_) => Tensor::uninitialized::<u8>(&shape)?,
                None => Tensor::uninitialized::<f32>(&shape)?,
            }
        };
        {
            let mut out = output.try_as_plain_ram_mut()?;
            let out = match self.output_levels {
                Some(_) => ValuesMut::U8(out.as_slice_mut::<u8>()?),
                None => ValuesMut::F32(out.as_slice_mut::<f32>()?),
            };
            self.compute(image, kernel, bias, out)?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Depthwise {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(match self.output_levels {
            Some(_) => u8::fact(self.output_shape()),
            None => f32::fact(self.output_shape()),
        }))
    }

    as_op!();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tract_onnx::tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// tract's Conv for a square depthwise convolution (OIHW kernel, float).
    pub(crate) fn depthwise_conv(
        format: DataFormat,
        channels: usize,
        kernel: usize,
        padding: PaddingSpec,
        stride: usize,
        dilation: usize,
    ) -> Conv {
        Conv {
            pool_spec: PoolSpec {
                data_format: format,
                kernel_shape: tvec!(kernel, kernel),
                padding,
                dilations: Some(tvec!(dilation, dilation)),
                strides: Some(tvec!(stride, stride)),
                input_channels: channels,
                output_channels: channels,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: channels,
            q_params: None,
        }
    }

    /// Depthwise convolution by definition, NCHW, in f64.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn naive_depthwise(
        x: &[f32],
        (c, h, w): (usize, usize, usize),
        k: &[f32],
        (kh, kw): (usize, usize),
        bias: &[f32],
        stride: usize,
        pad: usize,
        dilation: usize,
    ) -> (Vec<f32>, usize, usize) {
        let oh = (h + 2 * pad - dilation * (kh - 1) - 1) / stride + 1;
        let ow = (w + 2 * pad - dilation * (kw - 1) - 1) / stride + 1;
        let mut out = vec![0f32; c * oh * ow];
        for ch in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias[ch] as f64;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let y = (oy * stride + ky * dilation) as isize - pad as isize;
                            let xx = (ox * stride + kx * dilation) as isize - pad as isize;
                            if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                                s += k[(ch * kh + ky) * kw + kx] as f64
                                    * x[(ch * h + y as usize) * w + xx as usize] as f64;
                            }
                        }
                    }
                    out[(ch * oh + oy) * ow + ox] = s as f32;
                }
            }
        }
        (out, oh, ow)
    }

    /// (channels, h, w, kernel, stride, padding, dilation, batch); batch 0 means a
    /// CHW tensor with no batch axis, as tract's declutter leaves a batch of 1.
    type Case = (usize, usize, usize, usize, usize, PaddingSpec, usize, usize);

    fn run_case(seed: usize, case: &Case, scalar_bias: bool) {
        let (c, h, w, ks, stride, ref padding, dil, batch_axis) = *case;
        let batch = batch_axis.max(1);
        let (format, in_shape): (_, TVec<usize>) = if batch_axis == 0 {
            (DataFormat::CHW, tvec!(c, h, w))
        } else {
            (DataFormat::NCHW, tvec!(batch, c, h, w))
        };
        let gen = |n: usize, m: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7 + seed * 13) as f32 * m).sin())
                .collect()
        };
        let x = gen(batch * c * h * w, 0.37);
        let k = gen(c * ks * ks, 1.3);
        let b = if scalar_bias { vec![0.3] } else { gen(c, 0.9) };

        let mut model = TypedModel::default();
        let input = model.add_source("x", f32::fact(&in_shape)).unwrap();
        let kernel = model
            .add_const("k", tensor1(&k).into_shape(&[c, 1, ks, ks]).unwrap())
            .unwrap();
        let bias_tensor = if scalar_bias {
            tensor0(b[0])
        } else {
            tensor1(&b)
        };
        let bias = model.add_const("b", bias_tensor).unwrap();
        let conv = depthwise_conv(format, c, ks, padding.clone(), stride, dil);
        // The geometry the definition needs, from tract's own padding rules.
        let computed = conv.pool_spec.computed_padding(&[h, w]);
        let out = model
            .wire_node("conv", conv, &[input, kernel, bias])
            .unwrap();
        model.select_output_outlets(&out).unwrap();
        let mut model = model.into_decluttered().unwrap();
        assert_eq!(
            super::super::replace_depthwise(&mut model, |_| true).unwrap(),
            1,
            "case {seed}"
        );
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let xt = tensor1(&x).into_shape(&in_shape).unwrap();
        let got = plan.run(tvec!(xt.into_tvalue())).unwrap().remove(0);
        let (oh, ow) = (computed[0].convoluted, computed[1].convoluted);
        let mut out_shape = in_shape.clone();
        let rank = out_shape.len();
        out_shape[rank - 2] = oh;
        out_shape[rank - 1] = ow;
        assert_eq!(got.shape(), &*out_shape, "case {seed}");
        let got = got.to_plain_array_view::<f32>().unwrap();
        let got: Vec<f32> = got.iter().copied().collect();
        let plane = c * oh * ow;
        for n in 0..batch {
            // The definition with the same padding: pad the input explicitly
            // (before, after per axis), then convolve with no padding.
            let (pt, pl) = (computed[0].pad_before, computed[1].pad_before);
            let (pb, pr) = (computed[0].pad_after, computed[1].pad_after);
            let (hp, wp) = (h + pt + pb, w + pl + pr);
            let mut padded = vec![0f32; c * hp * wp];
            for ch in 0..c {
                for y in 0..h {
                    for xx in 0..w {
                        padded[(ch * hp + y + pt) * wp + xx + pl] =
                            x[((n * c + ch) * h + y) * w + xx];
                    }
                }
            }
            let bias_c: Vec<f32> = (0..c)
                .map(|ch| b[if b.len() == 1 { 0 } else { ch }])
                .collect();
            let (want, woh, wow) =
                naive_depthwise(&padded, (c, hp, wp), &k, (ks, ks), &bias_c, stride, 0, dil);
            assert_eq!((woh, wow), (oh, ow), "case {seed}");
            for (i, (g, w)) in got[n * plane..(n + 1) * plane]
                .iter()
                .zip(&want)
                .enumerate()
            {
                assert!(
                    (g - w).abs() < 1e-4,
                    "case {seed} batch {n} at {i}: got {g}, want {w}"
                );
            }
        }
    }

    #[test]
    fn matches_the_definition_on_odd_shapes_strides_padding_and_dilation() {
        let ex = |t: usize, l: usize, b: usize, r: usize| {
            PaddingSpec::Explicit(tvec!(t, l), tvec!(b, r))
        };
        let cases: Vec<Case> = vec![
            (3, 37, 41, 3, 1, ex(1, 1, 1, 1), 1, 1),
            (5, 40, 67, 3, 2, ex(1, 1, 1, 1), 1, 1),
            (4, 29, 33, 5, 2, ex(2, 2, 2, 2), 1, 2),
            (2, 14, 14, 5, 1, ex(2, 2, 2, 2), 1, 1),
            (3, 31, 70, 3, 1, ex(2, 2, 2, 2), 2, 1),
            (2, 35, 39, 3, 3, PaddingSpec::Valid, 1, 1),
            (6, 7, 7, 3, 1, PaddingSpec::SameUpper, 1, 1),
            (3, 9, 12, 3, 2, PaddingSpec::SameUpper, 1, 1),
            (2, 11, 10, 5, 2, ex(0, 1, 2, 0), 1, 1),
            (2, 1, 5, 3, 1, ex(1, 1, 1, 1), 1, 3),
            (2, 5, 6, 3, 1, ex(3, 0, 0, 3), 2, 1),
            (96, 28, 28, 3, 2, ex(0, 0, 1, 1), 1, 0),
            (7, 14, 14, 5, 1, ex(2, 2, 2, 2), 1, 0),
        ];
        for (seed, case) in cases.iter().enumerate() {
            run_case(seed, case, false);
        }
        run_case(99, &cases[1], true);
    }

    #[test]
    fn replaces_only_where_measured_faster() {
        let op = |hw: usize, stride: usize| Depthwise {
            geometry: ConvGeometry {
                batch: None,
                channels: 8,
                input_hw: [hw, hw],
                output_hw: [hw / stride, hw / stride],
                kernel_hw: [3, 3],
                strides: [stride, stride],
                dilations: [1, 1],
                pad_before: [1, 1],
            },
            pointwise: Pointwise::default(),
            input_levels: None,
            output_levels: None,
        };
        assert!(op(14, 1).beats_tract());
        assert!(op(7, 1).beats_tract());
        assert!(op(28, 1).beats_tract());
        assert!(!op(56, 1).beats_tract());
        assert!(!op(112, 1).beats_tract());
        assert!(!op(28, 2).beats_tract());
    }

    #[test]
    fn leaves_grouped_quantised_and_non_nchw_convolutions_to_tract() {
        let spec = |c: usize, o: usize| PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec!(3, 3),
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: None,
            input_channels: c,
            output_channels: o,
        };
        let fact = f32::fact([1, 4, 8, 8]);
        let conv = |pool_spec, group, kernel_fmt| Conv {
            pool_spec,
            kernel_fmt,
            group,
            q_params: None,
        };
        assert!(Depthwise::for_conv(&conv(spec(4, 4), 4, KernelFormat::OIHW), &fact).is_some());
        // Grouped but not depthwise, or channel multiplier 2.
        assert!(Depthwise::for_conv(&conv(spec(4, 4), 2, KernelFormat::OIHW), &fact).is_none());
        assert!(Depthwise::for_conv(&conv(spec(4, 8), 4, KernelFormat::OIHW), &fact).is_none());
        assert!(Depthwise::for_conv(&conv(spec(4, 4), 4, KernelFormat::HWIO), &fact).is_none());
        let mut nhwc = spec(4, 4);
        nhwc.data_format = DataFormat::NHWC;
        assert!(
            Depthwise::for_conv(&conv(nhwc, 4, KernelFormat::OIHW), &f32::fact([1, 8, 8, 4]))
                .is_none()
        );
        let mut q = conv(spec(4, 4), 4, KernelFormat::OIHW);
        q.q_params = Some(i8::datum_type());
        assert!(Depthwise::for_conv(&q, &fact).is_none());
        assert!(Depthwise::for_conv(
            &conv(spec(4, 4), 4, KernelFormat::OIHW),
            &f16::fact([1, 4, 8, 8])
        )
        .is_none());
    }
}
