//! `resizer api`: one api node of the cluster. The same HTTP edge as `resizer dev` (admission,
//! metering, admin API), but conversions go through the NATS JetStream job queue to `resizer
//! worker` processes: the source bytes stay staged here and workers fetch them, and hand back
//! results, on the internal listener.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use identity::CredentialCache;

use crate::config::{Config, ConfigArgs};
use crate::logging;
use crate::node::{bind, serve_node};

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config, &[])?;
    logging::init(&config.log)?;
    if !config.api.admin_token.is_empty() {
        // An api node administers nothing (tenants and keys are written at the identity
        // service); holding the write token would put it on every node facing the Internet.
        bail!(
            "an api node takes no api.admin_token (RESIZER_API_ADMIN_TOKEN): its admin port only reads; \
             give it api.read_token (RESIZER_API_READ_TOKEN) instead"
        );
    }
    api::Operators::new("", &config.api.read_token, None)?;
    if !config.usage.batch_signing_secret.is_empty() {
        // With the master secret a node could sign usage batches in any node's name.
        bail!(
            "an api node takes no usage.batch_signing_secret (RESIZER_USAGE_BATCH_SIGNING_SECRET): that is the \
             aggregators'; give it its own usage.batch_key (`resizer usage batch-key --node {}`)",
            config.usage.node_id
        );
    }
    let nats_urls = config.nats_urls();
    if nats_urls.is_empty() {
        bail!("the api role needs the job queue: set queue.nats_urls");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let replicated = config.identity.source == "replicated";
    // The defaults are `resizer dev`'s; an api node left on them works alone, not as part of a
    // cluster: say so once, loudly, rather than refuse a single-node setup.
    if !replicated {
        tracing::warn!(
            "identity.source is `store`: this api node keeps its own tenants and keys; a cluster's api nodes \
             use `replicated` (deploy/config/api.toml)"
        );
    }
    if config.usage.enabled && config.usage.mode != "ship" {
        tracing::warn!(
            mode = config.usage.mode,
            "usage.mode is not `ship`: this api node aggregates its own usage; a cluster's api nodes ship it \
             to the aggregators (deploy/config/api.toml)"
        );
    }
    if config.usage.enabled && config.usage.mode == "ship" && config.usage.batch_key.is_empty() {
        tracing::warn!(
            "usage.batch_key is not set: this api node ships its usage batches unsigned, which aggregators \
             holding usage.batch_signing_secret refuse"
        );
    }
    let store = if replicated { None } else { Some(config.open_identity_store()?) };
    let cache = Arc::new(CredentialCache::new());

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let public = bind(&config.api.listen, "api.listen").await?;
        let admin = bind(&config.api.admin_listen, "api.admin_listen").await?;
        let internal = bind(&config.api.internal_listen, "api.internal_listen").await?;
        let origin = config.internal_origin(internal.local_addr()?)?;
        let client =
            queue::connect(&nats_urls, &config.usage.node_id, Some(queue::Role::Api), config.nats_tls_ca()).await?;
        crate::node::refuse_broad_nats_login(nats_urls.clone(), config.nats_tls_ca(), queue::Role::Api);
        let credentials = match store {
            Some(store) => api::Credentials::Store(store),
            None => {
                let status = Arc::new(api::ReplicaStatus::default());
                // The bucket may live in another NATS account, imported under a prefix.
                let js = match config.identity.jetstream_prefix.as_str() {
                    "" => async_nats::jetstream::new(client.clone()),
                    prefix => async_nats::jetstream::with_prefix(client.clone(), prefix),
                };
                tokio::spawn(identity_kv::watch(js, cache.clone(), status.clone()));
                api::Credentials::Replicated(status)
            }
        };
        let queue = queue::JobQueue::new(client.clone(), config.queue_config());
        let stream_ready = Arc::new(AtomicBool::new(false));
        tokio::spawn(ensure_stream(queue.clone(), stream_ready.clone()));

        let backend = api::QueueBackend {
            queue,
            staging: queue::Staging::new(config.api.max_staged_bytes),
            origin: origin.clone(),
            lanes: config.dispatch_config(),
            stream_ready,
            node: config.usage.node_id.clone(),
            api_peers: Arc::new(queue::ApiPeers::default()),
            max_large_jobs: config.queue.max_large_jobs,
        };
        tracing::info!(
            api_url = %public.local_addr()?,
            admin_url = %admin.local_addr()?,
            internal_url = origin,
            nats = queue::redact_urls(&config.queue.nats_urls),
            node = config.usage.node_id,
            "resizer api started"
        );
        let listeners =
            api::Listeners { public: Some(public), admin, internal: Some(internal), tls: config.api_tls()? };
        let conversions = api::Conversions::Queue(Box::new(backend));
        let usage_stream = (config.usage.mode == "ship").then(|| async_nats::jetstream::new(client.clone()));
        serve_node(&config, String::new(), credentials, cache, conversions, listeners, usage_stream).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Creates the job stream if missing, retrying until JetStream answers; readiness waits for it.
async fn ensure_stream(queue: queue::JobQueue, ready: Arc<AtomicBool>) {
    let mut logged = false;
    loop {
        match queue::ensure_stream(queue.context(), queue.config()).await {
            Ok(_) => {
                ready.store(true, Ordering::Relaxed);
                tracing::info!(stream = queue.config().stream, "job stream ready");
                return;
            }
            // A stream this version cannot use: said every 30 s, since /readyz stays 503 until
            // an operator acts.
            Err(e @ queue::QueueError::Config(_)) => {
                tracing::error!(error = %e, "job stream unusable; this node stays not ready");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "job stream not ready yet; retrying");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
