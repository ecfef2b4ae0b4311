//! HAProxy in front of the api nodes: config generation, start, reload, stop, server states.
//!
//! Runs Debian's haproxy (2.6 on Debian 12) in master-worker mode (`-W`) in the foreground: the
//! master's pid stays the component's pid across reloads (SIGUSR2 to the master re-reads the
//! config; the new worker takes over the listening sockets). Health checks are `GET /readyz`
//! every `check_interval`; a server is out after `fall` failed checks and back after `rise`
//! good ones. A second frontend on its own port serves `/stats` (`/stats;csv` for machines) and
//! `/metrics` (HAProxy's Prometheus exporter); it never carries api traffic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::binaries::{self, HAPROXY};
use crate::error::{LabError, Result};
use crate::net::{self, LOOPBACK};
use crate::process::{self, Component, ProcessSpec, ProcessState, Signal};

/// The role recorded in HAProxy's [`Component`].
pub const HAPROXY_ROLE: &str = "haproxy";
/// The backend (HAProxy's name for a server pool) the api nodes are in.
pub const BACKEND_NAME: &str = "api_nodes";

/// One server behind HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// HAProxy's server name (letters, digits, `-`, `_`, `.`, `:`): use the component name.
    pub name: String,
    pub addr: SocketAddr,
    /// It serves TLS with a certificate of the lab's CA for `name`: HAProxy speaks TLS to it
    /// (with [`HaproxyOptions::tls`]), checking that.
    pub tls: bool,
}

impl Backend {
    /// A plain-HTTP server.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        Backend { name: name.into(), addr, tls: false }
    }

    /// A server speaking TLS with a certificate for `name`.
    pub fn tls(name: impl Into<String>, addr: SocketAddr) -> Self {
        Backend { name: name.into(), addr, tls: true }
    }
}

/// The `defaults` lines that make HAProxy's own answers — no server up (503), a server gone
/// before its answer began (502) or silent past `timeout server` (504) —
/// `application/problem+json` like every answer of the api, with a request id of their own
/// (HAProxy's `unique-id`, a UUID) in the body and in `X-Request-Id`, and in the log
/// line (the `option httplog` format with `%ID` at the end, which these lines replace it by).
/// `deploy/haproxy.cfg` carries the same lines (a test checks). Not covered: what HAProxy 2.6
/// answers before a request is parsed — a malformed head or one over its buffer (HTML 400), a
/// head slower than `timeout http-request` (HTML 408).
pub const PROBLEM_ERRORS: &str = concat!(
    r#"    log-format "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r %ID""#,
    "\n",
    "    unique-id-format %[uuid()]\n",
    r#"    http-error status 502 content-type application/problem+json hdr cache-control no-store hdr x-request-id "%[unique-id]" lf-string "{\"type\":\"urn:resizer:problem:bad-gateway\",\"title\":\"Bad gateway\",\"status\":502,\"detail\":\"The server closed the connection before answering.\",\"request_id\":\"%[unique-id]\"}""#,
    "\n",
    r#"    http-error status 503 content-type application/problem+json hdr cache-control no-store hdr x-request-id "%[unique-id]" hdr retry-after 1 hdr retry-after-ms 1000 lf-string "{\"type\":\"urn:resizer:problem:service-unavailable\",\"title\":\"Service unavailable\",\"status\":503,\"detail\":\"No server behind the load balancer is up; retry shortly.\",\"request_id\":\"%[unique-id]\",\"retry_after_ms\":1000}""#,
    "\n",
    r#"    http-error status 504 content-type application/problem+json hdr cache-control no-store hdr x-request-id "%[unique-id]" lf-string "{\"type\":\"urn:resizer:problem:gateway-timeout\",\"title\":\"Gateway timeout\",\"status\":504,\"detail\":\"The server did not answer in time.\",\"request_id\":\"%[unique-id]\"}""#,
    "\n",
);

