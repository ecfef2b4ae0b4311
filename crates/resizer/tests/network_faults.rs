//! The cluster on a network of its own (`resizer lab up --netns`: every node in its own network
//! namespace with its own address, on a bridge), hurt by its network under load from this
//! process through HAProxy: a NATS node partitioned from the others (a follower, then the job
//! stream's leader), an api node cut off from NATS, latency on a NATS node's links. Each run ends
//! with the checker: every 200 a client saw is in the audit once and billed once, no record of an
//! answer no client saw, no request past its deadline, and the success rate outside the fault
//! windows.
//!
//! Needs root (namespaces, a bridge, iptables), nats-server, HAProxy and PostgreSQL from
//! Debian's packages; `scripts/test.sh` installs what is missing.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{percentile, sample_jpeg, statuses, Lab, Load, Sample};

/// The request deadline (`api.request_timeout_ms`, 10 s) and what HAProxy adds past it (1 s):
/// no request may take longer.
const DEADLINE: Duration = Duration::from_millis(11_500);

/// A fault's time in a run: from when it was applied to when it was healed, from the load's start.
#[derive(Debug, Clone, Copy)]
struct Window {
    what: &'static str,
    from: Duration,
    to: Duration,
}

/// The checker's figures for a run, printed for docs/cluster.md.
fn report(lab: &Lab, samples: &[Sample], windows: &[Window], recovery: Duration) {
    let slowest = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    assert!(slowest <= DEADLINE, "a request outlived its deadline: {slowest:?}\n{}", lab.log_tails());
    for w in windows {
        let inside: Vec<Sample> =
            samples.iter().filter(|s| s.sent >= w.from && s.sent <= w.to + recovery).copied().collect();
        let worst = inside.iter().map(|s| s.latency).max().unwrap_or_default();
        eprintln!(
            "window {} {:.1}–{:.1} s: {} requests {:?}, worst latency {worst:?}",
            w.what,
            w.from.as_secs_f64(),
            w.to.as_secs_f64(),
            inside.len(),
            statuses(&inside)
        );
    }
    let outside: Vec<Sample> = samples
        .iter()
        .filter(|s| !windows.iter().any(|w| s.sent >= w.from && s.sent <= w.to + recovery))
        .copied()
        .collect();
    let ok = outside.iter().filter(|s| s.status == 200).count() as f64 / outside.len().max(1) as f64;
    let p99 = percentile(samples.iter().map(|s| s.latency).collect(), 0.99);
    eprintln!(
        "whole run: {} requests {:?}, p99 {p99:?}, slowest {slowest:?}; outside the windows {} requests, {:.2} % 200",
        samples.len(),
        statuses(samples),
        outside.len(),
        ok * 100.0
    );
    assert!(ok >= 0.99, "success outside the fault windows {:.2} %: {:?}", ok * 100.0, statuses(&outside));
    let answers: Vec<(String, u16)> = samples.iter().map(|s| (s.request_id(), s.status)).collect();
    lab.assert_audit_matches("demo", &answers);
}

