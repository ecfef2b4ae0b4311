//! `resizer dev` end to end: the real binary, real HTTP, every status of the contract.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{big_png, png, DevServer};
use serde_json::json;

type Result = anyhow::Result<()>;

/// Holds a worker for a while (a 20 MP decode and a 7 MP PNG encode), so a test can observe
/// the queue behind it.
const SLOW: &str = "width=3000";

#[test]
fn the_printed_curl_line_resizes_the_sample() -> Result {
    let server = DevServer::start(&[])?;
    let stdout = server.stdout();
    let line = stdout.lines().find(|l| l.trim_start().starts_with("curl ")).expect("a curl line");
    assert!(line.contains(&server.demo_key) && line.contains(&server.api_url), "{line}");
    // Run the line as printed, from the directory the server was started in.
    let out = std::process::Command::new("sh").arg("-c").arg(line.trim()).current_dir(&server.dir.0).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let thumb = std::fs::read(server.dir.0.join("thumb.jpg"))?;
    let probe = imaging_probe(&thumb);
    assert_eq!(probe, ("jpeg".to_owned(), 300, 200));

    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(server.data_dir().join("dev.json"))?.permissions());
    assert_eq!(mode & 0o777, 0o600, "dev.json holds secrets");
    Ok(())
}

/// The README's `curl` example, as written except for the port (tests never take a fixed one).
#[test]
fn the_readme_curl_example_works_as_written() -> Result {
    let server = DevServer::start(&[])?;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))?;
    let block = readme.split("```sh\n").nth(2).and_then(|b| b.split("```").next()).expect("README's second sh block");
    assert!(block.trim_start().starts_with("curl "), "{block}");
    let script = block.replace("http://127.0.0.1:8080", &server.api_url);
    let out = std::process::Command::new("sh").arg("-c").arg(&script).current_dir(&server.dir.0).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let thumb = std::fs::read(server.dir.0.join("thumb.jpg"))?;
    assert_eq!(imaging_probe(&thumb), ("jpeg".to_owned(), 300, 200));
    Ok(())
}

/// Format and size, read by the probe the service itself uses.
fn imaging_probe(bytes: &[u8]) -> (String, u32, u32) {
    match imaging::probe(bytes) {
        Ok(p) => (p.format.as_str().to_owned(), p.width, p.height),
        Err(e) => (format!("not an image: {e}"), 0, 0),
    }
}

#[test]
fn resize_answers_the_image_with_its_headers() -> Result {
    let server = DevServer::start(&[])?;
    let r = server.resize(
        "width=64&fit=cover&height=32",
        Some(&server.demo_key),
        &png(200, 100),
        &[("x-request-id", "abc-123")],
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("image/png"), "format follows the input");
    assert_eq!(r.header("x-image-width"), Some("64"));
    assert_eq!(r.header("x-image-height"), Some("32"));
    assert_eq!(r.header("x-request-id"), Some("abc-123"), "the client's id is kept");
    assert!(r.body.starts_with(b"\x89PNG"));

    let r = server.resize("width=64", Some(&server.demo_key), &png(200, 100), &[("accept", "image/webp,*/*")]);
    assert_eq!(r.header("content-type"), Some("image/webp"), "format=auto honours Accept");
    assert_eq!(r.header("vary"), Some("Accept"));
    assert!(r.header("x-request-id").is_some_and(|id| id.len() == 16), "a fresh id when none is sent");

    let r = server.resize("width=64&format=jpeg&quality=50", Some(&server.demo_key), &png(200, 100), &[]);
    assert_eq!((r.status, r.header("content-type")), (200, Some("image/jpeg")));
    Ok(())
}

