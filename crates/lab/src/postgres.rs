//! A private PostgreSQL server for the lab and for tests: its own `initdb` in `DIR/postgres/data`,
//! listening only on 127.0.0.1 at a free port, its Unix socket in `DIR/postgres/run` (never
//! /var/run), trust authentication, superuser and database both named `resizer`
//! ([`Postgres::url`]). The server is one [`Component`] started by [`crate::start_process`]:
//! its log is `DIR/logs/postgres.log`, it can be killed (-9), stopped (SIGSTOP) and restarted
//! ([`crate::respawn`]) like any other, and `down` stops it after every process that may use it.
//!
//! Programs: Debian's package `postgresql` (server 15 on Debian 12). `postgres` is looked for on
//! `$PATH`, in the system directories (/usr/local/bin...), then in `/usr/lib/postgresql/<v>/bin`,
//! highest version first, where Debian puts it; `initdb` is taken from the same directory as
//! `postgres` (a data directory only works with its own major version).
//!
//! Running as root: PostgreSQL refuses to run as root. When the lab runs as root, `initdb` and
//! `postgres` run as an unprivileged system user (`postgres`, created by the Debian package; see
//! [`PostgresOptions::system_user`]) through `setpriv --reuid --regid --init-groups` (util-linux),
//! which execs the program in place: the component's pid is the postmaster's. `DIR/postgres` is
//! chowned to that user and DIR gets the search bit for others (`o+x`, no read bit) so that the
//! user can reach it; the log is opened by the lab, so it stays the lab user's. Changing uid clears
//! the parent-death signal, so `setpriv --pdeathsig keep` puts it back for tests. When not root,
//! everything runs as the current user.
//!
//! Signals: the postmaster puts each of its children (backends, checkpointer...) in a session of
//! its own, so the component's process group is the postmaster alone; its children exit when it
//! dies. SIGTERM is PostgreSQL's *smart* shutdown, which waits for every client to disconnect, so
//! [`down`](crate::down) and [`Postgres::stop_gracefully`] first send SIGINT (fast shutdown:
//! sessions are ended, a shutdown checkpoint written). [`Postgres::kill`] kills the postmaster and
//! its children, as a crash of the database host would, and [`Postgres::restart`] waits until no
//! old process holds the shared memory (else the new postmaster refuses to start).
//!
//! Readiness is read from `postmaster.pid` (line 8 says `ready` once the server accepts
//! connections, after crash recovery) and a TCP connect: the lab does not speak the PostgreSQL
//! protocol. The database `resizer` is created once, right after `initdb`, in single-user mode
//! (`postgres --single`), for the same reason.

use std::ffi::CString;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::binaries::{self, INITDB, POSTGRES, SETPRIV};
use crate::error::{LabError, Result};
use crate::net::{self, LOOPBACK};
use crate::process::{self, Component, ProcessSpec, ProcessState, Signal};

/// The role recorded in the server's [`Component`].
pub const POSTGRES_ROLE: &str = "postgres";
/// The superuser `initdb` creates; the lab's URL connects as it (trust authentication unless
/// [`PostgresAccess::superuser_password`] is set).
pub const POSTGRES_USER: &str = "resizer";
/// The database created for resizer.
pub const POSTGRES_DATABASE: &str = "resizer";

/// How to start the server.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Component name, log name (`DIR/logs/<name>.log`) and directory (`DIR/<name>`).
    pub name: String,
    /// The directory holding `postgres` and `initdb`; searched for when `None`.
    pub bin_dir: Option<PathBuf>,
    /// The unprivileged user the server runs as when the lab runs as root. Ignored otherwise.
    pub system_user: String,
    /// `shared_buffers`: small, the lab's data is tiny and the machine is shared.
    pub shared_buffers: String,
    pub max_connections: u32,
    /// See [`ProcessSpec::die_with_parent`]: on in tests, off for `lab up`.
    pub die_with_parent: bool,
    /// How long start and restart wait for the server to accept connections (crash recovery
    /// included).
    pub ready_timeout: Duration,
    /// Logins and what the database holds for them, set once when the cluster is made.
    pub access: PostgresAccess,
    /// `ssl = on` with this certificate, and `hostssl` lines only in `pg_hba.conf`: a TCP client
    /// without TLS is refused. None: plaintext and TLS-less `host` lines as `initdb` writes them.
    pub tls: Option<crate::pki::CertFiles>,
    /// Where it runs (`lab up --netns`: its own namespace and address); None: 127.0.0.1 here.
    pub host: Option<crate::netns::Host>,
    /// Another network TCP clients come from (`a.b.c.0/24`, the lab's own), besides loopback.
    pub clients: Option<String>,
}

