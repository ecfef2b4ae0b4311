//! Animated GIF and WebP in, resized frame by frame, animated WebP or GIF out: every frame
//! composed as a browser shows it (GIF disposal, WebP blending), its delay, the loop count, and
//! the limits that refuse an animation before any frame is decoded. Outputs are read back by
//! libwebp's animation decoder and the `gif` crate, and by Debian's Pillow as an independent
//! reference.

mod common;

use common::*;
use imaging::{ImagingError, LimitExceeded, Limits};

const RED: [u8; 4] = [255, 0, 0, 255];
const GREEN: [u8; 4] = [0, 255, 0, 255];
const BLUE: [u8; 4] = [0, 0, 255, 255];
const YELLOW: [u8; 4] = [255, 255, 0, 255];
const CLEAR: [u8; 4] = [0, 0, 0, 0];

/// One frame of a test GIF: `image` drawn at `at`, shown `delay_cs` hundredths of a second,
/// disposed of as `dispose` says. Pixels with alpha 0 use the transparent index.
struct GifFrame {
    image: Image,
    at: (u16, u16),
    delay_cs: u16,
    dispose: gif::DisposalMethod,
}

fn full(image: Image, delay_cs: u16) -> GifFrame {
    GifFrame { image, at: (0, 0), delay_cs, dispose: gif::DisposalMethod::Keep }
}

/// A GIF of a `w` x `h` screen with `frames`, each with its own exact palette; `repeat`: the
/// NETSCAPE extension (none when `None`).
fn make_gif(w: u16, h: u16, frames: &[GifFrame], repeat: Option<gif::Repeat>) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, w, h, &[]).expect("gif header");
        if let Some(repeat) = repeat {
            encoder.set_repeat(repeat).expect("gif repeat");
        }
        for f in frames {
            let mut rgba: Vec<u8> = f.image.pixels.iter().flatten().copied().collect();
            // Few colours: the frame's palette is exact.
            let mut frame = gif::Frame::from_rgba(f.image.width as u16, f.image.height as u16, &mut rgba);
            (frame.left, frame.top) = f.at;
            frame.delay = f.delay_cs;
            frame.dispose = f.dispose;
            encoder.write_frame(&frame).expect("gif frame");
        }
    }
    out
}

/// An animated WebP made by libwebp's animation encoder: `frames` with their delays (ms),
/// lossless, `plays` (0 = forever).
fn make_webp(frames: &[(Image, u32)], plays: u32) -> Vec<u8> {
    use libwebp_sys as ffi;
    let (w, h) = frames[0].0.size();
    // SAFETY: every libwebp object made here is freed here; the pictures import copies of the
    // test's pixels.
    unsafe {
        let mut options = std::mem::MaybeUninit::<ffi::WebPAnimEncoderOptions>::zeroed();
        assert!(ffi::WebPAnimEncoderOptionsInitInternal(options.as_mut_ptr(), ffi::WEBP_MUX_ABI_VERSION as i32) != 0);
        let mut options = options.assume_init();
        options.anim_params.loop_count = plays as i32;
        let enc = ffi::WebPAnimEncoderNewInternal(w as i32, h as i32, &options, ffi::WEBP_MUX_ABI_VERSION as i32);
        assert!(!enc.is_null());
        let mut config = ffi::WebPConfig::new().expect("config");
        config.lossless = 1;
        let mut t = 0;
        for (image, delay) in frames {
            let mut pic = ffi::WebPPicture::new().expect("picture");
            (pic.width, pic.height, pic.use_argb) = (w as i32, h as i32, 1);
            let rgba: Vec<u8> = image.pixels.iter().flatten().copied().collect();
            assert!(ffi::WebPPictureImportRGBA(&mut pic, rgba.as_ptr(), w as i32 * 4) != 0);
            assert!(ffi::WebPAnimEncoderAdd(enc, &mut pic, t, &config) != 0);
            ffi::WebPPictureFree(&mut pic);
            t += *delay as i32;
        }
        assert!(ffi::WebPAnimEncoderAdd(enc, std::ptr::null_mut(), t, std::ptr::null()) != 0);
        let mut data = ffi::WebPData::default();
        assert!(ffi::WebPAnimEncoderAssemble(enc, &mut data) != 0);
        let bytes = std::slice::from_raw_parts(data.bytes, data.size).to_vec();
        ffi::WebPDataClear(&mut data);
        ffi::WebPAnimEncoderDelete(enc);
        bytes
    }
}

