//! Every input format into every output format: the output is what the report says it is,
//! alpha survives where the output can hold it, and no input metadata reaches the output.

mod common;

use common::*;
use imaging::ImageFormat;
use mozjpeg::Marker;

/// The inputs: name, bytes, the pixels they hold, whether they carry alpha, the colour
/// tolerance their own encoding needs.
fn inputs() -> Vec<(&'static str, Vec<u8>, Image, bool, u8)> {
    let opaque = gradient(64, 48);
    let alpha = gradient_with_alpha(64, 48);
    let progressive = JpegOptions { progressive: true, ..JpegOptions::default() };
    vec![
        ("jpeg", jpeg(&opaque), opaque.clone(), false, 8),
        ("progressive jpeg", jpeg_with(&opaque, &progressive), opaque.clone(), false, 8),
        ("png rgb", png(&opaque), opaque.clone(), false, 0),
        ("png rgba", png(&alpha), alpha.clone(), true, 0),
        ("webp lossy", webp(&alpha, false), alpha.clone(), true, 8),
        ("webp lossless", webp(&alpha, true), alpha.clone(), true, 0),
        ("gif", gif_of(&alpha), alpha, true, 26),
    ]
}

const OUTPUTS: [&str; 4] = ["format=jpeg", "format=png", "format=webp", "format=webp&lossless=true"];

/// Converts `input` (64x48) to 32x24 with `output` and checks the result decodes as the
/// reported format and size, keeps the picture, and keeps or flattens the alpha.
#[track_caller]
fn check(name: &str, input: &[u8], source: &Image, has_alpha: bool, tolerance: u8, output: &str) {
    let what = format!("{name} → {output}");
    let out = run(input, &format!("width=32&quality=95&{output}"));
    assert_eq!((out.report.input_width, out.report.input_height, out.report.input_bytes), (64, 48, input.len() as u64));
    assert_eq!((out.report.width, out.report.height), (32, 24), "{what}");
    let img = decode_output(&out);
    let probe = imaging::probe(&out.bytes).unwrap();
    assert!(probe.complete, "{what}: output is not a complete file");
    let keeps_alpha = has_alpha && out.report.format.supports_alpha();
    assert_eq!(probe.has_alpha, keeps_alpha, "{what}: alpha in the output");
    let tolerance = tolerance + if output.contains("lossless") || output.contains("png") { 6 } else { 14 };
    // The opaque left third is the picture itself.
    for fy in [0.2, 0.5, 0.8] {
        let src = source.at_fraction(1.0 / 6.0, fy);
        assert_near(&img.at_fraction(1.0 / 6.0, fy), &src, tolerance, format!("{what}: left third at {fy}"));
    }
    // The right third is transparent: kept as such, or white in JPEG.
    let right = img.at_fraction(5.0 / 6.0, 0.5);
    match (has_alpha, keeps_alpha) {
        (true, true) => assert!(right[3] < 8, "{what}: transparent third came out {right:?}"),
        (true, false) => assert_near(&right, &[255, 255, 255, 255], 8, format!("{what}: transparent third on white")),
        (false, _) => assert_eq!(right[3], 255, "{what}"),
    }
}

#[test]
fn every_input_format_converts_to_every_output_format() {
    for (name, input, source, has_alpha, tolerance) in inputs() {
        for output in OUTPUTS {
            check(name, &input, &source, has_alpha, tolerance, output);
        }
    }
}

#[test]
fn half_transparent_pixels_stay_half_transparent() {
    for (name, input, _, has_alpha, _) in inputs() {
        if !has_alpha || name == "gif" {
            continue; // GIF transparency is all or nothing.
        }
        for output in ["format=png", "format=webp", "format=webp&lossless=true"] {
            let img = decode_output(&run(&input, &format!("width=32&{output}")));
            let middle = img.at_fraction(0.5, 0.5);
            assert!(middle[3].abs_diff(128) <= 3, "{name} → {output}: half-transparent third is {middle:?}");
        }
    }
}

#[test]
fn the_output_format_follows_the_input_unless_asked() {
    for (name, input, _, _, _) in inputs() {
        let expected = match imaging::probe(&input).unwrap().format {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png | ImageFormat::Gif => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Avif | ImageFormat::Heic => "jpeg",
        };
        assert_eq!(run(&input, "width=32").report.format.as_str(), expected, "{name}");
        assert_eq!(run(&input, "width=32&format=auto").report.format.as_str(), expected, "{name}");
    }
}

