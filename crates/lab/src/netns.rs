//! The lab on a network of its own (`lab up --netns`): every node in its own network namespace,
//! with its own address on a private /24, all joined by a bridge, so that each node's links can
//! be cut or slowed on their own (`faults.rs` does that), and small volumes of the lab's own.
//!
//! The bridge lives in this machine's namespace with the subnet's first address, so the machine
//! (tests, HAProxy, an operator's tools) reaches every node directly. The namespaces have no
//! default route: nothing a node sends can leave the machine. Names carry a random lab id
//! (`rz<id>-api-0`, bridge `rzb<id>`) so that labs started side by side never meet, and each
//! network is registered in [`REGISTRY`] so that one a killed test left behind is removed by the
//! next lab that starts (see [`sweep_stale`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};

/// Where each lab network is registered while it exists: `<id>.json`, a [`NetworkRecord`].
pub const REGISTRY: &str = "/run/resizer-lab";

/// The cluster.json field holding the [`NetworkRecord`].
pub const NETWORK_FIELD: &str = "network";

/// Where a process runs: its namespace (None: this machine's own, on loopback) and its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// The component's name (`api-0`, `nats-1`...).
    pub name: String,
    /// The network namespace (`ip netns` name); None on the loopback lab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    pub addr: Ipv4Addr,
}

impl Host {
    /// A process of the loopback lab: this machine's namespace, 127.0.0.1.
    pub fn loopback(name: &str) -> Host {
        Host { name: name.to_string(), netns: None, addr: crate::net::LOOPBACK }
    }
}

/// What is needed to find and remove a lab network, from any process: in cluster.json and in
/// [`REGISTRY`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub bridge: String,
    /// The /24's first address: the bridge's, this machine's side.
    pub gateway: Ipv4Addr,
    pub hosts: Vec<Host>,
    /// Small volumes of the lab's own (tmpfs), which [`crate::fill_volume`] can fill.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// The lab's DIR: a network whose DIR has no live component is stale.
    pub dir: PathBuf,
    pub created_unix: u64,
}

impl NetworkRecord {
    /// The subnet, as `a.b.c.0/24`.
    pub fn subnet(&self) -> String {
        let [a, b, c, _] = self.gateway.octets();
        format!("{a}.{b}.{c}.0/24")
    }

    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::Invalid(format!("{name} has no host of its own on the lab's network")))
    }
}

/// A volume mounted for a component: a tmpfs of a fixed size at `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub component: String,
    pub path: PathBuf,
    pub size_bytes: u64,
}

/// A lab network being built or running. Dropped without [`detach`](LabNetwork::detach), it
/// removes every namespace and the bridge.
#[derive(Debug)]
pub struct LabNetwork {
    record: NetworkRecord,
    detached: bool,
}

impl LabNetwork {
    /// Make the bridge and its /24 (a free one under 10.200.0.0/13), after removing stale lab
    /// networks. Needs root (CAP_NET_ADMIN) and iproute2.
    pub fn create(dir: &Path) -> Result<LabNetwork> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(LabError::Invalid(
                "the lab's own network (--netns) makes network namespaces and a bridge: run it as root".into(),
            ));
        }
        crate::binaries::find_program("ip")
            .ok_or_else(|| LabError::Invalid("`ip` not found: install Debian's iproute2 package".into()))?;
        std::fs::create_dir_all(REGISTRY).map_err(|e| LabError::io("create", Path::new(REGISTRY), e))?;
        let lock = RegistryLock::take()?;
        sweep_stale();
        let id = format!("{:06x}", crate::net::random_u32() & 0xff_ffff);
        let gateway = free_subnet()?;
        let record = NetworkRecord {
            bridge: format!("rzb{id}"),
            id,
            gateway,
            hosts: Vec::new(),
            volumes: Vec::new(),
            dir: dir.to_path_buf(),
            created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        };
        let network = LabNetwork { record, detached: false };
        // Registered before it exists: a failure halfway leaves a record the sweep can act on.
        network.register()?;
        let bridge = network.record.bridge.clone();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        drop(lock);
        Ok(network)
    }

    pub fn record(&self) -> &NetworkRecord {
        &self.record
    }

    /// A namespace for component `name` with the next address, wired to the bridge.
    pub fn add_host(&mut self, name: &str) -> Result<Host> {
        if let Ok(host) = self.record.host(name) {
            return Ok(host.clone());
        }
        let k = self.record.hosts.len();
        if k > 250 {
            return Err(LabError::Invalid("a lab network has room for 250 hosts".into()));
        }
        let [a, b, c, _] = self.record.gateway.octets();
        let addr = Ipv4Addr::new(a, b, c, 2 + k as u8);
        let id = &self.record.id;
        let netns = format!("rz{id}-{name}");
        let host = Host { name: name.to_string(), netns: Some(netns.clone()), addr };
        self.record.hosts.push(host.clone());
        self.register()?;
        let (outside, inside) = (format!("rz{id}h{k}"), format!("rz{id}n{k}"));
        ip(&["netns", "add", &netns])?;
        ip(&["link", "add", &outside, "type", "veth", "peer", "name", &inside])?;
        ip(&["link", "set", &inside, "netns", &netns])?;
        ip(&["link", "set", &outside, "master", &self.record.bridge, "up"])?;
        ip(&["-n", &netns, "link", "set", &inside, "name", "eth0"])?;
        ip(&["-n", &netns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// Mount a tmpfs of `size_bytes` at `path` (created if needed) for component `name`: a
    /// volume of its own that [`crate::fill_volume`] can fill without touching the machine's disks.
    pub fn add_volume(&mut self, name: &str, path: &Path, size_bytes: u64) -> Result<()> {
        std::fs::create_dir_all(path).map_err(|e| LabError::io("create", path, e))?;
        self.record.volumes.push(Volume { component: name.to_string(), path: path.to_path_buf(), size_bytes });
        self.register()?;
        let size = format!("size={size_bytes}");
        let target = path.display().to_string();
        run("mount", None, &["-t", "tmpfs", "-o", &size, "lab-volume", &target]).map(drop)
    }

    /// Leave the network in place when this is dropped (`lab up` hands it to `lab down`).
    pub fn detach(&mut self) {
        self.detached = true;
    }

    fn register(&self) -> Result<()> {
        let path = registry_path(&self.record.id);
        let bytes =
            serde_json::to_vec_pretty(&self.record).map_err(|source| LabError::Json { path: path.clone(), source })?;
        // Whole or not at all: a sweep may read it at any moment.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, bytes).map_err(|e| LabError::io("write", &partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| LabError::io("rename", &path, e))
    }
}

impl Drop for LabNetwork {
    fn drop(&mut self) {
        if !self.detached {
            if let Err(e) = remove(&self.record) {
                eprintln!("lab: removing the lab's network: {e}");
            }
        }
    }
}

/// Remove a lab network: its namespaces (their ends of the links go with them), the bridge, and
/// its registration. Parts already gone are no error. Processes still running in a namespace
/// keep it alive until they exit; stop them first.
pub fn remove(record: &NetworkRecord) -> Result<()> {
    let mut errors = Vec::new();
    for volume in &record.volumes {
        if is_mounted(&volume.path) {
            if let Err(e) = run("umount", None, &[&volume.path.display().to_string()]) {
                errors.push(e.to_string());
            }
        }
    }
    for host in &record.hosts {
        if let Some(netns) = &host.netns {
            if Path::new("/run/netns").join(netns).exists() {
                if let Err(e) = ip(&["netns", "del", netns]) {
                    errors.push(e.to_string());
                }
            }
        }
    }
    if Path::new("/sys/class/net").join(&record.bridge).exists() {
        if let Err(e) = ip(&["link", "del", &record.bridge]) {
            errors.push(e.to_string());
        }
    }
    let _ = std::fs::remove_file(registry_path(&record.id));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LabError::Invalid(format!("removing lab network {}: {}", record.id, errors.join("; "))))
    }
}

