//! AVIF, with one of two encoders, chosen once per process ([`encoder`]):
//! - **libaom through the system's libheif** (Debian's `libheif1`, which brings `libaom3`),
//!   opened with `dlopen` (`libheif.rs`): sharp's own encoder (libvips → libheif → aom), and
//!   the faster at equal bytes and SSIM (docs/benchmarks.md, "AVIF encoders");
//! - **rav1e through ravif**, pure Rust and built in (the `avif` feature): where libheif or its
//!   AV1 encoder is missing, so `resizer dev` still writes AVIF with nothing but the toolchain.
//!
//! Both: 8-bit 4:4:4 (sharp's default too), alpha as an auxiliary image with quality halfway
//! from the colour's to 100 (edges show compression more than colour does), one thread per
//! conversion on the caller's thread (the dispatcher's lanes and the CPU metering assume it),
//! effort on sharp's scale (libaom's speed is 9 − effort, rav1e's 10 − effort). The colour is
//! signalled as sRGB, which the pixels are by then; no ICC box is written.

use super::EncodeOptions;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;

/// The encoders an AVIF can come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvifEncoder {
    /// libaom, through libheif.
    Aom,
    /// rav1e, through ravif (the `avif` feature).
    Rav1e,
}

/// Names the encoder to use (`aom` or `rav1e`) instead of the choice below; read once.
const ENCODER_VAR: &str = "RESIZER_AVIF_ENCODER";

/// The encoder this process uses: [`ENCODER_VAR`] when set to one that is here, else libaom
/// when libheif has an AV1 encoder, else rav1e when built in; None: no AVIF output.
pub fn encoder() -> Option<AvifEncoder> {
    static CHOSEN: std::sync::OnceLock<Option<AvifEncoder>> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let aom = crate::libheif::av1_encoder_name().is_some().then_some(AvifEncoder::Aom);
        let rav1e = cfg!(feature = "avif").then_some(AvifEncoder::Rav1e);
        match std::env::var(ENCODER_VAR).ok().as_deref() {
            Some("rav1e") => rav1e.or(aom),
            Some("aom") => aom.or(rav1e),
            _ => aom.or(rav1e),
        }
    })
}

/// What [`encoder`] chose, in words for the log and `/readyz` (which every node announcement
/// carries, so it is made once): "libaom (AOMedia Project AV1 Encoder v3.6.0) through
/// libheif", "rav1e (built in)" or "none".
pub fn encoder_description() -> &'static str {
    static DESCRIPTION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DESCRIPTION.get_or_init(|| match encoder() {
        Some(AvifEncoder::Aom) => {
            let name = crate::libheif::av1_encoder_name().unwrap_or("AV1 encoder");
            let tune = if tuned_for_images() { ", tune iq" } else { "" };
            let note = crate::libheif::libaom().and_then(|a| a.not_loaded.as_deref()).map(|n| format!("; {n}"));
            format!("libaom ({name}{tune}) through libheif{}", note.unwrap_or_default())
        }
        Some(AvifEncoder::Rav1e) => "rav1e (built in)".into(),
        None => "none".into(),
    })
}

/// Whether libaom's still-image tuning is used: `tune=iq` ("image quality"), stable from libaom
/// 3.13, which libheif ≥ 1.20 (and so sharp) picks by itself for opaque stills. On the photos at
/// 512 px it needs 11 % fewer bytes than the SSIM tuning at equal SSIM (docs/benchmarks.md,
/// "Tuned for images"). With an older libaom (Debian 12's 3.6) it is not there; `RESIZER_LIBAOM`
/// can name a newer one (`libheif.rs`).
pub fn tuned_for_images() -> bool {
    const FIRST: u32 = 3 << 16 | 13 << 8;
    static TUNED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TUNED.get_or_init(|| {
        crate::libheif::libaom().and_then(|a| a.version).is_some_and(|v| v >= FIRST) && takes_aom_options()
    })
}

/// Whether libheif passes `aom:` options on to libaom (built with `aom_codec_set_option`, libaom
/// 3.0+): without that, asking for the tuning would fail every AVIF, so it is not asked for.
fn takes_aom_options() -> bool {
    crate::libheif::with_av1_encoder(|lib, encoder| {
        // SAFETY: the encoder is live; name and value are NUL-terminated and only read.
        crate::libheif::check(unsafe { (lib.set_parameter_string)(encoder, c"aom:tune".as_ptr(), c"iq".as_ptr()) })
            .is_ok()
    })
    .unwrap_or(false)
}

