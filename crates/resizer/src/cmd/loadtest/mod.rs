//! `resizer loadtest`: the project's own HTTP load generator. It sends one request (method, headers,
//! bodies taken in turn) to one plain-HTTP URL, over keep-alive HTTP/1.1 connections, for a fixed
//! time, and prints throughput, status counts and the latency distribution; `--json` prints the
//! same as one object, `--report` writes it as a self-contained HTML page with charts.
//!
//! Why our own: the benchmarks need a generator that runs on the server's machine without taking
//! its cores (one tokio thread by default), that knows our bodies are images read from a folder,
//! and whose open-loop latencies are corrected for coordinated omission.
//!
//! Three pacings:
//! - closed loop (default): each of `--concurrency` connections sends its next request as soon as
//!   the previous one is answered; latency runs from sending to the last body byte.
//! - open loop (`--rate`): requests are due on a fixed schedule, one every 1/rate s. A connection
//!   that is free takes the next due request; when all are busy, the due request waits for the
//!   first to free up and its latency runs from its *scheduled* time, not from when it could be
//!   sent (coordinated-omission correction: a slow server is not excused by the generator having
//!   waited for it). Nothing is dropped; requests still waiting when the run ends are reported as
//!   `unsent`, which says the schedule was more than the connections could carry.
//! - ramp (`--ramp FROM:TO:STEP`): open-loop runs at rising rates, each with its own warm-up and
//!   statistics, up to the first rate whose p99 goes over the SLO (or that fails requests). The
//!   tipping point is the highest rate that held: what capacity planning divides by.
//!
//! Everything is bounded: at most `--concurrency` requests in flight, no queue (the schedule is a
//! counter), latencies go into a fixed-size histogram and per-second windows into at most
//! `series::MAX_WINDOWS` small ones, whatever the duration.

mod histogram;
mod report;
mod series;
mod summary;
mod svg;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::header::{CONNECTION, TRANSFER_ENCODING};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use histogram::LatencyHistogram;
use series::{Event, TimeSeries};
use summary::{Objective, RampSummary, StepSummary, Summary, Totals};

#[derive(Args, Debug)]
pub struct LoadtestArgs {
    /// Target: http://host[:port]/path?query, or https:// with `--ca-file`. `{file}` in it is
    /// replaced, request by request, by the file name of the body taken (URL-encoded): for
    /// servers that read the image from their own disk by name, with `--method GET`.
    #[arg(long)]
    url: String,
    /// For an https:// URL: the CA certificate (PEM) the server's certificate must be signed by
    /// (e.g. a lab's DIR/tls/ca.pem). Each connection makes one handshake, then keeps alive.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// API key, sent as `Authorization: Bearer KEY`.
    #[arg(long)]
    key: Option<String>,
    /// HTTP method. GET and HEAD requests carry no body.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Extra request header (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request body: a file, or a folder whose files (sorted by name, not recursive) are all used.
    /// Repeatable; requests take the bodies in turn. Sent as application/octet-stream.
    #[arg(long = "body", visible_alias = "images", value_name = "FILE_OR_DIR")]
    bodies: Vec<PathBuf>,
    /// Request targets, one per line (`/v1/img/…`), taken in turn on the URL's host instead of
    /// its path: for signed URLs, each naming its own image.
    #[arg(long, value_name = "FILE")]
    paths: Option<PathBuf>,
    /// Connections. In open loop (--rate, --ramp) also the most requests in flight: give it at
    /// least rate × the latency you accept (e.g. 256 for 500 req/s at 500 ms).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open loop: requests per second on a fixed schedule. Without it (and without --ramp): closed loop.
    #[arg(long, conflicts_with = "ramp")]
    rate: Option<f64>,
    /// Open-loop ramp: rates FROM, FROM+STEP, ... up to TO requests/s, each run for --duration after
    /// its own --warmup with its own statistics. Stops after the first rate that does not hold
    /// (p99 over --slo, more than --max-failed-percent failed, or due requests left unsent).
    #[arg(long, value_name = "FROM:TO:STEP")]
    ramp: Option<String>,
    /// Measured time, after the warm-up (per step in a ramp): seconds, or 500ms, 10s, 2m.
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    duration: f64,
    /// Load before measuring (connections opened, caches and pools warmed): seconds, or 500ms, 2s.
    #[arg(long, default_value = "1", value_parser = parse_seconds)]
    warmup: f64,
    /// The latency objective: a ramp step holds while its p99 is at most this (500ms, 1s, ...).
    #[arg(long, default_value = "500ms", value_parser = parse_seconds)]
    slo: f64,
    /// Failed requests (non-2xx answers or no answer) a ramp step may have and still hold, in
    /// percent of its requests.
    #[arg(long, default_value_t = 1.0)]
    max_failed_percent: f64,
    /// Stop after this many measured responses (the run still ends at --duration; per step in a ramp).
    #[arg(long)]
    requests: Option<u64>,
    /// Tokio worker threads of the generator; few, so it leaves the cores to a server on the same machine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the result as one self-contained HTML file (inline SVG charts, no scripts, no
    /// network needed to view it).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
}

/// What to send, where, and for how long: everything the load loop needs, built from the command
/// line by `config_from_args` or directly by tests.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: Target,
    pub method: Method,
    /// Sent with every request, after our defaults (Host, Content-Type), which a header of the same
    /// name replaces. Includes `Authorization` when a key was given.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Taken in turn, one per request; empty means requests without a body.
    pub bodies: Vec<Body>,
    /// Request targets taken in turn instead of the URL's path; empty: the URL's.
    pub paths: Vec<String>,
    pub concurrency: usize,
    pub pacing: Pacing,
    pub warmup: Duration,
    pub duration: Duration,
    pub max_requests: Option<u64>,
    pub progress: Progress,
    /// For an https target: the client's TLS configuration (trusting one CA).
    pub tls: Option<Arc<tls::ClientConfig>>,
}

/// One body file: its name fills `{file}` in the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub name: String,
    pub bytes: Bytes,
}

/// How the run shows itself on stderr while it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Off,
    /// A terminal: one bar with a live summary, rewritten every second.
    Bar {
        label: String,
    },
    /// A pipe or a file: a plain line every few seconds.
    Lines {
        label: String,
    },
}

