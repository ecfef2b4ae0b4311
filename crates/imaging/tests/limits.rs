//! Every limit stops its input with its own typed error before any pixel buffer exists, and
//! every other bad input is a typed 4xx error: unsupported (415), corrupt or truncated (422),
//! bad parameters (400). Nothing a client sends panics or becomes a 500.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use imaging::{ImagingError, LimitExceeded, Limits};

// --- An allocator that remembers the largest allocation of the thread that asks ----------------

struct Tracking;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; `note` only touches
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let result = f();
    TRACKING.with(|t| t.set(false));
    (result, LARGEST.with(Cell::get))
}

// --- Checks ---------------------------------------------------------------------------------------

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    f(&mut l);
    l
}

/// `input` with `query` under `limits` fails with a `LimitExceeded` (HTTP 413) that `matches`.
#[track_caller]
fn check_limit(input: &[u8], query: &str, limits: &Limits, matches: impl Fn(&LimitExceeded) -> bool) {
    match run_with(input, query, limits) {
        Err(ImagingError::LimitExceeded(e)) if matches(&e) => {
            let err = ImagingError::LimitExceeded(e);
            assert_eq!(err.http_status(), 413);
            assert!(!err.to_string().is_empty());
        }
        Err(e) => panic!("{query}: expected a specific LimitExceeded, got {e:?}"),
        Ok(out) => panic!("{query}: expected a LimitExceeded, got a {:?}", out.report),
    }
}

/// `input` with `query` is accepted under `limits`: the limit is inclusive.
#[track_caller]
fn check_accepted(input: &[u8], query: &str, limits: &Limits) {
    if let Err(e) = run_with(input, query, limits) {
        panic!("{query}: expected success at the limit, got {e:?}");
    }
}

// --- Each limit -----------------------------------------------------------------------------------

#[test]
fn input_bytes() {
    let input = png(&gradient(64, 48));
    let n = input.len() as u64;
    check_limit(&input, "width=10", &limits(|l| l.max_input_bytes = n - 1), |e| {
        *e == LimitExceeded::InputBytes { actual: n, limit: n - 1 }
    });
    check_accepted(&input, "width=10", &limits(|l| l.max_input_bytes = n));
    // Checked before the bytes are even looked at.
    check_limit(b"not even an image", "width=10", &limits(|l| l.max_input_bytes = 4), |e| {
        matches!(e, LimitExceeded::InputBytes { actual: 17, limit: 4 })
    });
}

#[test]
fn input_pixels() {
    let img = gradient(64, 48);
    for input in [png(&img), jpeg(&img), webp(&img, false), gif_of(&img)] {
        check_limit(&input, "width=10", &limits(|l| l.max_input_pixels = 3071), |e| {
            *e == LimitExceeded::InputPixels { width: 64, height: 48, actual: 3072, limit: 3071 }
        });
        check_accepted(&input, "width=10", &limits(|l| l.max_input_pixels = 3072));
    }
}

#[test]
fn frames() {
    let three = gif(4, 4, &[[0, 0, 0], [255, 255, 255]], &[vec![0; 16], vec![1; 16], vec![0; 16]], None);
    check_limit(&three, "width=2", &limits(|l| l.max_frames = 2), |e| {
        *e == LimitExceeded::Frames { actual: 3, limit: 2 }
    });
    check_accepted(&three, "width=2", &limits(|l| l.max_frames = 3));
    // The default: a thousand frames are fine, a thousand and one are not.
    let many = |n: usize| gif(1, 1, &[[0, 0, 0], [255, 255, 255]], &vec![vec![0]; n], None);
    check_accepted(&many(1000), "width=1", &Limits::default());
    check_limit(&many(1001), "width=1", &Limits::default(), |e| {
        *e == LimitExceeded::Frames { actual: 1001, limit: 1000 }
    });
}

