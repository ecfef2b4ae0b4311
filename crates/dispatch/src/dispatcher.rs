//! The handle the api holds: start the pool, submit a job and await its result under the job's
//! deadline, read the stats, shut down and wait for the drain.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::config::{DispatchConfig, Lane};
use crate::error::DispatchError;
use crate::job::{Done, Job, Work};
use crate::lanes::Withdrawal;
use crate::pool::{self, Pool};
use crate::stats::DispatchStats;

/// The embedded lanes and thread pool. Cheap to clone; all clones share one pool. Dropping the
/// last clone shuts the pool down as [`Dispatcher::shutdown`] does: the threads finish the
/// waiting jobs and exit.
#[derive(Clone)]
pub struct Dispatcher {
    handle: Arc<Handle>,
}

/// Owned only by `Dispatcher` clones (pool threads and submitters hold the `Pool`), so its drop
/// is the last handle going away.
struct Handle {
    pool: Arc<Pool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.pool.shut_down();
    }
}

impl Dispatcher {
    /// Starts `config.threads` pool threads (at least one) and `config.small_reserve` more for
    /// small jobs only.
    ///
    /// # Panics
    /// If the operating system refuses to create a thread (the threads already started exit).
    pub fn start(config: DispatchConfig) -> Dispatcher {
        let threads = config.threads.max(1);
        let handle = Arc::new(Handle { pool: Arc::new(Pool::new(config)) });
        pool::spawn_threads(&handle.pool, threads, handle.pool.config.small_reserve);
        Dispatcher { handle }
    }

    /// Admits `job` to its lane and waits for the result until `job.deadline`.
    ///
    /// Answers at once, without waiting, when the lane is full (`Overloaded`), when shutting
    /// down, or when the deadline has already passed. Dropping the returned future before it
    /// resolves cancels the job if it is still waiting (it is never run); a running job finishes
    /// and its result is discarded.
    ///
    /// # Panics
    /// If polled outside a tokio runtime with the time driver enabled (the deadline is a tokio
    /// timer).
    pub async fn submit(&self, job: Job) -> Result<Done, DispatchError> {
        let Job { input, spec, limits, pixels, deadline } = job;
        self.submit_work(Work::Resize { input, spec, limits }, pixels, deadline).await
    }

    pub(crate) async fn submit_work(&self, work: Work, pixels: u64, deadline: Instant) -> Result<Done, DispatchError> {
        let pool = &*self.handle.pool;
        let lane = pool.config.lane_for(pixels);
        let (tx, rx) = oneshot::channel();
        let seq = pool.lock().admit(lane, work, deadline, Instant::now(), tx)?;
        if lane == Lane::Small || pool.config.small_reserve == 0 {
            pool.work_ready.notify_one();
        } else {
            // The one woken might be a small-only thread, which would go back to sleep on it.
            pool.work_ready.notify_all();
        }

        // From here until the answer, dropping this future withdraws the job (see `Ticket`).
        let mut ticket = Ticket { pool, lane, seq, armed: true };
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(answer) => {
                ticket.armed = false;
                // A pool thread always answers or, for a job it drops, sends `DeadlineExceeded`;
                // the sender can only vanish unanswered if a pool thread itself unwound.
                answer.unwrap_or_else(|_| {
                    Err(DispatchError::WorkerPanicked { message: "the worker dropped the job".into() })
                })
            }
            Err(_elapsed) => {
                ticket.armed = false;
                pool.withdraw(lane, seq, Withdrawal::Expired);
                Err(DispatchError::DeadlineExceeded)
            }
        }
    }

    /// Stops taking jobs (`submit` answers `ShuttingDown`); waiting and running jobs finish.
    pub fn shutdown(&self) {
        self.handle.pool.shut_down();
    }

    /// Resolves once every pool thread has left (after `shutdown` and the drain).
    pub async fn drained(&self) {
        let mut exited = self.handle.pool.exited.subscribe();
        // The sender lives in the `Pool`, which `self` keeps alive: `wait_for` cannot fail.
        let _ = exited.wait_for(|&exited| exited).await;
    }

    pub fn stats(&self) -> DispatchStats {
        self.handle.pool.lock().stats()
    }

    /// The lane a job of `pixels` travels in (the api may label its own metrics with it).
    pub fn lane_for(&self, pixels: u64) -> Lane {
        self.handle.pool.config.lane_for(pixels)
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.handle.pool
    }
}

/// A submitted job's claim on its place in its lane. Dropped while armed (the submit future was
/// dropped: the client went away), it takes the job out of its lane if no thread has taken it.
struct Ticket<'a> {
    pool: &'a Pool,
    lane: Lane,
    seq: u64,
    armed: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.withdraw(self.lane, self.seq, Withdrawal::Cancelled);
        }
    }
}
