//! The usage stream against a real nats-server: made without an age limit; one made by an older
//! version (a week's limit, after which unbilled batches were deleted) is found out, and the
//! operator's lift keeps its batches.

use std::time::Duration;

use std::path::PathBuf;

use async_nats::jetstream::{self, stream};
use lab::{NatsCluster, NatsOptions};

/// A one-node NATS server in a fresh temporary directory, and a JetStream client of it with every
/// permission (what the `resizer` operator login has).
async fn one_node(label: &str) -> (NatsCluster, PathBuf, jetstream::Context) {
    let dir = std::env::temp_dir().join(format!("queue-usage-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let opts = NatsOptions { nodes: 1, die_with_parent: true, ..NatsOptions::default() };
    let nats = NatsCluster::start(&dir, &opts).expect("a one-node NATS server");
    let client = queue::connect(&nats.client_urls(), label, None, None).await.expect("NATS");
    (nats, dir, jetstream::new(client))
}

#[tokio::test]
async fn the_usage_stream_keeps_unbilled_batches_however_long_no_aggregator_runs() {
    let (nats, dir, js) = one_node("stream").await;

    // As an older version made it.
    let week = Duration::from_secs(7 * 24 * 3600);
    js.create_stream(stream::Config {
        name: queue::USAGE_STREAM.into(),
        subjects: vec![queue::USAGE_SUBJECT.into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        max_age: week,
        ..Default::default()
    })
    .await
    .expect("the older stream");
    js.publish(queue::USAGE_SUBJECT, "[]".into()).await.expect("publish").await.expect("stored");

    let stream = queue::ensure_usage_stream(&js, 1).await.expect("the existing stream is kept");
    assert_eq!(queue::usage_age_limit(&stream), Some(week), "the aggregators' check finds it");
    // The operator's step (this client logs in with every permission, as `resizer` does).
    assert_eq!(queue::lift_usage_age_limit(&js, &stream).await.expect("lifted"), Some(week));
    let mut stream = js.get_stream(queue::USAGE_STREAM).await.expect("stream");
    let info = stream.info().await.expect("info");
    assert_eq!((info.config.max_age, info.state.messages), (Duration::ZERO, 1), "no limit, the batch kept");
    assert_eq!(queue::lift_usage_age_limit(&js, &stream).await.expect("nothing to lift"), None);

    // A fresh cluster's stream has none to begin with.
    js.delete_stream(queue::USAGE_STREAM).await.expect("deleted");
    let fresh = queue::ensure_usage_stream(&js, 1).await.expect("made");
    assert_eq!(queue::usage_age_limit(&fresh), None);
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A batch's JetStream id carries part of its signature: a message forged under the batch's
/// plain id (which anyone can guess) and stored first, within the duplicate window, does not make
/// the stream drop the genuine batch as a duplicate, as it would an unsigned one.
#[tokio::test]
async fn a_message_stored_first_under_a_batchs_plain_id_does_not_take_the_signed_batchs_place() {
    let (nats, dir, js) = one_node("forged").await;
    queue::ensure_usage_stream(&js, 1).await.expect("the usage stream");

    let forged = |id: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        headers
    };
    js.publish_with_headers(queue::USAGE_SUBJECT, forged("b-1"), "[]".into())
        .await
        .expect("publish")
        .await
        .expect("the forgery is stored");
    let secret = queue::BatchSigningSecret::new(&"s".repeat(16).repeat(3)).expect("a secret");
    let signer = queue::UsageSigner::new("api-0", secret.node_key("api-0").expect("a key")).expect("a signer");
    let genuine = queue::ship_batch(&js, "b-1", "[]".into(), Some(&signer), &[]).await.expect("shipped");
    let unsigned = queue::ship_batch(&js, "b-1", "[]".into(), None, &[]).await.expect("shipped");

    let mut stream = js.get_stream(queue::USAGE_STREAM).await.expect("stream");
    let messages = stream.info().await.expect("info").state.messages;
    assert_eq!(genuine, 2, "the signed batch is stored after the forgery, not taken for it");
    assert_eq!(unsigned, 1, "the control: unsigned, the stream takes it for the forgery (its sequence)");
    assert_eq!(messages, 2);
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
}
