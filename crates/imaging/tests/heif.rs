//! AVIF and HEIC input (issue 25): the header probe (size, orientation, bit depth, alpha, counts)
//! on real files from heif-enc (tests/fixtures, made by `make_heif.py`), the decoded pixels
//! against libheif's own `heif-convert`, and hostile files — box-size bombs, deep nesting,
//! item-count bombs, huge grids, truncations, bit flips — each a typed error in a short time.
//!
//! Needs Debian's libheif1 (decoding) and libheif-examples (`heif-convert`, the reference);
//! scripts/test.sh installs both.

mod common;

use std::time::{Duration, Instant};

use common::*;
use imaging::{ImageFormat, ImagingError, LimitExceeded, Limits, ProbeError};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const FIXTURES: [&str; 17] = [
    "rgb.avif",
    "rgb.heic",
    "alpha.avif",
    "alpha.heic",
    "deep10.avif",
    "deep12.avif",
    "deep10.heic",
    "p3.avif",
    "rot90.avif",
    "rot90.heic",
    "rot270_mirror0.avif",
    "rot270_mirror0.heic",
    "mirror1.avif",
    "mirror1.heic",
    "clap_rot90.avif",
    "clap_rot90.heic",
    "grid2x3.avif",
];

// ---- probe ----

#[test]
fn probes_size_orientation_depth_and_alpha_from_the_header() {
    // (file, format, stored width, height, EXIF orientation, bit depth, alpha)
    let expected = [
        ("rgb.avif", ImageFormat::Avif, 64, 48, 1, 8, false),
        ("rgb.heic", ImageFormat::Heic, 64, 48, 1, 8, false),
        ("alpha.avif", ImageFormat::Avif, 64, 48, 1, 8, true),
        ("alpha.heic", ImageFormat::Heic, 64, 48, 1, 8, true),
        ("deep10.avif", ImageFormat::Avif, 64, 48, 1, 10, false),
        ("deep12.avif", ImageFormat::Avif, 64, 48, 1, 12, false),
        ("deep10.heic", ImageFormat::Heic, 64, 48, 1, 10, false),
        // irot 1 is 90° anticlockwise: EXIF 8.
        ("rot90.avif", ImageFormat::Avif, 64, 48, 8, 8, false),
        ("rot90.heic", ImageFormat::Heic, 64, 48, 8, 8, false),
        // irot 3 (90° clockwise, EXIF 6), then imir 0: top-bottom, as libheif (and the 2022
        // edition of the standard, whose `mode` 0 is the old `axis` 0) reads it.
        ("rot270_mirror0.avif", ImageFormat::Avif, 64, 48, 7, 8, false),
        ("rot270_mirror0.heic", ImageFormat::Heic, 64, 48, 7, 8, false),
        // imir 1: left-right, EXIF 2.
        ("mirror1.avif", ImageFormat::Avif, 64, 48, 2, 8, false),
        ("mirror1.heic", ImageFormat::Heic, 64, 48, 2, 8, false),
        // clap 41x31 (the stored size is the crop's), then irot 1.
        ("clap_rot90.avif", ImageFormat::Avif, 41, 31, 8, 8, false),
        ("clap_rot90.heic", ImageFormat::Heic, 41, 31, 8, 8, false),
    ];
    for (name, format, w, h, orientation, bits, alpha) in expected {
        let p = imaging::probe(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (p.format, p.width, p.height, p.orientation, p.bit_depth, p.has_alpha, p.frames),
            (format, w, h, orientation, bits, alpha, 1),
            "{name}"
        );
        assert!(p.complete, "{name}");
        let heif = p.heif.as_ref().expect("HEIF details");
        // heif-enc writes HEIC as a grid of one 64x64 tile (x265's smallest CTU multiple)
        // cropped to 64x48; AVIF as one image.
        let tile = if format == ImageFormat::Heic { (64, 64) } else { (64, 48) };
        assert_eq!((heif.tiles, heif.tile_width, heif.tile_height), (1, tile.0, tile.1), "{name}");
        assert_eq!(heif.coded_pixels, u64::from(tile.0 * tile.1), "{name}");
        assert!(heif.items > u32::from(alpha), "{name}: {} items", heif.items);
    }
    // A grid of 2 x 3 tiles of 64x48 cropped to 180x90.
    let p = imaging::probe(&fixture("grid2x3.avif")).unwrap();
    assert_eq!((p.format, p.width, p.height, p.orientation), (ImageFormat::Avif, 180, 90, 1));
    let heif = p.heif.unwrap();
    assert_eq!((heif.tiles, heif.tile_width, heif.tile_height, heif.coded_pixels), (6, 64, 48, 6 * 64 * 48));
    assert_eq!(heif.items, 7);
    assert_eq!(ImageFormat::Avif.mime(), "image/avif");
    assert_eq!(ImageFormat::Heic.mime(), "image/heic");
}

