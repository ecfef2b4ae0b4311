//! The worker threads: plain OS threads, one per core, that take jobs from the queue and run
//! `imaging::process` off the async runtime. A panic in the pipeline is caught and answered as
//! `WorkerPanicked`; the thread carries on with the next job.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use imaging::{ImagingError, Limits, Output, ResizeSpec};

use crate::dispatcher::Done;
use crate::error::DispatchError;
use crate::queue::{Queued, Shared};

/// What a worker runs for one job.
pub(crate) enum Work {
    Resize {
        input: Vec<u8>,
        spec: ResizeSpec,
        limits: Limits,
    },
    /// Tests hold workers busy on a gate, or panic, with a closure in place of an image.
    #[cfg(test)]
    Test(Box<dyn FnOnce() -> Result<Output, ImagingError> + Send>),
}

impl Work {
    fn run(self) -> Result<Output, ImagingError> {
        match self {
            Work::Resize { input, spec, limits } => imaging::process(&input, &spec, &limits),
            #[cfg(test)]
            Work::Test(f) => f(),
        }
    }
}

/// Spawns the worker threads. Their number is counted before any starts, so `drained` cannot
/// see zero live workers while some are still being spawned.
pub(crate) fn spawn(shared: &Arc<Shared>, workers: usize) {
    shared.lock().live_workers = workers;
    for i in 0..workers {
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name(format!("dispatch-worker-{i}"))
            .spawn(move || run(&shared))
            .expect("cannot spawn a dispatch worker thread");
    }
}

fn run(shared: &Shared) {
    let mut state = shared.lock();
    // Idle workers sleep on the condvar and need no wake-up when a running job finishes: the
    // worker that finishes picks the next job itself, using the large-lane slot it just freed, and
    // every enqueue wakes a sleeper of its own.
    loop {
        let Some((lane, job)) = state.next_job(Instant::now()) else {
            if state.should_exit() {
                // Others may be asleep on a lane-policy refusal for a job that is gone now
                // (this worker may have just dropped it as expired): let them see the empty
                // queue and leave too.
                shared.work_ready.notify_all();
                break;
            }
            state = shared.wait(state);
            continue;
        };
        drop(state);

        let Queued { enqueued, work, reply, .. } = job;
        let started = Instant::now();
        let queue_wait = started.saturating_duration_since(enqueued);
        let result = match catch_unwind(AssertUnwindSafe(move || work.run())) {
            Ok(Ok(output)) => Ok(Done { output, queue_wait, lane }),
            Ok(Err(e)) => Err(DispatchError::Imaging(e)),
            Err(panic) => Err(DispatchError::WorkerPanicked { message: panic_message(&*panic) }),
        };
        let service_time = started.elapsed();

        state = shared.lock();
        // Booked before the answer is sent, so a submitter that has its answer sees it counted.
        state.finish(lane, service_time);
        // The submitter may be gone (deadline passed, client disconnected): the result is dropped.
        let _ = reply.send(result);
    }
    state.live_workers -= 1;
    if state.live_workers == 0 {
        shared.exited.send_replace(true);
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "a non-string panic payload".to_owned(),
    }
}

#[cfg(test)]
impl Work {
    /// A job that succeeds at once with an empty output.
    pub(crate) fn noop() -> Work {
        Work::Test(Box::new(|| Ok(test_output())))
    }
}

#[cfg(test)]
pub(crate) fn test_output() -> Output {
    use imaging::{ImageFormat, OutputFormat, Report};
    use std::time::Duration;
    Output {
        bytes: Vec::new(),
        report: Report {
            input_format: ImageFormat::Png,
            input_width: 1,
            input_height: 1,
            input_bytes: 0,
            format: OutputFormat::Png,
            width: 1,
            height: 1,
            bytes: 0,
            decode_scale: 1,
            cpu_time: Duration::ZERO,
            wall_time: Duration::ZERO,
        },
    }
}
