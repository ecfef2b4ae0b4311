//! Encoding. Nothing but pixels (and, when asked, the sRGB ICC profile) is written: EXIF, XMP,
//! comments and thumbnails of the input never reach the output.

mod avif;
mod gif;
mod jpeg;
mod png;
mod webp;
mod webp_anim;

pub use avif::encoder_description as avif_encoder;
pub(crate) use jpeg::encode_ycbcr as encode_jpeg_ycbcr;

use crate::bitmap::Bitmap;
use crate::error::ImagingError;
use crate::spec::OutputFormat;

pub struct EncodeOptions {
    pub format: OutputFormat,
    pub quality: u8,
    pub progressive: bool,
    pub lossless: bool,
    /// AVIF only: 0 (fastest) to `spec::MAX_EFFORT`, already within the deployment's cap.
    // Read by the AVIF encoder alone, which a build without `avif` lacks.
    #[cfg_attr(not(feature = "avif"), allow(dead_code))]
    pub effort: u8,
    /// ICC profile to embed (sRGB, since pixels are sRGB by then), or none.
    pub icc: Option<Vec<u8>>,
}

/// Default quality when the caller gives none (the value imgproxy and sharp default to is 80).
pub const DEFAULT_QUALITY: u8 = 80;

/// The quality `format` gets when the request names none: [`DEFAULT_QUALITY`], except AVIF's
/// own where its encoder's scale differs ([`avif::default_quality`]).
pub fn default_quality(format: OutputFormat) -> u8 {
    match format {
        OutputFormat::Avif => avif::default_quality(),
        _ => DEFAULT_QUALITY,
    }
}

/// `bitmap` must be `Rgb`/`Rgba` (JPEG: `Rgb` or `Gray`); the pipeline's flatten step ensures it.
pub fn encode(bitmap: &Bitmap, options: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    match options.format {
        OutputFormat::Jpeg => jpeg::encode(bitmap, options),
        OutputFormat::Png => png::encode(bitmap, options),
        OutputFormat::Webp => webp::encode(bitmap, options),
        OutputFormat::Avif => avif::encode(bitmap, options),
        OutputFormat::Gif => gif::encode(bitmap, options),
    }
}

/// An animation being written, frame by frame, in a format that holds one
/// ([`OutputFormat::supports_animation`]).
pub enum AnimationEncoder {
    Gif(gif::GifEncoder),
    Webp(webp_anim::WebpAnimEncoder),
}

impl AnimationEncoder {
    /// `plays`: WebP's convention, 0 = forever, n = n plays.
    pub fn new(width: u32, height: u32, plays: u32, options: &EncodeOptions) -> Result<AnimationEncoder, ImagingError> {
        match options.format {
            OutputFormat::Gif => gif::GifEncoder::new(width, height, plays).map(AnimationEncoder::Gif),
            OutputFormat::Webp => {
                webp_anim::WebpAnimEncoder::new(width, height, plays, options).map(AnimationEncoder::Webp)
            }
            other => Err(ImagingError::Internal(format!("{} holds no animation", other.as_str()))),
        }
    }

    /// Adds the next frame (every frame the same size), shown for `delay_ms`.
    pub fn add(&mut self, frame: &Bitmap, delay_ms: u32) -> Result<(), ImagingError> {
        match self {
            AnimationEncoder::Gif(g) => g.add(frame, delay_ms),
            AnimationEncoder::Webp(w) => w.add(frame, delay_ms),
        }
    }

    pub fn finish(self) -> Result<Vec<u8>, ImagingError> {
        match self {
            AnimationEncoder::Gif(g) => g.finish(),
            AnimationEncoder::Webp(w) => w.finish(),
        }
    }
}
