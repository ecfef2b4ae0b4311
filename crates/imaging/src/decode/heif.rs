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

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use super::Decoded;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;
use crate::probe::Probe;
use crate::resize::BoxRows;

/// What an AVIF or HEIC input is answered when libheif is not installed.
const MISSING: &str = "HEIC/AVIF input needs libheif: apt-get install libheif1";

/// The shared object's name on Debian (and most distributions): the ABI of libheif 1.x.
const SONAME: &CStr = c"libheif.so.1";

/// A path to open instead of [`SONAME`] (empty: none), read once: how the tests run a machine
/// without libheif.
const LIBRARY_VAR: &str = "RESIZER_LIBHEIF";

// libheif 1.15's enums (heif.h), the values we pass.
const COLORSPACE_RGB: c_int = 1;
const CHROMA_INTERLEAVED_RGB: c_int = 10;
const CHROMA_INTERLEAVED_RGBA: c_int = 11;
const CHANNEL_INTERLEAVED: c_int = 10;

#[repr(C)]
struct HeifError {
    code: c_int,
    subcode: c_int,
    message: *const c_char,
}

/// `struct heif_decoding_options` up to version 4 (libheif 1.15), always obtained from
/// `heif_decoding_options_alloc`; fields past the `version` libheif reports are not touched.
#[repr(C)]
struct DecodingOptions {
    version: u8,
    ignore_transformations: u8,
    start_progress: *const c_void,
    on_progress: *const c_void,
    end_progress: *const c_void,
    progress_user_data: *mut c_void,
    convert_hdr_to_8bit: u8,
    strict_decoding: u8,
    decoder_id: *const c_char,
}

enum Context {}
enum Handle {}
enum Image {}

/// Declares `Lib`, the functions we call (name, C signature from libheif 1.15's heif.h), and
/// `symbols`, which looks each one up in an opened library (`None` if any is missing).
macro_rules! functions {
    ($($field:ident = $name:literal: $ty:ty;)*) => {
        struct Lib {
            $($field: $ty,)*
        }

        fn symbols(handle: *mut c_void) -> Option<Lib> {
            Some(Lib {
                $($field: {
                    // SAFETY: handle is a live dlopen handle (never closed); the name is
                    // NUL-terminated.
                    let p = unsafe { libc::dlsym(handle, concat!($name, "\0").as_ptr().cast()) };
                    if p.is_null() {
                        return None;
                    }
                    // SAFETY: the symbol is libheif's function of that name, whose C signature
                    // (heif.h, libheif 1.15) is `$ty`.
                    unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
                },)*
            })
        }
    };
}

functions! {
    init = "heif_init": unsafe extern "C" fn(*mut c_void) -> HeifError;
    context_alloc = "heif_context_alloc": unsafe extern "C" fn() -> *mut Context;
    context_free = "heif_context_free": unsafe extern "C" fn(*mut Context);
    read_from_memory_without_copy = "heif_context_read_from_memory_without_copy":
        unsafe extern "C" fn(*mut Context, *const c_void, usize, *const c_void) -> HeifError;
    set_maximum_image_size_limit = "heif_context_set_maximum_image_size_limit":
        unsafe extern "C" fn(*mut Context, c_int);
    set_max_decoding_threads = "heif_context_set_max_decoding_threads": unsafe extern "C" fn(*mut Context, c_int);
    primary_image_handle = "heif_context_get_primary_image_handle":
        unsafe extern "C" fn(*mut Context, *mut *mut Handle) -> HeifError;
    handle_release = "heif_image_handle_release": unsafe extern "C" fn(*const Handle);
    handle_width = "heif_image_handle_get_ispe_width": unsafe extern "C" fn(*const Handle) -> c_int;
    handle_height = "heif_image_handle_get_ispe_height": unsafe extern "C" fn(*const Handle) -> c_int;
    handle_has_alpha = "heif_image_handle_has_alpha_channel": unsafe extern "C" fn(*const Handle) -> c_int;
    raw_color_profile_size = "heif_image_handle_get_raw_color_profile_size":
        unsafe extern "C" fn(*const Handle) -> usize;
    raw_color_profile = "heif_image_handle_get_raw_color_profile":
        unsafe extern "C" fn(*const Handle, *mut c_void) -> HeifError;
    options_alloc = "heif_decoding_options_alloc": unsafe extern "C" fn() -> *mut DecodingOptions;
    options_free = "heif_decoding_options_free": unsafe extern "C" fn(*mut DecodingOptions);
    decode_image = "heif_decode_image":
        unsafe extern "C" fn(*const Handle, *mut *mut Image, c_int, c_int, *const DecodingOptions) -> HeifError;
    image_width = "heif_image_get_width": unsafe extern "C" fn(*const Image, c_int) -> c_int;
    image_height = "heif_image_get_height": unsafe extern "C" fn(*const Image, c_int) -> c_int;
    image_bits = "heif_image_get_bits_per_pixel_range": unsafe extern "C" fn(*const Image, c_int) -> c_int;
    plane_readonly = "heif_image_get_plane_readonly": unsafe extern "C" fn(*const Image, c_int, *mut c_int) -> *const u8;
    image_release = "heif_image_release": unsafe extern "C" fn(*const Image);
}

