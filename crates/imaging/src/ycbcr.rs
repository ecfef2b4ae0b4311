//! JPEG to JPEG without leaving YCbCr. A JPEG stores luma and (usually subsampled) chroma, and a
//! JPEG output stores them again: decoding to RGB upsamples the chroma and converts colour, and
//! encoding converts back and subsamples again. Here the decoder hands over its planes as they
//! are, each is resized on its own to the size the encoder wants (chroma straight to half the
//! output), and the encoder takes them as they are. Resampling is linear, and so is the
//! YCbCr-RGB transform, so this is the same picture as the RGB path up to rounding, for about
//! half the convolution work and none of the colour conversions (docs/benchmarks.md).
//!
//! It only takes what it can do as the RGB path would: a plain resize of a YCbCr JPEG with no ICC
//! profile to apply, into a JPEG; everything else (crops, padding, profiles, CMYK, grey) goes
//! through the steps in pipeline.rs.

use crate::bitmap::Bitmap;
use crate::decode::jpeg::{decode_ycbcr, YcbcrPlanes};
use crate::encode::{encode_jpeg_ycbcr, EncodeOptions};
use crate::error::ImagingError;
use crate::geometry::Plan;
use crate::orient;
use crate::plane_resize::{resize_plane, Kernel, Taps};
use crate::probe::{ImageFormat, Probe};
use crate::resize::box_shrinks;
use crate::spec::OutputFormat;

/// Whether the conversion can go through the planes, as far as is known before decoding (the
/// decoder still declines files that are not YCbCr or carry an ICC profile).
pub fn applies(
    probe: &Probe,
    format: OutputFormat,
    plan: &Plan,
    scale: u32,
    stored_target: (u32, u32),
    orientation: u8,
) -> bool {
    let Some(jpeg) = &probe.jpeg else { return false };
    let decoded = (probe.width.div_ceil(scale), probe.height.div_ceil(scale));
    probe.format == ImageFormat::Jpeg
        && format == OutputFormat::Jpeg
        && jpeg.components == 3
        && jpeg.precision == 8
        && plan.crop.is_none()
        && plan.canvas.is_none()
        && !box_shrinks(decoded, stored_target)
        && chroma_pairs_survive(orientation, stored_target)
}

/// Output chroma covers pairs of output pixels, starting at the first. An orientation that
/// reverses a stored axis of odd length would pair them from the other end, half a chroma
/// sample off: such images take the RGB path.
fn chroma_pairs_survive(orientation: u8, (w, h): (u32, u32)) -> bool {
    let (reverses_x, reverses_y) = match orientation {
        2 | 8 => (true, false),
        4 | 6 => (false, true),
        3 | 7 => (true, true),
        _ => (false, false),
    };
    !((reverses_x && w % 2 == 1) || (reverses_y && h % 2 == 1))
}

/// An output's bytes and its size.
type Encoded = (Vec<u8>, (u32, u32));

/// The JPEG of `input` decoded at 1/`scale`, resized to `stored_target`, turned upright and
/// encoded; `None` when the decoder declines the file, which then goes through the RGB path.
pub fn convert(
    input: &[u8],
    probe: &Probe,
    scale: u32,
    stored_target: (u32, u32),
    orientation: u8,
    options: &EncodeOptions,
) -> Result<Option<Encoded>, ImagingError> {
    let buffers = PLANE_BUFFERS.with_borrow_mut(std::mem::take);
    let Some(planes) = decode_ycbcr(input, probe, scale, buffers)? else { return Ok(None) };
    let resized = resize_planes(&planes, stored_target);
    let [y, cb, cr] = planes.planes.map(|p| p.data);
    if y.capacity() + cb.capacity() + cr.capacity() <= MAX_KEPT_BUFFERS {
        PLANE_BUFFERS.set([y, cb, cr]);
    }
    let [y, cb, cr] = resized.map(|p| orient::apply(p, orientation));
    let size = (y.width, y.height);
    let bytes = encode_jpeg_ycbcr(&[y, cb, cr], options)?;
    Ok(Some((bytes, size)))
}

