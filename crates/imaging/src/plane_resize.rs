//! Lanczos3 for one 8-bit plane (ycbcr.rs's luma and chroma), both passes ours.
//! fast_image_resize's one-channel horizontal kernel finishes every output sample with up to
//! seven taps one by one and a horizontal sum; for the 13 taps of a 2x reduction that made it
//! slower than its three-channel kernel on three times the samples (docs/benchmarks.md). Here a
//! horizontal window is padded with zero weights to a multiple of 16 taps and moved inside the
//! row, so each output sample is whole 16-tap AVX2 steps, four rows sharing one horizontal sum;
//! the vertical pass weighs 16 columns at once, two rows per multiply-add. Chroma gets its own
//! kernel, [`Kernel::Pairs`], so that it keeps the detail the RGB way keeps.

use std::cell::RefCell;

use crate::bitmap::{Bitmap, Layout};
use crate::resize::lanczos3_tabled;

/// Fixed-point weights: they sum to 1 << PRECISION.
const PRECISION: u32 = 14;

/// One axis's convolution: output sample `i` is the sum of `weights[i * taps..][..taps]` times
/// the `taps` samples from `starts[i]`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Taps {
    taps: usize,
    starts: Vec<u32>,
    weights: Vec<i16>,
}

/// What an output sample is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Lanczos3, widened by the reduction (as fast_image_resize does).
    Lanczos3,
    /// For chroma that the output samples once per two of its `pixels`: the mean of Lanczos3 at
    /// the centres of its two pixels, widened by the reduction of those pixels. The RGB way
    /// resizes chroma with the pixels and then the encoder averages pairs of them, and Lanczos3
    /// straight to the chroma grid would be twice as wide. With an odd number of pixels, the
    /// last sample's second pixel is its first again, as the encoder repeats the last column.
    Pairs { pixels: u32 },
}

impl Taps {
    /// `kernel` from `extent` samples (of a row `len` long; fractions allowed, the window may
    /// read past `extent` up to `len`) to `out` samples, each window inside the row and `taps`
    /// long: a multiple of `multiple` where the row allows, else its longest window.
    pub(crate) fn new(len: u32, extent: f64, out: u32, kernel: Kernel, multiple: usize) -> Taps {
        let scale = extent / f64::from(out);
        // Where the kernel's copies sit inside an output sample, as fractions of it, and the
        // furthest a centre may lie (the last pixel's).
        let (centres, filter_scale, furthest): (&[f64], f64, f64) = match kernel {
            Kernel::Lanczos3 => (&[0.5], scale.max(1.0), extent),
            Kernel::Pairs { pixels } => {
                (&[0.25, 0.75], (scale / 2.0).max(1.0), (f64::from(pixels) - 0.5) * scale / 2.0)
            }
        };
        let centre = |i: u32, c: f64| ((f64::from(i) + c) * scale).min(furthest).min(f64::from(len));
        let radius = 3.0 * filter_scale;
        let window = |i: u32| {
            let first = centre(i, centres[0]);
            let last = centre(i, centres[centres.len() - 1]);
            let lo = ((first - radius).floor().max(0.0) as u32).min(len - 1);
            let hi = ((last + radius).ceil().min(f64::from(len)) as u32).max(lo + 1);
            (lo, hi)
        };
        let longest = (0..out).map(window).map(|(lo, hi)| (hi - lo) as usize).max().unwrap_or(1);
        let padded = longest.next_multiple_of(multiple);
        let taps = if padded <= len as usize { padded } else { longest };
        let mut starts = Vec::with_capacity(out as usize);
        let mut weights = vec![0i16; out as usize * taps];
        let (mut w, mut copy) = (Vec::with_capacity(longest), Vec::with_capacity(longest));
        let one = f64::from(1u32 << PRECISION);
        let step = 1.0 / filter_scale;
        for (i, row) in (0..out).zip(weights.chunks_exact_mut(taps)) {
            let (lo, hi) = window(i);
            w.clear();
            w.resize((hi - lo) as usize, 0.0);
            for &c in centres {
                // Each copy normalised on its own, so that both count alike at an edge. Its
                // centre lies inside the row, where the kernel's weights sum to well above 0.
                let first = (f64::from(lo) + 0.5 - centre(i, c)) * step;
                copy.clear();
                copy.extend((0..hi - lo).map(|k| lanczos3_tabled(first + f64::from(k) * step)));
                let sum: f64 = copy.iter().sum();
                w.iter_mut().zip(&copy).for_each(|(w, v)| *w += v / sum);
            }
            let norm = one / w.iter().sum::<f64>();
            // Moved left where the padded window would run past the row's end.
            let start = lo.min(len - taps as u32);
            let offset = (lo - start) as usize;
            let mut total = 0i32;
            let mut largest = offset;
            for (at, v) in w.iter().enumerate() {
                // Rounded half up: shifted positive first, since `as` truncates toward zero and
                // `floor` is a library call on baseline x86-64 (a weight is above -1).
                let q = ((v * norm + 0.5 + one) as i32 - (1 << PRECISION)) as i16;
                row[offset + at] = q;
                total += i32::from(q);
                if q > row[largest] {
                    largest = offset + at;
                }
            }
            // Rounding may leave the sum a little off 1: the largest weight takes the
            // difference, so a flat area stays exactly flat.
            row[largest] = (i32::from(row[largest]) + (1 << PRECISION) - total) as i16;
            starts.push(start);
        }
        Taps { taps, starts, weights }
    }

