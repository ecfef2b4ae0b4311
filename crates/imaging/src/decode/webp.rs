//! WebP through libwebp (vendored): the demuxer finds the first frame and the ICC profile,
//! the decoder scales on load for stills.

use std::ffi::c_int;
use std::mem::MaybeUninit;

use libwebp_sys as ffi;

use super::Decoded;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;
use crate::probe::Probe;

/// Owns a libwebp demuxer and frees it on every path.
struct Demuxer(*mut ffi::WebPDemuxer);

impl Drop for Demuxer {
    fn drop(&mut self) {
        // SAFETY: the pointer came from WebPDemuxInternal and is freed exactly once.
        unsafe { ffi::WebPDemuxDelete(self.0) }
    }
}

pub fn decode(input: &[u8], probe: &Probe, scale: u32) -> Result<Decoded, ImagingError> {
    let corrupt = |what: &str| ImagingError::Corrupt(format!("WebP could not be decoded: {what}"));
    let data = ffi::WebPData { bytes: input.as_ptr(), size: input.len() };
    // SAFETY: `data` borrows `input`, which outlives the demuxer (dropped at the end of scope).
    let demux = unsafe { ffi::WebPDemuxInternal(&data, 0, std::ptr::null_mut(), ffi::WebPGetDemuxABIVersion()) };
    if demux.is_null() {
        return Err(corrupt("invalid container"));
    }
    let demux = Demuxer(demux);
    // SAFETY: demux is valid; the getters read its parsed header.
    let (canvas_w, canvas_h) = unsafe {
        (
            ffi::WebPDemuxGetI(demux.0, ffi::WebPFormatFeature::WEBP_FF_CANVAS_WIDTH),
            ffi::WebPDemuxGetI(demux.0, ffi::WebPFormatFeature::WEBP_FF_CANVAS_HEIGHT),
        )
    };
    if canvas_w != probe.width || canvas_h != probe.height {
        return Err(corrupt("canvas size disagrees with the header"));
    }
    let icc = chunk(&demux, b"ICCP\0");
    let mut iter = MaybeUninit::<ffi::WebPIterator>::zeroed();
    // SAFETY: iter is written by WebPDemuxGetFrame and released below.
    let found = unsafe { ffi::WebPDemuxGetFrame(demux.0, 1, iter.as_mut_ptr()) };
    if found == 0 {
        return Err(corrupt("no frame"));
    }
    // SAFETY: WebPDemuxGetFrame returned true, so iter is initialised.
    let mut iter = unsafe { iter.assume_init() };
    let frame = (iter.x_offset, iter.y_offset, iter.width, iter.height, iter.has_alpha != 0);
    // SAFETY: the fragment points into `input`, valid while `demux` lives.
    let fragment = unsafe { std::slice::from_raw_parts(iter.fragment.bytes, iter.fragment.size) };
    let whole_canvas = frame.0 == 0 && frame.1 == 0 && frame.2 as u32 == canvas_w && frame.3 as u32 == canvas_h;
    let result = if whole_canvas {
        decode_frame(fragment, frame.4, scale).map(|bitmap| Decoded { bitmap, icc })
    } else {
        // An animation whose first frame covers part of the canvas: compose it on a canvas at
        // the shrink-on-load scale, so a tiny frame on a huge canvas costs a small canvas.
        decode_frame(fragment, true, scale).and_then(|bitmap| {
            let s = scale.max(1);
            let mut canvas = Bitmap::filled(canvas_w.div_ceil(s), canvas_h.div_ceil(s), Layout::Rgba, &[0, 0, 0, 0]);
            let bitmap = crate::extend::with_alpha(bitmap);
            let (x, y) = (frame.0.max(0) as u32 / s, frame.1.max(0) as u32 / s);
            // Rounding at the scaled size can push the frame a pixel past the edge: clip it.
            let w = bitmap.width.min(canvas.width.saturating_sub(x));
            let h = bitmap.height.min(canvas.height.saturating_sub(y));
            if w == 0 || h == 0 {
                return Err(corrupt("frame lies outside the canvas"));
            }
            canvas.paste(&bitmap.crop(0, 0, w, h), x, y);
            Ok(Decoded { bitmap: canvas, icc })
        })
    };
    // SAFETY: releases the iterator obtained above.
    unsafe { ffi::WebPDemuxReleaseIterator(&mut iter) };
    result
}

fn chunk(demux: &Demuxer, fourcc: &[u8; 5]) -> Option<Vec<u8>> {
    let mut it = MaybeUninit::<ffi::WebPChunkIterator>::zeroed();
    // SAFETY: fourcc is NUL-terminated; the iterator is released before returning.
    unsafe {
        if ffi::WebPDemuxGetChunk(demux.0, fourcc.as_ptr().cast(), 1, it.as_mut_ptr()) == 0 {
            return None;
        }
        let mut it = it.assume_init();
        let bytes = std::slice::from_raw_parts(it.chunk.bytes, it.chunk.size).to_vec();
        ffi::WebPDemuxReleaseChunkIterator(&mut it);
        Some(bytes)
    }
}

fn decode_frame(bitstream: &[u8], alpha: bool, scale: u32) -> Result<Bitmap, ImagingError> {
    let corrupt = |what: String| ImagingError::Corrupt(format!("WebP could not be decoded: {what}"));
    let mut config = ffi::WebPDecoderConfig::new().map_err(|_| corrupt("decoder ABI mismatch".into()))?;
    // SAFETY: config.input is a plain struct written by the call.
    let status = unsafe { ffi::WebPGetFeatures(bitstream.as_ptr(), bitstream.len(), &mut config.input) };
    if status != ffi::VP8StatusCode::VP8_STATUS_OK {
        return Err(corrupt(format!("{status:?}")));
    }
    let alpha = alpha || config.input.has_alpha != 0;
    let (w, h) = (config.input.width, config.input.height);
    if w <= 0 || h <= 0 {
        return Err(corrupt("empty frame".into()));
    }
    let layout = if alpha { Layout::Rgba } else { Layout::Rgb };
    config.output.colorspace = if alpha { ffi::WEBP_CSP_MODE::MODE_RGBA } else { ffi::WEBP_CSP_MODE::MODE_RGB };
    let (mut ow, mut oh) = (w, h);
    if scale > 1 {
        let s = scale as c_int;
        ow = ((w + s - 1) / s).max(1);
        oh = ((h + s - 1) / s).max(1);
        config.options.use_scaling = 1;
        config.options.scaled_width = ow;
        config.options.scaled_height = oh;
    }
    // Decode straight into our own buffer: no copy, and the size is ours to bound.
    let c = layout.channels();
    let mut data = vec![0u8; ow as usize * oh as usize * c];
    config.output.is_external_memory = 1;
    config.output.u.RGBA = ffi::WebPRGBABuffer { rgba: data.as_mut_ptr(), stride: ow * c as c_int, size: data.len() };
    // SAFETY: the output buffer is ours, sized for ow x oh x c with that stride.
    let status = unsafe { ffi::WebPDecode(bitstream.as_ptr(), bitstream.len(), &mut config) };
    // SAFETY: frees libwebp's private memory (ours is external and untouched).
    unsafe { ffi::WebPFreeDecBuffer(&mut config.output) };
    if status != ffi::VP8StatusCode::VP8_STATUS_OK {
        return Err(corrupt(match status {
            ffi::VP8StatusCode::VP8_STATUS_NOT_ENOUGH_DATA => "data is truncated".into(),
            other => format!("{other:?}"),
        }));
    }
    Ok(Bitmap::new(ow as u32, oh as u32, layout, data))
}
