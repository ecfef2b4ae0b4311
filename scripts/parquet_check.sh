#!/usr/bin/env bash
# The usage archive opens in a standard reader: writes a small archive with the real writer
# (a test of crates/usage), then reads every file with pyarrow from PyPI and checks the
# documented schema (crates/usage/tests/read_parquet.py). pyarrow lives in target/usage-venv.
set -euo pipefail
cd "$(dirname "$0")/.."

PYARROW_VERSION=26.0.1
venv=target/usage-venv
if ! "$venv/bin/python" -c "import pyarrow, sys; sys.exit(pyarrow.__version__ != '$PYARROW_VERSION')" 2>/dev/null; then
    python3 -m venv "$venv" || {
        echo "error: python3 -m venv failed; install python3-venv (apt-get install -y python3-venv)" >&2
        exit 1
    }
    "$venv/bin/pip" install --quiet "pyarrow==$PYARROW_VERSION"
fi

sample=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$sample" "$log"' EXIT
# `--workspace`, like the suite's own run, so cargo reuses the test binary it built there; `-p usage`
# alone unifies features differently and compiles and links the crate a second time.
if command -v cargo-nextest >/dev/null; then
    USAGE_ARCHIVE_SAMPLE_DIR=$sample cargo nextest run --workspace --locked --no-tests=fail \
        -E 'package(usage) & test(=archive::tests::sample_archive_for_external_readers)' >"$log" 2>&1 \
        || { cat "$log" >&2; exit 1; }
else
    USAGE_ARCHIVE_SAMPLE_DIR=$sample cargo test --quiet --locked --workspace --lib \
        -- --exact archive::tests::sample_archive_for_external_readers >/dev/null
fi
"$venv/bin/python" crates/usage/tests/read_parquet.py "$sample"
