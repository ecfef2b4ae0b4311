//! # api
//!
//! The HTTP edge of resizer: the public API (`POST /v1/resize`, health, readiness, metrics,
//! OpenAPI) and the admin API (tenants, keys, limits, suspension). It owns admission — the
//! request id, authentication from the credential cache, per-tenant token buckets, the body cap,
//! the header probe that stops bombs before decoding — and the one mapping of every error to
//! `application/problem+json`. It hands conversions to [`Conversions`] — the in-process
//! dispatcher (`resizer dev`) or, in the cluster, the JetStream queue with the source bytes
//! staged here for the worker (`conversions.rs`, `internal.rs`: the internal port workers
//! fetch from and return to) — and awaits them, so a client that goes away cancels its job.
//!
//! It must not decode or encode pixels (that is `imaging`, run on the dispatcher's threads, never
//! on the async runtime), must not decide credentials by itself (that is `identity`'s cache), and
//! must not block the runtime: the SQLite store is only touched from `spawn_blocking`.
//!
//! Files: `server.rs` wiring and shutdown (it imports the handlers, never the other way);
//! `public.rs`, `own.rs` (a tenant's own usage, audit and limits), `admin.rs` and `internal.rs` the
//! handlers, which never import each other;
//! `resize.rs` the steps of a resize after the body (image admission, conversion, answer, usage
//! record); `outcome.rs` what a request came to (for the log, metrics and usage); `body.rs`
//! reading, draining and JSON bodies; `usage_report.rs` usage reads; `credentials.rs` feeding
//! the credential cache; `conversions.rs` where a conversion runs; `connections.rs` with
//! `lingering.rs` (a close that does not reset a client still sending);
//! `operators.rs` who may use the admin API (named tokens, access levels, the wrong-token
//! throttle); `budget.rs` the node's budget of body bytes in flight; `in_flight.rs` each tenant's cap of
//! requests in flight; `quota.rs` quota admission and reports; `problem.rs` errors → problem+json; `ratelimit.rs`, `metrics.rs`, `openapi.rs`,
//! `request_id.rs`, `time.rs`.

mod admin;
mod body;
mod budget;
mod by_url;
mod connections;
mod conversions;
mod credentials;
mod in_flight;
mod internal;
mod lingering;
mod metrics;
mod openapi;
mod operators;
mod outcome;
mod own;
mod problem;
mod public;
mod quota;
mod ratelimit;
mod request_id;
mod resize;
mod server;
mod signed_url;
mod time;
mod usage_report;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use identity::{CredentialCache, EffectiveLimits};
use tokio::sync::Notify;

pub use connections::{serve as serve_with_limits, ConnectionLimits};
pub use conversions::{Conversions, QueueBackend};
pub use identity_kv::ReplicaStatus;
pub use operators::{
    check_strength, token_sha256_hex, Access, Operator, Operators, OperatorsError, MIN_TOKEN_LEN, THROTTLE_PER_MINUTE,
};
pub use problem::ApiError;
/// A quota as the admin API shows it: what `resizer admin tenants update --quota` sends.
pub use quota::to_json as quota_json;
pub use server::{serve, Listeners};
pub use signed_url::{signed_path, BadSigningSecret, KeySecret, UrlSigning, URL_PREFIX};

