//! The configuration of every role: built-in defaults, then a TOML file (`--config`), then
//! `RESIZER_*` environment variables, then `--set section.key=value` flags — each layer
//! overriding the one before. The environment name of a key is its path in capitals joined by
//! `_`: `api.listen` is `RESIZER_API_LISTEN`, `data_dir` is `RESIZER_DATA_DIR`.
//!
//! Every key exists in the defaults, so the set of valid names is known: an unknown key in the
//! file or in `--set` is an error (a typo must not be silently ignored).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where `resizer dev` keeps its state (identity database, dev.json).
    pub data_dir: PathBuf,
    pub api: ApiSection,
    pub limits: LimitsSection,
    pub dispatch: DispatchSection,
    pub identity: IdentitySection,
    pub usage: UsageSection,
    pub queue: QueueSection,
    pub worker: WorkerSection,
    pub log: LogSection,
    pub sources: SourcesSection,
}

/// How api nodes fetch the sources of signed GET URLs (docs/urls.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesSection {
    /// Hosts (`name` or `name:port`, comma-separated) that may resolve to loopback, private or
    /// link-local addresses: an internal origin, or a test's. Every other source must resolve
    /// to public addresses only.
    pub allow_private: String,
    /// Connecting to an origin (DNS, TCP and TLS each) must take no longer.
    pub connect_timeout_ms: u64,
    /// A whole fetch (redirects and body included) must take no longer: 504 past it. Below
    /// `api.request_timeout_ms`, so that the conversion still has time.
    pub total_timeout_ms: u64,
    /// Redirects followed at most, each checked like the source.
    pub max_redirects: u32,
    /// A CA file (PEM) trusted for https origins besides the system's roots.
    pub extra_ca_file: String,
    /// Bytes of sources kept on this node between requests.
    pub cache_bytes: u64,
    /// A kept source without freshness from its origin is used this long before it is
    /// revalidated with a conditional GET.
    pub revalidate_after_ms: u64,
    /// S3-compatible buckets that tenants' sources may name as `s3://<name>/<key>` (a tenant
    /// needs an `s3://<name>/…` prefix among its sources too), `;`-separated:
    /// `<name>=s3://<bucket>[/<prefix>] <option>=<value>,…` with object_store's S3 options
    /// (endpoint, region, access_key_id, secret_access_key, allow_http, …). The credentials
    /// stay in the deployment: a URL carries only the name.
    pub buckets: String,
}

/// The cluster's job queue (roles `api` and `worker`): NATS JetStream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSection {
    /// NATS servers, comma-separated (`nats://host:port,...`); any one will do.
    pub nats_urls: String,
    /// The job stream (created with the settings below if missing).
    pub stream: String,
    /// Copies of each job across the NATS cluster.
    pub replicas: usize,
    /// Most jobs queued; past it the api answers 503 at once.
    pub max_jobs: i64,
    /// Of those, most large-lane jobs (16 MP and more, seconds each) staged at once across the
    /// api nodes: each node admits its share (÷ the api nodes up, rounded up) and answers 503
    /// past it, so that huge images never take the queue's room from small ones.
    pub max_large_jobs: usize,
    /// A delivered job not acknowledged or marked in progress for this long goes to another worker.
    pub ack_wait_ms: u64,
    /// Deliveries that may run a job before it is failed as poison (422).
    pub max_attempts: u32,
    /// A CA certificate file (PEM): NATS is then spoken only over TLS, the servers' certificates
    /// checked against it and the URLs' hosts; a server offering plaintext is refused. Empty:
    /// plaintext (`resizer dev` has no NATS).
    pub tls_ca: String,
}

