//! Channels-last chains: a product → depthwise convolution → 1×1 product
//! (the inverted-residual block of EfficientNet and MobileNetV2, or MobileNetV1's
//! depthwise-separable pairs) runs with its two inner tensors in `[points,
//! channels]` order.
//!
//! In NCHW the depthwise convolution walks one small plane per channel: each is
//! copied into a padded scratch plane, a 7×7 plane is a handful of short rows,
//! and stride 2 needs shuffles. Channels-last vectors run along the channels
//! instead ([`crate::backend::routines::depthwise_hwc`]), with no copy and the same
//! speed at any stride. The products on either side cost the same in both
//! layouts (`gemm` takes any strides), so the layout change is free: the first
//! product writes channels-last, the depthwise convolution reads and writes it,
//! the last product reads it. Everything outside the chain stays NCHW.
//!
//! Measured on EfficientNet-Lite0 (AMD EPYC, AVX2, 1 thread): its 16 depthwise
//! convolutions went from about 6 ms to about 2.5 ms. See `docs/performance.md`.
//!
//! The INT8 form of the chain is the same three steps on `u8` levels: the INT8
//! products ([`QGemmConv`]) pack a channels-last input point by point and
//! transpose each output tile as they store it, and the depthwise convolution
//! dequantises its input and quantises its output rows.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::Conv;

use super::depthwise::Depthwise;
use super::depthwise_hwc::DepthwiseHwc;
use super::gemm_conv::GemmConv;
use super::qgemm_conv::QGemmConv;

/// A product at either end of a chain: f32 or INT8.
#[derive(Debug, Clone)]
enum Product {
    F32(GemmConv),
    Int8(QGemmConv),
}

impl Product {
    /// The product run by `node`, if any.
    fn of(node: &TypedNode) -> Option<Product> {
        node.op_as::<GemmConv>()
            .map(|op| Product::F32(op.clone()))
            .or_else(|| {
                node.op_as::<QGemmConv>()
                    .map(|op| Product::Int8(op.clone()))
            })
    }

    /// Images, output channels (M), input channels times taps (K) and points (N).
    fn shape(&self) -> [usize; 4] {
        match self {
            Product::F32(p) => [p.images, p.m, p.k, p.n],
            Product::Int8(q) => [q.images, q.mnk[0], q.mnk[2], q.mnk[1]],
        }
    }

    /// Whether the product reads its image with im2col.
    fn im2col(&self) -> bool {
        match self {
            Product::F32(p) => p.im2col.is_some(),
            Product::Int8(q) => q.im2col.is_some(),
        }
    }

    /// Whether input and output are channels-last.
    fn channels_last(&self) -> (bool, bool) {
        match self {
            Product::F32(p) => (p.input_channels_last, p.output_channels_last),
            Product::Int8(q) => (q.input_channels_last, q.output_channels_last),
        }
    }

    /// This product writing `[N, M]`; `weight` is its weight input where
    /// constant.
    fn writing_channels_last(self, weight: Option<&Tensor>) -> Product {
        let [_, m, _, n] = self.shape();
        match self {
            Product::F32(p) => {
                let p = GemmConv {
                    output_channels_last: true,
                    output_shape: tvec![n, m],
                    ..p
                };
                Product::F32(match weight {
                    Some(weight) => p.with_point_weights(weight),
                    None => GemmConv { points: None, ..p },
                })
            }
            Product::Int8(q) => Product::Int8(QGemmConv {
                output_channels_last: true,
                output_shape: tvec![n, m],
                weights: std::sync::Arc::new(q.weights.with_point_tiles()),
                ..q
            }),
        }
    }

    /// This product reading `[N, K]`; `weight` is its weight input where
    /// constant.
    fn reading_channels_last(self, weight: Option<&Tensor>) -> Product {
        match self {
            Product::F32(p) => {
                let p = GemmConv {
                    input_channels_last: true,
                    ..p
                };
                Product::F32(match weight {
                    Some(weight) => p.with_point_weights(weight),
                    None => GemmConv { points: None, ..p },
                })
            }
            Product::Int8(q) => Product::Int8(QGemmConv {
                input_channels_last: true,
                ..q
            }),
        }
    }

    fn into_op(self) -> Box<dyn TypedOp> {
        match self {
            Product::F32(p) => Box::new(p),
            Product::Int8(q) => Box::new(q),
        }
    }
}

/// Whether the CPU backend builds channels-last chains, unless
/// `OUTPOST_CHANNELS_LAST=off` (an escape hatch, and the "before" of benchmarks).
pub fn enabled() -> bool {
    std::env::var("OUTPOST_CHANNELS_LAST").map_or(true, |v| v != "off")
}