/// Between two plain progress lines.
const PROGRESS_LINE_EVERY: Duration = Duration::from_secs(5);

/// An HTTP or HTTPS target, split into what the connection and the request line need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// https://: TLS on each connection.
    pub https: bool,
    /// Host name or IP address, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written in the URL: the Host header.
    pub authority: String,
    /// Origin-form request target, e.g. `/v1/resize?width=64`; `{file}` stays as `FILE_SLOT`.
    pub path_and_query: String,
}

/// `{file}` as it stands in a parsed URL: braces are not URL characters, so it is kept encoded.
const FILE_SLOT: &str = "%7Bfile%7D";

impl Target {
    /// The URL as given (with `{file}`).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path_and_query.replace(FILE_SLOT, "{file}"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    ClosedLoop,
    OpenLoop { requests_per_sec: f64 },
}

/// The measured part of a run.
#[derive(Debug)]
pub struct LoadReport {
    /// From the end of the warm-up to the end of the run (time up, --requests reached, or Ctrl-C).
    pub seconds: f64,
    pub counts: Tally,
    /// Open loop only: requests due in the measured window that no connection was free to send.
    pub unsent: Option<u64>,
    /// The same requests, in windows of time.
    pub series: TimeSeries,
}

/// Counts of one worker, merged into the run's at the end; only measured requests are counted.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub status: BTreeMap<u16, u64>,
    pub connect_errors: u64,
    /// Sending or receiving failed on an open connection (reset, closed mid-answer, bad HTTP).
    pub request_errors: u64,
    pub first_error: Option<String>,
    pub latency: LatencyHistogram,
    /// Response body bytes (headers not included).
    pub bytes_received: u64,
}

impl Tally {
    pub fn requests(&self) -> u64 {
        self.status.values().sum()
    }

    pub fn errors(&self) -> u64 {
        self.connect_errors + self.request_errors
    }

    fn merge(&mut self, other: &Tally) {
        for (&code, &count) in &other.status {
            *self.status.entry(code).or_default() += count;
        }
        self.connect_errors += other.connect_errors;
        self.request_errors += other.request_errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.latency.merge(&other.latency);
        self.bytes_received += other.bytes_received;
    }
}

/// The most steps a ramp may plan: each keeps its counts (30 KiB) and its windows' numbers.
const MAX_RAMP_STEPS: usize = 100;

pub fn run(args: LoadtestArgs) -> anyhow::Result<ExitCode> {
    let mut config = config_from_args(&args)?;
    let objective = Objective { slo_ms: args.slo * 1000.0, max_failed_ratio: args.max_failed_percent / 100.0 };
    // parse_seconds gives no negative or NaN.
    if objective.slo_ms == 0.0 {
        bail!("--slo must be more than 0");
    }
    if !(0.0..=100.0).contains(&args.max_failed_percent) {
        bail!("--max-failed-percent must be between 0 and 100, not {}", args.max_failed_percent);
    }
    let ramp = args.ramp.as_deref().map(parse_ramp).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (interrupt_sender, interrupted) = watch::channel(false);
    runtime.spawn(async move {
        // Without a Ctrl-C handler the run simply cannot be cut short: keep the sender (and so the
        // runs) waiting for their time instead of taking the error as an interrupt.
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupt_sender.send_replace(true);
        }
        std::future::pending::<()>().await;
    });
    let interrupt = || {
        let mut interrupted = interrupted.clone();
        async move {
            let _ = interrupted.wait_for(|interrupted| *interrupted).await;
        }
    };

    let summary = match ramp {
        None => {
            let report = runtime.block_on(run_load(&config, interrupt()))?;
            Summary::single(&config, &report, objective.slo_ms)
        }
        Some((plan, step)) => {
            let label = config.progress.clone();
            let mut steps = Vec::new();
            let mut all = Tally::default();
            let mut windows = Vec::new();
            for (index, &rate) in plan.iter().enumerate() {
                config.pacing = Pacing::OpenLoop { requests_per_sec: rate };
                let step_label = format!("step {}/{} {rate} req/s", index + 1, plan.len());
                config.progress = match &label {
                    Progress::Off => Progress::Off,
                    Progress::Bar { .. } => Progress::Bar { label: step_label },
                    Progress::Lines { .. } => Progress::Lines { label: step_label },
                };
                let report = runtime.block_on(run_load(&config, interrupt()))?;
                let offset: f64 = steps.iter().map(|s: &StepSummary| s.totals.seconds).sum();
                windows.extend(summary::windows_of(&report.series, report.seconds, offset, Some(index)));
                all.merge(&report.counts);
                let step =
                    StepSummary::judge(rate, Totals::of(&report.counts, report.seconds, report.unsent), objective);
                if label != Progress::Off {
                    let p99 = step.totals.latency_ms.p99.map_or("-".to_string(), |ms| format!("{ms:.1}"));
                    eprintln!(
                        "step {}/{}: {rate} req/s offered, {:.1} answered/s, p99 {p99} ms, {} failed: {}",
                        index + 1,
                        plan.len(),
                        step.totals.requests_per_sec,
                        step.totals.failed,
                        step.verdict
                    );
                }
                let held = step.held;
                steps.push(step);
                if !held || *interrupted.borrow() {
                    break;
                }
            }
            Summary::ramp(&config, &all, windows, RampSummary::new(&plan, step, objective, steps))
        }
    };
    // Connection tasks of requests cut off at the end are not worth waiting for.
    runtime.shutdown_background();
    if let Some(path) = &args.report {
        std::fs::write(path, report::html(&summary))
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&summary).context("cannot encode the summary")?)
    } else {
        summary.text()
    };
    // SIGPIPE is ignored here (see main.rs): a closed stdout (`| head`) ends the tool quietly,
    // as it would a Unix tool, instead of a panic in `print!`.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("cannot write the summary"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