/// The `worker` role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSection {
    /// Health, readiness and metrics (no jobs come in here).
    pub listen: String,
    /// Jobs converted at once (the CPU pool's threads); 0 means one per core.
    pub slots: usize,
    /// Jobs taken beyond `slots`: their sources are fetched while the slots convert, so a thread
    /// never waits for the network between two jobs. Each is one more job a frozen worker holds
    /// until `queue.ack_wait_ms` hands it elsewhere.
    pub prefetch: usize,
    /// This worker's id in logs, metrics and usage records; empty means `worker-<pid>`.
    pub node_id: String,
    /// How long one pull for a job waits before it is renewed.
    pub pull_expires_ms: u64,
    /// The api nodes' internal origins this worker fetches from and returns to, comma-separated:
    /// exact origins (`http://10.0.1.11:8082`) or networks (`10.0.1.0/24`, any port). A job naming
    /// any other origin is refused without a connection. Required: a worker refuses to start
    /// without it.
    pub api_origins: String,
    /// A CA certificate file (PEM): api nodes' internal ports are then spoken to over TLS only
    /// (`https://` origins), their certificates checked against it and the origin's host.
    pub tls_ca: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageSection {
    /// Metering and audit. Off only to measure what they cost.
    pub enabled: bool,
    /// This node's id in usage records.
    pub node_id: String,
    /// Where raw records go as Parquet: empty means `<data_dir>/archive`; else `file:///path`
    /// or `s3://bucket/prefix` (any S3-compatible endpoint, see `archive_options`; the `s3`
    /// feature, on by default).
    pub archive_url: String,
    /// `key=value,key=value` options for the archive (S3: endpoint, region, access_key_id,
    /// secret_access_key, allow_http).
    pub archive_options: String,
    /// Group fsync interval of the spool: what a power loss can cost.
    pub fsync_interval_ms: u64,
    /// A spool batch is cut at this age (or 20,000 records, or 8 MiB).
    pub batch_max_age_ms: u64,
    /// A tmpfs directory for the open spool batch: a record is then copied into shared memory,
    /// which outlives the process, and the disk file gets it at the next group fsync. Empty:
    /// every record is written to the disk file with write(2) (slower per record).
    pub spool_memory_dir: String,
    /// `embedded`: this process applies its own batches (`resizer dev`); `ship`: a cluster api
    /// node ships them to the usage stream for the `resizer usage` aggregators.
    pub mode: String,
    /// The hourly rollups: empty means `<data_dir>/usage.sqlite`; a `postgres://` URL in the
    /// cluster (shared by the aggregators that write and the api nodes that read).
    pub rollups_database: String,
    /// With a PostgreSQL `rollups_database`: a CA certificate file (PEM), as
    /// `identity.database_tls_ca`.
    pub rollups_tls_ca: String,
    /// Role `usage` (an aggregator): health, readiness and metrics.
    pub listen: String,
    /// Role `usage` (an aggregator): the master secret api nodes' usage-batch keys derive from
    /// (at least 32 characters). With it, a shipped batch is applied only if signed by the node
    /// its records name; others go to the quarantine table. Empty: batches are taken unchecked.
    /// Never give it to an api node.
    pub batch_signing_secret: String,
    /// Role `api` (`mode = ship`): a shipped batch stays in the spool until an aggregator
    /// confirms it is in the rollups; unconfirmed after this long, it is shipped again (the wait
    /// doubling each time, up to 15 minutes). Default 30 s.
    pub confirm_wait_ms: u64,
    /// Role `api` (`mode = ship`): this node's key for signing the usage batches it ships (64
    /// hex), derived from the aggregators' secret for `node_id`: `resizer usage batch-key --node
    /// <node_id>` prints it. Empty: batches are shipped unsigned.
    pub batch_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// The public API's address.
    pub listen: String,
    /// The admin API's address. Keep it off the public network.
    pub admin_listen: String,
    /// Deadline of one resize from its arrival; past it the answer is 504.
    pub request_timeout_ms: u64,
    /// After SIGTERM/SIGINT, how long in-flight requests may take before the process exits.
    pub shutdown_grace_ms: u64,
    /// A request's head must arrive within this after the connection opens or goes idle; an
    /// idle kept-alive connection is closed after it.
    pub header_timeout_ms: u64,
    /// Open connections at most on the public listener; 0: half of what the open-files limit
    /// allows (the limit is raised to its hard value at start).
    pub max_connections: usize,
    /// The admin API's bearer token with full access (operator `admin`): the identity
    /// service's and `resizer dev`'s. At least 32 characters, never a placeholder. Empty in dev:
    /// one is generated and kept in dev.json. An api node refuses it: it needs only `read_token`.
    pub admin_token: String,
    /// A bearer token with read access only (operator `read-only`): tenants, keys, usage and
    /// audit reads, which is all an api node's admin port serves.
    pub read_token: String,
    /// A TOML file of named operator tokens (`[[operator]]` with `name`, `access` = "admin" or
    /// "read", `token_sha256`), read again when it changes: deleting an entry revokes that
    /// operator's token on every node reading the file. `resizer admin new-token` prints one.
    pub operators_file: String,
    /// Wrong admin tokens one client address may present per minute (and at once); past it,
    /// 429 `admin-throttled` without the token being checked. Behind a proxy the address is the
    /// proxy's.
    pub admin_wrong_tokens_per_minute: u32,
    /// Role `api`: where workers fetch staged images and return results. Keep it off the
    /// load balancer.
    pub internal_listen: String,
    /// Role `api`: the internal URL workers are told to use; empty means `http://<internal_listen>`.
    pub internal_url: String,
    /// Role `api`: most source bytes staged for workers at once (503 past it); large-lane jobs
    /// (16 MP and more) may hold half of it, so a burst of huge images leaves room for the rest.
    pub max_staged_bytes: u64,
    /// Bytes of resize request bodies held at once on this node, all tenants together (a body
    /// is reserved from its Content-Length before it is read, or as it arrives without one, and
    /// given back when its answer is done); past it, 503 `overloaded` at once. At least
    /// `limits.max_input_bytes`; a tenant's own larger byte limit is cut to it (413). 0: 64 MiB
    /// per core (see [`Config::body_budget`]).
    pub max_body_bytes_in_flight: u64,
    /// Resize requests of one tenant in flight at once on this node (from admission to the
    /// answer); past it, 429 `too-many-in-flight` before the body is read.
    pub max_requests_in_flight_per_tenant: usize,
    /// A certificate chain file (PEM): every listener of the node (public, admin, internal)
    /// then speaks TLS only, and the internal URL workers are told is `https://`. Needs
    /// `tls_key`. Empty: plain HTTP (`resizer dev`'s default).
    pub tls_cert: String,
    /// The private key of `tls_cert` (PEM).
    pub tls_key: String,
    /// A file holding the deployment's URL signing secret, 64 hex digits (`openssl rand -hex
    /// 32`), from which each signing key's secret is derived (docs/urls.md). The identity
    /// service and every api node need the same file. Empty: signed URLs are off (`resizer dev`
    /// makes one in its data directory).
    pub url_signing_secret_file: String,
    /// `format=auto` answers AVIF to clients whose `Accept` names `image/avif` (Chromium,
    /// Firefox, Safari 16+), WebP next. Default: on where the build has the AVIF encoder
    /// (imaging's default `avif` feature). Off, such clients get WebP as before.
    pub auto_avif: bool,
}

/// Defaults for tenants without their own limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub rate_per_sec: f64,
    pub burst: u32,
    pub max_input_bytes: u64,
    pub max_input_pixels: u64,
    /// The volume quota of every tenant without its own, in its text form
    /// (`month;requests=100000;input_bytes=53687091200;soft=80`, see `identity::Quota`, or
    /// `rolling=<seconds>;...`); empty: none.
    pub quota: String,
    /// `Cache-Control: max-age` of signed-URL answers for tenants without their own.
    pub cache_max_age_secs: u32,
    /// The highest AVIF encoder effort (`effort=`, 0–9, sharp's scale) a request may ask; above
    /// it the request is refused (400). Bounds the CPU one AVIF conversion can buy: each step
    /// up costs more time for a few percent of bytes (docs/benchmarks.md, "AVIF output"). At
    /// least the default effort (`imaging::DEFAULT_EFFORT`), which every request may use.
    pub avif_max_effort: u8,
    /// The most pixels an AVIF answer may have (default 3840 x 2160): over it, `format=avif` is
    /// refused (413) before decoding and `format=auto` answers what it would without AVIF.
    pub avif_max_output_pixels: u64,
}

