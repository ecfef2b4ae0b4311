//! Child processes that outlive the command that started them: each in its own session and
//! process group (`setsid`), stdout and stderr appended to `DIR/logs/<name>.log`, described by a
//! serialisable [`Component`] from which any later process can signal, stop or restart it.
//!
//! A process is identified by pid *and* start time (`/proc/<pid>/stat`, field 22), so a pid the
//! kernel handed to someone else since is never signalled. Signals go to the whole process group
//! (HAProxy's master and its workers, anything an api node forks).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{LabError, Result};

/// One process of the lab: what it is, where it listens, how it was started.
///
/// `program`, `args`, `env` and `cwd` are kept so that the process can be restarted identically
/// ([`respawn`]), by this process or by another one reading `cluster.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// What it does: `nats`, `haproxy`, `api`, `worker`...
    pub role: String,
    /// Unique within the cluster: `nats-0`, `api-1`; also the log file's name.
    pub name: String,
    /// Process id; also the process group id (every component is a session leader).
    pub pid: u32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// Named URLs: `client`, `monitor`, `http`, `internal`, `metrics`... Free-form keys.
    #[serde(default)]
    pub urls: BTreeMap<String, String>,
    /// A URL that answers 200 when the component is ready; `status` probes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Where stdout and stderr go (appended to across restarts).
    pub log: PathBuf,
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment added to the inherited one.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// Anything else a caller wants recorded (ports, config path, node index...).
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The network namespace it runs in (`lab up --netns`); None: this machine's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

impl Component {
    /// The URL recorded under `key`.
    pub fn url(&self, key: &str) -> Option<&str> {
        self.urls.get(key).map(String::as_str)
    }

    /// Whether the process is running, stopped (SIGSTOP) or gone.
    pub fn state(&self) -> ProcessState {
        process_state(self)
    }

    /// The last `lines` lines of its log (for error messages).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

/// What to start: [`start_process`] turns it into a running [`Component`].
#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub role: String,
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Working directory; DIR when `None`.
    pub cwd: Option<PathBuf>,
    pub urls: BTreeMap<String, String>,
    pub health: Option<String>,
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Kill the process (SIGKILL) when the *thread* that started it exits: for tests, so that a
    /// test runner killing the test process leaves nothing behind. Off for `lab up`, whose
    /// processes must outlive it.
    pub die_with_parent: bool,
    /// Run it in this network namespace (an `ip netns` name); None: ours.
    pub netns: Option<String>,
}

impl ProcessSpec {
    pub fn new(role: impl Into<String>, name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        ProcessSpec { role: role.into(), name: name.into(), program: program.into(), ..Default::default() }
    }
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }
    pub fn url(mut self, key: impl Into<String>, url: impl Into<String>) -> Self {
        self.urls.insert(key.into(), url.into());
        self
    }
    pub fn health(mut self, url: impl Into<String>) -> Self {
        self.health = Some(url.into());
        self
    }
    pub fn extra(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
    pub fn die_with_parent(mut self, yes: bool) -> Self {
        self.die_with_parent = yes;
        self
    }
    pub fn netns(mut self, netns: Option<String>) -> Self {
        self.netns = netns;
        self
    }
}

/// The directory of every component's log: `DIR/logs`.
pub fn logs_dir(dir: &Path) -> PathBuf {
    dir.join("logs")
}

/// Start `spec` in its own session (so it outlives us and can be signalled as a group), with
/// stdin from /dev/null and stdout and stderr appended to `DIR/logs/<name>.log`.
///
/// Returns as soon as the process exists; readiness is the caller's to wait for.
pub fn start_process(dir: &Path, spec: &ProcessSpec) -> Result<Component> {
    if spec.name.is_empty() || spec.name.contains(['/', '\0']) || spec.name.starts_with('.') {
        return Err(LabError::Invalid(format!("unusable component name {:?}", spec.name)));
    }
    let logs = logs_dir(dir);
    std::fs::create_dir_all(&logs).map_err(|e| LabError::io("create", &logs, e))?;
    let component = Component {
        role: spec.role.clone(),
        name: spec.name.clone(),
        pid: 0,
        start_time: 0,
        urls: spec.urls.clone(),
        health: spec.health.clone(),
        log: logs.join(format!("{}.log", spec.name)),
        program: spec.program.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        cwd: spec.cwd.clone().unwrap_or_else(|| dir.to_path_buf()),
        extra: spec.extra.clone(),
        netns: spec.netns.clone(),
    };
    spawn(component, spec.die_with_parent)
}

