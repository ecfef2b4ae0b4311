//! JPEG through libjpeg-turbo (vendored as mozjpeg), driven through its C API: DCT-domain
//! scaling, CMYK/YCCK, ICC. libjpeg reports fatal errors by unwinding (`error_exit` below); every
//! call is wrapped in `catch_unwind` so a corrupt file becomes a typed error and never escapes as a
//! panic. The mozjpeg crate's decoder is not used: it asks for one row per `jpeg_read_scanlines`
//! call, and with 2x2-subsampled chroma libjpeg then decodes two rows and copies the second out of a
//! spare buffer on the next call (2.3 % of the CPU of a photo, docs/benchmarks.md).

use std::ffi::{c_int, c_ulong};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg_sys as ffi;
use mozjpeg_sys::J_COLOR_SPACE;

use super::Decoded;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;
use crate::probe::Probe;

pub fn decode(input: &[u8], probe: &Probe, scale: u32) -> Result<Decoded, ImagingError> {
    refuse_truncated(probe)?;
    let adobe_inverted = probe.jpeg.as_ref().is_some_and(|j| j.adobe_transform.is_some());
    decode_caught(input, numerator_for(scale), adobe_inverted, FAST_REFINE).map(|(decoded, _)| decoded)
}

/// Whether this build has the faster decoder of progressive JPEG's refinement scans
/// (csrc/jpeg_refine.c; build.rs leaves it out when the vendored libjpeg-turbo does not match).
const FAST_REFINE: bool = cfg!(not(jpeg_refine_off));

#[cfg(not(jpeg_refine_off))]
extern "C-unwind" {
    /// Installs csrc/jpeg_refine.c's decoder on a created decompressor (before
    /// `jpeg_start_decompress`); it may unwind like any libjpeg call (its pool allocation).
    fn resizer_jpeg_fast_refine(cinfo: *mut ffi::jpeg_decompress_struct) -> c_int;
    /// How many refinement scans that decoder has been given so far.
    fn resizer_jpeg_refine_scans(cinfo: *mut ffi::jpeg_decompress_struct) -> c_int;
}

/// `decode_scaled` with libjpeg's fatal errors caught and every failure typed; with it, the
/// number of refinement scans the faster decoder decoded.
fn decode_caught(
    input: &[u8],
    numerator: u32,
    adobe_inverted: bool,
    fast_refine: bool,
) -> Result<(Decoded, u32), ImagingError> {
    caught(|| decode_scaled(input, numerator, adobe_inverted, fast_refine))
}

/// `decode` with libjpeg's fatal errors caught and every failure typed.
fn caught<T>(decode: impl FnOnce() -> Result<T, &'static str>) -> Result<T, ImagingError> {
    match catch_unwind(AssertUnwindSafe(decode)) {
        Ok(Ok(decoded)) => Ok(decoded),
        Ok(Err(e)) => Err(ImagingError::Corrupt(format!("JPEG could not be decoded: {e}"))),
        Err(panic) => Err(ImagingError::Corrupt(format!("JPEG could not be decoded: {}", panic_message(&panic)))),
    }
}

/// A file whose end-of-image marker is missing: libjpeg would pad the missing data with grey
/// and call it a success.
fn refuse_truncated(probe: &Probe) -> Result<(), ImagingError> {
    if probe.jpeg.as_ref().is_some_and(|j| !j.has_eoi) {
        return Err(ImagingError::Corrupt("JPEG data is truncated (no end-of-image marker)".into()));
    }
    Ok(())
}

