//! Quotas end to end on one node (`resizer dev`): a tenant gets its quota in each dimension and
//! then 429 `quota-exceeded` with the period's end as the retry hint, the next period opens it
//! again, concurrent requests do not pass the last place together, and the count survives a
//! restart and a `kill -9`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{png, DevServer, Response};
use serde_json::{json, Value};

type Result = anyhow::Result<()>;

/// Sleeps into a fresh window of `period_s` seconds if less than `needed` of the current one is
/// left: the windows are aligned to the Unix epoch, and a test must not straddle two.
fn fresh_window(period_s: u64, needed: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
    let left = period_s * 1000 - now % (period_s * 1000);
    if Duration::from_millis(left) < needed {
        std::thread::sleep(Duration::from_millis(left + 50));
    }
}

fn quota(period_s: u64, limits: Value) -> Value {
    let mut q = json!({ "period": "rolling", "period_seconds": period_s });
    for (k, v) in limits.as_object().expect("an object") {
        q[k] = v.clone();
    }
    json!({ "quota": q })
}

/// A refusal for the quota: 429 `quota-exceeded` naming `dimension`, with a Retry-After that
/// points at most `period_s` ahead; returns the precise wait.
fn assert_quota_exceeded(r: &Response, dimension: &str, period_s: u64) -> Duration {
    assert_eq!(r.status, 429, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.problem_type(), "quota-exceeded");
    let body = r.json();
    assert_eq!(body["quota"]["dimension"], dimension, "{body}");
    let seconds: u64 = r.header("retry-after").expect("Retry-After").parse().expect("whole seconds");
    assert!((1..=period_s).contains(&seconds), "Retry-After {seconds} for a period of {period_s} s");
    Duration::from_millis(r.header("retry-after-ms").expect("Retry-After-Ms").parse().expect("ms"))
}

/// Sends `query` with `body` until the first refusal (at most `most` times); returns how many
/// were answered 200 and the refusal.
fn until_refused(server: &DevServer, key: &str, query: &str, body: &[u8], most: usize) -> (usize, Response) {
    for n in 0..most {
        let r = server.resize(query, Some(key), body, &[]);
        if r.status != 200 {
            return (n, r);
        }
    }
    panic!("no refusal after {most} requests");
}

