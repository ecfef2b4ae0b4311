//! The whole conversion as one list of steps (imgproxy style). Each step lives in the file
//! named for it.

use std::time::{Duration, Instant};

use crate::bitmap::{Bitmap, Layout};
use crate::cputime::thread_cpu_time;
use crate::decode::frames::FrameSource;
use crate::encode::{default_quality, AnimationEncoder, EncodeOptions};
use crate::error::ImagingError;
use crate::limits::Limits;
use crate::probe::{probe, ImageFormat, Probe};
use crate::spec::{OutputFormat, ResizeSpec, Rgba, DEFAULT_EFFORT};
use crate::{colour, crop, decode, encode, extend, flatten, geometry, orient, resize, ycbcr};

/// What a conversion did and cost: what the metering and the response headers need.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub input_format: ImageFormat,
    pub input_width: u32,
    pub input_height: u32,
    pub input_bytes: u64,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// Shrink-on-load denominator the decoder used (1 = full decode).
    pub decode_scale: u32,
    /// CPU time spent on this thread by the conversion (decode through encode).
    pub cpu_time: Duration,
    pub wall_time: Duration,
}

#[derive(Debug)]
pub struct Output {
    pub bytes: Vec<u8>,
    pub report: Report,
}

/// How many frames a conversion of an image `probe` has read decodes, resizes and encodes
/// into `format`: all of an animation when the format holds one and the caller did not ask
/// `frames=1`; one otherwise. The pipeline takes its path from it, and the api meters with it
/// (pixels are billed per frame), so the two cannot disagree.
pub fn frames_out(probe: &Probe, format: OutputFormat, spec: &ResizeSpec) -> u32 {
    let animated = probe.frames > 1
        && matches!(probe.format, ImageFormat::Gif | ImageFormat::Webp)
        && format.supports_animation()
        && !spec.first_frame_only;
    if animated {
        probe.frames
    } else {
        1
    }
}

/// Converts `input` as `spec` asks, refusing anything over `limits` before decoding it.
pub fn process(input: &[u8], spec: &ResizeSpec, limits: &Limits) -> Result<Output, ImagingError> {
    process_by(input, spec, limits, Path::Best)
}

/// Which way a still JPEG-to-JPEG conversion may go (tests compare the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// Through YCbCr planes where ycbcr.rs applies, else through RGB.
    Best,
    /// Always through RGB.
    #[cfg_attr(not(test), allow(dead_code))]
    Rgb,
}

