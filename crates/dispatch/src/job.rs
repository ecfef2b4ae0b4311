//! The data that travels through the dispatcher: a [`Job`] in, a [`Done`] out, and in between
//! the [`Work`] a pool thread runs and the [`Reply`] it answers on. Plain data with no locks and
//! no threads, so the lanes, the pool and the handle all import it and it imports none of them.

use std::time::{Duration, Instant};

use imaging::{ImagingError, Limits, Output, ResizeSpec};
use tokio::sync::oneshot;

use crate::config::Lane;
use crate::error::DispatchError;

/// One resize to run.
#[derive(Debug)]
pub struct Job {
    /// The image bytes (`Vec::from(bytes::Bytes)` takes a uniquely owned body without copying).
    pub input: Vec<u8>,
    pub spec: ResizeSpec,
    pub limits: Limits,
    /// width × height from `imaging::probe`: chooses the lane.
    pub pixels: u64,
    /// After this instant nobody wants the result: the job is dropped if still waiting in its
    /// lane, and the submitter gets `DeadlineExceeded` at this instant even if the job is running.
    pub deadline: Instant,
}

/// A finished resize.
#[derive(Debug)]
pub struct Done {
    pub output: Output,
    /// From admission to a pool thread starting the job. The service time is
    /// `output.report.wall_time`.
    pub queue_wait: Duration,
    pub lane: Lane,
}

/// Where a pool thread sends a job's answer; the submitter awaits the other end.
pub(crate) type Reply = oneshot::Sender<Result<Done, DispatchError>>;

/// What a pool thread runs for one job.
pub(crate) enum Work {
    Resize {
        input: Vec<u8>,
        spec: ResizeSpec,
        limits: Limits,
    },
    /// Tests hold threads busy on a gate, or panic, with a closure in place of an image.
    #[cfg(test)]
    Test(Box<dyn FnOnce() -> Result<Output, ImagingError> + Send>),
}

impl Work {
    pub(crate) fn run(self) -> Result<Output, ImagingError> {
        match self {
            Work::Resize { input, spec, limits } => imaging::process(&input, &spec, &limits),
            #[cfg(test)]
            Work::Test(f) => f(),
        }
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