pub fn config_from_args(args: &LoadtestArgs) -> anyhow::Result<LoadConfig> {
    let target = parse_url(&args.url)?;
    let tls = match (&args.ca_file, target.https) {
        (Some(ca), true) => Some(tls::client_config(ca).with_context(|| format!("--ca-file {}", ca.display()))?),
        (None, true) => bail!("an https:// --url needs --ca-file (the CA its certificate is checked against)"),
        (Some(_), false) => bail!("--ca-file is for an https:// --url"),
        (None, false) => None,
    };
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| anyhow!("--method {:?} is not an HTTP method", args.method))?;
    let mut headers = Vec::new();
    if let Some(key) = &args.key {
        let value = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| anyhow!("--key holds characters not allowed in a header"))?;
        headers.push((AUTHORIZATION, value));
    }
    for line in &args.headers {
        headers.push(parse_header(line)?);
    }
    let mut bodies = Vec::new();
    for path in &args.bodies {
        bodies.extend(load_bodies(path)?);
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let pacing = match args.rate {
        None => Pacing::ClosedLoop,
        Some(rate) if rate.is_finite() && rate > 0.0 => Pacing::OpenLoop { requests_per_sec: rate },
        Some(rate) => bail!("--rate must be a positive number of requests per second, not {rate}"),
    };
    if args.requests == Some(0) {
        bail!("--requests must be at least 1");
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let duration = seconds_arg("--duration", args.duration)?;
    if duration.is_zero() {
        bail!("--duration must be more than 0 seconds");
    }
    let progress = if std::io::stderr().is_terminal() {
        Progress::Bar { label: String::new() }
    } else {
        Progress::Lines { label: String::new() }
    };
    let paths = match &args.paths {
        Some(file) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("--paths {}", file.display()))?;
            let paths: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
            if paths.is_empty() {
                bail!("--paths {}: no request target in it", file.display());
            }
            paths
        }
        None => Vec::new(),
    };
    Ok(LoadConfig {
        target,
        method,
        headers,
        bodies,
        paths,
        concurrency: args.concurrency,
        pacing,
        warmup: seconds_arg("--warmup", args.warmup)?,
        duration,
        max_requests: args.requests,
        progress,
        tls,
    })
}

fn seconds_arg(name: &str, seconds: f64) -> anyhow::Result<Duration> {
    // A day bounds the run and keeps every deadline far from `Instant` overflow.
    const LONGEST: f64 = 86_400.0;
    if !(0.0..=LONGEST).contains(&seconds) {
        bail!("{name} must be between 0 and {LONGEST} seconds, not {seconds}");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A time as seconds: a plain number is seconds (as the flags always took), or a number with
/// `ms`, `s`, `m` or `h`.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m or h")),
    };
    match number.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value * scale),
        _ => Err(format!("{text:?} is not a time (e.g. 10, 10s, 500ms, 2m)")),
    }
}

/// `FROM:TO:STEP` in requests per second: the rates FROM, FROM + STEP, ... not beyond TO. Returns
/// the plan and the step.
pub fn parse_ramp(text: &str) -> anyhow::Result<(Vec<f64>, f64)> {
    let numbers: Vec<f64> = text
        .split(':')
        .map(|part| part.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("--ramp {text:?}: expected FROM:TO:STEP in requests per second, e.g. 50:300:25"))?;
    let &[from, to, step] = numbers.as_slice() else {
        bail!("--ramp {text:?}: expected FROM:TO:STEP in requests per second, e.g. 50:300:25");
    };
    if !(from.is_finite() && to.is_finite() && step.is_finite() && from > 0.0 && step > 0.0 && to >= from) {
        bail!("--ramp {text:?}: FROM and STEP must be positive and TO at least FROM");
    }
    // A tolerance so that 0.1:0.3:0.1 includes 0.3 despite binary fractions.
    let count = ((to - from) / step + 1e-9).floor() + 1.0;
    if count > MAX_RAMP_STEPS as f64 {
        bail!("--ramp {text:?}: {count} steps, at most {MAX_RAMP_STEPS}");
    }
    // Rounded to a millionth, so that 0.1 + 2 × 0.1 shows as 0.3.
    let plan = (0..count as usize).map(|i| ((from + step * i as f64) * 1e6).round() / 1e6).collect();
    Ok((plan, step))
}

/// Splits `http://host[:port]/path?query` (or `https://`).
pub fn parse_url(url: &str) -> anyhow::Result<Target> {
    let uri: Uri = url.replace("{file}", FILE_SLOT).parse().map_err(|e| anyhow!("invalid --url {url:?}: {e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => bail!("invalid --url {url:?}: scheme {other:?} is not supported, only http:// and https://"),
        None => bail!("invalid --url {url:?}: it must start with http:// or https://"),
    };
    let Some(authority) = uri.authority() else { bail!("invalid --url {url:?}: no host") };
    if authority.as_str().contains('@') {
        bail!("invalid --url {url:?}: user names in the URL are not supported (use --key or --header)");
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("invalid --url {url:?}: no host");
    }
    let path_and_query = match uri.path_and_query() {
        Some(pq) if !pq.as_str().is_empty() => pq.as_str().to_string(),
        _ => "/".to_string(),
    };
    Ok(Target {
        https,
        host: host.to_string(),
        port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        authority: authority.as_str().to_string(),
        path_and_query,
    })
}

/// Parses `Name: value` as curl's `-H` does, minus its special cases.
pub fn parse_header(line: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let Some((name, value)) = line.split_once(':') else {
        bail!("invalid --header {line:?}: expected `Name: value`");
    };
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| anyhow!("invalid --header {line:?}: bad header name"))?;
    // The body's framing is ours to state: a wrong length would desynchronise the connection.
    if [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION].contains(&name) {
        bail!("invalid --header {line:?}: {name} is set by the load generator");
    }
    let value =
        HeaderValue::from_str(value.trim()).map_err(|_| anyhow!("invalid --header {line:?}: bad header value"))?;
    Ok((name, value))
}

