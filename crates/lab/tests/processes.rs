//! HAProxy over in-test HTTP backends (balancing in turn, health checks, routing around a backend that
//! stops answering, reload); cluster.json, status and down on real process groups; and the whole
//! `lab up` sequence with stand-in api nodes.

mod common;

use std::time::{Duration, Instant};

use common::{TestBackend, TestDir};
use lab::{Backend, ClusterFile, Haproxy, HaproxyOptions, InfraOptions, ProcessSpec, ProcessState, Signal};

fn get(url: &str) -> Result<String, String> {
    let answer = lab::http_get(url, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    if answer.status == 200 {
        Ok(answer.body)
    } else {
        Err(format!("status {}: {}", answer.status, answer.body))
    }
}

fn backend(b: &TestBackend) -> Backend {
    Backend::new(&b.name, b.addr)
}

#[test]
fn haproxy_balances_equal_loads_in_turn_and_routes_around_a_backend_that_stops_answering() {
    let dir = TestDir::new("haproxy");
    let a = TestBackend::start("a");
    let mut b = TestBackend::start("b");
    let opts = HaproxyOptions { die_with_parent: true, ..HaproxyOptions::default() };
    let check = opts.check_interval;
    let mut h = Haproxy::start(dir.path(), &[backend(&a), backend(&b)], &opts).expect("haproxy starts");
    h.wait_servers(&["a", "b"], Duration::from_secs(10)).expect("both backends pass /readyz");
    let pid = h.component().pid;

    // leastconn with equal loads (one request at a time): the servers take turns.
    let url = format!("{}/x", h.url());
    let seen: Vec<String> = (0..10).map(|_| get(&url).expect("request")).collect();
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "not in turn: {seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "a").count(), 5, "{seen:?}");

    // Not ready (503 on /readyz, still answering): out after `fall` checks, back after `rise`.
    b.set_ready(false);
    let t = Instant::now();
    h.wait_servers(&["a"], Duration::from_secs(5)).expect("b taken out");
    let out_after = t.elapsed();
    assert!((0..6).all(|_| get(&url).as_deref() == Ok("a")));
    b.set_ready(true);
    h.wait_servers(&["a", "b"], Duration::from_secs(5)).expect("b back");
    eprintln!("not ready: out after {out_after:?} (check every {check:?}, fall 2)");

    // Stops answering (listener closed, connections refused): no request fails — a refused
    // connection is redispatched — and it is out within the check interval × fall.
    b.close();
    let t = Instant::now();
    let mut answers = Vec::new();
    while h.server_states().expect("stats").iter().any(|s| s.name == "b" && s.in_rotation()) {
        answers.push(get(&url));
        assert!(t.elapsed() < Duration::from_secs(5), "b still up after 5 s");
    }
    let down_after = t.elapsed();
    eprintln!("closed: out after {down_after:?}; {} requests meanwhile, all answered", answers.len());
    assert!(answers.iter().all(|r| r.as_deref() == Ok("a")), "{answers:?}");
    // `fall` failed checks after up to one interval of phase, plus the loop's own round (a
    // request and a stats read): that took a few hundred ms in a loaded CI run (2.004 s against
    // the 2 s this bound once was).
    assert!(down_after <= check * (opts.fall + 1) + Duration::from_secs(1), "took {down_after:?}");
    assert!((0..6).all(|_| get(&url).as_deref() == Ok("a")));

    // Reload with another backend set: same master pid, same port, new servers.
    let c = TestBackend::start("c");
    h.reload(&[backend(&a), backend(&c)]).expect("reload");
    assert_eq!(h.component().pid, pid);
    h.wait_servers(&["a", "c"], Duration::from_secs(5)).expect("a and c up");
    let seen: Vec<String> = (0..4).map(|_| get(&url).expect("request")).collect();
    assert!(seen.contains(&"c".to_string()) && seen.contains(&"a".to_string()), "{seen:?}");
    let metrics = get(&h.metrics_url().expect("stats on")).expect("prometheus exporter");
    assert!(metrics.contains("haproxy_server_"), "no server metrics");

    // A config HAProxy refuses leaves the running one alone.
    let bad = Backend::new("bad name", c.addr);
    assert!(h.reload(&[bad]).is_err());
    assert_eq!(get(&url).map(|s| s == "a" || s == "c"), Ok(true));

    let component = h.component().clone();
    h.stop().expect("stop");
    assert!(lab::group_members(&component).is_empty(), "master and workers gone");
}

#[test]
fn down_stops_every_process_group_even_stopped_and_term_ignoring_ones() {
    let dir = TestDir::new("down");
    let sh = lab::find_program("sh").expect("sh");
    let start = |name: &str, script: &str| {
        lab::start_process(dir.path(), &ProcessSpec::new("test", name, &sh).args(["-c", script]).die_with_parent(true))
            .expect("start")
    };
    let plain = start("plain", "exec sleep 600");
    let family = start("family", "sleep 600 & sleep 600 & echo started; wait");
    let stubborn = start("stubborn", "trap '' TERM; sleep 600");
    let stopped = start("stopped", "exec sleep 600");
    let mut file = ClusterFile::new(dir.path());
    for c in [&plain, &family, &stubborn, &stopped] {
        file.upsert(c.clone());
    }
    file.fields.insert("admin_token".into(), "secret".into());
    file.write().expect("cluster.json");
    // Restarted processes are not tied to this thread: stop everything even if an assert fails.
    let _guard = lab::LabGuard::new(dir.path());
    let mode = std::fs::metadata(ClusterFile::path(dir.path()))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
    assert_eq!(mode.expect("stat") & 0o777, 0o600);
    assert_eq!(ClusterFile::read(dir.path()).expect("read back"), file);

    lab::poll_until("the family's children", Duration::from_secs(5), Duration::from_millis(10), || {
        let n = lab::group_members(&family).len();
        if n == 3 {
            Ok(())
        } else {
            Err(format!("{n} members"))
        }
    })
    .expect("sh and two sleeps in one group");
    lab::poll_until("the log line", Duration::from_secs(5), Duration::from_millis(10), || {
        if lab::log_tail(&family.log, 1) == "started" {
            Ok(())
        } else {
            Err(lab::log_tail(&family.log, 1))
        }
    })
    .expect("stdout goes to DIR/logs/family.log");

    assert!(lab::signal_component(dir.path(), "stopped", Signal::Stop).expect("SIGSTOP"));
    lab::poll_until("stopped", Duration::from_secs(2), Duration::from_millis(10), || match stopped.state() {
        ProcessState::Stopped => Ok(()),
        s => Err(format!("{s:?}")),
    })
    .expect("stopped");

    // Restart replaces the pid in cluster.json.
    let restarted = lab::restart_component(dir.path(), "plain").expect("restart");
    assert_ne!(restarted.pid, plain.pid);
    assert_eq!(plain.state(), ProcessState::Gone);
    assert_eq!(ClusterFile::read(dir.path()).expect("read").component("plain"), Some(&restarted));

    let statuses = lab::status(dir.path()).expect("status");
    let state = |name: &str| statuses.iter().find(|s| s.name == name).map(|s| s.state);
    assert_eq!(state("plain"), Some(ProcessState::Running));
    assert_eq!(state("stopped"), Some(ProcessState::Stopped));
    let table = lab::format_status(&statuses);
    assert!(table.starts_with("NAME") && table.contains("stubborn"), "{table}");

    let t = Instant::now();
    let report = lab::down(dir.path(), Duration::from_millis(300)).expect("down leaves nothing");
    eprintln!("down in {:?}: {report:?}", t.elapsed());
    assert_eq!(report.stopped.len(), 4);
    for c in [&restarted, &family, &stubborn, &stopped] {
        assert!(lab::group_members(c).is_empty(), "{} left", c.name);
    }
    assert!(lab::status(dir.path()).expect("status").iter().all(|s| s.state == ProcessState::Gone));
    // A second down finds nothing to do.
    assert_eq!(lab::down(dir.path(), Duration::from_millis(300)).expect("down").already_gone.len(), 4);
}

#[test]
fn lab_up_sequence_with_stand_in_api_nodes_then_down() {
    let dir = TestDir::new("up");
    let mut opts = InfraOptions::for_tests();
    // Stand-in api nodes: single nats-server processes, whose monitoring port answers /healthz.
    opts.haproxy.check_path = "/healthz".into();
    let t = Instant::now();
    let mut infra = lab::up_infrastructure(dir.path(), &opts).expect("infrastructure up");
    eprintln!("NATS up in {:?}", t.elapsed());
    assert!(ClusterFile::read(dir.path()).expect("written early").components.len() == 3);
    let nats_bin = lab::find_program("nats-server").expect("nats-server");
    let mut backends = Vec::new();
    for i in 0..2 {
        let ports = lab::free_ports(2).expect("ports");
        let name = format!("api-{i}");
        let http = format!("http://127.0.0.1:{}", ports[1]);
        infra
            .start_process(
                ProcessSpec::new("api", &name, &nats_bin)
                    .args(["-a", "127.0.0.1", "-p", &ports[0].to_string(), "-m", &ports[1].to_string()])
                    .url("http", &http)
                    .health(format!("{http}/healthz")),
            )
            .expect("start api");
        lab::wait_for_http_ok(&format!("{http}/healthz"), Duration::from_secs(10)).expect("api ready");
        backends.push(Backend::new(name, ([127, 0, 0, 1], ports[1]).into()));
    }
    let url = infra.add_haproxy(&backends).expect("haproxy over the api nodes").url();
    // The lab runs TLS: HAProxy serves https with a certificate of the lab's CA (its stand-in
    // backends here are plain HTTP).
    assert!(url.starts_with("https://"), "{url}");
    let ca = infra.ca_file().map(std::path::Path::to_path_buf);
    let through = lab::http_get_trusting(&format!("{url}/healthz"), Duration::from_secs(2), ca.as_deref());
    assert_eq!(through.expect("through haproxy").status, 200);
    // A second `up` in the same DIR is refused while this one runs.
    assert!(matches!(lab::up_infrastructure(dir.path(), &opts), Err(lab::LabError::AlreadyRunning { .. })));

    let mut fields = serde_json::Map::new();
    fields.insert("admin_token".into(), "t0ken".into());
    let file = infra.finish(fields).expect("cluster.json");
    eprintln!("lab up in {:?}", t.elapsed());
    assert!(file.complete);
    let roles: Vec<&str> = file.components.iter().map(|c| c.role.as_str()).collect();
    assert_eq!(roles, ["nats", "nats", "nats", "api", "api", "haproxy"]);
    assert_eq!(file.fields.get("url").and_then(|v| v.as_str()), Some(url.as_str()));
    assert_eq!(file.fields.get("nats_urls").and_then(|v| v.as_array()).map(Vec::len), Some(3));

    // `finish` detached everything: still running; `down` (as another process would) stops it.
    let guard = lab::LabGuard::new(dir.path());
    let statuses = lab::status(dir.path()).expect("status");
    assert!(statuses.iter().all(|s| s.state == ProcessState::Running && s.healthy != Some(false)), "{statuses:?}");
    let nats = lab::NatsCluster::from_components(&file.components).expect("rebuild from cluster.json");
    assert!(nats.meta_leader().expect("jsz").is_some());
    lab::down(dir.path(), Duration::from_secs(3)).expect("down");
    assert!(file.components.iter().all(|c| lab::group_members(c).is_empty()));
    drop(guard);
}
