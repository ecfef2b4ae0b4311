//! The aggregator: takes sealed batches and, for each batch exactly once, archives its raw
//! records (Parquet) and adds them to the hourly rollups.
//!
//! Exactly once, step by step: (1) a batch whose id the rollups already hold is skipped; (2) its
//! records are written to the archive at paths named by the batch id — a replay rewrites the same
//! objects with the same content; (3) the rollups and the batch id commit in one transaction.
//! A crash between any two steps replays the batch from the start and converges on the same
//! state; a batch is removed from its source only after (3).
//!
//! In `resizer dev` the source is the node's own spool directory ([`drain_spool`]); in the
//! cluster it is the JetStream usage stream, behind the same [`Aggregator::apply_batch`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::archive::{Archive, ArchiveError};
use crate::calendar::utc_date;
use crate::quarantine::Quarantined;
use crate::quota::TotalsSink;
use crate::record::UsageRecord;
use crate::rollup::{RollupError, Rollups};
use crate::spool::{Spool, SpoolError};
use crate::spool_loop::{run_spool_loop, sealed_batches, take_batch};

#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Rollup(#[from] RollupError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("usage task failed: {0}")]
    Task(String),
}

pub struct Aggregator {
    rollups: Arc<Rollups>,
    archive: Archive,
    quotas: Option<QuotaPublishing>,
}

/// Which tenants have a rolling quota period (its seconds; 0: none), and where the totals go.
struct QuotaPublishing {
    rolling_period: RollingPeriods,
    sink: Arc<dyn TotalsSink>,
}

/// A tenant's rolling quota period in seconds, 0 for none: what the aggregator sums besides
/// every tenant's calendar month.
pub type RollingPeriods = Arc<dyn Fn(u64) -> u32 + Send + Sync>;

impl Aggregator {
    pub fn new(rollups: Arc<Rollups>, archive: Archive) -> Aggregator {
        Aggregator { rollups, archive, quotas: None }
    }

    /// Sums quota totals with each batch and publishes the totals of the tenants a batch
    /// billed to `sink` once it is applied.
    pub fn with_quotas(mut self, rolling_period: RollingPeriods, sink: Arc<dyn TotalsSink>) -> Aggregator {
        self.quotas = Some(QuotaPublishing { rolling_period, sink });
        self
    }

    /// Publishes the totals of every window not yet ended (at start: the sink may be new).
    pub async fn publish_quota_totals(&self) -> Result<usize, AggregateError> {
        let Some(quotas) = &self.quotas else { return Ok(0) };
        let rollups = self.rollups.clone();
        let totals = blocking(move || rollups.quota_totals(None, now_ms())).await??;
        let count = totals.len();
        quotas.sink.publish(totals);
        Ok(count)
    }

    pub fn rollups(&self) -> &Arc<Rollups> {
        &self.rollups
    }

    pub fn archive(&self) -> &Archive {
        &self.archive
    }

    /// Applies one batch (see the module docs). Returns whether it was new.
    /// Whether `batch_id` is recorded as applied.
    pub async fn is_applied(&self, batch_id: &str) -> Result<bool, AggregateError> {
        let rollups = self.rollups.clone();
        let id = batch_id.to_owned();
        Ok(blocking(move || rollups.is_applied(&id)).await??)
    }

    pub async fn apply_batch(&self, batch_id: &str, records: Arc<Vec<UsageRecord>>) -> Result<bool, AggregateError> {
        self.apply(batch_id, records, None).await
    }

    /// [`apply_batch`](Self::apply_batch) with the rolling quota periods of the batch's tenants
    /// as the batch came with them (a cluster aggregator: `QUOTA_PERIODS_HEADER`).
    pub async fn apply_batch_with_periods(
        &self,
        batch_id: &str,
        records: Arc<Vec<UsageRecord>>,
        periods: std::collections::BTreeMap<u64, u32>,
    ) -> Result<bool, AggregateError> {
        self.apply(batch_id, records, Some(Arc::new(move |tenant| periods.get(&tenant).copied().unwrap_or(0)))).await
    }