#[test]
fn a_still_becomes_a_one_frame_gif_when_asked() {
    let img = gradient_with_alpha(64, 48);
    let out = run(&png(&img), "width=32&format=gif");
    assert_eq!((out.report.format.as_str(), out.report.width, out.report.height), ("gif", 32, 24));
    let gif = decode_gif(&out.bytes);
    assert_eq!((gif.frames.len(), gif.plays), (1, 1), "one frame, no NETSCAPE loop extension");
    let first = &gif.frames[0].0;
    assert_eq!(decode_output(&out), *first);
    // The opaque left third keeps its colours (within the 256-colour palette), the transparent
    // right third stays transparent (GIF's one bit).
    let src = img.at_fraction(1.0 / 6.0, 0.5);
    assert_near(&first.at_fraction(1.0 / 6.0, 0.5), &src, 24, "left third");
    assert_eq!(first.at_fraction(5.0 / 6.0, 0.5)[3], 0, "transparent third");
}

#[test]
fn an_animated_gif_gives_its_first_frame_as_a_still_format() {
    let red_then_blue = gif(8, 8, &[[255, 0, 0], [0, 0, 255]], &[vec![0; 64], vec![1; 64], vec![1; 64]], None);
    assert_eq!(imaging::probe(&red_then_blue).unwrap().frames, 3);
    for query in ["width=8&format=png", "width=8&frames=1", "width=8&format=webp&frames=1"] {
        let out = run(&red_then_blue, query);
        assert_eq!(imaging::probe(&out.bytes).unwrap().frames, 1, "{query}");
        // Lossy WebP is near red, not exactly.
        for p in decode_output(&out).pixels {
            assert_near(&p, &[255, 0, 0, 255], 6, format!("{query}: not the first frame"));
        }
    }
}

#[test]
fn progressive_and_quality_reach_the_encoder() {
    let input = png(&gradient(128, 96));
    let out = run(&input, "width=128&format=jpeg&progressive=true");
    let info = imaging::probe(&out.bytes).unwrap().jpeg.unwrap();
    assert!(info.progressive && info.scans > 1, "{info:?}");
    assert!(!imaging::probe(&run(&input, "width=128&format=jpeg").bytes).unwrap().jpeg.unwrap().progressive);
    for format in ["jpeg", "webp"] {
        let low = run(&input, &format!("width=128&format={format}&quality=10")).bytes.len();
        let high = run(&input, &format!("width=128&format={format}&quality=95")).bytes.len();
        assert!(low < high, "{format}: quality 10 is {low} bytes, quality 95 is {high}");
    }
}

// --- Metadata -------------------------------------------------------------------------------------

const XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x='adobe:ns:meta/'/>";

/// Inputs full of metadata: EXIF, XMP, comments, text chunks and a (P3) ICC profile.
fn inputs_with_metadata() -> Vec<(&'static str, Vec<u8>)> {
    let img = gradient_with_alpha(64, 48);
    let jpeg_options = JpegOptions {
        icc: Some(display_p3()),
        markers: vec![(Marker::APP(1), XMP.to_vec()), (Marker::COM, b"a comment".to_vec())],
        ..JpegOptions::default()
    };
    let jpeg = with_exif_orientation(&jpeg_with(&img, &jpeg_options), 1);
    let png = png_with(&img, |info| {
        info.icc_profile = Some(display_p3().into());
        info.exif_metadata = Some(exif_tiff(1).into());
        info.uncompressed_latin1_text.push(png::text_metadata::TEXtChunk::new("Comment", "a comment"));
    });
    let gif = gif_of(&img);
    vec![("jpeg", jpeg), ("png", png), ("gif", gif)]
}

/// The metadata-bearing parts of an output: JPEG APPn/COM markers, PNG ancillary chunks, WebP
/// chunks other than the image ones.
fn metadata(bytes: &[u8]) -> Vec<String> {
    match imaging::probe(bytes).unwrap().format {
        ImageFormat::Jpeg => jpeg_markers(bytes)
            .into_iter()
            .filter(|&m| (0xE1..=0xEF).contains(&m) || m == 0xFE)
            .map(|m| format!("JPEG marker {m:#04X}"))
            .collect(),
        ImageFormat::Png => png_chunks(bytes)
            .into_iter()
            .filter(|c| c[0].is_ascii_lowercase())
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .collect(),
        ImageFormat::Webp => webp_chunks(bytes)
            .into_iter()
            .filter(|c| !matches!(c, b"VP8 " | b"VP8L" | b"VP8X" | b"ALPH"))
            .map(|c| String::from_utf8_lossy(&c).into_owned())
            .collect(),
        ImageFormat::Gif | ImageFormat::Avif | ImageFormat::Heic => unreachable!(),
    }
}

