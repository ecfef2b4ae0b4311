//! The queue: one FIFO per lane, the counters, and the lane policy, all under one mutex, with
//! the condvar idle workers wait on. Everything here is synchronous and short; nothing runs an
//! image while holding the lock.
//!
//! Lane policy: a worker takes the oldest queued job it may run. Small and medium jobs may
//! always run; large jobs only while fewer than `large_limit = max(workers - 1, 1)` workers run
//! large jobs. With two or more workers at least one worker therefore always takes small and
//! medium work: a small image never waits for a large one (seconds), only for the jobs queued
//! before it in the small and medium lanes (milliseconds to tens of milliseconds each). With one
//! worker there is nothing to reserve: the worker takes the oldest job of any lane, and a small
//! image may wait behind the large ones queued before it (a one-core deployment trades that
//! latency for never idling while only large jobs wait).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::config::{DispatchConfig, Lane, PerLane};
use crate::dispatcher::Done;
use crate::error::DispatchError;
use crate::stats::{DispatchStats, LaneStats};
use crate::worker::Work;

pub(crate) type Reply = oneshot::Sender<Result<Done, DispatchError>>;

/// What lives behind the `Arc` shared by handles, submitters and workers.
pub(crate) struct Shared {
    pub config: DispatchConfig,
    state: Mutex<State>,
    /// Signalled when a job may have become runnable for an idle worker, or when idle workers
    /// should look at the shutdown flag.
    pub work_ready: Condvar,
    /// `true` once every worker thread has left its loop.
    pub exited: watch::Sender<bool>,
}

impl Shared {
    pub fn new(config: DispatchConfig) -> Shared {
        Shared {
            state: Mutex::new(State::new(&config)),
            config,
            work_ready: Condvar::new(),
            exited: watch::Sender::new(false),
        }
    }

    /// The lock is never held across a panic-prone call (images run outside it), so a poisoned
    /// lock can only come from a bug in this file; the state is still consistent enough to drain.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a job back out of its lane (see [`State::withdraw`]) and lets idle workers leave
    /// if that emptied the queue during shutdown.
    pub fn withdraw(&self, lane: Lane, seq: u64, why: Withdrawal) {
        let mut state = self.lock();
        state.withdraw(lane, seq, why);
        if state.should_exit() {
            self.work_ready.notify_all();
        }
    }

    pub fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.work_ready.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }
}

/// A job waiting in a lane.
pub(crate) struct Queued {
    /// Admission order across all lanes: the lane policy takes the smallest eligible one.
    pub seq: u64,
    pub enqueued: Instant,
    pub deadline: Instant,
    pub work: Work,
    pub reply: Reply,
}

/// Why a submitter took its job back out of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Withdrawal {
    Expired,
    Cancelled,
}

/// Used for the `Retry-After` estimate until a lane has served its first job.
const PRIOR_SERVICE_TIME: PerLane<Duration> =
    PerLane { small: Duration::from_millis(20), medium: Duration::from_millis(200), large: Duration::from_secs(1) };

/// Weight of the newest sample in the moving mean of service times: 1/8 follows a change in
/// the image mix within a few dozen jobs without jumping on one outlier.
const EWMA_SHIFT: u32 = 3;

pub(crate) struct State {
    queues: PerLane<VecDeque<Queued>>,
    capacity: PerLane<usize>,
    workers: usize,
    /// Most workers that may run medium or large jobs at once.
    large_limit: usize,
    next_seq: u64,
    busy: usize,
    large_busy: usize,
    mean_service: PerLane<Duration>,
    measured: PerLane<bool>,
    completed: u64,
    dropped_expired: u64,
    cancelled: u64,
    pub shutting_down: bool,
    pub live_workers: usize,
}

