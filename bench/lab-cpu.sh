#!/usr/bin/env bash
# CPU per request of each tier of the lab cluster, and of `resizer dev` for comparison: a fresh
# `resizer lab up`, a warm-up, then a closed loop of 8 connections on the photos (width 512, JPEG
# q80) for DURATION seconds; each lab process's utime+stime (its children's included: HAProxy's
# worker, PostgreSQL's backends) from /proc before and after, divided by the requests answered.
# Then the same load on `resizer dev`. Prints a table by tier with the capacity per core it implies
# (1 ÷ CPU per request): the per-tier figures of docs/capacity.md. Also the messages the NATS
# servers received per request (their /varz `in_msgs`, summed).
# Usage: bench/lab-cpu.sh [PHOTOS_DIR]   (default ../shared/corpus/photos)
# Env: DURATION (15), SKIP_BUILD, LAB_ARGS (extra `lab up` flags), LAB_ENV (environment for the
#      lab's processes only, e.g. `GOMAXPROCS=1`), BIN (a resizer binary to measure instead of
#      building one: A/B runs of two builds).
set -euo pipefail
cd "$(dirname "$0")/.."

photos=${1:-../shared/corpus/photos}
duration=${DURATION:-15}
[[ -d $photos ]] || { echo "error: no photos folder at $photos" >&2; exit 1; }
[[ -n ${SKIP_BUILD:-}${BIN:-} ]] || cargo build --release -p resizer >&2
bin=${BIN:-$PWD/target/release/resizer}
work=$(mktemp -d)
chmod o+x "$work" # PostgreSQL runs as its own user and must reach its data directory
server_log=$work/dev.log
source bench/lib.sh
require_simd
trap 'stop_dev; "$bin" lab down --dir "$work/lab" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
prepare_inputs "$photos" "$work/photos"
query='width=512&height=512&fit=inside&format=jpeg&quality=80'

# NATS messages received, all servers together.
nats_in_msgs() {
    python3 - "$1" <<'PY'
import json, sys, urllib.request
total = 0
for c in json.load(open(sys.argv[1]))["components"]:
    if c["role"] == "nats":
        total += json.load(urllib.request.urlopen(c["urls"]["monitor"] + "/varz"))["in_msgs"]
print(total)
PY
}

# {component name: CPU ticks of its process and every descendant}
snapshot() {
    python3 - "$1" <<'PY'
import json, os, sys
parent, ticks = {}, {}
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        parent[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
def tree(pid):
    return ticks.get(pid, 0) + sum(tree(child) for child, p in parent.items() if p == pid)
print(json.dumps({c["name"]: tree(c["pid"]) for c in json.load(open(sys.argv[1]))["components"]}))
PY
}

env ${LAB_ENV:-} "$bin" lab up --dir "$work/lab" ${LAB_ARGS:-} --set limits.rate_per_sec=1000000000 --set limits.burst=1000000000 \
    --set log.level=warn >/dev/null
url=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["fields"]["url"])' "$work/lab/cluster.json")
key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["fields"]["demo_api_key"])' "$work/lab/cluster.json")
"$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" --concurrency 8 --duration 3 \
    --warmup 0 --json >/dev/null
before=$(snapshot "$work/lab/cluster.json")
msgs_before=$(nats_in_msgs "$work/lab/cluster.json")
"$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" --concurrency 8 \
    --duration "$duration" --warmup 0 --json >"$work/lab.json"
after=$(snapshot "$work/lab/cluster.json")
msgs_after=$(nats_in_msgs "$work/lab/cluster.json")
"$bin" lab down --dir "$work/lab" >/dev/null

start_dev
dev_before=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
"$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" --concurrency 8 \
    --duration "$duration" --warmup 0 --json >"$work/dev.json"
dev_after=$(awk '{print $14 + $15}' "/proc/$server_pid/stat")
stop_dev

python3 - "$before" "$after" "$work/lab.json" "$dev_before" "$dev_after" "$work/dev.json" "$(getconf CLK_TCK)" \
    "$((msgs_after - msgs_before))" <<'PY'
import json, re, sys
before, after = json.loads(sys.argv[1]), json.loads(sys.argv[2])
lab, dev = json.load(open(sys.argv[3])), json.load(open(sys.argv[6]))
hz = float(sys.argv[7])
ms = lambda ticks, requests: ticks / hz * 1000 / max(requests, 1)
tiers = {}
for name in after:
    tier = re.sub(r"-\d+$", "", name)
    tiers[tier] = tiers.get(tier, 0) + after[name] - before.get(name, 0)
print(f"lab: {lab['requests_per_sec']:.1f} req/s, {lab['failed']} failed; "
      f"resizer dev: {dev['requests_per_sec']:.1f} req/s, {dev['failed']} failed")
print("| tier | CPU per request | capacity per core |")
print("|---|---|---|")
total = 0.0
for tier, ticks in sorted(tiers.items(), key=lambda t: -t[1]):
    per = ms(ticks, lab["requests"])
    total += per
    print(f"| {tier} | {per:.2f} ms | {1000 / per:,.0f} req/s |" if per > 0 else f"| {tier} | 0 ms | - |")
print(f"| lab, all processes | {total:.2f} ms | {1000 / total:,.0f} req/s |")
dev_ms = ms(float(sys.argv[5]) - float(sys.argv[4]), dev["requests"])
print(f"| resizer dev (one process) | {dev_ms:.2f} ms | {1000 / dev_ms:,.0f} req/s |")
print(f"NATS messages received per request, all servers: {int(sys.argv[8]) / max(lab['requests'], 1):.1f}")
PY
