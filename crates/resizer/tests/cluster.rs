//! The cluster, for real: `resizer lab up` starts 3 nats-server nodes (JetStream), 2 api nodes
//! behind HAProxy and workers on free loopback ports; these tests drive load at it from this
//! process over HTTP and hurt it the ways the cluster must survive — kill -9 of a worker, of an
//! api node, of the JetStream leader of the job stream, SIGSTOP of a worker, a job that keeps
//! killing its workers. `down` runs when each test ends, whatever happened.
//!
//! nats-server and haproxy come from Debian's packages (`scripts/test.sh` installs them); a
//! missing one fails the test with the package to install.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{
    agent_config, client_agent, percentile, resize_at, sample_jpeg, statuses, success_ratio, until_every_node_refuses,
    Lab, Load, Sample,
};
use serde_json::Value;

/// Speaks NATS over TLS to `address` (after its plaintext INFO line, as NATS upgrades), trusting
/// `ca`: sends `bytes`, returns everything the server says until it closes or goes quiet.
fn nats_over_tls(address: &str, ca: &Path, bytes: &[u8]) -> String {
    use std::io::BufRead;
    let stream = std::net::TcpStream::connect(address).expect("NATS client port");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
    let mut info = String::new();
    reader.read_line(&mut info).expect("INFO");
    let config = tls::client_config(ca).expect("the lab's CA");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = rustls::StreamOwned::new(rustls::ClientConnection::new(config, name).expect("TLS"), stream);
    tls.write_all(bytes).expect("write over TLS");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

impl Lab {
    /// Jobs api node `node` published and JetStream stored, in `lane` or in all lanes.
    fn jobs_stored(&self, node: &str, lane: Option<&str>) -> f64 {
        let lanes = lane.map_or(vec!["small", "medium", "large"], |l| vec![l]);
        lanes
            .iter()
            .map(|l| self.metric_sum(node, &format!("resizer_queue_publish_total{{lane=\"{l}\",outcome=\"stored\"")))
            .sum()
    }

    /// cluster.json's `nats_identity_urls`: the NATS user that may do everything in the
    /// identity account, where the identity bucket is.
    fn identity_nats_urls(&self) -> Vec<String> {
        self.urls("nats_identity_urls")
    }

    /// Every NATS server's log so far, one after the other.
    fn nats_logs(&self) -> String {
        (0..3)
            .map(|i| std::fs::read_to_string(self.dir.join(format!("logs/nats-{i}.log"))).unwrap_or_default())
            .collect()
    }

    /// No NATS server refused a subject to a role: each role's permissions cover what it does.
    fn assert_no_nats_refusals(&self) {
        let refusals = nats_refusals(&self.nats_logs());
        assert!(refusals.is_empty(), "a role was refused a subject it uses:\n{}", refusals.join("\n"));
    }

    /// Every JetStream consumer, as each NATS node sees them: account, stream, name, the server
    /// leading it and its replicas — for a failure message about where things were.
    fn consumer_placement(&self) -> String {
        let mut out = String::new();
        for node in self.nats().nodes() {
            let url = format!("{}/jsz?accounts=true&consumers=true", node.monitor_url());
            let answer = match lab::http_get(&url, Duration::from_secs(2)) {
                Ok(answer) => answer,
                Err(e) => {
                    out.push_str(&format!("{}: {e}\n", node.server_name));
                    continue;
                }
            };
            let jsz: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
            out.push_str(&format!("{} (meta leader {}):\n", node.server_name, jsz["meta_cluster"]["leader"]));
            for account in jsz["account_details"].as_array().into_iter().flatten() {
                for stream in account["stream_detail"].as_array().into_iter().flatten() {
                    for consumer in stream["consumer_detail"].as_array().into_iter().flatten() {
                        let replicas: Vec<String> = consumer["cluster"]["replicas"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|r| format!("{}(current {}, offline {})", r["name"], r["current"], r["offline"]))
                            .collect();
                        out.push_str(&format!(
                            "  {}/{}/{}: leader {} replicas {replicas:?} delivered {} pending {}\n",
                            account["name"],
                            stream["name"],
                            consumer["name"],
                            consumer["cluster"]["leader"],
                            consumer["delivered"]["stream_seq"],
                            consumer["num_pending"]
                        ));
                    }
                }
            }
        }
        out
    }
}

/// The permission refusals ("Permissions Violation") in NATS server logs.
/// Permission violations in the NATS servers' logs, but for each role's check at start that its
/// login is held to its role (`queue::PROBE_SUBJECT`, refused by design).
fn nats_refusals(logs: &str) -> Vec<String> {
    let probe = format!("Subject \"{}\"", queue::PROBE_SUBJECT);
    logs.lines().filter(|l| l.contains("Violation") && !l.contains(&probe)).map(str::to_owned).collect()
}

fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Polls a worker's busy gauge until it runs a job, so that a kill lands mid-job.
fn wait_until_busy(lab: &Lab, worker: &str, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if lab.metric_sum(worker, "resizer_worker_busy") >= 1.0 {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn the_lab_cluster_resizes_through_haproxy_and_down_leaves_nothing() {
    let lab = Lab::up(&["--workers", "2", "--worker-slots", "1"]);
    let jpeg = sample_jpeg();
    let (status, body, _) = lab.resize("width=100", &jpeg);
    assert_eq!(status, 200, "{}", lab.log_tails());
    assert_eq!(imaging::probe(&body).expect("an image").width, 100);

    // Failures come back from the worker typed, answered as `resizer dev` answers them.
    let (status, _, problem) = lab.resize("width=100", &jpeg[..jpeg.len() / 2]);
    assert_eq!((status, problem["type"].as_str()), (422, Some("urn:resizer:problem:corrupt-image")));
    let (status, _, problem) = lab.resize("width=100&fit=bogus", &jpeg);
    assert_eq!((status, problem["type"].as_str()), (400, Some("urn:resizer:problem:bad-parameter")));
    let (status, _, problem) = lab.resize("format=webp&width=50", &common::png(300, 200));
    assert_eq!(status, 200, "{problem}");
    // AVIF is encoded on the worker and named in its report like the other formats.
    let (status, body, problem) = lab.resize("format=avif&width=40", &common::png(300, 200));
    assert_eq!(status, 200, "{problem}");
    assert!(body.get(4..12) == Some(b"ftypavif".as_slice()), "an AVIF file: {:?}", body.get(..16));

    // The internal port is not behind the load balancer, and it opens nothing without a token.
    let through_lb = format!("{}/internal/v1/jobs/0123/source", lab.field("url"));
    assert_eq!(lab.agent.get(&through_lb).call().expect("answer").status().as_u16(), 404);
    let internal = format!("{}/internal/v1/jobs/0123/source", lab.url_of("api-0", "internal"));
    let answer = lab.agent.get(&internal).header("authorization", "Bearer guess").call().expect("answer");
    assert_eq!(answer.status().as_u16(), 410, "an unknown job is gone whatever the token");

    // TLS everywhere: the internal port answers no plaintext request and refuses a client that
    // trusts another CA; HAProxy's plain-HTTP port only redirects to HTTPS; its public frontend
    // does not serve the api nodes' /metrics.
    let internal_addr = lab.url_of("api-0", "internal").trim_start_matches("https://").to_owned();
    let mut plain = std::net::TcpStream::connect(&internal_addr).expect("the internal port");
    plain.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = plain.write_all(b"GET /internal/v1/jobs/0123/source HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP/"), "plaintext answered: {}", String::from_utf8_lossy(&answer));
    let other = lab::LabCa::create(&lab.dir.join("other-ca"), "another CA").expect("another CA");
    let stranger: ureq::Agent = agent_config(other.ca_file()).build().into();
    let refused = stranger.get(&internal).call().expect_err("a certificate of another CA");
    assert!(refused.to_string().to_lowercase().contains("unknownissuer"), "{refused}");
    let plain_lb: ureq::Agent =
        ureq::Agent::config_builder().max_redirects(0).http_status_as_error(false).build().into();
    let redirect =
        plain_lb.post(format!("{}/v1/resize?width=10", lab.field("http_url"))).send(&b"x"[..]).expect("answer");
    assert_eq!(redirect.status().as_u16(), 308);
    let location = redirect.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(location, format!("{}/v1/resize?width=10", lab.field("url")));
    let mut metrics = lab.agent.get(format!("{}/metrics", lab.field("url"))).call().expect("answer");
    assert_eq!(metrics.status().as_u16(), 404);
    let problem: Value = serde_json::from_str(&metrics.body_mut().read_to_string().expect("body")).expect("JSON");
    assert_eq!(problem["type"], "urn:resizer:problem:not-found", "{problem}");

    // Every api node and worker counted its part; the results were accepted once each.
    let accepted = lab.metric_sum("api-0", "resizer_internal_results_total")
        + lab.metric_sum("api-1", "resizer_internal_results_total");
    // The bad parameter was refused by the api node itself; four jobs reached a worker.
    assert_eq!(accepted, 4.0, "four results handed back");
    let worker_jobs = lab.metric_sum("worker-0", "resizer_worker_jobs_total")
        + lab.metric_sum("worker-1", "resizer_worker_jobs_total");
    assert_eq!(worker_jobs, 4.0);
    // The aggregator and the identity service have metrics too: the five requests' records
    // applied (shipped within a second), the admin calls that made the demo key counted.
    let until = Instant::now() + Duration::from_secs(20);
    while lab.metric_sum("usage-0", "resizer_usage_records_total") < 5.0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(lab.metric_sum("usage-0", "resizer_usage_records_total"), 5.0, "{}", lab.log_tails());
    assert!(lab.metric_sum("usage-0", r#"resizer_usage_batches_total{outcome="applied"}"#) >= 1.0);
    assert_eq!(lab.metric_sum("usage-0", "resizer_usage_consuming"), 1.0);
    assert!(lab.metric_sum("identity", "resizer_http_request_duration_seconds_count") >= 2.0);
    // cluster.json's admin URL answers usage and audit reads too, the tenant named by its name.
    let (status, usage) = lab.admin("GET", "/v1/tenants/demo/usage?granularity=day", None);
    assert_eq!((status, usage["total"]["requests"].as_u64()), (200, Some(5)), "{usage}");
    let (status, audit) = lab.admin("GET", "/v1/tenants/demo/audit", None);
    assert_eq!((status, audit["records"].as_array().map(Vec::len)), (200, Some(5)), "{audit}");

    // Health is live: a NATS node reports unhealthy for a moment while a new stream (the usage
    // stream, made on the first shipped batch) catches up on its replicas.
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = Command::new(env!("CARGO_BIN_EXE_resizer"))
            .args(["lab", "status", "--dir"])
            .arg(&lab.dir)
            .output()
            .expect("status");
        if status.status.success() || Instant::now() > until {
            break status;
        }
        thread::sleep(Duration::from_millis(250));
    };
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stdout));
    let listing = String::from_utf8_lossy(&status.stdout);
    for name in [
        "nats-0", "nats-1", "nats-2", "postgres", "identity", "usage-0", "api-0", "api-1", "worker-0", "worker-1",
        "haproxy",
    ] {
        assert!(listing.contains(name), "{name} missing from status:\n{listing}");
    }

    // NATS takes a login: cluster.json has the operator's, a client without one is refused, and
    // no log holds the password (the roles' own logins: each_role_may_use_only_its_own_subjects).
    let urls = lab.file["fields"]["nats_urls"].as_array().expect("nats_urls");
    let first = urls[0].as_str().expect("a URL");
    let password = first
        .strip_prefix("nats://resizer:")
        .and_then(|rest| rest.split_once('@'))
        .map(|(password, _)| password.to_owned())
        .unwrap_or_else(|| panic!("no login in {first}"));
    assert!(password.len() >= 32, "{first}");
    // The password's longest alphanumeric run reads the same percent-encoded (in the URL) and
    // decoded (what a careless log would print).
    let secret = password.split(|c: char| !c.is_ascii_alphanumeric()).max_by_key(|run| run.len()).unwrap_or("");
    assert!(secret.len() >= 24, "{password}");
    let address = first.rsplit_once('@').expect("host").1;
    // In plaintext nothing is served at all (the lab runs TLS); over TLS, no login is refused.
    let mut nats = std::net::TcpStream::connect(address).expect("NATS client port");
    nats.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = nats.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    let mut answer = Vec::new();
    let _ = nats.read_to_end(&mut answer); // the server hangs up on bytes that are no TLS handshake
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.contains("\"tls_required\":true") && !answer.contains("PONG"), "{answer}");
    let answer = nats_over_tls(address, &lab.tls_ca(), b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    assert!(answer.to_lowercase().contains("authorization violation"), "{answer}");
    for entry in std::fs::read_dir(lab.dir.join("logs")).expect("DIR/logs") {
        let path = entry.expect("log").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(!text.contains(secret), "{} holds the NATS password", path.display());
    }

    each_role_may_use_only_its_own_subjects(&lab);
    a_forged_jobs_origin_is_never_contacted(&lab);
    usage_batches_not_signed_by_the_node_they_name_are_quarantined(&lab);
    a_batch_shipped_by_an_api_node_of_the_previous_version_is_billed(&lab);
    each_database_login_holds_only_its_roles_tables(&lab);
    a_role_given_the_all_permissions_login_refuses_to_run(&lab);

    let pids: Vec<u64> = lab.file["components"].as_array().unwrap().iter().filter_map(|c| c["pid"].as_u64()).collect();
    assert_eq!(pids.len(), 11);
    let memory = lab.spool_memory_dir();
    if Path::new("/dev/shm").is_dir() {
        let memory = memory.as_ref().expect("the api nodes' spools are in /dev/shm");
        let files = std::fs::read_dir(memory).expect("the lab's /dev/shm directory").count();
        assert_eq!(files, 2, "one open-batch file per api node in {}", memory.display());
    }
    let down = Command::new(env!("CARGO_BIN_EXE_resizer"))
        .args(["lab", "down", "--dir"])
        .arg(&lab.dir)
        .output()
        .expect("down");
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let left: Vec<u64> = pids.into_iter().filter(|&p| pid_alive(p)).collect();
    assert!(left.is_empty(), "processes left after down: {left:?}");
    if let Some(memory) = memory {
        assert!(!memory.exists(), "{} left after down", memory.display());
    }
}

/// Each role logs in as its own NATS user, allowed only the subjects it uses (queue::permissions):
/// everything the lab did so far went through without a refusal, and with the worker's or the
/// api node's login (read from the running process, as it uses it) nobody can write the identity
/// bucket, queue a job or ship usage they should not, nor read another role's inbox.
fn each_role_may_use_only_its_own_subjects(lab: &Lab) {
    lab.assert_no_nats_refusals();

    let urls_of = |name: &str| -> Vec<String> {
        let pid = lab.component(name)["pid"].as_u64().expect("pid");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let urls = environ
            .split(|&b| b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok()?.strip_prefix("RESIZER_QUEUE_NATS_URLS="))
            .next()
            .unwrap_or_else(|| panic!("{name} has no NATS URLs"))
            .to_owned();
        urls.split(',').map(str::to_owned).collect()
    };
    // Each role's own login, and no log holds its password (its longest alphanumeric run reads
    // the same percent-encoded and decoded).
    for (name, user) in [("worker-0", "worker"), ("api-0", "api"), ("identity", "identity"), ("usage-0", "usage")] {
        let urls = urls_of(name);
        let password = urls[0]
            .strip_prefix(&format!("nats://{user}:"))
            .and_then(|rest| rest.split_once('@'))
            .map(|(password, _)| password.to_owned())
            .unwrap_or_else(|| panic!("{name} does not log in as {user}: {}", queue::redact_urls(&urls.join(","))));
        let secret = password.split(|c: char| !c.is_ascii_alphanumeric()).max_by_key(|run| run.len()).unwrap_or("");
        assert!(secret.len() >= 24, "{name}: a short password");
        for entry in std::fs::read_dir(lab.dir.join("logs")).expect("DIR/logs") {
            let path = entry.expect("log").path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(!text.contains(secret), "{} holds {user}'s NATS password", path.display());
        }
    }
    let (worker, api) = (urls_of("worker-0"), urls_of("api-0"));
    let identity_operator = lab.identity_nats_urls();
    let (_, demo) = lab.admin("GET", "/v1/tenants/demo", None);
    let demo_entry = format!("t.{}", demo["id"].as_u64().expect("the demo tenant's id"));

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let timeout = Duration::from_secs(2);
        let ca = lab.tls_ca();
        let ca = &ca;
        let connect = |urls: Vec<String>, role| async move {
            let client = queue::connect(&urls, "permissions-test", Some(role), Some(ca)).await.expect("NATS");
            let mut js = async_nats::jetstream::new(client.clone());
            js.set_timeout(timeout);
            (client, js)
        };
        let stored = |js: async_nats::jetstream::Context, subject: &'static str| async move {
            let ack = tokio::time::timeout(timeout, async { js.publish(subject, "forged".into()).await?.await }).await;
            matches!(ack, Ok(Ok(_)))
        };
        let (worker_client, worker_js) = connect(worker, queue::Role::Worker).await;
        let (_, api_js) = connect(api, queue::Role::Api).await;
        assert!(!stored(worker_js.clone(), "$KV.identity.k.forged").await, "the worker wrote the identity bucket");
        assert!(!stored(api_js.clone(), "$KV.identity.k.forged").await, "an api node wrote the identity bucket");
        assert!(!stored(worker_js.clone(), "jobs.fast.small").await, "the worker queued a job");
        assert!(!stored(worker_js.clone(), "usage.batches").await, "the worker shipped usage");
        assert!(worker_js.delete_stream("JOBS").await.is_err(), "the worker deleted the job stream");
        let _snoop = worker_client.subscribe("_INBOX_api.>").await.expect("subscribe is sent");
        // Announcing made-up api nodes would shrink every tenant's share of its rate limit.
        worker_client.publish("presence.api", "forged-node".into()).await.expect("publish is sent");
        worker_client.flush().await.expect("flush");

        // Allow-lists check the subject, not the reply subject, and JetStream answers to the
        // reply subject: in one account a pull whose reply subject was a bucket key made the
        // bucket store the pull's expiry notice as that tenant's entry. The bucket is in an
        // account of its own, out of the answers' reach.
        let client =
            queue::connect(&identity_operator, "permissions-test", None, Some(&lab.tls_ca())).await.expect("NATS");
        let bucket = async_nats::jetstream::new(client).get_key_value("identity").await.expect("the identity bucket");
        let before = bucket.entry(demo_entry.as_str()).await.expect("entry").expect("the demo tenant's entry");
        let reply = format!("$KV.identity.{demo_entry}");
        let pull = serde_json::json!({ "batch": 1, "expires": 300_000_000 }).to_string();
        for (subject, body) in
            [("$JS.API.CONSUMER.MSG.NEXT.JOBS.workers-small", pull), ("$JS.API.STREAM.INFO.JOBS", String::new())]
        {
            worker_client.publish_with_reply(subject, reply.clone(), body.into()).await.expect("publish");
        }
        worker_client.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = bucket.entry(demo_entry.as_str()).await.expect("entry").expect("the demo tenant's entry");
        assert_eq!((after.revision, after.value), (before.revision, before.value), "an answer reached the bucket");
        assert!(bucket.get("k.forged").await.expect("get").is_none(), "a forged key reached the bucket");
    });
    let logs = lab.nats_logs();
    for (user, subject) in [
        ("worker", "$KV.identity.k.forged"),
        ("api", "$KV.identity.k.forged"),
        ("worker", "jobs.fast.small"),
        ("worker", "usage.batches"),
        ("worker", "$JS.API.STREAM.DELETE.JOBS"),
        ("worker", "_INBOX_api.>"),
        ("worker", "presence.api"),
    ] {
        let refused = format!("User \"{user}\", Subject \"{subject}\"");
        assert!(logs.contains(&refused), "no refusal of {subject} for {user}:\n{}", nats_refusals(&logs).join("\n"));
    }
}

