//! The archive's objects: where a tenant-day's files live (`tenant=<id>/date=<YYYY-MM-DD>/`),
//! which names are archive files (`batch-<id>.parquet`, `compact-<hash>.parquet`), the alphabet of
//! batch ids, and listing and fetching a partition's files. It must not read what is inside a
//! file (that is `format.rs`) nor decide which files to read or merge.

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::{Archive, ArchiveError};

/// How many objects are fetched at once: small files, so latency (S3) dominates, not bandwidth.
const FETCH_CONCURRENCY: usize = 8;
const MAX_BATCH_ID_LEN: usize = 128;

impl Archive {
    /// The archive files directly under one partition directory (anything else is ignored:
    /// object_store's staging files, a reader's stray outputs).
    pub(super) async fn list_files(&self, dir: &Path) -> Result<Vec<(Path, FileKind, u64)>, ArchiveError> {
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

    pub(super) async fn fetch_all(&self, paths: Vec<Path>) -> Result<Vec<(Path, Bytes)>, object_store::Error> {
        futures_util::stream::iter(paths)
            .map(|path| async move {
                let bytes = self.store.get(&path).await?.bytes().await?;
                Ok::<_, object_store::Error>((path, bytes))
            })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum FileKind {
    Batch(String),
    Compact,
}

pub(super) fn file_kind(name: &str) -> Option<FileKind> {
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

pub(super) fn partition(tenant: u64, date: &str) -> Path {
    Path::from_iter([format!("tenant={tenant}"), format!("date={date}")])
}

/// Batch ids become file names, so they are held to a portable, unambiguous alphabet.
pub(super) fn check_batch_id(id: &str) -> Result<(), ArchiveError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_BATCH_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ArchiveError::InvalidBatchId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