/// The public frontend's refusal of `/metrics` (api nodes serve their metrics on the public
/// port for the monitoring network; customers get the api's own 404 problem for it).
/// `deploy/haproxy.cfg` carries the same line.
pub const METRICS_REFUSAL: &str = r#"    http-request deny status 404 content-type application/problem+json hdr cache-control no-store hdr x-request-id "%[unique-id]" lf-string "{\"type\":\"urn:resizer:problem:not-found\",\"title\":\"Not found\",\"status\":404,\"detail\":\"No such route.\",\"request_id\":\"%[unique-id]\"}" if { path /metrics } || { path_beg /metrics/ }
"#;

/// TLS at the load balancer: the public frontend terminates it, a plain-HTTP port only
/// redirects to it, and the api nodes are reached over TLS checked against the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyTls {
    /// The certificate chain and its key in one PEM file (HAProxy's `crt`), mode 0600.
    pub bundle: PathBuf,
    /// The CA the api nodes' certificates are checked against (`ca-file`), each for its server
    /// name (`verifyhost`).
    pub ca_file: PathBuf,
}

/// How HAProxy balances and checks.
#[derive(Debug, Clone)]
pub struct HaproxyOptions {
    /// Component and log name.
    pub name: String,
    /// Time between health checks of a server (also the check's timeout).
    pub check_interval: Duration,
    /// Failed checks in a row before a server is taken out.
    pub fall: u32,
    /// Good checks in a row before it is put back.
    pub rise: u32,
    /// The health-check path (200 = ready).
    pub check_path: String,
    /// Serve `/stats` and `/metrics` on a separate port.
    pub stats: bool,
    pub timeout_connect: Duration,
    /// Idle client and server timeouts: longer than the slowest resize.
    pub timeout_client: Duration,
    pub timeout_server: Duration,
    /// `haproxy` to run; found on PATH or in /usr/sbin when `None`.
    pub binary: Option<PathBuf>,
    pub die_with_parent: bool,
    /// `nbthread`: HAProxy's own default is one thread per core, but in the lab it shares the
    /// machine with every other process, and one thread carries far more than the lab's api
    /// nodes answer.
    pub threads: usize,
    /// None: plain HTTP to clients and to the api nodes.
    pub tls: Option<HaproxyTls>,
}

impl Default for HaproxyOptions {
    fn default() -> Self {
        HaproxyOptions {
            name: "haproxy".into(),
            check_interval: Duration::from_millis(500),
            fall: 2,
            rise: 1,
            check_path: "/readyz".into(),
            stats: true,
            timeout_connect: Duration::from_secs(1),
            timeout_client: Duration::from_secs(60),
            timeout_server: Duration::from_secs(60),
            binary: None,
            die_with_parent: false,
            threads: 1,
            tls: None,
        }
    }
}

/// A running HAProxy. Dropping it stops it unless [`detach`](Haproxy::detach)ed.
#[derive(Debug)]
pub struct Haproxy {
    /// The public frontend: HTTPS with TLS on, else HTTP.
    pub frontend_port: u16,
    /// With TLS on: plain HTTP that only redirects to the frontend.
    pub redirect_port: Option<u16>,
    pub stats_port: Option<u16>,
    /// `DIR/<name>/haproxy.cfg`
    pub config: PathBuf,
    backends: Vec<Backend>,
    opts: HaproxyOptions,
    binary: PathBuf,
    component: Component,
    detached: bool,
}

/// The state of one server as HAProxy's stats report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub name: String,
    /// `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/1` (coming up), `MAINT`, `no check`...
    pub status: String,
}

impl ServerState {
    /// Fully up (not merely transitioning).
    pub fn is_up(&self) -> bool {
        self.status == "UP"
    }

    /// Receiving requests: up, or up but failing checks (`UP 1/2`: not yet `fall` failures), or
    /// not checked at all.
    pub fn in_rotation(&self) -> bool {
        self.status.starts_with("UP") || self.status == "no check"
    }
}