// ---- decode ----

/// Mean absolute difference over every channel of two equally sized images.
fn mean_abs_diff(a: &Image, b: &Image) -> f64 {
    assert_eq!(a.size(), b.size());
    let sum: u64 = a.rgba_bytes().iter().zip(b.rgba_bytes()).map(|(x, y)| u64::from(x.abs_diff(y))).sum();
    sum as f64 / (a.pixels.len() * 4) as f64
}

#[test]
fn decoded_pixels_match_heif_convert_with_orientation_and_alpha() {
    for name in FIXTURES.iter().filter(|n| **n != "p3.avif") {
        let input = fixture(name);
        let reference = decode_heif(&input);
        let (w, h) = reference.size();
        let out = run(&input, &format!("width={w}&height={h}&fit=fill&format=png"));
        assert_eq!(out.report.input_format.as_str(), &name[name.len() - 4..], "{name}");
        assert_eq!((out.report.input_width, out.report.input_height), (w, h), "{name}: upright size");
        let ours = decode_output(&out);
        let diff = mean_abs_diff(&ours, &reference);
        assert!(diff < 1.5, "{name}: mean abs diff {diff} from heif-convert");
        let alpha = name.starts_with("alpha");
        assert_eq!(!ours.is_opaque(), alpha, "{name}: alpha kept");
        // The white block of the source's top-left corner is where heif-convert puts it.
        let corner = |img: &Image| {
            [(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)]
                .map(|(x, y)| img.at(x, y)[1] > 200 && img.at(x, y)[2] > 200)
        };
        assert_eq!(corner(&ours), corner(&reference), "{name}: orientation");
    }
}

#[test]
fn deep_sources_decode_to_eight_bits_close_to_the_reference() {
    for name in ["deep10.avif", "deep12.avif", "deep10.heic"] {
        let input = fixture(name);
        let out = run(&input, "width=64&format=png");
        let diff = mean_abs_diff(&decode_output(&out), &decode_heif(&input));
        assert!(diff < 1.5, "{name}: {diff}");
    }
}

#[test]
fn a_display_p3_nclx_image_is_converted_to_srgb() {
    let input = fixture("p3.avif");
    let heif = imaging::probe(&input).unwrap().heif.unwrap();
    assert_eq!(heif.nclx.map(|n| [n[0], n[1]]), Some([12, 13]), "P3 primaries, sRGB transfer");
    // heif-convert gives the P3 numbers as they are; the reference converts them to sRGB.
    let raw = decode_heif(&input);
    let p3 = moxcms::ColorProfile::new_display_p3();
    let transform = p3
        .create_transform_8bit(
            moxcms::Layout::Rgba,
            &moxcms::ColorProfile::new_srgb(),
            moxcms::Layout::Rgba,
            moxcms::TransformOptions::default(),
        )
        .unwrap();
    let mut converted = vec![0u8; raw.pixels.len() * 4];
    transform.transform(&raw.rgba_bytes(), &mut converted).unwrap();
    let reference = Image {
        width: raw.width,
        height: raw.height,
        pixels: converted.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect(),
    };
    let ours = decode_output(&run(&input, "width=64&format=png"));
    let (to_reference, to_raw) = (mean_abs_diff(&ours, &reference), mean_abs_diff(&ours, &raw));
    assert!(to_reference < 1.5, "{to_reference} from the sRGB reference");
    assert!(to_raw > to_reference + 1.0, "not converted: {to_raw} from the P3 numbers, {to_reference} from sRGB");
}

#[test]
fn shrink_on_load_keeps_the_picture() {
    let input = fixture("rgb.avif");
    let reference = decode_heif(&input);
    let out = run(&input, "width=16&format=png");
    assert_eq!(out.report.decode_scale, 2);
    let small = decode_output(&out);
    assert_eq!(small.size(), (16, 12));
    // The centre pixel's colour (the picture is a smooth gradient there).
    assert_near(&small.at(8, 6)[..3], &reference.at(32, 24)[..3], 12, "centre");
}

