//! PNG through the pure-Rust `png` crate: palettes and tRNS expanded, 16-bit reduced to 8,
//! the first (default) image of an APNG, iCCP kept for the colour step.
//!
//! Shrink on load: PNG has no reduced-size decode, so rows are streamed out of the decoder and
//! box-averaged (alpha-weighted) into a 1/`scale` image as they arrive. The full-size image
//! never exists in memory, which is what keeps a 15 MP PNG thumbnail within a few MiB.

use std::io::Cursor;

use super::Decoded;
use crate::bitmap::{Bitmap, Layout};
use crate::error::ImagingError;
use crate::resize::BoxRows;

pub fn decode(input: &[u8], scale: u32) -> Result<Decoded, ImagingError> {
    let corrupt = |e: png::DecodingError| ImagingError::Corrupt(format!("PNG could not be decoded: {e}"));
    // The decoder's own cap on what it allocates: rows and ancillary chunks, not the image
    // buffer (ours). A zTXt or iCCP deflate bomb stops here, not in our RSS; real ICC profiles
    // are well under the 16 MiB this leaves them.
    let budget = (16usize << 20).saturating_add(probe_width(input).saturating_mul(16));
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(input), png::Limits { bytes: budget });
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    decoder.set_ignore_text_chunk(true);
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let icc = reader.info().icc_profile.as_ref().map(|p| p.to_vec());
    let interlaced = reader.info().interlaced;
    if scale > 1 && !interlaced {
        return shrink_rows(&mut reader, scale).map(|bitmap| Decoded { bitmap, icc });
    }
    let size = reader.output_buffer_size().ok_or_else(|| ImagingError::Corrupt("PNG dimensions overflow".into()))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(corrupt)?;
    buf.truncate(frame.buffer_size());
    let layout = match frame.color_type {
        png::ColorType::Grayscale => Layout::Gray,
        png::ColorType::GrayscaleAlpha => Layout::GrayAlpha,
        png::ColorType::Rgb => Layout::Rgb,
        png::ColorType::Rgba => Layout::Rgba,
        png::ColorType::Indexed => return Err(ImagingError::Corrupt("PNG palette could not be expanded".into())),
    };
    if frame.bit_depth != png::BitDepth::Eight
        || buf.len() != frame.width as usize * frame.height as usize * layout.channels()
    {
        return Err(ImagingError::Corrupt("PNG decoded to an unexpected pixel format".into()));
    }
    Ok(Decoded { bitmap: Bitmap::new(frame.width, frame.height, layout, buf), icc })
}

fn layout_of(color: png::ColorType) -> Result<Layout, ImagingError> {
    Ok(match color {
        png::ColorType::Grayscale => Layout::Gray,
        png::ColorType::GrayscaleAlpha => Layout::GrayAlpha,
        png::ColorType::Rgb => Layout::Rgb,
        png::ColorType::Rgba => Layout::Rgba,
        png::ColorType::Indexed => return Err(ImagingError::Corrupt("PNG palette could not be expanded".into())),
    })
}

/// Streams the rows and box-averages each `scale` x `scale` cell (edge cells are smaller).
/// With alpha, colour is weighted by alpha so transparent pixels do not darken the edges.
fn shrink_rows<R: std::io::BufRead + std::io::Seek>(
    reader: &mut png::Reader<R>,
    scale: u32,
) -> Result<Bitmap, ImagingError> {
    let corrupt = |e: png::DecodingError| ImagingError::Corrupt(format!("PNG could not be decoded: {e}"));
    let (color, depth) = reader.output_color_type();
    let layout = layout_of(color)?;
    if depth != png::BitDepth::Eight {
        return Err(ImagingError::Corrupt("PNG decoded to an unexpected pixel format".into()));
    }
    let (w, h) = (reader.info().width as usize, reader.info().height as usize);
    let c = layout.channels();
    let s = scale as usize;
    let mut acc = BoxRows::new(w as u32, scale, layout);
    let mut out = Vec::with_capacity(acc.out_width() * h.div_ceil(s) * c);
    let mut row = vec![0u8; w * c];
    let mut rows_seen = 0usize;
    while rows_seen < h {
        if reader.read_row(&mut row).map_err(corrupt)?.is_none() {
            break;
        }
        acc.add(&row);
        rows_seen += 1;
        if rows_seen.is_multiple_of(s) || rows_seen == h {
            acc.emit(&mut out);
        }
    }
    if rows_seen != h {
        return Err(ImagingError::Corrupt("PNG ended before all rows were decoded".into()));
    }
    Ok(Bitmap::new(acc.out_width() as u32, h.div_ceil(s) as u32, layout, out))
}

/// Width from IHDR (the probe has validated the header already; 0 if absent).
fn probe_width(input: &[u8]) -> usize {
    input.get(16..20).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}
