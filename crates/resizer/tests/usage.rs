//! Metering and audit end to end: what the clients saw equals what the rollups count and what the
//! audit holds, per tenant, also across `kill -9`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{png, wait_for, DevServer};
use serde_json::json;

type Result = anyhow::Result<()>;

/// What one tenant's clients saw.
#[derive(Default, Debug)]
struct Seen {
    by_status: BTreeMap<u16, u64>,
    output_bytes_200: u64,
    input_bytes_200: u64,
    request_ids: HashSet<String>,
}

#[test]
fn rollups_and_audit_match_what_each_tenant_saw_and_stay_private() -> Result {
    let server = DevServer::start(&["usage.batch_max_age_ms=100"])?;
    let (a, key_a) = server.tenant_with_key("alpha", json!({}));
    let (b, key_b) = server.tenant_with_key("bravo", json!({ "max_input_bytes": 3000 }));
    let (c, key_c) = server.tenant_with_key("charlie", json!({ "rate_per_sec": 0.001, "burst": 3 }));
    let image = png(120, 80);
    let big = png(400, 400);
    let mut corrupt = png(64, 64);
    let len = corrupt.len();
    corrupt[len / 2..len - 12].iter_mut().for_each(|x| *x = 0x5a);
    let padding = vec![0u8; 5000];
    // A header that declares 40000 x 40000 pixels and nothing after it: refused 413, its record
    // keeps the declared pixels, which must not be billed.
    let forged = png_header_only(40_000, 40_000);
    let cases: Vec<(&str, &[u8])> = vec![
        ("width=10", &padding),
        ("width=40", &image),
        ("width=30&format=webp", &image),
        ("width=20&format=jpeg&quality=60", &big),
        ("width=10", b"not an image at all"),
        ("width=10", &corrupt),
        ("width=0", &image),
        ("width=10&bogus=1", &image),
        ("width=10", &forged),
    ];
    let mut seen: HashMap<u64, Seen> = HashMap::new();
    for (tenant, key) in [(a, &key_a), (b, &key_b), (c, &key_c)] {
        for round in 0..3 {
            for (query, body) in &cases {
                let r = server.resize(
                    query,
                    Some(key),
                    body,
                    &[("x-request-id", &format!("t{tenant}-{round}-{query}-{}", body.len()))],
                );
                let s = seen.entry(tenant).or_default();
                *s.by_status.entry(r.status).or_default() += 1;
                if r.status == 200 {
                    s.output_bytes_200 += r.body.len() as u64;
                    s.input_bytes_200 += body.len() as u64;
                }
                s.request_ids.insert(r.header("x-request-id").expect("id").to_owned());
            }
        }
    }
    // The three limits were really hit, so every kind of answer is in the data.
    assert!(seen[&b].by_status.contains_key(&413), "{:?}", seen[&b]);
    assert!(seen[&c].by_status.contains_key(&429), "{:?}", seen[&c]);
    for status in [200, 400, 413, 415, 422] {
        assert!(seen[&a].by_status.contains_key(&status), "{:?}", seen[&a]);
    }

    for (tenant, key) in [(a, &key_a), (b, &key_b), (c, &key_c)] {
        let want = &seen[&tenant];
        let total: u64 = want.by_status.values().sum();
        // The caller's own usage, through the public API with its own key.
        let usage = wait_for(|| {
            let r = server.get_with_key("/v1/usage?granularity=day", key);
            (r.status == 200 && r.json()["total"]["requests"].as_u64() == Some(total)).then(|| r.json())
        })?;
        assert_eq!(usage["tenant"].as_u64(), Some(tenant), "only the caller's tenant");
        let mut by_status = BTreeMap::new();
        for bucket in usage["buckets"].as_array().expect("buckets") {
            for (status, t) in bucket["by_status"].as_object().expect("by_status") {
                *by_status.entry(status.parse::<u16>()?).or_insert(0) += t["requests"].as_u64().unwrap_or(0);
            }
        }
        assert_eq!(by_status, want.by_status, "tenant {tenant}: counts by status");
        let ok = usage["buckets"][0]["by_status"]["200"].clone();
        if want.by_status.contains_key(&200) {
            assert_eq!(ok["output_bytes"].as_u64(), Some(want.output_bytes_200), "tenant {tenant}: bytes sent back");
            assert_eq!(ok["input_bytes"].as_u64(), Some(want.input_bytes_200), "tenant {tenant}: bytes received");
            // Billed: the 200s and nothing else, in the bucket and in the range's sum.
            assert_eq!(usage["buckets"][0]["billable"], ok, "tenant {tenant}: billable bucket");
            assert_eq!(usage["billable"], ok, "tenant {tenant}: billable");
        }
        let megapixels = |v: &serde_json::Value| v["input_megapixels"].as_f64().unwrap_or(f64::NAN);
        if tenant != c {
            // Three forged headers of 1,600 MP each: in the total, as declared, never billed.
            assert!(megapixels(&usage["total"]) >= 4800.0, "tenant {tenant}: {}", usage["total"]);
            assert!(megapixels(&usage["billable"]) < 1.0, "tenant {tenant}: {}", usage["billable"]);
        }

        // The audit, one record per request id, and nothing of another tenant.
        let audit = wait_for(|| {
            let r = server.admin("GET", &format!("/v1/tenants/{tenant}/audit?limit=10000"), None);
            (r.status == 200 && r.json()["records"].as_array().is_some_and(|l| l.len() as u64 >= total))
                .then(|| r.json())
        })?;
        let records = audit["records"].as_array().expect("records");
        let ids: Vec<&str> = records.iter().filter_map(|r| r["request_id"].as_str()).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(ids.len(), unique.len(), "tenant {tenant}: a request recorded twice");
        let want_ids: HashSet<&str> = want.request_ids.iter().map(String::as_str).collect();
        assert_eq!(unique, want_ids, "tenant {tenant}: audit ≠ requests");
        assert!(records.iter().all(|r| r["tenant"].as_u64() == Some(tenant)));
    }

    // Tenant A's key on every read path: its own usage only, never an admin route.
    let r = server.get_with_key("/v1/usage?tenant=2", &key_a);
    assert_eq!(r.status, 400, "no way to name another tenant");
    for path in [format!("/v1/tenants/{b}/usage"), format!("/v1/tenants/{b}/audit"), format!("/v1/tenants/{a}/audit")] {
        let r = server.admin_with_token("GET", &path, None, &key_a);
        assert_eq!(r.status, 401, "{path} with an API key");
    }
    let r = server.get("/v1/usage");
    assert_eq!(r.status, 401);
    Ok(())
}

