//! EXIF orientation (tag 0x0112 of IFD0) from the TIFF structure that JPEG APP1, PNG eXIf and
//! WebP EXIF all embed. Nothing else of EXIF is read, and nothing here fails: a blob that is
//! missing, short or odd gives orientation 1, as decoders treat it.

use super::{arr, usize_of};

/// EXIF orientation from a TIFF blob (an "Exif\0\0" prefix is tolerated: some PNG/WebP writers
/// copy the JPEG APP1 payload verbatim). Returns 1 for anything missing or out of range.
pub(super) fn exif_orientation(blob: &[u8]) -> u8 {
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
