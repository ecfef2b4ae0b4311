#!/usr/bin/env python3
"""Pixel checks of `resizer` on the edge-case corpus (/work/shared/corpus/special).

For every file the binary resizes to fit inside 256x256 (PNG, plus JPEG for inputs with
transparency) and the output is compared with a reference built independently by Pillow:

    open -> first frame -> ImageOps.exif_transpose -> embedded ICC (RGB, grey or CMYK) to sRGB
    with ImageCms (no profile: plain Pillow conversion, which also undoes Adobe CMYK inversion)
    -> RGBA -> premultiplied float Lanczos (Pillow LANCZOS, a=3, per channel in mode "F")

Comparisons are done on premultiplied RGB in 0-255 units (a dark fringe or a missed
colour conversion both show up there). Checks:

    size        output fits inside 256x256, aspect kept, never enlarged
    ref/sRGB    MAE / PSNR / mean per-channel shift against the Pillow reference
    upright     Landscape_N / Portrait_N against the _1 output of the family, trying all 8
                orientations of _1: the identity must be the best match by a wide margin
    icc         output is closer to the colour-managed ref than to one ignoring the profile
    alpha-kept  PNG output has an alpha channel when the input has real transparency
    transparent pixels that are transparent in the whole Lanczos window stay alpha=0
    fringe      mean signed premultiplied difference on semi-transparent pixels (dark fringe < 0)
    jpeg-white  the JPEG output is the reference flattened onto white
    frame0      animated inputs: output matches frame 0 (and frame 0 best among the frames)
    error       oversized / broken inputs: exit 1 with "HTTP 413" / "HTTP 422"

Prints a table (file, check, metric, PASS/FAIL), writes bench/check_special/contact.png
(ours next to the reference for every file, checkerboard behind transparency) and exits
non-zero if anything FAILs.

    bench/.venv/bin/python bench/check_special.py [--corpus DIR] [--bin PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageDraw, ImageFont, ImageOps

Image.MAX_IMAGE_PIXELS = None  # we read the header of the 280 MP file; we never decode it

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BOX = 256

# Thresholds, in 0-255 units on premultiplied RGB. Two independent Lanczos3 implementations
# on the same decoded pixels differ by well under 1; DCT-domain shrink-on-load in the JPEG
# decoder adds ~1. A wrong orientation, a skipped ICC conversion or an uninverted CMYK is >10.
MAE_REF = 3.0  # ref: mean absolute error against the Pillow reference
SHIFT_REF = 2.0  # ref: largest |mean per-channel difference| (colour-management miss)
MAE_TINY = 1.0  # 1x1 / 2x2 / 8x8 copies (no resampling)
SHIFT_JPEG = 3.0  # JPEG output: largest |mean per-channel difference| to the flattened ref
FRINGE = 3.0  # |mean signed diff| on semi-transparent px (straight-alpha resize of grey-8bit-alpha: -8.3)
UPRIGHT_SLACK = 1.0  # MAE vs the _1 output may exceed the Pillow refs' own N-vs-_1 MAE by this
ICC_GAP = 1.0  # managed vs profile-ignored refs must differ by this much for the icc row to judge
JPEG_SLACK = 1.0  # JPEG output MAE may exceed Pillow's own q80 JPEG of the correct pixels by this
JPEG_QUALITY = 80  # resizer's default quality (crates/imaging/src/encode/mod.rs)
WHITE_MIN = 245.0  # mean of the JPEG output where the reference is fully transparent

ERRORS = {  # file -> HTTP status that must be in the message
    "giant-image.jpg": 413,
    "65536-uint32-limit.png": 413,
    "truncated.jpg": 422,
    "truncated.png": 422,
    "corrupt-header.jpg": 422,
}
SRGB_CHECK = {  # colour-managed inputs: ref row is reported as "sRGB"
    "Channel_digital_image_CMYK_color.jpg",
    "Channel_digital_image_CMYK_color_no_profile.jpg",
    "p3.png",
    "prophoto.png",
    "gain-map.jpg",
}

ORIENTS = [  # name, PIL transpose of the _1 output (None = identity)
    ("identity", None),
    ("flip-h", Image.Transpose.FLIP_LEFT_RIGHT),
    ("rot180", Image.Transpose.ROTATE_180),
    ("flip-v", Image.Transpose.FLIP_TOP_BOTTOM),
    ("transpose", Image.Transpose.TRANSPOSE),
    ("rot90ccw", Image.Transpose.ROTATE_90),
    ("transverse", Image.Transpose.TRANSVERSE),
    ("rot90cw", Image.Transpose.ROTATE_270),
]


@dataclass
class Row:
    file: str
    check: str
    metric: str
    ok: bool | None  # None = INFO

    @property
    def verdict(self) -> str:
        return "INFO" if self.ok is None else ("PASS" if self.ok else "FAIL")


@dataclass
class Result:
    name: str
    rows: list[Row] = field(default_factory=list)
    ours: np.ndarray | None = None  # premultiplied float RGBA, rgb 0-255, a 0-1
    ours_has_alpha: bool = False
    ours_jpg: np.ndarray | None = None
    ref: np.ndarray | None = None
    error_text: str = ""

    def add(self, check: str, metric: str, ok: bool | None) -> None:
        self.rows.append(Row(self.name, check, metric, ok))


# ----------------------------------------------------------------------------- reference


def _png_16bit_trns_mask(path: Path) -> np.ndarray | None:
    """Pillow drops 16-bit PNGs to 8 bits and then compares the 8-bit pixels with the 16-bit
    tRNS key, so it never finds the key. Decode the (non-interlaced) 16-bit samples here and
    return the exact key mask (True = transparent)."""
    import struct
    import zlib

    data = path.read_bytes()
    pos, idat, ihdr, trns = 8, b"", None, None
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + n]
        if typ == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif typ == b"tRNS":
            trns = body
        elif typ == b"IDAT":
            idat += body
        pos += 12 + n
    if ihdr is None or trns is None:
        return None
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 16 or ctype not in (0, 2) or interlace:
        return None
    ch = 3 if ctype == 2 else 1
    bpp = 2 * ch
    stride = w * bpp
    raw = zlib.decompress(idat)
    out = np.zeros((h, stride), np.uint8)
    prev = [0] * stride
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]
        cur = [0] * stride
        for x in range(stride):
            a = cur[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 0xFF
        out[y] = cur
        prev = cur
    samples = out.view(">u2").reshape(h, w, ch)
    key = np.frombuffer(trns, ">u2")[:ch]
    return np.all(samples == key, axis=2)


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def reference_full(path: Path, frame: int = 0, intent: int = 0, manage: bool = True) -> tuple[np.ndarray, str]:
    """Pillow's decode at full size as straight-alpha float RGBA (rgb 0-255, a 0-1).
    manage=False ignores the embedded profile (what a pipeline that skips it would produce)."""
    im = Image.open(path)
    if frame:
        im.seek(frame)
    im.load()
    icc = im.info.get("icc_profile") if manage else None
    notes = []
    trns_mask = None
    if path.suffix.lower() == ".png" and isinstance(im.info.get("transparency"), tuple):
        if max(im.info["transparency"]) > 255:
            trns_mask = _png_16bit_trns_mask(path)
            im.info.pop("transparency")
            notes.append("16-bit tRNS decoded exactly")
    im = ImageOps.exif_transpose(im)

    # Split off alpha; turn everything else into L / RGB / CMYK.
    alpha = None
    if im.mode == "P" or (im.mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, np.float64) / 257.0
        im = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("LA", "RGBA", "PA", "La", "RGBa"):
        im = im.convert("LA" if im.mode.startswith("L") else "RGBA")
        alpha = im.getchannel("A")
        base = im.convert("L" if im.mode == "LA" else "RGB")
    else:
        base = im if im.mode in ("L", "RGB", "CMYK") else im.convert("RGB")
    if trns_mask is not None:
        alpha = Image.fromarray(np.where(trns_mask, 0, 255).astype(np.uint8), "L")

    if icc:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = src.profile.xcolor_space.strip()
        if space == "GRAY":
            base = base.getchannel(0) if base.mode != "L" else base
        elif space == "RGB":
            base = base.convert("RGB")
        elif space == "CMYK" and base.mode != "CMYK":
            space = "mismatch"
        if space in ("GRAY", "RGB", "CMYK"):
            rgb = ImageCms.profileToProfile(base, src, _SRGB, renderingIntent=intent, outputMode="RGB")
            desc = ImageCms.getProfileDescription(src).strip()
            notes.append(f"ICC {space} '{desc}' -> sRGB")
        else:
            rgb = base.convert("RGB")
            notes.append("ICC ignored (colour space does not match the pixels)")
    else:
        rgb = base.convert("RGB")
        if base.mode == "CMYK":
            notes.append("CMYK without profile: Pillow's plain conversion")
    out = np.zeros((rgb.height, rgb.width, 4), np.float64)
    out[..., :3] = np.asarray(rgb, np.float64)
    out[..., 3] = 1.0 if alpha is None else np.asarray(alpha, np.float64) / 255.0
    return out, "; ".join(notes)


def resize_premultiplied(straight: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float Lanczos (Pillow LANCZOS = Lanczos3) on premultiplied channels."""
    h, w = straight.shape[:2]
    pm = straight.copy()
    pm[..., :3] *= pm[..., 3:4]
    if (w, h) == size:
        return pm
    chans = []
    for c in range(4):
        ch = Image.fromarray(pm[..., c].astype(np.float32), "F").resize(size, Image.Resampling.LANCZOS)
        chans.append(np.asarray(ch, np.float64))
    out = np.stack(chans, axis=2)
    out[..., 3] = np.clip(out[..., 3], 0.0, 1.0)
    out[..., :3] = np.clip(out[..., :3], 0.0, 255.0 * out[..., 3:4])
    return out


