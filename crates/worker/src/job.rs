//! One job, from its delivery to its acknowledgement: check it is still wanted and not poison,
//! fetch the source, convert, hand back the result, acknowledge. While it runs, the worker tells
//! JetStream every [`queue::ACK_PROGRESS_EVERY`] that it is alive, so only a dead or frozen
//! worker's jobs wait out `ack_wait` and go elsewhere.
//!
//! It must not pull jobs or import the pull loop (`pull.rs`), which imports it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use dispatch::{Dispatcher, Job};
use imaging::{Limits, ResizeSpec};
use queue::{unix_micros, unix_millis, Failure, FailureKind, JobMessage, ResultMeta, WireReport};

use crate::status::Status;
use crate::transfer::{self, TransferError};
use crate::WorkerConfig;

pub(crate) struct JobContext {
    pub config: WorkerConfig,
    pub dispatcher: Dispatcher,
    pub transfer: transfer::Client,
    pub status: Arc<Status>,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

pub(crate) async fn handle(context: &Arc<JobContext>, message: jetstream::Message) {
    let metrics = &context.status.metrics;
    let attempt = message.info().map_or(1, |info| info.delivered).clamp(1, i64::from(u32::MAX)) as u32;
    let job: JobMessage = match serde_json::from_slice(&message.payload) {
        Ok(job) => job,
        Err(e) => {
            tracing::warn!(error = %e, "a job message that is not a job; dropped");
            metrics.finished("unknown", "malformed");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let lane = context.dispatcher.lane_for(job.pixels).as_str();
    // Before anything that could contact the origin (the fetch, or handing back a failure).
    if !context.config.api_origins.allows(&job.origin) {
        tracing::warn!(
            job = job.job_id,
            request_id = job.request_id,
            origin = %job.origin.chars().take(200).collect::<String>(),
            "a job whose origin is not an api node (worker.api_origins): refused without contacting it"
        );
        metrics.finished(lane, "forbidden-origin");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    }
    let queue_wait = Duration::from_micros(unix_micros().saturating_sub(job.published_unix_us));
    metrics.received(lane, queue_wait, attempt);
    let remaining = Duration::from_millis(job.deadline_unix_ms.saturating_sub(unix_millis()));
    if remaining.is_zero() {
        metrics.finished(lane, "expired");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    }
    let mut meta = ResultMeta {
        worker: context.config.node_id.clone(),
        attempt,
        queue_wait_us: u64::try_from(queue_wait.as_micros()).unwrap_or(u64::MAX),
        fetch_us: 0,
        report: None,
        failure: None,
    };
    let max_attempts = context.config.queue.max_attempts;
    if attempt > max_attempts {
        tracing::warn!(job = job.job_id, request_id = job.request_id, attempt, "poison job: failed without running it");
        meta.failure = Some(Failure::new(
            FailureKind::Poison,
            format!(
                "this image was handed to {max_attempts} workers and none of them finished it; it is not tried again"
            ),
        ));
        let outcome = give_back(context, &job, lane, meta, Vec::new(), remaining).await.unwrap_or("poison");
        metrics.finished(lane, if outcome == "ok" { "poison" } else { outcome });
        let _ = message.ack_with(AckKind::Term).await;
        return;
    }

    let heartbeat = {
        let message = message.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(queue::ACK_PROGRESS_EVERY).await;
                let _ = message.ack_with(AckKind::Progress).await;
            }
        })
    };
    metrics.busy(1);
    let deadline = Instant::now() + remaining;
    let outcome = run(context, &job, lane, deadline, meta).await;
    metrics.busy(-1);
    heartbeat.abort();
    metrics.finished(lane, outcome);
    // Acknowledged only now that the result is with the api node (or nobody waits for it).
    if let Err(e) = message.ack().await {
        tracing::debug!(error = %e, job = job.job_id, request_id = job.request_id, "ack not sent; the job may be redelivered and refused by its api node");
    }
}

/// Fetch, convert, give back. Returns the outcome label.
async fn run(
    context: &Arc<JobContext>,
    job: &JobMessage,
    lane: &'static str,
    deadline: Instant,
    mut meta: ResultMeta,
) -> &'static str {
    let metrics = &context.status.metrics;
    let started = Instant::now();
    let fetched = context.transfer.fetch(job, deadline.saturating_duration_since(started)).await;
    let input = match fetched {
        Ok(input) => input,
        Err(TransferError::Gone) => return "gone",
        Err(e) => {
            tracing::info!(error = %e, job = job.job_id, request_id = job.request_id, "source not fetched; the job is dropped");
            return "undeliverable";
        }
    };
    metrics.fetched(lane, started.elapsed());
    meta.fetch_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);

    let converted = match spec_of(job) {
        Ok(spec) => {
            let limits = Limits::with_input_bounds(job.max_input_bytes, job.max_input_pixels);
            context.dispatcher.submit(Job { input, spec, limits, pixels: job.pixels, deadline }).await
        }
        Err(e) => Err(e.into()),
    };
    let (image, outcome) = match converted {
        Ok(done) => {
            metrics.converted(lane, done.output.report.wall_time);
            meta.report = Some(WireReport::from_report(&done.output.report));
            (done.output.bytes, "ok")
        }
        // Nobody waits any more: the api node answered 504 at the deadline.
        Err(dispatch::DispatchError::DeadlineExceeded) => return "expired",
        Err(e) => {
            meta.failure = Some(Failure::from_dispatch(&e));
            (Vec::new(), "failed")
        }
    };
    let remaining = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    match give_back(context, job, lane, meta, image, remaining).await {
        Ok(_) => outcome,
        Err(label) => label,
    }
}

/// Returns `Ok("ok")` when the api node took the result, else the outcome label.
async fn give_back(
    context: &Arc<JobContext>,
    job: &JobMessage,
    lane: &'static str,
    meta: ResultMeta,
    image: Vec<u8>,
    timeout: Duration,
) -> Result<&'static str, &'static str> {
    let started = Instant::now();
    let sent = context.transfer.give_back(job, &meta, image, timeout).await;
    context.status.metrics.returned(lane, started.elapsed());
    match sent {
        Ok(()) => Ok("ok"),
        Err(TransferError::Gone) => Err("gone"),
        Err(e) => {
            tracing::info!(error = %e, job = job.job_id, request_id = job.request_id, "result not delivered");
            Err("undeliverable")
        }
    }
}

/// The resize parameters as the api node parsed them, with the output format it negotiated.
fn spec_of(job: &JobMessage) -> Result<ResizeSpec, imaging::ImagingError> {
    let mut spec = ResizeSpec::from_query(&job.params)?;
    if let Some(name) = &job.format {
        spec.format = queue::output_format(name);
    }
    Ok(spec)
}
