//! A cluster api node's side of the usage pipeline: its sealed spool batches are handed to a
//! shipper (the JetStream usage stream, wired by the binary) oldest first, and each is removed
//! from the spool only once an aggregator has said it is in the rollups ([`Confirmations`]),
//! not when the stream has stored it: a stream can lose what it acknowledged (nats-server
//! acknowledges before it syncs to disk). A batch still unconfirmed `confirm_wait` after it was
//! shipped is shipped again if it looks lost — the stream no longer spans its sequence numbers,
//! or a batch shipped after it has been confirmed — and otherwise waits on (the aggregators are
//! away; copies would only fill the stream), the wait doubling up to [`MAX_CONFIRM_WAIT`]. After
//! a restart every batch left is shipped again. However often a batch arrives, the aggregators'
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
    /// Their sequence numbers in the stream (as its acknowledgements gave them).
    sequences: Vec<u64>,
    /// Shipping order on this node: a confirmed batch of a later order says the aggregators
    /// run and this one was passed over.
    order: u64,
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
    next_order: AtomicU64,
    /// The latest order among the batches confirmed so far.
    confirmed_order: AtomicU64,
}

impl Shipments {
    pub fn new(confirmations: Arc<Confirmations>, confirm_wait: Duration) -> Shipments {
        Shipments {
            confirmations,
            confirm_wait,
            shipped: Mutex::default(),
            shipped_again: AtomicU64::new(0),
            next_order: AtomicU64::new(1),
            confirmed_order: AtomicU64::new(0),
        }
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

/// The stream's first and last sequence numbers, as the shipper's stream reports them now.
pub type StreamSpan = Option<(u64, u64)>;

/// At most this many batches are shipped in one pass, so that a pass after a restart or an outage
/// (every batch due at once) does not hold up the group fsync and the cutting of batches.
const SHIPPED_PER_PASS: usize = 16;

/// One pass over the sealed batches of `spool`, oldest first: a confirmed batch is removed, one
/// never shipped is shipped, one unconfirmed past its wait is shipped again if it looks lost
/// (`span`, asked at most once a pass: the stream no longer holds its sequence numbers; or a
/// batch shipped after it is confirmed), the others wait. `ship` returns the ids and stream
/// sequence numbers of the messages the batch went as. Stops at the first batch `ship` refuses
/// (the rest wait, in order, for the next pass).
pub async fn ship_spool<F, Fut, S, SFut>(
    spool: &Arc<Spool>,
    shipments: &Shipments,
    ship: &F,
    span: &S,
) -> Result<ShipPass, ShipError>
where
    F: Fn(String, Vec<UsageRecord>) -> Fut,
    Fut: Future<Output = Result<Vec<(String, u64)>, String>>,
    S: Fn() -> SFut,
    SFut: Future<Output = StreamSpan>,
{
    let mut pass = ShipPass::default();
    let mut asked: Option<StreamSpan> = None;
    let mut sent = 0;
    for batch in sealed_batches(spool, ShipError::Task).await? {
        if sent >= SHIPPED_PER_PASS {
            break;
        }
        let known = shipments.shipped().get(&batch.id).cloned();
        let again = match known {
            Some(shipped) if shipments.confirmations.take_all(&shipped.message_ids) => {
                spool.remove(&batch)?;
                shipments.shipped().remove(&batch.id);
                shipments.confirmed_order.fetch_max(shipped.order, Ordering::Relaxed);
                pass.removed += 1;
                continue;
            }
            Some(shipped) if Instant::now() < shipped.again_at => continue,
            Some(shipped) => {
                let stream_span = match asked {
                    Some(known) => known,
                    None => *asked.insert(span().await),
                };
                let gone =
                    stream_span.is_some_and(|(first, last)| shipped.sequences.iter().any(|&s| s < first || s > last));
                let passed_over = shipments.confirmed_order.load(Ordering::Relaxed) > shipped.order;
                if !gone && !passed_over {
                    // Still in the stream, and nothing after it confirmed: the aggregators are away.
                    let wait = (shipped.wait * 2).min(MAX_CONFIRM_WAIT);
                    if let Some(entry) = shipments.shipped().get_mut(&batch.id) {
                        entry.again_at = Instant::now() + wait;
                        entry.wait = wait;
                    }
                    tracing::info!(
                        batch = batch.id,
                        "usage: batch not confirmed yet, still in the stream; waiting for an aggregator"
                    );
                    continue;
                }
                Some(shipped.wait)
            }
            None => None,
        };
        let records = take_batch(spool, &batch, ShipError::Task).await?;
        let count = records.len();
        let messages = ship(batch.id.clone(), records)
            .await
            .map_err(|message| ShipError::Ship { batch: batch.id.clone(), message })?;
        sent += 1;
        let wait = match again {
            Some(last) => {
                tracing::warn!(
                    batch = batch.id,
                    waited_s = last.as_secs(),
                    "usage: an unconfirmed batch is gone from the stream or was passed over; shipped again (it stays in the spool until an aggregator confirms it)"
                );
                pass.shipped_again += 1;
                shipments.shipped_again.fetch_add(1, Ordering::Relaxed);
                (last * 2).min(MAX_CONFIRM_WAIT)
            }
            None => shipments.confirm_wait,
        };
        let (message_ids, sequences) = messages.into_iter().unzip();
        let order = shipments.next_order.fetch_add(1, Ordering::Relaxed);
        let shipped = Shipped { message_ids, sequences, order, again_at: Instant::now() + wait, wait };
        shipments.shipped().insert(batch.id.clone(), shipped);
        pass.shipped += count;
    }
    Ok(pass)
}

/// The cluster api node's usage loop: a group fsync of the spool every `fsync_interval`, a
/// shipping pass every `ship_every` fsyncs; when `stop` resolves, the open batch is sealed and
/// shipped, confirmations are awaited for up to `final_wait`, and what is not confirmed stays in
/// the spool for the next start.
#[allow(clippy::too_many_arguments)] // each is a separate knob of the one loop the binary starts
pub async fn run_shipping<F, Fut, S, SFut>(
    spool: Arc<Spool>,
    shipments: Arc<Shipments>,
    ship: F,
    span: S,
    fsync_interval: Duration,
    ship_every: u32,
    final_wait: Duration,
    stop: impl Future<Output = ()>,
) where
    F: Fn(String, Vec<UsageRecord>) -> Fut,
    Fut: Future<Output = Result<Vec<(String, u64)>, String>>,
    S: Fn() -> SFut,
    SFut: Future<Output = StreamSpan>,
{
    let (spool, ship, shipments, span) = (&spool, &ship, &shipments, &span);
    let mut failing = false;
    run_spool_loop(
        spool,
        fsync_interval,
        ship_every,
        stop,
        ShipError::Task,
        || async move { ship_spool(spool, shipments, ship, span).await.map(drop) },
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
        match ship_spool(spool, shipments, ship, span).await {
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
            let ship = |id: String, _: Vec<UsageRecord>| async move { Ok(vec![(id, 1)]) };
            let span = || async { Some((1, 1)) };
            send(&run_shipping(
                spool,
                shipments,
                ship,
                span,
                Duration::ZERO,
                1,
                Duration::ZERO,
                std::future::pending(),
            ));
        }
        let _ = check;
    }

    /// A batch the stream has stored stays in the spool until an aggregator confirms it (a stream
    /// may lose what it acknowledged). Unconfirmed past its wait, it is not shipped again while
    /// the stream still spans it (the aggregators are away: a copy would only fill the stream);
    /// once the stream no longer does, it is, and it goes once every part is confirmed.
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
                let n = sent.fetch_add(1, Ordering::SeqCst) as u64;
                Ok(vec![(format!("{id}_p000"), 5 + 10 * n), (format!("{id}_p001"), 6 + 10 * n)])
            }
        };
        let stream_span = Arc::new(std::sync::Mutex::new(Some((1, 6))));
        let span = || {
            let stream_span = stream_span.clone();
            async move { *stream_span.lock().unwrap() }
        };
        let pass = ship_spool(&spool, &shipments, &ship, &span).await.expect("pass");
        assert_eq!((pass.shipped, sent.load(Ordering::SeqCst), shipments.unconfirmed()), (1, 1, 1));
        assert_eq!(spool.sealed().expect("sealed").len(), 1, "stored by the stream, still in the spool");

