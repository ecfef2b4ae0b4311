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

/// The lab: two api nodes behind HAProxy, each deciding from the totals the aggregator commits
/// (read from the rollups every 200 ms) plus its own answers since.
mod lab_cluster {
    use std::thread;
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use super::{common, fresh_window};
    use common::cluster::{resize_at, Lab};

    /// How far behind a node's view of the other node's answers may be: a batch's age (100 ms
    /// here), shipping and applying it, and the node's read of the totals (every 200 ms), with
    /// room for a loaded 2-core machine. The documented bound is this lag × the rate.
    const LAG: Duration = Duration::from_millis(1500);

    fn tenant(lab: &Lab, name: &str, quota: Value) -> String {
        let (status, body) =
            lab.admin("POST", "/v1/tenants", Some(json!({ "name": name, "limits": { "quota": quota } })));
        assert_eq!(status, 201, "{body}");
        let (status, key) = lab.admin("POST", &format!("/v1/tenants/{name}/keys"), Some(json!({ "label": "q" })));
        assert_eq!(status, 201, "{key}");
        let key = key["key"].as_str().expect("key").to_owned();
        // Both nodes know the key (the identity bucket's lag).
        lab::poll_until("the key on both api nodes", Duration::from_secs(10), Duration::from_millis(50), || {
            let known = ["api-0", "api-1"].iter().all(|n| {
                let url = format!("{}/v1/usage", lab.url_of(n, "http"));
                let status = lab.agent.get(&url).header("authorization", format!("Bearer {key}")).call();
                status.is_ok_and(|r| r.status() == 200)
            });
            if known {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()));
        key
    }

    /// `clients` closed-loop clients through HAProxy until each has been refused `refusals`
    /// times in a row: (200s, answers per second while they were served, the last refusal).
    fn exhaust(lab: &Lab, key: &str, query: &str, image: &[u8], clients: usize) -> (usize, f64, Value) {
        let url = format!("{}/v1/resize?{query}", lab.field("url"));
        let start = Instant::now();
        let results: Vec<(usize, Option<Duration>, Value)> = thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    scope.spawn(|| {
                        let (mut ok, mut refused_in_a_row, mut last_ok, mut last) = (0, 0, None, Value::Null);
                        while refused_in_a_row < 5 {
                            assert!(start.elapsed() < Duration::from_secs(60), "no end to the 200s");
                            let (status, _, body) = resize_at(&lab.agent, &url, key, image);
                            match status {
                                200 => {
                                    ok += 1;
                                    refused_in_a_row = 0;
                                    last_ok = Some(start.elapsed());
                                }
                                429 => {
                                    assert_eq!(body["type"], "urn:resizer:problem:quota-exceeded", "{body}");
                                    refused_in_a_row += 1;
                                    last = body;
                                    thread::sleep(Duration::from_millis(50));
                                }
                                other => panic!("{other}: {body}"),
                            }
                        }
                        (ok, last_ok, last)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("client")).collect()
        });
        let ok: usize = results.iter().map(|r| r.0).sum();
        let served_for = results.iter().filter_map(|r| r.1).max().unwrap_or(Duration::from_millis(1));
        (ok, ok as f64 / served_for.as_secs_f64(), results.into_iter().last().map(|r| r.2).unwrap_or(Value::Null))
    }

    /// Every node refuses the tenant now (no lag left): sent straight to each api node.
    fn refused_everywhere(lab: &Lab, key: &str, query: &str, image: &[u8]) {
        for node in ["api-0", "api-1"] {
            let url = format!("{}/v1/resize?{query}", lab.url_of(node, "http"));
            let (status, _, body) = resize_at(&lab.agent, &url, key, image);
            assert_eq!((status, body["type"].as_str()), (429, Some("urn:resizer:problem:quota-exceeded")), "{node}");
        }
    }

    /// The tenant's billable requests as the identity service's admin API reports its quota.
    fn used(lab: &Lab, name: &str, dimension: &str) -> f64 {
        let (status, tenant) = lab.admin("GET", &format!("/v1/tenants/{name}"), None);
        assert_eq!(status, 200, "{tenant}");
        tenant["quota_status"]["dimensions"][dimension]["used"].as_f64().unwrap_or(f64::NAN)
    }

