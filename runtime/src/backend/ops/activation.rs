//! Element-wise activations that Outpost's convolution ops apply to their output
//! while it is still in cache, in place of the tract nodes that followed them.
//!
//! tract runs each activation (ReLU, ReLU6 as a `Max`/`Min` pair, SiLU,
//! hard-swish, sigmoid) as its own pass over the whole tensor, on one thread:
//! 15–30% of EfficientNet-Lite0's and PP-OCR's time on one thread, more at two.
//! Fused, it runs on the block the product has just written, on the thread that
//! wrote it.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::tract_linalg::routines::Func;

use super::quant::{FakeQuant, U8Quant};

/// An activation fused into a convolution's write-back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    /// Nothing.
    #[default]
    Identity,
    /// `min(max(x, lo), hi)`, bounds as `f32` bits (so that the op stays
    /// hashable): ReLU is `[0, +∞]`, ReLU6 `[0, 6]`.
    Clamp {
        /// The lower bound's bits.
        lo: u32,
        /// The upper bound's bits.
        hi: u32,
    },
    /// `1 / (1 + e^−x)`.
    Sigmoid,
    /// `x · sigmoid(x)`.
    Silu,
    /// `scale · x + shift`, as `f32` bits: a constant scale and shift after an
    /// activation (PP-LCNetV3's learnable affine blocks).
    Affine {
        /// The scale's bits.
        scale: u32,
        /// The shift's bits.
        shift: u32,
    },
    /// `x · min(max(alpha · x + beta, lo), hi)`, as `f32` bits: hard-swish
    /// (alpha 1/6, beta 1/2, [0, 1]) and Paddle's hard-sigmoid gate (alpha 0.2).
    Gate {
        /// The slope's bits.
        alpha: u32,
        /// The offset's bits.
        beta: u32,
        /// The gate's lower bound's bits.
        lo: u32,
        /// The gate's upper bound's bits.
        hi: u32,
    },
    /// A QDQ model's quantise-dequantise pair ([`super::quant::FakeQuant`]).
    FakeQuant(U8Quant),
}

impl Activation {
    /// `min(max(x, lo), hi)`.
    pub fn clamp(lo: f32, hi: f32) -> Activation {
        Activation::Clamp {
            lo: lo.to_bits(),
            hi: hi.to_bits(),
        }
    }

    /// `scale · x + shift`.
    pub fn affine(scale: f32, shift: f32) -> Activation {
        Activation::Affine {
            scale: scale.to_bits(),
            shift: shift.to_bits(),
        }
    }

    /// `x · min(max(alpha · x + beta, lo), hi)`.
    pub fn gate(alpha: f32, beta: f32, lo: f32, hi: f32) -> Activation {
        Activation::Gate {
            alpha: alpha.to_bits(),
            beta: beta.to_bits(),
            lo: lo.to_bits(),
            hi: hi.to_bits(),
        }
    }

    /// Hard-swish, `x · min(max(x / 6 + 1/2, 0), 1)`.
    pub fn hard_swish() -> Activation {
        Activation::gate(1.0 / 6.0, 0.5, 0.0, 1.0)
    }

    /// What tract node `node` computes from its input `slot`, when that is an
    /// activation: `Max`, `Min`, `Mul` or `Add` with a scalar constant, sigmoid,
    /// SiLU or hard-swish on f32.
    pub fn of_node(model: &TypedModel, node: &TypedNode, slot: usize) -> Option<Activation> {
        if let Some(bin) = node.op_as::<TypedBinOp>() {
            let [a, b] = &*node.inputs else {
                return None;
            };
            let other = model.outlet_fact(if slot == 0 { *b } else { *a }).ok()?;
            let konst = other.konst.as_ref()?;
            if konst.datum_type() != f32::datum_type() || konst.len() != 1 {
                return None;
            }
            let c = konst.cast_to_scalar::<f32>().ok()?;
            // The result must keep the input's shape: a constant of higher rank
            // would broadcast the output into one.
            let input = model.outlet_fact(node.inputs[slot]).ok()?;
            if konst.rank() > input.rank() || c.is_nan() {
                return None;
            }
            return match bin.0.name() {
                "Max" => Some(Activation::clamp(c, f32::INFINITY)),
                "Min" => Some(Activation::clamp(f32::NEG_INFINITY, c)),
                "Mul" => Some(Activation::affine(c, 0.0)),
                "Add" => Some(Activation::affine(1.0, c)),
                _ => None,
            };
        }
        if let Some(FakeQuant(quant)) = node.op_as::<FakeQuant>() {
            return Some(Activation::FakeQuant(*quant));
        }
        let ew = node.op_as::<ElementWiseOp>()?;
        if ew.1.is_some_and(|dt| dt != f32::datum_type()) {
            return None;
        }
        match ew.0.name().as_ref() {
            "Sigmoid" => Some(Activation::Sigmoid),
            "Silu" => Some(Activation::Silu),
            "HardSwish" => Some(Activation::hard_swish()),
            _ => None,
        }
    }

