#!/usr/bin/env bash
# Signed GET URLs against POST, on one `resizer dev` (docs/urls.md, docs/benchmarks.md):
#  1. throughput: GET of the photos by signed URLs from a loopback origin with a warm source
#     cache, against POST of the same photos with the same options, alternated GET, POST, GET,
#     POST, ... so drift on a shared VM hits both sides (closed loop, 8 connections);
#  2. 304 revalidations per second: one signed URL with its ETag in If-None-Match (closed loop,
#     64 connections): no fetch, no conversion;
#  3. a cold origin fetch's added latency: GET one request at a time with the source cache off
#     (every request fetches from the origin) against the same with a warm cache, p50 and p99.
# The origin is Python's http.server on loopback (no ETag: the validator is the bytes' SHA-256).
# Usage: bench/signed_urls.sh [RESULTS_DIR]   (ROUNDS=3 DURATION=10, photos from ../shared/corpus)
set -euo pipefail
cd "$(dirname "$0")/.."

results=${1:-bench/results/signed-urls-$(date +%Y%m%d-%H%M%S)}
duration=${DURATION:-10}
rounds=${ROUNDS:-3}
corpus=${CORPUS:-../shared/corpus/photos}
options=${OPTIONS:-width=512,format=jpeg,quality=80}
cargo build --release -p resizer >&2
bin=target/release/resizer
work=$(mktemp -d)
source bench/lib.sh
require_simd
origin_pid=
trap 'stop_dev; [[ -n $origin_pid ]] && kill "$origin_pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$results"
prepare_inputs "$corpus" "$work/photos"
echo "photos: $(ls "$work/photos" | wc -l) files under 1 MB from $corpus" >&2

origin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server "$origin_port" --bind 127.0.0.1 --directory "$work/photos" >/dev/null 2>&1 &
origin_pid=$!
origin=http://127.0.0.1:$origin_port

# A dev server whose demo tenant may fetch from the origin, with a signing key; writes the
# signed paths of every photo to $work/paths-$1 (and sets key_id, secret).
start_signed() {
    local name=$1
    shift
    start_dev "sources.allow_private=127.0.0.1:$origin_port" "$@"
    "$bin" admin --data-dir "$work/data" tenants update demo --sources "$origin/" >/dev/null
    local created
    created=$("$bin" admin --data-dir "$work/data" keys create demo --label bench --signing)
    key_id=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$created")
    secret=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["signing_secret"])' "$created")
    : >"$work/paths-$name"
    for f in "$work/photos"/*; do
        RESIZER_URL_SECRET=$secret "$bin" url --key-id "$key_id" --options "$options" --base "" \
            "$origin/$(basename "$f")" >>"$work/paths-$name"
    done
}

# --- 1 and 2: warm cache against POST, then 304s --------------------------------------------
server_log=$results/server-warm.log
start_signed warm
query=$(printf "%s" "$options" | tr , \&)
# Warm every source into the cache (and check every URL answers 200).
"$bin" loadtest --url "$url/" --paths "$work/paths-warm" --method GET --concurrency 4 --warmup 0 \
    --duration 3 --requests "$(wc -l <"$work/paths-warm")" --json >"$results/warm-up.json"
for round in $(seq "$rounds"); do
    echo "== round $round: GET (warm source cache)" >&2
    "$bin" loadtest --url "$url/" --paths "$work/paths-warm" --method GET --concurrency 8 \
        --duration "$duration" --warmup 2 --json >"$results/get-$round.json"
    echo "== round $round: POST" >&2
    "$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" --concurrency 8 \
        --duration "$duration" --warmup 2 --json >"$results/post-$round.json"
done
first=$(head -1 "$work/paths-warm")
etag=$(curl -s -o /dev/null -D - "$url$first" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
echo "== 304s: If-None-Match $etag" >&2
"$bin" loadtest --url "$url$first" --method GET -H "If-None-Match: $etag" --concurrency 64 \
    --duration "$duration" --warmup 2 --json >"$results/not-modified.json"
echo "== latency, warm cache, one at a time" >&2
"$bin" loadtest --url "$url/" --paths "$work/paths-warm" --method GET --concurrency 1 \
    --duration "$duration" --warmup 1 --json >"$results/latency-warm.json"
stop_dev

# --- 3: every request fetches (the cache keeps nothing) ---------------------------------------
server_log=$results/server-cold.log
start_signed cold "sources.cache_bytes=0"
echo "== latency, every source fetched, one at a time" >&2
"$bin" loadtest --url "$url/" --paths "$work/paths-cold" --method GET --concurrency 1 \
    --duration "$duration" --warmup 1 --json >"$results/latency-cold.json"
fetched=$(curl -s "$url/metrics" | awk '/^resizer_sources_total\{outcome="fetched"\}/{print $2}')
hits=$(curl -s "$url/metrics" | awk '/^resizer_sources_total\{outcome="hit"\}/{print $2}')
echo "cold server: fetched $fetched, hits $hits" >&2
stop_dev

python3 - "$results" "$rounds" "$fetched" "$hits" <<'PY'
import json, sys
d, rounds, fetched, hits = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
load = lambda name: json.load(open(f"{d}/{name}.json"))
def ok(run):
    bad = {k: v for k, v in run["status"].items() if k not in ("200", "304")}
    assert not bad and not run["errors"], f"failures: {run['status']} {run['errors']} {run.get('first_error')}"
    return run
get = [ok(load(f"get-{r}"))["requests_per_sec"] for r in range(1, rounds + 1)]
post = [ok(load(f"post-{r}"))["requests_per_sec"] for r in range(1, rounds + 1)]
g, p = sum(get) / rounds, sum(post) / rounds
print("GET, warm source cache: " + " / ".join(f"{x:,.1f}" for x in get) + f" req/s, mean {g:,.1f}")
print("POST, same photos     : " + " / ".join(f"{x:,.1f}" for x in post) + f" req/s, mean {p:,.1f}")
print(f"GET / POST            : {g / p:.3f}")
nm = ok(load("not-modified"))
print(f"304 revalidations     : {nm['requests_per_sec']:,.0f} req/s (statuses {nm['status']}), p99 {nm['latency_ms']['p99']:.2f} ms")
warm, cold = ok(load("latency-warm"))["latency_ms"], ok(load("latency-cold"))["latency_ms"]
print(f"one at a time, warm   : p50 {warm['p50']:.1f} ms, p99 {warm['p99']:.1f} ms")
print(f"one at a time, fetched: p50 {cold['p50']:.1f} ms, p99 {cold['p99']:.1f} ms (fetched {fetched}, hits {hits})")
print(f"a cold fetch adds     : p50 {cold['p50'] - warm['p50']:.1f} ms, p99 {cold['p99'] - warm['p99']:.1f} ms")
PY
