//! What publishing a job can answer besides "queued".

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The stream holds `max_jobs` already (discard-new refused the job): answer 503 at once.
    #[error("the job queue is full")]
    Full,
    /// No JetStream answer in time (no connection, no stream leader, a lost quorum). The job may
    /// be retried under the same message id: JetStream deduplicates it.
    #[error("the job queue is unavailable: {0}")]
    Unavailable(String),
    /// Source bytes staged on this node would exceed their memory bound.
    #[error("this node holds too many staged images")]
    StagingFull,
    /// The queue's settings cannot work (found when connecting, before any job).
    #[error("the job queue's configuration is invalid: {0}")]
    Config(String),
}
