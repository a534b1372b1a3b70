//! Convolutions without im2col ([`crate::backend::routines::direct_conv`]),
//! in place of a [`GemmConv`] that would build an im2col matrix.
//!
//! Per image, bands of output rows are spread over tract's thread pool; each
//! thread pads the input rows of its bands and multiplies them tile by tile.
//! The fused activations run on each tile before it is stored.
//!
//! Measured on YOLOv8's 3×3 shapes (one core, Xeon with AVX-512): 75–90 GMAC/s
//! with the AVX-512 kernel and 42–52 with the AVX2 one. See `docs/performance.md`
//! for what that does to whole models.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::activation::Pointwise;
use super::gemm_conv::{GemmConv, WeightLayout};
use crate::backend::parallel::{self, SharedOutput};
use crate::backend::routines::direct_conv::{Kernel, Plan};

/// Whether the CPU backend runs convolutions larger than 1×1 here: where a vector
/// kernel exists (x86-64 with AVX2 + FMA or AVX-512), unless
/// `OUTPOST_DIRECT_CONV=off` (an escape hatch, and the "before" of benchmarks).
pub fn enabled() -> bool {
    Kernel::native() != Kernel::Portable
        && std::env::var("OUTPOST_DIRECT_CONV").map_or(true, |v| v != "off")
}

/// A group-1 convolution over NCHW or CHW with its weights packed;
/// its one input is the image.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct DirectConv {
    /// Images in the batch.
    pub images: usize,
    /// Output channels, input channels times taps, output points.
    pub mkn: [usize; 3],
    /// Geometry and packed weights.
    pub plan: Arc<Plan>,
    /// The output shape tract expects.
    pub output_shape: TVec<usize>,
    /// The activations applied to each tile as it is written.
    pub pointwise: Pointwise,
}

impl DirectConv {
    /// The op for `conv` (an NCHW product with im2col), its `weight`
    /// (`[M, K]`) and `bias` (none, one, or M), on `kernel`; `None` where it
    /// does not apply.
    ///
    /// Channel mixes (no im2col) stay on `gemm`: on YOLOv8's 1×1 layers the
    /// direct kernel measured the same as `gemm` at 1 and 2 threads.
    pub fn for_gemm(
        conv: &GemmConv,
        weight: &[f32],
        bias: &[f32],
        kernel: Kernel,
    ) -> Option<DirectConv> {
        let geometry = conv.im2col.as_ref()?;
        if conv.input_channels_last
            || conv.output_channels_last
            || conv.weight != WeightLayout::OutputMajor
        {
            return None;
        }
        let plan = Plan::new(geometry, conv.m, weight, bias, kernel)?;
        Some(DirectConv {
            images: conv.images,
            mkn: [conv.m, conv.k, conv.n],
            plan: Arc::new(plan),
            output_shape: conv.output_shape.clone(),
            pointwise: conv.pointwise.clone(),
        })
    }

    /// Runs the convolution on `images` inputs (`C · H · W` values each) into
    /// `output` (`M · OH · OW` values each).
    pub fn compute(&self, image: &[f32], output: &mut [f32]) -> TractResult<()> {
        let [m, k, n] = self.mkn;
        let per_image_in = self.plan.input_len();
        ensure!(
            image.len() == self.images * per_image_in,
            "convolution input has {} values, expected {}",
            image.len(),
            self.images * per_image_in
        );
        ensure!(output.len() == self.images * m * n);
        let threads = parallel::threads_for_product(m * n * k);
        let rows = self.plan.band_rows(threads);
        let bands = self.plan.output_rows().div_ceil(rows);
        let activation = self.pointwise.kernels()?;
        let finish = |tile: &mut [f32]| activation.apply(tile);
        for (input, out) in image
            .chunks_exact(per_image_in)
            .zip(output.chunks_exact_mut(m * n))
        {
            let out = SharedOutput(out.as_mut_ptr());
            let blocks = self.plan.channel_blocks();
            // Bands of rows to each thread; where there are fewer bands than
            // threads (a plane a few rows high), some channels of every row.
            let by_channels = bands < threads && blocks > 1;
            let parts = threads.min(if by_channels { blocks } else { bands });
            parallel::run_parts(parts, |p| {
                let share = |total: usize| total * p / parts..total * (p + 1) / parts;
                let (part_bands, part_blocks) = match by_channels {
                    true => (0..bands, share(blocks)),
                    false => (share(bands), 0..blocks),
                };
                // SAFETY: `out` holds the image's M · OH · OW values, and the
                // parts cover disjoint bands of rows or blocks of channels.
                unsafe {
                    self.plan
                        .run(input, rows, part_bands, part_blocks, out.get(), finish)
                }
            })?;
        }
        Ok(())
    }
}

