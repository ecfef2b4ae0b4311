//! Resampling with Lanczos3 (SIMD convolution from `fast_image_resize`), alpha premultiplied
//! around the convolution so transparent pixels do not bleed their colour into the edges.
//!
//! Very large reductions are split like libvips does: an integer box shrink first, then
//! Lanczos3 for the last factor of 2 to 4. Without it the convolution's coefficient tables
//! grow with the source's long side (a 15,000,000 x 1 PNG asks for gigabytes of them).

use std::cell::RefCell;

use fast_image_resize as fr;

use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;

thread_local! {
    /// The resizer keeps its scratch buffers between calls on the same worker thread.
    static RESIZER: RefCell<fr::Resizer> = RefCell::new(fr::Resizer::new());
}

/// Scratch kept between calls is capped: a worker that once resized a huge image must not hold
/// its buffers for ever.
const MAX_KEPT_SCRATCH: usize = 16 << 20;

/// Above this reduction on an axis, a box shrink does the bulk before Lanczos3.
const BOX_SHRINK_ABOVE: u32 = 4;

pub fn resize(b: Bitmap, width: u32, height: u32) -> Result<Bitmap, ImagingError> {
    if (b.width, b.height) == (width, height) {
        return Ok(b);
    }
    // Leave Lanczos3 a factor of at least 2 on each axis.
    let fx = (b.width / width.max(1) / 2).max(1);
    let fy = (b.height / height.max(1) / 2).max(1);
    let b = if box_shrinks((b.width, b.height), (width, height)) { box_shrink(&b, fx, fy) } else { b };
    if (b.width, b.height) == (width, height) {
        return Ok(b);
    }
    lanczos3(b, width, height)
}

/// Whether `resize` shrinks `from` to `to` by a box first.
pub fn box_shrinks(from: (u32, u32), to: (u32, u32)) -> bool {
    from.0 / to.0.max(1) > BOX_SHRINK_ABOVE || from.1 / to.1.max(1) > BOX_SHRINK_ABOVE
}

/// fast_image_resize's convolution on this thread's resizer, its kept scratch capped.
pub(crate) fn convolve(
    src: &impl fr::IntoImageView,
    dst: &mut fr::images::Image<'static>,
    options: &fr::ResizeOptions,
) -> Result<(), fr::ResizeError> {
    RESIZER.with_borrow_mut(|r| {
        let result = r.resize(src, dst, options);
        if r.size_of_internal_buffers() > MAX_KEPT_SCRATCH {
            r.reset_internal_buffers();
        }
        result
    })
}

/// Samples of the Lanczos3 kernel per unit of distance: linear interpolation between them is
/// within 1e-7 of the kernel, far below the 1/32768 the convolution rounds its weights to.
const KERNEL_STEPS: usize = 4096;

/// Lanczos3 read from a table. fast_image_resize evaluates its own kernel (two `sin` calls) for
/// every weight of every image: about 4 % of the CPU of a photo resized to 512 px
/// (docs/benchmarks.md), for the same values each time.
pub(crate) fn lanczos3_filter() -> fr::FilterType {
    // The support is a constant 3.0, which `Filter::new` accepts: the other arm is unreachable.
    fr::Filter::new("Lanczos3 (table)", lanczos3_tabled, 3.0).map_or(fr::FilterType::Lanczos3, fr::FilterType::Custom)
}

