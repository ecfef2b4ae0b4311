#!/usr/bin/env bash
# Contract test of both HTTP APIs with Schemathesis: starts `resizer dev` on free loopback ports in
# a throwaway data directory, then fuzzes the public API and the admin API from their own
# /openapi.json, checking that no response is a 5xx and that every response (status, content
# type, headers, body) is one the document allows. Exits non-zero on any finding.
#
# Environment:
#   RESIZER_BIN           the binary to test (default target/debug/resizer; build it first)
#   SCHEMATHESIS_EXAMPLES test cases per operation and phase (default 50)
#   SCHEMATHESIS_SEED     the random seed (default 1, so a run repeats the previous one)
#   SCHEMATHESIS_CHECKS   comma-separated checks instead of the default five (e.g. `all`, to
#                         explore: the checks beyond conformance also judge the document's
#                         strictness, see `schemathesis run --help`)
#
# Schemathesis lives in a venv under target/ (gitignored), installed from PyPI when missing or
# at another version. Reports go to target/schemathesis-report/{public,admin}/.
set -euo pipefail
# RESIZER_BIN, if relative, is taken from where the script was started.
if [[ -n ${RESIZER_BIN:-} && $RESIZER_BIN != /* ]]; then RESIZER_BIN=$PWD/$RESIZER_BIN; fi
cd "$(dirname "$0")/.."
root=$PWD

SCHEMATHESIS_VERSION=4.32.5
venv=$root/target/schemathesis-venv
report_root=$root/target/schemathesis-report
bin=${RESIZER_BIN:-target/debug/resizer}
examples=${SCHEMATHESIS_EXAMPLES:-50}
seed=${SCHEMATHESIS_SEED:-1}

# --- 1. Schemathesis in its venv ------------------------------------------------------------
installed_version() {
    [[ -x $venv/bin/schemathesis ]] || return 0
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true
}
can_make_venv() {
    local probe rc=0
    command -v python3 >/dev/null || return 1
    probe=$(mktemp -d)
    python3 -m venv "$probe/v" >/dev/null 2>&1 || rc=1
    rm -rf "$probe"
    return "$rc"
}
if [[ $(installed_version) != "$SCHEMATHESIS_VERSION" ]]; then
    # Debian's python3 ships without ensurepip unless python3-venv is installed.
    if ! can_make_venv; then
        if [[ $(id -u) -eq 0 ]]; then
            echo "installing: python3 python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv >/dev/null \
                || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv >/dev/null; }
        fi
        if ! can_make_venv; then
            echo "error: scripts/schemathesis.sh needs python3 (3.11 or later) with its venv module" >&2
            echo "       run: sudo apt-get install -y python3 python3-venv" >&2
            exit 1
        fi
    fi
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: schemathesis $SCHEMATHESIS_VERSION needs Python 3.11 or later; python3 is $(python3 --version 2>&1)" >&2
        exit 1
    fi
    echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    if [[ $(installed_version) != "$SCHEMATHESIS_VERSION" ]]; then
        echo "error: schemathesis $SCHEMATHESIS_VERSION did not install into $venv" >&2
        exit 1
    fi
fi
st=$venv/bin/schemathesis

# --- 2. The binary --------------------------------------------------------------------------
if [[ ! -x $bin ]]; then
    echo "error: resizer binary not found or not executable: $bin" >&2
    echo "       build it with 'cargo build -p resizer', or point RESIZER_BIN at one" >&2
    exit 1
fi

rm -rf "$report_root"
mkdir -p "$report_root"

# --- 3. The service, in a throwaway data directory ------------------------------------------
work=$(mktemp -d)
server_pid=
st_pid=
cleanup() {
    local rc=$?
    if [[ -n $st_pid ]]; then
        kill "$st_pid" 2>/dev/null || true
        wait "$st_pid" 2>/dev/null || true
    fi
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        # Graceful shutdown first; a stuck server is killed after 10 s.
        for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    [[ -f $work/server.log ]] && cp "$work/server.log" "$report_root/server.log"
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$bin" dev --data-dir "$work/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --set limits.rate_per_sec=100000 --set limits.burst=100000 \
    --set api.admin_wrong_tokens_per_minute=1000000 >"$work/server.log" 2>&1 &
# (Schemathesis sends wrong tokens on purpose; throttled, every later call would be a 429 and the
# admin API's logic would go untested. tests/operators.rs checks the throttle itself.)
server_pid=$!

dev_json=$work/data/dev.json
for _ in $(seq 200); do
    [[ -s $dev_json ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "error: resizer dev exited before it was listening; its output:" >&2
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [[ ! -s $dev_json ]]; then
    echo "error: resizer dev wrote no $dev_json within 20 s; its output:" >&2
    cat "$work/server.log" >&2
    exit 1
fi
# dev.json may be in the middle of being written: read it until it parses.
fields=
for _ in $(seq 50); do
    if fields=$("$venv/bin/python" -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d["api_url"].rstrip("/")); print(d["admin_url"].rstrip("/")); print(d["admin_token"]); print(d["demo_api_key"])
' "$dev_json" 2>/dev/null); then
        break
    fi
    sleep 0.1
done
if [[ -z $fields ]]; then
    echo "error: $dev_json is not the JSON expected (api_url, admin_url, admin_token, demo_api_key):" >&2
    cat "$dev_json" >&2
    exit 1
fi
{ read -r api_url; read -r admin_url; read -r admin_token; read -r demo_api_key; } <<<"$fields"
echo "resizer dev: public $api_url, admin $admin_url (pid $server_pid)"

# --- 4. Schemathesis against each API -------------------------------------------------------
# Known identifiers, so that the admin operations on /v1/tenants/{tenant} and /v1/keys/{key}
# reach their handlers' logic in about half the cases instead of answering 404 to random names.
# (Only the admin document has these parameters. The admin run goes second since it may suspend
# the demo tenant or revoke its key.) An explicit config file also keeps a stray
# schemathesis.toml in the tree from changing the run. No cache: a run does not replay the
# failures of earlier ones (and writes no .schemathesis/ into the tree).
config=$work/schemathesis.toml
cat >"$config" <<TOML
[cache]
enabled = false

[dictionaries.tenants]
values = ["demo", "1"]

[dictionaries.keys]
values = ["${demo_api_key:4:12}"]

[parameters]
"path.tenant" = { dictionary = "tenants", probability = 0.5 }
"path.key" = { dictionary = "keys", probability = 0.5 }
TOML

# No 5xx, and every response is one the document allows: its status, content type, headers, body.
checks=${SCHEMATHESIS_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance}
run_schemathesis() { # NAME BASE_URL TOKEN
    local name=$1 url=$2 token=$3
    echo
    echo "=== schemathesis $SCHEMATHESIS_VERSION: $name API ($url/openapi.json) ==="
    # Run from the temp dir, with Hypothesis' storage there too, so that nothing is written into
    # the work tree; --generation-database none: no run depends on examples saved by an earlier one.
    # In the background with `wait`, so that a signal to this script ends it at once (the trap
    # then stops schemathesis and the server) instead of after the run. One worker: with two
    # threads, Python 3.11.7 (this machine's) sometimes fails inside Hypothesis with
    # "SystemError: AST constructor recursion depth mismatch" (the AST constructor's depth
    # counter is shared by threads), a runtime error that is no finding about our APIs.
    (cd "$work" && HYPOTHESIS_STORAGE_DIRECTORY="$work/hypothesis" exec "$st" --no-color --config-file "$config" run "$url/openapi.json" \
        --header "Authorization: Bearer $token" \
        --checks "$checks" \
        --max-examples "$examples" \
        --seed "$seed" \
        --generation-database none \
        --workers 1 \
        --request-timeout 10 \
        --wait-for-schema 10 \
        --continue-on-failure \
        --output-sanitize false \
        --report junit,ndjson \
        --report-dir "$report_root/$name") &
    st_pid=$!
    local rc=0
    wait "$st_pid" || rc=$?
    st_pid=
    return "$rc"
}

failed=()
start=$SECONDS
run_schemathesis public "$api_url" "$demo_api_key" || failed+=(public)
run_schemathesis admin "$admin_url" "$admin_token" || failed+=(admin)
echo
echo "schemathesis: $((SECONDS - start)) s; reports in $report_root/{public,admin}/, server log in $report_root/server.log"
if ((${#failed[@]})); then
    echo "schemathesis: FAILED, with findings against: ${failed[*]} (see above and the reports)" >&2
    exit 1
fi
echo "schemathesis: both APIs conform to their OpenAPI documents"
