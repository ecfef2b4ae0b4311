//! `queue::connect` with a CA against real nats-server processes: it connects over TLS to a
//! server whose certificate that CA signed, and never to a plaintext server or one whose
//! certificate another CA signed (no fallback).

use std::path::Path;
use std::time::Duration;

use async_nats::connection::State;
use lab::{LabCa, NatsCluster, NatsOptions, NatsTls};

fn temp_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("queue-tls-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn one_node(dir: &Path, tls: Option<NatsTls>) -> NatsCluster {
    let opts = NatsOptions { nodes: 1, die_with_parent: true, tls, ..NatsOptions::default() };
    NatsCluster::start(dir, &opts).expect("a one-node NATS server")
}

/// Whether a client connected by `queue::connect` reaches the Connected state within 3 s.
async fn connects(urls: &[String], ca: Option<&Path>) -> bool {
    let client = queue::connect(urls, "tls-test", None, ca).await.expect("the client (it retries in the background)");
    for _ in 0..30 {
        if client.connection_state() == State::Connected {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn with_a_ca_the_client_speaks_only_tls_to_servers_that_ca_signed() {
    let dir = temp_dir("client");
    let ca = LabCa::create(&dir.join("ca"), "test CA").expect("CA");
    let other = LabCa::create(&dir.join("other"), "another CA").expect("another CA");
    let node_certs = vec![ca.issue("nats-0").expect("certificate")];
    let secure = one_node(&dir.join("tls"), Some(NatsTls { ca_file: ca.ca_file().to_path_buf(), node_certs }));
    let plain = one_node(&dir.join("plain"), None);

    assert!(connects(&secure.client_urls(), Some(ca.ca_file())).await, "TLS to a server the CA signed");
    assert!(!connects(&secure.client_urls(), Some(other.ca_file())).await, "a certificate of another CA");
    assert!(connects(&plain.client_urls(), None).await, "plaintext without a CA (the control)");
    assert!(!connects(&plain.client_urls(), Some(ca.ca_file())).await, "plaintext although a CA is set");
    drop((secure, plain));
    let _ = std::fs::remove_dir_all(&dir);
}
