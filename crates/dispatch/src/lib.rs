//! # dispatch
//!
//! The embedded stand-in for the blueprint's queue and workers, used by `resizer dev`: a bounded
//! in-process FIFO with size lanes and per-request deadlines, feeding a pool of OS threads (one
//! per core) that runs [`imaging::process`] off the async runtime. The api submits from its async
//! handlers and awaits the result; in the cluster, NATS JetStream and remote workers take this
//! place behind the same small, data-shaped boundary (`Job` in, `Done` or `DispatchError` out).
//!
//! It owns admission (lane capacity, `Overloaded` with a `Retry-After` estimate, answered at
//! once), deadlines (an expired job is never run; the submitter is answered at its deadline),
//! cancellation (a dropped submit withdraws its queued job), the lane policy (one worker is
//! kept for small images, below), panic isolation and the drain at
//! shutdown.
//!
//! It must not know about HTTP, tenants or keys, and it records no metrics itself: it exposes
//! plain numbers ([`DispatchStats`]) and the api records them.
//!
//! Lane policy: a worker takes the oldest queued job it may run. Small and medium jobs may
//! always run; large jobs (16 MP and more, seconds each) only while fewer than
//! `max(workers - 1, 1)` workers run large jobs. With two or more workers a burst of huge images
//! therefore never holds a small one for seconds: it waits at most for the medium jobs queued
//! before it (tens of milliseconds each). Medium jobs, most photos, use every core. With one
//! worker nothing can be reserved, and a small image may wait behind big ones queued before it.

mod config;
mod dispatcher;
mod error;
mod queue;
mod stats;
mod worker;

#[cfg(test)]
mod tests;

pub use config::{DispatchConfig, Lane, PerLane};
pub use dispatcher::{Dispatcher, Done, Job};
pub use error::DispatchError;
pub use stats::{DispatchStats, LaneStats};