/// libaom's quantizer for each quality 0..=100 under `tune=iq`: libavif's table, which libheif
/// ≥ 1.20 copied, so that a quality means what it means to them. It bends the linear
/// `(100 − q) × 63 / 100` that serves the SSIM tuning, because the image tuning spends more
/// bytes per quantizer step at the high qualities.
const IQ_QUANTIZER: [u8; 101] = [
    63, 63, 63, 62, 62, 62, 61, 61, 60, 60, // 0–9
    59, 59, 58, 58, 57, 57, 56, 56, 55, 55, // 10–19
    54, 54, 53, 53, 52, 52, 51, 51, 50, 50, // 20–29
    49, 49, 48, 48, 47, 46, 46, 45, 45, 44, // 30–39
    43, 43, 42, 42, 41, 40, 40, 39, 39, 38, // 40–49
    37, 37, 36, 36, 35, 34, 33, 33, 32, 31, // 50–59
    30, 30, 29, 28, 27, 27, 26, 25, 24, 24, // 60–69
    23, 22, 21, 21, 20, 19, 18, 18, 17, 16, // 70–79
    15, 15, 14, 13, 12, 12, 11, 10, 9, 9, // 80–89
    8, 7, 6, 6, 5, 4, 3, 3, 2, 1, // 90–99
    0,
];

/// libaom's quality when a request names none: where its AVIF at the default effort matches
/// WebP's at [`super::DEFAULT_QUALITY`] in bytes and SSIM on the 512-px photos (64.7 there;
/// docs/benchmarks.md, "After the switch"). At 80 libaom's file is 1.5× WebP's: libheif's
/// scale (sharp's) is not JPEG's.
const AOM_DEFAULT_QUALITY: u8 = 65;

/// The same under the image tuning and its quantizer table ([`IQ_QUANTIZER`]): where the AVIF
/// of the photos at 512 px reaches WebP's SSIM at [`super::DEFAULT_QUALITY`]
/// (docs/benchmarks.md, "Tuned for images").
const AOM_IQ_DEFAULT_QUALITY: u8 = 67;

/// The quality an AVIF gets when the request names none: the encoder's counterpart of the other
/// formats' [`super::DEFAULT_QUALITY`]. rav1e's scale is calibrated against JPEG's, so it keeps
/// that number.
pub fn default_quality() -> u8 {
    match encoder() {
        Some(AvifEncoder::Aom) if tuned_for_images() => AOM_IQ_DEFAULT_QUALITY,
        Some(AvifEncoder::Aom) => AOM_DEFAULT_QUALITY,
        _ => super::DEFAULT_QUALITY,
    }
}

pub fn encode(b: &Bitmap, o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    match encoder() {
        Some(chosen) => encode_with(chosen, b, o),
        None => Err(ImagingError::Unsupported(
            "AVIF output needs libheif (apt-get install libheif1) or a build with imaging's `avif` feature".into(),
        )),
    }
}

/// Encodes with `chosen`, which must be here ([`encoder`] says which are).
pub fn encode_with(chosen: AvifEncoder, b: &Bitmap, o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    if matches!(b.layout, Layout::Gray | Layout::GrayAlpha) {
        // Both take RGB(A) only; grey comes out as equal channels, which 4:4:4 stores cheaply.
        return encode_with(chosen, &crate::colour::expand_gray(b.clone()), o);
    }
    if !matches!(b.layout, Layout::Rgb | Layout::Rgba) {
        return Err(ImagingError::Unsupported(format!("AVIF from {:?} pixels", b.layout)));
    }
    match chosen {
        AvifEncoder::Aom => aom(b, o),
        AvifEncoder::Rav1e => rav1e(b, o),
    }
}

/// The quality of the alpha plane for colour quality `quality` (cavif's rule).
fn alpha_quality(quality: u8) -> u8 {
    ((u16::from(quality) + 100) / 2) as u8
}

