//! The deployment files shipped in `deploy/` pass the servers' own configuration checks: a
//! typo there would otherwise first show on an operator's machine.

use std::path::PathBuf;
use std::process::Command;

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

#[test]
fn the_shipped_haproxy_config_is_valid_without_warnings() {
    let (_, haproxy) = lab::check_binaries().expect("nats-server and haproxy installed (scripts/test.sh does it)");
    let config = deploy_dir().join("haproxy.cfg");
    // -dW: a warning fails the check too.
    let out = Command::new(haproxy).arg("-dW").arg("-c").arg("-f").arg(&config).output().expect("run haproxy -c");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}: {text}", config.display());
    let config = std::fs::read_to_string(&config).expect("haproxy.cfg");
    assert!(!config.contains(":8082"), "the api nodes' internal port must not be behind the load balancer");
    assert!(config.contains("option httpchk GET /readyz"), "api nodes are checked on /readyz");
    // HAProxy's own errors answer problem+json as in the lab, where they are tested.
    for line in lab::PROBLEM_ERRORS.lines() {
        assert!(config.lines().any(|l| l == line), "{}: missing `{line}`", deploy_dir().join("haproxy.cfg").display());
    }
}

#[test]
fn the_shipped_nats_configs_are_valid_and_take_a_login() {
    let (nats, _) = lab::check_binaries().expect("nats-server and haproxy installed (scripts/test.sh does it)");
    for i in 1..=3 {
        let config = deploy_dir().join(format!("nats/nats-{i}.conf"));
        let out = Command::new(&nats)
            .args(["-t", "-c"])
            .arg(&config)
            .env("RESIZER_NATS_PASSWORD", "test-password")
            .env("RESIZER_NATS_API_PASSWORD", "test-api-password")
            .env("RESIZER_NATS_WORKER_PASSWORD", "test-worker-password")
            .env("RESIZER_NATS_IDENTITY_PASSWORD", "test-identity-password")
            .env("RESIZER_NATS_USAGE_PASSWORD", "test-usage-password")
            .env("RESIZER_NATS_RESIZER_IDENTITY_PASSWORD", "test-identity-operator-password")
            .output()
            .expect("run nats-server -t");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("is valid"), "{}: {text}", config.display());
        let text = std::fs::read_to_string(&config).expect("nats conf");
        assert!(text.contains(&format!("server_name: \"nats-{i}\"")), "{}", config.display());
        assert!(text.contains("accounts {") && text.contains("$RESIZER_NATS_PASSWORD"), "{}", config.display());
        assert_eq!(text.matches("nats-route://").count(), 2, "{}: routes to the two others", config.display());
    }
}
