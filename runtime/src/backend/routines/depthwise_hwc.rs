//! Depthwise 2-D convolution over channels-last (HWC) planes.
//!
//! In NCHW every channel is its own small plane: a 7×7 plane at 5×5 taps is a few
//! short rows, stride 2 needs shuffles, and each plane is copied into a padded
//! scratch plane first. Channels-last puts the channels of one point side by side,
//! so the vectors run along the channels: every tap is one contiguous load of the
//! input and one of the weights per vector, whatever the stride, dilation or plane
//! size, and out-of-plane taps are simply skipped (no padded copy). That is the
//! layout onnxruntime's blocked NCHWc convolutions get their depthwise speed from.
//!
//! Kernels: AVX2 + FMA and AVX-512 on x86-64 (four points × two vectors of
//! channels inside the plane, one point × four vectors at its borders, in
//! registers across all taps), and a portable loop elsewhere (accumulating in the output row, which compilers
//! vectorise for NEON).

use crate::backend::ops::ConvGeometry;

/// One tap of one output point: where its input and weight vectors start,
/// relative to the point's input base and to the weights.
#[derive(Clone, Copy, Debug)]
struct Tap {
    input: usize,
    weight: usize,
}

/// The channels-last form of a depthwise convolution's geometry (its batch,
/// if any, is one image).
impl ConvGeometry {
    /// Input column of output column `ox` at tap column `kx`, if inside the plane.
    fn input_x(&self, ox: usize, kx: usize) -> Option<usize> {
        (ox * self.strides[1] + kx * self.dilations[1])
            .checked_sub(self.pad_before[1])
            .filter(|&x| x < self.input_hw[1])
    }

    /// Output columns `[lo, hi)` whose taps all fall inside the plane's width.
    fn interior_columns(&self) -> (usize, usize) {
        let [sw, dw, left] = [self.strides[1], self.dilations[1], self.pad_before[1]];
        let (w, ow, reach) = (
            self.input_hw[1],
            self.output_hw[1],
            (self.kernel_hw[1] - 1) * dw,
        );
        let lo = left.div_ceil(sw).min(ow);
        // ox · sw + reach − left < w  ⇔  ox · sw < w + left − reach.
        let hi = match (w + left).checked_sub(reach) {
            Some(limit) if limit > 0 => ((limit - 1) / sw + 1).min(ow),
            _ => 0,
        };
        (lo, hi.max(lo))
    }

    /// Computes output rows `rows` of a channels-last depthwise convolution
    /// into `out` (`OW · C` values a row): `bias[c]` plus every in-plane tap
    /// `weights[t · C + c] · input[(y, x) · C + c]`, where `input` is the
    /// `H · W · C` image and `weights` is `[KH · KW, C]`.
    ///
    /// # Panics
    /// If a slice is shorter than the geometry says (a caller's bug).
    pub fn hwc_rows(
        &self,
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        self.hwc_rows_with(Kernel::for_this_cpu(), input, weights, bias, rows, out)
    }

    /// [`ConvGeometry::hwc_rows`] on a given kernel (tests compare them).
    fn hwc_rows_with(
        &self,
        kernel: Kernel,
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let c = self.channels;
        let [h, w] = self.input_hw;
        let [kh, kw] = self.kernel_hw;
        let row_len = self.output_hw[1] * c;
        assert!(
            input.len() >= h * w * c
                && weights.len() >= kh * kw * c
                && bias.len() >= c
                && out.len() >= rows.len() * row_len,
            "depthwise rows: buffers shorter than the geometry"
        );
        // The taps of output point (oy, ox) inside the plane, their inputs
        // relative to `base`.
        let taps_at = |oy: usize, ox: usize, taps: &mut Vec<Tap>, base: usize| {
            taps.clear();
            for ky in 0..kh {
                let y = (oy * self.strides[0] + ky * self.dilations[0])
                    .checked_sub(self.pad_before[0])
                    .filter(|&y| y < h);
                let Some(y) = y else {
                    continue;
                };
                for kx in 0..kw {
                    if let Some(x) = self.input_x(ox, kx) {
                        taps.push(Tap {
                            input: (y * w + x) * c - base,
                            weight: (ky * kw + kx) * c,
                        });
                    }
                }
            }
        };
        let (lo, hi) = self.interior_columns();
        TAPS.with_borrow_mut(|taps| {
            for (oy, out) in rows.zip(out.chunks_exact_mut(row_len)) {
                // Border columns one by one, each with its own taps.
                for ox in (0..lo).chain(hi..self.output_hw[1]) {
                    taps_at(oy, ox, taps, 0);
                    let out = &mut out[ox * c..(ox + 1) * c];
                    kernel.points(input, 0, 1, c, taps, weights, bias, out, c);
                }
                // Interior columns share one tap list, relative to each point's
                // first input.
                if lo < hi {
                    let base = |ox: usize| (ox * self.strides[1] - self.pad_before[1]) * c;
                    taps_at(oy, lo, taps, base(lo));
                    let step = self.strides[1] * c;
                    let out = &mut out[lo * c..hi * c];
                    kernel.points(input, base(lo), hi - lo, step, taps, weights, bias, out, c);
                }
            }
        })
    }
}

