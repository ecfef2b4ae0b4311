//! Colour: CMYK and YCCK JPEGs, grey, 16-bit and palette images, alpha, and ICC profiles all
//! come out as the sRGB pixels a browser would show.

mod common;

use common::*;

/// Samples the centre of each of `expected.len()` vertical bands of equal width.
#[track_caller]
fn check_bands(out: &Image, expected: &[[u8; 4]], tolerance: u8, what: &str) {
    for (i, want) in expected.iter().enumerate() {
        let px = out.at_fraction((i as f64 + 0.5) / expected.len() as f64, 0.5);
        if want[3] == 0 {
            assert_eq!(px[3], 0, "{what}: band {i} should be transparent, got {px:?}");
        } else {
            assert_near(&px, want, tolerance, format!("{what}: band {i}"));
        }
    }
}

/// Vertical bands, `width` pixels each, of the given values.
fn bands<T: Copy>(values: &[T], width: u32) -> impl Fn(u32, u32) -> T + '_ {
    move |x, _| values[(x / width) as usize]
}

// --- CMYK -------------------------------------------------------------------------------------

/// Ink amounts (0 = none) and the sRGB colour the naive conversion gives them.
const INKS: [([u8; 4], [u8; 4]); 7] = [
    ([255, 0, 0, 0], [0, 255, 255, 255]),   // cyan
    ([0, 255, 0, 0], [255, 0, 255, 255]),   // magenta
    ([0, 0, 255, 0], [255, 255, 0, 255]),   // yellow
    ([0, 255, 255, 0], [255, 0, 0, 255]),   // red = magenta + yellow
    ([0, 0, 0, 255], [0, 0, 0, 255]),       // black
    ([0, 0, 0, 0], [255, 255, 255, 255]),   // paper
    ([0, 0, 0, 128], [127, 127, 127, 255]), // half black
];

#[track_caller]
fn check_cmyk(options: JpegOptions, adobe_transform: u8) {
    let inks: Vec<[u8; 4]> = INKS.iter().map(|i| i.0).collect();
    let expected: Vec<[u8; 4]> = INKS.iter().map(|i| i.1).collect();
    let input = jpeg_cmyk(16 * INKS.len() as u32, 16, bands(&inks, 16), &options);
    let info = imaging::probe(&input).unwrap().jpeg.unwrap();
    assert_eq!((info.components, info.adobe_transform), (4, Some(adobe_transform)), "test input");
    for format in ["png", "jpeg", "webp"] {
        let query = format!("width={}&format={format}&quality=95", 16 * INKS.len());
        let out = decode_output(&run(&input, &query));
        check_bands(&out, &expected, 10, &format!("Adobe transform {adobe_transform} → {format}"));
    }
}

#[test]
fn cmyk_jpeg_becomes_rgb_with_the_right_colours() {
    check_cmyk(JpegOptions::default(), 0);
}

#[test]
fn ycck_jpeg_becomes_rgb_with_the_right_colours() {
    check_cmyk(JpegOptions { ycck: true, ..JpegOptions::default() }, 2);
}

#[test]
fn cmyk_jpeg_survives_shrink_on_load() {
    let input =
        jpeg_cmyk(512, 64, |x, _| if x < 256 { [255, 0, 0, 0] } else { [0, 0, 0, 255] }, &JpegOptions::default());
    let out = run(&input, "width=64&format=png");
    assert_eq!(out.report.decode_scale, 4);
    check_bands(&decode_output(&out), &[[0, 255, 255, 255], [0, 0, 0, 255]], 10, "cyan | black at 1/4");
}

// --- Grey -------------------------------------------------------------------------------------

const GREYS: [u8; 4] = [0, 60, 128, 250];

fn grey_bands() -> Image {
    Image::new(64, 16, |x, _| {
        let v = GREYS[(x / 16) as usize];
        [v, v, v, 255]
    })
}

fn expected_greys() -> Vec<[u8; 4]> {
    GREYS.iter().map(|&v| [v, v, v, 255]).collect()
}

#[test]
fn grey_jpeg_becomes_grey_rgb() {
    let input = jpeg_grey(&grey_bands());
    assert_eq!(imaging::probe(&input).unwrap().jpeg.unwrap().components, 1);
    for format in ["jpeg", "png", "webp"] {
        let out = decode_output(&run(&input, &format!("width=32&format={format}&quality=95")));
        check_bands(&out, &expected_greys(), 4, &format!("grey JPEG → {format}"));
        assert!(out.pixels.iter().all(|p| p[0].abs_diff(p[1]) <= 2 && p[1].abs_diff(p[2]) <= 2), "{format}: tinted");
    }
}

