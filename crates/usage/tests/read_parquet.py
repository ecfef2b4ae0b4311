#!/usr/bin/env python3
"""Checks that a standard reader (pyarrow) opens the usage archive and sees the documented schema.

Usage: read_parquet.py DIR

Opens every *.parquet file under DIR (an archive root: tenant=<id>/date=<YYYY-MM-DD>/...), prints
its schema and row count, and checks the column names and types against the table in
crates/usage/src/archive/format.rs, the codecs (ZSTD on request_id and params in a batch's file, on
every column in a compacted one), that no column is nullable, and that the `tenant`
column and the file's date agree with its path. Exits 1 on any mismatch, 2 when DIR has no files.
"""

import pathlib
import re
import sys

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

UTF8, U64, U32 = pa.string(), pa.uint64(), pa.uint32()
EXPECTED = [
    ("request_id", UTF8),
    ("tenant", U64),
    ("key_id", UTF8),
    ("time_ms", pa.timestamp("ms", tz="UTC")),
    ("node", UTF8),
    ("worker", UTF8),
    ("status", pa.uint16()),
    ("error", UTF8),
    ("params", UTF8),
    ("input_format", UTF8),
    ("input_bytes", U64),
    ("input_width", U32),
    ("input_height", U32),
    ("output_format", UTF8),
    ("output_bytes", U64),
    ("output_width", U32),
    ("output_height", U32),
    ("queue_wait_us", U64),
    ("wall_us", U64),
    ("cpu_us", U64),
    ("source_bytes", U64),
    ("source", UTF8),
    ("frames", U32),
    ("batch_id", UTF8),
    ("batch_seq", U32),
]
PATH = re.compile(r"tenant=(\d+)/date=(\d{4}-\d{2}-\d{2})/(batch-[A-Za-z0-9_-]+|compact-[0-9a-f]+)\.parquet$")


def check(path: pathlib.Path, root: pathlib.Path) -> list[str]:
    problems = []
    rel = path.relative_to(root).as_posix()
    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    print(f"== {rel}: {pf.metadata.num_rows} rows, {pf.metadata.num_row_groups} row group(s)")
    print(schema.to_string(show_schema_metadata=False))
    got = [(f.name, f.type) for f in schema]
    if got != EXPECTED:
        for i, (want, have) in enumerate(zip(EXPECTED, got + [None] * len(EXPECTED))):
            if want != have:
                problems.append(f"column {i}: expected {want[0]}: {want[1]}, found {have}")
        if len(got) > len(EXPECTED):
            problems.append(f"extra columns: {got[len(EXPECTED):]}")
    problems += [f"column {f.name} is nullable" for f in schema if f.nullable]
    compacted = pathlib.PurePath(rel).name.startswith("compact-")
    for rg in range(pf.metadata.num_row_groups):
        for c in range(pf.metadata.num_columns):
            codec = pf.metadata.row_group(rg).column(c).compression
            name = schema.field(c).name
            want = "ZSTD" if compacted or name in ("request_id", "params") else "UNCOMPRESSED"
            if codec != want:
                problems.append(f"row group {rg} column {name}: compression {codec}, expected {want}")
    m = PATH.search(rel)
    if not m:
        problems.append("path is not tenant=<id>/date=<YYYY-MM-DD>/(batch-<id>|compact-<hash>).parquet")
    elif not problems:
        table = pf.read()
        tenants = set(table.column("tenant").to_pylist())
        dates = {t.strftime("%Y-%m-%d") for t in table.column("time_ms").to_pylist()}
        if tenants - {int(m.group(1))}:
            problems.append(f"tenant column {sorted(tenants)} disagrees with the path")
        if dates - {m.group(2)}:
            problems.append(f"UTC dates {sorted(dates)} disagree with the path")
        if m.group(3).startswith("batch-") and set(table.column("batch_id").to_pylist()) - {m.group(3)[6:]}:
            problems.append("batch_id column disagrees with the file name")
    return [f"{rel}: {p}" for p in problems]


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = pathlib.Path(sys.argv[1])
    files = sorted(root.rglob("*.parquet"))
    if not files:
        print(f"no .parquet files under {root}", file=sys.stderr)
        return 2
    problems = [p for f in files for p in check(f, root)]
    total = None
    if not problems:
        # The whole archive as one dataset, the way an analyst reads it. `tenant` is both a file
        # column (uint64) and a hive key in the path: pyarrow's default hive discovery infers the
        # path key as int32 and refuses to merge, so the partitioning is given with its types.
        hive = ds.partitioning(pa.schema([("tenant", pa.uint64()), ("date", pa.string())]), flavor="hive")
        total = ds.dataset(root, format="parquet", partitioning=hive).to_table().num_rows
        rows_by_file = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        if total != rows_by_file:
            problems.append(f"dataset read {total} rows, the files hold {rows_by_file}")
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    print(f"{len(files)} files checked, {len(problems)} problems" + (f", {total} rows in all" if total is not None else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
