//! Reading the archive: a tenant's records in a time range, whole or page by page after an
//! [`AuditCursor`], each row once however many copies an interrupted compaction left. It must not
//! write or delete anything, and reads only the date partitions the range touches.

use object_store::path::Path;

use super::format::decode;
use super::objects::{check_batch_id, partition};
use super::rows::{row_key, sort_dedup, Row, RowKey};
use super::{blocking, Archive, ArchiveError};
use crate::calendar::{date_of, parse_date, END_MS, MIN_MS};
use crate::record::UsageRecord;

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

/// A read that finds a listed file gone (a concurrent compaction merged and deleted it) lists
/// again: the merged file was written before the delete, so the new listing has it.
const READ_ATTEMPTS: usize = 3;

impl Archive {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::{files_in, record, sorted, temp_archive, EVENING, MIDNIGHT};

    #[tokio::test]
    async fn write_then_read_round_trips_by_tenant_and_range() {
        let (tmp, archive) = temp_archive("roundtrip");
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
    async fn pages_of_every_size_add_up_to_the_whole_read() {
        let (_tmp, archive) = temp_archive("pages");
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
}