/// A role checks at start that its NATS login is held to its role: every running role passed
/// (each server logged the refusal of its probe), and a worker given the operators'
/// all-permissions user (cluster.json's `nats_urls`) stops with a message instead of running.
fn a_role_given_the_all_permissions_login_refuses_to_run(lab: &Lab) {
    let logs = lab.nats_logs();
    for user in ["api", "worker", "identity", "usage"] {
        let probed = format!("User \"{user}\", Subject \"{}\"", queue::PROBE_SUBJECT);
        assert!(logs.contains(&probed), "no login check of the {user} role in the NATS logs");
    }
    let urls = lab.urls("nats_urls");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_resizer"))
        .args(["worker", "--set", "worker.listen=127.0.0.1:0", "--set", "worker.api_origins=127.0.0.1/32"])
        .args(["--set", &format!("queue.nats_urls={}", urls.join(","))])
        .args(["--set", &format!("queue.tls_ca={}", lab.tls_ca().display())])
        .args(["--set", &format!("worker.tls_ca={}", lab.tls_ca().display())])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a worker");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = worker.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = worker.kill();
            let _ = worker.wait();
            panic!("a worker with the all-permissions NATS login still runs after 15 s");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    let _ = worker.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
    assert_eq!(status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("may do more than the worker role"), "{stderr}");
}

/// Each role logs in to PostgreSQL as its own role (`resizer lab` makes them): an api node's
/// login may read the usage rollups and nothing else, so a compromised api node cannot write a
/// tenant or a key (nor read the keys' hashes); the aggregators' cannot touch the identity
/// tables; the identity service's cannot write the rollups.
fn each_database_login_holds_only_its_roles_tables(lab: &Lab) {
    let env_of = |name: &str, variable: &str| -> String {
        let pid = lab.component(name)["pid"].as_u64().expect("pid");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let prefix = format!("{variable}=");
        environ
            .split(|&b| b == 0)
            .find_map(|v| std::str::from_utf8(v).ok()?.strip_prefix(prefix.as_str()).map(str::to_owned))
            .unwrap_or_else(|| panic!("{name} has no {variable}"))
    };
    let tls = tls::PostgresTls::new(&lab.tls_ca()).expect("the lab's CA");
    let connect = |url: &str| {
        let mut config: postgres::Config = url.parse().expect("a role's database URL");
        tls::PostgresTls::require(&mut config).connect(tls.clone()).expect("the role logs in")
    };
    let denied = |client: &mut postgres::Client, statement: &str| match client.batch_execute(statement) {
        Ok(()) => false,
        Err(e) => {
            let text = format!("{e:?}");
            assert!(text.contains("permission denied"), "{statement}: {text}");
            true
        }
    };
    let mut api = connect(&env_of("api-0", "RESIZER_USAGE_ROLLUPS_DATABASE"));
    let mut usage = connect(&env_of("usage-0", "RESIZER_USAGE_ROLLUPS_DATABASE"));
    let mut identity = connect(&env_of("identity", "RESIZER_IDENTITY_DATABASE"));
    for (who, client) in [("api node", &mut api), ("aggregator", &mut usage)] {
        for statement in [
            "INSERT INTO tenants DEFAULT VALUES",
            "INSERT INTO api_keys DEFAULT VALUES",
            "UPDATE api_keys SET revoked_at = NULL",
            "SELECT count(*) FROM api_keys",
            "DELETE FROM changes",
        ] {
            assert!(denied(client, statement), "the {who}'s login may `{statement}`");
        }
    }
    assert!(denied(&mut api, "CREATE TABLE planted (x INT)"), "the api node's login creates tables");
    for (who, client) in [("api node", &mut api), ("identity service", &mut identity)] {
        assert!(denied(client, "DELETE FROM usage_hourly"), "the {who}'s login may delete rollups");
        assert!(denied(client, "DELETE FROM usage_quarantine"), "the {who}'s login may empty the quarantine");
        assert!(!denied(client, "SELECT count(*) FROM usage_hourly"), "the {who} reads the rollups");
    }
}