    /// Horizontal taps: whole 16-tap steps for the AVX2 kernel.
    pub(crate) fn across(len: u32, extent: f64, out: u32, kernel: Kernel) -> Taps {
        Taps::new(len, extent, out, kernel, 16)
    }

    /// Vertical taps: rows in pairs for the multiply-add.
    pub(crate) fn down(len: u32, extent: f64, out: u32, kernel: Kernel) -> Taps {
        Taps::new(len, extent, out, kernel, 2)
    }

    fn out(&self) -> usize {
        self.starts.len()
    }
}

/// Resizes one plane (`Layout::Gray`) with `across` (made for its width) and `down` (for its
/// height): a decoded plane holds whole blocks, past the picture's right and bottom edges, which
/// the taps may read. The caller keeps the reduction within what `resize::box_shrinks` allows.
pub fn resize_plane(b: &Bitmap, across: &Taps, down: &Taps) -> Bitmap {
    debug_assert_eq!(b.layout, Layout::Gray);
    let (width, height) = (across.out(), down.out());
    let mut columns = VERTICAL.with_borrow_mut(std::mem::take);
    columns.resize(b.width as usize * height, 0);
    vertical(&b.data, b.width as usize, &mut columns, down);
    let mut out = vec![0u8; width * height];
    horizontal(&columns, b.width as usize, &mut out, width, across);
    if columns.capacity() <= MAX_KEPT_SCRATCH {
        VERTICAL.set(columns);
    }
    Bitmap::new(width as u32, height as u32, Layout::Gray, out)
}

thread_local! {
    /// The vertical pass's output, kept between planes on a worker thread.
    static VERTICAL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

const MAX_KEPT_SCRATCH: usize = 8 << 20;

/// Rows of `src` (`width` long) through `taps` into the rows of `dst`.
fn vertical(src: &[u8], width: usize, dst: &mut [u8], taps: &Taps) {
    let rows = src.len() / width;
    assert!(taps.starts.iter().all(|&s| s as usize + taps.taps <= rows), "a window runs past the plane");
    assert_eq!(dst.len(), width * taps.out());
    #[cfg(target_arch = "x86_64")]
    if taps.taps.is_multiple_of(2) && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present; every window lies inside the plane and `dst` holds one row
        // per output sample (asserted above).
        unsafe { avx2::vertical(src, width, dst, taps) };
        return;
    }
    for ((d, &start), w) in dst.chunks_exact_mut(width).zip(&taps.starts).zip(taps.weights.chunks_exact(taps.taps)) {
        vertical_columns(src, width, start as usize, w, d, 0);
    }
}

