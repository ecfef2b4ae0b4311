//! The system's libheif (Debian's `libheif1`: libde265 for HEVC, dav1d and aom for AV1),
//! opened once with `dlopen` so that building needs nothing but the Rust toolchain: its
//! functions, the C types they take, and guards that release what it allocates. AVIF and HEIC
//! input (`decode/heif.rs`) and AVIF output through libaom (`encode/avif.rs`) use it; without
//! it the first is refused as unsupported and the second falls back to rav1e.
//!
//! It must not decide anything about images: the callers set the limits and the options.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// The shared object's name on Debian (and most distributions): the ABI of libheif 1.x.
const SONAME: &CStr = c"libheif.so.1";

/// A path to open instead of [`SONAME`] (empty: none), read once: how the tests run a machine
/// without libheif.
const LIBRARY_VAR: &str = "RESIZER_LIBHEIF";

// libheif 1.15's enums (heif.h), the values we pass.
pub const COMPRESSION_AV1: c_int = 4;
pub const COLORSPACE_RGB: c_int = 1;
pub const CHROMA_INTERLEAVED_RGB: c_int = 10;
pub const CHROMA_INTERLEAVED_RGBA: c_int = 11;
pub const CHANNEL_INTERLEAVED: c_int = 10;

/// heif_error with code 0 (`heif_error_Ok`), what a writer callback answers on success.
const OK: HeifError = HeifError { code: 0, subcode: 0, message: c"Success".as_ptr() };

#[repr(C)]
pub struct HeifError {
    pub code: c_int,
    pub subcode: c_int,
    pub message: *const c_char,
}

/// `struct heif_decoding_options` up to version 4 (libheif 1.15), always obtained from
/// `heif_decoding_options_alloc`; fields past the `version` libheif reports are not touched.
#[repr(C)]
pub struct DecodingOptions {
    pub version: u8,
    pub ignore_transformations: u8,
    start_progress: *const c_void,
    on_progress: *const c_void,
    end_progress: *const c_void,
    progress_user_data: *mut c_void,
    pub convert_hdr_to_8bit: u8,
    strict_decoding: u8,
    decoder_id: *const c_char,
}

pub enum Context {}
pub enum Handle {}
pub enum Image {}
pub enum Encoder {}

/// `struct heif_writer`: libheif calls `write` with the whole file (`heif_context_write`).
#[repr(C)]
pub struct Writer {
    pub writer_api_version: c_int,
    pub write: unsafe extern "C" fn(*mut Context, *const c_void, usize, *mut c_void) -> HeifError,
}

/// Declares `Lib`, the functions we call (name, C signature from libheif 1.15's heif.h), and
/// `symbols`, which looks each one up in an opened library (`None` if any is missing).
macro_rules! functions {
    ($($field:ident = $name:literal: $ty:ty;)*) => {
        pub struct Lib {
            $(pub $field: $ty,)*
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
    // Encoding (libheif ≥ 1.4).
    encoder_for_format = "heif_context_get_encoder_for_format":
        unsafe extern "C" fn(*mut Context, c_int, *mut *mut Encoder) -> HeifError;
    encoder_release = "heif_encoder_release": unsafe extern "C" fn(*mut Encoder);
    encoder_name = "heif_encoder_get_name": unsafe extern "C" fn(*const Encoder) -> *const c_char;
    set_lossy_quality = "heif_encoder_set_lossy_quality": unsafe extern "C" fn(*mut Encoder, c_int) -> HeifError;
    set_parameter_integer = "heif_encoder_set_parameter_integer":
        unsafe extern "C" fn(*mut Encoder, *const c_char, c_int) -> HeifError;
    set_parameter_string = "heif_encoder_set_parameter_string":
        unsafe extern "C" fn(*mut Encoder, *const c_char, *const c_char) -> HeifError;
    image_create = "heif_image_create": unsafe extern "C" fn(c_int, c_int, c_int, c_int, *mut *mut Image) -> HeifError;
    image_add_plane = "heif_image_add_plane": unsafe extern "C" fn(*mut Image, c_int, c_int, c_int, c_int) -> HeifError;
    plane = "heif_image_get_plane": unsafe extern "C" fn(*mut Image, c_int, *mut c_int) -> *mut u8;
    encode_image = "heif_context_encode_image":
        unsafe extern "C" fn(*mut Context, *const Image, *mut Encoder, *const c_void, *mut *mut Handle) -> HeifError;
    write = "heif_context_write": unsafe extern "C" fn(*mut Context, *mut Writer, *mut c_void) -> HeifError;
}

/// A libaom (`libaom.so.3`) to load before libheif, read once: the loader then gives libheif
/// that one for its `libaom.so.3`, since a library of that soname is already in the process.
/// How a machine whose distribution has an older libaom (Debian 12: 3.6) gets one with the
/// still-image tuning (3.13+, `encode/avif.rs`) without rebuilding anything.
const LIBAOM_VAR: &str = "RESIZER_LIBAOM";

/// The libaom libheif encodes with: its version as `aom_codec_version()` gives it
/// (major << 16 | minor << 8 | patch), and why [`LIBAOM_VAR`]'s library is not the one in use
/// when it was named and is not.
pub struct Libaom {
    pub version: Option<u32>,
    pub not_loaded: Option<String>,
}

/// libheif, if it could be opened. Opened once per process and never closed.
pub fn lib() -> Option<&'static Lib> {
    opened().as_ref().map(|(lib, _)| lib)
}

/// The libaom behind [`lib`]'s AV1 encoder; None without libheif.
pub fn libaom() -> Option<&'static Libaom> {
    opened().as_ref().map(|(_, aom)| aom)
}

