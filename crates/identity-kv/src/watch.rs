//! An api node's side: the bucket → the credential cache. The bucket's current values (one per
//! tenant and key) make a snapshot; each later put is the next change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use identity::{CacheError, Change, ChangeKind, Credential, CredentialCache, Snapshot, TenantId, TenantState};

use crate::codec::{age_ms, decode};
use crate::relay::{BUCKET, RELAYED_KEY};

/// How the node's credentials keep up, for `/readyz` details and metrics.
#[derive(Debug, Default)]
pub struct ReplicaStatus {
    watching: AtomicBool,
    /// Unix ms when the watch last started or delivered.
    last_contact_ms: AtomicU64,
    /// Age of the last change when it was applied: the replication lag.
    lag_ms: AtomicU64,
}

impl ReplicaStatus {
    /// Whether the watch is live (caught up and receiving).
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    /// From a change's commit in the store to its application here, for the last change.
    pub fn lag(&self) -> Duration {
        Duration::from_millis(self.lag_ms.load(Ordering::Relaxed))
    }

    /// Since the watch last heard from NATS; `None` before it ever did.
    pub fn since_contact(&self) -> Option<Duration> {
        match self.last_contact_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(now_ms().saturating_sub(ms))),
        }
    }

    fn contact(&self) {
        self.last_contact_ms.store(now_ms(), Ordering::Relaxed);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs forever, feeding `cache` from the bucket; reconnects after any failure, while the cache
/// keeps serving what it has.
pub async fn watch(js: jetstream::Context, cache: Arc<CredentialCache>, status: Arc<ReplicaStatus>) {
    // Each interruption of a live watch is logged; while it cannot be made again, only the first
    // failure is (it retries every 250 ms).
    let mut complained = false;
    loop {
        let error = watch_once(&js, &cache, &status).await;
        if status.watching.swap(false, Ordering::Relaxed) {
            complained = false;
        }
        if !complained {
            tracing::warn!(error, "identity watch interrupted; serving the last known credentials");
            complained = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One watch, until it fails; the reason is returned.
async fn watch_once(js: &jetstream::Context, cache: &CredentialCache, status: &ReplicaStatus) -> String {
    let bucket: kv::Store = match js.get_key_value(BUCKET).await {
        Ok(bucket) => bucket,
        Err(e) => return format!("no {BUCKET} bucket yet: {e}"),
    };
    let stream = match js.get_stream_no_info(format!("KV_{BUCKET}")).await {
        Ok(stream) => stream,
        Err(e) => return format!("the {BUCKET} bucket's stream: {e}"),
    };
    // Every revision up to the stream's last one now is in the snapshot below or gone from the
    // stream (a purge): counted as delivered, so a gone one never looks like a stall.
    let before_watch = match tokio::time::timeout(STALL_CHECK_EVERY * 5, stream.get_info()).await {
        Ok(Ok(info)) => info.state.last_sequence,
        Ok(Err(e)) => return format!("the {BUCKET} bucket's stream info: {e}"),
        Err(_) => return format!("the {BUCKET} bucket's stream info: no answer"),
    };
    let mut watch = match bucket.watch_with_history(">").await {
        Ok(watch) => watch,
        Err(e) => return format!("watching the {BUCKET} bucket: {e}"),
    };
    // The current values, up to the last one (`delta` 0); the relay's marker guarantees there
    // is at least one once the identity service has run.
    let mut current = Vec::new();
    let mut unreadable = Vec::new();
    // The bucket's newest revision this watch delivered (or that is gone): see `STALL_CHECK_EVERY`.
    let mut seen: u64 = before_watch;
    loop {
        let entry = match watch.next().await {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return format!("reading the {BUCKET} bucket: {e}"),
            None => return "the watch ended".into(),
        };
        seen = seen.max(entry.revision);
        if entry.key != RELAYED_KEY && entry.operation == kv::Operation::Put {
            match decode(&entry.value) {
                Ok(change) => current.push(change),
                Err(e) => {
                    tracing::error!(key = entry.key, error = %e, "an unreadable identity entry: its credentials are refused");
                    unreadable.push(entry.key.clone());
                }
            }
        }
        if entry.delta == 0 {
            break;
        }
    }
    let snapshot = refuse_unreadable(compacted_snapshot(current), &unreadable);
    let version = snapshot.version;
    cache.apply_snapshot(snapshot);
    status.watching.store(true, Ordering::Relaxed);
    status.contact();
    tracing::info!(version, keys = cache.len(), "credential cache loaded from the identity bucket");

    // The bucket's last revision at the previous idle check, when this watch had not delivered it.
    let mut missing: Option<u64> = None;
    loop {
        let entry = match tokio::time::timeout(STALL_CHECK_EVERY, watch.next()).await {
            Ok(Some(Ok(entry))) => entry,
            Ok(Some(Err(e))) => return format!("reading the {BUCKET} bucket: {e}"),
            Ok(None) => return "the watch ended".into(),
            Err(_idle) => {
                if let Some(stalled) = stalled_at(&stream, seen, &mut missing).await {
                    return stalled;
                }
                continue;
            }
        };
        seen = seen.max(entry.revision);
        status.contact();
        if entry.key == RELAYED_KEY || entry.operation != kv::Operation::Put {
            continue;
        }
        let change = match decode(&entry.value) {
            Ok(change) => change,
            // Reloading takes the snapshot path, which refuses what this entry stood for and
            // goes on with everything else.
            Err(e) => return format!("an unreadable identity entry {}: {e}; reloading", entry.key),
        };
        status.lag_ms.store(age_ms(change.at), Ordering::Relaxed);
        if let Err(CacheError::Gap { have, got }) = cache.apply_change(change) {
            // A put was missed (compacted away before this watch saw it): start from the
            // bucket's current values again.
            return format!("change {got} arrived after {have}; reloading");
        }
    }
}

/// How long a watch may be idle before it asks the bucket's stream for its last revision.
///
/// The watch is an ordered consumer with one replica, on one NATS server. When that server is
/// killed and restarts within the client's missed-heartbeat window (10 s), it brings the
/// consumer back (its log says so) and, by all signs, the consumer then delivers nothing while
/// the watch looks alive: the lab saw a new key still refused by one api node 5 s after it was
/// made, over 10 s after the `kill -9` of the NATS node holding that node's watch. So an
/// idle watch compares what it delivered with the stream: a revision the stream had at one check
/// and the watch still has not delivered at the next (one interval and a check later) means it
/// stalled.
const STALL_CHECK_EVERY: Duration = Duration::from_secs(1);

/// `Some(reason)` when the watch stalled: the stream's last revision at the previous check
/// (`missing`) is past `seen`. Updates `missing` with this check's answer. An unanswered check
/// stalls nothing (NATS may be electing; the watch's own heartbeat check covers a lost server).
async fn stalled_at(stream: &jetstream::stream::Stream<()>, seen: u64, missing: &mut Option<u64>) -> Option<String> {
    if let Some(expected) = *missing {
        if seen < expected {
            return Some(format!(
                "the watch stalled: the bucket has revision {expected} and the watch delivered only {seen}; reloading"
            ));
        }
    }
    let last = match tokio::time::timeout(STALL_CHECK_EVERY, stream.get_info()).await {
        Ok(Ok(info)) => info.state.last_sequence,
        _ => {
            *missing = None;
            return None;
        }
    };
    *missing = (last > seen).then_some(last);
    None
}

/// A snapshot without what an unreadable entry stood for: an entry written by a newer identity
/// service, or damaged, may be a revocation or a suspension, so its key (`k.<id>`: left out of
/// `changes` already) or every key of its tenant (`t.<id>`) is refused — never served stale,
/// and never a reason to stop taking every other change.
fn refuse_unreadable(mut snapshot: Snapshot, unreadable: &[String]) -> Snapshot {
    let tenants: Vec<u64> =
        unreadable.iter().filter_map(|key| key.strip_prefix("t.").and_then(|id| id.parse().ok())).collect();
    snapshot.credentials.retain(|c| !tenants.contains(&c.tenant.id.get()));
    snapshot
}

/// The state at the newest version among `changes`, which hold the latest change per tenant and
/// per key: each key's own latest credential, under its tenant's latest state.
fn compacted_snapshot(changes: Vec<Change>) -> Snapshot {
    let version = changes.iter().map(|c| c.version).max().unwrap_or(0);
    let mut tenants: HashMap<TenantId, (u64, TenantState)> = HashMap::new();
    let mut newer_tenant = |v: u64, t: &TenantState| {
        let slot = tenants.entry(t.id).or_insert_with(|| (v, t.clone()));
        if v >= slot.0 {
            *slot = (v, t.clone());
        }
    };
    for change in &changes {
        match &change.kind {
            ChangeKind::Tenant(t) => newer_tenant(change.version, t),
            ChangeKind::Credential(c) => newer_tenant(change.version, &c.tenant),
        }
    }
    let mut credentials: Vec<Credential> = changes
        .into_iter()
        .filter_map(|change| match change.kind {
            ChangeKind::Credential(mut c) => {
                if let Some((_, t)) = tenants.get(&c.tenant.id) {
                    c.tenant = t.clone();
                }
                Some(c)
            }
            ChangeKind::Tenant(_) => None,
        })
        .collect();
    credentials.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
    Snapshot { version, credentials }
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity::{IdentityStore, Store, TenantLimits, TenantStatus};

    #[test]
    fn an_unreadable_tenant_entry_refuses_that_tenants_keys_only() {
        let store = IdentityStore::open_in_memory().unwrap();
        let a = store.create_tenant("a", TenantLimits::default()).unwrap();
        let b = store.create_tenant("b", TenantLimits::default()).unwrap();
        store.create_key(a.id, "one").unwrap();
        let (kb, _) = store.create_key(b.id, "two").unwrap();
        let snapshot = store.snapshot().unwrap();
        let unreadable = [format!("t.{}", a.id.get()), "k.whatever".to_owned(), "t.not-a-number".to_owned()];
        let kept = refuse_unreadable(snapshot.clone(), &unreadable);
        assert_eq!(kept.version, snapshot.version);
        let keys: Vec<&str> = kept.credentials.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, [kb.id.as_str()]);
    }

    /// The compacted log (latest change per thing) gives the store's own snapshot.
    #[test]
    fn a_compacted_log_gives_the_stores_snapshot() {
        let store = IdentityStore::open_in_memory().unwrap();
        let a = store.create_tenant("a", TenantLimits::default()).unwrap();
        let b = store.create_tenant("b", TenantLimits::default()).unwrap();
        let (k1, _) = store.create_key(a.id, "one").unwrap();
        let (_k2, _) = store.create_key(a.id, "two").unwrap();
        let (_k3, _) = store.create_key(b.id, "three").unwrap();
        let actor = identity::Actor::process();
        store.revoke_key(&actor, k1.id).unwrap();
        store.set_status(&actor, a.id, TenantStatus::Suspended).unwrap();
        store.update_limits(&actor, b.id, TenantLimits { burst: Some(3), ..Default::default() }).unwrap();
        let mut latest: HashMap<String, Change> = HashMap::new();
        for change in Store::changes_since(&store, 0).unwrap() {
            latest.insert(crate::key_of(&change), change);
        }
        let compacted = compacted_snapshot(latest.into_values().collect());
        assert_eq!(compacted, store.snapshot().unwrap());
    }
}
