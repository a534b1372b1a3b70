//! Convolutions without im2col: the matrix product reads its columns straight
//! from a zero-padded copy of the input.
//!
//! With im2col, a 3×3 convolution writes every input value nine times into the
//! column matrix, then `gemm` reads that matrix and packs it once more before
//! multiplying. YOLOv8 spends most of its time in such products.
//!
//! At stride 1, output point `(y, x)` and tap `(c, ky, kx)` read input
//! `(c, y + ky·dh, x + kx·dw)` of the padded plane. Number output points by their
//! place in the padded plane, `q = y · PW + x` (PW the padded width). Then the
//! tap's input is `q + offset(c, ky, kx)` for every point: consecutive points read
//! consecutive inputs, across row ends too. A tile of consecutive `q` is one
//! vector load per tap, with no copy. Points with `x ≥ OW` (the last `PW − OW` of
//! each padded row) are computed and dropped; that wastes `(KW−1)·dw / PW` of
//! the work (1 in 11 at 3×3 on a 20-wide plane).
//!
//! Stride `s` becomes stride 1 by splitting the padded plane into its `s × s`
//! phases (rows `≡ py`, columns `≡ px` mod `s`): tap `(ky, kx)` reads phase
//! `(ky·dh mod s, kx·dw mod s)` at `(y + ky·dh / s, x + kx·dw / s)`, again one
//! offset for every point.
//!
//! Bands of output rows run one after the other (and on different threads):
//! each copies the padded rows it reads into a buffer that stays in cache.
//!
//! The weights are packed once, at load: `[block of MR channels][K][MR]`, so
//! that a tile broadcasts MR consecutive weights per tap.
//!
//! Kernels (all accumulate in registers over the whole K, from the bias):
//! AVX-512, 8 channels × 48 points (24 accumulators); AVX2 + FMA, 6 channels
//! × 16 points (12). A portable loop runs elsewhere; the CPU backend only takes
//! this path where a vector kernel exists (see [`Kernel::native`]).

use std::hash::{Hash, Hasher};

use crate::backend::ops::{gather_row, ConvGeometry};

/// The kernel a convolution's weights are packed for.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust (tests, and CPUs without the vector kernels).
    Portable,
    /// x86-64 AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86-64 AVX-512F.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn native() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// Every kernel this CPU runs, the portable one first (tests compare them).
    #[cfg(test)]
    pub fn all_native() -> Vec<Kernel> {
        #[allow(unused_mut)] // nothing is added outside x86-64
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                all.push(Kernel::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(Kernel::Avx512);
            }
        }
        all
    }

    /// Output channels and points of one tile.
    pub const fn tile(self) -> (usize, usize) {
        match self {
            Kernel::Portable => (4, 16),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => (6, 16),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => (8, 48),
        }
    }
}

/// The padded planes of a band are built and multiplied while they are in
/// cache: about this many values (512 KiB), so that a large input is read from
/// memory once, not written out whole and read back.
const BAND_VALUES: usize = 1 << 17;

/// A convolution (group 1, NCHW) ready to run: geometry, taps and packed
/// weights.
///
/// It runs in bands of output rows. For each band, the rows of the phase
/// planes that the band reads are copied (zero-padded) into a per-thread
/// buffer, `[C][phase][band rows + reach][phase width]`, then the band's
/// points are multiplied tile by tile.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Input channels, height and width, and the padding before them.
    channels: usize,
    input_hw: [usize; 2],
    pad_before: [usize; 2],
    /// Strides along H and W.
    strides: [usize; 2],
    /// The phases the taps read, as (row, column) remainders mod the strides.
    phases: Vec<[usize; 2]>,
    /// Phase-plane rows a band reads past its own (the kernel's reach), and
    /// the phase-plane width.
    reach_rows: usize,
    phase_width: usize,
    /// Output height and width.
    output_hw: [usize; 2],
    /// Output channels.
    m: usize,
    /// Per kernel tap `(ky, kx)`: its phase's slot in `phases`, and where its
    /// input is in that phase plane relative to the point's `q`.
    taps: Vec<(usize, usize)>,
    /// `[m / MR][K][MR]`, channels padded with zeros to a multiple of MR.
    packed: Vec<f32>,
    /// Per output channel (padded like `packed`).
    bias: Vec<f32>,
    kernel: Kernel,
}

