//! GIF block walk: the logical screen, then every extension and image descriptor to the trailer,
//! counting frames, widening the canvas to their extents and noting transparency and an ICC
//! application extension. LZW data is skipped by its sub-block lengths, never decompressed.

use super::ProbeError::{Corrupt, Truncated};
use super::{arr, le16, ImageFormat, Probe, ProbeError};

/// GIF frame geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct GifInfo {
    /// Largest `left + width` over all image descriptors. Frames may extend past the logical
    /// screen and decoders allocate them at full size, so limits must look at this too.
    pub frame_extent_width: u32,
    /// Largest `top + height` over all image descriptors.
    pub frame_extent_height: u32,
}

pub(super) fn probe_gif(d: &[u8]) -> Result<Probe, ProbeError> {
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
    use crate::probe::probe;
    use crate::probe::test_headers::*;

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
}
