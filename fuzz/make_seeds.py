#!/usr/bin/env python3
"""Writes the probe_decode seed corpus into fuzz/seeds/ (needs Pillow: pip install pillow).

Each seed is [control0, control1] + a small valid image (see fuzz_targets/probe_decode.rs for
what the two control bytes choose). Images are tiny (≤ 48 px a side, every file < 20 KB) so
that libFuzzer mutates structure rather than pixels. Deterministic: re-running rewrites the
same bytes for the same Pillow version.
"""
import io
import os
import struct
import sys
import zlib

from PIL import Image, ImageCms, ImageDraw

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def picture(w, h, mode="RGB", seed=0):
    """A gradient with a few shapes: some detail for entropy crop, compresses small."""
    im = Image.new("RGB", (w, h))
    px = im.load()
    for y in range(h):
        for x in range(w):
            px[x, y] = ((x * 255) // max(w - 1, 1), (y * 255) // max(h - 1, 1), ((x + y + seed) * 37) & 255)
    d = ImageDraw.Draw(im)
    d.ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), outline=(255, 255, 255))
    if mode == "RGBA":
        im = im.convert("RGBA")
        a = Image.new("L", (w, h))
        ImageDraw.Draw(a).rectangle((2, 2, w - 3, h - 3), fill=200)
        im.putalpha(a)
    elif mode != "RGB":
        im = im.convert(mode)
    return im


def save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def exif(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png_chunk(ty, data):
    return struct.pack(">I", len(data)) + ty + data + struct.pack(">I", zlib.crc32(ty + data))


def with_png_chunk(png, ty, data):
    """Inserts a chunk right after IHDR (offset 33)."""
    return png[:33] + png_chunk(ty, data) + png[33:]


def seeds():
    s = {}
    # JPEG
    s["jpeg_420.jpg"] = save(picture(40, 30), "JPEG", quality=80)
    s["jpeg_444_q95.jpg"] = save(picture(33, 17), "JPEG", quality=95, subsampling=0)
    s["jpeg_grey.jpg"] = save(picture(24, 24, "L"), "JPEG")
    s["jpeg_progressive.jpg"] = save(picture(40, 30), "JPEG", progressive=True)
    s["jpeg_cmyk.jpg"] = save(picture(16, 16, "CMYK"), "JPEG")
    s["jpeg_exif6_icc.jpg"] = save(picture(20, 12), "JPEG", exif=exif(6), icc_profile=SRGB)
    s["jpeg_restart_optimized.jpg"] = save(picture(32, 32), "JPEG", optimize=True, restart_marker_blocks=1)
    # PNG
    s["png_rgb.png"] = save(picture(24, 16), "PNG")
    s["png_rgba_interlaced.png"] = save(picture(17, 13, "RGBA"), "PNG", interlace=1)
    s["png_grey1.png"] = save(picture(20, 20, "1"), "PNG")
    s["png_palette_trns.png"] = save(picture(16, 16, "P"), "PNG", transparency=0)
    s["png_la.png"] = save(picture(12, 12, "LA"), "PNG")
    s["png_grey16.png"] = save(picture(12, 10, "L").convert("I;16"), "PNG")
    s["png_icc.png"] = save(picture(8, 8), "PNG", icc_profile=SRGB)
    tiff = exif(8)
    s["png_exif8.png"] = with_png_chunk(save(picture(10, 6), "PNG"), b"eXIf", tiff.removeprefix(b"Exif\0\0"))
    frames = [picture(16, 16, "RGBA", seed=i) for i in range(3)]
    s["apng_3.png"] = save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50)
    # WebP
    s["webp_lossy.webp"] = save(picture(32, 24), "WEBP", quality=70)
    s["webp_lossy_alpha.webp"] = save(picture(20, 20, "RGBA"), "WEBP", quality=70)
    s["webp_lossless.webp"] = save(picture(16, 16, "RGBA"), "WEBP", lossless=True)
    s["webp_icc_exif.webp"] = save(picture(12, 12), "WEBP", icc_profile=SRGB, exif=exif(5))
    s["webp_anim.webp"] = save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True)
    # GIF
    s["gif_static.gif"] = save(picture(24, 16, "P"), "GIF")
    s["gif_transparent.gif"] = save(picture(16, 16, "P"), "GIF", transparency=3)
    s["gif_interlaced.gif"] = save(picture(16, 16, "P"), "GIF", interlace=True)
    gframes = [picture(16, 16, "P", seed=i) for i in range(3)]
    s["gif_anim.gif"] = save(gframes[0], "GIF", save_all=True, append_images=gframes[1:], duration=50, loop=0)
    return s


def gif_disposal():
    """Frames smaller than the screen, disposed to background and to previous, with transparency."""
    small = [picture(8, 8, "P", seed=i) for i in range(3)]
    canvas = [Image.new("P", (16, 16), 0) for _ in range(3)]
    for i, (c, f) in enumerate(zip(canvas, small)):
        c.paste(f, (4 * i, 4 * i))
    return save(canvas[0], "GIF", save_all=True, append_images=canvas[1:], duration=[30, 40, 50],
                loop=2, disposal=[2, 3, 1], transparency=0, optimize=False)


# The animated path (frame by frame into an animated WebP or GIF), chosen outright: (name, image
# seed, control0, control1). control0 >= 50 asks frames=1; control1 0x80 asks GIF output.
ANIMATED = [
    ("anim_gif_to_webp.gif", "gif_anim.gif", 0, 0x03),
    ("anim_gif_disposal_to_gif.gif", "gif_anim_disposal.gif", 1, 0x80),
    ("anim_gif_disposal_to_webp.gif", "gif_anim_disposal.gif", 6, 0x07),
    ("anim_webp_to_gif.webp", "webp_anim.webp", 2, 0x80),
    ("anim_webp_to_webp.webp", "webp_anim.webp", 3, 0x03),
    ("anim_gif_first_frame.gif", "gif_anim.gif", 50, 0x03),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    for i, (name, data) in enumerate(sorted(seeds().items())):
        # Spread the control bytes so each fit, gravity, format and flag appears in the corpus.
        c0 = (i * 7) % 50
        c1 = (i * 13) % 128
        blob = bytes([c0, c1]) + data
        assert len(blob) < 20_000, (name, len(blob))
        with open(os.path.join(OUT, name + ".seed"), "wb") as f:
            f.write(blob)
        print(f"{name:28} {len(blob):6} bytes  c0={c0:3} c1={c1:#04x}", file=sys.stderr)
    images = dict(seeds(), **{"gif_anim_disposal.gif": gif_disposal()})
    for name, image, c0, c1 in ANIMATED:
        with open(os.path.join(OUT, name + ".seed"), "wb") as f:
            f.write(bytes([c0, c1]) + images[image])


if __name__ == "__main__":
    main()
