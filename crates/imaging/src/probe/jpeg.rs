//! JPEG header walk: the segment sequence up to EOI, the frame header (SOF), the scans and the
//! APP1 EXIF, APP2 ICC and APP14 Adobe segments. Entropy-coded data is skipped by scanning for
//! markers, never decoded; Huffman and quantisation tables are not read.

use super::exif::exif_orientation;
use super::ProbeError::{Corrupt, Truncated};
use super::{be16, ImageFormat, Probe, ProbeError};

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

pub(super) fn probe_jpeg(d: &[u8]) -> Result<Probe, ProbeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::probe;
    use crate::probe::test_headers::*;

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
}
