//! The api node's loop over its spool, the same in both modes: a group fsync every interval and,
//! every so many fsyncs, a pass over the sealed batches, oldest first (embedded mode applies them,
//! `run_embedded`; a cluster node ships them, `run_shipping`); when told to stop, the open batch is
//! sealed. Spool calls run on the blocking pool.
//!
//! It must not know what a pass does with a batch, nor how failures are reported (each caller logs
//! its own way): both are the caller's arguments, as is its error type.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::record::UsageRecord;
use crate::spool::{SealedBatch, Spool, SpoolError};

/// Ticks `spool` every `fsync_interval` (a group fsync); every `pass_every`-th tick runs `pass`
/// instead. Each tick's result goes to `after_tick`, whose future the loop awaits before the next
/// tick. When `stop` resolves, seals the open batch and returns: the caller's last pass comes after.
/// `task_failed` makes the caller's error from a blocking task that panicked or was cancelled.
///
/// The callbacks are closures returning futures that do not borrow the closure (state an
/// `after_tick` keeps is changed in its body, before the future): async closures would be simpler
/// to write, but the future of a loop calling them cannot be proven `Send`, and the binary spawns it.
pub(crate) async fn run_spool_loop<E, PassFuture, AfterFuture>(
    spool: &Arc<Spool>,
    fsync_interval: Duration,
    pass_every: u32,
    stop: impl Future<Output = ()>,
    task_failed: fn(String) -> E,
    mut pass: impl FnMut() -> PassFuture,
    mut after_tick: impl FnMut(Result<(), E>) -> AfterFuture,
) where
    E: From<SpoolError> + Display,
    PassFuture: Future<Output = Result<(), E>>,
    AfterFuture: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(fsync_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        n = n.wrapping_add(1);
        let result = if n.is_multiple_of(pass_every.max(1)) {
            pass().await
        } else {
            let source = spool.clone();
            blocking(move || source.tick(), task_failed).await
        };
        after_tick(result).await;
    }
    let source = spool.clone();
    if let Err(e) = blocking(move || source.flush(), task_failed).await {
        tracing::error!(error = %e, "usage: sealing the last batch failed; it is recovered at the next start");
    }
}

/// A tick first (it seals the open batch if it is due by age), then the sealed batches, oldest
/// first: what a pass goes through.
pub(crate) async fn sealed_batches<E: From<SpoolError>>(
    spool: &Arc<Spool>,
    task_failed: fn(String) -> E,
) -> Result<Vec<SealedBatch>, E> {
    let source = spool.clone();
    blocking(move || source.tick(), task_failed).await?;
    let source = spool.clone();
    blocking(move || source.sealed(), task_failed).await
}

/// A sealed batch's records.
pub(crate) async fn take_batch<E: From<SpoolError>>(
    spool: &Arc<Spool>,
    batch: &SealedBatch,
    task_failed: fn(String) -> E,
) -> Result<Vec<UsageRecord>, E> {
    let (source, sealed) = (spool.clone(), batch.clone());
    blocking(move || source.take(&sealed), task_failed).await
}

async fn blocking<T: Send + 'static, E: From<SpoolError>>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
    task_failed: fn(String) -> E,
) -> Result<T, E> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(E::from),
        Err(e) => Err(task_failed(e.to_string())),
    }
}
