//! The INT8 matrix product: `uint8` activations times `int8` weights, summed in
//! `i32` and turned back into `f32` per output channel.
//!
//! `out[o, p] = (Σ_k w[o, k] · x[k, p] − zero · Σ_k w[o, k]) · scale[o] + shift[o]`
//!
//! Both operands are packed so that the kernel reads four consecutive `k` of one
//! row or column as one 32-bit word, the unit of x86's `vpdpbusd` (four `u8 × i8`
//! products summed into an `i32` lane) and of NEON's dot products:
//! - weights in panels of [`MR`] rows: `[panel][k / 4][row][4]`, packed once when
//!   the model loads;
//! - activations in panels of [`NR`] columns: `[panel][k / 4][column][4]`, packed
//!   per block by the caller ([`pack_columns`]).
//!
//! Kernels, picked once per CPU:
//! - x86-64: AVX-512 VNNI (64 multiply-adds an instruction); AVX2 (sign-extended to
//!   `i16` pairs for `vpmaddwd`, exact, 16 an instruction);
//! - aarch64: the dot-product extension (ARMv8.2 `sdot`, 16 an instruction; Cortex-A55/
//!   A76 and later, RK3588, Jetson Orin); plain NEON everywhere else (`smull` into `i16`
//!   then `sadalp`, 8 in two instructions; Cortex-A53/A57/A72, Raspberry Pi 3/4,
//!   Jetson Nano). NEON has no `u8 × i8` dot product before ARMv8.6, so both take the
//!   activations as `i8` (`x − 128`) and fold `128 · Σ w` into the row offsets;
//! - a portable loop everywhere else (armv7 included).
//!
//! All of them sum exactly in `i32`, so they give bit-identical results.

use std::sync::OnceLock;

/// Rows (output channels) per weight panel.
pub const MR: usize = 8;
/// Columns (output points) per activation panel.
pub const NR: usize = 32;
/// Rows (output channels) per panel of the point-tile kernel (two vectors): a
/// part of a channels-last product starts at a multiple of this.
pub const CL_ROWS: usize = 32;

/// Which kernel runs on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// x86-64 AVX-512 with VNNI (`vpdpbusd` on 512-bit vectors).
    Avx512Vnni,
    /// x86-64 AVX2 (`vpmaddwd` on sign-extended pairs).
    Avx2,
    /// aarch64 with the dot-product extension (`sdot`).
    NeonDot,
    /// aarch64 NEON (`smull` and `sadalp`).
    Neon,
    /// Plain Rust, for every other CPU.
    Portable,
}

impl Kernel {
    /// The best kernel this CPU runs; `OUTPOST_QGEMM=portable|avx2|neon` caps it
    /// (for tests and comparisons).
    pub fn native() -> Kernel {
        static NATIVE: OnceLock<Kernel> = OnceLock::new();
        *NATIVE.get_or_init(|| {
            let cap = std::env::var("OUTPOST_QGEMM").unwrap_or_default();
            Kernel::detected()
                .into_iter()
                .find(|k| match cap.as_str() {
                    "portable" => *k == Kernel::Portable,
                    "avx2" => *k != Kernel::Avx512Vnni,
                    "neon" => *k != Kernel::NeonDot,
                    _ => true,
                })
                .unwrap_or(Kernel::Portable)
        })
    }

    /// Every kernel this CPU can run, best first.
    // On armv7 only the last push remains.
    #[allow(clippy::vec_init_then_push)]
    pub fn detected() -> Vec<Kernel> {
        let mut found = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                found.push(Kernel::Avx512Vnni);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                found.push(Kernel::Avx2);
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                found.push(Kernel::NeonDot);
            }
            found.push(Kernel::Neon);
        }
        found.push(Kernel::Portable);
        found
    }

    /// Whether the kernel multiplies `x − 128` as `i8` rather than `x` as `u8`.
    fn shifts_activations(self) -> bool {
        matches!(self, Kernel::NeonDot | Kernel::Neon)
    }
}

/// What the kernels apply to each value as they store it, in this order (the
/// activations that most often follow a QDQ product, done in registers rather
/// than in a second pass over the output).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Post {
    /// `min(max(v, lo), hi)`.
    pub clamp: Option<[f32; 2]>,
    /// Quantise then dequantise, from `[1 / scale, zero, scale]`: `(clamp(round(v ·
    /// inv) + zero, 0, 255) − zero) · scale`, rounding half to even.
    pub fake_quant: Option<[f32; 3]>,
}

/// Where a product's values go: `f32` values, or, with [`Post::fake_quant`] set,
/// the quantised levels themselves as `u8` (what the next INT8 op reads).
#[derive(Debug, Clone, Copy)]
pub enum Dst {
    /// `f32` values, after every step of the [`Post`].
    F32(*mut f32),
    /// The `u8` level of the quantise step (the dequantise is left out).
    U8(*mut u8),
}

impl Dst {
    /// The destination `n` values further on.
    ///
    /// # Safety
    /// As `pointer::add`: the result stays within the same allocation.
    #[inline]
    pub unsafe fn add(self, n: usize) -> Dst {
        // SAFETY: forwarded from the contract.
        unsafe {
            match self {
                Dst::F32(p) => Dst::F32(p.add(n)),
                Dst::U8(p) => Dst::U8(p.add(n)),
            }
        }
    }
}

/// The parameters a level store uses when none are set: level = clamped rounding.
const NO_QUANT: [f32; 3] = [1.0, 0.0, 1.0];

impl Post {
    /// The quantise step a store to `out` runs: the post's own, and for levels
    /// always one.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn quant_for(&self, out: Dst) -> Option<[f32; 3]> {
        match out {
            Dst::U8(_) => Some(self.fake_quant.unwrap_or(NO_QUANT)),
            Dst::F32(_) => self.fake_quant,
        }
    }

    /// The quantised level (0..=255, as `f32`) of a value that went through the
    /// clamp; what [`Dst::U8`] stores.
    // max/min rather than clamp: NaN goes to a bound, as `_mm*_max_ps` does.
    #[allow(clippy::manual_clamp)]
    #[inline(always)]
    fn level(&self, mut v: f32) -> f32 {
        if let Some([lo, hi]) = self.clamp {
            v = v.max(lo).min(hi);
        }
        let [inv, zero, _] = self.fake_quant.unwrap_or(NO_QUANT);
        let t = (v * inv).max(-1024.0).min(1024.0);
        (t.round_ties_even() + zero).max(0.0).min(255.0)
    }

    /// The steps on one value (the vector kernels compute exactly this).
    // max/min rather than clamp: NaN goes to a bound, as `_mm*_max_ps` does.
    #[allow(clippy::manual_clamp)]
    #[inline(always)]
    fn apply(&self, mut v: f32) -> f32 {
        if let Some([lo, hi]) = self.clamp {
            v = v.max(lo).min(hi);
        }
        if let Some([inv, zero, scale]) = self.fake_quant {
            let t = (v * inv).max(-1024.0).min(1024.0);
            let level = (t.round_ties_even() + zero).max(0.0).min(255.0);
            v = (level - zero) * scale;
        }
        v
    }
}

