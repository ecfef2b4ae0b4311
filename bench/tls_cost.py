#!/usr/bin/env python3
"""What TLS costs through the lab cluster (docs/tls.md, docs/benchmarks.md).

Starts two labs side by side, once: one with TLS on every link (the lab's default) and one with
`lab up --no-tls`. Then loads them in turn through their HAProxy, pair by pair, the order
alternating each pair, so that both see the same machine and its drift: (1) tiny images (a 64-px
JPEG to width 32: per-request overhead dominates) and (2) the photos under 1 MB (width 512,
JPEG q80); closed loop, 8 keep-alive connections (a handshake per connection, then reuse).

Besides requests per second it reads, for each run, the CPU time every process of the loaded
lab used (each component's process group, from /proc) and the load generator's own: on a
machine where the client shares the cores, the client's TLS work takes CPU from the servers,
and the servers' CPU per request is the part that would stay in production.

Usage: bench/tls_cost.py --resizer BIN [--photos DIR] [--pairs 8] [--duration 10] [--out DIR]
"""

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(groups: set[int]) -> dict[int, float]:
    """utime + stime of every live process whose process group is one of `groups`, by group."""
    total = dict.fromkeys(groups, 0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces: fields start after its closing parenthesis.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) in groups:
            total[int(fields[2])] += int(fields[11]) + int(fields[12])
    return {group: ticks / TICKS for group, ticks in total.items()}


