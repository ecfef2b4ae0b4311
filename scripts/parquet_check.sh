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
trap 'rm -rf "$sample"' EXIT
USAGE_ARCHIVE_SAMPLE_DIR=$sample cargo test --quiet --locked -p usage --lib archive::tests::sample_archive_for_external_readers >/dev/null
"$venv/bin/python" crates/usage/tests/read_parquet.py "$sample"