#[test]
fn authentication_statuses_and_revocation_on_the_next_request() -> Result {
    let server = DevServer::start(&[])?;
    let image = png(40, 40);
    let r = server.resize("width=10", None, &image, &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (401, "missing-key"));
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = server.resize("width=10", Some("rsz_not-a-key"), &image, &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (401, "unknown-key"));
    // Well-formed, checksum valid, but issued by another store: unknown here.
    let foreign = identity::IdentityStore::open_in_memory()?;
    let tenant = foreign.create_tenant("elsewhere", identity::TenantLimits::default())?;
    let (_, foreign_key) = foreign.create_key(tenant.id, "x")?;
    let r = server.resize("width=10", Some(&foreign_key), &image, &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (401, "unknown-key"));

    let (_, key) = server.tenant_with_key("acme", json!({}));
    assert_eq!(server.resize("width=10", Some(&key), &image, &[]).status, 200);
    let key_id = &key[4..16];
    let revoked = server.admin("POST", &format!("/v1/keys/{key_id}/revoke"), None);
    assert_eq!(revoked.status, 200);
    assert!(revoked.json()["revoked_at"].is_string());
    let r = server.resize("width=10", Some(&key), &image, &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (403, "revoked-key"), "refused by the very next request");

    let (_, key2) = server.tenant_with_key("beta", json!({}));
    let suspended = server.admin("PATCH", "/v1/tenants/beta", Some(json!({ "status": "suspended" })));
    assert_eq!(suspended.status, 200);
    let r = server.resize("width=10", Some(&key2), &image, &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (403, "tenant-suspended"));
    assert_eq!(server.admin("PATCH", "/v1/tenants/beta", Some(json!({ "status": "active" }))).status, 200);
    assert_eq!(server.resize("width=10", Some(&key2), &image, &[]).status, 200);

    assert_eq!(server.metric(r#"resizer_auth_failures_total{reason="revoked"}"#), 1.0);
    assert_eq!(server.metric(r#"resizer_auth_failures_total{reason="missing"}"#), 1.0);
    Ok(())
}

#[test]
fn per_tenant_limits_answer_413_and_429() -> Result {
    let server = DevServer::start(&[])?;
    let (_, small_bodies) = server.tenant_with_key("bytes", json!({ "max_input_bytes": 2000 }));
    let r = server.resize("width=10", Some(&small_bodies), &vec![0u8; 5000], &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (413, "too-large"));

    let (_, few_pixels) = server.tenant_with_key("pixels", json!({ "max_input_pixels": 100 }));
    let r = server.resize("width=10", Some(&few_pixels), &png(20, 20), &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (413, "too-large"));
    assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("400 pixels")), "{}", r.json());
    assert_eq!(server.resize("width=5", Some(&few_pixels), &png(10, 10), &[]).status, 200);

    let (_, slow) = server.tenant_with_key("slow", json!({ "rate_per_sec": 0.5, "burst": 1 }));
    assert_eq!(server.resize("width=5", Some(&slow), &png(10, 10), &[]).status, 200);
    let r = server.resize("width=5", Some(&slow), &png(10, 10), &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (429, "rate-limited"));
    assert_eq!(r.header("retry-after"), Some("2"), "1 token at 0.5/s: about 2 s, rounded up");
    let ms: u64 = r.header("retry-after-ms").expect("precise wait").parse()?;
    assert!((1000..=2000).contains(&ms), "{ms}");
    // Another tenant is not affected.
    assert_eq!(server.resize("width=5", Some(&server.demo_key), &png(10, 10), &[]).status, 200);

    // Limits changed through the admin API apply to the next request.
    let r = server.admin("PATCH", "/v1/tenants/bytes", Some(json!({ "limits": { "max_input_bytes": null } })));
    assert_eq!(r.status, 200);
    assert_eq!(server.resize("width=10", Some(&small_bodies), &png(60, 60), &[]).status, 200);
    Ok(())
}

#[test]
fn bad_input_gets_a_clear_4xx() -> Result {
    let server = DevServer::start(&[])?;
    let key = server.demo_key.clone();
    let r = server.resize("width=10", Some(&key), b"hello, this is not an image", &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (415, "unsupported-image"));

    let mut corrupt = png(64, 64);
    let len = corrupt.len();
    corrupt[len / 2..len - 12].iter_mut().for_each(|b| *b = 0x5a);
    let r = server.resize("width=10", Some(&key), &corrupt, &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (422, "corrupt-image"), "{}", r.json());

    for query in [
        "",
        "width=0",
        "width=abc",
        "width=10&fit=squash",
        "width=10&widht=3",
        "width=99999",
        "width=10&width=20",
        "w=10&width=20",
        "width=10&format=png&format=jpeg",
    ] {
        let r = server.resize(query, Some(&key), &png(20, 20), &[]);
        assert_eq!(r.status, 400, "{query}: {}", r.json());
        assert_eq!(r.problem_type(), "bad-parameter", "{query}");
    }
    let r = server.resize("width=10", Some(&key), b"", &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (400, "bad-request"));
    let r = server.get_with_key("/v1/usage?granularity=hour&granularity=day", &key);
    assert_eq!((r.status, r.problem_type().as_str()), (400, "bad-request"), "{}", r.json());
    // Rollups are whole hours: the answer says which range it covers.
    let r = server.get_with_key("/v1/usage?from=2026-01-02T03:04:05Z&to=2026-01-02T05:00:00Z", &key);
    assert_eq!(r.status, 200, "{}", r.json());
    let (from, to) =
        (r.json()["from"].as_str().unwrap_or("").to_owned(), r.json()["to"].as_str().unwrap_or("").to_owned());
    assert!(from.starts_with("2026-01-02T03:00:00") && to.starts_with("2026-01-02T05:00:00"), "{from} {to}");
    let r = server.get_with_key("/v1/usage?from=2026-01-02T03:00:00Z&to=2026-01-02T04:30:00Z", &key);
    assert!(r.json()["to"].as_str().is_some_and(|to| to.starts_with("2026-01-02T05:00:00")), "{}", r.json());

    let r = server.get("/v1/resize");
    assert_eq!((r.status, r.problem_type().as_str()), (405, "method-not-allowed"));
    let r = server.get("/nowhere");
    assert_eq!((r.status, r.problem_type().as_str()), (404, "not-found"));
    assert_eq!(server.get("/healthz").status, 200, "still serving after all of that");
    Ok(())
}

/// One worker, a large lane of one: a third large image finds the lane full and is answered 503
/// at once, with Retry-After, while the first two are still being converted.
#[test]
fn a_full_queue_answers_503_within_50_ms() -> Result {
    let server = DevServer::start(&["dispatch.workers=1", "dispatch.large_queue=1"])?;
    let big = big_png();
    let send = || {
        let (url, key) = (server.api_url.clone(), server.demo_key.clone());
        std::thread::spawn(move || raw_post(&url, &key, SLOW, big))
    };
    // One after the other: sent together, both could find the worker not yet started and the
    // second would already see the lane full.
    let running = send();
    server.wait_for_metric("resizer_workers_busy", 1.0)?;
    let queued = send();
    server.wait_for_metric(r#"resizer_queue_depth{lane="large"}"#, 1.0)?;

    let started = Instant::now();
    let r = server.resize("width=100", Some(&server.demo_key), big, &[]);
    let elapsed = started.elapsed();
    assert_eq!((r.status, r.problem_type().as_str()), (503, "overloaded"));
    assert!(r.header("retry-after").is_some() && r.header("retry-after-ms").is_some());
    assert!(elapsed < Duration::from_millis(50), "503 took {elapsed:?}");
    // Small images have their own lane and are still served.
    assert_eq!(server.resize("width=10", Some(&server.demo_key), &png(30, 30), &[]).status, 200);
    for t in [running, queued] {
        assert_eq!(t.join().expect("thread")?, 200, "admitted requests complete");
    }
    Ok(())
}

/// A deadline shorter than a conversion: 504 for both, and the queued one is never run.
#[test]
fn past_the_deadline_is_504_and_the_queued_job_is_dropped() -> Result {
    let server = DevServer::start(&["dispatch.workers=1", "api.request_timeout_ms=40"])?;
    let big = big_png();
    let requests: Vec<_> = (0..2)
        .map(|_| {
            let (url, key) = (server.api_url.clone(), server.demo_key.clone());
            std::thread::spawn(move || raw_post(&url, &key, "width=100", big))
        })
        .collect();
    for t in requests {
        assert_eq!(t.join().expect("thread")?, 504);
    }
    let r = server.resize("width=100", Some(&server.demo_key), big, &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (504, "deadline-exceeded"));
    server.wait_for_metric("resizer_jobs_expired_total", 1.0)?;
    Ok(())
}

/// A client that hangs up while its job waits in the queue withdraws the job.
#[test]
fn a_client_that_disconnects_cancels_its_queued_job() -> Result {
    let server = DevServer::start(&["dispatch.workers=1"])?;
    let big = big_png();
    let (url, key) = (server.api_url.clone(), server.demo_key.clone());
    let first = std::thread::spawn(move || raw_post(&url, &key, SLOW, big));
    server.wait_for_metric("resizer_workers_busy", 1.0)?;

    let mut stream = TcpStream::connect(server.api_url.trim_start_matches("http://"))?;
    write_request(&mut stream, &server.api_url, &server.demo_key, "width=100", big)?;
    server.wait_for_metric(r#"resizer_queue_depth{lane="large"}"#, 1.0)?;
    drop(stream);
    server.wait_for_metric("resizer_jobs_cancelled_total", 1.0)?;
    assert_eq!(first.join().expect("thread")?, 200);
    assert_eq!(server.metric("resizer_jobs_completed_total"), 1.0, "the cancelled job never ran");
    Ok(())
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_0() -> Result {
    let mut server = DevServer::start(&["dispatch.workers=1"])?;
    let (url, key) = (server.api_url.clone(), server.demo_key.clone());
    let in_flight = std::thread::spawn(move || raw_post(&url, &key, SLOW, big_png()));
    server.wait_for_metric("resizer_workers_busy", 1.0)?;
    let status = server.terminate(Duration::from_secs(20))?;
    assert_eq!(in_flight.join().expect("thread")?, 200, "the request in flight at SIGTERM is answered");
    assert!(status.success(), "exit status {status}");
    assert!(TcpStream::connect(server.api_url.trim_start_matches("http://")).is_err(), "no longer listening");
    assert!(server.stderr().contains("SIGTERM received"));
    Ok(())
}

#[test]
fn the_data_directory_is_private() -> Result {
    use std::os::unix::fs::PermissionsExt;
    let server = DevServer::start(&[])?;
    assert_eq!(server.resize("width=10", Some(&server.demo_key), &png(20, 20), &[]).status, 200);
    let mut checked = 0;
    let mut dirs = vec![server.data_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let mode = std::fs::metadata(&path)?.permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is open to other users ({mode:o})", path.display());
            checked += 1;
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    assert!(checked >= 3, "{checked} entries");
    Ok(())
}

#[test]
fn operations_endpoints_and_logs() -> Result {
    let server = DevServer::start(&[])?;
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/readyz").status, 200);
    let r = server.get("/openapi.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["openapi"], "3.1.0");
    assert_eq!(
        server.resize("width=8", Some(&server.demo_key), &png(16, 16), &[("x-request-id", "trace-me-1")]).status,
        200
    );

    let metrics = String::from_utf8(server.get("/metrics").body)?;
    for name in [
        "resizer_http_request_duration_seconds_bucket{route=\"resize\",status=\"200\"",
        "resizer_queue_wait_seconds_count{lane=\"small\"}",
        "resizer_queue_depth{lane=\"large\"}",
        "resizer_workers_busy",
        "resizer_conversion_wall_seconds_count{lane=\"small\"}",
        "resizer_conversion_cpu_seconds_count{lane=\"small\"}",
        "resizer_auth_failures_total{reason=\"unknown\"}",
        "resizer_credential_cache_keys",
        "resizer_credential_cache_version",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    assert!(server.metric("resizer_credential_cache_keys") >= 1.0);

    // One JSON object per log line; the request's line carries its id.
    let logs = server.stderr();
    let line = logs.lines().find(|l| l.contains("trace-me-1")).expect("access log line");
    let v: serde_json::Value = serde_json::from_str(line)?;
    assert_eq!((v["request_id"].as_str(), v["status"].as_u64()), (Some("trace-me-1"), Some(200)));

    // Whether JPEG runs libjpeg-turbo's SIMD kernels is said at start: in the log line, and as a
    // warning in the log and under the banner when it does not. On x86 the build has them when
    // nasm (not the outdated 0.x) was there, as mozjpeg-sys's build script decides; the test
    // command installs it.
    if !cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        return Ok(());
    }
    let nasm = std::process::Command::new("nasm")
        .arg("-v")
        .output()
        .is_ok_and(|out| out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("NASM version 0."));
    let started = logs.lines().find(|l| l.contains("resizer dev started")).expect("start line");
    let started: serde_json::Value = serde_json::from_str(started)?;
    assert_eq!(started["jpeg_simd"].as_bool(), Some(nasm), "{started}");
    // The AVIF encoder found: libaom through libheif, which the test command installs.
    let avif = started["avif_encoder"].as_str().unwrap_or_default();
    assert!(avif.starts_with("libaom (AOMedia Project AV1 Encoder") && avif.ends_with("through libheif"), "{started}");
    assert_eq!(server.get("/readyz").json()["avif_encoder"].as_str(), Some(avif));
    let warned = "without libjpeg-turbo's SIMD kernels";
    assert_eq!(server.stdout().contains(warned), !nasm, "{}", server.stdout());
    assert_eq!(logs.contains(warned), !nasm);
    assert_eq!(server.get("/readyz").json()["jpeg_simd"].as_bool(), Some(nasm));
    Ok(())
}

#[test]
fn admin_api_refuses_without_the_token_and_reports_conflicts() -> Result {
    let server = DevServer::start(&[])?;
    let r = server.admin_with_token("GET", "/v1/tenants", None, "wrong");
    assert_eq!((r.status, r.problem_type().as_str()), (401, "admin-unauthorized"));
    let r = server.admin_with_token("GET", "/v1/tenants", None, &server.demo_key);
    assert_eq!(r.status, 401, "an API key is not an admin token");
    assert_eq!(server.admin("GET", "/v1/tenants/999", None).status, 404);
    assert_eq!(server.admin("POST", "/v1/tenants", Some(json!({ "name": "demo" }))).status, 409);
    assert_eq!(server.admin("POST", "/v1/tenants", Some(json!({ "name": "bad name!" }))).status, 400);
    let r = server.admin("POST", "/v1/tenants", Some(json!({ "name": "x", "limits": { "burst": 0 } })));
    assert_eq!(r.status, 400);
    assert_eq!(server.admin("POST", "/v1/tenants", Some(json!({ "nme": "x" }))).status, 400);
    // A large body: without the token, 401 before it is read; with it, 413.
    let large = json!({ "name": "big", "padding": "x".repeat(200_000) });
    let r = server.admin_with_token("POST", "/v1/tenants", Some(large.clone()), "wrong");
    assert_eq!((r.status, r.problem_type().as_str()), (401, "admin-unauthorized"));
    let r = server.admin("POST", "/v1/tenants", Some(large));
    assert_eq!((r.status, r.problem_type().as_str()), (413, "too-large"), "{}", r.json());

    let created = server.admin("POST", "/v1/tenants/demo/keys", Some(json!({ "label": "second" })));
    assert_eq!(created.status, 201);
    let listed = server.admin("GET", "/v1/tenants/demo/keys", None).json();
    let keys = listed["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.get("key").is_none()), "a listing never shows a secret");
    Ok(())
}

#[test]
fn admin_cli_and_restart_keep_the_demo_key() -> Result {
    let server = DevServer::start(&[])?;
    let cli = |args: &[&str]| server.admin_cli(args);
    let out = cli(&["tenants", "create", "cli-made", "--rate", "5", "--burst", "10"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tenant: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(tenant["limits"]["rate_per_sec"], 5.0);
    let out = cli(&["keys", "create", "cli-made", "--label", "ci"]);
    let key: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let key = key["key"].as_str().expect("shown once").to_owned();
    assert_eq!(server.resize("width=5", Some(&key), &png(10, 10), &[]).status, 200);
    // Lists: a table by default (own limits as set, defaults starred), JSON on request.
    let table = String::from_utf8(cli(&["tenants", "list"]).stdout)?;
    let row = table.lines().find(|l| l.contains("cli-made")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" active ") && row.contains(" 5.0 ") && row.contains(" 10 ") && row.contains('*'), "{row}");
    let listed: serde_json::Value = serde_json::from_slice(&cli(&["tenants", "list", "--json"]).stdout)?;
    assert!(listed["tenants"].as_array().is_some_and(|t| t.iter().any(|t| t["name"] == "cli-made")), "{listed}");
    // Without --data-dir the CLI reads RESIZER_DATA_DIR, as `resizer dev` does.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_resizer"))
        .args(["admin", "tenants", "list", "--json"])
        .env("RESIZER_DATA_DIR", server.data_dir())
        .env_remove("RESIZER_ADMIN_URL")
        .env_remove("RESIZER_ADMIN_TOKEN")
        .current_dir(std::env::temp_dir())
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli-made"));
    let key_id = key.strip_prefix("rsz_").and_then(|k| k.get(..12)).expect("key id").to_owned();
    assert!(cli(&["keys", "revoke", &key_id]).status.success());
    let table = String::from_utf8(cli(&["keys", "list", "cli-made"]).stdout)?;
    let row = table.lines().find(|l| l.starts_with(&key_id)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" ci ") && !row.trim_end().ends_with('-'), "revoked, with its time: {row}");
    let listed: serde_json::Value = serde_json::from_slice(&cli(&["keys", "list", "cli-made", "--json"]).stdout)?;
    assert_eq!(listed["keys"][0]["id"], key_id.as_str());
    let out = cli(&["keys", "create", "cli-made", "--label", "second"]);
    let key: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let key = key["key"].as_str().expect("shown once").to_owned();
    let out = cli(&["tenants", "suspend", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));

    // Same data directory, new process: same demo key and admin token, the CLI's key still works.
    let DevServer { demo_key, admin_token, .. } = &server;
    let (demo_key, admin_token) = (demo_key.clone(), admin_token.clone());
    let mut server = server;
    assert!(server.terminate(Duration::from_secs(10))?.success());
    let dir = std::mem::replace(&mut server.dir, common::TempDir::new());
    let again = DevServer::start_in(dir, &[])?;
    assert_eq!((again.demo_key.as_str(), again.admin_token.as_str()), (demo_key.as_str(), admin_token.as_str()));
    assert_eq!(again.resize("width=5", Some(&key), &png(10, 10), &[]).status, 200);
    Ok(())
}

/// A plain HTTP/1.1 POST over its own connection, returning the status (for requests made from
/// threads while the test watches metrics).
fn raw_post(api_url: &str, key: &str, query: &str, body: &[u8]) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(api_url.trim_start_matches("http://"))?;
    write_request(&mut stream, api_url, key, query, body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))
}

fn write_request(stream: &mut TcpStream, api_url: &str, key: &str, query: &str, body: &[u8]) -> std::io::Result<()> {
    let host = api_url.trim_start_matches("http://");
    write!(
        stream,
        "POST /v1/resize?{query} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)
}

#[test]
fn idle_and_stalled_clients_are_cut_off_and_cannot_hold_every_connection() -> Result {
    let server =
        DevServer::start(&["api.header_timeout_ms=500", "api.request_timeout_ms=1500", "api.max_connections=40"])?;
    let addr = server.api_url.trim_start_matches("http://").to_owned();

    // A connection that sends nothing is closed after the header timeout.
    let mut idle = TcpStream::connect(&addr)?;
    idle.set_read_timeout(Some(Duration::from_secs(10)))?;
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = idle.read_to_end(&mut sink);
    assert!(started.elapsed() < Duration::from_secs(3), "an idle connection was held {:?}", started.elapsed());

    // A body that stalls is answered 408 at the request's deadline, as problem+json.
    let mut stalled = TcpStream::connect(&addr)?;
    stalled.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stalled,
        "POST /v1/resize?width=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 100000\r\n\r\n",
        server.demo_key
    )?;
    stalled.write_all(&[0u8; 10])?;
    let started = Instant::now();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("body-timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());

    // More idle connections than the cap: the admin API answers at once, and a real request gets
    // through once the idle ones are cut (metering works: its files still open).
    let hogs = (0..60).map(|_| TcpStream::connect(&addr)).collect::<std::io::Result<Vec<_>>>()?;
    assert_eq!(server.admin("GET", "/healthz", None).status, 200);
    let started = Instant::now();
    let resized = server.resize("width=10", Some(&server.demo_key), &png(40, 30), &[]);
    assert_eq!(resized.status, 200, "{}", resized.json());
    assert!(started.elapsed() < Duration::from_secs(8), "waited {:?} behind idle connections", started.elapsed());
    drop(hogs);
    assert!(server.stderr().lines().all(|l| !l.contains("Too many open files")));
    Ok(())
}

#[test]
fn a_refused_upload_that_awaits_100_continue_is_not_invited() -> Result {
    let server = DevServer::start(&[])?;
    let mut stream = TcpStream::connect(server.api_url.trim_start_matches("http://"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(
        b"POST /v1/resize?width=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\
          Expect: 100-continue\r\nContent-Length: 5000000\r\n\r\n",
    )?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer); // the server closes after its answer
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "the first thing sent is the refusal:\n{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    Ok(())
}

/// Sends `head` (a whole request head) on a new connection and reads the answer to its end.
fn raw_exchange(addr: &str, head: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer); // a refusal closes the connection
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    Ok((status.ok_or_else(|| anyhow::anyhow!("no status in {answer:?}"))?, answer))
}

#[test]
fn heads_over_the_limits_are_refused_as_problem_json() -> Result {
    let server = DevServer::start(&[])?;
    let api = server.api_url.trim_start_matches("http://").to_owned();
    let admin = server.admin_url.trim_start_matches("http://").to_owned();
    let key = &server.demo_key;
    let problem = |answer: &str, slug: &str| {
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(answer.contains(&format!("urn:resizer:problem:{slug}")), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("x-request-id:"), "{answer}");
    };

    // The request target: 8 KiB is read (and answered by the handler), a byte more is 414.
    let target = |len: usize| format!("/v1/usage?from={}", "9".repeat(len - "/v1/usage?from=".len()));
    let (status, answer) = raw_exchange(
        &api,
        &format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n",
            target(8192)
        ),
    )?;
    assert_eq!(status, 400, "read and refused by the handler: {answer}");
    problem(&answer, "bad-request");
    let (status, answer) = raw_exchange(&api, &format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", target(8193)))?;
    assert_eq!(status, 414, "{answer}");
    problem(&answer, "uri-too-long");

    // Header fields: 100 are read, 101 are 431; so are 33 KiB of them in one cookie.
    let fields = |n: usize| (0..n).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect::<String>();
    let (status, answer) =
        raw_exchange(&api, &format!("GET /healthz HTTP/1.1\r\n{}Host: x\r\nConnection: close\r\n\r\n", fields(98)))?;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = raw_exchange(&api, &format!("GET /healthz HTTP/1.1\r\n{}Host: x\r\n\r\n", fields(100)))?;
    assert_eq!(status, 431, "{answer}");
    problem(&answer, "headers-too-large");
    assert!(answer.contains("101 header fields"), "{answer}");
    let cookie = "c".repeat(33 * 1024);
    let (status, answer) = raw_exchange(
        &api,
        &format!("POST /v1/resize?width=10 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 3\r\n\r\nabc"),
    )?;
    assert_eq!(status, 431, "{answer}");
    problem(&answer, "headers-too-large");
    let (status, answer) =
        raw_exchange(&admin, &format!("GET /v1/tenants HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"))?;
    assert_eq!(status, 431, "the admin API too: {answer}");
    problem(&answer, "headers-too-large");

    // Past hyper's own limits the refusal is hyper's (no hook for its body), still a clear 4xx.
    let (status, _) = raw_exchange(&api, &format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", target(70_000)))?;
    assert_eq!(status, 414);
    let (status, _) = raw_exchange(&api, &format!("GET /healthz HTTP/1.1\r\n{}Host: x\r\n\r\n", fields(200)))?;
    assert_eq!(status, 431);

    assert_eq!(server.get("/healthz").status, 200, "still serving");
    let metrics = String::from_utf8_lossy(&server.get("/metrics").body).into_owned();
    assert!(metrics.contains(r#"route="unmatched",status="431""#), "refusals are counted:\n{metrics}");
    Ok(())
}

/// A PNG of a few hundred KiB: an upload a test can hold open halfway.
fn upload_png() -> Vec<u8> {
    png(600, 400)
}

/// Opens an upload of `declared` bytes and sends its head and `first` (part of the body),
/// leaving it open: the server holds its reservation while the rest has not come.
fn open_upload(api_url: &str, key: &str, declared: usize, first: &[u8]) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(api_url.trim_start_matches("http://"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST /v1/resize?width=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
    )?;
    stream.write_all(first)?;
    Ok(stream)
}

/// Opens a chunked upload (no Content-Length) and sends its head and `first` as one chunk.
fn open_chunked_upload(api_url: &str, key: &str, first: &[u8]) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(api_url.trim_start_matches("http://"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST /v1/resize?width=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )?;
    write_chunk(&mut stream, first)?;
    Ok(stream)
}

fn write_chunk(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    write!(stream, "{:x}\r\n", bytes.len())?;
    stream.write_all(bytes)?;
    stream.write_all(b"\r\n")
}

/// Reads an answer's head (up to the blank line), returning its status and the head.
fn read_head(stream: &mut TcpStream) -> anyhow::Result<(u16, String)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    Ok((status.ok_or_else(|| anyhow::anyhow!("no status in {head:?}"))?, head))
}

/// Sends the rest of a held upload and reads its status.
fn finish_upload(mut stream: TcpStream, rest: &[u8]) -> anyhow::Result<u16> {
    stream.write_all(rest)?;
    Ok(read_head(&mut stream)?.0)
}

const BYTES_IN_FLIGHT: &str = "resizer_body_bytes_in_flight";

/// Waits until the server holds exactly `bytes` of bodies in flight.
fn wait_for_bytes_in_flight(server: &DevServer, bytes: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    while server.metric(BYTES_IN_FLIGHT) != bytes as f64 {
        if started.elapsed() > Duration::from_secs(20) {
            anyhow::bail!("{BYTES_IN_FLIGHT} stayed at {}, expected {bytes}", server.metric(BYTES_IN_FLIGHT));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Uploads whose declared lengths fill the node's budget hold it while their bodies are still
/// coming; a further upload is answered 503 before its body is read (it awaits 100-continue and
/// is never invited), and again with its body sent; once the held uploads are answered the
/// budget is back and a new upload is converted.
#[test]
fn uploads_past_the_body_budget_are_answered_503_at_once_and_the_budget_comes_back() -> Result {
    let image = upload_png();
    let len = image.len();
    let budget = format!("api.max_body_bytes_in_flight={}", 3 * len);
    let limit = format!("limits.max_input_bytes={len}");
    let server = DevServer::start(&[&budget, &limit, "api.request_timeout_ms=30000"])?;
    let key = server.demo_key.clone();
    let held =
        (0..3).map(|_| open_upload(&server.api_url, &key, len, &image[..100])).collect::<anyhow::Result<Vec<_>>>()?;
    wait_for_bytes_in_flight(&server, 3 * len)?;

    let mut stream = TcpStream::connect(server.api_url.trim_start_matches("http://"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let started = Instant::now();
    write!(
        stream,
        "POST /v1/resize?width=10 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nExpect: 100-continue\r\nContent-Length: 500\r\n\r\n"
    )?;
    let (status, head) = read_head(&mut stream)?;
    let elapsed = started.elapsed();
    assert_eq!(status, 503, "{head}");
    assert!(elapsed < Duration::from_secs(1), "503 took {elapsed:?}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("retry-after:") && lower.contains("retry-after-ms:"), "{head}");

    let started = Instant::now();
    let r = server.resize("width=10", Some(&key), &png(30, 30), &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (503, "overloaded"), "{}", r.json());
    assert!(started.elapsed() < Duration::from_secs(1), "503 took {:?}", started.elapsed());
    assert!(r.header("retry-after").is_some() && r.header("retry-after-ms").is_some());
    assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("budget")), "{}", r.json());

    for stream in held {
        assert_eq!(finish_upload(stream, &image[100..])?, 200, "the held uploads are converted");
    }
    wait_for_bytes_in_flight(&server, 0)?;
    assert_eq!(server.resize("width=10", Some(&key), &image, &[]).status, 200, "the budget came back");
    assert_eq!(server.metric(r#"resizer_admission_refusals_total{reason="body_budget"}"#), 2.0);
    assert_eq!(server.metric(r#"resizer_http_request_duration_seconds_count{route="resize",status="503"}"#), 2.0);

    // A tenant allowed more than the whole budget: a body over the budget could never be
    // admitted here, so it is too large (413), not a passing overload.
    let (_, big) = server.tenant_with_key("big", json!({ "max_input_bytes": 10 * len }));
    let r = server.resize("width=10", Some(&big), &vec![0u8; 3 * len + 1], &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (413, "too-large"), "{}", r.json());
    Ok(())
}

/// A body without Content-Length is reserved as its chunks arrive: the bytes it has sent count
/// in the budget, and a chunk that would pass the budget is answered 503 before the body ends.
#[test]
fn chunked_uploads_count_in_the_body_budget() -> Result {
    let image = upload_png();
    let len = image.len();
    let half = len / 2;
    let budget = format!("api.max_body_bytes_in_flight={}", 2 * len);
    let limit = format!("limits.max_input_bytes={len}");
    let server = DevServer::start(&[&budget, &limit, "api.request_timeout_ms=30000"])?;
    let key = server.demo_key.clone();
    let declared = open_upload(&server.api_url, &key, len, &image[..100])?;
    wait_for_bytes_in_flight(&server, len)?;
    let mut chunked = open_chunked_upload(&server.api_url, &key, &image[..half])?;
    wait_for_bytes_in_flight(&server, len + half)?;

    let started = Instant::now();
    let mut over = open_chunked_upload(&server.api_url, &key, &image[..len - half + 1])?;
    let (status, head) = read_head(&mut over)?;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(1), "503 took {:?}", started.elapsed());
    drop(over);
    wait_for_bytes_in_flight(&server, len + half)?;

    write_chunk(&mut chunked, &image[half..])?;
    chunked.write_all(b"0\r\n\r\n")?;
    assert_eq!(read_head(&mut chunked)?.0, 200);
    assert_eq!(finish_upload(declared, &image[100..])?, 200);
    wait_for_bytes_in_flight(&server, 0)?;
    let mut whole = open_chunked_upload(&server.api_url, &key, &image)?;
    whole.write_all(b"0\r\n\r\n")?;
    assert_eq!(read_head(&mut whole)?.0, 200, "the budget came back");
    assert_eq!(server.metric(r#"resizer_admission_refusals_total{reason="body_budget"}"#), 1.0);
    Ok(())
}

/// A tenant at its cap of requests in flight gets 429 before its body is read, while another
/// tenant is still served; its slots come back when its requests are answered.
#[test]
fn a_tenant_at_its_in_flight_cap_gets_429_and_another_tenant_is_served() -> Result {
    let image = upload_png();
    let server = DevServer::start(&["api.max_requests_in_flight_per_tenant=2", "api.request_timeout_ms=30000"])?;
    let key = server.demo_key.clone();
    let held = (0..2)
        .map(|_| open_upload(&server.api_url, &key, image.len(), &image[..100]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    wait_for_bytes_in_flight(&server, 2 * image.len())?;

    let started = Instant::now();
    let r = server.resize("width=10", Some(&key), &png(30, 30), &[]);
    assert_eq!((r.status, r.problem_type().as_str()), (429, "too-many-in-flight"), "{}", r.json());
    assert!(started.elapsed() < Duration::from_secs(1), "429 took {:?}", started.elapsed());
    assert!(r.header("retry-after").is_some() && r.header("retry-after-ms").is_some());
    assert_eq!(server.metric("resizer_tenants_with_requests_in_flight"), 1.0);

    let (_, other) = server.tenant_with_key("other", json!({}));
    let r = server.resize("width=10", Some(&other), &png(30, 30), &[]);
    assert_eq!(r.status, 200, "another tenant is served: {}", r.json());

    for stream in held {
        assert_eq!(finish_upload(stream, &image[100..])?, 200);
    }
    wait_for_bytes_in_flight(&server, 0)?;
    assert_eq!(server.resize("width=10", Some(&key), &png(30, 30), &[]).status, 200, "the slots came back");
    assert_eq!(server.metric(r#"resizer_admission_refusals_total{reason="tenant_in_flight"}"#), 1.0);
    assert_eq!(server.metric(r#"resizer_http_request_duration_seconds_count{route="resize",status="429"}"#), 1.0);
    Ok(())
}

#[test]
fn a_body_budget_below_the_input_limit_stops_the_start_with_a_clear_error() -> Result {
    let Err(e) = DevServer::start(&["api.max_body_bytes_in_flight=1000"]) else {
        anyhow::bail!("resizer dev started with a budget below limits.max_input_bytes");
    };
    let e = format!("{e:#}");
    assert!(e.contains("api.max_body_bytes_in_flight (1000) must be at least limits.max_input_bytes"), "{e}");
    Ok(())
}

/// A request refused before its body was read (here: no key) while the client still sends a
/// large body: the answer goes out, and the connection then closes with body bytes unread. Closed
/// at once, the kernel would answer those bytes with a reset, and a reset makes the client's
/// side drop the answer it had already received (through HAProxy: a request with no answer at
/// all). The server closes lingeringly instead: its side of the connection is shut, and it reads
/// and drops what still arrives for a while, so the answer reaches the client.
#[test]
fn an_early_answer_reaches_a_client_still_sending_its_body() -> Result {
    let server = DevServer::start(&[])?;
    let address = server.api_url.trim_start_matches("http://").to_owned();
    let body = vec![0x5a_u8; 8 << 20];
    for attempt in 0..5 {
        let mut stream = TcpStream::connect(&address)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let head = format!(
            "POST /v1/resize?width=10 HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        let writer = {
            let mut stream = stream.try_clone()?;
            let body = body.clone();
            std::thread::spawn(move || stream.write_all(&body).map_err(|e| e.kind()))
        };
        // Read only once the body is sent (or refused): the answer waits in this side's buffer,
        // where a reset would destroy it, as it does when HAProxy is busy forwarding the body.
        let sent = writer.join().expect("writer thread");
        std::thread::sleep(Duration::from_millis(100));
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 401"),
            "attempt {attempt}: no answer, the client saw {read:?} and {} bytes: {text:.200}",
            answer.len()
        );
        // What HAProxy trips on: a reset while it still forwards the body makes it give up on
        // the connection before it reads the answer. Closed lingeringly, the body goes out whole.
        assert_eq!(sent, Ok(()), "attempt {attempt}: the server reset the connection under the body");
    }
    Ok(())
}

/// `resizer dev` given a certificate (`api.tls_cert`, `api.tls_key`, as `--tls-cert` and
/// `--tls-key` set them) serves both APIs over TLS only: dev.json says https, a client trusting
/// the CA resizes and `resizer admin --ca-file` works, a plaintext request gets no HTTP answer,
/// and a client trusting another CA refuses the certificate.
#[test]
fn dev_with_a_certificate_serves_https_only() {
    let dir = common::TempDir::new();
    let ca = lab::LabCa::create(&dir.0.join("tls"), "test CA").expect("CA");
    let other = lab::LabCa::create(&dir.0.join("other"), "another CA").expect("another CA");
    let cert = ca.issue("dev").expect("certificate");
    let sets = [format!("api.tls_cert={}", cert.cert.display()), format!("api.tls_key={}", cert.key.display())];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let server = DevServer::start_in(dir, &sets).expect("dev starts").trusting(ca.ca_file());
    assert!(server.api_url.starts_with("https://127.0.0.1:"), "{}", server.api_url);
    assert!(server.admin_url.starts_with("https://127.0.0.1:"), "{}", server.admin_url);

    let answer = server.resize("width=8", Some(&server.demo_key.clone()), &png(32, 32), &[]);
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let listed = server.admin_cli(&["--ca-file", &ca.ca_file().display().to_string(), "tenants", "list"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("demo"), "{}", String::from_utf8_lossy(&listed.stdout));

    for url in [&server.api_url, &server.admin_url] {
        let addr = url.trim_start_matches("https://");
        let mut plain = TcpStream::connect(addr).expect("connect");
        plain.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let _ = plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        assert!(!answer.starts_with(b"HTTP/"), "{url} answered plaintext: {}", String::from_utf8_lossy(&answer));

        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(lab::ureq_tls(other.ca_file()).expect("CA"))
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let refused = agent.get(format!("{url}/healthz")).call().expect_err("a certificate of another CA");
        assert!(refused.to_string().to_lowercase().contains("unknownissuer"), "{url}: {refused}");
    }
}
