#!/usr/bin/env bash
# NATS messages per request in the lab cluster, by connection: a fresh `resizer lab up`, a warm-up,
# then 10 s of the photos load of bench/lab-cpu.sh (8 connections, width 512, JPEG q80); each
# nats-server's /connz (clients: api nodes, workers, the usage aggregator) and /routez (the other
# servers: Raft replication and forwarded client messages) read before and after, the differences
# divided by the requests answered. Shows which messages the queue costs and where they go.
# Usage: bench/nats-messages.sh [PHOTOS_DIR]   (default ../shared/corpus/photos)
# Env: SKIP_BUILD, LAB_ARGS (extra `lab up` flags).
set -euo pipefail
cd "$(dirname "$0")/.."
photos=${1:-../shared/corpus/photos}
[[ -d $photos ]] || { echo "error: no photos folder at $photos" >&2; exit 1; }
[[ -n ${SKIP_BUILD:-} ]] || cargo build --release -p resizer >&2
bin=$PWD/target/release/resizer
work=$(mktemp -d)
chmod o+x "$work" # PostgreSQL runs as its own user and must reach its data directory
source bench/lib.sh
trap '"$bin" lab down --dir "$work/lab" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
prepare_inputs "$photos" "$work/photos"
query='width=512&height=512&fit=inside&format=jpeg&quality=80'
"$bin" lab up --dir "$work/lab" ${LAB_ARGS:-} --set limits.rate_per_sec=1000000000 --set limits.burst=1000000000 \
    --set log.level=warn >/dev/null
field() { python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["fields"][sys.argv[2]])' "$work/lab/cluster.json" "$1"; }
url=$(field url)
key=$(field demo_api_key)
"$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" --concurrency 8 --duration 3 \
    --warmup 0 --json >/dev/null

# {"<server> client <name> <cid>" | "<server> route <peer>" | "<server> all": [in_msgs, out_msgs]}
snapshot() {
    python3 - "$work/lab/cluster.json" <<'PY'
import json, sys, urllib.request
get = lambda url: json.load(urllib.request.urlopen(url, timeout=5))
components = json.load(open(sys.argv[1]))["components"]
names = {}
out = {}
for c in components:
    if c["role"] == "nats":
        names[get(c["urls"]["monitor"] + "/varz")["server_id"]] = c["name"]
for c in components:
    if c["role"] != "nats":
        continue
    monitor = c["urls"]["monitor"]
    for conn in get(monitor + "/connz?limit=1000")["connections"]:
        out[f'{c["name"]} client {conn.get("name") or "?"} #{conn["cid"]}'] = (conn["in_msgs"], conn["out_msgs"])
    for route in get(monitor + "/routez")["routes"]:
        out[f'{c["name"]} route with {names.get(route.get("remote_id"), "?")}'] = (route["in_msgs"], route["out_msgs"])
    varz = get(monitor + "/varz")
    out[f'{c["name"]} all'] = (varz["in_msgs"], varz["out_msgs"])
print(json.dumps(out))
PY
}
before=$(snapshot)
"$bin" loadtest --url "$url/v1/resize?$query" --key "$key" --body "$work/photos" --concurrency 8 --duration 10 \
    --warmup 0 --json >"$work/load.json"
after=$(snapshot)
python3 - "$before" "$after" "$work/load.json" <<'PY'
import json, sys
before, after = json.loads(sys.argv[1]), json.loads(sys.argv[2])
load = json.load(open(sys.argv[3]))
n = max(load["requests"], 1)
print(f"lab {load['requests_per_sec']:.1f} req/s, {load['failed']} failed; messages per request, as each server counts them")
print("| server, connection | received | sent |")
print("|---|---|---|")
total = 0.0
for name in sorted(after):
    a_in, a_out = before.get(name, (0, 0))
    b_in, b_out = after[name]
    if name.endswith(" all"):
        total += (b_in - a_in) / n
    if b_in - a_in or b_out - a_out:
        print(f"| {name} | {(b_in - a_in) / n:.2f} | {(b_out - a_out) / n:.2f} |")
print(f"all servers received {total:.1f} messages per request")
PY
