//! The api node's side of "bytes off the queue": each job's source bytes wait here, in memory,
//! under a random capability token, until a worker fetches them and hands the result back.
//!
//! The token belongs to one job and dies with it: when its result is accepted, when the request
//! gives up (deadline, client gone) or when the node restarts. Before that it may fetch the
//! source more than once — a redelivered job (its first worker died) needs the bytes again — but
//! it completes the job exactly once: a second result, say from a worker that was frozen and
//! woke up after the job went elsewhere, is refused, so no result is ever delivered twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use dispatch::Lane;
use tokio::sync::oneshot;

use crate::error::QueueError;
use crate::wire::{Failure, RemoteDone};

/// The answer a worker delivers for one job.
pub type Delivery = Result<RemoteDone, Failure>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StagingError {
    /// No such job here: it completed, gave up, or never was (HTTP 410: a worker stops trying).
    #[error("no job {0} is staged on this node (done, expired or unknown)")]
    Gone(String),
    /// The job exists but the token is not its token (HTTP 403).
    #[error("the token does not open job {0}")]
    WrongToken(String),
}

/// Staged jobs, shared by the resize handlers (stage and await) and the internal routes (fetch
/// and deliver).
pub struct Staging {
    jobs: Mutex<HashMap<String, Staged>>,
    staged_bytes: AtomicU64,
    max_bytes: u64,
    /// Of `staged_bytes`, those of large-lane jobs: at most half of `max_bytes`, so that a burst
    /// of huge images (tens of MB each, seconds per conversion) leaves the other half to small
    /// and medium ones, as the lanes do for the queue.
    large_bytes: AtomicU64,
    /// Large-lane jobs staged: each caller bounds them by its share of `queue.max_large_jobs`,
    /// so that huge images (seconds each) never fill the queue that small ones share with them.
    large_jobs: AtomicUsize,
}

struct Staged {
    token: String,
    input: Bytes,
    reply: Option<oneshot::Sender<Delivery>>,
}

/// One staged job, held by the request that waits for it. Dropping it (answered, deadline, the
/// client went away) takes the job and its token out of the staging: the capability ends.
pub struct StagedJob {
    staging: Arc<Staging>,
    pub id: String,
    pub token: String,
    pub reply: oneshot::Receiver<Delivery>,
    len: u64,
    large: bool,
}

impl Drop for StagedJob {
    fn drop(&mut self) {
        self.staging.lock().remove(&self.id);
        self.staging.release(self.len, self.large);
    }
}

impl Staging {
    /// `max_bytes` bounds the source bytes held at once (503 past it); large-lane jobs may hold
    /// half of it.
    pub fn new(max_bytes: u64) -> Arc<Staging> {
        Arc::new(Staging {
            jobs: Mutex::new(HashMap::new()),
            staged_bytes: AtomicU64::new(0),
            max_bytes,
            large_bytes: AtomicU64::new(0),
            large_jobs: AtomicUsize::new(0),
        })
    }

    /// The most bytes one job in `lane` may stage: a larger input is never staged here, however
    /// empty the staging is.
    pub fn bound(&self, lane: Lane) -> u64 {
        match lane {
            Lane::Large => self.max_bytes / 2,
            Lane::Small | Lane::Medium => self.max_bytes,
        }
    }

    /// Counts a job of `len` bytes, a large-lane one if `large` (of which at most
    /// `max_large_jobs`), unless that passes a bound.
    fn reserve(&self, len: u64, large: bool, max_large_jobs: usize) -> Result<(), QueueError> {
        if large {
            let jobs_before = self.large_jobs.fetch_add(1, Ordering::Relaxed);
            let bytes_before = self.large_bytes.fetch_add(len, Ordering::Relaxed);
            if jobs_before >= max_large_jobs || bytes_before + len > self.bound(Lane::Large) {
                self.release_large(len);
                return Err(QueueError::StagingFull);
            }
        }
        let before = self.staged_bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > self.max_bytes {
            self.staged_bytes.fetch_sub(len, Ordering::Relaxed);
            if large {
                self.release_large(len);
            }
            return Err(QueueError::StagingFull);
        }
        Ok(())
    }

