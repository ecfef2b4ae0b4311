//! PNG header walk: the IHDR, then chunk by chunk to IEND for APNG frames (acTL), tRNS, iCCP,
//! eXIf and the IDAT bytes present. A chunk counts only when whole; CRCs are not checked (the
//! decoder does) and no IDAT byte is inflated.

use super::exif::exif_orientation;
use super::ProbeError::{Corrupt, Truncated};
use super::{arr, be32, payload, usize_of, ImageFormat, Probe, ProbeError};

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

pub(super) fn probe_png(d: &[u8]) -> Result<Probe, ProbeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::probe;
    use crate::probe::test_headers::*;

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
}
