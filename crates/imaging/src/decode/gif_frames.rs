//! Every frame of an animated GIF, composed onto the logical screen as a browser shows it:
//! each frame drawn over what the previous ones left (its transparent pixels keep what is
//! under them), then disposed of as its graphic control extension says before the next is
//! drawn — "none"/"keep" leaves it, "background" clears its rectangle to transparent (what
//! browsers, sharp and libvips do, rather than painting the background colour), "previous"
//! restores the canvas as it was before the frame. Frames are clipped to the screen.

use super::frame::Frame;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;
use crate::limits::Limits;
use crate::probe::Probe;

/// A GIF's frames, decoded one at a time: only the canvas, the canvas saved for "previous" and
/// the frame being decoded are held at once.
pub struct GifFrames<'a> {
    decoder: gif::Decoder<&'a [u8]>,
    canvas: Bitmap,
    /// The canvas before the last frame drawn, when that frame is to be disposed "previous".
    saved: Option<Bitmap>,
    /// How the last frame drawn is disposed of, and its rectangle (clipped to the canvas).
    pending: Option<(gif::DisposalMethod, Rect)>,
    /// Frames the probe counted: the decoder must find exactly these.
    expected: u32,
    emitted: u32,
}

#[derive(Clone, Copy)]
struct Rect {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

fn corrupt(e: gif::DecodingError) -> ImagingError {
    ImagingError::Corrupt(format!("GIF could not be decoded: {e}"))
}

impl<'a> GifFrames<'a> {
    pub fn open(input: &'a [u8], probe: &Probe, limits: &Limits) -> Result<GifFrames<'a>, ImagingError> {
        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::RGBA);
        let budget = limits.max_decoder_memory.clamp(1, u64::from(u32::MAX));
        options.set_memory_limit(gif::MemoryLimit::Bytes(
            std::num::NonZeroU64::new(budget).unwrap_or(std::num::NonZeroU64::MIN),
        ));
        let decoder = options.read_info(input).map_err(corrupt)?;
        // The probe's canvas (a 0x0 logical screen takes the first frame's size there): the size
        // the plan was made for.
        let canvas = Bitmap::filled(probe.width, probe.height, Layout::Rgba, &[0, 0, 0, 0]);
        Ok(GifFrames { decoder, canvas, saved: None, pending: None, expected: probe.frames, emitted: 0 })
    }

    /// How many times the animation plays, in WebP's terms (0 = forever). GIF's NETSCAPE
    /// extension counts repetitions after the first play (0 = forever), and without it a GIF
    /// plays once. Read after the first frame: the extension comes before it.
    pub fn loop_count(&self) -> u32 {
        match self.decoder.repeat() {
            gif::Repeat::Infinite => 0,
            gif::Repeat::Finite(n) => u32::from(n) + 1,
        }
    }

    /// The next composed frame, or `None` after the last.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ImagingError> {
        self.dispose_previous();
        let frame = match self.decoder.read_next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => return self.end(),
            // A file cut after its last frame's data (no trailer) is common and complete
            // enough; cut inside a frame, it is corrupt.
            Err(_) if self.emitted == self.expected => return Ok(None),
            Err(e) => return Err(corrupt(e)),
        };
        if self.emitted >= self.expected {
            return Err(ImagingError::Corrupt("GIF holds more frames than its blocks declare".into()));
        }
        let (fw, fh) = (u32::from(frame.width), u32::from(frame.height));
        if frame.buffer.len() != fw as usize * fh as usize * 4 {
            return Err(ImagingError::Corrupt("GIF frame is inconsistent with its size".into()));
        }
        let (left, top) = (u32::from(frame.left), u32::from(frame.top));
        let rect = Rect {
            x: left.min(self.canvas.width),
            y: top.min(self.canvas.height),
            w: fw.min(self.canvas.width.saturating_sub(left)),
            h: fh.min(self.canvas.height.saturating_sub(top)),
        };
        if frame.dispose == gif::DisposalMethod::Previous {
            match &mut self.saved {
                Some(saved) => saved.data.copy_from_slice(&self.canvas.data),
                None => self.saved = Some(self.canvas.clone()),
            }
        }
        // Draw: a GIF pixel is opaque or transparent (alpha 0, the transparent index), and a
        // transparent one shows what lies under it.
        let stride = self.canvas.stride();
        for row in 0..rect.h as usize {
            let src = &frame.buffer[row * fw as usize * 4..][..rect.w as usize * 4];
            let start = (rect.y as usize + row) * stride + rect.x as usize * 4;
            let dst = &mut self.canvas.data[start..start + rect.w as usize * 4];
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
                if s[3] != 0 {
                    d.copy_from_slice(s);
                }
            }
        }
        self.pending = Some((frame.dispose, rect));
        self.emitted += 1;
        // GIF delays are in hundredths of a second.
        Ok(Some(Frame { canvas: self.canvas.clone(), delay_ms: u32::from(frame.delay) * 10 }))
    }

    /// The decoder found no more frames: right if the probe counted as many.
    fn end(&self) -> Result<Option<Frame>, ImagingError> {
        if self.emitted == self.expected {
            Ok(None)
        } else {
            Err(ImagingError::Corrupt(format!(
                "GIF declares {} frames but {} could be decoded",
                self.expected, self.emitted
            )))
        }
    }

    fn dispose_previous(&mut self) {
        let Some((dispose, rect)) = self.pending.take() else { return };
        match dispose {
            gif::DisposalMethod::Background => {
                let stride = self.canvas.stride();
                for row in rect.y as usize..(rect.y + rect.h) as usize {
                    let start = row * stride + rect.x as usize * 4;
                    self.canvas.data[start..start + rect.w as usize * 4].fill(0);
                }
            }
            gif::DisposalMethod::Previous => {
                if let Some(saved) = &self.saved {
                    self.canvas.data.copy_from_slice(&saved.data);
                }
            }
            gif::DisposalMethod::Any | gif::DisposalMethod::Keep => {}
        }
    }
}
