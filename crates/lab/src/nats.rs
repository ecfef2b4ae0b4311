//! A NATS JetStream cluster of N `nats-server` processes on loopback, for the lab and fault tests.
//!
//! Written against nats-server 2.9 (Debian 12 ships 2.9.10) and its monitoring endpoints:
//! - `/healthz` answers 200 only once JetStream has contact with a meta leader and the node's
//!   streams and consumers are current (503 with "JetStream has not established contact with a
//!   meta leader" before). `/healthz?js-enabled-only=true` answers 200 as soon as JetStream is on,
//!   long before a leader exists: useless for readiness.
//! - `/jsz` → `meta_cluster.leader` (the field is absent until a leader is elected); on the leader,
//!   `meta_cluster.replicas` lists the other peers with `current` and `offline`.
//! - `/jsz?accounts=true&streams=true` → `account_details[].stream_detail[].cluster.leader`: the
//!   leader of each replicated stream, as seen by each node hosting a replica.
//! - `/jsz?leader-only=true` answers 400 on every node but the meta leader.
//! - `/routez` → the node's routes; `remote_id` is the peer's server id (2.9 has no peer name).
//!
//! After a leader dies, the survivors keep naming it in `/jsz` until one of them campaigns: the
//! Raft election timeout of nats-server is a random 4–9 s after the last heartbeat (constants in
//! `server/raft.go`, not configurable), so a new leader is seen 4–10 s after a `kill -9`. Hence
//! [`LEADER_ELECTION_BOUND`].

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::binaries::{self, NATS_SERVER};
use crate::error::{LabError, Result};
use crate::net::{self, LOOPBACK};
use crate::process::{self, Component, ProcessSpec, ProcessState, Signal};

/// How long a new leader (meta or stream) can take after the old one is killed with nats-server
/// 2.9's fixed Raft timings: up to 1 s since the last heartbeat + a 4–9 s election timeout + a
/// campaign of up to 0.8 s.
pub const LEADER_ELECTION_BOUND: Duration = Duration::from_millis(10_800);

/// The role recorded in each node's [`Component`].
pub const NATS_ROLE: &str = "nats";

/// Per-request timeout of the monitoring calls: a stopped node must not stall a check.
const MONITOR_TIMEOUT: Duration = Duration::from_millis(800);

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Number of nodes (3 for the lab: Raft survives the loss of one).
    pub nodes: usize,
    pub cluster_name: String,
    /// JetStream's memory and file storage limits per node, in bytes.
    pub max_memory_store: u64,
    pub max_file_store: u64,
    /// `nats-server` to run; found on PATH or in the system directories when `None`.
    pub binary: Option<PathBuf>,
    /// See [`ProcessSpec::die_with_parent`]: on in tests, off for `lab up`.
    pub die_with_parent: bool,
    /// How long [`NatsCluster::start`] waits for every node to be healthy with a meta leader.
    pub ready_timeout: Duration,
    /// `GOMAXPROCS` for each server: the nodes share one machine, so by default each of the 3
    /// gets its share of the cores (at least one) instead of all of them. None: Go's default, or the
    /// environment's `GOMAXPROCS` if it has one.
    pub gomaxprocs: Option<usize>,
    /// `GOGC` for each server: 400 by default (a collection when the heap has grown 4× since the
    /// last, instead of Go's 2×), unless the environment sets `GOGC`. None: Go's default. Each
    /// server's live heap is a few MiB here, and its collector's work is CPU the lab's other
    /// processes wait for (docs/benchmarks.md: 0.15 ms less per request).
    pub gogc: Option<u32>,
    /// The user with every permission: operators, tools and tests; None: no authentication.
    /// Without `accounts` it is the one user (`authorization` in each server's config); with
    /// them, a user of the first account. [`NatsCluster::client_urls`] carry its credentials.
    pub auth: Option<NatsAuth>,
    /// NATS accounts (with `auth` set), each with its users, JetStream, and the subjects it
    /// shares with the others; the users' URLs come from [`NatsCluster::client_urls_as`].
    pub accounts: Vec<NatsAccount>,
    /// TLS for clients and routes: clients must speak TLS (the servers present node `i`'s
    /// certificate), routes verify each other's certificates against the CA both ways.
    pub tls: Option<NatsTls>,
    /// The login a server must present on the cluster port to join as a route (`cluster {
    /// authorization }`, and in the route URLs): a server without it is refused.
    pub route_auth: Option<NatsAuth>,
    /// Where each node runs (`lab up --netns`: its own namespace and address), one per node;
    /// empty: all on 127.0.0.1 here.
    pub hosts: Vec<crate::netns::Host>,
}