pub(crate) fn process_by(input: &[u8], spec: &ResizeSpec, limits: &Limits, path: Path) -> Result<Output, ImagingError> {
    let (cpu_start, wall_start) = (thread_cpu_time(), Instant::now());

    // probe → limits
    limits.check_input_bytes(input.len())?;
    let probe = probe(input)?;
    let upright = orient::stored_size(probe.orientation, (probe.width, probe.height));
    let plan = geometry::plan(upright, spec);
    limits.check_output(plan.resize.0, plan.resize.1)?;
    let (out_w, out_h) = plan.output();
    limits.check_output(out_w, out_h)?;
    let format = spec.format.unwrap_or(OutputFormat::following_image(probe.format, probe.frames));
    if out_w > format.max_dimension() || out_h > format.max_dimension() {
        return Err(ImagingError::BadParameter(format!(
            "output would be {out_w}x{out_h}; {} holds at most {} pixels per side",
            format.as_str(),
            format.max_dimension()
        )));
    }
    let frames = frames_out(&probe, format, spec);
    let stored_target = orient::stored_size(probe.orientation, plan.resize);
    // An animation's frames are composed at the canvas size: no shrink-on-load.
    let scale = if frames > 1 { 1 } else { decode::scale_for(&probe, stored_target) };
    limits.check_probe(&probe, scale)?;
    limits.check_animation(&probe, frames, (out_w, out_h))?;

    let steps = Steps { spec, plan: &plan, stored_target, orientation: probe.orientation, format };
    let options = EncodeOptions {
        format,
        quality: spec.quality.unwrap_or_else(|| default_quality(format)),
        progressive: spec.progressive,
        lossless: spec.lossless,
        effort: spec.effort.unwrap_or(DEFAULT_EFFORT),
        icc: if spec.keep_icc { colour::srgb_profile() } else { None },
    };
    let (bytes, (width, height)) = if frames > 1 {
        // decode a frame → resize → … → encode it, frame after frame: only one composed canvas
        // and one output frame are held at once, besides the encoder's own.
        let mut source = FrameSource::open(input, &probe, limits)?;
        let mut encoder = None;
        let mut size = (out_w, out_h);
        let icc = source.icc().map(<[u8]>::to_vec);
        while let Some(frame) = source.next_frame()? {
            let image = steps.apply(frame.canvas, icc.as_deref())?;
            size = (image.width, image.height);
            let encoder = match &mut encoder {
                Some(encoder) => encoder,
                None => {
                    encoder.insert(AnimationEncoder::new(image.width, image.height, source.loop_count(), &options)?)
                }
            };
            encoder.add(&image, frame.delay_ms)?;
        }
        let encoder = encoder.ok_or_else(|| ImagingError::Corrupt("animation has no frame".into()))?;
        (encoder.finish()?, size)
    } else {
        let planar =
            path == Path::Best && ycbcr::applies(&probe, format, &plan, scale, stored_target, probe.orientation);
        let converted = if planar {
            ycbcr::convert(input, &probe, scale, stored_target, probe.orientation, &options)?
        } else {
            None
        };
        match converted {
            Some(done) => done,
            None => {
                // shrink-on-load decode → resize → orient → crop → colour → extend → flatten → encode
                let decoded = decode::decode(input, &probe, scale, limits)?;
                let image = steps.apply(decoded.bitmap, decoded.icc.as_deref())?;
                (encode::encode(&image, &options)?, (image.width, image.height))
            }
        }
    };

    let report = Report {
        input_format: probe.format,
        input_width: upright.0,
        input_height: upright.1,
        input_bytes: input.len() as u64,
        format,
        width,
        height,
        bytes: bytes.len() as u64,
        decode_scale: scale,
        cpu_time: thread_cpu_time().saturating_sub(cpu_start),
        wall_time: wall_start.elapsed(),
    };
    Ok(Output { bytes, report })
}

/// The steps between decoding and encoding, the same for a still and for each frame of an
/// animation.
struct Steps<'a> {
    spec: &'a ResizeSpec,
    plan: &'a geometry::Plan,
    stored_target: (u32, u32),
    orientation: u8,
    format: OutputFormat,
}

impl Steps<'_> {
    /// resize → orient → crop → colour → extend → flatten.
    fn apply(&self, decoded: Bitmap, icc: Option<&[u8]>) -> Result<Bitmap, ImagingError> {
        let (spec, format) = (self.spec, self.format);
        let image = resize::resize(decoded, self.stored_target.0, self.stored_target.1)?;
        let image = orient::apply(image, self.orientation);
        let image = match self.plan.crop {
            Some(window) => crop::crop(image, window, spec.gravity),
            None => image,
        };
        let image = colour::to_srgb(image, icc);
        let image = match self.plan.canvas {
            Some(canvas) => {
                let background =
                    spec.background.unwrap_or(if format.supports_alpha() { Rgba::TRANSPARENT } else { Rgba::WHITE });
                extend::extend(image, canvas, spec.gravity, background)
            }
            None => image,
        };
        let image = flatten::flatten(image, format.supports_alpha(), flatten_background(spec));
        debug_assert!(image.layout != Layout::Cmyk);
        Ok(image)
    }
}

/// The colour alpha is flattened onto: the caller's background if opaque, else white.
fn flatten_background(spec: &ResizeSpec) -> Rgba {
    spec.background.filter(|bg| bg.0[3] == 255).unwrap_or(Rgba::WHITE)
}
