#!/usr/bin/env bash
# `resizer dev` beside three HTTP image servers, in one run on this machine, through the same load
# generator (`resizer loadtest`), with the same images and the same output settings: JPEG inputs
# under 1 MB from the photos corpus, longest side 512 (never enlarged), JPEG q80, baseline, no
# metadata. One server runs at a time and has both cores (the generator, one thread, shares them).
#
#   resizer  POST /v1/resize?width=512&height=512&fit=inside&format=jpeg&quality=80 (body: image)
#   sharp    POST / (body: image) to bench/peers/sharp-server.js: rotate, resize inside 512x512
#            without enlargement, jpeg q80; one node process (libvips uses every core)
#   thumbor  GET /unsafe/fit-in/512x512/filters:quality(80):format(jpeg)/NAME, file loader on the
#            same folder, no storage, no result storage, 2 processes, baseline JPEG
#   nginx    GET /NAME, image_filter resize 512 512, image_filter_jpeg_quality 80, 2 workers
#
# thumbor and nginx read the image from their own disk (page cache) by name: they do not accept
# an upload to resize, so they are spared receiving the body that resizer and sharp receive.
#
# Per server: its answer for one sample image (format, size, bytes) beside ours; a closed loop of
# 8 connections (capacity); then a ramp of open-loop rates from 30 % to 200 % of that capacity in
# steps of 10 %, STEP_SECONDS each after 2 s of warm-up, stopping at the first rate whose p99 goes
# over 500 ms (or that fails more than 1 % of requests): the tipping point. Reports (HTML, JSON)
# go to the results folder, a table to stdout, and a headless-Chromium screenshot of our ramp
# report to resizer-ramp.png.
#
# `lab` is the lab cluster (`resizer lab up`) on this same machine, through its HAProxy, with the
# same request as `resizer`.
#
# `resizer_deepq` is `resizer dev` again with deeper lane queues (dispatch.small_queue=256,
# medium_queue=64): the default lanes answer 503 at once when 4 jobs per worker wait, which a
# ramp counts as failures; this shows how much of the tipping point is that policy.
#
# Other work on this shared machine (a compiler, another test suite) skews a run: before each
# server the script waits for a quiet machine, and during its runs bench/peers/others-busy.py
# counts the seconds in which other processes used more than a fifth of a core (column
# "disturbed s"); such a measurement is done again (RETRIES), and a count above 0 left in the
# table means it never ran undisturbed: not to be believed.
#
# Usage: bench/peers.sh [PHOTOS_DIR] [RESULTS_DIR]
#   defaults: ../shared/corpus/photos and bench/results/peers-<date>
# Env: PEERS="resizer lab resizer_deepq thumbor sharp nginx", STEP_SECONDS=5, CAPACITY_SECONDS=8,
#      WAIT_IDLE=600 (seconds to wait for a quiet machine before each server), RETRIES=3 (attempts
#      per server while a compiler disturbs it), RESIZER_BENCH_CACHE.
# AVIF instead of JPEG (issue 25): OUTPUT=avif PEERS="resizer sharp", with AVIF_OURS="Q:EFFORT"
#      and AVIF_SHARP="Q:EFFORT" (each 4:4:4; pick the qualities that give both the same SSIM,
#      docs/benchmarks.md "AVIF encoders"); thumbor and nginx do not take part.
set -euo pipefail
cd "$(dirname "$0")/.."

photos=${1:-../shared/corpus/photos}
results=${2:-bench/results/peers-$(date +%Y%m%d-%H%M%S)}
peers=${PEERS:-resizer lab resizer_deepq thumbor sharp nginx}
step_seconds=${STEP_SECONDS:-5}
capacity_seconds=${CAPACITY_SECONDS:-8}
wait_idle=${WAIT_IDLE:-600}
retries=${RETRIES:-3}
cache=${RESIZER_BENCH_CACHE:-$HOME/.cache/resizer-bench}
output=${OUTPUT:-jpeg}
case $output in
    jpeg) resizer_output="format=jpeg&quality=80"; export SHARP_AVIF= ;;
    avif)
        ours=${AVIF_OURS:?OUTPUT=avif needs AVIF_OURS=Q:EFFORT}
        export SHARP_AVIF=${AVIF_SHARP:?OUTPUT=avif needs AVIF_SHARP=Q:EFFORT}
        resizer_output="format=avif&quality=${ours%%:*}&effort=${ours##*:}"
        for p in $peers; do
            [[ $p == resizer || $p == sharp || $p == lab ]] || { echo "error: $p does not write AVIF here" >&2; exit 1; }
        done ;;
    *) echo "error: OUTPUT is jpeg or avif" >&2; exit 1 ;;
