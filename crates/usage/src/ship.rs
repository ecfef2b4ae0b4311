//! A cluster api node's side of the usage pipeline: its sealed spool batches are handed to a
//! shipper (the JetStream usage stream, wired by the binary) oldest first, and each is removed
//! from the spool only once an aggregator has said it is in the rollups ([`Confirmations`]),
//! not when the stream has stored it: a stream can lose what it acknowledged (nats-server
//! acknowledges before it syncs to disk). A batch shipped and not confirmed within
//! `confirm_wait` is shipped again, the wait doubling up to [`MAX_CONFIRM_WAIT`]; after a
//! restart every batch left is shipped again. However often a batch arrives, the aggregators'
//! record of applied batch ids makes it count once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::record::UsageRecord;
use crate::spool::{Spool, SpoolError};
use crate::spool_loop::{run_spool_loop, sealed_batches, take_batch};

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("shipping usage batch {batch}: {message}")]
    Ship { batch: String, message: String },
    #[error("usage task failed: {0}")]
    Task(String),
}

/// Longest wait between two shipments of a batch no aggregator has confirmed: while they are
/// down for hours, each batch is shipped again about once in this, not every few seconds.
pub const MAX_CONFIRM_WAIT: Duration = Duration::from_secs(15 * 60);

/// Message ids an aggregator has confirmed applied, as they arrive (the binary feeds them from
/// `usage.applied.<node>`), until the batch they belong to is removed.
#[derive(Debug, Default)]
pub struct Confirmations {
    ids: Mutex<HashSet<String>>,
}

/// Confirmations kept at most: ones that match no batch (a batch confirmed twice after being
/// shipped twice) would otherwise pile up. Past it they are dropped; a batch whose confirmation
/// was dropped with them is shipped once more and confirmed again.
const CONFIRMATIONS_KEPT: usize = 100_000;

impl Confirmations {
    pub fn confirm(&self, message_id: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.len() >= CONFIRMATIONS_KEPT {
            ids.clear();
        }
        ids.insert(message_id.to_owned());
    }

    /// Whether every one of `message_ids` is confirmed; if so they are forgotten.
    fn take_all(&self, message_ids: &[String]) -> bool {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if !message_ids.iter().all(|id| ids.contains(id)) {
            return false;
        }
        for id in message_ids {
            ids.remove(id);
        }
        true
    }
}

/// A batch shipped and not confirmed yet.
#[derive(Debug, Clone)]
struct Shipped {
    /// The messages it went as (one, or its parts).
    message_ids: Vec<String>,
    /// When it is shipped again if still unconfirmed, and the wait after that.
    again_at: Instant,
    wait: Duration,
}

/// The shipping state a node keeps between passes: what is shipped and waits for its
/// confirmation. In memory only: after a restart every batch left in the spool is shipped again.
#[derive(Debug)]
pub struct Shipments {
    confirmations: Arc<Confirmations>,
    confirm_wait: Duration,
    shipped: Mutex<HashMap<String, Shipped>>,
    shipped_again: AtomicU64,
}

impl Shipments {
    pub fn new(confirmations: Arc<Confirmations>, confirm_wait: Duration) -> Shipments {
        Shipments { confirmations, confirm_wait, shipped: Mutex::default(), shipped_again: AtomicU64::new(0) }
    }

    fn shipped(&self) -> std::sync::MutexGuard<'_, HashMap<String, Shipped>> {
        self.shipped.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Batches shipped and waiting for their confirmation.
    pub fn unconfirmed(&self) -> usize {
        self.shipped().len()
    }

