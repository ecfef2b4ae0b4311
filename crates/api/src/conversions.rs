//! Where a resize runs, behind one call: in this process (`resizer dev`: the `dispatch` pool)
//! or on a remote worker (`resizer api`: the job goes through the JetStream queue, its bytes
//! stay staged here until the worker fetches them, the result comes back on the internal port).
//! The handler sees the same `Converted` or `ApiError` either way, so a failure is answered
//! alike in both modes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dispatch::{DispatchConfig, DispatchError, DispatchStats, Dispatcher, Job, Lane};
use imaging::{Limits, Report, ResizeSpec};
use queue::{JobMessage, JobQueue, QueueError, Staging};

use crate::metrics::Metrics;
use crate::problem::ApiError;

/// The two real places a conversion can run.
pub enum Conversions {
    Embedded(Dispatcher),
    Queue(Box<QueueBackend>),
    /// This process converts nothing (the identity service serves only the admin API).
    None,
}

/// The cluster side of an api node.
pub struct QueueBackend {
    pub queue: JobQueue,
    pub staging: Arc<Staging>,
    /// This node's internal base URL (`http://host:port`), where workers fetch and return.
    pub origin: String,
    /// Splits jobs into lanes (subjects) by pixels, as the embedded dispatcher does.
    pub lanes: DispatchConfig,
    /// Set once the job stream is known to exist (the node creates it if missing).
    pub stream_ready: Arc<std::sync::atomic::AtomicBool>,
    /// This node's id, which it announces to the other api nodes.
    pub node: String,
    /// The api nodes up, which share each tenant's rate limits and `max_large_jobs` (counted by
    /// `queue::announce_and_count`, which `serve` starts).
    pub api_peers: Arc<queue::ApiPeers>,
    /// Large-lane jobs staged at once across the api nodes; this node takes its share.
    pub max_large_jobs: usize,
}

/// One resize to run, as admitted by the handler.
pub struct ConversionRequest {
    pub input: Bytes,
    pub spec: ResizeSpec,
    /// The request's query string: a remote worker parses the parameters from it again.
    pub params: String,
    pub limits: Limits,
    pub pixels: u64,
    pub deadline: Instant,
    pub request_id: String,
}

/// A finished resize, wherever it ran.
pub struct Converted {
    pub image: Bytes,
    pub report: Report,
    /// From admission (embedded) or publish (queue) to a worker starting the job.
    pub queue_wait: Duration,
    pub lane: Lane,
    /// The remote worker's id; `None` when it ran in this process.
    pub worker: Option<String>,
}

impl Conversions {
    pub async fn convert(&self, c: ConversionRequest, metrics: &Metrics) -> Result<Converted, ApiError> {
        match self {
            Conversions::Embedded(dispatcher) => {
                let job = Job {
                    input: Vec::from(c.input),
                    spec: c.spec,
                    limits: c.limits,
                    pixels: c.pixels,
                    deadline: c.deadline,
                };
                let done = dispatcher.submit(job).await?;
                Ok(Converted {
                    image: Bytes::from(done.output.bytes),
                    report: done.output.report,
                    queue_wait: done.queue_wait,
                    lane: done.lane,
                    worker: None,
                })
            }
            Conversions::Queue(backend) => backend.convert(c, metrics).await,
            Conversions::None => Err(ApiError::NotReady("this process converts no images")),
        }
    }

    /// The embedded pool's figures; `None` for the queue (its figures are JetStream's and the
    /// workers').
    pub fn stats(&self) -> Option<DispatchStats> {
        match self {
            Conversions::Embedded(d) => Some(d.stats()),
            Conversions::Queue(_) | Conversions::None => None,
        }
    }

