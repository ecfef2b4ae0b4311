//! Limits checked on the probe, before a single pixel buffer is allocated: this is where
//! decompression bombs stop. Every limit has a documented default and can be overridden per call.

use crate::error::LimitExceeded;
use crate::probe::{ImageFormat, Probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes. Default 32 MiB.
    pub max_input_bytes: u64,
    /// Largest accepted width x height as declared in the header. Default 100 megapixels: a
    /// 108 MP phone photo is rejected, a 50 MP camera photo is not.
    pub max_input_pixels: u64,
    /// Largest number of frames (GIF, APNG, animated WebP). Walking thousands of frames is
    /// itself an attack, even when only the first is decoded. Default 1,000.
    pub max_frames: u64,
    /// Largest input pixels summed over the frames of an animation kept as one: the canvas
    /// (width x height, for GIF the frames' extents if larger) times the frames. Every frame is
    /// composed at the canvas size and resized, about 0.8–1.1 s of one core per 250 MP
    /// (docs/formats.md, "Animations"). Default 250 megapixels (sharp's `limitInputPixels`,
    /// 268 MP, counts frames the same way): 1,000 frames of 500x500, or 100 of 1580x1580.
    pub max_animation_pixels: u64,
    /// Largest output pixels summed over the frames of an animation kept as one: the output
    /// size times the frames. Encoding is the dear part (libwebp's animation encoder 4–13 MP
    /// of frames a second, noise the slowest; GIF's quantiser 5–20), so this bound is tighter.
    /// Default 25 megapixels: 100 frames of 500x500, 6–7 s of one core for frames of noise,
    /// about 2 s for drawn content.
    pub max_animation_output_pixels: u64,
    /// Largest number of JPEG scans: each progressive scan re-walks the whole coefficient buffer,
    /// so a file of thousands of tiny scans burns CPU out of all proportion to its size.
    /// Default 100 (encoders write about 10).
    pub max_jpeg_scans: u64,
    /// Largest JPEG scans x 8x8 blocks: the work a progressive decode does (every scan walks
    /// its blocks). Default 40 million: a 100 MP photo with 12 scans fits, a 100 MP image with
    /// 100 dense scans (seconds of CPU from a file under the byte limit) does not.
    pub max_jpeg_scan_blocks: u64,
    /// Estimated peak bytes the decoder needs (pixel buffers, JPEG coefficient buffers).
    /// Default 200 MiB, which keeps a worker's RSS for one hostile image under 256 MiB.
    pub max_decoder_memory: u64,
    /// Largest width x height the caller may ask for as output. Default 50 megapixels.
    pub max_output_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 32 << 20,
            max_input_pixels: 100_000_000,
            max_frames: 1_000,
            max_animation_pixels: 250_000_000,
            max_animation_output_pixels: 25_000_000,
            max_jpeg_scans: 100,
            max_jpeg_scan_blocks: 40_000_000,
            max_decoder_memory: 200 << 20,
            max_output_pixels: 50_000_000,
        }
    }
}

impl Limits {
    /// The defaults, with a caller's own bounds on the input's bytes and declared pixels (a
    /// tenant's limits, at the api node and again at the worker that runs its job).
    pub fn with_input_bounds(max_input_bytes: u64, max_input_pixels: u64) -> Limits {
        Limits { max_input_bytes, max_input_pixels, ..Limits::default() }
    }

    pub fn check_input_bytes(&self, len: usize) -> Result<(), LimitExceeded> {
        let actual = len as u64;
        if actual > self.max_input_bytes {
            return Err(LimitExceeded::InputBytes { actual, limit: self.max_input_bytes });
        }
        Ok(())
    }

