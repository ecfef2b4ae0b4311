//! Resampling with Lanczos3 (SIMD convolution from `fast_image_resize`), alpha premultiplied
//! around the convolution so transparent pixels do not bleed their colour into the edges.

use std::cell::RefCell;

use fast_image_resize as fr;

use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;

thread_local! {
    /// The resizer keeps its scratch buffers between calls on the same worker thread.
    static RESIZER: RefCell<fr::Resizer> = RefCell::new(fr::Resizer::new());
}

pub fn resize(b: Bitmap, width: u32, height: u32) -> Result<Bitmap, ImagingError> {
    if (b.width, b.height) == (width, height) {
        return Ok(b);
    }
    let pixel_type = match b.layout {
        Layout::Gray => fr::PixelType::U8,
        Layout::GrayAlpha => fr::PixelType::U8x2,
        Layout::Rgb => fr::PixelType::U8x3,
        // CMYK is four independent channels here: no alpha treatment.
        Layout::Rgba | Layout::Cmyk => fr::PixelType::U8x4,
    };
    let internal = |e: &dyn std::fmt::Display| ImagingError::Encode(format!("resize failed: {e}"));
    let src = fr::images::ImageRef::new(b.width, b.height, &b.data, pixel_type).map_err(|e| internal(&e))?;
    let mut dst = fr::images::Image::new(width, height, pixel_type);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3))
        .use_alpha(b.layout.has_alpha());
    RESIZER.with_borrow_mut(|r| r.resize(&src, &mut dst, &options)).map_err(|e| internal(&e))?;
    Ok(Bitmap::new(width, height, b.layout, dst.into_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
