//! The raw-record archive: every [`UsageRecord`] as Parquet in an object store (a local
//! directory, or S3-compatible storage with the `s3` feature), partitioned the Hive way so that
//! DuckDB, pyarrow or Spark read it with a glob:
//!
//! ```text
//! tenant=<id>/date=<YYYY-MM-DD>/batch-<batch id>.parquet     one per batch that had records there
//! tenant=<id>/date=<YYYY-MM-DD>/compact-<hash>.parquet       merged committed batches (compaction)
//! ```
//!
//! It owns the file layout, the schema, writing a batch, reading a tenant's range and merging
//! small files. It must not decide which batches are committed (the aggregator says so through the
//! `is_applied` predicate of [`Archive::compact_day`]), must not count or price anything, and never
//! encodes or decodes Parquet on the async runtime (that is CPU work: it runs on the blocking pool).
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
//! | `batch_id`      | BYTE_ARRAY UTF8 / Utf8                | the spool batch that delivered the record (not a `UsageRecord` field) |
//! | `batch_seq`     | INT32 UINT_32 / UInt32                | the record's rank among that batch's records with the same `time_ms` and `request_id`, 0 for most (not a `UsageRecord` field) |
//!
//! `crates/usage/tests/read_parquet.py` checks these names and types with pyarrow.
//!
//! # Idempotence and crashes
//!
//! A batch's files are named by its id and their content depends only on its records, so a
//! replay overwrites them with the same bytes (each put is atomic per object). Compaction writes
//! the merged file first and deletes the small ones after; a crash in between leaves records in
//! two files. Reads (and the next compaction) drop such copies: a copy is a row with the same
//! (`batch_id`, `batch_seq`), which is what a leftover file holds. Two records with the same
//! request id (a client chooses its `X-Request-Id`) are two rows, in one batch or in two: that is
//! not a crash artefact but something the client did, and the audit trail must show it rather
//! than hide it. Files written before `batch_seq` existed read as position 0 throughout. The compact
//! file's name is a hash of the batch ids it holds (read from its `batch_id` column), so rerunning
//! an interrupted compaction produces the same name and content.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMillisecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow_array::{UInt16Array, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sha2::{Digest, Sha256};

use crate::record::UsageRecord;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive url `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Names the key only: values may be secrets.
    #[error("archive option `{key}`: {reason}")]
    InvalidOption { key: String, reason: String },
    #[error("s3:// archives need the `s3` feature (this build was made without it: local directories only)")]
    S3NotEnabled,
    #[error("creating the archive directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("batch id `{0}` is not 1 to 128 characters of A-Z a-z 0-9 - _")]
    InvalidBatchId(String),
    #[error("date `{0}` is not a YYYY-MM-DD calendar date")]
    InvalidDate(String),
    #[error("record `{request_id}`: time_ms {time_ms} is outside the years 0000 to 9999")]
    TimeOutOfRange { request_id: String, time_ms: i64 },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("encoding parquet: {0}")]
    Encode(#[source] ParquetError),
    #[error("archive file {path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("archive task failed: {0}")]
    Task(String),
}

/// A handle on the archive; cheap to clone (the store is shared).
#[derive(Clone, Debug)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
}

/// One archived row: the record and the batch that delivered it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    batch_id: String,
    batch_seq: u32,
    record: UsageRecord,
}

/// A row to encode, borrowed: a batch's records are encoded without being copied.
#[derive(Clone, Copy)]
struct RowRef<'a> {
    batch_id: &'a str,
    batch_seq: u32,
    record: &'a UsageRecord,
}

impl Row {
    fn as_ref(&self) -> RowRef<'_> {
        RowRef { batch_id: &self.batch_id, batch_seq: self.batch_seq, record: &self.record }
    }
}

/// One page of an audit read.
#[derive(Debug)]
pub struct AuditPage {
    pub records: Vec<UsageRecord>,
    /// Where the next page starts, when there are more records in the range.
    pub next: Option<AuditCursor>,
}

/// The position of a row in the archive's order, (time, request id, batch id, rank in the
/// batch): a later page starts after it. Exchanged as an opaque string ([`AuditCursor::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCursor {
    time_ms: i64,
    request_id: String,
    batch_id: String,
    batch_seq: u32,
}

impl AuditCursor {
    fn of(row: &Row) -> AuditCursor {
        AuditCursor {
            time_ms: row.record.time_ms,
            request_id: row.record.request_id.to_string(),
            batch_id: row.batch_id.clone(),
            batch_seq: row.batch_seq,
        }
    }

    fn key(&self) -> RowKey<'_> {
        (self.time_ms, &self.request_id, &self.batch_id, self.batch_seq)
    }

    /// Lowercase hex of: time (i64 BE), rank (u32 BE), batch id length (u8), batch id, request id.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(13 + self.batch_id.len() + self.request_id.len());
        bytes.extend(self.time_ms.to_be_bytes());
        bytes.extend(self.batch_seq.to_be_bytes());
        // Batch ids are at most 128 bytes (`check_batch_id`), request ids are the rest.
        bytes.push(self.batch_id.len().min(255) as u8);
        bytes.extend(self.batch_id.as_bytes());
        bytes.extend(self.request_id.as_bytes());
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The cursor [`AuditCursor::encode`] made, or None for anything else.
    pub fn parse(text: &str) -> Option<AuditCursor> {
        if !text.len().is_multiple_of(2) || text.len() > 2 * 1024 {
            return None;
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let bytes: Vec<u8> = text
            .as_bytes()
            .chunks_exact(2)
            .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
            .collect::<Option<_>>()?;
        let time_ms = i64::from_be_bytes(bytes.get(0..8)?.try_into().ok()?);
        let batch_seq = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
        let batch_len = usize::from(*bytes.get(12)?);
        let batch_id = std::str::from_utf8(bytes.get(13..13 + batch_len)?).ok()?;
        let request_id = std::str::from_utf8(bytes.get(13 + batch_len..)?).ok()?;
        check_batch_id(batch_id).ok()?;
        Some(AuditCursor { time_ms, request_id: request_id.to_owned(), batch_id: batch_id.to_owned(), batch_seq })
    }
}