    /// Everything that can be decided from the header. `decode_scale` is the shrink-on-load
    /// denominator the decoder will use (1 = full size), which lowers the memory a JPEG needs.
    pub fn check_probe(&self, probe: &Probe, decode_scale: u32) -> Result<(), LimitExceeded> {
        let pixels = u64::from(probe.width) * u64::from(probe.height);
        if pixels > self.max_input_pixels {
            return Err(LimitExceeded::InputPixels {
                width: probe.width,
                height: probe.height,
                actual: pixels,
                limit: self.max_input_pixels,
            });
        }
        if u64::from(probe.frames) > self.max_frames {
            return Err(LimitExceeded::Frames { actual: probe.frames.into(), limit: self.max_frames });
        }
        if let Some(jpeg) = &probe.jpeg {
            if u64::from(jpeg.scans) > self.max_jpeg_scans {
                return Err(LimitExceeded::Scans { actual: jpeg.scans.into(), limit: self.max_jpeg_scans });
            }
        }
        if let Some(jpeg) = &probe.jpeg {
            let work = jpeg_scan_blocks(probe);
            if jpeg.scans > 1 && work > self.max_jpeg_scan_blocks {
                return Err(LimitExceeded::ScanWork { actual: work, limit: self.max_jpeg_scan_blocks });
            }
        }
        let memory = decoder_memory(probe, decode_scale);
        if memory > self.max_decoder_memory {
            return Err(LimitExceeded::DecoderMemory { actual: memory, limit: self.max_decoder_memory });
        }
        Ok(())
    }

    /// An animation kept as one (`frames` of them): its pixels summed over the frames, on the
    /// input side (the canvas, as the header declares it, and for GIF the frame extents) and the
    /// output side (`out` per frame), each against its own bound, and the memory the
    /// frame-by-frame path holds at once. A
    /// still (`frames` 1) passes: [`Limits::check_probe`] has judged it.
    pub fn check_animation(&self, probe: &Probe, frames: u32, out: (u32, u32)) -> Result<(), LimitExceeded> {
        if frames <= 1 {
            return Ok(());
        }
        let input = probe.total_pixels();
        if input > self.max_animation_pixels {
            return Err(LimitExceeded::AnimationPixels {
                side: "input",
                actual: input,
                limit: self.max_animation_pixels,
            });
        }
        let output = u64::from(out.0).saturating_mul(u64::from(out.1)).saturating_mul(u64::from(frames));
        if output > self.max_animation_output_pixels {
            return Err(LimitExceeded::AnimationPixels {
                side: "output",
                actual: output,
                limit: self.max_animation_output_pixels,
            });
        }
        let memory = animation_memory(probe, out);
        if memory > self.max_decoder_memory {
            return Err(LimitExceeded::DecoderMemory { actual: memory, limit: self.max_decoder_memory });
        }
        Ok(())
    }

    pub fn check_output(&self, width: u32, height: u32) -> Result<(), LimitExceeded> {
        let actual = u64::from(width) * u64::from(height);
        if actual > self.max_output_pixels {
            return Err(LimitExceeded::OutputPixels { width, height, actual, limit: self.max_output_pixels });
        }
        Ok(())
    }
}

/// Scans x 8x8 blocks over all components (chroma counted at its subsampled size): an upper
/// bound on the blocks a progressive decode walks, since a scan covers one or all components.
pub fn jpeg_scan_blocks(probe: &Probe) -> u64 {
    let Some(j) = &probe.jpeg else { return 0 };
    let luma = u64::from(probe.width).div_ceil(8) * u64::from(probe.height).div_ceil(8);
    let subsampling = u64::from(j.max_h_samp.max(1)) * u64::from(j.max_v_samp.max(1));
    let chroma = u64::from(j.components.saturating_sub(1)) * luma / subsampling;
    u64::from(j.scans) * (luma + chroma)
}

/// A deliberately pessimistic estimate of the decoder's peak allocation.
pub fn decoder_memory(probe: &Probe, decode_scale: u32) -> u64 {
    let w = u64::from(probe.width);
    let h = u64::from(probe.height);
    let scale = u64::from(decode_scale.max(1));
    match probe.format {
        ImageFormat::Jpeg => {
            let comps = probe.jpeg.as_ref().map_or(3, |j| u64::from(j.components.max(1)));
            let scaled = w.div_ceil(scale) * h.div_ceil(scale) * comps.max(3);
            // Progressive (and multi-scan) JPEGs keep every DCT coefficient of the full-size
            // image in memory: 2 bytes per sample, whatever the output scale.
            let multi_scan = probe.jpeg.as_ref().is_some_and(|j| j.progressive || j.scans > 1);
            let coefficients = if multi_scan { w * h * comps * 2 } else { 0 };
            scaled + coefficients
        }
        // Decoded to 8-bit RGBA at worst, plus lines of 16-bit samples; non-interlaced images
        // shrink row by row (`decode::scale_for` gives interlaced ones scale 1).
        ImageFormat::Png => w.div_ceil(scale) * h.div_ceil(scale) * 4 + w * 32,
        // The decoder's RGBA output; lossy keeps about one more plane while decoding, lossless
        // the whole image as 32-bit pixels before scaling.
        ImageFormat::Webp => {
            let working = if probe.webp_lossless { w * h * 4 } else { w * h };
            w.div_ceil(scale) * h.div_ceil(scale) * 4 + working
        }
        // Canvas in RGBA plus a frame in RGBA and its indices; frames may be larger than the
        // logical screen, and the decoder allocates them at their own size.
        ImageFormat::Gif => {
            let (fw, fh) = probe
                .gif
                .as_ref()
                .map_or((w, h), |g| (w.max(g.frame_extent_width.into()), h.max(g.frame_extent_height.into())));
            w * h * 4 + fw * fh * 5
        }
        ImageFormat::Avif | ImageFormat::Heic => heif_memory(probe, scale),
    }
}

