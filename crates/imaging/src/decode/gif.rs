//! GIF through the pure-Rust `gif` crate: the first frame, composed onto the logical screen.

use super::Decoded;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;
use crate::limits::Limits;

pub fn decode(input: &[u8], limits: &Limits) -> Result<Decoded, ImagingError> {
    let corrupt = |e: gif::DecodingError| ImagingError::Corrupt(format!("GIF could not be decoded: {e}"));
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let budget = limits.max_decoder_memory.min(u64::from(u32::MAX)).max(1);
    options.set_memory_limit(gif::MemoryLimit::Bytes(
        std::num::NonZeroU64::new(budget).unwrap_or(std::num::NonZeroU64::MIN),
    ));
    let mut decoder = options.read_info(input).map_err(corrupt)?;
    let (sw, sh) = (u32::from(decoder.width()), u32::from(decoder.height()));
    let frame = decoder
        .read_next_frame()
        .map_err(corrupt)?
        .ok_or_else(|| ImagingError::Corrupt("GIF has no image frame".into()))?;
    let (fw, fh) = (u32::from(frame.width), u32::from(frame.height));
    let (left, top) = (u32::from(frame.left), u32::from(frame.top));
    // A zero-sized logical screen happens in the wild; the frame then defines the canvas.
    let (cw, ch) = if sw == 0 || sh == 0 { (fw + left, fh + top) } else { (sw, sh) };
    if frame.buffer.len() != fw as usize * fh as usize * 4 || cw == 0 || ch == 0 {
        return Err(ImagingError::Corrupt("GIF frame is inconsistent with its size".into()));
    }
    let frame_bitmap = Bitmap::new(fw, fh, Layout::Rgba, frame.buffer.to_vec());
    if (fw, fh, left, top) == (cw, ch, 0, 0) {
        return Ok(Decoded { bitmap: frame_bitmap, icc: None });
    }
    // The frame may lie partly outside the screen: clip it.
    let mut canvas = Bitmap::filled(cw, ch, Layout::Rgba, &[0, 0, 0, 0]);
    if left < cw && top < ch {
        let vis_w = fw.min(cw - left);
        let vis_h = fh.min(ch - top);
        if vis_w > 0 && vis_h > 0 {
            canvas.paste(&frame_bitmap.crop(0, 0, vis_w, vis_h), left, top);
        }
    }
    Ok(Decoded { bitmap: canvas, icc: None })
}