/// What the api needs to know that is not in the identity store.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Deadline of one resize, from the request's arrival: past it the answer is 504 and the
    /// job is dropped if no worker has started it.
    pub request_timeout: Duration,
    /// Limits for every tenant without its own overrides.
    pub default_limits: EffectiveLimits,
    /// The admin API's bearer tokens, each an operator's with its access (`operators.rs`).
    pub operators: Arc<Operators>,
    /// After SIGTERM: how long in-flight requests may take before the process exits anyway.
    pub shutdown_grace: Duration,
    /// How often the credential cache takes the identity store's changes (writes through this
    /// node's admin API are applied at once; this bounds the lag for writes made elsewhere).
    pub identity_refresh: Duration,
    /// A request's head must arrive within this; also how long a kept-alive connection may idle.
    pub header_timeout: Duration,
    /// Open connections at most on the public, internal and admin listeners.
    pub max_connections: MaxConnections,
    /// Bytes of resize request bodies held at once on this node, all tenants together: a body
    /// is reserved before it is read and given back when its answer is done; past it, 503.
    pub max_body_bytes_in_flight: u64,
    /// Resize requests of one tenant in flight at once on this node; past it, 429.
    pub max_requests_in_flight_per_tenant: usize,
    /// Wrong admin tokens one client address may present per minute (and at once); past it,
    /// 429 `admin-throttled` without the token being checked.
    pub admin_wrong_tokens_per_minute: u32,
    /// The deployment's URL signing secret (`api.url_signing_secret_file`): signed GET URLs and
    /// signing keys need it; without it both are refused.
    pub url_signing: Option<UrlSigning>,
    /// How this node fetches the sources of signed URLs (allowed private hosts, time-outs,
    /// redirects, the source cache's bytes).
    pub origin: origin::OriginPolicy,
    /// AVIF output: whether `format=auto` may pick it (`api.auto_avif`), the highest encoder
    /// effort a request may ask (`limits.avif_max_effort`) and the most pixels of an AVIF answer
    /// (`limits.avif_max_output_pixels`).
    pub avif: imaging::AvifPolicy,
}

/// Open connections at most, per listener.
#[derive(Debug, Clone, Copy)]
pub struct MaxConnections {
    pub public: usize,
    pub internal: usize,
    pub admin: usize,
}

impl MaxConnections {
    /// `budget` file descriptors shared out: half to the public listener, a quarter to the
    /// internal one (workers), an eighth to the admin API; the rest stays for files, the
    /// spool, NATS and the database.
    pub fn from_budget(budget: usize) -> MaxConnections {
        MaxConnections { public: (budget / 2).max(16), internal: (budget / 4).max(16), admin: (budget / 8).max(8) }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            request_timeout: Duration::from_secs(10),
            default_limits: EffectiveLimits::default(),
            operators: Arc::new(Operators::none()),
            shutdown_grace: Duration::from_secs(10),
            identity_refresh: Duration::from_millis(250),
            header_timeout: Duration::from_secs(10),
            max_connections: MaxConnections::from_budget(1024),
            max_body_bytes_in_flight: 256 << 20,
            max_requests_in_flight_per_tenant: 64,
            admin_wrong_tokens_per_minute: operators::THROTTLE_PER_MINUTE,
            url_signing: None,
            origin: origin::OriginPolicy::default(),
            avif: imaging::AvifPolicy::default(),
        }
    }
}

/// Metering: where this node spools its usage records, and where usage and audit are read.
/// `None` in [`App::new`] turns metering off (a benchmark's "off" side; never in production).
pub struct Metering {
    /// Where this node's records go before its answers leave; None where no request is resized
    /// (the identity service, which only reads usage and audit records).
    pub spool: Option<Arc<usage::Spool>>,
    /// A cluster api node's shipped batches waiting for an aggregator's confirmation.
    pub shipments: Option<Arc<usage::Shipments>>,
    pub rollups: Arc<usage::Rollups>,
    pub archive: usage::Archive,
    /// This api node's id in usage records.
    pub node: String,
    /// Usage reads waiting for the rollups: at most [`ROLLUP_READS_AT_ONCE`].
    pub rollup_reads: Arc<tokio::sync::Semaphore>,
    /// Each tenant's quota usage as this node knows it (published totals plus its own answers
    /// since): what quota admission decides from. Fed by the aggregator of this process, or by
    /// the cluster's totals bucket.
    pub quota_board: Arc<usage::QuotaBoard>,
}

/// Usage reads that may wait for the rollups at once. Each holds a thread of the blocking pool
/// until the database answers, and they queue on its one connection: a database that stops
/// answering without closing its sockets (a frozen process, a hung disk) would otherwise pin a
/// thread per read for as long as it lasts. Reads beyond these get 503 at once.
pub const ROLLUP_READS_AT_ONCE: usize = 4;

