//! The fixtures the archive's tests share (a temp directory, records, the files of a directory)
//! and the tests of the handle as a whole: typed errors, URLs, `Send` futures, and the sample
//! archive that `scripts/parquet_check.sh` runs by this module's path and reads with pyarrow.
//! Test code only; nothing here is compiled into the crate.

use std::path::PathBuf;

use super::{Archive, ArchiveError};
use crate::calendar::END_MS;
use crate::record::UsageRecord;

/// A directory under the system temp dir, removed on drop (also when a test fails).
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(name: &str) -> TempDir {
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

/// An archive in a fresh temp directory, removed when the `TempDir` is dropped.
pub(super) fn temp_archive(name: &str) -> (TempDir, Archive) {
    let tmp = TempDir::new(name);
    let archive = Archive::local(&tmp.0).expect("open");
    (tmp, archive)
}

// 2024-03-09T23:59:59.000Z and the next UTC midnight.
pub(super) const EVENING: i64 = 1_710_028_799_000;
pub(super) const MIDNIGHT: i64 = 1_710_028_800_000;

pub(super) fn record(request_id: &str, tenant: u64, time_ms: i64) -> UsageRecord {
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
        source_bytes: 70_000 + n,
        source: ["", "hit", "revalidated", "fetched"][n as usize % 4].into(),
        frames: 1 + (n % 3) as u32,
    }
}

pub(super) fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

pub(super) fn sorted(mut records: Vec<UsageRecord>) -> Vec<UsageRecord> {
    records.sort_by(|a, b| (a.time_ms, &a.request_id).cmp(&(b.time_ms, &b.request_id)));
    records
}

#[tokio::test]
async fn bad_inputs_are_typed_errors() {
    let (tmp, archive) = temp_archive("errors");
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
    assert!(matches!(&err, Err(ArchiveError::Corrupt { path, .. }) if path.ends_with("batch-junk.parquet")), "{err:?}");
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
    let (_tmp, archive) = temp_archive("send");
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
