//! `DIR/cluster.json`: every component of a lab cluster plus the caller's free-form fields; and
//! what other processes do with it — `down`, `status`, signal or restart one component.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};
use crate::nats::NATS_ROLE;
use crate::net;
use crate::postgres::POSTGRES_ROLE;
use crate::process::{self, Component, ProcessState, Signal};

/// The file's name inside DIR.
pub const CLUSTER_FILE: &str = "cluster.json";

/// The document. Written atomically (temporary file, fsync, rename) with mode 0600: the fields
/// may hold the admin token and a demo key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterFile {
    pub version: u32,
    /// DIR, absolute.
    pub dir: PathBuf,
    /// False while `lab up` is still starting components: `down` works on a half-started cluster.
    pub complete: bool,
    pub created_unix: u64,
    /// In start order.
    pub components: Vec<Component>,
    /// The caller's: `admin_url`, `admin_token`, `demo_key`, `nats_urls`...
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl ClusterFile {
    pub fn new(dir: &Path) -> Self {
        ClusterFile {
            version: 1,
            dir: dir.to_path_buf(),
            complete: false,
            created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            components: Vec::new(),
            fields: serde_json::Map::new(),
        }
    }

    /// DIR/cluster.json
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(CLUSTER_FILE)
    }

    /// Read DIR/cluster.json ([`LabError::NoCluster`] if there is none).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = Self::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NoCluster { dir: dir.to_path_buf(), file: path })
            }
            Err(e) => return Err(LabError::io("read", path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| LabError::Json { path, source })
    }

    /// Write it to `self.dir`/cluster.json, atomically.
    pub fn write(&self) -> Result<PathBuf> {
        let path = Self::path(&self.dir);
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|source| LabError::Json { path: path.clone(), source })?;
        bytes.push(b'\n');
        write_atomic(&path, &bytes, 0o600)?;
        Ok(path)
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// The components of `role`, in start order.
    pub fn with_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Component> + 'a {
        self.components.iter().filter(move |c| c.role == role)
    }

    /// Add `component`, or replace the one of the same name (after a restart).
    pub fn upsert(&mut self, component: Component) {
        match self.components.iter_mut().find(|c| c.name == component.name) {
            Some(slot) => *slot = component,
            None => self.components.push(component),
        }
    }

    /// Names of components whose process group still has a live process.
    pub fn live(&self) -> Vec<String> {
        self.components.iter().filter(|c| !process::group_members(c).is_empty()).map(|c| c.name.clone()).collect()
    }
}