/// Weights packed for [`product`], with what turns the `i32` sums into `f32`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackedWeights {
    /// Rows (output channels).
    pub m: usize,
    /// Columns (input channels times kernel taps).
    pub k: usize,
    /// `[panel][k / 4][row][4]`, rows and `k` padded with zeros.
    quads: Vec<i8>,
    /// For [`Kernel::Avx2`]: the same weights as `i16` pairs, `(w0, w2)` then
    /// `(w1, w3)` of each quad: `[panel][k / 4][row][2]`.
    pairs: Vec<u32>,
    /// For [`product_channels_last`] on [`Kernel::Avx512Vnni`], where asked for
    /// ([`PackedWeights::with_point_tiles`]): the weights in panels of
    /// [`CL_ROWS`] rows, `[panel][k / 4][row][4]`, one quad of every row of a
    /// panel in two vectors.
    wide: Vec<i8>,
    /// Per row, `zero · Σ_k w[o, k]`: what the activations' zero point adds
    /// (`(zero − 128) · Σ_k w[o, k]` for kernels that shift the activations).
    offsets: Vec<i32>,
    /// Per row, the factor from an `i32` sum to `f32` (as bits, for `Hash`).
    scales: Vec<u32>,
    /// Per row, the value added after scaling (the bias; as bits).
    shifts: Vec<u32>,
    /// The kernel these weights are packed for.
    kernel: Kernel,
}

/// Groups of four `k` in `k` values.
fn quads_of(k: usize) -> usize {
    k.div_ceil(4)
}

impl PackedWeights {
    /// Packs `weights` (`m × k`, row-major, `i8`) for activations with zero point
    /// `zero`; output row `o` is `(sum − zero · Σ w[o]) · scales[o] + shifts[o]`.
    pub fn new(
        weights: &[i8],
        m: usize,
        k: usize,
        zero: u8,
        scales: &[f32],
        shifts: &[f32],
        kernel: Kernel,
    ) -> PackedWeights {
        assert_eq!(weights.len(), m * k, "weights are not m × k");
        assert!(
            scales.len() == m && shifts.len() == m,
            "one scale and shift a row"
        );
        let (panels, kq) = (m.div_ceil(MR), quads_of(k));
        let mut quads = vec![0i8; panels * kq * MR * 4];
        for (o, row) in weights.chunks_exact(k).enumerate() {
            let (panel, r) = (o / MR, o % MR);
            for (i, &w) in row.iter().enumerate() {
                quads[((panel * kq + i / 4) * MR + r) * 4 + i % 4] = w;
            }
        }
        let pairs = if kernel == Kernel::Avx2 {
            quads
                .chunks_exact(4)
                .flat_map(|q| {
                    let pair =
                        |a: i8, b: i8| (a as i16 as u16 as u32) | ((b as i16 as u16 as u32) << 16);
                    [pair(q[0], q[2]), pair(q[1], q[3])]
                })
                .collect()
        } else {
            Vec::new()
        };
        // Σ w·x = Σ w·(x − 128) + 128 · Σ w, for the kernels that sum the former.
        let zero = i32::from(zero) - if kernel.shifts_activations() { 128 } else { 0 };
        let offsets = weights
            .chunks_exact(k.max(1))
            .take(m)
            .map(|row| zero * row.iter().map(|&w| i32::from(w)).sum::<i32>())
            .collect();
        PackedWeights {
            m,
            k,
            quads,
            pairs,
            wide: Vec::new(),
            offsets: if k == 0 { vec![0; m] } else { offsets },
            scales: scales.iter().map(|s| s.to_bits()).collect(),
            shifts: shifts.iter().map(|s| s.to_bits()).collect(),
            kernel,
        }
    }

    /// The kernel these weights run on.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// These weights, also packed for the point-tile kernel of
    /// [`product_channels_last`] where this CPU has one (AVX-512 VNNI), which
    /// stores each point's channels as one run instead of transposing tiles.
    pub fn with_point_tiles(&self) -> PackedWeights {
        let mut packed = self.clone();
        if self.kernel != Kernel::Avx512Vnni {
            return packed;
        }
        let (m, kq) = (self.m, quads_of(self.k));
        packed.wide = vec![0i8; m.div_ceil(CL_ROWS) * kq * CL_ROWS * 4];
        for o in 0..m {
            let (panel, r) = (o / MR, o % MR);
            let (wide_panel, wide_r) = (o / CL_ROWS, o % CL_ROWS);
            for q in 0..kq {
                let from = ((panel * kq + q) * MR + r) * 4;
                let to = ((wide_panel * kq + q) * CL_ROWS + wide_r) * 4;
                packed.wide[to..to + 4].copy_from_slice(&self.quads[from..from + 4]);
            }
        }
        packed
    }
}

/// Packs `columns` columns of a `k`-row `u8` matrix (row `r` at
/// `matrix[r * stride..]`) into [`NR`]-column panels (`[panel][k / 4][column][4]`),
/// into `out`, resized to fit. Padding rows and columns hold `fill`.
pub fn pack_columns(
    matrix: &[u8],
    k: usize,
    stride: usize,
    columns: usize,
    fill: u8,
    out: &mut Vec<u8>,
) {
    let (panels, kq) = (columns.div_ceil(NR), quads_of(k));
    // Every byte is written below (padding with `fill`): no clearing pass.
    out.resize(panels * kq * NR * 4, fill);
    let row = |r: usize| &matrix[r * stride..r * stride + columns];
    for q in 0..kq {
        let rows: [Option<&[u8]>; 4] =
            std::array::from_fn(|j| (4 * q + j < k).then(|| row(4 * q + j)));
        for panel in 0..panels {
            let first = panel * NR;
            let width = NR.min(columns - first);
            let dst = &mut out[(panel * kq + q) * NR * 4..][..NR * 4];
            interleave4(&rows, first, width, dst, fill);
            dst[4 * width..].fill(fill);
        }
    }
}