/// A baseline JPEG whose one scan is repeated `n` times: a file of many scans, tiny on disk.
fn jpeg_with_scans(n: usize) -> Vec<u8> {
    let base = jpeg(&gradient(16, 16));
    let sos = base.windows(2).position(|w| w == [0xFF, 0xDA]).expect("SOS");
    assert_eq!(&base[base.len() - 2..], &[0xFF, 0xD9]);
    let scan = &base[sos..base.len() - 2];
    let mut out = base[..sos].to_vec();
    for _ in 0..n {
        out.extend_from_slice(scan);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

#[test]
fn jpeg_scans() {
    let progressive = jpeg_with(&gradient(64, 48), &JpegOptions { progressive: true, ..JpegOptions::default() });
    let scans = u64::from(imaging::probe(&progressive).unwrap().jpeg.unwrap().scans);
    assert!(scans > 2, "a progressive JPEG has several scans");
    check_limit(&progressive, "width=10", &limits(|l| l.max_jpeg_scans = scans - 1), |e| {
        *e == LimitExceeded::Scans { actual: scans, limit: scans - 1 }
    });
    check_accepted(&progressive, "width=10", &limits(|l| l.max_jpeg_scans = scans));
    // A hand-made file of 150 scans is refused by the default limit of 100, before decoding.
    let input = jpeg_with_scans(150);
    assert!(input.len() < 150_000);
    let (result, largest) = largest_allocation(|| run_with(&input, "width=10", &Limits::default()));
    assert!(matches!(result, Err(ImagingError::LimitExceeded(LimitExceeded::Scans { actual: 150, limit: 100 }))));
    assert!(largest < 64 << 10, "allocated {largest} bytes before refusing");
}

#[test]
fn jpeg_scan_work() {
    // Each progressive scan walks its blocks again: the work is bounded, not just the count.
    let progressive = jpeg_with(&gradient(256, 256), &JpegOptions { progressive: true, ..JpegOptions::default() });
    let low = limits(|l| l.max_jpeg_scan_blocks = 1_000);
    check_limit(
        &progressive,
        "width=10",
        &low,
        |e| matches!(e, LimitExceeded::ScanWork { actual, limit: 1_000 } if *actual > 1_000),
    );
    check_accepted(&progressive, "width=10", &limits(|l| l.max_jpeg_scan_blocks = 10_000_000));
    // A baseline JPEG is one pass whatever its size.
    check_accepted(&jpeg(&gradient(256, 256)), "width=10", &low);
}

#[test]
fn decoder_memory() {
    let img = gradient(64, 48);
    // 2,000 bytes is less than any of them needs, even the JPEG decoded at 1/2 (32x24x3).
    let tight = limits(|l| l.max_decoder_memory = 2_000);
    for (name, input) in [("png", png(&img)), ("jpeg", jpeg(&img)), ("webp", webp(&img, true)), ("gif", gif_of(&img))] {
        match run_with(&input, "width=10", &tight) {
            Err(ImagingError::LimitExceeded(LimitExceeded::DecoderMemory { actual, limit: 2_000 })) => {
                assert!(actual > 2_000, "{name}: {actual}");
            }
            other => panic!("{name}: expected DecoderMemory, got {:?}", other.map(|o| o.report)),
        }
        check_accepted(&input, "width=10", &limits(|l| l.max_decoder_memory = 10_000_000));
    }
}

#[test]
fn a_progressive_jpeg_needs_its_coefficients_even_when_shrunk_on_load() {
    // 2048x2048 decoded at 1/8 needs little for pixels, but a progressive file keeps every DCT
    // coefficient of the full image: about 24 MiB here, over an 8 MiB budget.
    let img = gradient(2048, 2048);
    let budget = limits(|l| l.max_decoder_memory = 8 << 20);
    check_accepted(&jpeg(&img), "width=64", &budget);
    let progressive = jpeg_with(&img, &JpegOptions { progressive: true, ..JpegOptions::default() });
    check_limit(&progressive, "width=64", &budget, |e| matches!(e, LimitExceeded::DecoderMemory { .. }));
}

#[test]
fn output_pixels() {
    let input = png(&gradient(8, 8));
    check_limit(&input, "width=16384&height=16384&fit=fill&enlarge=true", &Limits::default(), |e| {
        *e == LimitExceeded::OutputPixels { width: 16384, height: 16384, actual: 16384 * 16384, limit: 50_000_000 }
    });
    let small = limits(|l| l.max_output_pixels = 100);
    check_limit(&input, "width=11&height=10&fit=fill&enlarge=true", &small, |e| {
        matches!(e, LimitExceeded::OutputPixels { width: 11, height: 10, actual: 110, limit: 100 })
    });
    check_accepted(&input, "width=10&height=10&fit=fill&enlarge=true", &small);
    // contain's padding is output too, even when the image itself is not enlarged.
    check_limit(&input, "width=20&height=20&fit=contain", &small, |e| matches!(e, LimitExceeded::OutputPixels { .. }));
    // So is cover's intermediate: 8x8 enlarged to cover 1x1000 is resampled to 1000x1000 first.
    check_limit(
        &input,
        "width=1&height=1000&fit=cover&enlarge=true",
        &limits(|l| l.max_output_pixels = 500_000),
        |e| matches!(e, LimitExceeded::OutputPixels { width: 1000, height: 1000, .. }),
    );
}

// --- Header bombs: huge declared sizes are refused from the header alone ---------------------------

fn png_chunk(ty: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(ty);
    v.extend_from_slice(data);
    let crc = crc32fast::hash(&v[4..]);
    v.extend_from_slice(&crc.to_be_bytes());
    v
}

/// A well-formed PNG header claiming `width` x `height` RGB, with a token IDAT.
fn png_claiming(width: u32, height: u32, interlaced: bool) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, u8::from(interlaced)]);
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    v.extend(png_chunk(b"IHDR", &ihdr));
    v.extend(png_chunk(b"IDAT", &[0x78, 0x9C, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]));
    v.extend(png_chunk(b"IEND", &[]));
    v
}