/// Output row `d`'s columns from `from` on, one by one.
fn vertical_columns(src: &[u8], width: usize, start: usize, w: &[i16], d: &mut [u8], from: usize) {
    for (x, out) in d.iter_mut().enumerate().skip(from) {
        let sum: i32 = w.iter().enumerate().map(|(k, &w)| i32::from(src[(start + k) * width + x]) * i32::from(w)).sum();
        *out = clip(sum, x);
    }
}

/// Each row of `src` (`src_width` long) through `taps` into the row of `dst` (`dst_width`).
fn horizontal(src: &[u8], src_width: usize, dst: &mut [u8], dst_width: usize, taps: &Taps) {
    assert!(taps.starts.iter().all(|&s| s as usize + taps.taps <= src_width), "a window runs past the row");
    assert_eq!(src.len() / src_width, dst.len() / dst_width);
    #[cfg(target_arch = "x86_64")]
    if taps.taps.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present; every window lies inside its row (asserted above), and
        // `src` and `dst` hold the same number of rows.
        unsafe { avx2::horizontal(src, src_width, dst, dst_width, taps) };
        return;
    }
    for (s, d) in src.chunks_exact(src_width).zip(dst.chunks_exact_mut(dst_width)) {
        for (x, (out, (&start, w))) in
            d.iter_mut().zip(taps.starts.iter().zip(taps.weights.chunks_exact(taps.taps))).enumerate()
        {
            let window = &s[start as usize..start as usize + taps.taps];
            let sum: i32 = window.iter().zip(w).map(|(&p, &w)| i32::from(p) * i32::from(w)).sum();
            *out = clip(sum, x);
        }
    }
}

/// A fixed-point sum back to a sample, rounded, its halves up in even columns `x` and down in
/// odd ones. Rounding every half up made chroma averaged from two samples (`Kernel::Pairs` at
/// 2x, exact halves) a quarter of a level too high on average, which blue shows 1.8 times.
fn clip(sum: i32, x: usize) -> u8 {
    ((sum + half(x)) >> PRECISION).clamp(0, 255) as u8
}

