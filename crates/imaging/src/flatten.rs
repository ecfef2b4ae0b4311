//! Alpha for the output: composed onto the background where the format has none (JPEG), and
//! dropped where every pixel is opaque anyway (smaller files, faster encodes).

use crate::bitmap::{Bitmap, Layout};
use crate::spec::Rgba;

pub fn flatten(b: Bitmap, keep_alpha: bool, background: Rgba) -> Bitmap {
    if !b.layout.has_alpha() || (keep_alpha && b.uses_alpha()) {
        return b;
    }
    if b.layout == Layout::GrayAlpha {
        if !b.uses_alpha() {
            let data = b.data.chunks_exact(2).map(|p| p[0]).collect();
            return Bitmap::new(b.width, b.height, Layout::Gray, data);
        }
        // Translucent grey onto a possibly coloured background: compose in RGB.
        return flatten(crate::colour::expand_gray(b), keep_alpha, background);
    }
    let bg = background.0;
    let mut data = Vec::with_capacity(b.width as usize * b.height as usize * 3);
    for p in b.data.chunks_exact(4) {
        let a = u32::from(p[3]);
        let mix = |c: u8, k: u8| ((u32::from(c) * a + u32::from(k) * (255 - a) + 127) / 255) as u8;
        data.extend_from_slice(&[mix(p[0], bg[0]), mix(p[1], bg[1]), mix(p[2], bg[2])]);
    }
    Bitmap::new(b.width, b.height, Layout::Rgb, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_onto_background() {
        let b = Bitmap::new(3, 1, Layout::Rgba, vec![255, 0, 0, 255, 255, 0, 0, 0, 0, 0, 0, 128]);
        let out = flatten(b.clone(), false, Rgba::WHITE);
        assert_eq!(out.data, vec![255, 0, 0, 255, 255, 255, 127, 127, 127]);
        // Kept where the output has alpha and uses it.
        assert_eq!(flatten(b, true, Rgba::WHITE).layout, Layout::Rgba);
        let opaque = Bitmap::filled(2, 2, Layout::Rgba, &[1, 2, 3, 255]);
        assert_eq!(flatten(opaque, true, Rgba::WHITE).layout, Layout::Rgb);
    }
}