/// A PNG signature and header chunk declaring `width` x `height`, with no image data.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    drop(encoder.write_header().expect("png header"));
    out
}

/// kill -9 at random moments under load, five times, then a clean start: every 200 a client saw
/// has exactly one audit record, and the rollups count each record once. The open batch in shared
/// memory (`/dev/shm`, the default).
#[test]
fn every_answered_request_survives_kill_9_exactly_once() -> Result {
    kill_9_five_times_under_load("usage.spool_memory_dir=/dev/shm")
}

/// The same with every record written to the spool file by write(2) (no memory dir).
#[test]
fn every_answered_request_survives_kill_9_exactly_once_without_shared_memory() -> Result {
    kill_9_five_times_under_load("usage.spool_memory_dir=")
}

fn kill_9_five_times_under_load(spool_memory: &str) -> Result {
    let sets = ["limits.rate_per_sec=100000", "limits.burst=100000", "usage.batch_max_age_ms=150", spool_memory];
    let mut server = DevServer::start(&sets)?;
    let key = server.demo_key.clone();
    let ok_ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let image = Arc::new(png(64, 48));
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..5 {
        let running = Arc::new(AtomicBool::new(true));
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (url, key, image, ok_ids, running) =
                    (server.api_url.clone(), key.clone(), image.clone(), ok_ids.clone(), running.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(5)))
                        .build()
                        .into();
                    let mut n = 0;
                    // Paced and capped, so the whole audit fits one read (10,000 records).
                    while running.load(Ordering::Relaxed) && n < 400 {
                        std::thread::sleep(Duration::from_millis(2));
                        n += 1;
                        let id = format!("r{round}-c{c}-{n}");
                        let sent = agent
                            .post(format!("{url}/v1/resize?width=32"))
                            .header("authorization", &format!("Bearer {key}"))
                            .header("x-request-id", &id)
                            .send(&image[..]);
                        match sent {
                            Ok(mut r) if r.status() == 200 => {
                                // Counted only once the whole answer arrived, as a client would.
                                if r.body_mut().read_to_vec().is_ok() {
                                    ok_ids.lock().expect("lock").push(id);
                                }
                            }
                            Ok(_) => {}
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            })
            .collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(200 + seed % 600));
        server.kill9()?;
        running.store(false, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client thread");
        }
        let dir = std::mem::replace(&mut server.dir, common::TempDir::new());
        server = DevServer::start_in(dir, &sets)?;
    }
    let ok_ids = ok_ids.lock().expect("lock").clone();
    assert!(ok_ids.len() > 50, "the load produced only {} answers", ok_ids.len());

    let tenant = 1;
    let records = wait_for(|| {
        let r = server.admin("GET", &format!("/v1/tenants/{tenant}/audit?limit=10000"), None);
        let records = r.json()["records"].as_array().cloned().unwrap_or_default();
        let ids: HashSet<String> = records.iter().filter_map(|r| r["request_id"].as_str().map(str::to_owned)).collect();
        ok_ids.iter().all(|id| ids.contains(id)).then_some(records)
    })?;
    let mut count: HashMap<&str, usize> = HashMap::new();
    for r in &records {
        *count.entry(r["request_id"].as_str().unwrap_or("")).or_default() += 1;
    }
    for id in &ok_ids {
        assert_eq!(count.get(id.as_str()), Some(&1), "{id}: answered 200, recorded {:?} times", count.get(id.as_str()));
    }
    let recorded_200 = records.iter().filter(|r| r["status"].as_u64() == Some(200)).count() as u64;
    let usage = server.get_with_key("/v1/usage?granularity=day", &key).json();
    let counted_200: u64 = usage["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| b["by_status"]["200"]["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted_200, recorded_200, "rollups count each audit record once");
    assert!(counted_200 >= ok_ids.len() as u64);
    Ok(())
}

