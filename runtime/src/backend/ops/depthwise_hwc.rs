//! Depthwise 2-D convolution on a channels-last image (`[H · W, C]` in,
//! `[OH · OW, C]` out), for the channels-last chains of
//! [`super::channels_last`]: the kernel is [`ConvGeometry::hwc_rows`], output rows are
//! spread over Outpost's thread pool, and the fused activations run on each row as
//! it is written.
//!
//! In an INT8 chain the op reads and writes the `u8` levels of the quantised
//! tensors on either side: the input rows a few output rows need are
//! dequantised into a band that stays in cache, and each output row is
//! quantised as it is written.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::activation::{Pointwise, PointwiseKernels};
use super::quant::{U8Quant, Values, ValuesMut};
use super::ConvGeometry;

thread_local! {
    /// The thread's band of dequantised input rows; kept between inferences.
    static BAND: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The thread's `f32` output row before it is quantised.
    static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Input values dequantised at a time (256 KiB of `f32`, within L2 beside the
/// weights and the output rows).
const BAND_VALUES: usize = 1 << 16;

/// A depthwise convolution over a channels-last image; inputs are (image,
/// weights `[KH · KW, C]`, bias `[C]`).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct DepthwiseHwc {
    /// The convolution's geometry (one image, channels-last).
    pub geometry: ConvGeometry,
    /// The activations applied to each output row as it is written.
    pub pointwise: Pointwise,
    /// Where set, the input holds the `u8` levels of this quantisation.
    pub input_levels: Option<U8Quant>,
    /// Where set, the output is the `u8` levels of this quantisation of the
    /// values (after the activations).
    pub output_levels: Option<U8Quant>,
}

impl DepthwiseHwc {
    /// `[OH · OW, C]`.
    pub fn output_shape(&self) -> [usize; 2] {
        let [oh, ow] = self.geometry.output_hw;
        [oh * ow, self.geometry.channels]
    }

    /// Runs the convolution on one image (`H · W · C` values) into `output`
    /// (`OH · OW · C` values): `f32` values or levels, as
    /// [`DepthwiseHwc::input_levels`] and [`DepthwiseHwc::output_levels`] say.
    pub fn compute(
        &self,
        image: Values<'_>,
        weights: &[f32],
        bias: &[f32],
        output: ValuesMut<'_>,
    ) -> TractResult<()> {
        let g = &self.geometry;
        let c = g.channels;
        let [h, w] = g.input_hw;
        let [oh, ow] = g.output_hw;
        let taps = g.kernel_hw[0] * g.kernel_hw[1];
        ensure!(
            matches!(image, Values::U8(_)) == self.input_levels.is_some()
                && matches!(output, ValuesMut::U8(_)) == self.output_levels.is_some(),
            "depthwise convolution called with the wrong tensor types"
        );
        ensure!(
            image.len() == h * w * c,
            "depthwise input has {} values, expected {}",
            image.len(),
            h * w * c
        );
        ensure!(
            weights.len() == taps * c,
            "depthwise weights: {} values",
            weights.len()
        );
        ensure!(bias.len() == c, "depthwise bias: {} values", bias.len());
        ensure!(output.len() == oh * ow * c && ow * c > 0);
        let (row, work) = (ow * c, oh * ow * c * taps);
        match output {
            ValuesMut::F32(output) => {
                crate::backend::parallel::par_chunks_mut(output, row, work, |first, rows| {
                    let pointwise = self.pointwise.kernels()?;
                    let count = rows.len() / row;
                    // Row by row, so that the activations run while the row is in cache.
                    self.bands(image, first..first + count, |g, input, local, oy| {
                        let out = &mut rows[(oy - first) * row..][..row];
                        g.hwc_rows(input, weights, bias, local..local + 1, out);
                        pointwise.apply(out)
                    })
                })
            }
            ValuesMut::U8(output) => {
                let q = self
                    .output_levels
                    .context("depthwise levels without a quantisation")?;
                // A last clamp (ReLU6) runs in the quantiser's pass.
                let (steps, bounds) = self.pointwise.split_last_clamp();
                crate::backend::parallel::par_chunks_mut(output, row, work, |first, rows| {
                    let before = PointwiseKernels::of(steps)?;
                    let count = rows.len() / row;
                    ROW.with_borrow_mut(|values| {
                        values.resize(row, 0.0);
                        self.bands(image, first..first + count, |g, input, local, oy| {
                            g.hwc_rows(input, weights, bias, local..local + 1, values);
                            before.apply(values)?;
                            q.quantize_clamped(
                                values,
                                &mut rows[(oy - first) * row..][..row],
                                bounds,
                            );
                            Ok(())
                        })
                    })
                })
            }
        }
    }

    /// Calls `f(geometry, input, local, oy)` for each output row `oy` in `rows`,
    /// where row `local` of `geometry` on the `f32` image `input` is that row.
    /// For `f32` values that is the image itself. Levels are dequantised in
    /// bands: the input rows a few output rows reach (about [`BAND_VALUES`]),
    /// under a geometry shifted to the band's first row.
    fn bands(
        &self,
        image: Values<'_>,
        rows: std::ops::Range<usize>,
        mut f: impl FnMut(&ConvGeometry, &[f32], usize, usize) -> TractResult<()>,
    ) -> TractResult<()> {
        let g = &self.geometry;
        let levels = match (image, self.input_levels) {
            (Values::F32(input), _) => {
                return rows.into_iter().try_for_each(|oy| f(g, input, oy, oy));
            }
            (Values::U8(levels), Some(q)) => (levels, q),
            (Values::U8(_), None) => bail!("depthwise levels without a quantisation"),
        };
        let (levels, q) = levels;
        let [h, w] = g.input_hw;
        let c = g.channels;
        let (sh, dh, kh, pad) = (
            g.strides[0],
            g.dilations[0],
            g.kernel_hw[0],
            g.pad_before[0],
        );
        let step = (BAND_VALUES / (sh * w * c).max(1)).max(1);
        BAND.with_borrow_mut(|band| {
            for first in rows.clone().step_by(step) {
                let last = (first + step).min(rows.end);
                // Input rows `top..bottom`: from the first tap of the first output
                // row to the last tap of the last, inside the plane.
                let top = (first * sh).saturating_sub(pad).min(h);
                let bottom = ((last - 1) * sh + (kh - 1) * dh + 1)
                    .saturating_sub(pad)
                    .clamp(top, h);
                band.resize((bottom - top) * w * c, 0.0);
                q.dequantize(&levels[top * w * c..bottom * w * c], band);
                // Output row `first + i` reads input row `(first + i) · sh + ky ·
                // dh − pad`, which is band row `i · sh + ky · dh − pad'`.
                let shifted = ConvGeometry {
                    input_hw: [bottom - top, w],
                    output_hw: [last - first, g.output_hw[1]],
                    pad_before: [pad + top - first * sh, g.pad_before[1]],
                    ..g.clone()
                };
                for oy in first..last {
                    f(&shifted, band, oy - first, oy)?;
                }
            }
            Ok(())
        })
    }
}

impl Op for DepthwiseHwc {
    fn name(&self) -> StaticName {
        "OutpostDepthwiseHwc".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geometry;
        Ok(vec![format!(
            "{}ch {:?} kernel {:?} stride {:?} dilation {:?} pad {:?}, channels-last",
            g.channels, g.input_hw, g.kernel_hw, g.strides, g.dilations, g.pad_before
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

impl EvalOp for DepthwiseHwc {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (image, weights, bias) = args_3!(inputs);
        let (weights, bias) = (weights.cast_to::<f32>()?, bias.cast_to::<f32>()?);
        let (image, weights, bias) = (
            image.try_as_plain_ram()?,
            weights.try_as_plain_ram()?,
            bias.try_as_plain_ram()?,
        );
        let image = match self.input_levels {
            Some(_) => Values::U8(image.as_slice::<u8>()?),
            None => Values::F32(image.as_slice::<f32>()?),
        };
        // SAFETY: `compute` writes every output value.
        let mut output = unsafe {
            match self.output_levels {
                Some(_) => Tensor::uninitialized::<u8>(&self.output_shape())?,
                None => Tensor::uninitialized::<f32>(&self.output_shape())?,
            }
        };
        {
            let mut out = output.try_as_plain_ram_mut()?;
            let out = match self.output_levels {
                Some(_) => ValuesMut::U8(out.as_slice_mut::<u8>()?),
                None => ValuesMut::F32(out.as_slice_mut::<f32>()?),
            };
            self.compute(
                image,
                weights.as_slice::<f32>()?,
                bias.as_slice::<f32>()?,
                out,
            )?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DepthwiseHwc {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(match self.output_levels {
            Some(_) => u8::fact(self.output_shape()),
            None => f32::fact(self.output_shape()),
        }))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ops::activation::Activation;
    use crate::backend::ops::gemm_conv::tests::values;

    /// On levels, the op gives bit for bit what the `f32` op gives on the
    /// dequantised image, quantised after the activations, on images large
    /// enough to be dequantised in several bands, at strides 1 and 2, kernels 3
    /// and 5, dilation 2, with and without a trailing ReLU6, 1 and 2 threads.
    #[test]
    fn levels_in_bands_give_the_values_of_the_whole_image() {
        let (input_q, output_q) = (
            U8Quant {
                inv: (1.0f32 / 0.05).to_bits(),
                scale: 0.05f32.to_bits(),
                zero: 100,
            },
            U8Quant {
                inv: (255.0f32 / 6.0).to_bits(),
                scale: (6.0f32 / 255.0).to_bits(),
                zero: 0,
            },
        );
        // (channels, height, width, kernel, stride, dilation)
        for (seed, &(c, h, w, k, s, d)) in [
            (96, 40, 64, 3, 1, 1),
            (40, 50, 70, 3, 2, 1),
            (24, 70, 90, 5, 1, 1),
            (48, 50, 61, 5, 2, 1),
            (64, 41, 60, 3, 1, 2),
        ]
        .iter()
        .enumerate()
        {
            let pad = (k - 1) * d / 2;
            let out_hw = |n: usize| (n + 2 * pad - (k - 1) * d - 1) / s + 1;
            let geometry = ConvGeometry {
                batch: None,
                channels: c,
                input_hw: [h, w],
                output_hw: [out_hw(h), out_hw(w)],
                kernel_hw: [k, k],
                strides: [s, s],
                dilations: [d, d],
                pad_before: [pad, pad],
            };
            assert!(s * w * c * 2 < BAND_VALUES && h * w * c > 2 * BAND_VALUES);
            let levels: Vec<u8> = values(h * w * c, seed)
                .iter()
                .map(|v| ((v + 1.0) * 127.0) as u8)
                .collect();
            let weights = values(k * k * c, seed + 1);
            let bias = values(c, seed + 2);
            let mut image = vec![0f32; levels.len()];
            input_q.dequantize(&levels, &mut image);
            let n = geometry.output_hw[0] * geometry.output_hw[1] * c;
            for pointwise in [vec![], vec![Activation::clamp(0.0, 6.0)]] {
                let op = DepthwiseHwc {
                    geometry: geometry.clone(),
                    pointwise: Pointwise(pointwise),
                    input_levels: None,
                    output_levels: None,
                };
                let mut want = vec![0f32; n];
                op.compute(
                    Values::F32(&image),
                    &weights,
                    &bias,
                    ValuesMut::F32(&mut want),
                )
                .unwrap();
                let mut want_levels = vec![0u8; n];
                output_q.quantize(&want, &mut want_levels);
                let on_levels = DepthwiseHwc {
                    input_levels: Some(input_q),
                    output_levels: Some(output_q),
                    ..op.clone()
                };
                let reads_levels = DepthwiseHwc {
                    input_levels: Some(input_q),
                    ..op.clone()
                };
                for threads in [1, 2] {
                    crate::backend::parallel::with_threads(threads, || {
                        let mut got = vec![0u8; n];
                        on_levels
                            .compute(
                                Values::U8(&levels),
                                &weights,
                                &bias,
                                ValuesMut::U8(&mut got),
                            )
                            .unwrap();
                        assert!(got == want_levels, "case {seed} threads {threads}: levels");
                        let mut got = vec![0f32; n];
                        reads_levels
                            .compute(
                                Values::U8(&levels),
                                &weights,
                                &bias,
                                ValuesMut::F32(&mut got),
                            )
                            .unwrap();
                        assert!(got == want, "case {seed} threads {threads}: values");
                    });
                }
            }
        }
    }
}