    fn release(&self, len: u64, large: bool) {
        self.staged_bytes.fetch_sub(len, Ordering::Relaxed);
        if large {
            self.release_large(len);
        }
    }

    fn release_large(&self, len: u64) {
        self.large_jobs.fetch_sub(1, Ordering::Relaxed);
        self.large_bytes.fetch_sub(len, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Staged>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stages `input` of a job in `lane` under a fresh job id and token. A large-lane job is
    /// refused when `max_large_jobs` (this node's share of them) are staged already.
    pub fn stage(self: &Arc<Self>, input: Bytes, lane: Lane, max_large_jobs: usize) -> Result<StagedJob, QueueError> {
        let (len, large) = (input.len() as u64, lane == Lane::Large);
        self.reserve(len, large, max_large_jobs)?;
        let (Some(id), Some(token)) = (random_hex(12), random_hex(32)) else {
            self.release(len, large);
            return Err(QueueError::Unavailable("the operating system gave no random bytes for a token".into()));
        };
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id.clone(), Staged { token: token.clone(), input, reply: Some(tx) });
        Ok(StagedJob { staging: self.clone(), id, token, reply: rx, len, large })
    }

    /// The source bytes of job `id`, for the holder of its token.
    pub fn source(&self, id: &str, token: &str) -> Result<Bytes, StagingError> {
        let jobs = self.lock();
        let staged = jobs.get(id).ok_or_else(|| StagingError::Gone(id.to_owned()))?;
        check_token(id, &staged.token, token)?;
        Ok(staged.input.clone())
    }

    /// Hands job `id` its answer. Only the first delivery is taken; the token then opens nothing.
    pub fn deliver(&self, id: &str, token: &str, delivery: Delivery) -> Result<(), StagingError> {
        let reply = {
            let mut jobs = self.lock();
            let staged = jobs.get_mut(id).ok_or_else(|| StagingError::Gone(id.to_owned()))?;
            check_token(id, &staged.token, token)?;
            let reply = staged.reply.take().ok_or_else(|| StagingError::Gone(id.to_owned()))?;
            // The bytes are not needed any more, and no one may fetch them with this token.
            jobs.remove(id);
            reply
        };
        // The waiting request may have just given up; then nobody wants the answer.
        let _ = reply.send(delivery);
        Ok(())
    }

    /// (jobs, bytes) staged now.
    pub fn load(&self) -> (usize, u64) {
        (self.lock().len(), self.staged_bytes.load(Ordering::Relaxed))
    }
}

/// Compares in time independent of where the strings differ.
fn check_token(id: &str, expected: &str, given: &str) -> Result<(), StagingError> {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    let differs = a.len() != b.len() || a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) != 0;
    if differs {
        return Err(StagingError::WrongToken(id.to_owned()));
    }
    Ok(())
}