/// Packs `columns` points of a channels-last `u8` matrix (point `c`'s `k`
/// values at `matrix[c * k..]`) into the panels [`pack_columns`] writes for the
/// transposed, `[k, columns]`, matrix. A point's four values of a quad are
/// adjacent here already, so each moves as one 32-bit word.
pub fn pack_points(matrix: &[u8], k: usize, columns: usize, fill: u8, out: &mut Vec<u8>) {
    let (panels, kq) = (columns.div_ceil(NR), quads_of(k));
    // Every byte is written below (padding with `fill`): no clearing pass.
    out.resize(panels * kq * NR * 4, fill);
    let whole = k / 4;
    assert!(
        matrix.len() >= columns * k,
        "pack_points: matrix shorter than its points"
    );
    for panel in 0..panels {
        let first = panel * NR;
        let width = NR.min(columns - first);
        let dst = &mut out[panel * kq * NR * 4..(panel + 1) * kq * NR * 4];
        // Blocks of 4 points × 4 quads, transposed as 4 × 4 words.
        let (points_done, quads_done) = match cfg!(target_arch = "x86_64") {
            true => (width / 4 * 4, whole / 4 * 4),
            false => (0, 0),
        };
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            for c in (0..points_done).step_by(4) {
                for q in (0..quads_done).step_by(4) {
                    // SAFETY: SSE2 is part of x86-64. Each load reads quads q..q + 4
                    // of point first + c + j (16 bytes within its `k`, as q + 4 ≤
                    // k / 4), inside `matrix` (asserted above); each store writes
                    // 4 words of quad row q + i at columns c..c + 4 < NR, inside
                    // the panel.
                    unsafe {
                        let load = |j: usize| {
                            _mm_loadu_si128(
                                matrix.as_ptr().add((first + c + j) * k + 4 * q) as *const __m128i
                            )
                        };
                        let (r0, r1, r2, r3) = (load(0), load(1), load(2), load(3));
                        let (t0, t1) = (_mm_unpacklo_epi32(r0, r1), _mm_unpackhi_epi32(r0, r1));
                        let (t2, t3) = (_mm_unpacklo_epi32(r2, r3), _mm_unpackhi_epi32(r2, r3));
                        let rows = [
                            _mm_unpacklo_epi64(t0, t2),
                            _mm_unpackhi_epi64(t0, t2),
                            _mm_unpacklo_epi64(t1, t3),
                            _mm_unpackhi_epi64(t1, t3),
                        ];
                        for (i, row) in rows.into_iter().enumerate() {
                            let at = ((q + i) * NR + c) * 4;
                            _mm_storeu_si128(dst.as_mut_ptr().add(at) as *mut __m128i, row);
                        }
                    }
                }
            }
        }
        for c in 0..width {
            let point = &matrix[(first + c) * k..(first + c + 1) * k];
            let quads_from = if c < points_done { quads_done } else { 0 };
            for (q, quad) in point.chunks_exact(4).enumerate().skip(quads_from) {
                dst[(q * NR + c) * 4..][..4].copy_from_slice(quad);
            }
            // The last, partial quad, padded with `fill`.
            if whole < kq {
                let quad = &mut dst[(whole * NR + c) * 4..][..4];
                quad.fill(fill);
                quad[..k - whole * 4].copy_from_slice(&point[whole * 4..]);
            }
        }
        // Points past the last, in a partial panel.
        for q in 0..kq {
            dst[(q * NR + width) * 4..(q + 1) * NR * 4].fill(fill);
        }
    }
}

/// `dst[4c + j] = rows[j][first + c]` for `c < width`, and `fill` for missing rows.
#[inline]
fn interleave4(rows: &[Option<&[u8]>; 4], first: usize, width: usize, dst: &mut [u8], fill: u8) {
    // Advanced only by the x86-64 vector loop.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if let [Some(a), Some(b), Some(c), Some(d)] = rows {
        use std::arch::x86_64::*;
        while done + 16 <= width {
            let at = first + done;
            // SAFETY: SSE2 is part of x86-64. 16 bytes are read from each row at
            // `at`, and `at + 16 ≤ first + width ≤ row.len()`; 64 bytes are written
            // at `4 · done`, and `4 · (done + 16) ≤ 4 · width ≤ dst.len()`.
            unsafe {
                let load = |r: &[u8]| _mm_loadu_si128(r.as_ptr().add(at) as *const __m128i);
                let (a, b, c, d) = (load(a), load(b), load(c), load(d));
                let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
                let (cd_lo, cd_hi) = (_mm_unpacklo_epi8(c, d), _mm_unpackhi_epi8(c, d));
                let out = dst.as_mut_ptr().add(4 * done) as *mut __m128i;
                _mm_storeu_si128(out, _mm_unpacklo_epi16(ab_lo, cd_lo));
                _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(ab_lo, cd_lo));
                _mm_storeu_si128(out.add(2), _mm_unpacklo_epi16(ab_hi, cd_hi));
                _mm_storeu_si128(out.add(3), _mm_unpackhi_epi16(ab_hi, cd_hi));
            }
            done += 16;
        }
    }
    for (j, row) in rows.iter().enumerate() {
        match row {
            Some(row) => {
                for col in done..width {
                    dst[4 * col + j] = row[first + col];
                }
            }
            None => {
                for col in done..width {
                    dst[4 * col + j] = fill;
                }
            }
        }
    }
}

/// Computes the output rows `rows` (starting at a multiple of [`MR`]) at
/// `columns` points from the packed activations `packed` (`k` = `weights.k`):
/// `out[(o - rows.start) · stride + p]` for `o` in `rows`, `p < columns`, each
/// value through `post` (for [`Dst::U8`], its level).
///
/// # Safety
/// `out` must be writable at those places; `rows` within `weights.m`; `packed`
/// as [`pack_columns`] wrote it for `columns` columns of `weights.k` rows.
pub unsafe fn product(
    weights: &PackedWeights,
    rows: std::ops::Range<usize>,
    packed: &[u8],
    columns: usize,
    out: Dst,
    stride: usize,
    post: &Post,
) {
    check_product(weights, &rows, MR, packed, columns, out, post);
    for first in rows.clone().step_by(MR) {
        for cp in 0..columns.div_ceil(NR) {
            let cols = NR.min(columns - cp * NR);
            // SAFETY: the caller's contract; this tile's block of `out` is rows
            // `first..first + MR` of `rows`, columns `cp·NR..+cols`.
            unsafe {
                let out = out.add((first - rows.start) * stride + cp * NR);
                tile(
                    weights,
                    first..rows.end,
                    packed,
                    cp,
                    cols,
                    out,
                    stride,
                    post,
                );
            }
        }
    }
}

/// The argument checks of [`product`] and [`product_channels_last`] (debug
/// builds): rows start at a multiple of `align`, and `packed` holds `columns`.
#[inline]
fn check_product(
    weights: &PackedWeights,
    rows: &std::ops::Range<usize>,
    align: usize,
    packed: &[u8],
    columns: usize,
    out: Dst,
    post: &Post,
) {
    debug_assert!(matches!(out, Dst::F32(_)) || post.fake_quant.is_some());
    debug_assert!(rows.start.is_multiple_of(align) && rows.end <= weights.m);
    debug_assert!(packed.len() >= columns.div_ceil(NR) * quads_of(weights.k) * NR * 4);
}

/// [`product`] into a channels-last output: the value of row `o` at point `p`
/// goes to `out[p · stride + o − rows.start]`; `rows.start` is a multiple of
/// [`CL_ROWS`]. With weights packed [`PackedWeights::with_point_tiles`] on
/// AVX-512 VNNI a kernel with points as rows stores each point's channels as
/// one run; elsewhere each tile is computed into a small buffer, then
/// transposed into place.
///
/// # Safety
/// As [`product`], for the transposed places.
pub unsafe fn product_channels_last(
    weights: &PackedWeights,
    rows: std::ops::Range<usize>,
    packed: &[u8],
    columns: usize,
    out: Dst,
    stride: usize,
    post: &Post,
) {
    check_product(weights, &rows, CL_ROWS, packed, columns, out, post);
    #[cfg(target_arch = "x86_64")]
    if weights.kernel == Kernel::Avx512Vnni && !weights.wide.is_empty() {
        // SAFETY: the caller's contract; the weights were packed for this kernel.
        return unsafe { x86::vnni_points(weights, rows, packed, columns, out, stride, post) };
    }
    // One tile, `MR` rows `NR` apart (levels use its first quarter as bytes).
    let mut buffer = [0f32; MR * NR];
    let tmp = match out {
        Dst::F32(_) => Dst::F32(buffer.as_mut_ptr()),
        Dst::U8(_) => Dst::U8(buffer.as_mut_ptr() as *mut u8),
    };
    // Every row of a panel of points before the next panel: the points' output
    // (`NR` runs of all the rows) is written whole while it is in cache.
    for cp in 0..columns.div_ceil(NR) {
        let cols = NR.min(columns - cp * NR);
        for first in rows.clone().step_by(MR) {
            let tile_rows = MR.min(rows.end - first);
            let at = cp * NR * stride + (first - rows.start);
            // SAFETY: the buffer holds a tile; the caller's contract covers the
            // transposed block `cp·NR..+cols` × `first..+tile_rows` of `out`.
            unsafe {
                tile(weights, first..rows.end, packed, cp, cols, tmp, NR, post);
                match out {
                    Dst::F32(p) => {
                        let tmp = buffer.as_ptr();
                        for c in 0..cols {
                            for r in 0..tile_rows {
                                *p.add(at + c * stride + r) = *tmp.add(r * NR + c);
                            }
                        }
                    }
                    Dst::U8(p) => {
                        let tmp = buffer.as_ptr() as *const u8;
                        transpose_levels(tmp, tile_rows, cols, p.add(at), stride);
                    }
                }
            }
        }
    }
}

