//! `lab up` in steps: [`up_infrastructure`] (NATS), then [`Infrastructure::start_process`] for
//! each api node and worker, [`Infrastructure::add_haproxy`] over the api nodes, and
//! [`Infrastructure::finish`] to write the complete cluster.json and leave everything running.
//! An `Infrastructure` dropped before `finish` (an error, a panicking test) stops all it started.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binaries::{self, HAPROXY, NATS_SERVER};
use crate::cluster::ClusterFile;
use crate::error::{LabError, Result};
use crate::haproxy::{Backend, Haproxy, HaproxyOptions, HaproxyTls};
use crate::nats::{NatsCluster, NatsOptions, NatsTls, NATS_ROLE};
use crate::netns::{Host, LabNetwork, NetworkRecord, NETWORK_FIELD};
use crate::pki::LabCa;
use crate::postgres::{Postgres, PostgresAccess, PostgresOptions};
use crate::process::{self, Component, ProcessGuard, ProcessSpec, Signal};
use crate::prometheus::{PrometheusOptions, PROMETHEUS_URL_FIELD};

/// Options of every piece `lab up` starts.
#[derive(Debug, Clone)]
pub struct InfraOptions {
    pub nats: NatsOptions,
    pub haproxy: HaproxyOptions,
    /// Every process dies with the thread that started it (tests): overrides the sub-options
    /// and each [`ProcessSpec`].
    pub die_with_parent: bool,
    /// A private CA in `DIR/tls` (cluster.json's `tls_ca`) and TLS on every link it starts:
    /// NATS clients and routes, PostgreSQL. On by default.
    pub tls: bool,
    /// Every node in its own network namespace on a bridge of the lab's ([`crate::LabNetwork`]),
    /// so that its links can be cut or slowed; off: everything on 127.0.0.1. Needs root.
    pub netns: bool,
}

impl Default for InfraOptions {
    fn default() -> Self {
        InfraOptions {
            nats: NatsOptions::default(),
            haproxy: HaproxyOptions::default(),
            die_with_parent: false,
            tls: true,
            netns: false,
        }
    }
}

impl InfraOptions {
    /// Defaults, with every process tied to the test's thread ([`InfraOptions::die_with_parent`]).
    pub fn for_tests() -> Self {
        InfraOptions { die_with_parent: true, ..Default::default() }
    }
}

/// A lab cluster being assembled, and after [`finish`](Infrastructure::finish) the record of it.
#[derive(Debug)]
pub struct Infrastructure {
    dir: PathBuf,
    opts: InfraOptions,
    file: ClusterFile,
    // Fields drop in this order: the load balancer, then api nodes and workers, then PostgreSQL,
    // then NATS.
    haproxy: Option<Haproxy>,
    processes: ProcessGuard,
    postgres: Option<Postgres>,
    nats: NatsCluster,
    ca: Option<LabCa>,
    /// Removed last, once nothing runs in its namespaces.
    network: Option<LabNetwork>,
}

/// Where the lab's CA and certificates are, under DIR.
pub const TLS_DIR: &str = "tls";

