//! The numbers the api turns into metrics. Plain values copied out under the pool's lock, so
//! one snapshot is consistent (a job is counted waiting, running or finished, never twice); the
//! lock is taken for every job anyway, so a scrape adds no new contention.

use std::time::Duration;

use crate::config::PerLane;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchStats {
    pub lanes: PerLane<LaneStats>,
    /// The pool's threads: `DispatchConfig::threads` plus the `small_reserve` ones (which
    /// `busy_threads` counts too when they run a job).
    pub threads: usize,
    /// Threads running a job now (including a job whose submitter has gone).
    pub busy_threads: usize,
    /// Jobs a pool thread ran to the end, whatever the outcome: an image, an imaging error, a panic,
    /// or a result nobody was waiting for any more (deadline passed or client gone mid-run).
    pub completed: u64,
    /// Jobs dropped unprocessed because their deadline passed before a thread started them
    /// (including jobs already expired when submitted).
    pub dropped_expired: u64,
    /// Jobs dropped unprocessed because their submitter went away (client disconnected).
    pub cancelled: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaneStats {
    /// Jobs waiting in the lane (not running).
    pub queued: usize,
    pub capacity: usize,
    /// Moving mean of this lane's service time (a documented prior until its first job): the
    /// basis of `Overloaded::retry_after`.
    pub mean_service_time: Duration,
}
