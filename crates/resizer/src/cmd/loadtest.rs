//! `resizer loadtest`: the project's own HTTP load generator. It sends one request (method, headers,
//! bodies taken in turn) to one plain-HTTP URL, over keep-alive HTTP/1.1 connections, for a fixed
//! time, and prints throughput, status counts and the latency distribution.
//!
//! Why our own: the benchmarks need a generator that runs on the server's machine without taking
//! its cores (one tokio thread by default), that knows our bodies are images read from a folder,
//! and whose open-loop latencies are corrected for coordinated omission.
//!
//! Two pacings:
//! - closed loop (default): each of `--concurrency` connections sends its next request as soon as
//!   the previous one is answered; latency runs from sending to the last body byte.
//! - open loop (`--rate`): requests are due on a fixed schedule, one every 1/rate s. A connection
//!   that is free takes the next due request; when all are busy, the due request waits for the
//!   first to free up and its latency runs from its *scheduled* time, not from when it could be
//!   sent (coordinated-omission correction: a slow server is not excused by the generator having
//!   waited for it). Nothing is dropped; requests still waiting when the run ends are reported as
//!   `unsent`, which says the schedule was more than the connections could carry.
//!
//! Everything is bounded: at most `--concurrency` requests in flight, no queue (the schedule is a
//! counter), and latencies go into a fixed-size histogram, whatever the duration.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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

#[derive(Args, Debug)]
pub struct LoadtestArgs {
    /// Target: plain http://host[:port]/path?query (no TLS).
    #[arg(long)]
    url: String,
    /// API key, sent as `Authorization: Bearer KEY`.
    #[arg(long)]
    key: Option<String>,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Extra request header (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request body: a file, or a folder whose files (sorted by name, not recursive) are all used.
    /// Repeatable; requests take the bodies in turn. Sent as application/octet-stream.
    #[arg(long = "body", value_name = "FILE_OR_DIR")]
    bodies: Vec<PathBuf>,
    /// Connections. In open loop (--rate) also the most requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open loop: requests per second on a fixed schedule. Without it: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (connections opened, caches and pools warmed).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Stop after this many measured responses (the run still ends at --duration).
    #[arg(long)]
    requests: Option<u64>,
    /// Tokio worker threads of the generator; few, so it leaves the cores to a server on the same machine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    json: bool,
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
    pub bodies: Vec<Bytes>,
    pub concurrency: usize,
    pub pacing: Pacing,
    pub warmup: Duration,
    pub duration: Duration,
    pub max_requests: Option<u64>,
    /// Show the once-a-second progress line on stderr.
    pub progress: bool,
}

/// A plain-HTTP target, split into what the connection and the request line need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP address, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// `host[:port]` as written in the URL: the Host header.
    pub authority: String,
    /// Origin-form request target, e.g. `/v1/resize?width=64`.
    pub path_and_query: String,
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
}

/// Counts of one worker, merged into the run's at the end; only measured requests are counted.
#[derive(Debug, Default)]
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

    fn merge(&mut self, other: Tally) {
        for (code, count) in other.status {
            *self.status.entry(code).or_default() += count;
        }
        self.connect_errors += other.connect_errors;
        self.request_errors += other.request_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency.merge(&other.latency);
        self.bytes_received += other.bytes_received;
    }
}

