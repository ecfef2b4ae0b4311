#!/usr/bin/env python3
"""AVIF encoders compared on the same photos at 512 px (issue 25), one core each.

Contestants (every 6th JPEG of the photos dir, sorted by name, like avif_bench):
  ours      imaging's pipeline (decode, shrink-on-load, Lanczos3, encode), rav1e via ravif with
            `avif-asm`, efforts 0,1,2, and our WebP as the yardstick: the avif_bench example with
            --write (pipeline CPU and rav1e-alone encode CPU, this thread's clock, best of rounds);
  sharp     sharp's AVIF (libheif + libaom), in process, concurrency 1 (bench/sharp_avif.js),
            `pipeline` (JPEG -> rotate -> resize(512) -> avif, scored against sharp's own lossless
            resize) and `encode` (our 512-px lossless PNG -> avif, scored against that PNG);
  avifenc   libavif 0.11 CLI with aom / svt / rav1e, -j 1, on our 512-px lossless PNG (PNG read +
            encode; the child's user+sys CPU from wait4), --min Q --max Q.
Every AVIF is decoded by avifdec --depth 8 (dav1d) and scored with one SSIM: Rec. 601 luma,
8x8 uniform windows every 4 px, Wang et al.'s constants (the same as avif_bench's).
CPU per image is the fastest of --rounds per image, summed then averaged over photos.

  bench/.venv/bin/python bench/avif_peers.py /work/shared/corpus/photos [--rounds 2] [--out DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def luma(path):
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]


def ssim(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    h, w = a.shape

    def box(x):
        # sums over every 8x8 window, then the windows at multiples of 4
        s = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        win = s[8:, 8:] - s[:-8, 8:] - s[8:, :-8] + s[:-8, :-8]
        return win[::4, ::4] / 64.0

    ma, mb = box(a), box(b)
    va, vb, cov = box(a * a) - ma * ma, box(b * b) - mb * mb, box(a * b) - ma * mb
    m = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(m.mean())


def avif_luma(path, tmp):
    out = tmp / "dec.png"
    subprocess.run(["avifdec", "--depth", "8", str(path), str(out)], check=True, capture_output=True)
    return luma(out)


def child_cpu_ms(cmd):
    """Run cmd; its user+sys CPU in ms (wait4's rusage of that child only)."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    if status != 0:
        raise RuntimeError(f"{cmd}: {p.stderr.read().decode()}")
    p.returncode = 0
    return (ru.ru_utime + ru.ru_stime) * 1e3


def load():
    return "%.1f/%.1f/%.1f" % os.getloadavg()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("photos")
    ap.add_argument("--every", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(BENCH / "results" / time.strftime("avif-peers-%Y%m%d-%H%M%S")))
    ap.add_argument("--ours-q", default="80,85,90")
    ap.add_argument("--ours-efforts", default="0,1,2")
    ap.add_argument("--sharp-q", default="60,70,80")
    ap.add_argument("--sharp-efforts", default="0,2,4")
    ap.add_argument("--sharp-modes", default="pipeline,encode")
    ap.add_argument("--avifenc", default="aom:6:18/24/30,aom:8:18/24/30,aom:9:18/24/30,svt:8:36/44/52,"
                    "svt:10:36/44/52,rav1e:8:24/30/36,rav1e:10:24/30/36",
                    help="codec:speed:quantizers (each run with --min Q --max Q)")
    ap.add_argument("--bin", default=str(ROOT / "target/release/examples/avif_bench"))
    ap.add_argument("--only", default="ours,sharp,avifenc")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "tmp"
    tmp.mkdir(exist_ok=True)
    files = sorted(p for p in Path(a.photos).iterdir() if p.suffix == ".jpg")[:: a.every]
    only = a.only.split(",")
    log = open(out / "log.txt", "a")
    rows_file = open(out / "rows.jsonl", "a")

    class Rows:  # each row appended to rows.jsonl as soon as it is measured
        def append(self, r):
            rows_file.write(json.dumps(r) + "\n")
            rows_file.flush()

    rows = Rows()  # dicts: contestant, setting, quality, stem, cpu_ms, enc_ms, bytes, ssim

    def note(msg):
        line = f"{time.strftime('%H:%M:%S', time.gmtime())} load {load()}  {msg}"
        print(line, flush=True)
        log.write(line + "\n")

    # --- ours -----------------------------------------------------------------------------
    if "ours" in only:
        for q in a.ours_q.split(","):
            note(f"ours q{q}")
            subprocess.run([a.bin, a.photos, "--efforts", a.ours_efforts, "--every", str(a.every),
                            "--rounds", str(a.rounds), "--quality", q, "--write", str(out)], check=True)
    refs = {p.stem: luma(out / "ref" / f"{p.stem}.png") for p in files}
    if ("ours" in only or "ours-rows" in only) and (out / "ours.tsv").exists():
        for line in open(out / "ours.tsv"):
            q, setting, stem, cpu, enc, size, inner = line.rstrip("\n").split("\t")
            ext = "webp" if setting == "webp" else "avif"
            f = out / f"ours-q{q}-{setting}" / f"{stem}.{ext}"
            if ext == "avif":
                s = ssim(refs[stem], avif_luma(f, tmp))
                assert abs(s - float(inner)) < 1e-4, (f, s, inner)  # one SSIM for all
            else:
                s = float(inner)  # libwebp-decoded inside avif_bench, same SSIM
            rows.append(dict(contestant="ours", setting=setting, quality=int(q), stem=stem,
                             cpu_ms=float(cpu), enc_ms=float(enc), bytes=int(size), ssim=s))

    # --- sharp ----------------------------------------------------------------------------
    if "sharp" in only:
        env = dict(os.environ, UV_THREADPOOL_SIZE="1")
        for mode in a.sharp_modes.split(","):
            for e in a.sharp_efforts.split(","):
                for q in a.sharp_q.split(","):
                    note(f"sharp {mode} effort {e} q{q}")
                    d = out / f"sharp-{mode}-e{e}-q{q}"
                    srcs = [str(p) for p in files] if mode == "pipeline" else [str(out / "ref" / f"{p.stem}.png") for p in files]
                    cmd = ["node", str(BENCH / "sharp_avif.js"), "--mode", mode, "--out", str(d), "--quality", q,
                           "--effort", e, "--rounds", str(a.rounds)]
                    if mode == "pipeline":
                        cmd += ["--ref-out", str(out / "sharp-ref")]
                    res = subprocess.run(cmd + srcs, check=True, capture_output=True, text=True, env=env, cwd=BENCH)
                    for line in res.stdout.splitlines():
                        stem, cpu, size = line.split("\t")
                        ref = luma(out / "sharp-ref" / f"{stem}.png") if mode == "pipeline" else refs[stem]
                        s = ssim(ref, avif_luma(d / f"{stem}.avif", tmp))
                        rows.append(dict(contestant=f"sharp-{mode}", setting=f"effort {e}", quality=int(q), stem=stem,
                                         cpu_ms=float(cpu), enc_ms=float("nan"), bytes=int(size), ssim=s))

    # --- avifenc --------------------------------------------------------------------------
    if "avifenc" in only:
        for cs in a.avifenc.split(","):
            codec, speed, qs = cs.split(":")
            yuv = "420" if codec == "svt" else "444"  # SVT-AV1 1.4 takes 4:2:0 only
            for q in qs.split("/"):
                note(f"avifenc {codec} speed {speed} quantizer {q}")
                d = out / f"avifenc-{codec}-s{speed}-q{q}"
                d.mkdir(exist_ok=True)
                for p in files:
                    dst = d / f"{p.stem}.avif"
                    src, ref = out / "ref" / f"{p.stem}.png", refs[p.stem]
                    if codec == "svt" and ref.shape[0] % 2:
                        # SVT-AV1 4:2:0 wants an even height: the last row is cropped off, from
                        # the input and from the reference it is scored against.
                        even = out / "ref-even" / f"{p.stem}.png"
                        even.parent.mkdir(exist_ok=True)
                        im = Image.open(src)
                        im.crop((0, 0, im.width, im.height - 1)).save(even, compress_level=0)
                        src, ref = even, ref[:-1]
                    cmd = ["avifenc", "-j", "1", "-c", codec, "-s", speed, "--min", q, "--max", q, "-y", yuv,
                           "-d", "8", str(src), str(dst)]
                    best = min(child_cpu_ms(cmd) for _ in range(a.rounds))
                    s = ssim(ref, avif_luma(dst, tmp))
                    rows.append(dict(contestant=f"avifenc-{codec}", setting=f"speed {speed} ({yuv})", quality=int(q),
                                     stem=p.stem, cpu_ms=best, enc_ms=float("nan"), bytes=dst.stat().st_size, ssim=s))
    note("done")
    print(f"rows in {out}/rows.jsonl; summarise with bench/avif_peers_table.py {out}")


if __name__ == "__main__":
    main()
