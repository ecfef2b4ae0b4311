//! Header-only image probing: the pipeline's first defence against decompression bombs.
//!
//! This module owns format detection (magic bytes only) and the parsing of the header and
//! container structure of JPEG, PNG, WebP, GIF, AVIF and HEIC: dimensions, frame counts, EXIF orientation,
//! alpha, ICC presence and the codec details the limits need. It never decodes pixels, never
//! verifies checksums (the decoders do), and never allocates memory proportional to anything the
//! file declares. Every walk is one bounded forward pass over the input (O(file size)), and every
//! read is a checked `get`, so hostile input cannot make it panic, overflow or loop. Deciding what
//! is too large, too animated or too truncated is the caller's job.
//!
//! Truncation: input that ends before the headers that size the image (JPEG: before the first
//! scan; PNG: inside IHDR; WebP: inside the first chunk's header; GIF: before the first image
//! descriptor) is [`ProbeError::Truncated`]. Input that ends later probes fine with
//! `complete == false`, because a partial image may still be worth decoding; the caller decides.
//!
//! Layout: this file is the shared face (the format switch, [`Probe`] and the checked readers
//! every walk uses); each container has its own file (`jpeg`, `png`, `webp`, `gif`, and
//! `isobmff` for AVIF and HEIC), and `exif` reads the orientation that JPEG, PNG and WebP all
//! carry in the same TIFF structure.

mod exif;
mod gif;
mod isobmff;
mod jpeg;
mod png;
#[cfg(test)]
mod test_headers;
mod webp;

pub use gif::GifInfo;
pub use isobmff::HeifInfo;
pub use jpeg::JpegInfo;
pub use png::PngInfo;

use gif::probe_gif;
use isobmff::probe_isobmff;
use jpeg::probe_jpeg;
use png::probe_png;
use webp::probe_webp;

/// An image format the service accepts, detected by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG / JFIF / EXIF (`FF D8 FF`).
    Jpeg,
    /// PNG, including APNG (`89 'PNG' 0D 0A 1A 0A`).
    Png,
    /// WebP in a RIFF container (`'RIFF' size 'WEBP'`).
    Webp,
    /// GIF87a or GIF89a.
    Gif,
    /// AVIF: HEIF with AV1-coded images (ISOBMFF `ftyp` brand `avif`/`avis`, or `mif1` and an
    /// `av01` primary item).
    Avif,
    /// HEIC: HEIF with HEVC-coded images (`ftyp` brand `heic`/`heix`/…, or `mif1` and an `hvc1`
    /// primary item).
    Heic,
}

impl ImageFormat {
    /// (name, media type, extension), kept in one table so the three can't drift apart.
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Jpeg => ("jpeg", "image/jpeg", "jpg"),
            Self::Png => ("png", "image/png", "png"),
            Self::Webp => ("webp", "image/webp", "webp"),
            Self::Gif => ("gif", "image/gif", "gif"),
            Self::Avif => ("avif", "image/avif", "avif"),
            Self::Heic => ("heic", "image/heic", "heic"),
        }
    }

    /// Every format, for looking one up by name (a job's report from a worker).
    pub const ALL: [ImageFormat; 6] = [Self::Jpeg, Self::Png, Self::Webp, Self::Gif, Self::Avif, Self::Heic];

    /// Short lowercase name: "jpeg", "png", "webp", "gif", "avif" or "heic".
    pub fn as_str(self) -> &'static str {
        self.names().0
    }

    /// IANA media type, e.g. "image/jpeg".
    pub fn mime(self) -> &'static str {
        self.names().1
    }

    /// Conventional file extension without the dot ("jpg" for JPEG).
    pub fn extension(self) -> &'static str {
        self.names().2
    }
}

