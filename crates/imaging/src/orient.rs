//! EXIF orientation: turns the stored pixels upright. Runs after the resize, on the small image.

use crate::bitmap::Bitmap;

/// Whether an orientation swaps width and height (the 90° and 270° family, 5–8).
pub fn swaps_axes(orientation: u8) -> bool {
    matches!(orientation, 5..=8)
}

/// The stored-frame size corresponding to an upright size.
pub fn stored_size(orientation: u8, upright: (u32, u32)) -> (u32, u32) {
    if swaps_axes(orientation) {
        (upright.1, upright.0)
    } else {
        upright
    }
}

/// Applies EXIF orientation `orientation` (1–8; anything else is treated as 1).
pub fn apply(b: Bitmap, orientation: u8) -> Bitmap {
    if !(2..=8).contains(&orientation) {
        return b;
    }
    let (w, h) = (b.width as usize, b.height as usize);
    let c = b.layout.channels();
    let (ow, oh) = if swaps_axes(orientation) { (h, w) } else { (w, h) };
    let mut out = vec![0u8; b.data.len()];
    // For each output pixel, the stored pixel it comes from.
    let source = |x: usize, y: usize| -> (usize, usize) {
        match orientation {
            2 => (w - 1 - x, y),
            3 => (w - 1 - x, h - 1 - y),
            4 => (x, h - 1 - y),
            5 => (y, x),
            6 => (y, h - 1 - x),
            7 => (w - 1 - y, h - 1 - x),
            _ => (w - 1 - y, x), // 8
        }
    };
    for y in 0..oh {
        let row = &mut out[y * ow * c..(y + 1) * ow * c];
        for x in 0..ow {
            let (sx, sy) = source(x, y);
            let s = (sy * w + sx) * c;
            row[x * c..x * c + c].copy_from_slice(&b.data[s..s + c]);
        }
    }
    Bitmap::new(ow as u32, oh as u32, b.layout, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitmap::Layout;

    /// A 3x2 grey image whose pixel values are their stored index: 0 1 2 / 3 4 5.
    fn sample() -> Bitmap {
        Bitmap::new(3, 2, Layout::Gray, (0..6).collect())
    }

    #[test]
    fn all_eight_orientations() {
        // What an upright viewer sees for each EXIF orientation of the stored 3x2 sample.
        let expected: [(u32, u32, [u8; 6]); 8] = [
            (3, 2, [0, 1, 2, 3, 4, 5]),
            (3, 2, [2, 1, 0, 5, 4, 3]),
            (3, 2, [5, 4, 3, 2, 1, 0]),
            (3, 2, [3, 4, 5, 0, 1, 2]),
            (2, 3, [0, 3, 1, 4, 2, 5]),
            (2, 3, [3, 0, 4, 1, 5, 2]),
            (2, 3, [5, 2, 4, 1, 3, 0]),
            (2, 3, [2, 5, 1, 4, 0, 3]),
        ];
        for (i, (w, h, px)) in expected.iter().enumerate() {
            let o = apply(sample(), i as u8 + 1);
            assert_eq!((o.width, o.height), (*w, *h), "orientation {}", i + 1);
            assert_eq!(o.data, px.to_vec(), "orientation {}", i + 1);
        }
    }

    #[test]
    fn invalid_orientation_is_identity() {
        assert_eq!(apply(sample(), 0), sample());
        assert_eq!(apply(sample(), 9), sample());
    }
}
