//! A real 3-node nats-server JetStream cluster on free ports: meta leader election, kill -9 of
//! the leader, a new leader, restart and rejoin, SIGSTOP/SIGCONT. Everything the test starts is
//! stopped when the cluster handle drops (also on panic) and dies with the test's thread.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::TestDir;
use lab::{NatsAuth, NatsCluster, NatsOptions, ProcessState, LEADER_ELECTION_BOUND};

fn options() -> NatsOptions {
    NatsOptions { die_with_parent: true, ..NatsOptions::default() }
}

/// Create a 3-replica work-queue stream with the bare NATS protocol (JetStream API request
/// `$JS.API.STREAM.CREATE.<name>`): the lab itself speaks only HTTP to nats-server.
fn create_stream(client_port: u16, name: &str) -> Result<String, String> {
    create_stream_as(client_port, name, None)
}

/// [`create_stream`], logging in with `login` = (user, password) if given.
fn create_stream_as(client_port: u16, name: &str, login: Option<(&str, &str)>) -> Result<String, String> {
    let stream = TcpStream::connect(("127.0.0.1", client_port)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?; // INFO {...}
    let config = serde_json::json!({
        "name": name, "subjects": [format!("{}.>", name.to_lowercase())],
        "num_replicas": 3, "retention": "workqueue", "storage": "file",
    })
    .to_string();
    let mut connect = serde_json::json!({"verbose": false, "pedantic": false});
    if let Some((user, pass)) = login {
        connect["user"] = user.into();
        connect["pass"] = pass.into();
    }
    let request = format!(
        "CONNECT {connect}\r\nSUB _INBOX.lab 1\r\nPUB $JS.API.STREAM.CREATE.{name} _INBOX.lab {}\r\n{config}\r\n",
        config.len()
    );
    writer.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| format!("reading the answer: {e}"))?;
        if line.starts_with("PING") {
            writer.write_all(b"PONG\r\n").map_err(|e| e.to_string())?;
        } else if line.starts_with("-ERR") {
            return Err(line.trim().to_string());
        } else if line.starts_with("MSG") {
            let size: usize = line.split_whitespace().last().and_then(|s| s.parse().ok()).ok_or("MSG size")?;
            let mut payload = vec![0u8; size + 2];
            reader.read_exact(&mut payload).map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&payload[..size]).into_owned();
            return if text.contains("\"error\"") { Err(text) } else { Ok(text) };
        }
    }
}

#[test]
fn three_nodes_elect_a_new_leader_after_kill_9_and_the_killed_node_rejoins() {
    let dir = TestDir::new("nats");
    let started = Instant::now();
    let mut cluster = NatsCluster::start(dir.path(), &options()).expect("3-node cluster becomes healthy");
    eprintln!("cluster healthy after {:?}", started.elapsed());

    // Files: one config per node in DIR/nats-<i>/, logs in DIR/logs/.
    for node in cluster.nodes() {
        let config = std::fs::read_to_string(&node.config).expect("config written");
        assert!(config.contains(&format!("server_name: \"{}\"", node.server_name)), "{config}");
        assert!(config.contains(&format!("listen: \"127.0.0.1:{}\"", node.client_port)), "{config}");
        assert_eq!(config.matches("nats-route://").count(), 2, "{config}");
        assert!(node.component.log.starts_with(dir.path().join("logs")));
        assert_eq!(node.routez().expect("routez").peers(), 2);
        // The lab's Go settings reach each server (unless this test's environment sets its own).
        let environ = std::fs::read(format!("/proc/{}/environ", node.component.pid)).expect("environ");
        let environ: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if std::env::var_os("GOGC").is_none() {
            assert!(environ.contains(&&b"GOGC=400"[..]), "no GOGC=400 in {}'s environment", node.server_name);
        }
        if std::env::var_os("GOMAXPROCS").is_none() {
            assert!(environ.iter().any(|v| v.starts_with(b"GOMAXPROCS=")), "{}", node.server_name);
        }
    }
    let leader = cluster.meta_leader().expect("jsz").expect("an agreed meta leader");
    let leader_index = cluster.index_of(&leader).expect("the leader is one of ours");

    // A replicated stream has a leader too (what the job stream's fault test kills).
    let created =
        lab::poll_until("stream JOBS to be created", Duration::from_secs(10), Duration::from_millis(200), || {
            create_stream(cluster.nodes()[0].client_port, "JOBS")
        })
        .expect("stream created");
    assert!(created.contains("\"num_replicas\":3"), "{created}");
    let stream_leader = lab::poll_until("a JOBS leader", Duration::from_secs(10), Duration::from_millis(100), || {
        cluster.stream_leader("JOBS").map_err(|e| e.to_string())?.ok_or_else(|| "none yet".to_string())
    })
    .expect("stream leader agreed");
    eprintln!("meta leader {leader}, JOBS leader {stream_leader}");

    // kill -9 the meta leader.
    cluster.kill(leader_index).expect("kill -9");
    assert_eq!(cluster.node(leader_index).expect("node").state(), ProcessState::Gone);
    let (new_leader, took) =
        cluster.wait_new_meta_leader(&leader, LEADER_ELECTION_BOUND).expect("a new meta leader is elected");
    eprintln!("kill -9 {leader}: new meta leader {new_leader} after {took:?}");
    assert_ne!(new_leader, leader);
    if stream_leader == leader {
        let (new_stream_leader, took) = cluster
            .wait_new_stream_leader("JOBS", &stream_leader, LEADER_ELECTION_BOUND)
            .expect("a new stream leader is elected");
        eprintln!("JOBS leader moved to {new_stream_leader} after {took:?} since the meta leader's election");
    }

    // Restart it with the same config and store: it rejoins (routes to both peers, current).
    let old_pid = cluster.node(leader_index).expect("node").component.pid;
    let restarted = cluster.restart(leader_index).expect("restart");
    assert_ne!(restarted.pid, old_pid);
    let t = Instant::now();
    let leader_now = cluster.wait_healthy(Duration::from_secs(30)).expect("the restarted node rejoins");
    eprintln!("{leader} rejoined after {:?}; meta leader {leader_now}", t.elapsed());
    for node in cluster.nodes() {
        assert_eq!(node.routez().expect("routez").peers(), 2, "{} routes", node.server_name);
        assert_eq!(node.meta_leader_seen().expect("jsz").as_deref(), Some(leader_now.as_str()));
    }
    let meta = cluster.node(cluster.index_of(&leader_now).expect("ours")).expect("node").jsz("").expect("jsz");
    let peers = meta.meta_cluster.expect("meta cluster").replicas;
    assert!(peers.iter().any(|p| p.name == leader && p.current), "{peers:?}");

    // SIGSTOP a follower: stopped, answers nothing; SIGCONT: healthy again.
    let follower = (0..3).find(|&i| cluster.nodes()[i].server_name != leader_now).expect("a follower");
    cluster.stop(follower).expect("SIGSTOP");
    let node = cluster.node(follower).expect("node");
    lab::poll_until("stopped state", Duration::from_secs(2), Duration::from_millis(10), || match node.state() {
        ProcessState::Stopped => Ok(()),
        s => Err(format!("{s:?}")),
    })
    .expect("the follower is stopped");
    assert!(node.healthz().is_err(), "a stopped node answers nothing");
    cluster.cont(follower).expect("SIGCONT");
    assert_eq!(cluster.node(follower).expect("node").state(), ProcessState::Running);
    cluster.wait_healthy(Duration::from_secs(30)).expect("healthy after SIGCONT");
    eprintln!("whole test {:?}", started.elapsed());
}