#[test]
fn input_metadata_never_reaches_the_output() {
    for (name, input) in inputs_with_metadata() {
        if name != "gif" {
            assert!(metadata(&input).len() >= 3, "{name}: test input carries {:?}", metadata(&input));
        }
        for output in OUTPUTS {
            let out = run(&input, &format!("width=32&{output}"));
            assert_eq!(metadata(&out.bytes), Vec::<String>::new(), "{name} → {output}");
            assert!(!imaging::probe(&out.bytes).unwrap().has_icc, "{name} → {output}: the input's profile was copied");
        }
    }
}

#[test]
fn exif_is_stripped_from_jpeg() {
    let input = with_exif_orientation(&jpeg(&gradient(64, 48)), 1);
    assert!(jpeg_markers(&input).contains(&0xE1), "test input has no APP1");
    let out = run(&input, "width=32");
    assert!(!jpeg_markers(&out.bytes).contains(&0xE1), "output JPEG has an APP1 segment");
    assert!(!out.bytes.windows(6).any(|w| w == b"Exif\0\0"), "output JPEG contains an Exif header");
}

/// The ICC profile embedded in a JPEG (APP2 ICC_PROFILE chunks, in order) or a WebP (ICCP).
fn embedded_icc(bytes: &[u8]) -> Option<Vec<u8>> {
    match imaging::probe(bytes).unwrap().format {
        ImageFormat::Jpeg => {
            let d = mozjpeg::Decompress::with_markers(&[Marker::APP(2)]).from_mem(bytes).unwrap();
            let chunks: Vec<u8> = d
                .markers()
                .filter_map(|m| m.data.strip_prefix(b"ICC_PROFILE\0").map(|rest| rest[2..].to_vec()))
                .flatten()
                .collect();
            (!chunks.is_empty()).then_some(chunks)
        }
        ImageFormat::Webp => {
            let mut pos = 12;
            while pos + 8 <= bytes.len() {
                let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
                if &bytes[pos..pos + 4] == b"ICCP" {
                    return Some(bytes[pos + 8..pos + 8 + len].to_vec());
                }
                pos += 8 + len + (len & 1);
            }
            None
        }
        ImageFormat::Png => {
            let reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
            reader.info().icc_profile.as_ref().map(|p| p.to_vec())
        }
        ImageFormat::Gif | ImageFormat::Avif | ImageFormat::Heic => None,
    }
}

/// An ICC profile with its creation date (header bytes 24..36) blanked, and that date.
fn without_date(mut profile: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let date = profile[24..36].to_vec();
    profile[24..36].fill(0);
    (profile, date)
}

#[test]
fn keep_icc_embeds_the_srgb_profile() {
    let (srgb, _) = without_date(moxcms::ColorProfile::new_srgb().encode().unwrap());
    // The date is fixed (1999-10-18 00:00:00), not the time of the request: the same request
    // gives the same bytes at any time.
    let fixed_date = [1999u16, 10, 18, 0, 0, 0].iter().flat_map(|v| v.to_be_bytes()).collect::<Vec<u8>>();
    for (name, input) in inputs_with_metadata() {
        for format in ["jpeg", "png", "webp", "webp&lossless=true"] {
            let out = run(&input, &format!("width=32&format={format}&keep_icc=true"));
            assert!(imaging::probe(&out.bytes).unwrap().has_icc, "{name} → {format}: no ICC profile");
            let (profile, date) = without_date(embedded_icc(&out.bytes).expect("an embedded profile"));
            assert!(profile == srgb, "{name} → {format}: the profile is not sRGB");
            assert_eq!(date, fixed_date, "{name} → {format}: the profile's creation date");
            decode_output(&out);
        }
        let out = run(&input, "width=32&format=png&keep_icc=true");
        assert!(!png_chunks(&out.bytes).contains(b"eXIf") && !png_chunks(&out.bytes).contains(b"tEXt"));
    }
}

#[test]
fn without_keep_icc_no_colour_space_is_declared() {
    for (name, input) in inputs_with_metadata() {
        for format in ["jpeg", "webp", "png"] {
            let out = run(&input, &format!("width=32&format={format}"));
            assert!(!imaging::probe(&out.bytes).unwrap().has_icc, "{name} → {format}");
        }
        assert!(!png_declares_colour_space(&run(&input, "width=32&format=png").bytes), "{name} → png");
    }
}