    /// `next` applied after `self`, when that is one activation: anything after
    /// the identity, an affine map after an affine map, and a clamp after a clamp
    /// whose ranges overlap (then the result is the clamp to their intersection).
    pub fn then(self, next: Activation) -> Option<Activation> {
        match (self, next) {
            (Activation::Identity, next) => Some(next),
            (a, Activation::Identity) => Some(a),
            (Activation::Clamp { lo: a, hi: b }, Activation::Clamp { lo: c, hi: d }) => {
                let (a, b, c, d) = (
                    f32::from_bits(a),
                    f32::from_bits(b),
                    f32::from_bits(c),
                    f32::from_bits(d),
                );
                let (lo, hi) = (a.max(c), b.min(d));
                (lo <= hi).then(|| Activation::clamp(lo, hi))
            }
            (
                Activation::Affine { scale: a, shift: b },
                Activation::Affine { scale: c, shift: d },
            ) => {
                let [a, b, c, d] = [a, b, c, d].map(f32::from_bits);
                Some(Activation::affine(a * c, b * c + d))
            }
            _ => None,
        }
    }

    /// The vectorised kernel for this activation, made once per run of a
    /// convolution and applied to each block it writes.
    pub fn kernel(self) -> TractResult<ActivationKernel> {
        Ok(match self {
            Activation::Identity => ActivationKernel::Identity,
            Activation::Clamp { lo, hi } => {
                ActivationKernel::Clamp(f32::from_bits(lo), f32::from_bits(hi))
            }
            Activation::Sigmoid => ActivationKernel::Tract(Func::Sigmoid.ew_f32()?),
            Activation::Silu => ActivationKernel::Tract(Func::Silu.ew_f32()?),
            Activation::Affine { scale, shift } => {
                ActivationKernel::Affine(f32::from_bits(scale), f32::from_bits(shift))
            }
            Activation::Gate {
                alpha,
                beta,
                lo,
                hi,
            } => ActivationKernel::Gate([alpha, beta, lo, hi].map(f32::from_bits)),
            Activation::FakeQuant(quant) => ActivationKernel::FakeQuant(quant),
        })
    }
}

/// Activations applied one after another: what an op runs on each output
/// value as it writes it. Empty is the identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Pointwise(pub Vec<Activation>);

impl Pointwise {
    /// At most this many steps: longer tails stay in the graph.
    pub const MAX_STEPS: usize = 4;

    /// Whether this does nothing.
    pub fn is_identity(&self) -> bool {
        self.0.is_empty()
    }

    /// The steps before a last clamp, and that clamp's bounds (±∞ without
    /// one): what an op writing levels runs before the quantiser, which takes
    /// the clamp in its own pass.
    pub fn split_last_clamp(&self) -> (&[Activation], [f32; 2]) {
        match self.0.as_slice() {
            [before @ .., Activation::Clamp { lo, hi }] => {
                (before, [f32::from_bits(*lo), f32::from_bits(*hi)])
            }
            steps => (steps, [f32::NEG_INFINITY, f32::INFINITY]),
        }
    }

    /// `next` after these steps, merged into the last one where the two compose
    /// ([`Activation::then`]); `None` when that would take more than
    /// [`Pointwise::MAX_STEPS`].
    pub fn then(&self, next: Activation) -> Option<Pointwise> {
        let mut steps = self.0.clone();
        match steps.last().and_then(|last| last.then(next)) {
            Some(merged) => *steps.last_mut()? = merged,
            None => steps.push(next),
        }
        steps.retain(|a| *a != Activation::Identity);
        (steps.len() <= Self::MAX_STEPS).then_some(Pointwise(steps))
    }

    /// The kernels, made once per run of an op.
    pub fn kernels(&self) -> TractResult<PointwiseKernels> {
        PointwiseKernels::of(&self.0)
    }
}

/// A [`Pointwise`] ready to run.
pub struct PointwiseKernels(Vec<ActivationKernel>);

impl PointwiseKernels {
    /// The kernels of `steps`, in order (no allocation when there are none).
    pub fn of(steps: &[Activation]) -> TractResult<PointwiseKernels> {
        Ok(PointwiseKernels(
            steps
                .iter()
                .map(|a| a.kernel())
                .collect::<TractResult<_>>()?,
        ))
    }