/// Whoever can publish a job (here with an api node's own NATS login) names the origin a worker
/// fetches from; a worker fetches only from the api nodes it was told about (`worker.api_origins`),
/// so a job pointing anywhere else fails without a connection to that address.
fn a_forged_jobs_origin_is_never_contacted(lab: &Lab) {
    let bait = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener standing in for an internal service");
    bait.set_nonblocking(true).expect("nonblocking");
    let origin = format!("http://{}", bait.local_addr().expect("address"));
    let pid = lab.component("api-0")["pid"].as_u64().expect("pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let api_urls: Vec<String> = environ
        .split(|&b| b == 0)
        .filter_map(|v| std::str::from_utf8(v).ok()?.strip_prefix("RESIZER_QUEUE_NATS_URLS="))
        .next()
        .expect("the api node's NATS URLs")
        .split(',')
        .map(str::to_owned)
        .collect();
    let series = "resizer_worker_jobs_total{lane=\"small\",outcome=\"forbidden-origin\"";
    let refused = || lab.metric_sum("worker-0", series) + lab.metric_sum("worker-1", series);
    let refused_before = refused();
    let job = queue::JobMessage {
        job_id: "forged-1".into(),
        request_id: "forged".into(),
        origin: origin.clone(),
        token: "t".into(),
        params: "width=10".into(),
        format: None,
        max_input_bytes: 1 << 20,
        max_input_pixels: 1 << 20,
        pixels: 100,
        input_bytes: 100,
        deadline_unix_ms: queue::unix_millis() + 60_000,
        published_unix_us: queue::unix_micros(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client =
            queue::connect(&api_urls, "forgery-test", Some(queue::Role::Api), Some(&lab.tls_ca())).await.expect("NATS");
        let js = async_nats::jetstream::new(client);
        let payload = serde_json::to_vec(&job).expect("JSON");
        js.publish("jobs.fast.small", payload.into()).await.expect("publish").await.expect("stored");
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused() <= refused_before {
        assert!(Instant::now() < deadline, "no worker refused the forged job\n{}", lab.log_tails());
        thread::sleep(Duration::from_millis(50));
    }
    match bait.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the forged job's origin {origin} was contacted: {other:?}"),
    }
}

/// A variable of a running component's environment, as the process has it.
fn process_env(lab: &Lab, name: &str, variable: &str) -> String {
    let pid = lab.component(name)["pid"].as_u64().expect("pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let prefix = format!("{variable}=");
    environ
        .split(|&b| b == 0)
        .find_map(|v| std::str::from_utf8(v).ok()?.strip_prefix(prefix.as_str()).map(str::to_owned))
        .unwrap_or_else(|| panic!("{name} has no {variable}"))
}

/// The api nodes' NATS login may publish to the usage stream, so it is no proof of who shipped a
/// batch: each api node signs its batches with its own key (the lab gives each one), and the
/// aggregator applies only those signed by the node their records name. With api-0's own NATS
/// login and key, (a) an unsigned batch, (b) one signed with a made-up key, (c) one signed by
/// api-0 in api-1's name and (d) one under a genuine batch's plain id (which, when ids were plain,
/// made JetStream drop the genuine batch as a duplicate) are all refused into the quarantine
/// table, and the tenant is billed exactly its own requests, including those shipped after.
fn usage_batches_not_signed_by_the_node_they_name_are_quarantined(lab: &Lab) {
    let tls = tls::PostgresTls::new(&lab.tls_ca()).expect("the lab's CA");
    let mut config: postgres::Config = lab.field("postgres_url").parse().expect("the superuser's URL");
    let mut db = tls::PostgresTls::require(&mut config).connect(tls).expect("PostgreSQL");
    let genuine_id: String = db
        .query_one("SELECT batch_id FROM usage_applied_batches ORDER BY applied_ms DESC LIMIT 1", &[])
        .expect("a batch applied so far")
        .get(0);
    assert!(!genuine_id.contains('.'), "the rollups record the plain batch id: {genuine_id}");
    let (_, demo) = lab.admin("GET", "/v1/tenants/demo", None);
    let tenant = demo["id"].as_u64().expect("the demo tenant's id");
    let billed = || lab.demo_requests("total");
    let billed_before = billed();
    let rejected =
        |reason: &str| lab.metric_sum("usage-0", &format!("resizer_usage_batches_rejected_total{{reason=\"{reason}\""));
    let (unsigned_before, bad_before, foreign_before) =
        (rejected("unsigned"), rejected("bad-signature"), rejected("foreign-node"));

    let invented = |node: &str| -> Vec<u8> {
        let record = usage::UsageRecord {
            request_id: "invented".into(),
            tenant,
            key_id: "invented".into(),
            time_ms: queue::unix_millis() as i64,
            node: node.into(),
            worker: "".into(),
            status: 200,
            error: "".into(),
            params: "width=10".into(),
            input_format: "jpeg".into(),
            input_bytes: 1 << 30,
            input_width: 10_000,
            input_height: 10_000,
            output_format: "jpeg".into(),
            output_bytes: 1 << 20,
            output_width: 10,
            output_height: 10,
            queue_wait_us: 0,
            wall_us: 1,
            cpu_us: 1,
            source_bytes: 0,
            source: "".into(),
            frames: 0,
        };
        serde_json::to_vec(&vec![record; 10]).expect("JSON")
    };
    let unsigned = |id: &str| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        headers
    };
    let api0_key = queue::NodeKey::from_hex(&process_env(lab, "api-0", "RESIZER_USAGE_BATCH_KEY")).expect("a key");
    let api0 = queue::UsageSigner::new("api-0", api0_key).expect("signer");
    let stranger =
        queue::UsageSigner::new("api-0", queue::NodeKey::from_hex(&"5a".repeat(32)).expect("hex")).expect("signer");
    let (payload_a, payload_b, payload_c, payload_d) =
        (invented("api-0"), invented("api-0"), invented("api-1"), invented("api-0"));
    let forged = [
        (unsigned("forged-unsigned"), payload_a),
        (stranger.headers("forged-wrong-key", &payload_b), payload_b),
        (api0.headers("forged-for-api-1", &payload_c), payload_c),
        (unsigned(&genuine_id), payload_d),
    ];
    let api_urls: Vec<String> =
        process_env(lab, "api-0", "RESIZER_QUEUE_NATS_URLS").split(',').map(str::to_owned).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client =
            queue::connect(&api_urls, "forgery-test", Some(queue::Role::Api), Some(&lab.tls_ca())).await.expect("NATS");
        let js = async_nats::jetstream::new(client);
        for (headers, payload) in forged {
            let ack = js
                .publish_with_headers(queue::USAGE_SUBJECT, headers, payload.into())
                .await
                .expect("publish")
                .await
                .expect("the api login may publish usage");
            // Stored, so the aggregator sees (and must refuse) each one. Whether a forgery can
            // take a genuine batch's place in the duplicate window is shown where the order can
            // be chosen: queue's tests/usage_stream.rs.
            assert!(!ack.duplicate, "a forged message was not stored");
        }
    });
    // Genuine requests after the forgeries: still applied.
    for _ in 0..2 {
        let (status, _, _) = lab.resize("width=20", &sample_jpeg());
        assert_eq!(status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while (billed() < billed_before + 2
        || rejected("unsigned") < unsigned_before + 2.0
        || rejected("bad-signature") < bad_before + 1.0
        || rejected("foreign-node") < foreign_before + 1.0)
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(billed(), billed_before + 2, "exactly the genuine requests are billed\n{}", lab.log_tails());
    assert_eq!(rejected("unsigned"), unsigned_before + 2.0);
    assert_eq!(rejected("bad-signature"), bad_before + 1.0);
    assert_eq!(rejected("foreign-node"), foreign_before + 1.0);
    let rows = db
        .query("SELECT message_id, claimed_node, reason, length(payload) FROM usage_quarantine ORDER BY id", &[])
        .expect("the quarantine table");
    let kept: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            assert!(r.get::<_, i32>(3) > 1000, "the payload is kept");
            (r.get(0), r.get(1), r.get(2))
        })
        .collect();
    let has = |id: &str, node: &str, reason: &str| {
        kept.iter().any(|(i, n, r)| (i.starts_with(id), n.as_str(), r.as_str()) == (true, node, reason))
    };
    assert!(has("forged-unsigned", "", "unsigned"), "{kept:?}");
    assert!(has("forged-wrong-key.", "api-0", "bad-signature"), "{kept:?}");
    assert!(has("forged-for-api-1.", "api-0", "foreign-node"), "{kept:?}");
    assert!(has(&genuine_id, "", "unsigned"), "{kept:?}");
    assert_eq!(kept.len(), 4, "nothing else refused: {kept:?}");
}

/// An api node of the previous version, upgraded after the aggregator: its records are the JSON
/// of that version, without the fields added since (written out here as it wrote them, signed
/// with api-0's key as it would sign them). Every record is billed and in the audit.
fn a_batch_shipped_by_an_api_node_of_the_previous_version_is_billed(lab: &Lab) {
    let (_, demo) = lab.admin("GET", "/v1/tenants/demo", None);
    let tenant = demo["id"].as_u64().expect("the demo tenant's id");
    let before = lab.demo_requests("billable");
    let now = queue::unix_millis();
    let ids: Vec<String> = (0..3).map(|i| format!("previous-version-{now}-{i}")).collect();
    // The JSON written out field by field, as the previous release's api node shipped it (and,
    // for the first record, as an older one without `worker`, `queue_wait_us` and `cpu_us`):
    // whatever fields the records have gained since are missing from it.
    let records: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let newer = if i == 0 { "" } else { r#","worker":"worker-0","queue_wait_us":120,"cpu_us":900"# };
            format!(
                r#"{{"request_id":"{id}","tenant":{tenant},"key_id":"k","time_ms":{now},"node":"api-0","status":200,"error":"","params":"width=10","input_format":"png","input_bytes":1000,"input_width":10,"input_height":10,"output_format":"webp","output_bytes":100,"output_width":10,"output_height":10,"wall_us":5{newer}}}"#
            )
        })
        .collect();
    let payload = format!("[{}]", records.join(",")).into_bytes();
    let key = queue::NodeKey::from_hex(&process_env(lab, "api-0", "RESIZER_USAGE_BATCH_KEY")).expect("a key");
    let signer = queue::UsageSigner::new("api-0", key).expect("signer");
    let headers = signer.headers(&format!("previous-version-{now}"), &payload);
    let api_urls: Vec<String> =
        process_env(lab, "api-0", "RESIZER_QUEUE_NATS_URLS").split(',').map(str::to_owned).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = queue::connect(&api_urls, "previous-version-test", Some(queue::Role::Api), Some(&lab.tls_ca()))
            .await
            .expect("NATS");
        let js = async_nats::jetstream::new(client);
        let ack = js.publish_with_headers(queue::USAGE_SUBJECT, headers, payload.into()).await.expect("publish");
        assert!(!ack.await.expect("stored").duplicate);
    });
    lab.assert_billed_once("billable", before, 3, Duration::from_secs(20), Duration::from_secs(1));
    let audit = lab.audit("demo");
    for id in &ids {
        assert_eq!(audit.iter().filter(|r| r["request_id"] == id.as_str()).count(), 1, "{id} in the audit once");
    }
}

#[test]
fn killing_a_worker_mid_job_redelivers_its_jobs() {
    let lab = Lab::up(&["--workers", "2", "--worker-slots", "1"]);
    let image = common::png(1600, 1200);
    let load = Load::start(&lab, "width=400", image, 4, Duration::from_millis(5));
    thread::sleep(Duration::from_secs(2));
    assert!(wait_until_busy(&lab, "worker-0", Duration::from_secs(5)), "worker-0 never ran a job");
    lab.signal("worker-0", lab::Signal::Kill);
    thread::sleep(Duration::from_secs(6));
    let samples = load.finish();

    let ratio = success_ratio(&samples);
    eprintln!("kill -9 worker: {} requests, {:?}, success {:.2} %", samples.len(), statuses(&samples), ratio * 100.0);
    assert!(ratio >= 0.99, "success {:.2} % < 99 %: {:?}\n{}", ratio * 100.0, statuses(&samples), lab.log_tails());
    let redelivered = lab.metric_sum("worker-1", "resizer_worker_redeliveries_total");
    assert!(redelivered >= 1.0, "the killed worker's job was not redelivered to worker-1\n{}", lab.log_tails());
}

#[test]
fn killing_an_api_node_is_routed_around() {
    let lab = Lab::up(&["--workers", "2"]);
    let load = Load::start(&lab, "width=100", sample_jpeg(), 4, Duration::from_millis(5));
    thread::sleep(Duration::from_secs(2));
    let killed_at = load.since_start();
    lab.signal("api-0", lab::Signal::Kill);
    thread::sleep(Duration::from_secs(5));
    let samples = load.finish();
    // The operator's node list at the identity service: api-0 fell silent (killed, it never
    // said it left), api-1 goes on announcing itself ready.
    let board = node_board(&lab, "identity");
    let (api0, api1) = (node_entry(&board, "api-0"), node_entry(&board, "api-1"));
    assert_eq!(api0["silent"], true, "{board:#}");
    assert!(api0["since_heard_ms"].as_u64().unwrap_or(0) >= 3000, "{board:#}");
    assert_eq!(
        (&api1["silent"], &api1["in_rotation"], &api1["status"]["status"]),
        (&false.into(), &true.into(), &"ready".into()),
        "{board:#}"
    );

    let ratio = success_ratio(&samples);
    let failed_late: Vec<&Sample> =
        samples.iter().filter(|s| s.status != 200 && s.sent > killed_at + Duration::from_secs(1)).collect();
    eprintln!("kill -9 api node: {} requests, {:?}, success {:.2} %", samples.len(), statuses(&samples), ratio * 100.0);
    assert!(ratio >= 0.99, "success {:.2} % < 99 %: {:?}", ratio * 100.0, statuses(&samples));
    // HAProxy checks every 500 ms and takes a node out after 2 failures: past 1 s every request
    // goes to the live node.
    assert!(failed_late.is_empty(), "requests failed after HAProxy's check interval: {failed_late:?}");
}

