#!/usr/bin/env bash
# What the quota check costs on the request path: the same server with and without a quota on
# the demo tenant (the deployment default `limits.quota`, every dimension limited and never
# reached), alternated on, off, on, off, ... so drift on a shared VM hits both sides, under the
# load where a per-request cost shows most: tiny images, closed loop, 64 connections.
# Usage: bench/quota.sh [RESULTS_DIR]   (ROUNDS=3 DURATION=10 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

results=${1:-bench/results/quota-$(date +%Y%m%d-%H%M%S)}
duration=${DURATION:-10}
rounds=${ROUNDS:-3}
cargo build --release -p resizer >&2
bin=target/release/resizer
work=$(mktemp -d)
source bench/lib.sh
require_simd
trap 'stop_dev; rm -rf "$work"' EXIT
mkdir -p "$results"
"$bin" resize examples/sample.jpg -o "$work/tiny.jpg" --width 64 --quality 80 >/dev/null

# Limits far out of reach: every request is checked in every dimension and admitted.
quota='month;requests=1000000000000;input_bytes=1000000000000000;output_pixels=1000000000000000;cpu_us=1000000000000000'
for round in $(seq "$rounds"); do
    for side in on off; do
        server_log=$results/server-$side-$round.log
        if [[ $side == on ]]; then start_dev "limits.quota=$quota"; else start_dev; fi
        echo "== round $round, quota $side" >&2
        "$bin" loadtest --url "$url/v1/resize?width=32" --key "$key" --body "$work/tiny.jpg" \
            --concurrency 64 --duration "$duration" --warmup 2 --json >"$results/tiny-$side-$round.json"
        stop_dev
    done
done

python3 - "$results" "$rounds" <<'PY'
import json, sys
d, rounds = sys.argv[1], int(sys.argv[2])
rps = {s: [json.load(open(f"{d}/tiny-{s}-{r}.json"))["requests_per_sec"] for r in range(1, rounds + 1)] for s in ("on", "off")}
on, off = sum(rps["on"]) / rounds, sum(rps["off"]) / rounds
print("quota on : " + " / ".join(f"{x:,.0f}" for x in rps["on"]) + f" req/s, mean {on:,.0f}")
print("quota off: " + " / ".join(f"{x:,.0f}" for x in rps["off"]) + f" req/s, mean {off:,.0f}")
print(f"on / off = {on / off:.3f} ({100 * (on / off - 1):+.1f} %)")
PY
echo "raw results in $results" >&2