/// The decode at `numerator`/8 of the size. libjpeg's fatal errors unwind out of here.
fn decode_scaled(
    input: &[u8],
    numerator: u32,
    adobe_inverted: bool,
    fast_refine: bool,
) -> Result<(Decoded, u32), &'static str> {
    let mut d = open(input, fast_refine)?;
    let cinfo = &mut *d.cinfo;
    cinfo.scale_num = numerator;
    cinfo.scale_denom = 8;
    // Chroma by replication instead of triangular interpolation: every output is resampled
    // by at least a little afterwards, which hides the difference (mean SSIM on the photo
    // corpus 0.94638 vs 0.94636 fancy), and it lets libjpeg merge upsampling with colour
    // conversion in one pass, about 15 % less CPU per image (docs/benchmarks.md).
    cinfo.do_fancy_upsampling = 0;
    let icc = icc_profile(cinfo);
    let layout = match cinfo.jpeg_color_space {
        J_COLOR_SPACE::JCS_CMYK | J_COLOR_SPACE::JCS_YCCK => Layout::Cmyk,
        J_COLOR_SPACE::JCS_GRAYSCALE => Layout::Gray,
        _ => Layout::Rgb,
    };
    cinfo.out_color_space = match layout {
        Layout::Cmyk => J_COLOR_SPACE::JCS_CMYK,
        Layout::Gray => J_COLOR_SPACE::JCS_GRAYSCALE,
        _ => J_COLOR_SPACE::JCS_RGB,
    };
    // SAFETY: as above; the header has been read.
    if unsafe { ffi::jpeg_start_decompress(cinfo) } == 0 {
        return Err("the JPEG decoder suspended (no more input)");
    }
    let (w, h) = (cinfo.output_width as usize, cinfo.output_height as usize);
    if w == 0 || h == 0 {
        return Err("the JPEG has no pixels");
    }
    if cinfo.output_components as usize != layout.channels() {
        return Err("the JPEG decoder's output does not have the expected channels");
    }
    let stride = w * layout.channels();
    // Not zeroed first: libjpeg writes every byte, and clearing the largest buffer of the
    // pipeline was about 2.7 % of a photo's CPU (memset 4.3 % of a profile's samples against
    // 1.6 % without it). Its length is set once all rows are in.
    let mut data: Vec<u8> = Vec::with_capacity(stride * h);
    let base = data.spare_capacity_mut().as_mut_ptr().cast::<u8>();
    // SAFETY (of the `add`): each offset is inside the capacity of `stride * h` bytes.
    let mut rows: Vec<*mut u8> = (0..h).map(|y| unsafe { base.add(y * stride) }).collect();
    while cinfo.output_scanline < cinfo.output_height {
        let at = cinfo.output_scanline as usize;
        let left = (h - at) as ffi::JDIMENSION;
        // SAFETY: `rows[at..]` holds `h - at` pointers to rows of `stride` bytes each in `data`'s
        // capacity, and libjpeg writes at most `left` rows of `output_width` x
        // `output_components` (= `stride`) bytes.
        let read = unsafe { ffi::jpeg_read_scanlines(cinfo, rows[at..].as_mut_ptr(), left) };
        if read == 0 {
            return Err("JPEG ended before all rows were decoded");
        }
    }
    drop(rows);
    // SAFETY: libjpeg has written all `h` rows of `stride` bytes (output_scanline reached
    // output_height, each call writing whole rows).
    unsafe { data.set_len(stride * h) };
    // SAFETY: every row has been read.
    unsafe { ffi::jpeg_finish_decompress(cinfo) };
    if layout == Layout::Cmyk && adobe_inverted {
        // Photoshop writes CMYK inverted (255 = no ink) and flags it with an Adobe marker.
        data.iter_mut().for_each(|v| *v = 255 - *v);
    }
    #[cfg(not(jpeg_refine_off))]
    // SAFETY: the hook was installed on this decompressor when `fast_refine` is set.
    let refine_scans = if fast_refine { unsafe { resizer_jpeg_refine_scans(cinfo) as u32 } } else { 0 };
    #[cfg(jpeg_refine_off)]
    let refine_scans = 0;
    let bitmap = Bitmap::new(w as u32, h as u32, layout, data);
    Ok((Decoded { bitmap, icc }, refine_scans))
}

/// A decompressor for `input` with its header read (and the faster refinement decoder
/// installed when `fast_refine` is set). libjpeg's fatal errors unwind out of here.
fn open(input: &[u8], fast_refine: bool) -> Result<Decompressor<'_>, &'static str> {
    let mut d = Decompressor::new(input);
    let cinfo = &mut *d.cinfo;
    #[cfg(not(jpeg_refine_off))]
    if fast_refine {
        // SAFETY: a created decompressor, before jpeg_start_decompress (see the declaration).
        unsafe { resizer_jpeg_fast_refine(cinfo) };
    }
    #[cfg(jpeg_refine_off)]
    let _ = fast_refine; // nothing to install in this build

    // SAFETY: `cinfo` was created by `Decompressor::new` and reads from `input`, which outlives
    // `d`. Each call on it, here and in the callers, is made in the state libjpeg requires for
    // it (header read, then started, then rows read); a fatal error unwinds through
    // `error_exit`, and `d`'s drop destroys the decompressor in any state.
    unsafe {
        ffi::jpeg_save_markers(cinfo, ffi::jpeg_marker::APP0 as c_int + 2, 0xFFFF);
        // require_image = FALSE: a tables-only file is answered here instead of by an unwind.
        if ffi::jpeg_read_header(cinfo, 0) != 1 {
            return Err("no image in the JPEG file");
        }
    }
    Ok(d)
}