    /// Batches shipped again for want of a confirmation, since the start.
    pub fn shipped_again(&self) -> u64 {
        self.shipped_again.load(Ordering::Relaxed)
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShipPass {
    /// Records in batches shipped (for the first time or again).
    pub shipped: usize,
    /// Of the batches shipped, those shipped again for want of a confirmation.
    pub shipped_again: usize,
    /// Batches confirmed and removed from the spool.
    pub removed: usize,
}

/// One pass over the sealed batches of `spool`, oldest first: a confirmed batch is removed, one
/// never shipped (or unconfirmed past its wait) is shipped, the others wait. `ship` returns the
/// ids of the messages the batch went as. Stops at the first batch `ship` refuses (the rest wait,
/// in order, for the next pass).
pub async fn ship_spool<F, Fut>(spool: &Arc<Spool>, shipments: &Shipments, ship: &F) -> Result<ShipPass, ShipError>
where
    F: Fn(String, Vec<UsageRecord>) -> Fut,
    Fut: Future<Output = Result<Vec<String>, String>>,
{
    let mut pass = ShipPass::default();
    for batch in sealed_batches(spool, ShipError::Task).await? {
        let known = shipments.shipped().get(&batch.id).cloned();
        let again = match known {
            Some(shipped) if shipments.confirmations.take_all(&shipped.message_ids) => {
                spool.remove(&batch)?;
                shipments.shipped().remove(&batch.id);
                pass.removed += 1;
                continue;
            }
            Some(shipped) if Instant::now() < shipped.again_at => continue,
            Some(shipped) => Some(shipped.wait),
            None => None,
        };
        let records = take_batch(spool, &batch, ShipError::Task).await?;
        let count = records.len();
        let message_ids = ship(batch.id.clone(), records)
            .await
            .map_err(|message| ShipError::Ship { batch: batch.id.clone(), message })?;
        let wait = match again {
            Some(last) => {
                tracing::warn!(
                    batch = batch.id,
                    waited_s = last.as_secs(),
                    "usage: no aggregator confirmed this batch; shipped again (it stays in the spool until one does)"
                );
                pass.shipped_again += 1;
                shipments.shipped_again.fetch_add(1, Ordering::Relaxed);
                (last * 2).min(MAX_CONFIRM_WAIT)
            }
            None => shipments.confirm_wait,
        };
        shipments.shipped().insert(batch.id.clone(), Shipped { message_ids, again_at: Instant::now() + wait, wait });
        pass.shipped += count;
    }
    Ok(pass)
}

/// The cluster api node's usage loop: a group fsync of the spool every `fsync_interval`, a
/// shipping pass every `ship_every` fsyncs; when `stop` resolves, the open batch is sealed and
/// shipped, confirmations are awaited for up to `final_wait`, and what is not confirmed stays in
/// the spool for the next start.
pub async fn run_shipping<F, Fut>(
    spool: Arc<Spool>,
    shipments: Arc<Shipments>,
    ship: F,
    fsync_interval: Duration,
    ship_every: u32,
    final_wait: Duration,
    stop: impl Future<Output = ()>,
) where
    F: Fn(String, Vec<UsageRecord>) -> Fut,
    Fut: Future<Output = Result<Vec<String>, String>>,
{
    let (spool, ship, shipments) = (&spool, &ship, &shipments);
    let mut failing = false;
    run_spool_loop(
        spool,
        fsync_interval,
        ship_every,
        stop,
        ShipError::Task,
        || async move { ship_spool(spool, shipments, ship).await.map(drop) },
        |result| {
            match result {
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "usage: batches not shipped; they stay in the spool and are retried");
                    failing = true;
                }
                Ok(()) if failing => {
                    tracing::info!("usage: shipping resumed");
                    failing = false;
                }
                _ => {}
            }
            std::future::ready(())
        },
    )
    .await;
    let give_up = Instant::now() + final_wait;
    loop {
        match ship_spool(spool, shipments, ship).await {
            Ok(_) if shipments.unconfirmed() == 0 => {
                tracing::info!("usage: every batch shipped and confirmed");
                return;
            }
            Ok(_) if Instant::now() < give_up => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "usage: last batches stay in the spool for the next start");
                return;
            }
        }
    }
    tracing::info!(
        unconfirmed = shipments.unconfirmed(),
        "usage: batches not confirmed yet stay in the spool and are shipped again at the next start"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::spool::{Spool, SpoolConfig};

    fn record(n: u64) -> UsageRecord {
        UsageRecord {
            request_id: format!("r{n}").into(),
            tenant: 1,
            node: "api-0".into(),
            status: 200,
            ..Default::default()
        }
    }

    /// The binary spawns the loop on the runtime: its future must be `Send`.
    #[test]
    fn the_shipping_loop_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        fn check(spool: Arc<Spool>, shipments: Arc<Shipments>) {
            let ship = |id: String, _: Vec<UsageRecord>| async move { Ok(vec![id]) };
            send(&run_shipping(spool, shipments, ship, Duration::ZERO, 1, Duration::ZERO, std::future::pending()));
        }
        let _ = check;
    }

    /// A batch the stream has stored stays in the spool until an aggregator confirms it (a stream
    /// may lose what it acknowledged), is shipped again after the wait, the wait doubling, and
    /// goes once confirmed.
    #[tokio::test(start_paused = true)]
    async fn a_batch_leaves_the_spool_only_once_an_aggregator_confirms_it() {
        let dir = std::env::temp_dir().join(format!("usage-ship-confirm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = Arc::new(Spool::open(&dir, SpoolConfig::default()).expect("spool"));
        spool.append(record(1)).expect("append");
        spool.flush().expect("sealed");
        let confirmations = Arc::new(Confirmations::default());
        let shipments = Shipments::new(confirmations.clone(), Duration::from_secs(30));
        let sent = Arc::new(AtomicUsize::new(0));
        let ship = |id: String, records: Vec<UsageRecord>| {
            let sent = sent.clone();
            async move {
                assert_eq!(records, vec![record(1)]);
                sent.fetch_add(1, Ordering::SeqCst);
                Ok(vec![format!("{id}_p000"), format!("{id}_p001")])
            }
        };
        let pass = ship_spool(&spool, &shipments, &ship).await.expect("pass");
        assert_eq!((pass.shipped, sent.load(Ordering::SeqCst), shipments.unconfirmed()), (1, 1, 1));
        assert_eq!(spool.sealed().expect("sealed").len(), 1, "stored by the stream, still in the spool");

        tokio::time::advance(Duration::from_secs(29)).await;
        ship_spool(&spool, &shipments, &ship).await.expect("pass");
        assert_eq!(sent.load(Ordering::SeqCst), 1, "not shipped again within the wait");
        tokio::time::advance(Duration::from_secs(2)).await;
        let pass = ship_spool(&spool, &shipments, &ship).await.expect("pass");
        assert_eq!((pass.shipped_again, sent.load(Ordering::SeqCst)), (1, 2), "shipped again past the wait");
        tokio::time::advance(Duration::from_secs(31)).await;
        ship_spool(&spool, &shipments, &ship).await.expect("pass");
        assert_eq!(sent.load(Ordering::SeqCst), 2, "the wait doubled to 60 s");

        let batch = spool.sealed().expect("sealed").remove(0).id;
        confirmations.confirm(&format!("{batch}_p000"));
        ship_spool(&spool, &shipments, &ship).await.expect("pass");
        assert_eq!(spool.sealed().expect("sealed").len(), 1, "one part of two confirmed is not enough");
        confirmations.confirm(&format!("{batch}_p001"));
        let pass = ship_spool(&spool, &shipments, &ship).await.expect("pass");
        assert_eq!((pass.removed, shipments.unconfirmed()), (1, 0));
        assert!(spool.sealed().expect("sealed").is_empty(), "confirmed: removed");
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
