//! f32 matrix products whose output rows are points: `out[p, o] = bias[o] +
//! Σ_k a[k, p] · w[o, k]`, written channels-last (`[points, channels]`), with
//! the bias and a clamp applied in registers. An AVX-512 kernel.
//!
//! The products at the head of a channels-last chain ([`super::super::ops::
//! channels_last`]) write channels-last: the 1×1 expansions of EfficientNet and
//! MobileNet blocks and the stems before them. On `gemm` those ran at 20–45
//! GMAC/s on one core of an AVX-512 Xeon: with K = 16 to 40 a tile's sums are
//! short, so `gemm`'s per-call packing, its pass over the output to add the
//! bias, and the separate activation pass cost as much as the sums.
//!
//! Here a tile is 12 points × 32 output channels (24 accumulators): each step
//! of K broadcasts the 12 points' values against two vectors of weights. The
//! sums start from the bias and are clamped in registers, so each output value
//! is written once. The weights are packed once, at load, in panels of 32
//! channels, `[panel][K][32]`; the points are read in place from a `[K, N]`
//! matrix (an NCHW image or an im2col block), `K` rows a fixed stride apart.

use std::hash::{Hash, Hasher};
use std::ops::Range;

/// Output channels per panel of packed weights (two AVX-512 vectors).
pub const PANEL: usize = 32;

/// Points per tile: 12 × 2 accumulators and two weight vectors of the 32
/// vector registers.
#[cfg(target_arch = "x86_64")]
const POINTS: usize = 12;

/// Whether this CPU runs [`product`] (AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Weights packed for [`product`]: `[panel][K][PANEL]`, channels padded with
/// zeros to a multiple of [`PANEL`].
#[derive(Debug, Clone)]
pub struct PointWeights {
    /// Output channels (M).
    m: usize,
    /// Input channels times kernel taps (K).
    k: usize,
    packed: Vec<f32>,
}

impl PointWeights {
    /// Packs the `m × k` weights where `w(o, k)` is `weight[o · rs + k · cs]`;
    /// `None` if `weight` is too short for those strides.
    pub fn new(weight: &[f32], m: usize, k: usize, [rs, cs]: [usize; 2]) -> Option<PointWeights> {
        if m == 0 || k == 0 || (m - 1) * rs + (k - 1) * cs >= weight.len() {
            return None;
        }
        let mut packed = vec![0.0; m.div_ceil(PANEL) * k * PANEL];
        for o in 0..m {
            let panel = &mut packed[(o / PANEL) * k * PANEL..];
            for t in 0..k {
                panel[t * PANEL + o % PANEL] = weight[o * rs + t * cs];
            }
        }
        Some(PointWeights { m, k, packed })
    }

    /// Output channels (M).
    pub fn m(&self) -> usize {
        self.m
    }

    /// Input channels times kernel taps (K).
    pub fn k(&self) -> usize {
        self.k
    }
}

impl Hash for PointWeights {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.m, self.k).hash(state);
        super::hash_bits(&self.packed, state);
    }
}

impl PartialEq for PointWeights {
    /// Same shape and bit-identical weights.
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
            || ((self.m, self.k) == (other.m, other.k)
                && super::same_bits(&self.packed, &other.packed))
    }
}

impl Eq for PointWeights {}

