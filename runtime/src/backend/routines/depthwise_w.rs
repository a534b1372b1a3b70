//! Depthwise convolution along W, with FMA, for strides 1 and 2 (x86-64 AVX2 + FMA).
//!
//! tract-linalg's x86-64 `depthwise_w` kernel vectorises stride 1 only, with a
//! separate multiply and add, and runs every stride-2 row one point at a time. The
//! stride-2 depthwise layers (each downsampling block of EfficientNet, MobileNet and
//! PP-OCR's backbones) then cost several times their share of the multiply-adds.
//! This kernel keeps tract's contract ([`DepthwiseWF32`]) and loop order (taps outer,
//! 32 output points inner) and adds:
//! - fused multiply-add, one rounding per tap instead of two;
//! - stride 2: two loads and two shuffles give eight even-indexed inputs.
//!
//! On aarch64 tract's own NEON kernel is used; other targets keep tract's choice.
//!
//! [`DepthwiseWF32`]: tract_onnx::tract_core::tract_linalg::routines::DepthwiseWF32

use tract_onnx::tract_core::tract_linalg::routines::DepthwiseWF32;

/// The kernel's name in tract's routine table.
pub const NAME: &str = "outpost_x86_64_fma_depthwise_w_f32";
/// The AVX-512 kernel's name in tract's routine table.
pub const NAME_AVX512: &str = "outpost_x86_64_avx512_depthwise_w_f32";

/// `len` output points, each `bias` plus every `taps[t] * input[offsets[t] + i * in_stride]`.
///
/// # Safety
/// `input.offset(offsets[t] + i * in_stride)` must be readable for every tap and
/// every `i` below `len`, and `len` points writable from `output`. The CPU must have
/// AVX2 and FMA (tract only calls it where the routine table says so).
#[cfg(target_arch = "x86_64")]
pub unsafe fn depthwise_w_f32(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
    in_stride: isize,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match in_stride {
            1 => x86::vectorised::<1>(input, output, taps, offsets, bias, len),
            2 => x86::vectorised::<2>(input, output, taps, offsets, bias, len),
            _ => scalar(input, output, taps, offsets, bias, 0, len, in_stride),
        }
    }
}

/// [`depthwise_w_f32`] on 16 lanes: stride 2 takes its even inputs with one
/// two-register permute. The same operations per point in the same order, so the
/// results are bit for bit those of the AVX2 kernel.
///
/// # Safety
/// As [`depthwise_w_f32`], and the CPU must have AVX-512F (and AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
pub unsafe fn depthwise_w_f32_avx512(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
    in_stride: isize,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match in_stride {
            1 => x86_512::vectorised512::<1>(input, output, taps, offsets, bias, len),
            2 => x86_512::vectorised512::<2>(input, output, taps, offsets, bias, len),
            _ => scalar(input, output, taps, offsets, bias, 0, len, in_stride),
        }
    }
}

#[cfg(target_arch = "x86_64")]
inventory::submit! {
    tract_onnx::tract_core::tract_linalg::routines::Routine {
        func: tract_onnx::tract_core::tract_linalg::routines::Func::DepthwiseW,
        arch: Some(tract_onnx::tract_core::tract_linalg::isa::Arch::X86_64),
        isa: tract_onnx::tract_core::tract_linalg::isa::IsaReq::ANY.needing(&[
            tract_onnx::tract_core::tract_linalg::isa::Isa::X86_64Avx512f,
            tract_onnx::tract_core::tract_linalg::isa::Isa::X86_64Avx2,
            tract_onnx::tract_core::tract_linalg::isa::Isa::X86_64Fma,
        ]),
        boost: 0,
        round_trip: false,
        factory: tract_onnx::tract_core::tract_linalg::routines::RoutineFactory::DepthwiseWF32 {
            name: NAME_AVX512,
            run: depthwise_w_f32_avx512,
        },
    }
}

#[cfg(target_arch = "x86_64")]
inventory::submit! {
    tract_onnx::tract_core::tract_linalg::routines::Routine {
        func: tract_onnx::tract_core::tract_linalg::routines::Func::DepthwiseW,
        arch: Some(tract_onnx::tract_core::tract_linalg::isa::Arch::X86_64),
        isa: tract_onnx::tract_core::tract_linalg::isa::IsaReq::ANY.needing(&[
            tract_onnx::tract_core::tract_linalg::isa::Isa::X86_64Avx2,
            tract_onnx::tract_core::tract_linalg::isa::Isa::X86_64Fma,
        ]),
        boost: 0,
        round_trip: false,
        factory: tract_onnx::tract_core::tract_linalg::routines::RoutineFactory::DepthwiseWF32 {
            name: NAME,
            run: depthwise_w_f32,
        },
    }
}

