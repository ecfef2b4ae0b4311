//! The lab observed the way production would be (`resizer lab up --prometheus`, docs/monitoring.md):
//! Debian's Prometheus scraping every node every second with deploy/prometheus's rules and alerts
//! (each `for:` divided by 15). Checked through Prometheus's HTTP API only: every target up, the
//! request rate Prometheus computes against what this test sent, the counters it holds against
//! the requests answered, and lab faults firing the matching alerts within their `for:`, then
//! clearing once healed. Everything is stopped by `lab down` (the [`Lab`] guard, also on failure).
//!
//! Needs nats-server, HAProxy, PostgreSQL and prometheus from Debian's packages (scripts/test.sh).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cluster::{client_agent, sample_jpeg, Lab};
use serde_json::Value;

/// The lab's Prometheus.
struct Prometheus {
    url: String,
    agent: ureq::Agent,
}

impl Prometheus {
    /// `GET /api/v1/<path>` with `params`; the `data` of a successful answer.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut request = self.agent.get(format!("{}/api/v1/{path}", self.url));
        for (k, v) in params {
            request = request.query(*k, *v);
        }
        let mut answer = request.call().unwrap_or_else(|e| panic!("GET /api/v1/{path}: {e}"));
        let body: Value = serde_json::from_str(&answer.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or_else(|e| panic!("/api/v1/{path}: not JSON: {e}"));
        assert_eq!(body["status"], "success", "/api/v1/{path} {params:?}: {body}");
        body["data"].clone()
    }

    /// An instant query's single value (None: an empty result), at `time` (unix seconds) or now.
    fn scalar(&self, query: &str, time: Option<f64>) -> Option<f64> {
        let time = time.map(|t| format!("{t:.3}"));
        let mut params = vec![("query", query)];
        if let Some(t) = &time {
            params.push(("time", t));
        }
        let data = self.api("query", &params);
        let result = data["result"].as_array().expect("a vector");
        assert!(result.len() <= 1, "{query}: one series expected: {data}");
        result.first().and_then(|s| s["value"][1].as_str()?.parse().ok())
    }

    /// Active targets by their `component` label: health.
    fn targets(&self) -> BTreeMap<String, String> {
        let data = self.api("targets", &[("state", "active")]);
        data["activeTargets"]
            .as_array()
            .expect("targets")
            .iter()
            .map(|t| {
                let component = t["labels"]["component"].as_str().unwrap_or("?").to_owned();
                (component, t["health"].as_str().unwrap_or("?").to_owned())
            })
            .collect()
    }

