//! # usage
//!
//! Metering and audit: every answered request of an authenticated tenant becomes one
//! [`UsageRecord`], recorded once and counted once. It owns the record, the api node's
//! [`Spool`] (append-only, written before the response, cut into batches with unique ids), the
//! [`Aggregator`] that applies each batch exactly once to the raw-record [`Archive`] (Parquet
//! through `object_store`) and to the hourly [`Rollups`] (SQLite embedded, PostgreSQL in the
//! cluster), and the reads of both; with the rollups, each tenant's billable sums per quota
//! window, and the api node's board of them that quota admission decides from. In the cluster an api node ships its sealed batches
//! ([`run_shipping`]) to the usage stream and aggregators elsewhere apply them, keeping the
//! messages they refuse to apply (not authentic, unreadable) in a quarantine beside the rollups
//! ([`Quarantined`]); deciding what is authentic is the aggregator's caller's (the usage
//! stream's signatures are `queue`'s).
//!
//! It must not know about HTTP (the api builds records and serves the reads) nor about tenants
//! beyond their ids, and it never decides what a request costs: the rollups keep quantities per
//! status, billing rules price them (docs/usage.md).
//!
//! Files: `record.rs`, `spool.rs`, `spool_loop.rs` (the tick loop both modes run over the spool),
//! `ship.rs`, `aggregator.rs`, `rollup.rs`, `quota.rs` (quota totals per period, published to
//! each api node's board of them), `quarantine.rs` (refused messages, in the rollups'
//! database), `archive/` (its `mod.rs` lists its files),
//! `calendar.rs` (UTC dates: the archive's partition names, the aggregator's today).

mod aggregator;
mod archive;
mod calendar;
mod quarantine;
mod quota;
mod record;
mod rollup;
mod ship;
mod spool;
mod spool_loop;

pub use aggregator::{drain_spool, run_embedded, AggregateError, Aggregator, RollingPeriods};
pub use archive::read::{AuditCursor, AuditPage};
pub use archive::{Archive, ArchiveError};
pub use quarantine::Quarantined;
pub use quota::{
    parse_rolling_periods, period_window, rolling_periods_header, PeriodTotals, QuotaBoard, TenantTotals, TotalsSink,
    Usage as QuotaUsage, Used, MONTH, QUOTA_PERIODS_HEADER,
};
pub use record::{Text, UsageRecord};
pub use rollup::{follow_totals, Bucket, Granularity, RollupError, Rollups, Totals, TOTALS_POLL_INTERVAL};
pub use ship::{run_shipping, ship_spool, Confirmations, ShipError, ShipPass, Shipments, StreamSpan, MAX_CONFIRM_WAIT};
pub use spool::{read_batch, SealedBatch, Spool, SpoolConfig, SpoolError, SpoolStats};