fn opened() -> &'static Option<(Lib, Libaom)> {
    static LIB: OnceLock<Option<(Lib, Libaom)>> = OnceLock::new();
    LIB.get_or_init(|| {
        let preloaded = std::env::var_os(LIBAOM_VAR).filter(|p| !p.is_empty()).map(|p| (preload(&p), p));
        let (lib, handle) = open()?;
        let version = aom_codec_version(handle);
        let not_loaded = match preloaded {
            Some((Err(e), path)) => Some(format!("{LIBAOM_VAR}={} not loaded: {e}", path.to_string_lossy())),
            Some((Ok(wanted), path)) if wanted != version => Some(format!(
                "{LIBAOM_VAR}={} is not libheif's libaom (not named libaom.so.3?)",
                path.to_string_lossy()
            )),
            _ => None,
        };
        Some((lib, Libaom { version, not_loaded }))
    })
}

/// Loads the libaom at `path` for the process's life; its version, or dlerror's message.
fn preload(path: &std::ffi::OsStr) -> Result<Option<u32>, String> {
    let name = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path)).map_err(|e| e.to_string())?;
    // SAFETY: dlopen with a NUL-terminated name; libaom's initialisers are safe to run.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns null or a NUL-terminated message, valid until the next dl call
        // of this thread, and read before it.
        let message = unsafe {
            let e = libc::dlerror();
            (!e.is_null()).then(|| CStr::from_ptr(e).to_string_lossy().into_owned())
        };
        return Err(message.unwrap_or_else(|| "dlopen failed".into()));
    }
    Ok(aom_codec_version(handle))
}

/// `aom_codec_version()` of the libaom reachable from `handle` (itself or a library it needs).
fn aom_codec_version(handle: *mut c_void) -> Option<u32> {
    // SAFETY: handle is a live dlopen handle (never closed); the name is NUL-terminated.
    let p = unsafe { libc::dlsym(handle, c"aom_codec_version".as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: libaom's `int aom_codec_version(void)` (aom_codec.h), which only reads constants.
    let version = unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> c_int>(p)() };
    u32::try_from(version).ok()
}

fn open() -> Option<(Lib, *mut c_void)> {
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
    (err.code == 0).then_some((lib, handle))
}

/// Ok, or the libheif error's message and code (for a 422's detail, or a log).
pub fn check(err: HeifError) -> Result<(), String> {
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
    Err(format!("{message} (libheif error {})", err.code))
}

/// A `heif_writer` callback appending to the `Vec<u8>` behind `userdata`.
///
/// # Safety
/// `userdata` must point to a live `Vec<u8>` that nothing else touches during the call, and
/// `data` to `size` readable bytes.
pub unsafe extern "C" fn write_to_vec(
    _: *mut Context,
    data: *const c_void,
    size: usize,
    userdata: *mut c_void,
) -> HeifError {
    // SAFETY: the caller's contract above.
    unsafe {
        let out = &mut *userdata.cast::<Vec<u8>>();
        out.extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), size));
    }
    OK
}

/// What `heif_context_get_encoder_for_format` gives for AV1 ("AOMedia Project AV1 Encoder
/// v3.6.0"), or None when libheif or its AV1 encoder is missing. Asked once.
pub fn av1_encoder_name() -> Option<&'static str> {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    NAME.get_or_init(|| {
        with_av1_encoder(|lib, encoder| {
            // SAFETY: the encoder is live; its name is a static string of the plugin.
            let name = unsafe { (lib.encoder_name)(encoder) };
            (!name.is_null()).then(|| unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned())
        })
        .flatten()
    })
    .as_deref()
}

/// `f` on a fresh AV1 encoder of a context of its own, both released after it; None without
/// libheif or its AV1 encoder. For questions asked once about the encoder, not for encoding.
pub fn with_av1_encoder<T>(f: impl FnOnce(&'static Lib, *mut Encoder) -> T) -> Option<T> {
    let lib = lib()?;
    // SAFETY: plain allocation; null is checked.
    let ctx = ContextGuard(lib, unsafe { (lib.context_alloc)() });
    if ctx.1.is_null() {
        return None;
    }
    let mut encoder = std::ptr::null_mut();
    // SAFETY: ctx is live; the encoder is written on success and released by its guard (before
    // the context, declared earlier).
    check(unsafe { (lib.encoder_for_format)(ctx.1, COMPRESSION_AV1, &mut encoder) }).ok()?;
    let encoder = (!encoder.is_null()).then_some(EncoderGuard(lib, encoder))?;
    Some(f(lib, encoder.1))
}

/// Declares guards, each owning one libheif object and releasing it with its function when
/// dropped (a null pointer, from an allocation that failed, is left alone). Where one object
/// belongs to another (an image handle or an encoder to its context), the caller declares the
/// owner's guard first, so that it drops last.
macro_rules! guards {
    ($($(#[$doc:meta])* $name:ident($ty:ty) = $release:ident;)*) => {
        $(
            $(#[$doc])*
            pub struct $name(pub &'static Lib, pub *mut $ty);
            impl Drop for $name {
                fn drop(&mut self) {
                    if !self.1.is_null() {
                        // SAFETY: the pointer came from the libheif call the guard's doc names,
                        // and this is its one release.
                        unsafe { (self.0.$release)(self.1) }
                    }
                }
            }
        )*
    };
}

guards! {
    /// From `heif_context_alloc`.
    ContextGuard(Context) = context_free;
    /// From `heif_context_get_encoder_for_format`.
    EncoderGuard(Encoder) = encoder_release;
    /// From `heif_context_get_primary_image_handle`.
    HandleGuard(Handle) = handle_release;
    /// From `heif_decoding_options_alloc`.
    OptionsGuard(DecodingOptions) = options_free;
    /// From `heif_decode_image` or `heif_image_create`.
    ImageGuard(Image) = image_release;
}