/// Who may log in over TCP, and what exists for them. The default keeps `initdb`'s trust
/// authentication, as the stores' own tests use it.
#[derive(Debug, Clone, Default)]
pub struct PostgresAccess {
    /// The superuser's password. With it, every TCP login needs its own password
    /// (`scram-sha-256`), so one role cannot log in as another; local socket logins stay trusted
    /// (the lab's own, as the server's system user).
    pub superuser_password: Option<String>,
    /// Statements run in the `resizer` database at each start, before the server takes
    /// connections, by the superuser in single-user mode (roles, passwords, grants): one
    /// statement per element, no newline inside one. They run again on a reused DIR, so they must
    /// be idempotent (passwords set with `ALTER ROLE`).
    pub setup: Vec<String>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            name: "postgres".into(),
            bin_dir: None,
            system_user: "postgres".into(),
            shared_buffers: "16MB".into(),
            max_connections: 100,
            die_with_parent: false,
            ready_timeout: Duration::from_secs(30),
            access: PostgresAccess::default(),
            tls: None,
            host: None,
            clients: None,
        }
    }
}

/// A running PostgreSQL server. Dropping it stops it (fast shutdown) unless
/// [`detach`](Postgres::detach)ed or rebuilt with [`from_component`](Postgres::from_component).
#[derive(Debug)]
pub struct Postgres {
    /// The address it listens on: 127.0.0.1, or its own on the lab's network.
    pub addr: Ipv4Addr,
    pub port: u16,
    /// `DIR/<name>/data`
    pub data_dir: PathBuf,
    component: Component,
    die_with_parent: bool,
    ready_timeout: Duration,
    detached: bool,
}