/// Polls HAProxy's view of `server` until `in_rotation` is what is wanted; how long that took.
fn wait_rotation(lab: &Lab, server: &str, in_rotation: bool, timeout: Duration) -> Duration {
    let stats = lab.url_of("haproxy", "stats");
    let start = Instant::now();
    loop {
        let states = lab::server_states_at(&stats).unwrap_or_default();
        if states.iter().any(|s| s.name == server && s.in_rotation() == in_rotation) {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "{server} in rotation: never {in_rotation} in {timeout:?}: {states:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn partitioning_a_nats_follower_then_the_job_streams_leader_bills_every_answer_once() {
    let lab = Lab::up(&["--netns", "--workers", "2"]);
    let nats = lab.nats();
    let load = Load::start(&lab, "width=100", sample_jpeg(), 4, Duration::from_millis(10));
    thread::sleep(Duration::from_secs(2));
    let mut windows = Vec::new();
    for what in ["follower", "leader"] {
        let leader = nats.stream_leader("JOBS").expect("jsz").expect("the job stream has a leader");
        let victim = match what {
            "leader" => leader.clone(),
            _ => nats.nodes().iter().map(|n| n.server_name.clone()).find(|n| *n != leader).expect("a follower"),
        };
        let others: Vec<String> = nats.nodes().iter().map(|n| n.server_name.clone()).filter(|n| *n != victim).collect();
        let from = load.since_start();
        // Cut off from the other NATS servers only: its clients still reach it, and it them.
        lab.verb(&["partition", &victim, "--from", &others.join(",")]);
        thread::sleep(Duration::from_secs(20));
        lab.verb(&["heal"]);
        windows.push(Window {
            what: if what == "leader" { "JOBS leader" } else { "follower" },
            from,
            to: load.since_start(),
        });
        // The cluster whole again: routes and a meta leader that sees every peer current. Not
        // `/healthz`, which stayed 503 for over a minute here over an api node's ephemeral KV
        // watch consumer on the healed server that was never current again; the load's billing,
        // checked at the end, is what this test measures.
        nats.wait_whole(Duration::from_secs(60)).expect("the NATS cluster whole again");
        lab::poll_until("the job stream to have a leader", Duration::from_secs(30), Duration::from_millis(100), || {
            match nats.stream_leader("JOBS") {
                Ok(Some(leader)) => Ok(leader),
                other => Err(format!("{other:?}")),
            }
        })
        .expect("the job stream led again");
        thread::sleep(Duration::from_secs(3));
    }
    let samples = load.finish();
    report(&lab, &samples, &windows, Duration::from_secs(12));
}

#[test]
fn an_api_node_cut_off_from_nats_leaves_rotation_within_2_s_and_comes_back() {
    let lab = Lab::up(&["--netns", "--workers", "1"]);
    let load = Load::start(&lab, "width=100", sample_jpeg(), 2, Duration::from_millis(10));
    thread::sleep(Duration::from_secs(2));
    wait_rotation(&lab, "api-0", true, Duration::from_secs(5));
    let from = load.since_start();
    lab.verb(&["partition", "api-0", "--from", "nats-0,nats-1,nats-2"]);
    let left = wait_rotation(&lab, "api-0", false, Duration::from_secs(10));
    thread::sleep(Duration::from_secs(5));
    lab.verb(&["heal"]);
    let healed = Instant::now();
    let back = wait_rotation(&lab, "api-0", true, Duration::from_secs(15));
    let to = load.since_start();
    eprintln!("api-0 cut off from NATS: out of rotation after {left:?}; healed, back after {back:?}");
    thread::sleep(Duration::from_secs(2));
    let samples = load.finish();
    assert!(left <= Duration::from_secs(2), "api-0 stayed in rotation {left:?} after the cut");
    assert!(healed.elapsed() < Duration::from_secs(15));
    report(&lab, &samples, &[Window { what: "api-0 cut off from NATS", from, to }], Duration::from_secs(12));
    // `down` (the lab's guard) leaves no namespace, bridge or volume of this lab behind.
    let network: lab::NetworkRecord =
        serde_json::from_value(lab.file["fields"][lab::NETWORK_FIELD].clone()).expect("the network's record");
    drop(lab);
    let namespaces = std::fs::read_dir("/run/netns").map(|d| d.flatten().count()).unwrap_or(0);
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("rz{}-", network.id)))
        .collect();
    assert!(left.is_empty(), "namespaces left after down: {left:?} (of {namespaces})");
    assert!(!std::path::Path::new("/sys/class/net").join(&network.bridge).exists(), "the bridge left after down");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    assert!(network.volumes.iter().all(|v| !mounts.contains(&v.path.display().to_string())), "a volume left mounted");
}

