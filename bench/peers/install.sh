#!/usr/bin/env bash
# Installs the HTTP peers that bench/peers.sh loads side by side with `resizer dev`. Idempotent:
# a re-run only installs what is missing. Nothing here is committed peer code: packages come from
# Debian, PyPI and npm by name, into a cache folder outside the repository.
#
#   thumbor (PyPI, pinned)   venv  $CACHE/thumbor
#   sharp (npm, pinned)      node_modules under $CACHE/sharp (bench/peers/sharp-server.js uses it)
#   nginx + image_filter     Debian: nginx, libnginx-mod-http-image-filter (run by peers.sh as our
#                            own process on a loopback port; the system service is not started)
#   chromium                 Debian: the headless screenshot of the HTML report
#
# Usage: bash bench/peers/install.sh    (as root for the Debian packages)
# Env:   RESIZER_BENCH_CACHE (default ~/.cache/resizer-bench), PYTHON (default python3).
set -euo pipefail

CACHE=${RESIZER_BENCH_CACHE:-$HOME/.cache/resizer-bench}
PYTHON=${PYTHON:-python3}
THUMBOR_VERSION=7.8.0
SHARP_VERSION=0.35.5
APT_PKGS=(nginx libnginx-mod-http-image-filter chromium)
mkdir -p "$CACHE"

missing=()
for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
        exit 1
    fi
    echo "== apt-get install ${missing[*]}" >&2
    # Debian's nginx package starts the system service (port 80) on install; forbid service starts
    # for the duration of the install: the benchmark runs nginx itself, on a free loopback port.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
    echo "== Debian packages present: ${APT_PKGS[*]}" >&2
fi

if ! "$CACHE/thumbor/bin/python" -c "import thumbor, sys; sys.exit(thumbor.__version__ != '$THUMBOR_VERSION')" 2>/dev/null; then
    echo "== thumbor $THUMBOR_VERSION into $CACHE/thumbor" >&2
    "$PYTHON" -m venv "$CACHE/thumbor"
    "$CACHE/thumbor/bin/pip" install -q --upgrade pip >&2
    "$CACHE/thumbor/bin/pip" install -q "thumbor==$THUMBOR_VERSION" >&2
else
    echo "== thumbor $THUMBOR_VERSION present" >&2
fi

if [[ $(node -p "try{require('$CACHE/sharp/node_modules/sharp/package.json').version}catch(e){''}" 2>/dev/null) != "$SHARP_VERSION" ]]; then
    command -v npm >/dev/null || { echo "error: node and npm are needed for the sharp server" >&2; exit 1; }
    echo "== sharp $SHARP_VERSION into $CACHE/sharp" >&2
    mkdir -p "$CACHE/sharp"
    (cd "$CACHE/sharp" && [[ -f package.json ]] || echo '{"private":true}' >"$CACHE/sharp/package.json")
    npm install --prefix "$CACHE/sharp" --no-audit --no-fund --silent "sharp@$SHARP_VERSION" >&2
else
    echo "== sharp $SHARP_VERSION present" >&2
fi
echo "peers installed under $CACHE" >&2