/// Replaces every [`GemmConv`] that [`DirectConv::for_gemm`] can run and whose
/// weight and bias are constants; returns how many. Runs after
/// [`super::channels_last::rewrite`] (which keeps its own products).
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    rewrite_with(model, Kernel::native())
}

/// [`rewrite`] on a given kernel (tests run every kernel this CPU has).
pub fn rewrite_with(model: &mut TypedModel, kernel: Kernel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes.len() {
        let node = model.node(id);
        let Some(conv) = node.op_as::<GemmConv>() else {
            continue;
        };
        // The constants as f32 tensors, borrowed where they are f32 already
        // (a detector's weights are tens of megabytes).
        let konst = |slot: usize| -> TractResult<Option<Arc<Tensor>>> {
            let Some(input) = node.inputs.get(slot) else {
                return Ok(Some(Arc::new(tensor1::<f32>(&[]))));
            };
            let Some(k) = model.outlet_fact(*input)?.konst.clone() else {
                return Ok(None);
            };
            Ok(Some(match k.datum_type() == f32::datum_type() {
                true => k,
                false => Arc::new(k.cast_to::<f32>()?.into_owned()),
            }))
        };
        let (Some(weight), Some(bias)) = (konst(1)?, konst(2)?) else {
            continue;
        };
        let (weight, bias) = (weight.try_as_plain_ram()?, bias.try_as_plain_ram()?);
        let (weight, bias) = (weight.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        let Some(op) = DirectConv::for_gemm(conv, weight, bias, kernel) else {
            continue;
        };
        let mut patch = TypedModelPatch::default();
        let image = patch.tap_model(model, node.inputs[0])?;
        let out = patch.wire_node(format!("{}.direct", node.name), op, &[image])?;
        patch.shunt_outside(model, OutletId::new(id, 0), out[0])?;
        patch.apply(model)?;
        replaced += 1;
    }
    if replaced > 0 {
        model.compact()?;
    }
    Ok(replaced)
}

impl Op for DirectConv {
    fn name(&self) -> StaticName {
        "OutpostDirectConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let [m, k, n] = self.mkn;
        let mut info = vec![format!(
            "M={m} K={k} N={n} images={} kernel {:?}",
            self.images,
            self.plan.kernel()
        )];
        if !self.pointwise.is_identity() {
            info.push(format!("then {:?}", self.pointwise.0));
        }
        Ok(info)
    }

    op_as_typed_op!();
}

impl EvalOp for DirectConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let image = args_1!(inputs);
        let image = image.cast_to::<f32>()?;
        let image = image.try_as_plain_ram()?;
        // SAFETY: `compute` writes every output value.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape)? };
        {
            let mut out = output.try_as_plain_ram_mut()?;
            self.compute(image.as_slice::<f32>()?, out.as_slice_mut::<f32>()?)?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DirectConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ops::activation::Activation;
    use crate::backend::ops::gemm_conv::tests::{nchw_conv, values};
    use tract_onnx::tract_core::ops::cnn::PaddingSpec;

    /// On 1, 2 and 3 threads (bands of different heights split between
    /// threads, or channels where there are fewer bands than threads) the op gives the same bits, and the im2col product's values,
    /// with and without a fused activation; batches of two images.
    #[test]
    fn threads_and_bands_give_the_same_results() {
        for (c, o, hw, kernel) in [
            (96, 16, 45, 3),
            (8, 12, 150, 3),
            (300, 40, 9, 3),
            (5, 7, 31, 5),
            // Two output rows: 3 threads split the channels instead.
            (512, 200, 2, 3),
        ] {
            let conv = nchw_conv(c, o, kernel, PaddingSpec::SameUpper, 1);
            let fact = f32::fact([2, c, hw, hw]);
            let mut gemm = GemmConv::for_conv(&conv, &fact).unwrap();
            let (x, w, b) = (
                values(2 * c * hw * hw, 1),
                values(o * c * kernel * kernel, 2),
                values(o, 3),
            );
            for pointwise in [
                Pointwise::default(),
                Pointwise(vec![Activation::clamp(0.0, 6.0)]),
            ] {
                gemm.pointwise = pointwise;
                let mut want = vec![0f32; 2 * o * hw * hw];
                gemm.compute(&x, &w, &b, &mut want).unwrap();
                for kernel in Kernel::all_native() {
                    let op = DirectConv::for_gemm(&gemm, &w, &b, kernel).unwrap();
                    let mut single = vec![f32::NAN; want.len()];
                    op.compute(&x, &mut single).unwrap();
                    for (i, (s, g)) in single.iter().zip(&want).enumerate() {
                        assert!(
                            (s - g).abs() <= 1e-4 * (1.0 + g.abs()),
                            "{c}→{o} at {hw}², {kernel:?}, value {i}: {s} vs {g}"
                        );
                    }
                    for threads in [2, 3] {
                        let mut multi = vec![f32::NAN; want.len()];
                        crate::backend::parallel::with_threads(threads, || {
                            op.compute(&x, &mut multi)
                        })
                        .unwrap();
                        assert!(
                            single
                                .iter()
                                .zip(&multi)
                                .all(|(s, m)| s.to_bits() == m.to_bits()),
                            "{c}→{o} at {hw}², {kernel:?}, {threads} threads"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn leaves_channels_last_products_and_channel_mixes_alone() {
        let conv = nchw_conv(4, 6, 3, PaddingSpec::SameUpper, 1);
        let gemm = GemmConv::for_conv(&conv, &f32::fact([1, 4, 9, 9])).unwrap();
        let w = values(6 * 4 * 9, 0);
        assert!(DirectConv::for_gemm(&gemm, &w, &[], Kernel::Portable).is_some());
        for op in [
            GemmConv {
                input_channels_last: true,
                ..gemm.clone()
            },
            GemmConv {
                output_channels_last: true,
                ..gemm.clone()
            },
            GemmConv {
                im2col: None,
                ..gemm.clone()
            },
        ] {
            assert!(DirectConv::for_gemm(&op, &w, &[], Kernel::Portable).is_none());
        }
    }

    #[test]
    fn rejects_inputs_of_the_wrong_size() {
        let conv = nchw_conv(4, 6, 3, PaddingSpec::SameUpper, 1);
        let gemm = GemmConv::for_conv(&conv, &f32::fact([1, 4, 9, 9])).unwrap();
        let op = DirectConv::for_gemm(&gemm, &values(6 * 4 * 9, 0), &[], Kernel::Portable).unwrap();
        let mut out = vec![0f32; 6 * 81];
        assert!(op.compute(&values(4 * 81 - 1, 0), &mut out).is_err());
        assert!(op.compute(&values(4 * 81, 0), &mut out[1..]).is_err());
        assert!(op.compute(&values(4 * 81, 0), &mut out).is_ok());
    }
}