/// A real small JPEG whose frame header is rewritten to claim `width` x `height`.
fn jpeg_claiming(width: u16, height: u16) -> Vec<u8> {
    let mut v = jpeg(&gradient(16, 16));
    let sof = v.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
    v[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    v[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    v
}

/// A real small lossless WebP whose VP8L header is rewritten to claim `width` x `height`.
fn webp_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut v = webp(&gradient(16, 16), true);
    assert_eq!(&v[12..16], b"VP8L");
    let old = u32::from_le_bytes(v[21..25].try_into().unwrap());
    let bits = (old & 0xF000_0000) | (width - 1) | ((height - 1) << 14);
    v[21..25].copy_from_slice(&bits.to_le_bytes());
    v
}

/// A GIF whose logical screen is `screen` and whose one frame is `frame`, with token data.
fn gif_claiming(screen: (u16, u16), frame: (u16, u16)) -> Vec<u8> {
    let mut v = b"GIF89a".to_vec();
    v.extend_from_slice(&screen.0.to_le_bytes());
    v.extend_from_slice(&screen.1.to_le_bytes());
    v.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]);
    v.extend_from_slice(&[0x2C, 0, 0, 0, 0]);
    v.extend_from_slice(&frame.0.to_le_bytes());
    v.extend_from_slice(&frame.1.to_le_bytes());
    v.extend_from_slice(&[0, 2, 2, 0x4C, 0x01, 0, 0x3B]);
    v
}

/// Refused with a limit, from the header, without allocating anything near the claimed size.
#[track_caller]
fn check_bomb(name: &str, input: &[u8], matches: impl Fn(&LimitExceeded) -> bool) {
    let (result, largest) = largest_allocation(|| run_with(input, "width=100", &Limits::default()));
    match result {
        Err(ImagingError::LimitExceeded(e)) if matches(&e) => {}
        other => panic!("{name}: expected a limit, got {:?}", other.map(|o| o.report)),
    }
    assert!(largest < 64 << 10, "{name}: allocated {largest} bytes before refusing");
}

#[test]
fn a_png_claiming_100000_by_100000_is_refused_without_allocating() {
    let input = png_claiming(100_000, 100_000, false);
    assert_eq!(imaging::probe(&input).unwrap().width, 100_000);
    check_bomb("png", &input, |e| {
        *e == LimitExceeded::InputPixels { width: 100_000, height: 100_000, actual: 10_000_000_000, limit: 100_000_000 }
    });
}

