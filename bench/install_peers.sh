#!/usr/bin/env bash
# Install the libvips peers used by the benchmark scripts in bench/.
# Idempotent: re-running only installs what is missing.
#
#   - Debian's libvips 8.14 CLI (vipsthumbnail, vips)      apt: libvips-tools
#   - nasm (lets SIMD codecs in our own build use asm)       apt: nasm
#   - GNU time (/usr/bin/time -f %M for peak RSS)            apt: time
#   - libavif 0.11 CLI: avifenc (aom, rav1e, SVT-AV1) and     apt: libavif-bin
#     avifdec (dav1d), for avif_peers.py and imaging's avif_bench
#   - bench/.venv: pyvips + pyvips-binary (newest libvips wheel), numpy, pillow,
#     scikit-image (SSIM)
#   - bench/node_modules: sharp (npm, its own prebuilt libvips), pinned: SHARP_VERSION
#
# Usage: bash bench/install_peers.sh        (as root, or with the apt packages already present)
# Env:   PYTHON=python3.11 to choose the interpreter for the venv.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.venv"
PYTHON="${PYTHON:-python3}"

APT_PKGS=(libvips-tools nasm time libavif-bin)
PY_PKGS=(pyvips pyvips-binary numpy pillow scikit-image)

missing=()
for p in "${APT_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: missing Debian packages: ${missing[*]}" >&2
        echo "       run this script as root, or: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "== apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
else
    echo "== apt packages present: ${APT_PKGS[*]}"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "== creating venv $VENV (with $PYTHON)"
    "$PYTHON" -m venv "$VENV"
fi

# Only hit PyPI when something is missing (keeps re-runs offline-friendly and fast).
if ! "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md
for d in ("pyvips", "pyvips-binary", "numpy", "pillow", "scikit-image"):
    md.version(d)
import pyvips, numpy, PIL, skimage.metrics  # noqa: F401
PY
then
    echo "== pip install ${PY_PKGS[*]}"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q --upgrade "${PY_PKGS[@]}"
else
    echo "== venv packages present"
fi

# sharp from npm (Node >= 20.9; its platform package brings a prebuilt libvips).
SHARP_VERSION="${SHARP_VERSION:-0.35.5}"
if ! grep -q "\"version\": \"$SHARP_VERSION\"" "$BENCH_DIR/node_modules/sharp/package.json" 2>/dev/null; then
    command -v npm >/dev/null || { echo "error: npm not found: apt-get install -y npm (sharp comes from npm)" >&2; exit 1; }
    echo "== npm install sharp@$SHARP_VERSION"
    npm install --silent --no-audit --no-fund --no-save --prefix "$BENCH_DIR" "sharp@$SHARP_VERSION"
else
    echo "== sharp $SHARP_VERSION present"
fi

# .gitignore for the venv and run outputs (kept in sync if someone deleted it).
if [[ ! -f "$BENCH_DIR/.gitignore" ]]; then
    printf '.venv/\nresults/\n__pycache__/\nnode_modules/\n' > "$BENCH_DIR/.gitignore"
fi

echo "== versions"
vips --version
"$VENV/bin/python" - <<'PY'
import pyvips, numpy, PIL, skimage
print(f"pyvips {pyvips.__version__}  libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
      f"  (api mode: {pyvips.API_mode})")
print(f"numpy {numpy.__version__}  pillow {PIL.__version__}  scikit-image {skimage.__version__}")
PY