/// Where this node's credentials come from.
pub enum Credentials {
    /// The identity store is in this process (`resizer dev`, the identity service): admin writes
    /// go to it, and the cache is fed from it after each write and on an interval.
    Store(Arc<dyn identity::Store>),
    /// A cluster api node: the cache is fed by the JetStream KV watch (started by the binary);
    /// tenants and keys are administered at the identity service.
    Replicated(Arc<identity_kv::ReplicaStatus>),
}

/// Everything the handlers share. Built once per process by the binary.
pub struct App {
    config: ApiConfig,
    credentials: Credentials,
    /// Notified after each admin write to the store (the identity service's relay waits on it).
    identity_written: Arc<Notify>,
    cache: Arc<CredentialCache>,
    conversions: Conversions,
    limiter: ratelimit::RateLimiter,
    /// Usage reads: 10/s, bursts of 20 per tenant (for the cluster: each node its share), apart
    /// from the resize bucket.
    read_limiter: ratelimit::RateLimiter,
    metrics: metrics::Metrics,
    /// Request-body bytes in flight on this node, within `max_body_bytes_in_flight`.
    body_budget: budget::BodyBudget,
    /// Each tenant's resize requests in flight on this node, within
    /// `max_requests_in_flight_per_tenant`.
    tenants_in_flight: in_flight::TenantsInFlight,
    metering: Option<Metering>,
    /// Wrong admin tokens per client address.
    admin_throttle: operators::AdminThrottle,
    /// Set when shutdown begins: `/readyz` turns 503 so the load balancer drains this node.
    shutting_down: AtomicBool,
    /// Signed URLs' sources, fetched through the address guard and kept within a bytes budget;
    /// `None` where signed URLs are off.
    sources: Option<Arc<origin::SourceCache>>,
    /// The identity service's board of the api nodes (fed by `queue::watch_nodes`, set once by
    /// [`App::show_nodes`]); an api node uses its own roster's (see [`App::node_board`]).
    node_board: std::sync::OnceLock<Arc<queue::NodeBoard>>,
}

