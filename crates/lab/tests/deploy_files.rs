//! The deployment files shipped in `deploy/` pass the servers' own configuration checks: a
//! typo there would otherwise first show on an operator's machine.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::TestDir;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

#[test]
fn the_shipped_haproxy_config_is_valid_without_warnings() {
    let (_, haproxy) = lab::check_binaries().expect("nats-server and haproxy installed (scripts/test.sh does it)");
    let config = deploy_dir().join("haproxy.cfg");
    // HAProxy loads the certificate files when it checks: made here, in the directory the
    // config takes from RESIZER_TLS_DIR (as an operator makes them: docs/tls.md).
    let dir = TestDir::new("deploy-haproxy");
    let ca = lab::LabCa::create(dir.path(), "deploy test CA").expect("CA");
    let cert = ca.issue("resizer").expect("certificate");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("PEM");
    std::fs::write(dir.path().join("resizer.pem"), read(&cert.cert) + &read(&cert.key)).expect("bundle");
    // -dW: a warning fails the check too.
    let out = Command::new(haproxy)
        .arg("-dW")
        .arg("-c")
        .arg("-f")
        .arg(&config)
        .env("RESIZER_TLS_DIR", dir.path())
        .output()
        .expect("run haproxy -c");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}: {text}", config.display());
    let config = std::fs::read_to_string(&config).expect("haproxy.cfg");
    assert!(!config.contains(":8082"), "the api nodes' internal port must not be behind the load balancer");
    assert!(config.contains("option httpchk GET /readyz"), "api nodes are checked on /readyz");
    assert!(config.contains("http-request redirect scheme https code 308"), "plain HTTP only redirects");
    let servers: Vec<&str> = config.lines().filter(|l| l.trim_start().starts_with("server ")).collect();
    assert!(servers.iter().all(|l| l.contains(" ssl verify required ca-file ")), "{servers:?}");
    // HAProxy's own errors answer problem+json as in the lab, where they are tested.
    for line in lab::PROBLEM_ERRORS.lines().chain(lab::METRICS_REFUSAL.lines()) {
        assert!(config.lines().any(|l| l == line), "{}: missing `{line}`", deploy_dir().join("haproxy.cfg").display());
    }
}

#[test]
fn the_shipped_nats_configs_are_valid_and_take_a_login() {
    let (nats, _) = lab::check_binaries().expect("nats-server and haproxy installed (scripts/test.sh does it)");
    // nats-server -t loads the certificates and the included routes.conf: made here, beside a
    // copy of each config, as an operator makes them (docs/tls.md).
    let dir = TestDir::new("deploy-nats");
    let ca = lab::LabCa::create(&dir.path().join("tls"), "deploy test CA").expect("CA");
    for i in 1..=3 {
        let shipped = deploy_dir().join(format!("nats/nats-{i}.conf"));
        let text = std::fs::read_to_string(&shipped).expect("nats conf");
        let node_dir = dir.path().join(format!("nats-{i}"));
        std::fs::create_dir_all(&node_dir).expect("dir");
        let config = node_dir.join("nats.conf");
        std::fs::write(&config, &text).expect("copy");
        let routes: Vec<String> =
            (1..=3).filter(|&j| j != i).map(|j| format!("\"nats-route://route:route-pw@10.0.0.1{j}:6222\"")).collect();
        std::fs::write(node_dir.join("routes.conf"), format!("routes: [ {} ]\n", routes.join(", "))).expect("routes");
        let cert = ca.issue(&format!("nats-{i}")).expect("certificate");
        let out = Command::new(&nats)
            .args(["-t", "-c"])
            .arg(&config)
            .env("RESIZER_NATS_PASSWORD", "test-password")
            .env("RESIZER_NATS_API_PASSWORD", "test-api-password")
            .env("RESIZER_NATS_WORKER_PASSWORD", "test-worker-password")
            .env("RESIZER_NATS_IDENTITY_PASSWORD", "test-identity-password")
            .env("RESIZER_NATS_USAGE_PASSWORD", "test-usage-password")
            .env("RESIZER_NATS_RESIZER_IDENTITY_PASSWORD", "test-identity-operator-password")
            .env("RESIZER_NATS_ROUTE_PASSWORD", "route-pw")
            .env("RESIZER_NATS_TLS_CERT", &cert.cert)
            .env("RESIZER_NATS_TLS_KEY", &cert.key)
            .env("RESIZER_NATS_TLS_CA", ca.ca_file())
            .output()
            .expect("run nats-server -t");
        let out_text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && out_text.contains("is valid"), "{}: {out_text}", shipped.display());
        assert!(text.contains(&format!("server_name: \"nats-{i}\"")), "{}", shipped.display());
        assert!(text.contains("accounts {") && text.contains("$RESIZER_NATS_PASSWORD"), "{}", shipped.display());
        // TLS for clients and routes, and the routes' own login.
        assert_eq!(text.matches("cert_file: $RESIZER_NATS_TLS_CERT").count(), 2, "{}", shipped.display());
        assert!(text.contains("password: $RESIZER_NATS_ROUTE_PASSWORD"), "{}", shipped.display());
        assert!(text.contains("include \"routes.conf\""), "{}", shipped.display());
    }
}
