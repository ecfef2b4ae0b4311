#!/usr/bin/env bash
# Two builds of resizer, measured in turn on this machine: before/after a change that must not
# move the numbers (a refactor), or to show what one moved. Each pair runs A then B (the next
# pair B then A, so a drifting host favours neither), three figures each:
#   batch  the pipeline alone: `resize --batch` on the photos, one thread (images/s)
#   tiny   the service: `resizer dev` under `loadtest`, 64x43 JPEG → width 32, 64 connections (req/s)
#   photos the service: the photos under 1 MB → width 512 JPEG q80, 8 connections (req/s)
# The load generator is A's binary for both, so only the server differs. Prints each pair's B/A
# and the median ratio per figure.
# Usage: bench/ab.sh BIN_A BIN_B [PHOTOS_DIR]   (env: PAIRS=4, DURATION=8)
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $# -ge 2 ]] || { echo "usage: bench/ab.sh BIN_A BIN_B [PHOTOS_DIR]" >&2; exit 2; }
bin_a=$(realpath "$1")
bin_b=$(realpath "$2")
photos=${3:-../shared/corpus/photos}
pairs=${PAIRS:-4}
duration=${DURATION:-8}
[[ -d $photos ]] || { echo "error: no photos folder at $photos" >&2; exit 1; }

work=$(mktemp -d)
bin=$bin_a # bench/lib.sh's helpers run $bin
source bench/lib.sh
trap 'stop_dev; rm -rf "$work"' EXIT
prepare_inputs "$photos" "$work/photos"
server_log=$work/server.log
results=$work/results.txt

measure() { # $1 = label (A or B), $2 = the server's binary
    local label=$1 server=$2 ips tiny photos_rps
    ips=$("$server" resize --batch "$work/photos" --out "$work/out" --threads 1 --width 512 --format jpeg \
        --quality 80 --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["images_per_sec"])')
    bin=$server start_dev
    tiny=$("$bin_a" loadtest --url "$url/v1/resize?width=32" --key "$key" --body "$work/tiny.jpg" \
        --concurrency 64 --duration "$duration" --warmup 1 --json |
        python3 -c 'import json,sys;print(json.load(sys.stdin)["requests_per_sec"])')
    photos_rps=$("$bin_a" loadtest --url "$url/v1/resize?width=512&format=jpeg&quality=80" --key "$key" \
        --body "$work/photos" --concurrency 8 --duration "$duration" --warmup 1 --json |
        python3 -c 'import json,sys;print(json.load(sys.stdin)["requests_per_sec"])')
    stop_dev
    echo "$label $ips $tiny $photos_rps" | tee -a "$results" >&2
}

mkdir -p "$work/out"
echo "label batch_img_s tiny_req_s photos_req_s" >&2
for pair in $(seq "$pairs"); do
    if ((pair % 2)); then measure A "$bin_a"; measure B "$bin_b"; else measure B "$bin_b"; measure A "$bin_a"; fi
done

python3 - "$results" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
a = [list(map(float, r[1:])) for r in rows if r[0] == "A"]
b = [list(map(float, r[1:])) for r in rows if r[0] == "B"]
for i, name in enumerate(["batch (img/s, 1 thread)", "tiny (req/s)", "photos (req/s)"]):
    ratios = [y[i] / x[i] for x, y in zip(a, b)]
    print(f"{name}: A median {statistics.median(r[i] for r in a):.1f}, B median {statistics.median(r[i] for r in b):.1f}, "
          f"B/A per pair {' '.join(f'{r:.3f}' for r in ratios)}, median {statistics.median(ratios):.3f}")
EOF