/// libheif, or why it could not be opened. Opened once per process and never closed.
fn lib() -> Result<&'static Lib, ImagingError> {
    static LIB: OnceLock<Option<Lib>> = OnceLock::new();
    LIB.get_or_init(open).as_ref().ok_or_else(|| ImagingError::Unsupported(MISSING.into()))
}

fn open() -> Option<Lib> {
    let name = match std::env::var_os(LIBRARY_VAR) {
        Some(path) => std::ffi::CString::new(std::os::unix::ffi::OsStringExt::into_vec(path)).ok()?,
        None => SONAME.to_owned(),
    };
    if name.is_empty() {
        return None;
    }
    // SAFETY: dlopen with a NUL-terminated name; libheif's initialisers are safe to run.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return None;
    }
    let lib = symbols(handle)?;
    // SAFETY: heif_init(NULL) registers the built-in codec plugins; reference counted, and
    // never matched by heif_deinit because the library stays loaded for the process's life.
    let err = unsafe { (lib.init)(std::ptr::null_mut()) };
    (err.code == 0).then_some(lib)
}

/// The libheif error's message, for a 422's detail.
fn check(err: HeifError, what: &str) -> Result<(), ImagingError> {
    if err.code == 0 {
        return Ok(());
    }
    let message = if err.message.is_null() {
        String::new()
    } else {
        // SAFETY: libheif's messages are NUL-terminated static strings or live in the context,
        // which outlives this call.
        unsafe { CStr::from_ptr(err.message) }.to_string_lossy().into_owned()
    };
    Err(ImagingError::Corrupt(format!("{what} could not be decoded: {message} (libheif error {})", err.code)))
}

struct ContextGuard(&'static Lib, *mut Context);
impl Drop for ContextGuard {
    fn drop(&mut self) {
        // SAFETY: allocated by heif_context_alloc, freed once, after every handle and image
        // (guards declared later drop first).
        unsafe { (self.0.context_free)(self.1) }
    }
}

struct HandleGuard(&'static Lib, *mut Handle);
impl Drop for HandleGuard {
    fn drop(&mut self) {
        // SAFETY: obtained from heif_context_get_primary_image_handle, released once.
        unsafe { (self.0.handle_release)(self.1) }
    }
}

struct OptionsGuard(&'static Lib, *mut DecodingOptions);
impl Drop for OptionsGuard {
    fn drop(&mut self) {
        // SAFETY: allocated by heif_decoding_options_alloc, freed once.
        unsafe { (self.0.options_free)(self.1) }
    }
}

struct ImageGuard(&'static Lib, *mut Image);
impl Drop for ImageGuard {
    fn drop(&mut self) {
        // SAFETY: obtained from heif_decode_image, released once.
        unsafe { (self.0.image_release)(self.1) }
    }
}

/// Decodes the primary image of an AVIF or HEIC file at 1/`scale` of its stored size.
pub fn decode(input: &[u8], probe: &Probe, scale: u32) -> Result<Decoded, ImagingError> {
    let lib = lib()?;
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
