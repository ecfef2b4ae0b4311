#!/usr/bin/env python3
"""Thumbnail quality: SSIM of each contestant's output against a float Lanczos3 reference.

For every input image in INPUT_DIR and every contestant directory in OUT_ROOT (the
`--out-root` of compare_libvips.py: OUT_ROOT/ours, OUT_ROOT/sharp, OUT_ROOT/pyvips,
OUT_ROOT/vipsthumbnail; outputs matched to inputs by file stem):

  reference = Pillow full decode → ImageOps.exif_transpose → RGB → float32 numpy →
              each channel resized in mode 'F' with Image.LANCZOS (Lanczos3) to the exact
              width x height of that contestant's output → clipped to [0, 255]
  score     = skimage.metrics.structural_similarity(output, reference,
                                                   channel_axis=2, data_range=255)

The reference is computed in gamma-encoded sRGB values (as all the contestants
resize), straight from the full-resolution decode (no JPEG shrink-on-load), so it
shows what shrink-on-load, kernel and rounding choices cost.

A 'floor' row scores the reference itself after a Pillow JPEG round trip at the same
quality (4:2:0): the SSIM an ideal resizer would get, i.e. how much of the loss is the
JPEG encoding rather than the resize.

Reports mean / min SSIM and mean output size per contestant (SSIM at a given
JPEG quality only compares fairly between encoders whose files are about as big), ours − each libvips, and the files whose
output dimensions differ by more than 1 px between contestants.

Run with the venv:  bench/.venv/bin/python bench/ssim.py INPUT_DIR OUT_ROOT
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

try:
    import numpy as np
    from PIL import Image, ImageOps
    from skimage.metrics import structural_similarity
except ImportError as e:  # pragma: no cover
    sys.exit(f"{e}: run with bench/.venv/bin/python (see bench/install_peers.sh)")

Image.MAX_IMAGE_PIXELS = None  # the large/ corpus is trusted input
ORDER = ("ours", "sharp", "pyvips", "vipsthumbnail")


def find_outputs(d: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(d.iterdir()) if p.is_file()}


def load_rgb_float(path: Path) -> tuple[np.ndarray, bool]:
    """Full decode, EXIF-oriented, as float32 RGB; also whether the source is greyscale."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        grey = im.mode in ("1", "L", "LA", "I", "I;16", "F")
        return np.asarray(im.convert("RGB"), dtype=np.float32), grey


def jpeg_roundtrip(ref: np.ndarray, quality: int, grey: bool) -> np.ndarray:
    """The reference itself through Pillow's JPEG encoder (4:2:0, libjpeg tables): the floor."""
    im = Image.fromarray(np.rint(ref).astype(np.uint8), "RGB")
    if grey:
        im = im.convert("L")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, subsampling=2)
    buf.seek(0)
    with Image.open(buf) as back:
        return np.asarray(back.convert("RGB"), dtype=np.float32)


def lanczos_reference(src: np.ndarray, w: int, h: int) -> np.ndarray:
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(src[:, :, c]), mode="F")
                        .resize((w, h), Image.LANCZOS), dtype=np.float32)
             for c in range(3)]
    return np.clip(np.stack(chans, axis=2), 0.0, 255.0)


def exif_orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(0x0112)
    except Exception:
        return None


FLOOR = "floor"


