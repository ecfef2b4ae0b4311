//! Scheduling behaviour on real pool threads. Threads are held busy by gated test jobs
//! (`Work::Test`), so overload, deadlines, cancellation and lanes are reached deterministically:
//! no sleeps, and futures are polled by hand where "answers at once" is the point.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::job::{test_output, Work};
use crate::{DispatchConfig, DispatchError, Dispatcher, Lane, PerLane};

const SMALL: u64 = 100 * 100;
const MEDIUM: u64 = 2_000_000;
const LARGE: u64 = 20_000_000;

/// Generous bound for anything that must happen "now"; only reached when the code is wrong.
const PATIENCE: Duration = Duration::from_secs(10);

fn far() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn dispatcher(threads: usize) -> Dispatcher {
    Dispatcher::start(DispatchConfig::with_threads(threads))
}

/// Polls a future once, as an executor would on first contact.
fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// Awaits `f`, failing the test instead of hanging if it never resolves.
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(PATIENCE, f).await.expect("did not resolve in time")
}

/// A job that reports when a pool thread starts it and then blocks until released.
struct Gate {
    started: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

impl Gate {
    fn wait_started(&self) {
        self.started.recv_timeout(PATIENCE).expect("the gated job did not start");
    }
    fn has_started(&self) -> bool {
        self.started.try_recv().is_ok()
    }
    fn release(&self) {
        let _ = self.release.send(());
    }
}

fn gated() -> (Work, Gate) {
    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let work = Work::Test(Box::new(move || {
        let _ = started_tx.send(());
        // A dropped gate (failed test) also lets the thread go.
        let _ = released.recv();
        Ok(test_output())
    }));
    (work, Gate { started, release })
}

/// A job that records that it ran.
fn flagged() -> (Work, Arc<AtomicBool>) {
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    (Work::Test(Box::new(move || Ok(test_output()).inspect(|_| flag.store(true, Ordering::SeqCst)))), ran)
}

#[tokio::test]
async fn full_lane_answers_overloaded_at_once_and_other_lanes_still_admit() {
    let d = Dispatcher::start(DispatchConfig {
        capacity: PerLane { small: 2, medium: 1, large: 1 },
        ..DispatchConfig::with_threads(1)
    });
    let (hold, gate) = gated();
    let mut running = pin!(d.submit_work(hold, SMALL, far()));
    assert!(poll_once(running.as_mut()).is_pending());
    gate.wait_started();
    let mut waiting_1 = pin!(d.submit_work(Work::noop(), SMALL, far()));
    let mut waiting_2 = pin!(d.submit_work(Work::noop(), SMALL, far()));
    assert!(poll_once(waiting_1.as_mut()).is_pending());
    assert!(poll_once(waiting_2.as_mut()).is_pending());

    let mut refused = pin!(d.submit_work(Work::noop(), SMALL, far()));
    match poll_once(refused.as_mut()) {
        // Two waiting × the small lane's 20 ms prior (nothing finished yet) ÷ one thread.
        Poll::Ready(Err(DispatchError::Overloaded { lane: Lane::Small, retry_after })) => {
            assert_eq!(retry_after, Duration::from_millis(40));
        }
        other => panic!("expected Overloaded at the first poll, got {other:?}"),
    }
    let mut medium = pin!(d.submit_work(Work::noop(), MEDIUM, far()));
    assert!(poll_once(medium.as_mut()).is_pending());

    let stats = d.stats();
    assert_eq!((stats.lanes.small.queued, stats.lanes.small.capacity), (2, 2));
    assert_eq!((stats.lanes.medium.queued, stats.busy_threads), (1, 1));

    gate.release();
    for f in [running, waiting_1, waiting_2, medium] {
        within(f).await.expect("admitted jobs complete");
    }
    assert_eq!(d.stats().completed, 4);
}

#[tokio::test]
async fn a_job_expiring_in_its_lane_is_answered_at_its_deadline_and_never_run() {
    let d = dispatcher(1);
    let (hold, gate) = gated();
    let mut running = pin!(d.submit_work(hold, SMALL, far()));
    assert!(poll_once(running.as_mut()).is_pending());
    gate.wait_started();

    let (work, ran) = flagged();
    let deadline = Instant::now() + Duration::from_millis(100);
    let answer = within(d.submit_work(work, SMALL, deadline)).await;
    let answered = Instant::now();
    assert!(matches!(answer, Err(DispatchError::DeadlineExceeded)), "{answer:?}");
    assert!(answered >= deadline && answered - deadline < Duration::from_millis(200), "{:?}", answered - deadline);
    // The slot is free at once, not when a thread gets round to it.
    let stats = d.stats();
    assert_eq!((stats.lanes.small.queued, stats.dropped_expired, stats.busy_threads), (0, 1, 1));

    gate.release();
    within(running).await.unwrap();
    // One thread, FIFO: once a later job is answered, the expired one would have run before it.
    within(d.submit_work(Work::noop(), SMALL, far())).await.unwrap();
    assert!(!ran.load(Ordering::SeqCst));
    let stats = d.stats();
    assert_eq!((stats.completed, stats.dropped_expired, stats.cancelled), (2, 1, 0));
}

#[tokio::test]
async fn a_job_already_expired_is_refused_without_being_admitted() {
    let d = dispatcher(1);
    let (work, ran) = flagged();
    let mut f = pin!(d.submit_work(work, SMALL, Instant::now()));
    assert!(matches!(poll_once(f.as_mut()), Poll::Ready(Err(DispatchError::DeadlineExceeded))));
    within(d.submit_work(Work::noop(), SMALL, far())).await.unwrap();
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!((d.stats().dropped_expired, d.stats().completed), (1, 1));
}

#[tokio::test]
async fn a_running_job_past_its_deadline_is_answered_at_the_deadline_and_its_result_discarded() {
    let d = dispatcher(1);
    let (work, gate) = gated();
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut f = pin!(d.submit_work(work, SMALL, deadline));
    assert!(poll_once(f.as_mut()).is_pending());
    gate.wait_started();

    // The gate is still shut: the answer cannot come from the thread.
    let answer = within(f).await;
    let answered = Instant::now();
    assert!(matches!(answer, Err(DispatchError::DeadlineExceeded)), "{answer:?}");
    assert!(answered >= deadline && answered - deadline < Duration::from_millis(200), "{:?}", answered - deadline);
    assert_eq!(d.stats().busy_threads, 1);

    gate.release();
    // The thread finished the abandoned job and carries on.
    within(d.submit_work(Work::noop(), SMALL, far())).await.unwrap();
    let stats = d.stats();
    assert_eq!((stats.completed, stats.dropped_expired, stats.busy_threads), (2, 0, 0));
}

#[tokio::test]
async fn dropping_the_submit_future_cancels_the_waiting_job() {
    let d = dispatcher(1);
    let (hold, gate) = gated();
    let mut running = pin!(d.submit_work(hold, SMALL, far()));
    assert!(poll_once(running.as_mut()).is_pending());
    gate.wait_started();

    let (work, ran) = flagged();
    let mut abandoned = Box::pin(d.submit_work(work, SMALL, far()));
    assert!(poll_once(abandoned.as_mut()).is_pending());
    assert_eq!(d.stats().lanes.small.queued, 1);
    drop(abandoned);
    let stats = d.stats();
    assert_eq!((stats.lanes.small.queued, stats.cancelled), (0, 1));

    gate.release();
    within(running).await.unwrap();
    within(d.submit_work(Work::noop(), SMALL, far())).await.unwrap();
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(d.stats().completed, 2);
}

#[tokio::test]
async fn an_aborted_request_task_cancels_its_waiting_job() {
    // What the HTTP server does when a client disconnects: the handler's task is dropped.
    let d = dispatcher(1);
    let (hold, gate) = gated();
    let mut running = pin!(d.submit_work(hold, SMALL, far()));
    assert!(poll_once(running.as_mut()).is_pending());
    gate.wait_started();

    let (work, ran) = flagged();
    let (waiting_tx, waiting_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn({
        let d = d.clone();
        async move {
            let mut f = pin!(d.submit_work(work, SMALL, far()));
            assert!(poll_once(f.as_mut()).is_pending());
            let _ = waiting_tx.send(());
            f.await
        }
    });
    within(waiting_rx).await.unwrap();
    task.abort();
    assert!(within(task).await.unwrap_err().is_cancelled());
    assert_eq!(d.stats().cancelled, 1);

    gate.release();
    within(running).await.unwrap();
    within(d.submit_work(Work::noop(), SMALL, far())).await.unwrap();
    assert!(!ran.load(Ordering::SeqCst));
}

#[tokio::test]
async fn small_jobs_pass_while_big_jobs_hold_all_but_one_thread() {
    let d = dispatcher(2);
    let (large_1, gate_1) = gated();
    let (large_2, gate_2) = gated();
    let mut f1 = pin!(d.submit_work(large_1, LARGE, far()));
    let mut f2 = pin!(d.submit_work(large_2, LARGE, far()));
    assert!(poll_once(f1.as_mut()).is_pending());
    assert!(poll_once(f2.as_mut()).is_pending());
    gate_1.wait_started();

    // The second thread is kept for small images: the small job finishes while both big ones
    // are blocked (it would wait forever if the second large job had taken that thread).
    let done = within(d.submit_work(Work::noop(), SMALL, far())).await.unwrap();
    assert_eq!(done.lane, Lane::Small);
    assert!(!gate_2.has_started());
    let stats = d.stats();
    assert_eq!((stats.lanes.large.queued, stats.busy_threads), (1, 1));

    gate_1.release();
    gate_2.wait_started();
    gate_2.release();
    assert_eq!(within(f1).await.unwrap().lane, Lane::Large);
    assert_eq!(within(f2).await.unwrap().lane, Lane::Large);
}

#[tokio::test]
async fn one_thread_takes_the_oldest_job_of_any_lane() {
    let d = dispatcher(1);
    let (hold, gate) = gated();
    let mut running = pin!(d.submit_work(hold, SMALL, far()));
    assert!(poll_once(running.as_mut()).is_pending());
    gate.wait_started();

    let order = Arc::new(Mutex::new(Vec::new()));
    let job = |lane: Lane| {
        let order = Arc::clone(&order);
        Work::Test(Box::new(move || {
            order.lock().unwrap().push(lane);
            Ok(test_output())
        }))
    };
    let mut medium = pin!(d.submit_work(job(Lane::Medium), MEDIUM, far()));
    let mut small = pin!(d.submit_work(job(Lane::Small), SMALL, far()));
    let mut large = pin!(d.submit_work(job(Lane::Large), LARGE, far()));
    for f in [medium.as_mut(), small.as_mut(), large.as_mut()] {
        assert!(poll_once(f).is_pending());
    }
    gate.release();
    within(running).await.unwrap();
    for f in [medium, small, large] {
        within(f).await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [Lane::Medium, Lane::Small, Lane::Large]);
}

#[tokio::test]
async fn a_small_reserve_thread_runs_small_jobs_while_the_only_thread_holds_a_medium_one() {
    let d = Dispatcher::start(DispatchConfig { small_reserve: 1, ..DispatchConfig::with_threads(1) });
    let (hold, gate) = gated();
    let mut medium = pin!(d.submit_work(hold, MEDIUM, far()));
    assert!(poll_once(medium.as_mut()).is_pending());
    gate.wait_started();
    // A second medium job waits for the one general thread; the reserved one must not take it.
    let (next, next_gate) = gated();
    let mut waiting_medium = pin!(d.submit_work(next, MEDIUM, far()));
    assert!(poll_once(waiting_medium.as_mut()).is_pending());
    assert_eq!(within(d.submit_work(Work::noop(), SMALL, far())).await.unwrap().lane, Lane::Small);
    assert!(!next_gate.has_started(), "the reserved thread ran a medium job");
    gate.release();
    within(medium).await.unwrap();
    next_gate.wait_started();
    next_gate.release();
    within(waiting_medium).await.unwrap();
    let stats = d.stats();
    assert_eq!((stats.completed, stats.threads), (3, 2), "the reserved thread is one of the pool's");
}

#[tokio::test]
async fn a_panic_is_answered_and_the_thread_carries_on() {
    let d = dispatcher(1);
    let boom = Work::Test(Box::new(|| panic!("boom in a test job")));
    match within(d.submit_work(boom, SMALL, far())).await {
        Err(e @ DispatchError::WorkerPanicked { .. }) => {
            assert!(e.to_string().contains("boom in a test job"), "{e}");
        }
        other => panic!("expected WorkerPanicked, got {other:?}"),
    }
    within(d.submit_work(Work::noop(), SMALL, far())).await.unwrap();
    let stats = d.stats();
    assert_eq!((stats.completed, stats.threads, stats.busy_threads), (2, 1, 0));
}

#[tokio::test]
async fn shutdown_refuses_new_jobs_and_drains_waiting_and_running_ones() {
    let d = dispatcher(2);
    let (hold, gate) = gated();
    let mut running = pin!(d.submit_work(hold, LARGE, far()));
    assert!(poll_once(running.as_mut()).is_pending());
    gate.wait_started();
    // Waiting behind the running large job by the lane policy, not for a lack of threads.
    let (work, ran) = flagged();
    let mut waiting = pin!(d.submit_work(work, LARGE, far()));
    assert!(poll_once(waiting.as_mut()).is_pending());

    d.shutdown();
    let mut refused = pin!(d.submit_work(Work::noop(), SMALL, far()));
    assert!(matches!(poll_once(refused.as_mut()), Poll::Ready(Err(DispatchError::ShuttingDown))));
    let mut drained = pin!(d.drained());
    assert!(poll_once(drained.as_mut()).is_pending());

    gate.release();
    within(running).await.unwrap();
    within(waiting).await.unwrap();
    assert!(ran.load(Ordering::SeqCst));
    within(drained).await;
    assert_eq!(d.stats().completed, 2);
}

#[tokio::test]
async fn shutdown_drains_when_a_thread_finds_the_last_job_expired() {
    // The submitter's timer is never polled, so the thread, not the submitter, finds the job
    // expired; the other thread is asleep because the lane policy refused it that job.
    let d = dispatcher(2);
    let (hold, gate) = gated();
    let mut running = pin!(d.submit_work(hold, LARGE, far()));
    assert!(poll_once(running.as_mut()).is_pending());
    gate.wait_started();
    let (work, ran) = flagged();
    let deadline = Instant::now() + Duration::from_millis(20);
    let mut expiring = pin!(d.submit_work(work, LARGE, deadline));
    assert!(poll_once(expiring.as_mut()).is_pending());
    d.shutdown();
    // Let the deadline pass: the clock is this test's input, not a way to wait for a thread.
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));