/// libaom through libheif. libheif converts the RGB(A) to YCbCr 4:4:4 (BT.601 matrix, full
/// range, signalled as sRGB in an `nclx` box) and writes the container.
fn aom(b: &Bitmap, o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    use std::ffi::c_int;

    use crate::libheif::{
        self, ContextGuard, EncoderGuard, ImageGuard, Writer, CHANNEL_INTERLEAVED, CHROMA_INTERLEAVED_RGB,
        CHROMA_INTERLEAVED_RGBA, COLORSPACE_RGB, COMPRESSION_AV1,
    };
    use crate::spec::MAX_EFFORT;

    let lib = libheif::lib().ok_or_else(|| ImagingError::Unsupported("AVIF through libaom needs libheif".into()))?;
    let failed = |what: &'static str| move |m: String| ImagingError::Internal(format!("AVIF: {what}: {m}"));
    let (Ok(width), Ok(height)) = (c_int::try_from(b.width), c_int::try_from(b.height)) else {
        return Err(ImagingError::Internal("AVIF: image too large".into()));
    };
    let quality = c_int::from(o.quality.clamp(1, 100));
    let speed = c_int::from(MAX_EFFORT - o.effort.min(MAX_EFFORT));
    // SAFETY: plain allocation; null is checked.
    let ctx = ContextGuard(lib, unsafe { (lib.context_alloc)() });
    if ctx.1.is_null() {
        return Err(ImagingError::Internal("AVIF: libheif could not allocate a context".into()));
    }
    let mut encoder = std::ptr::null_mut();
    // SAFETY: ctx is live; the encoder is written on success and released by its guard (before
    // the context, declared earlier).
    libheif::check(unsafe { (lib.encoder_for_format)(ctx.1, COMPRESSION_AV1, &mut encoder) })
        .map_err(failed("no AV1 encoder"))?;
    if encoder.is_null() {
        return Err(ImagingError::Internal("AVIF: libheif has no AV1 encoder".into()));
    }
    let encoder = EncoderGuard(lib, encoder);
    let alpha = alpha_quality(o.quality.clamp(1, 100));
    // SAFETY: the encoder is live; names and values are NUL-terminated and only read.
    unsafe {
        libheif::check((lib.set_lossy_quality)(encoder.1, quality)).map_err(failed("quality"))?;
        libheif::check((lib.set_parameter_integer)(encoder.1, c"speed".as_ptr(), speed)).map_err(failed("speed"))?;
        // One thread: libheif's default for aom is several.
        libheif::check((lib.set_parameter_integer)(encoder.1, c"threads".as_ptr(), 1)).map_err(failed("threads"))?;
        libheif::check((lib.set_parameter_string)(encoder.1, c"chroma".as_ptr(), c"444".as_ptr()))
            .map_err(failed("chroma"))?;
        libheif::check((lib.set_parameter_integer)(encoder.1, c"alpha-quality".as_ptr(), c_int::from(alpha)))
            .map_err(failed("alpha quality"))?;
        // libheif 1.15 hands `aom:` options to libaom after its own settings, for the colour and
        // the alpha image alike; the quantizer meant for the colour would then also be the
        // alpha's, so an image with alpha keeps the SSIM tuning.
        if tuned_for_images() && b.layout != Layout::Rgba {
            let cq = std::ffi::CString::new(IQ_QUANTIZER[usize::from(o.quality.clamp(1, 100))].to_string())
                .unwrap_or_default();
            libheif::check((lib.set_parameter_string)(encoder.1, c"aom:tune".as_ptr(), c"iq".as_ptr()))
                .map_err(failed("tune"))?;
            libheif::check((lib.set_parameter_string)(encoder.1, c"aom:cq-level".as_ptr(), cq.as_ptr()))
                .map_err(failed("quantizer"))?;
        }
    }
    let chroma = if b.layout == Layout::Rgba { CHROMA_INTERLEAVED_RGBA } else { CHROMA_INTERLEAVED_RGB };
    let mut image = std::ptr::null_mut();
    // SAFETY: plain allocation of an image header; written on success, released by its guard.
    libheif::check(unsafe { (lib.image_create)(width, height, COLORSPACE_RGB, chroma, &mut image) })
        .map_err(failed("image"))?;
    if image.is_null() {
        return Err(ImagingError::Internal("AVIF: libheif made no image".into()));
    }
    let image = ImageGuard(lib, image);
    // SAFETY: the image is live; the plane is allocated by libheif with 8 bits per sample.
    libheif::check(unsafe { (lib.image_add_plane)(image.1, CHANNEL_INTERLEAVED, width, height, 8) })
        .map_err(failed("plane"))?;
    let mut stride: c_int = 0;
    // SAFETY: the image is live and has the plane just added.
    let plane = unsafe { (lib.plane)(image.1, CHANNEL_INTERLEAVED, &mut stride) };
    let row_bytes = b.width as usize * b.layout.channels();
    let stride = usize::try_from(stride).unwrap_or(0);
    if plane.is_null() || stride < row_bytes {
        return Err(ImagingError::Internal("AVIF: libheif gave no plane to fill".into()));
    }
    for (y, row) in b.data.chunks_exact(row_bytes).enumerate().take(b.height as usize) {
        // SAFETY: the plane holds `height` rows of `stride` ≥ `row_bytes` bytes, and the image
        // (which owns it) is live.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), plane.add(y * stride), row_bytes) };
    }
    // SAFETY: ctx, image and encoder are live; null options take libheif's defaults (alpha
    // saved); no handle is asked for.
    let err = unsafe { (lib.encode_image)(ctx.1, image.1, encoder.1, std::ptr::null(), std::ptr::null_mut()) };
    libheif::check(err).map_err(failed("encoding"))?;
    let mut out = Vec::<u8>::new();
    let mut writer = Writer { writer_api_version: 1, write: libheif::write_to_vec };
    // SAFETY: ctx is live; `out` is a live Vec touched by nothing else during the call, as
    // write_to_vec requires.
    let err = unsafe { (lib.write)(ctx.1, &mut writer, (&mut out as *mut Vec<u8>).cast()) };
    libheif::check(err).map_err(failed("writing"))?;
    Ok(out)
}