    async fn apply(
        &self,
        batch_id: &str,
        records: Arc<Vec<UsageRecord>>,
        periods: Option<RollingPeriods>,
    ) -> Result<bool, AggregateError> {
        let rollups = self.rollups.clone();
        let id = batch_id.to_owned();
        if blocking(move || rollups.is_applied(&id)).await?? {
            return Ok(false);
        }
        self.archive.write_batch(batch_id, records.clone()).await?;
        let rollups = self.rollups.clone();
        let id = batch_id.to_owned();
        let Some(quotas) = &self.quotas else {
            let periods = periods.unwrap_or_else(|| Arc::new(|_| 0));
            return Ok(blocking(move || rollups.apply_with_quotas(&id, &records, now_ms(), &*periods)).await??);
        };
        let rolling_period = quotas.rolling_period.clone();
        let totals = blocking(move || {
            let now = now_ms();
            if !rollups.apply_with_quotas(&id, &records, now, &*rolling_period)? {
                return Ok(None);
            }
            let mut billed: Vec<u64> = records.iter().filter(|r| r.status == 200).map(|r| r.tenant).collect();
            billed.sort_unstable();
            billed.dedup();
            rollups.quota_totals(Some(&billed), now).map(Some)
        })
        .await??;
        match totals {
            Some(totals) => {
                quotas.sink.publish(totals);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Keeps a message that is not applied (see `quarantine.rs`).
    pub async fn quarantine(&self, message: Quarantined) -> Result<(), AggregateError> {
        let rollups = self.rollups.clone();
        blocking(move || rollups.quarantine(&message)).await??;
        Ok(())
    }

    /// Merges the archive's small files, for partitions with more than `min_files`, keeping
    /// only committed batches in the merge.
    pub async fn compact(&self, min_files: usize) -> Result<usize, AggregateError> {
        let mut merged = 0;
        // Today's partition still grows: compacting it would rewrite an ever larger file.
        let today = utc_date(now_ms());
        for (tenant, date) in self.archive.partitions_to_compact(min_files).await? {
            if date >= today {
                continue;
            }
            let rollups = self.rollups.clone();
            let is_applied = move |batch: &str| rollups.is_applied(batch).unwrap_or(false);
            merged += self.archive.compact_day(tenant, &date, &is_applied).await?;
        }
        Ok(merged)
    }
}

/// Embedded mode's shipper and consumer in one: applies every sealed batch of `spool`, oldest
/// first, removing each once applied. Returns the number of records applied.
pub async fn drain_spool(spool: &Arc<Spool>, aggregator: &Aggregator) -> Result<usize, AggregateError> {
    let mut applied = 0;
    for batch in sealed_batches(spool, AggregateError::Task).await? {
        let records = Arc::new(take_batch(spool, &batch, AggregateError::Task).await?);
        let count = records.len();
        if aggregator.apply_batch(&batch.id, records.clone()).await? {
            applied += count;
        }
        spool.remove(&batch)?;
        if let Ok(records) = Arc::try_unwrap(records) {
            spool.recycle(records);
        }
    }
    Ok(applied)
}

/// Embedded mode's usage loop: a group fsync of the spool every `fsync_interval`, the sealed
/// batches applied every `apply_every` fsyncs, a compaction pass every `compact_every`; when
/// `stop` resolves, the open batch is sealed and everything applied before returning (call it
/// after the api has stopped answering).
pub async fn run_embedded(
    spool: Arc<Spool>,
    aggregator: Arc<Aggregator>,
    fsync_interval: Duration,
    apply_every: u32,
    compact_every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let (spool, aggregator) = (&spool, &aggregator);
    let mut last_compaction = tokio::time::Instant::now();
    run_spool_loop(
        spool,
        fsync_interval,
        apply_every,
        stop,
        AggregateError::Task,
        || async move { drain_spool(spool, aggregator).await.map(|_| ()) },
        |result| {
            if let Err(e) = result {
                tracing::error!(error = %e, "usage: spool or aggregation failed; batches stay in the spool and are retried");
            }
            let compact = last_compaction.elapsed() >= compact_every;
            if compact {
                last_compaction = tokio::time::Instant::now();
            }
            async move {
                if compact {
                    match aggregator.compact(COMPACT_MIN_FILES).await {
                        Ok(0) => {}
                        Ok(files) => tracing::info!(files, "usage archive: small files compacted"),
                        Err(e) => tracing::warn!(error = %e, "usage archive: compaction failed; retried later"),
                    }
                }
            }
        },
    )
    .await;
    match drain_spool(spool, aggregator).await {
        Ok(records) => tracing::info!(records, "usage: last batches applied"),
        Err(e) => {
            tracing::error!(error = %e, "usage: last batches not applied; they stay in the spool for the next start")
        }
    }
}

/// A tenant-day is compacted once it has more files than this.
const COMPACT_MIN_FILES: usize = 8;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, AggregateError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| AggregateError::Task(e.to_string()))
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{run_embedded, Aggregator};
    use crate::spool::Spool;

    /// The binary spawns the loop on the runtime: its future must be `Send`.
    #[test]
    fn the_embedded_loop_can_be_spawned() {
        fn send<T: Send>(_: &T) {}
        fn check(spool: Arc<Spool>, aggregator: Arc<Aggregator>) {
            send(&run_embedded(spool, aggregator, Duration::ZERO, 1, Duration::ZERO, std::future::pending()));
        }
        let _ = check;
    }
}
