//! `resizer usage`: a usage aggregator of the cluster. It consumes the usage stream (the spool
//! batches api nodes ship), and applies each batch exactly once — Parquet to the archive, hourly
//! rollups in PostgreSQL with the batch id in the same transaction — then acknowledges it.
//! Several may run at once: a batch goes to one of them at a time, and one that is redelivered
//! (its aggregator died before acknowledging) finds its id applied and changes nothing.
//! `usage.listen` serves its health, readiness and metrics.
//!
//! With `usage.batch_signing_secret` it applies only messages signed by the api node all their
//! records name (`queue::open_usage_message`); any other goes to the quarantine table, is counted
//! and acknowledged. `resizer usage batch-key --node <id>` prints an api node's key from it.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::{self, AckKind};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::StreamExt;

use crate::config::{Config, ConfigArgs};
use crate::logging;
use crate::node::{bind, open_archive, open_rollups, serve_monitoring, RollupAccess};

#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(subcommand)]
    pub command: Option<UsageCommand>,
}

#[derive(clap::Subcommand, Debug)]
pub enum UsageCommand {
    /// Print an api node's `usage.batch_key`, derived from `usage.batch_signing_secret` (read from
    /// the configuration or RESIZER_USAGE_BATCH_SIGNING_SECRET, never from the command line).
    BatchKey(BatchKeyArgs),
}

