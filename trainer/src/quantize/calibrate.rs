//! Activation ranges from calibration data: min/max, percentile, or entropy
//! (KL divergence, TensorRT's method).

use serde::Serialize;

/// How an activation's range is chosen from what calibration saw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "method", rename_all = "lowercase")]
pub enum Method {
    /// The full observed range.
    MinMax,
    /// Clip both tails so that `percentile`% of the values stay inside.
    Percentile {
        /// e.g. 99.99
        percentile: f64,
    },
    /// The clipping threshold whose 8-bit histogram loses the least information.
    Entropy,
}

/// Histogram bins per tensor for the percentile and entropy methods.
pub const BINS: usize = 2048;
/// Quantised levels the entropy search compares against (TensorRT uses 128 for int8).
const TARGET_LEVELS: usize = 128;

/// What calibration learns about one tensor.
#[derive(Debug, Clone)]
pub struct Observer {
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
    /// Histogram of values over `[min, max]` (second pass), `BINS` bins.
    pub hist: Vec<u64>,
    /// Histogram of absolute values over `[0, max(|min|, |max|)]`.
    pub abs_hist: Vec<u64>,
}

impl Default for Observer {
    fn default() -> Self {
        Observer {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: Vec::new(),
            abs_hist: Vec::new(),
        }
    }
}

