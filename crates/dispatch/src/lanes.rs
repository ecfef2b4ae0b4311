//! The lanes: one FIFO per lane, the counters, and the lane policy ([`Lanes`]), the state the
//! pool keeps under its one mutex. Everything here is synchronous and short and takes no lock of
//! its own: the pool holds the mutex around every call and decides whom to wake; nothing here
//! runs an image.
//!
//! Lane policy: a pool thread takes the oldest waiting job it may run. Small and medium jobs may
//! always run; large jobs only while fewer than `large_limit = max(threads - 1, 1)` threads run
//! large jobs. With two or more threads at least one thread therefore always takes small and
//! medium work: a small image never waits for a large one (seconds), only for the jobs admitted
//! before it in the small and medium lanes (milliseconds to tens of milliseconds each). With one
//! thread there is nothing to reserve: the thread takes the oldest job of any lane, and a small
//! image may wait behind the large ones admitted before it (a one-core deployment trades that
//! latency for never idling while only large jobs wait). Threads of the `small_reserve` take
//! small jobs only, so with them a small image waits for no other lane at all.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{DispatchConfig, Lane, PerLane};
use crate::error::DispatchError;
use crate::job::{Reply, Work};
use crate::stats::{DispatchStats, LaneStats};

/// A job waiting in a lane.
pub(crate) struct Waiting {
    /// Admission order across all lanes: the lane policy takes the smallest eligible one.
    pub seq: u64,
    pub admitted: Instant,
    pub deadline: Instant,
    pub work: Work,
    pub reply: Reply,
}

/// Why a submitter took its job back out of its lane.
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

/// The waiting jobs of every lane and the counters, kept under the pool's mutex.
pub(crate) struct Lanes {
    waiting: PerLane<VecDeque<Waiting>>,
    capacity: PerLane<usize>,
    threads: usize,
    /// Threads that take small jobs only, beyond `threads`.
    small_reserve: usize,
    /// Most threads that may run large jobs at once.
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
    /// Pool threads that have not left their loop yet.
    pub live_threads: usize,
}

impl Lanes {
    pub fn new(config: &DispatchConfig) -> Lanes {
        let threads = config.threads.max(1);
        Lanes {
            waiting: PerLane::default(),
            capacity: config.capacity,
            threads,
            small_reserve: config.small_reserve,
            large_limit: threads.saturating_sub(1).max(1),
            next_seq: 0,
            busy: 0,
            large_busy: 0,
            mean_service: PRIOR_SERVICE_TIME,
            measured: PerLane::default(),
            completed: 0,
            dropped_expired: 0,
            cancelled: 0,
            shutting_down: false,
            live_threads: 0,
        }
    }

