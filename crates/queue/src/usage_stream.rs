//! The usage stream: api nodes ship their sealed spool batches here, and the usage aggregators
//! (`resizer usage`) consume them. Each batch is published under its batch id as the JetStream
//! message id, so a batch shipped twice inside the duplicate window (an api node that died after
//! publishing and before removing the batch from its spool) is stored once; past the window the
//! aggregators' own record of applied batch ids still applies it once.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;

use crate::error::QueueError;

pub const USAGE_STREAM: &str = "USAGE";
pub const USAGE_SUBJECT: &str = "usage.batches";
/// The durable consumer all aggregators share: each batch goes to one of them at a time.
pub const USAGE_CONSUMER: &str = "aggregators";

/// The stream, created if missing: work-queue retention (a batch leaves once an aggregator has
/// applied it), `replicas` copies, kept up to a week while no aggregator runs.
pub async fn ensure_usage_stream(js: &jetstream::Context, replicas: usize) -> Result<stream::Stream, QueueError> {
    js.get_or_create_stream(stream::Config {
        name: USAGE_STREAM.into(),
        subjects: vec![USAGE_SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| QueueError::Unavailable(format!("creating the {USAGE_STREAM} stream: {e}")))
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

/// Publishes one batch and waits until JetStream has stored it (or knew it already).
pub async fn ship_batch(js: &jetstream::Context, batch_id: &str, payload: Bytes) -> Result<(), QueueError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, batch_id);
    let ack = js
        .publish_with_headers(USAGE_SUBJECT, headers, payload)
        .await
        .map_err(|e| QueueError::Unavailable(format!("shipping usage batch {batch_id}: {e}")))?;
    ack.await.map_err(|e| QueueError::Unavailable(format!("shipping usage batch {batch_id}: {e}")))?;
    Ok(())
}