/// A YCbCr JPEG's three planes as they are stored, each at its own sampling: what the
/// JPEG-to-JPEG path (ycbcr.rs) resizes, with no upsampling and no colour conversion.
pub struct YcbcrPlanes {
    /// Y, Cb and Cr as libjpeg wrote them: whole 8x8 blocks (or smaller, when scaled), so each
    /// `Layout::Gray` bitmap can be wider and taller than its picture. Past the picture's edge
    /// are the blocks' own pixels, the encoder's edge padding decoded.
    pub planes: [Bitmap; 3],
    /// The picture's size in Y: the decoded image's size.
    pub picture: (u32, u32),
    /// How many pixels of the decoded image one sample of Cb and of Cr spans, across and down
    /// (2 for a 4:2:0 file decoded at full size).
    pub chroma_spans: [(f64, f64); 2],
}

/// Decodes a YCbCr JPEG at 1/`scale` of its size into its planes, written into `buffers` (their
/// capacity is reused), or `None` when the file is something else the RGB path must take: not
/// three YCbCr components, an ICC profile to apply, or a luma plane sampled less finely than a
/// chroma one.
pub fn decode_ycbcr(
    input: &[u8],
    probe: &Probe,
    scale: u32,
    buffers: [Vec<u8>; 3],
) -> Result<Option<YcbcrPlanes>, ImagingError> {
    refuse_truncated(probe)?;
    caught(|| decode_planes(input, numerator_for(scale), buffers))
}

/// libjpeg's scale numerator (over 8) for a shrink-on-load denominator.
fn numerator_for(scale: u32) -> u32 {
    match scale {
        8 => 1,
        4 => 2,
        2 => 4,
        _ => 8,
    }
}