impl Haproxy {
    /// Write the config to `DIR/<name>/haproxy.cfg`, have `haproxy -c` check it, start HAProxy on a
    /// free port and wait until its frontend (and stats port) accept connections. Servers start
    /// DOWN until their first good check: see [`wait_servers`](Haproxy::wait_servers).
    pub fn start(dir: &Path, backends: &[Backend], opts: &HaproxyOptions) -> Result<Haproxy> {
        let binary = binaries::resolve(HAPROXY, opts.binary.as_deref())?;
        validate(backends, opts)?;
        let ports = net::free_ports(3)?;
        let frontend_port = ports[0];
        let stats_port = opts.stats.then_some(ports[1]);
        let redirect_port = opts.tls.is_some().then_some(ports[2]);
        let own_dir = dir.join(&opts.name);
        std::fs::create_dir_all(&own_dir).map_err(|e| LabError::io("create", &own_dir, e))?;
        let config = own_dir.join("haproxy.cfg");
        let ports = Ports { frontend: frontend_port, stats: stats_port, redirect: redirect_port };
        write_checked(&binary, &config, &render_config(ports, backends, opts))?;

        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{LOOPBACK}:{frontend_port}");
        let mut spec = ProcessSpec::new(HAPROXY_ROLE, &opts.name, &binary)
            .args(["-W".to_string(), "-f".to_string(), config.display().to_string()])
            .cwd(&own_dir)
            .url("http", &url)
            .extra("frontend_port", frontend_port)
            .extra("config", config.display().to_string())
            .extra("backends", backends.iter().map(|b| format!("{}={}", b.name, b.addr)).collect::<Vec<_>>())
            .die_with_parent(opts.die_with_parent);
        if let Some(port) = stats_port {
            let stats = format!("http://{LOOPBACK}:{port}");
            spec = spec
                .url("stats", format!("{stats}/stats"))
                .url("metrics", format!("{stats}/metrics"))
                .health(format!("{stats}/stats;csv"))
                .extra("stats_port", port);
        }
        if let Some(port) = redirect_port {
            spec = spec.url("redirect", format!("http://{LOOPBACK}:{port}")).extra("redirect_port", port);
        }
        let component = process::start_process(dir, &spec)?;
        let haproxy = Haproxy {
            frontend_port,
            redirect_port,
            stats_port,
            config,
            backends: backends.to_vec(),
            opts: opts.clone(),
            binary,
            component,
            detached: false,
        };
        // One worker binds both; probing the stats port keeps a `<BADREQ>` line out of the log.
        haproxy.wait_port(stats_port.unwrap_or(frontend_port), Duration::from_secs(10))?;
        Ok(haproxy)
    }