#[test]
fn with_auth_a_client_must_log_in_and_the_urls_carry_the_login() {
    let dir = TestDir::new("nats-auth");
    let auth = NatsAuth { user: "resizer".into(), password: "p@ss word".into() };
    let opts = NatsOptions { auth: Some(auth), ..options() };
    let cluster = NatsCluster::start(dir.path(), &opts).expect("three nodes with auth");
    let port = cluster.nodes()[0].client_port;
    assert_eq!(cluster.client_urls()[0], format!("nats://resizer:p%40ss%20word@127.0.0.1:{port}"));
    let refused = create_stream_as(port, "NOLOGIN", None).expect_err("no login");
    assert!(refused.to_lowercase().contains("authorization violation"), "{refused}");
    let refused = create_stream_as(port, "BADLOGIN", Some(("resizer", "wrong"))).expect_err("wrong password");
    assert!(refused.to_lowercase().contains("authorization violation"), "{refused}");
    let created =
        lab::poll_until("stream created with the login", Duration::from_secs(10), Duration::from_millis(200), || {
            create_stream_as(port, "LOGIN", Some(("resizer", "p@ss word")))
        })
        .expect("created");
    assert!(created.contains("\"name\":\"LOGIN\""), "{created}");
    let mode = std::fs::metadata(&cluster.nodes()[0].config).expect("config").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the config holds the password");
}

#[test]
fn a_dead_node_is_reported_with_its_log() {
    let dir = TestDir::new("nats-bad");
    // Occupy a port, then let a node try a config that binds it: nats-server exits at once.
    let mut cluster = NatsCluster::launch(dir.path(), &NatsOptions { nodes: 1, ..options() }).expect("one node");
    cluster.wait_healthy(Duration::from_secs(20)).expect("single node healthy");
    assert_eq!(cluster.meta_leader().expect("jsz").as_deref(), Some("nats-0"));
    let busy = cluster.nodes()[0].client_port;
    cluster.kill(0).expect("kill");
    // The killed server's socket can outlive the kill by a moment (seen once in CI): retry.
    let started = std::time::Instant::now();
    let _holder = loop {
        match std::net::TcpListener::bind(("127.0.0.1", busy)) {
            Ok(listener) => break listener,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                eprintln!("port {busy} not free yet ({e}); retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("hold the port {busy}: {e}"),
        }
    };
    let err = cluster.restart(0).and_then(|_| cluster.wait_healthy(Duration::from_secs(20))).expect_err("cannot bind");
    let text = err.to_string();
    assert!(text.contains("nats-0") && text.contains("exited"), "{text}");
}
