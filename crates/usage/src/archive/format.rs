//! The archive's file format: the schema and the Parquet encoding and decoding of rows. It must
//! not touch the store (callers fetch and put the bytes) and runs only on the blocking pool (it is
//! CPU work).
//!
//! # Schema
//!
//! One row per record, sorted by (`time_ms`, `request_id`) within a file; no column is nullable.
//! Compression ZSTD (level 3): in a batch's files on `request_id` and `params` only, in compacted
//! files on every column (see `Compress`); dictionary encoding on (tenant, key, node and format
//! repeat) except for `request_id`; min/max statistics on `time_ms` only (per column chunk).
//!
//! | column          | Parquet / Arrow type                  | meaning                                              |
//! |-----------------|---------------------------------------|------------------------------------------------------|
//! | `request_id`    | BYTE_ARRAY UTF8 / Utf8                | the request id (`X-Request-Id`), the audit join key  |
//! | `tenant`        | INT64 UINT_64 / UInt64                | tenant id (also in the path; globbing readers need it) |
//! | `key_id`        | BYTE_ARRAY UTF8 / Utf8                | the API key's public id                              |
//! | `time_ms`       | INT64 TIMESTAMP(MILLIS, UTC) / Timestamp(Millisecond, "UTC") | when the answer was decided |
//! | `node`          | BYTE_ARRAY UTF8 / Utf8                | the api node that answered                           |
//! | `worker`        | BYTE_ARRAY UTF8 / Utf8                | the worker that converted, empty if none ran         |
//! | `status`        | INT32 UINT_16 / UInt16                | HTTP status of the answer                            |
//! | `error`         | BYTE_ARRAY UTF8 / Utf8                | problem type's last part, empty on success           |
//! | `params`        | BYTE_ARRAY UTF8 / Utf8                | the query string as sent                             |
//! | `input_format`  | BYTE_ARRAY UTF8 / Utf8                | `jpeg`, `png`, `webp`, `gif`; empty if never probed  |
//! | `input_bytes`   | INT64 UINT_64 / UInt64                | request body size                                    |
//! | `input_width`   | INT32 UINT_32 / UInt32                | input width in pixels                                |
//! | `input_height`  | INT32 UINT_32 / UInt32                | input height in pixels                               |
//! | `output_format` | BYTE_ARRAY UTF8 / Utf8                | output format, empty if none                         |
//! | `output_bytes`  | INT64 UINT_64 / UInt64                | response body size                                   |
//! | `output_width`  | INT32 UINT_32 / UInt32                | output width in pixels                               |
//! | `output_height` | INT32 UINT_32 / UInt32                | output height in pixels                              |
//! | `queue_wait_us` | INT64 UINT_64 / UInt64                | time queued before a worker took the job, µs         |
//! | `wall_us`       | INT64 UINT_64 / UInt64                | wall time of the request, µs                         |
//! | `cpu_us`        | INT64 UINT_64 / UInt64                | CPU time of the conversion, µs                       |
//! | `source_bytes`  | INT64 UINT_64 / UInt64                | source bytes transferred from the tenant's origin (signed GET); 0 for POST, cache hits, revalidations, 304s |
//! | `source`        | BYTE_ARRAY UTF8 / Utf8                | a signed GET's source: `hit`, `revalidated`, `fetched`; empty for POST or when none was read |
//! | `frames`        | INT32 UINT_32 / UInt32                | frames converted (an animation's pixels are billed per frame); 0 = a still or nothing converted |
//! | `batch_id`      | BYTE_ARRAY UTF8 / Utf8                | the spool batch that delivered the record (not a `UsageRecord` field) |
//! | `batch_seq`     | INT32 UINT_32 / UInt32                | the record's rank among that batch's records with the same `time_ms` and `request_id`, 0 for most (not a `UsageRecord` field) |
//!
//! Files written before `source_bytes` and `source` lack those two columns and read with 0 and
//! empty; files written before `frames` lack it and read as 0 (a still); files written before
//! `batch_seq` lack it and read as rank 0.
//!
//! `crates/usage/tests/read_parquet.py` checks these names and types with pyarrow.

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_array::{UInt16Array, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::rows::{Row, RowRef};
use super::ArchiveError;
use crate::record::UsageRecord;

const ZSTD_LEVEL: i32 = 3;

fn schema() -> SchemaRef {
    let utf8 = |name| Field::new(name, DataType::Utf8, false);
    let u64 = |name| Field::new(name, DataType::UInt64, false);
    let u32 = |name| Field::new(name, DataType::UInt32, false);
    Arc::new(Schema::new(vec![
        utf8("request_id"),
        u64("tenant"),
        utf8("key_id"),
        Field::new("time_ms", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        utf8("node"),
        utf8("worker"),
        Field::new("status", DataType::UInt16, false),
        utf8("error"),
        utf8("params"),
        utf8("input_format"),
        u64("input_bytes"),
        u32("input_width"),
        u32("input_height"),
        utf8("output_format"),
        u64("output_bytes"),
        u32("output_width"),
        u32("output_height"),
        u64("queue_wait_us"),
        u64("wall_us"),
        u64("cpu_us"),
        u64("source_bytes"),
        utf8("source"),
        u32("frames"),
        utf8("batch_id"),
        u32("batch_seq"),
    ]))
}

/// Which columns a file compresses with zstd. Each compressed column costs a zstd context per file,
/// 30–70 µs on this VM (zstd runs `cpuid` for each, a trap to the hypervisor): a batch with 100
/// tenants makes 100 small files, and compressing all 21 columns of each took 4.8 µs per record
/// against 2.2 µs for the two text columns alone (`TENANTS=100 cargo run --release -p usage
/// --example record_cost`). So a batch's files compress only the columns that are neither
/// dictionary- nor run-length-friendly; compaction, rare, rewrites them with every column
/// compressed.
#[derive(Clone, Copy)]
pub(super) enum Compress {
    Text,
    All,
}

/// Encodes rows (already in file order) as one Parquet file. Deterministic: same rows, same bytes.
pub(super) fn encode(rows: &[RowRef<'_>], compress: Compress) -> Result<Bytes, ArchiveError> {
    // One pass over the rows fills every column: a batch's records are cold by now (written a
    // second ago on other threads), and a pass per column would stream them from memory 25 times.
    let n = rows.len();
    let text = || StringBuilder::with_capacity(n, n * 8);
    let (mut request_id, mut key_id, mut node, mut worker) = (text(), text(), text(), text());
    let (mut error, mut params, mut input_format, mut output_format, mut source, mut batch_id) =
        (text(), text(), text(), text(), text(), text());
    let mut tenant = UInt64Builder::with_capacity(n);
    let mut time_ms = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut status = UInt16Builder::with_capacity(n);
    let (mut input_bytes, mut output_bytes) = (UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n));
    let (mut input_width, mut input_height) = (UInt32Builder::with_capacity(n), UInt32Builder::with_capacity(n));
    let (mut output_width, mut output_height) = (UInt32Builder::with_capacity(n), UInt32Builder::with_capacity(n));
    let (mut queue_wait_us, mut wall_us, mut cpu_us) =
        (UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n));
    let mut source_bytes = UInt64Builder::with_capacity(n);
    let mut batch_seq = UInt32Builder::with_capacity(n);
    let mut frames = UInt32Builder::with_capacity(n);
    for row in rows {
        let r = row.record;
        request_id.append_value(&r.request_id);
        tenant.append_value(r.tenant);
        key_id.append_value(&r.key_id);
        time_ms.append_value(r.time_ms);
        node.append_value(&r.node);
        worker.append_value(&r.worker);
        status.append_value(r.status);
        error.append_value(&r.error);
        params.append_value(&r.params);
        input_format.append_value(&r.input_format);
        input_bytes.append_value(r.input_bytes);
        input_width.append_value(r.input_width);
        input_height.append_value(r.input_height);
        output_format.append_value(&r.output_format);
        output_bytes.append_value(r.output_bytes);
        output_width.append_value(r.output_width);
        output_height.append_value(r.output_height);
        queue_wait_us.append_value(r.queue_wait_us);
        wall_us.append_value(r.wall_us);
        cpu_us.append_value(r.cpu_us);
        source_bytes.append_value(r.source_bytes);
        source.append_value(&r.source);
        frames.append_value(r.frames);
        batch_id.append_value(row.batch_id);
        batch_seq.append_value(row.batch_seq);
    }
    // In schema order.
    let columns: Vec<ArrayRef> = vec![
        Arc::new(request_id.finish()),
        Arc::new(tenant.finish()),
        Arc::new(key_id.finish()),
        Arc::new(time_ms.finish()),
        Arc::new(node.finish()),
        Arc::new(worker.finish()),
        Arc::new(status.finish()),
        Arc::new(error.finish()),
        Arc::new(params.finish()),
        Arc::new(input_format.finish()),
        Arc::new(input_bytes.finish()),
        Arc::new(input_width.finish()),
        Arc::new(input_height.finish()),
        Arc::new(output_format.finish()),
        Arc::new(output_bytes.finish()),
        Arc::new(output_width.finish()),
        Arc::new(output_height.finish()),
        Arc::new(queue_wait_us.finish()),
        Arc::new(wall_us.finish()),
        Arc::new(cpu_us.finish()),
        Arc::new(source_bytes.finish()),
        Arc::new(source.finish()),
        Arc::new(frames.finish()),
        Arc::new(batch_id.finish()),
        Arc::new(batch_seq.finish()),
    ];
    let schema = schema();
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| ArchiveError::Encode(e.into()))?;
    let level = ZstdLevel::try_new(ZSTD_LEVEL).map_err(ArchiveError::Encode)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        // Min/max statistics cost string comparisons on every value; readers prune by time (and
        // the path already says tenant and date), so only `time_ms` keeps them.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled("time_ms".into(), EnabledStatistics::Chunk)
        // Request ids never repeat: a dictionary would only be built to be thrown away.
        .set_column_dictionary_enabled("request_id".into(), false);
    let props = match compress {
        Compress::All => props,
        Compress::Text => props
            .set_compression(Compression::UNCOMPRESSED)
            .set_column_compression("request_id".into(), Compression::ZSTD(level))
            .set_column_compression("params".into(), Compression::ZSTD(level)),
    };
    let props = props.build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(ArchiveError::Encode)?;
    writer.write(&batch).map_err(ArchiveError::Encode)?;
    Ok(Bytes::from(writer.into_inner().map_err(ArchiveError::Encode)?))
}

