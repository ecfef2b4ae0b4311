#!/usr/bin/env bash
# Server CPU per request with metering on and off: tiny images only (where per-request costs
# show), alternated on, off, on, off, no warm-up; the server's utime+stime from /proc/<pid>/stat
# before and after each load, divided by the requests answered.
# Usage: bench/metering-cpu.sh [--set key=value ...]   (DURATION, default 8 s)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-8}
cargo build --release -p resizer >&2
bin=target/release/resizer
work=$(mktemp -d)
server_log=$work/server.log
source bench/lib.sh
require_simd
trap 'stop_dev; rm -rf "$work"' EXIT
"$bin" resize examples/sample.jpg -o "$work/tiny.jpg" --width 64 --quality 80 >/dev/null
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }

for metering in true false true false; do
    start_dev "usage.enabled=$metering" "$@"
    before=$(cpu_ticks)
    out=$("$bin" loadtest --url "$url/v1/resize?width=32" --key "$key" --body "$work/tiny.jpg" \
        --concurrency 64 --duration "$duration" --warmup 0 --json)
    after=$(cpu_ticks)
    python3 - "$out" "$metering" "$before" "$after" "$ticks" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
before, after, ticks = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
print(f"metering {sys.argv[2]}: {d['requests_per_sec']:.0f} req/s, "
      f"server CPU {(after - before) / ticks * 1e6 / d['requests']:.1f} µs per request")
PY
    stop_dev
done
