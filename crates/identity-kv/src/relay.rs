//! The identity service's relay: the store's outbox → the bucket, in version order, at least
//! once (each change is a full state, so a repeat is harmless; watchers skip versions they have).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use identity::Store;
use tokio::sync::Notify;

use crate::codec::{encode, key_of};

/// The bucket's name.
pub const BUCKET: &str = "identity";
/// The key where the relay records the last version it put (where a restarted relay resumes).
pub const RELAYED_KEY: &str = "relayed";

/// The bucket, created if missing: the latest value per key only (`history` 1: a compacted
/// change log), on disk, with `replicas` copies.
pub async fn ensure_bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    // The bucket's stream, made as the KV layer makes it. async-nats's own `create_key_value`
    // first reads the account's JetStream info, which it cannot parse from nats-server 2.9.
    js.get_or_create_stream(jetstream::stream::Config {
        name: format!("KV_{BUCKET}"),
        description: Some("resizer identity: the latest state of each tenant (t.<id>) and API key (k.<id>)".into()),
        subjects: vec![format!("$KV.{BUCKET}.>")],
        max_messages_per_subject: 1,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("creating the {BUCKET} bucket: {e}"))?;
    js.get_key_value(BUCKET).await.map_err(|e| format!("opening the {BUCKET} bucket: {e}"))
}

/// Runs forever: whenever `written` is notified (an admin write committed) and at least every
/// `interval` (writes by another identity process, retries), puts the outbox's changes after
/// the last relayed one. While PostgreSQL or NATS is down it retries; nothing is lost, since the
/// outbox keeps every change until it is relayed.
pub async fn relay(
    store: Arc<dyn Store>,
    js: jetstream::Context,
    replicas: usize,
    written: Arc<Notify>,
    interval: Duration,
) {
    let mut complained = false;
    'connect: loop {
        let bucket = match ensure_bucket(&js, replicas).await {
            Ok(bucket) => bucket,
            Err(e) => {
                complain(&mut complained, e);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut relayed = match bucket.get(RELAYED_KEY).await {
            Ok(value) => value.and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok()).unwrap_or(0),
            Err(e) => {
                complain(&mut complained, e.to_string());
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    () = written.notified() => {}
                    () = tokio::time::sleep(interval) => {}
                }
            }
            let task_store = store.clone();
            let since = relayed;
            let changes = match tokio::task::spawn_blocking(move || task_store.changes_since(since)).await {
                Ok(Ok(changes)) => changes,
                Ok(Err(e)) => {
                    complain(&mut complained, format!("reading the outbox: {e}"));
                    continue;
                }
                Err(e) => {
                    complain(&mut complained, format!("outbox reader failed: {e}"));
                    continue;
                }
            };
            for change in &changes {
                if let Err(e) = bucket.put(key_of(change), encode(change)).await {
                    complain(&mut complained, format!("putting version {}: {e}", change.version));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue 'connect;
                }
                relayed = change.version;
            }
            if first || !changes.is_empty() {
                // The marker also makes a fresh bucket non-empty, so watchers see it is current.
                if let Err(e) = bucket.put(RELAYED_KEY, relayed.to_string().into()).await {
                    complain(&mut complained, format!("recording the relayed version: {e}"));
                    continue 'connect;
                }
                if complained {
                    tracing::info!(version = relayed, "identity relay caught up");
                    complained = false;
                }
                tracing::debug!(version = relayed, changes = changes.len(), "identity changes relayed");
            }
            first = false;
        }
    }
}

/// Warns once per stall, not once per retry.
fn complain(complained: &mut bool, what: String) {
    if !*complained {
        tracing::warn!(error = what, "identity relay stalled; retrying");
        *complained = true;
    }
}