/// The `depthwise_w` kernel tract runs on this CPU, or [`portable`] where tract's
/// table has none (e.g. armv7 without NEON kernels).
pub fn for_this_cpu() -> DepthwiseWF32 {
    tract_onnx::tract_core::tract_linalg::routines::depthwise_w_f32().unwrap_or(portable)
}

/// The same contract in plain Rust, one point at a time, multiply then add.
///
/// # Safety
/// As [`depthwise_w_f32`]: every tap of every point below `len` readable, `len`
/// points writable.
pub unsafe fn portable(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
    in_stride: isize,
) {
    for i in 0..len {
        let mut sum = bias;
        for (k, off) in taps.iter().zip(offsets) {
            // SAFETY: forwarded from the contract above.
            sum += k * unsafe { *input.offset(off + i as isize * in_stride) };
        }
        // SAFETY: `len` points are writable.
        unsafe { *output.add(i) = sum };
    }
}

/// Points `from..len`, one at a time. Runs in the AVX2+FMA context of its callers
/// (inlined), so `mul_add` is one `vfmadd` instruction; outside such a context it
/// would be a call to libm's `fmaf`, tens of times slower.
///
/// # Safety
/// As [`depthwise_w_f32`] for the points it computes; the CPU must have FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn scalar(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    from: usize,
    len: usize,
    in_stride: isize,
) {
    for i in from..len {
        let mut sum = bias;
        for (tap, offset) in taps.iter().zip(offsets) {
            // SAFETY: the caller guarantees every tap of every point below `len` is readable.
            let x = unsafe { *input.offset(*offset + i as isize * in_stride) };
            sum = tap.mul_add(x, sum);
        }
        // SAFETY: `len` points are writable from `output`.
        unsafe { *output.add(i) = sum };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Eight inputs `S` elements apart from `p`. Stride 2 reads 16 elements, the last
    /// of which it drops: callers leave one element of slack for it.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load8<const S: isize>(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 (S = 1) or 16 (S = 2) readable elements.
        unsafe {
            if S == 1 {
                _mm256_loadu_ps(p)
            } else {
                let a = _mm256_loadu_ps(p);
                let b = _mm256_loadu_ps(p.add(8));
                // [a0 a2 b0 b2 | a4 a6 b4 b6], then the 64-bit pairs reordered to
                // [a0 a2 a4 a6 | b0 b2 b4 b6].
                let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                    even,
                )))
            }
        }
    }

    /// Stride `S` (1 or 2): blocks of 32 points, then of 8, then the rest one by one.
    /// A block starting at point `i` reads up to element `S * (i + width - 1) + S - 1`,
    /// so it runs only while that stays within the last point's input,
    /// `S * (len - 1)`: `i + width + (S - 1) <= len`.
    ///
    /// # Safety
    /// As [`super::depthwise_w_f32`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn vectorised<const S: isize>(
        input: *const f32,
        output: *mut f32,
        taps: &[f32],
        offsets: &[isize],
        bias: f32,
        len: usize,
    ) {
        let slack = (S - 1) as usize;
        let biasv = _mm256_set1_ps(bias);
        let mut i = 0usize;
        // SAFETY: every load below stays within the readable range (see above), and
        // every store within the `len` writable points.
        unsafe {
            while i + 32 + slack <= len {
                let (mut a0, mut a1, mut a2, mut a3) = (biasv, biasv, biasv, biasv);
                for (tap, offset) in taps.iter().zip(offsets) {
                    let k = _mm256_set1_ps(*tap);
                    let p = input.offset(*offset + i as isize * S);
                    a0 = _mm256_fmadd_ps(load8::<S>(p), k, a0);
                    a1 = _mm256_fmadd_ps(load8::<S>(p.offset(8 * S)), k, a1);
                    a2 = _mm256_fmadd_ps(load8::<S>(p.offset(16 * S)), k, a2);
                    a3 = _mm256_fmadd_ps(load8::<S>(p.offset(24 * S)), k, a3);
                }
                _mm256_storeu_ps(output.add(i), a0);
                _mm256_storeu_ps(output.add(i + 8), a1);
                _mm256_storeu_ps(output.add(i + 16), a2);
                _mm256_storeu_ps(output.add(i + 24), a3);
                i += 32;
            }
            while i + 8 + slack <= len {
                let mut acc = biasv;
                for (tap, offset) in taps.iter().zip(offsets) {
                    let p = input.offset(*offset + i as isize * S);
                    acc = _mm256_fmadd_ps(load8::<S>(p), _mm256_set1_ps(*tap), acc);
                }
                _mm256_storeu_ps(output.add(i), acc);
                i += 8;
            }
            super::scalar(input, output, taps, offsets, bias, i, len, S);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_512 {
    use std::arch::x86_64::*;

    /// Sixteen inputs `S` elements apart from `p`. Stride 2 reads 32 elements, the
    /// last of which it drops: callers leave one element of slack for it.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn load16<const S: isize>(p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 (S = 1) or 32 (S = 2) readable elements.
        unsafe {
            if S == 1 {
                _mm512_loadu_ps(p)
            } else {
                let even =
                    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
                _mm512_permutex2var_ps(_mm512_loadu_ps(p), even, _mm512_loadu_ps(p.add(16)))
            }
        }
    }

    /// Masks of the lanes of the `V` vectors that cover `len` points (`len` ≤
    /// `16 · V`), and of the raw elements each reads at stride `S`: the second
    /// half of a stride-2 vector's input stops at its last lane's element, so no
    /// read goes past the last point's.
    #[inline]
    fn masks<const S: isize, const V: usize>(len: usize) -> [(u16, u16, u16); V] {
        let bits = |n: usize| ((1u32 << n.min(16)) - 1) as u16;
        std::array::from_fn(|v| {
            let valid = len.saturating_sub(16 * v).min(16);
            let raw = (valid * S as usize).saturating_sub(S as usize - 1);
            (bits(valid), bits(raw), bits(raw.saturating_sub(16)))
        })
    }

    /// `len` points (at most `16 · V`) in `V` vectors side by side.
    ///
    /// # Safety
    /// As [`super::depthwise_w_f32_avx512`], for `len` points.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn tail<const S: isize, const V: usize>(
        input: *const f32,
        output: *mut f32,
        taps: &[f32],
        offsets: &[isize],
        bias: __m512,
        len: usize,
    ) {
        let masks = masks::<S, V>(len);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let mut acc = [bias; V];
        // SAFETY: the masks keep every load within the readable elements of the
        // `len` points, and the stores within the `len` writable ones.
        unsafe {
            for (tap, offset) in taps.iter().zip(offsets) {
                let k = _mm512_set1_ps(*tap);
                for (v, acc) in acc.iter_mut().enumerate() {
                    let (_, m0, m1) = masks[v];
                    let p = input.offset(*offset + (16 * v) as isize * S);
                    let x = if S == 1 {
                        _mm512_maskz_loadu_ps(m0, p)
                    } else {
                        let a = _mm512_maskz_loadu_ps(m0, p);
                        let b = _mm512_maskz_loadu_ps(m1, p.add(16));
                        _mm512_permutex2var_ps(a, even, b)
                    };
                    *acc = _mm512_fmadd_ps(x, k, *acc);
                }
            }
            for (v, acc) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(output.add(16 * v), masks[v].0, *acc);
            }
        }
    }

    /// Stride `S` (1 or 2): blocks of 64 points, then the rest in up to four
    /// vectors side by side, with the bounds of [`super::x86::vectorised`].
    ///
    /// # Safety
    /// As [`super::depthwise_w_f32_avx512`].
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn vectorised512<const S: isize>(
        input: *const f32,
        output: *mut f32,
        taps: &[f32],
        offsets: &[isize],
        bias: f32,
        len: usize,
    ) {
        let slack = (S - 1) as usize;
        let biasv = _mm512_set1_ps(bias);
        let mut i = 0usize;
        // SAFETY: every load below stays within the readable range, and every
        // store within the `len` writable points.
        unsafe {
            while i + 64 + slack <= len {
                let (mut a0, mut a1, mut a2, mut a3) = (biasv, biasv, biasv, biasv);
                for (tap, offset) in taps.iter().zip(offsets) {
                    let k = _mm512_set1_ps(*tap);
                    let p = input.offset(*offset + i as isize * S);
                    a0 = _mm512_fmadd_ps(load16::<S>(p), k, a0);
                    a1 = _mm512_fmadd_ps(load16::<S>(p.offset(16 * S)), k, a1);
                    a2 = _mm512_fmadd_ps(load16::<S>(p.offset(32 * S)), k, a2);
                    a3 = _mm512_fmadd_ps(load16::<S>(p.offset(48 * S)), k, a3);
                }
                _mm512_storeu_ps(output.add(i), a0);
                _mm512_storeu_ps(output.add(i + 16), a1);
                _mm512_storeu_ps(output.add(i + 32), a2);
                _mm512_storeu_ps(output.add(i + 48), a3);
                i += 64;
            }
            // The last points (up to 64: fewer, or 64 without the slack) in up to
            // four vectors at once, the last one masked. One vector at a time, a
            // short row (7 or 14 points) would be one chain of dependent FMAs.
            let out = output.add(i);
            let input = input.offset(i as isize * S);
            match (len - i).div_ceil(16) {
                0 => {}
                1 => tail::<S, 1>(input, out, taps, offsets, biasv, len - i),
                2 => tail::<S, 2>(input, out, taps, offsets, biasv, len - i),
                3 => tail::<S, 3>(input, out, taps, offsets, biasv, len - i),
                _ => tail::<S, 4>(input, out, taps, offsets, biasv, len - i),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, in f64.
    fn reference(
        input: &[f32],
        center: usize,
        taps: &[f32],
        offsets: &[isize],
        bias: f32,
        len: usize,
        in_stride: isize,
    ) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let at =
                    |off: isize| input[(center as isize + off + i as isize * in_stride) as usize];
                taps.iter()
                    .zip(offsets)
                    .fold(bias as f64, |s, (&k, &off)| s + k as f64 * at(off) as f64)
                    as f32
            })
            .collect()
    }

    /// The kernel's output, and the definition's, on an input exactly as long as
    /// the contract requires, so a read past the last needed element would leave
    /// the vector (and fail under Miri or ASan) rather than read slack.
    fn run_both(
        kernel: DepthwiseWF32,
        taps: usize,
        len: usize,
        in_stride: isize,
        seed: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let k: Vec<f32> = (0..taps).map(|t| ((t + seed) as f32 * 0.7).sin()).collect();
        // Offsets as a 2-D patch would give them: rows of 3 taps, a row 37 apart.
        let offsets: Vec<isize> = (0..taps as isize)
            .map(|t| (t / 3) * 37 + t % 3 - 40)
            .collect();
        let min = *offsets.iter().min().unwrap_or(&0);
        let max = *offsets.iter().max().unwrap_or(&0);
        let center = (-min) as usize;
        let size = center as isize + max + (len as isize - 1) * in_stride + 1;
        let input: Vec<f32> = (0..size)
            .map(|i| ((i as usize + seed) as f32 * 0.11).cos())
            .collect();
        let want = reference(&input, center, &k, &offsets, 0.25, len, in_stride);
        let mut got = vec![f32::NAN; len];
        // SAFETY: `input` covers every tap of every point (built from the offsets
        // above), `got` holds `len` points; callers pass a kernel this CPU can run.
        unsafe {
            kernel(
                input.as_ptr().add(center),
                got.as_mut_ptr(),
                &k,
                &offsets,
                0.25,
                len,
                in_stride,
            )
        };
        (got, want)
    }

    /// The kernel's output alone.
    #[cfg(target_arch = "x86_64")]
    fn run_on(
        kernel: DepthwiseWF32,
        taps: usize,
        len: usize,
        in_stride: isize,
        seed: usize,
    ) -> Vec<f32> {
        run_both(kernel, taps, len, in_stride, seed).0
    }

    /// The kernel against the definition.
    fn compare(kernel: DepthwiseWF32, taps: usize, len: usize, in_stride: isize, seed: usize) {
        let (got, want) = run_both(kernel, taps, len, in_stride, seed);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() < 1e-5,
                "taps={taps} len={len} stride={in_stride} at {i}: got {g}, want {w}"
            );
        }
    }

    /// The fallback for CPUs without a `depthwise_w` routine, on every target.
    #[test]
    fn the_portable_kernel_matches_the_definition() {
        let mut seed = 0;
        for taps in [1usize, 3, 9, 25] {
            for in_stride in [1isize, 2, 3] {
                for len in [1usize, 7, 8, 33, 112] {
                    seed += 1;
                    compare(portable, taps, len, in_stride, seed);
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn has_avx2_fma() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn matches_the_definition_on_odd_lengths_taps_and_strides() {
        if !has_avx2_fma() {
            return;
        }
        let mut seed = 0;
        for taps in [1usize, 2, 3, 4, 5, 6, 9, 15, 20, 25, 49] {
            for in_stride in [1isize, 2, 3] {
                for len in [
                    1usize, 2, 7, 8, 9, 10, 31, 32, 33, 34, 40, 41, 63, 65, 111, 112,
                ] {
                    seed += 1;
                    compare(depthwise_w_f32, taps, len, in_stride, seed);
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn has_avx512() -> bool {
        has_avx2_fma() && std::arch::is_x86_feature_detected!("avx512f")
    }

    /// The AVX-512 kernel equals the AVX2 one bit for bit (the same operations
    /// per point, in the same order) and the definition within rounding.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_kernel_matches_the_avx2_kernel_bit_for_bit() {
        if !has_avx512() {
            return;
        }
        let mut seed = 0;
        for taps in [1usize, 3, 9, 25] {
            for in_stride in [1isize, 2, 3] {
                for len in [1usize, 15, 16, 17, 63, 64, 65, 66, 80, 111, 112, 130] {
                    seed += 1;
                    compare(depthwise_w_f32_avx512, taps, len, in_stride, seed);
                    let a = run_on(depthwise_w_f32_avx512, taps, len, in_stride, seed);
                    let b = run_on(depthwise_w_f32, taps, len, in_stride, seed);
                    assert_eq!(
                        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "taps={taps} len={len} stride={in_stride}"
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tract_runs_this_kernel_for_depthwise_rows() {
        let active = super::super::active();
        let name = active
            .iter()
            .find(|(f, _)| *f == "depthwise_w")
            .map(|(_, n)| *n);
        if has_avx512() {
            assert_eq!(name, Some(NAME_AVX512));
        } else if has_avx2_fma() {
            assert_eq!(name, Some(NAME));
        } else {
            assert!(name != Some(NAME) && name != Some(NAME_AVX512));
        }
    }

    /// A grouped Conv (one group per channel) through tract's optimiser: it becomes
    /// tract's DepthWiseConv op, whose rows run on the kernel tract picks for this
    /// CPU (this one where AVX2 and FMA exist). Odd sizes, strides 1 to 3, padding
    /// and dilation, against the definition.
    #[test]
    fn depthwise_convolutions_in_tract_match_the_definition() {
        use crate::backend::ops::depthwise::tests::{depthwise_conv, naive_depthwise};
        use tract_onnx::prelude::*;
        use tract_onnx::tract_core::ops::cnn::PaddingSpec;
        use tract_onnx::tract_core::ops::nn::DataFormat;

        // (channels, h, w, kernel, stride, pad, dilation)
        let cases = [
            (3, 37, 41, 3, 1, 1, 1),
            (5, 40, 67, 3, 2, 1, 1),
            (4, 29, 33, 5, 2, 2, 1),
            (2, 50, 45, 5, 1, 2, 1),
            (3, 31, 70, 3, 1, 2, 2),
            (2, 35, 39, 3, 3, 0, 1),
            (6, 17, 129, 3, 2, 1, 1),
        ];
        for (seed, &(c, h, w, ks, stride, pad, dil)) in cases.iter().enumerate() {
            let gen = |n: usize, m: f32| -> Vec<f32> {
                (0..n)
                    .map(|i| ((i * 7 + seed * 13) as f32 * m).sin())
                    .collect()
            };
            let x = gen(c * h * w, 0.37);
            let k = gen(c * ks * ks, 1.3);
            let b = gen(c, 0.9);
            let (want, oh, ow) = naive_depthwise(&x, (c, h, w), &k, (ks, ks), &b, stride, pad, dil);

            let mut model = TypedModel::default();
            let input = model.add_source("x", f32::fact([1, c, h, w])).unwrap();
            let kernel = model
                .add_const("k", tensor1(&k).into_shape(&[c, 1, ks, ks]).unwrap())
                .unwrap();
            let bias = model.add_const("b", tensor1(&b)).unwrap();
            let padding = PaddingSpec::Explicit(tvec!(pad, pad), tvec!(pad, pad));
            let conv = depthwise_conv(DataFormat::NCHW, c, ks, padding, stride, dil);
            let out = model
                .wire_node("conv", conv, &[input, kernel, bias])
                .unwrap();
            model.select_output_outlets(&out).unwrap();
            let model = model.into_optimized().unwrap();
            assert!(
                model.nodes.iter().any(|n| n.op().name() == "DepthWiseConv"),
                "case {seed}: tract did not plan a depthwise op"
            );
            let plan = model.into_runnable().unwrap();
            let x = tensor1(&x).into_shape(&[1, c, h, w]).unwrap();
            let got = plan.run(tvec!(x.into_tvalue())).unwrap().remove(0);
            assert_eq!(got.shape(), &[1, c, oh, ow], "case {seed}");
            let got = got.to_plain_array_view::<f32>().unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-4,
                    "case {seed} at {i}: got {g}, want {w}"
                );
            }
        }
    }
}
