//! # worker
//!
//! The cluster's image worker (../shared/BLUEPRINT.md §3 step 3): it pulls jobs from the JetStream
//! consumer — one pull per job it may hold (its conversion slots plus a small prefetch whose
//! sources are fetched while the slots convert), so a worker never takes more than that — fetches
//! each job's source bytes from the api node that staged them (with the job's capability
//! token), converts them on its own CPU pool (`dispatch`, which runs `imaging` off the async
//! runtime and survives a panicking decoder), hands the result or the typed failure back to that
//! api node, and only then acknowledges the job. A worker that dies mid-job never acknowledges
//! it: JetStream redelivers it after `ack_wait` to another worker; a job delivered more than
//! `max_attempts` times is failed as poison (422) without running it again.
//!
//! It must not talk to clients, keep any state beyond its jobs in flight, or decide billing: the
//! api node records usage from what the worker reports.
//!
//! Files: `pull.rs` the slots and the pull loop (it imports `job.rs`, never the other way),
//! `job.rs` one job from delivery to ack, `status.rs` what the health and metrics routes read,
//! `transfer.rs` the HTTP fetch and return, `origins.rs` which origins a job may name (the api
//! nodes' internal ports, from `worker.api_origins`), `metrics.rs`, `http.rs` health and metrics.

mod http;
mod job;
mod metrics;
mod origins;
mod pull;
mod status;
mod transfer;

use std::time::Duration;

pub use http::router;
pub use metrics::WorkerMetrics;
pub use origins::{AllowedOrigins, InvalidOrigin};
pub use pull::{run, SMALL_RESERVE};
pub use status::Status;

/// What a worker process needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// NATS servers (any one will do; the client fails over between them).
    pub nats_urls: Vec<String>,
    /// The CA NATS servers' certificates are checked against; None: plaintext NATS.
    pub nats_tls_ca: Option<std::path::PathBuf>,
    /// TLS to the api nodes' internal ports (`https://` origins only), trusting one CA; None:
    /// plain HTTP (`http://` origins only).
    pub internal_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// This worker's id in logs, metrics and usage records.
    pub node_id: String,
    /// Jobs converted at once: the CPU pool's size (one per core by default).
    pub slots: usize,
    /// Jobs held beyond `slots`, fetched while the pool is busy and converted as a thread frees.
    pub prefetch: usize,
    pub queue: queue::QueueConfig,
    /// How long one pull waits for a job before it is renewed. Short, so that a frozen worker's
    /// idle slots stop receiving jobs soon after it stops renewing them.
    pub pull_expires: Duration,
    /// After shutdown begins: how long jobs in flight may take.
    pub shutdown_grace: Duration,
    /// The api nodes' internal origins: a job naming another is refused without a connection.
    pub api_origins: AllowedOrigins,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
}
