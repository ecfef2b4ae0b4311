//! `resizer lab up|down|status --dir DIR`: the whole cluster on this machine, on free loopback
//! ports — a 3-node NATS JetStream cluster, PostgreSQL and the identity service, api nodes behind
//! HAProxy (checked on `/readyz`) and
//! workers — for tests, benchmarks and trying the cluster out. Everything it starts is listed
//! with role, URLs and PID in `DIR/cluster.json` (mode 0600: it holds the admin token and a demo
//! key); `down` stops all of it and checks that nothing is left.
//!
//! Identity: a PostgreSQL server of its own (initdb in DIR) under the identity service, which
//! relays every change to a JetStream KV bucket that each api node watches. Usage: api nodes ship
//! their spool batches to the usage stream, each signed with the node's own key derived from a
//! master secret only the aggregators get; a `resizer usage` aggregator checks and applies them
//! (Parquet in DIR/archive, rollups in the same PostgreSQL), where every api node reads usage and
//! audit. With `--prometheus`, Prometheus scraping every node with deploy/prometheus's rules
//! (docs/monitoring.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use lab::{Backend, InfraOptions, ProcessSpec};

use crate::node::generate_admin_token;

#[derive(clap::Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Start the cluster in DIR and write DIR/cluster.json; the processes keep running.
    Up(UpArgs),
    /// Stop every process of the cluster in DIR.
    Down(DirArgs),
    /// Show each process of the cluster in DIR: state, health, URLs.
    Status(StatusArgs),
    /// Freeze a component (SIGSTOP): its sockets stay open and it answers nothing.
    Pause(ComponentArgs),
    /// Let a paused component run again (SIGCONT).
    Resume(ComponentArgs),
    /// kill -9 a component (its whole process group).
    Kill(ComponentArgs),
    /// Start a component again as it was started (killing it first if it runs).
    Restart(ComponentArgs),
    /// Cut a component off from the others (a lab started with --netns): what it sends them and
    /// what they send it is dropped. Undone by `heal`.
    Partition(PartitionArgs),
    /// Slow a component's links (a lab started with --netns): delay and loss on everything it
    /// sends. Undone by `heal`.
    Slow(SlowArgs),
    /// Fill an api node's usage spool volume to the last byte (a lab started with --netns gives
    /// each its own): a full disk. Undone by `heal`.
    FillSpool(ComponentArgs),
    /// Undo every fault: resume every paused component, start again every one gone, and lift
    /// every partition and slowness.
    Heal(DirArgs),
    /// The process `slow` starts inside a node's namespace to hold its packets back.
    #[command(hide = true)]
    DelayQueue,
}