/// Decodes one archive file. Everything in it is untrusted input: a missing column, a wrong type
/// or a null is a `Corrupt` error naming the file, never a panic.
pub(super) fn decode(path: &Path, bytes: Bytes) -> Result<Vec<Row>, ArchiveError> {
    let corrupt = |reason: String| ArchiveError::Corrupt { path: path.to_string(), reason };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|builder| builder.build())
        .map_err(|e| corrupt(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(e.to_string()))?;
        let c = Columns { batch: &batch, path };
        let (request_id, key_id, node, worker, error, params, input_format, output_format, batch_id) = (
            c.get::<StringArray>("request_id")?,
            c.get::<StringArray>("key_id")?,
            c.get::<StringArray>("node")?,
            c.get::<StringArray>("worker")?,
            c.get::<StringArray>("error")?,
            c.get::<StringArray>("params")?,
            c.get::<StringArray>("input_format")?,
            c.get::<StringArray>("output_format")?,
            c.get::<StringArray>("batch_id")?,
        );
        let (tenant, input_bytes, output_bytes, queue_wait_us, wall_us, cpu_us) = (
            c.get::<UInt64Array>("tenant")?,
            c.get::<UInt64Array>("input_bytes")?,
            c.get::<UInt64Array>("output_bytes")?,
            c.get::<UInt64Array>("queue_wait_us")?,
            c.get::<UInt64Array>("wall_us")?,
            c.get::<UInt64Array>("cpu_us")?,
        );
        let (input_width, input_height, output_width, output_height) = (
            c.get::<UInt32Array>("input_width")?,
            c.get::<UInt32Array>("input_height")?,
            c.get::<UInt32Array>("output_width")?,
            c.get::<UInt32Array>("output_height")?,
        );
        let time_ms = c.get::<TimestampMillisecondArray>("time_ms")?;
        let status = c.get::<UInt16Array>("status")?;
        // Columns that older files do not have.
        let batch_seq = c.get_optional::<UInt32Array>("batch_seq")?;
        let source_bytes = c.get_optional::<UInt64Array>("source_bytes")?;
        let source = c.get_optional::<StringArray>("source")?;
        let frames = c.get_optional::<UInt32Array>("frames")?;
        // Every column of a RecordBatch has the batch's length, so indexes below are in bounds.
        for i in 0..batch.num_rows() {
            let record = UsageRecord {
                request_id: request_id.value(i).into(),
                tenant: tenant.value(i),
                key_id: key_id.value(i).into(),
                time_ms: time_ms.value(i),
                node: node.value(i).into(),
                worker: worker.value(i).into(),
                status: status.value(i),
                error: error.value(i).into(),
                params: params.value(i).into(),
                input_format: input_format.value(i).into(),
                input_bytes: input_bytes.value(i),
                input_width: input_width.value(i),
                input_height: input_height.value(i),
                output_format: output_format.value(i).into(),
                output_bytes: output_bytes.value(i),
                output_width: output_width.value(i),
                output_height: output_height.value(i),
                queue_wait_us: queue_wait_us.value(i),
                wall_us: wall_us.value(i),
                cpu_us: cpu_us.value(i),
                source_bytes: source_bytes.map_or(0, |c| c.value(i)),
                source: source.map_or("", |c| c.value(i)).into(),
                frames: frames.map_or(0, |c| c.value(i)),
            };
            let batch_seq = batch_seq.map_or(0, |seq| seq.value(i));
            rows.push(Row { batch_id: batch_id.value(i).into(), batch_seq, record });
        }
    }
    Ok(rows)
}

