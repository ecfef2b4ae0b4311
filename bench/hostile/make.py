#!/usr/bin/env python3
"""Generates hostile inputs for `resizer resize` into OUTDIR and prints a manifest.

    python3 bench/hostile/make.py OUTDIR > manifest.tsv

Needs Pillow (for the real sample images that truncation and bit flips start from, and for a
few legitimately large images); everything hostile is written byte by byte here. Deterministic:
a fixed seed drives every random choice.

Manifest columns (tab-separated): file, category, expectation, description.
- expectation `reject`: the limits must refuse it (a typed 4xx error is the only right answer);
- expectation `any`: decoding it within the limits is legitimate, an error is fine too; either
  way time and memory must stay within the budget.
"""
import io
import os
import random
import struct
import sys
import zlib

from PIL import Image, ImageDraw

RNG = random.Random(0x5EED)
MANIFEST = []
# Big Pillow encodes (10000x10000) take seconds each; they are cached here between runs. Bump
# CACHE_VERSION when a cached generator changes.
CACHE_DIR = os.environ.get("HOSTILE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "resizer-hostile"))
CACHE_VERSION = "1"


def cached(name, make):
    path = os.path.join(CACHE_DIR, f"v{CACHE_VERSION}-{name}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        pass
    data = make()
    try:
        os.makedirs(CACHE_DIR, exist_ok=True)
        with open(path + ".tmp", "wb") as f:
            f.write(data)
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # no cache, no problem
    return data


def emit(outdir, name, data, category, expect, desc, output="jpg"):
    """`output`: the extension of the file run.sh writes, which picks the output format (webp
    and gif keep an animation, the frame-by-frame path; jpg takes the first frame)."""
    with open(os.path.join(outdir, name), "wb") as f:
        f.write(data)
    MANIFEST.append((name, category, expect, desc, output))


# ---------------------------------------------------------------- helpers


def pil(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def photo(w, h, mode="RGB", seed=0):
    """Gradient plus shapes and noise: realistic entropy so scans and IDATs are not trivial."""
    im = Image.radial_gradient("L").resize((w, h))
    r = Image.linear_gradient("L").resize((w, h))
    b = Image.effect_noise((w, h), 40 + seed)
    im = Image.merge("RGB", (r, im, b))
    d = ImageDraw.Draw(im)
    for i in range(12):
        x, y = (i * 97 + seed * 13) % w, (i * 61 + seed * 7) % h
        d.ellipse((x, y, x + w // 6, y + h // 6), outline=(255, 255 - i * 20, i * 20), width=3)
    if mode == "RGBA":
        a = Image.linear_gradient("L").rotate(90).resize((w, h))
        im.putalpha(a)
    elif mode != "RGB":
        im = im.convert(mode)
    return im


def png_chunk(ty, data):
    return struct.pack(">I", len(data)) + ty + data + struct.pack(">I", zlib.crc32(ty + data) & 0xFFFFFFFF)


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def ihdr(w, h, depth=8, ct=0, interlace=0):
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ct, 0, 0, interlace))


def zeros_deflate(n, level=9):
    """zlib stream of n zero bytes without holding n bytes in memory."""
    c = zlib.compressobj(level)
    out = []
    block = bytes(1 << 20)
    while n > 0:
        k = min(n, len(block))
        out.append(c.compress(block[:k]))
        n -= k
    out.append(c.flush())
    return b"".join(out)


def png_zero_image(w, h, ct, depth=8, interlace=0, extra=b""):
    """A real, valid PNG whose every row is filter 0 + zero samples (a pure deflate bomb)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ct]
    if interlace:
        # Adam7: seven reduced images, each row with its filter byte.
        raw = 0
        for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4),
                               (1, 0, 2, 2), (0, 1, 1, 2)):
            pw, ph = max(0, -(-(w - x0) // dx)), max(0, -(-(h - y0) // dy))
            if pw and ph:
                raw += ph * (1 + (pw * channels * depth + 7) // 8)
    else:
        raw = h * (1 + (w * channels * depth + 7) // 8)
    idat = zeros_deflate(raw)
    plte = png_chunk(b"PLTE", b"\x10\x80\xf0\xff\xff\xff") if ct == 3 else b""
    # Split IDAT like encoders do (spec-wise any split is fine).
    chunks = b"".join(png_chunk(b"IDAT", idat[i:i + 65536]) for i in range(0, len(idat), 65536))
    return PNG_SIG + ihdr(w, h, depth, ct, interlace) + extra + plte + chunks + png_chunk(b"IEND", b"")


def png_tiny(extra_before_idat=b"", w=1, h=1):
    raw = b"".join(b"\x00" + b"\x7f" * 3 * w for _ in range(h))
    return (PNG_SIG + ihdr(w, h, 8, 2) + extra_before_idat + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def jpeg_segments(data):
    """[(marker, payload)] up to and including the first SOS; then the rest (scans..EOI)."""
    assert data[:2] == b"\xff\xd8"
    pos, segs = 2, []
    while True:
        assert data[pos] == 0xFF
        m = data[pos + 1]
        n = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        segs.append((m, data[pos + 4:pos + 2 + n]))
        pos += 2 + n
        if m == 0xDA:
            return segs, data[pos:]


def seg(m, payload):
    return bytes([0xFF, m]) + struct.pack(">H", len(payload) + 2) + payload


def patch_sof(payload, w, h):
    return payload[:1] + struct.pack(">HH", h, w) + payload[5:]


def jpeg_with_size(base, w, h):
    """A real JPEG's tables and first scan with the SOF saying w x h (entropy data runs short)."""
    segs, rest = jpeg_segments(base)
    out = b"\xff\xd8"
    for m, p in segs:
        out += seg(m, patch_sof(p, w, h) if m in (0xC0, 0xC1, 0xC2) else p)
    return out + rest


def scan_bomb(base_progressive, w, h, scans):
    """Progressive JPEG sized w x h made of `scans` DC scans with (almost) no entropy data.

    Each scan makes libjpeg walk every MCU of the full-size image; the file stays tiny. The
    same DC-first scan with Al=0 is repeated, which libjpeg only warns about (warnings are
    silenced by the mozjpeg crate)."""
    segs, _ = jpeg_segments(base_progressive)
    out = b"\xff\xd8"
    sof = None
    for m, p in segs[:-1]:  # everything but the first SOS
        if m == 0xC2:
            p = patch_sof(p, w, h)
            sof = p
        out += seg(m, p)
    ncomp = sof[5]
    ids = [sof[6 + 3 * i] for i in range(ncomp)]
    sos = bytes([ncomp]) + b"".join(bytes([c, 0x00]) for c in ids) + b"\x00\x00\x00"
    body = seg(0xDA, sos) + b"\x00"
    return out + body * scans + b"\xff\xd9"


def dense_scan_bomb(base_progressive, w, h, scans):
    """Like scan_bomb, but every scan really codes every block: a DC table whose only symbol
    (difference 0) has a 1-bit code, and one zero bit per block of entropy data. Bigger file
    (w*h/64/8 bytes per scan), several times the decoding work of empty scans."""
    segs, _ = jpeg_segments(base_progressive)
    out = [b"\xff\xd8"]
    for m, p in segs[:-1]:
        if m == 0xC4:
            continue  # our own table below
        if m == 0xC2:
            p = patch_sof(p, w, h)
            assert p[5] == 1, "grey base expected"
            comp_id = p[6]
            hs, vs = p[7] >> 4, p[7] & 15
        out.append(seg(m, p))
    out.append(seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00"))
    blocks = ((w + 8 * hs - 1) // (8 * hs) * hs) * ((h + 8 * vs - 1) // (8 * vs) * vs)
    body = seg(0xDA, bytes([1, comp_id, 0x00, 0, 0, 0])) + bytes((blocks + 7) // 8)
    return b"".join(out) + body * scans + b"\xff\xd9"


def vp8l_header_dims(vp8l_payload, w, h):
    bits = struct.unpack("<I", vp8l_payload[1:5])[0]
    bits = (bits & ~((1 << 28) - 1)) | (w - 1) | ((h - 1) << 14)
    return vp8l_payload[:1] + struct.pack("<I", bits) + vp8l_payload[5:]


def riff(chunks):
    body = b"WEBP" + b"".join(cc + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) & 1 else b"")
                             for cc, data in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_chunks(data):
    out, pos = [], 12
    while pos + 8 <= len(data):
        cc, n = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        out.append((cc, data[pos + 8:pos + 8 + n]))
        pos += 8 + n + (n & 1)
    return out


def u24(v):
    return struct.pack("<I", v)[:3]


def vp8x(flags, w, h):
    return bytes([flags, 0, 0, 0]) + u24(w - 1) + u24(h - 1)


def anmf(x, y, w, h, frame_chunks, duration=100):
    data = u24(x // 2) + u24(y // 2) + u24(w - 1) + u24(h - 1) + u24(duration) + b"\x00"
    for cc, d in frame_chunks:
        data += cc + struct.pack("<I", len(d)) + d + (b"\x00" if len(d) & 1 else b"")
    return data


def solid_vp8l(w, h):
    """A lossless WebP bitstream of a solid colour: libwebp writes it in ~20 bytes whatever the
    size (colour-indexing transform, 0 bits per pixel), but the decoder still fills w*h ARGB."""
    small = pil(Image.new("RGB", (16, 16), (200, 30, 60)), "WEBP", lossless=True, method=0, quality=0)
    (cc, payload), = webp_chunks(small)
    assert cc == b"VP8L"
    return vp8l_header_dims(payload, w, h)


def gradient_webp():
    """10000x10000 lossless WebP of horizontal gradients: tiny file (rows repeat), but not
    palette-trivial, so libwebp decodes it into a full-size ARGB buffer. ~15 s to encode."""
    g = Image.linear_gradient("L").rotate(90).resize((10000, 1)).resize((10000, 10000), Image.Resampling.NEAREST)
    im = Image.merge("RGB", (g, g.transpose(Image.Transpose.FLIP_LEFT_RIGHT), g))
    return pil(im, "WEBP", lossless=True, method=0, quality=0)


def gif_lzw_solid(w, h):
    """LZW data (min code size 2, all index 0) for a w x h frame, as Pillow writes it."""
    im = Image.new("P", (w, h), 0)
    im.putpalette([0x20, 0x80, 0xF0, 0xFF, 0xFF, 0xFF] + [0] * 762)
    data = pil(im, "GIF")
    # Header (13) + global table; find the image descriptor and return everything from the
    # LZW minimum code size to the end of the sub-blocks.
    pos = data.index(b"\x2c", 13)
    flags = data[pos + 9]
    pos += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    end = pos + 1
    while data[end] != 0:
        end += 1 + data[end]
    return data[pos:end + 1]


def gif_file(screen_w, screen_h, frames, gct=True):
    """frames: list of (left, top, w, h, lzw) with lzw = min code size + sub-blocks."""
    out = [b"GIF89a", struct.pack("<HH", screen_w, screen_h), bytes([0x80 if gct else 0x00, 0, 0])]
    if gct:
        out.append(b"\x20\x80\xf0\xff\xff\xff")  # 2-entry global colour table
    out += [b"\x2c" + struct.pack("<HHHH", left, top, w, h) + b"\x00" + lzw for left, top, w, h, lzw in frames]
    return b"".join(out) + b"\x3b"


TINY_LZW = b"\x02\x02\x44\x01\x00"  # min code 2; clear, 0, end: a 1-pixel frame


# ---------------------------------------------------------------- the files


def samples(out):
    """Real images: sanity checks that must succeed, and the bases for cut and flipped files."""
    s = {}
    s["sample.jpg"] = pil(photo(1024, 768), "JPEG", quality=85)
    s["sample_progressive.jpg"] = pil(photo(1024, 768, seed=1), "JPEG", quality=85, progressive=True)
    s["sample_cmyk.jpg"] = pil(photo(640, 480, "CMYK", seed=2), "JPEG", quality=85)
    s["sample.png"] = pil(photo(512, 384, "RGBA", seed=3), "PNG")
    s["sample_interlaced.png"] = pil(photo(512, 384, seed=4), "PNG", interlace=1)
    s["sample.webp"] = pil(photo(1024, 768, seed=5), "WEBP", quality=80)
    s["sample_lossless.webp"] = pil(photo(400, 300, "RGBA", seed=6), "WEBP", lossless=True, method=0)
    s["sample.gif"] = pil(photo(512, 384, "P", seed=7), "GIF")
    frames = [photo(256, 192, "P", seed=i) for i in range(3)]
    s["sample_anim.gif"] = pil(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80)
    rgba = [photo(256, 192, "RGBA", seed=i) for i in range(3)]
    s["sample_anim.webp"] = pil(rgba[0], "WEBP", save_all=True, append_images=rgba[1:], duration=80)
    s["sample_apng.png"] = pil(rgba[0], "PNG", save_all=True, append_images=rgba[1:], duration=80)
    for name, data in s.items():
        emit(out, name, data, "sample", "ok", "real image; must convert")
    return s


def bombs(out):
    base_jpeg = pil(photo(16, 16), "JPEG", quality=90)
    base_grey_prog = pil(photo(16, 16, "L"), "JPEG", quality=90, progressive=True)
    base_rgb_prog = pil(photo(16, 16), "JPEG", quality=90, progressive=True, subsampling=0)

    # --- pixel counts declared in headers ---
    emit(out, "png_dims_100000x100000.png", PNG_SIG + ihdr(100000, 100000, 8, 2)
         + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + png_chunk(b"IEND", b""),
         "dims", "reject", "PNG IHDR 100000x100000 RGB, 10 GP")
    emit(out, "jpeg_sof_65500x65500.jpg", jpeg_with_size(base_jpeg, 65500, 65500),
         "dims", "reject", "baseline JPEG whose SOF says 65500x65500, 4.3 GP")
    vp8 = dict(webp_chunks(pil(photo(16, 16), "WEBP", quality=50)))[b"VP8 "]
    emit(out, "webp_vp8x_16383x16383.webp", riff([(b"VP8X", vp8x(0, 16383, 16383)), (b"VP8 ", vp8)]),
         "dims", "reject", "WebP VP8X canvas 16383x16383 (268 MP) over a 16x16 VP8 frame")
    emit(out, "webp_vp8l_16384x16384.webp", riff([(b"VP8L", solid_vp8l(16384, 16384))]),
         "dims", "reject", "lossless WebP declaring 16384x16384 (268 MP), 38-byte file")
    vp8_big = vp8[:6] + struct.pack("<HH", 16383, 16383) + vp8[10:]
    emit(out, "webp_vp8_16383x16383.webp", riff([(b"VP8 ", vp8_big)]),
         "dims", "reject", "lossy WebP key frame header 16383x16383")
    emit(out, "gif_screen_65535x65535.gif", gif_file(65535, 65535, [(0, 0, 1, 1, TINY_LZW)]),
         "dims", "reject", "GIF logical screen 65535x65535, one 1x1 frame")
    emit(out, "gif_frame_65535x65535_screen_1x1.gif", gif_file(1, 1, [(0, 0, 65535, 65535, TINY_LZW)]),
         "dims", "reject", "GIF 1x1 screen with a 65535x65535 image descriptor")
    emit(out, "gif_frame_offset_65535_screen_1x1.gif", gif_file(1, 1, [(65535, 65535, 1, 1, TINY_LZW)]),
         "dims", "any", "GIF 1x1 screen, 1x1 frame at left/top 65535 (outside the screen)")
    emit(out, "gif_frame_7000x7000_screen_1x1.gif", gif_file(1, 1, [(0, 0, 7000, 7000, gif_lzw_solid(7000, 7000))]),
         "dims", "reject", "GIF 1x1 screen with a real 7000x7000 frame (196 MB RGBA) in 20 KB")

    # --- real deflate bombs, PNG ---
    emit(out, "png_zero_10000x10000_grey.png", png_zero_image(10000, 10000, 0),
         "deflate", "any", "real 10000x10000 grey PNG (100 MP, at the pixel limit), ~100 KB")
    emit(out, "png_zero_9000x9000_grey.png", png_zero_image(9000, 9000, 0),
         "deflate", "any", "real 9000x9000 grey PNG: 81 MP (over the budget without PNG shrink-on-load)")
    emit(out, "png_zero_7200x7200_grey.png", png_zero_image(7200, 7200, 0),
         "deflate", "any", "real 7200x7200 grey PNG: passes limits, decodes 52 MB")
    emit(out, "png_zero_7200x7200_rgba.png", png_zero_image(7200, 7200, 6),
         "deflate", "any", "real 7200x7200 RGBA PNG: passes limits (207 MB estimate), decodes 207 MB")
    emit(out, "png_zero_7200x7200_rgba_interlaced.png", png_zero_image(7200, 7200, 6, interlace=1),
         "deflate", "any", "real 7200x7200 RGBA Adam7 PNG: no row streaming, decodes 207 MB")
    emit(out, "png_zero_7200x7200_palette1.png", png_zero_image(7200, 7200, 3, depth=1),
         "deflate", "any", "real 7200x7200 1-bit palette PNG: 6 MB of samples expanding to 155 MB RGB")
    emit(out, "png_zero_7200x7200_rgb16.png", png_zero_image(7200, 7200, 2, depth=16),
         "deflate", "any", "real 7200x7200 16-bit RGB PNG: 311 MB of samples reduced to 155 MB")

    # --- ancillary-chunk deflate bombs ---
    z300 = zeros_deflate(300 << 20)
    emit(out, "png_ztxt_bomb_300mb.png", png_tiny(png_chunk(b"zTXt", b"Comment\x00\x00" + z300)),
         "ancillary", "any", "1x1 PNG with a zTXt inflating to 300 MB")
    z50 = zeros_deflate(50 << 20)
    emit(out, "png_ztxt_bomb_20x50mb.png", png_tiny(png_chunk(b"zTXt", b"Comment\x00\x00" + z50) * 20),
         "ancillary", "any", "1x1 PNG with 20 zTXt chunks inflating to 50 MB each")
    emit(out, "png_itxt_bomb_300mb.png", png_tiny(png_chunk(b"iTXt", b"Comment\x00\x01\x00\x00\x00" + z300)),
         "ancillary", "any", "1x1 PNG with a compressed iTXt inflating to 300 MB")
    emit(out, "png_iccp_bomb_300mb.png", png_tiny(png_chunk(b"iCCP", b"icc\x00\x00" + z300)),
         "ancillary", "any", "1x1 PNG whose iCCP profile inflates to 300 MB")
    z150 = zeros_deflate(150 << 20)
    emit(out, "png_iccp_bomb_150mb.png", png_tiny(png_chunk(b"iCCP", b"icc\x00\x00" + z150)),
         "ancillary", "any", "1x1 PNG whose iCCP profile inflates to 150 MB (under the 200 MiB budget)")

    # --- frame-count bombs ---
    frame = (0, 0, 1, 1, TINY_LZW)
    emit(out, "gif_100k_frames.gif", gif_file(1, 1, [frame] * 100_000),
         "frames", "reject", "GIF with 100,000 1x1 frames")
    emit(out, "gif_999_frames.gif", gif_file(64, 64, [frame] * 999),
         "frames", "any", "GIF with 999 frames (just under the limit)")
    gce_ext = b"\x21\xf9\x04\x01\x00\x00\x00\x00"
    emit(out, "gif_1m_extensions.gif",
         b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x20\x80\xf0\xff\xff\xff" + gce_ext * 1_000_000
         + b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00" + TINY_LZW + b"\x3b",
         "frames", "any", "GIF with 1,000,000 graphic control extensions before its one frame")
    actl = png_chunk(b"acTL", struct.pack(">II", 1 << 31, 0))
    emit(out, "apng_2e31_frames.png", png_tiny(actl), "frames", "reject", "APNG acTL num_frames = 2^31")
    emit(out, "apng_1000_frames_declared.png", png_tiny(png_chunk(b"acTL", struct.pack(">II", 1000, 0))),
         "frames", "any", "APNG declaring 1000 frames with none present beyond the default image")
    tiny_vp8l = solid_vp8l(1, 1)
    anim = [(b"VP8X", vp8x(0x02, 1, 1)), (b"ANIM", b"\x00" * 6)]
    anim += [(b"ANMF", anmf(0, 0, 1, 1, [(b"VP8L", tiny_vp8l)]))] * 100_000
    emit(out, "webp_100k_frames.webp", riff(anim), "frames", "reject", "animated WebP with 100,000 1x1 frames")

    # --- JPEG scans ---
    emit(out, "jpeg_5000_scans.jpg", scan_bomb(base_grey_prog, 1024, 1024, 5000),
         "scans", "reject", "progressive JPEG 1024x1024 with 5000 empty DC scans")
    emit(out, "jpeg_100_scans_grey_10000x10000.jpg", scan_bomb(base_grey_prog, 10000, 10000, 100),
         "scans", "any", "progressive grey JPEG 10000x10000, 100 empty DC scans (at the limits), 1 KB")
    emit(out, "jpeg_100_dense_scans_grey_10000x10000.jpg", dense_scan_bomb(base_grey_prog, 10000, 10000, 100),
         "scans", "any", "progressive grey JPEG 10000x10000, 100 DC scans coding every block, 19 MB")
    emit(out, "jpeg_100_scans_rgb444_5000x5000.jpg", scan_bomb(base_rgb_prog, 5000, 5000, 100),
         "scans", "any", "progressive 4:4:4 JPEG 5000x5000, 100 empty DC scans, 1 KB")
    emit(out, "jpeg_baseline_10000x10000_empty.jpg", jpeg_with_size(base_jpeg, 10000, 10000),
         "scans", "any", "baseline 4:2:0 JPEG 10000x10000 with 16x16 worth of data (libjpeg pads)")
    big = lambda mode="RGB": Image.new(mode, (10000, 10000), (200, 30, 60, 128)[:len(mode)])  # noqa: E731
    emit(out, "jpeg_real_10000x10000.jpg", cached("jpeg_real_10000", lambda: pil(big(), "JPEG", quality=50)),
         "scans", "any", "real solid baseline JPEG 10000x10000, 1.5 MB")
    emit(out, "jpeg_real_progressive_grey_10000x10000.jpg",
         cached("jpeg_prog_grey_10000", lambda: pil(big().convert("L"), "JPEG", quality=50, progressive=True)),
         "scans", "any", "real solid progressive grey JPEG 10000x10000 (200 MB of coefficients)")
    # 250 APP2 ICC_PROFILE segments of 64 KB: a 16 MB "profile" reassembled and handed to moxcms.
    icc = bytearray(250 * 65500)
    struct.pack_into(">I", icc, 0, len(icc))
    icc[36:40] = b"acsp"
    icc[12:16], icc[16:20], icc[20:24] = b"mntr", b"RGB ", b"XYZ "
    struct.pack_into(">I", icc, 128, 0)
    app2 = b"".join(seg(0xE2, b"ICC_PROFILE\x00" + bytes([i + 1, 250]) + bytes(icc[i * 65500:(i + 1) * 65500]))
                    for i in range(250))
    emit(out, "jpeg_icc_16mb.jpg", base_jpeg[:2] + app2 + base_jpeg[2:],
         "ancillary", "any", "JPEG with a 16 MB ICC profile in 250 APP2 segments")
    emit(out, "jpeg_12bit.jpg", jpeg_with_size(base_jpeg, 16, 16).replace(b"\xff\xc0\x00\x11\x08", b"\xff\xc0\x00\x11\x0c", 1),
         "malformed", "any", "JPEG whose SOF says 12-bit precision")
    emit(out, "jpeg_sof3_lossless.jpg", base_jpeg.replace(b"\xff\xc0", b"\xff\xc3", 1),
         "malformed", "any", "baseline JPEG relabelled as lossless (SOF3)")

    # --- WebP: declared canvas vs decoded memory ---
    emit(out, "webp_anim_canvas_10000x10000_frame_1x1.webp",
         riff([(b"VP8X", vp8x(0x02, 10000, 10000)), (b"ANIM", b"\x00" * 6),
               (b"ANMF", anmf(0, 0, 1, 1, [(b"VP8L", tiny_vp8l)]))]),
         "webp", "any", "animated WebP, 10000x10000 canvas (100 MP, at the limit), one 1x1 frame, 80 bytes")
    emit(out, "webp_anim_canvas_10000x10000_frame_9998x10000_at_2.webp",
         riff([(b"VP8X", vp8x(0x02, 10000, 10000)), (b"ANIM", b"\x00" * 6),
               (b"ANMF", anmf(2, 0, 9998, 10000, [(b"VP8L", solid_vp8l(9998, 10000))]))]),
         "webp", "any", "animated WebP, 10000x10000 canvas, one solid 9998x10000 frame at x=2, 94 bytes")
    emit(out, "webp_lossless_solid_10000x10000.webp", riff([(b"VP8L", solid_vp8l(10000, 10000))]),
         "webp", "any", "real lossless WebP, solid 10000x10000 (100 MP) in 38 bytes")
    emit(out, "webp_lossless_solid_7000x7000.webp", riff([(b"VP8L", solid_vp8l(7000, 7000))]),
         "webp", "any", "real lossless WebP, solid 7000x7000 (49 MP) in 38 bytes")
    emit(out, "webp_lossless_gradient_10000x10000.webp", cached("webp_ll_gradient_10000", gradient_webp),
         "webp", "any", "real lossless WebP, 10000x10000 horizontal gradients (82 KB): full ARGB decode")
    emit(out, "webp_lossy_solid_10000x10000.webp",
         cached("webp_lossy_10000", lambda: pil(big(), "WEBP", quality=50, method=0)),
         "webp", "any", "real lossy WebP, solid 10000x10000 (100 MP)")
    emit(out, "webp_vp8x_still_canvas_mismatch.webp", riff([(b"VP8X", vp8x(0, 10000, 10000)), (b"VP8 ", vp8)]),
         "webp", "any", "still VP8X canvas 10000x10000 over a 16x16 VP8 frame")
    emit(out, "webp_1m_unknown_chunks.webp",
         riff([(b"VP8X", vp8x(0, 16, 16))] + [(b"XXXX", b"")] * 1_000_000 + [(b"VP8 ", vp8)]),
         "webp", "any", "VP8X WebP with 1,000,000 empty unknown chunks before the frame")
    emit(out, "gif_real_4800x4800.gif", gif_file(4800, 4800, [(0, 0, 4800, 4800, gif_lzw_solid(4800, 4800))]),
         "dims", "any", "real solid 4800x4800 GIF (23 MP, under the memory estimate), 19 KB")
    emit(out, "gif_screen_4800x4800_frame_1x1.gif", gif_file(4800, 4800, [(0, 0, 1, 1, TINY_LZW)]),
         "dims", "any", "GIF 4800x4800 screen (23 MP, under the memory estimate) with a 1x1 frame")

    # --- extreme aspect ratios: few pixels, but the resampler's cost follows the long side ---
    emit(out, "png_wide_4000000x1_grey.png", png_zero_image(4_000_000, 1, 0),
         "aspect", "any", "real 4,000,000x1 grey PNG (4 MP, 4 KB)")
    emit(out, "png_wide_5800000x1_grey.png", png_zero_image(5_800_000, 1, 0),
         "aspect", "any", "real 5,800,000x1 grey PNG (the widest that passes w*32 of the PNG estimate)")
    emit(out, "png_wide_15000000x1_grey.png", png_zero_image(15_000_000, 1, 0),
         "aspect", "any", "real 15,000,000x1 grey PNG (15 MP, passes the limits), 15 KB")
    emit(out, "png_tall_1x15000000_grey.png", png_zero_image(1, 15_000_000, 0),
         "aspect", "any", "real 1x15,000,000 grey PNG (15 MP), 29 KB")
    emit(out, "webp_lossy_alpha_solid_10000x10000.webp",
         cached("webp_lossy_alpha_10000", lambda: pil(big("RGBA"), "WEBP", quality=50, method=0)),
         "webp", "any", "real lossy WebP with ALPH, solid 10000x10000 (100 MP)")

    # --- chunk-count stress ---
    raw = zlib.compress(bytes(1001 * 1000), 9)
    idats = b"".join(png_chunk(b"IDAT", raw[i:i + 1]) for i in range(len(raw)))
    zero_idats = png_chunk(b"IDAT", b"") * 500_000
    emit(out, "png_1byte_idats.png", PNG_SIG + ihdr(1000, 1000, 8, 0) + zero_idats + idats + png_chunk(b"IEND", b""),
         "chunks", "any", "1000x1000 grey PNG split into 500k empty IDATs + 1-byte IDATs")


# ---------------------------------------------------------------- AVIF / HEIC (ISOBMFF)


def bx(kind, body):
    return struct.pack(">I", len(body) + 8) + kind + body


def fullbox(kind, version, flags, body):
    return bx(kind, struct.pack(">I", (version << 24) | flags) + body)


def heif_file(primary_type, tiles=(), grid=None, ispe=(64, 48), tile_ispe=None, iinf_count=None,
              brand=b"avif", extra_top=b""):
    """A HEIF whose item 1 is `primary_type` (`av01`, or `grid` over `tiles`), with one ispe
    each, every item's data 4 bytes of mdat (the grid's payload in idat). Only the structure is
    real: the coded data is filler, which is what a decoder must refuse cleanly."""
    items = [1] + list(tiles)
    infes = [fullbox(b"infe", 2, 0, struct.pack(">HH4sB", 1, 0, primary_type, 0))]
    infes += [fullbox(b"infe", 2, 0, struct.pack(">HH4sB", t, 0, b"av01", 0)) for t in tiles]
    count = len(infes) if iinf_count is None else iinf_count
    iinf = fullbox(b"iinf", 1, 0, struct.pack(">I", count) + b"".join(infes))
    iref = b""
    if tiles:
        iref = fullbox(b"iref", 1, 0, bx(b"dimg", struct.pack(">IH", 1, len(tiles))
                                          + b"".join(struct.pack(">I", t) for t in tiles)))
    props = fullbox(b"ispe", 0, 0, struct.pack(">II", *ispe))
    assoc = [(1, [1])]
    if tiles:
        props += fullbox(b"ispe", 0, 0, struct.pack(">II", *(tile_ispe or ispe)))
        assoc += [(t, [2]) for t in tiles]
    ipma = struct.pack(">I", len(assoc)) + b"".join(
        struct.pack(">IB", item, len(ps)) + bytes(0x80 | p for p in ps) for item, ps in assoc)
    iprp = bx(b"iprp", bx(b"ipco", props) + fullbox(b"ipma", 1, 0, ipma))
    pitm = fullbox(b"pitm", 0, 0, struct.pack(">H", 1))
    hdlr = fullbox(b"hdlr", 0, 0, b"\0\0\0\0pict" + bytes(13))
    idat_payload = b""
    if grid is not None:
        rows, cols, w, h = grid
        idat_payload = struct.pack(">BBBBII", 0, 1, rows - 1, cols - 1, w, h)
    idat = bx(b"idat", idat_payload)
    ftyp = bx(b"ftyp", brand + bytes(4) + b"mif1" + brand)
    iloc_len = 18 + 18 * len(items)
    meta_len = 12 + len(hdlr) + len(pitm) + len(iinf) + len(iref) + len(iprp) + len(idat) + iloc_len
    mdat_start = len(ftyp) + meta_len + 8
    iloc = bytes([0x44, 0]) + struct.pack(">I", len(items))
    for i, item in enumerate(items):
        if item == 1 and idat_payload:
            iloc += struct.pack(">IHHHII", item, 1, 0, 1, 0, len(idat_payload))
        else:
            iloc += struct.pack(">IHHHII", item, 0, 0, 1, mdat_start + 4 * i, 4)
    meta = fullbox(b"meta", 0, 0, hdlr + pitm + fullbox(b"iloc", 2, 0, iloc) + iinf + iref + iprp + idat)
    assert len(meta) == meta_len
    return ftyp + meta + bx(b"mdat", b"\xAA" * (4 * len(items))) + extra_top


def heif_samples(out, s):
    """Real AVIF and HEIC made by heif-enc (Debian's libheif-examples) from a PNG; skipped, with a
    word on stderr, where heif-enc is missing."""
    import shutil
    import subprocess
    import tempfile
    if not shutil.which("heif-enc"):
        print("make.py: heif-enc not found (apt-get install libheif-examples): no AVIF/HEIC samples",
              file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.png")
        with open(src, "wb") as f:
            f.write(pil(photo(1024, 768, "RGBA", seed=8), "PNG"))
        for name in ("sample.avif", "sample.heic"):
            dst = os.path.join(tmp, name)
            subprocess.run(["heif-enc", "-q", "60", "-o", dst, src], check=True, stdout=subprocess.DEVNULL)
            with open(dst, "rb") as f:
                data = f.read()
            s[name] = data
            emit(out, name, data, "sample", "ok", f"real {name[-4:].upper()} 1024x768 with alpha (heif-enc); must convert")


def heif_bombs(out):
    still = heif_file(b"av01")
    meta_at = 24  # after the 24-byte ftyp
    b = bytearray(still)
    b[meta_at:meta_at + 4] = struct.pack(">I", 0xFFFFFFFF)
    emit(out, "avif_meta_past_eof.avif", bytes(b), "heif", "reject", "meta box size 2^32-1, past the end of the file")
    large = still[:meta_at] + struct.pack(">I4sQ", 1, b"meta", 1 << 63) + still[meta_at + 8:]
    emit(out, "avif_largesize_meta.avif", large, "heif", "reject", "meta with a 64-bit size of 2^63 (size-1 bomb)")
    b = bytearray(still)
    b[meta_at + 12:meta_at + 16] = struct.pack(">I", 0)
    emit(out, "avif_size0_child.avif", bytes(b), "heif", "reject", "meta's first child of size 0 (to the end), swallowing the rest")
    depth = 1_000_000
    nested = b"".join(struct.pack(">I4s", (depth - i) * 8, b"meta") for i in range(depth))
    emit(out, "avif_nested_1m.avif", still[:meta_at] + nested, "heif", "reject", "1,000,000 boxes each inside the last")
    emit(out, "avif_iinf_2e32.avif", heif_file(b"av01", iinf_count=0xFFFFFFFF), "heif", "reject",
         "iinf declaring 2^32-1 items (holds one)")
    emit(out, "avif_ispe_65535.avif", heif_file(b"av01", ispe=(65535, 65535)), "heif", "reject",
         "ispe 65535x65535 over 4 bytes of data")
    emit(out, "avif_ispe_20000x5000.avif", heif_file(b"av01", ispe=(20000, 5000)), "heif", "reject",
         "ispe 20000x5000 (100 MP, at the pixel limit) over 4 bytes of data: the decoder must refuse the data")
    tiles = list(range(2, 6))
    emit(out, "avif_grid_2x2_65535.avif",
         heif_file(b"grid", tiles, grid=(2, 2, 65535, 65535), ispe=(65535, 65535), tile_ispe=(65535, 65535)),
         "heif", "reject", "grid 65535x65535 of 2x2 tiles of 65535x65535")
    tiles = list(range(2, 2 + 256))
    emit(out, "avif_grid_overhang.avif",
         heif_file(b"grid", tiles, grid=(16, 16, 1, 1), ispe=(1, 1), tile_ispe=(16384, 16384)),
         "heif", "reject", "1x1 grid from 16x16 tiles of 16384x16384 (64 GP to decode)")
    tiles = list(range(2, 2 + 1600))
    emit(out, "avif_grid_1600_tiles.avif",
         heif_file(b"grid", tiles, grid=(40, 40, 40, 40), ispe=(40, 40), tile_ispe=(1, 1)),
         "heif", "reject", "40x40 grid of 1600 1x1 tiles")
    b = bytearray(heif_file(b"grid", [2], grid=(1, 1, 64, 48)))
    at = b.index(b"idat") + 4
    b[at + 2:at + 4] = b"\xff\xff"
    emit(out, "avif_grid_256x256_declared.avif", bytes(b), "heif", "reject",
         "grid declaring 256x256 tiles with one dimg reference")
    stsz = fullbox(b"stsz", 0, 0, struct.pack(">II", 0, 100_000))
    moov = bx(b"moov", bx(b"trak", bx(b"mdia", bx(b"minf", bx(b"stbl", stsz)))))
    seq = heif_file(b"av01", brand=b"avis", extra_top=moov)
    emit(out, "avis_100000_frames.avif", seq, "heif", "reject", "avis sequence whose track declares 100,000 samples")


def broken(out, s):
    """Truncated at 10/50/90 %, bit-flipped, and the samples' formats behind wrong content."""
    for name, data in s.items():
        stem, ext = name.rsplit(".", 1)
        for pct in (10, 50, 90):
            emit(out, f"cut{pct:02d}_{stem}.{ext}", data[:len(data) * pct // 100],
                 "truncated", "any", f"{name} cut at {pct} %")
        for variant, (span, flips, where) in enumerate([(len(data), 20, "anywhere"),
                                                         (min(len(data), 2048), 8, "in the first 2 KB")]):
            b = bytearray(data)
            for _ in range(flips):
                b[RNG.randrange(span)] ^= 1 << RNG.randrange(8)
            emit(out, f"flip{variant}_{stem}.{ext}", bytes(b), "bitflip", "any",
                 f"{name} with {flips} random bit flips {where}")
    noise = bytes(RNG.randrange(256) for _ in range(4096))
    emit(out, "hello.jpg", b"hello\n", "not-image", "reject", "echo hello > x.jpg")
    emit(out, "empty.jpg", b"", "not-image", "reject", "empty file")
    emit(out, "pdf.jpg", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
         "not-image", "reject", "a PDF named .jpg")
    emit(out, "html.jpg", b"<!DOCTYPE html>\n<html><head><title>x</title></head><body><img src=x.jpg></body></html>\n",
         "not-image", "reject", "an HTML page named .jpg")
    emit(out, "noise.jpg", noise, "not-image", "reject", "4 KB of random bytes")
    emit(out, "soi_only.jpg", b"\xff\xd8\xff", "not-image", "reject", "just the JPEG magic")
    emit(out, "png_sig_only.jpg", PNG_SIG, "not-image", "reject", "just the PNG signature")
    emit(out, "riff_wave.jpg", b"RIFF\x24\x00\x00\x00WAVEfmt ", "not-image", "reject", "a WAV header")
    emit(out, "bmp.jpg", b"BM" + bytes(60), "not-image", "reject", "a BMP header")
    emit(out, "png_named.jpg", s["sample.png"], "not-image", "ok", "a valid PNG named .jpg (content wins)")


def animations(out, s):
    """The frame-by-frame path (output WebP or GIF): real animations, the same cut and flipped,
    frame-count bombs, and pixels summed over frames over and at the limit."""
    for name in ("sample_anim.gif", "sample_anim.webp"):
        stem, ext = name.rsplit(".", 1)
        data = s[name]
        for output in ("webp", "gif"):
            emit(out, f"anim_{stem}_to_{output}.{ext}", data, "animation", "ok",
                 f"{name} resized frame by frame into an animated {output}", output)
        for pct in (10, 50, 90):
            emit(out, f"anim_cut{pct:02d}_{stem}.{ext}", data[:len(data) * pct // 100],
                 "animation", "any", f"{name} cut at {pct} %, into animated WebP", "webp")
        for variant in range(4):
            b = bytearray(data)
            for _ in range(8 * (variant + 1)):
                b[RNG.randrange(len(b))] ^= 1 << RNG.randrange(8)
            emit(out, f"anim_flip{variant}_{stem}.{ext}", bytes(b), "animation", "any",
                 f"{name} with {8 * (variant + 1)} bit flips, into animated WebP", "webp")
    frame = (0, 0, 1, 1, TINY_LZW)
    emit(out, "anim_gif_100k_frames.gif", gif_file(1, 1, [frame] * 100_000),
         "animation", "reject", "GIF with 100,000 1x1 frames, into animated WebP", "webp")
    emit(out, "anim_gif_1000_frames.gif", gif_file(64, 64, [frame] * 1000),
         "animation", "any", "GIF with 1,000 1x1 frames on 64x64 (at the frame limit), into animated WebP", "webp")
    tiny_vp8l = solid_vp8l(1, 1)

    def webp_of_tiny_frames(width, height, frames):
        """An animated WebP: a width x height canvas and `frames` frames of 1x1 pixel."""
        chunks = [(b"VP8X", vp8x(0x02, width, height)), (b"ANIM", b"\x00" * 6)]
        return riff(chunks + [(b"ANMF", anmf(0, 0, 1, 1, [(b"VP8L", tiny_vp8l)]))] * frames)

    emit(out, "anim_webp_100k_frames.webp", webp_of_tiny_frames(1, 1, 100_000), "animation", "reject",
         "animated WebP with 100,000 1x1 frames, into animated WebP", "webp")
    # Pixels summed over frames: 4000x4000 x 999 = 16 GP declared in 30 KB.
    emit(out, "anim_gif_16gp_summed.gif", gif_file(4000, 4000, [frame] * 999), "animation", "reject",
         "GIF 4000x4000 screen with 999 1x1 frames (16 GP summed), into animated WebP", "webp")
    # At the input limit: 1620x1620 x 95 = 249.3 MP summed, every frame composed and resized
    # (to 512x512: 24.9 MP out, under the output limit of 25 MP).
    emit(out, "anim_gif_250mp_summed.gif", gif_file(1620, 1620, [frame] * 95), "animation", "any",
         "GIF 1620x1620 screen with 95 1x1 frames (249.3 MP summed, at the limit), into animated WebP", "webp")
    emit(out, "anim_webp_250mp_summed.webp", webp_of_tiny_frames(1620, 1620, 95), "animation", "any",
         "animated WebP 1620x1620 canvas with 95 1x1 frames (249.3 MP summed), into animated WebP", "webp")
    # Over the output limit: 512x512 x 100 = 26.2 MP out of a small input.
    emit(out, "anim_gif_26mp_out.gif", gif_file(600, 600, [frame] * 100), "animation", "reject",
         "GIF 600x600 with 100 1x1 frames: 26.2 MP of 512x512 output frames, into animated WebP", "webp")
    # The working memory: two frames on a 10000x10000 canvas (200 MP summed, under the limit,
    # but five canvases of 400 MB are not).
    emit(out, "anim_webp_10000x10000_2_frames.webp", webp_of_tiny_frames(10000, 10000, 2), "animation", "reject",
         "animated WebP 10000x10000 canvas with two 1x1 frames (2 GB of canvases), into animated WebP", "webp")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    s = samples(out)
    heif_samples(out, s)
    bombs(out)
    heif_bombs(out)
    broken(out, s)
    animations(out, s)
    for row in MANIFEST:
        print("\t".join(row))


if __name__ == "__main__":
    main()
