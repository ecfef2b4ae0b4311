//! `resizer usage`: a usage aggregator of the cluster. It consumes the usage stream (the spool
//! batches api nodes ship), and applies each batch exactly once — Parquet to the archive, hourly
//! rollups in PostgreSQL with the batch id in the same transaction — then acknowledges it.
//! Several may run at once: a batch goes to one of them at a time, and one that is redelivered
//! (its aggregator died before acknowledging) finds its id applied and changes nothing.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;

use crate::cmd::dev::{open_archive, open_rollups};
use crate::config::{Config, ConfigArgs};
use crate::logging;

#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// A batch not acknowledged within this goes to another aggregator.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often the archive's small files are compacted.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

pub fn run(args: UsageArgs) -> anyhow::Result<ExitCode> {
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
        let rollups = loop {
            let config = config.clone();
            match tokio::task::spawn_blocking(move || open_rollups(&config)).await? {
                Ok(rollups) => break rollups,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "usage rollups database not reachable yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let aggregator = Arc::new(usage::Aggregator::new(rollups, open_archive(&config)?));
        let client = queue::connect(&nats_urls, "usage", Some(queue::Role::Usage)).await?;
        let js = jetstream::new(client);
        let consumer = loop {
            let attempt = async {
                // The api nodes create the stream when they ship their first batch.
                let stream = queue::existing_stream(&js, queue::USAGE_STREAM).await?;
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
                apply(&aggregator, message).await;
            }
            if last_compaction.elapsed() >= COMPACT_EVERY {
                last_compaction = tokio::time::Instant::now();
                if let Err(e) = aggregator.compact(8).await {
                    tracing::warn!(error = %e, "usage archive: compaction failed; retried later");
                }
            }
        }
        tracing::info!("usage aggregator stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One shipped batch: applied (or found applied), then acknowledged; on a failure it is handed
/// back for a retry a second later.
async fn apply(aggregator: &usage::Aggregator, message: jetstream::Message) {
    let batch_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    let Some(batch_id) = batch_id else {
        tracing::error!("a usage message without a batch id; dropped");
        let _ = message.ack_with(AckKind::Term).await;
        return;
    };
    let records: Vec<usage::UsageRecord> = match serde_json::from_slice(&message.payload) {
        Ok(records) => records,
        Err(e) => {
            tracing::error!(batch = batch_id, error = %e, "an unreadable usage batch; dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let count = records.len();
    match aggregator.apply_batch(&batch_id, std::sync::Arc::new(records)).await {
        Ok(new) => {
            tracing::debug!(batch = batch_id, records = count, new, "usage batch applied");
            // Acknowledged and confirmed: a lost ack would only bring a redelivery, which the
            // applied-batch record turns into nothing.
            if let Err(e) = message.double_ack().await {
                tracing::debug!(batch = batch_id, error = %e, "ack not confirmed; a redelivery is harmless");
            }
        }
        Err(e) => {
            tracing::warn!(batch = batch_id, error = %e, "usage batch not applied; retried");
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
        }
    }
}