#[test]
fn header_bombs_in_every_format_are_refused_without_allocating() {
    let pixels = |w: u32, h: u32| move |e: &LimitExceeded| matches!(e, LimitExceeded::InputPixels { width, height, .. } if (*width, *height) == (w, h));
    check_bomb("png 2^31-1 wide", &png_claiming(0x7FFF_FFFF, 1, false), pixels(0x7FFF_FFFF, 1));
    check_bomb("jpeg", &jpeg_claiming(65_000, 65_000), pixels(65_000, 65_000));
    check_bomb("webp", &webp_claiming(16_384, 16_384), pixels(16_384, 16_384));
    check_bomb("gif", &gif_claiming((65_535, 65_535), (1, 1)), pixels(65_535, 65_535));
    // At the pixel limit, an interlaced PNG (which cannot be shrunk row by row while it
    // streams) needs 400 MB: the decoder's memory is the limit that holds.
    check_bomb("interlaced png 10000x10000", &png_claiming(10_000, 10_000, true), |e| {
        matches!(e, LimitExceeded::DecoderMemory { .. })
    });
}

#[test]
fn a_gif_frame_far_larger_than_its_screen_is_refused_before_decoding() {
    // The screen is 10x10, but the decoder would allocate the 60000x60000 frame.
    let input = gif_claiming((10, 10), (60_000, 60_000));
    let (result, largest) = largest_allocation(|| run_with(&input, "width=5", &Limits::default()));
    assert!(matches!(result, Err(ImagingError::LimitExceeded(_))), "{:?}", result.map(|o| o.report));
    assert!(largest < 64 << 10, "allocated {largest} bytes before refusing");
}

// --- Unsupported, corrupt, bad parameters ---------------------------------------------------------

#[test]
fn non_image_bytes_are_unsupported() {
    let html = b"<!doctype html><html><body>definitely.jpg</body></html>".to_vec();
    let bmp = [&b"BM"[..], &[0; 60]].concat();
    let tiff = exif_tiff(1);
    for (name, input) in [("empty", Vec::new()), ("html", html), ("bmp", bmp), ("tiff", tiff), ("zeros", vec![0; 1000])]
    {
        match run_with(&input, "width=10", &Limits::default()) {
            Err(e @ ImagingError::Unsupported(_)) => assert_eq!(e.http_status(), 415, "{name}"),
            other => panic!("{name}: expected Unsupported, got {:?}", other.map(|o| o.report)),
        }
    }
}

/// The length of the magic bytes that identify each format.
fn magic_len(input: &[u8]) -> usize {
    match imaging::probe(input).unwrap().format {
        imaging::ImageFormat::Jpeg => 3,
        imaging::ImageFormat::Png => 8,
        imaging::ImageFormat::Webp => 12,
        imaging::ImageFormat::Gif => 6,
        imaging::ImageFormat::Avif | imaging::ImageFormat::Heic => 12,
    }
}

/// Every prefix of `input` from the magic bytes on is either refused as `Corrupt` (HTTP 422) or,
/// when all that is missing is what the first frame does not need (a PNG's IEND, a GIF's later
/// frames), gives exactly the image the whole file gives. Never a panic, a 500 or a grey guess.
#[track_caller]
fn check_truncated(name: &str, input: &[u8]) {
    let whole = decode_output(&run(input, "width=16"));
    let mut served = Vec::new();
    for len in magic_len(input)..input.len() {
        match run_with(&input[..len], "width=16", &Limits::default()) {
            Err(e @ ImagingError::Corrupt(_)) => assert_eq!(e.http_status(), 422),
            Ok(out) => {
                assert!(
                    decode_output(&out) == whole,
                    "{name} cut to {len} of {} bytes: served a different image",
                    input.len()
                );
                served.push(len);
            }
            Err(e) => panic!("{name} cut to {len} of {} bytes: expected Corrupt, got {e:?}", input.len()),
        }
    }
    // Whatever is served, most cuts fall in the pixel data and must be refused.
    assert!(served.len() < input.len() / 4, "{name}: {} of {} prefixes served", served.len(), input.len());
}