impl LimitsSection {
    /// The default quota, if one is set.
    pub fn default_quota(&self) -> anyhow::Result<Option<identity::Quota>> {
        if self.quota.is_empty() {
            return Ok(None);
        }
        let quota = self.quota.parse::<identity::Quota>().context("limits.quota")?;
        Ok(Some(quota))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchSection {
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Most jobs waiting per lane; 0 means the default for the worker count (small 32, medium 4,
    /// large 2 per worker). A full lane answers 503 at once.
    pub small_queue: usize,
    pub medium_queue: usize,
    pub large_queue: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// The store: a SQLite file (empty means `<data_dir>/identity.sqlite`) or a PostgreSQL URL
    /// (`postgres://user@host:port/db`: the cluster's identity service).
    pub database: String,
    /// With a PostgreSQL `database`: a CA certificate file (PEM); connections then require TLS
    /// and check the server's certificate against it and the URL's host (`verify-full`).
    pub database_tls_ca: String,
    /// How often the credential cache takes changes made by other processes (store source).
    pub refresh_ms: u64,
    /// Where an api node's credentials come from: `store` (the database above, in this
    /// process) or `replicated` (the identity service's JetStream KV bucket, via `queue.nats_urls`).
    pub source: String,
    /// Role `identity`: how often the relay looks for changes it was not woken for.
    pub relay_interval_ms: u64,
    /// With `source = replicated`: the JetStream API prefix under which this node's NATS account
    /// imports the identity service's account (`$JS.identity.API` in `resizer lab` and
    /// `deploy/`, where the identity bucket has an account of its own); empty: the same account.
    pub jetstream_prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// error, warn, info, debug or trace.
    pub level: String,
    /// `json` (one object per line) or `text`.
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        let limits = identity::EffectiveLimits::default();
        Config {
            data_dir: PathBuf::from("resizer-data"),
            api: ApiSection {
                listen: "127.0.0.1:8080".into(),
                admin_listen: "127.0.0.1:8081".into(),
                request_timeout_ms: 10_000,
                shutdown_grace_ms: 10_000,
                header_timeout_ms: 10_000,
                max_connections: 0,
                admin_token: String::new(),
                read_token: String::new(),
                operators_file: String::new(),
                admin_wrong_tokens_per_minute: api::THROTTLE_PER_MINUTE,
                internal_listen: "127.0.0.1:8082".into(),
                internal_url: String::new(),
                max_staged_bytes: 1 << 30,
                max_body_bytes_in_flight: 0,
                max_requests_in_flight_per_tenant: 64,
                tls_cert: String::new(),
                tls_key: String::new(),
                url_signing_secret_file: String::new(),
                auto_avif: imaging::AVIF_OUTPUT,
            },
            limits: LimitsSection {
                rate_per_sec: limits.rate_per_sec,
                burst: limits.burst,
                max_input_bytes: limits.max_input_bytes,
                max_input_pixels: limits.max_input_pixels,
                quota: String::new(),
                cache_max_age_secs: limits.cache_max_age_secs,
                avif_max_effort: imaging::DEFAULT_MAX_EFFORT,
                avif_max_output_pixels: imaging::DEFAULT_AVIF_MAX_PIXELS,
            },
            dispatch: DispatchSection { workers: 0, small_queue: 0, medium_queue: 0, large_queue: 0 },
            identity: IdentitySection {
                database: String::new(),
                database_tls_ca: String::new(),
                refresh_ms: 250,
                source: "store".into(),
                relay_interval_ms: 250,
                jetstream_prefix: String::new(),
            },
            usage: UsageSection {
                enabled: true,
                node_id: "dev".into(),
                archive_url: String::new(),
                archive_options: String::new(),
                fsync_interval_ms: 50,
                batch_max_age_ms: 1000,
                spool_memory_dir: "/dev/shm".into(),
                mode: "embedded".into(),
                rollups_database: String::new(),
                rollups_tls_ca: String::new(),
                listen: "127.0.0.1:8095".into(),
                batch_signing_secret: String::new(),
                confirm_wait_ms: 30_000,
                batch_key: String::new(),
            },
            queue: QueueSection {
                nats_urls: "nats://127.0.0.1:4222".into(),
                stream: "JOBS".into(),
                replicas: 3,
                max_jobs: 4096,
                max_large_jobs: 256,
                ack_wait_ms: 2000,
                max_attempts: 3,
                tls_ca: String::new(),
            },
            worker: WorkerSection {
                listen: "127.0.0.1:8090".into(),
                slots: 0,
                prefetch: 1,
                node_id: String::new(),
                pull_expires_ms: 1000,
                api_origins: String::new(),
                tls_ca: String::new(),
            },
            log: LogSection { level: "info".into(), format: "json".into() },
            sources: {
                let policy = origin::OriginPolicy::default();
                let ms = |d: Duration| d.as_millis() as u64;
                SourcesSection {
                    allow_private: String::new(),
                    connect_timeout_ms: ms(policy.connect_timeout),
                    total_timeout_ms: ms(policy.total_timeout),
                    max_redirects: policy.max_redirects,
                    extra_ca_file: String::new(),
                    cache_bytes: policy.cache_bytes,
                    revalidate_after_ms: ms(policy.revalidate_after),
                    buckets: String::new(),
                }
            },
        }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        Config::default().api
    }
}
impl Default for LimitsSection {
    fn default() -> Self {
        Config::default().limits
    }
}
impl Default for SourcesSection {
    fn default() -> Self {
        Config::default().sources
    }
}
impl Default for DispatchSection {
    fn default() -> Self {
        Config::default().dispatch
    }
}
impl Default for IdentitySection {
    fn default() -> Self {
        Config::default().identity
    }
}
impl Default for UsageSection {
    fn default() -> Self {
        Config::default().usage
    }
}
impl Default for QueueSection {
    fn default() -> Self {
        Config::default().queue
    }
}
impl Default for WorkerSection {
    fn default() -> Self {
        Config::default().worker
    }
}
impl Default for LogSection {
    fn default() -> Self {
        Config::default().log
    }
}

/// The command-line side of the layers: `--config FILE` and `--set key=value`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. `--set api.request_timeout_ms=2000` (repeatable; wins over file and env).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl Config {
    /// Defaults ← file ← `RESIZER_*` environment ← `--set` flags ← `extra` (the role's own flags).
    pub fn load(args: &ConfigArgs, extra: &[(&str, String)]) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("RESIZER_")).collect();
        let known = known_env()?;
        for name in unknown_env(&env, &known) {
            // A warning, not an error: other tools share the prefix (the admin CLI's
            // RESIZER_ADMIN_URL, a deployment's own variables), but a typo must not pass unseen.
            eprintln!("warning: {name} is not a configuration key and is ignored; known keys: {}", known.join(", "));
        }
        Self::load_from(args, &env, extra)
    }

    fn load_from(args: &ConfigArgs, env: &[(String, String)], extra: &[(&str, String)]) -> anyhow::Result<Config> {
        let defaults = toml::Table::try_from(Config::default()).context("serialising the default configuration")?;
        let mut table = defaults.clone();
        if let Some(path) = &args.config {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let file: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            merge(&mut table, file);
        }
        for (path, default) in leaves(&defaults) {
            let name = env_name(&path);
            if let Some((_, raw)) = env.iter().find(|(k, _)| *k == name) {
                set(&mut table, &path, typed(raw, &default)).with_context(|| format!("environment {name}"))?;
            }
        }
        let overrides = args.set.iter().map(|kv| match kv.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_owned(), v.to_owned())),
            None => bail!("--set takes KEY=VALUE, got `{kv}`"),
        });
        let extra = extra.iter().map(|(k, v)| Ok(((*k).to_owned(), v.clone())));
        for pair in overrides.chain(extra) {
            let (path, raw) = pair?;
            let Some((_, default)) = leaves(&defaults).into_iter().find(|(p, _)| *p == path) else {
                bail!("unknown configuration key `{path}`; known keys: {}", known_keys(&defaults));
            };
            set(&mut table, &path, typed(&raw, &default))?;
        }
        let config: Config = toml::Value::Table(table).try_into().context("invalid configuration")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(self.limits.rate_per_sec.is_finite() && self.limits.rate_per_sec > 0.0) {
            bail!("limits.rate_per_sec must be a number above 0");
        }
        if self.limits.burst == 0 || self.limits.max_input_bytes == 0 || self.limits.max_input_pixels == 0 {
            bail!("limits.burst, limits.max_input_bytes and limits.max_input_pixels must be at least 1");
        }
        if self.limits.max_input_bytes > identity::MAX_INPUT_BYTES_CEILING
            || self.limits.max_input_pixels > identity::MAX_INPUT_PIXELS_CEILING
        {
            bail!(
                "limits.max_input_bytes is at most {} and limits.max_input_pixels at most {}",
                identity::MAX_INPUT_BYTES_CEILING,
                identity::MAX_INPUT_PIXELS_CEILING
            );
        }
        self.limits.default_quota()?;
        if self.api.max_body_bytes_in_flight != 0 && self.api.max_body_bytes_in_flight < self.limits.max_input_bytes {
            bail!(
                "api.max_body_bytes_in_flight ({}) must be at least limits.max_input_bytes ({}): a body the \
                 limits allow must fit in the node's budget of body bytes in flight",
                self.api.max_body_bytes_in_flight,
                self.limits.max_input_bytes
            );
        }
        if self.api.max_requests_in_flight_per_tenant == 0 {
            bail!("api.max_requests_in_flight_per_tenant must be at least 1");
        }
        if self.api.request_timeout_ms == 0 {
            bail!("api.request_timeout_ms must be at least 1");
        }
        if self.queue.ack_wait_ms <= queue::ACK_PROGRESS_EVERY.as_millis() as u64 {
            bail!(
                "queue.ack_wait_ms must be above {} ms (workers report progress that often)",
                queue::ACK_PROGRESS_EVERY.as_millis()
            );
        }
        if self.api.tls_cert.trim().is_empty() != self.api.tls_key.trim().is_empty() {
            bail!("api.tls_cert and api.tls_key go together: set both (TLS) or neither (plain HTTP)");
        }
        if !matches!(self.usage.mode.as_str(), "embedded" | "ship") {
            bail!("usage.mode must be embedded or ship");
        }
        // A shipping node hears its confirmations on `usage.applied.<node_id>`: one NATS token.
        let node = &self.usage.node_id;
        if self.usage.mode == "ship"
            && (node.is_empty() || !node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            bail!("usage.node_id `{node}`: with usage.mode = ship use only letters, digits, - and _ (it names a NATS subject token)");
        }
        if !self.usage.batch_signing_secret.is_empty() {
            self.batch_signing_secret()?;
        }
        if !self.usage.batch_key.is_empty() {
            self.usage_signer()?;
        }
        if !matches!(self.identity.source.as_str(), "store" | "replicated") {
            bail!("identity.source must be store or replicated");
        }
        if !matches!(self.log.format.as_str(), "json" | "text") {
            bail!("log.format must be json or text");
        }
        Ok(())
    }

    /// `usage.batch_signing_secret`, None when empty; refused when weak, as the admin tokens are.
    pub fn batch_signing_secret(&self) -> anyhow::Result<Option<queue::BatchSigningSecret>> {
        let secret = &self.usage.batch_signing_secret;
        if secret.is_empty() {
            return Ok(None);
        }
        api::check_strength("usage.batch_signing_secret", secret)?;
        Ok(Some(queue::BatchSigningSecret::new(secret)?))
    }

    /// What signs this node's usage batches: `usage.batch_key` for `usage.node_id`; None when
    /// no key is set.
    pub fn usage_signer(&self) -> anyhow::Result<Option<queue::UsageSigner>> {
        if self.usage.batch_key.is_empty() {
            return Ok(None);
        }
        let key = queue::NodeKey::from_hex(&self.usage.batch_key)?;
        Ok(Some(queue::UsageSigner::new(&self.usage.node_id, key).context("usage.node_id")?))
    }

    /// The identity store this configuration names: SQLite, or PostgreSQL for a `postgres://` URL.
    pub fn open_identity_store(&self) -> anyhow::Result<std::sync::Arc<dyn identity::Store>> {
        let database = &self.identity.database;
        if database.starts_with("postgres://") || database.starts_with("postgresql://") {
            let tls = non_empty_path(&self.identity.database_tls_ca);
            let store = identity::PgIdentityStore::connect(database, tls)
                .with_context(|| format!("connecting to the identity database {}", queue::redact_url(database)))?;
            return Ok(std::sync::Arc::new(store));
        }
        let path = self.database_path();
        let store = identity::IdentityStore::open(&path)
            .with_context(|| format!("opening the identity store {}", path.display()))?;
        Ok(std::sync::Arc::new(store))
    }

    pub fn database_path(&self) -> PathBuf {
        if self.identity.database.is_empty() {
            self.data_dir.join("identity.sqlite")
        } else {
            Path::new(&self.identity.database).to_path_buf()
        }
    }

    /// The limits of every tenant without its own (`[limits]`).
    pub fn default_limits(&self) -> anyhow::Result<identity::EffectiveLimits> {
        Ok(identity::EffectiveLimits {
            rate_per_sec: self.limits.rate_per_sec,
            burst: self.limits.burst,
            max_input_bytes: self.limits.max_input_bytes,
            max_input_pixels: self.limits.max_input_pixels,
            quota: self.limits.default_quota()?.filter(|q| !q.is_unlimited()),
            cache_max_age_secs: self.limits.cache_max_age_secs,
        })
    }

    /// The URL signing secret from `api.url_signing_secret_file`, if set.
    pub fn url_signing(&self) -> anyhow::Result<Option<api::UrlSigning>> {
        if self.api.url_signing_secret_file.is_empty() {
            return Ok(None);
        }
        let path = &self.api.url_signing_secret_file;
        let text = std::fs::read_to_string(path).with_context(|| format!("api.url_signing_secret_file {path}"))?;
        let signing =
            api::UrlSigning::from_hex(&text).with_context(|| format!("api.url_signing_secret_file {path}"))?;
        Ok(Some(signing))
    }

    /// How this node fetches signed URLs' sources.
    pub fn origin_policy(&self) -> anyhow::Result<origin::OriginPolicy> {
        let s = &self.sources;
        Ok(origin::OriginPolicy {
            allow_private: s
                .allow_private
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
                .collect(),
            connect_timeout: Duration::from_millis(s.connect_timeout_ms.max(1)),
            total_timeout: Duration::from_millis(s.total_timeout_ms.max(1)),
            max_redirects: s.max_redirects,
            extra_ca: (!s.extra_ca_file.is_empty()).then(|| PathBuf::from(&s.extra_ca_file)),
            revalidate_after: Duration::from_millis(s.revalidate_after_ms),
            cache_bytes: s.cache_bytes,
            buckets: parse_buckets(&s.buckets)?,
            ..origin::OriginPolicy::default()
        })
    }

    /// The api's configuration, with `admin_token` as the full-access token (dev passes the one
    /// it generated). Fails on a weak token or an unusable operators file.
    pub fn api_config(&self, admin_token: &str) -> anyhow::Result<api::ApiConfig> {
        let operators_file = (!self.api.operators_file.is_empty()).then(|| Path::new(&self.api.operators_file));
        let operators = api::Operators::new(admin_token, &self.api.read_token, operators_file)?;
        Ok(api::ApiConfig {
            operators: std::sync::Arc::new(operators),
            request_timeout: Duration::from_millis(self.api.request_timeout_ms),
            default_limits: self.default_limits()?,
            shutdown_grace: Duration::from_millis(self.api.shutdown_grace_ms),
            identity_refresh: Duration::from_millis(self.identity.refresh_ms.max(1)),
            header_timeout: Duration::from_millis(self.api.header_timeout_ms.max(1)),
            max_connections: {
                let mut max = api::MaxConnections::from_budget(crate::process_limits::connection_budget());
                if self.api.max_connections > 0 {
                    max.public = self.api.max_connections;
                }
                max
            },
            max_body_bytes_in_flight: self.body_budget(),
            max_requests_in_flight_per_tenant: self.api.max_requests_in_flight_per_tenant,
            admin_wrong_tokens_per_minute: self.api.admin_wrong_tokens_per_minute,
            url_signing: self.url_signing()?,
            origin: self.origin_policy()?,
            avif: self.avif_policy()?,
        })
    }

    /// What this deployment allows of AVIF output (`api.auto_avif`, `limits.avif_max_effort`).
    pub fn avif_policy(&self) -> anyhow::Result<imaging::AvifPolicy> {
        let max_effort = self.limits.avif_max_effort;
        if !(imaging::DEFAULT_EFFORT..=imaging::MAX_EFFORT).contains(&max_effort) {
            anyhow::bail!(
                "limits.avif_max_effort is {max_effort}: it must be between {} (the default effort, \
                 which every request may use) and {}",
                imaging::DEFAULT_EFFORT,
                imaging::MAX_EFFORT
            );
        }
        if self.api.auto_avif && !imaging::AVIF_OUTPUT {
            anyhow::bail!(
                "api.auto_avif is true but this build has no AVIF encoder (imaging's `avif` feature): \
                 set it to false or build with the default features"
            );
        }
        Ok(imaging::AvifPolicy { auto: self.api.auto_avif, max_effort, max_pixels: self.limits.avif_max_output_pixels })
    }

    /// The node's budget of body bytes in flight: `api.max_body_bytes_in_flight`, or when 0, 64
    /// MiB per core and at least one whole body (`limits.max_input_bytes`). Why per core: bodies
    /// held beyond what the node can convert (or hand to workers) soon only wait, and while they
    /// wait another tenant's small image waits behind their conversions; measured on 2 cores
    /// (docs/benchmarks.md, "Upload flood"), 128 MiB kept a small request's p99 at 192 ms
    /// through a flood of 30 MB uploads where 256 MiB let it reach 539–566 ms.
    pub fn body_budget(&self) -> u64 {
        match self.api.max_body_bytes_in_flight {
            0 => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
                (cores * (64 << 20)).max(self.limits.max_input_bytes)
            }
            set => set,
        }
    }

    /// The URL workers reach this api node's internal port at: `api.internal_url`, or the
    /// address the port is bound to. A wildcard address (`0.0.0.0`, `::`) names no host a worker
    /// could reach, so it needs `api.internal_url`.
    pub fn internal_origin(&self, bound: std::net::SocketAddr) -> anyhow::Result<String> {
        if !self.api.internal_url.is_empty() {
            return Ok(self.api.internal_url.trim_end_matches('/').to_owned());
        }
        if bound.ip().is_unspecified() {
            bail!(
                "api.internal_listen is {bound}, which workers cannot connect to: set api.internal_url to this \
                 node's internal URL as workers reach it (e.g. https://10.0.1.11:{})",
                bound.port()
            );
        }
        let scheme = if self.api_tls_enabled() { "https" } else { "http" };
        Ok(format!("{scheme}://{bound}"))
    }

    fn api_tls_enabled(&self) -> bool {
        non_empty_path(&self.api.tls_cert).is_some()
    }

    /// The TLS every listener of this node serves with (`api.tls_cert`, `api.tls_key`); None:
    /// plain HTTP.
    pub fn api_tls(&self) -> anyhow::Result<Option<std::sync::Arc<tls::ServerConfig>>> {
        match (non_empty_path(&self.api.tls_cert), non_empty_path(&self.api.tls_key)) {
            (Some(cert), Some(key)) => Ok(Some(tls::server_config(cert, key).context("api.tls_cert / api.tls_key")?)),
            _ => Ok(None),
        }
    }

    /// The worker's TLS to the api nodes' internal ports (`worker.tls_ca`); None: plain HTTP.
    pub fn worker_internal_tls(&self) -> anyhow::Result<Option<std::sync::Arc<tls::ClientConfig>>> {
        non_empty_path(&self.worker.tls_ca).map(|ca| tls::client_config(ca).context("worker.tls_ca")).transpose()
    }

    /// `queue.tls_ca` as a path, None when empty.
    pub fn nats_tls_ca(&self) -> Option<&Path> {
        non_empty_path(&self.queue.tls_ca)
    }

    pub fn nats_urls(&self) -> Vec<String> {
        self.queue.nats_urls.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
    }

    /// The job queue's settings; jobs live no longer than a request may wait.
    pub fn queue_config(&self) -> queue::QueueConfig {
        queue::QueueConfig {
            stream: self.queue.stream.clone(),
            replicas: self.queue.replicas.max(1),
            max_jobs: self.queue.max_jobs.max(1),
            max_age: Duration::from_millis(self.api.request_timeout_ms),
            ack_wait: Duration::from_millis(self.queue.ack_wait_ms.max(100)),
            max_attempts: self.queue.max_attempts.max(1),
            ..queue::QueueConfig::default()
        }
    }

    pub fn dispatch_config(&self) -> dispatch::DispatchConfig {
        let mut config = if self.dispatch.workers == 0 {
            dispatch::DispatchConfig::default()
        } else {
            dispatch::DispatchConfig::with_threads(self.dispatch.workers)
        };
        for (lane, queue) in [
            (dispatch::Lane::Small, self.dispatch.small_queue),
            (dispatch::Lane::Medium, self.dispatch.medium_queue),
            (dispatch::Lane::Large, self.dispatch.large_queue),
        ] {
            if queue > 0 {
                *config.capacity.get_mut(lane) = queue;
            }
        }
        config
    }
}

