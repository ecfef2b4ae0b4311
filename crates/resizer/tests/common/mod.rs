//! Starts the real `resizer dev` binary on free loopback ports in a temporary directory and talks
//! to it over HTTP. The process is stopped (SIGTERM, then SIGKILL) and the directory removed when
//! the `DevServer` drops, also when a test fails.

#![allow(dead_code)] // each test file uses its own part of the harness

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

pub mod cluster;
pub mod origin;

pub const BIN: &str = env!("CARGO_BIN_EXE_resizer");

pub struct DevServer {
    pub child: Option<Child>,
    pub dir: TempDir,
    pub api_url: String,
    pub admin_url: String,
    pub admin_token: String,
    pub demo_key: String,
    agent: ureq::Agent,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The problem document's `type` without its prefix, asserting the shape of RFC 9457.
    pub fn problem_type(&self) -> String {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "status {}", self.status);
        let p = self.json();
        assert_eq!(p["status"].as_u64(), Some(u64::from(self.status)), "{p}");
        assert!(p["title"].is_string() && p["detail"].is_string(), "{p}");
        assert_eq!(p["request_id"].as_str(), self.header("x-request-id"), "{p}");
        p["type"].as_str().unwrap_or("").trim_start_matches("urn:resizer:problem:").to_owned()
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("resizer-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl DevServer {
    /// `resizer dev` with `--set` overrides, e.g. `["dispatch.workers=1"]`.
    pub fn start(sets: &[&str]) -> anyhow::Result<DevServer> {
        Self::start_in(TempDir::new(), sets)
    }

    /// `resizer dev` with environment variables of its own (e.g. which libheif or libaom to
    /// open), so that no other test's server sees them.
    pub fn start_with_env(env: &[(&str, &str)], sets: &[&str]) -> anyhow::Result<DevServer> {
        Self::start_in_with_env(TempDir::new(), env, sets)
    }

    pub fn start_in(dir: TempDir, sets: &[&str]) -> anyhow::Result<DevServer> {
        Self::start_in_with_env(dir, &[], sets)
    }

    fn start_in_with_env(dir: TempDir, env: &[(&str, &str)], sets: &[&str]) -> anyhow::Result<DevServer> {
        // No --data-dir: the default `./resizer-data` under the test's own directory, as a user gets.
        let data = dir.0.join("resizer-data");
        let dev_json = data.join("dev.json");
        // A restart in the same directory finds the last run's dev.json (and reuses its key): wait
        // for this run's, which names other ports.
        let previous = std::fs::read(&dev_json).ok();
        let mut cmd = Command::new(BIN);
        cmd.args(["dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(dir.0.join("stdout.log"))?))
            .stderr(Stdio::from(std::fs::File::create(dir.0.join("stderr.log"))?));
        for set in sets {
            cmd.args(["--set", set]);
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().with_context(|| format!("starting {BIN}"))?;
        let mut server = DevServer {
            child: Some(child),
            dir,
            api_url: String::new(),
            admin_url: String::new(),
            admin_token: String::new(),
            demo_key: String::new(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into(),
        };
        let started = Instant::now();
        loop {
            if let Some(bytes) = std::fs::read(&dev_json).ok().filter(|b| Some(b) != previous.as_ref()) {
                let v: Value = serde_json::from_slice(&bytes)?;
                server.api_url = v["api_url"].as_str().unwrap_or_default().to_owned();
                server.admin_url = v["admin_url"].as_str().unwrap_or_default().to_owned();
                server.admin_token = v["admin_token"].as_str().unwrap_or_default().to_owned();
                server.demo_key = v["demo_api_key"].as_str().unwrap_or_default().to_owned();
                return Ok(server);
            }
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("resizer dev exited with {status} before listening; stderr:\n{}", server.stderr());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("resizer dev did not write dev.json within 30 s; stderr:\n{}", server.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Speak HTTPS to it trusting only `ca` (a server started with `api.tls_cert`).
    pub fn trusting(mut self, ca: &Path) -> DevServer {
        self.agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .tls_config(lab::ureq_tls(ca).expect("the CA file"))
            .build()
            .into();
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.0.join("resizer-data")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stdout.log")).unwrap_or_default()
    }

    /// `POST /v1/resize?{query}` with `key` (None: no Authorization header) and extra headers.
    pub fn resize(&self, query: &str, key: Option<&str>, body: &[u8], headers: &[(&str, &str)]) -> Response {
        let mut request = self.agent.post(format!("{}/v1/resize?{query}", self.api_url));
        if let Some(key) = key {
            request = request.header("authorization", &format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        into_response(request.send(body))
    }

    pub fn get_with_key(&self, path: &str, key: &str) -> Response {
        let request =
            self.agent.get(format!("{}{path}", self.api_url)).header("authorization", &format!("Bearer {key}"));
        into_response(request.call())
    }

    /// `resizer admin ARGS` against this server (it finds the URL and token in dev.json).
    pub fn admin_cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("admin")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .output()
            .expect("run resizer admin")
    }

    /// SIGKILL: no drain, no flush — what a crash looks like.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("already stopped")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    pub fn get(&self, path: &str) -> Response {
        into_response(self.agent.get(format!("{}{path}", self.api_url)).call())
    }

    /// `GET {path}` on the public API with extra headers (`Accept`, `If-None-Match`...).
    pub fn get_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = self.agent.get(format!("{}{path}", self.api_url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        into_response(request.call())
    }

    /// An admin call with the admin token; `body` is sent as JSON when given.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        self.admin_with_token(method, path, body, &self.admin_token.clone())
    }

    pub fn admin_with_token(&self, method: &str, path: &str, body: Option<Value>, token: &str) -> Response {
        let url = format!("{}{path}", self.admin_url);
        let auth = format!("Bearer {token}");
        let json = body.map(|b| b.to_string()).unwrap_or_default();
        let result = match method {
            "GET" => self.agent.get(url).header("authorization", &auth).call(),
            "POST" => self.agent.post(url).header("authorization", &auth).content_type("application/json").send(&json),
            "PATCH" => {
                self.agent.patch(url).header("authorization", &auth).content_type("application/json").send(&json)
            }
            other => panic!("no helper for {other}"),
        };
        into_response(result)
    }

    /// Creates a tenant with `limits` and a key for it; returns (tenant id, key).
    pub fn tenant_with_key(&self, name: &str, limits: Value) -> (u64, String) {
        let created = self.admin("POST", "/v1/tenants", Some(serde_json::json!({ "name": name, "limits": limits })));
        assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
        let id = created.json()["id"].as_u64().expect("tenant id");
        let key = self.admin("POST", &format!("/v1/tenants/{id}/keys"), Some(serde_json::json!({ "label": "test" })));
        assert_eq!(key.status, 201, "{}", String::from_utf8_lossy(&key.body));
        (id, key.json()["key"].as_str().expect("key").to_owned())
    }

    /// The value of one sample line of /metrics, e.g. `resizer_queue_depth{lane="large"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let text = String::from_utf8_lossy(&self.get("/metrics").body).into_owned();
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }

    /// Waits until `series` reaches `value` (bounded), failing with the last value seen.
    pub fn wait_for_metric(&self, series: &str, value: f64) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let now = self.metric(series);
            if now >= value {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("{series} stayed at {now}, expected {value}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then the exit status (SIGKILL after `patience`).
    pub fn terminate(&mut self, patience: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if started.elapsed() > patience {
                let _ = child.kill();
                let _ = child.wait();
                bail!("resizer dev did not exit within {patience:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate(Duration::from_secs(5));
        }
    }
}

fn into_response(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Response {
    let mut response = match result {
        Ok(r) => r,
        Err(e) => panic!("HTTP request failed: {e}"),
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = response.body_mut().with_config().limit(64 << 20).read_to_vec().expect("read body");
    Response { status, headers, body }
}

/// `probe()` every 50 ms until it gives a value: usage reaches the rollups a batch at a time.
pub fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!("usage did not converge within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An RGB PNG with a gradient (compresses well, decodes at full cost).
pub fn png(width: u32, height: u32) -> Vec<u8> {
    gradient_png(width, height, false)
}

/// The same gradient as [`png`] with alpha going from opaque at the top to clear at the bottom.
pub fn rgba_png(width: u32, height: u32) -> Vec<u8> {
    gradient_png(width, height, true)
}

fn gradient_png(width: u32, height: u32, alpha: bool) -> Vec<u8> {
    let mut data = Vec::with_capacity((width * height * 4) as usize);
    for y in 0..height {
        for x in 0..width {
            data.extend([(x * 255 / width) as u8, (y * 255 / height) as u8, 128]);
            if alpha {
                data.push(255 - (y * 255 / height) as u8);
            }
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(if alpha { png::ColorType::Rgba } else { png::ColorType::Rgb });
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().expect("png header");
    writer.write_image_data(&data).expect("png data");
    writer.finish().expect("png end");
    out
}

/// A 20-megapixel PNG (large lane), made once per test binary: a conversion long enough to hold
/// a worker while a test fills the queue behind it.
pub fn big_png() -> &'static [u8] {
    static BIG: OnceLock<Vec<u8>> = OnceLock::new();
    BIG.get_or_init(|| png(5000, 4000))
}

pub fn write(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(bytes).expect("write");
}
