#!/usr/bin/env bash
# Where metering's CPU goes inside `resizer dev` under the tiny-image load: `perf record` with DWARF
# call graphs of the server for 8 s (64 connections, metering on), then every sample whose stack
# holds `usage::` or `record_usage` is counted by step and converted to µs per request (samples ÷
# frequency ÷ requests answered in those 8 s). Also prints the spool's records per write(2) from
# /metrics. Needs `perf` (Debian: linux-perf).
# Usage: bench/metering-profile.sh [key=value ...]   (settings for the server, e.g. usage.spool_memory_dir=)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "error: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release -p resizer >&2
bin=target/release/resizer
work=$(mktemp -d)
server_log=$work/server.log
source bench/lib.sh
require_simd
trap 'stop_dev; rm -rf "$work"' EXIT
freq=700
start_dev "usage.enabled=true" "$@"
"$bin" resize examples/sample.jpg -o "$work/tiny.jpg" --width 64 --quality 80 >/dev/null
(sleep 2; perf record -F $freq --call-graph dwarf,16384 -o "$work/perf.data" -p "$server_pid" -- sleep 8 >/dev/null 2>&1) &
perf_pid=$!
"$bin" loadtest --url "$url/v1/resize?width=32" --key "$key" --body "$work/tiny.jpg" \
    --concurrency 64 --duration 11 --warmup 0 --json >"$work/load.json"
wait "$perf_pid"
curl -s "$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["api_url"])' "$work/data/dev.json")/metrics" \
    | grep -E '^resizer_usage_spool_(records|writes)_total' >"$work/spool.txt" || true
perf script -i "$work/perf.data" 2>/dev/null >"$work/stacks.txt"
python3 - "$work/stacks.txt" "$work/load.json" "$freq" "$work/spool.txt" <<'PY'
import collections, json, sys
sys.path.insert(0, "bench")
import perf_stacks
rps = json.load(open(sys.argv[2]))["requests_per_sec"]
requests = rps * 8
us_per_sample = 1e6 / float(sys.argv[3])
stacks = perf_stacks.read(sys.argv[1])
steps = collections.Counter()
for s in stacks:
    j = " | ".join(s)
    if "usage::" not in j and "record_usage" not in j: continue
    for key, step in [("frame::encode", "encode the record"), ("append_to_memory", "append (shared memory)"),
                      ("write_queued", "append (write(2))"), ("enqueue", "append (queue)"),
                      ("write_through", "append (queue)"), ("archive", "Parquet archive"), ("Rollups", "rollups"),
                      ("tick", "tick (copy to disk, fsync)"), ("cut", "cut a batch"), ("record_usage", "build the record")]:
        if key in j:
            steps[step] += 1
            break
    else:
        steps["aggregator, other"] += 1
total = len(stacks) * us_per_sample / requests
print(f"{rps:.0f} req/s; all server CPU sampled: {total:.1f} µs per request")
for step, n in steps.most_common():
    print(f"  {step:28} {n * us_per_sample / requests:5.2f} µs per request")
print(f"  {'metering in all':28} {sum(steps.values()) * us_per_sample / requests:5.2f} µs per request")
spool = dict(l.split() for l in open(sys.argv[4]) if l.strip())
if spool:
    r, w = float(spool["resizer_usage_spool_records_total"]), float(spool["resizer_usage_spool_writes_total"])
    print(f"spool: {r:.0f} records in {w:.0f} writes ({r / max(w, 1):.1f} per write; with shared memory a write is a tick's copy)")
PY