/// How many objects are fetched at once: small files, so latency (S3) dominates, not bandwidth.
const FETCH_CONCURRENCY: usize = 8;
/// A read that finds a listed file gone (a concurrent compaction merged and deleted it) lists
/// again: the merged file was written before the delete, so the new listing has it.
const READ_ATTEMPTS: usize = 3;
const ZSTD_LEVEL: i32 = 3;
const MAX_BATCH_ID_LEN: usize = 128;

const DAY_MS: i64 = 86_400_000;
/// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z: four-digit years keep the `date=` partition
/// names in lexicographic = chronological order.
const MIN_MS: i64 = -62_167_219_200_000;
const END_MS: i64 = 253_402_300_800_000;

impl Archive {
    /// A local directory (created if missing) — the default for `resizer dev`.
    pub fn local(dir: &std::path::Path) -> Result<Archive, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(|source| ArchiveError::CreateDir { path: dir.to_owned(), source })?;
        let store = LocalFileSystem::new_with_prefix(dir)?;
        Ok(Archive { store: Arc::new(store) })
    }

    /// From a URL: `file:///abs/path` or `s3://bucket/prefix`. S3 options are (key, value) pairs
    /// with object_store's names: `endpoint`, `region`, `access_key_id`, `secret_access_key`,
    /// `session_token`, `allow_http`, ... An unknown key is an error rather than silently ignored,
    /// so a typo cannot send the archive to the wrong place or unauthenticated. Credentials come
    /// from the options only, never from the environment.
    pub fn from_url(url: &str, options: &[(String, String)]) -> Result<Archive, ArchiveError> {
        let invalid = |reason: String| ArchiveError::InvalidUrl { url: url.to_owned(), reason };
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        match parsed.scheme() {
            "file" => {
                if let Some((key, _)) = options.first() {
                    return Err(ArchiveError::InvalidOption {
                        key: key.clone(),
                        reason: "file:// archives take no options".into(),
                    });
                }
                let dir = parsed.to_file_path().map_err(|()| invalid("not an absolute local path".into()))?;
                Archive::local(&dir)
            }
            "s3" => Ok(Archive { store: s3_store(&parsed, options)? }),
            other => Err(invalid(format!("unsupported scheme `{other}` (file or s3)"))),
        }
    }

    /// Writes one batch's records: grouped by (tenant, UTC date of `time_ms`), one Parquet file
    /// per group at `tenant=<id>/date=<YYYY-MM-DD>/batch-<batch_id>.parquet`. Idempotent: the
    /// same batch writes the same paths with the same bytes (rows are sorted, not in input order).
    pub async fn write_batch(
        &self,
        batch_id: &str,
        records: impl Into<Arc<Vec<UsageRecord>>>,
    ) -> Result<(), ArchiveError> {
        check_batch_id(batch_id)?;
        let records = records.into();
        let (id, file) = (batch_id.to_owned(), format!("batch-{batch_id}.parquet"));
        let files = blocking(move || {
            // Grouped by day number; the date string is made once per group, not per record.
            let mut groups: BTreeMap<(u64, i64), Vec<&UsageRecord>> = BTreeMap::new();
            for record in records.iter() {
                if !(MIN_MS..END_MS).contains(&record.time_ms) {
                    return Err(ArchiveError::TimeOutOfRange {
                        request_id: record.request_id.to_string(),
                        time_ms: record.time_ms,
                    });
                }
                let day = record.time_ms.div_euclid(DAY_MS);
                groups.entry((record.tenant, day)).or_default().push(record);
            }
            groups
                .into_iter()
                .map(|((tenant, day), group)| {
                    let date = date_of(day * DAY_MS).unwrap_or_default();
                    let rows = number_rows(&id, group);
                    Ok((partition(tenant, &date).join(file.as_str()), encode(&rows, Compress::Text)?))
                })
                .collect::<Result<Vec<_>, ArchiveError>>()
        })
        .await?;
        for (path, bytes) in files {
            self.store.put(&path, bytes.into()).await?;
        }
        Ok(())
    }

    /// Every record of `tenant` with `from_ms <= time_ms < to_ms`, sorted by (`time_ms`,
    /// `request_id`). Lists the tenant's date partitions once and reads only those the range
    /// touches.
    pub async fn read(&self, tenant: u64, from_ms: i64, to_ms: i64) -> Result<Vec<UsageRecord>, ArchiveError> {
        Ok(self.read_page(tenant, from_ms, to_ms, None, usize::MAX).await?.records)
    }

    /// At most `limit` records of `tenant` with `from_ms <= time_ms < to_ms`, in the order of
    /// [`Archive::read`], starting after `after` (a page's [`AuditPage::next`]). Reads one day's
    /// partition at a time and stops once the page is full, so a page over a long range costs
    /// the days it covers, not the whole range.
    pub async fn read_page(
        &self,
        tenant: u64,
        from_ms: i64,
        to_ms: i64,
        after: Option<&AuditCursor>,
        limit: usize,
    ) -> Result<AuditPage, ArchiveError> {
        let empty = AuditPage { records: Vec::new(), next: None };
        let from_ms = from_ms.max(MIN_MS).max(after.map_or(MIN_MS, |a| a.time_ms));
        let to_ms = to_ms.min(END_MS);
        if from_ms >= to_ms || limit == 0 {
            return Ok(empty);
        }
        // Both in range after the clamp, so both are Some.
        let (Some(first), Some(last)) = (date_of(from_ms), date_of(to_ms - 1)) else { return Ok(empty) };
        let listing = self.store.list_with_delimiter(Some(&Path::from(format!("tenant={tenant}")))).await?;
        let mut dates: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|dir| dir.filename()?.strip_prefix("date="))
            .filter(|date| parse_date(date).is_some() && (first.as_str()..=last.as_str()).contains(date))
            .map(str::to_owned)
            .collect();
        dates.sort();
        let is_after = |row: &Row| after.is_none_or(|a| row_key(row.as_ref()) > a.key());
        let mut rows: Vec<Row> = Vec::new();
        for date in dates {
            let part = self.read_partition(&partition(tenant, &date)).await?;
            let mut day: Vec<Row> = part
                .into_iter()
                .filter(|row| row.record.tenant == tenant && (from_ms..to_ms).contains(&row.record.time_ms))
                .filter(is_after)
                .collect();
            // A day's rows all sort after the previous day's: sorting each day sorts the page.
            sort_dedup(&mut day);
            rows.append(&mut day);
            if rows.len() > limit {
                break;
            }
        }
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(AuditCursor::of)
        } else {
            None
        };
        Ok(AuditPage { records: rows.into_iter().map(|row| row.record).collect(), next })
    }

    /// Merges the `batch-*.parquet` files of one tenant and day whose batch ids satisfy
    /// `is_applied`, together with the day's existing compact files, into one file
    /// `compact-<hash of the merged batch ids>.parquet`; then deletes the merged files. Returns
    /// how many files were merged (0 when there were fewer than two to merge). Batches that are
    /// not applied are left alone: a replay may still rewrite them.
    ///
    /// One run reads at most [`COMPACT_INPUT_BYTES`] of files, so its memory is bounded however
    /// busy the tenant's day was: a compact file that has grown to that size is left as it is,
    /// and a busy day ends as several compact files.
    pub async fn compact_day(
        &self,
        tenant: u64,
        date: &str,
        is_applied: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<usize, ArchiveError> {
        self.compact_day_within(tenant, date, is_applied, COMPACT_INPUT_BYTES).await
    }

    async fn compact_day_within(
        &self,
        tenant: u64,
        date: &str,
        is_applied: &(dyn Fn(&str) -> bool + Send + Sync),
        max_input_bytes: u64,
    ) -> Result<usize, ArchiveError> {
        parse_date(date).ok_or_else(|| ArchiveError::InvalidDate(date.to_owned()))?;
        let dir = partition(tenant, date);
        let mut batches: Vec<(String, Path, u64)> = Vec::new();
        let mut compacts: Vec<(u64, Path)> = Vec::new();
        for (path, kind, size) in self.list_files(&dir).await? {
            match kind {
                FileKind::Batch(id) if is_applied(&id) => batches.push((id, path, size)),
                FileKind::Batch(_) => {}
                FileKind::Compact if size < max_input_bytes => compacts.push((size, path)),
                FileKind::Compact => {}
            }
        }
        // Batches oldest first (their ids start with the time they were cut), as many as fit;
        // then whichever unfilled compact files still fit, the smallest first. A compact file
        // that cannot take more is left as it is.
        batches.sort();
        compacts.sort();
        let mut inputs: Vec<Path> = Vec::new();
        let mut total = 0u64;
        for (_, path, size) in batches {
            if !inputs.is_empty() && total.saturating_add(size) > max_input_bytes {
                break;
            }
            total = total.saturating_add(size);
            inputs.push(path);
        }
        for (size, path) in compacts {
            if total.saturating_add(size) <= max_input_bytes {
                total = total.saturating_add(size);
                inputs.push(path);
            }
        }
        if inputs.len() < 2 {
            return Ok(0);
        }
        // A file gone since the listing means another compaction is running on this day: fail
        // rather than race it; the aggregator's next pass retries.
        let fetched = self.fetch_all(inputs.clone()).await?;
        let (name, bytes) = blocking(move || {
            let mut rows = Vec::new();
            for (path, bytes) in fetched {
                rows.extend(decode(&path, bytes)?);
            }
            sort_dedup(&mut rows);
            let ids: BTreeSet<&str> = rows.iter().map(|row| row.batch_id.as_str()).collect();
            let name = format!("compact-{}.parquet", batch_set_hash(ids));
            let refs: Vec<RowRef<'_>> = rows.iter().map(Row::as_ref).collect();
            Ok((name, encode(&refs, Compress::All)?))
        })
        .await?;
        let output = dir.clone().join(name.as_str());
        self.store.put(&output, bytes.into()).await?;
        for path in inputs.iter().filter(|path| **path != output) {
            match self.store.delete(path).await {
                // Already gone: an interrupted run of this same compaction deleted it.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(inputs.len())
    }

    /// The (tenant, date) partitions holding more than `min_files` archive files, sorted.
    pub async fn partitions_to_compact(&self, min_files: usize) -> Result<Vec<(u64, String)>, ArchiveError> {
        let mut counts: BTreeMap<(u64, String), usize> = BTreeMap::new();
        let mut listing = self.store.list(None);
        while let Some(meta) = listing.try_next().await? {
            let parts: Vec<_> = meta.location.parts().collect();
            let [tenant, date, file] = parts.as_slice() else { continue };
            let tenant = tenant.as_ref().strip_prefix("tenant=").and_then(|t| t.parse::<u64>().ok());
            let date = date.as_ref().strip_prefix("date=").filter(|d| parse_date(d).is_some());
            if let (Some(tenant), Some(date), Some(_)) = (tenant, date, file_kind(file.as_ref())) {
                *counts.entry((tenant, date.to_owned())).or_default() += 1;
            }
        }
        Ok(counts.into_iter().filter(|(_, n)| *n > min_files).map(|(key, _)| key).collect())
    }

    /// The archive files directly under one partition directory (anything else is ignored:
    /// object_store's staging files, a reader's stray outputs).
    async fn list_files(&self, dir: &Path) -> Result<Vec<(Path, FileKind, u64)>, ArchiveError> {
        let listing = self.store.list_with_delimiter(Some(dir)).await?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|meta| {
                let kind = file_kind(meta.location.filename()?)?;
                Some((meta.location, kind, meta.size))
            })
            .collect())
    }

    async fn fetch_all(&self, paths: Vec<Path>) -> Result<Vec<(Path, Bytes)>, object_store::Error> {
        futures_util::stream::iter(paths)
            .map(|path| async move {
                let bytes = self.store.get(&path).await?.bytes().await?;
                Ok::<_, object_store::Error>((path, bytes))
            })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn read_partition(&self, dir: &Path) -> Result<Vec<Row>, ArchiveError> {
        let mut attempt = 1;
        loop {
            let paths = self.list_files(dir).await?.into_iter().map(|(path, ..)| path).collect();
            match self.fetch_all(paths).await {
                Ok(fetched) => {
                    return blocking(move || {
                        let mut rows = Vec::new();
                        for (path, bytes) in fetched {
                            rows.extend(decode(&path, bytes)?);
                        }
                        Ok(rows)
                    })
                    .await
                }
                Err(object_store::Error::NotFound { .. }) if attempt < READ_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(feature = "s3")]
fn s3_store(url: &url::Url, options: &[(String, String)]) -> Result<Arc<dyn ObjectStore>, ArchiveError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::prefix::PrefixStore;

    let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| ArchiveError::InvalidUrl {
        url: url.to_string(),
        reason: "no bucket (s3://bucket/prefix)".into(),
    })?;
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
    for (key, value) in options {
        let config: AmazonS3ConfigKey = key.to_ascii_lowercase().parse().map_err(|_| ArchiveError::InvalidOption {
            key: key.clone(),
            reason: "not an S3 option (endpoint, region, access_key_id, secret_access_key, allow_http, ...)".into(),
        })?;
        builder = builder.with_config(config, value);
    }
    let store = builder.build()?;
    let prefix = Path::from_url_path(url.path())
        .map_err(|e| ArchiveError::InvalidUrl { url: url.to_string(), reason: e.to_string() })?;
    Ok(if prefix.is_root() { Arc::new(store) } else { Arc::new(PrefixStore::new(store, prefix)) })
}

#[cfg(not(feature = "s3"))]
fn s3_store(_url: &url::Url, _options: &[(String, String)]) -> Result<Arc<dyn ObjectStore>, ArchiveError> {
    Err(ArchiveError::S3NotEnabled)
}

#[derive(Debug, Clone, PartialEq)]
enum FileKind {
    Batch(String),
    Compact,
}

fn file_kind(name: &str) -> Option<FileKind> {
    let stem = name.strip_suffix(".parquet")?;
    if let Some(id) = stem.strip_prefix("batch-") {
        check_batch_id(id).ok()?;
        Some(FileKind::Batch(id.to_owned()))
    } else if stem.strip_prefix("compact-").is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(FileKind::Compact)
    } else {
        None
    }
}

fn partition(tenant: u64, date: &str) -> Path {
    Path::from_iter([format!("tenant={tenant}"), format!("date={date}")])
}

/// Batch ids become file names, so they are held to a portable, unambiguous alphabet.
fn check_batch_id(id: &str) -> Result<(), ArchiveError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_BATCH_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ArchiveError::InvalidBatchId(id.to_owned()))
    }
}

