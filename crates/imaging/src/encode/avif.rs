//! AVIF through ravif (rav1e, pure Rust): 8-bit 4:4:4, alpha as an auxiliary image.
//!
//! One thread per conversion: rav1e is built without its `threading` feature (no rayon pool), so
//! the encode runs on the caller's thread, as the dispatcher's lanes and the CPU-time metering
//! assume. The colour is signalled in the `colr` box as sRGB (BT.709 primaries, sRGB transfer),
//! which is what the pixels are by then; `keep_icc` adds nothing here (ravif writes no ICC box).

use super::EncodeOptions;
use crate::bitmap::Bitmap;
use crate::error::ImagingError;

#[cfg(feature = "avif")]
pub fn encode(b: &Bitmap, o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use ravif::{AlphaColorMode, BitDepth, Encoder, Img, RGB8, RGBA8};

    use crate::bitmap::Layout;
    use crate::spec::MAX_EFFORT;

    if matches!(b.layout, Layout::Gray | Layout::GrayAlpha) {
        // ravif takes RGB(A) only; grey comes out as equal channels, which 4:4:4 stores cheaply.
        return encode(&crate::colour::expand_gray(b.clone()), o);
    }
    let (width, height) = (b.width as usize, b.height as usize);
    // ravif's builders assert their ranges (a panic): both are clamped here, whatever the caller.
    let quality = f32::from(o.quality.clamp(1, 100));
    let speed = 10 - o.effort.min(MAX_EFFORT);
    let encoder = Encoder::new()
        .with_quality(quality)
        // Alpha edges show compression more than colour does: the alpha plane gets half the
        // distance to 100 more quality (cavif's rule).
        .with_alpha_quality((quality + 100.0) / 2.0)
        .with_speed(speed)
        // 8-bit AV1: our pixels are 8-bit, and rav1e's 8-bit path is the faster one.
        .with_bit_depth(BitDepth::Eight)
        // Fully transparent pixels' colour is replaced by their neighbours' (smaller files,
        // no visible change): the alpha channel itself is kept as it is.
        .with_alpha_color_mode(AlphaColorMode::UnassociatedClean)
        .with_num_threads(Some(1));
    // rav1e is Rust, but a panic in it must still end as a typed error, never unwind through
    // the pool thread (the crate's invariant: nothing a client sends panics out of imaging).
    let encoded = catch_unwind(AssertUnwindSafe(|| match b.layout {
        Layout::Rgb => {
            let pixels: Vec<RGB8> = b.data.chunks_exact(3).map(|p| RGB8::new(p[0], p[1], p[2])).collect();
            encoder.encode_rgb(Img::new(&pixels[..], width, height))
        }
        Layout::Rgba => {
            // ravif drops the alpha plane itself when every pixel is opaque.
            let pixels: Vec<RGBA8> = b.data.chunks_exact(4).map(|p| RGBA8::new(p[0], p[1], p[2], p[3])).collect();
            encoder.encode_rgba(Img::new(&pixels[..], width, height))
        }
        other => Err(ravif::Error::Unsupported(match other {
            Layout::Cmyk => "CMYK pixels",
            _ => "this pixel layout",
        })),
    }))
    .map_err(|_| ImagingError::Internal("AVIF: the encoder panicked".into()))?;
    encoded.map(|e| e.avif_file).map_err(|e| ImagingError::Internal(format!("AVIF: {e}")))
}

/// A build without the `avif` feature: `format=avif` is refused when it is parsed, so this is
/// reached only by a spec built in code (or a job from an api node of another build).
#[cfg(not(feature = "avif"))]
pub fn encode(_: &Bitmap, _: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    Err(ImagingError::Unsupported("AVIF output is not in this build (imaging's `avif` feature)".into()))
}

