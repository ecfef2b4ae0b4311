//! probe_decode: the whole public surface of `imaging` on hostile bytes.
//!
//! Input layout: `[control0, control1, image bytes...]`.
//! - control0: fit (`% 5`) and gravity (`/ 5 % 10`, so `cover` + `entropy` is reachable);
//!   `/ 50 % 2` = 1 asks `frames=1` (an animation's first frame only).
//! - control1: output format (`& 3`: auto/jpeg/png/webp; 0x80 overrides it with gif), then
//!   flags: 0x04 lossless, 0x08 progressive, 0x10 keep_icc, 0x20 enlarge, 0x40 background
//!   (opaque grey). auto, webp and gif take an animated GIF or WebP down the frame-by-frame path.
//!
//! Oracles (a failure aborts, libFuzzer saves the input under fuzz/artifacts/probe_decode/):
//! - no panic or abort anywhere (libfuzzer-sys turns an escaping panic into an abort);
//! - `probe` Ok ⇒ width, height, frames ≥ 1 and orientation in 1..=8;
//! - `process` Ok ⇒ the output probes as the requested format at the reported size, and no
//!   side is larger than the 64 px box (enlarge off) or than the box itself; it holds at most
//!   the frames `imaging::frames_out` promised (libwebp merges identical ones), one for a still;
//! - `process` never returns `Internal` (HTTP 500: "a bug of ours"). Known, reported ones can be
//!   tolerated to keep fuzzing past them: `FUZZ_ALLOW_ENCODE_ERRORS` is a comma-separated list
//!   of substrings of the error message (e.g. `BAD_DIMENSION,Maximum supported image dimension`);
//! - ASan (cargo fuzz's default) catches memory errors in the Rust code, and in the C decoders
//!   when they were built with clang (see README.md); `-rss_limit_mb` and `-timeout` catch
//!   runaway memory and hangs.
#![no_main]

use imaging::{Fit, Gravity, ImageFormat, ImagingError, Limits, OutputFormat, ResizeSpec, Rgba};
use libfuzzer_sys::fuzz_target;

const BOX: u32 = 64;

/// Tight limits keep one iteration in the milliseconds and far below -rss_limit_mb, while
/// still letting every code path (progressive JPEG, APNG, animated GIF/WebP) run. Limits added
/// later keep their defaults.
fn limits() -> Limits {
    Limits {
        max_input_bytes: 1 << 20,
        max_input_pixels: 4_000_000,
        max_frames: 100,
        max_jpeg_scans: 100,
        max_decoder_memory: 64 << 20,
        max_output_pixels: 1_000_000,
        // Every frame of an animation is composed, resized and encoded: 16 MP summed keeps
        // an animated iteration in the tens of milliseconds.
        max_animation_pixels: 16_000_000,
        ..Limits::default()
    }
}

const FITS: [Fit; 5] = [Fit::Inside, Fit::Cover, Fit::Contain, Fit::Fill, Fit::Outside];
const GRAVITIES: [Gravity; 10] = [
    Gravity::Center,
    Gravity::North,
    Gravity::NorthEast,
    Gravity::East,
    Gravity::SouthEast,
    Gravity::South,
    Gravity::SouthWest,
    Gravity::West,
    Gravity::NorthWest,
    Gravity::Entropy,
];

fn spec(c0: u8, c1: u8) -> ResizeSpec {
    let mut spec = ResizeSpec::new(Some(BOX), Some(BOX)).expect("64x64 is a valid spec");
    spec.fit = FITS[usize::from(c0 % 5)];
    spec.gravity = GRAVITIES[usize::from(c0 / 5 % 10)];
    spec.format = match c1 & 3 {
        _ if c1 & 0x80 != 0 => Some(OutputFormat::Gif),
        0 => None,
        1 => Some(OutputFormat::Jpeg),
        2 => Some(OutputFormat::Png),
        _ => Some(OutputFormat::Webp),
    };
    spec.first_frame_only = c0 / 50 % 2 == 1;
    spec.lossless = c1 & 0x04 != 0;
    spec.progressive = c1 & 0x08 != 0;
    spec.keep_icc = c1 & 0x10 != 0;
    spec.enlarge = c1 & 0x20 != 0;
    spec.background = (c1 & 0x40 != 0).then_some(Rgba([128, 128, 128, 255]));
    spec
}

fn as_image_format(f: OutputFormat) -> ImageFormat {
    match f {
        OutputFormat::Jpeg => ImageFormat::Jpeg,
        OutputFormat::Png => ImageFormat::Png,
        OutputFormat::Webp => ImageFormat::Webp,
        OutputFormat::Gif => ImageFormat::Gif,
        OutputFormat::Avif => ImageFormat::Avif,
    }
}

/// Internal errors named in `FUZZ_ALLOW_ENCODE_ERRORS` (comma-separated substrings).
fn tolerated(message: &str) -> bool {
    static ALLOWED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let allowed = ALLOWED.get_or_init(|| {
        std::env::var("FUZZ_ALLOW_ENCODE_ERRORS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    });
    allowed.iter().any(|a| message.contains(a.as_str()))
}

fuzz_target!(|data: &[u8]| {
    let [c0, c1, image @ ..] = data else { return };
    let spec = spec(*c0, *c1);
    let limits = limits();

    let input = imaging::probe(image);
    if let Ok(p) = &input {
        assert!(p.width >= 1 && p.height >= 1 && p.frames >= 1, "probe: empty geometry {p:?}");
        assert!((1..=8).contains(&p.orientation), "probe: orientation {}", p.orientation);
    }

    match imaging::process(image, &spec, &limits) {
        Ok(out) => {
            let r = &out.report;
            let p = imaging::probe(&out.bytes).expect("our own output must probe");
            assert_eq!(p.format, as_image_format(r.format), "output format differs from the report");
            assert_eq!((p.width, p.height), (r.width, r.height), "output size differs from the report");
            if !spec.enlarge {
                assert!(r.width <= BOX.max(r.input_width) && r.height <= BOX.max(r.input_height));
            }
            assert!(r.width >= 1 && r.height >= 1);
            let promised = input.as_ref().map_or(1, |i| imaging::frames_out(i, r.format, &spec));
            assert!(p.frames <= promised, "{} frames out, {promised} promised", p.frames);
            assert!(promised > 1 || p.frames == 1, "a still came out with {} frames", p.frames);
        }
        Err(ImagingError::Internal(e)) if !tolerated(&e) => {
            panic!("Internal error (HTTP 500, a bug per ARCHITECTURE.md): {e}")
        }
        Err(_) => {}
    }
});
