//! What every node command shares: listening, serving an api node with its metering (spooled
//! usage applied here or shipped to the usage stream), opening the usage archive and rollups the
//! configuration names, and a fresh admin token. `cmd/dev.rs` and the cluster roles in `cmd/`
//! call this; it never calls them, and it holds no business logic of its own (that is in the
//! crates it wires).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use identity::CredentialCache;
use tokio::net::TcpListener;

use crate::config::Config;

/// Serves an api node (dev's or the cluster's) until SIGTERM/SIGINT, with metering: records are
/// spooled before each answer; the embedded aggregator applies the batches, or, given the usage
/// stream (`usage_stream`, cluster api nodes with `usage.mode = ship`), they are shipped to it.
pub async fn serve_node(
    config: &Config,
    admin_token: String,
    credentials: api::Credentials,
    cache: Arc<CredentialCache>,
    conversions: api::Conversions,
    listeners: api::Listeners,
    usage_stream: Option<async_nats::jetstream::Context>,
) -> anyhow::Result<()> {
    {
        let fsync = Duration::from_millis(config.usage.fsync_interval_ms.max(1));
        // Off the runtime: opening PostgreSQL rollups blocks (and runs the client's own runtime).
        let opened = {
            let config = config.clone();
            let cache = cache.clone();
            tokio::task::spawn_blocking(move || open_metering(&config, cache)).await?
        };
        let (metering, usage_loop) = match opened? {
            Some((mut metering, aggregator)) => {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let stopped = async move {
                    let _ = stopped.await;
                };
                let spool = metering.spool.clone().context("a metered node has a spool")?;
                let task = match usage_stream {
                    Some(js) => {
                        let replicas = config.queue.replicas.max(1);
                        let signer = config.usage_signer()?.map(Arc::new);
                        let confirmations = hear_confirmations(&js, &config.usage.node_id).await?;
                        let confirm_wait = Duration::from_millis(config.usage.confirm_wait_ms.max(1));
                        let shipments = Arc::new(usage::Shipments::new(confirmations, confirm_wait));
                        metering.shipments = Some(shipments.clone());
                        // The quota totals come from the aggregators, through the rollups.
                        tokio::spawn(usage::follow_totals(
                            metering.rollups.clone(),
                            metering.quota_board.clone(),
                            false,
                        ));
                        let span_js = js.clone();
                        let (ship_cache, defaults) = (cache.clone(), config.default_limits()?);
                        tokio::spawn(usage::run_shipping(
                            spool,
                            shipments,
                            move |id, records| {
                                ship(js.clone(), replicas, signer.clone(), ship_cache.clone(), defaults, id, records)
                            },
                            move || stream_span(span_js.clone()),
                            fsync,
                            4,
                            CONFIRMATIONS_AT_EXIT,
                            stopped,
                        ))
                    }
                    None => {
                        // The board starts from the totals the rollups hold, after the batches a
                        // crash left in the spool are applied: a restart forgets no answer.
                        usage::drain_spool(&spool, &aggregator).await.context("applying the spool's batches")?;
                        let published = aggregator.publish_quota_totals().await.context("reading the quota totals")?;
                        tracing::debug!(tenants = published, "quota totals loaded");
                        tokio::spawn(usage::run_embedded(spool, aggregator, fsync, 4, Duration::from_secs(60), stopped))
                    }
                };
                (Some(metering), Some((stop, task)))
            }
            None => (None, None),
        };
        let app = api::App::new(config.api_config(&admin_token)?, credentials, cache, conversions, metering)
            .context("sources.extra_ca_file")?;
        let served = api::serve(app, listeners, crate::signals::shutdown()).await;
        // After the last answer: seal the open batch and apply everything, so the audit is complete.
        if let Some((stop, task)) = usage_loop {
            let _ = stop.send(());
            let _ = task.await;
        }
        served?;
        Ok(())
    }
}

/// At shutdown, how long an api node waits for the aggregators to confirm its last batches
/// before leaving them in the spool for its next start (under the shutdown grace of a unit).
const CONFIRMATIONS_AT_EXIT: Duration = Duration::from_secs(3);

/// Subscribes to the aggregators' confirmations for this node (`usage.applied.<node>`), which
/// let it delete a batch from its spool. The client subscribes again by itself after a
/// reconnect; a confirmation missed meanwhile only means the batch is shipped once more.
async fn hear_confirmations(
    js: &async_nats::jetstream::Context,
    node_id: &str,
) -> anyhow::Result<Arc<usage::Confirmations>> {
    use futures_util::StreamExt;
    let confirmations = Arc::new(usage::Confirmations::default());
    let mut applied = js
        .client()
        .subscribe(queue::usage_applied_subject(node_id))
        .await
        .context("subscribing to the aggregators' confirmations")?;
    let heard = confirmations.clone();
    tokio::spawn(async move {
        while let Some(message) = applied.next().await {
            if let Ok(id) = std::str::from_utf8(&message.payload) {
                heard.confirm(id);
            }
        }
    });
    Ok(confirmations)
}

