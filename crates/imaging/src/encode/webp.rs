//! WebP through libwebp (vendored): lossy with quality, or lossless; ICC added with the muxer.

use std::ffi::c_int;

use libwebp_sys as ffi;

use super::EncodeOptions;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;

pub fn encode(b: &Bitmap, o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    if matches!(b.layout, Layout::Gray | Layout::GrayAlpha) {
        // libwebp imports colour only.
        return encode(&crate::colour::expand_gray(b.clone()), o);
    }
    let fail = |what: &str| ImagingError::Internal(format!("WebP: {what}"));
    let mut config = ffi::WebPConfig::new_with_preset(ffi::WebPPreset::WEBP_PRESET_DEFAULT, f32::from(o.quality))
        .map_err(|_| fail("config"))?;
    if o.lossless {
        config.lossless = 1;
        config.quality = 75.0;
    }
    let mut pic = ffi::WebPPicture::new().map_err(|_| fail("picture"))?;
    pic.width = b.width as c_int;
    pic.height = b.height as c_int;
    pic.use_argb = c_int::from(o.lossless);
    let stride = b.stride() as c_int;
    // SAFETY: the importers copy `b.data` (w x h x channels, tightly packed) into `pic`.
    let imported = unsafe {
        match b.layout {
            Layout::Rgb => ffi::WebPPictureImportRGB(&mut pic, b.data.as_ptr(), stride),
            Layout::Rgba => ffi::WebPPictureImportRGBA(&mut pic, b.data.as_ptr(), stride),
            other => {
                ffi::WebPPictureFree(&mut pic);
                return Err(ImagingError::Internal(format!("WebP cannot hold {other:?} pixels")));
            }
        }
    };
    let mut writer = std::mem::MaybeUninit::<ffi::WebPMemoryWriter>::zeroed();
    // SAFETY: the writer is initialised here, filled by WebPEncode, copied, then cleared; the
    // picture is freed on every path.
    let encoded = unsafe {
        ffi::WebPMemoryWriterInit(writer.as_mut_ptr());
        let mut writer = writer.assume_init();
        pic.writer = Some(ffi::WebPMemoryWrite);
        pic.custom_ptr = (&mut writer as *mut ffi::WebPMemoryWriter).cast();
        let ok = imported != 0 && ffi::WebPEncode(&config, &mut pic) != 0;
        let error = pic.error_code;
        ffi::WebPPictureFree(&mut pic);
        let bytes = ok.then(|| std::slice::from_raw_parts(writer.mem, writer.size).to_vec());
        ffi::WebPMemoryWriterClear(&mut writer);
        bytes.ok_or_else(|| fail(&format!("{error:?}")))?
    };
    match &o.icc {
        Some(icc) => add_icc(&encoded, icc),
        None => Ok(encoded),
    }
}

pub(super) fn add_icc(webp: &[u8], icc: &[u8]) -> Result<Vec<u8>, ImagingError> {
    let fail = |what: &str| ImagingError::Internal(format!("WebP mux: {what}"));
    let data = ffi::WebPData { bytes: webp.as_ptr(), size: webp.len() };
    let profile = ffi::WebPData { bytes: icc.as_ptr(), size: icc.len() };
    // SAFETY: the mux copies what it is given (copy_data = 1) and is deleted on every path;
    // the assembled buffer is copied out and freed with WebPFree.
    unsafe {
        let mux = ffi::WebPMuxCreateInternal(&data, 1, ffi::WebPGetMuxABIVersion());
        if mux.is_null() {
            return Err(fail("create"));
        }
        let mut out = ffi::WebPData { bytes: std::ptr::null(), size: 0 };
        let ok = ffi::WebPMuxSetChunk(mux, c"ICCP".as_ptr(), &profile, 1) == ffi::WebPMuxError::WEBP_MUX_OK
            && ffi::WebPMuxAssemble(mux, &mut out) == ffi::WebPMuxError::WEBP_MUX_OK;
        ffi::WebPMuxDelete(mux);
        let bytes = ok.then(|| std::slice::from_raw_parts(out.bytes, out.size).to_vec());
        if !out.bytes.is_null() {
            ffi::WebPFree(out.bytes as *mut _);
        }
        bytes.ok_or_else(|| fail("assemble"))
    }
}