/// The planes at `numerator`/8 of the size, read with `jpeg_read_raw_data`. libjpeg's fatal
/// errors unwind out of here.
fn decode_planes(input: &[u8], numerator: u32, buffers: [Vec<u8>; 3]) -> Result<Option<YcbcrPlanes>, &'static str> {
    let mut d = open(input, FAST_REFINE)?;
    let cinfo = &mut *d.cinfo;
    if cinfo.jpeg_color_space != J_COLOR_SPACE::JCS_YCbCr || cinfo.num_components != 3 || icc_profile(cinfo).is_some() {
        return Ok(None);
    }
    let (max_h, max_v) = (cinfo.max_h_samp_factor, cinfo.max_v_samp_factor);
    // SAFETY: after the header, `comp_info` points at `num_components` (3) entries in the
    // decompressor's pool, alive as long as `cinfo`; their sampling and block counts are copied
    // out before libjpeg is called again.
    let components: Vec<(i32, i32, u32, u32)> = unsafe { std::slice::from_raw_parts(cinfo.comp_info, 3) }
        .iter()
        .map(|c| (c.h_samp_factor, c.v_samp_factor, c.width_in_blocks, c.height_in_blocks))
        .collect();
    if components[0].0 != max_h || components[0].1 != max_v || !(1..=8).contains(&numerator) {
        return Ok(None);
    }
    cinfo.scale_num = numerator;
    cinfo.scale_denom = 8;
    cinfo.raw_data_out = 1;
    cinfo.out_color_space = J_COLOR_SPACE::JCS_YCbCr;
    // SAFETY: as in `open`; the header has been read.
    if unsafe { ffi::jpeg_start_decompress(cinfo) } == 0 {
        return Err("the JPEG decoder suspended (no more input)");
    }
    let (image_w, image_h) = (cinfo.image_width as usize, cinfo.image_height as usize);
    let (out_w, out_h) = (cinfo.output_width as usize, cinfo.output_height as usize);
    if out_w == 0 || out_h == 0 {
        return Err("the JPEG has no pixels");
    }
    // Each component's IDCT size, as jdmaster.c picks it (the fields are private): the
    // smallest, `numerator`, doubled for a chroma component while its sampling allows, so
    // that chroma comes out closer to the luma's size.
    let min_size = numerator as i32;
    let idct_size = |h: i32, v: i32| {
        let mut size = min_size;
        while size < 8 && (max_h * min_size) % (h * size * 2) == 0 && (max_v * min_size) % (v * size * 2) == 0 {
            size *= 2;
        }
        size
    };
    let imcu_rows = image_h.div_ceil(max_v as usize * 8);
    struct Plane {
        /// The picture, in samples of this plane.
        size: (usize, usize),
        /// libjpeg's rows: whole blocks across, and the rows of whole blocks down.
        stride: usize,
        rows: usize,
        rows_per_imcu: usize,
        data: Vec<u8>,
        span: (f64, f64),
    }
    let mut planes: Vec<Plane> = components
        .iter()
        .zip(buffers)
        .map(|(&(h, v, width_in_blocks, height_in_blocks), mut data)| {
            let size = idct_size(h, v);
            let stride = width_in_blocks as usize * size as usize;
            let rows_per_imcu = (v * size) as usize;
            data.clear();
            data.reserve(stride * rows_per_imcu * imcu_rows);
            Plane {
                size: (
                    (image_w * (h * size) as usize).div_ceil(max_h as usize * 8),
                    (image_h * (v * size) as usize).div_ceil(max_v as usize * 8),
                ),
                stride,
                rows: height_in_blocks as usize * size as usize,
                rows_per_imcu,
                data,
                span: (
                    f64::from(max_h * min_size) / f64::from(h * size),
                    f64::from(max_v * min_size) / f64::from(v * size),
                ),
            }
        })
        .collect();
    if planes[0].size != (out_w, out_h)
        || planes.iter().any(|p| p.stride < p.size.0 || p.rows < p.size.1 || p.rows > p.rows_per_imcu * imcu_rows)
    {
        // Not what this code expects of libjpeg: the RGB way decodes it instead.
        return Ok(None);
    }
    let lines_per_imcu = (max_v * min_size) as ffi::JDIMENSION;
    let mut rows: [Vec<*mut u8>; 3] = Default::default();
    for imcu in 0.. {
        if cinfo.output_scanline >= cinfo.output_height {
            break;
        }
        if imcu >= imcu_rows {
            return Err("the JPEG decoder gave more rows than the image has");
        }
        // Row pointers for this iMCU row of each plane, inside its capacity of
        // `stride * rows_per_imcu * imcu_rows` bytes.
        for (rows, p) in rows.iter_mut().zip(&mut planes) {
            let base = p.data.spare_capacity_mut().as_mut_ptr().cast::<u8>();
            let first = imcu * p.rows_per_imcu;
            rows.clear();
            // SAFETY (of the `add`): row `first + r` < `rows_per_imcu * imcu_rows` starts inside
            // the capacity.
            rows.extend((0..p.rows_per_imcu).map(|r| unsafe { base.add((first + r) * p.stride) }));
        }
        let mut image: [*mut *mut u8; 3] = [rows[0].as_mut_ptr(), rows[1].as_mut_ptr(), rows[2].as_mut_ptr()];
        // SAFETY: raw output was asked for, so libjpeg writes one iMCU row: for each component
        // at most `v * size` rows (the pointers above) of at most `width_in_blocks * size`
        // (= `stride`) samples.
        let read = unsafe { ffi::jpeg_read_raw_data(cinfo, image.as_mut_ptr(), lines_per_imcu) };
        if read == 0 {
            return Err("JPEG ended before all rows were decoded");
        }
    }
    // SAFETY: every row has been read.
    unsafe { ffi::jpeg_finish_decompress(cinfo) };
    let [y, cb, cr]: [Plane; 3] = planes.try_into().map_err(|_| "the JPEG has not three planes")?;
    let done = |mut p: Plane| {
        // SAFETY: libjpeg wrote every block of the component: `stride` samples of each of the
        // `rows` rows of whole blocks (the rows of the last iMCU row past them are not kept).
        unsafe { p.data.set_len(p.stride * p.rows) };
        (Bitmap::new(p.stride as u32, p.rows as u32, Layout::Gray, p.data), p.span)
    };
    let (y, cb, cr) = (done(y), done(cb), done(cr));
    Ok(Some(YcbcrPlanes {
        planes: [y.0, cb.0, cr.0],
        picture: (out_w as u32, out_h as u32),
        chroma_spans: [cb.1, cr.1],
    }))
}