/// A file is one body; a folder gives every regular file in it, sorted by name (not recursive).
pub fn load_bodies(path: &Path) -> anyhow::Result<Vec<Body>> {
    let metadata = std::fs::metadata(path).with_context(|| format!("cannot read --body {}", path.display()))?;
    let files = if metadata.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).with_context(|| format!("cannot list --body {}", path.display()))? {
            let file = entry.with_context(|| format!("cannot list --body {}", path.display()))?.path();
            // `metadata` follows symbolic links, so a link to a file counts as a file.
            if std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
                files.push(file);
            }
        }
        files.sort();
        if files.is_empty() {
            bail!("--body {}: the folder holds no files", path.display());
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .iter()
        .map(|file| {
            let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let name = file.file_name().map_or(String::new(), |name| name.to_string_lossy().into_owned());
            Ok(Body { name, bytes: Bytes::from(bytes) })
        })
        .collect()
}

/// Percent-encodes everything but RFC 3986's unreserved characters: a file name as one path segment.
fn encode_path_segment(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded += &format!("%{byte:02X}");
        }
    }
    encoded
}

/// How long to wait for a TCP connection and the first HTTP/1.1 exchange to be possible.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause of a closed-loop connection after a failed connect, so a server that is down is not hit
/// by a spin loop and the error count stays a count of attempts a client would really make.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Runs the load described by `config` until its time is up, `max_requests` responses are
/// counted, or `interrupt` completes (the CLI passes Ctrl-C). Fails only if the target cannot be
/// resolved or a first connection cannot be made; later failures are counted in the report.
pub async fn run_load(config: &LoadConfig, interrupt: impl Future<Output = ()>) -> anyhow::Result<LoadReport> {
    let request = RequestTemplate::new(config)?;
    let target = &config.target;
    let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| anyhow!("cannot resolve host {:?}", target.host))?;
    // One connection before the clock starts: if the server is not there, say so instead of
    // reporting a run made only of connection errors.
    let tls = match &config.tls {
        Some(client) => {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| anyhow!("host {:?}: {e}", target.host))?;
            Some(Tls { connector: tokio_rustls::TlsConnector::from(client.clone()), name })
        }
        None => None,
    };
    let first_connection = connect(addr, tls.as_ref())
        .await
        .map_err(|e| anyhow!("cannot connect to {}: {}", target.authority, describe_io_error(&e)))?;

    let start = Instant::now();
    let measure_start = start + config.warmup;
    let (stop_sender, mut stopped) = watch::channel(false);
    let run = Arc::new(RunState {
        addr,
        tls,
        request,
        pacing: config.pacing,
        max_requests: config.max_requests,
        start,
        measure_start,
        end: measure_start + config.duration,
        next_body: AtomicUsize::new(0),
        next_slot: AtomicU64::new(0),
        sent_measured: AtomicU64::new(0),
        counted: AtomicU64::new(0),
        responses: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        series: Mutex::new(TimeSeries::default()),
        stop_sender,
        stopped_at: OnceLock::new(),
    });

    let mut first_connection = Some(first_connection);
    let workers: Vec<JoinHandle<Tally>> =
        (0..config.concurrency).map(|_| tokio::spawn(worker(run.clone(), first_connection.take()))).collect();
    let progress = match &config.progress {
        Progress::Off => None,
        Progress::Bar { label } => Some(tokio::spawn(show_progress(run.clone(), label.clone(), true))),
        Progress::Lines { label } => Some(tokio::spawn(show_progress(run.clone(), label.clone(), false))),
    };

    tokio::select! {
        _ = tokio::time::sleep_until(run.end) => run.stop(run.end),
        _ = interrupt => run.stop(Instant::now()),
        // --requests reached: a worker has stopped the run.
        _ = stopped.wait_for(|stopped| *stopped) => {}
    }
    let mut counts = Tally::default();
    for worker in workers {
        counts.merge(&worker.await.context("a load worker failed")?);
    }
    if let Some(progress) = progress {
        progress.abort();
        if matches!(config.progress, Progress::Bar { .. }) {
            eprint!("\r\x1b[2K");
        }
    }

    let stopped_at = run.stopped_at.get().copied().unwrap_or(run.end);
    let window = stopped_at.saturating_duration_since(measure_start);
    let unsent = match config.pacing {
        Pacing::ClosedLoop => None,
        Pacing::OpenLoop { requests_per_sec } => {
            // Slots i are due at start + i/rate: count those due in [measure_start, stopped_at).
            let due_before =
                |at: Instant| (at.saturating_duration_since(start).as_secs_f64() * requests_per_sec).ceil();
            let due = (due_before(stopped_at) - due_before(measure_start)).max(0.0) as u64;
            Some(due.saturating_sub(run.sent_measured.load(Ordering::Relaxed)))
        }
    };
    let series = std::mem::take(&mut *lock(&run.series));
    Ok(LoadReport { seconds: window.as_secs_f64(), counts, unsent, series })
}

/// What the workers share: the request to send, the clock of the run, and a few counters.
struct RunState {
    addr: SocketAddr,
    tls: Option<Tls>,
    request: RequestTemplate,
    pacing: Pacing,
    max_requests: Option<u64>,
    start: Instant,
    /// End of the warm-up: what completes before is not counted.
    measure_start: Instant,
    end: Instant,
    next_body: AtomicUsize,
    /// Open loop: the next slot of the schedule to take; slot i is due at start + i/rate.
    next_slot: AtomicU64,
    /// Open loop: slots due in the measured window that a connection started sending.
    sent_measured: AtomicU64,
    /// Measured responses, for --requests.
    counted: AtomicU64,
    /// Responses and errors since the start, warm-up included: the progress line.
    responses: AtomicU64,
    errors: AtomicU64,
    /// Measured requests by the window they finished in. One lock per answer: uncontended with the
    /// generator's one thread, and cheap next to an HTTP exchange with more.
    series: Mutex<TimeSeries>,
    stop_sender: watch::Sender<bool>,
    /// When the run ended; what completes after is not counted.
    stopped_at: OnceLock<Instant>,
}

impl RunState {
    fn stop(&self, at: Instant) {
        self.stopped_at.get_or_init(|| at);
        self.stop_sender.send_replace(true);
    }
}

/// The parts of the request that do not change, so each request is a few cheap clones.
struct RequestTemplate {
    method: Method,
    /// One per body when the URL names the file (`{file}`), else one for all.
    uris: Vec<Uri>,
    headers: HeaderMap,
    /// Empty for GET and HEAD, which carry none.
    bodies: Vec<Bytes>,
}

