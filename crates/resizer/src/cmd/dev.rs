//! `resizer dev`: the whole service in one process — public and admin APIs, the SQLite identity
//! store with its credential cache, the in-process dispatcher and its workers. It keeps its
//! state under the data directory and, on every start, makes sure there is a demo tenant with a
//! working key, writes `<data-dir>/dev.json` (mode 0600) and prints a `curl` line that works.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use identity::{CredentialCache, IdentityStore, StoreError, TenantLimits};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::config::{Config, ConfigArgs};
use crate::logging;

/// A small picture shipped in the binary, written to the data directory so the printed `curl`
/// line works from any directory.
const SAMPLE_JPEG: &[u8] = include_bytes!("../../../../examples/sample.jpg");

const DEMO_TENANT: &str = "demo";

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Where the identity database, dev.json and the sample image live [default: ./resizer-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Public API address [default: 127.0.0.1:8080]; port 0 picks a free one (see dev.json).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin API address [default: 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// `<data-dir>/dev.json`: how to reach this dev instance.
#[derive(Debug, Serialize, Deserialize)]
pub struct DevFile {
    pub api_url: String,
    pub admin_url: String,
    pub admin_token: String,
    pub demo_api_key: String,
}

pub fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    let mut extra = Vec::new();
    if let Some(dir) = &args.data_dir {
        extra.push(("data_dir", dir.display().to_string()));
    }
    if let Some(listen) = &args.listen {
        extra.push(("api.listen", listen.clone()));
    }
    if let Some(listen) = &args.admin_listen {
        extra.push(("api.admin_listen", listen.clone()));
    }
    let config = Config::load(&args.config, &extra)?;
    logging::init(&config.log)?;

    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let dev_json = data_dir.join("dev.json");
    let previous = read_dev_file(&dev_json);

    let database = config.database_path();
    let store: Arc<dyn identity::Store> = Arc::new(
        IdentityStore::open(&database).with_context(|| format!("opening the identity store {}", database.display()))?,
    );
    let cache = Arc::new(CredentialCache::new());
    let admin_token = if !config.api.admin_token.is_empty() {
        config.api.admin_token.clone()
    } else if let Some(token) = previous.as_ref().map(|p| p.admin_token.clone()).filter(|t| t.len() >= 32) {
        token
    } else {
        generate_admin_token()?
    };
    let demo_api_key = ensure_demo_key(store.as_ref(), &cache, previous.as_ref().map(|p| p.demo_api_key.as_str()))?;
    let sample = data_dir.join("sample.jpg");
    if !sample.exists() {
        std::fs::write(&sample, SAMPLE_JPEG).with_context(|| format!("writing {}", sample.display()))?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let public = bind(&config.api.listen, "api.listen / --listen").await?;
        let admin = bind(&config.api.admin_listen, "api.admin_listen / --admin-listen").await?;
        let file = DevFile {
            api_url: format!("http://{}", public.local_addr()?),
            admin_url: format!("http://{}", admin.local_addr()?),
            admin_token: admin_token.clone(),
            demo_api_key,
        };
        write_private(&dev_json, &serde_json::to_vec_pretty(&file)?)?;
        print_banner(&file, &dev_json, &sample);

        let dispatch_config = config.dispatch_config();
        tracing::info!(
            api_url = file.api_url,
            admin_url = file.admin_url,
            workers = dispatch_config.workers,
            data_dir = %data_dir.display(),
            "resizer dev started"
        );
        let dispatcher = dispatch::Dispatcher::start(dispatch_config);
        let conversions = api::Conversions::Embedded(dispatcher);
        let listeners = api::Listeners { public: Some(public), admin, internal: None };
        serve_node(&config, admin_token, api::Credentials::Store(store), cache, conversions, listeners, None).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Serves an api node (dev's or the cluster's) until SIGTERM/SIGINT, with metering: records are
/// spooled before each answer; the embedded aggregator applies the batches, or, given the usage
/// stream (`usage_stream`, cluster api nodes with `usage.mode = ship`), they are shipped to it.
pub(crate) async fn serve_node(
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
            tokio::task::spawn_blocking(move || open_metering(&config)).await?
        };
        let (metering, usage_loop) = match opened? {
            Some((metering, aggregator)) => {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let stopped = async move {
                    let _ = stopped.await;
                };
                let spool = metering.spool.clone().context("a metered node has a spool")?;
                let task = match usage_stream {
                    Some(js) => {
                        let replicas = config.queue.replicas.max(1);
                        tokio::spawn(usage::run_shipping(
                            spool,
                            move |id, records| ship(js.clone(), replicas, id, records),
                            fsync,
                            4,
                            stopped,
                        ))
                    }
                    None => {
                        tokio::spawn(usage::run_embedded(spool, aggregator, fsync, 4, Duration::from_secs(60), stopped))
                    }
                };
                (Some(metering), Some((stop, task)))
            }
            None => (None, None),
        };
        let app = api::App::new(config.api_config(admin_token), credentials, cache, conversions, metering);
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

/// One sealed batch to the usage stream (created if missing): one message under its batch id,
/// or parts under their own ids when it is larger than a message may be.
async fn ship(
    js: async_nats::jetstream::Context,
    replicas: usize,
    batch_id: String,
    records: Vec<usage::UsageRecord>,
) -> Result<(), String> {
    let messages = queue::usage_messages(&batch_id, &records).map_err(|e| e.to_string())?;
    for (id, payload) in messages {
        let payload = bytes::Bytes::from(payload);
        if let Err(first) = queue::ship_batch(&js, &id, payload.clone()).await {
            // The stream may not exist yet (a fresh cluster): create it and try once more.
            queue::ensure_usage_stream(&js, replicas).await.map_err(|e| format!("{first}; {e}"))?;
            queue::ship_batch(&js, &id, payload).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// The usage archive the configuration names: `<data_dir>/archive` or `usage.archive_url`.
pub(crate) fn open_archive(config: &Config) -> anyhow::Result<usage::Archive> {
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

/// The rollups the configuration names: `<data_dir>/usage.sqlite`, or PostgreSQL for a
/// `postgres://` `usage.rollups_database`.
pub(crate) fn open_rollups(config: &Config) -> anyhow::Result<Arc<usage::Rollups>> {
    let database = &config.usage.rollups_database;
    if database.starts_with("postgres://") || database.starts_with("postgresql://") {
        return Ok(Arc::new(
            usage::Rollups::connect_postgres(database).context("connecting to the usage rollups database")?,
        ));
    }
    let path = if database.is_empty() { config.data_dir.join("usage.sqlite") } else { database.into() };
    Ok(Arc::new(usage::Rollups::open(&path).context("opening the usage rollups")?))
}

/// The spool, rollups and archive under the data directory (or the configured archive URL).
fn open_metering(config: &Config) -> anyhow::Result<Option<(api::Metering, Arc<usage::Aggregator>)>> {
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
    let rollups = open_rollups(config)?;
    let archive = open_archive(config)?;
    let aggregator = Arc::new(usage::Aggregator::new(rollups.clone(), archive.clone()));
    let rollup_reads = Arc::new(tokio::sync::Semaphore::new(api::ROLLUP_READS_AT_ONCE));
    let metering =
        api::Metering { spool: Some(spool), rollups, archive, node: config.usage.node_id.clone(), rollup_reads };
    Ok(Some((metering, aggregator)))
}

pub(crate) async fn bind(addr: &str, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} (is another resizer running there? choose another address with {setting})")
    })
}

fn read_dev_file(path: &Path) -> Option<DevFile> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The demo tenant and a key for it: the key from the last run if it still works, else a new one.
pub(crate) fn ensure_demo_key(
    store: &dyn identity::Store,
    cache: &CredentialCache,
    previous: Option<&str>,
) -> anyhow::Result<String> {
    let tenant = match store.tenant_by_name(DEMO_TENANT) {
        Ok(tenant) => tenant,
        Err(StoreError::NotFound(_)) => store.create_tenant(DEMO_TENANT, TenantLimits::default())?,
        Err(e) => return Err(e.into()),
    };
    identity::feed(store, cache)?;
    if let Some(key) = previous {
        if cache.authenticate(key).is_ok_and(|auth| auth.tenant() == tenant.id) {
            return Ok(key.to_owned());
        }
    }
    let (_, key) = store.create_key(tenant.id, "demo")?;
    identity::feed(store, cache)?;
    Ok(key)
}

pub(crate) fn generate_admin_token() -> anyhow::Result<String> {
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

/// Written to a temporary file with mode 0600 and renamed over the old one, so the secret is
/// never readable by others and a reader never sees half a file.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn print_banner(file: &DevFile, dev_json: &Path, sample: &Path) {
    println!("resizer dev is running (Ctrl-C to stop)");
    println!("  public API:   {}", file.api_url);
    println!("  admin API:    {}   (admin token in {})", file.admin_url, dev_json.display());
    println!("  demo API key: {}", file.demo_api_key);
    println!("try it:");
    println!(
        "  curl -sS -H 'Authorization: Bearer {}' --data-binary @{} '{}/v1/resize?width=300' -o thumb.jpg",
        file.demo_api_key,
        sample.display(),
        file.api_url
    );
    let _ = std::io::stdout().flush();
}