/// What the frame-by-frame path holds at once, pessimistically: the composed canvas, the
/// canvas saved for GIF's "restore to previous" disposal (libwebp's animation decoder keeps a
/// previous canvas too) and the frame being decoded, all RGBA; the resize's copy of the canvas
/// and its output; and the animation encoder's working pictures (libwebp's keeps the previous
/// and current canvas and up to four candidate sub-frames, all RGBA at the output size).
pub fn animation_memory(probe: &Probe, out: (u32, u32)) -> u64 {
    let (w, h) = match &probe.gif {
        Some(g) => (probe.width.max(g.frame_extent_width), probe.height.max(g.frame_extent_height)),
        None => (probe.width, probe.height),
    };
    let canvas = u64::from(w) * u64::from(h) * 4;
    let output = u64::from(out.0) * u64::from(out.1) * 4;
    canvas.saturating_mul(5).saturating_add(output.saturating_mul(8))
}

/// What a grid tile costs besides its pixels, counted as memory: libheif starts a decoder per
/// tile (dav1d its threads too), about 1.1 ms of wall time each on the 2-core test machine, so
/// 36 x 36 tiles of 64 x 48 took 1.5 s. At 256 KiB a tile, about 800 tiles fit in the default
/// budget (~0.9 s); a 48 MP phone photo has 192.
const HEIF_TILE_OVERHEAD: u64 = 256 << 10;

/// libheif's peak: the codec's frames of one coded image (a tile, for grids) and libheif's own
/// copy of the whole image in YCbCr (alpha, a second coded image, as a plane), at 2 bytes a
/// sample past 8 bits; the interleaved 8-bit RGB(A) it converts that to (through 16-bit RGB for
/// deeper images); our copy, shrunk on load; and the per-tile overhead.
fn heif_memory(probe: &Probe, scale: u64) -> u64 {
    let Some(heif) = &probe.heif else { return u64::from(probe.width) * u64::from(probe.height) * 16 };
    // What libheif decodes, before the clean-aperture crop.
    let (w, h) = (u64::from(heif.full_width), u64::from(heif.full_height));
    let sample = if probe.bit_depth > 8 { 2 } else { 1 };
    // Samples per 2 pixels: 4:0:0 2, 4:2:0 3, 4:2:2 4, 4:4:4 6.
    let halves = [2, 3, 4, 6][usize::from(heif.chroma_format.min(3))];
    let alpha = u64::from(probe.has_alpha);
    let tile = u64::from(heif.tile_width) * u64::from(heif.tile_height);
    // Saturating: neither a tile's size nor the size before the clean aperture has been
    // checked against anything yet.
    let planes = |pixels: u64| pixels.saturating_mul(halves + 2 * alpha) / 2 * sample;
    // The codec's own pictures: libde265 grew RSS by ~100 MiB on a 12 MP 4:2:0 HEIC decoded
    // whole, about three frames' worth besides libheif's and ours.
    let codec = planes(tile).saturating_mul(3);
    let image = planes(heif.coded_pixels.max(w * h));
    let channels = 3 + alpha;
    let rgb = (w * h).saturating_mul(channels * if sample == 2 { 3 } else { 1 });
    let ours = (w.div_ceil(scale) * h.div_ceil(scale)).saturating_mul(channels);
    [codec, image, rgb, ours, u64::from(heif.tiles) * HEIF_TILE_OVERHEAD].into_iter().fold(0, u64::saturating_add)
}