#[test]
fn grey_png_becomes_grey_rgb() {
    let out = decode_output(&run(&png_grey(&grey_bands(), false), "width=64"));
    check_bands(&out, &expected_greys(), 0, "grey PNG → PNG");
    let out = decode_output(&run(&png_grey(&grey_bands(), false), "width=64&format=jpeg&quality=95"));
    check_bands(&out, &expected_greys(), 3, "grey PNG → JPEG");
}

#[test]
fn grey_png_with_alpha_keeps_its_alpha() {
    let img = Image::new(64, 16, |x, _| [GREYS[(x / 16) as usize], 0, 0, [255, 200, 100, 0][(x / 16) as usize]]);
    let input = png_grey(&img, true);
    let out = decode_output(&run(&input, "width=64"));
    check_bands(&out, &[[0, 0, 0, 255], [60, 60, 60, 200], [128, 128, 128, 100], [0, 0, 0, 0]], 1, "grey+alpha → PNG");
    // Onto white in JPEG: 60 at 200/255 → 60*0.784 + 255*0.216 = 102; 128 at 100/255 → 205.
    let out = decode_output(&run(&input, "width=64&format=jpeg&quality=95"));
    check_bands(&out, &[[0, 0, 0, 255], [102, 102, 102, 255], [205, 205, 205, 255], [255; 4]], 4, "grey+alpha → JPEG");
}

// --- 16-bit and palettes ------------------------------------------------------------------------

#[test]
fn sixteen_bit_png_is_reduced_to_eight_bits() {
    let samples =
        [[0xFFFF, 0x8000, 0x0000, 0xFFFF], [0x4000, 0xC0FF, 0x2000, 0x8000], [0x0101, 0x0202, 0xFEFE, 0x0000]];
    let expected = [[255, 128, 0, 255], [64, 192, 32, 128], [1, 2, 254, 0]];
    let opaque: Vec<[u8; 4]> = expected.iter().map(|e| [e[0], e[1], e[2], 255]).collect();
    let out = decode_output(&run(&png16(48, 8, bands(&samples, 16), false), "width=48"));
    check_bands(&out, &opaque, 1, "16-bit RGB");
    let out = decode_output(&run(&png16(48, 8, bands(&samples, 16), true), "width=48"));
    check_bands(&out, &expected, 1, "16-bit RGBA");
}

const PALETTE: [[u8; 4]; 4] = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 0], [255, 0, 0, 128]];

fn palette_png() -> Vec<u8> {
    png_palette(40, 10, &PALETTE, |x, _| (x / 10) as u8)
}

#[test]
fn palette_png_with_transparency_keeps_alpha_where_the_output_has_it() {
    let input = palette_png();
    assert!(imaging::probe(&input).unwrap().has_alpha);
    for (query, tolerance) in [("format=png", 0), ("format=webp&lossless=true", 0), ("format=webp&quality=95", 8)] {
        let out = run(&input, &format!("width=40&{query}"));
        assert!(imaging::probe(&out.bytes).unwrap().has_alpha, "{query}: alpha dropped");
        check_bands(&decode_output(&out), &PALETTE, tolerance, query);
    }
}

#[test]
fn palette_png_with_transparency_is_flattened_onto_the_background_in_jpeg() {
    let input = palette_png();
    let expect = |query: &str, bands: [[u8; 4]; 4]| {
        let out = decode_output(&run(&input, &format!("width=40&format=jpeg&quality=95{query}")));
        check_bands(&out, &bands, 6, &format!("JPEG{query}"));
    };
    expect("", [[255, 0, 0, 255], [0, 255, 0, 255], [255, 255, 255, 255], [255, 127, 127, 255]]);
    expect("&background=000000", [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 0, 255], [128, 0, 0, 255]]);
    expect("&background=00f", [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [128, 0, 127, 255]]);
    // A translucent background cannot be a JPEG's background: white is used.
    expect("&background=00000080", [[255, 0, 0, 255], [0, 255, 0, 255], [255, 255, 255, 255], [255, 127, 127, 255]]);
}

#[test]
fn pngs_keep_their_colours_when_shrunk_on_load() {
    // 10x reductions: non-interlaced PNGs are box-averaged to 1/4 while their rows stream.
    let shrink = |input: Vec<u8>, width: u32| {
        let out = run(&input, &format!("width={width}"));
        assert_eq!(out.report.decode_scale, 4);
        decode_output(&out)
    };
    let out = shrink(png_palette(400, 40, &PALETTE, |x, _| (x / 100) as u8), 40);
    check_bands(&out, &PALETTE, 1, "palette + tRNS");
    let samples =
        [[0xFFFF, 0x8000, 0x0000, 0xFFFF], [0x4000, 0xC0FF, 0x2000, 0x8000], [0x0101, 0x0202, 0xFEFE, 0x0000]];
    let out = shrink(png16(480, 40, bands(&samples, 160), true), 48);
    check_bands(&out, &[[255, 128, 0, 255], [64, 192, 32, 128], [1, 2, 254, 0]], 1, "16-bit RGBA");
    let img = Image::new(640, 40, |x, _| [GREYS[(x / 160) as usize], 0, 0, [255, 200, 100, 0][(x / 160) as usize]]);
    let out = shrink(png_grey(&img, true), 64);
    check_bands(&out, &[[0, 0, 0, 255], [60, 60, 60, 200], [128, 128, 128, 100], [0, 0, 0, 0]], 1, "grey + alpha");
}