/// Most bytes of Parquet one compaction reads: the bound on what it holds decoded in memory.
pub const COMPACT_INPUT_BYTES: u64 = 16 << 20;

/// 128 bits of SHA-256 over the sorted ids: collisions are out of the question at one file per
/// tenant-day, and the name stays short.
fn batch_set_hash<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for id in ids {
        hasher.update(id.as_bytes());
        hasher.update(b"\n");
    }
    hasher.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Sorted by (time_ms, request_id, batch_id, batch_seq); copies of a row (same batch and position
/// in it: what a compaction interrupted before its deletes leaves behind) are kept once.
fn sort_dedup(rows: &mut Vec<Row>) {
    rows.sort_by(|a, b| row_order(a.as_ref(), b.as_ref()));
    rows.dedup_by(|a, b| row_order(a.as_ref(), b.as_ref()).is_eq());
}

/// One batch's records of one file as rows in file order, (time_ms, request_id, batch_seq).
/// Records that share a time and a request id (a client may reuse its `X-Request-Id`) are told
/// apart by `batch_seq`, their rank when ordered by every field: the numbering depends on the
/// batch's records, not on the order a replay delivers them in. A batch's records arrive almost
/// in time order, which the stable sort finds in one pass.
fn number_rows<'a>(batch_id: &'a str, mut records: Vec<&'a UsageRecord>) -> Vec<RowRef<'a>> {
    records.sort_by(|a, b| (a.time_ms, &a.request_id).cmp(&(b.time_ms, &b.request_id)).then_with(|| a.cmp(b)));
    let mut rows: Vec<RowRef<'a>> = Vec::with_capacity(records.len());
    for record in records {
        let batch_seq = match rows.last() {
            Some(prev) if prev.record.time_ms == record.time_ms && prev.record.request_id == record.request_id => {
                prev.batch_seq.saturating_add(1)
            }
            _ => 0,
        };
        rows.push(RowRef { batch_id, batch_seq, record });
    }
    rows
}

fn row_order(a: RowRef<'_>, b: RowRef<'_>) -> std::cmp::Ordering {
    row_key(a).cmp(&row_key(b))
}

/// (time_ms, request_id, batch_id, batch_seq): unique per row, copies aside.
type RowKey<'a> = (i64, &'a str, &'a str, u32);

fn row_key(row: RowRef<'_>) -> RowKey<'_> {
    (row.record.time_ms, &row.record.request_id, row.batch_id, row.batch_seq)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ArchiveError::Task(e.to_string()))?
}

// ---- Parquet ----------------------------------------------------------------------------------

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
        utf8("batch_id"),
        u32("batch_seq"),
    ]))
}

