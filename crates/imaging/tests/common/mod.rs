//! Shared fixtures for the integration tests: small images made in code, encoders into every
//! input format (with the metadata real files carry), decoders for every output format, and the
//! one-line helpers the test files build their `check` functions from.
//!
//! Each test binary uses a different subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::fmt::Display;

use imaging::{ImageFormat, ImagingError, Limits, Output, ResizeSpec};
use mozjpeg::{ColorSpace, ColorSpaceExt, Compress, Decompress, Marker};

// ---------------------------------------------------------------------------------------------
// Bitmaps

/// An 8-bit RGBA bitmap: what the generators make and what every decoded output becomes.
#[derive(Clone, PartialEq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<[u8; 4]>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image({}x{})", self.width, self.height)
    }
}

impl Image {
    pub fn new(width: u32, height: u32, f: impl Fn(u32, u32) -> [u8; 4]) -> Image {
        let pixels = (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).map(|(x, y)| f(x, y)).collect();
        Image { width, height, pixels }
    }

    pub fn rgb(width: u32, height: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Image {
        Image::new(width, height, |x, y| {
            let [r, g, b] = f(x, y);
            [r, g, b, 255]
        })
    }

    pub fn solid(width: u32, height: u32, rgba: [u8; 4]) -> Image {
        Image::new(width, height, |_, _| rgba)
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    pub fn at(&self, x: u32, y: u32) -> [u8; 4] {
        assert!(x < self.width && y < self.height, "({x}, {y}) outside {}x{}", self.width, self.height);
        self.pixels[(y * self.width + x) as usize]
    }

    /// The pixel at a fraction of the width and height (0.5, 0.5 is the centre).
    pub fn at_fraction(&self, fx: f64, fy: f64) -> [u8; 4] {
        let x = ((f64::from(self.width) * fx) as u32).min(self.width - 1);
        let y = ((f64::from(self.height) * fy) as u32).min(self.height - 1);
        self.at(x, y)
    }

    pub fn is_opaque(&self) -> bool {
        self.pixels.iter().all(|p| p[3] == 255)
    }

    pub fn rgb_bytes(&self) -> Vec<u8> {
        self.pixels.iter().flat_map(|p| [p[0], p[1], p[2]]).collect()
    }

    pub fn rgba_bytes(&self) -> Vec<u8> {
        self.pixels.iter().flatten().copied().collect()
    }

    /// Rec. 601 luma of every pixel, for statistics.
    pub fn luma(&self) -> Vec<f64> {
        self.pixels
            .iter()
            .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
            .collect()
    }
}

/// A smooth, asymmetric RGB gradient: every corner a different colour.
pub fn gradient(width: u32, height: u32) -> Image {
    let (w, h) = (width.max(2) - 1, height.max(2) - 1);
    Image::rgb(width, height, |x, y| [(x * 255 / w) as u8, (y * 255 / h) as u8, (255 - (x + y) * 255 / (w + h)) as u8])
}

/// The gradient with a transparent right third and a half-transparent middle third.
pub fn gradient_with_alpha(width: u32, height: u32) -> Image {
    let g = gradient(width, height);
    Image::new(width, height, |x, y| {
        let [r, gg, b, _] = g.at(x, y);
        let a = match 3 * x / width {
            0 => 255,
            1 => 128,
            _ => 0,
        };
        [r, gg, b, a]
    })
}

/// Deterministic pseudo-random bytes (xorshift), for noise and corruption.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------------
// JPEG

/// What a test JPEG carries beyond its pixels.
#[derive(Default, Clone)]
pub struct JpegOptions {
    pub progressive: bool,
    pub icc: Option<Vec<u8>>,
    /// For CMYK input: write YCCK (Adobe transform 2) instead of plain CMYK (transform 0).
    pub ycck: bool,
    /// Extra APPn/COM markers, written after the ones libjpeg writes itself.
    pub markers: Vec<(Marker, Vec<u8>)>,
}

/// Encodes `samples` (interleaved, in `space`) at quality 95 with full-resolution chroma, so
/// colours survive well enough to be checked with a small tolerance.
pub fn encode_jpeg(space: ColorSpace, width: u32, height: u32, samples: &[u8], o: &JpegOptions) -> Vec<u8> {
    assert_eq!(samples.len(), width as usize * height as usize * space.num_components());
    let mut c = Compress::new(space);
    c.set_fastest_defaults();
    if o.ycck {
        c.set_color_space(ColorSpace::JCS_YCCK);
    }
    c.set_size(width as usize, height as usize);
    c.set_quality(95.0);
    if space == ColorSpace::JCS_RGB {
        c.set_chroma_sampling_pixel_sizes((1, 1), (1, 1));
    }
    if o.progressive {
        c.set_progressive_mode();
    }
    let mut started = c.start_compress(Vec::new()).expect("start_compress");
    if let Some(icc) = &o.icc {
        started.write_icc_profile(icc);
    }
    for (marker, data) in &o.markers {
        started.write_marker(*marker, data);
    }
    started.write_scanlines(samples).expect("write_scanlines");
    started.finish().expect("finish")
}

/// A baseline RGB JPEG of `img` (alpha ignored).
pub fn jpeg(img: &Image) -> Vec<u8> {
    jpeg_with(img, &JpegOptions::default())
}

pub fn jpeg_with(img: &Image, o: &JpegOptions) -> Vec<u8> {
    encode_jpeg(ColorSpace::JCS_RGB, img.width, img.height, &img.rgb_bytes(), o)
}

/// A one-component JPEG of the red channel of `img`.
pub fn jpeg_grey(img: &Image) -> Vec<u8> {
    let grey: Vec<u8> = img.pixels.iter().map(|p| p[0]).collect();
    encode_jpeg(ColorSpace::JCS_GRAYSCALE, img.width, img.height, &grey, &JpegOptions::default())
}

/// A four-component JPEG of ink amounts (0 = no ink, 255 = full ink), stored the way Photoshop
/// stores them: inverted, flagged by an Adobe APP14 marker.
pub fn jpeg_cmyk(width: u32, height: u32, ink: impl Fn(u32, u32) -> [u8; 4], o: &JpegOptions) -> Vec<u8> {
    let samples: Vec<u8> = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .flat_map(|(x, y)| ink(x, y).map(|v| 255 - v))
        .collect();
    let mut o = o.clone();
    // libjpeg writes the Adobe marker itself for CMYK/YCCK; add one only if it did not.
    let bytes = encode_jpeg(ColorSpace::JCS_CMYK, width, height, &samples, &o);
    if imaging::probe(&bytes).unwrap().jpeg.unwrap().adobe_transform.is_some() {
        return bytes;
    }
    let transform = if o.ycck { 2 } else { 0 };
    o.markers.push((Marker::APP(14), adobe_app14(transform)));
    encode_jpeg(ColorSpace::JCS_CMYK, width, height, &samples, &o)
}

/// The payload of an Adobe APP14 marker ("Adobe", version 100, flags, transform).
pub fn adobe_app14(transform: u8) -> Vec<u8> {
    let mut v = b"Adobe".to_vec();
    v.extend_from_slice(&[0, 100, 0, 0, 0, 0, transform]);
    v
}

/// A TIFF (big-endian) whose IFD0 holds a Make tag and the orientation tag 0x0112.
pub fn exif_tiff(orientation: u16) -> Vec<u8> {
    let mut v = b"MM\0*".to_vec();
    v.extend_from_slice(&8u32.to_be_bytes()); // IFD0 right after the header
    v.extend_from_slice(&2u16.to_be_bytes()); // two entries
                                              // 0x010F Make, ASCII, 4 bytes inline: "Test"
    v.extend_from_slice(&[0x01, 0x0F, 0, 2, 0, 0, 0, 4]);
    v.extend_from_slice(b"Tst\0");
    // 0x0112 Orientation, SHORT, count 1, value left-justified in the 4-byte field
    v.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]);
    v.extend_from_slice(&orientation.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&0u32.to_be_bytes()); // no IFD1
    v
}

