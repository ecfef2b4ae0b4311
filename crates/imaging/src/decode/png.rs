//! PNG through the pure-Rust `png` crate: palettes and tRNS expanded, 16-bit reduced to 8,
//! the first (default) image of an APNG, iCCP kept for the colour step.

use std::io::Cursor;

use super::Decoded;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;
use crate::limits::Limits;

pub fn decode(input: &[u8], limits: &Limits) -> Result<Decoded, ImagingError> {
    let corrupt = |e: png::DecodingError| ImagingError::Corrupt(format!("PNG could not be decoded: {e}"));
    // The decoder's own cap on what it allocates (ancillary chunks included: a zTXt or iCCP
    // deflate bomb stops here, not in our RSS).
    let budget = usize::try_from(limits.max_decoder_memory).unwrap_or(usize::MAX);
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(input), png::Limits { bytes: budget });
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    decoder.set_ignore_text_chunk(true);
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let icc = reader.info().icc_profile.as_ref().map(|p| p.to_vec());
    let size = reader.output_buffer_size().ok_or_else(|| ImagingError::Corrupt("PNG dimensions overflow".into()))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(corrupt)?;
    buf.truncate(frame.buffer_size());
    let layout = match frame.color_type {
        png::ColorType::Grayscale => Layout::Gray,
        png::ColorType::GrayscaleAlpha => Layout::GrayAlpha,
        png::ColorType::Rgb => Layout::Rgb,
        png::ColorType::Rgba => Layout::Rgba,
        png::ColorType::Indexed => return Err(ImagingError::Corrupt("PNG palette could not be expanded".into())),
    };
    if frame.bit_depth != png::BitDepth::Eight
        || buf.len() != frame.width as usize * frame.height as usize * layout.channels()
    {
        return Err(ImagingError::Corrupt("PNG decoded to an unexpected pixel format".into()));
    }
    Ok(Decoded { bitmap: Bitmap::new(frame.width, frame.height, layout, buf), icc })
}