/// `sinc(x)·sinc(x/3)` on `(-3, 3)`, else 0.
fn lanczos3_exact(x: f64) -> f64 {
    let sinc = |x: f64| if x == 0.0 { 1.0 } else { (x * std::f64::consts::PI).sin() / (x * std::f64::consts::PI) };
    if x.abs() < 3.0 {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

pub(crate) fn lanczos3_tabled(x: f64) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    // One sample past 3, so that interpolating just below it needs no bound check.
    let table = TABLE
        .get_or_init(|| (0..=3 * KERNEL_STEPS + 1).map(|i| lanczos3_exact(i as f64 / KERNEL_STEPS as f64)).collect());
    let at = x.abs() * KERNEL_STEPS as f64;
    if at.is_nan() || at >= (3 * KERNEL_STEPS) as f64 {
        return 0.0;
    }
    let i = at as usize;
    table[i] + (table[i + 1] - table[i]) * (at - i as f64)
}

fn lanczos3(b: Bitmap, width: u32, height: u32) -> Result<Bitmap, ImagingError> {
    let layout = b.layout;
    let pixel_type = match layout {
        Layout::Gray => fr::PixelType::U8,
        Layout::GrayAlpha => fr::PixelType::U8x2,
        Layout::Rgb => fr::PixelType::U8x3,
        // CMYK is four independent channels here: no alpha treatment.
        Layout::Rgba | Layout::Cmyk => fr::PixelType::U8x4,
    };
    let internal = |e: &dyn std::fmt::Display| ImagingError::Internal(format!("resize failed: {e}"));
    let mut src = fr::images::Image::from_vec_u8(b.width, b.height, b.data, pixel_type).map_err(|e| internal(&e))?;
    let mut dst = fr::images::Image::new(width, height, pixel_type);
    // Premultiply in place rather than letting the resizer make a premultiplied copy: the
    // decoded image is the largest buffer of the whole pipeline, and it exists once.
    let mul_div = fr::MulDiv::default();
    if layout.has_alpha() {
        mul_div.multiply_alpha_inplace(&mut src).map_err(|e| internal(&e))?;
    }
    let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(lanczos3_filter())).use_alpha(false);
    convolve(&src, &mut dst, &options).map_err(|e| internal(&e))?;
    drop(src);
    if layout.has_alpha() {
        mul_div.divide_alpha_inplace(&mut dst).map_err(|e| internal(&e))?;
    }
    Ok(Bitmap::new(width, height, layout, dst.into_vec()))
}

/// Averages each `fx` x `fy` cell (edge cells are smaller); with alpha, colour is weighted by
/// alpha so that transparent pixels do not darken the result.
pub fn box_shrink(b: &Bitmap, fx: u32, fy: u32) -> Bitmap {
    let c = b.layout.channels();
    let (w, h) = (b.width as usize, b.height as usize);
    let fy = fy.max(1) as usize;
    let mut acc = BoxRows::new(b.width, fx, b.layout);
    let mut out = Vec::with_capacity(acc.out_width() * h.div_ceil(fy) * c);
    for (y, row) in b.data.chunks_exact(w * c).enumerate() {
        acc.add(row);
        if (y + 1).is_multiple_of(fy) || y + 1 == h {
            acc.emit(&mut out);
        }
    }
    Bitmap::new(acc.out_width() as u32, h.div_ceil(fy) as u32, b.layout, out)
}

/// Accumulates rows of `width` pixels into cells `fx` wide, to emit one averaged output row
/// per band of rows. Shared by the in-memory box shrink and PNG's streaming shrink-on-load.
pub struct BoxRows {
    width: usize,
    fx: usize,
    channels: usize,
    alpha: bool,
    rows: u64,
    /// Per output pixel and channel: the band's sums folded so far.
    sums: Vec<u64>,
    /// Per input column and channel: the rows added since the last fold. Adding a row is then
    /// one contiguous, vectorised pass; the sideways sums over `fx` columns are made once per
    /// fold instead of once per row. The generic per-pixel loop this replaces was 36 % of the
    /// CPU of a 14.7 MP PNG shrunk on load.
    columns: Vec<u32>,
    /// Rows in `columns`, folded before a sum could overflow.
    pending: u32,
}

/// Rows `columns` holds before a fold: 255 x 255 (a colour weighted by alpha) x 16,384 stays
/// below `u32::MAX`.
const FOLD_EVERY: u32 = 16_384;

/// Adds each run of `fx` columns of `C` channels to its output pixel's sums; each run's sums
/// are made in registers first.
fn fold_columns<const C: usize>(sums: &mut [u64], columns: &[u32], fx: usize) {
    for (cell, run) in sums.chunks_exact_mut(C).zip(columns.chunks(fx * C)) {
        let mut acc = [0u64; C];
        for column in run.chunks_exact(C) {
            for k in 0..C {
                acc[k] += u64::from(column[k]);
            }
        }
        for k in 0..C {
            cell[k] += acc[k];
        }
    }
}

