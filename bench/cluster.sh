#!/usr/bin/env bash
# The lab cluster against `resizer dev` on this machine, and the queue hop:
#   1. photos under 1 MB (width 512, JPEG q80), closed loop, 8 connections: `resizer dev`, then
#      the lab cluster (3 nats-server, 2 api nodes behind HAProxy, 2 workers), alternated ROUNDS
#      times so both see the same machine;
#   2. the queue hop (api publishes → a worker receives the job), per request from each
#      response's `Server-Timing: queue;dur=` (the worker's measurement), at a rate that does
#      not saturate the cluster (tiny images, RATE req/s, one at a time per connection).
# Usage: bench/cluster.sh [PHOTOS_DIR] [RESULTS_DIR]
#   defaults: ../shared/corpus/photos and bench/results/cluster-<date>. Env: DURATION (s, 15),
#   ROUNDS (2), RATE (100), HOPS (2000), LAB_ARGS (extra `lab up` flags, e.g. `--worker-slots 1`),
#   LAB_ENV (environment for the lab's processes only, e.g. `GOMAXPROCS=1 TOKIO_WORKER_THREADS=1`),
#   BIN (a resizer binary to measure instead of building one: A/B runs of two builds),
#   MAX_INPUT_BYTES (1000000: the photos under 1 MB; 1000000000 for the whole folder).
set -euo pipefail
cd "$(dirname "$0")/.."

photos=${1:-../shared/corpus/photos}
results=${2:-bench/results/cluster-$(date +%Y%m%d-%H%M%S)}
duration=${DURATION:-15}
rounds=${ROUNDS:-2}
rate=${RATE:-100}
hops=${HOPS:-2000}
[[ -d $photos ]] || { echo "error: no photos folder at $photos" >&2; exit 1; }

[[ -n ${SKIP_BUILD:-}${BIN:-} ]] || cargo build --release -p resizer >&2
bin=${BIN:-$PWD/target/release/resizer}
work=$(mktemp -d)
# The lab's PostgreSQL runs as the postgres user when we are root: it must reach DIR.
chmod o+x "$work"
source bench/lib.sh
require_simd
lab_dir=$work/lab
trap 'stop_dev; "$bin" lab down --dir "$lab_dir" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p "$results"
prepare_inputs "$photos" "$work/photos"
count=$(ls "$work/photos" | wc -l)
query='width=512&format=jpeg&quality=80'

lab_up() {
    rm -rf "$lab_dir"
    env ${LAB_ENV:-} "$bin" lab up --dir "$lab_dir" ${LAB_ARGS:-} --set limits.rate_per_sec=1000000000 --set limits.burst=1000000000 \
        --set log.level=warn >"$results/lab-up.txt"
    url=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["fields"]["url"])' "$lab_dir/cluster.json")
    key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["fields"]["demo_api_key"])' "$lab_dir/cluster.json")
    # The lab speaks HTTPS with its own CA (docs/tls.md).
    ca=$lab_dir/tls/ca.pem
}

for round in $(seq "$rounds"); do
    echo "== round $round: resizer dev, photos, closed loop, 8 connections" >&2
    server_log=$results/dev-$round.log
    start_dev
    "$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" \
        --concurrency 8 --duration "$duration" --warmup 2 --json >"$results/dev-$round.json"
    stop_dev

    echo "== round $round: lab cluster, photos, closed loop, 8 connections" >&2
    lab_up
    "$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" --ca-file "$ca" \
        --concurrency 8 --duration "$duration" --warmup 2 --json >"$results/lab-$round.json"
    if [[ $round == "$rounds" ]]; then
        echo "== queue hop: $hops tiny images at $rate req/s" >&2
        python3 - "$url" "$key" "$work/tiny.jpg" "$rate" "$hops" "$ca" >"$results/hop.json" <<'EOF_HOP'
import http.client, json, re, ssl, sys, time, urllib.parse
url, key, image, rate, n = sys.argv[1], sys.argv[2], open(sys.argv[3], "rb").read(), float(sys.argv[4]), int(sys.argv[5])
host = urllib.parse.urlsplit(url).netloc
conn = http.client.HTTPSConnection(host, context=ssl.create_default_context(cafile=sys.argv[6]))
hops, statuses, start = [], {}, time.monotonic()
for i in range(n):
    # Paced: request i is due at i/rate; one connection, so the cluster is never saturated.
    due = start + i / rate
    if (pause := due - time.monotonic()) > 0:
        time.sleep(pause)
    conn.request("POST", "/v1/resize?width=32", image, {"Authorization": f"Bearer {key}"})
    r = conn.getresponse(); r.read()
    statuses[r.status] = statuses.get(r.status, 0) + 1
    m = re.search(r"queue;dur=([0-9.]+)", r.getheader("server-timing") or "")
    if m:
        hops.append(float(m.group(1)))
hops.sort()
q = lambda p: hops[min(len(hops) - 1, max(0, int(round(p * len(hops))) - 1))]
json.dump({"requests": n, "rate": rate, "statuses": statuses, "samples": len(hops),
           "hop_ms": {"p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "max": hops[-1]}}, sys.stdout)
EOF_HOP
        for c in api-0 api-1 worker-0 worker-1; do
            murl=$(python3 -c 'import json,sys;c=[x for x in json.load(open(sys.argv[1]))["components"] if x["name"]==sys.argv[2]][0];print(c["urls"]["metrics"])' "$lab_dir/cluster.json" "$c")
            curl -sS --cacert "$ca" "$murl" >"$results/metrics-$c.txt"
        done
    fi
    "$bin" lab down --dir "$lab_dir" >/dev/null
done

python3 - "$results" "$rounds" "$count" "${MAX_INPUT_BYTES:-1000000}" <<'EOF'
import json, sys
d, rounds, count, bound = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
load = lambda n: json.load(open(f"{d}/{n}.json"))
for r in range(1, rounds + 1):
    dev, lab = load(f"dev-{r}"), load(f"lab-{r}")
    print(f"round {r}: photos ({count} files < {bound / 1e6:g} MB), 8 connections: dev {dev['requests_per_sec']:.1f} req/s "
          f"(p99 {dev['latency_ms']['p99']:.0f} ms, {dev['status']}), lab {lab['requests_per_sec']:.1f} req/s "
          f"(p99 {lab['latency_ms']['p99']:.0f} ms, {lab['status']}): lab/dev = {lab['requests_per_sec'] / dev['requests_per_sec']:.3f}")
hop = load("hop")
print(f"queue hop (publish -> worker receipt), {hop['samples']} requests at {hop['rate']} req/s: "
      f"p50 {hop['hop_ms']['p50']:.3f} ms, p90 {hop['hop_ms']['p90']:.3f} ms, p99 {hop['hop_ms']['p99']:.3f} ms, "
      f"max {hop['hop_ms']['max']:.3f} ms, statuses {hop['statuses']}")
EOF
echo "raw results in $results" >&2
