//! The handle the api holds: start the pool, submit a job and await its result under the job's
//! deadline, read the stats, shut down and wait for the drain.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imaging::{Limits, Output, ResizeSpec};
use tokio::sync::oneshot;

use crate::config::{DispatchConfig, Lane};
use crate::error::DispatchError;
use crate::queue::{Shared, Withdrawal};
use crate::stats::DispatchStats;
use crate::worker::{self, Work};

/// One resize to run.
#[derive(Debug)]
pub struct Job {
    /// The image bytes (`Vec::from(bytes::Bytes)` takes a uniquely owned body without copying).
    pub input: Vec<u8>,
    pub spec: ResizeSpec,
    pub limits: Limits,
    /// width × height from `imaging::probe`: chooses the lane.
    pub pixels: u64,
    /// After this instant nobody wants the result: the job is dropped if still queued, and the
    /// submitter gets `DeadlineExceeded` at this instant even if the job is running.
    pub deadline: Instant,
}

/// A finished resize.
#[derive(Debug)]
pub struct Done {
    pub output: Output,
    /// From admission to a worker starting the job. The service time is `output.report.wall_time`.
    pub queue_wait: Duration,
    pub lane: Lane,
}

/// The embedded queue and worker pool. Cheap to clone; all clones share one pool. Dropping the
/// last clone shuts the pool down as [`Dispatcher::shutdown`] does: the threads finish the
/// queued jobs and exit.
#[derive(Clone)]
pub struct Dispatcher {
    handle: Arc<Handle>,
}

/// Owned only by `Dispatcher` clones (workers and submitters hold `Shared`), so its drop is
/// the last handle going away.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        shutdown(&self.shared);
    }
}

impl Dispatcher {
    /// Starts `config.workers` worker threads (at least one).
    ///
    /// # Panics
    /// If the operating system refuses to create a thread (the threads already started exit).
    pub fn start(config: DispatchConfig) -> Dispatcher {
        let workers = config.workers.max(1);
        let handle = Arc::new(Handle { shared: Arc::new(Shared::new(config)) });
        worker::spawn(&handle.shared, workers);
        Dispatcher { handle }
    }

    /// Queues `job` in its lane and waits for the result until `job.deadline`.
    ///
    /// Answers at once, without waiting, when the lane is full (`Overloaded`), when shutting
    /// down, or when the deadline has already passed. Dropping the returned future before it
    /// resolves cancels the job if it is still queued (it is never run); a running job finishes
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
        let shared = &*self.handle.shared;
        let lane = shared.config.lane_for(pixels);
        let (tx, rx) = oneshot::channel();
        let seq = shared.lock().enqueue(lane, work, deadline, Instant::now(), tx)?;
        shared.work_ready.notify_one();

        // From here until the answer, dropping this future withdraws the job (see `Ticket`).
        let mut ticket = Ticket { shared, lane, seq, armed: true };
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(answer) => {
                ticket.armed = false;
                // A worker always answers or, for a job it drops, sends `DeadlineExceeded`; the
                // sender can only vanish unanswered if a worker thread itself unwound.
                answer.unwrap_or_else(|_| {
                    Err(DispatchError::WorkerPanicked { message: "the worker dropped the job".into() })
                })
            }
            Err(_elapsed) => {
                ticket.armed = false;
                shared.withdraw(lane, seq, Withdrawal::Expired);
                Err(DispatchError::DeadlineExceeded)
            }
        }
    }

    /// Stops taking jobs (`submit` answers `ShuttingDown`); queued and running jobs finish.
    pub fn shutdown(&self) {
        shutdown(&self.handle.shared);
    }

    /// Resolves once every worker thread has left (after `shutdown` and the drain).
    pub async fn drained(&self) {
        let mut exited = self.handle.shared.exited.subscribe();
        // The sender lives in `Shared`, which `self` keeps alive: `wait_for` cannot fail.
        let _ = exited.wait_for(|&exited| exited).await;
    }

    pub fn stats(&self) -> DispatchStats {
        self.handle.shared.lock().stats()
    }

    /// The lane a job of `pixels` travels in (the api may label its own metrics with it).
    pub fn lane_for(&self, pixels: u64) -> Lane {
        self.handle.shared.config.lane_for(pixels)
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }
}

fn shutdown(shared: &Shared) {
    shared.lock().shutting_down = true;
    shared.work_ready.notify_all();
}

/// A submitted job's claim on its queue slot. Dropped while armed (the submit future was
/// dropped: the client went away), it takes the job out of the queue if no worker has taken it.
struct Ticket<'a> {
    shared: &'a Shared,
    lane: Lane,
    seq: u64,
    armed: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.withdraw(self.lane, self.seq, Withdrawal::Cancelled);
        }
    }
}