/// The output as an animation, whatever its format.
fn frames_of(bytes: &[u8]) -> Animation {
    match imaging::probe(bytes).expect("output probes").format {
        imaging::ImageFormat::Webp => decode_animated_webp(bytes),
        imaging::ImageFormat::Gif => decode_gif(bytes),
        other => panic!("{} is not an animation", other.as_str()),
    }
}

/// Three solid frames, red, green, blue, 40x30, shown 100, 200 and 300 ms.
fn rgb_frames() -> Vec<(Image, u32)> {
    [RED, GREEN, BLUE].iter().zip([100, 200, 300]).map(|(&c, d)| (Image::solid(40, 30, c), d)).collect()
}

fn rgb_gif(repeat: Option<gif::Repeat>) -> Vec<u8> {
    let frames: Vec<GifFrame> = rgb_frames().into_iter().map(|(image, d)| full(image, (d / 10) as u16)).collect();
    make_gif(40, 30, &frames, repeat)
}

/// Every pixel of every frame of `anim` is near the solid `colours`, in order.
#[track_caller]
fn check_solid(anim: &Animation, colours: &[[u8; 4]], tolerance: u8, what: &str) {
    assert_eq!(anim.frames.len(), colours.len(), "{what}: frames");
    for (i, ((frame, _), colour)) in anim.frames.iter().zip(colours).enumerate() {
        for p in &frame.pixels {
            assert_near(p, colour, tolerance, format!("{what}: frame {i}"));
        }
    }
}

#[test]
fn an_animated_gif_becomes_an_animated_webp_frame_by_frame() {
    let input = rgb_gif(Some(gif::Repeat::Infinite));
    for query in ["width=20&format=webp", "width=20&format=webp&lossless=true"] {
        let out = run(&input, query);
        assert_eq!((out.report.format.as_str(), out.report.width, out.report.height), ("webp", 20, 15), "{query}");
        assert_eq!(imaging::probe(&out.bytes).unwrap().frames, 3, "{query}");
        let anim = decode_animated_webp(&out.bytes);
        assert_eq!(anim.frames[0].0.size(), (20, 15), "{query}");
        assert_eq!(anim.delays(), [100, 200, 300], "{query}");
        assert_eq!(anim.plays, 0, "{query}: loops forever");
        check_solid(&anim, &[RED, GREEN, BLUE], 6, query);
    }
}

#[test]
fn an_animated_gif_stays_a_gif_with_its_delays_and_loop_count() {
    // NETSCAPE 2 = 3 plays; no extension = 1 play; 0 = forever.
    for (repeat, plays) in [(Some(gif::Repeat::Finite(2)), 3), (None, 1), (Some(gif::Repeat::Infinite), 0)] {
        let input = rgb_gif(repeat);
        // Without `format`, an animated GIF stays a GIF (a still GIF becomes a PNG).
        for query in ["width=20&format=gif", "width=20"] {
            let out = run(&input, query);
            assert_eq!(out.report.format.as_str(), "gif", "{query}");
            let anim = decode_gif(&out.bytes);
            assert_eq!((anim.frames[0].0.size(), anim.plays), ((20, 15), plays), "{query} {repeat:?}");
            assert_eq!(anim.delays(), [100, 200, 300], "{query}");
            check_solid(&anim, &[RED, GREEN, BLUE], 0, query);
        }
        // And into WebP, the same number of plays.
        assert_eq!(decode_animated_webp(&run(&input, "width=20&format=webp").bytes).plays, plays, "{repeat:?}");
    }
}

/// A 32x32 GIF whose frames exercise every disposal: a blue background kept; a red square in the
/// top left disposed to background (cleared to transparent); a green square in the bottom right
/// disposed to previous (gone again); a yellow square in the top right over a frame that is
/// transparent but for it (the transparent pixels show what lies under).
fn disposal_gif() -> Vec<u8> {
    let square = |c: [u8; 4]| Image::solid(8, 8, c);
    let yellow_over_clear = Image::new(32, 32, |x, y| if x >= 24 && y < 8 { YELLOW } else { CLEAR });
    let frames = [
        full(Image::solid(32, 32, BLUE), 10),
        GifFrame { image: square(RED), at: (0, 0), delay_cs: 10, dispose: gif::DisposalMethod::Background },
        GifFrame { image: square(GREEN), at: (24, 24), delay_cs: 10, dispose: gif::DisposalMethod::Previous },
        full(yellow_over_clear, 10),
    ];
    make_gif(32, 32, &frames, Some(gif::Repeat::Infinite))
}

