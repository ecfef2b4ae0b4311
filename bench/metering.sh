#!/usr/bin/env bash
# What metering costs: the same server with usage.enabled=true and =false, alternated (on, off,
# on, off) so drift on a shared VM hits both sides, under two loads from `resizer loadtest`:
# tiny images (where per-request costs show most) and photos < 1 MB (closed loop).
# Usage: bench/metering.sh [PHOTOS_DIR] [RESULTS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

photos=${1:-../shared/corpus/photos}
results=${2:-bench/results/metering-$(date +%Y%m%d-%H%M%S)}
duration=${DURATION:-10}
cargo build --release -p resizer >&2
bin=target/release/resizer
work=$(mktemp -d)
source bench/lib.sh
require_simd
trap 'stop_dev; rm -rf "$work"' EXIT
mkdir -p "$results"
prepare_inputs "$photos" "$work/photos"

for round in 1 2; do
    for metering in true false; do
        server_log=$results/server-$metering-$round.log
        start_dev "usage.enabled=$metering"
        echo "== round $round, metering $metering" >&2
        "$bin" loadtest --url "$url/v1/resize?width=32" --key "$key" --body "$work/tiny.jpg" \
            --concurrency 64 --duration "$duration" --warmup 2 --json >"$results/tiny-$metering-$round.json"
        "$bin" loadtest --url "$url/v1/resize?width=512&format=jpeg&quality=80" --key "$key" --body "$work/photos" \
            --concurrency 8 --duration "$duration" --warmup 2 --json >"$results/photos-$metering-$round.json"
        stop_dev
    done
done

python3 - "$results" <<'EOF'
import json, sys
d = sys.argv[1]
for load in ("tiny", "photos"):
    rps = {m: [json.load(open(f"{d}/{load}-{m}-{r}.json"))["requests_per_sec"] for r in (1, 2)] for m in ("true", "false")}
    on, off = sum(rps["true"]) / 2, sum(rps["false"]) / 2
    print(f"{load}: metering on {rps['true'][0]:.1f} / {rps['true'][1]:.1f} req/s, off {rps['false'][0]:.1f} / {rps['false'][1]:.1f} req/s; "
          f"mean on/off = {on / off:.3f} (cost {100 * (1 - on / off):.1f} %)")
EOF
echo "raw results in $results" >&2