impl RequestTemplate {
    fn new(config: &LoadConfig) -> anyhow::Result<RequestTemplate> {
        let sends_body = ![Method::GET, Method::HEAD].contains(&config.method);
        let mut headers = HeaderMap::new();
        let host =
            HeaderValue::from_str(&config.target.authority).context("the URL's host is not a valid Host header")?;
        headers.insert(HOST, host);
        if sends_body && !config.bodies.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        }
        // A header given on the command line replaces our default of that name; repeated ones all go.
        for (name, _) in &config.headers {
            headers.remove(name);
        }
        for (name, value) in &config.headers {
            headers.append(name.clone(), value.clone());
        }
        let path = &config.target.path_and_query;
        let uris = if !config.paths.is_empty() {
            config
                .paths
                .iter()
                .map(|p| p.parse().with_context(|| format!("--paths: {p:?} is not a valid request target")))
                .collect::<anyhow::Result<_>>()?
        } else if path.contains(FILE_SLOT) {
            if config.bodies.is_empty() {
                bail!("the URL names {{file}} but no --images (--body) folder gives file names");
            }
            config
                .bodies
                .iter()
                .map(|body| {
                    let named = path.replace(FILE_SLOT, &encode_path_segment(&body.name));
                    named.parse().with_context(|| format!("{named:?} is not a valid request target"))
                })
                .collect::<anyhow::Result<_>>()?
        } else {
            vec![path.parse().context("the URL's path is not a valid request target")?]
        };
        let bodies =
            if sends_body { config.bodies.iter().map(|body| body.bytes.clone()).collect() } else { Vec::new() };
        Ok(RequestTemplate { method: config.method.clone(), uris, headers, bodies })
    }

    fn build(&self, body_index: usize) -> Request<Full<Bytes>> {
        let body = match self.bodies.len() {
            0 => Bytes::new(),
            n => self.bodies[body_index % n].clone(),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = self.method.clone();
        // `uris` is never empty: one for all, or one per body.
        *request.uri_mut() = self.uris[body_index % self.uris.len()].clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// A keep-alive HTTP/1.1 connection. Its driver task ends with it, so a connection dropped in the
/// middle of an answer (end of the run) does not linger.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// TLS to an https target: the handshake on each new connection, checked for the URL's host.
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

async fn connect(addr: SocketAddr, tls: Option<&Tls>) -> std::io::Result<Connection> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await.map_err(|_| timed_out())??;
    // Requests are small writes answered at once: Nagle's delay would be measured as latency.
    stream.set_nodelay(true)?;
    let Some(tls) = tls else { return handshake(TokioIo::new(stream)).await };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connector.connect(tls.name.clone(), stream))
        .await
        .map_err(|_| timed_out())??;
    handshake(TokioIo::new(stream)).await
}

async fn handshake<S>(io: TokioIo<S>) -> std::io::Result<Connection>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(std::io::Error::other)?;
    // The connection's own error also fails the request in flight, where it is counted.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Connection { sender, driver })
}

fn describe_io_error(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        std::io::ErrorKind::TimedOut => format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        _ => error.to_string(),
    }
}

/// hyper's own message is terse ("connection error"); the cause says what happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

enum Outcome {
    Answered { status: u16, body_bytes: u64, latency: Duration },
    ConnectFailed(String),
    RequestFailed(String),
}

/// One connection's loop: take the next request (at once, or at its slot of the schedule), send it,
/// count the answer, until the run stops. A request in flight when it stops is abandoned.
async fn worker(run: Arc<RunState>, mut connection: Option<Connection>) -> Tally {
    let mut tally = Tally::default();
    let mut stopped = run.stop_sender.subscribe();
    loop {
        let scheduled = match run.pacing {
            Pacing::ClosedLoop => None,
            Pacing::OpenLoop { requests_per_sec } => {
                let slot = run.next_slot.fetch_add(1, Ordering::Relaxed);
                let due = Duration::try_from_secs_f64(slot as f64 / requests_per_sec)
                    .ok()
                    .and_then(|offset| run.start.checked_add(offset));
                match due {
                    Some(due) if due < run.end => Some(due),
                    // The rest of the schedule is past the end of the run.
                    _ => break,
                }
            }
        };
        let outcome = tokio::select! {
            biased;
            _ = stopped.wait_for(|stopped| *stopped) => break,
            outcome = send_when_due(&run, &mut connection, scheduled) => outcome,
        };
        let connect_failed = matches!(outcome, Outcome::ConnectFailed(_));
        record(&run, &mut tally, outcome, Instant::now());
        if connect_failed && scheduled.is_none() {
            tokio::select! {
                _ = stopped.wait_for(|stopped| *stopped) => break,
                _ = tokio::time::sleep(CONNECT_RETRY_PAUSE) => {}
            }
        }
    }
    tally
}

async fn send_when_due(run: &RunState, connection: &mut Option<Connection>, scheduled: Option<Instant>) -> Outcome {
    if let Some(due) = scheduled {
        tokio::time::sleep_until(due).await;
        if due >= run.measure_start {
            run.sent_measured.fetch_add(1, Ordering::Relaxed);
        }
    }
    exchange(run, connection, scheduled).await
}

/// Sends one request on the connection (opening one if needed) and reads the whole answer, so the
/// connection can carry the next. Latency runs from `scheduled` (open loop) or from sending.
async fn exchange(run: &RunState, connection: &mut Option<Connection>, scheduled: Option<Instant>) -> Outcome {
    // A server may close an idle keep-alive connection between two answers; that is normal
    // HTTP/1.1, not a failed request, so it is replaced before sending.
    if let Some(open) = connection.as_mut() {
        if open.sender.ready().await.is_err() {
            *connection = None;
        }
    }
    let open = match connection {
        Some(open) => open,
        None => match connect(run.addr, run.tls.as_ref()).await {
            Ok(new) => connection.insert(new),
            Err(e) => return Outcome::ConnectFailed(describe_io_error(&e)),
        },
    };
    let started = scheduled.unwrap_or_else(Instant::now);
    let request = run.request.build(run.next_body.fetch_add(1, Ordering::Relaxed));
    let response = match open.sender.send_request(request).await {
        Ok(response) => response,
        Err(e) => {
            *connection = None;
            return Outcome::RequestFailed(error_chain(&e));
        }
    };
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut body_bytes = 0u64;
    // Counting the frames rather than collecting them: no copy of large images.
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_bytes += frame.data_ref().map_or(0, |data| data.len() as u64),
            Err(e) => {
                *connection = None;
                return Outcome::RequestFailed(error_chain(&e));
            }
        }
    }
    Outcome::Answered { status, body_bytes, latency: started.elapsed() }
}

