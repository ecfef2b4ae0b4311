//! `resizer dev`: the whole service in one process — public and admin APIs, the SQLite identity
//! store with its credential cache, the in-process dispatcher and its workers. It keeps its
//! state under the data directory and, on every start, makes sure there is a demo tenant with a
//! working key, writes `<data-dir>/dev.json` (mode 0600) and prints a `curl` line that works.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use identity::{CredentialCache, IdentityStore, StoreError, TenantLimits};

use crate::config::{Config, ConfigArgs};
use crate::dev_file::{self, DevFile};
use crate::logging;
use crate::node::{bind, ensure_url_signing_secret, generate_admin_token, jpeg_without_simd, serve_node};

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
    /// Serve both APIs over TLS with this certificate chain (PEM; `api.tls_cert`) [default: plain HTTP].
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM; `api.tls_key`).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArgs,
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
    if let Some(cert) = &args.tls_cert {
        extra.push(("api.tls_cert", cert.display().to_string()));
    }
    if let Some(key) = &args.tls_key {
        extra.push(("api.tls_key", key.display().to_string()));
    }
    let mut config = Config::load(&args.config, &extra)?;
    logging::init(&config.log)?;

    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    if config.api.url_signing_secret_file.is_empty() {
        // Signed URLs work out of the box: the secret is made once and kept with the data.
        let path = config.data_dir.join("url-signing.secret");
        ensure_url_signing_secret(&path)?;
        config.api.url_signing_secret_file = path.display().to_string();
    }
    let config = config;
    let data_dir = &config.data_dir;
    let dev_json = data_dir.join("dev.json");
    let previous = dev_file::read(&dev_json);

    let database = config.database_path();
    let store: Arc<dyn identity::Store> = Arc::new(
        IdentityStore::open(&database).with_context(|| format!("opening the identity store {}", database.display()))?,
    );
    let cache = Arc::new(CredentialCache::new());
    let admin_token = if !config.api.admin_token.is_empty() {
        api::check_strength("api.admin_token", &config.api.admin_token)?;
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

    let tls = config.api_tls()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let public = bind(&config.api.listen, "api.listen / --listen").await?;
        let admin = bind(&config.api.admin_listen, "api.admin_listen / --admin-listen").await?;
        let file = DevFile {
            api_url: format!("{scheme}://{}", public.local_addr()?),
            admin_url: format!("{scheme}://{}", admin.local_addr()?),
            admin_token: admin_token.clone(),
            demo_api_key,
        };
        dev_file::write(&dev_json, &file)?;
        print_banner(&file, &dev_json, &sample);

        let dispatch_config = config.dispatch_config();
        tracing::info!(
            api_url = file.api_url,
            admin_url = file.admin_url,
            workers = dispatch_config.threads,
            data_dir = %data_dir.display(),
            jpeg_simd = imaging::jpeg_simd(),
            avif_encoder = imaging::avif_encoder(),
            "resizer dev started"
        );
        if let Some(warning) = jpeg_without_simd() {
            tracing::warn!("{warning}");
        }
        let dispatcher = dispatch::Dispatcher::start(dispatch_config);
        let conversions = api::Conversions::Embedded(dispatcher);
        let listeners = api::Listeners { public: Some(public), admin, internal: None, tls };
        serve_node(&config, admin_token, api::Credentials::Store(store), cache, conversions, listeners, None).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The demo tenant and a key for it: the key from the last run if it still works, else a new one.
fn ensure_demo_key(
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
    if let Some(warning) = jpeg_without_simd() {
        println!("warning: {warning}");
    }
    let _ = std::io::stdout().flush();
}