#[cfg(feature = "avif")]
fn rav1e(b: &Bitmap, o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use ravif::{AlphaColorMode, BitDepth, Encoder, Img, RGB8, RGBA8};

    use crate::spec::MAX_EFFORT;

    let (width, height) = (b.width as usize, b.height as usize);
    // ravif's builders assert their ranges (a panic): both are clamped here, whatever the caller.
    let quality = o.quality.clamp(1, 100);
    let speed = 10 - o.effort.min(MAX_EFFORT);
    let encoder = Encoder::new()
        .with_quality(f32::from(quality))
        .with_alpha_quality(f32::from(alpha_quality(quality)))
        .with_speed(speed)
        // 8-bit AV1: our pixels are 8-bit, and rav1e's 8-bit path is the faster one.
        .with_bit_depth(BitDepth::Eight)
        // Fully transparent pixels' colour is replaced by their neighbours' (smaller files,
        // no visible change): the alpha channel itself is kept as it is.
        .with_alpha_color_mode(AlphaColorMode::UnassociatedClean)
        // Built without rav1e's `threading` (no rayon pool): the encode runs on this thread.
        .with_num_threads(Some(1));
    // rav1e is Rust, but a panic in it must still end as a typed error, never unwind through
    // the pool thread (the crate's invariant: nothing a client sends panics out of imaging).
    let encoded = catch_unwind(AssertUnwindSafe(|| match b.layout {
        Layout::Rgba => {
            // ravif drops the alpha plane itself when every pixel is opaque.
            let pixels: Vec<RGBA8> = b.data.chunks_exact(4).map(|p| RGBA8::new(p[0], p[1], p[2], p[3])).collect();
            encoder.encode_rgba(Img::new(&pixels[..], width, height))
        }
        _ => {
            let pixels: Vec<RGB8> = b.data.chunks_exact(3).map(|p| RGB8::new(p[0], p[1], p[2])).collect();
            encoder.encode_rgb(Img::new(&pixels[..], width, height))
        }
    }))
    .map_err(|_| ImagingError::Internal("AVIF: the encoder panicked".into()))?;
    encoded.map(|e| e.avif_file).map_err(|e| ImagingError::Internal(format!("AVIF: {e}")))
}

/// A build without the `avif` feature: [`encoder`] never chooses rav1e.
#[cfg(not(feature = "avif"))]
fn rav1e(_: &Bitmap, _: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    Err(ImagingError::Unsupported("rav1e is not in this build (imaging's `avif` feature)".into()))
}

