//! Every frame of an animated WebP through libwebp's animation decoder, which composes each
//! frame onto the canvas itself (alpha-blending or not, disposing to transparent or not, as
//! each ANMF chunk says) and hands back the whole canvas in RGBA.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use libwebp_sys as ffi;

use super::frame::Frame;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;
use crate::limits::Limits;
use crate::probe::Probe;

/// Owns a libwebp animation decoder, which reads from the input it borrows (`'a`).
pub struct WebpFrames<'a> {
    decoder: *mut ffi::WebPAnimDecoder,
    width: u32,
    height: u32,
    loop_count: u32,
    /// The end of the last frame returned, in ms from the start (libwebp's timestamps are ends).
    previous_end: i32,
    /// The ICCP chunk: the colour step converts every frame with it, as for a still.
    icc: Option<Vec<u8>>,
    input: PhantomData<&'a [u8]>,
}

impl Drop for WebpFrames<'_> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from WebPAnimDecoderNew and is deleted exactly once.
        unsafe { ffi::WebPAnimDecoderDelete(self.decoder) }
    }
}

fn corrupt(what: &str) -> ImagingError {
    ImagingError::Corrupt(format!("animated WebP could not be decoded: {what}"))
}

impl<'a> WebpFrames<'a> {
    pub fn open(input: &'a [u8], probe: &Probe, limits: &Limits) -> Result<WebpFrames<'a>, ImagingError> {
        let mut options = MaybeUninit::<ffi::WebPAnimDecoderOptions>::zeroed();
        // SAFETY: options is a plain struct the call initialises; the decoder reads `data`,
        // which borrows `input` for 'a, as long as it lives (the PhantomData ties them).
        let decoder = unsafe {
            if ffi::WebPAnimDecoderOptionsInit(options.as_mut_ptr()) == 0 {
                return Err(ImagingError::Internal("libwebp animation decoder ABI mismatch".into()));
            }
            let mut options = options.assume_init();
            options.color_mode = ffi::WEBP_CSP_MODE::MODE_RGBA;
            // One request, one core: the dispatcher runs conversions side by side.
            options.use_threads = 0;
            let data = ffi::WebPData { bytes: input.as_ptr(), size: input.len() };
            ffi::WebPAnimDecoderNew(&data, &options)
        };
        if decoder.is_null() {
            return Err(corrupt("invalid or truncated container"));
        }
        let mut frames =
            WebpFrames { decoder, width: 0, height: 0, loop_count: 0, previous_end: 0, icc: None, input: PhantomData };
        let mut info = ffi::WebPAnimInfo::default();
        // SAFETY: the decoder is valid; info is written by the call.
        if unsafe { ffi::WebPAnimDecoderGetInfo(frames.decoder, &mut info) } == 0 {
            return Err(corrupt("no animation info"));
        }
        // The limits were judged on the probe's header walk: the decoder must see the same.
        if (info.canvas_width, info.canvas_height) != (probe.width, probe.height) {
            return Err(corrupt("canvas size disagrees with the header"));
        }
        if info.frame_count != probe.frames || u64::from(info.frame_count) > limits.max_frames {
            return Err(corrupt("frame count disagrees with the header"));
        }
        (frames.width, frames.height, frames.loop_count) = (info.canvas_width, info.canvas_height, info.loop_count);
        frames.icc = frames.icc_chunk();
        Ok(frames)
    }

    /// The ICCP chunk's bytes, read through the decoder's own demuxer (which it owns and frees).
    fn icc_chunk(&self) -> Option<Vec<u8>> {
        let mut it = MaybeUninit::<ffi::WebPChunkIterator>::zeroed();
        // SAFETY: the demuxer belongs to the decoder and lives as long as it; the fourcc is
        // NUL-terminated; the chunk's bytes point into the input and are copied before the
        // iterator is released.
        unsafe {
            let demux = ffi::WebPAnimDecoderGetDemuxer(self.decoder);
            if demux.is_null() || ffi::WebPDemuxGetChunk(demux, c"ICCP".as_ptr(), 1, it.as_mut_ptr()) == 0 {
                return None;
            }
            let mut it = it.assume_init();
            let bytes = std::slice::from_raw_parts(it.chunk.bytes, it.chunk.size).to_vec();
            ffi::WebPDemuxReleaseChunkIterator(&mut it);
            Some(bytes)
        }
    }

    pub fn icc(&self) -> Option<&[u8]> {
        self.icc.as_deref()
    }

    pub fn loop_count(&self) -> u32 {
        self.loop_count
    }

    pub fn next_frame(&mut self) -> Result<Option<Frame>, ImagingError> {
        // SAFETY: the decoder is valid.
        if unsafe { ffi::WebPAnimDecoderHasMoreFrames(self.decoder) } == 0 {
            return Ok(None);
        }
        let mut buffer: *mut u8 = std::ptr::null_mut();
        let mut end = 0;
        // SAFETY: on success `buffer` points at the decoder's canvas, width x height x 4 bytes,
        // valid until the next call; it is copied out at once.
        let canvas = unsafe {
            if ffi::WebPAnimDecoderGetNext(self.decoder, &mut buffer, &mut end) == 0 || buffer.is_null() {
                return Err(corrupt("a frame is corrupt or truncated"));
            }
            std::slice::from_raw_parts(buffer, self.width as usize * self.height as usize * 4).to_vec()
        };
        let delay_ms = u32::try_from(end.saturating_sub(self.previous_end)).unwrap_or(0);
        self.previous_end = end;
        Ok(Some(Frame { canvas: Bitmap::new(self.width, self.height, Layout::Rgba, canvas), delay_ms }))
    }
}
