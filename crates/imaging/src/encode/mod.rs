//! Encoding. Nothing but pixels (and, when asked, the sRGB ICC profile) is written: EXIF, XMP,
//! comments and thumbnails of the input never reach the output.

mod avif;
mod jpeg;
mod png;
mod webp;

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

/// `bitmap` must be `Rgb`/`Rgba` (JPEG: `Rgb` or `Gray`); the pipeline's flatten step ensures it.
pub fn encode(bitmap: &Bitmap, options: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    match options.format {
        OutputFormat::Jpeg => jpeg::encode(bitmap, options),
        OutputFormat::Png => png::encode(bitmap, options),
        OutputFormat::Webp => webp::encode(bitmap, options),
        OutputFormat::Avif => avif::encode(bitmap, options),
    }
}
