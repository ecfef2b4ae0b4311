//! JPEG through libjpeg-turbo (mozjpeg's library with its libjpeg-turbo "fastest" profile: the
//! same bytes libjpeg-turbo writes, none of mozjpeg's slow trellis search).

use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, Compress};

use super::EncodeOptions;
use crate::bitmap::{Bitmap, Layout};
use crate::decode::panic_message;
use crate::error::ImagingError;

pub fn encode(b: &Bitmap, o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    let space = match b.layout {
        Layout::Rgb => ColorSpace::JCS_RGB,
        Layout::Gray => ColorSpace::JCS_GRAYSCALE,
        other => return Err(ImagingError::Internal(format!("JPEG cannot hold {other:?} pixels"))),
    };
    let result = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Vec<u8>> {
        let mut started =
            configured(space, (b.width, b.height), o, false).start_compress(output_buffer((b.width, b.height)))?;
        if let Some(icc) = &o.icc {
            started.write_icc_profile(icc);
        }
        started.write_scanlines(&b.data)?;
        started.finish()
    }));
    caught(result)
}

/// Encodes Y, Cb and Cr planes (`Layout::Gray`) as they are, with 4:2:0 chroma: Y the image's
/// size, Cb and Cr half of it rounded up. libjpeg then neither converts colour nor subsamples;
/// what `encode` writes for an RGB image of that size has the same header and tables.
pub fn encode_ycbcr(planes: &[Bitmap; 3], o: &EncodeOptions) -> Result<Vec<u8>, ImagingError> {
    let (w, h) = (planes[0].width, planes[0].height);
    let chroma = (w.div_ceil(2), h.div_ceil(2));
    if planes.iter().any(|p| p.layout != Layout::Gray)
        || (planes[1].width, planes[1].height) != chroma
        || (planes[2].width, planes[2].height) != chroma
    {
        return Err(ImagingError::Internal("YCbCr planes of unexpected sizes".into()));
    }
    // libjpeg reads whole 8x8 blocks (16x16 luma per 4:2:0 MCU): each plane is padded to its
    // blocks by repeating its last column and row, as libjpeg's own edge expansion does.
    let padded: Vec<Vec<u8>> = planes
        .iter()
        .zip([8, 16, 16])
        .map(|(p, luma_per_block)| pad_to_blocks(p, w.div_ceil(luma_per_block) * 8, h.div_ceil(luma_per_block) * 8))
        .collect();
    let result = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Vec<u8>> {
        let mut started = configured(ColorSpace::JCS_YCbCr, (w, h), o, true).start_compress(output_buffer((w, h)))?;
        if let Some(icc) = &o.icc {
            started.write_icc_profile(icc);
        }
        let rows: Vec<&[u8]> = padded.iter().map(Vec::as_slice).collect();
        if !started.write_raw_data(&rows) {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        started.finish()
    }));
    caught(result)
}

/// A compressor for `size` pixels of `space` with the options' quality and progression, taking
/// planes as they are when `raw` is set (YCbCr only).
fn configured(space: ColorSpace, size: (u32, u32), o: &EncodeOptions, raw: bool) -> Compress {
    let mut c = Compress::new(space);
    c.set_fastest_defaults();
    c.set_size(size.0 as usize, size.1 as usize);
    c.set_quality(f32::from(o.quality));
    if o.progressive {
        c.set_progressive_mode();
    }
    // jpeg_set_defaults samples a YCbCr image's chroma 2x2, as it does an RGB one's.
    c.set_raw_data_in(raw);
    c
}

/// Room for the output: about 3 bits per pixel (the buffer grows if it needs more).
fn output_buffer(size: (u32, u32)) -> Vec<u8> {
    Vec::with_capacity(size.0 as usize * size.1 as usize * 3 / 8 + 1024)
}

/// `p` padded to `width` x `height` (at least its size) by repeating its last column and row.
fn pad_to_blocks(p: &Bitmap, width: u32, height: u32) -> Vec<u8> {
    let (pw, ph, w) = (p.width as usize, p.height as usize, width as usize);
    let mut out = Vec::with_capacity(w * height as usize);
    for row in p.data.chunks_exact(pw) {
        out.extend_from_slice(row);
        let last = row[pw - 1];
        out.resize(out.len() + w - pw, last);
    }
    let last_row = out.len() - w..out.len();
    for _ in ph..height as usize {
        out.extend_from_within(last_row.clone());
    }
    out
}

fn caught(result: std::thread::Result<std::io::Result<Vec<u8>>>) -> Result<Vec<u8>, ImagingError> {
    match result {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(ImagingError::Internal(e.to_string())),
        Err(panic) => Err(ImagingError::Internal(panic_message(&panic))),
    }
}