/// Copies a tile of levels, `rows` rows `NR` apart at `tile`, to `out` with
/// row `r` of column `c` at `out[c · stride + r]`.
///
/// # Safety
/// `tile` holds `MR × NR` bytes; `out` is writable at those places.
#[inline]
unsafe fn transpose_levels(tile: *const u8, rows: usize, cols: usize, out: *mut u8, stride: usize) {
    // Advanced only by the x86-64 vector loop.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if rows == 8 {
        use std::arch::x86_64::*;
        while done + 16 <= cols {
            // SAFETY: SSE2 is part of x86-64; 16 bytes of each of the 8 rows are
            // read at `done`, within the tile, and 8 bytes written for each of the
            // 16 columns, rows 0..8, the caller's places.
            unsafe {
                let row = |r: usize| _mm_loadu_si128(tile.add(r * NR + done) as *const __m128i);
                let a: [__m128i; 8] = std::array::from_fn(row);
                // Bytes of row pairs, then of row quads, then of all 8 rows, per column.
                let t: [__m128i; 8] = std::array::from_fn(|i| {
                    let (x, y) = (a[2 * (i / 2)], a[2 * (i / 2) + 1]);
                    if i % 2 == 0 {
                        _mm_unpacklo_epi8(x, y)
                    } else {
                        _mm_unpackhi_epi8(x, y)
                    }
                });
                // u[0..4]: rows 0–3 of columns 0–3, 4–7, 8–11, 12–15; u[4..8]: rows 4–7.
                let u: [__m128i; 8] = std::array::from_fn(|i| {
                    let base = 4 * (i / 4);
                    let (x, y) = (t[base + (i % 4) / 2], t[base + 2 + (i % 4) / 2]);
                    if i % 2 == 0 {
                        _mm_unpacklo_epi16(x, y)
                    } else {
                        _mm_unpackhi_epi16(x, y)
                    }
                });
                for i in 0..4 {
                    // Columns 4i..4i + 4, 8 rows each.
                    let lo = _mm_unpacklo_epi32(u[i], u[4 + i]);
                    let hi = _mm_unpackhi_epi32(u[i], u[4 + i]);
                    let col = |j: usize| out.add((done + 4 * i + j) * stride) as *mut __m128i;
                    _mm_storel_epi64(col(0), lo);
                    _mm_storel_epi64(col(1), _mm_unpackhi_epi64(lo, lo));
                    _mm_storel_epi64(col(2), hi);
                    _mm_storel_epi64(col(3), _mm_unpackhi_epi64(hi, hi));
                }
            }
            done += 16;
        }
    }
    for c in done..cols {
        for r in 0..rows {
            // SAFETY: the function's contract.
            unsafe { *out.add(c * stride + r) = *tile.add(r * NR + c) };
        }
    }
}

/// Computes the tile of rows `rows.start..+MR` (within `rows`, which ends at
/// the last valid row) and activation panel `cp` (`cols` valid columns) into
/// `out`, row `r` at `out + r · stride`.
///
/// # Safety
/// As [`product`], for this tile.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn tile(
    weights: &PackedWeights,
    rows: std::ops::Range<usize>,
    packed: &[u8],
    cp: usize,
    cols: usize,
    out: Dst,
    stride: usize,
    post: &Post,
) {
    let kq = quads_of(weights.k);
    let (first, panel) = (rows.start, rows.start / MR);
    let tile = Tile {
        rows: MR.min(rows.end - first),
        offsets: &weights.offsets[first..],
        scales: &weights.scales[first..],
        shifts: &weights.shifts[first..],
        post,
    };
    let x = &packed[cp * kq * NR * 4..(cp + 1) * kq * NR * 4];
    let quads = &weights.quads[panel * kq * MR * 4..];
    // SAFETY: the caller's contract.
    unsafe {
        match weights.kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => x86::vnni(kq, quads, x, &tile, out, stride, cols),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::avx2(
                kq,
                &weights.pairs[panel * kq * MR * 2..],
                x,
                &tile,
                out,
                stride,
                cols,
            ),
            kernel => tile.store_all(&sums(kernel, kq, quads, x), out, stride, cols),
        }
    }
}

/// What turns one panel's sums into `f32`.
struct Tile<'a> {
    /// Valid rows in the panel.
    rows: usize,
    offsets: &'a [i32],
    scales: &'a [u32],
    shifts: &'a [u32],
    post: &'a Post,
}

impl Tile<'_> {
    /// Row `r`'s value for the sum `sum` before the post steps (the same
    /// arithmetic as the vector stores).
    #[inline]
    fn raw(&self, r: usize, sum: i32) -> f32 {
        (sum.wrapping_sub(self.offsets[r]) as f32) * f32::from_bits(self.scales[r])
            + f32::from_bits(self.shifts[r])
    }

    /// Stores row `r`'s value for `sum` at `out + at`.
    ///
    /// # Safety
    /// `out + at` is writable.
    #[inline]
    unsafe fn store(&self, out: Dst, at: usize, r: usize, sum: i32) {
        let v = self.raw(r, sum);
        // SAFETY: the caller's contract.
        unsafe {
            match out {
                Dst::F32(p) => *p.add(at) = self.post.apply(v),
                Dst::U8(p) => *p.add(at) = self.post.level(v) as u8,
            }
        }
    }
}

/// One panel's sums, [`MR`] rows by [`NR`] columns.
type Sums = [[i32; NR]; MR];

impl Tile<'_> {
    /// Stores the panel's values for `sums` at `out + r · stride + c`.
    ///
    /// # Safety
    /// `out` writable at `r · stride + c` for `r < self.rows`, `c < cols`.
    unsafe fn store_all(&self, sums: &Sums, out: Dst, stride: usize, cols: usize) {
        for (r, acc) in sums.iter().enumerate().take(self.rows) {
            for (c, &sum) in acc.iter().enumerate().take(cols) {
                // SAFETY: the function's contract.
                unsafe { self.store(out, r * stride + c, r, sum) };
            }
        }
    }
}

/// One panel's sums by a kernel that leaves the store to [`Tile::store_all`].
///
/// # Safety
/// The CPU runs `kernel`.
unsafe fn sums(kernel: Kernel, kq: usize, w: &[i8], x: &[u8]) -> Sums {
    match kernel {
        // SAFETY: the caller's contract.
        #[cfg(target_arch = "aarch64")]
        Kernel::NeonDot => unsafe { neon::sums_dot(kq, w, x) },
        // SAFETY: NEON is part of aarch64.
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => unsafe { neon::sums(kq, w, x) },
        _ => portable(kq, w, x),
    }
}

