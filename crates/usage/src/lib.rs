//! # usage
//!
//! Metering and audit: every answered request of an authenticated tenant becomes one
//! [`UsageRecord`], recorded once and counted once. It owns the record, the api node's
//! [`Spool`] (append-only, written before the response, cut into batches with unique ids), the
//! [`Aggregator`] that applies each batch exactly once to the raw-record [`Archive`] (Parquet
//! through `object_store`) and to the hourly [`Rollups`] (SQLite), and the reads of both.
//!
//! It must not know about HTTP (the api builds records and serves the reads) nor about tenants
//! beyond their ids, and it never decides what a request costs: the rollups keep quantities per
//! status, billing rules price them (docs/usage.md).
//!
//! Files: `record.rs`, `spool.rs`, `aggregator.rs`, `rollup.rs`, `archive.rs`.

mod aggregator;
mod archive;
mod record;
mod rollup;
mod spool;

pub use aggregator::{drain_spool, run_embedded, AggregateError, Aggregator};
pub use archive::{Archive, ArchiveError};
pub use record::UsageRecord;
pub use rollup::{Bucket, Granularity, RollupError, Rollups, Totals};
pub use spool::{read_batch, SealedBatch, Spool, SpoolConfig, SpoolError};