/// The four quadrants' centres of each frame of the disposal GIF, as a browser shows them.
const DISPOSAL_QUADRANTS: [[[u8; 4]; 4]; 4] = [
    // top left, top right, bottom left, bottom right
    [BLUE, BLUE, BLUE, BLUE],
    [RED, BLUE, BLUE, BLUE],
    [CLEAR, BLUE, BLUE, GREEN],
    [CLEAR, YELLOW, BLUE, BLUE],
];

#[track_caller]
fn check_quadrants(anim: &Animation, expected: &[[[u8; 4]; 4]], what: &str) {
    let lossy = what.contains("webp") && !what.contains("lossless");
    let tolerance = if lossy { 16 } else { 8 };
    assert_eq!(anim.frames.len(), expected.len(), "{what}: frames");
    for (i, ((frame, _), quadrants)) in anim.frames.iter().zip(expected).enumerate() {
        let at = [(0.125, 0.125), (0.875, 0.125), (0.125, 0.875), (0.875, 0.875)];
        for ((fx, fy), want) in at.into_iter().zip(quadrants) {
            let got = frame.at_fraction(fx, fy);
            if want[3] == 0 {
                assert!(got[3] < 8, "{what}: frame {i} at ({fx}, {fy}) is {got:?}, not transparent");
            } else {
                assert_near(&got, want, tolerance, format!("{what}: frame {i} at ({fx}, {fy})"));
            }
        }
    }
}

#[test]
fn gif_disposal_is_composed_before_resizing() {
    let input = disposal_gif();
    // The reference decoder (tests/common) agrees with the browser's picture of the input.
    check_quadrants(&decode_gif(&input), &DISPOSAL_QUADRANTS, "input");
    for query in ["width=16&format=webp&lossless=true", "width=16&format=webp", "width=16&format=gif"] {
        let anim = frames_of(&run(&input, query).bytes);
        assert_eq!(anim.frames[0].0.size(), (16, 16), "{query}");
        check_quadrants(&anim, &DISPOSAL_QUADRANTS, query);
    }
}

/// An animated WebP with a transparent frame blended over the one before (libwebp's encoder
/// writes sub-frames with blending and disposal of its choosing).
fn webp_frames() -> Vec<(Image, u32)> {
    let moving = |x0: u32| Image::new(32, 32, move |x, y| if (x0..x0 + 8).contains(&x) && y < 8 { RED } else { BLUE });
    vec![
        (moving(0), 50),
        (moving(8), 70),
        (moving(16), 90),
        (Image::new(32, 32, |x, _| if x < 16 { GREEN } else { CLEAR }), 110),
    ]
}

#[test]
fn an_animated_webp_is_resized_frame_by_frame() {
    let input = make_webp(&webp_frames(), 4);
    assert_eq!(imaging::probe(&input).unwrap().frames, 4);
    for query in ["width=16", "width=16&format=webp&lossless=true", "width=16&format=gif"] {
        let out = run(&input, query);
        let anim = frames_of(&out.bytes);
        let expected_format = if query.contains("gif") { "gif" } else { "webp" };
        assert_eq!(out.report.format.as_str(), expected_format, "{query}");
        assert_eq!((anim.frames.len(), anim.plays), (4, 4), "{query}");
        assert_eq!(anim.delays(), [50, 70, 90, 110], "{query}");
        // The red square moves right along the top edge, over blue.
        for (i, (frame, _)) in anim.frames.iter().take(3).enumerate() {
            let square = 0.125 + 0.25 * i as f64;
            assert_near(&frame.at_fraction(square, 0.125), &RED, 24, format!("{query}: frame {i}, the square"));
            assert_near(&frame.at_fraction(0.875, 0.875), &BLUE, 8, format!("{query}: frame {i}, the ground"));
        }
        let last = &anim.frames[3].0;
        assert_near(&last.at_fraction(0.25, 0.5), &GREEN, 8, format!("{query}: last frame, left"));
        assert!(last.at_fraction(0.75, 0.5)[3] < 8, "{query}: last frame, right is transparent");
    }
}