/// Write `bytes` to `path` via a temporary file in the same directory: fsync, rename, fsync the
/// directory. Readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| LabError::io("create", &tmp, e))?;
    file.write_all(bytes).map_err(|e| LabError::io("write", &tmp, e))?;
    file.sync_all().map_err(|e| LabError::io("fsync", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| LabError::io("rename into place", path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What `down` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DownReport {
    /// Components that had a live process and were stopped.
    pub stopped: Vec<String>,
    /// Components already gone before `down`.
    pub already_gone: Vec<String>,
}

/// Stop every component of the cluster in DIR: first everything but NATS and PostgreSQL (load
/// balancer, api nodes, workers can drain while the queue and the database are still up), then
/// PostgreSQL, then the NATS nodes. Each group gets
/// SIGTERM (with SIGCONT, so that a SIGSTOPped process acts on it) and `grace` to exit, then
/// SIGKILL; then no process of any component may remain ([`LabError::Survivors`] otherwise).
/// cluster.json stays (with dead pids) for the record.
pub fn down(dir: &Path, grace: Duration) -> Result<DownReport> {
    let file = ClusterFile::read(dir)?;
    let live = file.live();
    let mut report = DownReport {
        stopped: Vec::new(),
        already_gone: file.components.iter().filter(|c| !live.contains(&c.name)).map(|c| c.name.clone()).collect(),
    };
    let (nats, others): (Vec<Component>, Vec<Component>) =
        file.components.iter().filter(|c| live.contains(&c.name)).cloned().partition(|c| c.role == NATS_ROLE);
    let (postgres, others): (Vec<Component>, Vec<Component>) =
        others.into_iter().partition(|c| c.role == POSTGRES_ROLE);
    // Stop in reverse start order within each phase.
    for (role, phase) in [("", others), (POSTGRES_ROLE, postgres), (NATS_ROLE, nats)] {
        let phase: Vec<Component> = phase.into_iter().rev().collect();
        let mut asked = Vec::new();
        if role == POSTGRES_ROLE {
            // SIGTERM is PostgreSQL's smart shutdown, which waits for every client: ask for a fast one.
            for c in &phase {
                if crate::postgres::request_fast_shutdown(c)? {
                    asked.push(c.name.clone());
                }
            }
        }
        let mut stopped = process::stop_components(&phase, grace)?;
        asked.retain(|name| !stopped.contains(name));
        stopped.extend(asked);
        report.stopped.extend(stopped);
    }
    let left = file.live();
    if !left.is_empty() {
        return Err(LabError::Survivors(left));
    }
    // The lab's own network, once nothing runs in it.
    if let Some(network) = file.fields.get(crate::netns::NETWORK_FIELD) {
        let record: crate::netns::NetworkRecord = serde_json::from_value(network.clone())
            .map_err(|source| LabError::Json { path: ClusterFile::path(dir), source })?;
        crate::netns::remove(&record)?;
    }
    Ok(report)
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    pub role: String,
    pub name: String,
    pub pid: u32,
    pub state: ProcessState,
    /// The health URL's answer: `Some(true)` on 200 (for a `tcp://host:port` health, when the
    /// port accepts a connection); `None` without a health URL or process.
    pub healthy: Option<bool>,
    pub urls: std::collections::BTreeMap<String, String>,
    pub log: PathBuf,
}

/// Each component of the cluster in DIR: running, stopped or gone, healthy or not, and its URLs.
pub fn status(dir: &Path) -> Result<Vec<ComponentStatus>> {
    let file = ClusterFile::read(dir)?;
    // An https health URL is checked against the lab's CA.
    let ca = file.fields.get("tls_ca").and_then(serde_json::Value::as_str).map(std::path::PathBuf::from);
    Ok(file
        .components
        .iter()
        .map(|c| {
            let state = c.state();
            let healthy = match (&c.health, state) {
                (Some(url), ProcessState::Running) => Some(match url.strip_prefix("tcp://") {
                    // A server that speaks no HTTP (PostgreSQL): its port accepting is the check.
                    Some(addr) => addr
                        .parse::<std::net::SocketAddr>()
                        .is_ok_and(|addr| net::tcp_accepts(addr, Duration::from_millis(700))),
                    None => net::http_get_trusting(url, Duration::from_millis(700), ca.as_deref())
                        .is_ok_and(|a| a.status == 200),
                }),
                (Some(_), _) => Some(false),
                (None, _) => None,
            };
            ComponentStatus {
                role: c.role.clone(),
                name: c.name.clone(),
                pid: c.pid,
                state,
                healthy,
                urls: c.urls.clone(),
                log: c.log.clone(),
            }
        })
        .collect())
}

/// `status` as an aligned table for a terminal.
pub fn format_status(statuses: &[ComponentStatus]) -> String {
    let rows: Vec<[String; 6]> = statuses
        .iter()
        .map(|s| {
            let state = match s.state {
                ProcessState::Running => "running",
                ProcessState::Stopped => "stopped",
                ProcessState::Gone => "gone",
            };
            let health = match s.healthy {
                Some(true) => "ok",
                Some(false) => "FAIL",
                None => "-",
            };
            let urls: Vec<String> = s.urls.iter().map(|(k, v)| format!("{k}={v}")).collect();
            [s.name.clone(), s.role.clone(), s.pid.to_string(), state.into(), health.into(), urls.join(" ")]
        })
        .collect();
    let header = ["NAME", "ROLE", "PID", "STATE", "HEALTH", "URLS"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.len());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                match widths.get(i) {
                    Some(w) => line.push_str(&format!("{cell:<w$}  ")),
                    None => line.push_str(cell),
                }
            }
            line.trim_end().to_string() + "\n"
        })
        .collect()
}

/// Send `signal` to component `name` of the cluster in DIR (fault tests from another process:
/// `Kill`, `Stop`, `Cont`). `Ok(false)`: its process was already gone.
pub fn signal_component(dir: &Path, name: &str, signal: Signal) -> Result<bool> {
    let file = ClusterFile::read(dir)?;
    let c = file.component(name).ok_or_else(|| LabError::UnknownComponent(name.to_string()))?;
    process::send_signal(c, signal)
}

/// Restart component `name` of the cluster in DIR exactly as it was started (killing it first
/// if it still runs) and record its new pid in cluster.json. Readiness is the caller's to check
/// (`health` URL, or [`crate::NatsCluster::wait_healthy`] for a NATS node).
pub fn restart_component(dir: &Path, name: &str) -> Result<Component> {
    let mut file = ClusterFile::read(dir)?;
    let c = file.component(name).ok_or_else(|| LabError::UnknownComponent(name.to_string()))?;
    // PostgreSQL needs its old backends gone (they hold its shared memory) and answers late.
    let new = if c.role == crate::postgres::POSTGRES_ROLE {
        crate::postgres::Postgres::from_component(c)?.restart()?.clone()
    } else {
        process::respawn(c, false)?
    };
    file.upsert(new.clone());
    file.write()?;
    Ok(new)
}

/// For tests that start a cluster in DIR through another process (`resizer lab up`): dropping the
/// guard runs [`down`] on DIR, also while the test panics.
#[derive(Debug)]
pub struct LabGuard {
    dir: PathBuf,
}

impl LabGuard {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LabGuard { dir: dir.into() }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        match down(&self.dir, Duration::from_secs(3)) {
            Ok(_) | Err(LabError::NoCluster { .. }) => {}
            Err(e) => eprintln!("lab: down {}: {e}", self.dir.display()),
        }
    }
}