    /// Whether this does nothing.
    pub fn is_identity(&self) -> bool {
        self.0.is_empty()
    }

    /// Applies every step to `xs` in place.
    pub fn apply(&self, xs: &mut [f32]) -> TractResult<()> {
        self.0.iter().try_for_each(|k| k.apply(xs))
    }
}

/// An [`Activation`] ready to run: tract-linalg's vectorised kernels for the
/// transcendental ones, a plain loop (which the compiler vectorises) for clamps.
pub enum ActivationKernel {
    /// Nothing to do.
    Identity,
    /// `min(max(x, lo), hi)`.
    Clamp(f32, f32),
    /// `scale · x + shift`.
    Affine(f32, f32),
    /// `x · min(max(alpha · x + beta, lo), hi)` from `[alpha, beta, lo, hi]`.
    Gate([f32; 4]),
    /// Quantise then dequantise.
    FakeQuant(U8Quant),
    /// One of tract-linalg's element-wise kernels.
    Tract(Box<dyn tract_onnx::tract_core::tract_linalg::element_wise::ElementWise<f32>>),
}

impl ActivationKernel {
    /// Applies the activation to `xs` in place.
    pub fn apply(&self, xs: &mut [f32]) -> TractResult<()> {
        match self {
            ActivationKernel::Identity => {}
            ActivationKernel::Clamp(lo, hi) => clamp(xs, *lo, *hi),
            // Plain multiply-adds, not `mul_add`: without FMA enabled at compile
            // time (the portable x86-64 build), that is a libm call per value.
            ActivationKernel::Affine(scale, shift) => {
                for x in xs {
                    *x = *x * *scale + *shift;
                }
            }
            ActivationKernel::Gate([alpha, beta, lo, hi]) => {
                for x in xs {
                    *x *= (*x * *alpha + *beta).max(*lo).min(*hi);
                }
            }
            ActivationKernel::FakeQuant(quant) => quant.fake(xs),
            ActivationKernel::Tract(kernel) => kernel.run(xs)?,
        }
        Ok(())
    }
}

/// `min(max(x, lo), hi)` in place; NaN goes to `lo`.
// max/min rather than clamp: NaN goes to `lo` (and `_mm256_max_ps` does the same).
#[allow(clippy::manual_clamp)]
fn clamp(xs: &mut [f32], lo: f32, hi: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX is present (checked above).
        return unsafe { clamp_avx(xs, lo, hi) };
    }
    for x in xs {
        *x = x.max(lo).min(hi);
    }
}