impl BoxRows {
    pub fn new(width: u32, fx: u32, layout: Layout) -> BoxRows {
        let (width, fx, channels) = (width as usize, fx.max(1) as usize, layout.channels());
        let sums = vec![0; width.div_ceil(fx) * channels];
        let columns = vec![0; width * channels];
        BoxRows { width, fx, channels, alpha: layout.has_alpha(), rows: 0, sums, columns, pending: 0 }
    }

    pub fn out_width(&self) -> usize {
        self.width.div_ceil(self.fx)
    }

    /// Adds one row of `width` pixels.
    pub fn add(&mut self, row: &[u8]) {
        let c = self.channels;
        let row = &row[..row.len().min(self.width * c)];
        if self.alpha {
            for (column, px) in self.columns.chunks_exact_mut(c).zip(row.chunks_exact(c)) {
                let a = u32::from(px[c - 1]);
                for (sum, v) in column[..c - 1].iter_mut().zip(px) {
                    *sum += u32::from(*v) * a;
                }
                column[c - 1] += a;
            }
        } else {
            for (sum, v) in self.columns.iter_mut().zip(row) {
                *sum += u32::from(*v);
            }
        }
        self.rows += 1;
        self.pending += 1;
        if self.pending == FOLD_EVERY {
            self.fold();
        }
    }

    /// Moves the column sums into their output pixels' sums.
    fn fold(&mut self) {
        match self.channels {
            1 => fold_columns::<1>(&mut self.sums, &self.columns, self.fx),
            2 => fold_columns::<2>(&mut self.sums, &self.columns, self.fx),
            3 => fold_columns::<3>(&mut self.sums, &self.columns, self.fx),
            _ => fold_columns::<4>(&mut self.sums, &self.columns, self.fx),
        }
        self.columns.fill(0);
        self.pending = 0;
    }

