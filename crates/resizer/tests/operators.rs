//! Who may use the admin API, against the real binary: weak tokens stop the start, a read-only
//! token cannot write, wrong tokens are throttled, named operators come from a file and are revoked
//! by deleting their entry.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{DevServer, TempDir, BIN};
use serde_json::json;

const READ_TOKEN: &str = "rszr_ReadOnly0123456789abcdefghijklmn";

/// Runs `resizer <args>` that must refuse to start: its exit status and stderr, within 20 s.
fn refused_start(args: &[&str]) -> (bool, String) {
    let dir = TempDir::new();
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(&dir.0)
        .env_remove("RESIZER_API_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start resizer");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`resizer {}` still running after 20 s: it should have refused to start", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn weak_or_misplaced_admin_tokens_stop_the_start_with_a_clear_message() {
    let placeholder = "api.admin_token=change-me-to-a-long-random-string";
    for (args, expected) in [
        (vec!["dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--set", placeholder], "placeholder"),
        (vec!["dev", "--listen", "127.0.0.1:0", "--set", "api.admin_token=short-but-random-Xy7"], "32 characters"),
        (vec!["identity", "--set", placeholder, "--set", "queue.nats_urls=nats://127.0.0.1:1"], "placeholder"),
        (vec!["identity", "--set", "queue.nats_urls=nats://127.0.0.1:1"], "api.admin_token"),
        // An api node must not hold the write token at all, however strong.
        (
            vec!["api", "--set", "api.admin_token=rsza_Strong0123456789abcdefghijklmnop"],
            "an api node takes no api.admin_token",
        ),
        (vec!["api", "--set", "api.read_token=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"], "api.read_token"),
    ] {
        let (success, stderr) = refused_start(&args);
        assert!(!success, "`resizer {}` started", args.join(" "));
        assert!(stderr.contains(expected), "`resizer {}`: {stderr}", args.join(" "));
    }
}

#[test]
fn a_read_only_token_reads_but_cannot_write() -> anyhow::Result<()> {
    let server = DevServer::start(&[&format!("api.read_token={READ_TOKEN}")])?;
    let r = server.admin_with_token("GET", "/v1/tenants", None, READ_TOKEN);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = server.admin_with_token("POST", "/v1/tenants", Some(json!({ "name": "by-reader" })), READ_TOKEN);
    assert_eq!((r.status, r.problem_type()), (403, "admin-forbidden".to_owned()));
    assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("read-only")), "{}", r.json());
    // The full token still writes.
    assert_eq!(server.admin("POST", "/v1/tenants", Some(json!({ "name": "by-admin" }))).status, 201);
    Ok(())
}

#[test]
fn a_hundred_wrong_admin_tokens_are_throttled() -> anyhow::Result<()> {
    let server = DevServer::start(&[])?;
    let mut statuses = Vec::new();
    for i in 0..100 {
        let r = server.admin_with_token("GET", "/v1/tenants", None, &format!("rsza_guess{i:032}"));
        if r.status == 429 {
            assert_eq!(r.problem_type(), "admin-throttled");
            assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| (1..=6).contains(&s))));
        }
        statuses.push(r.status);
    }
    let unauthorized = statuses.iter().filter(|&&s| s == 401).count();
    let throttled = statuses.iter().filter(|&&s| s == 429).count();
    // Ten guesses, then at most one more per 6 s of the run (it takes well under 6 s).
    assert!((10..=12).contains(&unauthorized) && unauthorized + throttled == 100, "{statuses:?}");
    assert!(statuses[..10].iter().all(|&s| s == 401), "{statuses:?}");
    // While throttled, no token is looked at, the right one neither: a guesser learns nothing.
    let r = server.admin("GET", "/v1/tenants", None);
    assert_eq!(r.status, 429);
    // The public API is not affected.
    assert_eq!(server.get("/healthz").status, 200);
    Ok(())
}

#[test]
fn named_operators_come_from_a_file_and_deleting_an_entry_revokes_the_token() -> anyhow::Result<()> {
    let dir = TempDir::new();
    let file = dir.0.join("operators.toml");
    // `resizer admin new-token` prints the token and the entry to paste.
    let out = Command::new(BIN).args(["admin", "new-token", "--name", "alice", "--access", "admin"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout)?;
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no token printed: {printed}"))
        .to_owned();
    let entry: String =
        printed.lines().skip_while(|l| !l.starts_with("[[operator]]")).map(|l| format!("{l}\n")).collect();
    assert!(!entry.contains(&token), "the entry holds only the hash: {entry}");
    std::fs::write(&file, &entry)?;
    let server = DevServer::start(&[&format!("api.operators_file={}", file.display())])?;
    let r = server.admin_with_token("POST", "/v1/tenants", Some(json!({ "name": "by-alice" })), &token);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    std::fs::write(&file, "operator = []\n")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = server.admin_with_token("GET", "/v1/tenants", None, &token);
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200);
        assert!(Instant::now() < deadline, "alice's token still works 5 s after her entry was deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    // A broken file keeps the entries read before rather than locking every operator out.
    std::fs::write(&file, "[[operator]\nname = ")?;
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(server.admin("GET", "/v1/tenants", None).status, 200);
    Ok(())
}