#[test]
fn admin_cli_shows_usage_and_audit_as_tables_and_json() -> Result {
    let server = DevServer::start(&["usage.batch_max_age_ms=100"])?;
    let r = server.resize("width=16", Some(&server.demo_key), &png(40, 30), &[("x-request-id", "cli-check-1")]);
    assert_eq!(r.status, 200);
    // A client that reuses its request id: both requests are in the audit (that two such
    // records of one batch and millisecond stay apart is the archive's unit test).
    for _ in 0..2 {
        let r = server.resize("width=8", Some(&server.demo_key), &png(40, 30), &[("x-request-id", "cli-check-2")]);
        assert_eq!(r.status, 200);
    }
    let cli = |args: &[&str]| server.admin_cli(args);
    let audit = wait_for(|| {
        let out = cli(&["audit", "demo", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["records"].as_array()?.len() == 3).then_some(v)
    })?;
    assert_eq!(audit["records"][0]["request_id"], "cli-check-1");
    assert_eq!(audit["records"][0]["output_width"], 16);
    assert_eq!(audit["truncated"], false);
    assert!(audit.get("next").is_none());
    let table = String::from_utf8(cli(&["audit", "demo"]).stdout)?;
    assert!(table.lines().any(|l| l.contains("cli-check-1") && l.contains("png 16x12")), "{table}");

    // One record per page: the table says where the next page starts, and following the
    // cursors gives the three records in order, then stops.
    let table = String::from_utf8(cli(&["audit", "demo", "--limit", "1"]).stdout)?;
    assert!(table.contains("cli-check-1") && table.contains("--after "), "{table}");
    let (mut ids, mut after) = (Vec::new(), None::<String>);
    for _ in 0..4 {
        let mut args = vec!["audit", "demo", "--json", "--limit", "1"];
        if let Some(after) = &after {
            args.extend(["--after", after]);
        }
        let page: serde_json::Value = serde_json::from_slice(&cli(&args).stdout)?;
        ids.extend(page["records"].as_array().expect("records").iter().map(|r| r["request_id"].to_string()));
        after = page["next"].as_str().map(str::to_owned);
        if after.is_none() {
            break;
        }
    }
    assert_eq!(ids, ["\"cli-check-1\"", "\"cli-check-2\"", "\"cli-check-2\""]);
    assert_eq!(after, None, "the last page has no next");
    let out = cli(&["audit", "demo", "--after", "not-a-cursor"]);
    assert_eq!(out.status.code(), Some(1), "a made-up cursor is refused");

    let usage = String::from_utf8(cli(&["usage", "demo", "--granularity", "day"]).stdout)?;
    assert!(usage.lines().any(|l| l.starts_with("2") && l.contains(" 3 ") && l.contains("200:3")), "{usage}");
    assert!(usage.lines().any(|l| l.starts_with("total")), "{usage}");
    assert!(usage.lines().any(|l| l.starts_with("billable (200)") && l.contains(" 3 ")), "{usage}");
    let out = cli(&["usage", "demo", "--granularity", "week"]);
    assert_eq!(out.status.code(), Some(1), "a bad granularity is refused");
    Ok(())
}

/// A tenant reads its own recent requests (`GET /v1/audit`) and limits (`GET /v1/limits`) with
/// its API key: only its own records, never another tenant's, and its own limits with the rate
/// limit's tokens as this node holds them.
#[test]
fn a_tenant_reads_its_own_audit_and_limits_and_nothing_of_another_tenant() -> Result {
    let server = DevServer::start(&["usage.batch_max_age_ms=100"])?;
    // A rate so slow that no token comes back during the test: what was taken stays taken.
    let (_, slow_key) = server.tenant_with_key("own-slow", json!({ "rate_per_sec": 0.001, "burst": 5 }));
    let (_, other_key) = server.tenant_with_key("own-other", json!({}));
    let image = png(40, 30);
    for (key, id) in [(&slow_key, "own-a-1"), (&slow_key, "own-a-2"), (&other_key, "own-b-1")] {
        assert_eq!(server.resize("width=10", Some(key), &image, &[("x-request-id", id)]).status, 200, "{id}");
    }
    let ids = |key: &str| -> Option<Vec<String>> {
        let answer = server.get_with_key("/v1/audit?limit=100", key);
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
        let records = answer.json()["records"].as_array().cloned().unwrap_or_default();
        let mut ids: Vec<String> = records.iter().filter_map(|r| r["request_id"].as_str().map(str::to_owned)).collect();
        ids.sort();
        (!ids.is_empty()).then_some(ids)
    };
    assert_eq!(wait_for(|| ids(&slow_key).filter(|i| i.len() == 2))?, ["own-a-1", "own-a-2"]);
    assert_eq!(wait_for(|| ids(&other_key))?, ["own-b-1"]);
    let refused = server.get_with_key("/v1/audit?tenant=2", &slow_key);
    assert_eq!(refused.status, 400, "no parameter names a tenant");
    assert_eq!(server.get("/v1/audit").status, 401);

    let limits = server.get_with_key("/v1/limits", &slow_key).json();
    assert_eq!(limits["limits"]["burst"], 5, "{limits}");
    assert_eq!(limits["limits"]["rate_per_sec"], 0.001, "{limits}");
    assert_eq!(limits["rate_limit"]["api_nodes"], 1);
    assert_eq!(limits["rate_limit"]["node_available"], 3, "5 tokens, 2 taken: {limits}");
    assert_eq!(server.get_with_key("/v1/limits", &other_key).json()["limits"]["burst"], 200, "the default");
    Ok(())
}