/// `out[p · out_stride + o] = clamp(bias[o] + Σ_t a[t · a_stride + p] · w(o, t))`
/// for the points `0..points` and the output channels `channels`; `bias` is
/// none, one value, or M values; `clamp` is `[lo, hi]` (±∞ for none). Where a
/// bias or clamp is present the sums differ from `gemm`'s only by rounding.
///
/// # Safety
/// [`available`] is true; `a` points to K rows of at least `points` values,
/// `a_stride` apart; `out` to `points` rows of at least `channels.end`
/// values, `out_stride` apart, that no other thread writes in `channels`
/// meanwhile.
///
/// # Panics
/// If `channels` does not start at a multiple of [`PANEL`] or ends past M, or
/// `bias` has another length.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product(
    a: *const f32,
    a_stride: usize,
    points: usize,
    weights: &PointWeights,
    channels: Range<usize>,
    bias: &[f32],
    clamp: [f32; 2],
    out: *mut f32,
    out_stride: usize,
) {
    assert!(channels.start.is_multiple_of(PANEL) && channels.end <= weights.m);
    assert!(bias.len() <= 1 || bias.len() == weights.m);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract.
    unsafe {
        avx512::product(
            a, a_stride, points, weights, channels, bias, clamp, out, out_stride,
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, a_stride, points, clamp, out, out_stride);
        unreachable!("point_gemm::product needs AVX-512 (see `available`)");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PointWeights, PANEL, POINTS};

    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Input values of one block of points (64 KiB), read by every panel
    /// while in L1 or L2.
    const BLOCK_VALUES: usize = 16384;

    /// See [`super::product`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn product(
        a: *const f32,
        a_stride: usize,
        points: usize,
        weights: &PointWeights,
        channels: Range<usize>,
        bias: &[f32],
        clamp: [f32; 2],
        out: *mut f32,
        out_stride: usize,
    ) {
        let k = weights.k;
        let clamped = clamp != [f32::NEG_INFINITY, f32::INFINITY];
        let (lo, hi) = (_mm512_set1_ps(clamp[0]), _mm512_set1_ps(clamp[1]));
        // The tiles of the panel from output channel `first`.
        let panel = |first: usize| {
            let width = PANEL.min(channels.end - first);
            let mut panel_bias = [0.0f32; PANEL];
            match bias {
                [] => {}
                [b] => panel_bias[..width].fill(*b),
                _ => panel_bias[..width].copy_from_slice(&bias[first..first + width]),
            }
            Tile {
                k,
                a_stride,
                w: weights.packed[first / PANEL * k * PANEL..].as_ptr(),
                // SAFETY: `panel_bias` holds 32 values.
                bias: unsafe {
                    [
                        _mm512_loadu_ps(panel_bias.as_ptr()),
                        _mm512_loadu_ps(panel_bias.as_ptr().add(16)),
                    ]
                },
                clamp: clamped.then_some([lo, hi]),
                masks: masks(width),
                out_stride,
            }
        };
        // Blocks of points whose values (K of each) stay in L1 while every
        // panel reads them, so that each block's output rows are written
        // whole, in order.
        let block = (BLOCK_VALUES / (k * POINTS)).clamp(1, 16) * POINTS;
        for start in (0..points).step_by(block) {
            let end = points.min(start + block);
            for first in channels.clone().step_by(PANEL) {
                let tile = panel(first);
                for p in (start..end).step_by(POINTS) {
                    // SAFETY: the caller's contract; the tile's points and
                    // channels are within the block it gave.
                    unsafe { tile.run_rows(end - p, a.add(p), out.add(p * out_stride + first)) }
                }
            }
        }
    }

    /// The store masks of a panel whose first `width` of 32 columns exist.
    fn masks(width: usize) -> [u16; 2] {
        [
            (1u32 << width.min(16)).wrapping_sub(1) as u16,
            (1u32 << width.min(32).saturating_sub(16)).wrapping_sub(1) as u16,
        ]
    }

    /// What every tile of one panel shares.
    struct Tile {
        k: usize,
        a_stride: usize,
        /// The panel's packed weights, `[K][32]`.
        w: *const f32,
        /// The sums start from the bias.
        bias: [__m512; 2],
        clamp: Option<[__m512; 2]>,
        /// Which of the panel's 32 channels exist (the last panel may be partial).
        masks: [u16; 2],
        out_stride: usize,
    }

    impl Tile {
        /// The first `rows` (at most 12) points from `a` into as many output
        /// rows from `out`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run_rows(&self, rows: usize, a: *const f32, out: *mut f32) {
            // SAFETY: the caller's contract.
            unsafe {
                match rows {
                    1 => self.run::<1>(a, out),
                    2 => self.run::<2>(a, out),
                    3 => self.run::<3>(a, out),
                    4 => self.run::<4>(a, out),
                    5 => self.run::<5>(a, out),
                    6 => self.run::<6>(a, out),
                    7 => self.run::<7>(a, out),
                    8 => self.run::<8>(a, out),
                    9 => self.run::<9>(a, out),
                    10 => self.run::<10>(a, out),
                    11 => self.run::<11>(a, out),
                    _ => self.run::<POINTS>(a, out),
                }
            }
        }

        /// `R` points from `a` (their value of input `t` at `a[t · a_stride]`)
        /// into `R` output rows from `out`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const R: usize>(&self, a: *const f32, out: *mut f32) {
            let mut acc = [self.bias; R];
            let (mut a, mut w) = (a, self.w);
            for _ in 0..self.k {
                // SAFETY (the loads): the caller's contract for `a`; `w` walks
                // the panel's K rows of 32.
                let (w0, w1) = unsafe { (_mm512_loadu_ps(w), _mm512_loadu_ps(w.add(16))) };
                for (j, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(unsafe { *a.add(j) });
                    acc[0] = _mm512_fmadd_ps(x, w0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(x, w1, acc[1]);
                }
                // SAFETY: one row further in both; the last step's pointers
                // are not read.
                unsafe {
                    a = a.add(self.a_stride);
                    w = w.add(PANEL);
                }
            }
            if let Some([lo, hi]) = self.clamp {
                for acc in acc.iter_mut() {
                    for v in acc.iter_mut() {
                        *v = _mm512_min_ps(_mm512_max_ps(*v, lo), hi);
                    }
                }
            }
            for (j, acc) in acc.iter().enumerate() {
                // SAFETY: the caller's contract: row `j` of the tile, the
                // panel's existing channels.
                unsafe {
                    let row = out.add(j * self.out_stride);
                    _mm512_mask_storeu_ps(row, self.masks[0], acc[0]);
                    _mm512_mask_storeu_ps(row.add(16), self.masks[1], acc[1]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ops::gemm_conv::tests::values;

    #[test]
    fn products_equal_the_naive_sums() {
        if !available() {
            eprintln!("no AVX-512F: point_gemm::product does not run on this CPU");
            return;
        }
        // (m, k, points, channels): partial panels and tiles, one-column K,
        // a part of the channels, an input stride wider than the points.
        let cases = [
            (96, 16, 37, 0..96),
            (32, 27, 12, 0..32),
            (144, 24, 25, 0..144),
            (40, 5, 1, 0..40),
            (200, 33, 30, 64..200),
            (17, 1, 13, 0..17),
            (64, 8, 100, 32..64),
        ];
        for (case, (m, k, points, channels)) in cases.into_iter().enumerate() {
            let a_stride = points + case % 3;
            let a = values(k * a_stride, case);
            for (layout, [rs, cs]) in [("[M, K]", [k, 1]), ("[K, M]", [1, m])] {
                let weight = values(m * k, case + 10);
                let packed = PointWeights::new(&weight, m, k, [rs, cs]).unwrap();
                for bias in [vec![], vec![0.25], values(m, case + 20)] {
                    for clamp in [[f32::NEG_INFINITY, f32::INFINITY], [0.0, 0.5]] {
                        let out_stride = m + 3;
                        let mut out = vec![f32::NAN; points * out_stride];
                        // SAFETY: AVX-512F is there; the sizes are the contract's.
                        unsafe {
                            product(
                                a.as_ptr(),
                                a_stride,
                                points,
                                &packed,
                                channels.clone(),
                                &bias,
                                clamp,
                                out.as_mut_ptr(),
                                out_stride,
                            )
                        };
                        for p in 0..points {
                            for o in 0..out_stride {
                                let got = out[p * out_stride + o];
                                if !channels.contains(&o) {
                                    assert!(got.is_nan(), "{layout} wrote ({p}, {o}) outside");
                                    continue;
                                }
                                let b = bias.get(o % bias.len().max(1)).copied().unwrap_or(0.0);
                                let sum: f32 = (0..k)
                                    .map(|t| a[t * a_stride + p] * weight[o * rs + t * cs])
                                    .sum();
                                let want = (b + sum).clamp(clamp[0], clamp[1]);
                                assert!(
                                    (got - want).abs() <= 1e-5 * (1.0 + sum.abs()) * k as f32,
                                    "case {case} {layout} ({p}, {o}): {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packing_rejects_short_weights() {
        assert!(PointWeights::new(&[1.0; 6], 2, 3, [3, 1]).is_some());
        assert!(PointWeights::new(&[1.0; 5], 2, 3, [3, 1]).is_none());
        assert!(PointWeights::new(&[], 0, 3, [3, 1]).is_none());
        let a = PointWeights::new(&[1.0; 6], 2, 3, [3, 1]).unwrap();
        let b = PointWeights::new(&[1.0, 1.0, 1.0, 1.0, 1.0, 2.0], 2, 3, [3, 1]).unwrap();
        assert!(a == a.clone() && a != b);
    }
}