thread_local! {
    /// The decoded planes' buffers, kept between conversions on a worker thread, so that they
    /// are not mapped and faulted in afresh for every image: 49,763 page faults against 77,548
    /// for 140 conversions of the photos (before heap.rs's setting, which took most of the rest).
    static PLANE_BUFFERS: std::cell::RefCell<[Vec<u8>; 3]> = const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// A worker that once decoded a huge JPEG does not keep its buffers for ever.
const MAX_KEPT_BUFFERS: usize = 16 << 20;

/// Y to `target`, Cb and Cr to half of it (rounded up), each over the same picture.
fn resize_planes(planes: &YcbcrPlanes, target: (u32, u32)) -> [Bitmap; 3] {
    let YcbcrPlanes { planes: [y, cb, cr], picture, chroma_spans } = planes;
    let (tw, th) = (target.0.max(1), target.1.max(1));
    let (image_w, image_h) = (f64::from(picture.0), f64::from(picture.1));
    let chroma = (tw.div_ceil(2), th.div_ceil(2));
    // Output chroma sample i spans output pixels 2i and 2i+1, that is 2·image/target decoded
    // pixels, or that over `span` samples of the plane. With an odd target the last one reaches
    // past the picture by half an output pixel: the scale must stay that of the pixels (cutting
    // the extent to the plane's made every chroma sample drift, 0.9 dB lower PSNR in chroma on
    // an odd size), and the taps keep its window inside the plane.
    let extent = |(sx, sy): (f64, f64)| {
        (
            f64::from(chroma.0) * 2.0 * image_w / f64::from(tw) / sx,
            f64::from(chroma.1) * 2.0 * image_h / f64::from(th) / sy,
        )
    };
    let (cb_extent, cr_extent) = (extent(chroma_spans[0]), extent(chroma_spans[1]));
    let luma = resize_plane(
        y,
        &Taps::across(y.width, image_w, tw, Kernel::Lanczos3),
        &Taps::down(y.height, image_h, th, Kernel::Lanczos3),
    );
    let chroma_taps = |plane: &Bitmap, extent: (f64, f64)| {
        (
            Taps::across(plane.width, extent.0, chroma.0, Kernel::Pairs { pixels: tw }),
            Taps::down(plane.height, extent.1, chroma.1, Kernel::Pairs { pixels: th }),
        )
    };
    let cb_taps = chroma_taps(cb, cb_extent);
    // Cr is sampled as Cb in every file seen, so they share their taps.
    let same = (cr.width, cr.height, cr_extent) == (cb.width, cb.height, cb_extent);
    let cr_taps = if same { None } else { Some(chroma_taps(cr, cr_extent)) };
    let cr_taps = cr_taps.as_ref().unwrap_or(&cb_taps);
    [luma, resize_plane(cb, &cb_taps.0, &cb_taps.1), resize_plane(cr, &cr_taps.0, &cr_taps.1)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;
    use crate::error::ImagingError;
    use crate::limits::Limits;
    use crate::pipeline::{process_by, Path};
    use crate::probe::probe;
    use crate::spec::ResizeSpec;
    use crate::{encode, resize};

    /// Something like a photo: gradients, coloured edges and noise.
    fn photo(width: u32, height: u32, seed: u32) -> Vec<u8> {
        let mut state = seed;
        let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            for x in 0..width {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = state >> 27;
                let edge = if (x / 37 + y / 29) % 3 == 0 { 70 } else { 0 };
                // Inside 20..=235 in every channel, as photos mostly are: colours clipped at 0 or
                // 255 in the source would favour the RGB way, which clips before resizing.
                pixels.push((20 + x * 100 / width + noise + edge) as u8);
                pixels.push((20 + y * 150 / height + noise) as u8);
                pixels.push((200 - x * 100 / width - edge / 2 + noise) as u8);
            }
        }
        pixels
    }

    /// A JPEG of `pixels` with its chroma sampled every `chroma` pixels across and down.
    fn jpeg(width: u32, height: u32, pixels: &[u8], chroma: (u8, u8), progressive: bool) -> Vec<u8> {
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_fastest_defaults();
        c.set_size(width as usize, height as usize);
        c.set_quality(92.0);
        c.set_chroma_sampling_pixel_sizes(chroma, chroma);
        if progressive {
            c.set_progressive_mode();
        }
        let mut started = c.start_compress(Vec::new()).expect("start");
        started.write_scanlines(pixels).expect("rows");
        started.finish().expect("finish")
    }

    fn rgb(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
        let d = mozjpeg::Decompress::new_mem(jpeg).expect("header");
        let mut started = d.rgb().expect("decode");
        let (w, h) = (started.width(), started.height());
        let data: Vec<u8> = started.read_scanlines().expect("rows");
        (w, h, data)
    }

    /// The frame header's sampling factors and every quantisation table, as written.
    fn header(jpeg: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut sampling, mut tables) = (Vec::new(), Vec::new());
        let mut at = 2;
        while at + 4 <= jpeg.len() && jpeg[at] == 0xFF && jpeg[at + 1] != 0xDA {
            let length = usize::from(u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]));
            let segment = &jpeg[at + 4..at + 2 + length];
            match jpeg[at + 1] {
                0xC0..=0xC2 => sampling = segment[6..].chunks(3).map(|c| c[1]).collect(),
                0xDB => tables.extend_from_slice(segment),
                _ => {}
            }
            at += 2 + length;
        }
        (sampling, tables)
    }

    fn options(progressive: bool) -> EncodeOptions {
        EncodeOptions { format: OutputFormat::Jpeg, quality: 80, progressive, lossless: false, effort: 0, icc: None }
    }

    /// What the RGB steps make of the same decode: resize, turn upright, encode.
    fn through_rgb(input: &[u8], scale: u32, target: (u32, u32), orientation: u8, o: &EncodeOptions) -> Vec<u8> {
        let probe = probe(input).expect("probe");
        let decoded = decode::decode(input, &probe, scale, &Limits::default()).expect("decodes");
        let resized = resize::resize(decoded.bitmap, target.0, target.1).expect("resizes");
        encode::encode(&orient::apply(resized, orientation), o).expect("encodes")
    }

    #[test]
    fn the_planes_give_the_rgb_paths_picture_and_header() {
        // 4:2:0, 4:2:2, 4:4:4, 4:1:1, 4:4:0 and 4x2 inputs; full, 1/2 and 1/4 decodes; even and
        // odd targets; orientations that keep, reverse and swap the axes; progressive output.
        let cases = [
            ((2, 2), (640, 480), (301, 225), 1, false),
            ((2, 2), (642, 481), (320, 240), 3, true),
            ((2, 2), (1280, 960), (300, 226), 6, false),
            ((2, 1), (500, 375), (250, 187), 8, false),
            ((1, 1), (401, 300), (200, 150), 1, false),
            ((1, 1), (1600, 1200), (101, 75), 5, true),
            ((2, 2), (97, 61), (250, 157), 1, false),
            ((4, 1), (403, 301), (201, 150), 1, false),
            ((1, 2), (640, 480), (319, 239), 1, true),
            ((4, 2), (800, 600), (100, 75), 1, false),
        ];
        for (i, (chroma, (w, h), target, orientation, progressive)) in cases.into_iter().enumerate() {
            let input = jpeg(w, h, &photo(w, h, i as u32 + 1), chroma, i % 2 == 1);
            let probe = probe(&input).expect("probe");
            let scale = decode::scale_for(&probe, target);
            let o = options(progressive);
            let plan = Plan { resize: target, crop: None, canvas: None };
            assert!(applies(&probe, OutputFormat::Jpeg, &plan, scale, target, orientation), "case {i}");
            let (ours, size) =
                convert(&input, &probe, scale, target, orientation, &o).expect("converts").expect("takes the planes");
            let theirs = through_rgb(&input, scale, target, orientation, &o);
            assert_eq!(header(&ours), header(&theirs), "case {i}: sampling and tables");
            assert_eq!(ours[..200].windows(2).any(|m| m == [0xFF, 0xC2]), progressive, "case {i}");
            let ((ow, oh, a), (tw, th, b)) = (rgb(&ours), rgb(&theirs));
            assert_eq!((ow, oh), (tw, th), "case {i}");
            assert_eq!((size.0 as usize, size.1 as usize), (ow, oh), "case {i}");
            // The same picture: only the chroma's route (and rounding) differs, and it is at
            // least as close to the source resized without any JPEG in the way.
            let upright = orient::apply(
                resize::resize(
                    Bitmap::new(w, h, crate::bitmap::Layout::Rgb, photo(w, h, i as u32 + 1)),
                    target.0,
                    target.1,
                )
                .expect("resizes"),
                orientation,
            );
            // Luma takes the same way, so it scores the same; chroma's differs a little (and
            // scored within 0.5 dB of the RGB way's, or better, when this test was written: 0.49 dB
            // below it on the enlarged 97x61 case, within 0.05 dB or above it elsewhere).
            let ycc = |p: &[u8]| {
                let (r, g, b) = (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
                [
                    0.299 * r + 0.587 * g + 0.114 * b,
                    128.0 - 0.1687 * r - 0.3313 * g + 0.5 * b,
                    128.0 + 0.5 * r - 0.4187 * g - 0.0813 * b,
                ]
            };
            let psnr = |x: &[u8], y: &[u8]| {
                let mut squares = [0.0f64; 4];
                for (p, q) in x.chunks_exact(3).zip(y.chunks_exact(3)) {
                    let (p, q) = (ycc(p), ycc(q));
                    (0..3).for_each(|c| squares[c] += (p[c] - q[c]).powi(2));
                }
                squares[3] = x.iter().zip(y).map(|(p, q)| f64::from(p.abs_diff(*q)).powi(2)).sum::<f64>() / 3.0;
                squares.map(|s| 10.0 * (255.0f64.powi(2) * (x.len() / 3) as f64 / s).log10())
            };
            let (ours, theirs, between) = (psnr(&a, &upright.data), psnr(&b, &upright.data), psnr(&a, &b));
            assert!(
                ours[0] > theirs[0] - 0.1,
                "case {i}: luma {:.2} dB against the source, the RGB way {:.2}",
                ours[0],
                theirs[0]
            );
            for c in 1..3 {
                assert!(ours[c] > theirs[c] - 0.5, "case {i}: chroma {:.2} dB, the RGB way {:.2}", ours[c], theirs[c]);
            }
            assert!(between[3] > 38.0, "case {i}: the two ways {:.1} dB apart", between[3]);
        }
    }

    /// Chroma lands where the RGB way puts it: on a ramp, a shift of half a chroma sample
    /// would move every colour by about 0.8 of a level.
    #[test]
    fn chroma_is_not_shifted() {
        let (w, h) = (640, 480);
        let ramp: Vec<u8> =
            (0..w * h).flat_map(|i| [(60 + (i / w) * 100 / h) as u8, 120, ((i % w) * 255 / w) as u8]).collect();
        let input = jpeg(w, h, &ramp, (2, 2), false);
        let info = probe(&input).expect("probe");
        let o = EncodeOptions { quality: 98, ..options(false) };
        for target in [(320, 240), (301, 225), (160, 120)] {
            let (ours, _) = convert(&input, &info, 1, target, 1, &o).expect("converts").expect("planes");
            let truth = resize::resize(Bitmap::new(w, h, crate::bitmap::Layout::Rgb, ramp.clone()), target.0, target.1)
                .expect("resizes");
            let (_, _, ours) = rgb(&ours);
            let (tw, th) = (target.0 as usize, target.1 as usize);
            let mut bias = [0.0f64; 3];
            let middle: Vec<usize> =
                (th / 4..3 * th / 4).flat_map(|y| (tw / 4..3 * tw / 4).map(move |x| (y * tw + x) * 3)).collect();
            for &i in &middle {
                (0..3).for_each(|c| bias[c] += f64::from(ours[i + c]) - f64::from(truth.data[i + c]));
            }
            let bias = bias.map(|b| b / middle.len() as f64);
            assert!(bias.iter().all(|b| b.abs() < 0.4), "{target:?}: R, G, B off by {bias:?} on average");
        }
    }

    #[test]
    fn the_pipeline_takes_the_planes_for_a_plain_jpeg_resize() {
        let (w, h) = (320, 200);
        let input = jpeg(w, h, &photo(w, h, 9), (2, 2), false);
        let spec = ResizeSpec::from_query("width=160&format=jpeg").expect("spec");
        let best = process_by(&input, &spec, &Limits::default(), Path::Best).expect("converts");
        let via_rgb = process_by(&input, &spec, &Limits::default(), Path::Rgb).expect("converts");
        let probe = probe(&input).expect("probe");
        let planes = convert(&input, &probe, 1, (160, 100), 1, &options(false)).expect("converts").expect("planes");
        assert_eq!(best.bytes, planes.0);
        assert_ne!(best.bytes, via_rgb.bytes);
        assert_eq!((best.report.width, best.report.height), (via_rgb.report.width, via_rgb.report.height));
    }

    /// A broken file through the planes is a typed error or a picture, as through RGB: never a
    /// panic, and the same answer either way where libjpeg gives up.
    #[test]
    fn broken_files_fail_as_typed_errors() {
        let (w, h) = (200, 120);
        let input = jpeg(w, h, &photo(w, h, 5), (2, 2), true);
        let spec = ResizeSpec::from_query("width=90&format=jpeg").expect("spec");
        let limits = Limits::default();
        let truncated = &input[..input.len() / 2];
        assert!(matches!(process_by(truncated, &spec, &limits, Path::Best), Err(ImagingError::Corrupt(_))));
        let first_scan = input.windows(2).position(|w| w == [0xFF, 0xDA]).expect("a scan");
        let mut state = 77u32;
        for _ in 0..80 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let mut broken = input.clone();
            let at = 2 + (state as usize >> 8) % (broken.len() - 4);
            broken[at] ^= 1 << (state % 8);
            let planes = process_by(&broken, &spec, &limits, Path::Best);
            let rgb = process_by(&broken, &spec, &limits, Path::Rgb);
            if at < first_scan {
                // A header broken: both ways read the same header.
                assert_eq!(planes.is_ok(), rgb.is_ok(), "byte {at}");
            }
            if let Err(e) = planes {
                assert!(
                    matches!(
                        e,
                        ImagingError::Corrupt(_)
                            | ImagingError::Unsupported(_)
                            | ImagingError::BadParameter(_)
                            | ImagingError::LimitExceeded(_)
                    ),
                    "byte {at}: {e:?}"
                );
            }
        }
    }

    #[test]
    fn what_the_planes_cannot_do_exactly_goes_the_rgb_way() {
        let (w, h) = (64, 48);
        let pixels = photo(w, h, 3);
        // An ICC profile to apply: the decoder declines.
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_fastest_defaults();
        c.set_size(w as usize, h as usize);
        let mut started = c.start_compress(Vec::new()).expect("start");
        started.write_icc_profile(&crate::colour::srgb_profile().expect("our sRGB profile"));
        started.write_scanlines(&pixels).expect("rows");
        let tagged = started.finish().expect("finish");
        let info = probe(&tagged).expect("probe");
        assert!(convert(&tagged, &info, 1, (32, 24), 1, &options(false)).expect("decodes").is_none());
        // Crops, padding, other formats, odd sizes along a reversed axis: not even tried.
        let plain = jpeg(w, h, &pixels, (2, 2), false);
        let info = probe(&plain).expect("probe");
        let resize = Plan { resize: (32, 24), crop: None, canvas: None };
        assert!(applies(&info, OutputFormat::Jpeg, &resize, 1, (32, 24), 1));
        assert!(!applies(&info, OutputFormat::Webp, &resize, 1, (32, 24), 1));
        assert!(!applies(&info, OutputFormat::Jpeg, &Plan { crop: Some((30, 24)), ..resize }, 1, (32, 24), 1));
        assert!(!applies(&info, OutputFormat::Jpeg, &Plan { canvas: Some((40, 24)), ..resize }, 1, (32, 24), 1));
        assert!(!applies(&info, OutputFormat::Jpeg, &resize, 1, (33, 24), 2));
        assert!(applies(&info, OutputFormat::Jpeg, &resize, 1, (33, 24), 4));
        assert!(!applies(&info, OutputFormat::Jpeg, &resize, 1, (32, 25), 6));
        assert!(applies(&info, OutputFormat::Jpeg, &resize, 1, (33, 24), 5));
        // A reduction the box shrink would start: the RGB way.
        assert!(!applies(&info, OutputFormat::Jpeg, &resize, 1, (10, 8), 1));
    }
}