#[derive(clap::Args, Debug)]
pub struct PartitionArgs {
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    pub name: String,
    /// Only from these components (comma-separated, e.g. `nats-0,nats-1,nats-2`) [default: all others].
    #[arg(long, value_delimiter = ',')]
    pub from: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct SlowArgs {
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    pub name: String,
    /// Added to every packet it sends, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub delay_ms: u64,
    /// Share of the packets it sends that are dropped, in percent.
    #[arg(long, default_value_t = 0.0)]
    pub loss_percent: f64,
}

/// A component of the cluster in DIR, by its name in `lab status` (`api-0`, `nats-1`, `usage-0`,
/// `identity`, `postgres`, `haproxy`...).
#[derive(clap::Args, Debug)]
pub struct ComponentArgs {
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    pub name: String,
}

#[derive(clap::Args, Debug)]
pub struct DirArgs {
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// cluster.json's content with each component's live state, as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Api nodes behind HAProxy.
    #[arg(long, default_value_t = 2)]
    pub api_nodes: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Usage aggregators (`resizer usage`); several apply batches at once without double counting.
    #[arg(long, default_value_t = 1)]
    pub aggregators: usize,
    /// Jobs each worker converts at once [default: the machine's cores shared out among the
    /// workers, at least 1: on one machine, workers with a core count each would oversubscribe it].
    #[arg(long)]
    pub worker_slots: Option<usize>,
    /// Plaintext everywhere (no CA, no TLS on NATS, PostgreSQL, the api nodes or HAProxy): to
    /// measure what TLS costs, never to run anything that matters.
    #[arg(long)]
    pub no_tls: bool,
    /// Every node in its own network namespace with its own address, on a bridge of the lab's,
    /// so that `partition` and `slow` can hurt one node's links (needs root, iproute2 and
    /// iptables). HAProxy stays on this machine's loopback, where clients reach it.
    #[arg(long)]
    pub netns: bool,
    /// Also start Prometheus (Debian's `prometheus` package, never its system service) scraping
    /// every api node, worker, aggregator, the identity service and HAProxy every second, with
    /// deploy/prometheus's rules and alerts (built in), each `for:` divided by 15
    /// (docs/monitoring.md). Its URL is cluster.json's `prometheus_url`.
    #[arg(long)]
    pub prometheus: bool,
    /// Extra `--set KEY=VALUE` for every api node and worker (repeatable), e.g. `api.request_timeout_ms=5000`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

pub fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        LabCommand::Up(up_args) => up(&up_args),
        LabCommand::Down(dir) => {
            let report = lab::down(&dir.dir, Duration::from_secs(10))?;
            // What a killed api node left in shared memory (a stopped one removed its own).
            if let Some(memory) = spool_memory_dir(&dir.dir) {
                if memory.exists() {
                    std::fs::remove_dir_all(&memory).with_context(|| format!("removing {}", memory.display()))?;
                }
            }
            println!("stopped: {}", if report.stopped.is_empty() { "-".into() } else { report.stopped.join(", ") });
            if !report.already_gone.is_empty() {
                println!("already gone: {}", report.already_gone.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Pause(c) => fault(&c, lab::Signal::Stop, "paused"),
        LabCommand::Resume(c) => fault(&c, lab::Signal::Cont, "resumed"),
        LabCommand::Kill(c) => fault(&c, lab::Signal::Kill, "killed"),
        LabCommand::Restart(c) => {
            let component = lab::restart_component(&c.dir, &c.name)?;
            println!("{} restarted (pid {})", c.name, component.pid);
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Partition(p) => {
            let peers = lab::partition(&p.dir, &p.name, &p.from)?;
            println!("{} cut off from {}", p.name, peers.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Slow(a) => {
            let program = std::env::current_exe().context("finding this program's path")?;
            let delay_process = ProcessSpec::new(lab::FAULT_ROLE, "delay", program).args(["lab", "delay-queue"]);
            let slowness = lab::Slowness { delay: Duration::from_millis(a.delay_ms), loss_percent: a.loss_percent };
            lab::slow(&a.dir, &a.name, slowness, delay_process)?;
            println!("{}: +{} ms, {}% loss on what it sends", a.name, a.delay_ms, a.loss_percent);
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::FillSpool(c) => {
            let bytes = lab::fill_volume(&c.dir, &c.name)?;
            println!("{}: spool volume filled ({bytes} bytes written)", c.name);
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::DelayQueue => {
            let number = |key: &str| -> anyhow::Result<u64> {
                std::env::var(key)
                    .with_context(|| format!("{key} is not set"))?
                    .parse()
                    .with_context(|| key.to_string())
            };
            let queue = u16::try_from(number("RESIZER_LAB_DELAY_QUEUE")?).context("RESIZER_LAB_DELAY_QUEUE")?;
            lab::run_delay_queue(queue, Duration::from_millis(number("RESIZER_LAB_DELAY_MS")?))?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Heal(dir) => {
            let file = lab::ClusterFile::read(&dir.dir)?;
            if file.fields.contains_key(lab::NETWORK_FIELD) {
                let healed = lab::heal_network(&dir.dir)?;
                if !healed.is_empty() {
                    println!("network faults lifted: {}", healed.join(", "));
                }
            }
            let file = lab::ClusterFile::read(&dir.dir)?;
            let live = file.live();
            for component in &file.components {
                if live.contains(&component.name) {
                    lab::signal_component(&dir.dir, &component.name, lab::Signal::Cont)?;
                } else {
                    lab::restart_component(&dir.dir, &component.name)?;
                    println!("{} restarted", component.name);
                }
            }
            println!("healed: every component runs");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status(status_args) => {
            let statuses = lab::status(&status_args.dir)?;
            if status_args.json {
                let file = lab::ClusterFile::read(&status_args.dir)?;
                let live: Vec<serde_json::Value> = statuses
                    .iter()
                    .map(|s| {
                        serde_json::json!({ "name": s.name, "role": s.role, "pid": s.pid,
                            "state": format!("{:?}", s.state).to_lowercase(), "healthy": s.healthy, "urls": s.urls })
                    })
                    .collect();
                println!("{}", serde_json::json!({ "cluster": file, "status": live }));
            } else {
                print!("{}", lab::format_status(&statuses));
            }
            let all_well = statuses.iter().all(|s| s.state == lab::ProcessState::Running && s.healthy != Some(false));
            Ok(if all_well { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

/// Sends `signal` to component `c.name` of the cluster in `c.dir`.
fn fault(c: &ComponentArgs, signal: lab::Signal, done: &str) -> anyhow::Result<ExitCode> {
    if !lab::signal_component(&c.dir, &c.name, signal)? {
        anyhow::bail!("{} is not running", c.name);
    }
    println!("{} {done}", c.name);
    Ok(ExitCode::SUCCESS)
}

/// The size of an api node's spool volume on the lab's own network: room for hours of the
/// lab's batches (a few KiB each, deleted once applied).
const SPOOL_VOLUME_BYTES: u64 = 64 << 20;

/// How long past the request deadline HAProxy waits for an api node's answer.
const HAPROXY_PAST_DEADLINE: Duration = Duration::from_secs(1);

/// deploy/prometheus's recording rules and alerts, built into the binary: `lab up --prometheus`
/// works without the repository.
const PROMETHEUS_RULES: &str = include_str!("../../../../deploy/prometheus/rules.yml");
const PROMETHEUS_ALERTS: &str = include_str!("../../../../deploy/prometheus/alerts.yml");

/// The lab's Prometheus scrapes every second where deploy/prometheus/prometheus.yml scrapes every
/// 15: its alerts' `for:` and rule groups' `interval:` are divided by as much, so that an alert
/// of `for: 2m` fires 8 s after its condition holds.
const PROMETHEUS_TIME_SCALE: u32 = 15;

/// Roles scraped by the lab's Prometheus and their job names, as in
/// deploy/prometheus/prometheus.yml (the dashboard selects on them).
const PROMETHEUS_JOBS: [(&str, &str); 5] = [
    ("api", "resizer-api"),
    ("identity", "resizer-identity"),
    ("worker", "resizer-worker"),
    ("usage", "resizer-usage"),
    (lab::HAPROXY_ROLE, "haproxy"),
];

fn prometheus_options() -> anyhow::Result<lab::PrometheusOptions> {
    let rule_files = [("rules.yml", PROMETHEUS_RULES), ("alerts.yml", PROMETHEUS_ALERTS)]
        .into_iter()
        .map(|(name, text)| {
            Ok(lab::RuleFile { name: name.into(), text: lab::scale_rule_durations(text, PROMETHEUS_TIME_SCALE)? })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(lab::PrometheusOptions {
        jobs: PROMETHEUS_JOBS.iter().map(|(role, job)| ((*role).to_owned(), (*job).to_owned())).collect(),
        rule_files,
        ..lab::PrometheusOptions::default()
    })
}

fn up(args: &UpArgs) -> anyhow::Result<ExitCode> {
    let program = std::env::current_exe().context("finding this program's path")?;
    // Fail before starting anything when Prometheus is asked for and not installed.
    if args.prometheus && lab::find_program(lab::PROMETHEUS.program).is_none() {
        return Err(lab::LabError::MissingBinaries(vec![lab::PROMETHEUS]).into());
    }
    // NATS takes a login, as it must wherever it runs: each role its own user, allowed only the
    // subjects the role uses (queue::permissions), in its URLs; `resizer` may do everything (for
    // operators and tests, in cluster.json's `nats_urls`).
    let mut options = InfraOptions { tls: !args.no_tls, netns: args.netns, ..InfraOptions::default() };
    options.nats.auth = Some(lab::NatsAuth { user: "resizer".into(), password: generate_admin_token()? });
    // Routes log in too: a server that knows the cluster port but not this login cannot join.
    options.nats.route_auth = Some(lab::NatsAuth { user: "route".into(), password: generate_admin_token()? });
    let roles_config =
        crate::config::Config::load(&crate::config::ConfigArgs { config: None, set: args.set.clone() }, &[])?;
    options.nats.accounts = nats_accounts(&roles_config.queue_config(), |_| generate_admin_token())?;
    // HAProxy waits for an api node a little past the request deadline (the node's own 504 gets
    // through), not a minute: a frozen node's requests end as a 504 about when their deadline
    // does, as in `deploy/haproxy.cfg`.
    options.haproxy.timeout_server = Duration::from_millis(roles_config.api.request_timeout_ms) + HAPROXY_PAST_DEADLINE;
    let mut infra = lab::up_infrastructure(&args.dir, &options)?;
    let dir = infra.dir().to_path_buf();
    println!("NATS JetStream cluster up: {}", queue::redact_urls(&infra.nats_urls().join(",")));
    let mut role_urls = std::collections::HashMap::new();
    for role in queue::Role::ALL {
        role_urls.insert(role, infra.nats().client_urls_as(role.as_str())?.join(","));
    }

    // One PostgreSQL login per role, each with only what the role does: the identity service owns
    // the identity tables (and reads the rollups), the aggregators own the rollups, an api node
    // may only read the rollups. The superuser's login is for tools and tests.
    let logins: Vec<(&str, String)> = ["resizer_identity", "resizer_usage", "resizer_api"]
        .into_iter()
        .map(|role| Ok((role, generate_admin_token()?)))
        .collect::<anyhow::Result<_>>()?;
    // Run at each start (a reused DIR keeps its roles but gets new passwords): idempotent.
    let mut setup: Vec<String> = logins
        .iter()
        .flat_map(|(role, password)| {
            [
                format!("DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"),
                format!("ALTER ROLE {role} PASSWORD '{password}'"),
            ]
        })
        .collect();
    setup.extend([
        "GRANT CONNECT ON DATABASE resizer TO resizer_identity, resizer_usage, resizer_api".into(),
        "GRANT USAGE ON SCHEMA public TO resizer_identity, resizer_usage, resizer_api".into(),
        "GRANT CREATE ON SCHEMA public TO resizer_identity, resizer_usage".into(),
        "ALTER DEFAULT PRIVILEGES FOR ROLE resizer_usage IN SCHEMA public GRANT SELECT ON TABLES TO resizer_identity, resizer_api".into(),
    ]);
    let access = lab::PostgresAccess { superuser_password: Some(generate_admin_token()?), setup };
    let postgres = infra.add_postgres_with(access)?;
    let (postgres_url, postgres_addr) = (postgres.url(), postgres.socket_addr());
    let database_url = |role: &str| -> String {
        let password = logins.iter().find(|(r, _)| *r == role).map(|(_, p)| p.as_str()).unwrap_or_default();
        format!("postgres://{role}:{password}@{postgres_addr}/{}", lab::POSTGRES_DATABASE)
    };
    println!("PostgreSQL up: {}", queue::redact_url(&postgres_url));
    let admin_token = generate_admin_token()?;
    // Signed URLs: the identity service (which shows a new signing key's secret) and every api
    // node (which checks signatures) read the one deployment secret.
    let url_signing_secret = dir.join("url-signing.secret");
    crate::node::ensure_url_signing_secret(&url_signing_secret)?;
    let url_signing_secret = url_signing_secret.display().to_string();
    // What api nodes get instead: their admin ports only read (usage and audit).
    let read_token = generate_admin_token()?;

    // Every role trusts the lab's CA for NATS and PostgreSQL (and refuses them without TLS).
    let ca_file = infra.ca_file().map(Path::to_path_buf);
    let ca = ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let scheme = if ca_file.is_some() { "https" } else { "http" };

    let common = |spec: ProcessSpec, role: queue::Role| -> ProcessSpec {
        let mut spec = spec
            .env("RESIZER_QUEUE_NATS_URLS", &role_urls[&role])
            .env("RESIZER_QUEUE_TLS_CA", &ca)
            .env("RESIZER_IDENTITY_DATABASE_TLS_CA", &ca)
            .env("RESIZER_USAGE_ROLLUPS_TLS_CA", &ca)
            .env("RESIZER_LOG_FORMAT", "json");
        for kv in &args.set {
            spec = spec.args(["--set".to_owned(), kv.clone()]);
        }
        spec
    };

    // The identity service: the admin API over PostgreSQL, relaying changes to the api nodes;
    // it reads usage and audit records where the api nodes do, so cluster.json's admin URL
    // serves every admin call.
    let archive_url = format!("file://{}", dir.join("archive").display());
    std::fs::create_dir_all(dir.join("archive")).context("creating DIR/archive")?;
    let port = lab::free_port()?;
    let host = infra.add_host("identity")?;
    let admin_url = format!("{scheme}://{}:{port}", host.addr);
    let spec = ProcessSpec::new("identity", "identity", &program)
        .arg("identity")
        .netns(host.netns.clone())
        .env("RESIZER_API_ADMIN_LISTEN", format!("{}:{port}", host.addr))
        .env("RESIZER_API_ADMIN_TOKEN", &admin_token)
        .env("RESIZER_API_READ_TOKEN", &read_token)
        .env("RESIZER_API_URL_SIGNING_SECRET_FILE", &url_signing_secret)
        .env("RESIZER_IDENTITY_DATABASE", database_url("resizer_identity"))
        .env("RESIZER_USAGE_ROLLUPS_DATABASE", database_url("resizer_identity"))
        .env("RESIZER_USAGE_ARCHIVE_URL", &archive_url)
        .url("admin", &admin_url)
        .url("metrics", format!("{admin_url}/metrics"))
        .health(format!("{admin_url}/readyz"));
    let spec = serve_tls(&infra, spec, &host)?;
    let identity = infra.start_process(common(spec, queue::Role::Identity))?;
    lab::wait_for_http_ok_trusting(&format!("{admin_url}/healthz"), Duration::from_secs(30), ca_file.as_deref())
        .map_err(|e| {
            anyhow::anyhow!("the identity service did not start: {e}\n--- its log ---\n{}", identity.log_tail(30))
        })?;
    let demo_key = demo_key(&admin_url, &admin_token, ca_file.as_deref())?;

    // Usage: api nodes ship their spool batches to the usage stream; the aggregator applies them
    // (Parquet into DIR/archive, rollups in PostgreSQL), and api nodes read usage from there.
    let memory = spool_memory_dir(&dir);
    if let Some(memory) = &memory {
        std::fs::create_dir_all(memory).with_context(|| format!("creating {}", memory.display()))?;
    }
    let usage_env = |spec: ProcessSpec, database_role: &str| -> ProcessSpec {
        let spec = spec
            .env("RESIZER_USAGE_ROLLUPS_DATABASE", database_url(database_role))
            .env("RESIZER_USAGE_ARCHIVE_URL", &archive_url);
        match &memory {
            Some(memory) => spec.env("RESIZER_USAGE_SPOOL_MEMORY_DIR", memory.display().to_string()),
            None => spec,
        }
    };
    // Usage batches are signed: the aggregators hold the master secret, each api node only the
    // key derived from it for its own node id.
    let batch_signing_secret = generate_admin_token()?;
    let batch_keys = queue::BatchSigningSecret::new(&batch_signing_secret)?;
    let mut health = Vec::new();
    for i in 0..args.aggregators.max(1) {
        let name = format!("usage-{i}");
        let host = infra.add_host(&name)?;
        let url = format!("http://{}:{}", host.addr, lab::free_port()?);
        let spec = ProcessSpec::new("usage", &name, &program)
            .arg("usage")
            .netns(host.netns.clone())
            .env("RESIZER_USAGE_LISTEN", url.trim_start_matches("http://"))
            .env("RESIZER_DATA_DIR", dir.join(&name).display().to_string())
            .env("RESIZER_USAGE_BATCH_SIGNING_SECRET", &batch_signing_secret)
            .url("metrics", format!("{url}/metrics"))
            .health(format!("{url}/readyz"));
        let component = infra.start_process(usage_env(common(spec, queue::Role::Usage), "resizer_usage"))?;
        health.push((component, format!("{url}/readyz")));
    }
    let mut backends = Vec::new();
    // What workers may fetch from: exactly the api nodes' internal ports.
    let mut internal_origins = Vec::new();
    for i in 0..args.api_nodes.max(1) {
        let name = format!("api-{i}");
        let ports = lab::free_ports(3)?;
        let (public, admin, internal) = (ports[0], ports[1], ports[2]);
        let host = infra.add_host(&name)?;
        let addr = host.addr;
        // Its usage spool on a volume of its own (on the lab's own network), for `fill-spool`.
        infra.add_volume(&name, &dir.join(&name).join("spool"), SPOOL_VOLUME_BYTES)?;
        let url = |port: u16| format!("{scheme}://{addr}:{port}");
        let spec = ProcessSpec::new("api", &name, &program)
            .arg("api")
            .netns(host.netns.clone())
            .env("RESIZER_API_LISTEN", format!("{addr}:{public}"))
            .env("RESIZER_API_ADMIN_LISTEN", format!("{addr}:{admin}"))
            .env("RESIZER_API_INTERNAL_LISTEN", format!("{addr}:{internal}"))
            .env("RESIZER_API_READ_TOKEN", &read_token)
            .env("RESIZER_API_URL_SIGNING_SECRET_FILE", &url_signing_secret)
            .env("RESIZER_DATA_DIR", dir.join(&name).display().to_string())
            .env("RESIZER_IDENTITY_SOURCE", "replicated")
            .env("RESIZER_IDENTITY_JETSTREAM_PREFIX", queue::identity_api_prefix(identity_kv::BUCKET))
            .env("RESIZER_USAGE_MODE", "ship")
            .env("RESIZER_USAGE_NODE_ID", &name)
            .env("RESIZER_USAGE_BATCH_KEY", batch_keys.node_key(&name)?.to_hex())
            .url("http", url(public))
            .url("admin", url(admin))
            .url("internal", url(internal))
            .url("metrics", format!("{}/metrics", url(public)))
            .health(format!("{}/readyz", url(public)));
        let spec = serve_tls(&infra, spec, &host)?;
        let component = infra.start_process(usage_env(common(spec, queue::Role::Api), "resizer_api"))?;
        health.push((component, format!("{}/readyz", url(public))));
        let addr = (addr, public).into();
        backends.push(if ca_file.is_some() { Backend::tls(&name, addr) } else { Backend::new(&name, addr) });
        internal_origins.push(url(internal));
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let worker_slots = args.worker_slots.unwrap_or((cores / args.workers.max(1)).max(1));
    for i in 0..args.workers {
        let name = format!("worker-{i}");
        let port = lab::free_port()?;
        let host = infra.add_host(&name)?;
        let url = format!("http://{}:{port}", host.addr);
        let mut spec = ProcessSpec::new("worker", &name, &program)
            .arg("worker")
            .netns(host.netns.clone())
            .env("RESIZER_WORKER_LISTEN", format!("{}:{port}", host.addr))
            .env("RESIZER_WORKER_NODE_ID", &name)
            .env("RESIZER_WORKER_API_ORIGINS", internal_origins.join(","))
            .url("metrics", format!("{url}/metrics"))
            .health(format!("{url}/readyz"));
        spec = spec.env("RESIZER_WORKER_SLOTS", worker_slots.to_string()).env("RESIZER_WORKER_TLS_CA", &ca);
        let component = infra.start_process(common(spec, queue::Role::Worker))?;
        health.push((component, format!("{url}/readyz")));
    }
    for (component, ready) in &health {
        lab::wait_for_http_ok_trusting(ready, Duration::from_secs(30), ca_file.as_deref()).map_err(|e| {
            anyhow::anyhow!("{} did not become ready: {e}\n--- its log ---\n{}", component.name, component.log_tail(30))
        })?;
    }
    infra.add_haproxy(&backends)?;
    let url = infra.haproxy().map(|h| h.url().to_owned()).unwrap_or_default();
    let prometheus_url = if args.prometheus { Some(infra.add_prometheus(&prometheus_options()?)?) } else { None };

    let mut fields = serde_json::Map::new();
    fields.insert("admin_url".into(), admin_url.clone().into());
    fields.insert("admin_token".into(), admin_token.into());
    fields.insert("read_token".into(), read_token.into());
    fields.insert("demo_api_key".into(), demo_key.clone().into());
    fields.insert("postgres_url".into(), postgres_url.into());
    // The identity account's operator login, for tools that look into the identity bucket.
    fields.insert("nats_identity_urls".into(), infra.nats().client_urls_as(IDENTITY_OPERATOR)?.into());
    let file = infra.finish(fields)?;
    print_summary(&dir, &url, &admin_url, &demo_key, prometheus_url.as_deref(), file.components.len());
    Ok(ExitCode::SUCCESS)
}

/// The identity service and api nodes serve every listener over TLS, each with a certificate of
/// the lab's CA for its name (which HAProxy checks).
fn serve_tls(infra: &lab::Infrastructure, spec: ProcessSpec, host: &lab::Host) -> anyhow::Result<ProcessSpec> {
    Ok(match infra.issue_cert(host)? {
        Some(files) => spec
            .env("RESIZER_API_TLS_CERT", files.cert.display().to_string())
            .env("RESIZER_API_TLS_KEY", files.key.display().to_string()),
        None => spec,
    })
}

/// The NATS user with every permission in the identity account (the operator `resizer` is in
/// the service account).
const IDENTITY_OPERATOR: &str = "resizer-identity";

/// The two NATS accounts (queue::permissions): the service account first — the one the
/// operator `resizer` joins — with the api, worker and usage users, then the identity account
/// with the identity user and [`IDENTITY_OPERATOR`]; each role's user named for it, with its
/// permissions, and every password `password(user)`.
fn nats_accounts(
    jobs: &queue::QueueConfig,
    password: impl Fn(&str) -> anyhow::Result<String>,
) -> anyhow::Result<Vec<lab::NatsAccount>> {
    let role_user = |role: queue::Role| -> anyhow::Result<lab::NatsUser> {
        let permissions = queue::permissions(role, jobs, identity_kv::BUCKET);
        Ok(lab::NatsUser {
            login: lab::NatsAuth { user: role.as_str().into(), password: password(role.as_str())? },
            permissions: Some(lab::NatsPermissions { publish: permissions.publish, subscribe: permissions.subscribe }),
        })
    };
    let links = queue::identity_links(identity_kv::BUCKET);
    let service_links = queue::service_links();
    // An import names the account it comes from; an export, nobody.
    let link = |l: &queue::AccountLink, from: Option<&str>| lab::NatsLink {
        stream: l.kind == queue::LinkKind::Stream,
        subject: l.subject.clone(),
        account: from.map(str::to_owned),
        to: if from.is_some() { l.to.clone() } else { None },
    };
    let users_of = |account: &str| -> anyhow::Result<Vec<lab::NatsUser>> {
        queue::Role::ALL.iter().filter(|r| r.account() == account).map(|&r| role_user(r)).collect()
    };
    let mut identity_users = users_of(queue::IDENTITY_ACCOUNT)?;
    identity_users.push(lab::NatsUser {
        login: lab::NatsAuth { user: IDENTITY_OPERATOR.into(), password: password(IDENTITY_OPERATOR)? },
        permissions: None,
    });
    Ok(vec![
        lab::NatsAccount {
            name: queue::SERVICE_ACCOUNT.into(),
            users: users_of(queue::SERVICE_ACCOUNT)?,
            exports: service_links.iter().map(|l| link(l, None)).collect(),
            imports: links.iter().map(|l| link(l, Some(queue::IDENTITY_ACCOUNT))).collect(),
        },
        lab::NatsAccount {
            name: queue::IDENTITY_ACCOUNT.into(),
            users: identity_users,
            exports: links.iter().map(|l| link(l, None)).collect(),
            imports: service_links.iter().map(|l| link(l, Some(queue::SERVICE_ACCOUNT))).collect(),
        },
    ])
}

/// The lab's own directory in `/dev/shm` for its api nodes' open spool batches, named by DIR so
/// that `down` (and a restarted node) finds it, and removes it with whatever a killed node left.
/// None without `/dev/shm`: the nodes then write their spools with write(2).
fn spool_memory_dir(dir: &Path) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        return None;
    }
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let hash = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    Some(shm.join(format!("resizer-lab-{hex}")))
}

/// The demo tenant and a key for it, made through the identity service's admin API as any
/// operator would.
fn demo_key(admin_url: &str, admin_token: &str, ca: Option<&Path>) -> anyhow::Result<String> {
    let mut config =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(10)));
    if let Some(ca) = ca {
        config = config.tls_config(lab::ureq_tls(ca)?);
    }
    let agent: ureq::Agent = config.build().into();
    let post = |path: &str, body: serde_json::Value| -> anyhow::Result<serde_json::Value> {
        let mut response = agent
            .post(format!("{admin_url}{path}"))
            .header("authorization", format!("Bearer {admin_token}"))
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes())
            .with_context(|| format!("POST {admin_url}{path}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        if !(200..300).contains(&status) {
            anyhow::bail!("POST {admin_url}{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text)?)
    };
    // A DIR used before keeps its database: the demo tenant may already be there (409).
    if let Err(e) = post("/v1/tenants", serde_json::json!({ "name": "demo" })) {
        if !e.to_string().contains(": 409 ") {
            return Err(e);
        }
    }
    let key = post("/v1/tenants/demo/keys", serde_json::json!({ "label": "demo" }))?;
    key["key"].as_str().map(str::to_owned).ok_or_else(|| anyhow::anyhow!("the admin API returned no key: {key}"))
}

fn print_summary(
    dir: &Path,
    url: &str,
    admin_url: &str,
    demo_key: &str,
    prometheus_url: Option<&str>,
    components: usize,
) {
    println!("lab cluster up: {components} processes (see {})", dir.join(lab::CLUSTER_FILE).display());
    println!("  public API (HAProxy): {url}");
    println!("  admin API:            {admin_url}   (admin token in cluster.json)");
    println!("  demo API key:         {demo_key}");
    if let Some(prometheus_url) = prometheus_url {
        println!("  Prometheus:           {prometheus_url}   (alerts: {prometheus_url}/alerts)");
    }
    println!("try it:");
    println!("  curl -sS -H 'Authorization: Bearer {demo_key}' --data-binary @photo.jpg '{url}/v1/resize?width=300' -o thumb.jpg");
    println!("stop it:  resizer lab down --dir {}", dir.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The authorization block `deploy/nats/` must carry: the lab's users and permissions, with
    /// each password read from nats-server's environment.
    fn deploy_authorization() -> String {
        let variable = |user: &str| format!("RESIZER_NATS_{}_PASSWORD", user.replace('-', "_").to_uppercase());
        let accounts = nats_accounts(&queue::QueueConfig::default(), |user| Ok(variable(user))).expect("accounts");
        let operator = lab::NatsAuth { user: "resizer".into(), password: "RESIZER_NATS_PASSWORD".into() };
        lab::render_authorization(&operator, &accounts, lab::Passwords::FromEnvironment)
    }

    #[test]
    fn the_labs_prometheus_loads_the_deploy_rules_with_shorter_waits_that_promtool_accepts() {
        let opts = prometheus_options().expect("options");
        let alerts = &opts.rule_files.iter().find(|r| r.name == "alerts.yml").expect("alerts.yml").text;
        assert!(PROMETHEUS_ALERTS
            .contains("alert: ResizerNodeNotReady\n        expr: resizer_ready == 0\n        for: 2m\n"));
        assert!(
            alerts.contains("alert: ResizerNodeNotReady\n        expr: resizer_ready == 0\n        for: 8s\n"),
            "{alerts}"
        );
        assert_eq!(alerts.lines().count(), PROMETHEUS_ALERTS.lines().count());
        let Some(promtool) = lab::find_program("promtool") else { return };
        let dir = std::env::temp_dir().join(format!("resizer-lab-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let paths: Vec<PathBuf> = opts
            .rule_files
            .iter()
            .map(|r| {
                let path = dir.join(&r.name);
                std::fs::write(&path, &r.text).expect("write");
                path
            })
            .collect();
        let out =
            std::process::Command::new(promtool).arg("check").arg("rules").args(&paths).output().expect("promtool");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_deploy_nats_configs_give_each_role_the_permissions_its_code_uses() {
        let block = deploy_authorization();
        for n in 1..=3 {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../deploy/nats/nats-{n}.conf"));
            let text = std::fs::read_to_string(&path).expect("deploy/nats config");
            assert!(
                text.contains(&block),
                "deploy/nats/nats-{n}.conf: its authorization block is not the one the code needs:\n{block}"
            );
        }
    }
}
