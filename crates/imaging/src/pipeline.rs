//! The whole conversion as one list of steps (imgproxy style). Each step lives in the file
//! named for it.

use std::time::{Duration, Instant};

use crate::bitmap::Layout;
use crate::cputime::thread_cpu_time;
use crate::encode::{EncodeOptions, DEFAULT_QUALITY};
use crate::error::ImagingError;
use crate::limits::Limits;
use crate::probe::{probe, ImageFormat};
use crate::spec::{OutputFormat, ResizeSpec, Rgba, DEFAULT_EFFORT};
use crate::{colour, crop, decode, encode, extend, flatten, geometry, orient, resize};

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

/// Converts `input` as `spec` asks, refusing anything over `limits` before decoding it.
pub fn process(input: &[u8], spec: &ResizeSpec, limits: &Limits) -> Result<Output, ImagingError> {
    let (cpu_start, wall_start) = (thread_cpu_time(), Instant::now());

    // probe → limits
    limits.check_input_bytes(input.len())?;
    let probe = probe(input)?;
    let upright = orient::stored_size(probe.orientation, (probe.width, probe.height));
    let plan = geometry::plan(upright, spec);
    limits.check_output(plan.resize.0, plan.resize.1)?;
    let (out_w, out_h) = plan.output();
    limits.check_output(out_w, out_h)?;
    let format = spec.format.unwrap_or(OutputFormat::following(probe.format));
    if out_w > format.max_dimension() || out_h > format.max_dimension() {
        return Err(ImagingError::BadParameter(format!(
            "output would be {out_w}x{out_h}; {} holds at most {} pixels per side",
            format.as_str(),
            format.max_dimension()
        )));
    }
    let stored_target = orient::stored_size(probe.orientation, plan.resize);
    let scale = decode::scale_for(&probe, stored_target);
    limits.check_probe(&probe, scale)?;

    // shrink-on-load decode → resize → orient → crop → colour → extend → flatten → encode
    let decoded = decode::decode(input, &probe, scale, limits)?;
    let image = resize::resize(decoded.bitmap, stored_target.0, stored_target.1)?;
    let image = orient::apply(image, probe.orientation);
    let image = match plan.crop {
        Some(window) => crop::crop(image, window, spec.gravity),
        None => image,
    };
    let image = colour::to_srgb(image, decoded.icc.as_deref());
    let image = match plan.canvas {
        Some(canvas) => {
            let background =
                spec.background.unwrap_or(if format.supports_alpha() { Rgba::TRANSPARENT } else { Rgba::WHITE });
            extend::extend(image, canvas, spec.gravity, background)
        }
        None => image,
    };
    let image = flatten::flatten(image, format.supports_alpha(), flatten_background(spec));
    debug_assert!(image.layout != Layout::Cmyk);
    let options = EncodeOptions {
        format,
        quality: spec.quality.unwrap_or(DEFAULT_QUALITY),
        progressive: spec.progressive,
        lossless: spec.lossless,
        effort: spec.effort.unwrap_or(DEFAULT_EFFORT),
        icc: if spec.keep_icc { colour::srgb_profile() } else { None },
    };
    let bytes = encode::encode(&image, &options)?;

    let report = Report {
        input_format: probe.format,
        input_width: upright.0,
        input_height: upright.1,
        input_bytes: input.len() as u64,
        format,
        width: image.width,
        height: image.height,
        bytes: bytes.len() as u64,
        decode_scale: scale,
        cpu_time: thread_cpu_time().saturating_sub(cpu_start),
        wall_time: wall_start.elapsed(),
    };
    Ok(Output { bytes, report })
}

/// The colour alpha is flattened onto: the caller's background if opaque, else white.
fn flatten_background(spec: &ResizeSpec) -> Rgba {
    spec.background.filter(|bg| bg.0[3] == 255).unwrap_or(Rgba::WHITE)
}
