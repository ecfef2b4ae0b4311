//! Animated WebP through libwebp's animation encoder: frames added with their start times,
//! each encoded lossy (with the request's quality) or lossless; the encoder itself picks each
//! frame's sub-rectangle, blending and disposal against the previous canvas, so the output is
//! as small as libwebp makes it. It merges a frame identical to the one before into that one's
//! duration, so the output may hold fewer frames than went in (never different pictures).

use std::ffi::c_int;
use std::mem::MaybeUninit;

use libwebp_sys as ffi;

use super::EncodeOptions;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;

pub struct WebpAnimEncoder {
    encoder: *mut ffi::WebPAnimEncoder,
    config: ffi::WebPConfig,
    width: u32,
    height: u32,
    /// Where the next frame starts, in ms from the start.
    timestamp_ms: c_int,
    icc: Option<Vec<u8>>,
}

impl Drop for WebpAnimEncoder {
    fn drop(&mut self) {
        // SAFETY: the pointer came from WebPAnimEncoderNewInternal and is deleted exactly once.
        unsafe { ffi::WebPAnimEncoderDelete(self.encoder) }
    }
}

fn fail(what: &str) -> ImagingError {
    ImagingError::Internal(format!("animated WebP: {what}"))
}

impl WebpAnimEncoder {
    /// `plays`: 0 = forever, n = n plays.
    pub fn new(width: u32, height: u32, plays: u32, o: &EncodeOptions) -> Result<WebpAnimEncoder, ImagingError> {
        let mut config = ffi::WebPConfig::new_with_preset(ffi::WebPPreset::WEBP_PRESET_DEFAULT, f32::from(o.quality))
            .map_err(|_| fail("config"))?;
        if o.lossless {
            config.lossless = 1;
            config.quality = 75.0;
        }
        let mut options = MaybeUninit::<ffi::WebPAnimEncoderOptions>::zeroed();
        // SAFETY: options is a plain struct the first call initialises; the encoder copies it.
        let encoder = unsafe {
            if ffi::WebPAnimEncoderOptionsInitInternal(options.as_mut_ptr(), ffi::WEBP_MUX_ABI_VERSION as c_int) == 0 {
                return Err(fail("ABI mismatch"));
            }
            let mut options = options.assume_init();
            options.anim_params.loop_count = c_int::try_from(plays).unwrap_or(0);
            // Transparent: what the canvas shows before the first frame and where a frame is
            // disposed of (viewers mostly ignore it and use transparent anyway).
            options.anim_params.bgcolor = 0;
            ffi::WebPAnimEncoderNewInternal(
                width as c_int,
                height as c_int,
                &options,
                ffi::WEBP_MUX_ABI_VERSION as c_int,
            )
        };
        if encoder.is_null() {
            return Err(fail("encoder could not be created"));
        }
        Ok(WebpAnimEncoder { encoder, config, width, height, timestamp_ms: 0, icc: o.icc.clone() })
    }

    pub fn add(&mut self, b: &Bitmap, delay_ms: u32) -> Result<(), ImagingError> {
        if (b.width, b.height) != (self.width, self.height) {
            return Err(fail("frames differ in size"));
        }
        let b = match b.layout {
            Layout::Gray | Layout::GrayAlpha => &crate::colour::expand_gray(b.clone()),
            _ => b,
        };
        let mut pic = ffi::WebPPicture::new().map_err(|_| fail("picture"))?;
        pic.width = b.width as c_int;
        pic.height = b.height as c_int;
        // The animation encoder compares frames in ARGB.
        pic.use_argb = 1;
        let stride = b.stride() as c_int;
        // SAFETY: the importer copies `b.data` (w x h x channels, tightly packed) into `pic`;
        // the encoder copies what it keeps of `pic`, which is freed on every path.
        let added = unsafe {
            let imported = match b.layout {
                Layout::Rgb => ffi::WebPPictureImportRGB(&mut pic, b.data.as_ptr(), stride),
                Layout::Rgba => ffi::WebPPictureImportRGBA(&mut pic, b.data.as_ptr(), stride),
                _ => 0,
            };
            let added =
                imported != 0 && ffi::WebPAnimEncoderAdd(self.encoder, &mut pic, self.timestamp_ms, &self.config) != 0;
            ffi::WebPPictureFree(&mut pic);
            added
        };
        if !added {
            return Err(fail(&self.error()));
        }
        // Saturating: 1,000 frames of GIF's longest delay (655 s) still fit in an i32.
        self.timestamp_ms = self.timestamp_ms.saturating_add(c_int::try_from(delay_ms).unwrap_or(c_int::MAX));
        Ok(())
    }

    pub fn finish(self) -> Result<Vec<u8>, ImagingError> {
        let mut data = ffi::WebPData { bytes: std::ptr::null(), size: 0 };
        // SAFETY: a null frame ends the animation at `timestamp_ms` (the last frame's duration);
        // the assembled buffer is copied out and freed with WebPFree.
        let bytes = unsafe {
            let ok = ffi::WebPAnimEncoderAdd(self.encoder, std::ptr::null_mut(), self.timestamp_ms, std::ptr::null())
                != 0
                && ffi::WebPAnimEncoderAssemble(self.encoder, &mut data) != 0;
            let bytes = ok.then(|| std::slice::from_raw_parts(data.bytes, data.size).to_vec());
            if !data.bytes.is_null() {
                ffi::WebPFree(data.bytes as *mut _);
            }
            bytes
        };
        let bytes = bytes.ok_or_else(|| fail(&self.error()))?;
        match &self.icc {
            Some(icc) => super::webp::add_icc(&bytes, icc),
            None => Ok(bytes),
        }
    }

    fn error(&self) -> String {
        // SAFETY: libwebp returns a NUL-terminated string it owns (or null), valid until the
        // next call on the encoder; it is copied at once.
        unsafe {
            let message = ffi::WebPAnimEncoderGetError(self.encoder);
            if message.is_null() {
                "unknown error".into()
            } else {
                std::ffi::CStr::from_ptr(message).to_string_lossy().into_owned()
            }
        }
    }
}