impl State {
    fn new(config: &DispatchConfig) -> State {
        let workers = config.workers.max(1);
        State {
            queues: PerLane::default(),
            capacity: config.capacity,
            workers,
            large_limit: workers.saturating_sub(1).max(1),
            next_seq: 0,
            busy: 0,
            large_busy: 0,
            mean_service: PRIOR_SERVICE_TIME,
            measured: PerLane::default(),
            completed: 0,
            dropped_expired: 0,
            cancelled: 0,
            shutting_down: false,
            live_workers: 0,
        }
    }

    /// Admits a job or refuses it at once; never waits. Returns the job's sequence number.
    pub fn enqueue(
        &mut self,
        lane: Lane,
        work: Work,
        deadline: Instant,
        now: Instant,
        reply: Reply,
    ) -> Result<u64, DispatchError> {
        if self.shutting_down {
            return Err(DispatchError::ShuttingDown);
        }
        if deadline <= now {
            self.dropped_expired += 1;
            return Err(DispatchError::DeadlineExceeded);
        }
        let depth = self.queues.get(lane).len();
        if depth >= *self.capacity.get(lane) {
            return Err(DispatchError::Overloaded { lane, retry_after: self.retry_after(lane) });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queues.get_mut(lane).push_back(Queued { seq, enqueued: now, deadline, work, reply });
        Ok(seq)
    }

    /// Takes a job back out of its lane if no worker has taken it yet; counts it and returns
    /// whether it was still queued.
    pub fn withdraw(&mut self, lane: Lane, seq: u64, why: Withdrawal) -> bool {
        let queue = self.queues.get_mut(lane);
        // Sequence numbers grow in push order, so each lane is sorted by them.
        let Ok(at) = queue.binary_search_by_key(&seq, |q| q.seq) else { return false };
        queue.remove(at);
        match why {
            Withdrawal::Expired => self.dropped_expired += 1,
            Withdrawal::Cancelled => self.cancelled += 1,
        }
        true
    }

    /// The oldest job the lane policy lets a worker run now, marked as running. Jobs found
    /// expired or abandoned on the way are dropped unprocessed (their submitters normally take
    /// them out first; this covers the instant between a deadline and the submitter's timer).
    pub fn next_job(&mut self, now: Instant) -> Option<(Lane, Queued)> {
        loop {
            let large_allowed = self.large_busy < self.large_limit;
            let lane = Lane::ALL
                .into_iter()
                .filter(|lane| large_allowed || !lane.is_capped())
                .filter_map(|lane| self.queues.get(lane).front().map(|q| (q.seq, lane)))
                .min()?
                .1;
            let job = self.queues.get_mut(lane).pop_front().expect("the lane's front was just seen");
            if job.deadline <= now {
                self.dropped_expired += 1;
                // The submitter's own timer answers it too; whichever comes first is the same error.
                let _ = job.reply.send(Err(DispatchError::DeadlineExceeded));
                continue;
            }
            if job.reply.is_closed() {
                self.cancelled += 1;
                continue;
            }
            self.busy += 1;
            if lane.is_capped() {
                self.large_busy += 1;
            }
            return Some((lane, job));
        }
    }

    /// Books a finished job (whatever its outcome) and its service time.
    pub fn finish(&mut self, lane: Lane, service_time: Duration) {
        self.busy -= 1;
        if lane.is_capped() {
            self.large_busy -= 1;
        }
        self.completed += 1;
        let mean = self.mean_service.get_mut(lane);
        let measured = self.measured.get_mut(lane);
        *mean = if *measured { ewma(*mean, service_time) } else { service_time };
        *measured = true;
    }

    pub fn is_empty(&self) -> bool {
        Lane::ALL.iter().all(|&lane| self.queues.get(lane).is_empty())
    }

    /// Workers leave once shutdown has been asked and no job is left to run.
    pub fn should_exit(&self) -> bool {
        self.shutting_down && self.is_empty()
    }

    fn retry_after(&self, lane: Lane) -> Duration {
        let serving = if lane.is_capped() { self.large_limit } else { self.workers };
        retry_estimate(self.queues.get(lane).len(), *self.mean_service.get(lane), serving)
    }

    pub fn stats(&self) -> DispatchStats {
        DispatchStats {
            lanes: self.queues.map(|lane, queue| LaneStats {
                queued: queue.len(),
                capacity: *self.capacity.get(lane),
                mean_service_time: *self.mean_service.get(lane),
            }),
            workers: self.workers,
            busy_workers: self.busy,
            completed: self.completed,
            dropped_expired: self.dropped_expired,
            cancelled: self.cancelled,
        }
    }
}

/// depth × mean service time ÷ serving workers, rounded up to whole milliseconds, at least 1 ms.
fn retry_estimate(depth: usize, mean: Duration, serving: usize) -> Duration {
    let nanos = mean.as_nanos() * depth as u128 / serving.max(1) as u128;
    let millis = nanos.div_ceil(1_000_000).max(1);
    Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

fn ewma(mean: Duration, sample: Duration) -> Duration {
    let (mean, sample) = (mean.as_nanos() as i128, sample.as_nanos() as i128);
    let next = mean + ((sample - mean) >> EWMA_SHIFT);
    Duration::from_nanos(u64::try_from(next.max(0)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(workers: usize) -> State {
        State::new(&DispatchConfig::with_workers(workers))
    }

    /// Queues a job that is never run (these tests only look at the policy).
    fn push(state: &mut State, lane: Lane, now: Instant) -> (u64, oneshot::Receiver<Result<Done, DispatchError>>) {
        let (tx, rx) = oneshot::channel();
        let seq = state.enqueue(lane, Work::noop(), now + Duration::from_secs(60), now, tx).unwrap();
        (seq, rx)
    }

    #[test]
    fn retry_estimate_is_depth_times_mean_over_workers_and_at_least_one_ms() {
        assert_eq!(retry_estimate(4, Duration::from_millis(10), 2), Duration::from_millis(20));
        assert_eq!(retry_estimate(3, Duration::from_micros(1_500), 2), Duration::from_millis(3));
        assert_eq!(retry_estimate(0, Duration::from_secs(1), 2), Duration::from_millis(1));
        assert_eq!(retry_estimate(5, Duration::ZERO, 1), Duration::from_millis(1));
        assert_eq!(retry_estimate(5, Duration::from_millis(10), 0), Duration::from_millis(50));
    }

    #[test]
    fn service_mean_starts_at_the_first_sample_then_moves_by_an_eighth() {
        let mut s = state(2);
        s.busy = 2;
        s.finish(Lane::Small, Duration::from_millis(80));
        assert_eq!(s.mean_service.small, Duration::from_millis(80));
        s.finish(Lane::Small, Duration::from_millis(160));
        assert_eq!(s.mean_service.small, Duration::from_millis(90));
        assert_eq!(s.mean_service.large, PRIOR_SERVICE_TIME.large);
    }

    #[test]
    fn oldest_job_first_across_lanes() {
        let mut s = state(3);
        let now = Instant::now();
        let (_, _m) = push(&mut s, Lane::Medium, now);
        let (_, _s) = push(&mut s, Lane::Small, now);
        let (_, _l) = push(&mut s, Lane::Large, now);
        let order: Vec<Lane> = std::iter::from_fn(|| s.next_job(now).map(|(lane, _)| lane)).collect();
        assert_eq!(order, [Lane::Medium, Lane::Small, Lane::Large]);
    }

    #[test]
    fn medium_jobs_use_every_worker() {
        let mut s = state(2);
        let now = Instant::now();
        let _rx: Vec<_> = (0..3).map(|_| push(&mut s, Lane::Medium, now).1).collect();
        assert_eq!(s.next_job(now).map(|j| j.0), Some(Lane::Medium));
        assert_eq!(s.next_job(now).map(|j| j.0), Some(Lane::Medium));
        assert_eq!(s.stats().busy_workers, 2);
    }

    #[test]
    fn one_worker_is_kept_from_large_jobs() {
        let mut s = state(3);
        let now = Instant::now();
        let _rx: Vec<_> = (0..3).map(|_| push(&mut s, Lane::Large, now).1).collect();
        let (_, _m) = push(&mut s, Lane::Medium, now);
        let (_, _s) = push(&mut s, Lane::Small, now);
        assert_eq!(s.next_job(now).map(|j| j.0), Some(Lane::Large));
        assert_eq!(s.next_job(now).map(|j| j.0), Some(Lane::Large));
        // Two of three workers run large jobs: the third takes the medium and small ones.
        assert_eq!(s.next_job(now).map(|j| j.0), Some(Lane::Medium));
        assert_eq!(s.next_job(now).map(|j| j.0), Some(Lane::Small));
        assert!(s.next_job(now).is_none());
        s.finish(Lane::Large, Duration::from_millis(5));
        assert_eq!(s.next_job(now).map(|j| j.0), Some(Lane::Large));
    }

    #[test]
    fn a_single_worker_runs_every_lane() {
        let mut s = state(1);
        let now = Instant::now();
        let (_, _l) = push(&mut s, Lane::Large, now);
        assert_eq!(s.next_job(now).map(|j| j.0), Some(Lane::Large));
    }

    #[test]
    fn full_lane_refuses_at_once_and_other_lanes_still_admit() {
        let mut s = State::new(&DispatchConfig {
            capacity: PerLane { small: 2, medium: 1, large: 1 },
            ..DispatchConfig::with_workers(2)
        });
        let now = Instant::now();
        let _l = push(&mut s, Lane::Large, now);
        let (tx, _rx) = oneshot::channel();
        let err = s.enqueue(Lane::Large, Work::noop(), now + Duration::from_secs(1), now, tx).unwrap_err();
        // One queued large job, the prior of 1 s, one worker serving the large lane.
        assert!(matches!(err, DispatchError::Overloaded { lane: Lane::Large, retry_after }
            if retry_after == Duration::from_secs(1)));
        let _s = push(&mut s, Lane::Small, now);
    }

    #[test]
    fn withdraw_takes_out_only_a_job_still_queued() {
        let mut s = state(2);
        let now = Instant::now();
        let (a, _ra) = push(&mut s, Lane::Small, now);
        let (b, _rb) = push(&mut s, Lane::Small, now);
        let (c, _rc) = push(&mut s, Lane::Small, now);
        assert!(s.withdraw(Lane::Small, b, Withdrawal::Cancelled));
        assert!(!s.withdraw(Lane::Small, b, Withdrawal::Cancelled));
        assert!(!s.withdraw(Lane::Medium, a, Withdrawal::Expired));
        assert!(s.withdraw(Lane::Small, c, Withdrawal::Expired));
        assert_eq!((s.cancelled, s.dropped_expired), (1, 1));
        assert_eq!(s.next_job(now).map(|(_, q)| q.seq), Some(a));
    }

    #[test]
    fn expired_and_abandoned_jobs_are_skipped_not_run() {
        let mut s = state(2);
        let now = Instant::now();
        let (tx, mut expired) = oneshot::channel();
        s.enqueue(Lane::Small, Work::noop(), now + Duration::from_millis(5), now, tx).unwrap();
        let (_, abandoned) = push(&mut s, Lane::Small, now);
        drop(abandoned);
        let (live, _rx) = push(&mut s, Lane::Small, now);
        let later = now + Duration::from_millis(10);
        assert_eq!(s.next_job(later).map(|(_, q)| q.seq), Some(live));
        assert!(matches!(expired.try_recv(), Ok(Err(DispatchError::DeadlineExceeded))));
        assert_eq!((s.dropped_expired, s.cancelled, s.busy), (1, 1, 1));
    }
}
