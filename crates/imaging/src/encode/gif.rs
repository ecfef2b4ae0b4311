//! GIF89a through the `gif` crate: each frame quantised to its own 256-colour palette (exact
//! when it has no more colours, NeuQuant otherwise), alpha cut to GIF's 1 bit at half. Every
//! frame is a whole canvas disposed "to background" (cleared to transparent) before the next,
//! so a transparent pixel never shows the frame before it.

use super::EncodeOptions;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;

/// NeuQuant's sampling, 1 (best, slowest) to 30: 10 is the crate's "good compromise", at about
/// a tenth of speed 1's CPU.
const QUANTISER_SPEED: i32 = 10;

pub fn encode(b: &Bitmap, _o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    let mut encoder = GifEncoder::new(b.width, b.height, 1)?;
    encoder.add(b, 0)?;
    encoder.finish()
}

pub struct GifEncoder {
    encoder: gif::Encoder<Vec<u8>>,
    width: u16,
    height: u16,
}

fn fail(e: gif::EncodingError) -> ImagingError {
    ImagingError::Internal(format!("GIF: {e}"))
}

impl GifEncoder {
    /// `plays`: WebP's convention, 0 = forever, n = n plays (GIF stores repetitions after the
    /// first; one play needs no NETSCAPE extension at all).
    pub fn new(width: u32, height: u32, plays: u32) -> Result<GifEncoder, ImagingError> {
        let size = |v: u32| {
            u16::try_from(v)
                .map_err(|_| ImagingError::BadParameter(format!("GIF holds at most 65535 pixels a side, not {v}")))
        };
        let (width, height) = (size(width)?, size(height)?);
        let mut encoder = gif::Encoder::new(Vec::new(), width, height, &[]).map_err(fail)?;
        match plays {
            0 => encoder.set_repeat(gif::Repeat::Infinite).map_err(fail)?,
            1 => {}
            n => encoder.set_repeat(gif::Repeat::Finite(u16::try_from(n - 1).unwrap_or(u16::MAX))).map_err(fail)?,
        }
        Ok(GifEncoder { encoder, width, height })
    }

    pub fn add(&mut self, b: &Bitmap, delay_ms: u32) -> Result<(), ImagingError> {
        if (b.width, b.height) != (u32::from(self.width), u32::from(self.height)) {
            return Err(ImagingError::Internal("GIF frames differ in size".into()));
        }
        let mut rgba = rgba_one_bit_alpha(b)?;
        let mut frame = gif::Frame::from_rgba_speed(self.width, self.height, &mut rgba, QUANTISER_SPEED);
        // Hundredths of a second, rounded.
        frame.delay = u16::try_from(delay_ms.saturating_add(5) / 10).unwrap_or(u16::MAX);
        frame.dispose = gif::DisposalMethod::Background;
        // Some decoders (Pillow) clear a disposed frame to transparent only if it names a
        // transparent index, and to the opaque background colour otherwise (browsers always
        // clear to transparent): name one, unused, when the palette has room.
        if frame.transparent.is_none() {
            if let Some(palette) = frame.palette.as_mut().filter(|p| p.len() < 256 * 3) {
                frame.transparent = u8::try_from(palette.len() / 3).ok();
                palette.extend_from_slice(&[0, 0, 0]);
            }
        }
        self.encoder.write_frame(&frame).map_err(fail)
    }

    pub fn finish(self) -> Result<Vec<u8>, ImagingError> {
        self.encoder.into_inner().map_err(|e| ImagingError::Internal(format!("GIF: {e}")))
    }
}

/// RGBA with alpha 0 or 255 (cut at 128, as GIF has one bit), whatever the layout.
fn rgba_one_bit_alpha(b: &Bitmap) -> Result<Vec<u8>, ImagingError> {
    let mut out = Vec::with_capacity(b.width as usize * b.height as usize * 4);
    match b.layout {
        Layout::Rgba => out.extend_from_slice(&b.data),
        Layout::Rgb => b.data.chunks_exact(3).for_each(|p| out.extend_from_slice(&[p[0], p[1], p[2], 255])),
        Layout::Gray => b.data.iter().for_each(|&g| out.extend_from_slice(&[g, g, g, 255])),
        Layout::GrayAlpha => b.data.chunks_exact(2).for_each(|p| out.extend_from_slice(&[p[0], p[0], p[0], p[1]])),
        Layout::Cmyk => return Err(ImagingError::Internal("GIF cannot hold CMYK pixels".into())),
    }
    for p in out.chunks_exact_mut(4) {
        if p[3] < 128 {
            p.copy_from_slice(&[0, 0, 0, 0]);
        } else {
            p[3] = 255;
        }
    }
    Ok(out)
}