/// Start `component` again exactly as it was started (same program, arguments, environment, log),
/// after making sure the old process group is gone (SIGKILL if it is still there). Returns the
/// component with its new pid and start time.
pub fn respawn(component: &Component, die_with_parent: bool) -> Result<Component> {
    if !group_members(component).is_empty() {
        send_signal(component, Signal::Kill)?;
    }
    wait_gone(std::slice::from_ref(component), Duration::from_secs(5))?;
    spawn(component.clone(), die_with_parent)
}

fn spawn(mut component: Component, die_with_parent: bool) -> Result<Component> {
    let open_log = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&component.log)
            .map_err(|e| LabError::io("open", &component.log, e))
    };
    let stdout = open_log()?;
    let stderr = open_log()?;
    // Opened here, entered in the child: setns(2) is async-signal-safe, opening a path is not
    // something to do between fork and exec.
    let netns = match &component.netns {
        Some(name) => {
            let path = Path::new("/run/netns").join(name);
            Some(std::fs::File::open(&path).map_err(|e| LabError::io("open", &path, e))?)
        }
        None => None,
    };
    let netns_fd = netns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    let mut command = Command::new(&component.program);
    command
        .args(&component.args)
        .envs(&component.env)
        .current_dir(&component.cwd)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // SAFETY: between fork and exec only async-signal-safe calls: setns(2), setsid(2), prctl(2).
    unsafe {
        command.pre_exec(move || {
            if let Some(fd) = netns_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if die_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| LabError::Spawn {
        name: component.name.clone(),
        program: component.program.clone(),
        source,
    })?;
    drop(netns);
    component.pid = child.id();
    // Until reaped, an exited child is a zombie that /proc still lists; it is read as gone.
    component.start_time = proc_stat(component.pid).map(|s| s.start_time).unwrap_or(0);
    // Reap it when it exits, so a long-lived parent (a test) collects no zombies. When the parent
    // exits first (`lab up`), init adopts the process.
    // Should the thread not start, a dead child stays a zombie until we exit, which
    // `process_state` and `group_members` read as gone.
    let _ = std::thread::Builder::new().name(format!("reap-{}", component.name)).spawn(move || {
        let _ = child.wait();
    });
    Ok(component)
}

/// The signals the lab sends, always to a whole process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
    Stop,
    Cont,
    /// HAProxy's master reloads its configuration on SIGUSR2.
    Usr2,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Usr2 => libc::SIGUSR2,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
            Signal::Stop => "SIGSTOP",
            Signal::Cont => "SIGCONT",
            Signal::Usr2 => "SIGUSR2",
        }
    }
}

/// Send `signal` to the component's process group. `Ok(false)`: nothing of it is left to signal.
pub fn send_signal(component: &Component, signal: Signal) -> Result<bool> {
    signal_group(component, signal, true)
}

/// Send `signal` to the component's leader process only (HAProxy's master for a reload).
pub fn signal_leader(component: &Component, signal: Signal) -> Result<bool> {
    signal_group(component, signal, false)
}

fn signal_group(component: &Component, signal: Signal, group: bool) -> Result<bool> {
    if group_members(component).is_empty() {
        return Ok(false);
    }
    let pgid = libc::pid_t::try_from(component.pid)
        .map_err(|_| LabError::Invalid(format!("pid {} of {} out of range", component.pid, component.name)))?;
    let target = if group { -pgid } else { pgid };
    // SAFETY: kill(2) with a pid we checked belongs to our component (pid and start time).
    if unsafe { libc::kill(target, signal.number()) } == -1 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(false);
        }
        return Err(LabError::Signal {
            signal: signal.name(),
            name: component.name.clone(),
            pgid: component.pid,
            source: err,
        });
    }
    Ok(true)
}