/// What the load balancer answers itself is problem+json like the api's answers: with every api
/// node gone, 503 `service-unavailable` with a retry hint and a request id.
#[test]
fn the_load_balancers_own_answers_are_problem_json() {
    let lab = Lab::up(&["--workers", "0"]);
    lab.signal("api-0", lab::Signal::Kill);
    lab.signal("api-1", lab::Signal::Kill);
    // Once HAProxy has taken both out: before, a request may still reach a dying node (502).
    let stats = format!("{};csv", lab.url_of("haproxy", "stats"));
    lab::poll_until("HAProxy to take both api nodes out", Duration::from_secs(5), Duration::from_millis(50), || {
        let csv = lab.agent.get(&stats).call().map_err(|e| e.to_string())?.into_body().read_to_string();
        let csv = csv.map_err(|e| e.to_string())?;
        let down = csv.lines().filter(|l| l.starts_with("api_nodes,api-") && l.contains(",DOWN")).count();
        if down == 2 {
            Ok(())
        } else {
            Err(csv)
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/v1/resize?width=100", lab.field("url"));
    // A body within HAProxy's buffer (`option http-buffer-request`): one larger than it may still
    // be sending when the 503 and the close come, and a client writing then sees a reset.
    let response = lab
        .agent
        .post(&url)
        .header("authorization", format!("Bearer {}", lab.field("demo_api_key")))
        .send(&common::png(16, 16)[..])
        .expect("HAProxy answers");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let body = response.into_body().read_to_string().expect("body");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!((status, header("content-type").as_str()), (503, "application/problem+json"), "{body}");
    assert_eq!((header("retry-after"), header("retry-after-ms")), ("1".to_owned(), "1000".to_owned()));
    let problem: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(problem["type"], "urn:resizer:problem:service-unavailable", "{problem}");
    assert_eq!(problem["status"], 503);
    assert!(problem["request_id"].as_str().is_some_and(|id| id.len() == 36), "{problem}");
    assert_eq!(problem["request_id"].as_str(), Some(header("x-request-id").as_str()), "the header carries the same id");
    assert!(problem["title"].is_string() && problem["detail"].is_string(), "{problem}");
}

/// A tenant's rate limit holds for the cluster, not per api node: each node grants its share
/// (the limit divided by the api nodes it hears announce themselves), and when a node is gone the
/// others take its share: 2–4 s after a kill -9, at once after a SIGTERM.
#[test]
fn a_tenants_rate_limit_is_shared_by_the_api_nodes_up() {
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "1"]);
    let (rate, burst) = (10.0, 4.0);
    let (status, tenant) = lab.admin(
        "POST",
        "/v1/tenants",
        Some(serde_json::json!({ "name": "limited", "limits": { "rate_per_sec": rate, "burst": burst } })),
    );
    assert_eq!(status, 201, "{tenant}");
    let (status, key) = lab.admin("POST", "/v1/tenants/limited/keys", Some(serde_json::json!({ "label": "load" })));
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().expect("key").to_owned();
    let nodes_counted = |node: &str| lab.metric_sum(node, "resizer_api_nodes");
    lab::poll_until(
        "the key and both nodes counted on each node",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let seen: Vec<(f64, u16)> =
                ["api-0", "api-1"].iter().map(|n| (nodes_counted(n), lab.auth_status(n, &key))).collect();
            if seen.iter().all(|&(nodes, status)| nodes == 2.0 && accepted(status)) {
                Ok(())
            } else {
                Err(format!("(api nodes counted, auth status) per node: {seen:?}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()));

    // Both nodes up: the 200s add up to one limit (burst, then the rate), where two whole
    // buckets would give twice as many.
    let image = common::png(16, 16);
    let load_within_limit = |what: &str, duration: Duration| {
        let (ok, limited, elapsed) = hammer(&lab, &key, &image, duration);
        let allowed = burst + rate * elapsed.as_secs_f64();
        eprintln!("{what}: {ok} × 200, {limited} × 429 in {elapsed:?}; the tenant's limit allows {allowed:.0}");
        assert!(
            ok as f64 <= allowed * 1.2 + 2.0 && ok as f64 >= rate * elapsed.as_secs_f64() * 0.75,
            "{what}: {ok} requests answered 200 where the tenant's limit allows {allowed:.0}\n{}",
            lab.log_tails()
        );
    };
    load_within_limit("two api nodes", Duration::from_secs(4));

    // Signals api-0 and waits, at most `within`, for api-1 to count itself alone.
    let stop_api_0 = |signal: lab::Signal, within: Duration| {
        lab.signal("api-0", signal);
        let signalled = Instant::now();
        lab::poll_until("api-1 to count itself alone", within, Duration::from_millis(50), || {
            match nodes_counted("api-1") {
                1.0 => Ok(()),
                n => Err(format!("counts {n} api nodes")),
            }
        })
        .unwrap_or_else(|e| panic!("after {signal:?} of api-0: {e}\n{}", lab.log_tails()));
        eprintln!("api-1 counted itself alone {:?} after {signal:?} of api-0", signalled.elapsed());
    };

    // One node left: it takes the whole limit once it stops hearing the other.
    stop_api_0(lab::Signal::Kill, Duration::from_secs(6));
    load_within_limit("one api node", Duration::from_secs(3));

    // A node that stops on purpose says so: back with api-0, then SIGTERM it, and api-1 counts
    // itself alone at once — a node only forgotten would still count 2 s after the signal.
    lab::restart_component(&lab.dir, "api-0").expect("restart api-0");
    lab::poll_until("both nodes counted again", Duration::from_secs(20), Duration::from_millis(100), || {
        match (nodes_counted("api-0"), nodes_counted("api-1")) {
            (2.0, 2.0) => Ok(()),
            counts => Err(format!("(api-0, api-1) count {counts:?}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()));
    stop_api_0(lab::Signal::Term, Duration::from_millis(1500));
    lab.assert_no_nats_refusals();
}

/// Four clients send `image` through the load balancer with `key` as fast as they are answered
/// for `duration`: (200s, 429s, elapsed). Any other answer fails the test.
fn hammer(lab: &Lab, key: &str, image: &[u8], duration: Duration) -> (usize, usize, Duration) {
    let url = format!("{}/v1/resize?width=8", lab.field("url"));
    let start = Instant::now();
    let statuses: Vec<u16> = thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut seen = Vec::new();
                    while start.elapsed() < duration {
                        seen.push(resize_at(&lab.agent, &url, key, image).0);
                    }
                    seen
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().expect("client thread")).collect()
    });
    let elapsed = start.elapsed();
    let count = |status| statuses.iter().filter(|&&s| s == status).count();
    let (ok, limited) = (count(200), count(429));
    assert_eq!(ok + limited, statuses.len(), "answers other than 200 and 429: {statuses:?}");
    (ok, limited, elapsed)
}

#[test]
fn killing_the_job_stream_leader_elects_a_new_one_and_publishing_resumes() {
    let lab = Lab::up(&["--workers", "2"]);
    let nats = lab.nats();
    let leader = lab::poll_until("a JOBS stream leader", Duration::from_secs(10), Duration::from_millis(100), || {
        nats.stream_leader("JOBS").ok().flatten().ok_or_else(|| "none agreed yet".to_owned())
    })
    .expect("the JOBS stream has a leader");
    let index = nats.nodes().iter().position(|n| n.server_name == leader).expect("the leader is a lab node");
    let load = Load::start(&lab, "width=100", sample_jpeg(), 4, Duration::from_millis(10));
    thread::sleep(Duration::from_secs(2));
    let killed_at = load.since_start();
    nats.kill(index).expect("kill -9 the stream leader");
    let (new_leader, took) =
        nats.wait_new_stream_leader("JOBS", &leader, Duration::from_secs(20)).expect("a new leader");
    thread::sleep(Duration::from_secs(3));
    let samples = load.finish();

    // Publishing was held up at most as long as the slowest request sent after the kill waited.
    let resumed = samples.iter().filter(|s| s.sent > killed_at).map(|s| s.latency).max().unwrap_or_default();
    let ratio = success_ratio(&samples);
    let slowest = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    eprintln!(
        "kill -9 JOBS leader {leader}: new leader {new_leader} after {took:?}; requests sent after the kill waited at most {resumed:?}; {} requests {:?}, success {:.2} %, slowest {slowest:?}",
        samples.len(),
        statuses(&samples),
        ratio * 100.0
    );
    assert!(took <= lab::LEADER_ELECTION_BOUND, "new leader after {took:?}");
    assert!(
        resumed <= lab::LEADER_ELECTION_BOUND + Duration::from_secs(1),
        "publishing resumed only after {resumed:?}"
    );
    assert!(slowest <= Duration::from_secs(11), "a request hung past its 10 s deadline: {slowest:?}");
    assert!(ratio >= 0.95, "success {:.2} % < 95 %: {:?}\n{}", ratio * 100.0, statuses(&samples), lab.log_tails());

    // The node comes back and rejoins as a current replica of the stream.
    let name = nats.nodes()[index].component.name.clone();
    lab::restart_component(&lab.dir, &name).expect("restart the node");
    // Rejoined: the stream's leader (whichever node answers for it) counts both followers current.
    lab::poll_until("the restarted node to rejoin", Duration::from_secs(45), Duration::from_millis(250), || {
        let mut seen = Vec::new();
        for node in nats.nodes() {
            let Ok(streams) = node.jsz("accounts=true&streams=true") else { continue };
            let cluster = streams
                .account_details
                .iter()
                .flat_map(|a| &a.stream_detail)
                .find(|s| s.name == "JOBS")
                .and_then(|s| s.cluster.clone());
            if let Some(cluster) = cluster {
                let current = cluster.replicas.iter().filter(|r| r.current).count();
                if current == 2 {
                    return Ok(());
                }
                seen.push(format!("{}: {current} current", node.server_name));
            }
        }
        Err(seen.join(", "))
    })
    .expect("the restarted node rejoined the stream");

    // Credentials still replicate after the loss: each api node's watch of the identity bucket
    // (in the identity account, across the import) went on or was made again.
    let (status, key) = lab.admin("POST", "/v1/tenants/demo/keys", Some(serde_json::json!({ "label": "after" })));
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().expect("key").to_owned();
    lab::poll_until("the new key on both api nodes", Duration::from_secs(5), Duration::from_millis(50), || {
        let refused: Vec<&str> =
            ["api-0", "api-1"].into_iter().filter(|n| !accepted(lab.auth_status(n, &key))).collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(format!("refused by {refused:?}"))
        }
    })
    .unwrap_or_else(|e| {
        panic!(
            "credentials did not replicate after the leader's loss: {e}\nkilled {leader}, new leader {new_leader}\n\
             consumers:\n{}\n{}",
            lab.consumer_placement(),
            lab.log_tails()
        )
    });
    lab.assert_no_nats_refusals();
}

#[test]
fn a_frozen_worker_delays_only_the_jobs_it_holds_and_none_is_delivered_twice() {
    let lab = Lab::up(&["--workers", "2", "--worker-slots", "1", "--set", "worker.prefetch=1"]);
    let load = Load::start(&lab, "width=100", sample_jpeg(), 3, Duration::from_millis(20));
    thread::sleep(Duration::from_secs(2));
    let stopped_at = load.since_start();
    lab.signal("worker-0", lab::Signal::Stop);
    thread::sleep(Duration::from_secs(10));
    let continued_at = load.since_start();
    lab.signal("worker-0", lab::Signal::Cont);
    thread::sleep(Duration::from_secs(3));
    let samples = load.finish();

    // A frozen worker holds at most one small job per pull it has on the small lane's consumer:
    // its slot, its thread kept for small jobs and its prefetch (it pulls one at a time for
    // each): those wait for `ack_wait` and go elsewhere. Every other request keeps its latency.
    let slots = 1 + worker::SMALL_RESERVE + 1;
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    let held = latencies.iter().filter(|&&l| l > Duration::from_millis(500)).count();
    let slow: Vec<&Sample> = samples.iter().filter(|s| s.latency > Duration::from_millis(500)).collect();
    eprintln!("stopped at {stopped_at:?}, continued at {continued_at:?}; slow requests: {slow:?}");
    let others: Vec<Duration> = latencies[..latencies.len() - held.min(slots)].to_vec();
    let p99 = percentile(others, 0.99);
    eprintln!(
        "SIGSTOP worker 10 s: {} requests {:?}, {held} over 500 ms, p99 of the others {p99:?}",
        samples.len(),
        statuses(&samples)
    );
    assert!(samples.iter().all(|s| s.status == 200), "{:?}", statuses(&samples));
    assert!(
        held <= slots,
        "{held} requests over 500 ms; the frozen worker could hold only {slots} (1 slot, 1 kept for small jobs, 1 prefetched)"
    );
    assert!(p99 < Duration::from_millis(500), "p99 of the other requests {p99:?}");

    // The woken worker's late result was refused: every request got exactly one result.
    thread::sleep(Duration::from_secs(1));
    let accepted = lab.metric_sum("api-0", "resizer_internal_results_total{outcome=\"accepted\"")
        + lab.metric_sum("api-1", "resizer_internal_results_total{outcome=\"accepted\"");
    assert_eq!(accepted as usize, samples.len(), "results accepted vs requests answered");
}

#[test]
fn a_job_that_keeps_killing_its_workers_fails_with_422() {
    // One run allowed: the second delivery of a job whose worker died is poison.
    let lab = Lab::up(&["--workers", "2", "--worker-slots", "1", "--set", "queue.max_attempts=1"]);
    let body = common::png(3000, 2400);
    let (url, key) = (format!("{}/v1/resize?width=2000", lab.field("url")), lab.field("demo_api_key"));
    let ca = lab.tls_ca();
    let request = thread::spawn(move || {
        let agent = client_agent(&ca);
        resize_at(&agent, &url, &key, &body)
    });
    let victim = {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < until, "no worker took the job");
            if let Some(w) =
                ["worker-0", "worker-1"].into_iter().find(|w| lab.metric_sum(w, "resizer_worker_busy") >= 1.0)
            {
                break w;
            }
            thread::sleep(Duration::from_millis(5));
        }
    };
    lab.signal(victim, lab::Signal::Kill);
    let (status, _, problem) = request.join().expect("request thread");
    assert_eq!(status, 422, "{problem}\n{}", lab.log_tails());
    assert_eq!(problem["type"], "urn:resizer:problem:poison-job");
    let survivor = if victim == "worker-0" { "worker-1" } else { "worker-0" };
    assert_eq!(lab.metric_sum(survivor, "resizer_worker_jobs_total{lane=\"medium\",outcome=\"poison\"}"), 1.0);
}

#[test]
fn a_full_queue_is_answered_503_at_once() {
    // No workers: jobs stay queued until their deadline; the stream holds two. The staging holds
    // one 20 MP PNG, but a large-lane job may take only half of it.
    let staged = format!("api.max_staged_bytes={}", common::big_png().len() + 1);
    let lab = Lab::up(&[
        "--workers",
        "0",
        "--set",
        "queue.max_jobs=2",
        "--set",
        "api.request_timeout_ms=4000",
        "--set",
        &staged,
    ]);
    let jpeg = sample_jpeg();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (url, key, body) =
                (format!("{}/v1/resize?width=100", lab.field("url")), lab.field("demo_api_key"), jpeg.clone());
            let ca = lab.tls_ca();
            thread::spawn(move || {
                let agent: ureq::Agent = agent_config(&ca).http_status_as_error(false).build().into();
                resize_at(&agent, &url, &key, &body).0
            })
        })
        .collect();
    // Both queued (published) before the third comes.
    let published = || lab.jobs_stored("api-0", None) + lab.jobs_stored("api-1", None);
    let until = Instant::now() + Duration::from_secs(5);
    while published() < 2.0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let (status, _, problem) = lab.resize("width=100", &jpeg);
    let took = started.elapsed();
    assert_eq!((status, problem["type"].as_str()), (503, Some("urn:resizer:problem:overloaded")), "{problem}");
    assert!(took < Duration::from_millis(500), "a full queue answered after {took:?}");
    // An image over its lane's staging bound could never be staged: 413 at once, not a 503
    // inviting retries.
    let (status, _, problem) = lab.resize("width=100", common::big_png());
    assert_eq!((status, problem["type"].as_str()), (413, Some("urn:resizer:problem:too-large")), "{problem}");
    // The queued ones are never run (no worker) and time out at their deadline.
    for w in waiting {
        assert_eq!(w.join().expect("request thread"), 504);
    }
}

/// Large images may hold only `queue.max_large_jobs` of the shared job queue, each api node its
/// share: past it a large image is refused at once while small ones are still queued.
#[test]
fn large_images_past_a_nodes_share_are_refused_and_small_ones_queued() {
    // No workers: every job waits until its deadline. Two large jobs for two api nodes: one each.
    let lab = Lab::up(&["--workers", "0", "--set", "queue.max_large_jobs=2", "--set", "api.request_timeout_ms=4000"]);
    let key = lab.field("demo_api_key");
    let both_counting_two =
        || {
            lab::poll_until("both api nodes counting two", Duration::from_secs(10), Duration::from_millis(100), || {
                match ["api-0", "api-1"].map(|n| lab.metric_sum(n, "resizer_api_nodes")) {
                    [2.0, 2.0] => Ok(()),
                    counts => Err(format!("counted {counts:?}")),
                }
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()));
        };
    both_counting_two();
    // Sent to one node directly, so that which node holds what does not depend on the balancer.
    let send = |node: &str, body: &[u8]| {
        let (url, key, body) =
            (format!("{}/v1/resize?width=100", lab.url_of(node, "http")), key.clone(), body.to_vec());
        let ca = lab.tls_ca();
        thread::spawn(move || {
            let agent: ureq::Agent = agent_config(&ca).http_status_as_error(false).build().into();
            let (status, _, problem) = resize_at(&agent, &url, &key, &body);
            (status, problem)
        })
    };
    // Within the 4 s deadline: a queued job is counted at once, and answered 504 at its deadline.
    let wait_stored = |node: &str, lane: &str, count: f64| {
        lab::poll_until("the job queued", Duration::from_secs(3), Duration::from_millis(20), || {
            match lab.jobs_stored(node, Some(lane)) {
                n if n >= count => Ok(()),
                n => Err(format!("{node}: {n} {lane} jobs stored")),
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()));
    };

    let mut waiting = vec![send("api-0", common::big_png())];
    wait_stored("api-0", "large", 1.0);
    both_counting_two(); // still one large job each
    let started = Instant::now();
    let (status, problem) = send("api-0", common::big_png()).join().expect("request thread");
    let took = started.elapsed();
    assert_eq!((status, problem["type"].as_str()), (503, Some("urn:resizer:problem:overloaded")), "{problem}");
    assert!(problem["retry_after_ms"].as_u64().is_some(), "a retry hint: {problem}");
    assert!(took < Duration::from_millis(1500), "the large image past the share answered after {took:?}");
    assert_eq!(lab.metric_sum("api-0", "resizer_queue_publish_total{lane=\"large\",outcome=\"staging_full\""), 1.0);
    // A small image on the same node, and a large one on the other node (its own share), are queued.
    waiting.push(send("api-0", &sample_jpeg()));
    waiting.push(send("api-1", common::big_png()));
    wait_stored("api-0", "small", 1.0);
    wait_stored("api-1", "large", 1.0);
    for w in waiting {
        assert_eq!(w.join().expect("request thread").0, 504, "no worker: the queued jobs time out");
    }
    // Answered, the large job's place is free again.
    let (status, problem) = send("api-0", common::big_png()).join().expect("request thread");
    assert_eq!(status, 504, "queued again once the first left: {problem}");
}

impl Lab {
    /// What api node `node` answers a key with, on a route that authenticates and does no work.
    fn auth_status(&self, node: &str, key: &str) -> u16 {
        let url = format!("{}/v1/usage", self.url_of(node, "http"));
        self.agent.get(&url).header("authorization", format!("Bearer {key}")).call().map_or(0, |r| r.status().as_u16())
    }
}

/// Accepted: anything past authentication (200, or 429 from the usage-read bucket).
fn accepted(status: u16) -> bool {
    !matches!(status, 0 | 401 | 403)
}

/// The identity bucket reaches the api nodes across the accounts' import also when it is large:
/// 16,000 entries (about 3.5 MB: a watch this size may be paced by JetStream's flow control,
/// whose answers must cross the import too) are watched live, an api node restarted afterwards
/// loads them all before it is ready, and keys made afterwards reach both nodes.
#[test]
fn a_large_identity_bucket_reaches_a_restarted_api_node() {
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "1"]);
    let urls = lab.identity_nats_urls();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let entries = 16_000u64;
    runtime.block_on(async {
        let client = queue::connect(&urls, "test", None, Some(&lab.tls_ca())).await.expect("NATS");
        for i in 0..entries {
            let id = 1_000_000 + i;
            let value = serde_json::json!({ "version": 1, "at_ms": 0, "tenant": { "id": id, "status": "active",
                "rate_per_sec": null, "burst": null, "max_input_bytes": null, "max_input_pixels": null } });
            client.publish(format!("$KV.identity.t.{id}"), value.to_string().into()).await.expect("publish");
        }
        client.flush().await.expect("flush");
        let js = async_nats::jetstream::new(client);
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            // A look may time out while the servers still replicate the burst (seen on a loaded
            // 2-core CI machine): that is "not yet", until the deadline.
            let stored = match js.get_stream("KV_identity").await {
                Ok(mut stream) => stream.info().await.map(|info| info.state.messages).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if matches!(stored, Ok(n) if n >= entries) {
                break;
            }
            assert!(Instant::now() < until, "the bucket holds {stored:?} of {entries} entries");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let new_key = |label: &str| {
        let (status, key) = lab.admin("POST", "/v1/tenants/demo/keys", Some(serde_json::json!({ "label": label })));
        assert_eq!(status, 201, "{key}");
        key["key"].as_str().expect("key").to_owned()
    };
    let both_accept = |key: &str| {
        lab::poll_until("a new key on both api nodes", Duration::from_secs(10), Duration::from_millis(50), || {
            let refused: Vec<&str> =
                ["api-0", "api-1"].into_iter().filter(|n| !accepted(lab.auth_status(n, key))).collect();
            if refused.is_empty() {
                Ok(())
            } else {
                Err(format!("refused by {refused:?}\n{}", lab.log_tails()))
            }
        })
        .expect("replicated");
    };
    // Live: the watches went through all of it.
    both_accept(&new_key("after the bulk"));

    // A restarted node loads the whole bucket before it says it is ready.
    lab.signal("api-0", lab::Signal::Kill);
    thread::sleep(Duration::from_millis(200));
    lab.restart("api-0");
    let ready = format!("{}/readyz", lab.url_of("api-0", "http"));
    lab::wait_for_http_ok_trusting(&ready, Duration::from_secs(30), Some(&lab.tls_ca())).expect("api-0 ready again");
    assert!(accepted(lab.auth_status("api-0", &lab.field("demo_api_key"))), "the demo key after the restart");
    both_accept(&new_key("after the restart"));
    lab.assert_no_nats_refusals();
}

/// PostgreSQL and its backends frozen (SIGSTOP: the kernel still acknowledges their sockets, so
/// no timeout of the connection fires): an api node keeps at most `ROLLUP_READS_AT_ONCE` usage
/// reads waiting for the rollups, each answered 503 after the read timeout, and answers the rest
/// 503 at once instead of pinning a blocking thread for each; once the database wakes up,
/// usage reads work again.
#[test]
fn a_frozen_rollups_database_holds_only_a_few_usage_reads() {
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "1"]);
    let postmaster = lab.component("postgres")["pid"].as_u64().expect("the postmaster's pid");
    // The postmaster and its children (the backends serving the api nodes and the aggregator).
    let mut frozen = vec![postmaster];
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u64>() else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The parent pid is the second field after the parenthesised command.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u64>().ok());
        if ppid == Some(postmaster) {
            frozen.push(pid);
        }
    }
    assert!(frozen.len() > 2, "PostgreSQL's backends not found: {frozen:?}");
    let signal = |name: &str| {
        for pid in &frozen {
            let _ = Command::new("kill").args([name, &pid.to_string()]).status();
        }
    };
    struct Thaw<'a>(&'a dyn Fn(&str));
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            (self.0)("-CONT");
        }
    }
    let thaw = Thaw(&signal);
    signal("-STOP");

    let url = format!("{}/v1/usage", lab.url_of("api-0", "http"));
    let key = lab.field("demo_api_key");
    // A tenant's usage reads burst to 20 for the cluster: 10 on each of the two api nodes.
    let sent = 10;
    let reads: Vec<(u16, Duration)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..sent)
            .map(|_| {
                scope.spawn(|| {
                    let agent = client_agent(&lab.tls_ca());
                    let started = Instant::now();
                    let status = agent
                        .get(&url)
                        .header("authorization", format!("Bearer {key}"))
                        .call()
                        .map_or(0, |r| r.status().as_u16());
                    (status, started.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("read")).collect()
    });
    let at_once = reads.iter().filter(|(status, took)| *status == 503 && *took < Duration::from_secs(2)).count();
    eprintln!("usage reads against a frozen database: {reads:?}");
    assert!(reads.iter().all(|(status, _)| *status == 503), "{reads:?}");
    assert!(
        at_once >= sent - api::ROLLUP_READS_AT_ONCE,
        "only {at_once} of {sent} reads were refused at once: {reads:?}"
    );

    drop(thaw);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let response = lab.agent.get(&url).header("authorization", format!("Bearer {key}")).call().expect("read");
        if response.status().as_u16() == 200 {
            break;
        }
        assert!(Instant::now() < until, "usage reads did not come back: {}\n{}", response.status(), lab.log_tails());
        thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_revoked_key_is_refused_by_every_api_node_within_a_second() {
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "1"]);
    let nodes = ["api-0", "api-1"];
    let mut delays = Vec::new();
    for trial in 0..20 {
        let (status, key) =
            lab.admin("POST", "/v1/tenants/demo/keys", Some(serde_json::json!({ "label": format!("trial-{trial}") })));
        assert_eq!(status, 201, "{key}");
        let (secret, id) = (key["key"].as_str().expect("key").to_owned(), key["id"].as_str().expect("id").to_owned());
        let until = Instant::now() + Duration::from_secs(5);
        while !nodes.iter().all(|n| accepted(lab.auth_status(n, &secret))) {
            assert!(Instant::now() < until, "a new key never reached every api node\n{}", lab.log_tails());
            thread::sleep(Duration::from_millis(5));
        }
        let revoked_at = Instant::now();
        let (status, body) = lab.admin("POST", &format!("/v1/keys/{id}/revoke"), None);
        assert_eq!(status, 200, "{body}");
        delays.push(until_every_node_refuses(&nodes, revoked_at, Duration::from_secs(10), |n| {
            lab.auth_status(n, &secret) == 403
        }));
    }
    let p50 = percentile(delays.clone(), 0.50);
    let p99 = percentile(delays.clone(), 0.99);
    eprintln!(
        "revocation reached both api nodes: p50 {p50:?}, p99 {p99:?}, max {:?} over {} trials",
        delays.iter().max().unwrap(),
        delays.len()
    );
    assert!(p99 <= Duration::from_secs(1), "revocation p99 {p99:?} over 1 s: {delays:?}");

    // A watch whose consumer is gone from under it (as when its NATS server is killed and comes
    // back empty) is noticed by the next change it misses — each api node logs that its watch
    // stalled — not only by the client's missed heartbeats (5–10 s later): every consumer of the
    // bucket is deleted (the live watches' and any left by a reload, which linger 30 s), and a
    // key made right afterwards reaches both nodes.
    let urls = lab.identity_nats_urls();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let deleted = runtime.block_on(async {
        use futures_util::StreamExt;
        let client = queue::connect(&urls, "test", None, Some(&lab.tls_ca())).await.expect("NATS");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("KV_identity").await.expect("the identity bucket's stream");
        let names: Vec<String> =
            stream.consumer_names().collect::<Vec<_>>().await.into_iter().map(|n| n.expect("list consumers")).collect();
        // One that expired meanwhile is gone already: fine.
        let mut deleted = 0;
        for name in &names {
            deleted += usize::from(stream.delete_consumer(name).await.is_ok());
        }
        deleted
    });
    assert!(deleted >= 2, "at least one watch consumer per api node: {deleted} deleted");
    let (status, key) = lab.admin("POST", "/v1/tenants/demo/keys", Some(serde_json::json!({ "label": "after" })));
    assert_eq!(status, 201, "{key}");
    let secret = key["key"].as_str().expect("key").to_owned();
    let made = Instant::now();
    while !nodes.iter().all(|n| accepted(lab.auth_status(n, &secret))) {
        assert!(
            made.elapsed() < Duration::from_secs(8),
            "a key made after the watch consumers were deleted reached not every api node in 8 s\n{}",
            lab.log_tails()
        );
        thread::sleep(Duration::from_millis(10));
    }
    for node in nodes {
        let log = std::fs::read_to_string(lab.dir.join(format!("logs/{node}.log"))).unwrap_or_default();
        assert!(log.contains("the watch stalled"), "{node} did not find its watch stalled:\n{}", lab.log_tails());
    }
    eprintln!("after the watch consumers were deleted, a key made then reached both api nodes in {:?}", made.elapsed());
}