/// What the headers of an image declare. Nothing here has been checked against pixel data.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// Detected format.
    pub format: ImageFormat,
    /// Canvas width in pixels (always ≥ 1).
    pub width: u32,
    /// Canvas height in pixels (always ≥ 1).
    pub height: u32,
    /// Frames declared/contained: 1 for stills; APNG acTL num_frames; GIF image descriptors
    /// counted by walking blocks; WebP ANMF chunks counted. Never 0.
    pub frames: u32,
    /// EXIF orientation 1..=8 (1 when absent or invalid), from JPEG APP1 "Exif\0\0", PNG eXIf
    /// or WebP EXIF (TIFF header, IFD0, tag 0x0112 SHORT). Only the first EXIF block counts.
    pub orientation: u8,
    /// PNG colour type 4/6 or tRNS; WebP VP8X alpha flag or VP8L alpha hint; GIF transparency
    /// flag in the graphic control extension of the first frame; JPEG false.
    pub has_alpha: bool,
    /// PNG bit depth; 8 otherwise (JPEG precision is in [`JpegInfo::precision`]).
    pub bit_depth: u8,
    /// An embedded ICC profile is present: JPEG APP2 ICC_PROFILE, PNG iCCP, WebP ICCP chunk,
    /// GIF ICCRGBG1 application extension.
    pub has_icc: bool,
    /// The container's end was reached: JPEG EOI after a scan, PNG IEND (with CRC), GIF
    /// trailer, WebP whole RIFF payload present. `false` means truncated (or junk where the end
    /// should be); decoders may still render part of the image.
    pub complete: bool,
    /// JPEG details; `Some` iff `format == Jpeg`.
    pub jpeg: Option<JpegInfo>,
    /// PNG details; `Some` iff `format == Png`.
    pub png: Option<PngInfo>,
    /// GIF details; `Some` iff `format == Gif`.
    pub gif: Option<GifInfo>,
    /// AVIF and HEIC details; `Some` iff `format` is one of them.
    pub heif: Option<HeifInfo>,
    /// WebP: the (first) image is lossless VP8L, whose decoder holds the whole image as 32-bit
    /// pixels before any scaling, so it costs 4 bytes per pixel whatever the output size.
    pub webp_lossless: bool,
}

impl Probe {
    fn new(format: ImageFormat) -> Self {
        Self {
            format,
            width: 0,
            height: 0,
            frames: 1,
            orientation: 1,
            has_alpha: false,
            bit_depth: 8,
            has_icc: false,
            complete: false,
            jpeg: None,
            png: None,
            gif: None,
            heif: None,
            webp_lossless: false,
        }
    }

    /// width × height × frames (saturating), with a GIF canvas widened to its frame extents
    /// because the gif decoder allocates frames larger than the logical screen. This is the figure
    /// to compare against a decoded-pixel budget.
    pub fn total_pixels(&self) -> u64 {
        let (w, h) = match &self.gif {
            Some(g) => (self.width.max(g.frame_extent_width), self.height.max(g.frame_extent_height)),
            None => (self.width, self.height),
        };
        u64::from(w).saturating_mul(u64::from(h)).saturating_mul(u64::from(self.frames.max(1)))
    }
}

/// Why an input could not be probed.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq)]
pub enum ProbeError {
    /// The magic bytes match none of the supported formats.
    #[error("not a supported image format (expected JPEG, PNG, WebP, GIF, AVIF or HEIC)")]
    Unsupported,
    /// The headers are self-contradictory or invalid; no decoder would accept them.
    #[error("image header is corrupt: {0}")]
    Corrupt(&'static str),
    /// The data ends before the headers needed to size the image.
    #[error("image is truncated: {0}")]
    Truncated(&'static str),
}

/// Identifies the format by magic bytes and parses its headers. See the module docs.
pub fn probe(bytes: &[u8]) -> Result<Probe, ProbeError> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        probe_jpeg(bytes)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        probe_png(bytes)
    } else if bytes.starts_with(b"RIFF") && bytes.get(8..12) == Some(&b"WEBP"[..]) {
        probe_webp(bytes)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        probe_gif(bytes)
    } else if bytes.get(4..8) == Some(&b"ftyp"[..]) {
        probe_isobmff(bytes)
    } else {
        Err(ProbeError::Unsupported)
    }
}

// Checked readers. Offsets are always ≤ len + a small constant and a slice is at most isize::MAX
// long, so plain `+` on two offsets cannot overflow; lengths read from the file go through
// `checked_add`/`saturating_add` because a u32 can exceed what is left of a 32-bit usize.