/// Start the shared infrastructure in DIR (created if needed): check that nats-server and
/// haproxy are installed, refuse a DIR whose cluster.json still has live processes, start the
/// NATS JetStream cluster and wait for its meta leader, and write a first (incomplete)
/// cluster.json so that `down` can clean up even if the caller dies halfway.
pub fn up_infrastructure(dir: &Path, opts: &InfraOptions) -> Result<Infrastructure> {
    // Both programs up front: fail before starting anything, naming every missing package.
    match (&opts.nats.binary, &opts.haproxy.binary) {
        (None, None) => binaries::check_binaries().map(drop)?,
        (n, h) => {
            binaries::resolve(NATS_SERVER, n.as_deref())?;
            binaries::resolve(HAPROXY, h.as_deref())?;
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| LabError::io("create", dir, e))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| LabError::io("resolve", dir, e))?;
    match ClusterFile::read(&dir) {
        Ok(old) => {
            let live = old.live();
            if !live.is_empty() {
                return Err(LabError::AlreadyRunning { dir, live });
            }
        }
        Err(LabError::NoCluster { .. }) => {}
        Err(e) => return Err(e),
    }
    let mut opts = opts.clone();
    opts.nats.die_with_parent |= opts.die_with_parent;
    opts.haproxy.die_with_parent |= opts.die_with_parent;

    let mut network = if opts.netns { Some(LabNetwork::create(&dir)?) } else { None };
    let mut file = ClusterFile::new(&dir);
    if let Some(network) = &mut network {
        opts.nats.hosts =
            (0..opts.nats.nodes).map(|i| network.add_host(&format!("nats-{i}"))).collect::<Result<_>>()?;
        // Recorded before anything runs in it, so that `down` removes it whatever happens next.
        file.fields.insert(NETWORK_FIELD.into(), network_field(network)?);
        file.write()?;
    }
    let ca = if opts.tls { Some(LabCa::create(&dir.join(TLS_DIR), "resizer lab CA")?) } else { None };
    if let Some(ca) = &ca {
        let addr = |i: usize| opts.nats.hosts.get(i).map_or(crate::net::LOOPBACK, |h| h.addr);
        let node_certs =
            (0..opts.nats.nodes).map(|i| ca.issue_for(&format!("nats-{i}"), addr(i))).collect::<Result<Vec<_>>>()?;
        opts.nats.tls = Some(NatsTls { ca_file: ca.ca_file().to_path_buf(), node_certs });
    }
    let nats = NatsCluster::start(&dir, &opts.nats)?;
    for c in nats.components() {
        file.upsert(c);
    }
    file.fields.insert("nats_urls".into(), nats.client_urls().into());
    if let Some(ca) = &ca {
        file.fields.insert("tls_ca".into(), ca.ca_file().display().to_string().into());
    }
    let infra = Infrastructure {
        dir,
        opts,
        file,
        haproxy: None,
        processes: ProcessGuard::new(),
        postgres: None,
        nats,
        ca,
        network,
    };
    infra.file.write()?;
    Ok(infra)
}

fn network_field(network: &LabNetwork) -> Result<serde_json::Value> {
    serde_json::to_value(network.record()).map_err(|e| LabError::Invalid(format!("the network's record: {e}")))
}

/// HAProxy's certificate: issued by the lab's CA for `name`, chain and key in one file (its `crt`).
fn haproxy_tls(ca: &LabCa, name: &str) -> Result<HaproxyTls> {
    let files = ca.issue(name)?;
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| LabError::io("read", p, e));
    let bundle = files.cert.with_extension("bundle.pem");
    let text = read(&files.cert)? + &read(&files.key)?;
    let _ = std::fs::remove_file(&bundle);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&bundle)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| LabError::io("write", &bundle, e))?;
    Ok(HaproxyTls { bundle, ca_file: ca.ca_file().to_path_buf() })
}