fn record(run: &RunState, tally: &mut Tally, outcome: Outcome, finished: Instant) {
    let counter = if matches!(outcome, Outcome::Answered { .. }) { &run.responses } else { &run.errors };
    counter.fetch_add(1, Ordering::Relaxed);
    // Past `end` too: the timer that stops the run may not have fired yet.
    let after_the_end = finished > run.end || run.stopped_at.get().is_some_and(|&stopped_at| finished > stopped_at);
    if finished < run.measure_start || after_the_end {
        return;
    }
    let offset = finished.duration_since(run.measure_start);
    match outcome {
        Outcome::Answered { status, body_bytes, latency } => {
            if let Some(max) = run.max_requests {
                let counted = run.counted.fetch_add(1, Ordering::Relaxed) + 1;
                if counted > max {
                    return;
                }
                if counted == max {
                    run.stop(finished);
                }
            }
            let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            *tally.status.entry(status).or_default() += 1;
            tally.bytes_received += body_bytes;
            tally.latency.record(latency_us);
            lock(&run.series).record(offset, Event::Answered { status, latency_us });
        }
        Outcome::ConnectFailed(error) => {
            lock(&run.series).record(offset, Event::Failed);
            tally.connect_errors += 1;
            tally.first_error.get_or_insert_with(|| format!("connect: {error}"));
        }
        Outcome::RequestFailed(error) => {
            lock(&run.series).record(offset, Event::Failed);
            tally.request_errors += 1;
            tally.first_error.get_or_insert(error);
        }
    }
}

/// A panic while counting cannot leave the series half-written in a way that matters more than
/// losing the run: take it as it is.
fn lock(series: &Mutex<TimeSeries>) -> std::sync::MutexGuard<'_, TimeSeries> {
    series.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// On stderr while the run goes: on a terminal a bar rewritten every second with the last full