#[test]
fn each_dimension_gives_its_quota_then_quota_exceeded_until_the_next_period() -> Result {
    let server = DevServer::start(&["usage.batch_max_age_ms=100"])?;
    const PERIOD: u64 = 60;
    let image = png(200, 200);
    let (_, requests) = server.tenant_with_key("requests", quota(PERIOD, json!({ "requests": 5 })));
    let (_, bytes) = server.tenant_with_key("bytes", quota(PERIOD, json!({ "input_bytes": 3 * image.len() })));
    // 100 x 100 outputs: 0.01 megapixels each.
    let (_, pixels) = server.tenant_with_key("pixels", quota(PERIOD, json!({ "output_megapixels": 0.04 })));
    let (_, cpu) = server.tenant_with_key("cpu", quota(PERIOD, json!({ "cpu_seconds": 0.000001 })));
    let (_, none) = server.tenant_with_key("unlimited", json!({}));
    fresh_window(PERIOD, Duration::from_secs(40));

    let (served, refused) = until_refused(&server, &requests, "width=10", &image, 20);
    assert_eq!(served, 5);
    assert_quota_exceeded(&refused, "requests", PERIOD);
    let (served, refused) = until_refused(&server, &bytes, "width=10", &image, 20);
    assert_eq!(served, 3);
    assert_quota_exceeded(&refused, "input_bytes", PERIOD);
    let (served, refused) = until_refused(&server, &pixels, "width=100&height=100&fit=fill", &image, 20);
    assert_eq!(served, 4);
    assert_quota_exceeded(&refused, "output_megapixels", PERIOD);
    // Any conversion takes more than a microsecond of CPU: the first is served, the next not.
    let (served, refused) = until_refused(&server, &cpu, "width=10", &image, 20);
    assert_eq!(served, 1);
    assert_quota_exceeded(&refused, "cpu_seconds", PERIOD);
    for _ in 0..10 {
        assert_eq!(server.resize("width=10", Some(&none), &image, &[]).status, 200, "no quota, no refusal");
    }

    // Still refused a moment later, once the aggregator has the totals (not only this node's
    // own count), and a refusal is not billed: the count stays at the limit.
    std::thread::sleep(Duration::from_millis(600));
    assert_quota_exceeded(&server.resize("width=10", Some(&requests), &image, &[]), "requests", PERIOD);
    let usage = server.get_with_key("/v1/usage", &requests).json();
    assert_eq!(
        usage["quota"]["dimensions"]["requests"],
        json!({ "limit": 5, "used": 5, "remaining": 0, "soft_limit": 4 })
    );
    assert_eq!(
        (usage["quota"]["exceeded"].as_bool(), usage["quota"]["soft_reached"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(usage["billable"]["requests"], 5, "{usage}");
    assert_eq!(server.get_with_key("/v1/usage", &none).json()["quota"], Value::Null);
    let m = |series: &str| server.metric(series);
    assert_eq!(m(r#"resizer_tenant_limit_refusals_total{kind="quota_exceeded",dimension="requests"}"#), 2.0);
    assert_eq!(m(r#"resizer_tenant_limit_refusals_total{kind="quota_exceeded",dimension="input_bytes"}"#), 1.0);
    assert_eq!(m(r#"resizer_tenant_limit_refusals_total{kind="quota_exceeded",dimension="output_megapixels"}"#), 1.0);
    assert_eq!(m(r#"resizer_tenant_limit_refusals_total{kind="quota_exceeded",dimension="cpu_seconds"}"#), 1.0);
    Ok(())
}

#[test]
fn the_next_period_opens_the_quota_again_and_a_refusal_is_not_a_rate_limit() -> Result {
    let server = DevServer::start(&["usage.batch_max_age_ms=100"])?;
    const PERIOD: u64 = 4;
    let image = png(64, 64);
    let mut limits = quota(PERIOD, json!({ "requests": 3 }));
    limits["burst"] = json!(1000);
    let (_, key) = server.tenant_with_key("short", limits);
    fresh_window(PERIOD, Duration::from_secs(3));
    for round in 0..3 {
        // Each round starts at a window's start: the first after `fresh_window`, the next ones
        // after waiting out the refusal's Retry-After-Ms.
        let (served, refused) = until_refused(&server, &key, "width=8", &image, 10);
        assert_eq!(served, 3, "round {round}: the window opens with the whole quota again");
        let wait = assert_quota_exceeded(&refused, "requests", PERIOD);
        assert!(wait <= Duration::from_secs(PERIOD), "{wait:?}");
        std::thread::sleep(wait + Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn requests_admitted_at_once_do_not_pass_the_last_place_together() -> Result {
    let server = DevServer::start(&[])?;
    const PERIOD: u64 = 600;
    let image = png(64, 64);
    let (_, key) = server.tenant_with_key("busy", quota(PERIOD, json!({ "requests": 20 })));
    fresh_window(PERIOD, Duration::from_secs(60));
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..10 {
                    let r = server.resize("width=8", Some(&key), &image, &[]);
                    match r.status {
                        200 => {
                            ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        429 => assert_eq!(r.problem_type(), "quota-exceeded"),
                        other => panic!("unexpected {other}"),
                    }
                }
            });
        }
    });
    assert_eq!(ok.into_inner(), 20, "80 requests from 8 clients at once, a quota of 20");
    Ok(())
}

#[test]
fn the_count_survives_a_restart_and_a_kill_9() -> Result {
    let sets = ["usage.batch_max_age_ms=100"];
    let mut server = DevServer::start(&sets)?;
    const PERIOD: u64 = 3600;
    let image = png(64, 64);
    let (tenant, key) = server.tenant_with_key("durable", quota(PERIOD, json!({ "requests": 6, "soft_percent": 50 })));
    fresh_window(PERIOD, Duration::from_secs(120));
    for _ in 0..2 {
        assert_eq!(server.resize("width=8", Some(&key), &image, &[]).status, 200);
    }
    // A clean stop: the open batch is sealed and applied.
    assert!(server.terminate(Duration::from_secs(10))?.success());
    let dir = std::mem::replace(&mut server.dir, common::TempDir::new());
    let mut server = DevServer::start_in(dir, &sets)?;
    let tenant_json = server.admin("GET", &format!("/v1/tenants/{tenant}"), None).json();
    assert_eq!(tenant_json["quota_status"]["dimensions"]["requests"]["used"], 2, "{tenant_json}");
    assert_eq!(tenant_json["quota_status"]["soft_reached"], false);
    for _ in 0..2 {
        assert_eq!(server.resize("width=8", Some(&key), &image, &[]).status, 200);
    }
    // A crash right after the answers: their records are in the spool, not yet applied.
    server.kill9()?;
    let dir = std::mem::replace(&mut server.dir, common::TempDir::new());
    let server = DevServer::start_in(dir, &sets)?;
    let tenant_json = server.admin("GET", &format!("/v1/tenants/{tenant}"), None).json();
    assert_eq!(tenant_json["quota_status"]["dimensions"]["requests"]["used"], 4, "{tenant_json}");
    assert_eq!(tenant_json["quota_status"]["soft_reached"], true, "soft at 50 %: 3 of 6");
    let (served, refused) = until_refused(&server, &key, "width=8", &image, 10);
    assert_eq!(served, 2);
    assert_quota_exceeded(&refused, "requests", PERIOD);
    // The CLI's table flags it.
    let out = server.admin_cli(&["tenants", "list"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let row = table.lines().find(|l| l.contains("durable")).expect("the tenant's row");
    assert!(row.contains(" over "), "{table}");
    Ok(())
}

#[test]
fn quotas_are_set_and_cleared_through_the_admin_api_and_cli_and_a_default_applies() -> Result {
    let server = DevServer::start(&["limits.quota=month;requests=1000000;soft=90"])?;
    let (tenant, _) = server.tenant_with_key("plan", json!({}));
    let got = server.admin("GET", &format!("/v1/tenants/{tenant}"), None).json();
    assert_eq!(got["limits"]["quota"], Value::Null);
    assert_eq!(got["effective_limits"]["quota"]["requests"], 1_000_000, "{got}");
    assert_eq!(got["effective_limits"]["quota"]["soft_percent"], 90);

    let out =
        server.admin_cli(&["tenants", "update", "plan", "--quota", "rolling=86400;input_bytes=5000;cpu_us=2500000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = server.admin("GET", &format!("/v1/tenants/{tenant}"), None).json();
    let want = json!({ "period": "rolling", "period_seconds": 86400, "requests": null, "input_bytes": 5000,
        "output_megapixels": null, "cpu_seconds": 2.5, "soft_percent": 80 });
    assert_eq!(got["limits"]["quota"], want);
    assert_eq!(got["effective_limits"]["quota"], want);

    // `none` exempts the tenant from the default; `default` returns to it.
    assert!(server.admin_cli(&["tenants", "update", "plan", "--quota", "none"]).status.success());
    let got = server.admin("GET", &format!("/v1/tenants/{tenant}"), None).json();
    assert_eq!((got["effective_limits"]["quota"].clone(), got["quota_status"].clone()), (Value::Null, Value::Null));
    assert!(server.admin_cli(&["tenants", "update", "plan", "--quota", "default"]).status.success());
    let got = server.admin("GET", &format!("/v1/tenants/{tenant}"), None).json();
    assert_eq!(got["effective_limits"]["quota"]["period"], "month");

    for bad in [
        json!({ "period": "week" }),
        json!({ "period": "rolling" }),
        json!({ "period": "month", "requests": -1 }),
        json!({ "period": "month", "soft_percent": 101 }),
        json!({ "period": "month", "megapixels": 1 }),
    ] {
        let r = server.admin("PATCH", &format!("/v1/tenants/{tenant}"), Some(json!({ "limits": { "quota": bad } })));
        assert_eq!(r.status, 400, "{bad}");
    }
    let bad_cli = server.admin_cli(&["tenants", "update", "plan", "--quota", "weekly;requests=5"]);
    assert!(!bad_cli.status.success());
    let started = Instant::now();
    assert!(DevServer::start(&["limits.quota=yearly"]).is_err(), "a bad default quota stops the start");
    assert!(started.elapsed() < Duration::from_secs(30));
    Ok(())
}
