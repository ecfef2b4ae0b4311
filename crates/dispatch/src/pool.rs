//! The thread pool: the [`Pool`] that handles, submitters and threads share (the lanes under one
//! mutex, the condvar idle threads sleep on, the exit signal), and the threads themselves — plain
//! OS threads, one per core, that take jobs from the lanes and run `imaging::process` off the
//! async runtime. A panic in the pipeline is caught and answered as `WorkerPanicked`; the thread
//! carries on with the next job.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::watch;

use crate::config::{DispatchConfig, Lane};
use crate::error::DispatchError;
use crate::job::Done;
use crate::lanes::{Lanes, Waiting, Withdrawal};

/// What lives behind the `Arc` shared by handles, submitters and pool threads.
pub(crate) struct Pool {
    pub config: DispatchConfig,
    lanes: Mutex<Lanes>,
    /// Signalled when a job may have become runnable for an idle thread, or when idle threads
    /// should look at the shutdown flag.
    pub work_ready: Condvar,
    /// `true` once every pool thread has left its loop.
    pub exited: watch::Sender<bool>,
}

impl Pool {
    pub fn new(config: DispatchConfig) -> Pool {
        Pool {
            lanes: Mutex::new(Lanes::new(&config)),
            config,
            work_ready: Condvar::new(),
            exited: watch::Sender::new(false),
        }
    }

    /// The lock is never held across a panic-prone call (images run outside it), so a poisoned
    /// lock can only come from a bug in the lanes; they are still consistent enough to drain.
    pub fn lock(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a job back out of its lane (see [`Lanes::withdraw`]) and lets idle threads leave
    /// if that emptied the lanes during shutdown.
    pub fn withdraw(&self, lane: Lane, seq: u64, why: Withdrawal) {
        let mut lanes = self.lock();
        lanes.withdraw(lane, seq, why);
        if lanes.should_exit() {
            self.work_ready.notify_all();
        }
    }

    /// Stops admitting jobs; the threads finish the waiting and running ones, then leave.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.work_ready.notify_all();
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Lanes>) -> MutexGuard<'a, Lanes> {
        self.work_ready.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }
}

/// Spawns the pool's threads: `threads` that run any lane, then `small_reserve` that run small
/// jobs only. Their number is counted before any starts, so `drained` cannot see zero live
/// threads while some are still being spawned.
pub(crate) fn spawn_threads(pool: &Arc<Pool>, threads: usize, small_reserve: usize) {
    pool.lock().live_threads = threads + small_reserve;
    for i in 0..threads + small_reserve {
        let pool = Arc::clone(pool);
        let small_only = i >= threads;
        std::thread::Builder::new()
            // The name operators see in panic messages and `top -H`; kept as it has always been.
            .name(if small_only { format!("dispatch-small-{}", i - threads) } else { format!("dispatch-worker-{i}") })
            .spawn(move || run(&pool, small_only))
            .expect("cannot spawn a dispatch pool thread");
    }
}

fn run(pool: &Pool, small_only: bool) {
    let mut lanes = pool.lock();
    // Idle threads sleep on the condvar and need no wake-up when a running job finishes: the
    // thread that finishes picks the next job itself, using the large-lane slot it just freed, and
    // every admission wakes a sleeper of its own (every sleeper, when some take small jobs only).
    loop {
        let Some((lane, job)) = lanes.next_job(Instant::now(), small_only) else {
            if lanes.should_exit() {
                // Others may be asleep on a lane-policy refusal for a job that is gone now
                // (this thread may have just dropped it as expired): let them see the empty
                // lanes and leave too.
                pool.work_ready.notify_all();
                break;
            }
            lanes = pool.wait(lanes);
            continue;
        };
        drop(lanes);

        let Waiting { admitted, work, reply, .. } = job;
        let started = Instant::now();
        let queue_wait = started.saturating_duration_since(admitted);
        let result = match catch_unwind(AssertUnwindSafe(move || work.run())) {
            Ok(Ok(output)) => Ok(Done { output, queue_wait, lane }),
            Ok(Err(e)) => Err(DispatchError::Imaging(e)),
            Err(panic) => Err(DispatchError::WorkerPanicked { message: panic_message(&*panic) }),
        };
        let service_time = started.elapsed();

        lanes = pool.lock();
        // Booked before the answer is sent, so a submitter that has its answer sees it counted.
        lanes.finish(lane, service_time);
        // The submitter may be gone (deadline passed, client disconnected): the result is dropped.
        let _ = reply.send(result);
    }
    lanes.live_threads -= 1;
    if lanes.live_threads == 0 {
        pool.exited.send_replace(true);
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "a non-string panic payload".to_owned(),
    }
}