impl Postgres {
    /// Find the programs, `initdb` into `DIR/<name>/data` unless it already holds a cluster (a
    /// reused DIR keeps its data), create the `resizer` database, start the server on a free
    /// loopback port and wait until it accepts connections. On failure nothing is left running.
    pub fn start(dir: &Path, opts: &PostgresOptions) -> Result<Postgres> {
        let programs = Programs::find(opts)?;
        std::fs::create_dir_all(dir).map_err(|e| LabError::io("create", dir, e))?;
        let dir = std::fs::canonicalize(dir).map_err(|e| LabError::io("resolve", dir, e))?;
        let own_dir = dir.join(&opts.name);
        let data_dir = own_dir.join("data");
        let run_dir = own_dir.join("run");
        let log = process::logs_dir(&dir).join(format!("{}.log", opts.name));
        std::fs::create_dir_all(process::logs_dir(&dir))
            .map_err(|e| LabError::io("create", process::logs_dir(&dir), e))?;
        for d in [&own_dir, &data_dir, &run_dir] {
            std::fs::create_dir_all(d).map_err(|e| LabError::io("create", d, e))?;
        }
        if let Some(user) = &programs.run_as {
            allow_search(&dir)?;
            for d in [&own_dir, &data_dir, &run_dir] {
                std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid)).map_err(|e| LabError::io("chown", d, e))?;
            }
        }
        if !data_dir.join("PG_VERSION").exists() {
            programs.initdb(&data_dir, &own_dir, &opts.access, &log)?;
        }
        programs.set_up_access(&data_dir, &opts.access, &log)?;

        let port = net::free_port()?;
        let addr = opts.host.as_ref().map_or(LOOPBACK, |h| h.addr);
        // A Unix socket path longer than sun_path (108 bytes) is refused at start; the lab's URL
        // is TCP, so a deep DIR just goes without the socket.
        let socket_dir = if run_dir.join(format!(".s.PGSQL.{port}.lock")).as_os_str().len() < 100 {
            run_dir.display().to_string()
        } else {
            String::new()
        };
        let mut server_args = vec![
            "-D".to_string(),
            data_dir.display().to_string(),
            "-h".into(),
            addr.to_string(),
            "-p".into(),
            port.to_string(),
            "-k".into(),
            socket_dir,
        ];
        for setting in [
            format!("shared_buffers={}", opts.shared_buffers),
            format!("max_connections={}", opts.max_connections),
            "unix_socket_permissions=0700".into(),
            "log_line_prefix=%m [%p] ".into(),
            // Log to stderr, i.e. the component's log; never to files inside the data directory.
            "logging_collector=off".into(),
            "fsync=on".into(),
            // Parallel-query segments in the data directory instead of /dev/shm: a server killed
            // by a fault test leaves nothing behind outside DIR.
            "dynamic_shared_memory_type=mmap".into(),
        ] {
            server_args.push("-c".into());
            server_args.push(setting);
        }
        if let Some(cert) = &opts.tls {
            let passwords = opts.access.superuser_password.is_some();
            let clients = opts.clients.as_deref();
            for setting in install_tls(&own_dir, cert, passwords, clients, programs.run_as.as_ref())? {
                server_args.push("-c".into());
                server_args.push(setting);
            }
        }
        if let (None, Some(clients)) = (&opts.tls, &opts.clients) {
            allow_plain_clients(&data_dir, clients, opts.access.superuser_password.is_some())?;
        }
        let (program, args) = programs.command(&programs.postgres, server_args);
        let url = url_for(addr, port, opts.access.superuser_password.as_deref());
        let spec = ProcessSpec::new(POSTGRES_ROLE, &opts.name, program)
            .args(args)
            .cwd(&own_dir)
            .netns(opts.host.as_ref().and_then(|h| h.netns.clone()))
            .url("postgres", &url)
            .health(format!("tcp://{addr}:{port}"))
            .extra("addr", addr.to_string())
            .extra("port", port)
            .extra("data_dir", data_dir.display().to_string())
            .extra("run_as", programs.run_as.as_ref().map(|u| u.name.clone()))
            .extra("tls", opts.tls.is_some())
            .die_with_parent(opts.die_with_parent);
        let component = process::start_process(&dir, &spec)?;
        let postgres = Postgres {
            addr,
            port,
            data_dir,
            component,
            die_with_parent: opts.die_with_parent,
            ready_timeout: opts.ready_timeout,
            detached: false,
        };
        // On `?`, `postgres` is dropped and stops the server.
        postgres.wait_ready(opts.ready_timeout)?;
        Ok(postgres)
    }

    /// Rebuild the handle from the `postgres` component of a `cluster.json`. The result is
    /// detached: dropping it stops nothing.
    pub fn from_component(component: &Component) -> Result<Postgres> {
        let port = component
            .extra
            .get("port")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| LabError::Invalid(format!("component {}: no `port` in extra", component.name)))?;
        let data_dir = component
            .extra
            .get("data_dir")
            .and_then(serde_json::Value::as_str)
            .map(PathBuf::from)
            .ok_or_else(|| LabError::Invalid(format!("component {}: no `data_dir` in extra", component.name)))?;
        let addr = component.extra.get("addr").and_then(serde_json::Value::as_str).and_then(|a| a.parse().ok());
        Ok(Postgres {
            addr: addr.unwrap_or(LOOPBACK),
            port,
            data_dir,
            component: component.clone(),
            die_with_parent: false,
            ready_timeout: PostgresOptions::default().ready_timeout,
            detached: true,
        })
    }

    /// `postgres://resizer@127.0.0.1:<port>/resizer`, with the superuser's password when it
    /// has one.
    pub fn url(&self) -> String {
        self.component.urls.get("postgres").cloned().unwrap_or_else(|| url_for(self.addr, self.port, None))
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.port))
    }

    /// The server's component (current pid), for cluster.json.
    pub fn component(&self) -> &Component {
        &self.component
    }

    pub fn state(&self) -> ProcessState {
        self.component.state()
    }

    /// Leave the server running when this handle is dropped.
    pub fn detach(&mut self) {
        self.detached = true;
    }

    /// kill -9 the postmaster and all its children (backends, checkpointer...) and wait until
    /// they are gone. The next start runs crash recovery.
    pub fn kill(&self) -> Result<()> {
        let components = std::slice::from_ref(&self.component);
        // Stopped, the postmaster forks no child between the listing and the kill.
        if !process::send_signal(&self.component, Signal::Stop)? {
            return Ok(());
        }
        let children = children_of(self.component.pid);
        process::send_signal(&self.component, Signal::Kill)?;
        for &child in &children {
            if let Ok(pid) = libc::pid_t::try_from(child) {
                // SAFETY: kill(2) on a child of our postmaster listed while it could not reap
                // (stopped): the pid cannot have been reused since.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        process::wait_gone(components, Duration::from_secs(5))?;
        net::poll_until("PostgreSQL's processes to exit", Duration::from_secs(5), Duration::from_millis(10), || {
            let left: Vec<u32> = children.iter().copied().filter(|&pid| alive(pid)).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("pids {left:?}"))
            }
        })
    }

    /// Fast shutdown (SIGINT to the postmaster: sessions are ended, a shutdown checkpoint is
    /// written) and wait for it to exit; after 15 s, SIGTERM then SIGKILL.
    pub fn stop_gracefully(&self) -> Result<()> {
        let components = std::slice::from_ref(&self.component);
        request_fast_shutdown(&self.component)?;
        if process::wait_gone(components, Duration::from_secs(15)).is_ok() {
            return Ok(());
        }
        process::stop_components(components, Duration::from_secs(2)).map(drop)
    }

    /// Start the server again exactly as before (killing what is left of it first), on the same
    /// port and data, and wait until it accepts connections. Returns the new component, for
    /// cluster.json.
    pub fn restart(&mut self) -> Result<&Component> {
        if !process::group_members(&self.component).is_empty() {
            self.kill()?;
        }
        self.wait_shared_memory_released(Duration::from_secs(10));
        // A killed postmaster whose parent has gone is reaped by whoever adopted it, which may
        // take its time: PostgreSQL sees the zombie's pid in postmaster.pid and refuses to start.
        // Ours is known gone (dead or a zombie), so its lock file is stale.
        if process::process_state(&self.component) == ProcessState::Gone {
            let _ = std::fs::remove_file(self.data_dir.join("postmaster.pid"));
            // The same for the socket's lock file, which names the zombie too.
            if let Some(run) = self.data_dir.parent().map(|p| p.join("run")) {
                for entry in std::fs::read_dir(&run).into_iter().flatten().flatten() {
                    if entry.file_name().to_string_lossy().starts_with(".s.PGSQL.") {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        self.component = process::respawn(&self.component, self.die_with_parent)?;
        self.wait_ready(self.ready_timeout)?;
        Ok(&self.component)
    }

    /// Wait until this server process says `ready` in `postmaster.pid` and its port accepts
    /// connections. Fails at once, with the log's end, if the process is gone.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.component.state() == ProcessState::Gone {
                return Err(LabError::Exited {
                    name: self.component.name.clone(),
                    log: self.component.log.clone(),
                    tail: self.component.log_tail(15),
                });
            }
            let why = match self.readiness() {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if start.elapsed() >= timeout {
                return Err(LabError::Timeout {
                    what: format!("PostgreSQL to accept connections on {}", self.socket_addr()),
                    waited: start.elapsed(),
                    detail: format!("{why}\n{}", self.component.log_tail(15)),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Wait (up to `timeout`, then go on: the new postmaster will say what holds it) until no
    /// process is attached to the old server's System V shared memory segment, named in line 7
    /// of `postmaster.pid`: a backend that outlived a killed postmaster would make the next
    /// start refuse with "pre-existing shared memory block is still in use".
    fn wait_shared_memory_released(&self, timeout: Duration) {
        let Ok(text) = std::fs::read_to_string(self.data_dir.join("postmaster.pid")) else { return };
        let Some(shmid) = text.lines().nth(6).and_then(|l| l.split_whitespace().nth(1)).map(str::to_string) else {
            return;
        };
        let attached =
            || -> Option<u64> {
                let table = std::fs::read_to_string("/proc/sysvipc/shm").ok()?;
                // Columns: key shmid perms size cpid lpid nattch ...
                table.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>()).find_map(|cols| {
                    (cols.get(1) == Some(&shmid.as_str())).then(|| cols.get(6)?.parse().ok()).flatten()
                })
            };
        let _ = net::poll_until(
            "the old server's shared memory to be released",
            timeout,
            Duration::from_millis(10),
            || match attached() {
                Some(n) if n > 0 => Err(format!("{n} processes attached")),
                _ => Ok(()),
            },
        );
    }

    fn readiness(&self) -> std::result::Result<(), String> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let lines: Vec<&str> = text.lines().collect();
        // A file left by a killed server names its pid, not ours.
        if lines.first().map(|l| l.trim()) != Some(self.component.pid.to_string().as_str()) {
            return Err(format!("{} is not our server's yet", pid_file.display()));
        }
        match lines.get(7).map(|l| l.trim()) {
            Some("ready") => {}
            other => return Err(format!("server status {other:?}")),
        }
        if !net::tcp_accepts(self.socket_addr(), Duration::from_millis(250)) {
            return Err(format!("{} refuses connections", self.socket_addr()));
        }
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if let Err(e) = self.stop_gracefully() {
            eprintln!("lab: stopping PostgreSQL: {e}");
        }
    }
}

/// Ask the postmaster of `component` for a fast shutdown (SIGINT, and SIGCONT so that a stopped
/// one acts on it) without waiting. `Ok(false)`: it was already gone. SIGTERM, which `down` sends
/// every component, is PostgreSQL's smart shutdown: it would wait for every client to leave.
pub(crate) fn request_fast_shutdown(component: &Component) -> Result<bool> {
    if component.state() == ProcessState::Gone {
        return Ok(false);
    }
    let pid = libc::pid_t::try_from(component.pid)
        .map_err(|_| LabError::Invalid(format!("pid {} of {} out of range", component.pid, component.name)))?;
    // SAFETY: kill(2) on the pid whose start time `state` just matched to our component.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    process::send_signal(component, Signal::Cont)
}

/// Live processes whose parent is `pid` (`/proc/<pid>/stat` field 4).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat_fields(child).is_some_and(|(state, ppid)| ppid == pid && state != 'Z'))
        .collect()
}

fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

/// State and parent pid from `/proc/<pid>/stat`.
fn stat_fields(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    let mut rest = text[text.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

fn url_for(addr: Ipv4Addr, port: u16, password: Option<&str>) -> String {
    match password {
        Some(password) => format!("postgres://{POSTGRES_USER}:{password}@{addr}:{port}/{POSTGRES_DATABASE}"),
        None => format!("postgres://{POSTGRES_USER}@{addr}:{port}/{POSTGRES_DATABASE}"),
    }
}

/// A plaintext server on the lab's own network: `initdb`'s `pg_hba.conf` lets in loopback only,
/// so the lab's subnet is added (once; the file is kept on a reused DIR).
fn allow_plain_clients(data_dir: &Path, clients: &str, passwords: bool) -> Result<()> {
    let hba = data_dir.join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).map_err(|e| LabError::io("read", &hba, e))?;
    let method = if passwords { "scram-sha-256" } else { "trust" };
    let line = format!("host all all {clients} {method}\n");
    if !text.contains(&line) {
        std::fs::write(&hba, text + &line).map_err(|e| LabError::io("write", &hba, e))?;
    }
    Ok(())
}

/// The unprivileged account the server runs as when we are root.
#[derive(Debug, Clone)]
struct SystemUser {
    name: String,
    uid: u32,
    gid: u32,
}

/// The programs to run and how: directly, or through `setpriv` as [`SystemUser`] when root.
#[derive(Debug)]
struct Programs {
    postgres: PathBuf,
    initdb: PathBuf,
    setpriv: Option<PathBuf>,
    run_as: Option<SystemUser>,
}

impl Programs {
    fn find(opts: &PostgresOptions) -> Result<Programs> {
        let postgres = match &opts.bin_dir {
            Some(d) => binaries::resolve(POSTGRES, Some(&d.join(POSTGRES.program)))?,
            None => binaries::find_postgres_program(POSTGRES.program)
                .ok_or_else(|| LabError::MissingBinaries(vec![POSTGRES]))?,
        };
        // `initdb` next to the real `postgres` (through the /usr/local/bin symlinks), so that both
        // are of one major version.
        let beside = std::fs::canonicalize(&postgres)
            .ok()
            .and_then(|p| p.parent().map(|d| d.join(INITDB.program)))
            .filter(|p| binaries::is_executable(p));
        let initdb = match beside {
            Some(p) => p,
            None => binaries::find_postgres_program(INITDB.program)
                .ok_or_else(|| LabError::MissingBinaries(vec![INITDB]))?,
        };
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            return Ok(Programs { postgres, initdb, setpriv: None, run_as: None });
        }
        let setpriv = binaries::resolve(SETPRIV, None)?;
        let run_as = lookup_user(&opts.system_user)?;
        Ok(Programs { postgres, initdb, setpriv: Some(setpriv), run_as: Some(run_as) })
    }

    /// The program and arguments that run `program args` as the right user.
    fn command(&self, program: &Path, args: Vec<String>) -> (PathBuf, Vec<String>) {
        match (&self.setpriv, &self.run_as) {
            (Some(setpriv), Some(user)) => {
                let mut all = vec![
                    format!("--reuid={}", user.uid),
                    format!("--regid={}", user.gid),
                    "--init-groups".into(),
                    // Restores the parent-death signal the uid change clears (tests' processes
                    // must die with the test).
                    "--pdeathsig=keep".into(),
                    "--".into(),
                    program.display().to_string(),
                ];
                all.extend(args);
                (setpriv.clone(), all)
            }
            _ => (program.to_path_buf(), args),
        }
    }

    /// `initdb` (superuser `resizer`, UTF-8, C collation; trust authentication, or passwords
    /// over TCP with [`PostgresAccess::superuser_password`]), then the `resizer` database and
    /// [`PostgresAccess::setup`] in single-user mode. Output is appended to the server's log.
    fn initdb(&self, data_dir: &Path, own_dir: &Path, access: &PostgresAccess, log: &Path) -> Result<()> {
        let data = data_dir.display().to_string();
        let mut args: Vec<String> =
            ["-D", &data, "-U", POSTGRES_USER, "-E", "UTF8", "--locale=C", "--no-sync"].map(String::from).into();
        // The password goes through a file (never a command line), removed once initdb has it.
        let pwfile = own_dir.join("superuser.pw");
        match &access.superuser_password {
            Some(password) => {
                std::fs::write(&pwfile, password).map_err(|e| LabError::io("write", &pwfile, e))?;
                std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| LabError::io("chmod", &pwfile, e))?;
                if let Some(user) = &self.run_as {
                    std::os::unix::fs::chown(&pwfile, Some(user.uid), Some(user.gid))
                        .map_err(|e| LabError::io("chown", &pwfile, e))?;
                }
                args.extend(["--auth-local=trust".into(), "--auth-host=scram-sha-256".into()]);
                args.push(format!("--pwfile={}", pwfile.display()));
            }
            None => args.push("--auth=trust".into()),
        }
        let made = self.run_to_log("initdb", &self.initdb, args, None, log);
        let _ = std::fs::remove_file(&pwfile);
        made?;
        let single = ["--single", "-D", &data, "-c", "exit_on_error=on", "template1"].map(String::from).into();
        self.run_to_log(
            "postgres --single",
            &self.postgres,
            single,
            Some(format!("CREATE DATABASE {POSTGRES_DATABASE};\n")),
            log,
        )
    }

    /// [`PostgresAccess::setup`] and the superuser's password (again on a reused DIR, whose
    /// passwords are new), in single-user mode before the server starts.
    fn set_up_access(&self, data_dir: &Path, access: &PostgresAccess, log: &Path) -> Result<()> {
        let mut statements: Vec<String> = access
            .superuser_password
            .iter()
            .map(|password| format!("ALTER ROLE {POSTGRES_USER} PASSWORD '{}'", password.replace('\'', "''")))
            .collect();
        statements.extend(access.setup.iter().map(|s| s.replace('\n', " ")));
        if statements.is_empty() {
            return Ok(());
        }
        let data = data_dir.display().to_string();
        let single = ["--single", "-D", &data, "-c", "exit_on_error=on", POSTGRES_DATABASE].map(String::from).into();
        let input: String = statements.iter().map(|s| format!("{s}\n")).collect();
        self.run_to_log("postgres --single (logins)", &self.postgres, single, Some(input), log)
    }

    fn run_to_log(
        &self,
        what: &str,
        program: &Path,
        args: Vec<String>,
        stdin: Option<String>,
        log: &Path,
    ) -> Result<()> {
        let open = || {
            std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| LabError::io("open", log, e))
        };
        let (program, args) = self.command(program, args);
        let mut child = Command::new(&program)
            .args(&args)
            // initdb picks the messages' language from the environment; the data's locale is set.
            .env("LC_ALL", "C")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(open()?)
            .stderr(open()?)
            .spawn()
            .map_err(|source| LabError::Spawn { name: what.to_string(), program: program.clone(), source })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(text.as_bytes()).map_err(|e| LabError::io("write the input of", &program, e))?;
        }
        let status = child.wait().map_err(|e| LabError::io("wait for", &program, e))?;
        if status.success() {
            Ok(())
        } else {
            Err(LabError::Exited { name: what.to_string(), log: log.to_path_buf(), tail: process::log_tail(log, 15) })
        }
    }
}