#[test]
fn frames_1_gives_the_first_frame_as_a_still() {
    for (name, input) in [("gif", rgb_gif(Some(gif::Repeat::Infinite))), ("webp", make_webp(&rgb_frames(), 0))] {
        for query in ["width=20&frames=1", "width=20&format=webp&frames=1", "width=20&format=gif&frames=1"] {
            let out = run(&input, query);
            let probe = imaging::probe(&out.bytes).unwrap();
            assert_eq!(probe.frames, 1, "{name} {query}");
            if probe.format == imaging::ImageFormat::Webp {
                assert!(!webp_chunks(&out.bytes).contains(b"ANIM"), "{name} {query}: a still WebP");
            }
            let img = decode_output(&out);
            assert_near(&img.at_fraction(0.5, 0.5), &RED, 6, format!("{name} {query}"));
        }
        // Still formats take the first frame whatever `frames` says.
        let img = decode_output(&run(&input, "width=20&format=png"));
        assert_eq!(img.at_fraction(0.5, 0.5), RED, "{name} → png");
        let err = try_spec("width=20&frames=2").expect_err("frames=2");
        assert_eq!(err.http_status(), 400);
    }
}

#[test]
fn the_frame_count_is_the_one_rule_for_metering() {
    let input = rgb_gif(None);
    let probe = imaging::probe(&input).unwrap();
    let frames = |q: &str, format| imaging::frames_out(&probe, format, &spec(q));
    assert_eq!(frames("width=20", imaging::OutputFormat::Webp), 3);
    assert_eq!(frames("width=20", imaging::OutputFormat::Gif), 3);
    assert_eq!(frames("width=20&frames=1", imaging::OutputFormat::Webp), 1);
    assert_eq!(frames("width=20", imaging::OutputFormat::Png), 1);
    assert_eq!(frames("width=20", imaging::OutputFormat::Jpeg), 1);
}

fn limits(f: impl FnOnce(&mut Limits)) -> Limits {
    let mut l = Limits::default();
    f(&mut l);
    l
}

#[track_caller]
fn check_limit(input: &[u8], query: &str, limits: &Limits, expected: LimitExceeded) {
    match run_with(input, query, limits) {
        Err(ImagingError::LimitExceeded(e)) => {
            assert_eq!(e, expected, "{query}");
            assert_eq!(ImagingError::LimitExceeded(e).http_status(), 413);
        }
        other => panic!("{query}: expected {expected:?}, got {other:?}"),
    }
}

/// Passes the limits `limits`: the cut file then fails to decode with `status`.
#[track_caller]
fn check_accepted(input: &[u8], query: &str, limits: &Limits, status: u16) {
    let err = run_with(input, query, limits).expect_err("the input is cut");
    assert_eq!(err.http_status(), status, "{query}: {err:?}");
}

#[test]
fn summed_pixels_are_refused_before_any_frame_is_decoded() {
    // The frames' pixel data is cut off: any decoding would answer 422, so a 413 shows that
    // the limit was judged on the header walk alone.
    let whole = rgb_gif(None);
    let cut = &whole[..whole.len() - 20];
    assert_eq!(run_with(cut, "width=20", &Limits::default()).expect_err("cut").http_status(), 422);
    // Input side: 40 x 30 x 3 frames.
    let tight = limits(|l| l.max_animation_pixels = 3599);
    check_limit(cut, "width=20", &tight, LimitExceeded::AnimationPixels { side: "input", actual: 3600, limit: 3599 });
    // Output side: 80 x 60 x 3.
    let enlarged = limits(|l| l.max_animation_output_pixels = 3600);
    let expected = LimitExceeded::AnimationPixels { side: "output", actual: 14_400, limit: 3600 };
    check_limit(cut, "width=80&enlarge=true&format=gif", &enlarged, expected);
    // At the bound (40 x 30 x 3) it passes, on to the decoder and its 422.
    check_accepted(cut, "width=40&format=gif", &enlarged, 422);
    // The working memory of the frame-by-frame path.
    let small = limits(|l| l.max_decoder_memory = 40 * 30 * 4 * 5);
    match run_with(cut, "width=20&format=webp", &small) {
        Err(ImagingError::LimitExceeded(LimitExceeded::DecoderMemory { .. })) => {}
        other => panic!("expected DecoderMemory, got {other:?}"),
    }
    // The same limits pass the first frame alone, which they do not concern.
    run_with(&whole, "width=20&frames=1", &tight).expect("a still is not an animation");
    run_with(&whole, "width=20&format=png", &tight).expect("nor is a still format's first frame");
    // And the WebP side, on the probe of its ANMF chunks.
    let webp = make_webp(&rgb_frames(), 0);
    check_limit(&webp, "width=20", &tight, LimitExceeded::AnimationPixels { side: "input", actual: 3600, limit: 3599 });
}