/// second's rate and latencies; otherwise a plain line every few seconds.
async fn show_progress(run: Arc<RunState>, label: String, bar: bool) {
    let every = if bar { Duration::from_secs(1) } else { PROGRESS_LINE_EVERY };
    let mut ticks = tokio::time::interval_at(run.start + every, every);
    let total = run.end.duration_since(run.start).as_secs_f64();
    let label = if label.is_empty() { label } else { format!("{label}  ") };
    loop {
        let now = ticks.tick().await;
        let elapsed = now.duration_since(run.start).as_secs_f64();
        let live = if now < run.measure_start {
            "warm-up".to_string()
        } else {
            let series = lock(&run.series);
            let current = series.index_of(now.duration_since(run.measure_start));
            // The last window that is complete.
            match current.checked_sub(1).and_then(|index| series.windows().get(index)) {
                Some(window) => {
                    let seconds = series.width().as_secs_f64();
                    let p = |p: f64| {
                        window.latency.percentile(p).map_or("-".to_string(), |us| format!("{:.1}", us as f64 / 1000.0))
                    };
                    format!(
                        "{:.1} req/s  p50 {} ms  p99 {} ms  {} non-2xx",
                        window.responses() as f64 / seconds,
                        p(50.0),
                        p(99.0),
                        window
                            .status
                            .iter()
                            .filter(|(code, _)| !(200..300).contains(*code))
                            .map(|(_, n)| n)
                            .sum::<u64>()
                    )
                }
                None => "measuring".to_string(),
            }
        };
        let responses = run.responses.load(Ordering::Relaxed);
        let errors = run.errors.load(Ordering::Relaxed);
        let status = format!("{label}{elapsed:.0}/{total:.0} s  {responses} answers  {errors} errors  {live}");
        if bar {
            const WIDTH: usize = 24;
            let filled = ((elapsed / total).clamp(0.0, 1.0) * WIDTH as f64) as usize;
            eprint!("\r\x1b[2K[{}{}] {status}", "#".repeat(filled), ".".repeat(WIDTH - filled));
        } else {
            eprintln!("{status}");
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn url_is_split_into_host_port_and_path() {
        let target = parse_url("http://127.0.0.1:8080/v1/resize?width=64").unwrap();
        assert_eq!(
            target,
            Target {
                https: false,
                host: "127.0.0.1".into(),
                port: 8080,
                authority: "127.0.0.1:8080".into(),
                path_and_query: "/v1/resize?width=64".into(),
            }
        );
        let target = parse_url("http://localhost").unwrap();
        assert_eq!((target.host.as_str(), target.port, target.path_and_query.as_str()), ("localhost", 80, "/"));
        let target = parse_url("https://localhost/x").unwrap();
        assert_eq!((target.https, target.port, target.url().as_str()), (true, 443, "https://localhost/x"));
        let target = parse_url("http://[::1]:9000/x").unwrap();
        assert_eq!((target.host.as_str(), target.port, target.authority.as_str()), ("::1", 9000, "[::1]:9000"));
    }

    #[test]
    fn url_must_be_plain_http_with_a_host() {
        for url in ["ftp://host/", "garbage", "", "http://", "127.0.0.1:8080/x", "http://u@host/"] {
            assert!(parse_url(url).is_err(), "{url:?} accepted");
        }
        let error = parse_url("ftp://example.org/").unwrap_err().to_string();
        assert!(error.contains("only http:// and https://"), "{error}");
    }

    #[test]
    fn header_is_name_colon_value() {
        let (name, value) = parse_header("X-Request-Tag:  a b ").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-request-tag", "a b"));
        let (name, value) = parse_header("Accept:image/webp").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("accept", "image/webp"));
        for line in ["NoColon", ": value", "Bad Name: x", "Content-Length: 5", "X-Ok: bad\nvalue"] {
            assert!(parse_header(line).is_err(), "{line:?} accepted");
        }
    }

    #[test]
    fn command_line_headers_replace_defaults() {
        let mut config = test_config(parse_url("http://127.0.0.1:1/").unwrap(), Pacing::ClosedLoop);
        config.headers = vec![parse_header("Content-Type: image/png").unwrap(), parse_header("X-A: 1").unwrap()];
        let request = RequestTemplate::new(&config).unwrap().build(0);
        assert_eq!(request.headers()[CONTENT_TYPE], "image/png");
        assert_eq!(request.headers()[HOST], "127.0.0.1:1");
        assert_eq!(request.headers()["x-a"], "1");
        assert_eq!(request.uri(), "/");
    }

    #[test]
    fn a_url_naming_the_file_gets_each_body_name_encoded_and_get_sends_no_body() {
        let mut config =
            test_config(parse_url("http://127.0.0.1:1/unsafe/fit-in/{file}?q=1").unwrap(), Pacing::ClosedLoop);
        assert_eq!(config.target.url(), "http://127.0.0.1:1/unsafe/fit-in/{file}?q=1");
        config.method = Method::GET;
        let template = RequestTemplate::new(&config).unwrap();
        let first = template.build(0);
        assert_eq!(first.uri(), "/unsafe/fit-in/a%20b.jpg?q=1");
        assert_eq!(template.build(1).uri(), "/unsafe/fit-in/c.jpg?q=1");
        assert_eq!(template.build(2).uri(), "/unsafe/fit-in/a%20b.jpg?q=1");
        assert!(first.headers().get(CONTENT_TYPE).is_none());
        assert_eq!(hyper::body::Body::size_hint(first.body()).exact(), Some(0));
        config.bodies.clear();
        assert!(RequestTemplate::new(&config).is_err());
    }

    #[test]
    fn paths_from_a_file_are_taken_in_turn_on_the_urls_host() {
        let mut config = test_config(parse_url("http://127.0.0.1:1/ignored").unwrap(), Pacing::ClosedLoop);
        config.method = Method::GET;
        config.paths = vec!["/v1/img/a".into(), "/v1/img/b?x=1".into()];
        let template = RequestTemplate::new(&config).unwrap();
        let uris: Vec<String> = (0..3).map(|i| template.build(i).uri().to_string()).collect();
        assert_eq!(uris, ["/v1/img/a", "/v1/img/b?x=1", "/v1/img/a"]);
        config.paths = vec!["not a target".into()];
        assert!(RequestTemplate::new(&config).is_err());
    }

    #[test]
    fn times_are_seconds_or_carry_a_unit() {
        assert_eq!(parse_seconds("10"), Ok(10.0));
        assert_eq!(parse_seconds("2.5"), Ok(2.5));
        assert_eq!(parse_seconds("500ms"), Ok(0.5));
        assert_eq!(parse_seconds("3s"), Ok(3.0));
        assert_eq!(parse_seconds("2m"), Ok(120.0));
        for text in ["", "-1", "10x", "ms", "NaN", "1 h 2"] {
            assert!(parse_seconds(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn a_ramp_is_from_to_step() {
        assert_eq!(parse_ramp("50:200:50").unwrap(), (vec![50.0, 100.0, 150.0, 200.0], 50.0));
        assert_eq!(parse_ramp("10:25:10").unwrap().0, vec![10.0, 20.0]);
        assert_eq!(parse_ramp("0.1:0.3:0.1").unwrap().0, vec![0.1, 0.2, 0.3]);
        assert_eq!(parse_ramp("5:5:1").unwrap().0, vec![5.0]);
        for text in ["", "1:2", "1:2:3:4", "0:10:1", "10:5:1", "1:10:0", "a:b:c", "1:1000:1"] {
            assert!(parse_ramp(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn the_tipping_point_is_the_last_step_of_the_held_prefix() {
        let objective = Objective { slo_ms: 500.0, max_failed_ratio: 0.01 };
        let step = |rate: f64, p99_us: u64, status: u16| {
            let mut counts = Tally::default();
            for _ in 0..100 {
                counts.latency.record(p99_us);
                *counts.status.entry(status).or_default() += 1;
            }
            StepSummary::judge(rate, Totals::of(&counts, 1.0, Some(0)), objective)
        };
        let steps = vec![step(10.0, 1_000, 200), step(20.0, 400_000, 200), step(30.0, 600_000, 200)];
        assert_eq!(steps.iter().map(|s| s.held).collect::<Vec<_>>(), [true, true, false]);
        assert_eq!(steps[2].verdict, "p99 600.000 ms over the 500 ms SLO");
        let held_p99 = steps[1].totals.latency_ms.p99;
        assert!(held_p99.is_some_and(|p99| (p99 - 400.0).abs() < 4.0), "{held_p99:?}");
        let ramp = RampSummary::new(&[10.0, 20.0, 30.0, 40.0], 10.0, objective, steps);
        let tip = ramp.tipping_point.as_ref().unwrap();
        assert_eq!((tip.step, tip.rate, tip.p99_ms), (1, 20.0, held_p99));
        assert_eq!(ramp.not_run, [40.0]);
        // Fast refusals do not hold: they are failures, not capacity.
        let refused = step(10.0, 100, 503);
        assert!(!refused.held);
        assert_eq!(refused.verdict, "100.00 % failed");
        assert!(RampSummary::new(&[10.0], 10.0, objective, vec![refused]).tipping_point.is_none());
    }

    #[test]
    fn a_body_folder_gives_its_files_sorted_by_name() {
        let dir = std::env::temp_dir().join(format!("resizer-loadtest-bodies-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        std::fs::write(dir.join("b.jpg"), "second").unwrap();
        std::fs::write(dir.join("a.jpg"), "first").unwrap();
        std::fs::write(dir.join("nested/c.jpg"), "not taken").unwrap();
        let bodies = load_bodies(&dir);
        let single = load_bodies(&dir.join("b.jpg"));
        std::fs::remove_dir_all(&dir).unwrap();
        let body = |name: &str, bytes: &'static str| Body { name: name.into(), bytes: Bytes::from(bytes) };
        assert_eq!(bodies.unwrap(), vec![body("a.jpg", "first"), body("b.jpg", "second")]);
        assert_eq!(single.unwrap(), vec![body("b.jpg", "second")]);
    }

    fn test_config(target: Target, pacing: Pacing) -> LoadConfig {
        LoadConfig {
            target,
            method: Method::POST,
            headers: Vec::new(),
            bodies: vec![
                Body { name: "a b.jpg".into(), bytes: Bytes::from_static(b"hello") },
                Body { name: "c.jpg".into(), bytes: Bytes::from_static(b"image bytes") },
            ],
            paths: Vec::new(),
            concurrency: 2,
            pacing,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(500),
            max_requests: None,
            progress: Progress::Off,
            tls: None,
        }
    }

    /// A minimal keep-alive HTTP/1.1 server answering every request `200 ok`; returns its URL.
    async fn spawn_ok_server() -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer_ok(stream));
            }
        });
        parse_url(&format!("http://127.0.0.1:{port}/v1/resize?width=64")).unwrap()
    }

    async fn answer_ok<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut stream: S) {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // Read until a whole request (head and Content-Length body) is buffered.
            let request_len = loop {
                if let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
                    let body_len = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .map_or(0, |len| len.trim().parse::<usize>().unwrap());
                    if buffer.len() >= head_end + 4 + body_len {
                        break head_end + 4 + body_len;
                    }
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            };
            buffer.drain(..request_len);
            if stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await.is_err() {
                return;
            }
        }
    }

    /// Over https: every connection is TLS checked against the CA given; a client trusting
    /// another CA makes no first connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_targets_are_spoken_to_over_tls_checked_against_the_ca() {
        let dir = std::env::temp_dir().join(format!("loadtest-tls-{}", std::process::id()));
        let ca = lab::LabCa::create(&dir.join("ca"), "test CA").unwrap();
        let other = lab::LabCa::create(&dir.join("other"), "another CA").unwrap();
        let cert = ca.issue("server").unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&cert.cert, &cert.key).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        answer_ok(stream).await;
                    }
                });
            }
        });
        let target = parse_url(&format!("https://127.0.0.1:{port}/v1/resize?width=64")).unwrap();
        let mut config = test_config(target, Pacing::ClosedLoop);
        config.tls = Some(tls::client_config(ca.ca_file()).unwrap());
        let report = run_load(&config, std::future::pending()).await.unwrap();
        let requests = report.counts.requests();
        assert!(requests > 0);
        assert_eq!(report.counts.status, BTreeMap::from([(200, requests)]));
        config.tls = Some(tls::client_config(other.ca_file()).unwrap());
        let refused = run_load(&config, std::future::pending()).await.map(|_| ()).unwrap_err().to_string();
        assert!(refused.to_lowercase().contains("unknownissuer"), "{refused}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn closed_loop_against_a_local_server_counts_every_answer() {
        let config = test_config(spawn_ok_server().await, Pacing::ClosedLoop);
        let report = run_load(&config, std::future::pending()).await.unwrap();
        let requests = report.counts.requests();
        assert!(requests > 0);
        assert_eq!(report.counts.status, BTreeMap::from([(200, requests)]));
        assert_eq!(report.counts.errors(), 0);
        assert_eq!(report.counts.bytes_received, 2 * requests);
        assert!((0.45..0.6).contains(&report.seconds), "{}", report.seconds);
        assert_eq!(report.unsent, None);
        let json = serde_json::to_value(Summary::single(&config, &report, 500.0)).unwrap();
        assert_eq!(json["requests"], requests);
        assert_eq!(json["status"]["200"], requests);
        assert!(json["rate"].is_null());
        assert_eq!(json["mode"], "closed");
        // Every measured answer is in exactly one window.
        let windows = json["windows"].as_array().unwrap();
        assert!(!windows.is_empty());
        assert_eq!(windows.iter().map(|w| w["requests"].as_u64().unwrap()).sum::<u64>(), requests);
    }

    #[tokio::test]
    async fn open_loop_sends_no_more_than_the_schedule() {
        let config = test_config(spawn_ok_server().await, Pacing::OpenLoop { requests_per_sec: 200.0 });
        let report = run_load(&config, std::future::pending()).await.unwrap();
        let requests = report.counts.requests();
        // 0.5 s at 200/s is 100 due, plus what the 2 connections carried over from the warm-up.
        assert!(requests > 0 && requests <= 102, "{requests}");
        assert_eq!(report.counts.errors(), 0);
        assert!(report.unsent.is_some());
    }

    #[tokio::test]
    async fn measured_windows_hold_exactly_the_measured_answers() {
        let mut config = test_config(spawn_ok_server().await, Pacing::OpenLoop { requests_per_sec: 100.0 });
        config.duration = Duration::from_millis(2_500);
        let report = run_load(&config, std::future::pending()).await.unwrap();
        let windows = report.series.windows();
        assert_eq!(windows.len(), 3, "{} s", report.seconds);
        assert_eq!(windows.iter().map(|w| w.responses()).sum::<u64>(), report.counts.requests());
        let summary = Summary::single(&config, &report, 500.0);
        // The half second at the end is a window of its own length.
        assert!((summary.windows[2].seconds - 0.5).abs() < 0.05, "{:?}", summary.windows[2]);
    }

    #[tokio::test]
    async fn max_requests_ends_the_run_early() {
        let mut config = test_config(spawn_ok_server().await, Pacing::ClosedLoop);
        config.duration = Duration::from_secs(30);
        config.max_requests = Some(5);
        let report = run_load(&config, std::future::pending()).await.unwrap();
        assert_eq!(report.counts.requests(), 5);
        assert!(report.seconds < 30.0);
    }

    #[tokio::test]
    async fn no_server_is_a_clear_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = test_config(parse_url(&format!("http://127.0.0.1:{port}/")).unwrap(), Pacing::ClosedLoop);
        let error = run_load(&config, std::future::pending()).await.unwrap_err().to_string();
        assert_eq!(error, format!("cannot connect to 127.0.0.1:{port}: connection refused"));
    }
}