#[test]
fn avif_and_heic_become_jpeg_unless_asked_otherwise() {
    for name in ["rgb.avif", "rgb.heic"] {
        let out = run(&fixture(name), "width=32");
        assert_eq!(out.report.format.as_str(), "jpeg", "{name}");
        assert_eq!((out.report.width, out.report.height), (32, 24));
        let out = run(&fixture(name), "width=32&format=webp");
        assert_eq!(decode_output(&out).size(), (32, 24));
    }
}

// ---- limits ----

#[test]
fn decoder_memory_and_pixel_limits_apply_before_decoding() {
    let input = fixture("rgb.heic");
    let tight = Limits { max_input_pixels: 64 * 48 - 1, ..Limits::default() };
    assert!(matches!(
        run_with(&input, "width=10", &tight),
        Err(ImagingError::LimitExceeded(LimitExceeded::InputPixels { .. }))
    ));
    let tight = Limits { max_decoder_memory: 10_000, ..Limits::default() };
    assert!(matches!(
        run_with(&input, "width=10", &tight),
        Err(ImagingError::LimitExceeded(LimitExceeded::DecoderMemory { .. }))
    ));
}

// ---- hostile input ----

fn bx(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

fn fullbox(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut c = ((u32::from(version) << 24) | flags).to_be_bytes().to_vec();
    c.extend_from_slice(body);
    bx(kind, &c)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn infe(id: u16, kind: &[u8; 4]) -> Vec<u8> {
    fullbox(b"infe", 2, 0, &cat(&[id.to_be_bytes().to_vec(), vec![0, 0], kind.to_vec(), vec![0]]))
}

fn ispe(w: u32, h: u32) -> Vec<u8> {
    fullbox(b"ispe", 0, 0, &cat(&[w.to_be_bytes().to_vec(), h.to_be_bytes().to_vec()]))
}

/// A HEIF whose primary item 1 is `primary_type`, with the given iinf entries, iref children,
/// properties (ipco order) and ipma entries (item, property indices); item 1's data is the
/// 12-byte `idat`, every other item's 4 bytes of mdat.
struct Heif {
    infes: Vec<Vec<u8>>,
    iinf_count: Option<u32>,
    irefs: Vec<Vec<u8>>,
    props: Vec<Vec<u8>>,
    ipma: Vec<(u32, Vec<u8>)>,
    idat: Vec<u8>,
    items: Vec<u32>,
}

impl Heif {
    fn still(w: u32, h: u32) -> Heif {
        Heif {
            infes: vec![infe(1, b"av01")],
            iinf_count: None,
            irefs: vec![],
            props: vec![ispe(w, h)],
            ipma: vec![(1, vec![1])],
            idat: vec![],
            items: vec![1],
        }
    }

    fn grid(rows: u8, cols: u8, out: (u32, u32), tile: (u32, u32)) -> Heif {
        let tiles: Vec<u32> = (2..2 + u32::from(rows) * u32::from(cols)).collect();
        let mut infes = vec![infe(1, b"grid")];
        infes.extend(tiles.iter().map(|&t| infe(t as u16, b"av01")));
        let mut dimg = 1u32.to_be_bytes().to_vec();
        dimg.extend_from_slice(&(tiles.len() as u16).to_be_bytes());
        for t in &tiles {
            dimg.extend_from_slice(&t.to_be_bytes());
        }
        let mut payload = vec![0, 1, rows - 1, cols - 1];
        payload.extend_from_slice(&out.0.to_be_bytes());
        payload.extend_from_slice(&out.1.to_be_bytes());
        let mut ipma = vec![(1, vec![1])];
        ipma.extend(tiles.iter().map(|&t| (t, vec![2])));
        let mut items = vec![1];
        items.extend(&tiles);
        Heif {
            infes,
            iinf_count: None,
            irefs: vec![bx(b"dimg", &dimg)],
            props: vec![ispe(out.0, out.1), ispe(tile.0, tile.1)],
            ipma,
            idat: payload,
            items,
        }
    }

    fn build(&self) -> Vec<u8> {
        let ftyp = bx(b"ftyp", b"avif\0\0\0\0mif1avif");
        let count = self.iinf_count.unwrap_or(self.infes.len() as u32);
        let iinf = fullbox(b"iinf", 1, 0, &cat(&[count.to_be_bytes().to_vec(), self.infes.concat()]));
        let iref = fullbox(b"iref", 1, 0, &self.irefs.concat());
        let ipco = bx(b"ipco", &self.props.concat());
        let mut ipma = (self.ipma.len() as u32).to_be_bytes().to_vec();
        for (item, props) in &self.ipma {
            ipma.extend_from_slice(&item.to_be_bytes());
            ipma.push(props.len() as u8);
            ipma.extend(props.iter().map(|p| p | 0x80));
        }
        let iprp = bx(b"iprp", &cat(&[ipco, fullbox(b"ipma", 1, 0, &ipma)]));
        let pitm = fullbox(b"pitm", 0, 0, &1u16.to_be_bytes());
        let hdlr = fullbox(b"hdlr", 0, 0, b"\0\0\0\0pict\0\0\0\0\0\0\0\0\0\0\0\0\0");
        let idat = bx(b"idat", &self.idat);
        // iloc version 1 (construction methods), 4-byte offsets and lengths, 32-bit ids via v2.
        let iloc_len = 4 + 2 + 4 + self.items.len() * (4 + 2 + 2 + 2 + 8) + 8;
        let meta_len = 12 + hdlr.len() + pitm.len() + iinf.len() + iref.len() + iprp.len() + idat.len() + iloc_len;
        let mdat_start = (ftyp.len() + meta_len + 8) as u32;
        let mut iloc = vec![0x44, 0x00];
        iloc.extend_from_slice(&(self.items.len() as u32).to_be_bytes());
        for (i, &item) in self.items.iter().enumerate() {
            iloc.extend_from_slice(&item.to_be_bytes());
            let (method, off, len) = if item == 1 && !self.idat.is_empty() {
                (1u16, 0, self.idat.len() as u32)
            } else {
                (0, mdat_start + 4 * i as u32, 4)
            };
            iloc.extend_from_slice(&method.to_be_bytes());
            iloc.extend_from_slice(&[0, 0, 0, 1]);
            iloc.extend_from_slice(&off.to_be_bytes());
            iloc.extend_from_slice(&len.to_be_bytes());
        }
        let iloc = fullbox(b"iloc", 2, 0, &iloc);
        let meta = fullbox(b"meta", 0, 0, &cat(&[hdlr, pitm, iloc, iinf, iref, iprp, idat]));
        assert_eq!(meta.len(), meta_len);
        cat(&[ftyp, meta, bx(b"mdat", &vec![0xAA; 4 * self.items.len()])])
    }
}

/// Probes and processes `input`, which must fail with a 4xx (or probe fine) within 2 s.
#[track_caller]
fn hostile(name: &str, input: &[u8]) -> Result<imaging::Probe, ProbeError> {
    let start = Instant::now();
    let probed = imaging::probe(input);
    if let Ok(p) = &probed {
        assert!(p.width > 0 && p.height > 0 && p.frames > 0 && (1..=8).contains(&p.orientation), "{name}");
    }
    match imaging::process(input, &spec("width=32"), &Limits::default()) {
        Ok(_) => {}
        Err(e) => assert!((400..500).contains(&e.http_status()), "{name}: {e} ({e:?})"),
    }
    assert!(start.elapsed() < Duration::from_secs(2), "{name}: took {:?}", start.elapsed());
    probed
}

#[test]
fn the_hand_built_files_are_valid() {
    let p = imaging::probe(&Heif::still(300, 200).build()).unwrap();
    assert_eq!((p.format, p.width, p.height, p.complete), (ImageFormat::Avif, 300, 200, true));
    let p = imaging::probe(&Heif::grid(2, 3, (1000, 600), (400, 300)).build()).unwrap();
    assert_eq!((p.width, p.height), (1000, 600));
    let heif = p.heif.unwrap();
    assert_eq!((heif.tiles, heif.coded_pixels), (6, 6 * 400 * 300));
}

#[test]
fn box_sizes_past_the_end_are_refused() {
    let mut f = Heif::still(10, 10).build();
    // meta's size (at 24: after the 24-byte ftyp) past the end of the file.
    f[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(hostile("meta past EOF", &f), Err(ProbeError::Truncated(_))));
    // A child of meta (hdlr, at 36) larger than meta.
    let mut f = Heif::still(10, 10).build();
    f[36..40].copy_from_slice(&0x0100_0000u32.to_be_bytes());
    assert!(matches!(hostile("child past its container", &f), Err(ProbeError::Corrupt(_))));
}

#[test]
fn size_zero_and_largesize_bombs_are_refused() {
    // size 1 with a 64-bit size of 2^63 for meta: the file does not hold it.
    let f = Heif::still(10, 10).build();
    let mut bomb = f[..24].to_vec();
    bomb.extend_from_slice(&1u32.to_be_bytes());
    bomb.extend_from_slice(b"meta");
    bomb.extend_from_slice(&(1u64 << 63).to_be_bytes());
    bomb.extend_from_slice(&f[32..]);
    assert!(matches!(hostile("largesize", &bomb), Err(ProbeError::Truncated(_))));
    // largesize smaller than its own header.
    let mut small = bomb.clone();
    small[32..40].copy_from_slice(&8u64.to_be_bytes());
    assert!(matches!(hostile("tiny largesize", &small), Err(ProbeError::Corrupt(_))));
    // Size 0 (to the end) for a child: it swallows its siblings, so the item boxes are gone.
    let mut zero = Heif::still(10, 10).build();
    zero[36..40].copy_from_slice(&0u32.to_be_bytes());
    assert!(hostile("size 0 child", &zero).is_err());
    // Sizes 2..7 are smaller than a header.
    let mut seven = Heif::still(10, 10).build();
    seven[36..40].copy_from_slice(&7u32.to_be_bytes());
    assert!(matches!(hostile("size 7", &seven), Err(ProbeError::Corrupt(_))));
}

#[test]
fn a_hundred_thousand_nested_or_sibling_boxes_are_cheap() {
    let ftyp = bx(b"ftyp", b"avif\0\0\0\0mif1avif");
    // 100k boxes, each the only child of the one before (meta, then iprp all the way down).
    let depth = 100_000usize;
    let mut nested = Vec::with_capacity(depth * 8 + 64);
    for i in 0..depth {
        let size = ((depth - i) * 8 + if i == 0 { 4 } else { 0 }) as u32;
        nested.extend_from_slice(&size.to_be_bytes());
        nested.extend_from_slice(if i == 0 { b"meta" } else { b"iprp" });
        if i == 0 {
            nested.extend_from_slice(&[0; 4]);
        }
    }
    assert!(hostile("nested", &cat(&[ftyp.clone(), nested])).is_err());
    // 100k empty boxes side by side inside meta.
    let siblings = fullbox(b"meta", 0, 0, &b"\0\0\0\x08free".repeat(100_000));
    assert!(hostile("siblings", &cat(&[ftyp, siblings])).is_err());
}

#[test]
fn item_count_bombs_are_refused() {
    let mut f = Heif::still(10, 10);
    f.iinf_count = Some(u32::MAX);
    assert!(matches!(hostile("iinf 2^32-1", &f.build()), Err(ProbeError::Corrupt(_))));
    f.iinf_count = Some(5_000);
    assert!(matches!(hostile("iinf declares more than it holds", &f.build()), Err(ProbeError::Corrupt(_))));
    // An ipma declaring 2^32-1 entries.
    let mut f = Heif::still(10, 10).build();
    let at = f.windows(4).position(|w| w == b"ipma").unwrap() + 8;
    f[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(hostile("ipma 2^32-1", &f), Err(ProbeError::Corrupt(_))));
    // An iloc declaring 2^32-1 items.
    let mut f = Heif::still(10, 10).build();
    let at = f.windows(4).position(|w| w == b"iloc").unwrap() + 10;
    f[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(hostile("iloc 2^32-1", &f), Err(ProbeError::Corrupt(_))));
}

#[test]
fn huge_declared_grids_are_refused_before_decoding() {
    // The most tiles a grid can declare (256 x 256) over a 65535 x 65535 canvas, with only one
    // tile really present: the dimg count disagrees.
    let mut g = Heif::grid(1, 1, (65535, 65535), (65535, 65535));
    g.idat[2] = 255;
    g.idat[3] = 255;
    assert!(matches!(hostile("256x256 tiles declared", &g.build()), Err(ProbeError::Corrupt(_))));
    // 2 x 2 tiles of 65535 x 65535: probes, refused as too many pixels (413) before decoding.
    let g = Heif::grid(2, 2, (65535, 65535), (65535, 65535)).build();
    assert!(hostile("65535^2 grid", &g).is_ok());
    let err = imaging::process(&g, &spec("width=32"), &Limits::default()).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");
    // A 1 x 1 output from 16 x 16 tiles of 16384 x 16384: 64 GP to decode for one pixel.
    let g = Heif::grid(16, 16, (1, 1), (16384, 16384)).build();
    let p = hostile("overhanging tiles", &g).unwrap();
    assert_eq!(p.heif.unwrap().coded_pixels, 256 * 16384 * 16384);
    let err = imaging::process(&g, &spec("width=1"), &Limits::default()).unwrap_err();
    assert!(matches!(err, ImagingError::LimitExceeded(LimitExceeded::DecoderMemory { .. })), "{err}");
    // A thousand 1-pixel tiles: the per-tile cost is counted.
    let g = Heif::grid(40, 40, (40, 40), (1, 1)).build();
    let err = imaging::process(&g, &spec("width=1"), &Limits::default()).unwrap_err();
    assert!(matches!(err, ImagingError::LimitExceeded(LimitExceeded::DecoderMemory { .. })), "{err}");
    // Tiles that do not cover the canvas; 32-bit output sizes of 2^32 - 1.
    let g = Heif::grid(2, 2, (1000, 1000), (100, 100)).build();
    assert!(matches!(hostile("gaps", &g), Err(ProbeError::Corrupt(_))));
    let g = Heif::grid(1, 1, (u32::MAX, u32::MAX), (u32::MAX, u32::MAX)).build();
    assert!(hostile("4G x 4G", &g).is_ok());
}

#[test]
fn every_64th_truncation_is_a_typed_error_or_a_probe() {
    for name in FIXTURES {
        let f = fixture(name);
        for n in (0..f.len()).step_by(64).chain([f.len() - 1]) {
            if let Ok(p) = hostile(&format!("{name}[..{n}]"), &f[..n]) {
                assert!(!p.complete, "{name}[..{n}] claims completeness");
            }
        }
        // Every prefix probes safely (the probe alone is cheap).
        for n in 0..f.len() {
            let _ = imaging::probe(&f[..n]);
        }
    }
}

#[test]
fn random_bit_flips_never_panic() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let files: Vec<Vec<u8>> = FIXTURES.iter().map(|n| fixture(n)).collect();
    let start = Instant::now();
    for i in 0..20_000 {
        let mut f = files[i % files.len()].clone();
        for _ in 0..1 + rng.next() % 4 {
            let at = (rng.next() as usize) % f.len();
            f[at] ^= 1 << (rng.next() % 8);
        }
        if let Ok(p) = imaging::probe(&f) {
            assert!(p.width > 0 && p.height > 0 && p.frames > 0 && (1..=8).contains(&p.orientation));
        }
        // Decoding too, for some: libheif sees the flipped files the probe lets through.
        if i % 50 == 0 {
            let _ = hostile(&format!("flip {i}"), &f);
        }
    }
    assert!(start.elapsed() < Duration::from_secs(60), "{:?}", start.elapsed());
}

#[test]
fn a_sequence_brand_counts_frames_from_its_track() {
    // avis with a moov whose track has 5000 samples (over the 1000 frames limit): 413.
    let still = Heif::still(16, 16).build();
    let ftyp_len = 24;
    let mut f = bx(b"ftyp", b"avis\0\0\0\0avismif1");
    let stsz = fullbox(b"stsz", 0, 0, &cat(&[0u32.to_be_bytes().to_vec(), 5000u32.to_be_bytes().to_vec()]));
    let moov = bx(b"moov", &bx(b"trak", &bx(b"mdia", &bx(b"minf", &bx(b"stbl", &stsz)))));
    // The still's meta and mdat after the new ftyp (same length), then the moov.
    f.extend_from_slice(&still[ftyp_len..]);
    f.extend_from_slice(&moov);
    let p = imaging::probe(&f).unwrap();
    assert_eq!(p.frames, 5000);
    assert!(p.heif.unwrap().sequence);
    let err = imaging::process(&f, &spec("width=8"), &Limits::default()).unwrap_err();
    assert!(matches!(err, ImagingError::LimitExceeded(LimitExceeded::Frames { .. })), "{err}");
}