/// A libjpeg decompressor reading from a slice it borrows; destroyed on drop, also when a fatal
/// error unwinds out of libjpeg half-way.
struct Decompressor<'input> {
    // Both boxed: libjpeg keeps pointers to the error manager and hands the struct's address to
    // its callbacks, so neither may move while it lives.
    cinfo: Box<ffi::jpeg_decompress_struct>,
    _err: Box<ffi::jpeg_error_mgr>,
    _input: PhantomData<&'input [u8]>,
}

impl<'input> Decompressor<'input> {
    fn new(input: &'input [u8]) -> Decompressor<'input> {
        // SAFETY: all-zero is the state libjpeg expects before `jpeg_std_error` and
        // `jpeg_CreateDecompress` fill them in (its own examples start from uninitialised
        // memory); the error manager is set before anything can fail, and the decompressor is
        // owned by `d` before the first call that can unwind, so drop destroys it.
        unsafe {
            let mut err: Box<ffi::jpeg_error_mgr> = Box::new(std::mem::zeroed());
            ffi::jpeg_std_error(&mut err);
            err.error_exit = Some(error_exit);
            err.emit_message = Some(ignore_warning);
            let mut d = Decompressor { cinfo: Box::new(std::mem::zeroed()), _err: err, _input: PhantomData };
            d.cinfo.common.err = &mut *d._err;
            ffi::jpeg_create_decompress(&mut *d.cinfo);
            ffi::jpeg_mem_src(&mut d.cinfo, input.as_ptr(), input.len() as c_ulong);
            d
        }
    }
}

impl Drop for Decompressor<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `new` (or still all-zero with its error manager set, if creating it
        // failed, which `jpeg_destroy` accepts: it frees nothing without a memory manager).
        unsafe { ffi::jpeg_destroy_decompress(&mut self.cinfo) };
    }
}

/// libjpeg's `JMSG_LENGTH_MAX` (jpegint.h): the longest message `format_message` writes.
const JMSG_LENGTH_MAX: usize = 200;

/// libjpeg's fatal error: its message, unwound to `decode`'s `catch_unwind` (libjpeg's C is built
/// with unwind tables for this, mozjpeg-sys's `unwinding` feature). `resume_unwind` skips the
/// panic hook: a corrupt upload is not a bug to print.
#[cold]
extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let mut buffer = [0u8; JMSG_LENGTH_MAX];
    // SAFETY: `err` is the error manager `Decompressor::new` set, and its `format_message`
    // (libjpeg's) writes at most JMSG_LENGTH_MAX bytes, NUL included, into the buffer. The
    // binding declares the buffer `&[u8; 80]`, although C writes up to 200 bytes into it, so
    // it is called through a pointer of the same ABI.
    let message = unsafe {
        match cinfo.err.as_ref().and_then(|err| err.format_message) {
            Some(format) => {
                let format: unsafe extern "C-unwind" fn(*mut ffi::jpeg_common_struct, *mut u8) =
                    std::mem::transmute(format);
                format(cinfo, buffer.as_mut_ptr());
                let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
                String::from_utf8_lossy(&buffer[..end]).into_owned()
            }
            None => "libjpeg failed".to_owned(),
        }
    };
    std::panic::resume_unwind(Box::new(format!("libjpeg: {message}")));
}

/// Warnings (a premature end, extraneous bytes before a marker) are not errors: the missing end
/// is refused from the probe before decoding, and libjpeg recovers from the rest.
extern "C-unwind" fn ignore_warning(_cinfo: &mut ffi::jpeg_common_struct, _level: c_int) {}