#[test]
fn truncated_jpeg_is_corrupt() {
    let img = gradient(40, 30);
    check_truncated("jpeg", &jpeg(&img));
    let progressive = jpeg_with(&img, &JpegOptions { progressive: true, ..JpegOptions::default() });
    check_truncated("progressive jpeg", &progressive);
}

#[test]
fn truncated_png_is_corrupt() {
    check_truncated("png rgb", &png(&gradient(40, 30)));
    check_truncated("png rgba", &png(&gradient_with_alpha(40, 30)));
    // Large enough to shrink on load while streaming rows.
    check_truncated("png shrunk on load", &png(&gradient(200, 150)));
}

#[test]
fn truncated_webp_is_corrupt() {
    let img = gradient_with_alpha(40, 30);
    check_truncated("webp lossy", &webp(&img, false));
    check_truncated("webp lossless", &webp(&img, true));
}

#[test]
fn truncated_gif_is_corrupt() {
    check_truncated("gif", &gif_of(&gradient_with_alpha(40, 30)));
}

/// Flips random bytes after the magic bytes: any result but a panic or a 500 is acceptable.
#[track_caller]
fn check_mutations(name: &str, input: &[u8], seed: u64) {
    let mut rng = Rng(seed);
    for round in 0..300 {
        let mut bytes = input.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = magic_len(input) + rng.below(input.len() - magic_len(input));
            bytes[at] = rng.byte();
        }
        match run_with(&bytes, "width=16", &Limits::default()) {
            Ok(out) => {
                decode_output(&out);
            }
            Err(e) => assert_ne!(e.http_status(), 500, "{name} mutation {round}: {e:?}"),
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let img = gradient_with_alpha(24, 16);
    check_mutations("jpeg", &jpeg(&img), 1);
    check_mutations("progressive jpeg", &jpeg_with(&img, &JpegOptions { progressive: true, ..Default::default() }), 2);
    check_mutations("png", &png(&img), 3);
    check_mutations("webp lossy", &webp(&img, false), 4);
    check_mutations("webp lossless", &webp(&img, true), 5);
    check_mutations("gif", &gif_of(&img), 6);
}

#[test]
fn bad_parameters_are_400() {
    for query in [
        "",
        "width=0",
        "height=0",
        "width=-1",
        "width=abc",
        "width=16385",
        "width=10&fit=stretch",
        "width=10&gravity=up",
        "width=10&format=bmp",
        "width=10&quality=0",
        "width=10&quality=101",
        "width=10&background=#12345",
        "width=10&enlarge=perhaps",
        "width=10&lossless=2",
        "width=10&fit=cover&gravity=attention",
        "width=10&gravity=entropy",
        "width=10&colour=red",
    ] {
        match try_spec(query) {
            Err(e @ ImagingError::BadParameter(_)) => assert_eq!(e.http_status(), 400, "{query}"),
            other => panic!("{query:?}: expected BadParameter, got {other:?}"),
        }
    }
}

#[test]
fn outputs_too_large_for_the_format_are_refused_not_failed() {
    // Within the pixel limit, but past what the encoder can write: JPEG stops at 65,500 pixels a
    // side, WebP at 16,383. The client asked for it, so it is a 4xx, never "our fault" (500).
    let wide = png(&gradient(2000, 3));
    let one = png(&gradient(1, 1));
    let mut failures = Vec::new();
    for (input, query) in [
        (&wide, "width=100&height=100&fit=outside&enlarge=true&format=jpeg"),
        (&wide, "width=100&height=100&fit=outside&enlarge=true&format=webp"),
        (&wide, "width=100&height=100&fit=outside&enlarge=true&format=png"),
        (&one, "width=16384&height=1&fit=fill&enlarge=true&format=webp"),
        (&one, "width=16384&height=2&fit=fill&enlarge=true&format=webp&lossless=true"),
        (&one, "width=16384&height=1&fit=fill&enlarge=true&format=jpeg"),
    ] {
        match run_with(input, query, &Limits::default()) {
            Ok(out) => {
                decode_output(&out);
            }
            Err(e) if e.http_status() == 500 => failures.push(format!("{query}: {e}")),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "server errors for client requests:\n{}", failures.join("\n"));
}
