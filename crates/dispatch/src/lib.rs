//! # dispatch
//!
//! A bounded in-process FIFO with size lanes and per-request deadlines, feeding a pool of OS
//! threads (one per core) that runs [`imaging::process`] off the async runtime: `resizer dev`'s
//! stand-in for the blueprint's queue and workers, and each cluster worker's CPU pool behind the
//! JetStream queue. The api submits from its async handlers and awaits the result (`Job` in,
//! `Done` or `DispatchError` out); in the cluster the api's `Conversions::convert` publishes the
//! job instead, and the worker submits it here.
//!
//! It owns admission (lane capacity, `Overloaded` with a `Retry-After` estimate, answered at
//! once), deadlines (an expired job is never run; the submitter is answered at its deadline),
//! cancellation (a dropped submit withdraws its waiting job), the lane policy (one thread is
//! kept for small images, below), panic isolation and the drain at shutdown.
//!
//! It must not know about HTTP, tenants or keys, and it records no metrics itself: it exposes
//! plain numbers ([`DispatchStats`]) and the api records them.
//!
//! Lane policy: a pool thread takes the oldest waiting job it may run. Small and medium jobs may
//! always run; large jobs (16 MP and more, seconds each) only while fewer than
//! `max(threads - 1, 1)` threads run large jobs. With two or more threads a burst of huge images
//! therefore never holds a small one for seconds: it waits at most for the medium jobs admitted
//! before it (tens of milliseconds each). Medium jobs, most photos, use every core. With one
//! thread nothing can be reserved, and a small image may wait behind big ones admitted before it.
//!
//! Files, each importing only those listed before it: `config.rs` the lanes' sizes and the pool's
//! size, `error.rs` the one error, `stats.rs` the numbers, `job.rs` the data passed along (`Job`,
//! `Done`, the work a thread runs), `lanes.rs` the waiting jobs and the lane policy, `pool.rs` the
//! threads and the state they share, `dispatcher.rs` the handle.

mod config;
mod dispatcher;
mod error;
mod job;
mod lanes;
mod pool;
mod stats;

#[cfg(test)]
mod tests;

pub use config::{DispatchConfig, Lane, PerLane};
pub use dispatcher::Dispatcher;
pub use error::DispatchError;
pub use job::{Done, Job};
pub use stats::{DispatchStats, LaneStats};