    /// Whether conversions can be taken now (the queue needs its NATS connection).
    pub fn ready(&self) -> Result<(), &'static str> {
        match self {
            Conversions::Embedded(_) => Ok(()),
            Conversions::Queue(b) if !b.queue.connected() => Err("not connected to the NATS job queue"),
            // Connected, but the server has not answered for a while: cut off from it (a
            // partition, a frozen server) until the client's own pings give up on it.
            Conversions::Queue(b) if b.queue.server_silence().is_some_and(|d| d > queue::SERVER_SILENCE_LIMIT) => {
                Err("the NATS server does not answer")
            }
            Conversions::Queue(b) if !b.stream_ready.load(std::sync::atomic::Ordering::Relaxed) => {
                Err("the job stream is not set up yet")
            }
            Conversions::Queue(_) | Conversions::None => Ok(()),
        }
    }

    /// After the last request: the embedded pool finishes its queue (bounded by `grace`).
    pub async fn drain(&self, grace: Duration) {
        if let Conversions::Embedded(dispatcher) = self {
            dispatcher.shutdown();
            if tokio::time::timeout(grace, dispatcher.drained()).await.is_err() {
                tracing::warn!("worker pool still busy after the grace period");
            }
        }
    }

    pub fn queue(&self) -> Option<&QueueBackend> {
        match self {
            Conversions::Queue(b) => Some(b),
            Conversions::Embedded(_) | Conversions::None => None,
        }
    }
}

impl QueueBackend {
    async fn convert(&self, c: ConversionRequest, metrics: &Metrics) -> Result<Converted, ApiError> {
        let lane = self.lanes.lane_for(c.pixels);
        let input_bytes = c.input.len() as u64;
        // An input this node could never stage is refused as too large, not as a 503 to retry.
        let bound = self.staging.bound(lane);
        if input_bytes > bound {
            return Err(ApiError::BodyTooLarge { limit: bound });
        }
        let mut staged = match self.staging.stage(c.input, lane, self.api_peers.share_of(self.max_large_jobs)) {
            Ok(staged) => staged,
            Err(e) => {
                metrics.publish(lane, None, Some(&e));
                return Err(ApiError::Queue(e));
            }
        };
        let remaining = c.deadline.saturating_duration_since(Instant::now());
        let job = JobMessage {
            job_id: staged.id.clone(),
            request_id: c.request_id,
            origin: self.origin.clone(),
            token: staged.token.clone(),
            params: c.params,
            format: c.spec.format.map(|f| f.as_str().to_owned()),
            max_input_bytes: c.limits.max_input_bytes,
            max_input_pixels: c.limits.max_input_pixels,
            pixels: c.pixels,
            input_bytes,
            deadline_unix_ms: queue::unix_millis() + u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
            published_unix_us: queue::unix_micros(),
        };
        let started = Instant::now();
        let published = self.queue.publish(lane, &job, c.deadline).await;
        metrics.publish(lane, Some(started.elapsed()), published.as_ref().err());
        published.map_err(|e| match e {
            // The stream's discard-new answer, immediately: no deadline is spent waiting.
            QueueError::Full => {
                ApiError::Dispatch(DispatchError::Overloaded { lane, retry_after: Duration::from_secs(1) })
            }
            e => ApiError::Queue(e),
        })?;

        let delivery = match tokio::time::timeout_at(c.deadline.into(), &mut staged.reply).await {
            Err(_elapsed) => return Err(DispatchError::DeadlineExceeded.into()),
            // The sender lives in the staging until a delivery takes it; it cannot vanish unsent.
            Ok(Err(_)) => return Err(ApiError::Internal("the staged job lost its reply channel".into())),
            Ok(Ok(delivery)) => delivery,
        };
        metrics.remote_turnaround(lane, started.elapsed());
        match delivery {
            Ok(done) => Ok(Converted {
                image: done.image,
                report: done.report,
                queue_wait: Duration::from_micros(done.meta.queue_wait_us),
                lane,
                worker: Some(done.meta.worker),
            }),
            Err(failure) => Err(match failure.to_dispatch_error() {
                Some(e) => ApiError::Dispatch(e),
                None => ApiError::PoisonJob(failure.message),
            }),
        }
    }
}
