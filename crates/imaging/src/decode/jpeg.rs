//! JPEG through libjpeg-turbo (vendored as mozjpeg): DCT-domain scaling, CMYK/YCCK, ICC.
//! libjpeg reports fatal errors by unwinding; every call is wrapped in `catch_unwind` so a
//! corrupt file becomes a typed error and never escapes as a panic.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, Decompress, Marker};

use super::Decoded;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;
use crate::probe::Probe;

pub fn decode(input: &[u8], probe: &Probe, scale: u32) -> Result<Decoded, ImagingError> {
    let info = probe.jpeg.as_ref();
    if info.is_some_and(|j| !j.has_eoi) {
        // libjpeg would pad the missing data with grey and call it a success.
        return Err(ImagingError::Corrupt("JPEG data is truncated (no end-of-image marker)".into()));
    }
    let adobe_inverted = info.is_some_and(|j| j.adobe_transform.is_some());
    let numerator = match scale {
        8 => 1,
        4 => 2,
        2 => 4,
        _ => 8,
    };
    let result = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Decoded> {
        let mut d = Decompress::with_markers(&[Marker::APP(2)]).from_mem(input)?;
        d.scale(numerator);
        // Chroma by replication instead of triangular interpolation: every output is resampled
        // by at least a little afterwards, which hides the difference (mean SSIM on the photo
        // corpus 0.94638 vs 0.94636 fancy), and it lets libjpeg merge upsampling with colour
        // conversion in one pass, about 15 % less CPU per image (docs/benchmarks.md).
        d.do_fancy_upsampling(false);
        let icc = icc_profile(&d);
        let (layout, started) = match d.color_space() {
            ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => (Layout::Cmyk, d.to_colorspace(ColorSpace::JCS_CMYK)?),
            ColorSpace::JCS_GRAYSCALE => (Layout::Gray, d.grayscale()?),
            _ => (Layout::Rgb, d.rgb()?),
        };
        let mut started = started;
        let (w, h) = (started.width(), started.height());
        let mut data: Vec<u8> = started.read_scanlines()?;
        started.finish()?;
        if data.len() != w * h * layout.channels() {
            return Err(std::io::Error::other("JPEG ended before all rows were decoded"));
        }
        if layout == Layout::Cmyk && adobe_inverted {
            // Photoshop writes CMYK inverted (255 = no ink) and flags it with an Adobe marker.
            data.iter_mut().for_each(|v| *v = 255 - *v);
        }
        let bitmap = Bitmap::new(w as u32, h as u32, layout, data);
        Ok(Decoded { bitmap, icc })
    }));
    match result {
        Ok(Ok(decoded)) => Ok(decoded),
        Ok(Err(e)) => Err(ImagingError::Corrupt(format!("JPEG could not be decoded: {e}"))),
        Err(panic) => Err(ImagingError::Corrupt(format!("JPEG could not be decoded: {}", panic_message(&panic)))),
    }
}

/// Reassembles an ICC profile split over APP2 "ICC_PROFILE" markers (sequence-numbered chunks).
fn icc_profile<R>(d: &Decompress<R>) -> Option<Vec<u8>> {
    let mut chunks: Vec<(u8, &[u8])> = d
        .markers()
        .filter(|m| m.marker == Marker::APP(2))
        .filter_map(|m| m.data.strip_prefix(b"ICC_PROFILE\0"))
        .filter_map(|rest| Some((*rest.first()?, rest.get(2..)?)))
        .collect();
    if chunks.is_empty() {
        return None;
    }
    chunks.sort_by_key(|c| c.0);
    Some(chunks.into_iter().flat_map(|c| c.1.iter().copied()).collect())
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "decoder failed".to_string()
    }
}