    /// Appends the averaged row of the band added since the last emit, and starts a new band.
    pub fn emit(&mut self, out: &mut Vec<u8>) {
        self.fold();
        let c = self.channels;
        for (ox, cell) in self.sums.chunks_exact_mut(c).enumerate() {
            let n = (self.fx.min(self.width - ox * self.fx) as u64 * self.rows).max(1);
            if self.alpha {
                let a = cell[c - 1];
                out.extend(cell[..c - 1].iter().map(|v| (v + a / 2).checked_div(a).unwrap_or(0) as u8));
                out.push(((a + n / 2) / n) as u8);
            } else {
                out.extend(cell.iter().map(|v| ((v + n / 2) / n) as u8));
            }
            cell.fill(0);
        }
        self.rows = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The box average computed the obvious way: every pixel of each fx x rows cell, colour
    /// weighted by alpha where there is alpha.
    fn box_reference(rows: &[Vec<u8>], width: usize, fx: usize, layout: Layout) -> Vec<u8> {
        let c = layout.channels();
        let mut out = Vec::new();
        for ox in 0..width.div_ceil(fx) {
            let xs = ox * fx..(ox * fx + fx).min(width);
            let mut sums = vec![0u64; c];
            for row in rows {
                for x in xs.clone() {
                    let px = &row[x * c..x * c + c];
                    let a = if layout.has_alpha() { u64::from(px[c - 1]) } else { 1 };
                    let colours = if layout.has_alpha() { c - 1 } else { c };
                    for k in 0..colours {
                        sums[k] += u64::from(px[k]) * a;
                    }
                    if layout.has_alpha() {
                        sums[c - 1] += a;
                    }
                }
            }
            let n = (xs.len() * rows.len()) as u64;
            if layout.has_alpha() {
                let a = sums[c - 1];
                out.extend(sums[..c - 1].iter().map(|v| (v + a / 2).checked_div(a).unwrap_or(0) as u8));
                out.push(((a + n / 2) / n) as u8);
            } else {
                out.extend(sums.iter().map(|v| ((v + n / 2) / n) as u8));
            }
        }
        out
    }

    #[test]
    fn box_rows_average_like_the_obvious_loop_across_folds() {
        let mut seed = 0x2545_f491_u32;
        let mut byte = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed >> 8) as u8
        };
        for layout in [Layout::Gray, Layout::GrayAlpha, Layout::Rgb, Layout::Rgba, Layout::Cmyk] {
            for (width, fx, height) in [(13, 4, 3), (8, 8, 8), (5, 1, 2), (7, 3, 1)] {
                let rows: Vec<Vec<u8>> =
                    (0..height).map(|_| (0..width * layout.channels()).map(|_| byte()).collect()).collect();
                let mut acc = BoxRows::new(width as u32, fx as u32, layout);
                rows.iter().for_each(|row| acc.add(row));
                let mut out = Vec::new();
                acc.emit(&mut out);
                assert_eq!(out, box_reference(&rows, width, fx, layout), "{layout:?} {width}x{height} / {fx}");
            }
        }
        // More rows than a fold holds, at the largest weighted sums: nothing overflows.
        let (width, rows) = (6usize, FOLD_EVERY as usize * 2 + 3);
        let mut acc = BoxRows::new(width as u32, 3, Layout::Rgba);
        let row = vec![255u8; width * 4];
        (0..rows).for_each(|_| acc.add(&row));
        let mut out = Vec::new();
        acc.emit(&mut out);
        assert_eq!(out, vec![255u8; 2 * 4]);
    }

    #[test]
    fn the_tabled_kernel_is_lanczos3_within_1e_7() {
        for i in -40_000..=40_000 {
            let x = f64::from(i) / 10_000.0 + 1e-5;
            let (tabled, exact) = (lanczos3_tabled(x), lanczos3_exact(x));
            assert!((tabled - exact).abs() < 1e-7, "x = {x}: {tabled} against {exact}");
        }
        assert_eq!(lanczos3_tabled(0.0), 1.0);
        assert_eq!((lanczos3_tabled(3.0), lanczos3_tabled(f64::NAN)), (0.0, 0.0));
    }

    #[test]
    fn flat_colour_stays_flat_and_alpha_does_not_bleed() {
        // Left half opaque red, right half fully transparent *green*: premultiplication means
        // the green never shows up in the result.
        let (w, h) = (64, 8);
        let mut data = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                data.extend_from_slice(if x < w / 2 { &[255, 0, 0, 255] } else { &[0, 255, 0, 0] });
            }
        }
        let out = resize(Bitmap::new(w, h, Layout::Rgba, data), 16, 2).unwrap();
        for p in out.data.chunks_exact(4) {
            if p[3] > 16 {
                assert!(p[1] < 8, "green bled into a visible pixel: {p:?}");
            }
        }
        let flat = resize(Bitmap::filled(100, 50, Layout::Rgb, &[10, 200, 30]), 7, 3).unwrap();
        assert!(flat.data.chunks_exact(3).all(|p| p == [10, 200, 30]));
    }

    #[test]
    fn huge_reductions_box_shrink_first() {
        // 200,000 x 1 to 10 x 1: the box shrink brings it to 20 x 1 before Lanczos.
        let data: Vec<u8> = (0..200_000u32).map(|x| (x % 256) as u8).collect();
        let out = resize(Bitmap::new(200_000, 1, Layout::Gray, data), 10, 1).unwrap();
        assert_eq!((out.width, out.height), (10, 1));
        // Each cell averages many full 0..255 ramps: close to mid-grey.
        assert!(out.data.iter().all(|&v| (120..=135).contains(&v)), "{:?}", out.data);
    }

    #[test]
    fn box_shrink_weights_colour_by_alpha() {
        let b = Bitmap::new(2, 1, Layout::Rgba, vec![200, 0, 0, 255, 0, 255, 0, 0]);
        let out = box_shrink(&b, 2, 1);
        assert_eq!(out.data, vec![200, 0, 0, 128]);
        let edge = box_shrink(&Bitmap::new(3, 1, Layout::Gray, vec![10, 20, 90]), 2, 1);
        assert_eq!(edge.data, vec![15, 90]);
    }
}
