//! Hand-made, structurally valid headers of every format, shared by the unit tests of each
//! format's file and the cross-format tests in `mod.rs`. Only the bytes a probe reads are
//! meaningful; entropy-coded data, IDAT and bitstream payloads are token bytes. Test-only: the
//! parser itself must never depend on anything here.

pub(super) fn png_chunk(ty: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(ty);
    v.extend_from_slice(data);
    let crc = crc32fast::hash(&v[4..]);
    v.extend_from_slice(&crc.to_be_bytes());
    v
}

pub(super) fn png_with_chunks(
    w: u32,
    h: u32,
    depth: u8,
    ct: u8,
    interlace: u8,
    chunks: &[(&[u8; 4], &[u8])],
) -> Vec<u8> {
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

pub(super) fn png_simple(w: u32, h: u32, extra: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
    let mut chunks = extra.to_vec();
    chunks.extend_from_slice(&[(b"IDAT", &[0x78, 0x9C, 1, 2, 3][..]), (b"IEND", &[][..])]);
    png_with_chunks(w, h, 8, 2, 0, &chunks)
}

/// TIFF blob with IFD0 = { Make "abc", Orientation SHORT `o` }.
pub(super) fn tiff(le: bool, o: u16) -> Vec<u8> {
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

pub(super) fn seg(marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0xFF, marker];
    v.extend_from_slice(&(payload.len() as u16 + 2).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub(super) fn sof(marker: u8, w: u16, h: u16, samp: &[u8]) -> Vec<u8> {
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
pub(super) fn scan() -> Vec<u8> {
    let mut v = seg(0xDA, &[1, 1, 0, 0, 63, 0]);
    v.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0x00, 0x9A, 0xFF, 0xD7, 0xBC]);
    v
}

pub(super) fn jpeg_with_segments(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![0xFF, 0xD8];
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

pub(super) fn eoi() -> Vec<u8> {
    vec![0xFF, 0xD9]
}

pub(super) fn jpeg_simple(w: u16, h: u16) -> Vec<u8> {
    let app0 = seg(0xE0, b"JFIF\0\x01\x02\0\0\x01\0\x01\0\0");
    let dqt = seg(0xDB, &[0; 65]);
    jpeg_with_segments(&[app0, dqt, sof(0xC0, w, h, &[0x22, 0x11, 0x11]), seg(0xC4, &[0; 20]), scan(), eoi()])
}

/// GIF89a with a 2-entry global table and one frame per `(w, h, transparent)`.
pub(super) fn gif(sw: u16, sh: u16, frames: &[(u16, u16, bool)]) -> Vec<u8> {
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

pub(super) fn riff(chunks: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
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

pub(super) fn vp8(w: u16, h: u16) -> Vec<u8> {
    let mut v = vec![0x50, 0x02, 0x00, 0x9D, 0x01, 0x2A];
    v.extend_from_slice(&w.to_le_bytes());
    v.extend_from_slice(&h.to_le_bytes());
    v.extend_from_slice(&[1, 2, 3]);
    v
}

pub(super) fn vp8l(w: u32, h: u32, alpha: bool) -> Vec<u8> {
    let bits = (w - 1) | ((h - 1) << 14) | (u32::from(alpha) << 28);
    let mut v = vec![0x2F];
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(&[0, 0, 0]);
    v
}

pub(super) fn u24(x: u32) -> [u8; 3] {
    let [a, b, c, _] = x.to_le_bytes();
    [a, b, c]
}

pub(super) fn vp8x(flags: u8, w: u32, h: u32) -> Vec<u8> {
    let mut v = vec![flags, 0, 0, 0];
    v.extend_from_slice(&u24(w - 1));
    v.extend_from_slice(&u24(h - 1));
    v
}

pub(super) fn anmf(x: u32, y: u32, w: u32, h: u32) -> Vec<u8> {
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

pub(super) fn webp_animated(frames: u32) -> Vec<u8> {
    let mut chunks = vec![(b"VP8X", vp8x(0x20 | 0x10 | 0x08 | 0x02, 64, 48)), (b"ICCP", vec![1, 2, 3])];
    chunks.push((b"ANIM", vec![0; 6]));
    for i in 0..frames {
        chunks.push((b"ANMF", anmf(2 * i, 0, 16, 16)));
    }
    chunks.push((b"EXIF", tiff(true, 6)));
    riff(&chunks)
}