def expected_size(w: int, h: int) -> tuple[int, int]:
    s = min(BOX / w, BOX / h)
    if s >= 1.0:
        return w, h
    return max(1, int(w * s + 0.5)), max(1, int(h * s + 0.5))


# ----------------------------------------------------------------------------- ours


def load_output(path) -> tuple[np.ndarray, bool, str]:
    """Our output as premultiplied float RGBA; also whether it carries alpha, and its mode."""
    im = Image.open(path)
    im.load()
    mode = im.mode
    has_alpha = mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    if mode.startswith("I;16") or mode == "I":
        im = Image.fromarray((np.asarray(im, np.float64) / 257.0 + 0.5).astype(np.uint8), "L")
    arr = np.asarray(im.convert("RGBA"), np.float64)
    arr[..., 3] /= 255.0
    arr[..., :3] *= arr[..., 3:4]
    return arr, has_alpha, mode


def run_resizer(binary: Path, src: Path, dst: Path) -> tuple[int, str]:
    if dst.exists():
        dst.unlink()
    cmd = [str(binary), "resize", str(src), "-o", str(dst), "--width", str(BOX), "--height", str(BOX)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return -1, "timeout after 300 s"
    return p.returncode, (p.stdout + p.stderr).strip()


# ----------------------------------------------------------------------------- metrics


def compare(ours: np.ndarray, ref: np.ndarray) -> dict:
    d = ours[..., :3] - ref[..., :3]
    mse = float(np.mean(d * d))
    return {
        "mae": float(np.mean(np.abs(d))),
        "psnr": 99.0 if mse < 1e-9 else 10 * np.log10(255.0**2 / mse),
        "shift": [float(x) for x in d.reshape(-1, 3).mean(axis=0)],
        "amae": float(np.mean(np.abs(ours[..., 3] - ref[..., 3]))) * 255.0,
    }


def fmt(m: dict) -> str:
    s = ",".join(f"{x:+.1f}" for x in m["shift"])
    return f"MAE {m['mae']:.2f} PSNR {m['psnr']:.1f} dB shift(R,G,B) {s}" + (
        f" alphaMAE {m['amae']:.2f}" if m["amae"] > 0.005 else ""
    )


def flatten_white(pm: np.ndarray) -> np.ndarray:
    out = pm.copy()
    out[..., :3] = pm[..., :3] + (1.0 - pm[..., 3:4]) * 255.0
    out[..., 3] = 1.0
    return out


def same_size(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape[:2] == b.shape[:2]


# ----------------------------------------------------------------------------- checks


def check_file(path: Path, binary: Path, out_dir: Path) -> Result:
    name = path.name
    res = Result(name)
    png_out = out_dir / f"{name}.png"  # full name: rotating-squares.gif and .webp share a stem
    rc, msg = run_resizer(binary, path, png_out)

    if name in ERRORS:
        want = ERRORS[name]
        res.error_text = f"exit {rc}: {msg}"
        first = msg.splitlines()[0] if msg else ""
        has_want = f"HTTP {want}" in msg
        other_4xx = any(f"HTTP 4{i:02d}" in msg for i in range(100))
        ok = rc == 1 and (has_want or (want == 422 and other_4xx)) and not png_out.exists()
        tail = first.split(": ", 1)[-1] if ": " in first else first
        res.add("error", f"exit {rc}, want HTTP {want}: {tail[-120:]}", ok)
        return res

    if rc != 0 or not png_out.exists():
        res.error_text = f"exit {rc}: {msg}"
        res.add("run", f"exit {rc}: {msg[-120:]}", False)
        return res

    src = Image.open(path)
    n_frames = getattr(src, "n_frames", 1)
    src_mode = src.mode
    oriented = ImageOps.exif_transpose(src) if src.getexif().get(0x0112, 1) != 1 else src
    in_w, in_h = oriented.size
    src.close()

    ours, ours_alpha, ours_mode = load_output(png_out)
    res.ours, res.ours_has_alpha = ours, ours_alpha
    oh, ow = ours.shape[:2]

    # size ---------------------------------------------------------------------------------
    ew, eh = expected_size(in_w, in_h)
    size_ok = ow <= BOX and oh <= BOX and ow <= in_w and oh <= in_h and abs(ow - ew) <= 1 and abs(oh - eh) <= 1
    res.add("size", f"{in_w}x{in_h} -> {ow}x{oh} (expect {ew}x{eh}), output mode {ours_mode}", size_ok)
    size = (ow, oh) if size_ok else (ew, eh)

    # reference ----------------------------------------------------------------------------
    full, notes = reference_full(path, 0, 0)
    refs = {"perceptual": resize_premultiplied(full, size)}
    if "ICC CMYK" in notes:  # LUT profile: intents differ; either is a valid conversion
        refs["relative"] = resize_premultiplied(reference_full(path, 0, 1)[0], size)
    res.ref = refs["perceptual"]
    input_transparent = bool(np.any(full[..., 3] < 1.0))

    if not same_size(ours, res.ref):
        res.add("ref", "size mismatch, not compared", False)
        return res

    best = min(refs, key=lambda k: compare(ours, refs[k])["mae"])
    ref = res.ref = refs[best]
    m = compare(ours, ref)
    tiny = (ow, oh) == (in_w, in_h) and in_w * in_h <= 64
    mae_lim = MAE_TINY if tiny else MAE_REF
    ok = m["mae"] <= mae_lim and max(abs(x) for x in m["shift"]) <= SHIFT_REF and m["amae"] <= mae_lim
    label = "sRGB" if name in SRGB_CHECK else "ref"
    extra = ""
    if notes:
        extra = f" [{notes}" + (f"; intent {best}" if len(refs) > 1 else "") + "]"
    if len(refs) > 1:
        other = [k for k in refs if k != best][0]
        extra += f" ({other} intent: MAE {compare(ours, refs[other])['mae']:.2f})"
    res.add(label, fmt(m) + extra, ok)

    # ICC honoured: closer to the managed reference than to the one that ignores the profile
    if "ICC" in notes:
        plain = resize_premultiplied(reference_full(path, 0, 0, manage=False)[0], size)
        gap = compare(ref, plain)["mae"]
        mu = compare(ours, plain)
        if gap >= ICC_GAP:
            res.add(
                "icc",
                f"MAE vs managed ref {m['mae']:.2f}, vs profile-ignored ref {mu['mae']:.2f} "
                f"(shift {','.join(f'{x:+.1f}' for x in mu['shift'])}); refs differ by {gap:.2f}",
                m["mae"] < mu["mae"],
            )
        else:
            res.add("icc", f"profile is (near) sRGB: managed and ignored refs differ by only {gap:.2f}", None)

    # animated: frame 0 --------------------------------------------------------------------
    if n_frames > 1:
        maes = []
        for i in range(min(n_frames, 100)):
            fi, _ = reference_full(path, i)
            maes.append(compare(ours, resize_premultiplied(fi, size))["mae"])
        bi = int(np.argmin(maes))
        ok = maes[0] <= MAE_REF and maes[0] - maes[bi] <= 0.5
        rest = [(v, i) for i, v in enumerate(maes) if i != 0]
        nxt = min(rest)
        res.add(
            "frame0",
            f"{n_frames} frames; MAE vs frame 0 {maes[0]:.2f}, best frame {bi} ({maes[bi]:.2f}); "
            f"nearest other frame {nxt[1]} ({nxt[0]:.2f})",
            ok,
        )

    # alpha --------------------------------------------------------------------------------
    if input_transparent:
        res.add("alpha-kept", f"input has transparency; output mode {ours_mode}", ours_alpha)
        # transparent where the whole Lanczos window is transparent: ref alpha==0 dilated by 1
        zero = ref[..., 3] <= 0.0
        core = zero.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                core &= np.roll(np.roll(zero, dy, 0), dx, 1)
        leak = ours[..., 3][core] > 0
        res.add(
            "transparent",
            f"{int(core.sum())} px transparent in ref; {int(leak.sum())} of them not alpha=0 in ours"
            + (f" (max alpha {ours[..., 3][core].max() * 255:.0f})" if leak.any() else ""),
            not leak.any(),
        )
        semi = (ref[..., 3] > 0.1) & (ref[..., 3] < 0.9)
        if semi.sum() >= 4:
            d = (ours[..., :3] - ref[..., :3])[semi]
            f = float(d.mean())
            res.add(
                "fringe",
                f"{int(semi.sum())} semi-transparent px: mean premult diff {f:+.2f}, MAE {np.abs(d).mean():.2f}",
                abs(f) <= FRINGE,
            )
        else:
            res.add("fringe", "no semi-transparent pixels in the reference", None)

        jpg_out = out_dir / f"{name}.jpg"
        rc, jmsg = run_resizer(binary, path, jpg_out)
        if rc != 0 or not jpg_out.exists():
            res.add("jpeg-white", f"exit {rc}: {jmsg[-100:]}", False)
        else:
            oj, _, jmode = load_output(jpg_out)
            res.ours_jpg = oj
            rf = flatten_white(ref)
            if same_size(oj, rf):
                mj = compare(oj, rf)
                buf = io.BytesIO()
                Image.fromarray(np.clip(rf[..., :3] + 0.5, 0, 255).astype(np.uint8), "RGB").save(
                    buf, "JPEG", quality=JPEG_QUALITY, subsampling=2
                )
                base = compare(load_output(io.BytesIO(buf.getvalue()))[0], rf)["mae"]
                tr = ref[..., 3] <= 0.0
                white = float(oj[..., :3][tr].mean()) if tr.any() else None
                okj = (
                    mj["mae"] <= base + JPEG_SLACK
                    and max(abs(x) for x in mj["shift"]) <= SHIFT_JPEG
                    and (white is None or white >= WHITE_MIN)
                )
                res.add(
                    "jpeg-white",
                    f"{jmode} vs ref on white: {fmt(mj)}; Pillow q{JPEG_QUALITY} of the ref: MAE {base:.2f}"
                    + (f"; transparent area mean {white:.1f}" if white is not None else ""),
                    okj,
                )
            else:
                res.add("jpeg-white", f"size {oj.shape[1]}x{oj.shape[0]} != {size}", False)
    elif src_mode in ("RGBA", "LA", "PA"):
        res.add("alpha-kept", f"input alpha channel is fully opaque; output mode {ours_mode}", None)
    return res


def check_upright(results: dict[str, Result]) -> list[Row]:
    """Landscape_N / Portrait_N (EXIF orientation N) must show the picture of _1 upright.
    Every orientation of our _1 output is tried: the identity must win by a wide margin. The
    files are not pixel-identical (_2.._8 carry Apple's "Generic RGB" profile and were encoded
    separately), so the MAE to _1 is judged against the same MAE between the Pillow refs."""
    rows = []
    for fam in ("Landscape", "Portrait"):
        base = results.get(f"{fam}_1.jpg")
        if base is None or base.ours is None or base.ref is None:
            continue
        b_img = Image.fromarray(np.clip(base.ours[..., :3] + 0.5, 0, 255).astype(np.uint8), "RGB")
        for n in range(2, 9):
            r = results.get(f"{fam}_{n}.jpg")
            if r is None or r.ours is None or r.ref is None:
                rows.append(Row(f"{fam}_{n}.jpg", "upright", "no output", False))
                continue
            scores = {}
            for oname, op in ORIENTS:
                cand = np.asarray(b_img if op is None else b_img.transpose(op), np.float64)
                if cand.shape[:2] == r.ours.shape[:2]:
                    scores[oname] = float(np.mean(np.abs(r.ours[..., :3] - cand)))
            bestname = min(scores, key=scores.get) if scores else "none"
            ident = scores.get("identity", float("inf"))
            others = sorted(v for k, v in scores.items() if k != "identity")
            inherent = (
                compare(r.ref, base.ref)["mae"] if same_size(r.ref, base.ref) else float("inf")
            )
            ok = (
                bestname == "identity"
                and (not others or others[0] >= 2 * ident)
                and ident <= inherent + UPRIGHT_SLACK
            )
            metric = (
                f"MAE vs our {fam}_1 {ident:.2f} (Pillow refs N vs _1: {inherent:.2f}); "
                f"best orientation of _1: {bestname}" + (f", next best {others[0]:.1f}" if others else "")
            )
            rows.append(Row(f"{fam}_{n}.jpg", "upright", metric, ok))
    return rows


# ----------------------------------------------------------------------------- contact sheet

PANEL = 256
LABEL_H = 16


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def checker(w: int, h: int, sq: int = 8) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    c = np.where(((x // sq) + (y // sq)) % 2 == 0, 200.0, 140.0)
    return np.repeat(c[..., None], 3, axis=2)


def panel(pm: np.ndarray | None, text: str, show_checker: bool) -> Image.Image:
    """One 256x256 tile; images under 128 px are blown up (nearest) by an integer factor."""
    canvas = Image.new("RGB", (PANEL, PANEL + LABEL_H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    if pm is not None:
        h, w = pm.shape[:2]
        k = max(1, PANEL // max(w, h)) if max(w, h) < 128 else 1
        if k > 1:
            pm = np.repeat(np.repeat(pm, k, axis=0), k, axis=1)
            text += f" (x{k} nearest)"
        h, w = pm.shape[:2]
        bg = checker(w, h) if show_checker else np.full((h, w, 3), 255.0)
        rgb = pm[..., :3] + (1.0 - pm[..., 3:4]) * bg
        img = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
        canvas.paste(img, ((PANEL - w) // 2, (PANEL - h) // 2))
    draw.text((2, PANEL + 1), text, fill=(0, 0, 0), font=_font(12))
    return canvas


def contact_sheet(results: list[Result], path: Path) -> None:
    blocks = []
    for r in results:
        fails = [x for x in r.rows if x.ok is False]
        title = f"{r.name}  {'FAIL' if fails else 'PASS'}"
        panels = []
        if r.ours is None:
            p = panel(None, "no output", False)
            d = ImageDraw.Draw(p)
            line, y = "", 20
            for wd in r.error_text.split():
                if len(line) + len(wd) > 38:
                    d.text((4, y), line, fill=(120, 0, 0), font=_font(12))
                    line, y = "", y + 15
                line += wd + " "
            d.text((4, y), line, fill=(120, 0, 0), font=_font(12))
            panels.append(p)
        else:
            panels.append(panel(r.ours, "ours .png", True))
            panels.append(panel(r.ref, "Pillow ref", True))
            if r.ours_jpg is not None:
                panels.append(panel(r.ours_jpg, "ours .jpg", False))
                panels.append(panel(flatten_white(r.ref), "ref on white", False))
        block = Image.new("RGB", (len(panels) * (PANEL + 4), PANEL + LABEL_H + 22), (235, 235, 235))
        d = ImageDraw.Draw(block)
        d.text((4, 3), title, fill=(180, 0, 0) if fails else (0, 110, 0), font=_font(15))
        for i, p in enumerate(panels):
            block.paste(p, (i * (PANEL + 4), 22))
        blocks.append(block)
    width = 8 * (PANEL + 4) + 14
    x = y = row_h = 0
    places = []
    for b in blocks:
        if x + b.width > width:
            x, y, row_h = 0, y + row_h + 10, 0
        places.append((x, y))
        x += b.width + 14
        row_h = max(row_h, b.height)
    sheet = Image.new("RGB", (width, y + row_h), (255, 255, 255))
    for b, pos in zip(blocks, places):
        sheet.paste(b, pos)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus/special"))
    ap.add_argument("--bin", type=Path, default=REPO / "target" / "release" / "resizer")
    ap.add_argument("--out", type=Path, default=HERE / "check_special" / "out")
    ap.add_argument("--contact", type=Path, default=HERE / "check_special" / "contact.png")
    args = ap.parse_args()
    if not args.bin.exists():
        print(f"missing binary {args.bin} (cargo build --release)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    files = sorted(p for p in args.corpus.iterdir() if p.is_file())
    results: dict[str, Result] = {}
    for p in files:
        try:
            results[p.name] = check_file(p, args.bin, args.out)
        except Exception as e:  # a checker bug must show up as a FAIL, not a crash
            r = Result(p.name)
            r.add("checker", f"{type(e).__name__}: {e}", False)
            results[p.name] = r
    for row in check_upright(results):
        results[row.file].rows.append(row)

    rows = [row for r in results.values() for row in r.rows]
    wf = max(len(r.file) for r in rows)
    wc = max(len(r.check) for r in rows)
    print(f"{'file':<{wf}}  {'check':<{wc}}  {'result':<6}  metric")
    print("-" * (wf + wc + 100))
    for r in rows:
        print(f"{r.file:<{wf}}  {r.check:<{wc}}  {r.verdict:<6}  {r.metric}")
    fails = [r for r in rows if r.ok is False]
    print("-" * (wf + wc + 100))
    print(f"{len(files)} files, {len(rows)} checks: {sum(r.ok is True for r in rows)} PASS, {len(fails)} FAIL")

    contact_sheet(list(results.values()), args.contact)
    print(f"contact sheet: {args.contact}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