/// The kernel in plain Rust: one panel's sums.
fn portable(kq: usize, w: &[i8], x: &[u8]) -> Sums {
    let mut acc = [[0i32; NR]; MR];
    for (wq, xq) in w.chunks_exact(MR * 4).zip(x.chunks_exact(NR * 4)).take(kq) {
        for (acc, wr) in acc.iter_mut().zip(wq.chunks_exact(4)) {
            for (a, xc) in acc.iter_mut().zip(xq.chunks_exact(4)) {
                *a += (0..4)
                    .map(|j| i32::from(xc[j]) * i32::from(wr[j]))
                    .sum::<i32>();
            }
        }
    }
    acc
}

#[cfg(target_arch = "aarch64")]
mod neon {
    //! Both kernels sum `w · (x − 128)`: NEON multiplies `i8` by `i8`, and
    //! [`super::PackedWeights`] folds the `128 · Σ w` into the row offsets. The
    //! values are stored by the portable store, so every kernel gives the same bits.
    use super::{Sums, MR, NR};
    use std::arch::aarch64::*;

    /// `x − 128` as `i8` for 16 packed activations at `p`.
    ///
    /// # Safety
    /// 16 bytes readable at `p`.
    #[inline(always)]
    unsafe fn shifted(p: *const u8) -> int8x16_t {
        // SAFETY: the caller's contract; NEON is part of aarch64.
        unsafe { vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p), vdupq_n_u8(0x80))) }
    }

    /// With `sdot`: 8 columns at a time, 8 rows × 2 vectors of sums; each
    /// instruction adds one row's 4 weights (a lane of `w`) times 4 columns' 4
    /// activations.
    ///
    /// # Safety
    /// The CPU has the dot-product extension.
    #[target_feature(enable = "neon,dotprod")]
    pub(super) unsafe fn sums_dot(kq: usize, w: &[i8], x: &[u8]) -> Sums {
        assert!(w.len() >= kq * MR * 4 && x.len() >= kq * NR * 4);
        // `sdot` by element, written out: its intrinsic is not stable in Rust 1.89.
        macro_rules! sdot {
            ($acc:expr, $x:expr, $w:expr, $lane:literal) => {
                // SAFETY: a register-only instruction the CPU has (the target feature).
                unsafe {
                    std::arch::asm!(
                        concat!("sdot {a:v}.4s, {x:v}.16b, {w:v}.4b[", $lane, "]"),
                        a = inout(vreg) $acc,
                        x = in(vreg) $x,
                        w = in(vreg) $w,
                        options(pure, nomem, nostack, preserves_flags)
                    )
                }
            };
        }
        let mut out = [[0i32; NR]; MR];
        for chunk in 0..NR / 8 {
            let mut acc = [[vdupq_n_s32(0); 2]; MR];
            for q in 0..kq {
                // SAFETY: in bounds (asserted above): weights `q · MR · 4 + 32`,
                // activations `q · NR · 4 + 32 · chunk + 32`.
                let (w0, w1, x0, x1) = unsafe {
                    let wp = w.as_ptr().add(q * MR * 4);
                    let xp = x.as_ptr().add(q * NR * 4 + chunk * 32);
                    (
                        vld1q_s8(wp),
                        vld1q_s8(wp.add(16)),
                        shifted(xp),
                        shifted(xp.add(16)),
                    )
                };
                sdot!(acc[0][0], x0, w0, 0);
                sdot!(acc[0][1], x1, w0, 0);
                sdot!(acc[1][0], x0, w0, 1);
                sdot!(acc[1][1], x1, w0, 1);
                sdot!(acc[2][0], x0, w0, 2);
                sdot!(acc[2][1], x1, w0, 2);
                sdot!(acc[3][0], x0, w0, 3);
                sdot!(acc[3][1], x1, w0, 3);
                sdot!(acc[4][0], x0, w1, 0);
                sdot!(acc[4][1], x1, w1, 0);
                sdot!(acc[5][0], x0, w1, 1);
                sdot!(acc[5][1], x1, w1, 1);
                sdot!(acc[6][0], x0, w1, 2);
                sdot!(acc[6][1], x1, w1, 2);
                sdot!(acc[7][0], x0, w1, 3);
                sdot!(acc[7][1], x1, w1, 3);
            }
            for (row, acc) in out.iter_mut().zip(&acc) {
                let at = &mut row[chunk * 8..chunk * 8 + 8];
                // SAFETY: 8 `i32` writable at `at`.
                unsafe {
                    vst1q_s32(at.as_mut_ptr(), acc[0]);
                    vst1q_s32(at.as_mut_ptr().add(4), acc[1]);
                }
            }
        }
        out
    }

    /// Plain NEON: 4 columns at a time. `smull` multiplies 2 columns' 4
    /// activations by a row's 4 weights (broadcast) into `i16` (exact: |product|
    /// ≤ 2¹⁴), `sadalp` adds neighbouring pairs into `i32`, and one `addp` at the
    /// end folds the two pairs of each column.
    ///
    /// # Safety
    /// None beyond aarch64 (NEON is part of it).
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn sums(kq: usize, w: &[i8], x: &[u8]) -> Sums {
        assert!(w.len() >= kq * MR * 4 && x.len() >= kq * NR * 4);
        let mut out = [[0i32; NR]; MR];
        for chunk in 0..NR / 4 {
            let mut lo = [vdupq_n_s32(0); MR];
            let mut hi = [vdupq_n_s32(0); MR];
            for q in 0..kq {
                // SAFETY: in bounds (asserted above): activations `q · NR · 4 +
                // 16 · chunk + 16`, weights `q · MR · 4 + 4 · MR`.
                unsafe {
                    let xv = shifted(x.as_ptr().add(q * NR * 4 + chunk * 16));
                    let wp = w.as_ptr().add(q * MR * 4) as *const i32;
                    for r in 0..MR {
                        // The weights are `i8`: no alignment promised for the `i32` read.
                        let wb = vreinterpretq_s8_s32(vdupq_n_s32(wp.add(r).read_unaligned()));
                        lo[r] = vpadalq_s16(lo[r], vmull_s8(vget_low_s8(xv), vget_low_s8(wb)));
                        hi[r] = vpadalq_s16(hi[r], vmull_high_s8(xv, wb));
                    }
                }
            }
            for (row, (lo, hi)) in out.iter_mut().zip(lo.iter().zip(&hi)) {
                // SAFETY: 4 `i32` writable at `row[4 · chunk]`.
                unsafe { vst1q_s32(row[chunk * 4..].as_mut_ptr(), vpaddq_s32(*lo, *hi)) };
            }
        }
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{quads_of, Dst, PackedWeights, Post, Tile, CL_ROWS, MR, NR};
    use std::arch::x86_64::*;

    /// AVX-512 VNNI: [`MR`] rows × [`NR`] columns in 16 vectors of sums.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `w` holds `kq · MR · 4` values and `x`
    /// `kq · NR · 4`; `out` as in [`super::portable`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn vnni(
        kq: usize,
        w: &[i8],
        x: &[u8],
        tile: &Tile,
        out: Dst,
        stride: usize,
        cols: usize,
    ) {
        assert!(w.len() >= kq * MR * 4 && x.len() >= kq * NR * 4);
        let mut acc = [[_mm512_setzero_si512(); 2]; MR];
        let (w, x) = (w.as_ptr() as *const i32, x.as_ptr());
        for q in 0..kq {
            // SAFETY: in bounds (asserted above).
            unsafe {
                let x0 = _mm512_loadu_si512(x.add(q * NR * 4) as *const _);
                let x1 = _mm512_loadu_si512(x.add(q * NR * 4 + 64) as *const _);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let b = _mm512_set1_epi32(w.add(q * MR + r).read_unaligned());
                    acc[0] = _mm512_dpbusd_epi32(acc[0], x0, b);
                    acc[1] = _mm512_dpbusd_epi32(acc[1], x1, b);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(tile.rows) {
            let offset = _mm512_set1_epi32(tile.offsets[r]);
            let scale = _mm512_set1_ps(f32::from_bits(tile.scales[r]));
            let shift = _mm512_set1_ps(f32::from_bits(tile.shifts[r]));
            for (h, &sum) in acc.iter().enumerate() {
                let valid = cols.saturating_sub(h * 16).min(16);
                if valid == 0 {
                    break;
                }
                let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(sum, offset));
                let v = _mm512_add_ps(_mm512_mul_ps(v, scale), shift);
                let mask = ((1u32 << valid) - 1) as u16;
                // SAFETY: the caller's contract; the mask covers `valid` columns.
                unsafe { finish(v, tile.post, out, r * stride + h * 16, mask) };
            }
        }
    }

    /// The steps of `post` on 16 scaled values, then a masked store of those
    /// in `mask` at `out + at`: levels for [`Dst::U8`], values for [`Dst::F32`].
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW; `out + at` is writable for the masked lanes.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn finish(mut v: __m512, post: &Post, out: Dst, at: usize, mask: u16) {
        // max/min return their second operand for NaN, as f32::max/min.
        if let Some([lo, hi]) = post.clamp {
            v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(lo)), _mm512_set1_ps(hi));
        }
        if let Some([inv, zero, scale]) = post.quant_for(out) {
            let t = _mm512_mul_ps(v, _mm512_set1_ps(inv));
            let t = _mm512_min_ps(
                _mm512_max_ps(t, _mm512_set1_ps(-1024.0)),
                _mm512_set1_ps(1024.0),
            );
            let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
            let t = _mm512_add_ps(t, _mm512_set1_ps(zero));
            let t = _mm512_min_ps(_mm512_max_ps(t, _mm512_setzero_ps()), _mm512_set1_ps(255.0));
            if let Dst::U8(p) = out {
                // SAFETY: the caller's contract.
                unsafe {
                    _mm512_mask_cvtusepi32_storeu_epi8(
                        p.add(at) as *mut i8,
                        mask,
                        _mm512_cvtps_epi32(t),
                    )
                };
                return;
            }
            v = _mm512_mul_ps(
                _mm512_sub_ps(t, _mm512_set1_ps(zero)),
                _mm512_set1_ps(scale),
            );
        }
        if let Dst::F32(p) = out {
            // SAFETY: the caller's contract.
            unsafe { _mm512_mask_storeu_ps(p.add(at), mask, v) };
        }
    }

    /// [`super::product_channels_last`] with AVX-512 VNNI, points as rows: a
    /// tile is 8 points × [`CL_ROWS`] channels (16 vectors of sums), each
    /// point's quad broadcast against two vectors of weights, so each point's
    /// channels are stored as one run. The sums, and so the values, are those
    /// of [`vnni`].
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VNNI; `weights.wide` is packed; the rest as
    /// [`super::product_channels_last`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn vnni_points(
        weights: &PackedWeights,
        rows: std::ops::Range<usize>,
        packed: &[u8],
        columns: usize,
        out: Dst,
        stride: usize,
        post: &Post,
    ) {
        const POINTS: usize = 8;
        let kq = quads_of(weights.k);
        assert!(
            rows.end <= weights.m
                && rows.start.is_multiple_of(CL_ROWS)
                && packed.len() >= columns.div_ceil(NR) * kq * NR * 4
                && weights.wide.len() >= weights.m.div_ceil(CL_ROWS) * kq * CL_ROWS * 4
        );
        for first in (0..columns).step_by(POINTS) {
            let points = POINTS.min(columns - first);
            // Quad `q` of point `first + i` is the word at `x + (q · NR + i) · 4`.
            let (cp, col) = (first / NR, first % NR);
            let x = packed[(cp * kq * NR + col) * 4..].as_ptr() as *const i32;
            for row in rows.clone().step_by(CL_ROWS) {
                let valid = CL_ROWS.min(rows.end - row);
                let w = weights.wide[row / CL_ROWS * kq * CL_ROWS * 4..].as_ptr();
                let mut acc = [[_mm512_setzero_si512(); 2]; POINTS];
                for q in 0..kq {
                    // SAFETY: in bounds (asserted above; a partial panel of points
                    // reads packed padding).
                    unsafe {
                        let w0 = _mm512_loadu_si512(w.add(q * CL_ROWS * 4) as *const _);
                        let w1 = _mm512_loadu_si512(w.add(q * CL_ROWS * 4 + 64) as *const _);
                        for (i, acc) in acc.iter_mut().enumerate() {
                            let b = _mm512_set1_epi32(x.add(q * NR + i).read_unaligned());
                            acc[0] = _mm512_dpbusd_epi32(acc[0], b, w0);
                            acc[1] = _mm512_dpbusd_epi32(acc[1], b, w1);
                        }
                    }
                }
                for h in 0..2 {
                    let lanes = valid.saturating_sub(16 * h).min(16);
                    if lanes == 0 {
                        break;
                    }
                    let mask = ((1u32 << lanes) - 1) as u16;
                    let at = row + 16 * h;
                    // SAFETY: the masked lanes are rows below `weights.m`.
                    let (offset, scale, shift) = unsafe {
                        (
                            _mm512_maskz_loadu_epi32(mask, weights.offsets[at..].as_ptr()),
                            _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(
                                mask,
                                weights.scales[at..].as_ptr() as *const i32,
                            )),
                            _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(
                                mask,
                                weights.shifts[at..].as_ptr() as *const i32,
                            )),
                        )
                    };
                    for (i, acc) in acc.iter().enumerate().take(points) {
                        let v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[h], offset));
                        let v = _mm512_add_ps(_mm512_mul_ps(v, scale), shift);
                        let place = (first + i) * stride + at - rows.start;
                        // SAFETY: the caller's contract for point `first + i`.
                        unsafe { finish(v, post, out, place, mask) };
                    }
                }
            }
        }
    }

    /// AVX2: each quad of `u8` as two `i16` pairs (bytes 0 and 2, 1 and 3) against
    /// the matching weight pairs with `vpmaddwd`; exact, no saturation. The
    /// [`NR`] columns go in four blocks of 8 to keep the sums in registers.
    ///
    /// # Safety
    /// The CPU has AVX2; `w` holds `kq · MR · 2` pairs and `x` `kq · NR · 4`
    /// values; `out` as in [`super::portable`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn avx2(
        kq: usize,
        w: &[u32],
        x: &[u8],
        tile: &Tile,
        out: Dst,
        stride: usize,
        cols: usize,
    ) {
        assert!(w.len() >= kq * MR * 2 && x.len() >= kq * NR * 4);
        let low_bytes = _mm256_set1_epi16(0xff);
        for block in 0..NR / 8 {
            if block * 8 >= cols {
                break;
            }
            let mut acc = [_mm256_setzero_si256(); MR];
            for q in 0..kq {
                // SAFETY: in bounds (asserted above).
                unsafe {
                    let v = _mm256_loadu_si256(x.as_ptr().add(q * NR * 4 + block * 32) as *const _);
                    let even = _mm256_and_si256(v, low_bytes);
                    let odd = _mm256_srli_epi16(v, 8);
                    let wq = w.as_ptr().add(q * MR * 2);
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let w02 = _mm256_set1_epi32(*wq.add(2 * r) as i32);
                        let w13 = _mm256_set1_epi32(*wq.add(2 * r + 1) as i32);
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(even, w02));
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(odd, w13));
                    }
                }
            }
            let valid = (cols - block * 8).min(8);
            for (r, &sum) in acc.iter().enumerate().take(tile.rows) {
                let offset = _mm256_set1_epi32(tile.offsets[r]);
                let scale = _mm256_set1_ps(f32::from_bits(tile.scales[r]));
                let shift = _mm256_set1_ps(f32::from_bits(tile.shifts[r]));
                let v = _mm256_cvtepi32_ps(_mm256_sub_epi32(sum, offset));
                let mut v = _mm256_add_ps(_mm256_mul_ps(v, scale), shift);
                if let Some([lo, hi]) = tile.post.clamp {
                    v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
                }
                let at = r * stride + block * 8;
                let quant = tile.post.quant_for(out);
                if let Some([inv, zero, scale]) = quant {
                    let t = _mm256_mul_ps(v, _mm256_set1_ps(inv));
                    let t = _mm256_min_ps(
                        _mm256_max_ps(t, _mm256_set1_ps(-1024.0)),
                        _mm256_set1_ps(1024.0),
                    );
                    let t = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
                    let t = _mm256_add_ps(t, _mm256_set1_ps(zero));
                    let t =
                        _mm256_min_ps(_mm256_max_ps(t, _mm256_setzero_ps()), _mm256_set1_ps(255.0));
                    if let Dst::U8(p) = out {
                        // Levels 0..=255 as i32, packed to bytes within each 128-bit
                        // lane, then the two lanes' four bytes side by side.
                        let i = _mm256_cvtps_epi32(t);
                        let w = _mm256_packus_epi32(i, i);
                        let b = _mm256_packus_epi16(w, w);
                        let bytes = _mm_unpacklo_epi32(
                            _mm256_castsi256_si128(b),
                            _mm256_extracti128_si256::<1>(b),
                        );
                        let mut lanes = [0u8; 16];
                        // SAFETY: `lanes` holds 16 bytes; the caller's contract
                        // for `valid` bytes from `at`.
                        unsafe {
                            _mm_storeu_si128(lanes.as_mut_ptr() as *mut __m128i, bytes);
                            std::ptr::copy_nonoverlapping(lanes.as_ptr(), p.add(at), valid);
                        }
                        continue;
                    }
                    v = _mm256_mul_ps(
                        _mm256_sub_ps(t, _mm256_set1_ps(zero)),
                        _mm256_set1_ps(scale),
                    );
                }
                if let Dst::F32(p) = out {
                    // SAFETY: the caller's contract, `valid` columns from `block · 8`.
                    unsafe {
                        let dst = p.add(at);
                        if valid == 8 {
                            _mm256_storeu_ps(dst, v);
                        } else {
                            let mut lanes = [0f32; 8];
                            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
                            std::ptr::copy_nonoverlapping(lanes.as_ptr(), dst, valid);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes.
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    /// One product's operands.
    struct Case {
        w: Vec<i8>,
        x: Vec<u8>,
        mkn: (usize, usize, usize),
        zero: u8,
        scales: Vec<f32>,
        shifts: Vec<f32>,
    }

    impl Case {
        /// `(Σ w·x − zero·Σw) · scale + shift`, one value at a time.
        fn naive(&self) -> Vec<f32> {
            let (m, k, n) = self.mkn;
            let mut out = vec![0f32; m * n];
            for o in 0..m {
                let row = &self.w[o * k..(o + 1) * k];
                let offset = i32::from(self.zero) * row.iter().map(|&w| i32::from(w)).sum::<i32>();
                for p in 0..n {
                    let sum: i32 = (0..k)
                        .map(|i| i32::from(row[i]) * i32::from(self.x[i * n + p]))
                        .sum();
                    out[o * n + p] = ((sum - offset) as f32) * self.scales[o] + self.shifts[o];
                }
            }
            out
        }

        /// The weights packed for `kernel`, and the activations.
        fn packed(&self, kernel: Kernel) -> (PackedWeights, Vec<u8>) {
            let (m, k, n) = self.mkn;
            let packed_w =
                PackedWeights::new(&self.w, m, k, self.zero, &self.scales, &self.shifts, kernel);
            let mut packed = Vec::new();
            pack_columns(&self.x, k, n, n, self.zero, &mut packed);
            (packed_w, packed)
        }

        /// The rows `rows` by `kernel`, each value through `post`.
        fn run(&self, kernel: Kernel, rows: std::ops::Range<usize>, post: &Post) -> Vec<f32> {
            let n = self.mkn.2;
            let (packed_w, packed) = self.packed(kernel);
            let mut out = vec![f32::NAN; rows.len() * n];
            let dst = Dst::F32(out.as_mut_ptr());
            // SAFETY: `out` holds `rows × n` values; `packed` was packed for `n` columns.
            unsafe { product(&packed_w, rows, &packed, n, dst, n, post) };
            out
        }

        /// The rows `rows` by `kernel` as levels (`post` must quantise).
        fn levels(&self, kernel: Kernel, rows: std::ops::Range<usize>, post: &Post) -> Vec<u8> {
            let n = self.mkn.2;
            let (packed_w, packed) = self.packed(kernel);
            // A canary after the block: the stores write nothing past it.
            let mut out = vec![0xA5u8; rows.len() * n + 64];
            let dst = Dst::U8(out.as_mut_ptr());
            // SAFETY: `out` holds `rows × n` values; `packed` was packed for `n` columns.
            unsafe { product(&packed_w, rows.clone(), &packed, n, dst, n, post) };
            assert!(out[rows.len() * n..].iter().all(|&b| b == 0xA5));
            out.truncate(rows.len() * n);
            out
        }
    }

    /// Every kernel this CPU runs equals the naive sum, bit for bit, on shapes
    /// with partial panels in both directions and `k` not a multiple of 4, for
    /// several zero points, with and without steps in the store, for a part of
    /// the rows; and on extreme values (255 × −128 everywhere).
    #[test]
    fn kernels_equal_the_naive_product() {
        let shapes = [
            (1, 1, 1),
            (8, 4, 32),
            (9, 5, 33),
            (17, 3, 70),
            (96, 16, 100),
            (24, 27, 1000),
            (13, 150, 47),
        ];
        let post = Post {
            clamp: Some([-20.0, 30.0]),
            fake_quant: Some([1.0 / 0.3, 100.0, 0.3]),
        };
        for (seed, &(m, k, n)) in shapes.iter().enumerate() {
            for zero in [0u8, 3, 128, 255] {
                let case = Case {
                    w: bytes(m * k, seed as u64)
                        .into_iter()
                        .map(|b| b as i8)
                        .collect(),
                    x: bytes(k * n, 100 + seed as u64),
                    mkn: (m, k, n),
                    zero,
                    scales: (0..m).map(|o| 0.001 * (o + 1) as f32).collect(),
                    shifts: (0..m).map(|o| o as f32 - 3.5).collect(),
                };
                let want = case.naive();
                let stepped: Vec<f32> = want.iter().map(|v| post.apply(*v)).collect();
                let levels: Vec<u8> = want.iter().map(|v| post.level(*v) as u8).collect();
                // A level dequantised is the stepped value, bit for bit.
                let [_, z, sc] = post.fake_quant.unwrap();
                for (l, v) in levels.iter().zip(&stepped) {
                    assert_eq!((f32::from(*l) - z) * sc, *v);
                }
                for kernel in Kernel::detected() {
                    let what = format!("{kernel:?} m {m} k {k} n {n} zero {zero}");
                    assert_eq!(case.run(kernel, 0..m, &Post::default()), want, "{what}");
                    assert_eq!(case.run(kernel, 0..m, &post), stepped, "{what} with steps");
                    assert_eq!(case.levels(kernel, 0..m, &post), levels, "{what} levels");
                    // No clamp, and a scale that saturates most values at 0 or 255.
                    let wide = Post {
                        clamp: None,
                        fake_quant: Some([1.0 / 0.01, 128.0, 0.01]),
                    };
                    let wide_levels: Vec<u8> = want.iter().map(|v| wide.level(*v) as u8).collect();
                    assert_eq!(case.levels(kernel, 0..m, &wide), wide_levels, "{what} wide");
                    if m > MR {
                        let part = case.run(kernel, MR..m, &Post::default());
                        assert_eq!(part, want[MR * n..], "{what} rows {MR}..");
                        let part = case.levels(kernel, MR..m, &post);
                        assert_eq!(part, levels[MR * n..], "{what} levels rows {MR}..");
                    }
                }
            }
        }
        let (m, k, n) = (9, 1001, 35);
        let extreme = Case {
            w: vec![-128i8; m * k],
            x: vec![255u8; k * n],
            mkn: (m, k, n),
            zero: 0,
            scales: vec![1.0; m],
            shifts: vec![0.0; m],
        };
        let want = extreme.naive();
        assert_eq!(want[0], (255 * -128 * k as i32) as f32);
        for kernel in Kernel::detected() {
            assert_eq!(
                extreme.run(kernel, 0..m, &Post::default()),
                want,
                "{kernel:?}"
            );
        }
    }

    /// A channels-last input packs as its transpose does, and a channels-last
    /// product stores the transpose of the product, values and levels, for
    /// every kernel, partial tiles in both directions, `k` not a multiple of 4,
    /// and a part of the rows.
    #[test]
    fn channels_last_products_are_the_transposed_products() {
        let post = Post {
            clamp: Some([-20.0, 30.0]),
            fake_quant: Some([1.0 / 0.3, 100.0, 0.3]),
        };
        for (seed, &(m, k, n)) in [
            (8, 4, 32),
            (9, 5, 33),
            (24, 96, 70),
            (40, 16, 16),
            (13, 7, 5),
            (144, 24, 45),
            (70, 8, 9),
        ]
        .iter()
        .enumerate()
        {
            let x = bytes(k * n, 200 + seed as u64);
            let points: Vec<u8> = (0..n * k).map(|i| x[(i % k) * n + i / k]).collect();
            // Stale bytes in both buffers: packing must overwrite every one.
            let (mut by_rows, mut by_points) = (vec![0x11; 1 << 16], vec![0x77; 1 << 16]);
            pack_columns(&x, k, n, n, 9, &mut by_rows);
            pack_points(&points, k, n, 9, &mut by_points);
            assert_eq!(by_rows, by_points, "packing m {m} k {k} n {n}");
            let w: Vec<i8> = bytes(m * k, seed as u64)
                .into_iter()
                .map(|b| b as i8)
                .collect();
            let scales: Vec<f32> = (0..m).map(|o| 0.001 * (o + 1) as f32).collect();
            let shifts: Vec<f32> = (0..m).map(|o| o as f32 - 3.5).collect();
            for kernel in Kernel::detected() {
                let what = format!("{kernel:?} m {m} k {k} n {n}");
                let by_rows_w = PackedWeights::new(&w, m, k, 3, &scales, &shifts, kernel);
                let by_points_w = by_rows_w.with_point_tiles();
                for (rows, packed_w) in [
                    (0..m, &by_rows_w),
                    (CL_ROWS.min(m / CL_ROWS * CL_ROWS)..m, &by_rows_w),
                    (0..m, &by_points_w),
                    (CL_ROWS.min(m / CL_ROWS * CL_ROWS)..m, &by_points_w),
                ] {
                    let r = rows.len();
                    let mut want = vec![0u8; r * n];
                    let mut got = vec![0xA5u8; n * r + 64];
                    let mut want_f = vec![0f32; r * n];
                    let mut got_f = vec![f32::NAN; n * r];
                    // SAFETY: each buffer holds the `r × n` block.
                    unsafe {
                        product(
                            &by_rows_w,
                            rows.clone(),
                            &by_rows,
                            n,
                            Dst::U8(want.as_mut_ptr()),
                            n,
                            &post,
                        );
                        product_channels_last(
                            packed_w,
                            rows.clone(),
                            &by_points,
                            n,
                            Dst::U8(got.as_mut_ptr()),
                            r,
                            &post,
                        );
                        product(
                            &by_rows_w,
                            rows.clone(),
                            &by_rows,
                            n,
                            Dst::F32(want_f.as_mut_ptr()),
                            n,
                            &Post::default(),
                        );
                        product_channels_last(
                            packed_w,
                            rows.clone(),
                            &by_points,
                            n,
                            Dst::F32(got_f.as_mut_ptr()),
                            r,
                            &Post::default(),
                        );
                    }
                    assert!(
                        got[n * r..].iter().all(|&b| b == 0xA5),
                        "{what}: wrote past the end"
                    );
                    for o in 0..r {
                        for p in 0..n {
                            assert_eq!(got[p * r + o], want[o * n + p], "{what} levels {o},{p}");
                            assert_eq!(got_f[p * r + o], want_f[o * n + p], "{what} {o},{p}");
                        }
                    }
                }
            }
        }
    }

    /// Packing puts column `c`'s rows `4q..4q + 4` together, and pads with `fill`.
    #[test]
    fn packing_interleaves_four_rows_per_column() {
        let (k, n) = (6, 40);
        let x: Vec<u8> = (0..k * n).map(|i| i as u8).collect();
        // Stale bytes from an earlier block: the padding must be written.
        let mut packed = vec![0xEE; 4096];
        pack_columns(&x, k, n, n, 7, &mut packed);
        assert_eq!(packed.len(), 2 * 2 * NR * 4);
        // Columns past `n` in the last panel are padding too.
        for c in 0..2 * NR {
            let (panel, col) = (c / NR, c % NR);
            for r in 0..8 {
                let got = packed[((panel * 2 + r / 4) * NR + col) * 4 + r % 4];
                let want = if r < k && c < n { x[r * n + c] } else { 7 };
                assert_eq!(got, want, "column {c} row {r}");
            }
        }
    }
}
