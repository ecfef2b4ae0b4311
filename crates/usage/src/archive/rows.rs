//! An archived row: a record and where it came from, (`batch_id`, `batch_seq`), which is what tells
//! a row from a copy of it; how a batch's records are numbered; the archive's order of rows and
//! dropping copies. It must not know files, paths or the store.

use crate::record::UsageRecord;

/// One archived row: the record and the batch that delivered it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    pub(super) batch_id: String,
    pub(super) batch_seq: u32,
    pub(super) record: UsageRecord,
}

/// A row to encode, borrowed: a batch's records are encoded without being copied.
#[derive(Clone, Copy)]
pub(super) struct RowRef<'a> {
    pub(super) batch_id: &'a str,
    pub(super) batch_seq: u32,
    pub(super) record: &'a UsageRecord,
}

impl Row {
    pub(super) fn as_ref(&self) -> RowRef<'_> {
        RowRef { batch_id: &self.batch_id, batch_seq: self.batch_seq, record: &self.record }
    }
}

/// Sorted by (time_ms, request_id, batch_id, batch_seq); copies of a row (same batch and position
/// in it: what a compaction interrupted before its deletes leaves behind) are kept once.
pub(super) fn sort_dedup(rows: &mut Vec<Row>) {
    rows.sort_by(|a, b| row_order(a.as_ref(), b.as_ref()));
    rows.dedup_by(|a, b| row_order(a.as_ref(), b.as_ref()).is_eq());
}

/// One batch's records of one file as rows in file order, (time_ms, request_id, batch_seq).
/// Records that share a time and a request id (a client may reuse its `X-Request-Id`) are told
/// apart by `batch_seq`, their rank when ordered by every field: the numbering depends on the
/// batch's records, not on the order a replay delivers them in. A batch's records arrive almost
/// in time order, which the stable sort finds in one pass.
pub(super) fn number_rows<'a>(batch_id: &'a str, mut records: Vec<&'a UsageRecord>) -> Vec<RowRef<'a>> {
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
pub(super) type RowKey<'a> = (i64, &'a str, &'a str, u32);

pub(super) fn row_key(row: RowRef<'_>) -> RowKey<'_> {
    (row.record.time_ms, &row.record.request_id, row.batch_id, row.batch_seq)
}

#[cfg(test)]
mod tests {
    use crate::archive::tests::{record, temp_archive, EVENING};

    #[tokio::test]
    async fn same_request_in_two_batches_is_not_hidden() {
        let (_tmp, archive) = temp_archive("two-batches");
        let r = record("dup", 9, EVENING);
        archive.write_batch("b1", vec![r.clone()]).await.expect("write");
        archive.write_batch("b2", vec![r.clone()]).await.expect("write");
        assert_eq!(archive.read(9, 0, i64::MAX).await.expect("read"), [r.clone(), r.clone()]);
        assert_eq!(archive.compact_day(9, "2024-03-09", &|_| true).await.expect("compact"), 2);
        assert_eq!(archive.read(9, 0, i64::MAX).await.expect("read"), [r.clone(), r]);
    }
}