/// The usage stream's first and last sequence numbers now; None if it cannot be asked.
async fn stream_span(js: async_nats::jetstream::Context) -> usage::StreamSpan {
    let stream = js.get_stream(queue::USAGE_STREAM).await.ok()?;
    let state = &stream.cached_info().state;
    Some((state.first_sequence, state.last_sequence))
}

/// One sealed batch to the usage stream (created if missing): one message under its batch id,
/// or parts under their own ids when it is larger than a message may be; each signed when the
/// node has a key (`usage.batch_key`). Returns the messages' ids, which the aggregators confirm,
/// and their sequence numbers in the stream.
async fn ship(
    js: async_nats::jetstream::Context,
    replicas: usize,
    signer: Option<Arc<queue::UsageSigner>>,
    cache: Arc<CredentialCache>,
    defaults: identity::EffectiveLimits,
    batch_id: String,
    records: Vec<usage::UsageRecord>,
) -> Result<Vec<(String, u64)>, String> {
    let messages = queue::usage_messages(&batch_id, &records).map_err(|e| e.to_string())?;
    // The rolling quota periods of the batch's billed tenants, for the aggregators' sums.
    let mut periods = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| r.status == 200) {
        periods.entry(r.tenant).or_insert_with(|| {
            cache
                .tenant_limits(identity::TenantId::new(r.tenant))
                .and_then(|limits| limits.resolve(&defaults).quota)
                .map_or(0, |quota| quota.period.as_seconds_code())
        });
    }
    let periods = usage::rolling_periods_header(&periods);
    let extra: Vec<(&str, &str)> = periods.as_deref().map(|p| (usage::QUOTA_PERIODS_HEADER, p)).into_iter().collect();
    let mut stored = Vec::with_capacity(messages.len());
    for (id, payload) in messages {
        let payload = bytes::Bytes::from(payload);
        let signer = signer.as_deref();
        let sequence = match queue::ship_batch(&js, &id, payload.clone(), signer, &extra).await {
            Ok(sequence) => sequence,
            Err(first) => {
                // The stream may not exist yet (a fresh cluster): create it and try once more.
                queue::ensure_usage_stream(&js, replicas).await.map_err(|e| format!("{first}; {e}"))?;
                queue::ship_batch(&js, &id, payload, signer, &extra).await.map_err(|e| e.to_string())?
            }
        };
        stored.push((id, sequence));
    }
    Ok(stored)
}

/// The usage archive the configuration names: `<data_dir>/archive` or `usage.archive_url`.
pub fn open_archive(config: &Config) -> anyhow::Result<usage::Archive> {
    if config.usage.archive_url.is_empty() {
        return usage::Archive::local(&config.data_dir.join("archive")).context("opening the usage archive");
    }
    let options: Vec<(String, String)> = config
        .usage
        .archive_options
        .split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_owned(), v.trim().to_owned())),
            None => anyhow::bail!("usage.archive_options: `{kv}` is not key=value"),
        })
        .collect::<anyhow::Result<_>>()?;
    usage::Archive::from_url(&config.usage.archive_url, &options).context("opening the usage archive")
}

/// Whether a process writes the usage rollups (and so creates their tables) or only reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollupAccess {
    /// An aggregator: `resizer usage`, or a node applying its own spool (`usage.mode = embedded`).
    Write,
    /// Api nodes shipping their spool, and the identity service: their PostgreSQL role needs
    /// only `SELECT` on the rollups.
    Read,
}

/// The rollups the configuration names: `<data_dir>/usage.sqlite`, or PostgreSQL for a
/// `postgres://` `usage.rollups_database`.
pub fn open_rollups(config: &Config, access: RollupAccess) -> anyhow::Result<Arc<usage::Rollups>> {
    let database = &config.usage.rollups_database;
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        let tls_ca = crate::config::non_empty_path(&config.usage.rollups_tls_ca);
        let rollups = match access {
            RollupAccess::Write => usage::Rollups::connect_postgres(database, tls_ca),
            RollupAccess::Read => usage::Rollups::connect_postgres_reader(database, tls_ca),
        };
        return Ok(Arc::new(rollups.context("connecting to the usage rollups database")?));
    }
    let path = if database.is_empty() { config.data_dir.join("usage.sqlite") } else { database.into() };
    Ok(Arc::new(usage::Rollups::open(&path).context("opening the usage rollups")?))
}

