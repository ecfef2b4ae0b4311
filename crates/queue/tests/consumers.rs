//! The job stream's consumers against a real nats-server: one per lane, so a small job published
//! after medium ones is pulled at once by a small pull instead of waiting behind them; and the
//! consumer older versions shared for small and medium jobs, which overlaps the new ones (a
//! work-queue stream refuses that), is retired without losing its jobs.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use lab::{NatsCluster, NatsOptions};
use queue::{PullClass, QueueConfig};

fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("queue-consumers-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The payload of the next job `consumer` delivers (within 5 s), acknowledged.
async fn pull_one(consumer: &consumer::Consumer<consumer::pull::Config>) -> Option<String> {
    let mut batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(5)).messages().await.expect("fetch");
    let message = batch.next().await?.expect("a delivery");
    message.ack().await.expect("ack");
    Some(String::from_utf8_lossy(&message.payload).into_owned())
}

#[tokio::test]
async fn each_lane_has_its_consumer_and_the_shared_one_of_older_versions_is_retired() {
    let dir = temp_dir("lanes");
    let opts = NatsOptions { nodes: 1, die_with_parent: true, ..NatsOptions::default() };
    let nats = NatsCluster::start(&dir, &opts).expect("a one-node NATS server");
    let client = queue::connect(&nats.client_urls(), "consumers-test", None, None).await.expect("NATS");
    let js = jetstream::new(client);
    let config = QueueConfig { replicas: 1, ..QueueConfig::default() };
    let stream = queue::ensure_stream(&js, &config).await.expect("the job stream");

    // What a cluster of the previous version has: one consumer for `jobs.fast.*`, holding a job.
    let retired = config.retired_consumer_name();
    stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(retired.clone()),
            filter_subject: format!("{}.fast.*", config.subject_prefix),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("the older version's consumer");
    js.publish(config.subject(dispatch::Lane::Medium), "left by the older version".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let overlapping = queue::ensure_consumer(&stream, &config, PullClass::Small).await;
    assert!(overlapping.is_err(), "a work-queue stream took a consumer overlapping the older one");

    queue::retire_fast_consumer(&stream, &config).await.expect("retired");
    queue::retire_fast_consumer(&stream, &config).await.expect("retiring again finds nothing and is fine");
    let mut consumers = Vec::new();
    for class in PullClass::ALL {
        consumers.push(queue::ensure_consumer(&stream, &config, class).await.expect("a consumer per lane"));
    }
    let [small, medium, _large] = &consumers[..] else { unreachable!("three classes") };
    for i in 0..3 {
        js.publish(config.subject(dispatch::Lane::Medium), format!("medium {i}").into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    js.publish(config.subject(dispatch::Lane::Small), "small".into()).await.expect("publish").await.expect("stored");

    assert_eq!(pull_one(small).await.as_deref(), Some("small"), "the small job waits for no medium one");
    assert_eq!(pull_one(medium).await.as_deref(), Some("left by the older version"), "the old consumer's job stays");
    assert_eq!(pull_one(medium).await.as_deref(), Some("medium 0"));
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
}
