#!/usr/bin/env bash
# Where a lab tier's CPU goes: a fresh `resizer lab up`, the photos load of bench/lab-cpu.sh
# (8 connections, width 512, JPEG q80), and `perf record --call-graph dwarf` of the lab's processes
# of one role (ROLE: worker by default, or api) for 8 s; then the same for `resizer dev` (the whole
# process), for comparison. Every sample is put in one bucket by its stack (conversion, fetch and
# return over HTTP, NATS client, tokio and thread hand-offs, kernel scheduling, other) and
# converted to µs per request (samples ÷ frequency ÷ requests answered in those 8 s).
# Needs `perf` (Debian: linux-perf).
# Usage: bench/lab-profile.sh [PHOTOS_DIR]   (default ../shared/corpus/photos)
# Env: ROLE (worker), KEEP_STACKS (a directory to keep `perf script`'s stacks in), SKIP_BUILD, LAB_ARGS (extra `lab up` flags), LAB_ENV (environment for the lab's processes).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "error: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
photos=${1:-../shared/corpus/photos}
[[ -d $photos ]] || { echo "error: no photos folder at $photos" >&2; exit 1; }
[[ -n ${SKIP_BUILD:-} ]] || cargo build --release -p resizer >&2
bin=$PWD/target/release/resizer
work=$(mktemp -d)
chmod o+x "$work" # PostgreSQL runs as its own user and must reach its data directory
source bench/lib.sh
require_simd
server_log=$work/dev.log
trap 'stop_dev; "$bin" lab down --dir "$work/lab" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
prepare_inputs "$photos" "$work/photos"
query='width=512&height=512&fit=inside&format=jpeg&quality=80'
freq=500
role=${ROLE:-worker}

env ${LAB_ENV:-} "$bin" lab up --dir "$work/lab" ${LAB_ARGS:-} --set limits.rate_per_sec=1000000000 --set limits.burst=1000000000 \
    --set log.level=warn >/dev/null
field() { python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["fields"][sys.argv[2]])' "$work/lab/cluster.json" "$1"; }
url=$(field url)
key=$(field demo_api_key)
pids=$(python3 -c 'import json,sys;print(",".join(str(c["pid"]) for c in json.load(open(sys.argv[1]))["components"] if c["role"] == sys.argv[2]))' "$work/lab/cluster.json" "$role")
[[ -n $pids ]] || { echo "error: the lab has no process of role $role" >&2; exit 1; }
"$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" --concurrency 8 --duration 3 \
    --warmup 0 --json >/dev/null
# profile NAME PIDS: load for 11 s, perf of PIDS for 8 s of it, a table of buckets.
profile() {
    (sleep 2; perf record -F $freq --call-graph dwarf,16384 -o "$work/perf.data" -p "$2" -- sleep 8 >/dev/null 2>&1) &
    perf_pid=$!
    "$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" --concurrency 8 --duration 11 \
        --warmup 0 --json >"$work/load.json"
    wait "$perf_pid"
    perf script -i "$work/perf.data" 2>/dev/null >"$work/stacks.txt"
    [[ -z ${KEEP_STACKS:-} ]] || { mkdir -p "$KEEP_STACKS"; cp "$work/stacks.txt" "$KEEP_STACKS/${1//[^a-z]/-}.txt"; }
    report "$1"
}

report() {
python3 - "$work/stacks.txt" "$work/load.json" "$freq" "$1" <<'PY'
import collections, json, re, sys
sys.path.insert(0, "bench")
import perf_stacks
load = json.load(open(sys.argv[2]))
requests = load["requests_per_sec"] * 8
us_per_sample = 1e6 / float(sys.argv[3])
stacks = perf_stacks.read(sys.argv[1])
# First match wins, so the more specific buckets come first. A key matches a frame that starts
# with it or names it inside generics (`<usage::…`), not a path that merely contains it
# (hyper's `h1::dispatch::Dispatcher` is not our `dispatch`).
buckets = [
    ("imaging (conversion; api: probe)", ("imaging::", "dispatch::", "tj3", "jpeg_", "jsimd", "fast_image_resize")),
    ("usage metering", ("usage::", "api::conversions::record_usage")),
    ("worker fetch and return", ("worker::transfer::", "ureq::")),
    ("NATS client", ("async_nats::",)),
    ("identity and rate limit", ("identity::", "identity_kv::", "api::ratelimit::")),
    ("JSON", ("serde_json::",)),
    ("page faults", ("exc_page_fault", "clear_page")),
    ("socket copies (kernel)", ("_copy_to_iter", "_copy_from_iter", "skb_copy", "copy_user")),
    ("HTTP server and client (hyper)", ("hyper::", "axum::", "hyper_util::")),
    ("kernel scheduling", ("schedule", "finish_task_switch", "__switch_to", "futex_")),
    ("tokio and threads", ("tokio::", "std::thread", "parking_lot")),
]
patterns = [(name, re.compile("|".join(r"(?:^|[<\s&(])" + re.escape(k) for k in keys))) for name, keys in buckets]
counts = collections.Counter()
for s in stacks:
    for name, pattern in patterns:
        if any(pattern.search(frame) for frame in s):
            counts[name] += 1
            break
    else:
        counts["other"] += 1
total = len(stacks) * us_per_sample / requests
print(f"{sys.argv[4]}: {load['requests_per_sec']:.1f} req/s, {load['failed']} failed; sampled: {total:.0f} µs per request")
for name, n in counts.most_common():
    print(f"  {name:32} {n * us_per_sample / requests:7.1f} µs per request ({100 * n / len(stacks):4.1f} %)")
PY
}

profile "lab, role $role" "$pids"
"$bin" lab down --dir "$work/lab" >/dev/null
start_dev
"$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" --concurrency 8 --duration 3 \
    --warmup 0 --json >/dev/null
profile "resizer dev" "$server_pid"