    /// `https://127.0.0.1:<frontend port>` (`http://` without TLS): where clients send requests.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{LOOPBACK}:{}", self.frontend_port)
    }

    pub fn frontend_addr(&self) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.frontend_port))
    }

    /// `http://127.0.0.1:<stats port>/stats` (add `;csv` for machines).
    pub fn stats_url(&self) -> Option<String> {
        self.stats_port.map(|p| format!("http://{LOOPBACK}:{p}/stats"))
    }

    /// `http://127.0.0.1:<stats port>/metrics`: Prometheus text.
    pub fn metrics_url(&self) -> Option<String> {
        self.stats_port.map(|p| format!("http://{LOOPBACK}:{p}/metrics"))
    }

    pub fn component(&self) -> &Component {
        &self.component
    }

    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// Leave HAProxy running when this handle is dropped.
    pub fn detach(&mut self) {
        self.detached = true;
    }

    /// Replace the backends: rewrite the config (checked with `haproxy -c` first; a refused one
    /// leaves the running HAProxy untouched), SIGUSR2 to the master, and wait until the stats
    /// list exactly the new servers. Ports stay the same.
    pub fn reload(&mut self, backends: &[Backend]) -> Result<()> {
        validate(backends, &self.opts)?;
        let ports = Ports { frontend: self.frontend_port, stats: self.stats_port, redirect: self.redirect_port };
        let text = render_config(ports, backends, &self.opts);
        write_checked(&self.binary, &self.config, &text)?;
        self.backends = backends.to_vec();
        self.component.extra.insert(
            "backends".into(),
            backends.iter().map(|b| format!("{}={}", b.name, b.addr)).collect::<Vec<_>>().into(),
        );
        if !process::signal_leader(&self.component, Signal::Usr2)? {
            return Err(exited(&self.component));
        }
        if self.stats_port.is_none() {
            return Ok(());
        }
        let mut want: Vec<String> = backends.iter().map(|b| b.name.clone()).collect();
        want.sort();
        net::poll_until(
            "HAProxy to serve the reloaded configuration",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                let mut have: Vec<String> =
                    self.server_states().map_err(|e| e.to_string())?.into_iter().map(|s| s.name).collect();
                have.sort();
                if have == want {
                    Ok(())
                } else {
                    Err(format!("stats list {have:?}, want {want:?}"))
                }
            },
        )
    }

    /// Each server's state from `/stats;csv`. Needs `stats` on.
    pub fn server_states(&self) -> Result<Vec<ServerState>> {
        server_states_at(&self.stats_url().ok_or_else(|| LabError::Invalid("HAProxy runs without stats".into()))?)
    }

    /// Wait until the servers named in `up` are fully UP and every other server is out of
    /// rotation (DOWN, MAINT...: not even `UP 1/2`).
    pub fn wait_servers(&self, up: &[&str], timeout: Duration) -> Result<()> {
        net::poll_until(&format!("HAProxy to see exactly {up:?} up"), timeout, Duration::from_millis(50), || {
            let states = self.server_states().map_err(|e| e.to_string())?;
            let ok = states.iter().all(|s| if up.contains(&s.name.as_str()) { s.is_up() } else { !s.in_rotation() });
            if ok {
                Ok(())
            } else {
                Err(format!("{states:?}"))
            }
        })
    }

    /// SIGTERM (then SIGKILL) HAProxy's process group: master and workers.
    pub fn stop(&mut self) -> Result<()> {
        process::stop_components(std::slice::from_ref(&self.component), Duration::from_secs(3))?;
        Ok(())
    }

    fn wait_port(&self, port: u16, timeout: Duration) -> Result<()> {
        let addr = SocketAddr::from((LOOPBACK, port));
        let start = Instant::now();
        while !net::tcp_accepts(addr, Duration::from_millis(200)) {
            if self.component.state() == ProcessState::Gone {
                return Err(exited(&self.component));
            }
            if start.elapsed() >= timeout {
                return Err(LabError::Timeout {
                    what: format!("HAProxy to listen on {addr}"),
                    waited: start.elapsed(),
                    detail: self.component.log_tail(15),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        if let Err(e) = self.stop() {
            eprintln!("lab: stopping HAProxy: {e}");
        }
    }
}

fn exited(c: &Component) -> LabError {
    LabError::Exited { name: c.name.clone(), log: c.log.clone(), tail: c.log_tail(15) }
}

fn validate(backends: &[Backend], opts: &HaproxyOptions) -> Result<()> {
    let good_name = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    for b in backends {
        if !good_name(&b.name) {
            return Err(LabError::Invalid(format!("HAProxy server name {:?}: use letters, digits, - _ . :", b.name)));
        }
    }
    let mut names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(LabError::Invalid("two HAProxy servers with the same name".into()));
    }
    if !opts.check_path.starts_with('/') || opts.check_path.contains(char::is_whitespace) {
        return Err(LabError::Invalid(format!("health-check path {:?}", opts.check_path)));
    }
    if opts.check_interval.is_zero() || opts.fall == 0 || opts.rise == 0 {
        return Err(LabError::Invalid("check interval, fall and rise must be positive".into()));
    }
    Ok(())
}

/// Write `text` to a temporary file, have `haproxy -c` accept it, then rename it over `path`.
fn write_checked(binary: &Path, path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("cfg.new");
    std::fs::write(&tmp, text).map_err(|e| LabError::io("write", &tmp, e))?;
    let output = Command::new(binary)
        .args(["-c", "-q", "-f"])
        .arg(&tmp)
        .output()
        .map_err(|source| LabError::Spawn { name: "haproxy -c".into(), program: binary.to_path_buf(), source })?;
    if !output.status.success() {
        let mut out = String::from_utf8_lossy(&output.stdout).into_owned();
        out.push_str(&String::from_utf8_lossy(&output.stderr));
        return Err(LabError::HaproxyConfig { path: tmp, output: out });
    }
    std::fs::rename(&tmp, path).map_err(|e| LabError::io("rename into place", path, e))
}

fn ms(d: Duration) -> u128 {
    d.as_millis().max(1)
}

/// The configuration: one HTTP frontend on loopback, one backend with `/readyz` checks balanced
/// `leastconn` as in `deploy/haproxy.cfg` (so that what the lab measures, such as tenants'
/// shared rate limits, holds for the production balance; servers with equal loads take turns),
/// and (with `stats_port`) a stats/metrics frontend. Only abnormal requests and server state
/// changes are logged (to stdout: the component's log), so logging costs nothing under load.
pub fn render_config(ports: Ports, backends: &[Backend], opts: &HaproxyOptions) -> String {
    let (frontend_port, stats_port) = (ports.frontend, ports.stats);
    let inter = ms(opts.check_interval);
    let quote = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
    // To the api nodes over TLS, each certificate checked against the CA and for the server's
    // name (the lab issues each node's for its name); health checks go the same way.
    let server_tls = |b: &Backend| match &opts.tls {
        Some(tls) if b.tls => format!(" ssl verify required ca-file {} verifyhost {}", quote(&tls.ca_file), b.name),
        _ => String::new(),
    };
    let bind_tls = match &opts.tls {
        Some(tls) => format!(" ssl crt {}", quote(&tls.bundle)),
        None => String::new(),
    };
    let redirect = match ports.redirect {
        Some(port) => format!(
            "\nfrontend public_http\n    \
             bind {LOOPBACK}:{port}\n    \
             # plain HTTP only sends clients to HTTPS (308 keeps a POST a POST)\n    \
             http-request redirect prefix https://{LOOPBACK}:{frontend_port} code 308\n"
        ),
        None => String::new(),
    };
    let servers: String = backends
        .iter()
        .map(|b| {
            let addr = match b.addr {
                SocketAddr::V4(a) => a.to_string(),
                SocketAddr::V6(a) => format!("ipv6@{}:{}", a.ip(), a.port()),
            };
            format!("    server {} {addr} check{}\n", b.name, server_tls(b))
        })
        .collect::<Vec<_>>()
        .concat();
    let stats = match stats_port {
        Some(port) => format!(
            "\nfrontend stats\n    \
             bind {LOOPBACK}:{port}\n    \
             no log\n    \
             http-request use-service prometheus-exporter if {{ path /metrics }}\n    \
             stats enable\n    \
             stats uri /stats\n    \
             stats refresh 2s\n"
        ),
        None => String::new(),
    };
    format!(
        "# The lab's load balancer, written by the lab crate (regenerated on reload).\n\
         global\n    \
         log stdout format raw local0 info\n    \
         # old workers finish in-flight requests after a reload, for at most this long\n    \
         hard-stop-after 30s\n    \
         nbthread {threads}\n\
         \n\
         defaults\n    \
         mode http\n    \
         log global\n    \
         option dontlog-normal\n    \
         # a connection refused by a dead node is retried on another one\n    \
         option redispatch 1\n    \
         retries 2\n    \
         timeout connect {connect}ms\n    \
         timeout client {client}ms\n    \
         timeout server {server}ms\n    \
         timeout check {inter}ms\n\
         {PROBLEM_ERRORS}\
         \n\
         # named as in deploy/haproxy.cfg, whose name the dashboard selects\n\
         frontend public\n    \
         bind {LOOPBACK}:{frontend_port}{bind_tls}\n\
         {METRICS_REFUSAL}    \
         default_backend {BACKEND_NAME}\n\
         {redirect}\
         \n\
         backend {BACKEND_NAME}\n    \
         balance leastconn\n    \
         # the body (up to a buffer) is read before HAProxy decides, so its own early answer (503:\n    \
         # no server up) reaches a client still sending a small upload instead of a reset\n    \
         option http-buffer-request\n    \
         option httpchk GET {path}\n    \
         http-check expect status 200\n    \
         default-server inter {inter}ms fastinter {inter}ms downinter {inter}ms fall {fall} rise {rise}\n\
         {servers}{stats}",
        connect = ms(opts.timeout_connect),
        client = ms(opts.timeout_client),
        server = ms(opts.timeout_server),
        path = opts.check_path,
        fall = opts.fall,
        rise = opts.rise,
        threads = opts.threads.max(1),
    )
}

/// The ports a config binds.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub frontend: u16,
    pub stats: Option<u16>,
    /// Plain HTTP redirecting to the frontend (with TLS).
    pub redirect: Option<u16>,
}

/// The `api_nodes` servers of a `/stats;csv` document.
/// Each server's state from the `/stats` page at `stats_url` (the component's `stats` URL in
/// cluster.json), for a process that holds no [`Haproxy`] handle.
pub fn server_states_at(stats_url: &str) -> Result<Vec<ServerState>> {
    let url = format!("{stats_url};csv");
    let answer = net::http_get(&url, Duration::from_secs(1))?;
    if answer.status != 200 {
        return Err(LabError::BadAnswer { url, message: format!("status {}", answer.status) });
    }
    parse_stats_csv(&answer.body).ok_or(LabError::BadAnswer { url, message: "no pxname/svname/status columns".into() })
}

fn parse_stats_csv(csv: &str) -> Option<Vec<ServerState>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches('#').trim().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (px, sv, st) = (col("pxname")?, col("svname")?, col("status")?);
    Some(
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.get(px) == Some(&BACKEND_NAME) && !matches!(f.get(sv), Some(&"FRONTEND" | &"BACKEND") | None))
            .map(|f| ServerState { name: f[sv].to_string(), status: f.get(st).unwrap_or(&"").to_string() })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_bodies_are_json_problems() {
        let bodies: Vec<String> = PROBLEM_ERRORS
            .lines()
            .filter_map(|line| line.split_once(" lf-string \"").map(|(_, body)| body.trim_end_matches('"').to_owned()))
            .collect();
        assert_eq!(bodies.len(), 3, "{PROBLEM_ERRORS}");
        for body in bodies {
            // As HAProxy renders it: `\"` is a quote, `%[unique-id]` a UUID.
            let body = body.replace("\\\"", "\"").replace("%[unique-id]", "00000000-0000-4000-8000-000000000000");
            let problem: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
            for field in ["type", "title", "detail", "request_id"] {
                assert!(problem[field].is_string(), "{field} in {body}");
            }
            assert!(problem["type"].as_str().is_some_and(|t| t.starts_with("urn:resizer:problem:")), "{body}");
            assert!(problem["status"].as_u64().is_some_and(|s| (500..600).contains(&s)), "{body}");
        }
    }

    #[test]
    fn stats_csv_servers() {
        let csv = "# pxname,svname,qcur,status,\npublic,FRONTEND,,OPEN,\napi_nodes,api-0,0,UP,\napi_nodes,api-1,0,DOWN 1/2,\napi_nodes,BACKEND,0,UP,\n";
        let states = parse_stats_csv(csv).expect("parses");
        assert_eq!(
            states,
            vec![
                ServerState { name: "api-0".into(), status: "UP".into() },
                ServerState { name: "api-1".into(), status: "DOWN 1/2".into() }
            ]
        );
    }

    #[test]
    fn config_has_checks_and_servers() {
        let b = [Backend::new("api-0", "127.0.0.1:9000".parse().expect("addr"))];
        let text =
            render_config(Ports { frontend: 8080, stats: Some(8081), redirect: None }, &b, &HaproxyOptions::default());
        assert!(text.contains("option httpchk GET /readyz"));
        assert!(text.contains("nbthread 1"), "one thread unless told otherwise");
        assert!(text.contains("inter 500ms fastinter 500ms downinter 500ms fall 2 rise 1"));
        assert!(text.contains("server api-0 127.0.0.1:9000 check"));
        assert!(text.contains("bind 127.0.0.1:8081"));
    }
}