#[test]
fn broken_animations_are_typed_errors() {
    for (name, input) in [("gif", disposal_gif()), ("webp", make_webp(&webp_frames(), 0))] {
        // Every cut: refused as corrupt (422), or served whole.
        for len in 12..input.len() {
            match run_with(&input[..len], "width=16", &Limits::default()) {
                // Cut before the second frame's descriptor, it is a still (its first frame).
                Ok(out) if imaging::probe(&input[..len]).unwrap().frames == 1 => {
                    assert_eq!(decode_output(&out).at_fraction(0.875, 0.875), BLUE, "{name} cut at {len}")
                }
                // Cut after a frame's data (no trailer): the frames up to there, each whole.
                Ok(out) => {
                    let declared = imaging::probe(&input[..len]).unwrap().frames as usize;
                    assert_eq!(frames_of(&out.bytes).frames.len(), declared, "{name} cut at {len}")
                }
                Err(e) => assert_eq!(e.http_status(), 422, "{name} cut at {len}: {e:?}"),
            }
        }
        // Flipped bytes: anything but a panic or a 500.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for round in 0..300 {
            let mut bytes = input.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = 6 + (seed as usize) % (bytes.len() - 6);
                bytes[at] = (seed >> 32) as u8;
            }
            if let Err(e) = run_with(&bytes, "width=16", &Limits::default()) {
                assert_ne!(e.http_status(), 500, "{name} mutation {round}: {e:?}");
            }
        }
    }
}

// --- Pillow, the independent reference ---------------------------------------------------------

