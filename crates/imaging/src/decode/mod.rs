//! Decoding, with shrink-on-load: when the target is much smaller than the source, the decoder
//! delivers a 1/2, 1/4 or 1/8 image (JPEG in the DCT domain; WebP through libwebp's scaler;
//! PNG, AVIF and HEIC by box-averaging rows as they stream out), leaving the final, high-quality step to the
//! resampler.

mod frame;
pub(crate) mod frames;
mod gif;
mod gif_frames;
mod heif;
pub(crate) mod jpeg;
mod png;
mod webp;
mod webp_frames;

use crate::bitmap::Bitmap;
use crate::error::ImagingError;
use crate::limits::Limits;
use crate::probe::{ImageFormat, Probe};

pub(crate) use jpeg::panic_message;

pub struct Decoded {
    pub bitmap: Bitmap,
    /// The embedded ICC profile, if any; the colour step converts to sRGB with it.
    pub icc: Option<Vec<u8>>,
}

/// How much of the shrink the final resampler must still do itself. Block shrinking in the DCT
/// domain is a box filter and aliases; leaving at least 2x to Lanczos3 keeps the result as sharp
/// and clean as a full decode (the same rule libvips uses).
const RESAMPLER_HEADROOM: f64 = 2.0;

/// The shrink-on-load denominator (1, 2, 4 or 8) for decoding `src` toward `target`, both in
/// the stored (not yet oriented) frame.
pub fn shrink_on_load(format: ImageFormat, src: (u32, u32), target: (u32, u32)) -> u32 {
    let factor = (f64::from(src.0) / f64::from(target.0.max(1))).min(f64::from(src.1) / f64::from(target.1.max(1)));
    match format {
        ImageFormat::Jpeg | ImageFormat::Webp | ImageFormat::Png | ImageFormat::Avif | ImageFormat::Heic => {
            [8u32, 4, 2].into_iter().find(|&d| factor >= f64::from(d) * RESAMPLER_HEADROOM).unwrap_or(1)
        }
        ImageFormat::Gif => 1,
    }
}

/// The shrink-on-load denominator the decoder will really use for this image: interlaced PNGs
/// cannot be streamed row by row, so they decode at full size.
pub fn scale_for(probe: &Probe, target: (u32, u32)) -> u32 {
    if probe.png.as_ref().is_some_and(|p| p.interlaced) {
        return 1;
    }
    shrink_on_load(probe.format, (probe.width, probe.height), target)
}

/// Decodes the first frame of `input` at 1/`scale` of its size (where the format allows; the
/// bitmap says what size came out).
pub fn decode(input: &[u8], probe: &Probe, scale: u32, limits: &Limits) -> Result<Decoded, ImagingError> {
    match probe.format {
        ImageFormat::Jpeg => jpeg::decode(input, probe, scale),
        ImageFormat::Png => png::decode(input, scale),
        ImageFormat::Webp => webp::decode(input, probe, scale),
        ImageFormat::Gif => gif::decode(input, limits),
        ImageFormat::Avif | ImageFormat::Heic => heif::decode(input, probe, scale),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrink_on_load_leaves_headroom_for_the_resampler() {
        let j = ImageFormat::Jpeg;
        assert_eq!(shrink_on_load(j, (4000, 3000), (512, 384)), 2);
        assert_eq!(shrink_on_load(j, (4000, 3000), (250, 187)), 8);
        assert_eq!(shrink_on_load(j, (4000, 3000), (250, 188)), 4);
        assert_eq!(shrink_on_load(j, (4000, 3000), (3000, 2250)), 1);
        assert_eq!(shrink_on_load(j, (1000, 1000), (100, 100)), 4);
        assert_eq!(shrink_on_load(ImageFormat::Png, (4000, 3000), (10, 10)), 8);
        assert_eq!(shrink_on_load(ImageFormat::Gif, (4000, 3000), (10, 10)), 1);
        assert_eq!(shrink_on_load(j, (1, 1), (1, 1)), 1);
    }
}
