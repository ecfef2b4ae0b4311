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

/// Ships every sealed batch of `spool`, oldest first; returns the records shipped. Stops at the
/// first batch `ship` refuses (the rest wait, in order, for the next call).
pub async fn ship_spool<F, Fut>(spool: &Arc<Spool>, ship: &F) -> Result<usize, ShipError>
where
    F: Fn(String, Vec<UsageRecord>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut shipped = 0;
    for batch in sealed_batches(spool, ShipError::Task).await? {
        let records = take_batch(spool, &batch, ShipError::Task).await?;
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
    let (spool, ship) = (&spool, &ship);
    let mut failing = false;
    run_spool_loop(
        spool,
        fsync_interval,
        ship_every,
        stop,
        ShipError::Task,
        || async move { ship_spool(spool, ship).await.map(drop) },
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
    match ship_spool(spool, ship).await {
        Ok(records) => tracing::info!(records, "usage: last batches shipped"),
        Err(e) => tracing::warn!(error = %e, "usage: last batches stay in the spool for the next start"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::run_shipping;
    use crate::spool::Spool;

    /// The binary spawns the loop on the runtime: its future must be `Send`.
    #[test]
    fn the_shipping_loop_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        fn check(spool: Arc<Spool>) {
            let ship = |_: String, _: Vec<crate::record::UsageRecord>| async { Ok(()) };
            send(&run_shipping(spool, ship, Duration::ZERO, 1, std::future::pending()));
        }
        let _ = check;
    }
}