/// Reassembles an ICC profile split over APP2 "ICC_PROFILE" markers (sequence-numbered chunks).
fn icc_profile(cinfo: &ffi::jpeg_decompress_struct) -> Option<Vec<u8>> {
    let mut chunks: Vec<(u8, &[u8])> = Vec::new();
    let mut marker = cinfo.marker_list;
    // SAFETY: libjpeg's list of the saved markers (APP2 only, see `jpeg_save_markers`), each with
    // `data_length` bytes at `data`, allocated in the decompressor's pool, which lives as long
    // as `cinfo`; the chunks are copied out before it goes.
    while let Some(m) = unsafe { marker.as_ref() } {
        if m.marker == ffi::jpeg_marker::APP0 as u8 + 2 && !m.data.is_null() {
            // SAFETY: see above.
            let data = unsafe { std::slice::from_raw_parts(m.data, m.data_length as usize) };
            if let Some(rest) = data.strip_prefix(b"ICC_PROFILE\0") {
                if let (Some(&sequence), Some(chunk)) = (rest.first(), rest.get(2..)) {
                    chunks.push((sequence, chunk));
                }
            }
        }
        marker = m.next;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An RGB JPEG from libjpeg-turbo's encoder, with `icc` split into APP2 chunks. Progressive
    /// files get libjpeg's standard script (`jpeg_simple_progression` in the "fastest" profile):
    /// four AC refinement scans, two of the luma and one of each chroma.
    fn encode(
        width: usize,
        height: usize,
        pixels: &[u8],
        quality: f32,
        progressive: bool,
        icc_chunks: &[&[u8]],
    ) -> Vec<u8> {
        let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        c.set_fastest_defaults();
        c.set_size(width, height);
        c.set_quality(quality);
        if progressive {
            c.set_progressive_mode();
        }
        let mut c = c.start_compress(Vec::new()).expect("start");
        for (i, chunk) in icc_chunks.iter().enumerate() {
            let mut data = b"ICC_PROFILE\0".to_vec();
            data.extend([i as u8 + 1, icc_chunks.len() as u8]);
            data.extend_from_slice(chunk);
            c.write_marker(mozjpeg::Marker::APP(2), &data);
        }
        c.write_scanlines(pixels).expect("rows");
        c.finish().expect("finish")
    }

    fn flat(width: usize, height: usize, icc_chunks: &[&[u8]]) -> Vec<u8> {
        encode(width, height, &[30, 120, 200].repeat(width * height), 90.0, false, icc_chunks)
    }

    /// Something like a photo: gradients, edges and noise, so that every frequency band has
    /// coefficients to refine.
    #[cfg(not(jpeg_refine_off))]
    fn busy(width: usize, height: usize, seed: u32) -> Vec<u8> {
        let mut state = seed;
        let mut noise = move || {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as i32 - 128
        };
        let mut pixels = Vec::with_capacity(width * height * 3);
        for y in 0..height {
            for x in 0..width {
                let edge = if (x / 13 + y / 7) % 2 == 0 { 60 } else { 0 };
                for c in 0..3 {
                    let v = (x * (c + 1) * 255 / width) as i32 + edge + noise() / (4 + 4 * c as i32);
                    pixels.push(v.clamp(0, 255) as u8);
                }
            }
        }
        pixels
    }

    fn decode_with(input: &[u8], numerator: u32, fast_refine: bool) -> Result<(Decoded, u32), ImagingError> {
        decode_caught(input, numerator, false, fast_refine)
    }

    #[test]
    fn a_jpeg_decodes_at_each_scale_with_its_icc_chunks_joined_in_order() {
        let input = flat(40, 24, &[b"first-", b"second"]);
        for (numerator, size) in [(8, (40, 24)), (4, (20, 12)), (2, (10, 6)), (1, (5, 3))] {
            let (decoded, _) = decode_with(&input, numerator, FAST_REFINE).expect("decodes");
            let b = &decoded.bitmap;
            assert_eq!((b.width, b.height, b.layout), (size.0, size.1, Layout::Rgb), "at {numerator}/8");
            assert_eq!(b.data.len(), (size.0 * size.1 * 3) as usize);
            assert_eq!(decoded.icc.as_deref(), Some(&b"first-second"[..]));
        }
        // One flat colour, kept.
        let full = decode_with(&input, 8, FAST_REFINE).expect("decodes").0.bitmap;
        assert!(full.data.chunks_exact(3).all(|p| p[0].abs_diff(30) + p[1].abs_diff(120) + p[2].abs_diff(200) <= 6));
    }

    #[test]
    fn libjpegs_fatal_errors_are_typed_errors_with_its_message() {
        let message = |result: Result<(Decoded, u32), ImagingError>| match result {
            Err(ImagingError::Corrupt(message)) => message,
            other => panic!("expected a typed error, got {:?}", other.map(|d| d.0.bitmap.width)),
        };
        // Not a JPEG: libjpeg's error_exit unwinds out of jpeg_read_header.
        let not_jpeg = message(decode_with(&[0, 1, 2, 3], 8, FAST_REFINE));
        assert!(not_jpeg.contains("libjpeg: Not a JPEG file"), "{not_jpeg}");
        // Tables only, no image: refused without an unwind.
        assert!(message(decode_with(&[0xFF, 0xD8, 0xFF, 0xD9], 8, FAST_REFINE)).contains("no image"));
        // A scan naming Huffman tables that were never defined: the header reads, and the
        // unwind comes out of jpeg_start_decompress with the decoder's memory allocated, which
        // the drop frees; the next decode works.
        let mut input = flat(16, 16, &[]);
        let sos = input.windows(2).position(|w| w == [0xFF, 0xDA]).expect("a scan");
        for component in 0..input[sos + 4] as usize {
            input[sos + 6 + 2 * component] = 0x33;
        }
        assert!(message(decode_with(&input, 8, FAST_REFINE)).contains("Huffman table"));
        assert!(decode_with(&flat(16, 16, &[]), 8, FAST_REFINE).is_ok());
    }

    #[test]
    #[allow(clippy::assertions_on_constants, reason = "the constant is what build.rs decided")]
    fn the_faster_refinement_decoder_is_built_in() {
        assert!(
            FAST_REFINE,
            "built without csrc/jpeg_refine.c: the vendored libjpeg-turbo's jdphuff.c no longer declares \
             its decoder state as that file repeats it (see crates/imaging/build.rs)"
        );
    }

    /// The faster refinement decoder gives libjpeg-turbo's own results, byte for byte, on
    /// progressive files at several qualities and scales, and on each of them with bits flipped
    /// in the scans (where both must fail alike or decode alike).
    #[test]
    #[cfg(not(jpeg_refine_off))]
    fn the_faster_refinement_decoder_matches_libjpegs_own() {
        let (width, height) = (203, 150);
        let mut refine_scans = 0;
        let mut flipped_runs = 0;
        for (seed, quality) in [(1, 30.0), (2, 75.0), (3, 95.0), (4, 100.0)] {
            let input = encode(width, height, &busy(width, height, seed), quality, true, &[]);
            for numerator in [8, 4] {
                let ours = decode_with(&input, numerator, true).expect("decodes");
                let theirs = decode_with(&input, numerator, false).expect("decodes");
                assert_eq!(ours.0.bitmap.data, theirs.0.bitmap.data, "q{quality} at {numerator}/8");
                refine_scans += ours.1;
            }
            // Bit flips after the first scan header (the entropy-coded data and later headers).
            let first_scan = input.windows(2).position(|w| w == [0xFF, 0xDA]).expect("a scan");
            let mut state = seed * 7919;
            for _ in 0..60 {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let mut broken = input.clone();
                let at = first_scan + 12 + (state as usize >> 8) % (broken.len() - first_scan - 14);
                broken[at] ^= 1 << (state % 8);
                let ours = decode_with(&broken, 8, true);
                let theirs = decode_with(&broken, 8, false);
                match (ours, theirs) {
                    (Ok(ours), Ok(theirs)) => {
                        assert_eq!(ours.0.bitmap.data, theirs.0.bitmap.data, "bit flip at {at}");
                        flipped_runs += 1;
                    }
                    (Err(ours), Err(theirs)) => assert_eq!(ours.to_string(), theirs.to_string()),
                    (ours, theirs) => panic!("bit flip at {at}: ours {:?}, libjpeg's {:?}", ours.err(), theirs.err()),
                }
            }
        }
        // The files did go through the faster decoder, and most flipped files still decoded.
        assert_eq!(refine_scans, 8 * 4, "refinement scans decoded by it");
        assert!(flipped_runs >= 100, "only {flipped_runs} of 240 flipped files decoded");
    }
}