pub fn run(args: LoadtestArgs) -> anyhow::Result<ExitCode> {
    let config = config_from_args(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let interrupt = async {
        // Without a Ctrl-C handler the run simply cannot be cut short: wait for the time instead
        // of taking the error as an interrupt.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let report = runtime.block_on(run_load(&config, interrupt))?;
    // Connection tasks of requests cut off at the end are not worth waiting for.
    runtime.shutdown_background();
    if args.json {
        println!("{}", report_json(&config, &report));
    } else {
        print!("{}", report_text(&config, &report));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn config_from_args(args: &LoadtestArgs) -> anyhow::Result<LoadConfig> {
    let target = parse_url(&args.url)?;
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
    Ok(LoadConfig {
        target,
        method,
        headers,
        bodies,
        concurrency: args.concurrency,
        pacing,
        warmup: seconds_arg("--warmup", args.warmup)?,
        duration,
        max_requests: args.requests,
        progress: std::io::stderr().is_terminal(),
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

/// Splits `http://host[:port]/path?query`. Only plain HTTP: the generator speaks to our servers
/// directly, without TLS in between.
pub fn parse_url(url: &str) -> anyhow::Result<Target> {
    let uri: Uri = url.parse().map_err(|e| anyhow!("invalid --url {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => bail!("invalid --url {url:?}: https is not supported, only plain http://"),
        Some(other) => bail!("invalid --url {url:?}: scheme {other:?} is not supported, only http://"),
        None => bail!("invalid --url {url:?}: it must start with http://"),
    }
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
        host: host.to_string(),
        port: authority.port_u16().unwrap_or(80),
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
pub fn load_bodies(path: &Path) -> anyhow::Result<Vec<Bytes>> {
    let metadata = std::fs::metadata(path).with_context(|| format!("cannot read --body {}", path.display()))?;
    if !metadata.is_dir() {
        let body = std::fs::read(path).with_context(|| format!("cannot read --body {}", path.display()))?;
        return Ok(vec![Bytes::from(body)]);
    }
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
        .iter()
        .map(|file| {
            let body = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            Ok(Bytes::from(body))
        })
        .collect()
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
    let first_connection = connect(addr)
        .await
        .map_err(|e| anyhow!("cannot connect to {}: {}", target.authority, describe_io_error(&e)))?;

    let start = Instant::now();
    let measure_start = start + config.warmup;
    let (stop_sender, mut stopped) = watch::channel(false);
    let run = Arc::new(RunState {
        addr,
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
        stop_sender,
        stopped_at: OnceLock::new(),
    });

    let mut first_connection = Some(first_connection);
    let workers: Vec<JoinHandle<Tally>> =
        (0..config.concurrency).map(|_| tokio::spawn(worker(run.clone(), first_connection.take()))).collect();
    let progress = config.progress.then(|| tokio::spawn(show_progress(run.clone())));

    tokio::select! {
        _ = tokio::time::sleep_until(run.end) => run.stop(run.end),
        _ = interrupt => run.stop(Instant::now()),
        // --requests reached: a worker has stopped the run.
        _ = stopped.wait_for(|stopped| *stopped) => {}
    }
    let mut counts = Tally::default();
    for worker in workers {
        counts.merge(worker.await.context("a load worker failed")?);
    }
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[2K");
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
    Ok(LoadReport { seconds: window.as_secs_f64(), counts, unsent })
}

/// What the workers share: the request to send, the clock of the run, and a few counters.
struct RunState {
    addr: SocketAddr,
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
    uri: Uri,
    headers: HeaderMap,
    bodies: Vec<Bytes>,
}

impl RequestTemplate {
    fn new(config: &LoadConfig) -> anyhow::Result<RequestTemplate> {
        let mut headers = HeaderMap::new();
        let host =
            HeaderValue::from_str(&config.target.authority).context("the URL's host is not a valid Host header")?;
        headers.insert(HOST, host);
        if !config.bodies.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        }
        // A header given on the command line replaces our default of that name; repeated ones all go.
        for (name, _) in &config.headers {
            headers.remove(name);
        }
        for (name, value) in &config.headers {
            headers.append(name.clone(), value.clone());
        }
        let uri = config.target.path_and_query.parse().context("the URL's path is not a valid request target")?;
        Ok(RequestTemplate { method: config.method.clone(), uri, headers, bodies: config.bodies.clone() })
    }

    fn build(&self, body_index: usize) -> Request<Full<Bytes>> {
        let body = match self.bodies.len() {
            0 => Bytes::new(),
            n => self.bodies[body_index % n].clone(),
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
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

async fn connect(addr: SocketAddr) -> std::io::Result<Connection> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await.map_err(|_| timed_out())??;
    // Requests are small writes answered at once: Nagle's delay would be measured as latency.
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
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
        None => match connect(run.addr).await {
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
    let after_the_end = run.stopped_at.get().is_some_and(|&stopped_at| finished > stopped_at);
    if finished < run.measure_start || after_the_end {
        return;
    }
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
            *tally.status.entry(status).or_default() += 1;
            tally.bytes_received += body_bytes;
            tally.latency.record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        }
        Outcome::ConnectFailed(error) => {
            tally.connect_errors += 1;
            tally.first_error.get_or_insert_with(|| format!("connect: {error}"));
        }
        Outcome::RequestFailed(error) => {
            tally.request_errors += 1;
            tally.first_error.get_or_insert(error);
        }
    }
}

/// Once a second on stderr, rewriting one line: elapsed time, responses, the last second's rate, errors.
async fn show_progress(run: Arc<RunState>) {
    let mut ticks = tokio::time::interval_at(run.start + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_responses = 0;
    loop {
        let now = ticks.tick().await;
        let responses = run.responses.load(Ordering::Relaxed);
        let phase = if now < run.measure_start { "  (warm-up)" } else { "" };
        eprint!(
            "\r\x1b[2K{:6.1} s  {responses} requests  {} req/s  {} errors{phase}",
            now.duration_since(run.start).as_secs_f64(),
            responses - last_responses,
            run.errors.load(Ordering::Relaxed),
        );
        last_responses = responses;
    }
}

/// Latencies in microseconds, in log-linear buckets: exact below 128 µs, then 64 buckets per
/// power of two, so a reported percentile is within 0.8 % of the true sample. Fixed size whatever
/// the number of samples; max and mean are exact.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    samples: u64,
    sum_us: u64,
    max_us: u64,
}

/// Values below this have a bucket each; above, buckets are 1/64 of their power of two wide.
const EXACT_BELOW: u64 = 128;
const BUCKETS_PER_OCTAVE_LOG2: u32 = 6;
/// Enough buckets for every u64: the last octave (2^63..) ends at index 57 * 64 + 127.
const BUCKETS: usize = 57 * 64 + 128;

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { counts: vec![0; BUCKETS], samples: 0, sum_us: 0, max_us: 0 }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, us: u64) {
        self.counts[bucket_of(us)] += 1;
        self.samples += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.samples += other.samples;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The nearest-rank percentile `p` (0-100) in microseconds; None without samples.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.samples == 0 {
            return None;
        }
        let rank = ((p / 100.0 * self.samples as f64).ceil() as u64).clamp(1, self.samples);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                // A bucket's middle may lie above the largest sample in it.
                return Some(bucket_value(index).min(self.max_us));
            }
        }
        Some(self.max_us)
    }

    pub fn max_us(&self) -> Option<u64> {
        (self.samples > 0).then_some(self.max_us)
    }

    pub fn mean_us(&self) -> Option<f64> {
        (self.samples > 0).then(|| self.sum_us as f64 / self.samples as f64)
    }
}

fn bucket_of(us: u64) -> usize {
    if us < EXACT_BELOW {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros(); // 7.. for us >= 128
    let shift = octave - BUCKETS_PER_OCTAVE_LOG2;
    let mantissa = us >> shift; // 64..128
    ((shift as u64) * 64 + mantissa) as usize
}

/// The middle of the bucket's range.
fn bucket_value(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT_BELOW {
        return index;
    }
    let shift = index / 64 - 1;
    let mantissa = index % 64 + 64;
    let lowest = mantissa << shift;
    lowest + ((1u64 << shift) - 1) / 2
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn requests_per_sec(report: &LoadReport) -> f64 {
    if report.seconds > 0.0 {
        report.counts.requests() as f64 / report.seconds
    } else {
        0.0
    }
}

fn report_json(config: &LoadConfig, report: &LoadReport) -> serde_json::Value {
    let latency = &report.counts.latency;
    let percentile = |p: f64| latency.percentile(p).map(ms);
    serde_json::json!({
        "requests": report.counts.requests(),
        "seconds": report.seconds,
        "requests_per_sec": requests_per_sec(report),
        "status": report.counts.status,
        "errors": report.counts.errors(),
        "latency_ms": {
            "p50": percentile(50.0),
            "p90": percentile(90.0),
            "p99": percentile(99.0),
            "p999": percentile(99.9),
            "max": latency.max_us().map(ms),
            "mean": latency.mean_us().map(|us| us / 1000.0),
        },
        "bytes_received": report.counts.bytes_received,
        "concurrency": config.concurrency,
        "rate": match config.pacing {
            Pacing::ClosedLoop => None,
            Pacing::OpenLoop { requests_per_sec } => Some(requests_per_sec),
        },
        "unsent": report.unsent,
    })
}

fn report_text(config: &LoadConfig, report: &LoadReport) -> String {
    let counts = &report.counts;
    let target = &config.target;
    let mode = match config.pacing {
        Pacing::ClosedLoop => format!("closed loop, {} connections", config.concurrency),
        Pacing::OpenLoop { requests_per_sec } => {
            format!("open loop, {requests_per_sec} req/s, up to {} in flight", config.concurrency)
        }
    };
    let mut text = format!("{} http://{}{}\n", config.method, target.authority, target.path_and_query);
    text += &format!("mode        {mode}, {:.1} s warm-up\n", config.warmup.as_secs_f64());
    text += &format!(
        "requests    {} in {:.2} s = {:.1} req/s\n",
        counts.requests(),
        report.seconds,
        requests_per_sec(report)
    );
    let status: Vec<String> = counts.status.iter().map(|(code, count)| format!("{code}: {count}")).collect();
    text += &format!("status      {}\n", if status.is_empty() { "-".to_string() } else { status.join(", ") });
    text += &format!(
        "errors      {} (connect {}, request {})\n",
        counts.errors(),
        counts.connect_errors,
        counts.request_errors
    );
    if let Some(error) = &counts.first_error {
        text += &format!("first error {error}\n");
    }
    let latency = &counts.latency;
    let show = |us: Option<u64>| us.map_or("-".to_string(), |us| format!("{:.3}", ms(us)));
    text += &format!(
        "latency ms  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {}\n",
        show(latency.percentile(50.0)),
        show(latency.percentile(90.0)),
        show(latency.percentile(99.0)),
        show(latency.percentile(99.9)),
        show(latency.max_us()),
        latency.mean_us().map_or("-".to_string(), |us| format!("{:.3}", us / 1000.0)),
    );
    let mib = counts.bytes_received as f64 / (1024.0 * 1024.0);
    text += &format!("received    {} body bytes ({mib:.1} MiB)\n", counts.bytes_received);
    if let Some(unsent) = report.unsent.filter(|&unsent| unsent > 0) {
        text += &format!("unsent      {unsent} due requests found no free connection: raise --concurrency\n");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn percentiles_are_nearest_rank_and_exact_for_small_values() {
        let mut histogram = LatencyHistogram::default();
        assert_eq!(histogram.percentile(50.0), None);
        for us in [4, 1, 3, 2] {
            histogram.record(us);
        }
        assert_eq!(histogram.percentile(50.0), Some(2));
        assert_eq!(histogram.percentile(75.0), Some(3));
        assert_eq!(histogram.percentile(99.9), Some(4));
        assert_eq!(histogram.percentile(0.0), Some(1));
        assert_eq!(histogram.max_us(), Some(4));
        assert_eq!(histogram.mean_us(), Some(2.5));
    }

    #[test]
    fn percentiles_of_large_values_are_within_one_percent() {
        let mut histogram = LatencyHistogram::default();
        for us in 1..=100_000 {
            histogram.record(us * 10);
        }
        for (p, expected) in [(50.0, 500_000.0), (90.0, 900_000.0), (99.0, 990_000.0), (99.9, 999_000.0)] {
            let got = histogram.percentile(p).unwrap() as f64;
            assert!((got - expected).abs() / expected < 0.01, "p{p}: {got} vs {expected}");
        }
        assert_eq!(histogram.max_us(), Some(1_000_000));
        assert_eq!(histogram.mean_us(), Some(500_005.0));
    }

    #[test]
    fn every_bucket_value_is_within_one_percent_of_its_samples() {
        let mut us = 1u64;
        while us < u64::MAX / 2 {
            for sample in [us, us + us / 3, us * 2 - 1] {
                let value = bucket_value(bucket_of(sample)) as f64;
                assert!((value - sample as f64).abs() / sample as f64 <= 0.008, "{sample} -> {value}");
            }
            us *= 2;
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn merged_histograms_count_both() {
        let mut a = LatencyHistogram::default();
        let mut b = LatencyHistogram::default();
        a.record(10);
        b.record(1_000);
        b.record(2_000);
        a.merge(&b);
        assert_eq!(a.percentile(50.0), Some(bucket_value(bucket_of(1_000))));
        assert_eq!(a.max_us(), Some(2_000));
    }

    #[test]
    fn url_is_split_into_host_port_and_path() {
        let target = parse_url("http://127.0.0.1:8080/v1/resize?width=64").unwrap();
        assert_eq!(
            target,
            Target {
                host: "127.0.0.1".into(),
                port: 8080,
                authority: "127.0.0.1:8080".into(),
                path_and_query: "/v1/resize?width=64".into(),
            }
        );
        let target = parse_url("http://localhost").unwrap();
        assert_eq!((target.host.as_str(), target.port, target.path_and_query.as_str()), ("localhost", 80, "/"));
        let target = parse_url("http://[::1]:9000/x").unwrap();
        assert_eq!((target.host.as_str(), target.port, target.authority.as_str()), ("::1", 9000, "[::1]:9000"));
    }

    #[test]
    fn url_must_be_plain_http_with_a_host() {
        for url in ["https://127.0.0.1/", "ftp://host/", "garbage", "", "http://", "127.0.0.1:8080/x", "http://u@host/"]
        {
            assert!(parse_url(url).is_err(), "{url:?} accepted");
        }
        let error = parse_url("https://example.org/").unwrap_err().to_string();
        assert!(error.contains("https is not supported"), "{error}");
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
    fn a_body_folder_gives_its_files_sorted_by_name() {
        let dir = std::env::temp_dir().join(format!("resizer-loadtest-bodies-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        std::fs::write(dir.join("b.jpg"), "second").unwrap();
        std::fs::write(dir.join("a.jpg"), "first").unwrap();
        std::fs::write(dir.join("nested/c.jpg"), "not taken").unwrap();
        let bodies = load_bodies(&dir);
        let single = load_bodies(&dir.join("b.jpg"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(bodies.unwrap(), vec![Bytes::from("first"), Bytes::from("second")]);
        assert_eq!(single.unwrap(), vec![Bytes::from("second")]);
    }

    fn test_config(target: Target, pacing: Pacing) -> LoadConfig {
        LoadConfig {
            target,
            method: Method::POST,
            headers: Vec::new(),
            bodies: vec![Bytes::from_static(b"hello"), Bytes::from_static(b"image bytes")],
            concurrency: 2,
            pacing,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(500),
            max_requests: None,
            progress: false,
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

    async fn answer_ok(mut stream: TcpStream) {
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
        let json = report_json(&config, &report);
        assert_eq!(json["requests"], requests);
        assert_eq!(json["status"]["200"], requests);
        assert!(json["rate"].is_null());
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