#[test]
fn with_postgres_down_resizes_go_on_admin_writes_fail_503_and_writes_replicate_once_it_is_back() {
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "1"]);
    let jpeg = sample_jpeg();
    assert_eq!(lab.resize("width=50", &jpeg).0, 200);

    lab.signal("postgres", lab::Signal::Kill);
    thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        assert_eq!(lab.resize("width=50", &jpeg).0, 200, "resizes with a known key go on without PostgreSQL");
    }
    let started = Instant::now();
    let (status, problem) = lab.admin("POST", "/v1/tenants", Some(serde_json::json!({ "name": "while-down" })));
    assert_eq!(status, 503, "{problem}");
    assert!(started.elapsed() < Duration::from_secs(6), "the admin write took {:?} to fail", started.elapsed());
    // Api nodes say their credentials are still current (nothing changed), and keep serving.
    let ready = lab
        .agent
        .get(&format!("{}/readyz", lab.url_of("api-0", "http")))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");

    lab::restart_component(&lab.dir, "postgres").expect("restart PostgreSQL");
    // No manual step: the identity service reconnects, and a new key reaches the api nodes.
    let until = Instant::now() + Duration::from_secs(30);
    let key = loop {
        let (status, body) = lab.admin("POST", "/v1/tenants/demo/keys", Some(serde_json::json!({ "label": "after" })));
        if status == 201 {
            break body["key"].as_str().expect("key").to_owned();
        }
        assert!(Instant::now() < until, "admin writes did not come back: {status} {body}\n{}", lab.log_tails());
        thread::sleep(Duration::from_millis(250));
    };
    let until = Instant::now() + Duration::from_secs(5);
    while !["api-0", "api-1"].iter().all(|n| accepted(lab.auth_status(n, &key))) {
        assert!(Instant::now() < until, "the key made after the restart never reached the api nodes");
        thread::sleep(Duration::from_millis(20));
    }
}