/// 100 ms added to everything one NATS node sends, for 30 s: a follower of the job stream, then
/// its leader. A client connected to the slowed server pays it on every message (a job publish
/// two or three times), so every api node and worker whose round trips to its own server stay
/// slow for a second moves to another server. The leader is in three hops of every request —
/// the stored job's replication and acknowledgement, and its delivery to a worker — so the api
/// nodes, seeing their acknowledgements slow while their own servers answer at once, ask it to
/// step down, and the workers' consumers it leads too; followers lead instead.
#[test]
fn latency_of_100_ms_on_a_nats_node_keeps_p99_under_500_ms() {
    let lab = Lab::up(&["--netns", "--workers", "2"]);
    let load = Load::start(&lab, "width=100", sample_jpeg(), 4, Duration::from_millis(10));
    thread::sleep(Duration::from_secs(2));
    let nats = lab.nats();
    let mut windows = Vec::new();
    for what in ["follower", "JOBS leader"] {
        let leader = nats.stream_leader("JOBS").expect("jsz").expect("the job stream has a leader");
        let victim = match what {
            "follower" => {
                nats.nodes().iter().map(|n| n.server_name.clone()).find(|n| *n != leader).expect("a follower")
            }
            _ => leader,
        };
        let from = load.since_start();
        lab.verb(&["slow", &victim, "--delay-ms", "100"]);
        thread::sleep(Duration::from_secs(30));
        eprintln!("leaders at the end of the {what} window: {}", raft_leaders(&nats));
        lab.verb(&["heal"]);
        let to = load.since_start();
        windows.push((what, victim, Window { what, from, to }));
        thread::sleep(Duration::from_secs(3));
    }
    let samples = load.finish();
    let before: Vec<Duration> = samples.iter().filter(|s| s.sent < windows[0].2.from).map(|s| s.latency).collect();
    eprintln!("before any latency: p99 {:?}", percentile(before, 0.99));
    let stepdowns = ["api-0", "api-1"]
        .iter()
        .map(|n| {
            lab::log_tail(&lab.dir.join(format!("logs/{n}.log")), 100_000).matches("asked it to step down").count()
        })
        .sum::<usize>();
    eprintln!("stepdowns asked by the api nodes: {stepdowns}");
    let moves = ["api-0", "api-1", "worker-0", "worker-1"]
        .iter()
        .map(|n| {
            lab::log_tail(&lab.dir.join(format!("logs/{n}.log")), 100_000)
                .matches("NATS server is slow while it answers")
                .count()
        })
        .sum::<usize>();
    eprintln!("nodes that left a slow server: {moves}");
    for n in ["api-0", "api-1", "worker-0", "worker-1"] {
        let log = lab::log_tail(&lab.dir.join(format!("logs/{n}.log")), 100_000);
        for line in log.lines().filter(|l| l.contains("step down") || l.contains("while it answers")) {
            eprintln!("{n}: {}", line.chars().take(300).collect::<String>());
        }
    }
    for (what, victim, w) in &windows {
        let during: Vec<Duration> =
            samples.iter().filter(|s| s.sent >= w.from && s.sent <= w.to).map(|s| s.latency).collect();
        let p99 = percentile(during.clone(), 0.99);
        eprintln!(
            "+100 ms on {victim} ({what}) for 30 s: {} requests, p50 {:?}, p99 {p99:?}",
            during.len(),
            percentile(during, 0.5)
        );
        assert!(p99 < Duration::from_millis(500), "p99 {p99:?} with 100 ms on {victim}'s links ({what})");
    }
    let windows: Vec<Window> = windows.iter().map(|w| w.2).collect();
    report(&lab, &samples, &windows, Duration::ZERO);
}

/// Each stream's and consumer's Raft leader, as one running node's `/jsz` says.
fn raft_leaders(nats: &lab::NatsCluster) -> String {
    let Some(node) = nats.nodes().iter().find(|n| n.state() == lab::ProcessState::Running) else {
        return String::new();
    };
    let url = format!("{}/jsz?accounts=true&streams=true&consumers=true", node.monitor_url());
    // A slowed node still answers within a second; a hung one must not hang the test.
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    let Ok(mut r) = agent.get(&url).call() else { return "jsz failed".into() };
    let v: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or_default();
    let mut out = String::new();
    for a in v["account_details"].as_array().into_iter().flatten() {
        for s in a["stream_detail"].as_array().into_iter().flatten() {
            out += &format!("{}={} ", s["name"], s["cluster"]["leader"]);
            for c in s["consumer_detail"].as_array().into_iter().flatten() {
                out += &format!("{}={} ", c["name"], c["cluster"]["leader"]);
            }
        }
    }
    out
}
