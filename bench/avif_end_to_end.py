#!/usr/bin/env python3
"""AVIF from source to answer: the pipeline outputs of a bench/avif_peers.py run scored against one
reference for everyone, the float Lanczos3 resize of the full decode (bench/ssim.py's), instead of
each contestant's own lossless resize.

avif_peers.py scores the encoder's loss alone (against the contestant's own 512-px PNG); that
leaves out what the resize contributes. Here a sharper resize, closer to the ideal one, counts for
its contestant, and a softer one, cheaper to encode, against it: the SSIM of what the user gets.
Same SSIM function as avif_peers.py (Rec. 601 luma, 8x8 windows every 4 px); each output is
decoded by avifdec and scored at its own size.

  bench/.venv/bin/python bench/avif_end_to_end.py PHOTOS OUT [--target SSIM]
"""
import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from avif_peers import avif_luma, ssim  # noqa: E402
from ssim import lanczos_reference, load_rgb_float  # noqa: E402


def luma_of(rgb):
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("photos")
    ap.add_argument("out")
    ap.add_argument("--target", type=float)
    a = ap.parse_args()
    out = Path(a.out)
    tmp = out / "tmp"
    tmp.mkdir(exist_ok=True)
    # ours-q65-avif-e0/<stem>.avif and sharp-pipeline-e0-q65/<stem>.avif
    dirs = {}
    for d in sorted(out.iterdir()):
        m = re.fullmatch(r"ours-q(\d+)-avif-e(\d+)", d.name) or re.fullmatch(r"sharp-pipeline-e(\d+)-q(\d+)", d.name)
        if not m:
            continue
        if d.name.startswith("ours"):
            dirs[d] = ("ours", f"effort {m.group(2)}", int(m.group(1)))
        else:
            dirs[d] = ("sharp", f"effort {m.group(1)}", int(m.group(2)))
    stems = sorted({p.stem for d in dirs for p in d.glob("*.avif")})
    sources = {p.stem: p for p in Path(a.photos).iterdir() if p.stem in stems and p.suffix == ".jpg"}
    refs = {}
    scores = {}  # (contestant, setting, quality) -> list of (ssim, bytes)
    for stem in stems:
        src, _ = load_rgb_float(sources[stem])
        for d, key in dirs.items():
            f = d / f"{stem}.avif"
            if not f.exists():
                continue
            out_luma = avif_luma(f, tmp)
            h, w = out_luma.shape
            if (w, h) not in refs:
                refs[(w, h)] = luma_of(lanczos_reference(src, w, h).astype(np.float64))
            scores.setdefault(key, []).append((ssim(refs[(w, h)], out_luma), f.stat().st_size))
        refs.clear()
    rows = []
    for (c, s, q), v in sorted(scores.items()):
        rows.append(dict(contestant=c, setting=s, quality=q, photos=len(v),
                         ssim=float(np.mean([x[0] for x in v])), kib=float(np.mean([x[1] for x in v])) / 1024))
    print("| contestant | setting | quality | photos | KiB / image | SSIM against the float Lanczos3 reference |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['contestant']} | {r['setting']} | {r['quality']} | {r['photos']} | {r['kib']:.2f} | {r['ssim']:.4f} |")
    target = a.target or float(np.median([r["ssim"] for r in rows]))
    print(f"\n## KiB at equal SSIM {target:.4f} (interpolated between the bracketing qualities)\n")
    print("| contestant | setting | KiB / image | qualities |")
    print("|---|---|---|---|")
    for (c, s) in sorted({(r["contestant"], r["setting"]) for r in rows}):
        pts = sorted((r["ssim"], r["kib"], r["quality"]) for r in rows if (r["contestant"], r["setting"]) == (c, s))
        below = [p for p in pts if p[0] <= target]
        above = [p for p in pts if p[0] >= target]
        if not below or not above:
            print(f"| {c} | {s} | n/a | SSIM {pts[0][0]:.4f}–{pts[-1][0]:.4f} |")
            continue
        (s0, k0, q0), (s1, k1, q1) = below[-1], above[0]
        k = k0 if s1 == s0 else k0 + (k1 - k0) * (target - s0) / (s1 - s0)
        print(f"| {c} | {s} | {k:.2f} | {q0}–{q1} |")
    (out / "end_to_end.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
