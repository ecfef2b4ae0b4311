//! Writing a batch: its records grouped by tenant and UTC day, one Parquet file per group, named by
//! the batch id so that a replay rewrites the same objects with the same bytes. It must not decide
//! whether a batch is new (the aggregator asks the rollups) nor merge anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStoreExt;

use super::format::{encode, Compress};
use super::objects::{check_batch_id, partition};
use super::rows::number_rows;
use super::{blocking, Archive, ArchiveError};
use crate::calendar::{date_of, DAY_MS, END_MS, MIN_MS};
use crate::record::UsageRecord;

impl Archive {
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
}

#[cfg(test)]
mod tests {
    use crate::archive::tests::{files_in, record, temp_archive, EVENING};
    use crate::record::UsageRecord;

    #[tokio::test]
    async fn writing_a_batch_twice_stores_it_once() {
        let (tmp, archive) = temp_archive("twice");
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
        let (tmp, archive) = temp_archive("same-id");
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
}