/// The certificates of a TLS cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTls {
    /// The CA that signed the nodes' certificates (routes trust it; clients should too).
    pub ca_file: PathBuf,
    /// One per node, in node order.
    pub node_certs: Vec<crate::pki::CertFiles>,
}

/// A NATS account: its own subjects and JetStream, and what it exports to or imports from others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsAccount {
    pub name: String,
    pub users: Vec<NatsUser>,
    pub exports: Vec<NatsLink>,
    /// Each from the account it names.
    pub imports: Vec<NatsLink>,
}

/// A subject shared between accounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsLink {
    /// A stream (messages one way) rather than a service (requests and their answers).
    pub stream: bool,
    pub subject: String,
    /// For an import: the exporting account.
    pub account: Option<String>,
    /// For an import: the name in the importing account, when not the same.
    pub to: Option<String>,
}

/// A user, limited to allow-lists of subjects (NATS wildcards) when it has `permissions`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsUser {
    pub login: NatsAuth,
    pub permissions: Option<NatsPermissions>,
}

/// Allow-lists; everything else is denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsPermissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// A NATS user and password.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsAuth {
    pub user: String,
    pub password: String,
}

// By hand: the password stays out of `{:?}`.
impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NatsAuth {{ user: {:?}, .. }}", self.user)
    }
}

/// The lab's `GOGC` for its servers, unless the environment sets one.
pub fn lab_gogc() -> Option<u32> {
    if std::env::var_os("GOGC").is_some() {
        return None;
    }
    Some(400)
}

/// Each of `nodes` servers' share of this machine's cores, unless the environment says otherwise.
/// On 2 cores, 1 per server made the lab ~5 % faster than Go's default of all cores each
/// (docs/cluster.md, `LAB_ENV` runs of bench/cluster.sh).
pub fn share_of_cores(nodes: usize) -> Option<usize> {
    if std::env::var_os("GOMAXPROCS").is_some() {
        return None;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    Some((cores / nodes.max(1)).max(1))
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            nodes: 3,
            cluster_name: "resizer-lab".into(),
            max_memory_store: 256 << 20,
            max_file_store: 2 << 30,
            binary: None,
            die_with_parent: false,
            ready_timeout: Duration::from_secs(30),
            gomaxprocs: share_of_cores(3),
            gogc: lab_gogc(),
            auth: None,
            accounts: Vec::new(),
            tls: None,
            route_auth: None,
            hosts: Vec::new(),
        }
    }
}

/// One node: its ports, files and process.
#[derive(Debug, Clone)]
pub struct NatsNode {
    pub index: usize,
    /// `server_name` in the config; also the component's name (`nats-0`...).
    pub server_name: String,
    /// The address it listens on: 127.0.0.1, or its own on the lab's network.
    pub addr: Ipv4Addr,
    pub client_port: u16,
    pub cluster_port: u16,
    pub monitor_port: u16,
    /// `DIR/nats-<i>`: config file and JetStream store.
    pub dir: PathBuf,
    pub config: PathBuf,
    pub component: Component,
}

impl NatsNode {
    /// `nats://<addr>:<client port>`: what clients connect to.
    pub fn client_url(&self) -> String {
        format!("nats://{}:{}", self.addr, self.client_port)
    }
    /// `http://<addr>:<monitor port>`.
    pub fn monitor_url(&self) -> String {
        format!("http://{}:{}", self.addr, self.monitor_port)
    }
    pub fn monitor_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.monitor_port))
    }
    pub fn state(&self) -> ProcessState {
        self.component.state()
    }
    /// `GET /jsz` (with `query`, e.g. `accounts=true&streams=true`).
    pub fn jsz(&self, query: &str) -> Result<Jsz> {
        let url = if query.is_empty() {
            format!("{}/jsz", self.monitor_url())
        } else {
            format!("{}/jsz?{query}", self.monitor_url())
        };
        net::http_get_json(&url, MONITOR_TIMEOUT)
    }
    /// The names clients gave their connections to this node (`GET /connz`): which node an
    /// api node or worker talks to.
    pub fn client_names(&self) -> Result<Vec<String>> {
        let connz: Connz = net::http_get_json(&format!("{}/connz?limit=4096", self.monitor_url()), MONITOR_TIMEOUT)?;
        Ok(connz.connections.into_iter().filter_map(|c| c.name).collect())
    }
    /// `GET /routez`.
    pub fn routez(&self) -> Result<Routez> {
        net::http_get_json(&format!("{}/routez", self.monitor_url()), MONITOR_TIMEOUT)
    }
    /// `GET /healthz`: Ok(()) on 200, Err(the answer or the failure) otherwise.
    pub fn healthz(&self) -> std::result::Result<(), String> {
        match net::http_get(&format!("{}/healthz", self.monitor_url()), MONITOR_TIMEOUT) {
            Ok(a) if a.status == 200 => Ok(()),
            Ok(a) => Err(format!("healthz {}: {}", a.status, a.body.trim())),
            Err(e) => Err(e.to_string()),
        }
    }
    /// The meta leader this node believes in (`None`: no leader known to it).
    pub fn meta_leader_seen(&self) -> Result<Option<String>> {
        Ok(self.jsz("")?.meta_cluster.and_then(|m| m.leader))
    }
}

