//! WebP header walk: the RIFF bound, the first chunk (VP8, VP8L or VP8X) for size and alpha, and
//! after VP8X the chunks that carry ICC, EXIF and animation frames. Bitstreams are not decoded:
//! only the few header bytes of VP8 and VP8L that state the size are read.

use super::exif::exif_orientation;
use super::ProbeError::{Corrupt, Truncated};
use super::{arr, le24, le32, payload, usize_of, ImageFormat, Probe, ProbeError};

pub(super) fn probe_webp(d: &[u8]) -> Result<Probe, ProbeError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::probe;
    use crate::probe::test_headers::*;

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
}