/// Whether a component's process runs, is stopped, or is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    Running,
    /// Stopped by SIGSTOP (or a tracer): alive but answering nothing.
    Stopped,
    /// Exited, killed, a zombie, or its pid now belongs to another process.
    Gone,
}

/// The state of the component's leader process (pid and start time must both match).
pub fn process_state(component: &Component) -> ProcessState {
    match proc_stat(component.pid) {
        Some(stat) if stat.start_time == component.start_time => match stat.state {
            'Z' | 'X' | 'x' => ProcessState::Gone,
            'T' | 't' => ProcessState::Stopped,
            _ => ProcessState::Running,
        },
        _ => ProcessState::Gone,
    }
}

/// Live (non-zombie) processes of the component's process group, leader included.
///
/// Linux never reuses a pid while a group of that id has members, so if the leader's pid now
/// belongs to a different process, our group is gone.
pub fn group_members(component: &Component) -> Vec<u32> {
    if let Some(stat) = proc_stat(component.pid) {
        if stat.start_time != component.start_time {
            return Vec::new();
        }
    }
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|s| s.pgrp == component.pid && !matches!(s.state, 'Z' | 'X' | 'x')))
        .collect()
}

/// Wait until no process of any of `components`' groups is left.
pub fn wait_gone(components: &[Component], timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let left: Vec<String> = components
            .iter()
            .filter_map(|c| {
                let members = group_members(c);
                (!members.is_empty()).then(|| format!("{} (pids {:?})", c.name, members))
            })
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(LabError::Timeout {
                what: "processes to exit".into(),
                waited: start.elapsed(),
                detail: left.join(", "),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stop components: SIGTERM (and SIGCONT, so a stopped process can act on it) to every group,
/// up to `grace` for them to exit, then SIGKILL for the rest, then verify none is left.
/// Returns the names of components that had something to stop.
pub fn stop_components(components: &[Component], grace: Duration) -> Result<Vec<String>> {
    let mut stopped = Vec::new();
    for c in components {
        if send_signal(c, Signal::Term)? {
            stopped.push(c.name.clone());
            send_signal(c, Signal::Cont)?;
        }
    }
    if wait_gone(components, grace).is_ok() {
        return Ok(stopped);
    }
    for c in components {
        send_signal(c, Signal::Kill)?;
    }
    match wait_gone(components, Duration::from_secs(5)) {
        Ok(()) => Ok(stopped),
        Err(_) => Err(LabError::Survivors(
            components
                .iter()
                .filter_map(|c| {
                    let m = group_members(c);
                    (!m.is_empty()).then(|| format!("{} (pids {:?})", c.name, m))
                })
                .collect(),
        )),
    }
}

/// Kills the components it holds when dropped (also while a test panics), unless disarmed.
#[derive(Debug, Default)]
pub struct ProcessGuard {
    components: Vec<Component>,
}

impl ProcessGuard {
    pub fn new() -> Self {
        ProcessGuard::default()
    }
    /// Take responsibility for `component` (a restarted component replaces the one of its name).
    pub fn push(&mut self, component: Component) {
        self.components.retain(|c| c.name != component.name);
        self.components.push(component);
    }
    pub fn components(&self) -> &[Component] {
        &self.components
    }
    /// Stop everything now (SIGTERM, then SIGKILL after `grace`).
    pub fn stop_all(&mut self, grace: Duration) -> Result<Vec<String>> {
        let result = stop_components(&self.components, grace);
        self.components.clear();
        result
    }
    /// Leave the processes running; return what they are.
    pub fn disarm(mut self) -> Vec<Component> {
        std::mem::take(&mut self.components)
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if self.components.is_empty() {
            return;
        }
        if let Err(e) = stop_components(&self.components, Duration::from_secs(2)) {
            eprintln!("lab: cleaning up: {e}");
        }
    }
}

/// The fields of `/proc/<pid>/stat` the lab uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcStat {
    pub state: char,
    pub pgrp: u32,
    pub start_time: u64,
}

/// Parse `/proc/<pid>/stat`; `None` when the process does not exist.
pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    if pid == 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field k is fields[k - 3].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The last `lines` lines of a log file ("" if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read(path) else { return String::new() };
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
