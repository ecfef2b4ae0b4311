//! AVIF and HEIC through the system's libheif (Debian's `libheif1`: libde265 for HEVC, dav1d or
//! aom for AV1), opened at run time with `dlopen` so that building needs nothing but the Rust
//! toolchain: without the library an AVIF or HEIC input is refused as unsupported (415) with a
//! message naming the package, and everything else works as before.
//!
//! The probe has sized the image and the limits have accepted it before this runs. libheif is
//! told to ignore `irot`/`imir`/`clap` (the probe folded the first two into the EXIF orientation
//! that `orient.rs` applies after the resize, as for every other format), to decode tiles on
//! this thread, to refuse images wider or taller than the probe found, and to convert deeper
//! samples to 8 bits. The decoded RGB(A) is copied out row by row, box-shrunk on the way when
//! the target is small (as PNG's decoder does), and every libheif object is released by a guard
//! on every path.

use std::ffi::c_int;

use super::Decoded;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;
use crate::libheif::{
    self, ContextGuard, HandleGuard, HeifError, ImageGuard, Lib, OptionsGuard, CHANNEL_INTERLEAVED,
    CHROMA_INTERLEAVED_RGB, CHROMA_INTERLEAVED_RGBA, COLORSPACE_RGB,
};
use crate::probe::Probe;
use crate::resize::BoxRows;

/// What an AVIF or HEIC input is answered when libheif is not installed.
const MISSING: &str = "HEIC/AVIF input needs libheif: apt-get install libheif1";

/// Ok, or a 422 naming the format and libheif's reason.
fn check(err: HeifError, what: &str) -> Result<(), ImagingError> {
    libheif::check(err).map_err(|m| ImagingError::Corrupt(format!("{what} could not be decoded: {m}")))
}

/// Decodes the primary image of an AVIF or HEIC file at 1/`scale` of its stored size.
pub fn decode(input: &[u8], probe: &Probe, scale: u32) -> Result<Decoded, ImagingError> {
    let lib = libheif::lib().ok_or_else(|| ImagingError::Unsupported(MISSING.into()))?;
    let what = probe.format.as_str().to_ascii_uppercase();
    let corrupt = |m: &str| ImagingError::Corrupt(format!("{what} could not be decoded: {m}"));
    // SAFETY: plain allocation; null is checked.
    let ctx = unsafe { (lib.context_alloc)() };
    if ctx.is_null() {
        return Err(ImagingError::Internal("libheif could not allocate a context".into()));
    }
    let ctx = ContextGuard(lib, ctx);
    // The probe's sizes (tiles included) are what the limits accepted: libheif refuses any
    // image item larger, whatever the file says elsewhere. Its limit is exclusive.
    let heif = probe.heif.as_ref().ok_or_else(|| ImagingError::Internal("HEIF probe without details".into()))?;
    let (full_w, full_h) = (heif.full_width, heif.full_height);
    let largest = full_w.max(full_h).max(heif.tile_width).max(heif.tile_height);
    let largest = c_int::try_from(largest.saturating_add(1)).unwrap_or(c_int::MAX);
    // SAFETY: ctx is live; both calls only store a number in it.
    unsafe {
        (lib.set_maximum_image_size_limit)(ctx.1, largest);
        // 0: tiles are decoded on this thread, which the caller chose (a pool thread).
        (lib.set_max_decoding_threads)(ctx.1, 0);
    }
    // SAFETY: `input` outlives the context (ctx drops at the end of this function, before the
    // borrow ends); libheif only reads it.
    let err =
        unsafe { (lib.read_from_memory_without_copy)(ctx.1, input.as_ptr().cast(), input.len(), std::ptr::null()) };
    check(err, &what)?;
    let mut handle = std::ptr::null_mut();
    // SAFETY: ctx is live; the handle is written on success and released by its guard.
    check(unsafe { (lib.primary_image_handle)(ctx.1, &mut handle) }, &what)?;
    if handle.is_null() {
        return Err(corrupt("no primary image"));
    }
    let handle = HandleGuard(lib, handle);
    // SAFETY: the handle is live for these getters.
    let (hw, hh, alpha) =
        unsafe { ((lib.handle_width)(handle.1), (lib.handle_height)(handle.1), (lib.handle_has_alpha)(handle.1) != 0) };
    // The stored size (ispe), which the decoder delivers with transformations ignored.
    if u32::try_from(hw).ok() != Some(full_w) || u32::try_from(hh).ok() != Some(full_h) {
        return Err(corrupt("image size disagrees with the header"));
    }
    let icc = color_profile(lib, &handle).or_else(|| probe.heif.as_ref().and_then(|h| h.nclx).and_then(nclx_profile));
    // SAFETY: allocation of libheif's own options struct, freed by its guard.
    let options = unsafe { (lib.options_alloc)() };
    if options.is_null() {
        return Err(ImagingError::Internal("libheif could not allocate decoding options".into()));
    }
    let options = OptionsGuard(lib, options);
    // SAFETY: options points to a heif_decoding_options of at least the version it reports;
    // fields are written only where that version has them.
    unsafe {
        let o = &mut *options.1;
        o.ignore_transformations = 1;
        if o.version >= 2 {
            o.convert_hdr_to_8bit = 1;
        }
    }
    let (layout, chroma) =
        if alpha { (Layout::Rgba, CHROMA_INTERLEAVED_RGBA) } else { (Layout::Rgb, CHROMA_INTERLEAVED_RGB) };
    let mut image = std::ptr::null_mut();
    // SAFETY: handle and options are live; the image is written on success and released by
    // its guard.
    let err = unsafe { (lib.decode_image)(handle.1, &mut image, COLORSPACE_RGB, chroma, options.1) };
    check(err, &what)?;
    if image.is_null() {
        return Err(corrupt("no image decoded"));
    }
    let image = ImageGuard(lib, image);
    let mut stride: c_int = 0;
    // SAFETY: image is live; the getters read its header, the plane pointer stays valid until
    // the image is released (after the last use of `plane` below).
    let (w, h, bits, plane) = unsafe {
        (
            (lib.image_width)(image.1, CHANNEL_INTERLEAVED),
            (lib.image_height)(image.1, CHANNEL_INTERLEAVED),
            (lib.image_bits)(image.1, CHANNEL_INTERLEAVED),
            (lib.plane_readonly)(image.1, CHANNEL_INTERLEAVED, &mut stride),
        )
    };
    let c = layout.channels();
    let (Ok(w), Ok(h), Ok(stride)) = (usize::try_from(w), usize::try_from(h), usize::try_from(stride)) else {
        return Err(corrupt("decoder returned no image"));
    };
    if plane.is_null() || bits != 8 || w != full_w as usize || h != full_h as usize || stride < w * c {
        return Err(corrupt("decoder returned an unexpected pixel format"));
    }
    // The clean aperture, inside the image (the probe checked it against the same size).
    let [left, top, cw, ch] = heif.clap.unwrap_or([0, 0, full_w, full_h]).map(|v| v as usize);
    if left + cw > w || top + ch > h {
        return Err(corrupt("clean aperture outside the image"));
    }
    let (w, h) = (cw, ch);
    let row = |y: usize| {
        // SAFETY: the plane holds `full_h` rows of `stride` bytes, each with `full_w * c` bytes
        // of pixels (checked above), and the aperture lies inside them; valid while `image`
        // lives.
        unsafe { std::slice::from_raw_parts(plane.add((top + y) * stride + left * c), w * c) }
    };
    let bitmap = if scale > 1 {
        let s = scale as usize;
        let mut acc = BoxRows::new(w as u32, scale, layout);
        let mut out = Vec::with_capacity(acc.out_width() * h.div_ceil(s) * c);
        for y in 0..h {
            acc.add(row(y));
            if (y + 1) % s == 0 || y + 1 == h {
                acc.emit(&mut out);
            }
        }
        Bitmap::new(acc.out_width() as u32, h.div_ceil(s) as u32, layout, out)
    } else {
        let mut out = Vec::with_capacity(w * h * c);
        for y in 0..h {
            out.extend_from_slice(row(y));
        }
        Bitmap::new(w as u32, h as u32, layout, out)
    };
    drop(image);
    Ok(Decoded { bitmap, icc })
}

