#!/usr/bin/env bash
# What metering costs the server: throughput and server CPU per request with metering on and off,
# in PAIRS alternated pairs (on-off, then off-on, ... so that a drift of the machine does not
# favour one side), each load a fresh `resizer dev` with no warm-up; the server's utime+stime from
# /proc/<pid>/stat before and after each load, divided by the requests answered. Prints every
# load, then the median over the pairs of on ÷ off throughput and of the CPU difference: one load
# on this VM varies by several percent, the median of several pairs much less. Also the rest of
# the machine's busy time per request (/proc/stat: user, nice, system, irq, softirq, steal; minus
# the server and the load generator, whose CPU /usr/bin/time gives): kernel threads such as the
# journal commits and writeback behind the spool's group fsync, which the server's CPU misses.
# Usage: bench/metering-cpu.sh [--set key=value ...]
# Env: PAIRS (default 6), DURATION (seconds per load, default 6), PHOTOS (a folder: its files
#      under 1 MB, width 512, 8 connections, instead of the 64-px tiny JPEG with 64 connections).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-6}
pairs=${PAIRS:-6}
cargo build --release -p resizer >&2
bin=target/release/resizer
work=$(mktemp -d)
server_log=$work/server.log
source bench/lib.sh
require_simd
trap 'stop_dev; rm -rf "$work"' EXIT
if [[ -n ${PHOTOS:-} ]]; then
    prepare_inputs "$PHOTOS" "$work/photos"
    body=$work/photos query='width=512&format=jpeg&quality=80' connections=8
else
    "$bin" resize examples/sample.jpg -o "$work/tiny.jpg" --width 64 --quality 80 >/dev/null
    body=$work/tiny.jpg query='width=32' connections=64
fi
ticks=$(getconf CLK_TCK)
results=$work/loads.txt

cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
busy_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

for pair in $(seq "$pairs"); do
    order="true false"
    ((pair % 2 == 0)) && order="false true"
    for metering in $order; do
        start_dev "usage.enabled=$metering" "$@"
        before=$(cpu_ticks) busy_before=$(busy_ticks)
        out=$(/usr/bin/time -f "%U %S" -o "$work/loadgen.txt" "$bin" loadtest --url "$url/v1/resize?$query" \
            --key "$key" --body "$body" --concurrency "$connections" --duration "$duration" --warmup 0 --json)
        after=$(cpu_ticks) busy_after=$(busy_ticks)
        python3 - "$out" "$pair" "$metering" "$before" "$after" "$ticks" "$busy_before" "$busy_after" \
            "$work/loadgen.txt" <<'PY' | tee -a "$results"
import json, sys
d = json.loads(sys.argv[1])
before, after, ticks, busy_before, busy_after = map(float, sys.argv[4:9])
per_request = lambda seconds: seconds * 1e6 / max(d['requests'], 1)
cpu_us = per_request((after - before) / ticks)
loadgen_us = per_request(sum(map(float, open(sys.argv[9]).read().split())))
rest_us = per_request((busy_after - busy_before) / ticks) - cpu_us - loadgen_us
print(f"pair {sys.argv[2]} metering {sys.argv[3]}: {d['requests_per_sec']:.1f} req/s, "
      f"server CPU {cpu_us:.1f} µs per request, {d['failed']} failed; "
      f"load generator {loadgen_us:.1f} µs, rest of the machine {rest_us:.1f} µs")
PY
        stop_dev
    done
done

python3 - "$results" <<'PY'
import re, statistics, sys
loads = {}
for line in open(sys.argv[1]):
    m = re.match(r"pair (\d+) metering (\w+): ([\d.]+) req/s, server CPU ([\d.]+).*machine ([-\d.]+)", line)
    loads[(int(m[1]), m[2])] = (float(m[3]), float(m[4]), float(m[5]))
pairs = sorted({p for p, _ in loads})
ratios = [loads[(p, "true")][0] / loads[(p, "false")][0] for p in pairs]
extra = [loads[(p, "true")][1] - loads[(p, "false")][1] for p in pairs]
off_cpu = statistics.median(loads[(p, "false")][1] for p in pairs)
print(f"on ÷ off throughput per pair: {' '.join(f'{r:.3f}' for r in ratios)}")
print(f"median on ÷ off: {statistics.median(ratios):.3f} (metering costs {100 * (1 - statistics.median(ratios)):.1f} % of throughput)")
print(f"median server CPU: {statistics.median(extra):+.1f} µs per request with metering "
      f"({100 * statistics.median(extra) / off_cpu:.1f} % of the {off_cpu:.1f} µs without)")
rest = statistics.median(loads[(p, "true")][2] - loads[(p, "false")][2] for p in pairs)
print(f"median rest of the machine: {rest:+.1f} µs per request with metering")
PY