#[test]
fn grey_stays_one_channel_to_the_encoder() {
    let out = run(&jpeg_grey(&grey_bands()), "width=32");
    assert_eq!(imaging::probe(&out.bytes).unwrap().jpeg.unwrap().components, 1, "grey JPEG → JPEG");
    let out = run(&png_grey(&grey_bands(), false), "width=32");
    assert_eq!(imaging::probe(&out.bytes).unwrap().png.unwrap().color_type, 0, "grey PNG → PNG");
    let out = run(&png_grey(&grey_bands(), false), "width=32&format=jpeg");
    assert_eq!(imaging::probe(&out.bytes).unwrap().jpeg.unwrap().components, 1, "grey PNG → JPEG");
}

#[test]
fn grey_meets_colour_where_it_must() {
    // Padding and flattening onto a coloured background make grey images colour.
    let out = decode_output(&run(&png_grey(&grey_bands(), false), "width=64&height=32&fit=contain&background=ff0000"));
    assert_near(&out.at(0, 0), &[255, 0, 0, 255], 0, "padding");
    check_bands(&out, &expected_greys(), 0, "grey bands in the middle");
    let img = Image::new(32, 8, |x, _| [100, 0, 0, if x < 16 { 255 } else { 0 }]);
    let out = decode_output(&run(&png_grey(&img, true), "width=32&format=jpeg&quality=95&background=0000ff"));
    check_bands(&out, &[[100, 100, 100, 255], [0, 0, 255, 255]], 6, "grey+alpha onto blue");
}

#[test]
fn grey_icc_profiles_are_applied() {
    // Mid-grey in a linear (gamma 1.0) grey space is a light grey in sRGB; gamma 2.2 is close to
    // sRGB's own curve.
    let grey = |value: u8, gamma: f32| {
        let icc = moxcms::ColorProfile::new_gray_with_gamma(gamma).encode().unwrap();
        let data = vec![value; 16 * 8];
        let input = encode_png(16, 8, png::ColorType::Grayscale, png::BitDepth::Eight, &data, |info| {
            info.icc_profile = Some(icc.into());
        });
        assert!(imaging::probe(&input).unwrap().has_icc);
        decode_output(&run(&input, "width=16")).at(8, 4)
    };
    assert_near(&grey(128, 1.0), &[188, 188, 188, 255], 3, "linear mid-grey");
    assert_near(&grey(128, 2.2), &[129, 129, 129, 255], 3, "gamma 2.2 mid-grey");
    assert_near(&grey(255, 1.0), &[255, 255, 255, 255], 1, "white");
    assert_near(&grey(0, 1.0), &[0, 0, 0, 255], 1, "black");
}

// --- ICC profiles -------------------------------------------------------------------------------

/// A saturated colour inside the P3 gamut and, computed by hand with the published P3→sRGB
/// matrix and the sRGB curve, what it is in sRGB. Grey is grey in both.
const P3_ORANGE: [u8; 4] = [200, 80, 60, 255];
const P3_ORANGE_IN_SRGB: [u8; 4] = [216, 69, 50, 255];
const GREY: [u8; 4] = [128, 128, 128, 255];

fn orange_and_grey() -> Image {
    Image::new(32, 8, |x, _| if x < 16 { P3_ORANGE } else { GREY })
}

/// Runs `tagged` and `untagged` (the same pixels without a profile) and checks the tagged one was
/// converted from P3 and the untagged one left alone.
#[track_caller]
fn check_p3(tagged: &[u8], untagged: &[u8], tolerance: u8, what: &str) {
    assert!(imaging::probe(tagged).unwrap().has_icc, "{what}: test input has no profile");
    for format in ["png", "jpeg", "webp"] {
        let query = format!("width=32&format={format}&quality=95");
        let converted = decode_output(&run(tagged, &query));
        let plain = decode_output(&run(untagged, &query));
        let what = format!("{what} → {format}");
        check_bands(&converted, &[P3_ORANGE_IN_SRGB, GREY], tolerance, &format!("{what}, tagged"));
        check_bands(&plain, &[P3_ORANGE, GREY], tolerance, &format!("{what}, untagged"));
        let (c, p) = (converted.at(8, 4), plain.at(8, 4));
        assert!(c[0] > p[0] + 8 && c[1] + 6 < p[1], "{what}: P3 orange {c:?} is not more saturated than {p:?}");
    }
}