/// One request of the usage load: tenant index, its own request id, what the client saw.
#[derive(Debug, Clone)]
struct Billed {
    tenant: usize,
    request_id: String,
    status: u16,
}

#[test]
fn usage_counts_every_answered_request_once_across_kill_9_of_each_component() {
    // Two aggregators share the usage stream: batches are applied once between them too.
    let lab = Lab::up(&["--workers", "2", "--aggregators", "2"]);
    // Three tenants, each with its own key, made at the identity service.
    let tenants: Vec<(u64, String)> = (0..3)
        .map(|i| {
            let (status, tenant) =
                lab.admin("POST", "/v1/tenants", Some(serde_json::json!({ "name": format!("billed-{i}") })));
            assert_eq!(status, 201, "{tenant}");
            let id = tenant["id"].as_u64().expect("tenant id");
            let (status, key) = lab.admin("POST", &format!("/v1/tenants/{id}/keys"), Some(serde_json::json!({})));
            assert_eq!(status, 201, "{key}");
            (id, key["key"].as_str().expect("key").to_owned())
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(5);
    while !tenants.iter().all(|(_, k)| ["api-0", "api-1"].iter().all(|n| accepted(lab.auth_status(n, k)))) {
        assert!(Instant::now() < until, "new keys never reached the api nodes");
        thread::sleep(Duration::from_millis(20));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let billed = Arc::new(Mutex::new(Vec::<Billed>::new()));
    let url = format!("{}/v1/resize?width=64", lab.field("url"));
    let jpeg = Arc::new(sample_jpeg());
    let threads: Vec<_> = tenants
        .iter()
        .enumerate()
        .map(|(t, (_, key))| {
            let (stop, billed, url, key, jpeg) = (stop.clone(), billed.clone(), url.clone(), key.clone(), jpeg.clone());
            let ca = lab.tls_ca();
            thread::spawn(move || {
                let agent = client_agent(&ca);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let request_id = format!("t{t}-{n}-{}", std::process::id());
                    let status = agent
                        .post(&url)
                        .header("authorization", format!("Bearer {key}"))
                        .header("x-request-id", &request_id)
                        .send(&jpeg[..])
                        .map_or(0, |mut r| {
                            let _ = r.body_mut().read_to_vec();
                            r.status().as_u16()
                        });
                    billed.lock().unwrap().push(Billed { tenant: t, request_id, status });
                    thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();

    // One at a time, at a random moment: kill -9, a while of load without it, restart.
    let mut seed = u64::from(std::process::id())
        ^ (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64);
    let mut random_ms = |range: std::ops::Range<u64>| {
        // xorshift: enough to spread the kills over the request cycle.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(range.start + seed % (range.end - range.start))
    };
    for victim in ["api-0", "usage-0", "identity", "nats-1"] {
        thread::sleep(random_ms(500..2500));
        eprintln!("kill -9 {victim}");
        lab.signal(victim, lab::Signal::Kill);
        thread::sleep(random_ms(500..2500));
        lab.restart(victim);
        if victim == "api-0" {
            let ready = format!("{}/readyz", lab.url_of("api-0", "http"));
            lab::wait_for_http_ok_trusting(&ready, Duration::from_secs(30), Some(&lab.tls_ca())).expect("api-0 back");
        }
    }
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    let billed = billed.lock().unwrap().clone();

    for (t, (tenant, _)) in tenants.iter().enumerate() {
        let answers: Vec<(String, u16)> =
            billed.iter().filter(|b| b.tenant == t).map(|b| (b.request_id.clone(), b.status)).collect();
        lab.assert_audit_matches(&tenant.to_string(), &answers);
    }
    lab.assert_no_nats_refusals();
}

/// Billing does not rest on JetStream's acknowledgement: nats-server acknowledges before it syncs
/// to disk, and a power failure of every node has lost acknowledged writes. Here the usage
/// stream loses every batch it acknowledged (purged while the aggregator is frozen); each api
/// node still holds its batches, since it deletes one only when an aggregator confirms it
/// applied, ships them again, and every request is billed exactly once.
///
/// A purge keeps the lost batches' de-duplication entries for the stream's duplicate window, as
/// a leader does for a batch it holds where no aggregator is handed it (a state reset after a
/// partition): the copies shipped again are stored, and billed, only once past it. The stream's
/// own window (`queue::USAGE_DUPLICATE_WINDOW`, 10 s) is kept: with the 120 s it had, every copy
/// within this test's wait was taken for the lost batch and nothing was billed.
#[test]
fn usage_batches_the_stream_acknowledged_and_lost_are_shipped_again_and_billed_once() {
    let lab = Lab::up(&["--workers", "1", "--set", "usage.confirm_wait_ms=2000"]);
    let urls = lab.urls("nats_urls");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let js = runtime.block_on(async {
        let client = queue::connect(&urls, "power-loss-test", None, Some(&lab.tls_ca())).await.expect("NATS");
        let js = async_nats::jetstream::new(client);
        let stream = queue::ensure_usage_stream(&js, 3).await.expect("the usage stream");
        assert_eq!(stream.cached_info().config.duplicate_window, queue::USAGE_DUPLICATE_WINDOW);
        js
    });
    let before = lab.demo_requests("total");
    lab.signal("usage-0", lab::Signal::Stop);
    let image = common::png(64, 64);
    let sent = 30;
    for _ in 0..sent {
        let (status, _, problem) = lab.resize("width=10", &image);
        assert_eq!(status, 200, "{problem}");
    }
    // Every batch sealed (at 1 s) and shipped (a pass every 200 ms): all stored, none applied.
    thread::sleep(Duration::from_millis(2500));
    let lost = runtime.block_on(async {
        let mut stream = js.get_stream(queue::USAGE_STREAM).await.expect("the usage stream");
        let stored = stream.info().await.expect("info").state.messages;
        stream.purge().await.expect("purged");
        stored
    });
    assert!(lost > 0, "no usage batch reached the stream");
    let unconfirmed: f64 =
        ["api-0", "api-1"].iter().map(|n| lab.metric_sum(n, "resizer_usage_batches_unconfirmed")).sum();
    assert!(unconfirmed >= 1.0, "the api nodes kept no batch for want of a confirmation");
    lab.signal("usage-0", lab::Signal::Cont);
    // Settled past another wait, and a shipment again of anything unconfirmed: still once each.
    lab.assert_billed_once("total", before, sent, Duration::from_secs(30), Duration::from_secs(5));
    let again: f64 =
        ["api-0", "api-1"].iter().map(|n| lab.metric_sum(n, "resizer_usage_batches_shipped_again_total")).sum();
    let left: f64 = ["api-0", "api-1"].iter().map(|n| lab.metric_sum(n, "resizer_usage_batches_unconfirmed")).sum();
    eprintln!("the stream lost {lost} acknowledged batches; shipped again {again}; billed {sent} once each; unconfirmed {left}");
    assert!(again >= 1.0, "nothing was shipped again");
    assert_eq!(left, 0.0, "every batch confirmed and gone from the spools");
}

#[test]
fn an_unreadable_identity_entry_refuses_its_tenant_and_nothing_else() {
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "1"]);
    let nodes = ["api-0", "api-1"];
    let (status, other) = lab.admin("POST", "/v1/tenants", Some(serde_json::json!({ "name": "other" })));
    assert_eq!(status, 201, "{other}");
    let new_key = |label: &str| {
        let (status, key) = lab.admin("POST", "/v1/tenants/other/keys", Some(serde_json::json!({ "label": label })));
        assert_eq!(status, 201, "{key}");
        key["key"].as_str().expect("key").to_owned()
    };
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let until = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < until, "{what}\n{}", lab.log_tails());
            thread::sleep(Duration::from_millis(20));
        }
    };
    let other_key = new_key("first");
    wait_until("the other tenant's key reaches both nodes", &|| {
        nodes.iter().all(|n| accepted(lab.auth_status(n, &other_key)))
    });
    let (_, demo) = lab.admin("GET", "/v1/tenants/demo", None);
    let demo_id = demo["id"].as_u64().expect("the demo tenant's id");
    let demo_key = lab.field("demo_api_key");
    assert!(nodes.iter().all(|n| accepted(lab.auth_status(n, &demo_key))));

    // What a newer identity service might write for the demo tenant (a status this one does not
    // know), put straight into the bucket.
    let urls = lab.identity_nats_urls();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = queue::connect(&urls, "test", None, Some(&lab.tls_ca())).await.expect("NATS");
        let bucket = async_nats::jetstream::new(client).get_key_value("identity").await.expect("the identity bucket");
        let value = serde_json::json!({ "version": 1_000_000, "tenant": { "id": demo_id, "status": "archived" } });
        bucket.put(format!("t.{demo_id}"), value.to_string().into()).await.expect("put");
    });

    // Its keys are refused on every node; the rest goes on, and so does replication.
    wait_until("the demo key refused on both nodes", &|| nodes.iter().all(|n| lab.auth_status(n, &demo_key) == 401));
    for node in nodes {
        assert!(accepted(lab.auth_status(node, &other_key)), "{node} refused the other tenant");
        let ready = lab.agent.get(format!("{}/readyz", lab.url_of(node, "http"))).call().expect("readyz");
        assert_eq!(ready.status().as_u16(), 200, "{node} not ready");
    }
    let second = new_key("second");
    wait_until("a key made afterwards reaches both nodes", &|| {
        nodes.iter().all(|n| accepted(lab.auth_status(n, &second)))
    });
}

