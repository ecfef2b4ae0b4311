#!/usr/bin/env python3
"""Tables for bench/avif_peers.py's rows.jsonl: per contestant, setting and quality the means over
photos (CPU ms, images/s/core, KiB, SSIM), then bytes and CPU linearly interpolated in SSIM at a
target SSIM (default: our WebP q80's mean). Values outside a setting's measured SSIM range are
extrapolated from the nearest two points and marked with ~ (beyond 0.003 of the range: n/a).

  python3 bench/avif_peers_table.py bench/results/avif-peers-... [--target 0.977] [--webp-q 80]
"""
import argparse
import json
import math
from collections import defaultdict
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--target", type=float)
    ap.add_argument("--webp-q", type=int, default=80)
    a = ap.parse_args()
    rows = [json.loads(l) for l in open(Path(a.out) / "rows.jsonl")]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["contestant"], r["setting"], r["quality"])].append(r)
    stats = {}
    for k, rs in groups.items():
        n = len(rs)
        enc = [r["enc_ms"] for r in rs if not (isinstance(r["enc_ms"], float) and math.isnan(r["enc_ms"]))]
        stats[k] = dict(n=n, cpu=sum(r["cpu_ms"] for r in rs) / n, kib=sum(r["bytes"] for r in rs) / n / 1024,
                        ssim=sum(r["ssim"] for r in rs) / n, enc=(sum(enc) / len(enc)) if enc else None)
    target = a.target or stats[("ours", "webp", a.webp_q)]["ssim"]
    print(f"## per setting (means over photos; CPU = fastest round per photo)\n")
    print("| contestant | setting | quality | photos | CPU ms / image | images / s / core | encode-only ms | KiB / image | SSIM |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in sorted(stats):
        s = stats[k]
        enc = f"{s['enc']:.1f}" if s["enc"] is not None else ""
        print(f"| {k[0]} | {k[1]} | {k[2]} | {s['n']} | {s['cpu']:.1f} | {1e3 / s['cpu']:.2f} | {enc} | {s['kib']:.2f} | {s['ssim']:.4f} |")
    print(f"\n## at equal SSIM {target:.4f}\n")
    print("| contestant | setting | CPU ms / image | images / s / core | encode-only ms | KiB / image | qualities |")
    print("|---|---|---|---|---|---|---|")
    settings = defaultdict(list)
    for k, s in stats.items():
        settings[(k[0], k[1])].append((s["ssim"], s, k[2]))
    eq = {}
    for k in sorted(settings):
        pts = sorted(settings[k], key=lambda p: p[0])
        if len(pts) < 2:
            continue
        lo, hi = pts[0][0], pts[-1][0]
        mark = ""
        if target < lo or target > hi:
            if min(abs(target - lo), abs(target - hi)) > 0.003:
                print(f"| {k[0]} | {k[1]} | n/a | | | n/a | SSIM {lo:.4f}–{hi:.4f} |")
                continue
            mark = "~"
        # the two points bracketing (or nearest to) the target
        i = 0
        while i < len(pts) - 2 and pts[i + 1][0] < target:
            i += 1
        (s0, a0, q0), (s1, a1, q1) = pts[i], pts[i + 1]
        t = (target - s0) / (s1 - s0) if s1 != s0 else 0.0

        def lerp(f):
            return None if a0[f] is None else a0[f] + t * (a1[f] - a0[f])

        cpu, kib, enc = lerp("cpu"), lerp("kib"), lerp("enc")
        eq[k] = (cpu, kib, enc)
        encs = f"{mark}{enc:.1f}" if enc is not None else ""
        print(f"| {k[0]} | {k[1]} | {mark}{cpu:.1f} | {mark}{1e3 / cpu:.2f} | {encs} | {mark}{kib:.2f} | {q0}–{q1} |")
    print("\n## ours ÷ sharp-pipeline at equal SSIM (images/s/core ratio = sharp CPU / our CPU; bytes ours / sharp)\n")
    print("| ours | sharp | images/s/core ours ÷ sharp | bytes ours ÷ sharp |")
    print("|---|---|---|---|")
    for ko in sorted(k for k in eq if k[0] == "ours" and k[1] != "webp"):
        for ks in sorted(k for k in eq if k[0] == "sharp-pipeline"):
            print(f"| {ko[1]} | {ks[1]} | {eq[ks][0] / eq[ko][0]:.2f}× | {eq[ko][1] / eq[ks][1]:.2f}× |")


if __name__ == "__main__":
    main()
