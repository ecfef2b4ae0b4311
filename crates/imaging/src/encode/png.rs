//! PNG through the pure-Rust `png` crate (fdeflate-based fast compression, adaptive filters).

use super::EncodeOptions;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;

pub fn encode(b: &Bitmap, o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    let fail = |e: png::EncodingError| ImagingError::Internal(e.to_string());
    let mut out = Vec::with_capacity(b.data.len() / 2 + 1024);
    {
        let mut info = png::Info::with_size(b.width, b.height);
        info.color_type = match b.layout {
            Layout::Gray => png::ColorType::Grayscale,
            Layout::GrayAlpha => png::ColorType::GrayscaleAlpha,
            Layout::Rgb => png::ColorType::Rgb,
            Layout::Rgba => png::ColorType::Rgba,
            Layout::Cmyk => return Err(ImagingError::Internal("PNG cannot hold CMYK pixels".into())),
        };
        info.bit_depth = png::BitDepth::Eight;
        info.icc_profile = o.icc.as_deref().map(|p| p.to_vec().into());
        let mut enc = png::Encoder::with_info(&mut out, info).map_err(fail)?;
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().map_err(fail)?;
        writer.write_image_data(&b.data).map_err(fail)?;
        writer.finish().map_err(fail)?;
    }
    Ok(out)
}
