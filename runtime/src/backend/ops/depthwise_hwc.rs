//! Depthwise 2-D convolution on a channels-last image (`[H · W, C]` in,
//! `[OH · OW, C]` out), for the channels-last chains of
//! [`super::channels_last`]: the kernel is [`ConvGeometry::hwc_rows`], output rows are
//! spread over tract's thread pool, and the fused activations run on each row as
//! it is written.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::activation::Pointwise;
use super::ConvGeometry;

/// A depthwise convolution over a channels-last image; inputs are (image,
/// weights `[KH · KW, C]`, bias `[C]`).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct DepthwiseHwc {
    /// The convolution's geometry (one image, channels-last).
    pub geometry: ConvGeometry,
    /// The activations applied to each output row as it is written.
    pub pointwise: Pointwise,
}

impl DepthwiseHwc {
    /// `[OH · OW, C]`.
    pub fn output_shape(&self) -> [usize; 2] {
        let [oh, ow] = self.geometry.output_hw;
        [oh * ow, self.geometry.channels]
    }

    /// Runs the convolution on one image (`H · W · C` values) into `output`
    /// (`OH · OW · C` values).
    pub fn compute(
        &self,
        image: &[f32],
        weights: &[f32],
        bias: &[f32],
        output: &mut [f32],
    ) -> TractResult<()> {
        let g = &self.geometry;
        let c = g.channels;
        let [h, w] = g.input_hw;
        let [oh, ow] = g.output_hw;
        let taps = g.kernel_hw[0] * g.kernel_hw[1];
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
        crate::backend::parallel::par_chunks_mut(
            output,
            ow * c,
            oh * ow * c * taps,
            |first, rows| {
                let pointwise = self.pointwise.kernels()?;
                // Row by row, so that the activations run while the row is in cache.
                for (i, row) in rows.chunks_exact_mut(ow * c).enumerate() {
                    g.hwc_rows(image, weights, bias, first + i..first + i + 1, row);
                    pointwise.apply(row)?;
                }
                Ok(())
            },
        )
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
        .collect())
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseHwc {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (image, weights, bias) = args_3!(inputs);
        let (image, weights, bias) = (
            image.cast_to::<f32>()?,
            weights.cast_to::<f32>()?,
            bias.cast_to::<f32>()?,
        );
        let (image, weights, bias) = (
            image.try_as_plain_ram()?,
            weights.try_as_plain_ram()?,
            bias.try_as_plain_ram()?,
        );
        // SAFETY: `compute` writes every output value.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape())? };
        {
            let mut out = output.try_as_plain_ram_mut()?;
            self.compute(
                image.as_slice::<f32>()?,
                weights.as_slice::<f32>()?,
                bias.as_slice::<f32>()?,
                out.as_slice_mut::<f32>()?,
            )?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DepthwiseHwc {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(self.output_shape())))
    }

    as_op!();
}
