//! The worker's main loop: connect, make sure the stream and consumers exist, then one task per
//! slot, each pulling one job at a time — a slot asks for a job only when it is free, so jobs
//! queue in JetStream (where any worker can take them), not inside a busy worker. Each lane has
//! its consumer (`queue::PullClass`): medium jobs are pulled by `slots + prefetch` tasks, large
//! ones by `max(slots - 1, 1)` (large jobs never take a worker's last thread), and small ones
//! by `slots + prefetch` plus one per thread kept for them ([`SMALL_RESERVE`]), so a small
//! image is neither queued behind bigger ones in JetStream nor in the worker's pool.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use dispatch::{DispatchConfig, Dispatcher};
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::job::{self, JobContext};
use crate::status::Status;
use crate::transfer;
use crate::{WorkerConfig, WorkerError};

/// Pool threads that run small jobs only, beyond the slots. One: on a worker with one slot, a
/// small image pulled while a medium one converts (half a second) otherwise waits for it; with
/// it the two share the core for the few milliseconds the small one takes.
pub const SMALL_RESERVE: usize = 1;

/// How long past its `expires` a pull may go unanswered before it is taken as lost.
const PULL_GRACE: Duration = Duration::from_millis(500);

/// Runs the worker until `shutdown` resolves, then stops pulling and lets the jobs in flight
/// finish (up to `shutdown_grace`): their results are delivered and acknowledged.
pub async fn run(
    config: WorkerConfig,
    status: Arc<Status>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    tokio::pin!(shutdown);
    let client =
        queue::connect(&config.nats_urls, &config.node_id, Some(queue::Role::Worker), config.nats_tls_ca.as_deref())
            .await?;
    status.set_client(client.clone());
    // Whether JetStream answers the slots' pulls through this server while the server answers.
    let reach = queue::JetStreamWatch::new(client.clone());
    // Ends with this function, on every path.
    let speed_watch = tokio::spawn(queue::watch_server_speed(client.clone(), reach.clone()));
    let _speed_watch = abort_on_drop(speed_watch);
    let js = jetstream::new(client.clone());
    let [small, medium, large] = tokio::select! {
        () = &mut shutdown => return Ok(()),
        consumers = set_up(&js, &config) => consumers,
    };
    let slots = config.slots.max(1);
    // One pull per job held: the pool's threads plus the prefetched jobs waiting for them, which
    // every lane must be able to queue. Large jobs come on pulls of their own, at most one per
    // thread the pool lets run them (it keeps one thread for small and medium ones); small ones
    // on pulls of their own too, one more per thread kept for them.
    let held = slots + config.prefetch;
    let large_pulls = slots.saturating_sub(1).max(1);
    let small_pulls = held + SMALL_RESERVE;
    let mut pool = DispatchConfig::with_threads(slots);
    pool.small_reserve = SMALL_RESERVE;
    pool.capacity.small = pool.capacity.small.max(small_pulls);
    pool.capacity.medium = pool.capacity.medium.max(held);
    pool.capacity.large = pool.capacity.large.max(held);
    let dispatcher = Dispatcher::start(pool);
    let context = Arc::new(JobContext {
        config: config.clone(),
        dispatcher: dispatcher.clone(),
        transfer: transfer::Client::new(config.internal_tls.clone()),
        status: status.clone(),
        client: client.clone(),
        js: js.clone(),
    });
    status.set_ready(true);
    tracing::info!(
        node = config.node_id,
        slots,
        small_reserve = SMALL_RESERVE,
        prefetch = config.prefetch,
        small_pulls,
        large_pulls,
        "worker pulling jobs"
    );

    let (stop, stopped) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..small_pulls {
        tasks.spawn(slot(small.clone(), context.clone(), reach.clone(), stopped.clone()));
    }
    for _ in 0..held {
        tasks.spawn(slot(medium.clone(), context.clone(), reach.clone(), stopped.clone()));
    }
    for _ in 0..large_pulls {
        tasks.spawn(slot(large.clone(), context.clone(), reach.clone(), stopped.clone()));
    }
    shutdown.await;
    status.set_ready(false);
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

type PullConsumer = consumer::Consumer<consumer::pull::Config>;

/// Finds the job stream (the api nodes create it) and creates the consumers if missing (one per
/// lane, in `PullClass::ALL` order; the one older versions shared for small and medium jobs is
/// deleted first), retrying until JetStream answers (NATS may still be electing its leaders when
/// the worker starts, and the stream appears when the first api node does).
async fn set_up(js: &jetstream::Context, config: &WorkerConfig) -> [PullConsumer; 3] {
    let mut logged = false;
    loop {
        let attempt = async {
            let stream = queue::existing_stream(js, &config.queue.stream).await?;
            queue::retire_fast_consumer(&stream, &config.queue).await?;
            let [small, medium, large] = queue::PullClass::ALL;
            Ok::<_, queue::QueueError>([
                queue::ensure_consumer(&stream, &config.queue, small).await?,
                queue::ensure_consumer(&stream, &config.queue, medium).await?,
                queue::ensure_consumer(&stream, &config.queue, large).await?,
            ])
        };
        match attempt.await {
            Ok(consumers) => return consumers,
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
///
/// The slot subscribes once, to `<inbox>.*`, and sends pull `n` with the reply subject
/// `<inbox>.<n>`: no subscription is made and dropped per job (each would be propagated to every
/// NATS server). A job delivered to an older pull (one this slot gave up on) is still run; an
/// older pull's expiry notice is told apart by its subject and ignored.
///
/// Each pull's outcome goes to `reach`: one the consumer's leader answered (a job, or the notice
/// that it expired) or not (no answer past its expiry, "no responders"). Pulls left unanswered
/// for seconds while the server answers quickly mean the server is cut off from the cluster, and
/// the worker moves to another (`queue::JetStreamSilence`).
async fn slot(
    consumer: PullConsumer,
    context: Arc<JobContext>,
    reach: queue::JetStreamWatch,
    stopped: watch::Receiver<bool>,
) {
    let inbox = context.client.new_inbox();
    let mut pulls: u64 = 0;
    let mut subscription: Option<async_nats::Subscriber> = None;
    while !*stopped.borrow() {
        let deliveries = match subscription.as_mut() {
            Some(deliveries) => deliveries,
            None => match context.client.subscribe(format!("{inbox}.*")).await {
                Ok(deliveries) => subscription.insert(deliveries),
                Err(e) => {
                    tracing::debug!(error = %e, "subscribing for pulls failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        pulls += 1;
        let reply = format!("{inbox}.{pulls}");
        let request =
            consumer::pull::BatchConfig { batch: 1, expires: Some(context.config.pull_expires), ..Default::default() };
        if let Err(e) = consumer.request_batch(request, reply.clone().into()).await {
            tracing::debug!(error = %e, "pull failed; retrying");
            reach.note_jetstream(false).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        // JetStream answers a pull with a job or, at `expires`, a timeout notice. A pull that
        // reaches a consumer without a leader (at start-up, during an election) is dropped
        // silently: give up on it soon after `expires` and send another.
        let give_up = tokio::time::Instant::now() + context.config.pull_expires + PULL_GRACE;
        loop {
            let message = match tokio::time::timeout_at(give_up, deliveries.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => {
                    subscription = None;
                    break;
                }
                Err(_unanswered) => {
                    tracing::debug!("pull unanswered past its expiry; renewing it");
                    reach.note_jetstream(false).await;
                    break;
                }
            };
            match message.status {
                None | Some(async_nats::StatusCode::OK) => {
                    reach.note_jetstream(true).await;
                    let job = jetstream::Message { message, context: context.js.clone() };
                    job::handle(&context, job).await;
                    break;
                }
                // An older pull's end: this one still stands.
                Some(_) if message.subject.as_str() != reply => continue,
                Some(async_nats::StatusCode::IDLE_HEARTBEAT) => continue,
                // Expired with nothing to deliver, or no job now: pull again.
                Some(async_nats::StatusCode::TIMEOUT | async_nats::StatusCode::NOT_FOUND) => {
                    reach.note_jetstream(true).await;
                    break;
                }
                // Nobody behind the pull's subject here: no consumer leader reachable.
                Some(async_nats::StatusCode::NO_RESPONDERS) => {
                    tracing::debug!("pull reached no consumer leader");
                    reach.note_jetstream(false).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
                Some(status) => {
                    // 409 and the like (a consumer leader change): don't spin on it.
                    tracing::debug!(%status, "pull ended");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
        }
    }
}

/// Aborts `task` when the guard is dropped.
fn abort_on_drop(task: tokio::task::JoinHandle<()>) -> impl Drop {
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    Abort(task)
}
