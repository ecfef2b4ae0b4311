//! A lab cluster for a test: `resizer lab up` in a temporary directory (stopped with `lab down`
//! when the [`Lab`] drops, whatever happened), what a test reads from it and sends to it, and a
//! closed-loop [`Load`] with the samples a checker reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TempDir;

/// A ureq configuration trusting only the lab's CA: its HAProxy, api nodes and identity service
/// speak HTTPS with certificates of it.
pub fn agent_config(ca: &Path) -> ureq::config::ConfigBuilder<ureq::typestate::AgentScope> {
    ureq::Agent::config_builder().tls_config(lab::ureq_tls(ca).expect("the lab's CA"))
}

/// A client of the lab as the tests' loads are: trusts its CA, takes HTTP errors as answers, and
/// gives up on a request after 30 s.
pub fn client_agent(ca: &Path) -> ureq::Agent {
    agent_config(ca).http_status_as_error(false).timeout_global(Some(Duration::from_secs(30))).build().into()
}

pub struct Lab {
    /// cluster.json as `lab up` left it.
    pub file: Value,
    pub dir: PathBuf,
    _guard: lab::LabGuard,
    _tmp: TempDir,
    /// Trusts the lab's CA; HTTP errors are answers, not errors.
    pub agent: ureq::Agent,
}

impl Drop for Lab {
    /// `lab down` removes the lab's shared-memory directory; a test that ends without it (the
    /// guard kills the processes) removes it here.
    fn drop(&mut self) {
        if let Some(memory) = self.spool_memory_dir() {
            let _ = std::fs::remove_dir_all(memory);
        }
    }
}

impl Lab {
    /// The directory in /dev/shm the api nodes keep their open spool batches in.
    pub fn spool_memory_dir(&self) -> Option<PathBuf> {
        let components = self.file["components"].as_array()?;
        let api = components.iter().find(|c| c["role"] == "api")?;
        api["env"]["RESIZER_USAGE_SPOOL_MEMORY_DIR"].as_str().map(PathBuf::from)
    }

    pub fn up(args: &[&str]) -> Lab {
        let tmp = TempDir::new();
        let dir = tmp.0.join("lab");
        let guard = lab::LabGuard::new(&dir);
        let out = Command::new(env!("CARGO_BIN_EXE_resizer"))
            .args(["lab", "up", "--dir"])
            .arg(&dir)
            .args(args)
            // The load here is the cluster's, not one tenant's quota.
            .args(["--set", "limits.rate_per_sec=1000000", "--set", "limits.burst=1000000"])
            .output()
            .expect("run resizer lab up");
        assert!(
            out.status.success(),
            "resizer lab up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let file: Value = serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).expect("cluster.json"))
            .expect("cluster.json is JSON");
        let ca = file["fields"]["tls_ca"].as_str().expect("the lab runs TLS: tls_ca in cluster.json");
        let agent = client_agent(Path::new(ca));
        Lab { file, dir, _guard: guard, _tmp: tmp, agent }
    }

    /// cluster.json's list field `name` (`nats_urls`, `nats_identity_urls`).
    pub fn urls(&self, name: &str) -> Vec<String> {
        let urls = self.file["fields"][name].as_array().unwrap_or_else(|| panic!("cluster.json has no list {name}"));
        urls.iter().map(|u| u.as_str().expect("URL").to_owned()).collect()
    }

    pub fn field(&self, name: &str) -> String {
        self.file["fields"][name].as_str().unwrap_or_else(|| panic!("cluster.json has no field {name}")).to_owned()
    }

    pub fn component(&self, name: &str) -> Value {
        let components = self.file["components"].as_array().expect("components");
        components.iter().find(|c| c["name"] == name).cloned().unwrap_or_else(|| panic!("no component {name}"))
    }

    pub fn url_of(&self, name: &str, key: &str) -> String {
        self.component(name)["urls"][key].as_str().unwrap_or_else(|| panic!("{name} has no {key} URL")).to_owned()
    }
}

impl Lab {
    pub fn resize(&self, query: &str, body: &[u8]) -> (u16, Vec<u8>, Value) {
        let url = format!("{}/v1/resize?{query}", self.field("url"));
        resize_at(&self.agent, &url, &self.field("demo_api_key"), body)
    }