class Lab:
    def __init__(self, resizer: str, directory: Path, tls: bool):
        self.resizer, self.dir, self.tls = resizer, directory, tls
        flags = [] if tls else ["--no-tls"]
        subprocess.run(
            [resizer, "lab", "up", "--dir", str(directory), *flags,
             "--set", "limits.rate_per_sec=1000000000", "--set", "limits.burst=1000000000",
             "--set", "log.level=warn"],
            check=True, stdout=subprocess.DEVNULL,
        )
        info = json.loads((directory / "cluster.json").read_text())
        self.url = info["fields"]["url"]
        self.key = info["fields"]["demo_api_key"]
        self.ca = info["fields"].get("tls_ca") if tls else None
        self.names = {c["pid"]: c["name"] for c in info["components"]}
        self.groups = set(self.names)

    def down(self):
        subprocess.run([self.resizer, "lab", "down", "--dir", str(self.dir)], stdout=subprocess.DEVNULL)

    def load(self, query: str, body: Path, duration: int) -> dict:
        """One `resizer loadtest` run: its JSON report plus the servers' and the client's CPU."""
        ca = ["--ca-file", self.ca] if self.ca else []
        servers_before = group_cpu_seconds(self.groups)
        client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [self.resizer, "loadtest", "--url", f"{self.url}/v1/resize?{query}", "--key", self.key,
             "--body", str(body), *ca, "--concurrency", "8", "--duration", str(duration), "--warmup", "2",
             "--json"],
            check=True, capture_output=True, text=True,
        )
        client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        servers_after = group_cpu_seconds(self.groups)
        by_component = {self.names[g]: servers_after[g] - servers_before.get(g, 0) for g in servers_after}
        servers = sum(by_component.values())
        report = json.loads(out.stdout)
        # The warm-up's requests are not in the report, but its CPU is in these figures: count
        # them at the measured rate so the CPU is divided by the requests it served.
        served = report["requests_per_sec"] * (duration + 2)
        client = (client_after.ru_utime + client_after.ru_stime) - (client_before.ru_utime + client_before.ru_stime)
        report["server_cpu_ms_per_request"] = 1000 * servers / served
        report["client_cpu_ms_per_request"] = 1000 * client / served
        report["component_cpu_ms_per_request"] = {name: 1000 * cpu / served for name, cpu in by_component.items()}
        return report


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resizer", required=True, help="a release build of resizer")
    parser.add_argument("--photos", default=str(ROOT.parent / "shared/corpus/photos"))
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run, after a 2 s warm-up")
    parser.add_argument("--out", default=None, help="where the raw reports go")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tls-cost-"))
    # The labs' PostgreSQL runs as the postgres user when we are root: it must reach the dirs.
    os.chmod(work, 0o755)
    out = Path(args.out or work / "results")
    out.mkdir(parents=True, exist_ok=True)
    photos = work / "photos"
    photos.mkdir()
    for f in sorted(Path(args.photos).iterdir()):
        if f.is_file() and f.stat().st_size < 1_000_000:
            shutil.copy(f, photos)
    tiny = work / "tiny.jpg"
    subprocess.run([args.resizer, "resize", str(ROOT / "examples/sample.jpg"), "-o", str(tiny), "--width", "64",
                    "--quality", "80"], check=True, stdout=subprocess.DEVNULL)
    loads = {"tiny": ("width=32", tiny), "photos": ("width=512&format=jpeg&quality=80", photos)}

    labs = {}
    try:
        labs["tls"] = Lab(args.resizer, work / "lab-tls", tls=True)
        labs["plain"] = Lab(args.resizer, work / "lab-plain", tls=False)
        rows = []
        for pair in range(1, args.pairs + 1):
            order = ["tls", "plain"] if pair % 2 else ["plain", "tls"]
            for kind, (query, body) in loads.items():
                result = {}
                for mode in order:
                    print(f"== pair {pair}, {kind}, {mode}", file=sys.stderr)
                    result[mode] = labs[mode].load(query, body, args.duration)
                    (out / f"{kind}-{mode}-{pair}.json").write_text(json.dumps(result[mode]))
                rows.append((pair, order[0], kind, result["tls"], result["plain"]))
    finally:
        for lab in labs.values():
            lab.down()

    print("| pair (first) | load | TLS / plain req/s | ratio | server CPU ms/req TLS / plain | client CPU ms/req TLS / plain |")
    print("|---|---|---|---|---|---|")
    for pair, first, kind, tls, plain in rows:
        print(f"| {pair} ({first}) | {kind} | {tls['requests_per_sec']:.1f} / {plain['requests_per_sec']:.1f} | "
              f"{tls['requests_per_sec'] / plain['requests_per_sec']:.3f} | "
              f"{tls['server_cpu_ms_per_request']:.3f} / {plain['server_cpu_ms_per_request']:.3f} | "
              f"{tls['client_cpu_ms_per_request']:.3f} / {plain['client_cpu_ms_per_request']:.3f} |")
    print()
    for kind in loads:
        mine = [(t, p) for _, _, k, t, p in rows if k == kind]
        ratios = [t["requests_per_sec"] / p["requests_per_sec"] for t, p in mine]
        cpu = [p["server_cpu_ms_per_request"] / t["server_cpu_ms_per_request"] for t, p in mine]
        errors = sum(sum(v for s, v in r["status"].items() if not s.startswith("2")) for t, p in mine for r in (t, p))
        print(f"{kind}: throughput TLS/plain geometric mean {geomean(ratios):.3f}, median {statistics.median(ratios):.3f}, "
              f"range {min(ratios):.3f}-{max(ratios):.3f}; server CPU per request plain/TLS geometric mean "
              f"{geomean(cpu):.3f}; non-2xx answers {errors}")
        # Where the servers' CPU per request goes, each component summed over the pairs' runs.
        parts = {}
        for t, p in mine:
            for mode, report in (("tls", t), ("plain", p)):
                for name, ms in report["component_cpu_ms_per_request"].items():
                    role = name.rstrip("0123456789").rstrip("-")
                    parts.setdefault(role, {"tls": 0.0, "plain": 0.0})[mode] += ms / len(mine)
        print(f"  {kind}, server CPU ms per request by role (TLS / plain): " + ", ".join(
            f"{role} {v['tls']:.3f} / {v['plain']:.3f}" for role, v in sorted(parts.items())))
    print(f"raw reports in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
