#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). On a fresh Debian/Ubuntu machine with
# Rust it first installs what the suite needs from Debian's packages (as root; otherwise it says
# exactly what to install and stops).
set -euo pipefail
cd "$(dirname "$0")/.."
# A CI run builds once from a clean clone: incremental caches would only be written, never read.
[[ -z ${CI:-} ]] || export CARGO_INCREMENTAL=0

# Debian packages the suite needs: nasm builds libjpeg-turbo's SIMD kernels (without it the build
# still works, only slower); the lab cluster's tests (crates/lab) run nats-server (JetStream, 2.9 on
# Debian 12) and haproxy; Debian installs both into /usr/sbin, which is not on every user's PATH.
need_packages=()
command -v nasm >/dev/null || need_packages+=(nasm)
command -v cc >/dev/null || need_packages+=(build-essential)
command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]] || need_packages+=(nats-server)
command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need_packages+=(haproxy)
# PostgreSQL for the lab and the identity store's tests; Debian puts initdb in /usr/lib/postgresql/<v>/bin.
command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_packages+=(postgresql)
# The lab on its own network (`lab up --netns`, the network fault tests): namespaces and a bridge
# from iproute2, partitions, loss and the latency queue from iptables.
command -v ip >/dev/null || [[ -x /usr/sbin/ip ]] || need_packages+=(iproute2)
command -v iptables >/dev/null || [[ -x /usr/sbin/iptables ]] || need_packages+=(iptables)
# Headless Chromium loads the signed-URL example page (crates/resizer/tests/browser.rs).
[[ -x /usr/bin/chromium ]] || need_packages+=(chromium)
# WebDriver for the web console tests (crates/resizer/tests/console.rs).
[[ -x /usr/bin/chromedriver ]] || need_packages+=(chromium-driver)
# libheif decodes AVIF and HEIC input (opened at run time: without it they are answered 415), and
# its heif-convert is the reference the decoding tests compare with (crates/imaging/tests/heif.rs,
# crates/resizer/tests/heif.rs).
compgen -G '/usr/lib/*/libheif.so.1' >/dev/null || [[ -e /usr/lib/libheif.so.1 ]] || need_packages+=(libheif1)
command -v heif-convert >/dev/null || need_packages+=(libheif-examples)
# avifdec (libavif, with dav1d) decodes the AVIF our encoder writes, independently of it
# (crates/imaging/src/encode/avif.rs's tests, crates/resizer/tests/avif.rs).
command -v avifdec >/dev/null || need_packages+=(libavif-bin)
# Debian's Pillow (/usr/bin/python3's, not a venv's) reads animated GIF and WebP independently of
# the gif crate and our libwebp: the reference the animation tests check frames, delays and loop
# counts against (crates/imaging/tests/animation.rs).
/usr/bin/python3 -c 'import PIL.WebPImagePlugin' 2>/dev/null || need_packages+=(python3-pil)
# npm fetches axe-core, the console test's accessibility check (below).
command -v npm >/dev/null || need_packages+=(npm)
# promtool (Debian's prometheus package) checks the alert rules, their tests and the dashboard's
# queries (scripts/check_prometheus.sh).
command -v promtool >/dev/null || need_packages+=(prometheus)
if ((${#need_packages[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        echo "installing: ${need_packages[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_packages[@]}" >/dev/null \
            || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_packages[@]}" >/dev/null; }
    else
        echo "error: the test suite needs these Debian packages: ${need_packages[*]}" >&2
        echo "       run: sudo apt-get install -y ${need_packages[*]}" >&2
        exit 1
    fi
fi

# moto's S3 server (PyPI) is the S3-compatible endpoint of the usage archive's S3 test
# (crates/resizer/tests/s3.rs); it lives in a venv under target/ (gitignored).
MOTO_VERSION=5.1.22
if ! target/s3-venv/bin/python -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    python3 -m venv target/s3-venv || {
        echo "error: python3 -m venv failed; install python3-venv (apt-get install -y python3-venv)" >&2
        exit 1
    }
    target/s3-venv/bin/pip install --quiet "moto[server]==$MOTO_VERSION"
fi

# axe-core (npm) is the accessibility check the console test runs in Chromium
# (crates/resizer/tests/console.rs); it lives under target/ (gitignored), pinned.
AXE_VERSION=4.11.0
if ! grep -q "\"version\": \"$AXE_VERSION\"" target/axe/node_modules/axe-core/package.json 2>/dev/null; then
    npm install --silent --no-audit --no-fund --prefix target/axe "axe-core@$AXE_VERSION"
fi

# libaom 3.14, for the AVIF tests of libaom's still-image tuning (`tune=iq`, 3.13+), which Debian
# 12's libaom 3.6 predates: Debian sid's build (it needs glibc >= 2.34 only), pinned by checksum,
# unpacked under target/ (gitignored) and loaded by those tests through RESIZER_LIBAOM; nothing is
# installed. When sid moves on and the file leaves its pool, pin the next one here.
LIBAOM_DEB=libaom3_3.14.1-1_amd64.deb
LIBAOM_SHA256=8f932e686c8a0e3e09ef211b924bac0a43d3d6fd774e0dfbeba9c301aa129fca
if [[ $(dpkg --print-architecture 2>/dev/null) == amd64 && ! -e target/libaom/libaom.so.3 ]]; then
    mkdir -p target/libaom
    if ! python3 -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=120).read())' \
        "http://deb.debian.org/debian/pool/main/a/aom/$LIBAOM_DEB" "target/libaom/$LIBAOM_DEB"; then
        echo "error: could not fetch $LIBAOM_DEB from deb.debian.org (pinned in scripts/test.sh)" >&2
        exit 1
    fi
    echo "$LIBAOM_SHA256  target/libaom/$LIBAOM_DEB" | sha256sum --check --quiet
    dpkg-deb -x "target/libaom/$LIBAOM_DEB" target/libaom/deb
    cp target/libaom/deb/usr/lib/x86_64-linux-gnu/libaom.so.3.* target/libaom/libaom.so.3
    rm -rf target/libaom/deb "target/libaom/$LIBAOM_DEB"
fi

# The house's two structural rules: no file import circle inside a crate, and ARCHITECTURE.md's
# code map naming every top-level module of every crate.
python3 scripts/check_house.py
# The Prometheus rules, their unit tests, the example config and the Grafana dashboard's queries.
scripts/check_prometheus.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if command -v cargo-nextest >/dev/null; then
    cargo nextest run --workspace --locked --no-fail-fast
    # The AVIF encoder's tests again on libaom 3.14 (above), tuned for images.
    # --workspace and a filter rather than -p imaging: the same features, so nothing is rebuilt.
    [[ ! -e target/libaom/libaom.so.3 ]] || RESIZER_LIBAOM="$PWD/target/libaom/libaom.so.3" \
        cargo nextest run --workspace --locked -E 'package(imaging) & kind(lib) & test(avif)'
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
    [[ ! -e target/libaom/libaom.so.3 ]] || RESIZER_LIBAOM="$PWD/target/libaom/libaom.so.3" cargo test --workspace --locked --lib avif
fi
# The HTTP contract: schemathesis against both /openapi.json documents of a real `resizer dev`,
# the binary the integration tests ran (`cargo build -p resizer` would resolve other features and
# build the workspace again).
RESIZER_BIN="${CARGO_TARGET_DIR:-target}/debug/resizer" scripts/schemathesis.sh
# The usage archive's Parquet files, read by pyarrow.
scripts/parquet_check.sh
