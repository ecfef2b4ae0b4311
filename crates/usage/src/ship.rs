//! A cluster api node's side of the usage pipeline: its sealed spool batches are handed to a
//! shipper (the JetStream usage stream, wired by the binary) oldest first, and each is removed
//! from the spool only once the shipper has it stored. A batch shipped and not yet removed when
//! the node dies is shipped again after the restart, under the same batch id: the stream's
//! de-duplication and the aggregators' applied-batch record make it count once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::record::UsageRecord;
use crate::spool::{Spool, SpoolError};

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("shipping usage batch {batch}: {message}")]
    Ship { batch: String, message: String },
    #[error("usage task failed: {0}")]
    Task(String),
}

/// Ships every sealed batch of `spool`, oldest first; returns the records shipped. Stops at the
/// first batch `ship` refuses (the rest wait, in order, for the next call).
pub async fn ship_spool<F, Fut>(spool: &Arc<Spool>, ship: &F) -> Result<usize, ShipError>
where
    F: Fn(String, Vec<UsageRecord>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let source = spool.clone();
    blocking(move || source.tick()).await??;
    let source = spool.clone();
    let batches = blocking(move || source.sealed()).await??;
    let mut shipped = 0;
    for batch in batches {
        let (source, sealed) = (spool.clone(), batch.clone());
        let records = blocking(move || source.take(&sealed)).await??;
        let count = records.len();
        ship(batch.id.clone(), records)
            .await
            .map_err(|message| ShipError::Ship { batch: batch.id.clone(), message })?;
        spool.remove(&batch)?;
        shipped += count;
    }
    Ok(shipped)
}

/// The cluster api node's usage loop: a group fsync of the spool every `fsync_interval`, the
/// sealed batches shipped every `ship_every` fsyncs; when `stop` resolves, the open batch is
/// sealed and everything shipped that can be (what cannot stays in the spool for the next start).
pub async fn run_shipping<F, Fut>(
    spool: Arc<Spool>,
    ship: F,
    fsync_interval: Duration,
    ship_every: u32,
    stop: impl Future<Output = ()>,
) where
    F: Fn(String, Vec<UsageRecord>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut ticks = tokio::time::interval(fsync_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    let mut failing = false;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => {}
        }
        n = n.wrapping_add(1);
        let result = if n.is_multiple_of(ship_every.max(1)) {
            ship_spool(&spool, &ship).await.map(drop)
        } else {
            let source = spool.clone();
            blocking(move || source.tick()).await.and_then(|r| r.map_err(ShipError::from))
        };
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
    }
    let source = spool.clone();
    if let Err(e) = blocking(move || source.flush()).await.and_then(|r| r.map_err(ShipError::from)) {
        tracing::error!(error = %e, "usage: sealing the last batch failed; it is recovered at the next start");
    }
    match ship_spool(&spool, &ship).await {
        Ok(records) => tracing::info!(records, "usage: last batches shipped"),
        Err(e) => tracing::warn!(error = %e, "usage: last batches stay in the spool for the next start"),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ShipError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ShipError::Task(e.to_string()))
}