fn arr<const N: usize>(d: &[u8], off: usize) -> Option<[u8; N]> {
    d.get(off..off.checked_add(N)?)?.try_into().ok()
}
fn be16(d: &[u8], off: usize) -> Option<u16> {
    arr(d, off).map(u16::from_be_bytes)
}
fn be32(d: &[u8], off: usize) -> Option<u32> {
    arr(d, off).map(u32::from_be_bytes)
}
fn le16(d: &[u8], off: usize) -> Option<u16> {
    arr(d, off).map(u16::from_le_bytes)
}
fn le32(d: &[u8], off: usize) -> Option<u32> {
    arr(d, off).map(u32::from_le_bytes)
}
fn le24(d: &[u8], off: usize) -> Option<u32> {
    arr::<3>(d, off).map(|[a, b, c]| u32::from_le_bytes([a, b, c, 0]))
}
fn usize_of(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// `(payload, whole)`: up to `len` bytes from `start`, and whether all `len` of them exist.
fn payload(d: &[u8], start: usize, len: u32) -> (&[u8], bool) {
    let avail = d.get(start..).unwrap_or(&[]);
    match avail.get(..usize_of(len)) {
        Some(p) => (p, true),
        None => (avail, false),
    }
}

#[cfg(test)]
mod tests {
    use super::test_headers::*;
    use super::*;

    fn samples() -> Vec<Vec<u8>> {
        let prog = jpeg_with_segments(&[sof(0xC2, 9, 7, &[0x11]), scan(), seg(0xC4, &[0; 5]), scan(), eoi()]);
        let apng = png_simple(4, 4, &[(b"acTL", &[0, 0, 0, 3, 0, 0, 0, 0]), (b"eXIf", &tiff(false, 3))]);
        let vp8x_still = riff(&[(b"VP8X", vp8x(0x10, 5, 5)), (b"ALPH", vec![0; 3]), (b"VP8 ", vp8(5, 5))]);
        vec![jpeg_simple(33, 17), prog, png_simple(3, 2, &[]), apng, gif(10, 8, &[(10, 8, true), (5, 5, false)])]
            .into_iter()
            .chain([riff(&[(b"VP8 ", vp8(7, 9))]), riff(&[(b"VP8L", vp8l(7, 9, true))]), vp8x_still, webp_animated(3)])
            .collect()
    }

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    // ---- tests ----

    #[test]
    fn format_names() {
        assert_eq!(ImageFormat::Jpeg.as_str(), "jpeg");
        assert_eq!(ImageFormat::Webp.mime(), "image/webp");
        assert_eq!(ImageFormat::Jpeg.extension(), "jpg");
        assert_eq!(ImageFormat::Gif.extension(), "gif");
        assert_eq!(ImageFormat::Png.mime(), "image/png");
    }

    #[test]
    fn unsupported() {
        for b in [&b""[..], b"BM\0\0\0\0", b"hello world", b"\xFF\xD8", b"RIFF\0\0\0\0WAVE", b"GIF88a", b"\x89PNG\r\n"]
        {
            assert_eq!(probe(b), Err(ProbeError::Unsupported));
        }
    }

    #[test]
    fn every_prefix_of_every_sample_is_safe() {
        for s in samples() {
            assert!(probe(&s).unwrap().complete);
            for n in 0..s.len() {
                if let Ok(p) = probe(&s[..n]) {
                    assert!(!p.complete, "prefix {n} of {:?} claims completeness", p.format);
                    assert!(p.width > 0 && p.height > 0 && p.frames > 0);
                }
            }
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let magics: [&[u8]; 5] = [b"\xFF\xD8\xFF", b"\x89PNG\r\n\x1a\n", b"RIFF\x20\0\0\0WEBP", b"GIF89a", b"GIF87a"];
        for i in 0..10_000 {
            let mut buf = magics[i % magics.len()].to_vec();
            let len = (xorshift(&mut s) % 300) as usize;
            // Bias towards bytes that are structurally meaningful so walks go deep.
            buf.extend((0..len).map(|_| match xorshift(&mut s) % 4 {
                0 => 0xFF,
                1 => 0,
                _ => xorshift(&mut s) as u8,
            }));
            let _ = probe(&buf);
        }
        // Mutations of valid files reach much further than pure noise.
        let samples = samples();
        for i in 0..20_000 {
            let mut buf = samples[i % samples.len()].clone();
            for _ in 0..1 + xorshift(&mut s) % 4 {
                let at = (xorshift(&mut s) as usize) % buf.len();
                buf[at] = xorshift(&mut s) as u8;
            }
            if let Ok(p) = probe(&buf) {
                assert!(p.width > 0 && p.height > 0 && p.frames > 0 && (1..=8).contains(&p.orientation));
            }
        }
    }
}