    /// Admits a job or refuses it at once; never waits. Returns the job's sequence number.
    pub fn admit(
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
        let depth = self.waiting.get(lane).len();
        if depth >= *self.capacity.get(lane) {
            return Err(DispatchError::Overloaded { lane, retry_after: self.retry_after(lane) });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.waiting.get_mut(lane).push_back(Waiting { seq, admitted: now, deadline, work, reply });
        Ok(seq)
    }

    /// Takes a job back out of its lane if no thread has taken it yet; counts it and returns
    /// whether it was still waiting.
    pub fn withdraw(&mut self, lane: Lane, seq: u64, why: Withdrawal) -> bool {
        let waiting = self.waiting.get_mut(lane);
        // Sequence numbers grow in push order, so each lane is sorted by them.
        let Ok(at) = waiting.binary_search_by_key(&seq, |w| w.seq) else { return false };
        waiting.remove(at);
        match why {
            Withdrawal::Expired => self.dropped_expired += 1,
            Withdrawal::Cancelled => self.cancelled += 1,
        }
        true
    }

    /// The oldest job the lane policy lets a thread run now, marked as running; a `small_only`
    /// thread (`DispatchConfig::small_reserve`) looks at the small lane alone. Jobs found
    /// expired or abandoned on the way are dropped unprocessed (their submitters normally take
    /// them out first; this covers the instant between a deadline and the submitter's timer).
    pub fn next_job(&mut self, now: Instant, small_only: bool) -> Option<(Lane, Waiting)> {
        loop {
            let large_allowed = self.large_busy < self.large_limit;
            let lane = Lane::ALL
                .into_iter()
                .filter(|&lane| !small_only || lane == Lane::Small)
                .filter(|lane| large_allowed || !lane.is_capped())
                .filter_map(|lane| self.waiting.get(lane).front().map(|w| (w.seq, lane)))
                .min()?
                .1;
            let job = self.waiting.get_mut(lane).pop_front().expect("the lane's front was just seen");
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
        Lane::ALL.iter().all(|&lane| self.waiting.get(lane).is_empty())
    }

    /// Threads leave once shutdown has been asked and no job is left to run.
    pub fn should_exit(&self) -> bool {
        self.shutting_down && self.is_empty()
    }

    fn retry_after(&self, lane: Lane) -> Duration {
        let serving = match lane {
            Lane::Large => self.large_limit,
            Lane::Medium => self.threads,
            Lane::Small => self.threads + self.small_reserve,
        };
        retry_estimate(self.waiting.get(lane).len(), *self.mean_service.get(lane), serving)
    }

    pub fn stats(&self) -> DispatchStats {
        DispatchStats {
            lanes: self.waiting.map(|lane, waiting| LaneStats {
                queued: waiting.len(),
                capacity: *self.capacity.get(lane),
                mean_service_time: *self.mean_service.get(lane),
            }),
            threads: self.threads + self.small_reserve,
            busy_threads: self.busy,
            completed: self.completed,
            dropped_expired: self.dropped_expired,
            cancelled: self.cancelled,
        }
    }
}

/// depth × mean service time ÷ serving threads, rounded up to whole milliseconds, at least 1 ms.
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
    use tokio::sync::oneshot;

    use super::*;
    use crate::job::Done;

    fn lanes(threads: usize) -> Lanes {
        Lanes::new(&DispatchConfig::with_threads(threads))
    }

    /// Admits a job that is never run (these tests only look at the policy).
    fn push(lanes: &mut Lanes, lane: Lane, now: Instant) -> (u64, oneshot::Receiver<Result<Done, DispatchError>>) {
        let (tx, rx) = oneshot::channel();
        let seq = lanes.admit(lane, Work::noop(), now + Duration::from_secs(60), now, tx).unwrap();
        (seq, rx)
    }

    #[test]
    fn retry_estimate_is_depth_times_mean_over_threads_and_at_least_one_ms() {
        assert_eq!(retry_estimate(4, Duration::from_millis(10), 2), Duration::from_millis(20));
        assert_eq!(retry_estimate(3, Duration::from_micros(1_500), 2), Duration::from_millis(3));
        assert_eq!(retry_estimate(0, Duration::from_secs(1), 2), Duration::from_millis(1));
        assert_eq!(retry_estimate(5, Duration::ZERO, 1), Duration::from_millis(1));
        assert_eq!(retry_estimate(5, Duration::from_millis(10), 0), Duration::from_millis(50));
    }

    #[test]
    fn service_mean_starts_at_the_first_sample_then_moves_by_an_eighth() {
        let mut s = lanes(2);
        s.busy = 2;
        s.finish(Lane::Small, Duration::from_millis(80));
        assert_eq!(s.mean_service.small, Duration::from_millis(80));
        s.finish(Lane::Small, Duration::from_millis(160));
        assert_eq!(s.mean_service.small, Duration::from_millis(90));
        assert_eq!(s.mean_service.large, PRIOR_SERVICE_TIME.large);
    }

    #[test]
    fn oldest_job_first_across_lanes() {
        let mut s = lanes(3);
        let now = Instant::now();
        let (_, _m) = push(&mut s, Lane::Medium, now);
        let (_, _s) = push(&mut s, Lane::Small, now);
        let (_, _l) = push(&mut s, Lane::Large, now);
        let order: Vec<Lane> = std::iter::from_fn(|| s.next_job(now, false).map(|(lane, _)| lane)).collect();
        assert_eq!(order, [Lane::Medium, Lane::Small, Lane::Large]);
    }

    #[test]
    fn medium_jobs_use_every_thread() {
        let mut s = lanes(2);
        let now = Instant::now();
        let _rx: Vec<_> = (0..3).map(|_| push(&mut s, Lane::Medium, now).1).collect();
        assert_eq!(s.next_job(now, false).map(|j| j.0), Some(Lane::Medium));
        assert_eq!(s.next_job(now, false).map(|j| j.0), Some(Lane::Medium));
        assert_eq!(s.stats().busy_threads, 2);
    }

    #[test]
    fn one_thread_is_kept_from_large_jobs() {
        let mut s = lanes(3);
        let now = Instant::now();
        let _rx: Vec<_> = (0..3).map(|_| push(&mut s, Lane::Large, now).1).collect();
        let (_, _m) = push(&mut s, Lane::Medium, now);
        let (_, _s) = push(&mut s, Lane::Small, now);
        assert_eq!(s.next_job(now, false).map(|j| j.0), Some(Lane::Large));
        assert_eq!(s.next_job(now, false).map(|j| j.0), Some(Lane::Large));
        // Two of three threads run large jobs: the third takes the medium and small ones.
        assert_eq!(s.next_job(now, false).map(|j| j.0), Some(Lane::Medium));
        assert_eq!(s.next_job(now, false).map(|j| j.0), Some(Lane::Small));
        assert!(s.next_job(now, false).is_none());
        s.finish(Lane::Large, Duration::from_millis(5));
        assert_eq!(s.next_job(now, false).map(|j| j.0), Some(Lane::Large));
    }

    #[test]
    fn a_small_only_thread_takes_small_jobs_past_older_medium_ones() {
        let mut s = lanes(1);
        let now = Instant::now();
        let (_, _m) = push(&mut s, Lane::Medium, now);
        let (_, _l) = push(&mut s, Lane::Large, now);
        assert!(s.next_job(now, true).is_none(), "a reserved thread leaves medium and large jobs alone");
        let (small, _s) = push(&mut s, Lane::Small, now);
        assert_eq!(s.next_job(now, true).map(|(_, q)| q.seq), Some(small));
        assert_eq!(s.next_job(now, false).map(|j| j.0), Some(Lane::Medium));
    }

    #[test]
    fn a_single_thread_runs_every_lane() {
        let mut s = lanes(1);
        let now = Instant::now();
        let (_, _l) = push(&mut s, Lane::Large, now);
        assert_eq!(s.next_job(now, false).map(|j| j.0), Some(Lane::Large));
    }

    #[test]
    fn full_lane_refuses_at_once_and_other_lanes_still_admit() {
        let mut s = Lanes::new(&DispatchConfig {
            capacity: PerLane { small: 2, medium: 1, large: 1 },
            ..DispatchConfig::with_threads(2)
        });
        let now = Instant::now();
        let _l = push(&mut s, Lane::Large, now);
        let (tx, _rx) = oneshot::channel();
        let err = s.admit(Lane::Large, Work::noop(), now + Duration::from_secs(1), now, tx).unwrap_err();
        // One waiting large job, the prior of 1 s, one thread serving the large lane.
        assert!(matches!(err, DispatchError::Overloaded { lane: Lane::Large, retry_after }
            if retry_after == Duration::from_secs(1)));
        let _s = push(&mut s, Lane::Small, now);
    }

    #[test]
    fn withdraw_takes_out_only_a_job_still_waiting() {
        let mut s = lanes(2);
        let now = Instant::now();
        let (a, _ra) = push(&mut s, Lane::Small, now);
        let (b, _rb) = push(&mut s, Lane::Small, now);
        let (c, _rc) = push(&mut s, Lane::Small, now);
        assert!(s.withdraw(Lane::Small, b, Withdrawal::Cancelled));
        assert!(!s.withdraw(Lane::Small, b, Withdrawal::Cancelled));
        assert!(!s.withdraw(Lane::Medium, a, Withdrawal::Expired));
        assert!(s.withdraw(Lane::Small, c, Withdrawal::Expired));
        assert_eq!((s.cancelled, s.dropped_expired), (1, 1));
        assert_eq!(s.next_job(now, false).map(|(_, q)| q.seq), Some(a));
    }

    #[test]
    fn expired_and_abandoned_jobs_are_skipped_not_run() {
        let mut s = lanes(2);
        let now = Instant::now();
        let (tx, mut expired) = oneshot::channel();
        s.admit(Lane::Small, Work::noop(), now + Duration::from_millis(5), now, tx).unwrap();
        let (_, abandoned) = push(&mut s, Lane::Small, now);
        drop(abandoned);
        let (live, _rx) = push(&mut s, Lane::Small, now);
        let later = now + Duration::from_millis(10);
        assert_eq!(s.next_job(later, false).map(|(_, q)| q.seq), Some(live));
        assert!(matches!(expired.try_recv(), Ok(Err(DispatchError::DeadlineExceeded))));
        assert_eq!((s.dropped_expired, s.cancelled, s.busy), (1, 1, 1));
    }
}
