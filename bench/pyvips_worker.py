#!/usr/bin/env python3
"""In-process pyvips thumbnail loop, used by compare_libvips.py and memory.sh.

Runs with the venv interpreter (bench/.venv/bin/python), normally under
`taskset -c 1` with VIPS_CONCURRENCY=1 in the environment.  It imports pyvips,
switches off the operation cache and libvips' worker threads, then times ONLY
the loop over the files (interpreter start-up and `import pyvips` excluded):

    for f in files:
        pyvips.Image.thumbnail(f, SIZE, height=SIZE, size="down")
            .write_to_file(OUT/<stem>.jpg, Q=QUALITY, keep="none")   # strip=True before 8.15

Prints one JSON line, the same shape as `resizer ... --json`:
    {"images": N, "failed": F, "seconds": S, "images_per_sec": R, ...}
"""
import argparse
import json
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--size", type=int, default=512, help="longest side / bounding box (default 512)")
    ap.add_argument("--quality", type=int, default=80)
    ap.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
    ap.add_argument("--allow-enlarge", action="store_true", help="thumbnail size='both' instead of 'down'")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()

    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    import pyvips  # noqa: E402  (import after the env is set)

    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    if hasattr(pyvips, "concurrency_set"):
        pyvips.concurrency_set(int(os.environ["VIPS_CONCURRENCY"]))

    # libvips >= 8.15 replaced jpegsave's `strip` with `keep` (strip is still accepted but deprecated).
    save_kw = {"Q": a.quality} if a.format == "jpeg" else {}
    if pyvips.at_least_libvips(8, 15):
        save_kw["keep"] = "none"
    else:
        save_kw["strip"] = True
    ext = ".jpg" if a.format == "jpeg" else ".png"
    thumb_kw = {"height": a.size, "size": "both" if a.allow_enlarge else "down"}

    os.makedirs(a.out, exist_ok=True)
    failed = 0
    errors = []
    t0 = time.perf_counter()
    for f in a.files:
        stem = os.path.splitext(os.path.basename(f))[0]
        try:
            im = pyvips.Image.thumbnail(f, a.size, **thumb_kw)
            im.write_to_file(os.path.join(a.out, stem + ext), **save_kw)
        except pyvips.Error as e:
            failed += 1
            errors.append(f"{f}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}")
    secs = time.perf_counter() - t0

    n = len(a.files)
    ok = n - failed
    print(json.dumps({
        "images": n,
        "failed": failed,
        "seconds": round(secs, 6),
        "images_per_sec": round(ok / secs, 3) if secs > 0 else None,
        "libvips": f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
        "pyvips": pyvips.__version__,
        "save_args": save_kw,
    }))
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