/// The payload of an APP1 Exif segment.
pub fn exif_app1(orientation: u16) -> Vec<u8> {
    [&b"Exif\0\0"[..], &exif_tiff(orientation)].concat()
}

/// `jpeg` with an APP1 Exif segment holding `orientation` inserted right after the SOI.
pub fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    let payload = exif_app1(orientation);
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
    out.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// The marker codes of the segments before the first scan (0xE1 = APP1, 0xFE = COM, ...).
pub fn jpeg_markers(jpeg: &[u8]) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "not a JPEG");
    let mut markers = Vec::new();
    let mut pos = 2;
    while pos + 4 <= jpeg.len() {
        assert_eq!(jpeg[pos], 0xFF, "segment does not start with 0xFF at {pos}");
        let marker = jpeg[pos + 1];
        markers.push(marker);
        if marker == 0xDA {
            break;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        pos += 2 + len;
    }
    markers
}

pub fn decode_jpeg(bytes: &[u8]) -> Image {
    let d = Decompress::new_mem(bytes).expect("output JPEG header");
    let mut started = d.rgba().expect("output JPEG decode");
    let (w, h) = (started.width() as u32, started.height() as u32);
    let data: Vec<u8> = started.read_scanlines().expect("output JPEG scanlines");
    started.finish().expect("output JPEG finish");
    from_rgba(w, h, &data)
}