/// `None` without entropy: a guessable capability is no capability.
pub(crate) fn random_hex(bytes: usize) -> Option<String> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).ok()?;
    Some(raw.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FailureKind;

    #[tokio::test]
    async fn a_token_opens_one_job_and_completes_it_once() {
        let staging = Staging::new(1 << 20);
        let a = staging.stage(Bytes::from_static(b"aaaa"), Lane::Small, 8).unwrap();
        let b = staging.stage(Bytes::from_static(b"bbbb"), Lane::Small, 8).unwrap();
        assert_ne!(a.token, b.token);
        assert_eq!(staging.source(&a.id, &a.token).unwrap(), Bytes::from_static(b"aaaa"));
        // A redelivered job fetches again.
        assert!(staging.source(&a.id, &a.token).is_ok());
        assert_eq!(staging.source(&a.id, &b.token), Err(StagingError::WrongToken(a.id.clone())));
        assert!(matches!(staging.source("nope", &a.token), Err(StagingError::Gone(_))));

        let failure = || Err(Failure::new(FailureKind::Corrupt, "x"));
        staging.deliver(&a.id, &a.token, failure()).unwrap();
        assert_eq!(staging.deliver(&a.id, &a.token, failure()), Err(StagingError::Gone(a.id.clone())), "only once");
        assert!(matches!(staging.source(&a.id, &a.token), Err(StagingError::Gone(_))), "the token is dead");
        let mut a = a;
        assert!(matches!((&mut a.reply).await, Ok(Err(_))));
        assert_eq!(staging.load().0, 1);
        drop(b);
        assert_eq!(staging.load(), (0, 4));
        drop(a);
        assert_eq!(staging.load(), (0, 0));
    }

    #[test]
    fn staged_bytes_are_bounded() {
        let staging = Staging::new(10);
        let a = staging.stage(Bytes::from(vec![0; 6]), Lane::Small, 8).unwrap();
        assert!(matches!(staging.stage(Bytes::from(vec![0; 6]), Lane::Medium, 8), Err(QueueError::StagingFull)));
        drop(a);
        assert!(staging.stage(Bytes::from(vec![0; 6]), Lane::Small, 8).is_ok());
    }

    #[test]
    fn large_jobs_hold_at_most_half_and_leave_the_rest_to_the_other_lanes() {
        let staging = Staging::new(100);
        let large = |n| staging.stage(Bytes::from(vec![0; n]), Lane::Large, 8);
        let (a, b) = (large(30).unwrap(), large(20).unwrap());
        assert!(matches!(large(1), Err(QueueError::StagingFull)), "past half of the bound");
        let small = staging.stage(Bytes::from(vec![0; 50]), Lane::Small, 8).expect("the other half is free");
        assert_eq!(staging.load(), (3, 100));
        drop(a);
        let c = large(30).expect("a dropped large job's bytes count again");
        drop((b, c, small));
        assert_eq!((staging.load(), staging.large_bytes.load(Ordering::Relaxed)), ((0, 0), 0));

        // Within its half, a large job still needs room under the whole bound.
        assert_eq!((staging.bound(Lane::Large), staging.bound(Lane::Small)), (50, 100));
        let small =
            staging.stage(Bytes::from(vec![0; 70]), Lane::Small, 8).expect("a small job may take more than half");
        let d = large(20).unwrap();
        assert!(matches!(large(20), Err(QueueError::StagingFull)), "past the whole bound");
        assert_eq!((staging.load(), staging.large_bytes.load(Ordering::Relaxed)), ((2, 90), 20));
        assert_eq!(staging.large_jobs.load(Ordering::Relaxed), 1, "the refused job's place is given back");
        drop((small, d));
        assert_eq!((staging.load(), staging.large_bytes.load(Ordering::Relaxed)), ((0, 0), 0));
    }

    #[test]
    fn large_jobs_are_counted_against_the_nodes_share() {
        let staging = Staging::new(1000);
        let large = |n| staging.stage(Bytes::from(vec![0; n]), Lane::Large, 2);
        let (a, b) = (large(1).unwrap(), large(1).unwrap());
        assert!(matches!(large(1), Err(QueueError::StagingFull)), "a third large job, with bytes to spare");
        let smalls: Vec<_> = (0..5)
            .map(|_| staging.stage(Bytes::from(vec![0; 1]), Lane::Small, 2).expect("the other lanes are not counted"))
            .collect();
        drop(a);
        let c = large(1).expect("a dropped large job frees its place");
        drop(c);
        // One place free, refused by its bytes (over half of 1000): the place is given back too.
        assert!(matches!(large(600), Err(QueueError::StagingFull)));
        assert_eq!(staging.large_jobs.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(staging.large_jobs.load(Ordering::Relaxed), 0);
        let (d, e) = (large(1).expect("two places again"), large(1).expect("two places again"));
        drop((d, e, smalls));
        assert_eq!((staging.load(), staging.large_jobs.load(Ordering::Relaxed)), ((0, 0), 0));
    }

    #[test]
    fn a_dropped_job_takes_its_token_with_it() {
        let staging = Staging::new(100);
        let a = staging.stage(Bytes::from_static(b"x"), Lane::Small, 8).unwrap();
        let (id, token) = (a.id.clone(), a.token.clone());
        drop(a);
        assert!(matches!(staging.source(&id, &token), Err(StagingError::Gone(_))));
        assert!(matches!(
            staging.deliver(&id, &token, Err(Failure::new(FailureKind::Corrupt, "x"))),
            Err(StagingError::Gone(_))
        ));
    }
}