impl Observer {
    /// First pass: extend the range.
    pub fn observe_range(&mut self, values: &[f32]) {
        for &v in values {
            if v.is_finite() {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
        }
    }

    /// Second pass: fill the histograms over the range from the first pass.
    pub fn observe_histogram(&mut self, values: &[f32]) {
        if self.hist.is_empty() {
            self.hist = vec![0; BINS];
            self.abs_hist = vec![0; BINS];
        }
        let (lo, hi) = (self.min, self.max);
        let width = (hi - lo).max(f32::MIN_POSITIVE);
        let amax = lo.abs().max(hi.abs()).max(f32::MIN_POSITIVE);
        for &v in values {
            if !v.is_finite() {
                continue;
            }
            let b = (((v - lo) / width) * BINS as f32) as usize;
            self.hist[b.min(BINS - 1)] += 1;
            let a = ((v.abs() / amax) * BINS as f32) as usize;
            self.abs_hist[a.min(BINS - 1)] += 1;
        }
    }

    /// The range to quantise to, always containing zero.
    pub fn range(&self, method: Method) -> (f32, f32) {
        if self.min.is_nan() || self.max.is_nan() || self.min > self.max {
            return (0.0, 0.0);
        }
        let (lo, hi) = match method {
            Method::MinMax => (self.min, self.max),
            Method::Percentile { percentile } => self.percentile_range(percentile),
            Method::Entropy => {
                let amax = self.min.abs().max(self.max.abs());
                let t = entropy_threshold(&self.abs_hist) * amax;
                (self.min.max(-t), self.max.min(t))
            }
        };
        (lo.min(0.0), hi.max(0.0))
    }

    fn percentile_range(&self, percentile: f64) -> (f32, f32) {
        let total: u64 = self.hist.iter().sum();
        if total == 0 {
            return (self.min, self.max);
        }
        let tail = ((100.0 - percentile.clamp(50.0, 100.0)) / 100.0 * total as f64) as u64;
        let width = (self.max - self.min) / BINS as f32;
        let edge = |i: usize| self.min + width * i as f32;
        let (mut acc, mut lo_bin) = (0u64, 0usize);
        for (i, &c) in self.hist.iter().enumerate() {
            if acc + c > tail {
                lo_bin = i;
                break;
            }
            acc += c;
        }
        let (mut acc, mut hi_bin) = (0u64, BINS);
        for (i, &c) in self.hist.iter().enumerate().rev() {
            if acc + c > tail {
                hi_bin = i + 1;
                break;
            }
            acc += c;
        }
        (edge(lo_bin), edge(hi_bin))
    }
}

/// TensorRT's entropy calibration on a histogram of |x|: the fraction (0..1] of the
/// histogram's range whose clipped, 128-level quantisation diverges least (KL) from
/// the original distribution. Follows MXNet's implementation of the method, with
/// one change: the first bin (exact zeros, e.g. after ReLU) is left out. Zero is
/// always represented exactly, and a zero spike merged into the first level would
/// otherwise make any wide range look costly.
pub fn entropy_threshold(hist: &[u64]) -> f32 {
    let n = hist.len();
    let mut hist: Vec<f64> = hist.iter().map(|&c| c as f64).collect();
    if let Some(first) = hist.first_mut() {
        *first = 0.0;
    }
    if n < TARGET_LEVELS || hist.iter().all(|&c| c == 0.0) {
        return 1.0;
    }
    let mut best = (f64::INFINITY, n);
    for i in TARGET_LEVELS..=n {
        // Reference distribution: the first i bins, the outliers folded into the last.
        let mut p = hist[..i].to_vec();
        p[i - 1] += hist[i..].iter().sum::<f64>();
        // Candidate: the first i bins (without the outliers) merged into 128 levels,
        // then spread back over the bins where the reference is non-zero.
        let mut q = vec![0.0f64; i];
        let per = i / TARGET_LEVELS;
        for level in 0..TARGET_LEVELS {
            let start = level * per;
            let end = if level == TARGET_LEVELS - 1 {
                i
            } else {
                start + per
            };
            let sum: f64 = hist[start..end].iter().sum();
            let nonzero = p[start..end].iter().filter(|&&c| c > 0.0).count();
            if nonzero > 0 {
                for j in start..end {
                    if p[j] > 0.0 {
                        q[j] = sum / nonzero as f64;
                    }
                }
            }
        }
        let kl = kl_divergence(&smooth(&p), &smooth(&q));
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f32 / n as f32
}

/// Moves a little mass onto empty bins so the divergence stays finite (MXNet's
/// `_smooth_distribution`, eps 1e-4).
fn smooth(p: &[f64]) -> Vec<f64> {
    const EPS: f64 = 1e-4;
    let total: f64 = p.iter().sum();
    if total == 0.0 {
        return p.to_vec();
    }
    let p: Vec<f64> = p.iter().map(|v| v / total).collect();
    let zeros = p.iter().filter(|&&v| v == 0.0).count();
    let nonzeros = p.len() - zeros;
    if zeros == 0 || nonzeros == 0 {
        return p;
    }
    let take = EPS * zeros as f64 / nonzeros as f64;
    p.iter()
        .map(|&v| if v == 0.0 { EPS } else { (v - take).max(EPS) })
        .collect()
}

fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if ps == 0.0 || qs == 0.0 {
        return f64::INFINITY;
    }
    p.iter()
        .zip(q)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| {
            let (a, b) = (a / ps, b / qs);
            a * (a / b).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(values: &[f32]) -> Observer {
        let mut o = Observer::default();
        o.observe_range(values);
        o.observe_histogram(values);
        o
    }

    #[test]
    fn minmax_covers_everything_and_zero() {
        let o = observed(&[1.0, 2.0, 3.0]);
        assert_eq!(o.range(Method::MinMax), (0.0, 3.0));
        let o = observed(&[-4.0, 2.0]);
        assert_eq!(o.range(Method::MinMax), (-4.0, 2.0));
    }

    #[test]
    fn percentile_clips_a_rare_outlier() {
        let mut v: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        v.push(1000.0);
        let o = observed(&v);
        let (lo, hi) = o.range(Method::Percentile { percentile: 99.99 });
        assert_eq!(lo, 0.0);
        assert!(hi < 2.0, "outlier kept: {hi}");
        assert!(hi >= 0.49, "bulk clipped: {hi}");
    }

    #[test]
    fn entropy_ignores_a_spike_of_zeros() {
        // ReLU-like: 60% exact zeros, the rest spread over (0, 6].
        let mut v = vec![0.0f32; 120_000];
        v.extend((0..80_000).map(|i| 6.0 * ((i % 8000) as f32 + 1.0) / 8000.0));
        let (lo, hi) = observed(&v).range(Method::Entropy);
        assert_eq!(lo, 0.0);
        assert!(hi > 4.0, "a uniform spread was clipped to {hi}");
    }

    #[test]
    fn entropy_clips_a_long_tail_but_keeps_a_uniform_range() {
        // Uniform on [0, 1): nothing to gain from clipping.
        let v: Vec<f32> = (0..200_000)
            .map(|i| (i % 10_000) as f32 / 10_000.0)
            .collect();
        let (_, hi) = observed(&v).range(Method::Entropy);
        assert!(hi > 0.9, "{hi}");
        // A bell-shaped bulk (sum of four pseudo-random uniforms) plus a few far
        // outliers: the threshold comes in.
        let mut state = 12345u64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut v: Vec<f32> = (0..200_000)
            .map(|_| uniform() + uniform() + uniform() + uniform() - 2.0)
            .collect();
        v.extend([50.0, -50.0, 100.0]);
        let (lo, hi) = observed(&v).range(Method::Entropy);
        assert!(hi < 50.0 && lo > -50.0, "({lo}, {hi})");
    }
}