// ---------------------------------------------------------------------------------------------
// PNG

/// Encodes raw samples with `color` and `depth`; `extra` adds palette, tRNS, iCCP, eXIf, text.
pub fn encode_png(
    width: u32,
    height: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    extra: impl FnOnce(&mut png::Info<'static>),
) -> Vec<u8> {
    let mut info = png::Info::with_size(width, height);
    info.color_type = color;
    info.bit_depth = depth;
    extra(&mut info);
    let mut out = Vec::new();
    {
        let encoder = png::Encoder::with_info(&mut out, info).expect("png info");
        let mut writer = encoder.write_header().expect("png header");
        writer.write_image_data(data).expect("png data");
        writer.finish().expect("png finish");
    }
    out
}

/// An 8-bit PNG of `img`: RGB when every pixel is opaque, RGBA otherwise.
pub fn png(img: &Image) -> Vec<u8> {
    png_with(img, |_| {})
}

pub fn png_with(img: &Image, extra: impl FnOnce(&mut png::Info<'static>)) -> Vec<u8> {
    if img.is_opaque() {
        encode_png(img.width, img.height, png::ColorType::Rgb, png::BitDepth::Eight, &img.rgb_bytes(), extra)
    } else {
        png_rgba_with(img, extra)
    }
}

/// An 8-bit RGBA PNG of `img`, even when it is opaque.
pub fn png_rgba_with(img: &Image, extra: impl FnOnce(&mut png::Info<'static>)) -> Vec<u8> {
    encode_png(img.width, img.height, png::ColorType::Rgba, png::BitDepth::Eight, &img.rgba_bytes(), extra)
}

/// `img` tagged with an embedded ICC profile (iCCP).
pub fn png_with_icc(img: &Image, icc: &[u8]) -> Vec<u8> {
    let icc = icc.to_vec();
    png_with(img, move |info| info.icc_profile = Some(icc.into()))
}

/// A grey PNG of the red channel, with the alpha channel when `alpha`.
pub fn png_grey(img: &Image, alpha: bool) -> Vec<u8> {
    let (color, data): (_, Vec<u8>) = if alpha {
        (png::ColorType::GrayscaleAlpha, img.pixels.iter().flat_map(|p| [p[0], p[3]]).collect())
    } else {
        (png::ColorType::Grayscale, img.pixels.iter().map(|p| p[0]).collect())
    };
    encode_png(img.width, img.height, color, png::BitDepth::Eight, &data, |_| {})
}

/// A 16-bit RGB or RGBA PNG from 16-bit samples.
pub fn png16(width: u32, height: u32, f: impl Fn(u32, u32) -> [u16; 4], alpha: bool) -> Vec<u8> {
    let channels = if alpha { 4 } else { 3 };
    let data: Vec<u8> = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .flat_map(|(x, y)| f(x, y).into_iter().take(channels).flat_map(u16::to_be_bytes).collect::<Vec<_>>())
        .collect();
    let color = if alpha { png::ColorType::Rgba } else { png::ColorType::Rgb };
    encode_png(width, height, color, png::BitDepth::Sixteen, &data, |_| {})
}

/// An 8-bit indexed PNG: `palette` as RGBA entries (alpha goes to tRNS when any is not 255).
pub fn png_palette(width: u32, height: u32, palette: &[[u8; 4]], index: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let plte: Vec<u8> = palette.iter().flat_map(|p| [p[0], p[1], p[2]]).collect();
    let trns: Vec<u8> = palette.iter().map(|p| p[3]).collect();
    let indices: Vec<u8> =
        (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).map(|(x, y)| index(x, y)).collect();
    encode_png(width, height, png::ColorType::Indexed, png::BitDepth::Eight, &indices, |info| {
        info.palette = Some(plte.into());
        if trns.iter().any(|&a| a != 255) {
            info.trns = Some(trns.into());
        }
    })
}

/// The chunk types of a PNG, in order.
pub fn png_chunks(bytes: &[u8]) -> Vec<[u8; 4]> {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let mut chunks = Vec::new();
    let mut pos = 8;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        chunks.push(bytes[pos + 4..pos + 8].try_into().unwrap());
        pos += 12 + len;
    }
    chunks
}

pub fn decode_png(bytes: &[u8]) -> Image {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("output PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("output PNG size")];
    let frame = reader.next_frame(&mut buf).expect("output PNG data");
    let data = &buf[..frame.buffer_size()];
    let (w, h) = (frame.width, frame.height);
    let pixels = match frame.color_type {
        png::ColorType::Grayscale => data.iter().map(|&v| [v, v, v, 255]).collect(),
        png::ColorType::GrayscaleAlpha => data.chunks_exact(2).map(|p| [p[0], p[0], p[0], p[1]]).collect(),
        png::ColorType::Rgb => data.chunks_exact(3).map(|p| [p[0], p[1], p[2], 255]).collect(),
        png::ColorType::Rgba => data.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect(),
        png::ColorType::Indexed => panic!("normalize_to_color8 expands palettes"),
    };
    Image { width: w, height: h, pixels }
}

/// Whether a PNG declares its colour space: an iCCP profile or the sRGB chunk.
pub fn png_declares_colour_space(bytes: &[u8]) -> bool {
    png_chunks(bytes).iter().any(|c| c == b"iCCP" || c == b"sRGB")
}

// ---------------------------------------------------------------------------------------------
// GIF

/// A GIF with a global palette, one frame per entry of `frames` (palette indices, full screen),
/// and `transparent` as the transparent index of every frame.
pub fn gif(width: u16, height: u16, palette: &[[u8; 3]], frames: &[Vec<u8>], transparent: Option<u8>) -> Vec<u8> {
    let flat: Vec<u8> = palette.iter().flatten().copied().collect();
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, width, height, &flat).expect("gif header");
        encoder.set_repeat(gif::Repeat::Infinite).expect("gif repeat");
        for indices in frames {
            let mut frame = gif::Frame::from_indexed_pixels(width, height, indices.clone(), transparent);
            frame.delay = 10;
            encoder.write_frame(&frame).expect("gif frame");
        }
    }
    out
}

/// A one-frame GIF of `img` quantised to a 6x6x6 colour cube; pixels with alpha below 128 use a
/// transparent index. (Animations have their own makers in `animation.rs`.)
pub fn gif_of(img: &Image) -> Vec<u8> {
    let mut palette: Vec<[u8; 3]> = Vec::new();
    for r in 0..6u8 {
        for g in 0..6u8 {
            for b in 0..6u8 {
                palette.push([r * 51, g * 51, b * 51]);
            }
        }
    }
    let transparent = palette.len() as u8; // 216
    palette.push([0, 0, 0]);
    let q = |v: u8| (u16::from(v) + 25) / 51;
    let first: Vec<u8> = img
        .pixels
        .iter()
        .map(|p| if p[3] < 128 { transparent } else { (q(p[0]) * 36 + q(p[1]) * 6 + q(p[2])) as u8 })
        .collect();
    gif(img.width as u16, img.height as u16, &palette, &[first], Some(transparent))
}

// ---------------------------------------------------------------------------------------------
// WebP

/// A WebP of `img`, made by the crate itself from a PNG (lossy at quality 95, or lossless).
pub fn webp(img: &Image, lossless: bool) -> Vec<u8> {
    let query = format!("width={}&format=webp&quality=95&lossless={lossless}", img.width);
    let out = run(&png(img), &query);
    assert_eq!(out.report.format, imaging::OutputFormat::Webp);
    out.bytes
}

/// The chunk FourCCs of a WebP RIFF container, in order.
pub fn webp_chunks(bytes: &[u8]) -> Vec<[u8; 4]> {
    assert!(bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP", "not a WebP");
    let mut chunks = Vec::new();
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        chunks.push(bytes[pos..pos + 4].try_into().unwrap());
        pos += 8 + len + (len & 1);
    }
    chunks
}

/// A WebP's first frame (an animation's too: it has no partial frames, the decoder composes).
pub fn decode_webp(bytes: &[u8]) -> Image {
    if webp_chunks(bytes).contains(b"ANIM") {
        return decode_animated_webp(bytes).frames.swap_remove(0).0;
    }
    let (mut w, mut h) = (0, 0);
    // SAFETY: libwebp reads `bytes` and returns a buffer of w*h*4 bytes (or null), freed below.
    unsafe {
        let ptr = libwebp_sys::WebPDecodeRGBA(bytes.as_ptr(), bytes.len(), &mut w, &mut h);
        assert!(!ptr.is_null(), "output WebP does not decode");
        let data = std::slice::from_raw_parts(ptr, w as usize * h as usize * 4).to_vec();
        libwebp_sys::WebPFree(ptr.cast());
        from_rgba(w as u32, h as u32, &data)
    }
}

// ---------------------------------------------------------------------------------------------
// Animations, decoded: every frame composed onto the canvas, with its delay

pub struct Animation {
    /// Each frame as shown, with how long it shows (ms).
    pub frames: Vec<(Image, u32)>,
    /// WebP's convention: 0 = forever, n = n plays.
    pub plays: u32,
}

impl Animation {
    pub fn delays(&self) -> Vec<u32> {
        self.frames.iter().map(|f| f.1).collect()
    }
}

/// An animated WebP through libwebp's animation decoder (which composes the frames).
pub fn decode_animated_webp(bytes: &[u8]) -> Animation {
    use libwebp_sys as ffi;
    // SAFETY: the decoder reads `bytes`, which outlives it; every canvas it hands back is
    // copied before the next call; it is deleted at the end.
    unsafe {
        let mut options = std::mem::MaybeUninit::<ffi::WebPAnimDecoderOptions>::zeroed();
        assert!(ffi::WebPAnimDecoderOptionsInit(options.as_mut_ptr()) != 0);
        let mut options = options.assume_init();
        options.color_mode = ffi::WEBP_CSP_MODE::MODE_RGBA;
        let data = ffi::WebPData { bytes: bytes.as_ptr(), size: bytes.len() };
        let dec = ffi::WebPAnimDecoderNew(&data, &options);
        assert!(!dec.is_null(), "output WebP does not decode as an animation");
        let mut info = ffi::WebPAnimInfo::default();
        assert!(ffi::WebPAnimDecoderGetInfo(dec, &mut info) != 0);
        let (w, h) = (info.canvas_width, info.canvas_height);
        let (mut frames, mut previous) = (Vec::new(), 0);
        while ffi::WebPAnimDecoderHasMoreFrames(dec) != 0 {
            let (mut buf, mut end) = (std::ptr::null_mut(), 0);
            assert!(ffi::WebPAnimDecoderGetNext(dec, &mut buf, &mut end) != 0, "frame decodes");
            let data = std::slice::from_raw_parts(buf, w as usize * h as usize * 4);
            frames.push((from_rgba(w, h, data), (end - previous) as u32));
            previous = end;
        }
        ffi::WebPAnimDecoderDelete(dec);
        Animation { frames, plays: info.loop_count }
    }
}

/// A GIF, composed frame by frame as a browser shows it (disposal included), by the `gif`
/// crate; `plays` in WebP's convention (no NETSCAPE extension: 1; its count n: n + 1; 0: 0).
pub fn decode_gif(bytes: &[u8]) -> Animation {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options.read_info(bytes).expect("GIF header");
    let (w, h) = (u32::from(decoder.width()), u32::from(decoder.height()));
    let mut canvas = vec![[0u8; 4]; (w * h) as usize];
    let mut frames = Vec::new();
    while let Some(frame) = decoder.read_next_frame().expect("GIF frame") {
        let before = canvas.clone();
        let (l, t, fw, fh) =
            (u32::from(frame.left), u32::from(frame.top), u32::from(frame.width), u32::from(frame.height));
        let inside = |x: u32, y: u32| x < w && y < h;
        for y in 0..fh {
            for x in 0..fw {
                let s = ((y * fw + x) * 4) as usize;
                let p = [frame.buffer[s], frame.buffer[s + 1], frame.buffer[s + 2], frame.buffer[s + 3]];
                if p[3] != 0 && inside(l + x, t + y) {
                    canvas[((t + y) * w + l + x) as usize] = p;
                }
            }
        }
        frames.push((Image { width: w, height: h, pixels: canvas.clone() }, u32::from(frame.delay) * 10));
        match frame.dispose {
            gif::DisposalMethod::Background => {
                for y in t..(t + fh).min(h) {
                    for x in l..(l + fw).min(w) {
                        canvas[(y * w + x) as usize] = [0; 4];
                    }
                }
            }
            gif::DisposalMethod::Previous => canvas = before,
            _ => {}
        }
    }
    let plays = match decoder.repeat() {
        gif::Repeat::Infinite => 0,
        gif::Repeat::Finite(n) => u32::from(n) + 1,
    };
    Animation { frames, plays }
}

// ---------------------------------------------------------------------------------------------
// Running the pipeline

fn from_rgba(width: u32, height: u32, data: &[u8]) -> Image {
    assert_eq!(data.len(), width as usize * height as usize * 4);
    Image { width, height, pixels: data.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect() }
}

/// Parses `width=10&fit=cover` the way the API does (no percent-decoding needed in tests).
pub fn spec(query: &str) -> ResizeSpec {
    try_spec(query).unwrap_or_else(|e| panic!("bad test query {query:?}: {e}"))
}

pub fn try_spec(query: &str) -> Result<ResizeSpec, ImagingError> {
    ResizeSpec::from_pairs(query.split('&').filter(|s| !s.is_empty()).map(|kv| kv.split_once('=').unwrap_or((kv, ""))))
}

/// Runs the pipeline with the default limits; a failure fails the test with the error.
#[track_caller]
pub fn run(input: &[u8], query: &str) -> Output {
    match imaging::process(input, &spec(query), &Limits::default()) {
        Ok(out) => out,
        Err(e) => panic!("process({query:?}) failed: {e} ({e:?})"),
    }
}

pub fn run_with(input: &[u8], query: &str, limits: &Limits) -> Result<Output, ImagingError> {
    imaging::process(input, &spec(query), limits)
}

/// Decodes any output format to RGBA, checking that the container is the one it claims to be.
pub fn decode(bytes: &[u8]) -> Image {
    match imaging::probe(bytes).expect("output probes").format {
        ImageFormat::Jpeg => decode_jpeg(bytes),
        ImageFormat::Png => decode_png(bytes),
        ImageFormat::Webp => decode_webp(bytes),
        ImageFormat::Gif => decode_gif(bytes).frames.swap_remove(0).0,
        ImageFormat::Avif | ImageFormat::Heic => decode_heif(bytes),
    }
}

/// An AVIF or HEIC decoded by libheif's own tool, `heif-convert` (Debian's libheif-examples),
/// with its transformations (irot, imir) applied: the reference our decoding is checked against.
pub fn decode_heif(bytes: &[u8]) -> Image {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("imaging-heif-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (input, output) = (dir.join("in.heif"), dir.join("out.png"));
    std::fs::write(&input, bytes).expect("write the HEIF");
    let status = std::process::Command::new("heif-convert")
        .arg(&input)
        .arg(&output)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("heif-convert runs (apt-get install libheif-examples)");
    assert!(status.success(), "heif-convert failed");
    let png = std::fs::read(&output).expect("heif-convert's PNG");
    let _ = std::fs::remove_dir_all(&dir);
    decode_png(&png)
}

/// Decodes an output and checks it against its report: same size, same format.
#[track_caller]
pub fn decode_output(out: &Output) -> Image {
    let probe = imaging::probe(&out.bytes).expect("output probes");
    assert_eq!(probe.format.as_str(), out.report.format.as_str(), "output container vs report");
    let img = decode(&out.bytes);
    assert_eq!((img.width, img.height), (out.report.width, out.report.height), "decoded size vs report");
    assert_eq!((probe.width, probe.height), (out.report.width, out.report.height), "probed size vs report");
    assert_eq!(out.report.bytes, out.bytes.len() as u64);
    img
}

// ---------------------------------------------------------------------------------------------
// Comparing colours

/// True when every channel of `a` is within `tolerance` of `b` (compares the shorter length).
pub fn near(a: &[u8], b: &[u8], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(&x, &y)| x.abs_diff(y) <= tolerance)
}

#[track_caller]
pub fn assert_near(actual: &[u8], expected: &[u8], tolerance: u8, what: impl Display) {
    assert!(near(actual, expected, tolerance), "{what}: got {actual:?}, expected {expected:?} ± {tolerance}");
}

/// The Display P3 profile, as a phone or a Mac embeds it.
pub fn display_p3() -> Vec<u8> {
    moxcms::ColorProfile::new_display_p3().encode().expect("P3 profile encodes")
}
