//! The worker's main loop: connect, make sure the stream and consumer exist, then one task per
//! slot, each pulling one job at a time — a slot asks for a job only when it is free, so jobs
//! queue in JetStream (where any worker can take them), not inside a busy worker.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use dispatch::{DispatchConfig, Dispatcher};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::job::{self, JobContext};
use crate::metrics::WorkerMetrics;
use crate::transfer;
use crate::{WorkerConfig, WorkerError};

/// How long past its `expires` a pull may go unanswered before it is taken as lost.
const PULL_GRACE: Duration = Duration::from_millis(500);

/// What the health and metrics routes read.
pub struct Status {
    pub metrics: WorkerMetrics,
    pub slots: usize,
    ready: AtomicBool,
    client: OnceLock<async_nats::Client>,
}

impl Status {
    pub fn new(slots: usize) -> Arc<Status> {
        Arc::new(Status {
            metrics: WorkerMetrics::default(),
            slots,
            ready: AtomicBool::new(false),
            client: OnceLock::new(),
        })
    }

    pub fn connected(&self) -> bool {
        self.client.get().is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
    }

    /// Pulling jobs: set up, not shutting down, and connected to NATS.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.connected()
    }
}

/// Runs the worker until `shutdown` resolves, then stops pulling and lets the jobs in flight
/// finish (up to `shutdown_grace`): their results are delivered and acknowledged.
pub async fn run(
    config: WorkerConfig,
    status: Arc<Status>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    tokio::pin!(shutdown);
    let client = queue::connect(&config.nats_urls, &config.node_id).await?;
    let _ = status.client.set(client.clone());
    let js = jetstream::new(client.clone());
    let consumer = tokio::select! {
        () = &mut shutdown => return Ok(()),
        consumer = set_up(&js, &config) => consumer,
    };
    let slots = config.slots.max(1);
    let dispatcher = Dispatcher::start(DispatchConfig::with_workers(slots));
    let context = Arc::new(JobContext {
        config: config.clone(),
        dispatcher: dispatcher.clone(),
        agent: transfer::agent(),
        status: status.clone(),
    });
    status.ready.store(true, Ordering::Relaxed);
    tracing::info!(node = config.node_id, slots, "worker pulling jobs");

    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..slots {
        tasks.spawn(slot(consumer.clone(), context.clone(), stopped.clone()));
    }
    shutdown.await;
    status.ready.store(false, Ordering::Relaxed);
    let _ = stop.send(true);
    tracing::info!(grace_ms = config.shutdown_grace.as_millis() as u64, "shutting down: finishing jobs in flight");
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_grace, drained).await.is_err() {
        tracing::warn!("grace period over: jobs in flight abandoned (JetStream redelivers them)");
    }
    dispatcher.shutdown();
    tracing::info!("worker stopped");
    Ok(())
}

/// Creates the stream and consumer if missing, retrying until JetStream answers (NATS may
/// still be electing its leaders when the worker starts).
async fn set_up(js: &jetstream::Context, config: &WorkerConfig) -> consumer::Consumer<consumer::pull::Config> {
    let mut logged = false;
    loop {
        let attempt = async {
            let stream = queue::ensure_stream(js, &config.queue).await?;
            queue::ensure_consumer(&stream, &config.queue).await
        };
        match attempt.await {
            Ok(consumer) => return consumer,
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "job queue not ready yet; retrying");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// One slot: pull a job, run it to its acknowledgement, pull the next. A pull that is waiting
/// when shutdown begins is left to expire (at most `pull_expires`) rather than dropped, so a job
/// JetStream hands to it in that moment is still run, not stranded until `ack_wait`.
async fn slot(
    consumer: consumer::Consumer<consumer::pull::Config>,
    context: Arc<JobContext>,
    stopped: watch::Receiver<bool>,
) {
    while !*stopped.borrow() {
        let pulled = consumer.batch().max_messages(1).expires(context.config.pull_expires).messages().await;
        let mut batch = match pulled {
            Ok(batch) => batch,
            Err(e) => {
                tracing::debug!(error = %e, "pull failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // JetStream answers a pull with a job or, at `expires`, a timeout. A pull that reaches a
        // consumer without a leader (at start-up, during an election) is dropped silently, and
        // the client would wait `expires` + 5 s for it: give up soon after `expires` instead.
        // A job sent to the abandoned pull afterwards is not lost: dropping the batch
        // unsubscribes its inbox, and the server skips pulls nobody listens to any more.
        let give_up = tokio::time::Instant::now() + context.config.pull_expires + PULL_GRACE;
        loop {
            match tokio::time::timeout_at(give_up, batch.next()).await {
                Ok(Some(Ok(message))) => job::handle(&context, message).await,
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "pull ended");
                    // A consumer leader change ends pulls with an error; don't spin on it.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
                Err(_unanswered) => {
                    tracing::debug!("pull unanswered past its expiry; renewing it");
                    break;
                }
            }
        }
    }
}
