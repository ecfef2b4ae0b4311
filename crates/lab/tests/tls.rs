//! TLS on the lab's NATS cluster, against real nats-server processes: a plaintext client is
//! never served, a client trusting the lab's CA is, one trusting another CA refuses the servers'
//! certificates, and a server that knows the cluster port but not the route login cannot join.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::TestDir;
use lab::{LabCa, NatsAuth, NatsCluster, NatsOptions, NatsTls, ProcessSpec, LOOPBACK, NATS_ROLE};

fn tls_cluster(dir: &Path, ca: &LabCa) -> NatsCluster {
    let node_certs = (0..3).map(|i| ca.issue(&format!("nats-{i}")).expect("node certificate")).collect();
    let opts = NatsOptions {
        die_with_parent: true,
        tls: Some(NatsTls { ca_file: ca.ca_file().to_path_buf(), node_certs }),
        route_auth: Some(NatsAuth { user: "route".into(), password: "route-secret".into() }),
        ..NatsOptions::default()
    };
    NatsCluster::start(dir, &opts).expect("a TLS cluster with a route login becomes healthy")
}

/// Connects to a NATS client port, reads the server's INFO line, and returns it with the socket.
fn info(port: u16) -> (String, TcpStream) {
    let stream = TcpStream::connect((LOOPBACK, port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("INFO");
    (line, stream)
}

/// CONNECT and PING in plaintext: what the server answers before it closes (never PONG).
fn plaintext_ping(port: u16) -> String {
    let (info, mut stream) = info(port);
    assert!(info.contains("\"tls_required\":true"), "{info}");
    // A write may already fail: the server hangs up on bytes that are no TLS handshake.
    let _ = stream.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// CONNECT and PING over TLS trusting `ca_file` (after INFO, as NATS upgrades): the answer, or
/// the handshake's error.
fn tls_ping(port: u16, ca_file: &Path) -> Result<String, String> {
    let (_, stream) = info(port);
    let config = tls::client_config(ca_file).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(LOOPBACK.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::clone(&config), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    tls.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n").map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(tls);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.is_empty() || line.starts_with("PONG") || line.starts_with("-ERR") {
            return Ok(line.trim().to_string());
        }
    }
}

#[test]
fn nats_serves_only_tls_clients_that_trust_its_ca() {
    let dir = TestDir::new("nats-tls");
    let ca = LabCa::create(&dir.path().join("tls"), "test CA").expect("CA");
    let cluster = tls_cluster(dir.path(), &ca);
    let other = LabCa::create(&dir.path().join("other"), "another CA").expect("another CA");
    for node in cluster.nodes() {
        let answer = plaintext_ping(node.client_port);
        assert!(!answer.contains("PONG"), "{}: a plaintext client was served: {answer}", node.server_name);
        assert_eq!(tls_ping(node.client_port, ca.ca_file()), Ok("PONG".to_string()), "{}", node.server_name);
        let refused = tls_ping(node.client_port, other.ca_file()).expect_err("a certificate of another CA");
        assert!(refused.to_lowercase().contains("unknownissuer"), "{}: {refused}", node.server_name);
    }
}

#[test]
fn a_server_without_the_route_login_cannot_join_the_cluster() {
    let dir = TestDir::new("nats-route-login");
    let ca = LabCa::create(&dir.path().join("tls"), "test CA").expect("CA");
    let cluster = tls_cluster(dir.path(), &ca);
    // A fourth server with a good certificate of the same CA and the cluster's name and routes,
    // but no route login.
    let ports = lab::free_ports(3).expect("ports");
    let node_dir = dir.path().join("intruder");
    std::fs::create_dir_all(&node_dir).expect("dir");
    let cert = ca.issue("intruder").expect("certificate");
    let routes: Vec<std::net::SocketAddr> =
        cluster.nodes().iter().map(|n| std::net::SocketAddr::from((n.addr, n.cluster_port))).collect();
    let opts = NatsOptions { route_auth: None, cluster_name: cluster.cluster_name.clone(), ..NatsOptions::default() };
    let config = lab::render_nats_config(
        "intruder",
        &node_dir,
        lab::LOOPBACK,
        ports[0],
        ports[1],
        ports[2],
        &routes,
        Some((ca.ca_file(), &cert)),
        &opts,
    );
    let config_file = node_dir.join("nats.conf");
    std::fs::write(&config_file, config).expect("config");
    let binary = lab::find_program(lab::NATS_SERVER.program).expect("nats-server");
    let intruder = lab::start_process(
        dir.path(),
        &ProcessSpec::new(NATS_ROLE, "intruder", binary)
            .args(["-c".to_string(), config_file.display().to_string()])
            .cwd(&node_dir)
            .die_with_parent(true),
    )
    .expect("the fourth server starts");
    let mut stop = lab::ProcessGuard::new();
    stop.push(intruder.clone());
    let monitor = format!("http://{LOOPBACK}:{}/routez", ports[2]);
    lab::wait_for_http_ok(&monitor, Duration::from_secs(10)).expect("its monitoring port");
    // Its route attempts are retried every second or so: give it several.
    std::thread::sleep(Duration::from_secs(4));
    let routez: lab::Routez = lab::http_get_json(&monitor, Duration::from_secs(1)).expect("routez");
    assert_eq!(routez.peers(), 0, "the server without the route login has routes: {routez:?}");
    for node in cluster.nodes() {
        assert_eq!(node.routez().expect("routez").peers(), 2, "{} took a route from it", node.server_name);
    }
    let logs: String =
        cluster.nodes().iter().map(|n| std::fs::read_to_string(&n.component.log).unwrap_or_default()).collect();
    assert!(logs.contains("Authorization Violation") || logs.contains("authentication error"), "{logs}");
    assert!(cluster.health_problem().is_ok(), "{:?}", cluster.health_problem());
}
