//! The usage stream: api nodes ship their sealed spool batches here, and the usage aggregators
//! (`resizer usage`) consume them. Each batch is published under its batch id as the JetStream
//! message id (with part of its signature appended when the node signs: `usage_auth.rs`), so a
//! publish sent again at once because its acknowledgement did not come is stored once; past the
//! duplicate window ([`USAGE_DUPLICATE_WINDOW`]) the aggregators' own record of applied batch ids
//! still applies a batch once, however often it is stored.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;

use crate::error::QueueError;
use crate::usage_auth::UsageSigner;

pub const USAGE_STREAM: &str = "USAGE";
pub const USAGE_SUBJECT: &str = "usage.batches";
/// The durable consumer all aggregators share: each batch goes to one of them at a time.
pub const USAGE_CONSUMER: &str = "aggregators";

/// Where an aggregator tells an api node that a message it shipped is in the rollups:
/// `usage.applied.<node id>`, the message id as the payload. Only then does the node delete the
/// batch from its spool. A JetStream acknowledgement is not enough to delete it: nats-server
/// acknowledges before it syncs to disk, and acknowledged writes have been lost (power failure
/// of every node; a crash with a partition).
pub fn usage_applied_subject(node: &str) -> String {
    format!("{USAGE_APPLIED_PREFIX}.{node}")
}

/// See [`usage_applied_subject`].
pub const USAGE_APPLIED_PREFIX: &str = "usage.applied";

/// How long the usage stream takes a message id it has seen for a copy of what it stored. It
/// covers a publish sent again at once (its acknowledgement lost, `ship_batch`'s caller retrying)
/// and must end well before an api node ships an unconfirmed batch again (`usage.confirm_wait_ms`,
/// 30 s by default): that batch is shipped again because the stream lost it, or holds it where
/// no aggregator is handed it (a stream or consumer state reset after a partition), and within
/// the window nats-server answers such a copy as a duplicate of the lost one, with the lost
/// one's sequence, and stores nothing. With the 120 s it had before, a lost batch was stored
/// again only at its fourth shipment, 3.5 minutes after the first. A copy stored twice costs
/// nothing: the aggregators apply each batch id once.
pub const USAGE_DUPLICATE_WINDOW: Duration = Duration::from_secs(10);

