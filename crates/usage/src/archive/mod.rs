//! The raw-record archive: every [`UsageRecord`](crate::record::UsageRecord) as Parquet in an
//! object store (a local directory, or S3-compatible storage with the `s3` feature), partitioned
//! the Hive way so that DuckDB, pyarrow or Spark read it with a glob:
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
//! The schema is in `format.rs`.
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
//!
//! Files: `objects.rs` the objects' names, listing and fetching; `rows.rs` a row, its number in
//! its batch and the archive's order; `format.rs` the schema and the Parquet codec; `write.rs`
//! writing a batch; `read.rs` reading a tenant's range, page by page; `compact.rs` merging a day's
//! small files; `tests.rs` the fixtures the tests share and the tests of the handle as a whole.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::ObjectStore;
use parquet::errors::ParquetError;

mod compact;
mod format;
mod objects;
pub(crate) mod read;
mod rows;
mod write;

#[cfg(test)]
mod tests;

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
}

#[cfg(feature = "s3")]
fn s3_store(url: &url::Url, options: &[(String, String)]) -> Result<Arc<dyn ObjectStore>, ArchiveError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::path::Path;
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

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ArchiveError::Task(e.to_string()))?
}