/// Large jobs have a consumer of their own and a worker pulls them with all its slots but one: a
/// small image sent while a burst of huge ones is being converted is pulled and converted at
/// once, not after them (with one consumer for every lane it waited for the jobs ahead of it).
#[test]
fn a_burst_of_large_images_does_not_hold_a_small_one() {
    // Three large jobs: as many as the worker's medium pulls (2 slots + 1 prefetched), which
    // with one consumer for every lane would all have taken one; WebP output of 20 MP
    // keeps each about a second on a core. Deadlines long enough for all three in a row.
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "2", "--set", "api.request_timeout_ms=30000"]);
    let url = format!("{}/v1/resize?width=4999&format=webp", lab.field("url"));
    let key = lab.field("demo_api_key");
    let big = common::big_png();
    let burst: Vec<_> = (0..3)
        .map(|_| {
            let (agent, url, key) = (lab.agent.clone(), url.clone(), key.clone());
            thread::spawn(move || {
                let started = Instant::now();
                let status = resize_at(&agent, &url, &key, big).0;
                (status, started.elapsed())
            })
        })
        .collect();
    assert!(wait_until_busy(&lab, "worker-0", Duration::from_secs(20)), "{}", lab.log_tails());
    // By now every large job is queued behind the first (the uploads are on loopback).
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, _, problem) = lab.resize("width=10", &common::png(64, 64));
    let small = started.elapsed();
    assert_eq!(status, 200, "{problem}");
    let large: Vec<(u16, Duration)> = burst.into_iter().map(|t| t.join().expect("a large request")).collect();
    assert!(large.iter().all(|&(status, _)| status == 200), "{large:?}\n{}", lab.log_tails());
    let first_large = large.iter().map(|&(_, took)| took).min().unwrap_or_default();
    eprintln!("small image: {small:?}; large images: {large:?}");
    // The small one took a fraction of one large conversion, and less than the 500 ms target.
    assert!(small < Duration::from_millis(500) && small * 3 < first_large, "small {small:?}, large {large:?}");
    // One large job at a time on a two-slot worker: the second ends about one conversion after
    // the first, not with it.
    let mut ends: Vec<Duration> = large.iter().map(|&(_, took)| took).collect();
    ends.sort();
    assert!(ends[1] > ends[0] + first_large / 3, "large jobs ran side by side: {ends:?}");
}

/// Each lane has its consumer, and a worker keeps a thread for small jobs: on a worker with one
/// slot (the lab's default on two cores), a small image sent while medium ones convert and wait
/// is pulled and converted at once. With small and medium jobs on one consumer it waited for
/// every medium job queued before it, and then for the worker's one thread (issue 22's upload
/// flood: the other tenant's p99 654–693 ms).
#[test]
fn a_burst_of_medium_images_does_not_hold_a_small_one_on_a_one_slot_worker() {
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "1", "--set", "api.request_timeout_ms=30000"]);
    let url = format!("{}/v1/resize?width=3199&format=webp", lab.field("url"));
    let key = lab.field("demo_api_key");
    // 12 MP: the medium lane (1–16 MP); WebP output near full size keeps each a good part of a
    // second on a core.
    let medium = Arc::new(common::png(4000, 3000));
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let (agent, url, key, medium) = (lab.agent.clone(), url.clone(), key.clone(), medium.clone());
            thread::spawn(move || {
                let started = Instant::now();
                let status = resize_at(&agent, &url, &key, &medium).0;
                (status, started.elapsed())
            })
        })
        .collect();
    assert!(wait_until_busy(&lab, "worker-0", Duration::from_secs(20)), "{}", lab.log_tails());
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, _, problem) = lab.resize("width=10", &common::png(64, 64));
    let small = started.elapsed();
    assert_eq!(status, 200, "{problem}");
    let mediums: Vec<(u16, Duration)> = burst.into_iter().map(|t| t.join().expect("a medium request")).collect();
    assert!(mediums.iter().all(|&(status, _)| status == 200), "{mediums:?}\n{}", lab.log_tails());
    let first_medium = mediums.iter().map(|&(_, took)| took).min().unwrap_or_default();
    eprintln!("small image: {small:?}; medium images: {mediums:?}");
    assert!(small < Duration::from_millis(500) && small * 3 < first_medium, "small {small:?}, medium {mediums:?}");
}

/// Pauses, one at a time for 15 s, under load through HAProxy: an api node, the identity
/// service, the usage aggregator, a worker and PostgreSQL. An api node frozen with requests in
/// flight answers none of them: HAProxy ends each as a 504 just past the request deadline, takes
/// the node out, and the other node serves; a frozen worker's jobs go to the other after
/// `ack_wait`; the identity service, the aggregator and PostgreSQL are off the request path. No
/// request outlives its deadline by more than HAProxy's second, and every 200 the clients saw is
/// in the audit once and billed once.
#[test]
fn pausing_each_role_in_turn_costs_no_request_its_deadline() {
    let lab = Lab::up(&["--workers", "2"]);
    // The operator's fault verbs, as one practising on the lab would use them.
    let verb = |args: &[&str]| lab.verb(args);
    let load = Load::start(&lab, "width=100", sample_jpeg(), 4, Duration::from_millis(10));
    thread::sleep(Duration::from_secs(2));
    let mut windows = Vec::new();
    for name in ["api-0", "identity", "usage-0", "worker-0", "postgres"] {
        let pause = Duration::from_secs(15);
        let from = load.since_start();
        verb(&["pause", name]);
        thread::sleep(pause);
        // The last one is undone by `heal`, which resumes whatever is paused.
        if name == "postgres" {
            verb(&["heal"]);
        } else {
            verb(&["resume", name]);
        }
        windows.push((name, from, load.since_start()));
        thread::sleep(Duration::from_secs(3));
    }
    let samples = load.finish();
    let slowest = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    // Sent while api-0 was frozen and out of HAProxy's rotation (its checks fail within ~1 s).
    let (_, api_from, api_to) = windows[0];
    let during: Vec<&Sample> =
        samples.iter().filter(|s| s.sent > api_from + Duration::from_secs(2) && s.sent < api_to).collect();
    eprintln!(
        "pauses {windows:?}: {} requests {:?}, slowest {slowest:?}; {} sent while api-0 was out, {:?}",
        samples.len(),
        statuses(&samples),
        during.len(),
        statuses(&during.iter().map(|&&s| s).collect::<Vec<_>>())
    );
    assert!(slowest <= Duration::from_millis(11_500), "a request outlived its deadline: {slowest:?}");
    assert!(!during.is_empty() && during.iter().all(|s| s.status == 200), "api-1 did not take api-0's share");
    assert!(success_ratio(&samples) >= 0.95, "{:?}\n{}", statuses(&samples), lab.log_tails());
    // Every 200 billed once, nothing else billable.
    let answers: Vec<(String, u16)> = samples.iter().map(|s| (s.request_id(), s.status)).collect();
    lab.assert_audit_matches("demo", &answers);
}

