//! Header-only image probing: the pipeline's first defence against decompression bombs.
//!
//! This module owns format detection (magic bytes only) and the parsing of the header and
//! container structure of JPEG, PNG, WebP and GIF: dimensions, frame counts, EXIF orientation,
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
}

impl ImageFormat {
    /// (name, media type, extension), kept in one table so the three can't drift apart.
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Jpeg => ("jpeg", "image/jpeg", "jpg"),
            Self::Png => ("png", "image/png", "png"),
            Self::Webp => ("webp", "image/webp", "webp"),
            Self::Gif => ("gif", "image/gif", "gif"),
        }
    }

    /// Short lowercase name: "jpeg", "png", "webp" or "gif".
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

/// JPEG frame and scan structure.
#[derive(Debug, Clone, PartialEq)]
pub struct JpegInfo {
    /// Progressive DCT (SOF2, SOF6, SOF10, SOF14).
    pub progressive: bool,
    /// Arithmetic coding (SOF9..=SOF15).
    pub arithmetic: bool,
    /// Lossless (SOF3, SOF7, SOF11, SOF15).
    pub lossless: bool,
    /// Component count from the SOF: 1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK (others are reported as is).
    pub components: u8,
    /// Sample precision in bits from the SOF (8 for almost every file, 12 for some medical ones).
    pub precision: u8,
    /// Transform byte of the APP14 "Adobe" marker (0 none/CMYK, 1 YCbCr, 2 YCCK); last one wins,
    /// as in libjpeg.
    pub adobe_transform: Option<u8>,
    /// Largest horizontal sampling factor (1..=4).
    pub max_h_samp: u8,
    /// Largest vertical sampling factor (1..=4).
    pub max_v_samp: u8,
    /// Number of SOS markers found (≥ 1; progressive files have several).
    pub scans: u32,
    /// An EOI marker follows the last scan's entropy data. Bytes after EOI are ignored.
    pub has_eoi: bool,
}

/// PNG header and chunk summary.
#[derive(Debug, Clone, PartialEq)]
pub struct PngInfo {
    /// IHDR colour type (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA).
    pub color_type: u8,
    /// Adam7 interlacing.
    pub interlaced: bool,
    /// A complete tRNS chunk was seen.
    pub has_trns: bool,
    /// IDAT payload bytes actually present (declared lengths clamped to the data available).
    pub idat_bytes: u64,
    /// A complete IEND chunk was reached.
    pub has_iend: bool,
}

/// GIF frame geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct GifInfo {
    /// Largest `left + width` over all image descriptors. Frames may extend past the logical
    /// screen and decoders allocate them at full size, so limits must look at this too.
    pub frame_extent_width: u32,
    /// Largest `top + height` over all image descriptors.
    pub frame_extent_height: u32,
}