        tokio::time::advance(Duration::from_secs(31)).await;
        ship_spool(&spool, &shipments, &ship, &span).await.expect("pass");
        assert_eq!(sent.load(Ordering::SeqCst), 1, "still in the stream: not shipped again");
        *stream_span.lock().unwrap() = Some((7, 9));
        tokio::time::advance(Duration::from_secs(31)).await;
        ship_spool(&spool, &shipments, &ship, &span).await.expect("pass");
        assert_eq!(sent.load(Ordering::SeqCst), 1, "the wait doubled to 60 s");
        tokio::time::advance(Duration::from_secs(30)).await;
        let pass = ship_spool(&spool, &shipments, &ship, &span).await.expect("pass");
        assert_eq!((pass.shipped_again, sent.load(Ordering::SeqCst)), (1, 2), "gone from the stream: shipped again");
        assert_eq!(shipments.shipped_again(), 1);

        let batch = spool.sealed().expect("sealed").remove(0).id;
        confirmations.confirm(&format!("{batch}_p000"));
        ship_spool(&spool, &shipments, &ship, &span).await.expect("pass");
        assert_eq!(spool.sealed().expect("sealed").len(), 1, "one part of two confirmed is not enough");
        confirmations.confirm(&format!("{batch}_p001"));
        let pass = ship_spool(&spool, &shipments, &ship, &span).await.expect("pass");
        assert_eq!((pass.removed, shipments.unconfirmed()), (1, 0));
        assert!(spool.sealed().expect("sealed").is_empty(), "confirmed: removed");
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