impl Plan {
    /// The fields that define the plan, except the packed floats.
    #[allow(clippy::type_complexity)]
    fn shape_key(
        &self,
    ) -> (
        [usize; 5],
        [[usize; 2]; 4],
        &[[usize; 2]],
        &[(usize, usize)],
        Kernel,
    ) {
        (
            [self.channels, self.m, self.reach_rows, self.phase_width, 0],
            [self.input_hw, self.pad_before, self.strides, self.output_hw],
            &self.phases,
            &self.taps,
            self.kernel,
        )
    }
}

impl Hash for Plan {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.shape_key().hash(state);
        super::hash_bits(&self.packed, state);
        super::hash_bits(&self.bias, state);
    }
}

impl PartialEq for Plan {
    /// Same shape and bit-identical weights. tract compares ops while patching
    /// the graph; the same plan compares equal without reading its weights.
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
            || (self.shape_key() == other.shape_key()
                && super::same_bits(&self.packed, &other.packed)
                && super::same_bits(&self.bias, &other.bias))
    }
}

impl Eq for Plan {}

thread_local! {
    /// The thread's band buffer and tap offsets, kept between inferences so
    /// that steady-state inference allocates nothing here.
    static BAND: std::cell::RefCell<(Vec<f32>, Vec<usize>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

impl Plan {
    /// The convolution `geometry` with `m` output channels, `weight` `[M, C, KH, KW]`
    /// and `bias` (none, one value, or M), for `kernel`; `None` if the sizes
    /// disagree.
    pub fn new(
        geometry: &ConvGeometry,
        m: usize,
        weight: &[f32],
        bias: &[f32],
        kernel: Kernel,
    ) -> Option<Plan> {
        let [kh, kw] = geometry.kernel_hw;
        let [dh, dw] = geometry.dilations;
        let [sh, sw] = geometry.strides;
        let [oh, ow] = geometry.output_hw;
        let c = geometry.channels;
        let k = c * kh * kw;
        if m == 0
            || k == 0
            || sh == 0
            || sw == 0
            || oh == 0
            || ow == 0
            || weight.len() != m * k
            || !(bias.len() <= 1 || bias.len() == m)
        {
            return None;
        }
        // A phase row holds what an output row reads: OW points plus the
        // reach of the kernel in that phase's steps.
        let phase_width = ow + (kw - 1) * dw / sw;
        let mut phases: Vec<[usize; 2]> = Vec::new();
        let mut taps = Vec::with_capacity(kh * kw);
        for ky in 0..kh {
            for kx in 0..kw {
                let phase = [ky * dh % sh, kx * dw % sw];
                let slot = match phases.iter().position(|p| *p == phase) {
                    Some(slot) => slot,
                    None => {
                        phases.push(phase);
                        phases.len() - 1
                    }
                };
                taps.push((slot, ky * dh / sh * phase_width + kx * dw / sw));
            }
        }
        let (mr, _) = kernel.tile();
        let blocks = m.div_ceil(mr);
        let mut packed = vec![0.0; blocks * k * mr];
        for (o, row) in weight.chunks_exact(k).enumerate() {
            let panel = &mut packed[(o / mr) * k * mr..];
            for (t, &v) in row.iter().enumerate() {
                panel[t * mr + o % mr] = v;
            }
        }
        let mut padded_bias = vec![0.0; blocks * mr];
        match bias {
            [] => {}
            [b] => padded_bias[..m].fill(*b),
            _ => padded_bias[..m].copy_from_slice(bias),
        }
        Some(Plan {
            channels: c,
            input_hw: geometry.input_hw,
            pad_before: geometry.pad_before,
            strides: geometry.strides,
            phases,
            reach_rows: (kh - 1) * dh / sh,
            phase_width,
            output_hw: [oh, ow],
            m,
            taps,
            packed,
            bias: padded_bias,
            kernel,
        })
    }

    /// The kernel the weights are packed for.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Values in one input image (`C · H · W`).
    pub fn input_len(&self) -> usize {
        self.channels * self.input_hw[0] * self.input_hw[1]
    }

    /// Output rows per image.
    pub fn output_rows(&self) -> usize {
        self.output_hw[0]
    }

    /// Blocks of `MR` output channels (the last one may be partial).
    pub fn channel_blocks(&self) -> usize {
        self.m.div_ceil(self.kernel.tile().0)
    }

    /// Output rows per band when the work is shared by `parts` threads: as
    /// many as fit [`BAND_VALUES`], at least enough for a few whole tiles,
    /// and no more than gives each thread a band.
    pub fn band_rows(&self, parts: usize) -> usize {
        let [oh, _] = self.output_hw;
        let per_row = self.channels * self.phases.len() * self.phase_width;
        let fit = (BAND_VALUES / per_row.max(1)).saturating_sub(self.reach_rows);
        let few_tiles = (4 * self.kernel.tile().1).div_ceil(self.phase_width);
        fit.max(few_tiles).min(oh.div_ceil(parts.max(1))).max(1)
    }

    /// Computes the output channels of blocks `blocks` (see
    /// [`Plan::channel_blocks`]) of the output rows in bands `bands` of `rows`
    /// rows each (the last one may be shorter) of `image` (`[C, H, W]`) into
    /// `out` (`[M, OH, OW]`, of which this call writes only those channels and
    /// rows).
    /// `finish` runs on each tile of `MR` channels × `NR` points
    /// (channel-major) before it is stored: the activations.
    ///
    /// # Safety
    /// `out` points to `M · OH · OW` values, and no other thread writes the
    /// rows of `bands` in the channels of `blocks` while this runs.
    ///
    /// # Panics
    /// If `image` is shorter than [`Plan::input_len`] or `rows` is 0.
    pub unsafe fn run<E>(
        &self,
        image: &[f32],
        rows: usize,
        bands: std::ops::Range<usize>,
        blocks: std::ops::Range<usize>,
        out: *mut f32,
        mut finish: impl FnMut(&mut [f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        assert!(image.len() >= self.input_len() && rows > 0);
        let plane = (rows + self.reach_rows) * self.phase_width;
        let per_channel = self.phases.len() * plane;
        BAND.with_borrow_mut(|(band, offsets)| {
            band.resize(self.channels * per_channel + self.kernel.tile().1, 0.0);
            offsets.clear();
            offsets.extend((0..self.channels).flat_map(|ci| {
                self.taps
                    .iter()
                    .map(move |&(slot, at)| ci * per_channel + slot * plane + at)
            }));
            for b in bands {
                let first = b * rows;
                let count = rows.min(self.output_hw[0].saturating_sub(first));
                if count == 0 {
                    break;
                }
                self.pad_band(image, first, rows, band);
                // SAFETY: the caller's contract, for these rows.
                unsafe {
                    self.band_product(
                        band,
                        offsets,
                        first..first + count,
                        &blocks,
                        out,
                        &mut finish,
                    )?
                };
            }
            Ok(())
        })
    }

    /// Writes the zero-padded phase rows `first..first + rows + reach` of
    /// every channel of `image` into `band`.
    fn pad_band(&self, image: &[f32], first: usize, rows: usize, band: &mut [f32]) {
        let [h, w] = self.input_hw;
        let [top, left] = self.pad_before;
        let [sh, sw] = self.strides;
        let pw = self.phase_width;
        let plane = (rows + self.reach_rows) * pw;
        let (planes, slack) = band.split_at_mut(self.channels * self.phases.len() * plane);
        slack.fill(0.0);
        let mut planes = planes.chunks_exact_mut(plane);
        for src in image.chunks_exact(h * w).take(self.channels) {
            for (&[py, px], plane) in self.phases.iter().zip(&mut planes) {
                // Phase columns j that land inside the image: left ≤ j·sw + px < left + w.
                let lo = left.saturating_sub(px).div_ceil(sw).min(pw);
                let hi = (left + w).saturating_sub(px).div_ceil(sw).clamp(lo, pw);
                for (i, row) in plane.chunks_exact_mut(pw).enumerate() {
                    let y = ((first + i) * sh + py).checked_sub(top).filter(|&y| y < h);
                    let Some(y) = y else {
                        row.fill(0.0);
                        continue;
                    };
                    let src = &src[y * w..(y + 1) * w];
                    row[..lo].fill(0.0);
                    row[hi..].fill(0.0);
                    gather_row(&mut row[lo..hi], src, lo * sw + px - left, sw);
                }
            }
        }
    }

    /// Computes output rows `rows` from their padded `band`.
    ///
    /// # Safety
    /// As [`Plan::run`]; `band` and `offsets` were built for these rows.
    unsafe fn band_product<E>(
        &self,
        band: &[f32],
        offsets: &[usize],
        rows: std::ops::Range<usize>,
        blocks: &std::ops::Range<usize>,
        out: *mut f32,
        finish: &mut impl FnMut(&mut [f32]) -> Result<(), E>,
    ) -> Result<(), E> {
        let (mr, nr) = self.kernel.tile();
        let k = offsets.len();
        let [oh, ow] = self.output_hw;
        let pw = self.phase_width;
        // Points of the band in padded numbering, up to its last real one.
        let (first, count) = (rows.start, rows.len());
        let points = (count - 1) * pw + ow;
        // The largest tile; storage for the kernels' results.
        let mut tile = [0f32; 8 * 48];
        let tile = &mut tile[..mr * nr];
        // Channel blocks outside, so that each block's weights are read from
        // memory once per band (a deep layer's weights outgrow L2).
        let panels = self.packed.chunks_exact(k * mr).enumerate();
        for (block, panel) in panels.skip(blocks.start).take(blocks.len()) {
            for q0 in (0..points).step_by(nr) {
                let bias = &self.bias[block * mr..(block + 1) * mr];
                // SAFETY: every read is below `q0 + NR + max offset ≤ band.len()`
                // (the band's last real point plus the largest offset is the
                // last value of the last plane, and the band ends with a tile
                // of slack), the panel holds K · MR weights, and `tile` MR · NR
                // values.
                unsafe {
                    self.kernel
                        .tile_product(band, q0, offsets, panel, bias, tile)
                };
                finish(tile)?;
                let rows = mr.min(self.m - block * mr);
                // Copy the real points, row segment by row segment.
                let mut q = q0;
                let end = (q0 + nr).min(points);
                while q < end {
                    let (y, x) = (q / pw, q % pw);
                    if x >= ow {
                        q = (y + 1) * pw;
                        continue;
                    }
                    let stop = (y * pw + ow).min(end);
                    let len = stop - q;
                    for r in 0..rows {
                        let o = block * mr + r;
                        let src = &tile[r * nr + (q - q0)..][..len];
                        // SAFETY: the caller's contract; (o, first + y, x..x +
                        // len) is inside the output and one of this call's rows.
                        unsafe {
                            let dst = out.add((o * oh + first + y) * ow + x);
                            std::ptr::copy_nonoverlapping(src.as_ptr(), dst, len);
                        }
                    }
                    q = stop;
                }
            }
        }
        Ok(())
    }
}

impl Kernel {
    /// `tile[r][j] = bias[r] + Σ_t panel[t][r] · padded[q0 + j + offsets[t]]`
    /// for MR rows `r` and NR points `j`.
    ///
    /// # Safety
    /// `padded` holds `q0 + NR + max(offsets)` values, `panel` `K · MR`, `bias`
    /// MR and `tile` MR · NR, for this kernel's tile; `self` runs on this CPU.
    unsafe fn tile_product(
        self,
        padded: &[f32],
        q0: usize,
        offsets: &[usize],
        panel: &[f32],
        bias: &[f32],
        tile: &mut [f32],
    ) {
        let base = padded[q0..].as_ptr();
        match self {
            Kernel::Portable => portable(base, offsets, panel, bias, tile),
            // SAFETY (both): the caller's contract.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::avx2(base, offsets, panel.as_ptr(), bias, tile) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { x86::avx512(base, offsets, panel.as_ptr(), bias, tile) },
        }
    }
}

/// The portable tile: 4 channels × 16 points, accumulating in arrays.
fn portable(base: *const f32, offsets: &[usize], panel: &[f32], bias: &[f32], tile: &mut [f32]) {
    const MR: usize = 4;
    const NR: usize = 16;
    let mut acc = [[0f32; NR]; MR];
    for (row, &b) in acc.iter_mut().zip(bias) {
        row.fill(b);
    }
    for (&offset, weights) in offsets.iter().zip(panel.chunks_exact(MR)) {
        // SAFETY: the caller's contract: NR values from `base + offset`.
        let x = unsafe { std::slice::from_raw_parts(base.add(offset), NR) };
        for (row, &wv) in acc.iter_mut().zip(weights) {
            for (a, &xv) in row.iter_mut().zip(x) {
                *a += wv * xv;
            }
        }
    }
    for (dst, row) in tile.chunks_exact_mut(NR).zip(&acc) {
        dst.copy_from_slice(row);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Expands to a tile kernel of `$mr` rows × `$v` vectors of `$lanes` lanes,
    /// accumulators in registers across all taps.
    macro_rules! tile_kernel {
        ($name:ident, $features:literal, $mr:literal, $v:literal, $lanes:literal,
         $zero:ident, $set1:ident, $load:ident, $fma:ident, $store:ident) => {
            /// # Safety
            /// See [`super::Kernel::tile_product`]; the CPU has the features.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                base: *const f32,
                offsets: &[usize],
                panel: *const f32,
                bias: &[f32],
                tile: &mut [f32],
            ) {
                debug_assert!(bias.len() >= $mr && tile.len() >= $mr * $v * $lanes);
                let mut acc = [[$zero(); $v]; $mr];
                for r in 0..$mr {
                    for v in 0..$v {
                        acc[r][v] = $set1(bias[r]);
                    }
                }
                let mut weights = panel;
                for &offset in offsets {
                    // SAFETY: the caller's contract.
                    unsafe {
                        let x = base.add(offset);
                        let mut xs = [$zero(); $v];
                        for v in 0..$v {
                            xs[v] = $load(x.add(v * $lanes));
                        }
                        for r in 0..$mr {
                            let wv = $set1(*weights.add(r));
                            for v in 0..$v {
                                acc[r][v] = $fma(wv, xs[v], acc[r][v]);
                            }
                        }
                        weights = weights.add($mr);
                    }
                }
                let out = tile.as_mut_ptr();
                for r in 0..$mr {
                    for v in 0..$v {
                        // SAFETY: `tile` holds MR · NR values.
                        unsafe { $store(out.add((r * $v + v) * $lanes), acc[r][v]) };
                    }
                }
            }
        };
    }

    tile_kernel!(
        avx512,
        "avx512f",
        8,
        3,
        16,
        _mm512_setzero_ps,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    );
    tile_kernel!(
        avx2,
        "avx2,fma",
        6,
        2,
        8,
        _mm256_setzero_ps,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        _mm256_storeu_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_finish(_: &mut [f32]) -> Result<(), ()> {
        Ok(())
    }

    fn kernels() -> Vec<Kernel> {
        Kernel::all_native()
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0) - 1.0)
            .collect()
    }

    /// The definition, in f64: `out[o, y, x] = bias[o] + Σ w[o, c, ky, kx] ·
    /// in[c, y·sh + ky·dh − top, x·sw + kx·dw − left]` over taps inside the image.
    fn naive(g: &ConvGeometry, m: usize, input: &[f32], w: &[f32], bias: &[f32]) -> Vec<f64> {
        let [h, wd] = g.input_hw;
        let [oh, ow] = g.output_hw;
        let [kh, kw] = g.kernel_hw;
        let mut out = vec![0f64; m * oh * ow];
        for o in 0..m {
            for y in 0..oh {
                for x in 0..ow {
                    let mut s = match bias {
                        [] => 0.0,
                        [b] => *b as f64,
                        _ => bias[o] as f64,
                    };
                    for c in 0..g.channels {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (y * g.strides[0] + ky * g.dilations[0])
                                    .checked_sub(g.pad_before[0]);
                                let ix = (x * g.strides[1] + kx * g.dilations[1])
                                    .checked_sub(g.pad_before[1]);
                                let (Some(iy), Some(ix)) = (iy, ix) else {
                                    continue;
                                };
                                if iy >= h || ix >= wd {
                                    continue;
                                }
                                let wi = ((o * g.channels + c) * kh + ky) * kw + kx;
                                s += w[wi] as f64 * input[(c * h + iy) * wd + ix] as f64;
                            }
                        }
                    }
                    out[(o * oh + y) * ow + x] = s;
                }
            }
        }
        out
    }

    /// (channels, m, input hw, kernel hw, strides, dilations, pad before, pad
    /// after, bias len)
    type Case = (
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 2],
        usize,
    );

    #[test]
    fn tiles_match_the_definition_on_odd_shapes_strides_padding_and_dilation() {
        let cases: &[Case] = &[
            // YOLOv8-like 3×3, same padding, channels a multiple of every MR.
            (16, 16, [20, 20], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 16),
            // Odd channel counts (M tails for every kernel), odd plane.
            (3, 5, [7, 9], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 5),
            (13, 11, [11, 5], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 1),
            // No padding, 5×5, a plane narrower than one tile.
            (4, 9, [6, 6], [5, 5], [1, 1], [1, 1], [0, 0], [0, 0], 0),
            // Asymmetric padding, 1×3 and 3×1 kernels, dilation 2.
            (6, 7, [9, 12], [1, 3], [1, 1], [1, 2], [0, 2], [0, 1], 7),
            (5, 12, [10, 4], [3, 1], [1, 1], [2, 1], [3, 0], [1, 0], 12),
            // Padding wider than the kernel reaches; a 1×1 kernel with padding.
            (2, 3, [4, 5], [3, 3], [1, 1], [1, 1], [3, 2], [2, 3], 3),
            (7, 17, [5, 8], [1, 1], [1, 1], [1, 1], [1, 1], [1, 1], 17),
            // One-row output, a long row (many tiles across row ends).
            (3, 8, [3, 61], [3, 3], [1, 1], [1, 1], [0, 1], [0, 1], 8),
            (9, 33, [17, 40], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 33),
            // Stride 2: YOLOv8's downsampling (3×3, pad 1) on even and odd
            // planes, its 3-channel stem, EfficientNet's 5×5.
            (8, 16, [20, 20], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 16),
            (5, 9, [13, 11], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 9),
            (3, 16, [32, 32], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 16),
            (4, 6, [15, 15], [5, 5], [2, 2], [1, 1], [1, 2], [2, 1], 1),
            // Stride 3, strides that differ per axis, stride with dilation, a
            // strided 1×1 (one phase), a kernel smaller than its stride.
            (3, 4, [16, 14], [3, 3], [3, 3], [1, 1], [1, 1], [1, 1], 4),
            (4, 5, [9, 16], [3, 3], [1, 2], [1, 1], [1, 0], [1, 0], 5),
            (3, 7, [17, 17], [3, 3], [2, 2], [2, 2], [2, 2], [2, 2], 7),
            (6, 8, [9, 9], [1, 1], [2, 2], [1, 1], [0, 0], [0, 0], 8),
            (2, 3, [12, 12], [2, 2], [3, 3], [1, 1], [0, 0], [0, 0], 3),
        ];
        for (seed, &(c, m, [h, w], [kh, kw], [sh, sw], [dh, dw], before, after, bias_len)) in
            cases.iter().enumerate()
        {
            let oh = (h + before[0] + after[0] - (kh - 1) * dh - 1) / sh + 1;
            let ow = (w + before[1] + after[1] - (kw - 1) * dw - 1) / sw + 1;
            let g = ConvGeometry {
                batch: None,
                channels: c,
                input_hw: [h, w],
                output_hw: [oh, ow],
                kernel_hw: [kh, kw],
                strides: [sh, sw],
                dilations: [dh, dw],
                pad_before: before,
            };
            let input = values(c * h * w, seed);
            let weight = values(m * c * kh * kw, seed + 1);
            let bias = values(bias_len, seed + 2);
            let want = naive(&g, m, &input, &weight, &bias);
            let scale = want.iter().fold(1.0f64, |a, v| a.max(v.abs()));
            for kernel in kernels() {
                let conv = Plan::new(&g, m, &weight, &bias, kernel).unwrap();
                // One band, then bands of 1, 2 and 3 rows in two calls: the same bits.
                let mut out = vec![f32::NAN; m * oh * ow];
                let all = 0..conv.channel_blocks();
                let ptr = out.as_mut_ptr();
                unsafe { conv.run(&input, oh, 0..1, all.clone(), ptr, no_finish) }.unwrap();
                for rows in [1, 2, 3, conv.band_rows(1), conv.band_rows(2)] {
                    let mut bands = vec![f32::NAN; m * oh * ow];
                    let (count, ptr) = (oh.div_ceil(rows), bands.as_mut_ptr());
                    for part in [0..count / 2, count / 2..count] {
                        let all = all.clone();
                        unsafe { conv.run(&input, rows, part, all, ptr, no_finish) }.unwrap();
                    }
                    assert_eq!(
                        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        bands.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "case {seed} {kernel:?}: bands of {rows} rows differ"
                    );
                }
                // Channel blocks in three calls (the first may be empty): the same bits.
                let mut blocks = vec![f32::NAN; m * oh * ow];
                let (count, ptr) = (conv.channel_blocks(), blocks.as_mut_ptr());
                for part in [0..count / 3, count / 3..count - 1, count - 1..count] {
                    unsafe { conv.run(&input, 2, 0..oh.div_ceil(2), part, ptr, no_finish) }
                        .unwrap();
                }
                assert_eq!(
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    blocks.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "case {seed} {kernel:?}: channel blocks differ"
                );
                for (i, (&got, &want)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (got as f64 - want).abs() <= 1e-5 * scale,
                        "case {seed} {kernel:?}: value {i} is {got}, expected {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn finish_sees_every_tile_before_it_is_stored() {
        let g = ConvGeometry {
            batch: None,
            channels: 2,
            input_hw: [5, 7],
            output_hw: [5, 7],
            kernel_hw: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            pad_before: [1, 1],
        };
        let (m, input, weight) = (3, values(2 * 35, 1), values(3 * 18, 2));
        let want = naive(&g, m, &input, &weight, &[]);
        for kernel in kernels() {
            let conv = Plan::new(&g, m, &weight, &[], kernel).unwrap();
            let mut out = vec![0.0; m * 35];
            let relu = |tile: &mut [f32]| -> Result<(), ()> {
                tile.iter_mut().for_each(|v| *v = v.max(0.0));
                Ok(())
            };
            let all = 0..conv.channel_blocks();
            unsafe { conv.run(&input, 2, 0..3, all, out.as_mut_ptr(), relu) }.unwrap();
            for (&got, &want) in out.iter().zip(&want) {
                assert!((got as f64 - want.max(0.0)).abs() < 1e-5, "{kernel:?}");
            }
        }
    }

    #[test]
    fn rejects_mismatched_weights_and_bias() {
        let g = ConvGeometry {
            batch: None,
            channels: 2,
            input_hw: [5, 5],
            output_hw: [5, 5],
            kernel_hw: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            pad_before: [1, 1],
        };
        let w = values(4 * 18, 0);
        assert!(Plan::new(&g, 4, &w, &[], Kernel::Portable).is_some());
        assert!(Plan::new(&g, 4, &w[1..], &[], Kernel::Portable).is_none());
        assert!(Plan::new(&g, 4, &w, &[1.0, 2.0], Kernel::Portable).is_none());
        assert!(Plan::new(&g, 0, &[], &[], Kernel::Portable).is_none());
    }
}