/// Checked with an independent decoder: libavif's `avifdec` (Debian's `libavif-bin`, which
/// scripts/test.sh installs), whose PNG is read back with the `png` crate.
#[cfg(all(test, feature = "avif"))]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::{encode_with, AvifEncoder};
    use crate::bitmap::{Bitmap, Layout};
    use crate::encode::{encode, EncodeOptions, DEFAULT_QUALITY};
    use crate::limits::Limits;
    use crate::spec::{OutputFormat, ResizeSpec, DEFAULT_EFFORT, MAX_EFFORT};

    /// Both encoders: libaom needs libheif (scripts/test.sh installs `libheif1`); without it
    /// the tests fail here, naming the package. scripts/test.sh runs these tests a second time
    /// with `RESIZER_LIBAOM` naming libaom 3.14: then they must be on it, tuned for images.
    fn encoders() -> [AvifEncoder; 2] {
        assert!(
            crate::libheif::av1_encoder_name().is_some(),
            "libheif with an AV1 encoder is missing: apt-get install libheif1 (scripts/test.sh does)"
        );
        if std::env::var_os("RESIZER_LIBAOM").is_some() {
            assert!(super::tuned_for_images(), "RESIZER_LIBAOM is set but unused: {}", super::encoder_description());
        }
        [AvifEncoder::Aom, AvifEncoder::Rav1e]
    }

    fn options(format: OutputFormat, quality: u8, effort: u8) -> EncodeOptions {
        EncodeOptions { format, quality, progressive: false, lossless: false, effort, icc: None }
    }

    /// A picture with smooth and sharp parts: gradients, a checker block, and (with `alpha`) a
    /// transparent right third and a half-transparent band.
    fn picture(width: u32, height: u32, alpha: bool) -> Bitmap {
        let layout = if alpha { Layout::Rgba } else { Layout::Rgb };
        let mut data = Vec::with_capacity((width * height) as usize * layout.channels());
        for y in 0..height {
            for x in 0..width {
                let checker = ((x / 4 + y / 4) % 2) as u8 * 120;
                let r = (x * 255 / width.max(1)) as u8;
                let g = (y * 255 / height.max(1)) as u8;
                let b = if x < width / 3 && y < height / 3 { 60 + checker } else { 128 };
                data.extend_from_slice(&[r, g, b]);
                if alpha {
                    data.push(match x * 3 / width.max(1) {
                        0 => 255,
                        1 => 128,
                        _ => 0,
                    });
                }
            }
        }
        Bitmap::new(width, height, layout, data)
    }

    /// `avifdec`'s RGBA of `avif`.
    fn avifdec(avif: &[u8]) -> Bitmap {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir: PathBuf = std::env::temp_dir().join(format!(
            "imaging-avif-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (input, output) = (dir.join("in.avif"), dir.join("out.png"));
        std::fs::write(&input, avif).expect("write avif");
        let run = Command::new("avifdec").args(["--depth", "8"]).arg(&input).arg(&output).output();
        let run = run.unwrap_or_else(|e| {
            panic!("avifdec ({e}): install Debian's libavif-bin (scripts/test.sh does) to check AVIF output")
        });
        assert!(run.status.success(), "avifdec refused our AVIF: {}", String::from_utf8_lossy(&run.stderr));
        let png = std::fs::read(&output).expect("avifdec's png");
        std::fs::remove_dir_all(&dir).ok();
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
        decoder.set_transformations(png::Transformations::normalize_to_color8());
        let mut reader = decoder.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size().expect("png size")];
        let frame = reader.next_frame(&mut buf).expect("png data");
        let data = &buf[..frame.buffer_size()];
        let rgba: Vec<u8> = match frame.color_type {
            png::ColorType::Rgb => data.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
            png::ColorType::Rgba => data.to_vec(),
            other => panic!("avifdec wrote {other:?}"),
        };
        Bitmap::new(frame.width, frame.height, Layout::Rgba, rgba)
    }

    /// PSNR of channel `c` (of RGBA) between `a` (any layout with alpha last) and `b` (RGBA),
    /// over the pixels `keep` selects.
    fn psnr(a: &Bitmap, b: &Bitmap, channels: &[usize], keep: impl Fn(&[u8]) -> bool) -> f64 {
        assert_eq!((a.width, a.height), (b.width, b.height));
        let n = a.layout.channels();
        let (mut sum, mut count) = (0.0, 0u64);
        for (pa, pb) in a.data.chunks_exact(n).zip(b.data.chunks_exact(4)) {
            if !keep(pa) {
                continue;
            }
            for &c in channels {
                let va = if c == 3 && n == 3 { 255 } else { pa[c] };
                let d = f64::from(va) - f64::from(pb[c]);
                sum += d * d;
                count += 1;
            }
        }
        let mse = sum / count.max(1) as f64;
        10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
    }

    #[test]
    fn an_opaque_picture_decodes_close_to_its_source() {
        for e in encoders() {
            let source = picture(96, 64, false);
            let avif = encode_with(e, &source, &options(OutputFormat::Avif, 90, DEFAULT_EFFORT)).expect("encode");
            assert_eq!(&avif[4..12], b"ftypavif", "an AVIF file's brand");
            let back = avifdec(&avif);
            assert_eq!((back.width, back.height), (96, 64));
            let colour = psnr(&source, &back, &[0, 1, 2], |_| true);
            assert!(colour > 36.0, "{e:?}: colour PSNR {colour:.1} dB");
            assert!(back.data.chunks_exact(4).all(|p| p[3] == 255), "opaque stays opaque");
        }
    }

    #[test]
    fn alpha_is_kept() {
        for e in encoders() {
            let source = picture(96, 64, true);
            let avif = encode_with(e, &source, &options(OutputFormat::Avif, 90, DEFAULT_EFFORT)).expect("encode");
            let back = avifdec(&avif);
            let alpha = psnr(&source, &back, &[3], |_| true);
            assert!(alpha > 36.0, "{e:?}: alpha PSNR {alpha:.1} dB");
            // Colour matters where it can be seen: the opaque and half-transparent parts.
            let colour = psnr(&source, &back, &[0, 1, 2], |p| p[3] == 255);
            assert!(colour > 34.0, "colour PSNR {colour:.1} dB where opaque");
            let px = |x: u32, y: u32| &back.data[((y * back.width + x) * 4) as usize..][..4];
            assert_eq!(px(5, 30)[3], 255, "opaque third");
            assert!(px(48, 30)[3].abs_diff(128) <= 4, "half-transparent third: {:?}", px(48, 30));
            assert_eq!(px(90, 30)[3], 0, "transparent third");
        }
    }

    #[test]
    fn grey_odd_and_one_pixel_images_encode() {
        for e in encoders() {
            let grey = Bitmap::new(3, 5, Layout::Gray, (0..15).map(|v| v * 17).collect());
            let back = avifdec(&encode_with(e, &grey, &options(OutputFormat::Avif, 95, 0)).expect("grey"));
            assert_eq!((back.width, back.height), (3, 5));
            assert!(psnr(&crate::colour::expand_gray(grey), &back, &[0, 1, 2], |_| true) > 30.0);
            let one = Bitmap::new(1, 1, Layout::Rgba, vec![200, 10, 30, 77]);
            let back = avifdec(&encode_with(e, &one, &options(OutputFormat::Avif, DEFAULT_QUALITY, 0)).expect("1x1"));
            assert_eq!((back.width, back.height), (1, 1));
            assert!(back.data[3].abs_diff(77) <= 3 && back.data[0].abs_diff(200) <= 12, "{:?}", back.data);
        }
    }

    #[test]
    fn every_effort_and_the_quality_range_make_valid_files() {
        for e in encoders() {
            let source = picture(48, 32, true);
            let mut sizes = Vec::new();
            for effort in 0..=MAX_EFFORT {
                let avif =
                    encode_with(e, &source, &options(OutputFormat::Avif, DEFAULT_QUALITY, effort)).expect("encode");
                avifdec(&avif);
                sizes.push(avif.len());
            }
            // Out of range values are clamped, not a panic inside ravif.
            for (quality, effort) in [(0, 0), (1, 0), (100, 0), (255, 200)] {
                avifdec(&encode_with(e, &source, &options(OutputFormat::Avif, quality, effort)).expect("clamped"));
            }
            let low = encode_with(e, &source, &options(OutputFormat::Avif, 20, 0)).expect("q20").len();
            let high = encode_with(e, &source, &options(OutputFormat::Avif, 95, 0)).expect("q95").len();
            assert!(low < high, "{e:?}: quality 20 is {low} bytes, 95 is {high}");
        }
    }

    /// Neither encoder works on another thread: the conversion's CPU is metered on this one
    /// and the lanes count one thread per conversion. rayon is compiled in for rav1e (its scene
    /// detection depends on it) but must never start its pool; libaom would start workers if
    /// libheif's default were kept. Measured as this thread's CPU time against the process's
    /// over the encodes (nextest runs each test in a process of its own).
    #[test]
    fn the_encoders_work_on_the_callers_thread_alone() {
        let clock = |id| {
            let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: writes the clock's value into `t`.
            assert_eq!(unsafe { libc::clock_gettime(id, &mut t) }, 0);
            t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
        };
        let threads = || std::fs::read_dir("/proc/self/task").expect("/proc").count();
        let source = picture(512, 384, true);
        for e in encoders() {
            let before = (threads(), clock(libc::CLOCK_THREAD_CPUTIME_ID), clock(libc::CLOCK_PROCESS_CPUTIME_ID));
            for effort in [0, DEFAULT_EFFORT, 4] {
                encode_with(e, &source, &options(OutputFormat::Avif, DEFAULT_QUALITY, effort)).expect("encode");
            }
            let thread = clock(libc::CLOCK_THREAD_CPUTIME_ID) - before.1;
            let process = clock(libc::CLOCK_PROCESS_CPUTIME_ID) - before.2;
            assert_eq!(threads(), before.0, "{e:?}: threads before and after three encodes");
            assert!(thread >= 0.9 * process, "{e:?}: this thread {thread:.3} s of the process's {process:.3} s of CPU");
        }
    }

    /// A request without `quality` gets the chosen encoder's default: 67 with libaom tuned for
    /// images, 65 with an older libaom (80 would be 1.5× WebP's bytes), the other formats' 80
    /// with rav1e.
    #[test]
    fn an_avif_without_a_quality_gets_the_encoders_default() {
        assert_eq!(super::encoder(), Some(AvifEncoder::Aom), "libaom is chosen where libheif has it");
        let default = if super::tuned_for_images() { super::AOM_IQ_DEFAULT_QUALITY } else { 65 };
        assert_eq!(crate::encode::default_quality(OutputFormat::Avif), default);
        assert_eq!(crate::encode::default_quality(OutputFormat::Webp), DEFAULT_QUALITY);
        let png = encode(&picture(120, 80, false), &options(OutputFormat::Png, 80, 0)).expect("png");
        let run = |query: &str| {
            crate::process(&png, &ResizeSpec::from_query(query).expect("spec"), &Limits::default()).expect(query).bytes
        };
        assert_eq!(run("width=60&format=avif"), run(&format!("width=60&format=avif&quality={default}")));
        assert_ne!(run("width=60&format=avif"), run("width=60&format=avif&quality=80"));
    }

    #[test]
    fn the_pipeline_resizes_to_avif() {
        // A PNG source through the whole pipeline, compared with the same resize to PNG.
        let png = encode(&picture(200, 120, true), &options(OutputFormat::Png, 80, 0)).expect("png");
        let run = |query: &str| {
            crate::process(&png, &ResizeSpec::from_query(query).expect("spec"), &Limits::default()).expect(query)
        };
        let avif = run("width=100&format=avif&quality=90&effort=3");
        assert_eq!(avif.report.format, OutputFormat::Avif);
        assert_eq!((avif.report.width, avif.report.height), (100, 60));
        assert_eq!(avif.report.bytes, avif.bytes.len() as u64);
        let reference = run("width=100&format=png");
        let mut reference_rgba = Vec::new();
        let mut decoder = png::Decoder::new(std::io::Cursor::new(reference.bytes)).read_info().expect("png");
        let mut buf = vec![0; decoder.output_buffer_size().expect("size")];
        let frame = decoder.next_frame(&mut buf).expect("frame");
        assert_eq!(frame.color_type, png::ColorType::Rgba);
        reference_rgba.extend_from_slice(&buf[..frame.buffer_size()]);
        let reference = Bitmap::new(100, 60, Layout::Rgba, reference_rgba);
        let back = avifdec(&avif.bytes);
        assert!(psnr(&reference, &back, &[3], |_| true) > 34.0, "alpha");
        assert!(psnr(&reference, &back, &[0, 1, 2], |p| p[3] > 200) > 32.0, "colour");
    }
}