    /// Sum of every sample of `series` (any labels) in a component's /metrics.
    pub fn metric_sum(&self, component: &str, series: &str) -> f64 {
        metric_sum(&self.agent, &self.url_of(component, "metrics"), series)
    }

    pub fn signal(&self, name: &str, signal: lab::Signal) {
        lab::signal_component(&self.dir, name, signal).unwrap_or_else(|e| panic!("signal {name}: {e}"));
    }

    pub fn nats(&self) -> lab::NatsCluster {
        let file = lab::ClusterFile::read(&self.dir).expect("cluster.json");
        let nats: Vec<lab::Component> = file.with_role(lab::NATS_ROLE).cloned().collect();
        lab::NatsCluster::from_components(&nats).expect("the NATS nodes")
    }

    /// cluster.json's `nats_identity_urls`: the NATS user that may do everything in the
    /// identity account, where the identity bucket is.
    /// The lab's CA (cluster.json's `tls_ca`): what a client of its NATS or PostgreSQL trusts.
    pub fn tls_ca(&self) -> PathBuf {
        PathBuf::from(self.field("tls_ca"))
    }

    pub fn log_tails(&self) -> String {
        let file = lab::ClusterFile::read(&self.dir).expect("cluster.json");
        file.components.iter().map(|c| format!("--- {} ---\n{}\n", c.name, c.log_tail(15))).collect()
    }
}

pub fn resize_at(agent: &ureq::Agent, url: &str, key: &str, body: &[u8]) -> (u16, Vec<u8>, Value) {
    let request = agent.post(url).header("authorization", format!("Bearer {key}"));
    answer(request.send(body))
}

/// [`resize_at`] with the request id given.
fn send_at(agent: &ureq::Agent, url: &str, key: &str, body: &[u8], request_id: &str) -> (u16, Vec<u8>, Value) {
    let request = agent.post(url).header("authorization", format!("Bearer {key}")).header("x-request-id", request_id);
    answer(request.send(body))
}

fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Vec<u8>, Value) {
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let bytes = response.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap_or_default();
            let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, bytes, json)
        }
        // A connection the server side dropped: what a client of a killed node sees.
        Err(_) => (0, Vec::new(), Value::Null),
    }
}

