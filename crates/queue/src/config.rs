//! Where the jobs go and how JetStream keeps them: one stream, one subject per size lane, one
//! durable pull consumer shared by every worker. Every field has a documented default.

use std::time::Duration;

use dispatch::Lane;

/// A worker tells JetStream it is still on a job this often, so `ack_wait` only has to cover a
/// dead or frozen worker, not a slow conversion.
pub const ACK_PROGRESS_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The stream's name (`JOBS`).
    pub stream: String,
    /// Subjects are `<prefix>.<lane>`: `jobs.small`, `jobs.medium`, `jobs.large`.
    pub subject_prefix: String,
    /// The durable pull consumer every worker pulls from (`workers`).
    pub consumer: String,
    /// Copies of each job across the NATS cluster (3: one node may fail).
    pub replicas: usize,
    /// The most jobs the stream holds; past it a publish is refused (discard-new) and the api
    /// answers 503 at once instead of queueing work nobody will wait for.
    pub max_jobs: i64,
    /// A job older than this is dropped by JetStream: the request's deadline, after which
    /// nobody waits for the result.
    pub max_age: Duration,
    /// A delivered job not acknowledged (nor marked in progress) for this long goes to another
    /// worker: the time a dead or frozen worker costs its jobs.
    pub ack_wait: Duration,
    /// Deliveries that may run a job. A job delivered once more than this has killed or lost
    /// that many workers: the next worker fails it (422) without running it.
    pub max_attempts: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            stream: "JOBS".into(),
            subject_prefix: "jobs".into(),
            consumer: "workers".into(),
            replicas: 3,
            max_jobs: 4096,
            max_age: Duration::from_secs(10),
            ack_wait: Duration::from_secs(2),
            max_attempts: 3,
        }
    }
}

impl QueueConfig {
    pub fn subject(&self, lane: Lane) -> String {
        format!("{}.{}", self.subject_prefix, lane.as_str())
    }

    /// JetStream's `max_deliver`: the attempts that run, plus the one that fails the job.
    pub fn max_deliver(&self) -> i64 {
        i64::from(self.max_attempts) + 1
    }
}
