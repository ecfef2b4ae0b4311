//! The one error type of the dispatcher. Each variant is one answer the HTTP edge gives; which
//! status that is stays with the edge (`api`'s `problem.rs`, the one table): this crate knows
//! no HTTP.

use std::time::Duration;

use crate::config::Lane;

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The job's lane is full: answer 503 with `Retry-After` at once. `retry_after` estimates when
    /// the lane will have room: lane depth × recent mean service time ÷ threads serving the lane,
    /// at least 1 ms.
    #[error("the {lane} lane is full; retry after {} ms", retry_after.as_millis())]
    Overloaded { lane: Lane, retry_after: Duration },
    /// The deadline passed before the result was ready, whether the job was still waiting (it is
    /// dropped, never run) or already running (its result is discarded). The edge answers 504.
    #[error("the deadline passed before the image was ready")]
    DeadlineExceeded,
    /// `shutdown` was called: no new jobs are taken (503).
    #[error("the dispatcher is shutting down")]
    ShuttingDown,
    /// The pipeline refused or failed the image; its own status applies.
    #[error(transparent)]
    Imaging(#[from] imaging::ImagingError),
    /// The pipeline panicked on this job (a bug of ours; the pool thread lives on): 500. The
    /// message is for the logs, not for the client. The name and message are the image worker's
    /// in both modes: in the cluster a `worker` node's pool is where the panic happened.
    #[error("the image worker panicked: {message}")]
    WorkerPanicked { message: String },
}
