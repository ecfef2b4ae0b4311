//! `contain`'s padding: the resized image placed by gravity on a canvas of exactly the box.

use crate::bitmap::{Bitmap, Layout};
use crate::geometry::place;
use crate::spec::{Gravity, Rgba};

/// `b` is sRGB (grey is expanded to RGB first). A translucent background makes the result `Rgba`.
pub fn extend(b: Bitmap, canvas: (u32, u32), gravity: Gravity, background: Rgba) -> Bitmap {
    let b = crate::colour::expand_gray(b);
    let b = if background.0[3] != 255 { with_alpha(b) } else { b };
    let pixel: &[u8] = match b.layout {
        Layout::Rgba => &background.0,
        _ => &background.0[..3],
    };
    let mut out = Bitmap::filled(canvas.0, canvas.1, b.layout, pixel);
    let (x, y) = place(gravity, canvas, (b.width, b.height));
    out.paste(&b, x, y);
    out
}

pub fn with_alpha(b: Bitmap) -> Bitmap {
    if b.layout != Layout::Rgb {
        return b;
    }
    let mut data = Vec::with_capacity(b.width as usize * b.height as usize * 4);
    for p in b.data.chunks_exact(3) {
        data.extend_from_slice(&[p[0], p[1], p[2], 255]);
    }
    Bitmap::new(b.width, b.height, Layout::Rgba, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_with_background_at_gravity() {
        let img = Bitmap::filled(2, 1, Layout::Rgb, &[9, 9, 9]);
        let out = extend(img.clone(), (4, 1), Gravity::West, Rgba([1, 2, 3, 255]));
        assert_eq!(out.data, vec![9, 9, 9, 9, 9, 9, 1, 2, 3, 1, 2, 3]);
        let out = extend(img, (2, 2), Gravity::South, Rgba::TRANSPARENT);
        assert_eq!(out.layout, Layout::Rgba);
        assert_eq!(out.data, vec![0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 255, 9, 9, 9, 255]);
    }
}