/// A file key: None when empty (the feature is off).
pub fn non_empty_path(value: &str) -> Option<&Path> {
    (!value.trim().is_empty()).then(|| Path::new(value.trim()))
}

/// `sources.buckets`: `<name>=s3://<bucket>[/<prefix>] <option>=<value>,…` entries, `;` between.
fn parse_buckets(text: &str) -> anyhow::Result<Vec<origin::BucketSpec>> {
    let mut buckets = Vec::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (head, options) = entry.split_once(char::is_whitespace).unwrap_or((entry, ""));
        let Some((name, url)) = head.split_once('=') else {
            anyhow::bail!("sources.buckets: `{head}` is not <name>=s3://<bucket>[/<prefix>]");
        };
        let options = options
            .split(',')
            .map(str::trim)
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => Ok((k.trim().to_owned(), v.trim().to_owned())),
                // The option's name only: its value may be a secret.
                None => anyhow::bail!("sources.buckets: an option of bucket {name} is not key=value"),
            })
            .collect::<anyhow::Result<_>>()?;
        buckets.push(origin::BucketSpec { name: name.trim().to_owned(), url: url.trim().to_owned(), options });
    }
    Ok(buckets)
}

/// A key's environment variable: `api.listen` is `RESIZER_API_LISTEN`.
fn env_name(path: &str) -> String {
    format!("RESIZER_{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Every key's environment variable.
fn known_env() -> anyhow::Result<Vec<String>> {
    let defaults = toml::Table::try_from(Config::default()).context("serialising the default configuration")?;
    Ok(leaves(&defaults).into_iter().map(|(path, _)| env_name(&path)).collect())
}

/// `RESIZER_*` variables among `env` that name no configuration key and none of the other
/// tools' variables.
fn unknown_env(env: &[(String, String)], known: &[String]) -> Vec<String> {
    const OTHERS: &[&str] = &[
        "RESIZER_ADMIN_URL",
        "RESIZER_ADMIN_TOKEN",
        "RESIZER_ADMIN_CA_FILE",
        "RESIZER_NATS_PASSWORD",
        "RESIZER_URL_SECRET",
        // imaging's: another libheif to open, or none (docs/input-formats.md).
        "RESIZER_LIBHEIF",
    ];
    env.iter()
        .map(|(name, _)| name)
        .filter(|name| !known.contains(name) && !OTHERS.contains(&name.as_str()))
        .cloned()
        .collect()
}

/// Deep-merges `over` into `base` (tables merge, anything else replaces).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Every leaf key as (`section.key`, default value).
fn leaves(table: &toml::Table) -> Vec<(String, toml::Value)> {
    let mut out = Vec::new();
    for (k, v) in table {
        match v {
            toml::Value::Table(inner) => {
                out.extend(leaves(inner).into_iter().map(|(p, v)| (format!("{k}.{p}"), v)));
            }
            v => out.push((k.clone(), v.clone())),
        }
    }
    out
}

fn known_keys(defaults: &toml::Table) -> String {
    leaves(defaults).into_iter().map(|(p, _)| p).collect::<Vec<_>>().join(", ")
}

/// A raw string from the environment or a flag, typed like the key's default: strings stay
/// strings (no quoting needed), numbers and booleans are parsed as TOML.
fn typed(raw: &str, default: &toml::Value) -> toml::Value {
    if default.is_str() {
        return toml::Value::String(raw.to_owned());
    }
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        // Left a string, so deserialising reports the key and the expected type.
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set(table: &mut toml::Table, path: &str, value: toml::Value) -> anyhow::Result<()> {
    match path.split_once('.') {
        None => {
            table.insert(path.to_owned(), value);
            Ok(())
        }
        Some((section, rest)) => {
            let entry = table.entry(section.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set(inner, rest, value),
                _ => bail!("`{section}` is not a section"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unconfirmed batch is shipped again after `usage.confirm_wait_ms`; inside the usage
    /// stream's duplicate window that copy would be taken for the lost one and not stored.
    #[test]
    fn a_batch_is_shipped_again_only_past_the_usage_streams_duplicate_window() {
        let wait = Duration::from_millis(Config::default().usage.confirm_wait_ms);
        assert!(wait >= 2 * queue::USAGE_DUPLICATE_WINDOW, "{wait:?}");
    }

    #[test]
    fn the_avif_effort_cap_is_checked_and_reaches_the_api() {
        let mut config = Config::default();
        let policy = config.avif_policy().expect("defaults");
        assert_eq!(policy, imaging::AvifPolicy::default());
        config.limits.avif_max_effort = imaging::MAX_EFFORT;
        assert_eq!(config.avif_policy().expect("the slowest allowed").max_effort, imaging::MAX_EFFORT);
        for bad in [imaging::DEFAULT_EFFORT - 1, imaging::MAX_EFFORT + 1] {
            config.limits.avif_max_effort = bad;
            let e = config.avif_policy().expect_err("out of range").to_string();
            assert!(e.contains("limits.avif_max_effort"), "{e}");
        }
    }

    #[test]
    fn buckets_are_named_with_their_url_and_options() {
        let buckets = parse_buckets(
            " photos=s3://acme-originals/shop endpoint=http://minio:9000, region=eu-west-1,allow_http=true ;\
             archive=s3://old-bucket",
        )
        .expect("valid");
        assert_eq!(buckets.len(), 2);
        assert_eq!((buckets[0].name.as_str(), buckets[0].url.as_str()), ("photos", "s3://acme-originals/shop"));
        assert_eq!(buckets[0].options[1], ("region".to_owned(), "eu-west-1".to_owned()));
        assert_eq!((buckets[1].name.as_str(), buckets[1].options.len()), ("archive", 0));
        assert!(parse_buckets("").expect("none").is_empty());
        assert!(parse_buckets("s3://no-name").is_err());
        let error = parse_buckets("photos=s3://b secret_access_key").expect_err("no value").to_string();
        assert!(!error.contains("secret_access_key"), "an option's text may be a secret: {error}");
    }

    #[test]
    fn layers_override_in_order() {
        let dir = std::env::temp_dir().join(format!("resizer-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("resizer.toml");
        std::fs::write(&file, "[api]\nlisten = \"127.0.0.1:9000\"\nrequest_timeout_ms = 500\n[limits]\nburst = 7\n")
            .expect("write config");
        let args = ConfigArgs { config: Some(file), set: vec!["limits.burst=9".into()] };
        let env = vec![
            ("RESIZER_API_REQUEST_TIMEOUT_MS".to_owned(), "700".to_owned()),
            ("RESIZER_LOG_LEVEL".to_owned(), "debug".to_owned()),
        ];
        let config = Config::load_from(&args, &env, &[("data_dir", "/tmp/x".into())]).expect("valid");
        assert_eq!(config.api.listen, "127.0.0.1:9000", "file over default");
        assert_eq!(config.api.request_timeout_ms, 700, "env over file");
        assert_eq!(config.limits.burst, 9, "flag over file");
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.api.admin_listen, "127.0.0.1:8081", "default kept");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Every file in deploy/config loads: no unknown key, every value valid.
    #[test]
    fn the_shipped_role_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config");
        let load = |role: &str| {
            let args = ConfigArgs { config: Some(dir.join(format!("{role}.toml"))), set: Vec::new() };
            Config::load_from(&args, &[], &[]).unwrap_or_else(|e| panic!("deploy/config/{role}.toml: {e:#}"))
        };
        let api = load("api");
        assert_eq!((api.identity.source.as_str(), api.usage.mode.as_str()), ("replicated", "ship"));
        let bound: std::net::SocketAddr = api.api.internal_listen.parse().expect("an address");
        assert_eq!(api.internal_origin(bound).expect("origin"), api.api.internal_url);
        let worker = load("worker");
        assert_eq!(worker.queue_config().max_age, api.queue_config().max_age, "jobs live as long as requests");
        assert_eq!(worker.queue.ack_wait_ms, api.queue.ack_wait_ms);
        // The worker may fetch from the api node this file describes, and from nothing public.
        let origins = worker::AllowedOrigins::parse(&worker.worker.api_origins).expect("valid api_origins");
        assert!(origins.allows(&api.api.internal_url) && !origins.allows("http://203.0.113.9:8082"));
        for role in ["identity", "usage"] {
            assert_eq!(load(role).queue.replicas, 3, "{role}");
        }
    }

    #[test]
    fn a_wildcard_internal_address_needs_an_internal_url() {
        let mut config = Config::default();
        let err = config.internal_origin("0.0.0.0:8082".parse().expect("addr")).expect_err("no host").to_string();
        assert!(err.contains("api.internal_url"), "{err}");
        assert!(config.internal_origin("[::]:8082".parse().expect("addr")).is_err());
        assert_eq!(
            config.internal_origin("10.0.1.11:8082".parse().expect("addr")).expect("bound host"),
            "http://10.0.1.11:8082"
        );
        config.api.internal_url = "http://api-1.internal:8082/".into();
        assert_eq!(
            config.internal_origin("0.0.0.0:8082".parse().expect("addr")).expect("given"),
            "http://api-1.internal:8082"
        );
    }

    #[test]
    fn unknown_environment_names_are_reported() {
        let env = |names: &[&str]| names.iter().map(|n| ((*n).to_owned(), "1".to_owned())).collect::<Vec<_>>();
        let known = known_env().expect("defaults");
        assert!(known.iter().any(|k| k == "RESIZER_API_HEADER_TIMEOUT_MS"));
        let found = unknown_env(
            &env(&["RESIZER_LIMITS_RATE", "RESIZER_LIMITS_RATE_PER_SEC", "RESIZER_ADMIN_URL", "RESIZER_LIBHEIF"]),
            &known,
        );
        assert_eq!(found, ["RESIZER_LIMITS_RATE"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let args = ConfigArgs { config: None, set: vec!["api.lisen=1".into()] };
        let err = Config::load_from(&args, &[], &[]).expect_err("typo").to_string();
        assert!(err.contains("unknown configuration key `api.lisen`"), "{err}");
        let args = ConfigArgs { config: None, set: vec!["api.request_timeout_ms=soon".into()] };
        assert!(Config::load_from(&args, &[], &[]).is_err());
        let args = ConfigArgs { config: None, set: vec!["limits.rate_per_sec=0".into()] };
        assert!(Config::load_from(&args, &[], &[]).is_err());
    }

    #[test]
    fn usage_batch_secrets_are_checked_at_load() {
        let load = |kv: &[&str]| {
            let args = ConfigArgs { config: None, set: kv.iter().map(|s| (*s).to_owned()).collect() };
            Config::load_from(&args, &[], &[])
        };
        let defaults = load(&[]).expect("defaults");
        assert!(defaults.batch_signing_secret().expect("none").is_none());
        assert!(defaults.usage_signer().expect("none").is_none(), "unsigned without a key");
        let err = load(&["usage.batch_signing_secret=too-short"]).expect_err("short").to_string();
        assert!(err.contains("usage.batch_signing_secret"), "{err}");
        let secret = "Zq3vN8rT1xW5yB7mK2pL9sD4fG6hJ0cA";
        let aggregator = load(&[&format!("usage.batch_signing_secret={secret}")]).expect("strong");
        let key = aggregator.batch_signing_secret().expect("valid").expect("set").node_key("api-1").expect("key");
        let api = load(&["usage.node_id=api-1", &format!("usage.batch_key={}", key.to_hex())]).expect("a key");
        assert!(api.usage_signer().expect("valid").is_some());
        let err = load(&["usage.batch_key=00ff"]).expect_err("not 32 bytes").to_string();
        assert!(err.contains("usage.batch_key"), "{err}");
        let err = load(&["usage.node_id=api 1", &format!("usage.batch_key={}", key.to_hex())])
            .expect_err("a node id no header carries");
        assert!(format!("{err:#}").contains("usage.node_id"), "{err:#}");
    }

    #[test]
    fn the_body_budget_holds_at_least_one_whole_body() {
        let set = |kv: &[&str]| ConfigArgs { config: None, set: kv.iter().map(|s| (*s).to_owned()).collect() };
        let defaults = Config::load_from(&ConfigArgs::default(), &[], &[]).expect("defaults are valid");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        assert_eq!(defaults.body_budget(), (cores * (64 << 20)).max(32 << 20));
        let one_huge_body = set(&["limits.max_input_bytes=1073741824"]);
        assert!(Config::load_from(&one_huge_body, &[], &[]).expect("auto fits").body_budget() >= 1 << 30);
        assert_eq!(defaults.api_config("").expect("no token is fine").max_requests_in_flight_per_tenant, 64);
        let err = Config::load_from(&set(&["api.max_body_bytes_in_flight=1000"]), &[], &[])
            .expect_err("below the input limit")
            .to_string();
        assert!(err.contains("api.max_body_bytes_in_flight (1000) must be at least limits.max_input_bytes"), "{err}");
        let fits = set(&["api.max_body_bytes_in_flight=1000", "limits.max_input_bytes=1000"]);
        assert_eq!(Config::load_from(&fits, &[], &[]).expect("equal is enough").api.max_body_bytes_in_flight, 1000);
        let err = Config::load_from(&set(&["api.max_requests_in_flight_per_tenant=0"]), &[], &[])
            .expect_err("zero")
            .to_string();
        assert!(err.contains("api.max_requests_in_flight_per_tenant"), "{err}");
    }
}
