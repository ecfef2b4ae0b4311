//! The frames of an animation, one at a time, each composed onto the full canvas (what a
//! browser shows at that moment), so that every later step — resize, crop, colour, encode —
//! works on whole pictures, as sharp and libvips do. One source per animated format: GIF
//! composed here (`gif_frames`), WebP by libwebp's animation decoder (`webp_frames`).

use super::frame::Frame;
use super::gif_frames::GifFrames;
use super::webp_frames::WebpFrames;
use crate::error::ImagingError;
use crate::limits::Limits;
use crate::probe::{ImageFormat, Probe};

pub enum FrameSource<'a> {
    // Boxed: the GIF decoder's state is large, and there is one source per conversion.
    Gif(Box<GifFrames<'a>>),
    Webp(WebpFrames<'a>),
}

impl<'a> FrameSource<'a> {
    /// The frames of `input`, an animation `probe` has read (GIF or WebP).
    pub fn open(input: &'a [u8], probe: &Probe, limits: &Limits) -> Result<FrameSource<'a>, ImagingError> {
        match probe.format {
            ImageFormat::Gif => GifFrames::open(input, probe, limits).map(|g| FrameSource::Gif(Box::new(g))),
            ImageFormat::Webp => WebpFrames::open(input, probe, limits).map(FrameSource::Webp),
            other => Err(ImagingError::Internal(format!("{} has no animation decoder", other.as_str()))),
        }
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, ImagingError> {
        match self {
            FrameSource::Gif(g) => g.next_frame(),
            FrameSource::Webp(w) => w.next_frame(),
        }
    }

    /// The embedded ICC profile, if any (animated WebP's ICCP chunk; GIF has none we read).
    pub fn icc(&self) -> Option<&[u8]> {
        match self {
            FrameSource::Gif(_) => None,
            FrameSource::Webp(w) => w.icc(),
        }
    }

    /// Plays of the animation, WebP's convention (0 = forever). GIF: valid once the first
    /// frame is read.
    pub fn loop_count(&self) -> u32 {
        match self {
            FrameSource::Gif(g) => g.loop_count(),
            FrameSource::Webp(w) => w.loop_count(),
        }
    }
}