/// An ICC profile standing for an nclx colour description that is not sRGB's (Display P3,
/// BT.2020, … with an SDR transfer), so the colour step converts it like an embedded profile.
/// `None` for sRGB or unspecified, and for what an 8-bit transform cannot honestly do (PQ, HLG):
/// those are taken as sRGB.
fn nclx_profile([primaries, transfer, _]: [u16; 3]) -> Option<Vec<u8>> {
    use moxcms::{CicpColorPrimaries, CicpProfile, ColorProfile, MatrixCoefficients, TransferCharacteristics};
    if matches!(primaries, 1 | 2) && matches!(transfer, 1 | 2 | 6 | 13 | 14 | 15) {
        return None;
    }
    // Unspecified transfer with stated primaries: the sRGB curve, as browsers assume.
    let transfer = if transfer == 2 { 13 } else { transfer };
    if !matches!(transfer, 1 | 4 | 5 | 6 | 8 | 13 | 14 | 15) {
        return None;
    }
    let primaries = if primaries == 2 { 1 } else { primaries };
    let cicp = CicpProfile {
        color_primaries: CicpColorPrimaries::try_from(u8::try_from(primaries).ok()?).ok()?,
        transfer_characteristics: TransferCharacteristics::try_from(u8::try_from(transfer).ok()?).ok()?,
        matrix_coefficients: MatrixCoefficients::Bt709,
        full_range: true,
    };
    let mut profile = ColorProfile::new_from_cicp(cicp);
    // A fixed date: the same image must give the same bytes (and hit the transform cache).
    profile.creation_date_time =
        moxcms::ColorDateTime { year: 2026, month: 1, day_of_the_month: 1, hours: 0, minutes: 0, seconds: 0 };
    profile.encode().ok()
}

/// The ICC profile (`colr` of type `prof` or `rICC`), if any.
fn color_profile(lib: &Lib, handle: &HandleGuard) -> Option<Vec<u8>> {
    // SAFETY: the handle is live.
    let size = unsafe { (lib.raw_color_profile_size)(handle.1) };
    // The probe's colr box is inside the file, so the size is bounded by the input's; a
    // profile over 4 MiB would be ignored by the colour step anyway.
    if size == 0 || size > 4 << 20 {
        return None;
    }
    let mut icc = vec![0u8; size];
    // SAFETY: the buffer holds `size` bytes, which is what libheif writes.
    let err = unsafe { (lib.raw_color_profile)(handle.1, icc.as_mut_ptr().cast()) };
    (err.code == 0).then_some(icc)
}