/// An api node whose spool volume is full (`lab fill-spool`: on the lab's own network each api
/// node's spool is a volume of its own) leaves HAProxy's rotation — `/readyz` turns 503 — while
/// the other node serves, answers no request 200 without its record, and comes back once the
/// volume has room again (`lab heal`); every 200 is in the audit once and billed once.
#[test]
fn an_api_node_whose_spool_volume_is_full_leaves_rotation_and_comes_back() {
    let lab = Lab::up(&["--netns", "--workers", "1"]);
    let ready = format!("{}/readyz", lab.url_of("api-0", "http"));
    let readyz = || lab.agent.get(&ready).call().map(|r| r.status().as_u16()).unwrap_or(0);
    let wait_for = |what: &str, status: u16| {
        lab::poll_until(what, Duration::from_secs(10), Duration::from_millis(100), || {
            if readyz() == status {
                Ok(())
            } else {
                Err(format!("readyz {}", readyz()))
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()))
    };
    let load = Load::start(&lab, "width=100", sample_jpeg(), 2, Duration::from_millis(10));
    thread::sleep(Duration::from_secs(2));
    let cut = load.since_start();
    lab.verb(&["fill-spool", "api-0"]);
    wait_for("api-0 not ready once its spool volume is full", 503);
    let out = load.since_start();
    // Both node lists (the identity service's and an api node's own) show api-0 out of rotation
    // and why, within an announcement or two.
    for at in ["identity", "api-1"] {
        lab::poll_until(
            &format!("{at}'s node list shows api-0 out of rotation"),
            Duration::from_secs(5),
            Duration::from_millis(200),
            || {
                let board = node_board(&lab, at);
                let api0 = node_entry(&board, "api-0");
                let reason = api0["status"]["reason"].as_str().unwrap_or("");
                match (&api0["in_rotation"], &api0["status"]["status"]) {
                    (Value::Bool(false), Value::String(s)) if s == "not ready" && reason.contains("spool") => Ok(()),
                    _ => Err(format!("{board:#}")),
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    thread::sleep(Duration::from_secs(5));
    let writable = lab.metric_sum("api-0", "resizer_usage_spool_writable");
    lab.verb(&["heal"]);
    wait_for("api-0 ready again once its volume has room", 200);
    let back = load.since_start();
    lab::poll_until(
        "api-0 back in rotation on the identity service's node list",
        Duration::from_secs(5),
        Duration::from_millis(200),
        || {
            let board = node_board(&lab, "identity");
            match node_entry(&board, "api-0")["in_rotation"] {
                Value::Bool(true) => Ok(()),
                _ => Err(format!("{board:#}")),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    thread::sleep(Duration::from_secs(3));
    let samples = load.finish();
    eprintln!(
        "spool volume full at {cut:?}, api-0 not ready at {out:?}, back at {back:?}: {} requests {:?}",
        samples.len(),
        statuses(&samples)
    );
    assert_eq!(writable, 0.0, "resizer_usage_spool_writable while writes fail");
    // Until HAProxy's checks see the 503 (two failed checks, 500 ms apart) api-0 gets requests
    // and answers them 503: a record it cannot write is no 200. After that, only api-1 answers.
    let refused: Vec<&Sample> = samples.iter().filter(|s| s.status != 200).collect();
    let taken_out = out + Duration::from_millis(1500);
    assert!(
        refused.iter().all(|s| s.status == 503 && s.sent >= cut && s.sent <= taken_out),
        "answers other than 200, or 503s after HAProxy took api-0 out: {refused:?}\n{}",
        lab.log_tails()
    );
    let answers: Vec<(String, u16)> = samples.iter().map(|s| (s.request_id(), s.status)).collect();
    lab.assert_audit_matches("demo", &answers);
}

/// `GET /v1/admin/nodes` at the identity service (admin token) or an api node's admin port
/// (read token).
fn node_board(lab: &Lab, at: &str) -> Value {
    let (status, board) =
        if at == "identity" { lab.admin("GET", "/v1/admin/nodes", None) } else { lab.admin_get(at, "/v1/admin/nodes") };
    assert_eq!(status, 200, "{at}: /v1/admin/nodes: {board}");
    assert_eq!(board["cluster"], true, "{board:#}");
    board
}

/// The entry of the api node `name` last heard from (a restarted node has a new suffix).
fn node_entry(board: &Value, name: &str) -> Value {
    let prefix = format!("{name}/");
    board["api_nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["node"].as_str().is_some_and(|node| node.starts_with(&prefix)))
        .min_by_key(|n| n["since_heard_ms"].as_u64().unwrap_or(u64::MAX))
        .cloned()
        .unwrap_or_else(|| panic!("{name} is not on the node list: {board:#}"))
}

/// A NATS server that freezes (SIGSTOP: its sockets stay open, nothing is answered) is left by
/// the api node connected to it within a few seconds (pings every second, and more than two
/// unanswered drop the connection), not the 10–15 s that pings every 5 s took, longer than a
/// request's deadline. Requests go on meanwhile: none outlives its deadline.
#[test]
fn an_api_node_leaves_a_frozen_nats_server_within_seconds() {
    let lab = Lab::up(&["--workers", "2"]);
    let nats = lab.nats();
    let serving = |client: &str, skip: Option<usize>| -> Vec<usize> {
        let nodes = nats.nodes().iter().filter(|n| Some(n.index) != skip);
        nodes
            .filter(|n| n.client_names().is_ok_and(|names| names.iter().any(|c| c == client)))
            .map(|n| n.index)
            .collect()
    };
    let index = *serving("api-0", None).first().expect("api-0 is connected to a NATS node");
    let load = Load::start(&lab, "width=100", sample_jpeg(), 4, Duration::from_millis(10));
    thread::sleep(Duration::from_secs(2));
    let paused = Instant::now();
    let paused_at = load.since_start();
    nats.stop(index).expect("SIGSTOP the api node's NATS server");
    let moved =
        lab::poll_until("api-0 on another NATS node", Duration::from_secs(20), Duration::from_millis(100), || {
            if serving("api-0", Some(index)).is_empty() {
                Err("api-0 is still connected only to the frozen node".to_owned())
            } else {
                Ok(paused.elapsed())
            }
        });
    thread::sleep(Duration::from_secs(15).saturating_sub(paused.elapsed()));
    nats.cont(index).expect("SIGCONT");
    thread::sleep(Duration::from_secs(3));
    let samples = load.finish();
    let moved = moved.unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()));
    let slowest = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    let ratio = success_ratio(&samples);
    let failed: Vec<Duration> = samples.iter().filter(|s| s.status != 200).map(|s| s.sent).collect();
    eprintln!(
        "SIGSTOP nats-{index} 15 s at {paused_at:?}: api-0 on another node after {moved:?}; {} requests {:?}, \
         success {:.2} %, slowest {slowest:?}, failures sent at {:?}..{:?}",
        samples.len(),
        statuses(&samples),
        ratio * 100.0,
        failed.first(),
        failed.last(),
    );
    assert!(moved <= Duration::from_secs(5), "api-0 left the frozen server only after {moved:?}");
    assert!(slowest <= Duration::from_secs(11), "a request outlived its 10 s deadline: {slowest:?}");
    // Requests fail while the cluster routes around the frozen server (api-0's connection
    // moving, the Raft groups it led electing anew) and, some runs, when it comes back: NATS
    // 2.9 then loses its metadata leader for a few seconds and a job published in that moment
    // can wait out its deadline (504). Neither may cost more than a tenth of the requests.
    assert!(ratio >= 0.9, "success {:.2} % < 90 %: {:?}\n{}", ratio * 100.0, statuses(&samples), lab.log_tails());
}

/// Through HAProxy, a tenant over its rate limit still gets an HTTP answer to every request
/// (issue 23 saw 2 % of such requests closed with none, `SD--` in HAProxy's log). An api node
/// refuses such a request before reading its body, and a body larger than what it drains
/// (1 MiB) means the connection closes with bytes unread: closed at once, that is a reset under
/// HAProxy while it still forwards the body. The api node closes lingeringly instead
/// (`lingering.rs`; `dev::an_early_answer_reaches_a_client_still_sending_its_body` shows the
/// reset). The drops depend on timing: this load saw none in later runs also without the
/// lingering close, so this test guards the symptom without proving the cause.
#[test]
fn every_request_through_haproxy_gets_an_answer_while_its_tenant_is_rate_limited() {
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "1"]);
    let limits = serde_json::json!({ "name": "flooding", "limits": { "rate_per_sec": 20.0, "burst": 20 } });
    let (status, tenant) = lab.admin("POST", "/v1/tenants", Some(limits));
    assert_eq!(status, 201, "{tenant}");
    let (status, key) = lab.admin("POST", "/v1/tenants/flooding/keys", Some(serde_json::json!({ "label": "load" })));
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().expect("key").to_owned();
    lab::poll_until("the key known on both api nodes", Duration::from_secs(10), Duration::from_millis(100), || match [
        "api-0", "api-1",
    ]
    .map(|n| lab.auth_status(n, &key))
    {
        seen if seen.iter().all(|&s| accepted(s)) => Ok(()),
        seen => Err(format!("auth status per node: {seen:?}")),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // Bodies below and above the 1 MiB an api node drains of a refused request, as photos are
    // (the corpus's are 0.1-1.9 MB); not images: what passes the rate limit is answered 415
    // after its body is read, which costs no conversion. Sent by `resizer loadtest` over
    // kept-alive HTTPS connections, as in the issue's runs.
    let bodies = lab.dir.join("bodies");
    std::fs::create_dir_all(&bodies).expect("bodies folder");
    for (i, len) in [600usize << 10, 1536 << 10, 900 << 10, 1900 << 10].into_iter().enumerate() {
        std::fs::write(bodies.join(format!("body-{i}.bin")), vec![0x5a_u8; len]).expect("a body");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_resizer"))
        .args(["loadtest", "--url", &format!("{}/v1/resize?width=100", lab.field("url")), "--key", &key])
        .args(["--images", &bodies.display().to_string(), "--concurrency", "4", "--duration", "6", "--json"])
        .args(["--ca-file", &lab.tls_ca().display().to_string()])
        .output()
        .expect("run resizer loadtest");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("the summary JSON");
    eprintln!("through HAProxy, rate-limited: {} errors {}", summary["status"], summary["errors"]);
    let refused = summary["status"]["429"].as_u64().unwrap_or(0);
    assert!(refused > 100, "the tenant was not held to its rate: {summary}");
    assert_eq!(summary["errors"].as_u64(), Some(0), "requests without an answer: {}", summary["first_error"]);
}

/// Every file of the USAGE stream on NATS node `node` and of the Raft group that replicates it
/// (the one whose log holds usage subjects), with its size now.
fn usage_stream_files(lab: &Lab, node: &str) -> Vec<(PathBuf, u64)> {
    let store = lab.dir.join(node).join("jetstream");
    let mut files = Vec::new();
    let mut walk = vec![store.join(queue::SERVICE_ACCOUNT).join("streams").join("USAGE")];
    if let Ok(groups) = std::fs::read_dir(store.join("$SYS").join("_js_")) {
        for group in groups.flatten() {
            let logs: Vec<PathBuf> = std::fs::read_dir(group.path().join("msgs"))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            let usage = logs.iter().any(|log| {
                std::fs::read(log).is_ok_and(|bytes| {
                    bytes.windows(queue::USAGE_SUBJECT.len()).any(|w| w == queue::USAGE_SUBJECT.as_bytes())
                })
            });
            if usage {
                walk.push(group.path());
            }
        }
    }
    while let Some(dir) = walk.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.metadata() {
                Ok(m) if m.is_dir() => walk.push(path),
                Ok(m) => files.push((path, m.len())),
                Err(_) => {}
            }
        }
    }
    files
}

/// kill -9 of all three NATS servers at once, then a simulated power loss while the aggregator
/// is frozen (so the stream's tail is unbilled): all three killed and the USAGE stream's files (its message blocks and its Raft log) cut back on each to their
/// sizes of a few seconds earlier — what the page cache held unsynced — before they start
/// again. Under load the whole time; afterwards every 200 a client saw is in the audit once and
/// billed once, and no request outlived its deadline.
#[test]
fn usage_survives_all_nats_servers_killed_and_a_power_loss_cutting_the_usage_streams_tail() {
    // Batches the aggregator has not confirmed are shipped again after 3 s (30 s by default).
    let lab = Lab::up(&["--workers", "2", "--set", "usage.confirm_wait_ms=3000"]);
    let nats = lab.nats();
    let servers: Vec<String> = nats.nodes().iter().map(|n| n.server_name.clone()).collect();
    let kill_all = |lab: &Lab| {
        for name in &servers {
            lab.signal(name, lab::Signal::Kill);
        }
    };
    let start_all = |lab: &Lab| {
        for name in &servers {
            lab.restart(name);
        }
        lab.nats().wait_healthy(Duration::from_secs(60)).expect("the NATS cluster back");
    };
    let load = Load::start(&lab, "width=100", sample_jpeg(), 4, Duration::from_millis(10));
    thread::sleep(Duration::from_secs(5));
    let killed = load.since_start();
    kill_all(&lab);
    thread::sleep(Duration::from_secs(2));
    start_all(&lab);
    let back = load.since_start();
    thread::sleep(Duration::from_secs(5));
    // The aggregator frozen: what is shipped from here on stays unbilled in the stream, where
    // the power loss takes it.
    lab.signal("usage-0", lab::Signal::Stop);
    // What a power loss now would keep: the files as they are, a few seconds before it.
    let synced: Vec<(PathBuf, u64)> = servers.iter().flat_map(|s| usage_stream_files(&lab, s)).collect();
    assert!(synced.iter().any(|(p, _)| p.extension().is_some_and(|e| e == "blk")), "no USAGE message blocks found");
    thread::sleep(Duration::from_secs(4));
    let lost_power = load.since_start();
    kill_all(&lab);
    let mut cut = 0u64;
    for name in &servers {
        for (path, now) in usage_stream_files(&lab, name) {
            let before = synced.iter().find(|(p, _)| *p == path).map_or(0, |(_, len)| *len);
            if now > before {
                std::fs::OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(before)).expect("truncate");
                cut += now - before;
            }
        }
    }
    start_all(&lab);
    lab.signal("usage-0", lab::Signal::Cont);
    let powered = load.since_start();
    thread::sleep(Duration::from_secs(8));
    let samples = load.finish();
    eprintln!(
        "all NATS killed at {killed:?}, back at {back:?}; power lost at {lost_power:?} ({cut} bytes of USAGE files cut), back at {powered:?}: {} requests {:?}, slowest {:?}",
        samples.len(),
        statuses(&samples),
        samples.iter().map(|s| s.latency).max().unwrap_or_default()
    );
    assert!(cut > 0, "the power loss cut nothing: no usage was written in the last seconds");
    assert!(samples.iter().all(|s| s.latency <= Duration::from_millis(11_500)), "a request outlived its deadline");
    let answers: Vec<(String, u16)> = samples.iter().map(|s| (s.request_id(), s.status)).collect();
    lab.assert_audit_matches("demo", &answers);
    let again: f64 =
        ["api-0", "api-1"].iter().map(|n| lab.metric_sum(n, "resizer_usage_batches_shipped_again_total")).sum();
    eprintln!("usage batches the api nodes shipped again: {again}");
    assert!(again > 0.0, "the power loss took no unbilled batch: the test did not test it");
}
