//! `cover`'s crop: by gravity, or by entropy (the window whose luminance histogram carries the
//! most information, found in one sliding pass).

use crate::bitmap::{Bitmap, Layout};
use crate::geometry::place;
use crate::spec::Gravity;

pub fn crop(b: Bitmap, size: (u32, u32), gravity: Gravity) -> Bitmap {
    let (w, h) = (size.0.min(b.width), size.1.min(b.height));
    if (w, h) == (b.width, b.height) {
        return b;
    }
    let (x, y) = match gravity {
        Gravity::Entropy => entropy_offset(&b, (w, h)),
        g => place(g, (b.width, b.height), (w, h)),
    };
    b.crop(x, y, w, h)
}

/// Slides a window along the one axis that is cropped (cover crops only one) and keeps the
/// position of highest Shannon entropy of 32-bin luminance; ties keep the earliest, so the
/// result is deterministic.
fn entropy_offset(b: &Bitmap, (w, h): (u32, u32)) -> (u32, u32) {
    const BINS: usize = 32;
    let luma = luminance(b);
    let (bw, bh) = (b.width as usize, b.height as usize);
    let along_x = (w as usize) < bw;
    // Histograms of each column (or row) of the image, so moving the window is two additions.
    let lines = if along_x { bw } else { bh };
    let mut hist = vec![[0u32; BINS]; lines];
    for y in 0..bh {
        for x in 0..bw {
            let bin = usize::from(luma[y * bw + x]) * BINS / 256;
            hist[if along_x { x } else { y }][bin] += 1;
        }
    }
    let window = if along_x { w as usize } else { h as usize };
    let mut acc = [0u32; BINS];
    for line in &hist[..window] {
        add(&mut acc, line, 1);
    }
    let (mut best, mut best_pos) = (entropy(&acc), 0);
    for pos in 1..=(lines - window) {
        add(&mut acc, &hist[pos - 1], -1);
        add(&mut acc, &hist[pos + window - 1], 1);
        let e = entropy(&acc);
        if e > best + 1e-9 {
            best = e;
            best_pos = pos;
        }
    }
    let other = if along_x { (bh - h as usize) / 2 } else { (bw - w as usize) / 2 };
    if along_x {
        (best_pos as u32, other as u32)
    } else {
        (other as u32, best_pos as u32)
    }
}

fn add(acc: &mut [u32; 32], line: &[u32; 32], sign: i32) {
    for (a, l) in acc.iter_mut().zip(line) {
        *a = if sign > 0 { *a + l } else { *a - l };
    }
}

fn entropy(hist: &[u32; 32]) -> f64 {
    let total: u32 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = f64::from(total);
    hist.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / t;
            -p * p.log2()
        })
        .sum()
}

fn luminance(b: &Bitmap) -> Vec<u8> {
    let c = b.layout.channels();
    b.data
        .chunks_exact(c)
        .map(|p| match b.layout {
            Layout::Gray | Layout::GrayAlpha => p[0],
            // Rec. 601 weights in integers; CMYK approximated by its inverted K-weighted mean.
            Layout::Rgb | Layout::Rgba => {
                ((77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2])) >> 8) as u8
            }
            Layout::Cmyk => {
                255 - ((u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2]) + 3 * u32::from(p[3])) / 6).min(255) as u8
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_finds_the_detailed_part() {
        // 300x100, flat grey except a noisy 100x100 patch at x = 180..280.
        let (w, h) = (300u32, 100u32);
        let mut data = vec![128u8; (w * h) as usize];
        let mut seed = 12345u32;
        for y in 0..h {
            for x in 180..280 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                data[(y * w + x) as usize] = (seed & 0xff) as u8;
            }
        }
        let out = crop(Bitmap::new(w, h, Layout::Gray, data.clone()), (100, 100), Gravity::Entropy);
        assert_eq!((out.width, out.height), (100, 100));
        assert_eq!(out.data, Bitmap::new(w, h, Layout::Gray, data).crop(180, 0, 100, 100).data);
    }

    #[test]
    fn gravity_crops() {
        let b = Bitmap::new(4, 1, Layout::Gray, vec![1, 2, 3, 4]);
        assert_eq!(crop(b.clone(), (2, 1), Gravity::West).data, vec![1, 2]);
        assert_eq!(crop(b.clone(), (2, 1), Gravity::East).data, vec![3, 4]);
        assert_eq!(crop(b.clone(), (2, 1), Gravity::Center).data, vec![2, 3]);
        assert_eq!(crop(b, (9, 9), Gravity::Center).data, vec![1, 2, 3, 4]);
    }
}