fn half(x: usize) -> i32 {
    (1 << (PRECISION - 1)) - (x & 1) as i32
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{clip, half, vertical_columns, Taps, PRECISION};

    /// Sixteen columns at a time: two rows interleaved as 16-bit pairs, each pair times its two
    /// weights by one `vpmaddwd`; the columns left over one by one.
    ///
    /// # Safety
    /// AVX2 must be present, every window must lie inside the plane, its length must be even,
    /// and `dst` must hold one row per output sample.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn vertical(src: &[u8], width: usize, dst: &mut [u8], taps: &Taps) {
        let n = taps.taps;
        // Halves up in even columns, down in odd ones (see `clip`); `x` below is even.
        let round = _mm256_setr_epi32(half(0), half(1), half(0), half(1), half(0), half(1), half(0), half(1));
        for (o, &start) in taps.starts.iter().enumerate() {
            let w = &taps.weights[o * n..(o + 1) * n];
            let d = &mut dst[o * width..(o + 1) * width];
            let mut x = 0;
            while x + 16 <= width {
                let (mut lo, mut hi) = (round, round);
                for k in (0..n).step_by(2) {
                    let at = src.as_ptr().add((start as usize + k) * width + x);
                    let a = _mm256_cvtepu8_epi16(_mm_loadu_si128(at.cast()));
                    let b = _mm256_cvtepu8_epi16(_mm_loadu_si128(at.add(width).cast()));
                    // Weights k and k+1 in each 32-bit lane: k in the low half.
                    let pair = _mm256_set1_epi32((i32::from(w[k + 1]) << 16) | i32::from(w[k] as u16));
                    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), pair));
                    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), pair));
                }
                // unpacklo/hi work within 128-bit lanes, and so does packing back: each lane's
                // eight columns come out in order, lane 0's in the low 64 bits.
                let lo = _mm256_srai_epi32::<{ PRECISION as i32 }>(lo);
                let hi = _mm256_srai_epi32::<{ PRECISION as i32 }>(hi);
                let words = _mm256_packs_epi32(lo, hi);
                let bytes = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi16(words, words));
                _mm_storeu_si128(d.as_mut_ptr().add(x).cast(), _mm256_castsi256_si128(bytes));
                x += 16;
            }
            vertical_columns(src, width, start as usize, w, d, x);
        }
    }

    /// Four rows at a time: each output sample's window in 16-tap steps (widened to i16,
    /// multiplied and added in pairs by `vpmaddwd`), the four rows' sums reduced together.
    ///
    /// # Safety
    /// AVX2 must be present, every window must lie inside its row, and `src` and `dst` must hold
    /// the same number of rows.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn horizontal(src: &[u8], src_width: usize, dst: &mut [u8], dst_width: usize, taps: &Taps) {
        let rows = dst.len() / dst_width;
        let n = taps.taps;
        let mut y = 0;
        while y + 4 <= rows {
            let s = src.as_ptr().add(y * src_width);
            for (x, &start) in taps.starts.iter().enumerate() {
                let w = taps.weights.as_ptr().add(x * n);
                let p = s.add(start as usize);
                let mut acc = [_mm256_setzero_si256(); 4];
                let mut j = 0;
                while j < n {
                    let c = _mm256_loadu_si256(w.add(j).cast());
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let pixels = _mm_loadu_si128(p.add(r * src_width + j).cast());
                        *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(_mm256_cvtepu8_epi16(pixels), c));
                    }
                    j += 16;
                }
                // [r0 r1 r2 r3] partial sums in each 128-bit half, then the halves added.
                let r01 = _mm256_hadd_epi32(acc[0], acc[1]);
                let r23 = _mm256_hadd_epi32(acc[2], acc[3]);
                let r0123 = _mm256_hadd_epi32(r01, r23);
                let sums = _mm_add_epi32(_mm256_castsi256_si128(r0123), _mm256_extracti128_si256::<1>(r0123));
                let shifted = _mm_srai_epi32::<{ PRECISION as i32 }>(_mm_add_epi32(sums, _mm_set1_epi32(half(x))));
                let words = _mm_packs_epi32(shifted, shifted);
                let packed = _mm_packus_epi16(words, words);
                let bytes = _mm_cvtsi128_si32(packed).to_le_bytes();
                for (r, byte) in bytes.iter().enumerate() {
                    *dst.get_unchecked_mut((y + r) * dst_width + x) = *byte;
                }
            }
            y += 4;
        }
        for y in y..rows {
            let s = &src[y * src_width..(y + 1) * src_width];
            for (x, &start) in taps.starts.iter().enumerate() {
                let w = &taps.weights[x * n..(x + 1) * n];
                let sum: i32 = s[start as usize..start as usize + n]
                    .iter()
                    .zip(w)
                    .map(|(&p, &w)| i32::from(p) * i32::from(w))
                    .sum();
                dst[y * dst_width + x] = clip(sum, x);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fast_image_resize as fr;

    use super::*;
    use crate::resize::{convolve, lanczos3_filter};

    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|i| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                // Edges and noise: every frequency.
                ((state >> 24) as usize / 4 + if (i / 7) % 2 == 0 { 160 } else { 0 }).min(255) as u8
            })
            .collect()
    }

    /// fast_image_resize's own Lanczos3 of the same plane and picture.
    fn theirs(b: &Bitmap, width: u32, height: u32, extent: (f64, f64)) -> Vec<u8> {
        let src = fr::images::ImageRef::new(b.width, b.height, &b.data, fr::PixelType::U8).expect("image");
        let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8);
        let options = fr::ResizeOptions::new()
            .resize_alg(fr::ResizeAlg::Convolution(lanczos3_filter()))
            .crop(0.0, 0.0, extent.0, extent.1);
        convolve(&src, &mut dst, &options).expect("resize");
        dst.into_vec()
    }

    fn ours(b: &Bitmap, (ow, oh): (u32, u32), extent: (f64, f64), across: Kernel) -> Vec<u8> {
        let (across, down) =
            (Taps::across(b.width, extent.0, ow, across), Taps::down(b.height, extent.1, oh, Kernel::Lanczos3));
        resize_plane(b, &across, &down).data
    }

    fn worst(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0)
    }

    /// Reductions of 1.3x to 4x and enlargements, even and odd sizes, whole and fractional
    /// extents, rows both shorter and longer than a padded window, widths with and without
    /// columns past the last 16.
    /// Seed, plane size, picture in it, output size.
    type Case = (u32, (u32, u32), (f64, f64), (u32, u32));

    const CASES: [Case; 6] = [
        (1, (640, 480), (640.0, 480.0), (320, 240)),
        (2, (656, 496), (643.0, 481.0), (161, 121)),
        (3, (328, 248), (321.5, 240.5), (247, 185)),
        (4, (40, 24), (37.0, 21.0), (9, 5)),
        (5, (24, 16), (24.0, 16.0), (60, 41)),
        (6, (13, 9), (13.0, 9.0), (6, 4)),
    ];

    #[test]
    fn a_plane_resizes_as_fast_image_resize_does_within_one_step() {
        for (seed, (w, h), extent, out) in CASES {
            let b = Bitmap::new(w, h, Layout::Gray, noise((w * h) as usize, seed));
            let off = worst(&ours(&b, out, extent, Kernel::Lanczos3), &theirs(&b, out.0, out.1, extent));
            assert!(off <= 1, "{w}x{h} ({extent:?}) to {out:?}: off by {off}");
        }
    }

    #[test]
    fn pairs_are_the_mean_of_lanczos3_at_twice_the_samples() {
        for (seed, (w, h), extent, (ow, oh)) in CASES {
            // Kept off 0 and 255, where fast_image_resize would clip each of a pair before the
            // mean and ours only the mean.
            let mild = noise((w * h) as usize, seed).into_iter().map(|v| 64 + v / 2).collect();
            let b = Bitmap::new(w, h, Layout::Gray, mild);
            let pairs = ours(&b, (ow, oh), extent, Kernel::Pairs { pixels: 2 * ow });
            // Lanczos3 to 2*ow columns over the same picture, then each pair averaged.
            let twice = theirs(&b, 2 * ow, oh, extent);
            let averaged: Vec<u8> =
                twice.chunks_exact(2).map(|p| (u16::from(p[0]) + u16::from(p[1])).div_ceil(2) as u8).collect();
            let off = worst(&pairs, &averaged);
            assert!(off <= 2, "{w}x{h} ({extent:?}) to {ow}x{oh}: off by {off}");
        }
    }

    #[test]
    fn a_flat_plane_stays_flat_and_every_window_lies_inside_its_row() {
        let lengths = [(640, 640.0, 317), (100, 97.5, 13), (17, 17.0, 40), (9, 9.0, 2)];
        for ((len, extent, out), kernel) in
            lengths.into_iter().flat_map(|l| [(l, Kernel::Lanczos3), (l, Kernel::Pairs { pixels: 2 * l.2 - 1 })])
        {
            let taps = Taps::across(len, extent, out, kernel);
            assert!(taps.starts.iter().all(|&s| s as usize + taps.taps <= len as usize));
            for w in taps.weights.chunks_exact(taps.taps) {
                assert_eq!(w.iter().map(|&v| i32::from(v)).sum::<i32>(), 1 << PRECISION);
            }
            let b = Bitmap::new(len, 5, Layout::Gray, vec![201; len as usize * 5]);
            let out = resize_plane(&b, &taps, &Taps::down(5, 5.0, 3, Kernel::Lanczos3));
            assert!(out.data.iter().all(|&v| v == 201));
        }
    }
}