/// Turns every product → depthwise convolution → 1×1 product chain into its
/// channels-last form; returns how many chains. Runs after
/// [`super::replace_gemm`], on the decluttered model.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let mut chains = 0;
    for id in 0..model.nodes.len() {
        if let Some(chain) = Chain::find(model, id)? {
            chain.apply(model)?;
            chains += 1;
        }
    }
    if chains > 0 {
        model.compact()?;
    }
    Ok(chains)
}

/// One chain, found around its depthwise convolution.
struct Chain {
    /// The product before, and its op writing channels-last.
    producer: (usize, Product),
    /// The depthwise convolution, as its channels-last op, and its weights
    /// (`[KH · KW, C]`) and bias (`[C]`).
    depthwise: (usize, DepthwiseHwc, Tensor, Tensor),
    /// The 1×1 product after, and its op reading channels-last.
    consumer: (usize, Product),
}

impl Chain {
    /// The chain around node `id`, if it is a depthwise convolution (Outpost's,
    /// on values or levels, or tract's) with constant weights and bias, between
    /// a product that writes NCHW and a 1×1 product without im2col that reads
    /// it, joined by nothing but reshapes, each edge used by the chain alone.
    fn find(model: &TypedModel, id: usize) -> TractResult<Option<Chain>> {
        let node = model.node(id);
        let depthwise = if let Some(d) = node.op_as::<Depthwise>() {
            d.clone()
        } else if let Some(conv) = node.op_as::<Conv>() {
            match Depthwise::for_conv(conv, model.outlet_fact(node.inputs[0])?) {
                Some(d) => d,
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        let Depthwise {
            geometry,
            pointwise,
            input_levels,
            output_levels,
        } = depthwise;
        if geometry.batch.unwrap_or(1) != 1 || node.inputs.len() != 3 {
            return Ok(None);
        }
        let c = geometry.channels;
        let [h, w] = geometry.input_hw;
        let [oh, ow] = geometry.output_hw;
        let [kh, kw] = geometry.kernel_hw;
        let konst = |slot: usize| {
            model
                .outlet_fact(node.inputs[slot])
                .map(|f| f.konst.clone())
        };
        let (Some(kernel), Some(bias)) = (konst(1)?, konst(2)?) else {
            return Ok(None);
        };
        let (kernel, bias) = (kernel.cast_to::<f32>()?, bias.cast_to::<f32>()?);
        let (kernel, bias) = (kernel.try_as_plain_ram()?, bias.try_as_plain_ram()?);
        let (kernel, bias) = (kernel.as_slice::<f32>()?, bias.as_slice::<f32>()?);
        if kernel.len() != c * kh * kw || !(bias.len() == 1 || bias.len() == c) {
            return Ok(None);
        }
        // OIHW `[C, 1, KH, KW]` to `[KH · KW, C]`.
        let taps = kh * kw;
        let weights: Vec<f32> = (0..taps * c)
            .map(|i| kernel[(i % c) * taps + i / c])
            .collect();
        let bias: Vec<f32> = (0..c).map(|i| bias[i % bias.len()]).collect();

        let Some(producer) = Self::producer(model, node.inputs[0])? else {
            return Ok(None);
        };
        let Some(consumer) = Self::consumer(model, OutletId::new(id, 0))? else {
            return Ok(None);
        };
        let ([pi, pm, _, pn], [qi, _, qk, qn]) = (producer.1.shape(), consumer.1.shape());
        if pi != 1 || pm != c || pn != h * w || qi != 1 || qk != c || qn != oh * ow {
            return Ok(None);
        }
        // An f32 product's constant weight input (INT8 products hold theirs).
        let weight = |node: usize| -> TractResult<Option<Arc<Tensor>>> {
            Ok(match model.node(node).inputs.get(1) {
                Some(weight) => model.outlet_fact(*weight)?.konst.clone(),
                None => None,
            })
        };
        let producer = (
            producer.0,
            producer
                .1
                .writing_channels_last(weight(producer.0)?.as_deref()),
        );
        let consumer = (
            consumer.0,
            consumer
                .1
                .reading_channels_last(weight(consumer.0)?.as_deref()),
        );
        let op = DepthwiseHwc {
            geometry,
            pointwise,
            input_levels,
            output_levels,
        };
        Ok(Some(Chain {
            producer,
            depthwise: (
                id,
                op,
                tensor1(&weights).into_shape(&[taps, c])?,
                tensor1(&bias),
            ),
            consumer,
        }))
    }

    /// Whether `outlet` is used by one node alone and is not a model output.
    fn private(model: &TypedModel, outlet: OutletId) -> TractResult<bool> {
        Ok(
            model.outlet_successors(outlet).len() == 1
                && !model.output_outlets()?.contains(&outlet),
        )
    }

    /// A reshape (no axis moves): memory order stays as it is.
    fn is_reshape(node: &TypedNode) -> bool {
        matches!(
            node.op_as::<AxisOp>(),
            Some(AxisOp::Add(_) | AxisOp::Rm(_) | AxisOp::Reshape(..))
        )
    }

    /// The NCHW product that computes `outlet` through reshapes alone.
    fn producer(model: &TypedModel, mut outlet: OutletId) -> TractResult<Option<(usize, Product)>> {
        loop {
            if !Self::private(model, outlet)? || outlet.slot != 0 {
                return Ok(None);
            }
            let node = model.node(outlet.node);
            if let Some(op) = Product::of(node) {
                return Ok((!op.channels_last().1).then_some((node.id, op)));
            }
            if !Self::is_reshape(node) {
                return Ok(None);
            }
            outlet = node.inputs[0];
        }
    }

    /// The 1×1 product without im2col that reads `outlet` (as its image)
    /// through reshapes alone.
    fn consumer(model: &TypedModel, mut outlet: OutletId) -> TractResult<Option<(usize, Product)>> {
        loop {
            if !Self::private(model, outlet)? {
                return Ok(None);
            }
            let next = model.outlet_successors(outlet)[0];
            let node = model.node(next.node);
            if let Some(op) = Product::of(node) {
                let reads_nchw = next.slot == 0 && !op.im2col() && !op.channels_last().0;
                return Ok(reads_nchw.then_some((node.id, op)));
            }
            if !Self::is_reshape(node) {
                return Ok(None);
            }
            outlet = OutletId::new(node.id, 0);
        }
    }

    /// Wires the three channels-last ops in place of the chain.
    fn apply(self, model: &mut TypedModel) -> TractResult<()> {
        let mut patch = TypedModelPatch::default();
        let (producer, (dw, op, weights, bias), consumer) =
            (self.producer, self.depthwise, self.consumer);
        let name = |id: usize| format!("{}.hwc", model.node(id).name);
        let inputs = patch.taps(model, &model.node(producer.0).inputs)?;
        let x = patch.wire_node(name(producer.0), producer.1.into_op(), &inputs)?;
        let weights = patch.add_const(format!("{}.weights", name(dw)), weights)?;
        let bias = patch.add_const(format!("{}.bias", name(dw)), bias)?;
        let y = patch.wire_node(name(dw), op, &[x[0], weights, bias])?;
        let mut inputs = patch.taps(model, &model.node(consumer.0).inputs)?;
        inputs[0] = y[0];
        let z = patch.wire_node(name(consumer.0), consumer.1.into_op(), &inputs)?;
        patch.shunt_outside(model, OutletId::new(consumer.0, 0), z[0])?;
        patch.apply(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ops::depthwise::tests::depthwise_conv;
    use crate::backend::ops::gemm_conv::tests::values;
    use crate::backend::ops::qgemm_conv::tests::run;
    use crate::backend::ops::tests::relu6;
    use tract_onnx::tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// A float convolution, `kernel`×`kernel` with "same" padding at `stride`.
    fn conv(
        m: &mut TypedModel,
        name: &str,
        x: OutletId,
        (c, o, kernel, stride): (usize, usize, usize, usize),
        seed: usize,
    ) -> OutletId {
        let w = values(o * c * kernel * kernel, seed)
            .iter()
            .map(|v| v * 0.4)
            .collect::<Vec<_>>();
        let w = m
            .add_const(
                format!("{name}.w"),
                tensor1(&w).into_shape(&[o, c, kernel, kernel]).unwrap(),
            )
            .unwrap();
        let b = m
            .add_const(format!("{name}.b"), tensor1(&values(o, seed + 3)))
            .unwrap();
        let pad = kernel / 2;
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(kernel, kernel),
                padding: PaddingSpec::Explicit(tvec!(pad, pad), tvec!(pad, pad)),
                dilations: None,
                strides: Some(tvec!(stride, stride)),
                input_channels: c,
                output_channels: o,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        m.wire_node(name, conv, &[x, w, b]).unwrap()[0]
    }

    fn depthwise(
        m: &mut TypedModel,
        name: &str,
        x: OutletId,
        (e, kernel, stride): (usize, usize, usize),
        seed: usize,
    ) -> OutletId {
        let k = m
            .add_const(
                format!("{name}.k"),
                tensor1(&values(e * kernel * kernel, seed + 7))
                    .into_shape(&[e, 1, kernel, kernel])
                    .unwrap(),
            )
            .unwrap();
        let b = m
            .add_const(format!("{name}.b"), tensor1(&values(e, seed + 11)))
            .unwrap();
        let pad = kernel / 2;
        let padding = PaddingSpec::Explicit(tvec!(pad, pad), tvec!(pad, pad));
        let dw = depthwise_conv(DataFormat::NCHW, e, kernel, padding, stride, 1);
        m.wire_node(name, dw, &[x, k, b]).unwrap()[0]
    }

    /// `stem` (a 3×3 convolution, im2col) → depthwise → 1×1 → depthwise → 1×1,
    /// with ReLU6 after all but the last: two chains sharing the middle product.
    /// For odd seeds a 1×1 expansion follows the stem and heads the first chain.
    fn model(
        c: usize,
        e: usize,
        hw: usize,
        kernel: usize,
        stride: usize,
        seed: usize,
    ) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, c, hw, hw])).unwrap();
        let y = conv(&mut m, "stem", x, (c, e, 3, 1), seed);
        let mut y = relu6(&mut m, "stem.relu", y);
        if seed % 2 == 1 {
            y = conv(&mut m, "expand", y, (e, e, 1, 1), seed + 3);
            y = relu6(&mut m, "expand.relu", y);
        }
        let y = depthwise(&mut m, "dw1", y, (e, kernel, stride), seed);
        let y = relu6(&mut m, "dw1.relu", y);
        let y = conv(&mut m, "mix", y, (e, e, 1, 1), seed + 1);
        let y = relu6(&mut m, "mix.relu", y);
        let y = depthwise(&mut m, "dw2", y, (e, 3, 1), seed + 2);
        let y = conv(&mut m, "project", y, (e, c, 1, 1), seed + 5);
        m.select_output_outlets(&[y]).unwrap();
        m.into_decluttered().unwrap()
    }