    #[test]
    fn quotas_hold_across_two_api_nodes_and_an_aggregator_outage() {
        let lab = Lab::up(&["--workers", "1", "--set", "usage.batch_max_age_ms=100"]);
        const PERIOD: u64 = 3600;
        let image = common::png(16, 16);
        let rolling = |limits: Value| {
            let mut q = json!({ "period": "rolling", "period_seconds": PERIOD });
            q.as_object_mut().expect("object").extend(limits.as_object().expect("object").clone());
            q
        };
        // 8 x 8 outputs: 64 pixels each.
        let dimensions = [
            ("requests", rolling(json!({ "requests": 40 })), 40usize),
            ("input_bytes", rolling(json!({ "input_bytes": 30 * image.len() })), 30),
            ("output_megapixels", rolling(json!({ "output_megapixels": 25.0 * 64.0 / 1e6 })), 25),
        ];
        fresh_window(PERIOD, Duration::from_secs(120));
        for (dimension, quota, n) in dimensions {
            let name = format!("q-{}", dimension.replace('_', "-"));
            let key = tenant(&lab, &name, quota);
            let (ok, rate, last) = exhaust(&lab, &key, "width=8&height=8&fit=fill", &image, 4);
            assert_eq!(last["quota"]["dimension"], dimension, "{last}");
            let bound = (LAG.as_secs_f64() * rate).ceil() as usize;
            eprintln!(
                "{dimension}: quota {n}, {ok} served at {rate:.0}/s; overshoot {} (bound {bound})",
                ok - n.min(ok)
            );
            assert!(ok >= n && ok <= n + bound, "{dimension}: {ok} served for a quota of {n} (bound +{bound})");
            // Once the totals have caught up, both nodes refuse, and the count is the billing's.
            thread::sleep(LAG);
            refused_everywhere(&lab, &key, "width=8&height=8&fit=fill", &image);
            lab::poll_until("the usage answer to agree", Duration::from_secs(15), Duration::from_millis(200), || {
                let (status, usage) = lab.admin("GET", &format!("/v1/tenants/{name}/usage?granularity=day"), None);
                let billed = usage["billable"]["requests"].as_u64();
                if status == 200 && billed == Some(ok as u64) && usage["quota"]["exceeded"] == true {
                    Ok(())
                } else {
                    Err(format!("{status}: billed {billed:?} of {ok}: {usage}"))
                }
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()));
        }

        // At a pace the totals can follow, the nodes see each other's answers: the overshoot is
        // what passes in one lag (rate × lag), far below the other node's whole share.
        const PACE: Duration = Duration::from_millis(50);
        let key = tenant(&lab, "q-paced", rolling(json!({ "requests": 40 })));
        let url = format!("{}/v1/resize?width=8", lab.field("url"));
        let (mut ok, started) = (0usize, Instant::now());
        loop {
            let sent = Instant::now();
            match resize_at(&lab.agent, &url, &key, &image) {
                (200, _, _) => ok += 1,
                (429, _, body) => {
                    assert_eq!(body["type"], "urn:resizer:problem:quota-exceeded", "{body}");
                    break;
                }
                (other, _, body) => panic!("{other}: {body}"),
            }
            thread::sleep(PACE.saturating_sub(sent.elapsed()));
        }
        let rate = ok as f64 / started.elapsed().as_secs_f64();
        let bound = (LAG.as_secs_f64() * rate).ceil() as usize;
        eprintln!(
            "paced: quota 40, {ok} served at {rate:.1}/s; overshoot {} = {:.2} s of answers (bound {bound})",
            ok - 40.min(ok),
            (ok - 40.min(ok)) as f64 / rate
        );
        assert!(ok >= 40 && ok <= 40 + bound, "paced: {ok} served for a quota of 40 (bound +{bound})");

        // An api node restarted reads the totals again before it could over-admit.
        let key = tenant(&lab, "q-restart", rolling(json!({ "requests": 10 })));
        let (ok, _, _) = exhaust(&lab, &key, "width=8", &image, 2);
        thread::sleep(LAG);
        lab.restart("api-0");
        lab::poll_until("api-0 ready again", Duration::from_secs(20), Duration::from_millis(100), || {
            let url = format!("{}/readyz", lab.url_of("api-0", "http"));
            match lab.agent.get(&url).call() {
                Ok(r) if r.status() == 200 => Ok(()),
                _ => Err("not ready".to_string()),
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()));
        thread::sleep(Duration::from_millis(500));
        refused_everywhere(&lab, &key, "width=8", &image);
        assert_eq!(used(&lab, "q-restart", "requests"), ok as f64);
        // The aggregator and the identity service restarted: the totals are the database's.
        for role in ["usage-0", "identity"] {
            lab.restart(role);
        }
        lab::poll_until(
            "the identity service reports the quota again",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                // Not `lab.admin`, which fails on a refused connection: the service may still start.
                let url = format!("{}/v1/tenants/q-restart", lab.field("admin_url"));
                let token = format!("Bearer {}", lab.field("admin_token"));
                let tenant: Value = match lab.agent.get(&url).header("authorization", token).call() {
                    Ok(mut r) => {
                        serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null)
                    }
                    Err(e) => return Err(e.to_string()),
                };
                match tenant["quota_status"]["dimensions"]["requests"]["used"].as_f64() {
                    Some(n) if n == ok as f64 => Ok(()),
                    other => Err(format!("used {other:?}")),
                }
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()));
        refused_everywhere(&lab, &key, "width=8", &image);
        // An api node's admin port (read token, usage by numeric id) reports the quota too.
        let (_, tenant_json) = lab.admin("GET", "/v1/tenants/q-restart", None);
        let id = tenant_json["id"].as_u64().expect("tenant id");
        for node in ["api-0", "api-1"] {
            let (status, usage) = lab.admin_get(node, &format!("/v1/tenants/{id}/usage"));
            assert_eq!(status, 200, "{node}: {usage}");
            assert_eq!(usage["quota"]["dimensions"]["requests"]["used"].as_f64(), Some(ok as f64), "{node}: {usage}");
        }