impl Infrastructure {
    /// DIR, absolute.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn nats(&self) -> &NatsCluster {
        &self.nats
    }

    /// The NATS client URLs (also in cluster.json's `nats_urls` field).
    pub fn nats_urls(&self) -> Vec<String> {
        self.nats.client_urls()
    }

    /// The lab's CA, when it runs TLS ([`InfraOptions::tls`]): issue a node's certificate with it.
    pub fn ca(&self) -> Option<&LabCa> {
        self.ca.as_ref()
    }

    /// The CA certificate every client of the lab trusts (also cluster.json's `tls_ca`).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_ref().map(LabCa::ca_file)
    }

    pub fn haproxy(&self) -> Option<&Haproxy> {
        self.haproxy.as_ref()
    }

    /// Where component `name` is to run: its own namespace and address on the lab's network
    /// ([`InfraOptions::netns`]), or 127.0.0.1 here. Pass it to [`ProcessSpec::netns`] and listen
    /// on its address.
    pub fn add_host(&mut self, name: &str) -> Result<Host> {
        match &mut self.network {
            Some(network) => {
                let host = network.add_host(name)?;
                self.file.fields.insert(NETWORK_FIELD.into(), network_field(network)?);
                self.file.write()?;
                Ok(host)
            }
            None => Ok(Host::loopback(name)),
        }
    }

    /// A volume of `size_bytes` at `path` for component `name`, which `lab fill-spool` fills: a
    /// tmpfs on the lab's own network ([`InfraOptions::netns`], run as root); without it, nothing
    /// (`path` stays on DIR's disk). Returns whether one was mounted.
    pub fn add_volume(&mut self, name: &str, path: &Path, size_bytes: u64) -> Result<bool> {
        match &mut self.network {
            Some(network) => {
                network.add_volume(name, path, size_bytes)?;
                self.file.fields.insert(NETWORK_FIELD.into(), network_field(network)?);
                self.file.write()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The lab's own network, when it has one.
    pub fn network(&self) -> Option<&NetworkRecord> {
        self.network.as_ref().map(LabNetwork::record)
    }

    /// A certificate of the lab's CA for `host` (its name and address).
    pub fn issue_cert(&self, host: &Host) -> Result<Option<crate::pki::CertFiles>> {
        self.ca.as_ref().map(|ca| ca.issue_for(&host.name, host.addr)).transpose()
    }

    /// Start a process of ours (an api node, a worker) with its log in DIR/logs, record it in
    /// cluster.json, and stop it with the rest. Readiness is the caller's: e.g.
    /// [`crate::wait_for_http_ok`] on its `/readyz`.
    pub fn start_process(&mut self, mut spec: ProcessSpec) -> Result<Component> {
        if self.file.component(&spec.name).is_some() {
            return Err(LabError::Invalid(format!("a component named {} already exists", spec.name)));
        }
        spec.die_with_parent |= self.opts.die_with_parent;
        let component = process::start_process(&self.dir, &spec)?;
        self.processes.push(component.clone());
        self.file.upsert(component.clone());
        self.file.write()?;
        Ok(component)
    }

    /// Start HAProxy over `backends` (usually the api nodes' public addresses), record it, and
    /// wait until every backend passed its health check. A second call reloads it with the new
    /// backends instead.
    pub fn add_haproxy(&mut self, backends: &[Backend]) -> Result<&Haproxy> {
        let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        let haproxy = match self.haproxy.take() {
            Some(mut h) => {
                // Put it back before `?` so that it is stopped with the rest on failure.
                let reloaded = h.reload(backends);
                self.haproxy = Some(h);
                reloaded?;
                self.haproxy.as_mut()
            }
            None => {
                if let Some(ca) = &self.ca {
                    self.opts.haproxy.tls = Some(haproxy_tls(ca, &self.opts.haproxy.name)?);
                }
                let h = Haproxy::start(&self.dir, backends, &self.opts.haproxy)?;
                self.haproxy = Some(h);
                self.haproxy.as_mut()
            }
        }
        .ok_or_else(|| LabError::Invalid("HAProxy is not running".into()))?;
        self.file.upsert(haproxy.component().clone());
        self.file.fields.insert("url".into(), haproxy.url().into());
        self.file.write()?;
        if let Some(port) = haproxy.redirect_port {
            self.file.fields.insert("http_url".into(), format!("http://{}:{port}", crate::net::LOOPBACK).into());
        }
        if haproxy.stats_port.is_some() {
            haproxy.wait_servers(&names, Duration::from_secs(30))?;
        }
        Ok(haproxy)
    }

    /// Start Prometheus ([`crate::prometheus`]) scraping every component recorded so far whose
    /// role `opts.jobs` names (https targets checked against the lab's CA), with `opts.rule_files`;
    /// record it (component `prometheus`, cluster.json's `prometheus_url`) and wait until it is
    /// ready. Call it last, once every node to scrape is recorded. Returns its URL.
    pub fn add_prometheus(&mut self, opts: &PrometheusOptions) -> Result<String> {
        let mut opts = opts.clone();
        opts.die_with_parent |= self.opts.die_with_parent;
        let start = crate::prometheus::prepare(&self.dir, &self.file.components, self.ca_file(), &opts)?;
        let component = self.start_process(start.spec)?;
        self.file.fields.insert(PROMETHEUS_URL_FIELD.into(), start.url.clone().into());
        self.file.write()?;
        let ready = format!("{}/-/ready", start.url);
        crate::net::poll_until("Prometheus to be ready", Duration::from_secs(30), Duration::from_millis(100), || {
            if component.state() == process::ProcessState::Gone {
                return Ok(false);
            }
            match crate::net::http_get(&ready, Duration::from_millis(500)) {
                Ok(answer) if answer.status == 200 => Ok(true),
                Ok(answer) => Err(format!("status {}: {}", answer.status, answer.body.trim())),
                Err(e) => Err(e.to_string()),
            }
        })
        .map_err(|e| match e {
            LabError::Timeout { what, waited, detail } => {
                LabError::Timeout { what, waited, detail: format!("{detail}\n{}", component.log_tail(15)) }
            }
            e => e,
        })
        .and_then(|up| match up {
            true => Ok(start.url),
            false => Err(LabError::Exited {
                name: component.name.clone(),
                log: component.log.clone(),
                tail: component.log_tail(15),
            }),
        })
    }

    pub fn postgres(&self) -> Option<&Postgres> {
        self.postgres.as_ref()
    }

    /// Start a private PostgreSQL server ([`Postgres`], default options; TLS only, with a
    /// certificate of the lab's CA, when the lab runs TLS) with its data in `DIR/postgres`, record it in cluster.json (component `postgres`, field `postgres_url`) and
    /// wait until it accepts connections. A second call returns the running one.
    pub fn add_postgres(&mut self) -> Result<&Postgres> {
        self.add_postgres_with(PostgresAccess::default())
    }

    /// [`add_postgres`](Self::add_postgres) with logins other than the trusted superuser (see
    /// [`PostgresAccess`]): set when the cluster is made, so only for a fresh DIR.
    pub fn add_postgres_with(&mut self, access: PostgresAccess) -> Result<&Postgres> {
        if self.postgres.is_none() {
            let mut opts =
                PostgresOptions { die_with_parent: self.opts.die_with_parent, access, ..PostgresOptions::default() };
            if self.file.component(&opts.name).is_some() {
                return Err(LabError::Invalid(format!("a component named {} already exists", opts.name)));
            }
            let host = self.add_host(&opts.name.clone())?;
            opts.tls = self.issue_cert(&host)?;
            opts.clients = self.network().map(NetworkRecord::subnet);
            opts.host = Some(host);
            let postgres = Postgres::start(&self.dir, &opts)?;
            self.file.upsert(postgres.component().clone());
            self.file.fields.insert("postgres_url".into(), postgres.url().into());
            // Held before writing, so that a failed write still stops it with the rest.
            self.postgres = Some(postgres);
            self.file.write()?;
        }
        self.postgres.as_ref().ok_or_else(|| LabError::Invalid("PostgreSQL is not running".into()))
    }

    /// Every component started so far, in start order.
    pub fn components(&self) -> &[Component] {
        &self.file.components
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.file.component(name)
    }

    /// Set a free-form field of cluster.json (admin URL and token, demo key...).
    pub fn set_field(&mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) {
        self.file.fields.insert(key.into(), value.into());
    }

    /// The cluster.json document as it stands.
    pub fn cluster_file(&self) -> &ClusterFile {
        &self.file
    }

    /// Send `signal` to component `name` (any role).
    pub fn signal(&self, name: &str, signal: Signal) -> Result<bool> {
        let c = self.file.component(name).ok_or_else(|| LabError::UnknownComponent(name.to_string()))?;
        process::send_signal(c, signal)
    }

    /// Restart component `name` identically (a NATS node keeps its config and store) and record
    /// its new pid. Readiness is the caller's to check (PostgreSQL's is waited for here).
    pub fn restart(&mut self, name: &str) -> Result<Component> {
        let c = self.file.component(name).cloned().ok_or_else(|| LabError::UnknownComponent(name.to_string()))?;
        let new = if c.role == NATS_ROLE {
            let i = self.nats.index_of(name).ok_or_else(|| LabError::UnknownComponent(name.to_string()))?;
            self.nats.restart(i)?
        } else if let Some(pg) = self.postgres.as_mut().filter(|p| p.component().name == name) {
            pg.restart()?.clone()
        } else if self.haproxy.as_ref().is_some_and(|h| h.component().name == name) {
            return Err(LabError::Invalid("restart HAProxy with add_haproxy (reload)".into()));
        } else {
            let new = process::respawn(&c, self.opts.die_with_parent)?;
            self.processes.push(new.clone());
            new
        };
        self.file.upsert(new.clone());
        self.file.write()?;
        Ok(new)
    }

    /// Write the complete cluster.json (with `fields` added) and leave every process running:
    /// from here `down(DIR)` stops them. Returns the document.
    pub fn finish(mut self, fields: serde_json::Map<String, serde_json::Value>) -> Result<ClusterFile> {
        self.file.fields.extend(fields);
        self.file.complete = true;
        self.file.write()?;
        self.detach();
        Ok(self.file.clone())
    }

    /// Leave every process running when this is dropped (without writing anything).
    pub fn detach(&mut self) {
        self.nats.detach();
        if let Some(h) = &mut self.haproxy {
            h.detach();
        }
        if let Some(p) = &mut self.postgres {
            p.detach();
        }
        if let Some(n) = &mut self.network {
            n.detach();
        }
        drop(std::mem::take(&mut self.processes).disarm());
    }
}