thread_local! {
    /// The thread's tap list, kept between calls so that inference allocates
    /// nothing here.
    static TAPS: std::cell::RefCell<Vec<Tap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The kernel for this CPU.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// AVX-512 for whole vectors of 16 channels, AVX2 for a last 8.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs. Called for every output row: feature
    /// detection is cached by the standard library, and nothing is allocated.
    fn for_this_cpu() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return match std::arch::is_x86_feature_detected!("avx512f") {
                true => Kernel::Avx512,
                false => Kernel::Avx2Fma,
            };
        }
        Kernel::Portable
    }

    /// Every kernel this CPU runs (tests compare them).
    #[cfg(test)]
    fn available() -> Vec<Kernel> {
        match Self::for_this_cpu() {
            Kernel::Portable => vec![Kernel::Portable],
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => vec![Kernel::Portable, Kernel::Avx2Fma],
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => vec![Kernel::Portable, Kernel::Avx2Fma, Kernel::Avx512],
        }
    }

    /// `points` consecutive output points of `c` channels (their inputs `step`
    /// values apart, the first at `input[base..]`), all with the same `taps`, into
    /// `out` (`points · c` values).
    #[allow(clippy::too_many_arguments)]
    fn points(
        self,
        input: &[f32],
        base: usize,
        points: usize,
        step: usize,
        taps: &[Tap],
        weights: &[f32],
        bias: &[f32],
        out: &mut [f32],
        c: usize,
    ) {
        // Every read below: tap input + (points − 1) · step + C ≤ input.len().
        let reach =
            taps.iter().map(|t| t.input).max().unwrap_or(0) + base + (points.max(1) - 1) * step + c;
        let weight_reach = taps.iter().map(|t| t.weight).max().unwrap_or(0) + c;
        assert!(
            reach <= input.len()
                && weight_reach <= weights.len()
                && bias.len() >= c
                && out.len() >= points * c
        );
        // Channels below `wide` go to the AVX-512 kernel, from there to
        // `vectors` to the AVX2 one, the rest to the loop.
        let (wide, vectors) = match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => (c - c % 16, c - c % 8),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => (0, c - c % 8),
            Kernel::Portable => (0, 0),
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernels' features were detected; the bounds are checked
        // above, and each call reads and writes only its channels.
        unsafe {
            let input = input.as_ptr().add(base);
            let (w, b, o) = (weights.as_ptr(), bias.as_ptr(), out.as_mut_ptr());
            if wide > 0 {
                avx512::points(input, points, step, taps, w, b, o, c, wide);
            }
            if vectors > wide {
                let (input, w, b, o) = (input.add(wide), w.add(wide), b.add(wide), o.add(wide));
                avx2::points(input, points, step, taps, w, b, o, c, vectors - wide);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = wide;
        for (p, out) in out.chunks_exact_mut(c).take(points).enumerate() {
            let out = &mut out[vectors..];
            out.copy_from_slice(&bias[vectors..c]);
            let at = base + p * step + vectors;
            for tap in taps {
                let x = &input[at + tap.input..][..out.len()];
                let k = &weights[tap.weight + vectors..][..out.len()];
                for ((o, x), k) in out.iter_mut().zip(x).zip(k) {
                    *o += k * x;
                }
            }
        }
    }
}

/// Expands to a module of the x86-64 kernels for vectors of `$lanes` lanes.
#[cfg(target_arch = "x86_64")]
macro_rules! hwc_kernels {
    ($module:ident, $features:literal, $lanes:literal, $vector:ty,
     $zero:ident, $load:ident, $fma:ident, $store:ident) => {
        mod $module {
            use super::Tap;
            use std::arch::x86_64::*;

            /// `P` points × `V` vectors of `$lanes` channels from channel `c0`,
            /// in registers across every tap.
            ///
            /// # Safety
            /// The CPU has the features; every tap's `V` vectors of channels
            /// from `c0` readable for the `P` points, and writable in `out`.
            #[inline]
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn block<const P: usize, const V: usize>(
                input: *const f32,
                step: usize,
                taps: &[Tap],
                weights: *const f32,
                bias: *const f32,
                out: *mut f32,
                c: usize,
                c0: usize,
            ) {
                // SAFETY: the function's contract.
                unsafe {
                    let mut acc: [[$vector; V]; P] = [[$zero(); V]; P];
                    for v in 0..V {
                        let b = $load(bias.add(c0 + $lanes * v));
                        for a in acc.iter_mut() {
                            a[v] = b;
                        }
                    }
                    for tap in taps {
                        let k: [$vector; V] = std::array::from_fn(|v| {
                            $load(weights.add(tap.weight + c0 + $lanes * v))
                        });
                        for (p, a) in acc.iter_mut().enumerate() {
                            let x = input.add(tap.input + p * step + c0);
                            for v in 0..V {
                                a[v] = $fma($load(x.add($lanes * v)), k[v], a[v]);
                            }
                        }
                    }
                    for (p, a) in acc.iter().enumerate() {
                        for (v, a) in a.iter().enumerate() {
                            $store(out.add(p * c + c0 + $lanes * v), *a);
                        }
                    }
                }
            }

            /// The first `vectors` channels (a multiple of the lanes) of
            /// `points` points `step` apart: four points at a time by two
            /// vectors and then one, the rest one point at a time by four
            /// vectors and then one. The caller computes channels `vectors..c`.
            ///
            /// # Safety
            /// The CPU has the features; every tap of every point readable
            /// for `c` channels, and `points · c` values writable from `out`.
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn points(
                input: *const f32,
                points: usize,
                step: usize,
                taps: &[Tap],
                weights: *const f32,
                bias: *const f32,
                out: *mut f32,
                c: usize,
                vectors: usize,
            ) {
                let mut p = 0;
                // SAFETY: the function's contract; every call stays within the
                // points and channels it was given.
                unsafe {
                    while p + 4 <= points {
                        let (x, o) = (input.add(p * step), out.add(p * c));
                        let mut c0 = 0;
                        while c0 + 2 * $lanes <= vectors {
                            block::<4, 2>(x, step, taps, weights, bias, o, c, c0);
                            c0 += 2 * $lanes;
                        }
                        if c0 < vectors {
                            block::<4, 1>(x, step, taps, weights, bias, o, c, c0);
                        }
                        p += 4;
                    }
                    while p < points {
                        let (x, o) = (input.add(p * step), out.add(p * c));
                        let mut c0 = 0;
                        while c0 + 4 * $lanes <= vectors {
                            block::<1, 4>(x, 0, taps, weights, bias, o, c, c0);
                            c0 += 4 * $lanes;
                        }
                        while c0 < vectors {
                            block::<1, 1>(x, 0, taps, weights, bias, o, c, c0);
                            c0 += $lanes;
                        }
                        p += 1;
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
hwc_kernels!(
    avx2,
    "avx2,fma",
    8,
    __m256,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_fmadd_ps,
    _mm256_storeu_ps
);
#[cfg(target_arch = "x86_64")]
hwc_kernels!(
    avx512,
    "avx512f",
    16,
    __m512,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_fmadd_ps,
    _mm512_storeu_ps
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, in f64, over an NCHW-free HWC image.
    fn naive(g: &ConvGeometry, x: &[f32], k: &[f32], b: &[f32]) -> Vec<f32> {
        let c = g.channels;
        let [h, w] = g.input_hw;
        let [oh, ow] = g.output_hw;
        let [kh, kw] = g.kernel_hw;
        let mut out = vec![0f32; oh * ow * c];
        for oy in 0..oh {
            for ox in 0..ow {
                for ch in 0..c {
                    let mut s = b[ch] as f64;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let y = (oy * g.strides[0] + ky * g.dilations[0]) as isize
                                - g.pad_before[0] as isize;
                            let xx = (ox * g.strides[1] + kx * g.dilations[1]) as isize
                                - g.pad_before[1] as isize;
                            if y < 0 || xx < 0 || y as usize >= h || xx as usize >= w {
                                continue;
                            }
                            s += k[(ky * kw + kx) * c + ch] as f64
                                * x[(y as usize * w + xx as usize) * c + ch] as f64;
                        }
                    }
                    out[(oy * ow + ox) * c + ch] = s as f32;
                }
            }
        }
        out
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + seed * 131) as f32 * 0.37).sin())
            .collect()
    }

    /// Output size along one axis (padding `before` and `after`).
    fn out_len(n: usize, k: usize, s: usize, d: usize, before: usize, after: usize) -> usize {
        (n + before + after - d * (k - 1) - 1) / s + 1
    }

    #[test]
    fn rows_match_the_definition_on_odd_shapes_strides_padding_and_dilation() {
        // (channels, h, w, kernel, stride, dilation, pad before, pad after)
        let cases = [
            (8, 7, 7, [5, 5], [1, 1], [1, 1], [2, 2], [2, 2]),
            (16, 14, 14, [3, 3], [2, 2], [1, 1], [0, 0], [1, 1]),
            (32, 9, 11, [3, 3], [1, 1], [1, 1], [1, 1], [1, 1]),
            (48, 13, 10, [5, 5], [2, 2], [1, 1], [2, 2], [2, 2]),
            (3, 6, 8, [3, 3], [1, 1], [1, 1], [1, 1], [1, 1]),
            (13, 12, 9, [3, 5], [1, 2], [2, 1], [2, 0], [1, 3]),
            (24, 5, 5, [5, 5], [1, 1], [1, 1], [4, 4], [0, 0]),
            (40, 17, 23, [3, 3], [3, 3], [2, 2], [1, 2], [0, 1]),
            (1152, 7, 7, [5, 5], [1, 1], [1, 1], [2, 2], [2, 2]),
            (7, 1, 9, [1, 3], [1, 1], [1, 1], [0, 1], [0, 1]),
        ];
        for (seed, &(c, h, w, k, s, d, before, after)) in cases.iter().enumerate() {
            let g = ConvGeometry {
                batch: None,
                channels: c,
                input_hw: [h, w],
                output_hw: [
                    out_len(h, k[0], s[0], d[0], before[0], after[0]),
                    out_len(w, k[1], s[1], d[1], before[1], after[1]),
                ],
                kernel_hw: k,
                strides: s,
                dilations: d,
                pad_before: before,
            };
            let x = values(h * w * c, seed);
            let kernel = values(k[0] * k[1] * c, seed + 5);
            let bias = values(c, seed + 9);
            let want = naive(&g, &x, &kernel, &bias);
            let [oh, ow] = g.output_hw;
            // Whole images, and rows a few at a time as threads take them.
            let mut got = vec![f32::NAN; oh * ow * c];
            g.hwc_rows(&x, &kernel, &bias, 0..oh, &mut got);
            let mut by_rows = vec![f32::NAN; oh * ow * c];
            for (i, rows) in by_rows.chunks_mut(2 * ow * c).enumerate() {
                let first = 2 * i;
                g.hwc_rows(
                    &x,
                    &kernel,
                    &bias,
                    first..first + rows.len() / (ow * c),
                    rows,
                );
            }
            assert_eq!(got, by_rows, "case {seed}: rows in chunks");
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5,
                    "case {seed} ({g:?}) at {i}: {a} vs {b}"
                );
            }
            // Every kernel this CPU has gives the same values within rounding.
            for k in Kernel::available() {
                let mut each = vec![f32::NAN; oh * ow * c];
                g.hwc_rows_with(k, &x, &kernel, &bias, 0..oh, &mut each);
                for (a, b) in each.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-5, "case {seed} {k:?}: {a} vs {b}");
                }
            }
        }
    }
}