#[derive(clap::Args, Debug)]
pub struct BatchKeyArgs {
    /// The api node's `usage.node_id`.
    #[arg(long, value_name = "ID")]
    pub node: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// A batch not acknowledged within this goes to another aggregator.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often the archive's small files are compacted.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

pub fn run(args: UsageArgs) -> anyhow::Result<ExitCode> {
    if let Some(UsageCommand::BatchKey(key_args)) = args.command {
        return print_batch_key(&key_args);
    }
    secret_not_on_command_line(&args.config)?;
    let config = Config::load(&args.config, &[])?;
    logging::init(&config.log)?;
    let nats_urls = config.nats_urls();
    if nats_urls.is_empty() {
        bail!("the usage aggregator reads the usage stream: set queue.nats_urls");
    }
    if !config.usage.rollups_database.starts_with("postgres") {
        bail!("the usage aggregator writes rollups to PostgreSQL: set usage.rollups_database to a postgres:// URL");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let listener = bind(&config.usage.listen, "usage.listen").await?;
        tracing::info!(listen = %listener.local_addr()?, nats = queue::redact_urls(&config.queue.nats_urls), "resizer usage started");
        let status = Arc::new(Status::default());
        // Every reason at 0 from the start, so an alert on the rate sees the first one.
        for rejection in queue::Rejection::ALL {
            status.rejected.add(&[rejection.reason()], 0);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn({
            let (router, config) = (router(status.clone()), config.clone());
            async move {
                serve_monitoring(listener, router, &config, async move {
                    let _ = stopped.await;
                })
                .await
            }
        });
        let result = aggregate(&config, &nats_urls, &status).await;
        let _ = stop.send(());
        let _ = http.await;
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Opens the rollups, connects, and applies batches until SIGTERM/SIGINT.
async fn aggregate(config: &Config, nats_urls: &[String], status: &Status) -> anyhow::Result<()> {
    {
        let rollups = loop {
            let config = config.clone();
            match tokio::task::spawn_blocking(move || open_rollups(&config, RollupAccess::Write)).await? {
                Ok(rollups) => break rollups,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "usage rollups database not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let aggregator = Arc::new(usage::Aggregator::new(rollups, open_archive(config)?));
        let secret = config.batch_signing_secret()?;
        if secret.is_none() {
            tracing::warn!(
                "usage batches are not authenticated (no usage.batch_signing_secret): anyone holding the api \
                 nodes' NATS login can add or suppress usage"
            );
        }
        let client = queue::connect(nats_urls, "usage", Some(queue::Role::Usage), config.nats_tls_ca()).await?;
        crate::node::refuse_broad_nats_login(nats_urls.to_vec(), config.nats_tls_ca(), queue::Role::Usage);
        let _ = status.client.set(client.clone());
        let js = jetstream::new(client);
        let consumer = loop {
            let attempt = async {
                // The api nodes create the stream when they ship their first batch.
                let stream = queue::existing_stream(&js, queue::USAGE_STREAM).await?;
                if let Some(limit) = queue::usage_age_limit(&stream) {
                    tracing::error!(
                        max_age_s = limit.as_secs(),
                        "the usage stream deletes batches older than this, billed or not (made by an older \
                         version): lift it with the resizer NATS login, `nats stream edit USAGE --max-age=0` \
                         (docs/cluster.md)"
                    );
                }
                if let Some(window) = queue::usage_duplicate_window_too_long(&stream) {
                    tracing::error!(
                        duplicate_window_s = window.as_secs(),
                        "the usage stream takes a batch an api node ships again, for being lost, for a copy of \
                         the lost one for this long (made by an older version), so the batch is billed minutes \
                         late: shorten it with the resizer NATS login, `nats stream edit USAGE --dupe-window=10s` \
                         (docs/cluster.md)"
                    );
                }
                queue::ensure_usage_consumer(&stream, ACK_WAIT).await
            };
            match attempt.await {
                Ok(consumer) => break consumer,
                Err(e) => {
                    tracing::warn!(error = %e, "usage stream not ready yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        tracing::info!("usage aggregator consuming the usage stream");
        status.consuming.store(true, Ordering::Relaxed);
        let shutdown = crate::signals::shutdown();
        tokio::pin!(shutdown);
        let mut last_compaction = tokio::time::Instant::now();
        loop {
            let pulled = tokio::select! {
                () = &mut shutdown => break,
                pulled = consumer.batch().max_messages(16).expires(Duration::from_secs(1)).messages() => pulled,
            };
            let mut batch = match pulled {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::debug!(error = %e, "pull failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let give_up = tokio::time::Instant::now() + Duration::from_millis(1500);
            while let Ok(Some(Ok(message))) = tokio::time::timeout_at(give_up, batch.next()).await {
                apply(&aggregator, secret.as_ref(), message, status).await;
            }
            if last_compaction.elapsed() >= COMPACT_EVERY {
                last_compaction = tokio::time::Instant::now();
                match aggregator.compact(8).await {
                    Ok(merged) => status.compactions.add(&["ok"], merged as u64),
                    Err(e) => {
                        status.compactions.add(&["failed"], 1);
                        tracing::warn!(error = %e, "usage archive: compaction failed; retried later");
                    }
                }
            }
        }
        status.stopping.store(true, Ordering::Relaxed);
        tracing::info!("usage aggregator stopped");
        Ok(())
    }
}

/// One shipped batch: checked, applied (or found applied), then acknowledged; on a failure it
/// is handed back for a retry a second later. A batch that may not be applied is quarantined,
/// then acknowledged.
async fn apply(
    aggregator: &usage::Aggregator,
    secret: Option<&queue::BatchSigningSecret>,
    message: jetstream::Message,
    status: &Status,
) {
    let opened =
        queue::open_usage_message(secret, message.headers.as_ref(), &message.payload, |r: &usage::UsageRecord| {
            r.node.as_str()
        });
    let (applied_key, batch_id, records, signer) = match opened {
        Ok(opened) => (opened.applied_key(), opened.message_id, opened.records, opened.node),
        Err(rejected) => return quarantine(aggregator, rejected, message, status).await,
    };
    // Whom to tell it is applied: the node that signed it, or (unchecked) the one its records
    // name. A quarantined message is never confirmed: one forged under a genuine batch's id
    // would otherwise make that node delete the genuine batch unbilled.
    let node = signer.or_else(|| records.first().map(|r| r.node.to_string()));
    let count = records.len();
    let started = Instant::now();
    // The tenants' rolling quota periods, as the shipping node knew them: the aggregator sums
    // those windows too (every tenant's calendar month is summed anyway).
    let periods = message
        .headers
        .as_ref()
        .and_then(|h| h.get(usage::QUOTA_PERIODS_HEADER))
        .map(|v| usage::parse_rolling_periods(v.as_str()))
        .unwrap_or_default();
    // A batch applied before keys named the node is recorded under its plain id.
    let applied = match applied_key != batch_id {
        true => match aggregator.is_applied(&batch_id).await {
            Ok(true) => Ok(false),
            Ok(false) => aggregator.apply_batch_with_periods(&applied_key, std::sync::Arc::new(records), periods).await,
            Err(e) => Err(e),
        },
        false => aggregator.apply_batch_with_periods(&applied_key, std::sync::Arc::new(records), periods).await,
    };
    status.apply_seconds.observe(&[], started.elapsed());
    match applied {
        Ok(new) => {
            if new {
                status.batches.add(&["applied"], 1);
                status.records.fetch_add(count as u64, Ordering::Relaxed);
                status.last_applied_ms.store(now_ms(), Ordering::Relaxed);
            } else {
                status.batches.add(&["replayed"], 1);
            }
            tracing::debug!(batch = batch_id, records = count, new, "usage batch applied");
            // Acknowledged and confirmed: a lost ack would only bring a redelivery, which the
            // applied-batch record turns into nothing.
            if let Err(e) = message.double_ack().await {
                tracing::debug!(batch = batch_id, error = %e, "ack not confirmed; a redelivery is harmless");
            }
            // Now the node may delete the batch. Lost (the node away), the node ships it again
            // later, and this answers that copy the same way.
            if let Some(node) = node {
                let client = message.context.client();
                if let Err(e) = client.publish(queue::usage_applied_subject(&node), batch_id.clone().into()).await {
                    tracing::debug!(batch = batch_id, error = %e, "confirmation not sent; the node ships the batch again");
                }
            }
        }
        Err(e) => {
            status.batches.add(&["failed"], 1);
            tracing::warn!(batch = batch_id, error = %e, "usage batch not applied; retried");
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
        }
    }
}

/// Keeps a refused message in the quarantine table, then acknowledges it; if it cannot be kept
/// (the database is away) it is handed back, so it is never lost.
async fn quarantine(
    aggregator: &usage::Aggregator,
    rejected: queue::RejectedBatch,
    message: jetstream::Message,
    status: &Status,
) {
    let reason = rejected.rejection.reason();
    let kept = aggregator
        .quarantine(usage::Quarantined {
            message_id: rejected.message_id.clone(),
            claimed_node: rejected.claimed_node.clone(),
            reason: reason.to_owned(),
            payload: message.payload.to_vec(),
            received_ms: now_ms() as i64,
        })
        .await;
    if let Err(e) = kept {
        status.batches.add(&["failed"], 1);
        tracing::warn!(message_id = rejected.message_id, reason, error = %e, "refused usage message not quarantined yet; retried");
        let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
        return;
    }
    status.batches.add(&["rejected"], 1);
    status.rejected.add(&[reason], 1);
    tracing::warn!(
        message_id = rejected.message_id,
        claimed_node = rejected.claimed_node,
        reason,
        why = %rejected.rejection,
        "usage message refused: not applied, kept in the quarantine table"
    );
    if let Err(e) = message.double_ack().await {
        tracing::debug!(message_id = rejected.message_id, error = %e, "ack not confirmed; a redelivery is quarantined again");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// `resizer usage batch-key --node ID`: the key an api node signs its usage batches with.
fn print_batch_key(args: &BatchKeyArgs) -> anyhow::Result<ExitCode> {
    secret_not_on_command_line(&args.config)?;
    let config = Config::load(&args.config, &[])?;
    let Some(secret) = config.batch_signing_secret()? else {
        bail!("set usage.batch_signing_secret (in the configuration file or RESIZER_USAGE_BATCH_SIGNING_SECRET)");
    };
    let key = secret.node_key(&args.node)?;
    // The value alone on stdout, for `RESIZER_USAGE_BATCH_KEY=$(resizer usage batch-key ...)`.
    println!("{}", key.to_hex());
    Ok(ExitCode::SUCCESS)
}

/// The master secret on a command line would be readable by every user of the machine (`ps`).
fn secret_not_on_command_line(args: &ConfigArgs) -> anyhow::Result<()> {
    if args.set.iter().any(|kv| kv.trim_start().starts_with("usage.batch_signing_secret")) {
        bail!(
            "usage.batch_signing_secret is not taken from the command line (any user may read it there): set it \
             in the configuration file or RESIZER_USAGE_BATCH_SIGNING_SECRET"
        );
    }
    Ok(())
}

/// What the aggregator's listener reports.
#[derive(Default)]
struct Status {
    client: OnceLock<async_nats::Client>,
    /// The usage stream's consumer is set up (the stream exists once an api node has shipped).
    consuming: AtomicBool,
    stopping: AtomicBool,
    /// Batches taken off the stream, by outcome: applied, replayed (applied before), failed
    /// (handed back for a retry), rejected (quarantined).
    batches: promtext::Counters,
    /// Messages quarantined, by reason (`queue::Rejection::reason`).
    rejected: promtext::Counters,
    /// Records in the batches applied.
    records: AtomicU64,
    apply_seconds: promtext::Family,
    /// Archive files merged by compaction (`ok`), and failed compaction runs.
    compactions: promtext::Counters,
    /// When the last new batch was applied (ms since the epoch; 0: none yet).
    last_applied_ms: AtomicU64,
}

impl Status {
    fn connected(&self) -> bool {
        self.client.get().is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
    }

    /// Ready: connected to NATS with the rollups open, and not stopping. Not waiting for the usage
    /// stream, which appears only when an api node ships its first batch.
    fn not_ready(&self) -> Option<&'static str> {
        if self.stopping.load(Ordering::Relaxed) {
            Some("shutting down")
        } else if !self.connected() {
            Some("not connected to NATS (or the rollups database not open yet)")
        } else {
            None
        }
    }
}

fn router(status: Arc<Status>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(status)
}

async fn ready(State(status): State<Arc<Status>>) -> impl IntoResponse {
    match status.not_ready() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
    }
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let mut out = String::new();
    status.batches.render(
        &mut out,
        "resizer_usage_batches_total",
        "Usage batches taken off the usage stream, by outcome (applied, replayed, failed, rejected).",
        &["outcome"],
    );
    status.rejected.render(
        &mut out,
        "resizer_usage_batches_rejected_total",
        "Usage messages not applied but kept in the quarantine table, by reason (unsigned, unknown-framing, \
         bad-signature, unreadable, foreign-node).",
        &["reason"],
    );
    promtext::counter(
        &mut out,
        "resizer_usage_records_total",
        "Usage records in the batches this aggregator applied.",
        status.records.load(Ordering::Relaxed),
    );
    status.apply_seconds.render(
        &mut out,
        "resizer_usage_apply_seconds",
        "Applying one batch: archive files and rollups (or finding it applied).",
        &[],
    );
    status.compactions.render(
        &mut out,
        "resizer_usage_compaction_files_total",
        "Archive files merged by compaction (ok), and compaction runs that failed (failed).",
        &["outcome"],
    );
    promtext::gauge(
        &mut out,
        "resizer_usage_last_applied_timestamp_seconds",
        "When this aggregator last applied a new batch (0: none yet).",
        status.last_applied_ms.load(Ordering::Relaxed) as f64 / 1e3,
    );
    promtext::gauge(
        &mut out,
        "resizer_usage_consuming",
        "1 once the usage stream's consumer is set up.",
        f64::from(u8::from(status.consuming.load(Ordering::Relaxed))),
    );
    promtext::gauge(
        &mut out,
        "resizer_usage_nats_connected",
        "1 while connected to NATS.",
        f64::from(u8::from(status.connected())),
    );
    promtext::gauge(
        &mut out,
        "resizer_ready",
        "1 while the aggregator is ready.",
        f64::from(u8::from(status.not_ready().is_none())),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