        // The aggregator stops: each node goes on from the last total with its own answers, so
        // the tenant may get the rest of its quota from each node (bounded: rest × nodes); once
        // the aggregator is back the totals catch up and nobody is over-counted or lost.
        let key = tenant(&lab, "q-outage", rolling(json!({ "requests": 30 })));
        let url = format!("{}/v1/resize?width=8", lab.field("url"));
        for _ in 0..10 {
            assert_eq!(resize_at(&lab.agent, &url, &key, &image).0, 200);
        }
        thread::sleep(LAG);
        lab.signal("usage-0", lab::Signal::Stop);
        let (during, _, _) = exhaust(&lab, &key, "width=8", &image, 2);
        eprintln!("aggregator stopped: {during} served of the 20 left (at most 20 per node)");
        assert!((20..=40).contains(&during), "{during} served during the outage");
        lab.signal("usage-0", lab::Signal::Cont);
        lab::poll_until("the totals caught up", Duration::from_secs(30), Duration::from_millis(200), || {
            let used = used(&lab, "q-outage", "requests");
            if used == (10 + during) as f64 {
                Ok(())
            } else {
                Err(format!("used {used}"))
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log_tails()));
        refused_everywhere(&lab, &key, "width=8", &image);

        // A short rolling period opens again on both nodes.
        let key = tenant(&lab, "q-short", json!({ "period": "rolling", "period_seconds": 5, "requests": 4 }));
        fresh_window(5, Duration::from_secs(4));
        let (ok, _, last) = exhaust(&lab, &key, "width=8", &image, 1);
        assert!(ok >= 4, "{ok}");
        let wait = last["retry_after_ms"].as_u64().expect("retry_after_ms");
        assert!(wait <= 5000, "{last}");
        thread::sleep(Duration::from_millis(wait + 50));
        for node in ["api-0", "api-1"] {
            let url = format!("{}/v1/resize?width=8", lab.url_of(node, "http"));
            assert_eq!(resize_at(&lab.agent, &url, &key, &image).0, 200, "{node}: the next window is open");
        }
    }
}