struct Columns<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
}

impl<'a> Columns<'a> {
    /// The named column as the expected array type (a Timestamp of another time zone still
    /// holds epoch milliseconds, so it is accepted), with no nulls.
    fn get<T: Array + 'static>(&self, name: &str) -> Result<&'a T, ArchiveError> {
        self.get_optional(name)?
            .ok_or_else(|| ArchiveError::Corrupt { path: self.path.to_string(), reason: format!("no column `{name}`") })
    }

    /// As [`Columns::get`], for a column that older files do not have.
    fn get_optional<T: Array + 'static>(&self, name: &str) -> Result<Option<&'a T>, ArchiveError> {
        let corrupt = |reason: String| ArchiveError::Corrupt { path: self.path.to_string(), reason };
        let Some(column) = self.batch.column_by_name(name) else { return Ok(None) };
        if column.null_count() > 0 {
            return Err(corrupt(format!("column `{name}` has nulls")));
        }
        column
            .as_any()
            .downcast_ref::<T>()
            .map(Some)
            .ok_or_else(|| corrupt(format!("column `{name}` has type {}", column.data_type())))
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::RecordBatch;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;

    use crate::archive::tests::{record, temp_archive, EVENING};
    use crate::record::UsageRecord;

    /// Rewrites an archive file as older versions wrote it: the same rows without `columns`.
    fn drop_columns(path: &std::path::Path, columns: &[&str]) {
        let bytes = Bytes::from(std::fs::read(path).expect("file"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).expect("reader");
        let batches: Vec<RecordBatch> = reader
            .map(|batch| {
                let mut batch = batch.expect("batch");
                for column in columns {
                    let index = batch.schema().index_of(column).expect("the column");
                    batch.remove_column(index);
                }
                batch
            })
            .collect();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, batches[0].schema(), None).expect("writer");
        batches.iter().for_each(|batch| writer.write(batch).expect("write"));
        writer.close().expect("close");
        std::fs::write(path, out).expect("rewrite");
    }

    #[tokio::test]
    async fn files_written_before_batch_seq_read_as_rank_0_and_compact_with_newer_ones() {
        let (tmp, archive) = temp_archive("old-files");
        let dup = record("dup", 6, EVENING);
        archive.write_batch("old", vec![dup.clone(), dup.clone(), record("a", 6, EVENING - 1)]).await.expect("write");
        drop_columns(&tmp.0.join("tenant=6/date=2024-03-09/batch-old.parquet"), &["batch_seq"]);
        archive.write_batch("new", vec![dup.clone(), dup.clone()]).await.expect("write");
        let dups = |records: Vec<UsageRecord>| records.iter().filter(|r| r.request_id == "dup").count();
        // The old file's two identical rows are one, as the old versions read them; the new
        // file's are two.
        assert_eq!(dups(archive.read(6, 0, i64::MAX).await.expect("read")), 3);
        assert_eq!(archive.compact_day(6, "2024-03-09", &|_: &str| true).await.expect("compact"), 2);
        let read = archive.read(6, 0, i64::MAX).await.expect("read");
        assert_eq!((dups(read.clone()), read.len()), (3, 4));
    }

    #[tokio::test]
    async fn files_written_before_the_source_columns_read_as_no_source_and_compact_with_newer_ones() {
        let (tmp, archive) = temp_archive("no-source");
        let old = [record("a", 6, EVENING - 2), record("b", 6, EVENING - 1)];
        assert!(old.iter().all(|r| r.source_bytes > 0), "the fixture has source bytes to lose");
        archive.write_batch("old", old.to_vec()).await.expect("write");
        drop_columns(&tmp.0.join("tenant=6/date=2024-03-09/batch-old.parquet"), &["source_bytes", "source"]);
        let new = record("c", 6, EVENING);
        archive.write_batch("new", vec![new.clone()]).await.expect("write");
        let as_old = |r: &UsageRecord| UsageRecord { source_bytes: 0, source: "".into(), ..r.clone() };
        let expected = vec![as_old(&old[0]), as_old(&old[1]), new];
        assert_eq!(archive.read(6, 0, i64::MAX).await.expect("read"), expected);
        // Compaction writes them all with the columns, the old rows with 0 and empty.
        assert_eq!(archive.compact_day(6, "2024-03-09", &|_: &str| true).await.expect("compact"), 2);
        assert_eq!(archive.read(6, 0, i64::MAX).await.expect("read"), expected);
    }

    #[tokio::test]
    async fn files_written_before_the_frames_column_read_as_stills() {
        let (tmp, archive) = temp_archive("no-frames");
        let old = [record("a", 6, EVENING - 2), record("b", 6, EVENING - 1)];
        assert!(old.iter().all(|r| r.frames > 0), "the fixture has frames to lose");
        archive.write_batch("old", old.to_vec()).await.expect("write");
        drop_columns(&tmp.0.join("tenant=6/date=2024-03-09/batch-old.parquet"), &["frames"]);
        let new = record("c", 6, EVENING);
        archive.write_batch("new", vec![new.clone()]).await.expect("write");
        let as_old = |r: &UsageRecord| UsageRecord { frames: 0, ..r.clone() };
        let expected = vec![as_old(&old[0]), as_old(&old[1]), new];
        assert_eq!(archive.read(6, 0, i64::MAX).await.expect("read"), expected);
    }
}