/// The stream, created if missing: work-queue retention (a batch leaves once an aggregator has
/// applied it), `replicas` copies, and no age limit: what is here is not billed yet, and must
/// stay however long the aggregators are down. What bounds it is JetStream's storage: a full
/// store refuses new batches, which then stay in the api nodes' spools (nothing is dropped).
pub async fn ensure_usage_stream(js: &jetstream::Context, replicas: usize) -> Result<stream::Stream, QueueError> {
    js.get_or_create_stream(stream::Config {
        name: USAGE_STREAM.into(),
        subjects: vec![USAGE_SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        max_age: Duration::ZERO,
        duplicate_window: USAGE_DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| QueueError::Unavailable(format!("creating the {USAGE_STREAM} stream: {e}")))
}

/// The usage stream's duplicate window if it is longer than [`USAGE_DUPLICATE_WINDOW`]: a stream
/// made by an older version has 120 s, in which a batch shipped again for being lost is taken
/// for the lost copy. The aggregators say so at start; shortening it is the operator's step, as
/// for the age limit ([`usage_age_limit`]).
pub fn usage_duplicate_window_too_long(stream: &stream::Stream) -> Option<Duration> {
    let window = stream.cached_info().config.duplicate_window;
    (window > USAGE_DUPLICATE_WINDOW).then_some(window)
}

/// The usage stream's age limit, if it has one: versions before this one made the stream with a
/// week's, after which JetStream deletes unbilled batches while no aggregator runs. The
/// aggregators say so loudly at start; lifting it is an operator's step with the `resizer` NATS
/// login (`docs/cluster.md`), since the permission to update a stream's configuration is far
/// wider than this one setting (subjects, limits, republishing) and no role should hold it.
pub fn usage_age_limit(stream: &stream::Stream) -> Option<Duration> {
    let max_age = stream.cached_info().config.max_age;
    (!max_age.is_zero()).then_some(max_age)
}

/// Lifts the usage stream's age limit (see [`usage_age_limit`]): for an operator's login.
pub async fn lift_usage_age_limit(
    js: &jetstream::Context,
    stream: &stream::Stream,
) -> Result<Option<Duration>, QueueError> {
    let Some(old) = usage_age_limit(stream) else { return Ok(None) };
    let mut config = stream.cached_info().config.clone();
    config.max_age = Duration::ZERO;
    js.update_stream(config).await.map_err(|e| {
        QueueError::Unavailable(format!("lifting the {USAGE_STREAM} stream's age limit ({old:?}): {e}"))
    })?;
    Ok(Some(old))
}

/// The aggregators' consumer: a batch not acknowledged within `ack_wait` (its aggregator died)
/// goes to another; it is retried for as long as it takes.
pub async fn ensure_usage_consumer(
    stream: &stream::Stream,
    ack_wait: Duration,
) -> Result<consumer::Consumer<consumer::pull::Config>, QueueError> {
    stream
        .get_or_create_consumer(
            USAGE_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(USAGE_CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: 1000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| QueueError::Unavailable(format!("creating the {USAGE_CONSUMER} consumer: {e}")))
}

/// The most JSON one usage message carries: half of NATS's default `max_payload` (1 MiB), so a
/// busy node's batch (up to 20,000 records) never makes a message a server refuses.
pub const USAGE_PART_BYTES: usize = 512 << 10;

/// A batch as the messages that carry it, each a JSON array of records: one message under the
/// batch id when the batch fits in [`USAGE_PART_BYTES`] (as every batch was shipped before parts
/// existed), else parts under `<batch id>_p<n>`, each applied once by its own id downstream. The
/// split depends only on the records, so a batch shipped again after a crash gets the same ids.
pub fn usage_messages<T: serde::Serialize>(
    batch_id: &str,
    records: &[T],
) -> Result<Vec<(String, Vec<u8>)>, serde_json::Error> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut part = Vec::with_capacity(USAGE_PART_BYTES.min(64 << 10));
    for record in records {
        let encoded = serde_json::to_vec(record)?;
        // 2: the brackets; 1: the comma before this record.
        if !part.is_empty() && part.len() + 1 + encoded.len() + 2 > USAGE_PART_BYTES {
            parts.push(std::mem::take(&mut part));
        }
        part.push(if part.is_empty() { b'[' } else { b',' });
        part.extend_from_slice(&encoded);
    }
    if part.is_empty() {
        part.push(b'[');
    }
    parts.push(part);
    for part in &mut parts {
        part.push(b']');
    }
    if parts.len() == 1 {
        return Ok(vec![(batch_id.to_owned(), parts.remove(0))]);
    }
    Ok(parts.into_iter().enumerate().map(|(i, part)| (format!("{batch_id}_p{i:03}"), part)).collect())
}

/// Publishes one batch and waits until JetStream has stored it (or knew it already): signed by
/// `signer` when the node has a key (`usage_auth`), its JetStream id then carrying part of the
/// signature; else unsigned under its batch id. `extra_headers` travel with it unsigned (the
/// quota periods hint: `usage::QUOTA_PERIODS_HEADER`).
pub async fn ship_batch(
    js: &jetstream::Context,
    batch_id: &str,
    payload: Bytes,
    signer: Option<&UsageSigner>,
    extra_headers: &[(&str, &str)],
) -> Result<u64, QueueError> {
    let mut headers = match signer {
        Some(signer) => signer.headers(batch_id, &payload),
        None => {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, batch_id);
            headers
        }
    };
    for (name, value) in extra_headers {
        headers.insert(*name, *value);
    }
    let ack = js
        .publish_with_headers(USAGE_SUBJECT, headers, payload)
        .await
        .map_err(|e| QueueError::Unavailable(format!("shipping usage batch {batch_id}: {e}")))?;
    let stored = ack.await.map_err(|e| QueueError::Unavailable(format!("shipping usage batch {batch_id}: {e}")))?;
    Ok(stored.sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
    struct Row {
        id: u32,
        params: String,
    }

    #[test]
    fn a_small_batch_is_one_message_under_its_own_id() {
        let rows: Vec<Row> = (0..3).map(|id| Row { id, params: "width=10".into() }).collect();
        let messages = usage_messages("b-1", &rows).expect("encoded");
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].0, "b-1");
        assert_eq!(serde_json::from_slice::<Vec<Row>>(&messages[0].1).expect("JSON"), rows);
        let empty = usage_messages::<Row>("b-2", &[]).expect("encoded");
        assert_eq!(empty, [("b-2".to_owned(), b"[]".to_vec())]);
    }

    #[test]
    fn a_large_batch_is_split_into_parts_under_the_bound_the_same_way_every_time() {
        // 20,000 records with 200-byte queries: about 4.5 MB of JSON.
        let rows: Vec<Row> = (0..20_000).map(|id| Row { id, params: "q".repeat(200) }).collect();
        let messages = usage_messages("1764170000000-000001-00ff", &rows).expect("encoded");
        assert!(messages.len() >= 9, "{} parts", messages.len());
        let mut decoded = Vec::new();
        for (i, (id, payload)) in messages.iter().enumerate() {
            assert_eq!(id, &format!("1764170000000-000001-00ff_p{i:03}"));
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{id}");
            assert!(payload.len() <= USAGE_PART_BYTES, "part {i}: {} bytes", payload.len());
            decoded.extend(serde_json::from_slice::<Vec<Row>>(payload).expect("each part is JSON"));
        }
        assert_eq!(decoded, rows, "every record once, in order");
        assert_eq!(usage_messages("1764170000000-000001-00ff", &rows).expect("again"), messages, "deterministic");
    }
}