    /// The chains change no output beyond rounding (FMA in another order), on
    /// strides 1 and 2, kernels 3 and 5, channel counts with and without a whole
    /// number of vectors, small and odd planes, with 1 and 2 threads. The
    /// product heading the first chain (the stem, with im2col, or a 1×1
    /// expansion) runs on the point kernel where the CPU has it, split by
    /// points or, with more channels than points, by channels.
    #[test]
    fn chains_match_tract() {
        if !crate::backend::ops::gemm_conv::enabled() {
            return;
        }
        // (channels, expanded, size, kernel, stride): the INT8 tests' first
        // blocks, then whole and partial vectors and panels.
        let more = [
            (3, 37, 30, 3, 1),
            (5, 64, 9, 5, 1),
            (16, 200, 7, 3, 1),
            (8, 72, 4, 3, 1),
        ];
        for (seed, &(c, e, hw, kernel, stride)) in crate::backend::ops::tests::BLOCKS[..3]
            .iter()
            .chain(&more)
            .enumerate()
        {
            let model = model(c, e, hw, kernel, stride, seed);
            let mut rewritten = model.clone();
            super::super::rewrite_decluttered(&mut rewritten).unwrap();
            let ops: Vec<String> = rewritten
                .nodes
                .iter()
                .map(|n| n.op.name().to_string())
                .collect();
            let count = |name: &str| ops.iter().filter(|o| *o == name).count();
            // On aarch64 tract moves depthwise convolutions of 16 channels or more
            // to channels-last itself, and Outpost's ops leave those to tract.
            if !(cfg!(target_arch = "aarch64") && e >= 16) {
                assert_eq!(count("OutpostDepthwiseHwc"), 2, "case {seed}: {rewritten}");
                let last = |input: bool| {
                    rewritten
                        .nodes
                        .iter()
                        .filter_map(|n| n.op_as::<GemmConv>())
                        .filter(|g| {
                            if input {
                                g.input_channels_last
                            } else {
                                g.output_channels_last
                            }
                        })
                        .count()
                };
                assert_eq!(
                    (last(true), last(false)),
                    (2, 2),
                    "case {seed}: {rewritten}"
                );
                let points = rewritten
                    .nodes
                    .iter()
                    .filter_map(|n| n.op_as::<GemmConv>())
                    .filter(|g| g.points.is_some())
                    .count();
                let available = crate::backend::routines::point_gemm::available();
                assert_eq!(points, usize::from(available), "case {seed}: {rewritten}");
            }
            let input = crate::backend::ops::tests::image(c, hw, seed + 1);
            let want = run(&model, &input);
            for threads in [1, 2] {
                let got =
                    crate::backend::parallel::with_threads(threads, || run(&rewritten, &input));
                assert_eq!(got.len(), want.len());
                let scale = want.iter().fold(1f32, |a, w| a.max(w.abs()));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-4 * scale,
                        "case {seed} threads {threads} at {i}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