pub fn metric_sum(agent: &ureq::Agent, url: &str, series: &str) -> f64 {
    let Ok(mut response) = agent.get(url).call() else { return f64::NAN };
    let text = response.body_mut().read_to_string().unwrap_or_default();
    text.lines()
        .filter(|l| {
            // `name` matches every label set; `name{a="b"` those that start so.
            l.starts_with(series)
                && (series.contains('{') || matches!(l.as_bytes().get(series.len()), Some(b'{' | b' ')))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One request of a load: when it was sent (from the load's start), how long it took, status.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Its `x-request-id` is [`Sample::request_id`].
    pub seq: u64,
    pub sent: Duration,
    pub latency: Duration,
    pub status: u16,
}

impl Sample {
    /// The request id it was sent with, which its usage record carries.
    pub fn request_id(&self) -> String {
        format!("load-{}-{}", std::process::id(), self.seq)
    }
}

/// Numbers the requests of every load of this process.
static REQUEST_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A closed-loop load of `clients` threads sending `body` until stopped, each pausing `pause`
/// between requests (a steady, modest rate that leaves the 2 cores room for the cluster).
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(lab: &Lab, query: &str, body: Vec<u8>, clients: usize, pause: Duration) -> Load {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let body = Arc::new(body);
        let url = format!("{}/v1/resize?{query}", lab.field("url"));
        let key = lab.field("demo_api_key");
        let ca = lab.tls_ca();
        let threads = (0..clients)
            .map(|_| {
                let (stop, samples, body, url, key, ca) =
                    (stop.clone(), samples.clone(), body.clone(), url.clone(), key.clone(), ca.clone());
                thread::spawn(move || {
                    let agent = client_agent(&ca);
                    while !stop.load(Ordering::Relaxed) {
                        let seq = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
                        let request_id =
                            Sample { seq, sent: Duration::ZERO, latency: Duration::ZERO, status: 0 }.request_id();
                        let sent = started.elapsed();
                        let t = Instant::now();
                        let (status, _, _) = send_at(&agent, &url, &key, &body, &request_id);
                        samples.lock().unwrap().push(Sample { seq, sent, latency: t.elapsed(), status });
                        thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load { started, stop, samples, threads }
    }

    pub fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let mut samples = self.samples.lock().unwrap().clone();
        samples.sort_by_key(|s| s.sent);
        samples
    }
}

pub fn statuses(samples: &[Sample]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for s in samples {
        *counts.entry(s.status).or_default() += 1;
    }
    counts
}

pub fn success_ratio(samples: &[Sample]) -> f64 {
    samples.iter().filter(|s| s.status == 200).count() as f64 / samples.len().max(1) as f64
}

/// Polls `refused` on each of `nodes` until every one says so (each node dropped once it has),
/// failing after `within`: how long it took from `since`. What a revocation test measures.
pub fn until_every_node_refuses(
    nodes: &[&str],
    since: Instant,
    within: Duration,
    mut refused: impl FnMut(&str) -> bool,
) -> Duration {
    let mut pending: Vec<&str> = nodes.to_vec();
    while !pending.is_empty() {
        assert!(since.elapsed() < within, "revocation never reached {pending:?}");
        pending.retain(|n| !refused(n));
        if !pending.is_empty() {
            thread::sleep(Duration::from_millis(2));
        }
    }
    since.elapsed()
}

pub fn percentile(mut latencies: Vec<Duration>, p: f64) -> Duration {
    latencies.sort();
    let rank = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len().max(1));
    latencies.get(rank - 1).copied().unwrap_or_default()
}

pub fn sample_jpeg() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sample.jpg")).expect("examples/sample.jpg")
}

impl Lab {
    /// The demo tenant's usage today: `total` or `billable` requests.
    pub fn demo_requests(&self, kind: &str) -> u64 {
        let (status, usage) = self.admin("GET", "/v1/tenants/demo/usage?granularity=day", None);
        assert_eq!(status, 200, "{usage}");
        usage[kind]["requests"].as_u64().unwrap_or(0)
    }

    /// Waits (up to `within`) until the demo tenant's `kind` requests have grown from `before`
    /// by `expected`, lets `settle` pass (redeliveries, batches shipped again), and checks they
    /// grew by exactly that: every request counted once.
    pub fn assert_billed_once(&self, kind: &str, before: u64, expected: u64, within: Duration, settle: Duration) {
        let until = Instant::now() + within;
        while self.demo_requests(kind) < before + expected {
            let billed = self.demo_requests(kind) - before;
            assert!(Instant::now() < until, "{kind}: billed {billed} of {expected}\n{}", self.log_tails());
            thread::sleep(Duration::from_millis(250));
        }
        thread::sleep(settle);
        assert_eq!(self.demo_requests(kind) - before, expected, "{kind}: counted once each");
    }

    /// A call to the identity service's admin API; returns (status, JSON body).
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.field("admin_url"));
        let auth = format!("Bearer {}", self.field("admin_token"));
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("authorization", &auth).call(),
            (_, body) => self
                .agent
                .post(&url)
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .send(body.unwrap_or(Value::Null).to_string().as_bytes()),
        };
        match result {
            Ok(mut r) => {
                let status = r.status().as_u16();
                (
                    status,
                    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null),
                )
            }
            Err(e) => panic!("admin {method} {path}: {e}"),
        }
    }

    /// GET on a component's admin URL (api nodes serve usage and audit reads there), with the
    /// read-only token, which is all an api node holds.
    pub fn admin_get(&self, component: &str, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.url_of(component, "admin"));
        match self.agent.get(&url).header("authorization", format!("Bearer {}", self.field("read_token"))).call() {
            Ok(mut r) => {
                let status = r.status().as_u16();
                (
                    status,
                    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null),
                )
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// `resizer lab VERB --dir DIR ARGS...` (`pause api-0`, `partition nats-1`, `heal`): the
    /// fault verbs, as an operator practising on the lab uses them.
    pub fn verb(&self, args: &[&str]) {
        let out = Command::new(env!("CARGO_BIN_EXE_resizer"))
            .arg("lab")
            .arg(args[0])
            .arg("--dir")
            .arg(&self.dir)
            .args(&args[1..])
            .output()
            .expect("resizer lab");
        assert!(out.status.success(), "resizer lab {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The checker of a run: every 200 a client saw appears exactly once in tenant `tenant`'s
    /// audit, no 200 record appears that its client did not see (but for answers lost with the
    /// connection, `0` below: the record is written before the answer leaves), and the rollups
    /// count exactly the audit's 200s. `answers`: each request's id and the status its client saw
    /// (0: no answer). Waits up to a minute for the usage pipeline to catch up.
    pub fn assert_audit_matches(&self, tenant: &str, answers: &[(String, u16)]) {
        use std::collections::BTreeSet;
        let ids = |status: u16| -> BTreeSet<&str> {
            answers.iter().filter(|(_, s)| *s == status).map(|(id, _)| id.as_str()).collect()
        };
        let (ok_ids, dropped) = (ids(200), ids(0));
        let started = Instant::now();
        let until = started + Duration::from_secs(60);
        let records = loop {
            let records = self.audit(tenant);
            let have: BTreeSet<&str> = records.iter().filter_map(|r| r["request_id"].as_str()).collect();
            if ok_ids.iter().all(|id| have.contains(id)) {
                break records;
            }
            if Instant::now() >= until {
                panic!(
                    "tenant {tenant}: the audit never caught up ({} of {} seen 200s)\n{}\n{}",
                    ok_ids.iter().filter(|id| have.contains(*id)).count(),
                    ok_ids.len(),
                    self.usage_pipeline_state(),
                    self.log_tails()
                );
            }
            thread::sleep(Duration::from_millis(500));
        };
        eprintln!("tenant {tenant}: the audit caught up {:.1} s after the load ended", started.elapsed().as_secs_f64());
        let mut recorded: Vec<&str> = records.iter().filter_map(|r| r["request_id"].as_str()).collect();
        let total = recorded.len();
        recorded.sort_unstable();
        recorded.dedup();
        assert_eq!(recorded.len(), total, "tenant {tenant}: a request id recorded twice");
        let recorded_ok: Vec<&str> =
            records.iter().filter(|r| r["status"] == 200).filter_map(|r| r["request_id"].as_str()).collect();
        let unseen: Vec<&&str> = recorded_ok.iter().filter(|id| !ok_ids.contains(**id)).collect();
        assert!(
            unseen.iter().all(|id| dropped.contains(**id)),
            "tenant {tenant}: 200 records of requests whose client saw another answer: {unseen:?}"
        );
        // An aggregator writes a batch's Parquet (the audit) before it commits the batch's
        // rollups, so the audit may be a batch ahead for a moment: wait for them to agree.
        let until = Instant::now() + Duration::from_secs(30);
        let rolled = loop {
            let (status, usage) = self.admin("GET", &format!("/v1/tenants/{tenant}/usage?granularity=day"), None);
            assert_eq!(status, 200, "{usage}");
            let rolled: u64 = usage["buckets"]
                .as_array()
                .map(|b| b.iter().map(|b| b["by_status"]["200"]["requests"].as_u64().unwrap_or(0)).sum())
                .unwrap_or(0);
            if rolled as usize >= recorded_ok.len() || Instant::now() > until {
                break rolled;
            }
            thread::sleep(Duration::from_millis(250));
        };
        eprintln!(
            "tenant {tenant}: client saw {} × 200, {} dropped, {} other; audit {total} records ({} × 200, {} of them unseen); rollups {rolled} × 200",
            ok_ids.len(),
            dropped.len(),
            answers.iter().filter(|(_, s)| !matches!(s, 0 | 200)).count(),
            recorded_ok.len(),
            unseen.len(),
        );
        assert_eq!(rolled as usize, recorded_ok.len(), "tenant {tenant}: rollups ≠ audit");
        assert_eq!(
            rolled as usize,
            ok_ids.len() + unseen.len(),
            "tenant {tenant}: rollups ≠ seen 200s + unseen answers"
        );
    }

    /// Where the usage pipeline stands, for a failure's message: each NATS server's view of the
    /// USAGE stream and of the aggregators' consumer (`/jsz`), each api node's batches shipped
    /// and not confirmed, and what the aggregator applied. Also copies the lab's logs to a
    /// directory that outlives the test, named in the text.
    pub fn usage_pipeline_state(&self) -> String {
        let mut out = String::from("usage pipeline:\n");
        for node in self.nats().nodes() {
            let jsz = lab::http_get_json::<Value>(
                &format!("{}/jsz?accounts=true&streams=true&consumers=true", node.monitor_url()),
                Duration::from_secs(5),
            );
            let stream = jsz.as_ref().ok().and_then(|j| {
                j["account_details"]
                    .as_array()?
                    .iter()
                    .flat_map(|a| a["stream_detail"].as_array())
                    .flatten()
                    .find(|s| s["name"] == "USAGE")
                    .cloned()
            });
            let Some(s) = stream else {
                out.push_str(&format!("  {}: no USAGE stream ({:?})\n", node.server_name, jsz.err()));
                continue;
            };
            let st = &s["state"];
            out.push_str(&format!(
                "  {}: USAGE leader {} messages {} seq {}..{} deleted {}\n",
                node.server_name,
                s["cluster"]["leader"],
                st["messages"],
                st["first_seq"],
                st["last_seq"],
                st["num_deleted"]
            ));
            for c in s["consumer_detail"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "    consumer {}: leader {} delivered {} ack floor {} pending {} ack pending {} \
                     redelivered {} waiting {}\n",
                    c["name"],
                    c["cluster"]["leader"],
                    c["delivered"]["stream_seq"],
                    c["ack_floor"]["stream_seq"],
                    c["num_pending"],
                    c["num_ack_pending"],
                    c["num_redelivered"],
                    c["num_waiting"]
                ));
            }
        }
        let file = lab::ClusterFile::read(&self.dir).expect("cluster.json");
        for api in file.with_role("api") {
            out.push_str(&format!(
                "  {}: batches unconfirmed {}, shipped again {}\n",
                api.name,
                self.metric_sum(&api.name, "resizer_usage_batches_unconfirmed") as u64,
                self.metric_sum(&api.name, "resizer_usage_batches_shipped_again_total") as u64
            ));
        }
        for aggregator in file.with_role("usage") {
            out.push_str(&format!(
                "  {}: batches applied {}, replayed {}, failed {}; records {}\n",
                aggregator.name,
                self.metric_sum(&aggregator.name, "resizer_usage_batches_total{outcome=\"applied\"") as u64,
                self.metric_sum(&aggregator.name, "resizer_usage_batches_total{outcome=\"replayed\"") as u64,
                self.metric_sum(&aggregator.name, "resizer_usage_batches_total{outcome=\"failed\"") as u64,
                self.metric_sum(&aggregator.name, "resizer_usage_records_total") as u64
            ));
        }
        let kept = std::env::temp_dir().join(format!("resizer-failed-logs-{}", std::process::id()));
        let copied = Command::new("cp").arg("-r").arg(self.dir.join("logs")).arg(&kept).status();
        if copied.is_ok_and(|s| s.success()) {
            out.push_str(&format!("  logs kept in {}\n", kept.display()));
        }
        out
    }

    /// Every audit record of `tenant` (a name or an id), page after page, read at the identity
    /// service (empty while a read fails).
    pub fn audit(&self, tenant: &str) -> Vec<Value> {
        let mut records = Vec::new();
        let mut after = String::new();
        loop {
            let path = format!("/v1/tenants/{tenant}/audit?limit=10000{after}");
            let (status, page) = self.admin("GET", &path, None);
            if status != 200 {
                return Vec::new();
            }
            records.extend(page["records"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => return records,
            }
        }
    }

    pub fn restart(&self, name: &str) {
        lab::restart_component(&self.dir, name).unwrap_or_else(|e| panic!("restart {name}: {e}"));
    }
}