/// The part of `/connz` the lab reads.
#[derive(Debug, Clone, Deserialize)]
struct Connz {
    #[serde(default)]
    connections: Vec<ConnzConnection>,
}

#[derive(Debug, Clone, Deserialize)]
struct ConnzConnection {
    name: Option<String>,
}

/// The part of `/jsz` the lab reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Jsz {
    #[serde(default)]
    pub server_id: String,
    pub meta_cluster: Option<MetaCluster>,
    #[serde(default)]
    pub account_details: Vec<AccountDetail>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MetaCluster {
    pub name: Option<String>,
    /// Absent until a leader is elected.
    pub leader: Option<String>,
    #[serde(default)]
    pub cluster_size: usize,
    /// Only on the leader: the other peers.
    #[serde(default)]
    pub replicas: Vec<PeerInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    #[serde(default)]
    pub current: bool,
    #[serde(default)]
    pub offline: bool,
    /// Nanoseconds since the peer was last heard from.
    #[serde(default)]
    pub active: i64,
    #[serde(default)]
    pub lag: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AccountDetail {
    pub name: String,
    #[serde(default)]
    pub stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamDetail {
    pub name: String,
    pub cluster: Option<StreamCluster>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamCluster {
    pub leader: Option<String>,
    #[serde(default)]
    pub replicas: Vec<PeerInfo>,
}

/// The part of `/routez` the lab reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Routez {
    #[serde(default)]
    pub num_routes: usize,
    #[serde(default)]
    pub routes: Vec<RouteInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteInfo {
    #[serde(default)]
    pub remote_id: String,
}

impl Routez {
    /// Distinct peers this node has a route to (2.9 may briefly hold two routes to one peer).
    pub fn peers(&self) -> usize {
        let mut ids: Vec<&str> = self.routes.iter().map(|r| r.remote_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

/// A running cluster. Dropping it stops its processes unless [`detach`](NatsCluster::detach)ed
/// (or it was rebuilt from `cluster.json` by [`from_components`](NatsCluster::from_components)).
#[derive(Debug)]
pub struct NatsCluster {
    pub cluster_name: String,
    nodes: Vec<NatsNode>,
    /// None in a handle rebuilt from cluster.json (whose `nats_urls` field has the credentials).
    auth: Option<NatsAuth>,
    /// Empty in a handle rebuilt from cluster.json.
    accounts: Vec<NatsAccount>,
    die_with_parent: bool,
    detached: bool,
}

impl NatsCluster {
    /// Write the configs (`DIR/nats-<i>/nats.conf`), start every node, and wait until each is
    /// healthy and all agree on a meta leader. On failure, everything started is stopped.
    pub fn start(dir: &Path, opts: &NatsOptions) -> Result<NatsCluster> {
        let cluster = NatsCluster::launch(dir, opts)?;
        cluster.wait_healthy(opts.ready_timeout)?;
        Ok(cluster)
    }

    /// Like [`start`](NatsCluster::start) without waiting: the processes are started and their
    /// monitoring ports accept connections.
    pub fn launch(dir: &Path, opts: &NatsOptions) -> Result<NatsCluster> {
        if opts.nodes == 0 {
            return Err(LabError::Invalid("a NATS cluster needs at least one node".into()));
        }
        if opts.auth.is_none() && !opts.accounts.is_empty() {
            return Err(LabError::Invalid("NATS accounts need `auth` (the operator) as well".into()));
        }
        if opts.tls.as_ref().is_some_and(|t| t.node_certs.len() != opts.nodes) {
            return Err(LabError::Invalid("NATS TLS needs one certificate per node".into()));
        }
        if !opts.hosts.is_empty() && opts.hosts.len() != opts.nodes {
            return Err(LabError::Invalid("NATS nodes need one host each, or none".into()));
        }
        let host = |i: usize| opts.hosts.get(i).cloned().unwrap_or_else(|| crate::netns::Host::loopback(""));
        let binary = binaries::resolve(NATS_SERVER, opts.binary.as_deref())?;
        let ports = net::free_ports(3 * opts.nodes)?;
        let n = opts.nodes;
        let (client, rest) = ports.split_at(n);
        let (cluster_ports, monitor) = rest.split_at(n);
        let mut cluster = NatsCluster {
            cluster_name: opts.cluster_name.clone(),
            nodes: Vec::new(),
            auth: opts.auth.clone(),
            accounts: opts.accounts.clone(),
            die_with_parent: opts.die_with_parent,
            detached: false,
        };
        for i in 0..n {
            let server_name = format!("nats-{i}");
            let node_dir = dir.join(&server_name);
            std::fs::create_dir_all(&node_dir).map_err(|e| LabError::io("create", &node_dir, e))?;
            let addr = host(i).addr;
            let routes: Vec<SocketAddr> =
                (0..n).filter(|&j| j != i).map(|j| SocketAddr::from((host(j).addr, cluster_ports[j]))).collect();
            let config = node_dir.join("nats.conf");
            let tls = opts.tls.as_ref().map(|t| (t.ca_file.as_path(), &t.node_certs[i]));
            let text = render_config(
                &server_name,
                &node_dir,
                addr,
                client[i],
                cluster_ports[i],
                monitor[i],
                &routes,
                tls,
                opts,
            );
            std::fs::write(&config, text).map_err(|e| LabError::io("write", &config, e))?;
            // It may hold the clients' password.
            std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(|e| LabError::io("chmod", &config, e))?;
            let monitor_url = format!("http://{addr}:{}", monitor[i]);
            let mut spec = ProcessSpec::new(NATS_ROLE, &server_name, &binary)
                .args(["-c".to_string(), config.display().to_string()])
                .cwd(&node_dir)
                .netns(host(i).netns)
                .url("client", format!("nats://{addr}:{}", client[i]))
                .url("cluster", format!("nats-route://{addr}:{}", cluster_ports[i]))
                .url("monitor", &monitor_url)
                .health(format!("{monitor_url}/healthz"))
                .extra("index", i)
                .extra("addr", addr.to_string())
                .extra("server_name", server_name.as_str())
                .extra("client_port", client[i])
                .extra("cluster_port", cluster_ports[i])
                .extra("monitor_port", monitor[i])
                .extra("cluster_name", opts.cluster_name.as_str())
                .extra("config", config.display().to_string())
                .extra("tls", opts.tls.is_some())
                .die_with_parent(opts.die_with_parent);
            if let Some(procs) = opts.gomaxprocs {
                spec = spec.env("GOMAXPROCS", procs.to_string());
            }
            if let Some(gogc) = opts.gogc {
                spec = spec.env("GOGC", gogc.to_string());
            }
            // On `?`, `cluster` is dropped and stops the nodes started so far.
            let component = process::start_process(dir, &spec)?;
            cluster.nodes.push(NatsNode {
                index: i,
                server_name,
                addr,
                client_port: client[i],
                cluster_port: cluster_ports[i],
                monitor_port: monitor[i],
                dir: node_dir,
                config,
                component,
            });
        }
        for i in 0..n {
            cluster.wait_monitor_port(i, Duration::from_secs(10))?;
        }
        Ok(cluster)
    }

    /// Rebuild the handle from the `nats` components of a `cluster.json`. The result is detached:
    /// dropping it stops nothing.
    pub fn from_components(components: &[Component]) -> Result<NatsCluster> {
        let mut nodes = Vec::new();
        let mut cluster_name = String::new();
        for c in components.iter().filter(|c| c.role == NATS_ROLE) {
            let num = |key: &str| -> Result<u64> {
                c.extra
                    .get(key)
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| LabError::Invalid(format!("component {}: no numeric `{key}` in extra", c.name)))
            };
            let port = |key: &str| -> Result<u16> {
                u16::try_from(num(key)?)
                    .map_err(|_| LabError::Invalid(format!("component {}: `{key}` is no port", c.name)))
            };
            let config = c
                .extra
                .get("config")
                .and_then(serde_json::Value::as_str)
                .map(PathBuf::from)
                .ok_or_else(|| LabError::Invalid(format!("component {}: no `config` in extra", c.name)))?;
            if let Some(name) = c.extra.get("cluster_name").and_then(serde_json::Value::as_str) {
                cluster_name = name.to_string();
            }
            nodes.push(NatsNode {
                index: usize::try_from(num("index")?).map_err(|_| LabError::Invalid("node index".into()))?,
                server_name: c
                    .extra
                    .get("server_name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or(&c.name)
                    .to_string(),
                addr: c
                    .extra
                    .get("addr")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(LOOPBACK),
                client_port: port("client_port")?,
                cluster_port: port("cluster_port")?,
                monitor_port: port("monitor_port")?,
                dir: config.parent().map(Path::to_path_buf).unwrap_or_default(),
                config,
                component: c.clone(),
            });
        }
        if nodes.is_empty() {
            return Err(LabError::UnknownComponent("any component of role nats".into()));
        }
        nodes.sort_by_key(|n| n.index);
        Ok(NatsCluster {
            cluster_name,
            nodes,
            auth: None,
            accounts: Vec::new(),
            die_with_parent: false,
            detached: true,
        })
    }

    pub fn nodes(&self) -> &[NatsNode] {
        &self.nodes
    }

    pub fn node(&self, index: usize) -> Result<&NatsNode> {
        self.nodes.get(index).ok_or_else(|| LabError::UnknownComponent(format!("nats node {index}")))
    }

    /// The index of the node whose `server_name` is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.server_name == name)
    }

    /// Every node's client URL, for a client's server list, with the credentials if the cluster
    /// has them (`nats://user:password@127.0.0.1:port`).
    pub fn client_urls(&self) -> Vec<String> {
        self.urls_with(self.auth.as_ref())
    }

    /// Every node's client URL with the login of `user`, a user of one of [`NatsOptions::accounts`].
    pub fn client_urls_as(&self, user: &str) -> Result<Vec<String>> {
        let found = self.accounts.iter().flat_map(|a| &a.users).find(|u| u.login.user == user);
        let login = found.ok_or_else(|| LabError::Invalid(format!("no NATS user {user} in this cluster")))?;
        Ok(self.urls_with(Some(&login.login)))
    }

    fn urls_with(&self, auth: Option<&NatsAuth>) -> Vec<String> {
        let login = match auth {
            Some(auth) => {
                let encode = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
                format!("{}:{}@", encode(&auth.user), encode(&auth.password))
            }
            None => String::new(),
        };
        self.nodes.iter().map(|node| format!("nats://{login}{}:{}", node.addr, node.client_port)).collect()
    }

    /// The nodes' components (current pids), for cluster.json.
    pub fn components(&self) -> Vec<Component> {
        self.nodes.iter().map(|n| n.component.clone()).collect()
    }

    /// Leave the processes running when this handle is dropped.
    pub fn detach(&mut self) {
        self.detached = true;
    }

    /// The meta leader, if the nodes that answer (a majority of the cluster) all name the same
    /// one and it is a running node of ours. `None` while there is no leader, while survivors
    /// still name a dead one, or while they disagree.
    pub fn meta_leader(&self) -> Result<Option<String>> {
        let single = (self.nodes.len() == 1).then(|| self.nodes[0].server_name.clone());
        // A single node runs JetStream standalone: no meta cluster, it is its own leader.
        let opinions: Vec<Option<String>> = self
            .live_nodes()
            .filter_map(|n| n.jsz("").ok())
            .map(|j| j.meta_cluster.map_or_else(|| single.clone(), |m| m.leader))
            .collect();
        if opinions.len() < self.nodes.len() / 2 + 1 {
            return Ok(None);
        }
        Ok(self.agreed(opinions))
    }

    /// The leader of stream `stream` (in the default account `$G` or any account), agreed by the
    /// running nodes that host a replica of it, and itself running. `None` as for
    /// [`meta_leader`](NatsCluster::meta_leader), or if no node hosts such a stream.
    pub fn stream_leader(&self, stream: &str) -> Result<Option<String>> {
        let opinions: Vec<Option<String>> = self
            .live_nodes()
            .filter_map(|n| n.jsz("accounts=true&streams=true").ok())
            .filter_map(|j| {
                j.account_details
                    .into_iter()
                    .flat_map(|a| a.stream_detail)
                    .find(|s| s.name == stream)
                    .map(|s| s.cluster.and_then(|c| c.leader))
            })
            .collect();
        Ok(self.agreed(opinions))
    }

    fn agreed(&self, opinions: Vec<Option<String>>) -> Option<String> {
        let first = opinions.first()?.clone()?;
        if opinions.iter().any(|o| o.as_deref() != Some(first.as_str())) {
            return None;
        }
        let node = self.nodes.iter().find(|n| n.server_name == first)?;
        (node.state() == ProcessState::Running).then_some(first)
    }

    fn live_nodes(&self) -> impl Iterator<Item = &NatsNode> {
        self.nodes.iter().filter(|n| n.state() == ProcessState::Running)
    }

    /// Wait until [`meta_leader`](NatsCluster::meta_leader) names a node other than `old`;
    /// returns it and the time waited.
    pub fn wait_new_meta_leader(&self, old: &str, timeout: Duration) -> Result<(String, Duration)> {
        let start = Instant::now();
        let leader =
            net::poll_until(&format!("a meta leader other than {old}"), timeout, Duration::from_millis(50), || {
                match self.meta_leader() {
                    Ok(Some(l)) if l != old => Ok(l),
                    Ok(other) => Err(format!("agreed leader: {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            })?;
        Ok((leader, start.elapsed()))
    }

    /// Wait until [`stream_leader`](NatsCluster::stream_leader) names a node other than `old`.
    pub fn wait_new_stream_leader(&self, stream: &str, old: &str, timeout: Duration) -> Result<(String, Duration)> {
        let start = Instant::now();
        let leader = net::poll_until(
            &format!("a leader of stream {stream} other than {old}"),
            timeout,
            Duration::from_millis(50),
            || match self.stream_leader(stream) {
                Ok(Some(l)) if l != old => Ok(l),
                Ok(other) => Err(format!("agreed leader: {other:?}")),
                Err(e) => Err(e.to_string()),
            },
        )?;
        Ok((leader, start.elapsed()))
    }

    /// Wait until the whole cluster is healthy: every node running and answering `/healthz` 200,
    /// routes to every other node, one agreed meta leader which sees every peer current. Returns
    /// the leader. Use after start and after a restart (the node has rejoined). Fails at once,
    /// with its log, if a node's process is gone.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<String> {
        self.wait_until_whole(timeout, true)
    }

    /// As [`wait_healthy`](Self::wait_healthy) without `/healthz`: routes to every other node and
    /// one agreed meta leader which sees every peer current. After a partition is healed
    /// `/healthz` can stay 503 for minutes over an ephemeral consumer (a client's KV watch) on
    /// the healed node that is not current; the cluster itself is whole again.
    pub fn wait_whole(&self, timeout: Duration) -> Result<String> {
        self.wait_until_whole(timeout, false)
    }

    fn wait_until_whole(&self, timeout: Duration, healthz: bool) -> Result<String> {
        let start = Instant::now();
        loop {
            if let Some(dead) = self.nodes.iter().find(|n| n.state() == ProcessState::Gone) {
                return Err(exited(&dead.component));
            }
            let why = match self.problem(healthz) {
                Ok(leader) => return Ok(leader),
                Err(why) => why,
            };
            if start.elapsed() >= timeout {
                let tails: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| format!("--- {}:\n{}", n.component.log.display(), n.component.log_tail(5)))
                    .collect();
                return Err(LabError::Timeout {
                    what: "the NATS cluster to be healthy".into(),
                    waited: start.elapsed(),
                    detail: format!("{why}\n{}", tails.join("\n")),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `Ok(leader)` if the cluster is healthy (see [`wait_healthy`](NatsCluster::wait_healthy)),
    /// else what is not.
    pub fn health_problem(&self) -> std::result::Result<String, String> {
        self.problem(true)
    }

    fn problem(&self, healthz: bool) -> std::result::Result<String, String> {
        let n = self.nodes.len();
        for node in &self.nodes {
            if node.state() != ProcessState::Running {
                return Err(format!("{} is {:?}", node.server_name, node.state()));
            }
            if healthz {
                node.healthz().map_err(|e| format!("{}: {e}", node.server_name))?;
            }
            if n > 1 {
                let peers = node.routez().map_err(|e| format!("{}: {e}", node.server_name))?.peers();
                if peers != n - 1 {
                    return Err(format!("{} has routes to {peers} of {} peers", node.server_name, n - 1));
                }
            }
        }
        let leader = self.meta_leader().map_err(|e| e.to_string())?.ok_or("no agreed meta leader")?;
        if n > 1 {
            let leader_node = self.nodes.iter().find(|x| x.server_name == leader).ok_or("leader is not ours")?;
            let meta = leader_node
                .jsz("")
                .map_err(|e| e.to_string())?
                .meta_cluster
                .ok_or_else(|| format!("{leader}: no meta_cluster in /jsz"))?;
            for node in self.nodes.iter().filter(|x| x.server_name != leader) {
                match meta.replicas.iter().find(|p| p.name == node.server_name) {
                    Some(p) if p.current && !p.offline => {}
                    Some(p) => {
                        return Err(format!("leader {leader} sees {} not current (offline: {})", p.name, p.offline))
                    }
                    None => return Err(format!("leader {leader} does not list {}", node.server_name)),
                }
            }
        }
        Ok(leader)
    }

    /// `kill -9` node `index` (its process group) and wait until it is gone.
    pub fn kill(&self, index: usize) -> Result<()> {
        let node = self.node(index)?;
        process::send_signal(&node.component, Signal::Kill)?;
        process::wait_gone(std::slice::from_ref(&node.component), Duration::from_secs(5))
    }

    /// SIGSTOP node `index`: it keeps its sockets but answers nothing.
    pub fn stop(&self, index: usize) -> Result<()> {
        process::send_signal(&self.node(index)?.component, Signal::Stop).map(drop)
    }

    /// SIGCONT node `index`.
    pub fn cont(&self, index: usize) -> Result<()> {
        process::send_signal(&self.node(index)?.component, Signal::Cont).map(drop)
    }

    /// Start node `index` again with the same config and store (killing it first if it still
    /// runs), and wait until its monitoring port accepts. Wait for [`wait_healthy`] to see it
    /// rejoined. Returns its new component (new pid) for cluster.json.
    ///
    /// [`wait_healthy`]: NatsCluster::wait_healthy
    pub fn restart(&mut self, index: usize) -> Result<Component> {
        // The node comes back on its own ports (the others' routes name them). While it was
        // down, another socket on this machine may have been given one of them for a moment
        // (an outgoing connection's local port): the node then exits at once with "address
        // already in use". Try again a few times before calling it a failure.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let old = self.node(index)?.component.clone();
            let new = process::respawn(&old, self.die_with_parent)?;
            self.nodes[index].component = new.clone();
            match self.wait_monitor_port(index, Duration::from_secs(10)) {
                Ok(()) => return Ok(new),
                Err(_) if attempts < 5 && new.log_tail(5).contains("address already in use") => {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn wait_monitor_port(&self, index: usize, timeout: Duration) -> Result<()> {
        let node = self.node(index)?;
        let start = Instant::now();
        while !net::tcp_accepts(node.monitor_addr(), Duration::from_millis(200)) {
            if node.state() == ProcessState::Gone {
                return Err(exited(&node.component));
            }
            if start.elapsed() >= timeout {
                return Err(LabError::Timeout {
                    what: format!("{} to listen on {}", node.server_name, node.monitor_addr()),
                    waited: start.elapsed(),
                    detail: format!(
                        "process {:?}; end of {}:\n{}",
                        node.state(),
                        node.component.log.display(),
                        node.component.log_tail(15)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        if self.detached || self.nodes.is_empty() {
            return;
        }
        if let Err(e) = process::stop_components(&self.components(), Duration::from_secs(3)) {
            eprintln!("lab: stopping the NATS cluster: {e}");
        }
    }
}

fn exited(c: &Component) -> LabError {
    LabError::Exited { name: c.name.clone(), log: c.log.clone(), tail: c.log_tail(15) }
}

/// JSON string quoting, which NATS's config format reads.
fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// How [`render_authorization`] writes a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passwords {
    /// As a quoted string (the lab's generated passwords).
    Literal,
    /// As a `$NAME` reference, the password field holding NAME: nats-server reads it from its
    /// environment (the files in `deploy/nats/`).
    FromEnvironment,
}

/// Who may log in: without accounts, an `authorization` block with `operator` alone; with
/// them, an `accounts` block, `operator` (every permission) a user of the first.
pub fn render_authorization(operator: &NatsAuth, accounts: &[NatsAccount], passwords: Passwords) -> String {
    let list = |subjects: &[String]| subjects.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ");
    let password = |p: &str| match passwords {
        Passwords::Literal => quote(p),
        Passwords::FromEnvironment => format!("${p}"),
    };
    let user = |u: &NatsUser, indent: &str| {
        match &u.permissions {
        None => format!("{indent}{{ user: {}, password: {} }}\n", quote(&u.login.user), password(&u.login.password)),
        Some(p) => format!(
            "{indent}{{ user: {}, password: {}, permissions: {{\n{indent}    publish: {{ allow: [{}] }}\n{indent}    subscribe: {{ allow: [{}] }}\n{indent}}} }}\n",
            quote(&u.login.user),
            password(&u.login.password),
            list(&p.publish),
            list(&p.subscribe),
        ),
    }
    };
    let operator = NatsUser { login: operator.clone(), permissions: None };
    if accounts.is_empty() {
        return format!("authorization {{\n  users: [\n{}  ]\n}}\n\n", user(&operator, "    "));
    }
    let link = |l: &NatsLink| {
        let kind = if l.stream { "stream" } else { "service" };
        match &l.account {
            None => format!("      {{ {kind}: {} }}\n", quote(&l.subject)),
            Some(account) => {
                let to = l.to.as_ref().map(|to| format!(", to: {}", quote(to))).unwrap_or_default();
                format!("      {{ {kind}: {{ account: {}, subject: {} }}{to} }}\n", quote(account), quote(&l.subject))
            }
        }
    };
    let mut out = String::from("accounts {\n");
    for (i, account) in accounts.iter().enumerate() {
        out.push_str(&format!("  {}: {{\n    jetstream: enabled\n    users: [\n", account.name));
        if i == 0 {
            out.push_str(&user(&operator, "      "));
        }
        account.users.iter().for_each(|u| out.push_str(&user(u, "      ")));
        out.push_str("    ]\n");
        for (name, links) in [("exports", &account.exports), ("imports", &account.imports)] {
            if !links.is_empty() {
                out.push_str(&format!("    {name}: [\n"));
                links.iter().for_each(|l| out.push_str(&link(l)));
                out.push_str("    ]\n");
            }
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n\n");
    out
}

/// A `tls { }` block (indented by `indent`) presenting `cert`; with `verify`, the peer must
/// present a certificate signed by `ca` too.
fn render_tls(indent: &str, ca: &Path, cert: &crate::pki::CertFiles, verify: bool) -> String {
    let path = |p: &Path| quote(&p.display().to_string());
    format!(
        "{indent}tls {{\n{indent}  cert_file: {}\n{indent}  key_file: {}\n{indent}  ca_file: {}\n{indent}  verify: {verify}\n{indent}  timeout: 2\n{indent}}}\n",
        path(&cert.cert),
        path(&cert.key),
        path(ca),
    )
}

/// The config of one node. Store limits are explicit so that a lab never reserves the machine's
/// whole memory and disk; everything listens on loopback only. With `tls` (the CA and this
/// node's certificate) clients must speak TLS and routes verify each other; the monitoring
/// port stays plain HTTP on loopback (the lab reads it).
#[allow(clippy::too_many_arguments)]
pub fn render_config(
    server_name: &str,
    node_dir: &Path,
    addr: Ipv4Addr,
    client_port: u16,
    cluster_port: u16,
    monitor_port: u16,
    routes: &[SocketAddr],
    tls: Option<(&Path, &crate::pki::CertFiles)>,
    opts: &NatsOptions,
) -> String {
    let route_login = match &opts.route_auth {
        Some(auth) => {
            let encode = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
            format!("{}:{}@", encode(&auth.user), encode(&auth.password))
        }
        None => String::new(),
    };
    let route_urls: String =
        routes.iter().map(|a| format!("    \"nats-route://{route_login}{a}\"\n")).collect::<Vec<_>>().concat();
    // One node: standalone JetStream (a cluster block without routes would wait for peers).
    let cluster = if routes.is_empty() {
        String::new()
    } else {
        let authorization = match &opts.route_auth {
            Some(auth) => format!(
                "  authorization {{\n    user: {}\n    password: {}\n    timeout: 2\n  }}\n",
                quote(&auth.user),
                quote(&auth.password)
            ),
            None => String::new(),
        };
        // nats-server verifies route certificates both ways whatever `verify` says.
        let tls = tls.map(|(ca, cert)| render_tls("  ", ca, cert, true)).unwrap_or_default();
        format!(
            "\ncluster {{\n  name: {}\n  listen: \"{addr}:{cluster_port}\"\n{tls}{authorization}  routes: [\n{route_urls}  ]\n}}\n",
            quote(&opts.cluster_name)
        )
    };
    // Clients prove who they are with their logins, not certificates: no `verify`.
    let client_tls = tls.map(|(ca, cert)| render_tls("", ca, cert, false) + "\n").unwrap_or_default();
    format!(
        "# {server_name} of the lab's NATS cluster, written by the lab crate; a restart reuses it unchanged.\n\
         server_name: {name}\n\
         listen: \"{addr}:{client_port}\"\n\
         http: \"{addr}:{monitor_port}\"\n\
         logtime: true\n\
         \n\
         {client_tls}\
         {authorization}\
         jetstream {{\n  \
           # nats-server stores under <store_dir>/jetstream\n  \
           store_dir: {store}\n  \
           max_memory_store: {mem}\n  \
           max_file_store: {file}\n\
         }}\n{cluster}",
        name = quote(server_name),
        authorization = match &opts.auth {
            Some(auth) => render_authorization(auth, &opts.accounts, Passwords::Literal),
            None => String::new(),
        },
        store = quote(&node_dir.display().to_string()),
        mem = opts.max_memory_store,
        file = opts.max_file_store,
    )
}
