# Shared by the service benchmarks (source it): the inputs and a `resizer dev` to load.
# Expects $bin (the release binary) and $work (a scratch directory) to be set.

# The photos under 1 MB of $1 into $2 (the blueprint's latency target is stated for them; env
# MAX_INPUT_BYTES moves the bound, e.g. 1000000000 for the whole folder), and a 64-px tiny JPEG
# at $work/tiny.jpg.
prepare_inputs() {
    mkdir -p "$2"
    for f in "$1"/*; do
        [[ -f $f && $(stat -c %s "$f") -lt ${MAX_INPUT_BYTES:-1000000} ]] && cp "$f" "$2/"
    done
    "$bin" resize examples/sample.jpg -o "$work/tiny.jpg" --width 64 --quality 80 >/dev/null
}

# Starts `resizer dev` in $work/data with the rate limits lifted (these benchmarks measure the
# server, not the demo tenant's 100/s) plus any `--set` given as arguments; stderr to $server_log.
# Sets server_pid, url and key.
start_dev() {
    rm -rf "$work/data"
    local sets=()
    for s in "$@"; do sets+=(--set "$s"); done
    "$bin" dev --data-dir "$work/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --set limits.rate_per_sec=1000000000 --set limits.burst=1000000000 --set log.level=warn \
        "${sets[@]}" >/dev/null 2>"$server_log" &
    server_pid=$!
    for _ in $(seq 100); do [[ -f $work/data/dev.json ]] && break; sleep 0.1; done
    url=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["api_url"])' "$work/data/dev.json")
    key=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["demo_api_key"])' "$work/data/dev.json")
}

stop_dev() {
    if [[ -n ${server_pid:-} ]]; then kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; fi
    server_pid=
}

# Refuses to benchmark a release build whose libjpeg-turbo has no SIMD kernels. mozjpeg-sys's
# build script looks for nasm once; a build made before nasm was installed is kept by cargo
# afterwards (it happened: 2026-11-25 18:09 to 2026-11-26 03:19, see docs/benchmarks.md).
require_simd() {
    if grep -qs "NASM not installed" target/release/build/mozjpeg-sys-*/output; then
        echo "error: the release build's libjpeg-turbo was built without nasm (no SIMD)." >&2
        echo "       run: cargo clean --release -p mozjpeg-sys && cargo build --release -p resizer" >&2
        exit 1
    fi
}