/// Encodes rows (already in file order) as one Parquet file. Deterministic: same rows, same bytes.
/// Which columns a file compresses with zstd. Each compressed column costs a zstd context per file,
/// 30–70 µs on this VM (zstd runs `cpuid` for each, a trap to the hypervisor): a batch with 100
/// tenants makes 100 small files, and compressing all 21 columns of each took 4.8 µs per record
/// against 2.2 µs for the two text columns alone (`TENANTS=100 cargo run --release -p usage
/// --example record_cost`). So a batch's files compress only the columns that are neither
/// dictionary- nor run-length-friendly; compaction, rare, rewrites them with every column
/// compressed.
#[derive(Clone, Copy)]
enum Compress {
    Text,
    All,
}

fn encode(rows: &[RowRef<'_>], compress: Compress) -> Result<Bytes, ArchiveError> {
    // One pass over the rows fills every column: a batch's records are cold by now (written a
    // second ago on other threads), and a pass per column would stream them from memory 21 times.
    let n = rows.len();
    let text = || StringBuilder::with_capacity(n, n * 8);
    let (mut request_id, mut key_id, mut node, mut worker) = (text(), text(), text(), text());
    let (mut error, mut params, mut input_format, mut output_format, mut batch_id) =
        (text(), text(), text(), text(), text());
    let mut tenant = UInt64Builder::with_capacity(n);
    let mut time_ms = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut status = UInt16Builder::with_capacity(n);
    let (mut input_bytes, mut output_bytes) = (UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n));
    let (mut input_width, mut input_height) = (UInt32Builder::with_capacity(n), UInt32Builder::with_capacity(n));
    let (mut output_width, mut output_height) = (UInt32Builder::with_capacity(n), UInt32Builder::with_capacity(n));
    let (mut queue_wait_us, mut wall_us, mut cpu_us) =
        (UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n), UInt64Builder::with_capacity(n));
    let mut batch_seq = UInt32Builder::with_capacity(n);
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
fn decode(path: &Path, bytes: Bytes) -> Result<Vec<Row>, ArchiveError> {
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
        let batch_seq = c.get_optional::<UInt32Array>("batch_seq")?;
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

// ---- UTC calendar dates (proleptic Gregorian), without a date library ---------------------------

/// `YYYY-MM-DD` of the UTC day holding `ms`, or None outside the years 0000 to 9999.
fn date_of(ms: i64) -> Option<String> {
    if !(MIN_MS..END_MS).contains(&ms) {
        return None;
    }
    let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

/// Days since 1970-01-01 of a strict `YYYY-MM-DD` calendar date.
fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let days = days_from_civil(y, m, d);
    // Round-tripping rejects 2023-02-30 and month 13.
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system temp dir, removed on drop (also when a test fails).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("usage-archive-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    // 2024-03-09T23:59:59.000Z and the next UTC midnight.
    const EVENING: i64 = 1_710_028_799_000;
    const MIDNIGHT: i64 = 1_710_028_800_000;

    fn record(request_id: &str, tenant: u64, time_ms: i64) -> UsageRecord {
        // Every field distinct from its neighbours, so a swapped column cannot pass unnoticed.
        let n = time_ms.rem_euclid(1000) as u64;
        UsageRecord {
            request_id: request_id.into(),
            tenant,
            key_id: format!("key{tenant}").into(),
            time_ms,
            node: "api-1".into(),
            worker: "w-2".into(),
            status: 200 + (n % 7) as u16,
            error: if n.is_multiple_of(2) { Default::default() } else { "corrupt-image".into() },
            params: format!("w={n}&fit=cover").into(),
            input_format: "jpeg".into(),
            input_bytes: 1_000_000 + n,
            input_width: 4000 + n as u32,
            input_height: 3000 + n as u32,
            output_format: "webp".into(),
            output_bytes: 20_000 + n,
            output_width: 400 + n as u32,
            output_height: 300 + n as u32,
            queue_wait_us: 10 + n,
            wall_us: u64::MAX - n,
            cpu_us: 5_000 + n,
        }
    }

    fn files_in(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    fn sorted(mut records: Vec<UsageRecord>) -> Vec<UsageRecord> {
        records.sort_by(|a, b| (a.time_ms, &a.request_id).cmp(&(b.time_ms, &b.request_id)));
        records
    }

    #[test]
    fn dates_match_the_calendar() {
        assert_eq!(date_of(0).as_deref(), Some("1970-01-01"));
        assert_eq!(date_of(-1).as_deref(), Some("1969-12-31"));
        assert_eq!(date_of(EVENING).as_deref(), Some("2024-03-09"));
        assert_eq!(date_of(MIDNIGHT).as_deref(), Some("2024-03-10"));
        assert_eq!(date_of(1_709_164_800_000).as_deref(), Some("2024-02-29"));
        assert_eq!(date_of(MIN_MS).as_deref(), Some("0000-01-01"));
        assert_eq!(date_of(END_MS - 1).as_deref(), Some("9999-12-31"));
        assert_eq!(date_of(END_MS), None);
        assert_eq!(date_of(MIN_MS - 1), None);
        assert_eq!(parse_date("2024-03-10"), Some(MIDNIGHT / DAY_MS));
        assert_eq!(parse_date("2024-02-29").map(|d| d * DAY_MS), Some(1_709_164_800_000));
        for bad in ["2023-02-29", "2024-13-01", "2024-00-10", "2024-3-10", "2024-03-1x", "+024-03-10", ""] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn batch_ids_are_checked() {
        assert!(check_batch_id("0001712345678901-00ff00ff00ff00ff").is_ok());
        for bad in ["", "a/b", "..", "a.b", "a b", &"x".repeat(129)] {
            assert!(matches!(check_batch_id(bad), Err(ArchiveError::InvalidBatchId(_))), "{bad}");
        }
        assert_eq!(file_kind("batch-b1.parquet"), Some(FileKind::Batch("b1".into())));
        assert_eq!(file_kind("compact-0a1b.parquet"), Some(FileKind::Compact));
        for other in ["batch-.parquet", "compact-.parquet", "compact-xyz.parquet", "batch-b1.parquet#1", "notes.txt"] {
            assert_eq!(file_kind(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn write_then_read_round_trips_by_tenant_and_range() {
        let tmp = TempDir::new("roundtrip");
        let archive = Archive::local(&tmp.0).expect("open");
        let records = vec![
            record("r3", 1, MIDNIGHT + 5),
            record("r1", 1, EVENING),
            record("r2", 1, MIDNIGHT),
            record("r0", 1, EVENING - 1),
            record("x1", 2, EVENING),
            record("x2", 2, MIDNIGHT + 1),
        ];
        archive.write_batch("b1", records.clone()).await.expect("write");
        for (tenant, date) in [(1, "2024-03-09"), (1, "2024-03-10"), (2, "2024-03-09"), (2, "2024-03-10")] {
            let dir = tmp.0.join(format!("tenant={tenant}/date={date}"));
            assert_eq!(files_in(&dir), ["batch-b1.parquet"], "{dir:?}");
        }

        // Every field of every record of tenant 1, across both days, in (time, id) order.
        let all = archive.read(1, i64::MIN, i64::MAX).await.expect("read");
        let tenant1: Vec<_> = records.iter().filter(|r| r.tenant == 1).cloned().collect();
        assert_eq!(all, sorted(tenant1));

        // from is inclusive, to exclusive.
        let ids = |v: Vec<UsageRecord>| v.into_iter().map(|r| r.request_id).collect::<Vec<_>>();
        assert_eq!(ids(archive.read(1, EVENING, MIDNIGHT).await.expect("read")), ["r1"]);
        assert_eq!(ids(archive.read(1, EVENING, MIDNIGHT + 1).await.expect("read")), ["r1", "r2"]);
        assert_eq!(ids(archive.read(1, MIDNIGHT, MIDNIGHT + 5).await.expect("read")), ["r2"]);
        assert_eq!(ids(archive.read(1, MIDNIGHT, MIDNIGHT + 6).await.expect("read")), ["r2", "r3"]);
        assert_eq!(ids(archive.read(2, 0, i64::MAX).await.expect("read")), ["x1", "x2"]);
        assert!(archive.read(3, 0, i64::MAX).await.expect("read").is_empty());
        assert!(archive.read(1, MIDNIGHT, MIDNIGHT).await.expect("read").is_empty());
    }

    #[tokio::test]
    async fn writing_a_batch_twice_stores_it_once() {
        let tmp = TempDir::new("twice");
        let archive = Archive::local(&tmp.0).expect("open");
        let records = vec![record("a", 7, EVENING), record("b", 7, EVENING + 1)];
        archive.write_batch("b1", records.clone()).await.expect("write");
        let path = tmp.0.join("tenant=7/date=2024-03-09/batch-b1.parquet");
        let first = std::fs::read(&path).expect("file");
        // A replay may deliver the records in another order: same bytes all the same.
        let replay: Vec<_> = records.iter().rev().cloned().collect();
        archive.write_batch("b1", replay.clone()).await.expect("write again");
        assert_eq!(std::fs::read(&path).expect("file"), first);
        assert_eq!(files_in(path.parent().expect("dir")), ["batch-b1.parquet"]);
        assert_eq!(archive.read(7, 0, i64::MAX).await.expect("read"), records);
    }

    #[tokio::test]
    async fn records_sharing_a_request_id_are_all_kept() {
        let tmp = TempDir::new("same-id");
        let archive = Archive::local(&tmp.0).expect("open");
        // A client that reuses its X-Request-Id: two identical records and a third that differs
        // only in its status, all in the same millisecond and the same batch, and one more in a
        // second batch.
        let same = record("dup", 3, EVENING);
        let other_status = UsageRecord { status: 429, ..same.clone() };
        let first = vec![same.clone(), other_status.clone(), same.clone(), record("z", 3, EVENING)];
        archive.write_batch("b1", first.clone()).await.expect("write");
        archive.write_batch("b2", vec![same.clone()]).await.expect("write");
        let dup_count = |records: &[UsageRecord]| records.iter().filter(|r| r.request_id == "dup").count();
        let read = archive.read(3, 0, i64::MAX).await.expect("read");
        assert_eq!(dup_count(&read), 4, "{read:?}");
        assert_eq!(read.iter().filter(|r| r.status == 429).count(), 1);

        // A replay in another order writes the same bytes: the numbering does not follow arrival.
        let path = tmp.0.join("tenant=3/date=2024-03-09/batch-b1.parquet");
        let bytes = std::fs::read(&path).expect("file");
        archive.write_batch("b1", first.iter().rev().cloned().collect::<Vec<_>>()).await.expect("replay");
        assert_eq!(std::fs::read(&path).expect("file"), bytes);

        // Compaction keeps all four, and so does a read that also finds the leftover small files
        // of a compaction interrupted before its deletes.
        assert_eq!(archive.compact_day(3, "2024-03-09", &|_: &str| true).await.expect("compact"), 2);
        assert_eq!(dup_count(&archive.read(3, 0, i64::MAX).await.expect("read")), 4);
        archive.write_batch("b1", first).await.expect("leftover");
        assert_eq!(dup_count(&archive.read(3, 0, i64::MAX).await.expect("read")), 4);
    }

    /// Rewrites an archive file as versions before `batch_seq` wrote it: the same rows without
    /// that column.
    fn drop_batch_seq_column(path: &std::path::Path) {
        let bytes = Bytes::from(std::fs::read(path).expect("file"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).expect("reader");
        let batches: Vec<RecordBatch> = reader
            .map(|batch| {
                let mut batch = batch.expect("batch");
                let index = batch.schema().index_of("batch_seq").expect("the column");
                batch.remove_column(index);
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
        let tmp = TempDir::new("old-files");
        let archive = Archive::local(&tmp.0).expect("open");
        let dup = record("dup", 6, EVENING);
        archive.write_batch("old", vec![dup.clone(), dup.clone(), record("a", 6, EVENING - 1)]).await.expect("write");
        drop_batch_seq_column(&tmp.0.join("tenant=6/date=2024-03-09/batch-old.parquet"));
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
    async fn pages_of_every_size_add_up_to_the_whole_read() {
        let tmp = TempDir::new("pages");
        let archive = Archive::local(&tmp.0).expect("open");
        // Two days, two batches, a request id used three times in one millisecond.
        let dup = record("dup", 4, EVENING);
        archive
            .write_batch(
                "b1",
                vec![record("a", 4, EVENING - 5), dup.clone(), dup.clone(), record("c", 4, MIDNIGHT + 2)],
            )
            .await
            .expect("write");
        archive
            .write_batch("b2", vec![dup.clone(), record("d", 4, MIDNIGHT + 1), record("e", 9, EVENING)])
            .await
            .expect("write");
        let whole = archive.read(4, 0, i64::MAX).await.expect("read");
        assert_eq!(whole.len(), 6);
        for limit in 1..=7 {
            let (mut got, mut after, mut pages) = (Vec::new(), None, 0);
            loop {
                let page = archive.read_page(4, 0, i64::MAX, after.as_ref(), limit).await.expect("page");
                assert!(page.records.len() <= limit);
                got.extend(page.records);
                pages += 1;
                // The cursor goes out as text and comes back.
                match page.next {
                    Some(next) => after = Some(AuditCursor::parse(&next.encode()).expect("round trip")),
                    None => break,
                }
                assert!(pages <= 6, "limit {limit}: no end");
            }
            assert_eq!(got, whole, "limit {limit}");
            assert_eq!(pages, whole.len().div_ceil(limit), "limit {limit}: pages");
        }
        // A range narrower than the data, paged.
        let page = archive.read_page(4, EVENING, MIDNIGHT + 2, None, 2).await.expect("page");
        assert_eq!(page.records.len(), 2);
        let rest = archive.read_page(4, EVENING, MIDNIGHT + 2, page.next.as_ref(), 10).await.expect("page");
        assert_eq!(rest.records.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["dup", "d"]);
        assert!(rest.next.is_none());
    }

    #[test]
    fn cursors_parse_only_what_encode_made() {
        let cursor = AuditCursor { time_ms: -5, request_id: "r/é 1".into(), batch_id: "b-1_x".into(), batch_seq: 7 };
        assert_eq!(AuditCursor::parse(&cursor.encode()), Some(cursor.clone()));
        let good = cursor.encode();
        let upper = good.to_uppercase();
        let signed = format!("+{}", &good[1..]);
        for bad in [
            "",
            "0",
            "zz",
            &good[..good.len() - 1],
            &good[..20],
            &format!("{good}ff"),
            &"0".repeat(4096),
            &upper,
            &signed,
        ] {
            assert_eq!(AuditCursor::parse(bad), None, "{bad}");
        }
        // A batch id that is not one (path characters) is refused.
        let evil = AuditCursor { batch_id: "../x".into(), ..cursor };
        assert_eq!(AuditCursor::parse(&evil.encode()), None);
    }

    #[tokio::test]
    async fn compaction_merges_applied_batches_only() {
        let tmp = TempDir::new("compact");
        let archive = Archive::local(&tmp.0).expect("open");
        let day = tmp.0.join("tenant=5/date=2024-03-09");
        let batches = [
            ("b1", vec![record("a", 5, EVENING - 30), record("b", 5, EVENING - 20)]),
            ("b2", vec![record("c", 5, EVENING - 25)]),
            ("b3", vec![record("d", 5, EVENING - 10), record("e", 5, EVENING)]),
        ];
        for (id, records) in &batches {
            archive.write_batch(id, records.clone()).await.expect("write");
        }
        let everything = sorted(batches.iter().flat_map(|(_, r)| r.clone()).collect());
        assert_eq!(archive.partitions_to_compact(2).await.expect("scan"), [(5, "2024-03-09".to_owned())]);
        assert!(archive.partitions_to_compact(3).await.expect("scan").is_empty());

        let applied = |id: &str| id == "b1" || id == "b2";
        assert_eq!(archive.compact_day(5, "2024-03-09", &applied).await.expect("compact"), 2);
        let files = files_in(&day);
        let expected_name = format!("compact-{}.parquet", batch_set_hash(["b1", "b2"]));
        assert_eq!(files, ["batch-b3.parquet".to_owned(), expected_name]);
        assert_eq!(archive.read(5, 0, i64::MAX).await.expect("read"), everything);
        // Nothing left that may be merged: b3 is not applied, one compact file alone is no merge.
        assert_eq!(archive.compact_day(5, "2024-03-09", &applied).await.expect("compact"), 0);

        // Once b3 commits, the compact file and b3 merge into one file named for all three.
        let all_applied = |_: &str| true;
        assert_eq!(archive.compact_day(5, "2024-03-09", &all_applied).await.expect("compact"), 2);
        let final_name = format!("compact-{}.parquet", batch_set_hash(["b1", "b2", "b3"]));
        assert_eq!(files_in(&day), std::slice::from_ref(&final_name));
        assert_eq!(archive.read(5, 0, i64::MAX).await.expect("read"), everything);
        assert!(archive.partitions_to_compact(1).await.expect("scan").is_empty());

        // A crash between the merged put and the deletes leaves the small files next to the
        // merged one (here: written again). Reads return each record once, and the next
        // compaction converges on the same file.
        for (id, records) in &batches {
            archive.write_batch(id, records.clone()).await.expect("write");
        }
        assert_eq!(archive.read(5, 0, i64::MAX).await.expect("read"), everything);
        assert_eq!(archive.compact_day(5, "2024-03-09", &all_applied).await.expect("compact"), 4);
        assert_eq!(files_in(&day), [final_name]);
        assert_eq!(archive.read(5, 0, i64::MAX).await.expect("read"), everything);
    }

    #[tokio::test]
    async fn one_compaction_reads_a_bounded_amount_and_a_busy_day_ends_in_several_files() {
        let tmp = TempDir::new("compact-bounded");
        let archive = Archive::local(&tmp.0).expect("open");
        let day = tmp.0.join("tenant=5/date=2024-03-09");
        let mut everything = Vec::new();
        let mut seed = 7u64;
        for b in 0..12 {
            // Queries of random hex: merged files are about as large as their inputs together.
            let records: Vec<_> = (0..40)
                .map(|i| {
                    let mut r = record(&format!("r{b}-{i}"), 5, EVENING - 1000 + b * 50 + i);
                    r.params = (0..40)
                        .map(|_| {
                            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                            format!("{:x}", seed >> 60)
                        })
                        .collect::<String>()
                        .into();
                    r
                })
                .collect();
            everything.extend(records.clone());
            archive.write_batch(&format!("b{b:02}"), records).await.expect("write");
        }
        let everything = sorted(everything);
        let one_file = std::fs::metadata(day.join("batch-b00.parquet")).expect("a batch file").len();
        // Room for about three batch files per run.
        let bound = one_file * 3 + one_file / 2;
        let mut runs = 0;
        while archive.compact_day_within(5, "2024-03-09", &|_| true, bound).await.expect("compact") > 0 {
            runs += 1;
            assert!(runs < 50, "compaction does not converge");
            assert_eq!(archive.read(5, 0, i64::MAX).await.expect("read"), everything, "after run {runs}");
        }
        let files = files_in(&day);
        let batches_left = files.iter().filter(|f| f.starts_with("batch-")).count();
        assert!(batches_left <= 1, "at most one batch too large for any file left: {files:?}");
        assert!((2..=6).contains(&files.len()), "a day over the bound ends in several files: {files:?}");
        for file in &files {
            let size = std::fs::metadata(day.join(file)).expect("file").len();
            assert!(size <= bound, "{file}: {size} bytes, bound {bound}");
        }
        assert_eq!(archive.read(5, 0, i64::MAX).await.expect("read"), everything);
    }

    #[tokio::test]
    async fn same_request_in_two_batches_is_not_hidden() {
        let tmp = TempDir::new("two-batches");
        let archive = Archive::local(&tmp.0).expect("open");
        let r = record("dup", 9, EVENING);
        archive.write_batch("b1", vec![r.clone()]).await.expect("write");
        archive.write_batch("b2", vec![r.clone()]).await.expect("write");
        assert_eq!(archive.read(9, 0, i64::MAX).await.expect("read"), [r.clone(), r.clone()]);
        assert_eq!(archive.compact_day(9, "2024-03-09", &|_| true).await.expect("compact"), 2);
        assert_eq!(archive.read(9, 0, i64::MAX).await.expect("read"), [r.clone(), r]);
    }

    #[tokio::test]
    async fn bad_inputs_are_typed_errors() {
        let tmp = TempDir::new("errors");
        let archive = Archive::local(&tmp.0).expect("open");
        let err = archive.write_batch("../x", vec![record("a", 1, EVENING)]).await;
        assert!(matches!(err, Err(ArchiveError::InvalidBatchId(_))), "{err:?}");
        let err = archive.write_batch("b", vec![record("a", 1, END_MS)]).await;
        assert!(matches!(err, Err(ArchiveError::TimeOutOfRange { .. })), "{err:?}");
        let err = archive.compact_day(1, "2024-02-30", &|_| true).await;
        assert!(matches!(err, Err(ArchiveError::InvalidDate(_))), "{err:?}");

        // A file that is not Parquet, where a batch file should be, is reported, not a panic.
        let day = tmp.0.join("tenant=1/date=2024-03-09");
        std::fs::create_dir_all(&day).expect("mkdir");
        std::fs::write(day.join("batch-junk.parquet"), b"PAR1 not really").expect("write");
        let err = archive.read(1, 0, i64::MAX).await;
        assert!(
            matches!(&err, Err(ArchiveError::Corrupt { path, .. }) if path.ends_with("batch-junk.parquet")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn urls_open_local_directories_and_refuse_the_rest() {
        let tmp = TempDir::new("url");
        let dir = tmp.0.join("nested/archive");
        let url = format!("file://{}", dir.display());
        let archive = Archive::from_url(&url, &[]).expect("file url");
        archive.write_batch("b1", vec![record("a", 1, EVENING)]).await.expect("write");
        assert!(dir.join("tenant=1/date=2024-03-09/batch-b1.parquet").is_file());

        let option = [("region".to_owned(), "x".to_owned())];
        assert!(matches!(Archive::from_url(&url, &option), Err(ArchiveError::InvalidOption { .. })));
        assert!(matches!(Archive::from_url("ftp://host/x", &[]), Err(ArchiveError::InvalidUrl { .. })));
        assert!(matches!(Archive::from_url("not a url", &[]), Err(ArchiveError::InvalidUrl { .. })));
    }

    #[test]
    fn handles_and_futures_cross_threads() {
        fn send_sync_clone<T: Send + Sync + Clone>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let tmp = TempDir::new("send");
        let archive = Archive::local(&tmp.0).expect("open");
        send_sync_clone(&archive);
        // Futures are lazy: built here only to prove `tokio::spawn` would accept them.
        send(&archive.write_batch("b", vec![]));
        send(&archive.read(1, 0, 1));
        send(&archive.compact_day(1, "2024-03-09", &|_| true));
        send(&archive.partitions_to_compact(1));
    }

    #[cfg(not(feature = "s3"))]
    #[test]
    fn s3_urls_need_the_feature() {
        assert!(matches!(Archive::from_url("s3://bucket/prefix", &[]), Err(ArchiveError::S3NotEnabled)));
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_urls_take_known_options_only() {
        let options: Vec<(String, String)> = [
            ("endpoint", "http://127.0.0.1:9000"),
            ("access_key_id", "minio"),
            ("secret_access_key", "minio123"),
            ("region", "us-east-1"),
            ("allow_http", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // Building the client makes no request, so no server is needed here.
        Archive::from_url("s3://usage/raw", &options).expect("s3 url");
        let typo = [("endpiont".to_owned(), "http://x".to_owned())];
        let err = Archive::from_url("s3://usage/raw", &typo);
        assert!(matches!(&err, Err(ArchiveError::InvalidOption { key, .. }) if key == "endpiont"), "{err:?}");
    }

    /// Writes a small archive for `tests/read_parquet.py`: kept in `$USAGE_ARCHIVE_SAMPLE_DIR`
    /// when that is set, otherwise written to a temp dir and removed.
    #[tokio::test]
    async fn sample_archive_for_external_readers() {
        let kept = std::env::var_os("USAGE_ARCHIVE_SAMPLE_DIR").map(PathBuf::from);
        let tmp = TempDir::new("sample");
        let dir = kept.clone().unwrap_or_else(|| tmp.0.clone());
        let archive = Archive::local(&dir).expect("open");
        archive.write_batch("s1", vec![record("a", 1, EVENING), record("b", 2, MIDNIGHT)]).await.expect("write");
        archive.write_batch("s2", vec![record("c", 1, EVENING + 1)]).await.expect("write");
        assert_eq!(archive.compact_day(1, "2024-03-09", &|_| true).await.expect("compact"), 2);
        assert_eq!(archive.read(1, 0, i64::MAX).await.expect("read").len(), 2);
    }
}