#[test]
fn p3_png_is_converted_to_srgb() {
    let img = orange_and_grey();
    check_p3(&png_with_icc(&img, &display_p3()), &png(&img), 4, "P3 RGB PNG");
}

#[test]
fn p3_png_with_alpha_is_converted_to_srgb() {
    let img = orange_and_grey();
    let icc = display_p3();
    let tagged = png_rgba_with(&img, |info| info.icc_profile = Some(icc.into()));
    check_p3(&tagged, &png_rgba_with(&img, |_| {}), 4, "P3 RGBA PNG");
}

#[test]
fn p3_jpeg_is_converted_to_srgb() {
    let img = orange_and_grey();
    let tagged = jpeg_with(&img, &JpegOptions { icc: Some(display_p3()), ..JpegOptions::default() });
    check_p3(&tagged, &jpeg(&img), 8, "P3 JPEG");
}

#[test]
fn p3_webp_is_converted_to_srgb() {
    // The crate writes WebP only with its own sRGB profile, so build a P3 WebP by hand: the
    // untagged WebP with an ICCP chunk added (VP8X container, ICC flag set).
    let img = orange_and_grey();
    let untagged = webp(&img, true);
    let tagged = webp_with_icc(&untagged, &display_p3());
    check_p3(&tagged, &untagged, 4, "P3 WebP");
}

/// Wraps a simple (VP8L) WebP into a VP8X container with an ICCP chunk.
fn webp_with_icc(simple: &[u8], icc: &[u8]) -> Vec<u8> {
    assert_eq!(&simple[12..16], b"VP8L", "expected a simple lossless WebP");
    let probe = imaging::probe(simple).unwrap();
    let chunk = |fourcc: &[u8; 4], data: &[u8]| {
        let mut v = fourcc.to_vec();
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        if data.len() % 2 == 1 {
            v.push(0);
        }
        v
    };
    let mut vp8x = vec![0x20 | if probe.has_alpha { 0x10 } else { 0 }, 0, 0, 0];
    vp8x.extend_from_slice(&(probe.width - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(probe.height - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend(chunk(b"VP8X", &vp8x));
    body.extend(chunk(b"ICCP", icc));
    body.extend_from_slice(&simple[12..]);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

#[test]
fn an_unusable_profile_is_ignored() {
    let img = orange_and_grey();
    for junk in [&b"not an ICC profile"[..], &[0u8; 200][..]] {
        let out = decode_output(&run(&png_with_icc(&img, junk), "width=32"));
        check_bands(&out, &[P3_ORANGE, GREY], 0, "junk iCCP");
    }
    // An RGB profile on a grey image does not apply either: the grey is kept as it is.
    let grey: Vec<u8> = grey_bands().pixels.iter().map(|p| p[0]).collect();
    let icc = display_p3();
    let input = encode_png(64, 16, png::ColorType::Grayscale, png::BitDepth::Eight, &grey, |info| {
        info.icc_profile = Some(icc.into());
    });
    let out = decode_output(&run(&input, "width=64"));
    check_bands(&out, &expected_greys(), 0, "grey PNG with an RGB profile");
}

#[test]
fn a_mismatched_profile_does_not_stop_later_images_from_being_converted() {
    // Transforms are cached per worker thread. A CMYK JPEG that (wrongly, or hostilely) embeds an
    // RGB profile cannot use it; that failure must not be remembered for the RGB images that
    // carry the same, perfectly usable, profile afterwards on the same thread.
    let p3 = display_p3();
    let rgba_p3_png = png_rgba_with(&orange_and_grey(), |info| info.icc_profile = Some(p3.clone().into()));
    let cmyk_with_p3 =
        jpeg_cmyk(16, 16, |_, _| [255, 0, 0, 0], &JpegOptions { icc: Some(p3.clone()), ..Default::default() });
    let convert = move |first: Option<Vec<u8>>, png: Vec<u8>| {
        std::thread::spawn(move || {
            if let Some(first) = first {
                run(&first, "width=16&format=png");
            }
            decode_output(&run(&png, "width=32")).at(8, 4)
        })
        .join()
        .unwrap()
    };
    let alone = convert(None, rgba_p3_png.clone());
    assert_near(&alone, &P3_ORANGE_IN_SRGB, 4, "P3 RGBA PNG on a fresh thread");
    let after_cmyk = convert(Some(cmyk_with_p3), rgba_p3_png);
    assert_near(&after_cmyk, &P3_ORANGE_IN_SRGB, 4, "the same PNG after a CMYK JPEG with that profile");
}