/// The spool, rollups and archive under the data directory (or the configured archive URL).
fn open_metering(
    config: &Config,
    cache: Arc<CredentialCache>,
) -> anyhow::Result<Option<(api::Metering, Arc<usage::Aggregator>)>> {
    if !config.usage.enabled {
        tracing::warn!("usage metering is off: requests are neither billed nor audited");
        return Ok(None);
    }
    let data = &config.data_dir;
    let memory_dir = match config.usage.spool_memory_dir.as_str() {
        "" => None,
        dir if std::path::Path::new(dir).is_dir() => Some(std::path::PathBuf::from(dir)),
        dir => {
            tracing::warn!(dir, "usage.spool_memory_dir is not a directory: each record is written with write(2)");
            None
        }
    };
    let spool_config = usage::SpoolConfig {
        max_batch_age: Duration::from_millis(config.usage.batch_max_age_ms.max(1)),
        memory_dir,
        ..usage::SpoolConfig::default()
    };
    let spool = Arc::new(usage::Spool::open(&data.join("spool"), spool_config).context("opening the usage spool")?);
    // A node that ships its spool never applies a batch here: it only reads the rollups.
    let access = if config.usage.mode == "ship" { RollupAccess::Read } else { RollupAccess::Write };
    let rollups = open_rollups(config, access)?;
    let archive = open_archive(config)?;
    let quota_board = Arc::new(usage::QuotaBoard::new(&config.usage.node_id));
    // The embedded aggregator sums each tenant's rolling quota windows too, reading the period
    // from this node's credential cache, and publishes to this node's board.
    let defaults = config.default_limits()?;
    let rolling_period: usage::RollingPeriods = Arc::new(move |tenant| {
        cache
            .tenant_limits(identity::TenantId::new(tenant))
            .and_then(|limits| limits.resolve(&defaults).quota)
            .map_or(0, |quota| quota.period.as_seconds_code())
    });
    let aggregator = Arc::new(
        usage::Aggregator::new(rollups.clone(), archive.clone()).with_quotas(rolling_period, quota_board.clone()),
    );
    let rollup_reads = Arc::new(tokio::sync::Semaphore::new(api::ROLLUP_READS_AT_ONCE));
    let metering = api::Metering {
        spool: Some(spool),
        shipments: None,
        rollups,
        archive,
        node: config.usage.node_id.clone(),
        rollup_reads,
        quota_board,
    };
    Ok(Some((metering, aggregator)))
}

/// Connections a role's own small listener keeps open at once: scrapers and health checks are a
/// handful; any more wait in the kernel's accept backlog instead of taking file descriptors.
const MONITORING_CONNECTIONS: usize = 64;

/// Serves a role's own listener (the worker's or the usage aggregator's health, readiness and
/// metrics) until `stop`, with the api's defences against slow and idle clients: a deadline for
/// each request head (`api.header_timeout_ms`, also the idle limit between requests) and a cap
/// on open connections.
pub async fn serve_monitoring(
    listener: TcpListener,
    router: axum::Router,
    config: &Config,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = api::ConnectionLimits {
        header_timeout: Duration::from_millis(config.api.header_timeout_ms.max(1)),
        max_connections: MONITORING_CONNECTIONS,
    };
    api::serve_with_limits(listener, router, limits, None, stop).await
}

pub async fn bind(addr: &str, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another resizer running there? choose another address with {setting})")
    })
}

/// Stops the process when its NATS login may do more than its role (`queue::check_login_scope`):
/// the permission lists protect nothing then. Checked in the background, as soon as NATS
/// answers, so a start is never held up by it; the process exits within seconds of starting.
pub fn refuse_broad_nats_login(urls: Vec<String>, tls_ca: Option<&std::path::Path>, role: queue::Role) {
    let tls_ca = tls_ca.map(std::path::Path::to_path_buf);
    tokio::spawn(async move {
        match queue::check_login_scope(&urls, tls_ca.as_deref(), role).await {
            Ok(queue::LoginScope::Narrow) => tracing::debug!(role = role.as_str(), "NATS login held to its role"),
            Ok(queue::LoginScope::Unchecked) => {
                tracing::warn!(
                    role = role.as_str(),
                    "NATS did not answer: whether its login is held to its role is unchecked"
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "refusing to run with this NATS login");
                eprintln!("error: {e}");
                // EX_CONFIG: a configuration error, not a crash to be restarted into.
                std::process::exit(78);
            }
        }
    });
}

/// A fresh admin token: `rsza_` and 32 base62 characters (about 190 bits) from the OS's entropy.
pub fn generate_admin_token() -> anyhow::Result<String> {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 40];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no entropy for the admin token: {e}"))?;
    // 248 is the largest multiple of 62 below 256: rejecting above it keeps the draw uniform.
    let chars: String =
        bytes.iter().filter(|&&b| b < 248).take(32).map(|&b| ALPHABET[usize::from(b % 62)] as char).collect();
    if chars.len() < 32 {
        return generate_admin_token();
    }
    Ok(format!("rsza_{chars}"))
}

/// A URL signing secret at `path` (64 hex digits, mode 0600), made if there is none.
pub fn ensure_url_signing_secret(path: &std::path::Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no entropy for the URL signing secret: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("{hex}\n").as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// What a node that converts images says at start when libjpeg-turbo runs without its SIMD
/// kernels: correct, but JPEG markedly slower, and nothing else would tell. On x86 the cause is a
/// build made without `nasm` (mozjpeg-sys builds the kernels with it and silently does without).
/// `None` when they are on.
pub fn jpeg_without_simd() -> Option<&'static str> {
    if imaging::jpeg_simd() {
        return None;
    }
    Some(if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        "JPEG runs without libjpeg-turbo's SIMD kernels (built without nasm): correct but markedly slower; \
         install nasm (apt-get install nasm), then `cargo clean -p mozjpeg-sys` and build again"
    } else {
        "JPEG runs without libjpeg-turbo's SIMD kernels on this CPU or build: correct but markedly slower"
    })
}