    /// Alerts now: (alertname, component label or "") → state (`pending`, `firing`).
    fn alerts(&self) -> BTreeMap<(String, String), String> {
        let data = self.api("alerts", &[]);
        data["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or_default().to_owned();
                ((label("alertname"), label("component")), a["state"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64()
}

/// Requests the api nodes answered 200 on `POST /v1/resize`, as Prometheus holds them.
const RESIZE_COUNT: &str =
    r#"resizer_http_request_duration_seconds_count{job="resizer-api",route="resize",status="200"}"#;

/// Dashboard queries (panel title, query refId) with no data in a healthy lab cluster, and why.
const EMPTY_IN_THE_LAB: [(&str, &str, &str); 6] = [
    ("Errors (5xx) by route and status", "A", "no 5xx under a healthy load"),
    (
        "Jobs staged for workers (cluster) / waiting in lanes (embedded)",
        "B",
        "the embedded pool's lanes: resizer dev only",
    ),
    (
        "Jobs staged for workers (cluster) / waiting in lanes (embedded)",
        "C",
        "the embedded pool's lanes: resizer dev only",
    ),
    ("Worker utilisation", "B", "the embedded pool's threads: resizer dev only"),
    ("Worker jobs by outcome", "B", "redeliveries: no worker died holding a job"),
    ("Archive compaction", "A", "no compaction run within the test's minute"),
];

/// Every PromQL query of deploy/grafana/resizer.json: (panel title, refId, expr) with Grafana's
/// variables replaced as Grafana would over a short range.
fn dashboard_queries() -> Vec<(String, String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/resizer.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(&path).expect("the dashboard")).expect("JSON");
    fn walk(panels: &Value, out: &mut Vec<(String, String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str().filter(|e| !e.is_empty()) {
                    let expr =
                        expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h");
                    let title = panel["title"].as_str().unwrap_or_default().to_owned();
                    out.push((title, target["refId"].as_str().unwrap_or_default().to_owned(), expr));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A closed loop of `clients` threads for `duration`, each pausing `pause` after each answer (to
/// leave the shared 2 cores some room): each request's completion time (unix seconds) and status.
fn load(lab: &Lab, clients: usize, pause: Duration, duration: Duration) -> Vec<(f64, u16)> {
    let done = Arc::new(Mutex::new(Vec::new()));
    let url = format!("{}/v1/resize?width=64", lab.field("url"));
    let key = lab.field("demo_api_key");
    let body = Arc::new(sample_jpeg());
    let until = Instant::now() + duration;
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (done, url, key, body, ca) = (done.clone(), url.clone(), key.clone(), body.clone(), lab.tls_ca());
            thread::spawn(move || {
                let agent = client_agent(&ca);
                while Instant::now() < until {
                    let (status, _, _) = common::cluster::resize_at(&agent, &url, &key, &body);
                    done.lock().unwrap().push((unix_now(), status));
                    thread::sleep(pause);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("load thread");
    }
    let mut done = done.lock().unwrap().clone();
    done.sort_by(|a, b| a.0.total_cmp(&b.0));
    done
}

fn poll<T>(what: &str, within: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if start.elapsed() > within => panic!("{what}: not within {within:?}; last: {last}"),
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn the_labs_prometheus_scrapes_every_node_counts_the_load_and_fires_alerts_on_faults() {
    let started = Instant::now();
    let lab = Lab::up(&["--prometheus"]);
    let prometheus = Prometheus {
        url: lab.field("prometheus_url"),
        agent: ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into(),
    };
    // `lab status --json` names it too.
    let status = Command::new(env!("CARGO_BIN_EXE_resizer"))
        .args(["lab", "status", "--json", "--dir"])
        .arg(&lab.dir)
        .output()
        .expect("lab status");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["cluster"]["fields"]["prometheus_url"].as_str(), Some(prometheus.url.as_str()));
    assert!(status["status"].as_array().expect("status").iter().any(|c| c["name"] == "prometheus"));

    // Every component with a metrics URL is a target, and every target is up (the api nodes
    // and the identity service over https, checked against the lab's CA).
    let scraped: BTreeSet<String> = lab.file["components"]
        .as_array()
        .expect("components")
        .iter()
        .filter(|c| c["urls"]["metrics"].is_string())
        .map(|c| c["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(scraped.len(), 7, "2 api nodes, 2 workers, identity, usage-0, haproxy: {scraped:?}");
    let targets = poll("every target up", Duration::from_secs(30), || {
        let targets = prometheus.targets();
        let all_up = targets.keys().cloned().collect::<BTreeSet<_>>() == scraped && targets.values().all(|h| h == "up");
        if all_up {
            Ok(targets)
        } else {
            Err(format!("{targets:?}"))
        }
    });
    eprintln!("targets up after {:.1} s: {targets:?}", started.elapsed().as_secs_f64());

    // Warm-up: the series of each api node exists before the measured load, so that rate()
    // sees the load from its first request.
    // A refused key and a refused parameter too, for the dashboard's refusal panels.
    let jpeg = sample_jpeg();
    for _ in 0..4 {
        assert_eq!(lab.resize("width=64", &jpeg).0, 200, "{}", lab.log_tails());
    }
    let wrong_key = format!("{}/v1/resize?width=64", lab.field("url"));
    assert_eq!(common::cluster::resize_at(&lab.agent, &wrong_key, "rsz_wrong", &jpeg).0, 401);
    assert_eq!(lab.resize("width=64&fit=bogus", &jpeg).0, 400);
    let total = format!("sum({RESIZE_COUNT})");
    poll("the warm-up counted", Duration::from_secs(10), || match prometheus.scalar(&total, None) {
        Some(4.0) => Ok(()),
        other => Err(format!("{other:?}")),
    });

    // The measured load: a steady closed loop through HAProxy.
    let load_start = unix_now();
    let load_secs = 20.0;
    let answered = load(&lab, 4, Duration::from_millis(20), Duration::from_secs_f64(load_secs));
    let statuses: BTreeMap<u16, usize> = answered.iter().fold(BTreeMap::new(), |mut m, (_, s)| {
        *m.entry(*s).or_default() += 1;
        m
    });
    assert_eq!(statuses.get(&200).copied(), Some(answered.len()), "every request answered 200: {statuses:?}");
    let sent = answered.len() as f64;

    // The counters Prometheus scraped add up to exactly what was answered (4 + the load).
    let held =
        poll("Prometheus to hold every request", Duration::from_secs(10), || match prometheus.scalar(&total, None) {
            Some(n) if n == 4.0 + sent => Ok(n),
            other => Err(format!("{other:?} of {}", 4.0 + sent)),
        });
    eprintln!("load: {sent} requests in {load_secs} s; Prometheus holds {held} (4 warm-up + the load)");

    // The rate as Prometheus computes it, over 15 s windows inside the load, against the rate of
    // the answers this test got in the same window (each request is counted by the api node just
    // before its answer leaves, a few ms before the client sees it). rate() takes the samples in
    // the window (scraped each second), their increase over their span, extrapolated to the
    // window: at a steady rate it is unbiased, and its error is the requests around the window's
    // two edges that fall in the part of a scrape interval it extrapolates over — with 4 clients,
    // a few requests of ~15 × the rate. 10 % covers that with room (the measured gaps are below;
    // docs/monitoring.md).
    let window = 15.0;
    for eval in [load_start + 16.0, load_start + 19.0] {
        let query = format!("sum(rate({RESIZE_COUNT}[15s]))");
        let computed = prometheus.scalar(&query, Some(eval)).expect("a rate");
        let haproxy = prometheus
            .scalar(r#"sum(rate(haproxy_frontend_http_requests_total{proxy="public"}[15s]))"#, Some(eval))
            .expect("HAProxy's rate");
        let client = answered.iter().filter(|(t, _)| *t > eval - window && *t <= eval).count() as f64 / window;
        let gap = (computed - client).abs() / client;
        let haproxy_gap = (haproxy - client).abs() / client;
        eprintln!(
            "rate at load+{:.0} s over 15 s: Prometheus {computed:.2}/s (api nodes), {haproxy:.2}/s (HAProxy), \
             client {client:.2}/s: gaps {:.1} %, {:.1} %",
            eval - load_start,
            gap * 100.0,
            haproxy_gap * 100.0
        );
        assert!(client > 2.0, "the load is too thin to measure a rate: {client}/s");
        assert!(gap < 0.10, "Prometheus's rate {computed} against the client's {client}");
        assert!(haproxy_gap < 0.10, "HAProxy's rate {haproxy} against the client's {client}");
    }
    // The recording rules ran on the same data (their group every 4 s in the lab).
    poll("the SLO recording rule", Duration::from_secs(10), || {
        prometheus.scalar("resizer:slo_requests:rate5m", None).filter(|r| *r > 0.0).ok_or("no value".to_string())
    });
    // Every query of the dashboard and every recording rule returns data from the lab under
    // load (the load ended seconds ago: the 1m windows still hold it), but for the few listed
    // above; every series an alert reads exists, so no alert is quiet for want of data.
    let mut empty = Vec::new();
    let queries = dashboard_queries();
    for (title, ref_id, expr) in &queries {
        let data = prometheus.api("query", &[("query", expr)]);
        let has_data = data["result"].as_array().is_some_and(|r| !r.is_empty());
        let allowed = EMPTY_IN_THE_LAB.iter().any(|(t, r, _)| t == title && r == ref_id);
        if !has_data && !allowed {
            empty.push(format!("dashboard {title:?} {ref_id}: {expr}"));
        }
    }
    let rules = prometheus.api("rules", &[]);
    let (mut recorded, mut alert_series) = (0, BTreeSet::new());
    for rule in rules["groups"].as_array().expect("groups").iter().flat_map(|g| g["rules"].as_array().expect("rules")) {
        let query = rule["query"].as_str().expect("query");
        assert_eq!(rule["health"], "ok", "{rule}");
        if rule["type"] == "recording" {
            recorded += 1;
            let data = prometheus.api("query", &[("query", query)]);
            if data["result"].as_array().is_none_or(|r| r.is_empty()) {
                empty.push(format!("recording rule {}: {query}", rule["name"]));
            }
        } else {
            let names = query.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
            alert_series
                .extend(names.filter(|n| n.starts_with("resizer_") || n.starts_with("haproxy_")).map(str::to_owned));
        }
    }
    for name in &alert_series {
        if prometheus.scalar(&format!("count({name})"), None).is_none() {
            empty.push(format!("no series {name}, which an alert reads"));
        }
    }
    eprintln!(
        "{} dashboard queries ({} allowed empty), {recorded} recording rules, {} series the alerts read: {} without data",
        queries.len(),
        EMPTY_IN_THE_LAB.len(),
        alert_series.len(),
        empty.len()
    );
    assert!(empty.is_empty(), "without data in the lab under load:\n{}", empty.join("\n"));

    // None firing before the faults (one may be pending: a scrape slower than its 1 s timeout on
    // a loaded machine reads as `up == 0` for a second).
    let firing_before: Vec<_> = prometheus.alerts().into_iter().filter(|(_, state)| state == "firing").collect();
    assert!(firing_before.is_empty(), "alerts firing before any fault: {firing_before:?}");

    // Faults: a worker killed (kill -9: its target goes down) and every NATS server frozen
    // (SIGSTOP: each role loses NATS, the api nodes leave HAProxy's rotation, the job stream has
    // no leader). Each alert goes pending once a node notices and Prometheus scrapes it (the api
    // nodes: 0.9 s of server silence; a lost NATS connection: the client's pings, a few seconds),
    // and fires once its scaled `for:` has passed.
    let fault = Instant::now();
    lab.signal("worker-1", lab::Signal::Kill);
    for n in 0..3 {
        lab.signal(&format!("nats-{n}"), lab::Signal::Stop);
    }
    // (alert, component, its `for:` in the lab: the deploy file's divided by 15)
    let expected: [(&str, &str, u64); 7] = [
        ("ResizerTargetDown", "worker-1", 8),
        ("ResizerNodeNotReady", "api-0", 8),
        ("ResizerNodeNotReady", "api-1", 8),
        ("ResizerNatsDisconnected", "api-0", 8),
        ("ResizerNatsDisconnected", "worker-0", 8),
        ("ResizerHAProxyNoApiNode", "haproxy", 4),
        ("ResizerJobStreamLeaderless", "", 4),
    ];
    let mut pending_at: BTreeMap<(String, String), Duration> = BTreeMap::new();
    let mut firing_at: BTreeMap<(String, String), Duration> = BTreeMap::new();
    poll("every expected alert firing", Duration::from_secs(40), || {
        let now = fault.elapsed();
        for (key, state) in prometheus.alerts() {
            pending_at.entry(key.clone()).or_insert(now);
            if state == "firing" {
                firing_at.entry(key).or_insert(now);
            }
        }
        let missing: Vec<_> =
            expected.iter().filter(|(a, c, _)| !firing_at.contains_key(&(a.to_string(), c.to_string()))).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not firing yet: {missing:?}; seen {pending_at:?}"))
        }
    });
    for (alert, component, for_secs) in expected {
        let key = (alert.to_owned(), component.to_owned());
        let (pending, firing) = (pending_at[&key], firing_at[&key]);
        eprintln!(
            "{alert}{{component={component:?}}}: pending after {:.1} s, firing after {:.1} s (for: {for_secs} s)",
            pending.as_secs_f64(),
            firing.as_secs_f64()
        );
        // Noticed within 10 s; fired within its `for:` window: no sooner than `for` after it went
        // pending (give or take a poll), no later than `for` + 3 s (a scrape, an evaluation, our
        // polling).
        assert!(pending <= Duration::from_secs(10), "{key:?} pending only after {pending:?}");
        let held = firing.saturating_sub(pending);
        assert!(held + Duration::from_millis(500) >= Duration::from_secs(for_secs), "{key:?} fired early: {held:?}");
        assert!(held <= Duration::from_secs(for_secs + 3), "{key:?} fired {held:?} after it went pending");
    }

    // Healed (NATS resumed, the worker started again), the alerts clear.
    let heal = Command::new(env!("CARGO_BIN_EXE_resizer"))
        .args(["lab", "heal", "--dir"])
        .arg(&lab.dir)
        .output()
        .expect("lab heal");
    assert!(heal.status.success(), "{}", String::from_utf8_lossy(&heal.stderr));
    let healed = Instant::now();
    poll("every alert cleared", Duration::from_secs(30), || {
        let alerts = prometheus.alerts();
        if alerts.is_empty() {
            Ok(())
        } else {
            Err(format!("{alerts:?}"))
        }
    });
    eprintln!("alerts cleared {:.1} s after heal", healed.elapsed().as_secs_f64());

    // `lab down` stops Prometheus with the rest.
    let pid = lab.component("prometheus")["pid"].as_u64().expect("pid");
    let down = Command::new(env!("CARGO_BIN_EXE_resizer"))
        .args(["lab", "down", "--dir"])
        .arg(&lab.dir)
        .output()
        .expect("lab down");
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    assert!(String::from_utf8_lossy(&down.stdout).contains("prometheus"), "{}", String::from_utf8_lossy(&down.stdout));
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
    assert!(!alive, "Prometheus (pid {pid}) outlived lab down");
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}
