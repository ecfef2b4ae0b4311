#!/usr/bin/env python3
"""Single-core thumbnail throughput: our `resizer` against libvips.

For every file in a folder: thumbnail to fit inside SIZExSIZE (default 512, no
enlargement), auto-orient by EXIF, strip metadata, write JPEG Q=80 into a
per-contestant output directory.  Three contestants, each pinned to one core with
`taskset -c CORE` and kept single-threaded:

  ours          taskset -c 1 resizer resize --batch DIR --out OUT --threads 1 --width 512
                  --height 512 --fit inside --format jpeg --quality 80 --json
                → its own JSON line {"images":N,"failed":F,"seconds":S,"images_per_sec":R}
  vipsthumbnail taskset -c 1 vipsthumbnail --size '512x512>' -o OUT/%s.jpg[Q=80,strip] FILES...
                  (Debian's libvips 8.14; one process for the whole folder; VIPS_CONCURRENCY=1,
                  --vips-cache-max=0) → images / process wall time
  pyvips        taskset -c 1 .venv/bin/python pyvips_worker.py ... (newest libvips from
                  pyvips-binary, in-process loop; VIPS_CONCURRENCY=1, cache off)
                → images / time of the loop, measured inside the process
  sharp         taskset -c 1 node sharp_worker.js ... (sharp from npm with its own libvips,
                  in-process loop; sharp.concurrency(1), UV_THREADPOOL_SIZE=1, cache off)
                → images / time of the loop, measured inside the process. The strongest
                  libvips user per core: the anchor of docs/benchmarks.md.

The contestants run round-robin (ours, vipsthumbnail, pyvips, ours, ...) for one
warm-up round (discarded) and then --rounds measured rounds.  Reported per
contestant: median and best images/s, plus the same from process wall time for all
three (an apples-to-apples column: it includes process start-up for everyone), and
the ratios ours / each libvips.  The last round's outputs stay in --out-root for
ssim.py.

Needs only the standard library; the pyvips worker runs under bench/.venv and the sharp
worker under Node with bench/node_modules (see install_peers.sh).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_RESIZER = BENCH.parent / "target" / "release" / "resizer"
DEFAULT_PYTHON = BENCH / ".venv" / "bin" / "python"
CONTESTANTS = ("ours", "vipsthumbnail", "pyvips", "sharp")
PEERS = ("sharp", "pyvips", "vipsthumbnail")


# --------------------------------------------------------------------------- helpers

def run_timed(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    """Run cmd, return wall seconds, child CPU seconds, max RSS, rc, stdout, stderr."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        # Blocking wait4 (no polling that would wake up the other CPU); a timer kills a hung run.
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)  # this child's own rusage: CPU time, peak RSS
        except BaseException:
            if p.poll() is None:
                p.kill()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
        if wall >= timeout:
            raise TimeoutError(f"timed out after {timeout}s: {' '.join(cmd[:6])} ...")
        out.seek(0)
        err.seek(0)
        return {
            "wall_s": wall,
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "maxrss_kib": ru.ru_maxrss,
            "rc": os.waitstatus_to_exitcode(status),
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def cpu_times() -> dict[int, tuple[int, int]]:
    """Per-CPU (busy, total) jiffies from /proc/stat."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3].isdigit():
                    name, *v = line.split()
                    v = [int(x) for x in v]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    out[int(name[3:])] = (sum(v[:8]) - idle, sum(v[:8]))
    except OSError:
        pass
    return out


def busy_between(t0: dict, t1: dict) -> dict[int, float]:
    return {c: (t1[c][0] - t0[c][0]) / max(1, t1[c][1] - t0[c][1]) for c in t1 if c in t0}


class IdleBudget:
    """Total time this run may spend waiting for the machine to go idle (--wait-idle)."""

    def __init__(self, seconds: float):
        self.left = seconds

    def wait(self, threshold: float = 0.15) -> float:
        t = time.monotonic()
        worst = wait_for_idle(max(0.0, self.left), threshold)
        self.left -= time.monotonic() - t
        return worst


def wait_for_idle(limit_s: float, threshold: float = 0.15) -> float:
    """Sample the machine for 1 s (repeatedly, up to limit_s); return the busiest CPU's load."""
    start = time.monotonic()
    last_msg = -1e9
    while True:
        t0 = cpu_times()
        time.sleep(1.0)
        b = busy_between(t0, cpu_times())
        worst = max(b.values(), default=0.0)
        now = time.monotonic()
        if worst <= threshold or now - start >= limit_s:
            if now - start > 2:
                print(f"  waited {now - start:.0f} s for idle (busiest CPU now {worst:.0%})",
                      file=sys.stderr)
            return worst
        if now - last_msg >= 15:
            print(f"  machine busy ({worst:.0%} on the busiest CPU), waiting up to "
                  f"{limit_s - (now - start):.0f} s more ...", file=sys.stderr)
            last_msg = now


def last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def sh(cmd: list[str], env: dict | None = None) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        return (r.stdout or r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"


def cpu_model() -> str:
    for line in sh(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def reset_dir(d: Path) -> None:
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)


# --------------------------------------------------------------------------- contestants

class Contestant:
    name = ""

    def __init__(self, args, files: list[Path], out: Path):
        self.a, self.files, self.out = args, files, out
        self.env = dict(os.environ, VIPS_CONCURRENCY="1")
        # Keep numpy/BLAS out of it, harmless for the others.
        self.env.setdefault("OMP_NUM_THREADS", "1")

    def pin(self) -> list[str]:
        return ["taskset", "-c", str(self.a.core)]

    def command(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> dict:
        reset_dir(self.out)
        c0 = cpu_times()
        r = run_timed(self.command(), self.env, self.a.timeout)
        others = [v for c, v in busy_between(c0, cpu_times()).items() if c != self.a.core]
        n = len(self.files)
        written = sum(1 for p in self.out.iterdir() if p.is_file())
        rep = self.parse(r, n, written)
        rep.update(wall_s=round(r["wall_s"], 6), cpu_s=round(r["cpu_s"], 6),
                   maxrss_kib=r["maxrss_kib"], rc=r["rc"], written=written,
                   # < ~0.9: the pinned process was kept off its core (other load, steal)
                   cpu_over_wall=round(r["cpu_s"] / r["wall_s"], 3),
                   other_cpus_busy=round(max(others, default=0.0), 3))
        ok = n - rep["failed"]
        rep["wall_images_per_sec"] = round(ok / r["wall_s"], 3)
        if r["rc"] != 0 or rep["failed"]:
            rep["stderr_tail"] = r["stderr"].strip().splitlines()[-5:]
        return rep

    def parse(self, r: dict, n: int, written: int) -> dict:
        raise NotImplementedError


class Ours(Contestant):
    name = "ours"

    def command(self):
        return self.pin() + [
            str(self.a.resizer), "resize", "--batch", str(self.a.dir), "--out", str(self.out),
            "--threads", "1", "--width", str(self.a.size), "--height", str(self.a.size),
            "--fit", "inside", "--format", self.a.format, "--quality", str(self.a.quality), "--json",
        ] + self.a.ours_arg

    def parse(self, r, n, written):
        j = last_json_line(r["stdout"])
        if j is None or "images_per_sec" not in j:
            raise RuntimeError(f"ours: no JSON line with images_per_sec (rc={r['rc']})\n"
                               f"stdout: {r['stdout'][-800:]}\nstderr: {r['stderr'][-800:]}")
        if j.get("images") != n:
            print(f"warning: ours reports images={j.get('images')} but the folder has {n} files",
                  file=sys.stderr)
        return {"images": j.get("images", n), "failed": j.get("failed", n - written),
                "images_per_sec": j["images_per_sec"], "seconds": j.get("seconds")}


class VipsThumbnail(Contestant):
    name = "vipsthumbnail"

    def command(self):
        size = f"{self.a.size}x{self.a.size}" + ("" if self.a.allow_enlarge else ">")
        return self.pin() + [
            self.a.vipsthumbnail, "--vips-cache-max=0", "--vips-concurrency=1",
            "--size", size, "-o", (f"{self.out}/%s.jpg[Q={self.a.quality},strip]"
                                   if self.a.format == "jpeg" else f"{self.out}/%s.png[strip]"),
        ] + [str(f) for f in self.files]

    def parse(self, r, n, written):
        # vipsthumbnail keeps going after a bad file; count what it wrote.
        failed = n - written
        ok = n - failed
        return {"images": n, "failed": failed, "seconds": r["wall_s"],
                "images_per_sec": ok / r["wall_s"]}


class PyVips(Contestant):
    name = "pyvips"

    def command(self):
        return self.pin() + [
            str(self.a.python), str(BENCH / "pyvips_worker.py"), "--out", str(self.out),
            "--size", str(self.a.size), "--quality", str(self.a.quality), "--format", self.a.format,
        ] + (["--allow-enlarge"] if self.a.allow_enlarge else []) + [str(f) for f in self.files]

    def parse(self, r, n, written):
        j = last_json_line(r["stdout"])
        if j is None:
            raise RuntimeError(f"pyvips worker failed (rc={r['rc']}): {r['stderr'][-800:]}")
        return {"images": j["images"], "failed": j["failed"], "seconds": j["seconds"],
                "images_per_sec": j["images_per_sec"]}


class Sharp(Contestant):
    name = "sharp"

    def __init__(self, args, files, out):
        super().__init__(args, files, out)
        # sharp runs its work on libuv's pool: one thread, like everyone else.
        self.env["UV_THREADPOOL_SIZE"] = "1"

    def command(self):
        return self.pin() + [
            self.a.node, str(BENCH / "sharp_worker.js"), "--out", str(self.out),
            "--size", str(self.a.size), "--quality", str(self.a.quality), "--format", self.a.format,
        ] + (["--allow-enlarge"] if self.a.allow_enlarge else []) + [str(f) for f in self.files]

    def parse(self, r, n, written):
        j = last_json_line(r["stdout"])
        if j is None:
            raise RuntimeError(f"sharp worker failed (rc={r['rc']}): {r['stderr'][-800:]}")
        return {"images": j["images"], "failed": j["failed"], "seconds": j["seconds"],
                "images_per_sec": j["images_per_sec"]}


# --------------------------------------------------------------------------- main

def versions(a, active: list[str]) -> dict:
    v = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
    }
    if "vipsthumbnail" in active:
        v["vips_cli"] = sh(["vips", "--version"])
        v["vipsthumbnail"] = sh([a.vipsthumbnail, "--vips-version"])
    if "pyvips" in active:
        v["pyvips"] = sh([str(a.python), "-c",
                          "import pyvips;print(f'pyvips {pyvips.__version__}, libvips '"
                          "f'{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}')"])
    if "sharp" in active:
        v["sharp"] = sh([a.node, "-e",
                         "const s=require(process.argv[1]);"
                         "console.log(`sharp ${s.versions.sharp}, libvips ${s.versions.vips}, node ${process.version}`)",
                         str(BENCH / "node_modules" / "sharp")])
    if "ours" in active:
        v["ours"] = sh([str(a.resizer), "--version"])
    return v


def fmt(x, nd=2):
    return "—" if x is None else f"{x:.{nd}f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", nargs="?", default="/work/shared/corpus/photos", type=Path,
                    help="input folder (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="discarded warm-up rounds (default 1)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--quality", type=int, default=80)
    ap.add_argument("--format", choices=("jpeg", "png"), default="jpeg",
                    help="output format; png is for quality runs (ssim.py without JPEG loss), "
                         "not for the speed comparison (default jpeg)")
    ap.add_argument("--core", type=int, default=1, help="CPU to pin every contestant to (default 1)")
    ap.add_argument("--out-root", type=Path, default=None,
                    help="where each contestant's outputs go (OUT_ROOT/<contestant>/); kept for "
                         "ssim.py. Default: a new temp dir, printed at the end")
    ap.add_argument("--json", dest="json_out", type=Path, help="also write full results as JSON here")
    ap.add_argument("--resizer", type=Path, default=DEFAULT_RESIZER, help="default: %(default)s")
    ap.add_argument("--ours-arg", action="append", default=[],
                    help="extra argument appended to our command line (repeatable)")
    ap.add_argument("--vipsthumbnail", default="vipsthumbnail")
    ap.add_argument("--python", type=Path, default=DEFAULT_PYTHON, help="venv python with pyvips")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--skip-vipsthumbnail", action="store_true")
    ap.add_argument("--skip-pyvips", action="store_true")
    ap.add_argument("--node", default="node", help="Node.js for the sharp worker")
    ap.add_argument("--skip-sharp", action="store_true")
    ap.add_argument("--allow-enlarge", action="store_true",
                    help="let libvips upscale small inputs (default: shrink only, like --fit inside)")
    ap.add_argument("--timeout", type=float, default=300, help="per-run timeout in seconds")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="total time the run may spend waiting for the machine to be idle "
                         "(every CPU < 15%% busy): before starting and before re-running a "
                         "contended run; when it is used up, contended runs are kept and flagged. "
                         "Default 0: no waiting, no re-runs (the 1 s idle check still runs)")
    ap.add_argument("--max-other-busy", type=float, default=0.3, metavar="FRACTION",
                    help="a run during which another CPU was busier than this counts as "
                         "contended (default 0.3): on a small VM the vCPUs share a physical core "
                         "or caches, so a build on CPU 0 slows CPU 1 by 20-35%%")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-run a contended run up to this many times (default 2)")
    a = ap.parse_args()

    a.dir = a.dir.resolve()
    files = sorted(p for p in a.dir.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        ap.error(f"no files in {a.dir}")
    stems = [p.stem for p in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        print(f"warning: inputs share a stem, outputs will overwrite each other: {dup}", file=sys.stderr)

    if shutil.which("taskset") is None:
        ap.error("taskset not found (util-linux)")
    if a.core >= (os.cpu_count() or 1):
        ap.error(f"--core {a.core} does not exist on this {os.cpu_count()}-CPU machine")

    active = []
    if not a.skip_ours:
        if not os.access(a.resizer, os.X_OK):
            ap.error(f"{a.resizer} not found: build it (cargo build --release) or pass --skip-ours")
        active.append("ours")
    if not a.skip_vipsthumbnail:
        if shutil.which(a.vipsthumbnail) is None:
            ap.error("vipsthumbnail not found: run bench/install_peers.sh or pass --skip-vipsthumbnail")
        active.append("vipsthumbnail")
    if not a.skip_pyvips:
        if not os.access(a.python, os.X_OK):
            ap.error(f"{a.python} not found: run bench/install_peers.sh or pass --skip-pyvips")
        active.append("pyvips")
    if not a.skip_sharp:
        if shutil.which(a.node) is None or not (BENCH / "node_modules" / "sharp").is_dir():
            ap.error("node or bench/node_modules/sharp not found: run bench/install_peers.sh or pass --skip-sharp")
        active.append("sharp")
    if not active:
        ap.error("every contestant skipped")

    out_root = a.out_root or Path(tempfile.mkdtemp(prefix=f"bench-{a.dir.name}-"))
    out_root = out_root.resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    classes = {"ours": Ours, "vipsthumbnail": VipsThumbnail, "pyvips": PyVips, "sharp": Sharp}
    cs = [classes[n](a, files, out_root / n) for n in active]

    info = versions(a, active)
    budget = IdleBudget(a.wait_idle)
    info["busiest_cpu_before"] = round(budget.wait(), 3)
    if info["busiest_cpu_before"] > 0.15:
        print(f"WARNING: machine not idle before the run ({info['busiest_cpu_before']:.0%} busy on "
              f"the busiest CPU): numbers will be low and noisy", file=sys.stderr)
    print(f"# {a.dir} — {len(files)} files; {', '.join(active)}; "
          f"{a.warmup} warm-up + {a.rounds} rounds, pinned to CPU {a.core}", file=sys.stderr)

    runs: dict[str, list[dict]] = {c.name: [] for c in cs}
    t_start = time.perf_counter()
    for rnd in range(a.warmup + a.rounds):
        warm = rnd < a.warmup
        for c in cs:
            rep = c.run()
            retries = 0
            while (not warm and rep["other_cpus_busy"] > a.max_other_busy
                   and retries < a.retries and budget.left > 0):
                retries += 1
                print(f"  {c.name}: other CPUs {rep['other_cpus_busy']:.0%} busy during the run, "
                      f"waiting for idle and re-running ({retries}/{a.retries})", file=sys.stderr)
                budget.wait()
                rep = c.run()
            rep["retries"] = retries
            rep["contended"] = rep["other_cpus_busy"] > a.max_other_busy
            rep["round"] = rnd - a.warmup + 1 if not warm else 0
            rep["warmup"] = warm
            runs[c.name].append(rep)
            tag = "warm-up" if warm else f"round {rep['round']}"
            print(f"  {tag:>8}  {c.name:<13} "
                  f"{rep['images_per_sec']:8.2f} img/s   wall {rep['wall_s']:7.3f}s  "
                  f"cpu/wall {rep['cpu_over_wall']:.2f}  other CPUs {rep['other_cpus_busy']:.0%}  "
                  f"failed {rep['failed']}  rc {rep['rc']}", file=sys.stderr)
    total_s = time.perf_counter() - t_start

    summary = {}
    for name, rs in runs.items():
        m = [r for r in rs if not r["warmup"]]
        ips = [r["images_per_sec"] for r in m]
        wips = [r["wall_images_per_sec"] for r in m]
        summary[name] = {
            "median_images_per_sec": statistics.median(ips),
            "best_images_per_sec": max(ips),
            "median_wall_images_per_sec": statistics.median(wips),
            "best_wall_images_per_sec": max(wips),
            "median_ms_per_image": 1000 / statistics.median(ips),
            "failed": max(r["failed"] for r in m),
            "max_rss_kib": max(r["maxrss_kib"] for r in m),
            "median_cpu_over_wall": statistics.median(r["cpu_over_wall"] for r in m),
            "median_other_cpus_busy": statistics.median(r["other_cpus_busy"] for r in m),
            "contended_runs": sum(r["contended"] for r in m),
            "rounds": len(m),
        }
    ratios = {}
    if "ours" in summary:
        o = summary["ours"]
        for peer in PEERS:
            if peer in summary:
                p = summary[peer]
                # Paired: ours and the peer ran back to back in the same round, so slow drifts of
                # the (virtual) machine's speed cancel out in the per-round ratio.
                mo = [r for r in runs["ours"] if not r["warmup"]]
                mp = [r for r in runs[peer] if not r["warmup"]]
                paired = [x["images_per_sec"] / y["images_per_sec"] for x, y in zip(mo, mp)]
                ratios[peer] = {
                    "median_of_round_ratios": statistics.median(paired),
                    "round_ratio_min": min(paired), "round_ratio_max": max(paired),
                    "median": o["median_images_per_sec"] / p["median_images_per_sec"],
                    "best": o["best_images_per_sec"] / p["best_images_per_sec"],
                    "median_wall": o["median_wall_images_per_sec"] / p["median_wall_images_per_sec"],
                }

    # ------------------------------------------------------------------ markdown
    label = {
        "ours": "ours (resizer)",
        "vipsthumbnail": f"vipsthumbnail ({info.get('vipsthumbnail', '?')}, Debian)",
        "pyvips": f"pyvips in-process ({info.get('pyvips', '?')})",
        "sharp": f"sharp in-process ({info.get('sharp', '?')})",
    }
    how = {"ours": "own JSON", "vipsthumbnail": "process wall", "pyvips": "in-process loop",
           "sharp": "in-process loop"}
    fmt_desc = f"JPEG Q{a.quality}" if a.format == "jpeg" else "PNG"
    print(f"### {a.dir} — {len(files)} images → fit inside {a.size}x{a.size}, {fmt_desc}, "
          f"1 core (taskset -c {a.core})\n")
    print(f"{info['date']} · CPU: {info['cpu_model']} · {a.warmup} warm-up + {a.rounds} rounds, "
          f"round-robin · {total_s:.0f} s\n")
    print("| contestant | measured by | median img/s | best img/s | ms/img (median) "
          "| median img/s (process wall) | CPU/wall | failed | peak RSS MiB |")
    print("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for name in active:
        s = summary[name]
        print(f"| {label[name]} | {how[name]} | {fmt(s['median_images_per_sec'])} "
              f"| {fmt(s['best_images_per_sec'])} | {fmt(s['median_ms_per_image'], 1)} "
              f"| {fmt(s['median_wall_images_per_sec'])} | {s['median_cpu_over_wall']:.2f} | {s['failed']} "
              f"| {s['max_rss_kib'] / 1024:.0f} |")
    if ratios:
        print("\n| ours ÷ | median of per-round ratios (range) | median | best | median (process wall) |")
        print("|---|--:|--:|--:|--:|")
        for peer, r in ratios.items():
            print(f"| {peer} | {r['median_of_round_ratios']:.2f}× ({r['round_ratio_min']:.2f}–"
                  f"{r['round_ratio_max']:.2f}) | {r['median']:.2f}× | {r['best']:.2f}× "
                  f"| {r['median_wall']:.2f}× |")
    eff = min(summary[n]["median_cpu_over_wall"] for n in active)
    other = max(summary[n]["median_other_cpus_busy"] for n in active)
    contended = sum(summary[n]["contended_runs"] for n in active)
    if eff < 0.9 or contended or info["busiest_cpu_before"] > 0.15:
        print(f"\n**Warning: the machine was not idle** (busiest CPU before the run "
              f"{info['busiest_cpu_before']:.0%}, {contended} measured run(s) with another CPU "
              f"> {a.max_other_busy:.0%} busy, median other-CPU load up to {other:.0%}, "
              f"CPU/wall as low as {eff:.2f}): treat these numbers as low and noisy; re-run on "
              f"an idle machine (`--wait-idle 120`).")
    print(f"\nOutputs of the last round: `{out_root}/<contestant>/` "
          f"(for `ssim.py {a.dir} {out_root}`)")

    result = {
        "dir": str(a.dir), "files": len(files), "size": a.size, "quality": a.quality,
        "format": a.format,
        "core": a.core, "rounds": a.rounds, "warmup": a.warmup, "max_other_busy": a.max_other_busy,
        "max_other_busy": a.max_other_busy, "total_seconds": total_s,
        "out_root": str(out_root), "info": info,
        "commands": {c.name: c.command()[:16] + (["..."] if len(c.command()) > 16 else []) for c in cs},
        "summary": summary, "ratios_ours_over": ratios, "runs": runs,
    }
    if a.json_out:
        a.json_out.parent.mkdir(parents=True, exist_ok=True)
        a.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"JSON: {a.json_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