impl App {
    pub fn new(
        config: ApiConfig,
        credentials: Credentials,
        cache: Arc<CredentialCache>,
        conversions: Conversions,
        metering: Option<Metering>,
    ) -> Result<Arc<App>, origin::OriginError> {
        let admin_throttle = operators::AdminThrottle::new(config.admin_wrong_tokens_per_minute);
        let sources = match config.url_signing {
            Some(_) => {
                let fetcher = origin::Fetcher::new(config.origin.clone())?;
                Some(Arc::new(origin::SourceCache::new(fetcher, config.origin.cache_bytes)))
            }
            None => None,
        };
        Ok(Arc::new(App {
            body_budget: budget::BodyBudget::new(config.max_body_bytes_in_flight),
            tenants_in_flight: in_flight::TenantsInFlight::new(config.max_requests_in_flight_per_tenant),
            config,
            credentials,
            identity_written: Arc::new(Notify::new()),
            cache,
            conversions,
            limiter: ratelimit::RateLimiter::default(),
            read_limiter: ratelimit::RateLimiter::default(),
            metrics: metrics::Metrics::default(),
            metering,
            admin_throttle,
            shutting_down: AtomicBool::new(false),
            sources,
            node_board: std::sync::OnceLock::new(),
        }))
    }

    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }

    /// The store, where it is in this process.
    pub fn store(&self) -> Option<&Arc<dyn identity::Store>> {
        match &self.credentials {
            Credentials::Store(store) => Some(store),
            Credentials::Replicated(_) => None,
        }
    }

    /// How the credentials keep up with the identity service (cluster api nodes).
    pub fn replica(&self) -> Option<&identity_kv::ReplicaStatus> {
        match &self.credentials {
            Credentials::Replicated(status) => Some(status),
            Credentials::Store(_) => None,
        }
    }

    /// Notified after each admin write committed to the store.
    pub fn identity_written(&self) -> Arc<Notify> {
        self.identity_written.clone()
    }

    pub(crate) fn quota_board(&self) -> Option<&usage::QuotaBoard> {
        self.metering.as_ref().map(|m| &*m.quota_board)
    }

    pub(crate) fn spool(&self) -> Option<&usage::Spool> {
        self.metering.as_ref().and_then(|m| m.spool.as_deref())
    }

    /// How many api nodes share each tenant's rate limits: the nodes up in a cluster, 1 alone.
    fn api_nodes(&self) -> usize {
        self.conversions.queue().map_or(1, |q| q.api_peers.count())
    }

    /// Why this node takes no requests now, if it does not. Ready (None): `/readyz` answers
    /// 200, the load balancer sends it requests, and in a cluster it announces itself to the
    /// other api nodes, which share the tenants' rate limits with it.
    fn not_ready(&self) -> Option<&'static str> {
        if self.shutting_down.load(std::sync::atomic::Ordering::Relaxed) {
            Some("shutting down")
        } else if !self.cache.is_primed() {
            Some("the credential cache has not been loaded yet")
        } else if self.spool().is_some_and(|spool| spool.health().is_err()) {
            // Every request would be answered 503 (no 200 without its record): leave rotation.
            Some("the usage spool cannot write (a full or read-only volume?); requests would fail")
        } else {
            self.conversions.ready().err()
        }
    }

    /// What `/readyz` says of this node, and what a cluster api node announces of itself to the
    /// node boards: ready or not (and why), and how its credentials and job stream are doing.
    pub(crate) fn readiness(&self) -> serde_json::Value {
        let mut body = match self.not_ready() {
            None => serde_json::json!({ "status": "ready" }),
            Some(reason) => serde_json::json!({ "status": "not ready", "reason": reason }),
        };
        body["version"] = env!("CARGO_PKG_VERSION").into();
        if matches!(self.conversions, Conversions::Embedded(_)) {
            // This node converts: say whether JPEG runs libjpeg-turbo's SIMD kernels (a build
            // made without nasm does not, and is markedly slower; nothing else would tell).
            body["jpeg_simd"] = imaging::jpeg_simd().into();
            // Which AVIF encoder this process found (libaom through libheif, or rav1e).
            body["avif_encoder"] = imaging::avif_encoder().into();
        }
        if let Some(queue) = self.conversions.queue() {
            // Reported, not a reason to be unready: see `JobQueue::watch_stream_leader`.
            body["jobs"] = serde_json::json!({ "stream_leader": queue.queue.stream_leader() });
        }
        if let Some(replica) = self.replica() {
            // Still ready when the watch is down: requests are decided on the last known
            // credentials (availability over consistency for the data plane); say how stale.
            body["identity"] = serde_json::json!({
                "replication": if replica.watching() { "live" } else { "stale: serving the last known credentials" },
                "version": self.cache.version(),
                "lag_ms": replica.lag().as_millis() as u64,
                "since_contact_ms": replica.since_contact().map(|d| d.as_millis() as u64),
            });
        }
        body
    }

    /// What this node announces of itself to the other api nodes and the identity service.
    pub(crate) fn announcement(&self) -> queue::Announcement {
        queue::Announcement { in_rotation: self.not_ready().is_none(), status: self.readiness().to_string() }
    }

    /// The api nodes this process hears announce themselves: a cluster api node's own roster,
    /// or the identity service's board; None where there is no cluster (`resizer dev`).
    pub(crate) fn node_board(&self) -> Option<&queue::NodeBoard> {
        match self.conversions.queue() {
            Some(queue) => Some(queue.api_peers.board()),
            None => self.node_board.get().map(|board| &**board),
        }
    }

    /// The identity service: the admin API's node list reads `board` (which the service feeds
    /// with the api nodes' announcements). Only the first board given counts.
    pub fn show_nodes(&self, board: Arc<queue::NodeBoard>) {
        let _ = self.node_board.set(board);
    }

    /// Takes a token from `tenant`'s bucket in `limiter`: this node's share of the tenant's
    /// `rate_per_sec` and `burst`.
    fn take_token(
        &self,
        limiter: &ratelimit::RateLimiter,
        tenant: identity::TenantId,
        rate_per_sec: f64,
        burst: u32,
    ) -> Result<(), ApiError> {
        let (rate, burst) = ratelimit::share(rate_per_sec, burst, self.api_nodes());
        limiter.take(tenant, rate, burst, Instant::now()).map_err(|retry_after| ApiError::RateLimited { retry_after })
    }
}
