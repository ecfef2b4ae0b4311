//! Compaction: the committed batch files of one tenant-day merged, with the day's compact files,
//! into one `compact-<hash>.parquet`, within a bound on what one run reads. It must not decide
//! which batches are committed (the caller's `is_applied` says so) nor when to run (the
//! aggregator's loop does).

use std::collections::{BTreeMap, BTreeSet};

use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

use super::format::{decode, encode, Compress};
use super::objects::{file_kind, partition, FileKind};
use super::rows::{sort_dedup, Row, RowRef};
use super::{blocking, Archive, ArchiveError};
use crate::calendar::parse_date;

/// Most bytes of Parquet one compaction reads: the bound on what it holds decoded in memory.
pub const COMPACT_INPUT_BYTES: u64 = 16 << 20;

impl Archive {
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
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::{files_in, record, sorted, temp_archive, EVENING};

    #[tokio::test]
    async fn compaction_merges_applied_batches_only() {
        let (tmp, archive) = temp_archive("compact");
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
        let (tmp, archive) = temp_archive("compact-bounded");
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
}