    gate.release();
    within(d.drained()).await;
    assert!(matches!(poll_once(expiring.as_mut()), Poll::Ready(Err(DispatchError::DeadlineExceeded))));
    assert!(!ran.load(Ordering::SeqCst));
    within(running).await.unwrap();
    let stats = d.stats();
    assert_eq!((stats.completed, stats.dropped_expired), (1, 1));
}

#[tokio::test]
async fn dropping_the_last_handle_ends_the_pool_threads() {
    let d = dispatcher(2);
    let clone = d.clone();
    let pool = Arc::downgrade(d.pool());
    drop(d);
    // Another handle is alive: the pool still serves.
    within(clone.submit_work(Work::noop(), SMALL, far())).await.unwrap();
    drop(clone);
    // Each thread holds the pool until it returns.
    let give_up = Instant::now() + PATIENCE;
    while pool.upgrade().is_some() {
        assert!(Instant::now() < give_up, "pool threads still alive");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[test]
fn submit_futures_can_move_between_threads() {
    fn is_send<T: Send>(_: T) {}
    let d = dispatcher(1);
    let job = crate::Job {
        input: Vec::new(),
        spec: imaging::ResizeSpec::new(Some(1), None).unwrap(),
        limits: imaging::Limits::default(),
        pixels: 0,
        deadline: far(),
    };
    // Never polled; this only has to compile (axum handlers need `Send` futures).
    is_send(d.submit(job));
}