/// [`clamp`] with AVX: `f32::max` must return the number when one side is NaN,
/// which the portable build compiles to a compare and blend per value; `vmaxps`
/// returns its second operand (`lo`), the same result in one instruction.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(clippy::manual_clamp)]
unsafe fn clamp_avx(xs: &mut [f32], lo: f32, hi: f32) {
    use std::arch::x86_64::*;
    let (l, h) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    let mut chunks = xs.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // SAFETY: 8 values of `chunk` read and written.
        unsafe {
            let p = chunk.as_mut_ptr();
            _mm256_storeu_ps(p, _mm256_min_ps(_mm256_max_ps(_mm256_loadu_ps(p), l), h));
        }
    }
    for x in chunks.into_remainder() {
        *x = x.max(lo).min(hi);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definitions, one value at a time.
    fn naive(a: Activation, x: f32) -> f32 {
        let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
        match a {
            Activation::Identity => x,
            Activation::Clamp { lo, hi } => x.max(f32::from_bits(lo)).min(f32::from_bits(hi)),
            Activation::Sigmoid => sigmoid(x),
            Activation::Silu => x * sigmoid(x),
            Activation::Affine { scale, shift } => {
                f32::from_bits(scale) * x + f32::from_bits(shift)
            }
            Activation::Gate {
                alpha,
                beta,
                lo,
                hi,
            } => {
                let [a, b, l, h] = [alpha, beta, lo, hi].map(f32::from_bits);
                x * (a * x + b).max(l).min(h)
            }
            Activation::FakeQuant(q) => {
                let (inv, scale) = (f32::from_bits(q.inv), f32::from_bits(q.scale));
                let level = ((x * inv).round_ties_even() + f32::from(q.zero)).clamp(0.0, 255.0);
                (level - f32::from(q.zero)) * scale
            }
        }
    }

    #[test]
    fn kernels_match_the_definitions() {
        let xs: Vec<f32> = (0..1037).map(|i| (i as f32 - 518.0) * 0.023).collect();
        for a in [
            Activation::Identity,
            Activation::clamp(0.0, 6.0),
            Activation::clamp(0.0, f32::INFINITY),
            Activation::Sigmoid,
            Activation::Silu,
            Activation::hard_swish(),
            Activation::gate(0.2, 0.5, 0.0, 1.0),
            Activation::affine(1.7, -0.3),
            Activation::FakeQuant(U8Quant {
                inv: (1.0f32 / 0.05).to_bits(),
                scale: 0.05f32.to_bits(),
                zero: 100,
            }),
        ] {
            let mut ys = xs.clone();
            a.kernel().unwrap().apply(&mut ys).unwrap();
            for (x, y) in xs.iter().zip(&ys) {
                let want = naive(a, *x);
                assert!(
                    (y - want).abs() <= 1e-5 + 1e-5 * want.abs(),
                    "{a:?}({x}) = {y}, expected {want}"
                );
            }
        }
    }

    /// The vector clamp sends NaN to the lower bound, as the scalar one does,
    /// and equals it on every value, in the vector loop and the tail.
    #[test]
    // max/min on purpose: the definition the kernel follows, NaN to `lo`.
    #[allow(clippy::manual_clamp)]
    fn clamp_sends_nan_to_the_lower_bound() {
        let mut xs: Vec<f32> = (0..21).map(|i| i as f32 - 7.5).collect();
        xs[3] = f32::NAN;
        xs[19] = f32::NAN;
        xs[5] = f32::INFINITY;
        let mut ys = xs.clone();
        clamp(&mut ys, 0.0, 6.0);
        for (x, y) in xs.iter().zip(&ys) {
            assert_eq!(*y, x.max(0.0).min(6.0), "{x}");
        }
        assert_eq!((ys[3], ys[19], ys[5]), (0.0, 0.0, 6.0));
    }

    #[test]
    fn clamps_compose_to_their_intersection() {
        let relu = Activation::clamp(0.0, f32::INFINITY);
        let below6 = Activation::clamp(f32::NEG_INFINITY, 6.0);
        assert_eq!(relu.then(below6), Some(Activation::clamp(0.0, 6.0)));
        assert_eq!(below6.then(relu), Some(Activation::clamp(0.0, 6.0)));
        assert_eq!(Activation::Identity.then(relu), Some(relu));
        assert_eq!(relu.then(Activation::Identity), Some(relu));
        // Disjoint ranges give a constant, which is not a clamp of x.
        assert_eq!(Activation::clamp(7.0, 9.0).then(below6), None);
        // Two different functions do not compose.
        assert_eq!(relu.then(Activation::Silu), None);
        assert_eq!(Activation::Silu.then(relu), None);
        assert_eq!(
            Activation::affine(2.0, 1.0).then(Activation::affine(3.0, -1.0)),
            Some(Activation::affine(6.0, 2.0))
        );
        // Composition agrees with applying one after the other.
        let both = Activation::clamp(-1.0, 3.0)
            .then(Activation::clamp(0.5, 8.0))
            .unwrap();
        for i in -40..40 {
            let x = i as f32 * 0.25;
            let step = naive(
                Activation::clamp(0.5, 8.0),
                naive(Activation::clamp(-1.0, 3.0), x),
            );
            assert_eq!(naive(both, x), step);
        }
    }

    #[test]
    fn pointwise_programs_merge_what_composes_and_stay_short() {
        let relu = Activation::clamp(0.0, f32::INFINITY);
        let p = Pointwise::default().then(relu).unwrap();
        let p = p.then(Activation::clamp(f32::NEG_INFINITY, 6.0)).unwrap();
        assert_eq!(p.0, vec![Activation::clamp(0.0, 6.0)]);
        let p = p.then(Activation::affine(2.0, 0.0)).unwrap();
        let p = p.then(Activation::affine(1.0, 0.5)).unwrap();
        assert_eq!(
            p.0,
            vec![Activation::clamp(0.0, 6.0), Activation::affine(2.0, 0.5)]
        );
        let p = p.then(Activation::Silu).unwrap().then(relu).unwrap();
        assert_eq!(p.0.len(), 4);
        assert_eq!(p.then(Activation::Sigmoid), None);
        let mut xs = vec![-1.0f32, 0.5, 7.0];
        p.kernels().unwrap().apply(&mut xs).unwrap();
        let want = |x: f32| {
            let y = x.clamp(0.0, 6.0) * 2.0 + 0.5;
            (y / (1.0 + (-y).exp())).max(0.0)
        };
        for (x, y) in [-1.0f32, 0.5, 7.0].iter().zip(&xs) {
            assert!((want(*x) - y).abs() < 1e-5, "{x}: {y} vs {}", want(*x));
        }
    }
}