/// The server's copy of its certificate and key in `own_dir` (PostgreSQL refuses a key file
/// that others may read, and must own it when it runs as its own user) and a `pg_hba.conf` that
/// takes TCP connections over TLS only (`hostssl`; the Unix socket stays `trust` for local
/// administration). Returns the settings that point the server at them.
fn install_tls(
    own_dir: &Path,
    cert: &crate::pki::CertFiles,
    passwords: bool,
    clients: Option<&str>,
    run_as: Option<&SystemUser>,
) -> Result<Vec<String>> {
    let server_cert = own_dir.join("server.crt");
    let server_key = own_dir.join("server.key");
    let hba = own_dir.join("pg_hba.conf");
    let copy = |from: &Path, to: &Path| std::fs::copy(from, to).map_err(|e| LabError::io("copy", from, e));
    copy(&cert.cert, &server_cert)?;
    copy(&cert.key, &server_key)?;
    // With passwords (PostgresAccess), every TCP login proves its own; the socket stays the
    // lab's (the server's system user only).
    let method = if passwords { "scram-sha-256" } else { "trust" };
    let mut lines = format!(
        "# written by the lab: TCP only over TLS\n\
         local   all all                trust\n\
         hostssl all all 127.0.0.1/32   {method}\n\
         hostssl all all ::1/128        {method}\n"
    );
    if let Some(clients) = clients {
        lines += &format!("hostssl all all {clients} {method}\n");
    }
    std::fs::write(&hba, lines).map_err(|e| LabError::io("write", &hba, e))?;
    for (file, mode) in [(&server_cert, 0o644), (&server_key, 0o600), (&hba, 0o600)] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
            .map_err(|e| LabError::io("chmod", file, e))?;
        if let Some(user) = run_as {
            std::os::unix::fs::chown(file, Some(user.uid), Some(user.gid))
                .map_err(|e| LabError::io("chown", file, e))?;
        }
    }
    Ok(vec![
        "ssl=on".into(),
        format!("ssl_cert_file={}", server_cert.display()),
        format!("ssl_key_file={}", server_key.display()),
        format!("hba_file={}", hba.display()),
    ])
}

/// Add the search bit for others to `dir` (when root, so that the server's user can reach its
/// data inside DIR; it still cannot list DIR).
fn allow_search(dir: &Path) -> Result<()> {
    let mode = std::fs::metadata(dir).map_err(|e| LabError::io("stat", dir, e))?.permissions().mode();
    if mode & 0o001 == 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o001))
            .map_err(|e| LabError::io("chmod o+x", dir, e))?;
    }
    Ok(())
}

/// The uid and gid of `name` from the system's user database.
fn lookup_user(name: &str) -> Result<SystemUser> {
    let missing = || {
        LabError::Invalid(format!(
            "no system user `{name}` to run PostgreSQL as (it refuses to run as root); the Debian package \
             `postgresql` creates it"
        ))
    };
    let c_name = CString::new(name).map_err(|_| missing())?;
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwnam_r writes only into it and `buf`,
    // whose true length it is given, and `result` points at `pwd` or is null.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(missing());
    }
    Ok(SystemUser { name: name.to_string(), uid: pwd.pw_uid, gid: pwd.pw_gid })
}
