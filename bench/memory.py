#!/usr/bin/env python3
"""Peak RSS per image: our `resizer` against libvips, one fresh process per image.

For each file in the folder (default /work/shared/corpus/large) run, each under
`/usr/bin/time -f %M` (GNU time: max resident set size in KiB) and `taskset -c CORE`,
with VIPS_CONCURRENCY=1 for libvips:

  ours          resizer resize INPUT -o OUT.jpg --width 512 --height 512 --format jpeg --quality 80
  vipsthumbnail vipsthumbnail --size '512x512>' -o OUT/%s.jpg[Q=80,strip] INPUT     (Debian 8.14)
  pyvips        .venv/bin/python pyvips_worker.py --out OUT INPUT                   (pyvips-binary)

and print a table of max RSS (KiB) per image per contestant.  A "start-up only" row
shows each process's baseline (resizer --version, vipsthumbnail --vips-version,
python -c 'import pyvips'); the pyvips figures include the Python interpreter.
A progressive JPEG needs its whole DCT coefficient buffer in memory (libjpeg), so
expect the progressive inputs to dominate for every decoder built on libjpeg(-turbo).

Needs only the standard library and GNU time (`apt-get install time`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_RESIZER = BENCH.parent / "target" / "release" / "resizer"
DEFAULT_PYTHON = BENCH / ".venv" / "bin" / "python"
GNU_TIME = "/usr/bin/time"


def peak_rss(cmd: list[str], env: dict, timeout: float) -> tuple[int | None, int, str]:
    """Return (max RSS KiB, exit code, stderr tail) of cmd run under GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        r = subprocess.run([GNU_TIME, "-f", "%M", "-o", tf.name] + cmd, env=env,
                           capture_output=True, text=True, timeout=timeout)
        txt = Path(tf.name).read_text().strip().splitlines()
    rss = None
    for line in reversed(txt):  # GNU time puts "Command exited with non-zero status" first
        if line.strip().isdigit():
            rss = int(line.strip())
            break
    return rss, r.returncode, "\n".join(r.stderr.strip().splitlines()[-3:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", default="/work/shared/corpus/large", type=Path)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--quality", type=int, default=80)
    ap.add_argument("--core", type=int, default=1, help="taskset CPU (default 1); -1 = no pinning")
    ap.add_argument("--vips-concurrency", default="1",
                    help="VIPS_CONCURRENCY for the libvips contestants (default 1)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per image and contestant; the table shows the largest (default 1)")
    ap.add_argument("--resizer", type=Path, default=DEFAULT_RESIZER)
    ap.add_argument("--ours-arg", action="append", default=[],
                    help="extra argument appended to our command line (repeatable)")
    ap.add_argument("--python", type=Path, default=DEFAULT_PYTHON)
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--skip-vipsthumbnail", action="store_true")
    ap.add_argument("--skip-pyvips", action="store_true")
    ap.add_argument("--json", dest="json_out", type=Path)
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()

    if not os.access(GNU_TIME, os.X_OK):
        ap.error(f"{GNU_TIME} missing: apt-get install -y time (bench/install_peers.sh does)")
    files = sorted(p for p in a.dir.resolve().iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        ap.error(f"no files in {a.dir}")

    active = []
    if not a.skip_ours:
        if not os.access(a.resizer, os.X_OK):
            ap.error(f"{a.resizer} not found: build it or pass --skip-ours")
        active.append("ours")
    if not a.skip_vipsthumbnail:
        if shutil.which("vipsthumbnail") is None:
            ap.error("vipsthumbnail not found: run bench/install_peers.sh or pass --skip-vipsthumbnail")
        active.append("vipsthumbnail")
    if not a.skip_pyvips:
        if not os.access(a.python, os.X_OK):
            ap.error(f"{a.python} not found: run bench/install_peers.sh or pass --skip-pyvips")
        active.append("pyvips")

    env = dict(os.environ, VIPS_CONCURRENCY=str(a.vips_concurrency))
    pin = [] if a.core < 0 else ["taskset", "-c", str(a.core)]
    work = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    S, Q = str(a.size), str(a.quality)

    def commands(f: Path | None) -> dict[str, list[str]]:
        if f is None:  # start-up baseline
            return {
                "ours": [str(a.resizer), "--version"],
                "vipsthumbnail": ["vipsthumbnail", "--vips-version"],
                "pyvips": [str(a.python), "-c", "import pyvips; pyvips.cache_set_max(0)"],
            }
        return {
            "ours": [str(a.resizer), "resize", str(f), "-o", str(work / "ours" / (f.stem + ".jpg")),
                     "--width", S, "--height", S, "--format", "jpeg", "--quality", Q] + a.ours_arg,
            "vipsthumbnail": ["vipsthumbnail", "--vips-cache-max=0", "--size", f"{S}x{S}>",
                              "-o", f"{work}/vipsthumbnail/%s.jpg[Q={Q},strip]", str(f)],
            "pyvips": [str(a.python), str(BENCH / "pyvips_worker.py"), "--out", str(work / "pyvips"),
                       "--size", S, "--quality", Q, str(f)],
        }

    for n in active:
        (work / n).mkdir()

    rows = []
    for f in [None] + files:
        cmds = commands(f)
        row = {"image": "(start-up only)" if f is None else f.name, "rss_kib": {}, "errors": {}}
        if f is not None:
            with open(f, "rb") as fh:  # page cache warm, same for everyone
                fh.read()
        for n in active:
            best = None
            for _ in range(max(1, a.repeat)):
                rss, rc, err = peak_rss(pin + cmds[n], env, a.timeout)
                if rc != 0:
                    row["errors"][n] = f"exit {rc}: {err}"
                if rss is not None:
                    best = rss if best is None else max(best, rss)
            row["rss_kib"][n] = best
        rows.append(row)
        print(f"  {row['image']:<28} " + "  ".join(f"{n} {row['rss_kib'][n]}" for n in active),
              file=sys.stderr)

    print(f"### Peak RSS (KiB, GNU time %M) — one process per image, {a.dir}, fit {S}x{S} JPEG Q{Q}, "
          f"{'taskset -c ' + str(a.core) if pin else 'unpinned'}, VIPS_CONCURRENCY={a.vips_concurrency}\n")
    print("| image | MP | " + " | ".join(active) + " |")
    print("|---|--:|" + "--:|" * len(active))
    for r, f in zip(rows, [None] + files):
        mp = ""
        if f is not None:
            mp = next((f"{int(w) * int(h) / 1e6:.1f}" for w, h in [dims(f)] if w), "")
        cells = []
        for n in active:
            v = r["rss_kib"][n]
            cells.append(("—" if v is None else f"{v:,}") + (" (failed)" if n in r["errors"] else ""))
        print(f"| {r['image']} | {mp} | " + " | ".join(cells) + " |")
    errs = [(r["image"], n, e) for r in rows for n, e in r["errors"].items()]
    if errs:
        print("\nErrors:")
        for img, n, e in errs:
            print(f"- {img} / {n}: {e}")

    if a.json_out:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps({"dir": str(a.dir), "core": a.core,
                                          "vips_concurrency": a.vips_concurrency,
                                          "commands": commands(Path("INPUT")), "rows": rows},
                                         indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def dims(f: Path) -> tuple[str | None, str | None]:
    """Width and height via vipsheader (cheap: header only)."""
    try:
        out = subprocess.run(["vipsheader", "-f", "width", str(f)], capture_output=True, text=True).stdout
        out2 = subprocess.run(["vipsheader", "-f", "height", str(f)], capture_output=True, text=True).stdout
        return out.strip() or None, out2.strip() or None
    except OSError:
        return None, None


if __name__ == "__main__":
    sys.exit(main())