/// Why an input could not be probed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProbeError {
    /// The magic bytes match none of the supported formats.
    #[error("not a supported image format (expected JPEG, PNG, WebP or GIF)")]
    Unsupported,
    /// The headers are self-contradictory or invalid; no decoder would accept them.
    #[error("image header is corrupt: {0}")]
    Corrupt(&'static str),
    /// The data ends before the headers needed to size the image.
    #[error("image is truncated: {0}")]
    Truncated(&'static str),
}

use ProbeError::{Corrupt, Truncated};

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

/// Index of the first 0xFF byte. Word-at-a-time (SWAR) because JPEG entropy data is megabytes
/// long and this scan is the whole cost of probing it.
fn find_ff(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for c in &mut chunks {
        // A 0xFF byte is a zero byte of the complement; the classic has-zero trick marks it. Only
        // bytes above a true zero can be false positives, so the lowest mark is exact.
        let w = !u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
        let z = w.wrapping_sub(LO) & !w & HI;
        if z != 0 {
            return Some(base + (z.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks.remainder().iter().position(|&b| b == 0xFF).map(|i| base + i)
}

/// EXIF orientation from a TIFF blob (an "Exif\0\0" prefix is tolerated: some PNG/WebP writers
/// copy the JPEG APP1 payload verbatim). Returns 1 for anything missing or out of range.
fn exif_orientation(blob: &[u8]) -> u8 {
    let t = blob.strip_prefix(b"Exif\0\0").unwrap_or(blob);
    let le = match t.get(..4) {
        Some(b"II*\0") => true,
        Some(b"MM\0*") => false,
        _ => return 1,
    };
    let r16 = |off: usize| arr(t, off).map(if le { u16::from_le_bytes } else { u16::from_be_bytes });
    let r32 = |off: usize| arr(t, off).map(if le { u32::from_le_bytes } else { u32::from_be_bytes });
    let Some(ifd) = r32(4).map(usize_of) else { return 1 };
    let Some(count) = r16(ifd) else { return 1 };
    // At most 65535 entries, and the loop stops at the end of the blob: bounded by its size.
    for i in 0..usize::from(count) {
        let Some(e) = ifd.checked_add(2 + 12 * i) else { return 1 };
        let Some(tag) = r16(e) else { return 1 };
        if tag == 0x0112 {
            // Type 3 = SHORT; with count 1 the value sits left-aligned in the 4-byte value field.
            return match (r16(e + 2), r32(e + 4), r16(e + 8)) {
                (Some(3), Some(1..), Some(v @ 1..=8)) => v as u8,
                _ => 1,
            };
        }
    }
    1
}

fn probe_jpeg(d: &[u8]) -> Result<Probe, ProbeError> {
    let mut p = Probe::new(ImageFormat::Jpeg);
    let mut info: Option<JpegInfo> = None;
    let (mut scans, mut has_eoi, mut exif_seen, mut adobe) = (0u32, false, false, None);
    let mut pos = 2;
    // libjpeg skips junk between segments with a warning, so we do too; then fill bytes.
    while let Some(ff) = d.get(pos..).and_then(find_ff) {
        pos += ff;
        while d.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let Some(&marker) = d.get(pos) else { break };
        pos += 1;
        match marker {
            0x01 | 0xD0..=0xD7 => continue, // TEM and stray RSTn carry no length
            0xD9 if info.is_none() => return Err(Corrupt("EOI before frame header (SOF)")),
            0xD9 if scans == 0 => return Err(Corrupt("EOI before first scan (SOS)")),
            0xD9 => {
                has_eoi = true;
                break;
            }
            // A new image glued onto a truncated one: keep what we have, report no EOI.
            0xD8 if scans > 0 => break,
            0x00 | 0xD8 => return Err(Corrupt("invalid marker in segment sequence")),
            _ => {}
        }
        let Some(len) = be16(d, pos).map(usize::from) else { break };
        if len < 2 {
            return Err(Corrupt("segment length below 2"));
        }
        // A segment running past the end stops the walk; see the truncation policy below.
        let Some(seg) = d.get(pos + 2..pos + len) else { break };
        pos += len;
        match marker {
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if info.is_some() {
                    return Err(Corrupt("more than one frame header (SOF)"));
                }
                let (w, h, i) = parse_sof(marker, seg)?;
                (p.width, p.height, info) = (w, h, Some(i));
            }
            0xDA => {
                if info.is_none() {
                    return Err(Corrupt("scan (SOS) before frame header (SOF)"));
                }
                scans = scans.saturating_add(1);
                pos = skip_entropy(d, pos);
            }
            0xE1 if !exif_seen && seg.starts_with(b"Exif\0\0") => {
                exif_seen = true;
                p.orientation = exif_orientation(seg);
            }
            0xE2 if seg.starts_with(b"ICC_PROFILE\0") => p.has_icc = true,
            0xEE if seg.starts_with(b"Adobe") => adobe = seg.get(11).copied().or(adobe),
            _ => {}
        }
    }
    // Truncation policy: ending before the first scan leaves nothing decodable, so it is an
    // error; ending anywhere after it (entropy data, a segment between progressive scans) is a
    // partial image the caller may accept, reported as has_eoi = false.
    let Some(mut info) = info else { return Err(Truncated("end of data before frame header (SOF)")) };
    if scans == 0 {
        return Err(Truncated("end of data before first scan (SOS)"));
    }
    (info.scans, info.has_eoi, info.adobe_transform) = (scans, has_eoi, adobe);
    p.complete = has_eoi;
    p.jpeg = Some(info);
    Ok(p)
}

fn parse_sof(marker: u8, seg: &[u8]) -> Result<(u32, u32, JpegInfo), ProbeError> {
    let (Some(&precision), Some(h), Some(w), Some(&n)) = (seg.first(), be16(seg, 1), be16(seg, 3), seg.get(5)) else {
        return Err(Corrupt("frame header (SOF) too short"));
    };
    if h == 0 {
        // The height would come from a DNL marker after the first scan; nothing sizes it up front.
        return Err(Corrupt("frame height 0 (DNL-defined height is not supported)"));
    }
    if w == 0 {
        return Err(Corrupt("frame width 0"));
    }
    let comps = seg.get(6..).unwrap_or(&[]);
    if n == 0 || comps.len() < 3 * usize::from(n) {
        return Err(Corrupt("frame header (SOF) component list"));
    }
    let (mut mh, mut mv) = (0, 0);
    for c in comps.chunks_exact(3).take(usize::from(n)) {
        let s = c.get(1).copied().unwrap_or(0);
        let (hs, vs) = (s >> 4, s & 0x0F);
        if !(1..=4).contains(&hs) || !(1..=4).contains(&vs) {
            return Err(Corrupt("sampling factor outside 1..=4"));
        }
        (mh, mv) = (mh.max(hs), mv.max(vs));
    }
    let info = JpegInfo {
        progressive: matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
        arithmetic: marker >= 0xC9,
        lossless: matches!(marker, 0xC3 | 0xC7 | 0xCB | 0xCF),
        components: n,
        precision,
        adobe_transform: None,
        max_h_samp: mh,
        max_v_samp: mv,
        scans: 0,
        has_eoi: false,
    };
    Ok((u32::from(w), u32::from(h), info))
}

/// Offset of the marker ending the entropy-coded data that starts at `pos` (or `d.len()`).
/// Inside entropy data 0xFF is followed by 0x00 (stuffing), RST0-7, or more 0xFF fill bytes;
/// anything else is a real marker.
fn skip_entropy(d: &[u8], mut pos: usize) -> usize {
    loop {
        let Some(i) = d.get(pos..).and_then(find_ff) else { return d.len() };
        let ff = pos + i;
        // Consume a run of fill bytes here rather than re-scanning once per byte.
        let mut next = ff + 1;
        while d.get(next) == Some(&0xFF) {
            next += 1;
        }
        match d.get(next) {
            None => return d.len(),
            Some(0x00 | 0xD0..=0xD7) => pos = next + 1,
            Some(_) => return ff,
        }
    }
}

fn probe_png(d: &[u8]) -> Result<Probe, ProbeError> {
    let Some(ty) = arr::<4>(d, 12) else { return Err(Truncated("PNG header (IHDR)")) };
    if &ty != b"IHDR" || be32(d, 8) != Some(13) {
        return Err(Corrupt("first PNG chunk is not a 13-byte IHDR"));
    }
    let Some(ihdr) = arr::<13>(d, 16) else { return Err(Truncated("PNG header (IHDR)")) };
    let [w0, w1, w2, w3, h0, h1, h2, h3, depth, ct, compression, filter, interlace] = ihdr;
    let (w, h) = (u32::from_be_bytes([w0, w1, w2, w3]), u32::from_be_bytes([h0, h1, h2, h3]));
    if !(1..=0x7FFF_FFFF).contains(&w) || !(1..=0x7FFF_FFFF).contains(&h) {
        return Err(Corrupt("PNG width/height outside 1..=2^31-1"));
    }
    let depth_ok = match ct {
        0 => matches!(depth, 1 | 2 | 4 | 8 | 16),
        2 | 4 | 6 => matches!(depth, 8 | 16),
        3 => matches!(depth, 1 | 2 | 4 | 8),
        _ => false,
    };
    if !depth_ok {
        return Err(Corrupt("invalid PNG colour type / bit depth combination"));
    }
    if compression != 0 || filter != 0 || interlace > 1 {
        return Err(Corrupt("unknown PNG compression, filter or interlace method"));
    }
    let mut info =
        PngInfo { color_type: ct, interlaced: interlace == 1, has_trns: false, idat_bytes: 0, has_iend: false };
    let mut p = Probe::new(ImageFormat::Png);
    (p.width, p.height, p.bit_depth) = (w, h, depth);
    let (mut seen_idat, mut exif_seen) = (false, false);
    // Chunks start after the signature (8) and IHDR (4 + 4 + 13 + 4). A chunk is interpreted only
    // when complete with its CRC; a short chunk ends the walk (truncated: has_iend stays false).
    let mut pos = 33;
    while let (Some(len), Some(ty)) = (be32(d, pos), arr::<4>(d, pos + 4)) {
        if len > 0x7FFF_FFFF {
            return Err(Corrupt("PNG chunk length exceeds 2^31-1"));
        }
        let (data, _) = payload(d, pos + 8, len);
        let next = (pos + 8).checked_add(usize_of(len)).and_then(|e| e.checked_add(4));
        let whole = next.is_some_and(|n| n <= d.len());
        match &ty {
            b"IDAT" => {
                seen_idat = true;
                info.idat_bytes = info.idat_bytes.saturating_add(data.len() as u64);
            }
            // APNG decoders ignore an acTL after the first IDAT (it is then a plain PNG), and
            // treat num_frames 0 as invalid animation, falling back to the still image.
            b"acTL" if whole && !seen_idat => p.frames = be32(data, 0).unwrap_or(1).max(1),
            b"tRNS" if whole => info.has_trns = true,
            b"iCCP" if whole => p.has_icc = true,
            b"eXIf" if whole && !exif_seen => {
                exif_seen = true;
                p.orientation = exif_orientation(data);
            }
            b"IEND" if whole => {
                info.has_iend = true;
                break;
            }
            _ => {}
        }
        match next {
            Some(n) if whole => pos = n,
            _ => break,
        }
    }
    p.has_alpha = matches!(ct, 4 | 6) || info.has_trns;
    p.complete = info.has_iend;
    p.png = Some(info);
    Ok(p)
}

fn probe_webp(d: &[u8]) -> Result<Probe, ProbeError> {
    let riff_size = le32(d, 4).unwrap_or(0);
    if riff_size < 12 {
        return Err(Corrupt("RIFF size too small for a WebP chunk"));
    }
    // Bytes past the RIFF end are not part of the image (often junk appended by uploaders).
    let riff_end = usize_of(riff_size).saturating_add(8);
    let body = d.get(..riff_end).unwrap_or(d);
    let mut p = Probe::new(ImageFormat::Webp);
    let (Some(fourcc), Some(size)) = (arr::<4>(body, 12), le32(body, 16)) else {
        return Err(Truncated("first WebP chunk header"));
    };
    let (first, first_whole) = payload(body, 20, size);
    p.complete = body.len() == riff_end && first_whole;
    match &fourcc {
        b"VP8 " => {
            let Some([tag, _, _, s0, s1, s2, w0, w1, h0, h1]) = arr::<10>(first, 0) else {
                return Err(Truncated("VP8 frame header"));
            };
            if tag & 1 != 0 {
                return Err(Corrupt("VP8 frame is not a key frame"));
            }
            if [s0, s1, s2] != [0x9D, 0x01, 0x2A] {
                return Err(Corrupt("bad VP8 start code"));
            }
            // The top two bits of each 16-bit field are upscaling hints, not size.
            p.width = u32::from(u16::from_le_bytes([w0, w1]) & 0x3FFF);
            p.height = u32::from(u16::from_le_bytes([h0, h1]) & 0x3FFF);
            if p.width == 0 || p.height == 0 {
                return Err(Corrupt("VP8 width or height 0"));
            }
        }
        b"VP8L" => {
            p.webp_lossless = true;
            let Some([sig, b0, b1, b2, b3]) = arr::<5>(first, 0) else {
                return Err(Truncated("VP8L header"));
            };
            let bits = u32::from_le_bytes([b0, b1, b2, b3]);
            if sig != 0x2F || bits >> 29 != 0 {
                return Err(Corrupt("bad VP8L signature or version"));
            }
            p.width = (bits & 0x3FFF) + 1;
            p.height = ((bits >> 14) & 0x3FFF) + 1;
            p.has_alpha = (bits >> 28) & 1 == 1;
        }
        b"VP8X" => {
            let (Some(&flags), Some(w), Some(h)) = (first.first(), le24(first, 4), le24(first, 7)) else {
                return Err(Truncated("VP8X header"));
            };
            (p.width, p.height, p.has_alpha) = (w + 1, h + 1, flags & 0x10 != 0);
            walk_webp_chunks(body, &mut p, size)?;
        }
        _ => return Err(Corrupt("first WebP chunk is not VP8, VP8L or VP8X")),
    }
    Ok(p)
}

/// Walks the chunks after VP8X for ICCP, EXIF and ANMF. ICC and EXIF come from the chunks
/// themselves, not the VP8X flags: a flag without its chunk gives the decoder nothing to apply.
fn walk_webp_chunks(body: &[u8], p: &mut Probe, vp8x_size: u32) -> Result<(), ProbeError> {
    let (mut anmf, mut exif_seen) = (0u32, false);
    // Chunks are padded to an even size; the pad is not counted in the chunk's size field.
    let next = |start: usize, size: u32| start.checked_add(usize_of(size))?.checked_add(usize_of(size & 1));
    // `at` may lie far past the data when a size field is huge, hence the saturating adds below.
    let mut pos = next(20, vp8x_size);
    while let Some(at) = pos {
        let (Some(cc), Some(size)) = (arr::<4>(body, at), le32(body, at.saturating_add(4))) else {
            p.complete &= at >= body.len();
            break;
        };
        let (data, whole) = payload(body, at.saturating_add(8), size);
        match &cc {
            b"ICCP" => p.has_icc = true,
            b"VP8L" => p.webp_lossless = true,
            b"EXIF" if whole && !exif_seen => {
                exif_seen = true;
                p.orientation = exif_orientation(data);
            }
            b"ANMF" => {
                anmf = anmf.saturating_add(1);
                // The frame's image sub-chunk follows the 16-byte frame header (after an
                // optional ALPH, which only lossy frames carry).
                p.webp_lossless |= anmf == 1 && data.get(16..20) == Some(b"VP8L".as_slice());
                // libwebp's demuxer rejects frames outside the canvas; so do we, as those are
                // what would let a tiny declared canvas hide a huge frame.
                if let (Some(x), Some(y), Some(w), Some(h)) =
                    (le24(data, 0), le24(data, 3), le24(data, 6), le24(data, 9))
                {
                    if u64::from(x) * 2 + u64::from(w) + 1 > u64::from(p.width)
                        || u64::from(y) * 2 + u64::from(h) + 1 > u64::from(p.height)
                    {
                        return Err(Corrupt("WebP animation frame outside the canvas"));
                    }
                }
            }
            _ => {}
        }
        if !whole {
            p.complete = false;
            break;
        }
        pos = next(at.saturating_add(8), size);
    }
    p.frames = anmf.max(1);
    Ok(())
}

fn probe_gif(d: &[u8]) -> Result<Probe, ProbeError> {
    let (Some(sw), Some(sh), Some(&flags)) = (le16(d, 6), le16(d, 8), d.get(10)) else {
        return Err(Truncated("GIF logical screen descriptor"));
    };
    let mut p = Probe::new(ImageFormat::Gif);
    let mut g = GifInfo { frame_extent_width: 0, frame_extent_height: 0 };
    let (mut frames, mut first, mut transparent) = (0u32, None, false);
    let mut pos = 13usize.saturating_add(color_table_len(flags));
    while let Some(&block) = d.get(pos) {
        match block {
            0x3B => {
                p.complete = true;
                break;
            }
            0x21 => {
                let Some(&label) = d.get(pos + 1) else { break };
                let sub = pos + 2;
                if label == 0xF9 {
                    // Graphic control extension: applies to the next image descriptor only.
                    if let (Some(4..), Some(&f)) = (d.get(sub), d.get(sub + 1)) {
                        transparent = f & 1 != 0;
                    }
                } else if label == 0xFF && d.get(sub..sub + 12) == Some(&b"\x0bICCRGBG1012"[..]) {
                    p.has_icc = true;
                }
                let Some(n) = skip_sub_blocks(d, sub) else { break };
                pos = n;
            }
            0x2C => {
                let Some([l0, l1, t0, t1, w0, w1, h0, h1, f]) = arr::<9>(d, pos + 1) else { break };
                let (w, h) = (u16::from_le_bytes([w0, w1]), u16::from_le_bytes([h0, h1]));
                frames = frames.saturating_add(1);
                if first.is_none() {
                    first = Some((w, h));
                    p.has_alpha = transparent;
                }
                transparent = false;
                let right = u32::from(u16::from_le_bytes([l0, l1])) + u32::from(w);
                let bottom = u32::from(u16::from_le_bytes([t0, t1])) + u32::from(h);
                g.frame_extent_width = g.frame_extent_width.max(right);
                g.frame_extent_height = g.frame_extent_height.max(bottom);
                // Descriptor (10 bytes), local colour table, LZW minimum code size, then the
                // LZW data sub-blocks, which are skipped by their length bytes, never decoded.
                let data = (pos + 11).saturating_add(color_table_len(f));
                let Some(n) = skip_sub_blocks(d, data) else { break };
                pos = n;
            }
            _ if frames == 0 => return Err(Corrupt("unknown GIF block before the first image")),
            // Junk after a frame: browsers show the frames so far; report the file as incomplete.
            _ => break,
        }
    }
    let Some((fw, fh)) = first else {
        return Err(if p.complete {
            Corrupt("GIF contains no image")
        } else {
            Truncated("end of data before the first GIF image")
        });
    };
    // Some encoders write a 0x0 logical screen; decoders then size the canvas from frame 1.
    let (w, h) = if sw == 0 || sh == 0 { (fw, fh) } else { (sw, sh) };
    if w == 0 || h == 0 {
        return Err(Corrupt("GIF width or height 0"));
    }
    (p.width, p.height, p.frames, p.gif) = (u32::from(w), u32::from(h), frames, Some(g));
    Ok(p)
}

fn color_table_len(flags: u8) -> usize {
    if flags & 0x80 != 0 {
        3 << ((flags & 7) + 1)
    } else {
        0
    }
}

/// Position after the 0-length terminator of the sub-block chain at `pos`, or None at end of data.
fn skip_sub_blocks(d: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let n = usize::from(*d.get(pos)?);
        pos = pos.saturating_add(1 + n);
        if n == 0 {
            return Some(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- builders: structurally valid headers, made by hand ----

    fn png_chunk(ty: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut v = (data.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(ty);
        v.extend_from_slice(data);
        let crc = crc32fast::hash(&v[4..]);
        v.extend_from_slice(&crc.to_be_bytes());
        v
    }

    fn png_with_chunks(w: u32, h: u32, depth: u8, ct: u8, interlace: u8, chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[depth, ct, 0, 0, interlace]);
        v.extend(png_chunk(b"IHDR", &ihdr));
        for (ty, data) in chunks {
            v.extend(png_chunk(ty, data));
        }
        v
    }

    fn png_simple(w: u32, h: u32, extra: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
        let mut chunks = extra.to_vec();
        chunks.extend_from_slice(&[(b"IDAT", &[0x78, 0x9C, 1, 2, 3][..]), (b"IEND", &[][..])]);
        png_with_chunks(w, h, 8, 2, 0, &chunks)
    }

    /// TIFF blob with IFD0 = { Make "abc", Orientation SHORT `o` }.
    fn tiff(le: bool, o: u16) -> Vec<u8> {
        let p16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&if le { x.to_le_bytes() } else { x.to_be_bytes() });
        let p32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&if le { x.to_le_bytes() } else { x.to_be_bytes() });
        let mut v = if le { b"II*\0".to_vec() } else { b"MM\0*".to_vec() };
        p32(&mut v, 8);
        p16(&mut v, 2);
        p16(&mut v, 0x010F);
        p16(&mut v, 2);
        p32(&mut v, 4);
        v.extend_from_slice(b"abc\0");
        p16(&mut v, 0x0112);
        p16(&mut v, 3);
        p32(&mut v, 1);
        p16(&mut v, o);
        p16(&mut v, 0);
        p32(&mut v, 0);
        v
    }

    fn seg(marker: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, marker];
        v.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn sof(marker: u8, w: u16, h: u16, samp: &[u8]) -> Vec<u8> {
        let mut p = vec![8];
        p.extend_from_slice(&h.to_be_bytes());
        p.extend_from_slice(&w.to_be_bytes());
        p.push(samp.len() as u8);
        for (i, &s) in samp.iter().enumerate() {
            p.extend_from_slice(&[i as u8 + 1, s, 0]);
        }
        seg(marker, &p)
    }

    /// SOS header plus entropy data exercising stuffing, RSTn and fill bytes.
    fn scan() -> Vec<u8> {
        let mut v = seg(0xDA, &[1, 1, 0, 0, 63, 0]);
        v.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0x00, 0x9A, 0xFF, 0xD7, 0xBC]);
        v
    }

    fn jpeg_with_segments(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    }

    fn eoi() -> Vec<u8> {
        vec![0xFF, 0xD9]
    }

    fn jpeg_simple(w: u16, h: u16) -> Vec<u8> {
        let app0 = seg(0xE0, b"JFIF\0\x01\x02\0\0\x01\0\x01\0\0");
        let dqt = seg(0xDB, &[0; 65]);
        jpeg_with_segments(&[app0, dqt, sof(0xC0, w, h, &[0x22, 0x11, 0x11]), seg(0xC4, &[0; 20]), scan(), eoi()])
    }

    /// GIF89a with a 2-entry global table and one frame per `(w, h, transparent)`.
    fn gif(sw: u16, sh: u16, frames: &[(u16, u16, bool)]) -> Vec<u8> {
        let mut v = b"GIF89a".to_vec();
        v.extend_from_slice(&sw.to_le_bytes());
        v.extend_from_slice(&sh.to_le_bytes());
        v.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255]);
        v.extend_from_slice(b"\x21\xFF\x0BNETSCAPE2.0\x03\x01\x00\x00\x00");
        for &(w, h, t) in frames {
            v.extend_from_slice(&[0x21, 0xF9, 4, u8::from(t), 10, 0, 0, 0]);
            v.extend_from_slice(&[0x2C, 1, 0, 0, 0]);
            v.extend_from_slice(&w.to_le_bytes());
            v.extend_from_slice(&h.to_le_bytes());
            v.push(0x81); // local colour table of 4 entries
            v.extend_from_slice(&[0x3B; 12]); // table bytes that look like a trailer: must be skipped
            v.extend_from_slice(&[2, 5, 0x2C, 0x21, 0x3B, 0, 1, 2, 0xFF, 0x00, 0]);
        }
        v.push(0x3B);
        v
    }

    fn riff(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut body = b"WEBP".to_vec();
        for (cc, data) in chunks {
            body.extend_from_slice(*cc);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut v = b"RIFF".to_vec();
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend(body);
        v
    }

    fn vp8(w: u16, h: u16) -> Vec<u8> {
        let mut v = vec![0x50, 0x02, 0x00, 0x9D, 0x01, 0x2A];
        v.extend_from_slice(&w.to_le_bytes());
        v.extend_from_slice(&h.to_le_bytes());
        v.extend_from_slice(&[1, 2, 3]);
        v
    }

    fn vp8l(w: u32, h: u32, alpha: bool) -> Vec<u8> {
        let bits = (w - 1) | ((h - 1) << 14) | (u32::from(alpha) << 28);
        let mut v = vec![0x2F];
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(&[0, 0, 0]);
        v
    }

    fn u24(x: u32) -> [u8; 3] {
        let [a, b, c, _] = x.to_le_bytes();
        [a, b, c]
    }

    fn vp8x(flags: u8, w: u32, h: u32) -> Vec<u8> {
        let mut v = vec![flags, 0, 0, 0];
        v.extend_from_slice(&u24(w - 1));
        v.extend_from_slice(&u24(h - 1));
        v
    }

    fn anmf(x: u32, y: u32, w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for f in [x / 2, y / 2, w - 1, h - 1, 100] {
            v.extend_from_slice(&u24(f));
        }
        v.push(0);
        v.extend_from_slice(b"VP8L");
        let frame = vp8l(w, h, true);
        v.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        v.extend(frame);
        v
    }

    fn webp_animated(frames: u32) -> Vec<u8> {
        let mut chunks = vec![(b"VP8X", vp8x(0x20 | 0x10 | 0x08 | 0x02, 64, 48)), (b"ICCP", vec![1, 2, 3])];
        chunks.push((b"ANIM", vec![0; 6]));
        for i in 0..frames {
            chunks.push((b"ANMF", anmf(2 * i, 0, 16, 16)));
        }
        chunks.push((b"EXIF", tiff(true, 6)));
        riff(&chunks)
    }

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
    fn jpeg_baseline() {
        let p = probe(&jpeg_simple(640, 480)).unwrap();
        assert_eq!((p.format, p.width, p.height, p.frames, p.orientation), (ImageFormat::Jpeg, 640, 480, 1, 1));
        assert!(!p.has_alpha && !p.has_icc && p.complete && p.bit_depth == 8);
        let j = p.jpeg.unwrap();
        assert_eq!((j.components, j.max_h_samp, j.max_v_samp, j.scans, j.precision), (3, 2, 2, 1, 8));
        assert!(!j.progressive && !j.arithmetic && !j.lossless && j.has_eoi && j.adobe_transform.is_none());
    }

    #[test]
    fn jpeg_exif_orientations_both_byte_orders() {
        for le in [true, false] {
            for o in 1..=8u16 {
                let app1 = seg(0xE1, &[&b"Exif\0\0"[..], &tiff(le, o)].concat());
                let j = jpeg_with_segments(&[app1, sof(0xC0, 8, 8, &[0x11]), scan(), eoi()]);
                assert_eq!(probe(&j).unwrap().orientation, o as u8, "le={le} o={o}");
            }
            for bad in [0, 9, 0xFFFF] {
                let app1 = seg(0xE1, &[&b"Exif\0\0"[..], &tiff(le, bad)].concat());
                let j = jpeg_with_segments(&[app1, sof(0xC0, 8, 8, &[0x11]), scan(), eoi()]);
                assert_eq!(probe(&j).unwrap().orientation, 1);
            }
        }
    }

    #[test]
    fn jpeg_cmyk_adobe_icc() {
        let adobe = seg(0xEE, b"Adobe\0\x64\0\0\0\0\x02");
        let icc = seg(0xE2, b"ICC_PROFILE\0\x01\x01abcd");
        let j = jpeg_with_segments(&[icc, adobe, sof(0xC1, 100, 50, &[0x11; 4]), scan(), eoi()]);
        let p = probe(&j).unwrap();
        assert!(p.has_icc);
        let info = p.jpeg.unwrap();
        assert_eq!((info.components, info.adobe_transform, info.max_h_samp), (4, Some(2), 1));
    }

    #[test]
    fn jpeg_progressive_scans_and_eoi() {
        let dht = seg(0xC4, &[0; 17]);
        let parts = [sof(0xC2, 300, 200, &[0x21, 0x11, 0x11]), scan(), dht.clone(), scan(), dht, scan()];
        let complete = jpeg_with_segments(&[&parts[..], &[eoi()]].concat());
        let p = probe(&complete).unwrap();
        let j = p.jpeg.clone().unwrap();
        assert_eq!((j.scans, j.has_eoi, j.progressive, j.max_h_samp, j.max_v_samp), (3, true, true, 2, 1));
        assert!(p.complete);
        // Trailing junk after EOI (even markers) is ignored.
        let mut junk = complete.clone();
        junk.extend_from_slice(&[0xFF, 0xDA, 0, 0, 1, 2, 0xFF, 0xD8]);
        assert_eq!(probe(&junk).unwrap(), p);
        // Cut inside the last scan's entropy data: fine, but no EOI.
        let cut = &complete[..complete.len() - 4];
        let j = probe(cut).unwrap().jpeg.unwrap();
        assert_eq!((j.scans, j.has_eoi), (3, false));
        // Cut inside the DHT between scans: still a partial image, not an error.
        let mid = jpeg_with_segments(&[sof(0xC2, 300, 200, &[0x11]), scan(), seg(0xC4, &[0; 17])]);
        let j = probe(&mid[..mid.len() - 5]).unwrap().jpeg.unwrap();
        assert_eq!((j.scans, j.has_eoi), (1, false));
        // Arithmetic progressive and lossless flags.
        let a = probe(&jpeg_with_segments(&[sof(0xCA, 1, 1, &[0x11]), scan(), eoi()])).unwrap().jpeg.unwrap();
        assert!(a.arithmetic && a.progressive && !a.lossless);
        let l = probe(&jpeg_with_segments(&[sof(0xC3, 1, 1, &[0x11]), scan(), eoi()])).unwrap().jpeg.unwrap();
        assert!(l.lossless && !l.arithmetic);
    }

    #[test]
    fn jpeg_errors() {
        let jp = |parts: &[Vec<u8>]| probe(&jpeg_with_segments(parts));
        assert!(matches!(jp(&[sof(0xC0, 8, 0, &[0x11]), scan(), eoi()]), Err(Corrupt(_))));
        assert!(matches!(jp(&[sof(0xC0, 0, 8, &[0x11]), scan(), eoi()]), Err(Corrupt(_))));
        assert!(matches!(jp(&[sof(0xC0, 8, 8, &[0x51]), scan(), eoi()]), Err(Corrupt(_))));
        assert!(matches!(jp(&[scan(), sof(0xC0, 8, 8, &[0x11]), eoi()]), Err(Corrupt(_))));
        assert!(matches!(jp(&[sof(0xC0, 8, 8, &[0x11]), sof(0xC0, 8, 8, &[0x11]), scan()]), Err(Corrupt(_))));
        assert!(matches!(jp(&[sof(0xC0, 8, 8, &[0x11]), eoi()]), Err(Corrupt(_))));
        assert!(matches!(jp(&[vec![0xFF, 0xE0, 0x10, 0x00, 1, 2]]), Err(Truncated(_))));
        assert!(matches!(jp(&[sof(0xC0, 8, 8, &[0x11])]), Err(Truncated(_))));
        assert!(matches!(jp(&[vec![0xFF, 0xE0, 0x00, 0x01]]), Err(Corrupt(_))));
        assert!(matches!(probe(&[0xFF, 0xD8, 0xFF]), Err(Truncated(_))));
    }

    #[test]
    fn png_basics() {
        let p =
            probe(&png_with_chunks(3, 2, 16, 6, 1, &[(b"IDAT", &[0; 7]), (b"IDAT", &[0; 5]), (b"IEND", &[])])).unwrap();
        assert_eq!((p.format, p.width, p.height, p.bit_depth, p.frames), (ImageFormat::Png, 3, 2, 16, 1));
        assert!(p.has_alpha && p.complete && !p.has_icc);
        assert_eq!(
            p.png.unwrap(),
            PngInfo { color_type: 6, interlaced: true, has_trns: false, idat_bytes: 12, has_iend: true }
        );
        let p = probe(&png_simple(5, 5, &[(b"iCCP", b"x\0\0abc"), (b"tRNS", &[0, 0, 0, 0, 0, 0])])).unwrap();
        assert!(p.has_alpha && p.has_icc && p.png.unwrap().has_trns);
        let p = probe(&png_with_chunks(1, 1, 1, 3, 0, &[(b"IDAT", &[0; 3]), (b"IEND", &[])])).unwrap();
        assert!(!p.has_alpha && p.bit_depth == 1);
    }

    #[test]
    fn png_exif_orientations() {
        for le in [true, false] {
            for o in 1..=8u16 {
                assert_eq!(probe(&png_simple(2, 2, &[(b"eXIf", &tiff(le, o))])).unwrap().orientation, o as u8);
            }
        }
        let prefixed = [&b"Exif\0\0"[..], &tiff(false, 5)].concat();
        assert_eq!(probe(&png_simple(2, 2, &[(b"eXIf", &prefixed)])).unwrap().orientation, 5);
        assert_eq!(probe(&png_simple(2, 2, &[(b"eXIf", b"MM\0*\xFF\xFF\xFF\xFF")])).unwrap().orientation, 1);
    }

    #[test]
    fn apng_frames() {
        let actl: &[u8] = &[0, 0, 0, 7, 0, 0, 0, 0];
        assert_eq!(probe(&png_simple(4, 4, &[(b"acTL", actl)])).unwrap().frames, 7);
        // acTL after IDAT is ignored by decoders; num_frames 0 falls back to the still.
        let late = png_with_chunks(4, 4, 8, 2, 0, &[(b"IDAT", &[0; 4]), (b"acTL", actl), (b"IEND", &[])]);
        assert_eq!(probe(&late).unwrap().frames, 1);
        assert_eq!(probe(&png_simple(4, 4, &[(b"acTL", &[0; 8])])).unwrap().frames, 1);
    }

    #[test]
    fn png_errors_and_truncation() {
        let bad = |w, h, depth, ct| probe(&png_with_chunks(w, h, depth, ct, 0, &[(b"IEND", &[])]));
        assert!(matches!(bad(0, 1, 8, 2), Err(Corrupt(_))));
        assert!(matches!(bad(1, 0, 8, 2), Err(Corrupt(_))));
        assert!(matches!(bad(1 << 31, 1, 8, 2), Err(Corrupt(_))));
        assert!(matches!(bad(1, 1, 16, 3), Err(Corrupt(_))));
        assert!(matches!(bad(1, 1, 4, 2), Err(Corrupt(_))));
        assert!(matches!(bad(1, 1, 8, 5), Err(Corrupt(_))));
        assert!(bad(0x7FFF_FFFF, 1, 8, 2).is_ok());
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        v.extend(png_chunk(b"gAMA", &[0; 4]));
        assert!(matches!(probe(&v), Err(Corrupt(_))));
        assert!(matches!(probe(&v[..10]), Err(Truncated(_))));
        // IDAT cut short: Ok, counts only the bytes present, no IEND.
        let full = png_with_chunks(9, 9, 8, 0, 0, &[(b"IDAT", &[0; 100]), (b"IEND", &[])]);
        let info = probe(&full[..33 + 8 + 40]).unwrap().png.unwrap();
        assert_eq!((info.idat_bytes, info.has_iend), (40, false));
    }

    #[test]
    fn png_huge_declared_size_is_cheap() {
        let start = std::time::Instant::now();
        let p = probe(&png_simple(100_000, 100_000, &[])).unwrap();
        // Microseconds in practice; the bound only catches work proportional to the declared size.
        assert!(start.elapsed().as_millis() < 1000);
        assert_eq!((p.width, p.height, p.total_pixels()), (100_000, 100_000, 10_000_000_000));
    }

    #[test]
    fn gif_frames_alpha_and_canvas() {
        let p = probe(&gif(10, 8, &[(10, 8, true), (4, 4, false), (2, 2, true)])).unwrap();
        assert_eq!((p.format, p.width, p.height, p.frames), (ImageFormat::Gif, 10, 8, 3));
        assert!(p.has_alpha && p.complete);
        assert!(!probe(&gif(10, 8, &[(10, 8, false), (4, 4, true)])).unwrap().has_alpha);
        let p = probe(&gif(0, 0, &[(6, 5, false)])).unwrap();
        assert_eq!((p.width, p.height, p.frames), (6, 5, 1));
        // A frame larger than the logical screen shows up in the extents and total_pixels.
        let p = probe(&gif(2, 2, &[(1000, 900, false)])).unwrap();
        assert_eq!((p.width, p.gif.clone().unwrap().frame_extent_width, p.total_pixels()), (2, 1001, 1001 * 900));
        // No trailer: frames so far, incomplete. No frame at all: errors.
        let g = gif(10, 8, &[(10, 8, false), (4, 4, false)]);
        let p = probe(&g[..g.len() - 1]).unwrap();
        assert_eq!((p.frames, p.complete), (2, false));
        assert!(matches!(probe(&gif(10, 8, &[])), Err(Corrupt(_))));
        assert!(matches!(probe(&gif(10, 8, &[])[..38]), Err(Truncated(_))));
        assert!(matches!(probe(&gif(0, 0, &[(0, 3, false)])), Err(Corrupt(_))));
    }

    #[test]
    fn webp_simple_formats() {
        let p = probe(&riff(&[(b"VP8 ", vp8(300, 200))])).unwrap();
        assert_eq!((p.format, p.width, p.height, p.frames, p.has_alpha), (ImageFormat::Webp, 300, 200, 1, false));
        assert!(p.complete && !p.webp_lossless);
        assert!(probe(&riff(&[(b"VP8L", vp8l(5, 5, false))])).unwrap().webp_lossless);
        // Scale bits in the top two bits are not size.
        assert_eq!(probe(&riff(&[(b"VP8 ", vp8(0xC000 | 50, 0x4000 | 60))])).unwrap().width, 50);
        let p = probe(&riff(&[(b"VP8L", vp8l(16384, 3, true))])).unwrap();
        assert_eq!((p.width, p.height, p.has_alpha), (16384, 3, true));
        assert!(!probe(&riff(&[(b"VP8L", vp8l(1, 1, false))])).unwrap().has_alpha);
        // Junk after the RIFF payload is not part of the image.
        let mut junk = riff(&[(b"VP8L", vp8l(2, 2, false))]);
        junk.extend_from_slice(b"\xFF\xD8 trailing upload junk");
        assert!(probe(&junk).unwrap().complete);
        let mut key = vp8(3, 3);
        key[0] |= 1;
        assert!(matches!(probe(&riff(&[(b"VP8 ", key)])), Err(Corrupt(_))));
        assert!(matches!(probe(&riff(&[(b"VP8 ", vp8(0, 3))])), Err(Corrupt(_))));
        assert!(matches!(probe(&riff(&[(b"ALPH", vec![0; 12])])), Err(Corrupt(_))));
        assert!(matches!(probe(&riff(&[(b"VP8L", vec![0x2F, 0, 0])])), Err(Truncated(_))));
    }

    #[test]
    fn webp_vp8x_animation() {
        let p = probe(&webp_animated(4)).unwrap();
        assert_eq!((p.width, p.height, p.frames, p.orientation), (64, 48, 4, 6));
        assert!(p.has_alpha && p.has_icc && p.complete);
        let still = probe(&riff(&[(b"VP8X", vp8x(0, 1 << 24, 2)), (b"VP8 ", vp8(5, 5))])).unwrap();
        assert_eq!((still.width, still.height, still.frames, still.has_alpha), (1 << 24, 2, 1, false));
        for o in 1..=8u16 {
            let w = riff(&[(b"VP8X", vp8x(0x08, 5, 5)), (b"VP8 ", vp8(5, 5)), (b"EXIF", tiff(o % 2 == 0, o))]);
            assert_eq!(probe(&w).unwrap().orientation, o as u8);
        }
        let outside = riff(&[(b"VP8X", vp8x(2, 20, 20)), (b"ANMF", anmf(10, 0, 16, 16))]);
        assert!(matches!(probe(&outside), Err(Corrupt(_))));
        let w = webp_animated(2);
        assert!(!probe(&w[..w.len() - 3]).unwrap().complete);
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
