#!/usr/bin/env bash
# What TLS costs through the lab cluster (docs/tls.md): the same lab with TLS on every link
# (its default) and with `lab up --no-tls`, alternated ROUNDS times so both see the same machine,
# each loaded through HAProxy with (1) tiny images (a 64-px JPEG to width 32: per-request
# overhead dominates) and (2) the photos under 1 MB (width 512, JPEG q80), closed loop, 8
# keep-alive connections (a handshake per connection, then reuse).
# Usage: bench/tls.sh [PHOTOS_DIR] [RESULTS_DIR]
#   defaults: ../shared/corpus/photos and bench/results/tls-<date>. Env: DURATION (s, 15),
#   ROUNDS (2, even: each order twice as often), LAB_ARGS (extra `lab up` flags), BIN (a resizer binary instead of building one).
set -euo pipefail
cd "$(dirname "$0")/.."

photos=${1:-../shared/corpus/photos}
results=${2:-bench/results/tls-$(date +%Y%m%d-%H%M%S)}
duration=${DURATION:-15}
rounds=${ROUNDS:-2}
[[ -d $photos ]] || { echo "error: no photos folder at $photos" >&2; exit 1; }

[[ -n ${SKIP_BUILD:-}${BIN:-} ]] || cargo build --release -p resizer >&2
bin=${BIN:-$PWD/target/release/resizer}
work=$(mktemp -d)
# The lab's PostgreSQL runs as the postgres user when we are root: it must reach DIR.
chmod o+x "$work"
source bench/lib.sh
require_simd
lab_dir=$work/lab
trap '"$bin" lab down --dir "$lab_dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p "$results"
prepare_inputs "$photos" "$work/photos"

for round in $(seq "$rounds"); do
    # Odd rounds run TLS first, even rounds plaintext first: this VM drifts within minutes, and a
    # fixed order would hand the drift to one side.
    order=(tls plain)
    (( round % 2 == 0 )) && order=(plain tls)
    for mode in "${order[@]}"; do
        echo "== round $round: lab, $mode" >&2
        rm -rf "$lab_dir"
        flags=()
        [[ $mode == plain ]] && flags=(--no-tls)
        "$bin" lab up --dir "$lab_dir" "${flags[@]}" ${LAB_ARGS:-} --set limits.rate_per_sec=1000000000 \
            --set limits.burst=1000000000 --set log.level=warn >"$results/lab-up-$mode-$round.txt"
        url=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["fields"]["url"])' "$lab_dir/cluster.json")
        key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["fields"]["demo_api_key"])' "$lab_dir/cluster.json")
        ca=()
        [[ $mode == tls ]] && ca=(--ca-file "$lab_dir/tls/ca.pem")
        "$bin" loadtest --url "$url/v1/resize?width=32" --key "$key" --body "$work/tiny.jpg" "${ca[@]}" \
            --concurrency 8 --duration "$duration" --warmup 2 --json >"$results/tiny-$mode-$round.json"
        "$bin" loadtest --url "$url/v1/resize?width=512&format=jpeg&quality=80" --key "$key" --body "$work/photos" \
            "${ca[@]}" --concurrency 8 --duration "$duration" --warmup 2 --json >"$results/photos-$mode-$round.json"
        "$bin" lab down --dir "$lab_dir" >/dev/null
    done
done

python3 - "$results" "$rounds" <<'EOF_SUM'
import json, sys
d, rounds = sys.argv[1], int(sys.argv[2])
load = lambda n: json.load(open(f"{d}/{n}.json"))
for r in range(1, rounds + 1):
    for kind in ("tiny", "photos"):
        tls, plain = load(f"{kind}-tls-{r}"), load(f"{kind}-plain-{r}")
        print(f"round {r}, {kind}: tls {tls['requests_per_sec']:.1f} req/s (p99 {tls['latency_ms']['p99']:.1f} ms, "
              f"{tls['status']}), plain {plain['requests_per_sec']:.1f} req/s (p99 {plain['latency_ms']['p99']:.1f} ms, "
              f"{plain['status']}): tls/plain = {tls['requests_per_sec'] / plain['requests_per_sec']:.3f}")
EOF_SUM
echo "raw results in $results" >&2