def score_one(job: tuple[str, str, dict[str, str], int]) -> dict:
    """Score every contestant's output for one input (one full decode, references cached by size)."""
    stem, src_path, outs, floor_q = job
    row: dict = {"stem": stem, "input": src_path, "dims": {}, "ssim": {}, "bytes": {}, "notes": []}
    for name, out_path in outs.items():
        if name != FLOOR:
            row["bytes"][name] = os.path.getsize(out_path)
    try:
        src, grey = load_rgb_float(Path(src_path))
    except Exception as e:
        row["notes"].append(f"reference decode failed: {e}")
        return row
    row["input_dims"] = [src.shape[1], src.shape[0]]
    refs: dict[tuple[int, int], np.ndarray] = {}
    for name, out_path in outs.items():
        try:
            if name == FLOOR:  # reference→JPEG at the size of the first real contestant
                dims = next(iter(row["dims"].values()), None)
                if dims is None:
                    continue
                w, h = dims
                row["dims_floor"] = [w, h]
                row["ssim"][FLOOR] = float(structural_similarity(
                    jpeg_roundtrip(refs[(w, h)], floor_q, grey), refs[(w, h)],
                    channel_axis=2, data_range=255))
                continue
            with Image.open(out_path) as im:
                o = exif_orientation(im)
                if o not in (None, 1):
                    row["notes"].append(f"{name}: output still has EXIF orientation {o}")
                out = np.asarray(im.convert("RGB"), dtype=np.float32)
        except Exception as e:
            row["notes"].append(f"{name}: cannot decode output: {e}")
            continue
        h, w = out.shape[:2]
        row["dims"][name] = [w, h]
        if (w, h) not in refs:
            refs[(w, h)] = lanczos_reference(src, w, h)
        row["ssim"][name] = float(structural_similarity(
            out, refs[(w, h)], channel_axis=2, data_range=255))
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input_dir", type=Path)
    ap.add_argument("out_root", type=Path,
                    help="folder holding one sub-folder of outputs per contestant")
    ap.add_argument("--contestant", action="append", default=[], metavar="NAME=DIR",
                    help="explicit contestant output folder (repeatable); default: every "
                         "sub-folder of OUT_ROOT")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="worker processes (default: all CPUs)")
    ap.add_argument("--floor-quality", type=int, default=80,
                    help="JPEG quality of the 'floor' row: the reference itself encoded by Pillow "
                         "(4:2:0), i.e. the SSIM a perfect resizer would get (default 80; 0 = off)")
    ap.add_argument("--per-image", action="store_true", help="also print a per-image table")
    ap.add_argument("--json", dest="json_out", type=Path, help="write all scores as JSON here")
    a = ap.parse_args()

    dirs: dict[str, Path] = {}
    for spec in a.contestant:
        name, _, d = spec.partition("=")
        dirs[name] = Path(d)
    if not dirs:
        subs = [p for p in sorted(a.out_root.iterdir()) if p.is_dir()]
        dirs = {p.name: p for p in sorted(subs, key=lambda p: (ORDER.index(p.name)
                                                               if p.name in ORDER else 99, p.name))}
    if not dirs:
        ap.error(f"no contestant folders in {a.out_root}")
    outputs = {n: find_outputs(d) for n, d in dirs.items()}

    inputs = sorted(p for p in a.input_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    jobs, missing = [], {n: [] for n in dirs}
    for p in inputs:
        outs = {}
        for n in dirs:
            if p.stem in outputs[n]:
                outs[n] = str(outputs[n][p.stem])
            else:
                missing[n].append(p.name)
        if a.floor_quality:
            outs[FLOOR] = ""
        jobs.append((p.stem, str(p), outs, a.floor_quality))

    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        rows = list(ex.map(score_one, jobs, chunksize=1))

    names = list(dirs) + ([FLOOR] if a.floor_quality else [])
    missing[FLOOR] = []
    # Only compare contestants on images all of them produced, so the means are comparable.
    common = [r for r in rows if all(n in r["ssim"] for n in names)]
    summary = {}
    for n in names:
        all_scores = [r["ssim"][n] for r in rows if n in r["ssim"]]
        cs = [r["ssim"][n] for r in common]
        summary[n] = {
            "images_scored": len(all_scores),
            "missing": missing[n],
            "mean_ssim_common": statistics.fmean(cs) if cs else None,
            "min_ssim_common": min(cs) if cs else None,
            "mean_ssim_all": statistics.fmean(all_scores) if all_scores else None,
            "mean_output_bytes_common": (statistics.fmean(r["bytes"][n] for r in common)
                                         if common and n != FLOOR else None),
        }

    mismatched = []
    for r in rows:
        dims = r["dims"]  # real contestants only
        if len(dims) < 2:
            continue
        ws = [d[0] for d in dims.values()]
        hs = [d[1] for d in dims.values()]
        if max(ws) - min(ws) > 1 or max(hs) - min(hs) > 1:
            mismatched.append({"stem": r["stem"], "dims": dims})

    # ------------------------------------------------------------------ report
    print(f"### SSIM vs float Lanczos3 of the full decode — {a.input_dir} "
          f"({len(inputs)} inputs, {len(common)} scored for every contestant)\n")
    print("| contestant | images | mean SSIM | min SSIM | mean output KiB | missing |")
    print("|---|--:|--:|--:|--:|--:|")
    for n in names:
        s = summary[n]
        f = (lambda x: "—" if x is None else f"{x:.5f}")
        label = f"floor: reference → Pillow JPEG Q{a.floor_quality} 4:2:0" if n == FLOOR else n
        print(f"| {label} | {s['images_scored']} | {f(s['mean_ssim_common'])} "
              f"| {f(s['min_ssim_common'])} | "
              + ("—" if s["mean_output_bytes_common"] is None else f"{s['mean_output_bytes_common'] / 1024:.1f}")
              + f" | {len(s['missing'])} |")

    diffs = {}
    if "ours" in names:
        for peer in names:
            if peer in ("ours", FLOOR) or not common:
                continue
            d = [r["ssim"]["ours"] - r["ssim"][peer] for r in common]
            diffs[peer] = {"mean": statistics.fmean(d),
                           "ours_better": sum(x > 0 for x in d), "ours_worse": sum(x < 0 for x in d)}
        if diffs:
            print("\n| ours − | mean ΔSSIM | images ours higher | images ours lower |")
            print("|---|--:|--:|--:|")
            for peer, d in diffs.items():
                print(f"| {peer} | {d['mean']:+.5f} | {d['ours_better']} | {d['ours_worse']} |")

    if mismatched:
        print(f"\nOutput sizes differing by more than 1 px between contestants ({len(mismatched)}):\n")
        for m in mismatched:
            print(f"- {m['stem']}: " + ", ".join(f"{n} {w}x{h}" for n, (w, h) in m["dims"].items()))
    else:
        print("\nNo output size differs by more than 1 px between contestants.")

    for n, miss in missing.items():
        if miss:
            print(f"\n{n}: no output for {len(miss)} input(s): {', '.join(miss[:20])}"
                  + (" ..." if len(miss) > 20 else ""))
    notes = [(r["stem"], x) for r in rows for x in r["notes"]]
    if notes:
        print("\nNotes:")
        for stem, x in notes:
            print(f"- {stem}: {x}")

    if a.per_image:
        print("\n| image | " + " | ".join(names) + " | dims |")
        print("|---|" + "--:|" * len(names) + "---|")
        for r in rows:
            cells = [f"{r['ssim'][n]:.5f}" if n in r["ssim"] else "—" for n in names]
            dims = ", ".join(sorted({f"{w}x{h}" for w, h in r["dims"].values()}))
            print(f"| {r['stem']} | " + " | ".join(cells) + f" | {dims} |")

    if a.json_out:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps({
            "input_dir": str(a.input_dir), "contestants": {n: str(d) for n, d in dirs.items()},
            "summary": summary, "ours_minus": diffs, "size_mismatch": mismatched, "images": rows,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