/// Checked with an independent decoder: libavif's `avifdec` (Debian's `libavif-bin`, which
/// scripts/test.sh installs), whose PNG is read back with the `png` crate.
#[cfg(all(test, feature = "avif"))]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    use crate::bitmap::{Bitmap, Layout};
    use crate::encode::{encode, EncodeOptions, DEFAULT_QUALITY};
    use crate::limits::Limits;
    use crate::spec::{OutputFormat, ResizeSpec, DEFAULT_EFFORT, MAX_EFFORT};

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
        let source = picture(96, 64, false);
        let avif = encode(&source, &options(OutputFormat::Avif, 90, DEFAULT_EFFORT)).expect("encode");
        assert_eq!(&avif[4..12], b"ftypavif", "an AVIF file's brand");
        let back = avifdec(&avif);
        assert_eq!((back.width, back.height), (96, 64));
        let colour = psnr(&source, &back, &[0, 1, 2], |_| true);
        assert!(colour > 36.0, "colour PSNR {colour:.1} dB");
        assert!(back.data.chunks_exact(4).all(|p| p[3] == 255), "opaque stays opaque");
    }

    #[test]
    fn alpha_is_kept() {
        let source = picture(96, 64, true);
        let avif = encode(&source, &options(OutputFormat::Avif, 90, DEFAULT_EFFORT)).expect("encode");
        let back = avifdec(&avif);
        let alpha = psnr(&source, &back, &[3], |_| true);
        assert!(alpha > 36.0, "alpha PSNR {alpha:.1} dB");
        // Colour matters where it can be seen: the opaque and half-transparent parts.
        let colour = psnr(&source, &back, &[0, 1, 2], |p| p[3] == 255);
        assert!(colour > 34.0, "colour PSNR {colour:.1} dB where opaque");
        let px = |x: u32, y: u32| &back.data[((y * back.width + x) * 4) as usize..][..4];
        assert_eq!(px(5, 30)[3], 255, "opaque third");
        assert!(px(48, 30)[3].abs_diff(128) <= 4, "half-transparent third: {:?}", px(48, 30));
        assert_eq!(px(90, 30)[3], 0, "transparent third");
    }

    #[test]
    fn grey_odd_and_one_pixel_images_encode() {
        let grey = Bitmap::new(3, 5, Layout::Gray, (0..15).map(|v| v * 17).collect());
        let back = avifdec(&encode(&grey, &options(OutputFormat::Avif, 95, 0)).expect("grey"));
        assert_eq!((back.width, back.height), (3, 5));
        assert!(psnr(&crate::colour::expand_gray(grey), &back, &[0, 1, 2], |_| true) > 30.0);
        let one = Bitmap::new(1, 1, Layout::Rgba, vec![200, 10, 30, 77]);
        let back = avifdec(&encode(&one, &options(OutputFormat::Avif, DEFAULT_QUALITY, 0)).expect("1x1"));
        assert_eq!((back.width, back.height), (1, 1));
        assert!(back.data[3].abs_diff(77) <= 3 && back.data[0].abs_diff(200) <= 12, "{:?}", back.data);
    }

    #[test]
    fn every_effort_and_the_quality_range_make_valid_files() {
        let source = picture(48, 32, true);
        let mut sizes = Vec::new();
        for effort in 0..=MAX_EFFORT {
            let avif = encode(&source, &options(OutputFormat::Avif, DEFAULT_QUALITY, effort)).expect("encode");
            avifdec(&avif);
            sizes.push(avif.len());
        }
        // Out of range values are clamped, not a panic inside ravif.
        for (quality, effort) in [(0, 0), (1, 0), (100, 0), (255, 200)] {
            avifdec(&encode(&source, &options(OutputFormat::Avif, quality, effort)).expect("clamped"));
        }
        let low = encode(&source, &options(OutputFormat::Avif, 20, 0)).expect("q20").len();
        let high = encode(&source, &options(OutputFormat::Avif, 95, 0)).expect("q95").len();
        assert!(low < high, "quality 20 is {low} bytes, 95 is {high}");
    }

    /// rayon is compiled in (rav1e's scene detection depends on it) but must never start its
    /// pool: the conversion's CPU is metered on this thread and the lanes count one thread per
    /// conversion.
    #[test]
    fn the_encoder_starts_no_thread() {
        let threads = || std::fs::read_dir("/proc/self/task").expect("/proc").count();
        let before = threads();
        for effort in [0, DEFAULT_EFFORT, 4] {
            encode(&picture(256, 192, true), &options(OutputFormat::Avif, DEFAULT_QUALITY, effort)).expect("encode");
        }
        assert_eq!(threads(), before, "threads before and after three encodes");
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