/// Remove every registered lab network that is stale: older than two minutes (a lab being set
/// up is left alone) with no process left in any of its namespaces (a killed test's processes
/// die with it; a DIR deleted without `down`).
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(REGISTRY) else { return };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let Ok(record) = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<NetworkRecord>(&b).map_err(|e| e.to_string()))
        else {
            continue;
        };
        let alive = record
            .hosts
            .iter()
            .filter_map(|h| h.netns.as_deref())
            .any(|ns| ip_output(&["netns", "pids", ns]).is_ok_and(|pids| !pids.trim().is_empty()));
        if !alive && now.saturating_sub(record.created_unix) > 120 {
            let _ = remove(&record);
        }
    }
}

/// Whether `path` is a mount point (listed in /proc/mounts).
fn is_mounted(path: &Path) -> bool {
    let target = path.display().to_string();
    std::fs::read_to_string("/proc/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split_whitespace().nth(1) == Some(target.as_str())))
}

fn registry_path(id: &str) -> PathBuf {
    Path::new(REGISTRY).join(format!("{id}.json"))
}

/// An exclusive lock on the registry while a subnet is chosen and taken.
struct RegistryLock {
    _held: std::fs::File,
}

impl RegistryLock {
    fn take() -> Result<RegistryLock> {
        let path = Path::new(REGISTRY).join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LabError::io("open", &path, e))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
            return Err(LabError::io("lock", &path, std::io::Error::last_os_error()));
        }
        Ok(RegistryLock { _held: file })
    }
}

/// A /24 under 10.200.0.0/13 that no interface of this machine has an address in.
fn free_subnet() -> Result<Ipv4Addr> {
    let out = ip_output(&["-4", "-o", "addr", "show"])?;
    let used: Vec<[u8; 3]> = out
        .split_whitespace()
        .filter_map(|w| w.split('/').next()?.parse::<Ipv4Addr>().ok())
        .map(|a| {
            let [x, y, z, _] = a.octets();
            [x, y, z]
        })
        .collect();
    let start = crate::net::random_u32();
    for i in 0..2048u32 {
        let n = (start.wrapping_add(i)) % 2048;
        let candidate = [10, 200 + (n / 256) as u8, (n % 256) as u8];
        if !used.contains(&candidate) {
            return Ok(Ipv4Addr::new(candidate[0], candidate[1], candidate[2], 1));
        }
    }
    Err(LabError::Invalid("no free /24 under 10.200.0.0/13 for the lab's network".into()))
}

fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String> {
    run("ip", None, args)
}

/// Run `program args` (inside `netns` when given, through `ip netns exec`), returning stdout;
/// a failure carries the command and its stderr.
pub(crate) fn run(program: &str, netns: Option<&str>, args: &[&str]) -> Result<String> {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    };
    let out = command.args(args).stdin(Stdio::null()).output().map_err(|e| {
        LabError::Invalid(format!("running {program}: {e} (iproute2 and iptables are Debian's packages)"))
    })?;
    if !out.status.success() {
        return Err(LabError::Invalid(format!(
            "`{}{program} {}` failed: {}",
            netns.map(|n| format!("ip netns exec {n} ")).unwrap_or_default(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