/// What Debian's Pillow (/usr/bin/python3, package python3-pil; scripts/test.sh installs it)
/// reads of an animation: frame count, loop, and per frame its duration and the RGBA at the
/// centre of each quadrant.
fn pillow(bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("imaging-pillow-{}-{}", std::process::id(), bytes.len()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("anim");
    std::fs::write(&path, bytes).expect("write");
    let script = r#"
import sys
from PIL import Image, ImageSequence
im = Image.open(sys.argv[1])
print(im.format, im.n_frames, im.info.get("loop"))
for frame in ImageSequence.Iterator(im):
    rgba = frame.convert("RGBA")
    w, h = rgba.size
    quads = [rgba.getpixel((int(w * fx), int(h * fy))) for fx, fy in ((.125, .125), (.875, .125), (.125, .875), (.875, .875))]
    print(frame.info.get("duration"), " ".join("%d,%d,%d,%d" % q for q in quads))
"#;
    let out = std::process::Command::new("/usr/bin/python3").arg("-c").arg(script).arg(&path).output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out
        .expect("/usr/bin/python3 runs: the Pillow reference needs Debian's python3-pil (apt-get install python3-pil)");
    assert!(
        out.status.success(),
        "Pillow could not read the animation (is Debian's python3-pil installed? apt-get install python3-pil): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn pillow_reads_our_animations_as_we_do() {
    let input = disposal_gif();
    for (query, format, plays) in [("width=16&format=webp&lossless=true", "WEBP", 0), ("width=16&format=gif", "GIF", 0)]
    {
        let report = pillow(&run(&input, query).bytes);
        let mut lines = report.lines();
        assert_eq!(lines.next(), Some(format!("{format} 4 {plays}").as_str()), "{query}: {report}");
        for (i, (line, quadrants)) in lines.zip(DISPOSAL_QUADRANTS).enumerate() {
            let (duration, pixels) = line.split_once(' ').expect("duration and pixels");
            assert_eq!(duration, "100", "{query}: frame {i}: {report}");
            for (got, want) in pixels.split(' ').zip(quadrants) {
                let got: Vec<u8> = got.split(',').map(|v| v.parse().expect("number")).collect();
                if want[3] == 0 {
                    assert!(got[3] < 8, "{query}: frame {i}: {got:?} is not transparent: {report}");
                } else {
                    assert_near(&got, &want, 8, format!("{query}: frame {i}: {report}"));
                }
            }
        }
    }
}

/// `webp` with `icc` set as its ICCP chunk by libwebp's muxer.
fn with_icc(webp: &[u8], icc: &[u8]) -> Vec<u8> {
    use libwebp_sys as ffi;
    // SAFETY: the mux copies what it is given and is deleted here; the assembled bytes are
    // copied out and freed.
    unsafe {
        let data = ffi::WebPData { bytes: webp.as_ptr(), size: webp.len() };
        let profile = ffi::WebPData { bytes: icc.as_ptr(), size: icc.len() };
        let mux = ffi::WebPMuxCreateInternal(&data, 1, ffi::WebPGetMuxABIVersion());
        assert!(!mux.is_null());
        assert_eq!(ffi::WebPMuxSetChunk(mux, c"ICCP".as_ptr(), &profile, 1), ffi::WebPMuxError::WEBP_MUX_OK);
        let mut out = ffi::WebPData::default();
        assert_eq!(ffi::WebPMuxAssemble(mux, &mut out), ffi::WebPMuxError::WEBP_MUX_OK);
        let bytes = std::slice::from_raw_parts(out.bytes, out.size).to_vec();
        ffi::WebPDataClear(&mut out);
        ffi::WebPMuxDelete(mux);
        bytes
    }
}

#[test]
fn an_animated_webp_profile_converts_every_frame_as_a_still_profile_does() {
    let colours = [[200, 100, 50, 255], [40, 160, 220, 255]];
    let frames: Vec<(Image, u32)> = colours.iter().map(|&c| (Image::solid(16, 16, c), 100)).collect();
    let input = with_icc(&make_webp(&frames, 0), &display_p3());
    assert!(imaging::probe(&input).unwrap().has_icc);
    let anim = decode_animated_webp(&run(&input, "width=8&format=webp&lossless=true").bytes);
    assert_eq!(anim.frames.len(), 2);
    for ((frame, _), colour) in anim.frames.iter().zip(colours) {
        // The same pixels as a still PNG with the same profile: the reference conversion.
        let still =
            decode_output(&run(&png_with_icc(&Image::solid(16, 16, colour), &display_p3()), "width=8&format=png"));
        assert_ne!(still.at(4, 4), colour, "the profile changes this colour");
        assert_near(&frame.at(4, 4), &still.at(4, 4), 2, format!("{colour:?} through Display P3"));
    }
}

#[test]
fn frames_off_the_screen_and_zero_delays_are_served() {
    // A frame hanging over the right edge (clipped), one wholly off the screen (nothing drawn),
    // and delays of 0 (kept as 0: viewers pick their own minimum).
    let frames = [
        GifFrame { image: Image::solid(16, 16, BLUE), at: (0, 0), delay_cs: 0, dispose: gif::DisposalMethod::Keep },
        GifFrame { image: Image::solid(8, 8, RED), at: (12, 0), delay_cs: 0, dispose: gif::DisposalMethod::Keep },
        GifFrame { image: Image::solid(4, 4, GREEN), at: (100, 100), delay_cs: 0, dispose: gif::DisposalMethod::Keep },
    ];
    let input = make_gif(16, 16, &frames, None);
    for query in ["width=16&format=webp&lossless=true", "width=16&format=gif"] {
        let anim = frames_of(&run(&input, query).bytes);
        // libwebp merges the third frame, identical to the second, into it.
        assert!((2..=3).contains(&anim.frames.len()), "{query}: {} frames", anim.frames.len());
        let second = &anim.frames[1].0;
        assert_eq!(second.at(14, 2), RED, "{query}: the clipped frame's visible part");
        assert_eq!(second.at(2, 2), BLUE, "{query}");
        assert_eq!(anim.frames.last().unwrap().0.at(15, 15), BLUE, "{query}: nothing drawn off the screen");
        assert_eq!(anim.plays, 1, "{query}: no NETSCAPE extension: one play");
    }
}