esac
[[ -d $photos ]] || { echo "error: no photos folder at $photos" >&2; exit 1; }

bash bench/peers/install.sh
cargo build --release -p resizer >&2
bin=$PWD/target/release/resizer
mkdir -p "$results"
results=$(cd "$results" && pwd)
work=$(mktemp -d)
# nginx's workers run as nobody: they must reach the images.
chmod 755 "$work"

# Every server is started in its own process group (setsid), so stopping it stops its children
# too (thumbor's forked processes, nginx's workers), also when this script fails.
groups=()
stop_group() {
    local group=$1
    kill -TERM -- "-$group" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 -- "-$group" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL -- "-$group" 2>/dev/null || true
}
watcher=
cleanup() {
    if [[ -n $watcher ]]; then kill "$watcher" 2>/dev/null || true; fi
    for group in "${groups[@]}"; do stop_group "$group"; done
    if [[ -f $work/lab/cluster.json ]]; then "$bin" lab down --dir "$work/lab" >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# JPEGs under 1 MB (the latency target is stated for inputs under 1 MB; nginx's image_filter
# keeps the input's format, so JPEG inputs keep every output a JPEG).
mkdir -p "$work/photos"
for f in "$photos"/*.jpg; do
    [[ -f $f && $(stat -c %s "$f") -lt 1000000 ]] && cp "$f" "$work/photos/"
done
chmod -R a+rX "$work/photos"
count=$(ls "$work/photos" | wc -l)
sample=$(ls "$work/photos" | head -1)
python=$cache/thumbor/bin/python # has Pillow, for looking at the outputs

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for_http() { # URL: any HTTP answer within 30 s
    for _ in $(seq 300); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "error: nothing answers at $1" >&2
    return 1
}

# The share of CPU time spent idle over one second, in percent.
idle_percent() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $((100 * (b[4] - a[4] + b[5] - a[5]) / (total > 0 ? total : 1)))
}

# Waits (up to WAIT_IDLE s) until no compiler runs and the machine is at least 90 % idle.
wait_quiet() {
    local waited=0 idle
    while true; do
        idle=$(idle_percent)
        if ! pgrep -x rustc >/dev/null && ! pgrep -x cargo >/dev/null && ((idle >= 90)); then break; fi
        if ((waited >= wait_idle)); then echo "warning: machine still busy (idle $idle %), measuring anyway" >&2; break; fi
        echo "   waiting for a quiet machine (idle $idle %, rustc: $(pgrep -xc rustc || true))" >&2
        sleep 10; waited=$((waited + 11))
    done
    echo "$(date -u +%FT%TZ) idle ${idle}% load $(cut -d' ' -f1-3 /proc/loadavg)"
}

start_resizer() { # [--set KEY=VALUE ...]
    rm -rf "$work/data"
    setsid "$bin" dev --data-dir "$work/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --set limits.rate_per_sec=1000000000 --set limits.burst=1000000000 --set log.level=warn "$@" \
        >/dev/null 2>>"$results/resizer.log" &
    groups+=($!)
    for _ in $(seq 300); do [[ -f $work/data/dev.json ]] && break; sleep 0.1; done
    local base key
    base=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["api_url"])' "$work/data/dev.json")
    key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["demo_api_key"])' "$work/data/dev.json")
    target_url="$base/v1/resize?width=512&height=512&fit=inside&$resizer_output"
    target_args=(--key "$key")
    sample_cmd=(curl -sS --fail -H "Authorization: Bearer $key" --data-binary "@$work/photos/$sample" "$target_url")
}

# The lab cluster (`resizer lab up`: 3 nats-server, PostgreSQL, identity service, usage aggregator,
# 2 api nodes behind HAProxy, 2 workers) on the same machine, through HAProxy. Its processes are
# in several process groups, all of them the server's for the disturbance count.
start_lab() {
    rm -rf "$work/lab"
    "$bin" lab up --dir "$work/lab" --set limits.rate_per_sec=1000000000 --set limits.burst=1000000000 \
        --set log.level=warn >"$results/lab-up.txt"
    local base key
    base=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["fields"]["url"])' "$work/lab/cluster.json")
    key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["fields"]["demo_api_key"])' "$work/lab/cluster.json")
    server_groups=($(python3 -c 'import json,os,sys
print(" ".join(sorted({str(os.getpgid(c["pid"])) for c in json.load(open(sys.argv[1]))["components"]})))' "$work/lab/cluster.json"))
    target_url="$base/v1/resize?width=512&height=512&fit=inside&$resizer_output"
    target_args=(--key "$key")
    sample_cmd=(curl -sS --fail -H "Authorization: Bearer $key" --data-binary "@$work/photos/$sample" "$target_url")
}

start_resizer_deepq() {
    start_resizer --set dispatch.small_queue=256 --set dispatch.medium_queue=64
}

start_sharp() {
    NODE_PATH=$cache/sharp/node_modules setsid node bench/peers/sharp-server.js >"$work/sharp.out" 2>"$results/sharp.log" &
    groups+=($!)
    for _ in $(seq 300); do grep -q listening "$work/sharp.out" 2>/dev/null && break; sleep 0.1; done
    target_url="http://127.0.0.1:$(awk '/listening/ {print $2}' "$work/sharp.out")/"
    target_args=()
    sample_cmd=(curl -sS --fail --data-binary "@$work/photos/$sample" "$target_url")
}

start_thumbor() {
    local port
    port=$(free_port)
    cat >"$work/thumbor.conf" <<CONF
LOADER = 'thumbor.loaders.file_loader'
FILE_LOADER_ROOT_PATH = '$work/photos'
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
ALLOW_UNSAFE_URL = True
QUALITY = 80
PROGRESSIVE_JPEG = False
RESPECT_ORIENTATION = True
CONF
    setsid "$cache/thumbor/bin/thumbor" -i 127.0.0.1 -p "$port" -c "$work/thumbor.conf" --processes 2 -l error \
        >"$results/thumbor.log" 2>&1 &
    groups+=($!)
    wait_for_http "http://127.0.0.1:$port/healthcheck"
    target_url="http://127.0.0.1:$port/unsafe/fit-in/512x512/filters:quality(80):format(jpeg)/{file}"
    target_args=(--method GET)
    sample_cmd=(curl -sS --fail "${target_url//\{file\}/$sample}")
}

start_nginx() {
    local port
    port=$(free_port)
    mkdir -p "$work/nginx"
    cat >"$work/nginx/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_http_image_filter_module.so;
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $results/nginx.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        root $work/photos;
        location / {
            image_filter resize 512 512;
            image_filter_jpeg_quality 80;
            image_filter_buffer 20M;
        }
    }
}
CONF
    setsid nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -e "$results/nginx.log" >/dev/null 2>&1 &
    groups+=($!)
    wait_for_http "http://127.0.0.1:$port/"
    target_url="http://127.0.0.1:$port/{file}"
    target_args=(--method GET)
    sample_cmd=(curl -sS --fail "${target_url//\{file\}/$sample}")
}

echo "== $count JPEGs under 1 MB from $photos; sample image $sample; results in $results" >&2
: >"$results/machine.txt"
{ date -u +%FT%TZ; nproc; grep -m1 'model name' /proc/cpuinfo; free -g | sed -n 2p; "$bin" --version
  echo "commit $(git rev-parse --short HEAD), files changed since: $(git status --short --untracked-files=no | wc -l)"
  git status --short --untracked-files=no; node --version; echo "sharp $(node -p "require('$cache/sharp/node_modules/sharp/package.json').version")"
  echo "libvips (sharp) $(NODE_PATH=$cache/sharp/node_modules node -p "require('sharp').versions.vips")"
  echo "thumbor $("$cache/thumbor/bin/python" -c 'import thumbor; print(thumbor.__version__)')"
  echo "pillow $("$python" -c 'import PIL; print(PIL.__version__)')"; nginx -v 2>&1; chromium --version 2>/dev/null || true
} >>"$results/machine.txt"

# One measurement of server $1: sample answer, closed loop, ramp; the seconds in which something
# else used the CPU meanwhile in $results/$1-others.txt.
measure() {
    local peer=$1 capacity step group
    echo "$peer $(wait_quiet)" >>"$results/quiet.txt"
    server_groups=()
    "start_$peer"
    ((${#server_groups[@]})) || server_groups=("${groups[-1]}")
    # One line per second in which other processes (not this server's groups, not this script's,
    # which holds the generator) used more than a fifth of a core, while this server is measured.
    local exclude=()
    for group in "${server_groups[@]}" "$(ps -o pgid= $$ | tr -d ' ')"; do exclude+=(--group "$group"); done
    python3 bench/peers/others-busy.py "${exclude[@]}" >"$results/$peer-others.txt" &
    watcher=$!
    "${sample_cmd[@]}" >"$results/$peer-sample.jpg"
    "$bin" loadtest --url "$target_url" "${target_args[@]}" --images "$work/photos" \
        --concurrency 8 --duration "$capacity_seconds" --warmup 2 --json \
        --report "$results/$peer-closed.html" >"$results/$peer-closed.json"
    capacity=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["requests_per_sec"])' "$results/$peer-closed.json")
    step=$(python3 -c "print(max(1, round($capacity / 10)))")
    echo "   closed loop: $capacity req/s; ramp $((3 * step)):$((20 * step)):$step" >&2
    "$bin" loadtest --url "$target_url" "${target_args[@]}" --images "$work/photos" \
        --ramp "$((3 * step)):$((20 * step)):$step" --duration "$step_seconds" --warmup 2 --concurrency 256 \
        --json --report "$results/$peer-ramp.html" >"$results/$peer-ramp.json"
    kill "$watcher" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
    watcher=
    if [[ $peer == lab ]]; then
        "$bin" lab down --dir "$work/lab" >/dev/null
    else
        stop_group "${server_groups[0]}"
    fi
}

for peer in $peers; do
    for attempt in $(seq "$retries"); do
        echo "== $peer (attempt $attempt of $retries)" >&2
        measure "$peer"
        [[ -s $results/$peer-others.txt ]] || break
        echo "   other processes disturbed the measurement for $(wc -l <"$results/$peer-others.txt") s" >&2
    done
    echo "$peer attempts $attempt" >>"$results/quiet.txt"
done

python3 - "$results" "$peers" "$sample" "$python" <<'EOF_TABLE'
import json, subprocess, sys
results, peers, sample, python = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
load = lambda name: json.load(open(f"{results}/{name}.json"))
probe = lambda peer: subprocess.run([python, "-c", "import sys; from PIL import Image; im = Image.open(sys.argv[1]); "
    "print(im.format, '%dx%d' % im.size, im.mode, 'progressive' if im.info.get('progressive') else 'baseline')",
    f"{results}/{peer}-sample.jpg"], capture_output=True, text=True).stdout.strip()
import os
print(f"sample {sample}:")
for peer in peers:
    print(f"  {peer:8} {probe(peer):40} {os.path.getsize(f'{results}/{peer}-sample.jpg'):>7} bytes")
rows = {}
for peer in peers:
    closed, ramp = load(f"{peer}-closed"), load(f"{peer}-ramp")
    tip = ramp["ramp"]["tipping_point"]
    rows[peer] = (closed, ramp, tip)
compiler = {peer: sum(1 for _ in open(f"{results}/{peer}-others.txt")) for peer in peers}
ours = rows.get("resizer")
print()
print("| server | closed loop, 8 conns: req/s | p50 / p99 ms | tipping point (p99 < 500 ms): offered req/s | answered req/s | p99 ms | resizer ÷ server (tipping) | resizer ÷ server (closed) | non-2xx in closed loop | disturbed s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for peer, (closed, ramp, tip) in rows.items():
    failed = closed["failed"]
    tip_rate = tip["rate"] if tip else None
    # Every planned rate held: the tipping point is above the plan, this is a lower bound.
    at_least = "≥ " if tip and not ramp["ramp"]["not_run"] and all(s["held"] for s in ramp["ramp"]["steps"]) else ""
    ratio_tip = f"{ours[2]['rate'] / tip_rate:.2f}" if ours and ours[2] and tip_rate else "-"
    ratio_closed = f"{ours[0]['requests_per_sec'] / closed['requests_per_sec']:.2f}" if ours and closed['requests_per_sec'] else "-"
    lat = closed["latency_ms"]
    print(f"| {peer} | {closed['requests_per_sec']:.1f} | {lat['p50']:.1f} / {lat['p99']:.1f} | "
          f"{at_least}{tip_rate} | {tip['requests_per_sec']:.1f} | {tip['p99_ms']:.1f} | {ratio_tip} | {ratio_closed} | {failed} | {compiler[peer]} |"
          if tip else
          f"| {peer} | {closed['requests_per_sec']:.1f} | {lat['p50']:.1f} / {lat['p99']:.1f} | none | - | - | - | {ratio_closed} | {failed} | {compiler[peer]} |")
print()
for peer, (closed, ramp, tip) in rows.items():
    steps = ramp["ramp"]["steps"]
    print(f"{peer} ramp: " + ", ".join(f"{s['rate']:g}→p99 {s['latency_ms']['p99'] if s['latency_ms']['p99'] is not None else float('nan'):.0f} ms ({s['verdict']})" for s in steps))
EOF_TABLE

if [[ -f $results/resizer-ramp.html ]]; then
    timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1000,2700 \
        --screenshot="$results/resizer-ramp.png" "file://$results/resizer-ramp.html" >/dev/null 2>&1 \
        && echo "screenshot: $results/resizer-ramp.png" >&2 || echo "warning: no screenshot (chromium failed)" >&2
fi
echo "results in $results" >&2
