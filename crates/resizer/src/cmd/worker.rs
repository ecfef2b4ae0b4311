//! `resizer worker`: one image worker of the cluster. It pulls jobs from the NATS JetStream
//! queue, fetches each source from the api node that staged it, converts it and hands the result
//! back (the `worker` crate); it listens only for health, readiness and metrics.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::config::{Config, ConfigArgs};
use crate::logging;
use crate::node::{bind, jpeg_without_simd, serve_monitoring};

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config, &[])?;
    logging::init(&config.log)?;
    let nats_urls = config.nats_urls();
    if nats_urls.is_empty() {
        bail!("the worker role needs the job queue: set queue.nats_urls");
    }
    let slots = if config.worker.slots == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        config.worker.slots
    };
    let node_id = if config.worker.node_id.is_empty() {
        format!("worker-{}", std::process::id())
    } else {
        config.worker.node_id.clone()
    };
    let api_origins = worker::AllowedOrigins::parse(&config.worker.api_origins)?;
    if api_origins.is_empty() {
        bail!(
            "a worker fetches only from the api nodes it is told about: set worker.api_origins \
             (RESIZER_WORKER_API_ORIGINS) to their internal URLs, e.g. http://10.0.1.11:8082, or their network, e.g. 10.0.1.0/24"
        );
    }
    let worker_config = worker::WorkerConfig {
        nats_urls,
        nats_tls_ca: config.nats_tls_ca().map(Path::to_path_buf),
        internal_tls: config.worker_internal_tls()?,
        node_id: node_id.clone(),
        slots,
        prefetch: config.worker.prefetch,
        queue: config.queue_config(),
        pull_expires: Duration::from_millis(config.worker.pull_expires_ms.max(100)),
        shutdown_grace: Duration::from_millis(config.api.shutdown_grace_ms),
        api_origins,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let listener = bind(&config.worker.listen, "worker.listen").await?;
        tracing::info!(node = node_id, slots, listen = %listener.local_addr()?, nats = queue::redact_urls(&config.queue.nats_urls), jpeg_simd = imaging::jpeg_simd(), avif_encoder = imaging::avif_encoder(), "resizer worker started");
        if let Some(warning) = jpeg_without_simd() {
            tracing::warn!("{warning}");
        }
        let status = worker::Status::new(slots);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn({
            let (router, config) = (worker::router(status.clone()), config.clone());
            async move {
                serve_monitoring(listener, router, &config, async move {
                    let _ = stopped.await;
                })
                .await
            }
        });
        crate::node::refuse_broad_nats_login(worker_config.nats_urls.clone(), config.nats_tls_ca(), queue::Role::Worker);
        let result = worker::run(worker_config, status, crate::signals::shutdown()).await;
        let _ = stop.send(());
        let _ = http.await;
        result.map_err(anyhow::Error::from)
    })?;
    Ok(ExitCode::SUCCESS)
}
