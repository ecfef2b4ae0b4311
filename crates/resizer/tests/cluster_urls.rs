//! Signed GET URLs in the lab cluster: through HAProxy over TLS, the source fetched once per api
//! node (each has its own source cache) however many sizes and requests follow, 304s through
//! the balancer, and a revoked signing key refused by every api node within a second (p99 over
//! 20 trials, as for API keys).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{percentile, sample_jpeg, until_every_node_refuses, Lab};
use common::origin::TestOrigin;
use serde_json::json;

const NODES: [&str; 2] = ["api-0", "api-1"];

fn sign(key_id: &str, secret: &str, options: &str, source: &str) -> String {
    let key = key_id.parse().expect("key id");
    api::signed_path(key, &api::KeySecret::from_hex(secret).expect("secret"), options, source)
}

/// GET `url` with optional `If-None-Match`: (status, ETag, problem type or "").
fn get(lab: &Lab, url: &str, etag: Option<&str>) -> (u16, String, String) {
    let mut request = lab.agent.get(url);
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    match request.call() {
        Ok(mut r) => {
            let status = r.status().as_u16();
            let tag = r.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            let body = r.body_mut().with_config().limit(16 << 20).read_to_vec().unwrap_or_default();
            let problem: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let kind =
                problem["type"].as_str().unwrap_or_default().trim_start_matches("urn:resizer:problem:").to_owned();
            (status, tag, kind)
        }
        Err(e) => panic!("GET {url}: {e}"),
    }
}

fn signing_key(lab: &Lab, label: &str) -> (String, String) {
    let (status, key) =
        lab.admin("POST", "/v1/tenants/shop/keys", Some(json!({ "label": label, "purpose": "signing" })));
    assert_eq!(status, 201, "{key}");
    (key["id"].as_str().expect("id").to_owned(), key["signing_secret"].as_str().expect("secret").to_owned())
}

#[test]
fn signed_urls_through_haproxy_fetch_once_per_node_and_a_revoked_key_stops_everywhere_within_a_second() {
    let origin = TestOrigin::start();
    origin.put_image("/photo.jpg", &sample_jpeg(), "\"v1\"");
    let allow = format!("sources.allow_private={}", origin.addr);
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "1", "--set", &allow]);
    let (status, tenant) = lab.admin(
        "POST",
        "/v1/tenants",
        Some(json!({ "name": "shop", "limits": { "sources": [format!("{}/", origin.base())] } })),
    );
    assert_eq!(status, 201, "{tenant}");
    let (key_id, secret) = signing_key(&lab, "pages");
    let source = format!("{}/photo.jpg", origin.base());
    let path = sign(&key_id, &secret, "width=64,format=jpeg", &source);

    // The key reaches each api node by the identity bucket.
    let until = Instant::now() + Duration::from_secs(10);
    for node in NODES {
        let url = format!("{}{path}", lab.url_of(node, "http"));
        while get(&lab, &url, None).0 != 200 {
            assert!(Instant::now() < until, "the signing key never reached {node}\n{}", lab.log_tails());
            thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(origin.requests("/photo.jpg"), 2, "one fetch per api node");

    // Through HAProxy: sizes and repeats come from each node's source cache.
    let balancer = lab.field("url");
    let mut etag = String::new();
    for width in [64, 96, 128, 64, 96, 128, 64, 96] {
        let (status, tag, problem) = get(
            &lab,
            &format!("{balancer}{}", sign(&key_id, &secret, &format!("width={width},format=jpeg"), &source)),
            None,
        );
        assert_eq!(status, 200, "{problem}");
        if width == 64 {
            etag = tag;
        }
    }
    assert_eq!(origin.requests("/photo.jpg"), 2, "no fetch beyond one per node");
    let (status, _, _) = get(&lab, &format!("{balancer}{path}"), Some(&etag));
    assert_eq!(status, 304, "a revalidation through HAProxy");

    // Revocation: 20 signing keys, each seen working on both nodes (a 304: no conversion), then
    // revoked, until both refuse it.
    let mut delays = Vec::new();
    for trial in 0..20 {
        let (id, secret) = signing_key(&lab, &format!("trial-{trial}"));
        let path = sign(&id, &secret, "width=64,format=jpeg", &source);
        let until = Instant::now() + Duration::from_secs(5);
        for node in NODES {
            let url = format!("{}{path}", lab.url_of(node, "http"));
            while get(&lab, &url, Some(&etag)).0 != 304 {
                assert!(Instant::now() < until, "key {trial} never reached {node}\n{}", lab.log_tails());
                thread::sleep(Duration::from_millis(5));
            }
        }
        let revoked_at = Instant::now();
        let (status, body) = lab.admin("POST", &format!("/v1/keys/{id}/revoke"), None);
        assert_eq!(status, 200, "{body}");
        delays.push(until_every_node_refuses(&NODES, revoked_at, Duration::from_secs(10), |node| {
            let (status, _, problem) = get(&lab, &format!("{}{path}", lab.url_of(node, "http")), Some(&etag));
            status == 403 && problem == "revoked-key"
        }));
    }
    let p50 = percentile(delays.clone(), 0.50);
    let p99 = percentile(delays.clone(), 0.99);
    eprintln!(
        "signing key revocation reached both api nodes: p50 {p50:?}, p99 {p99:?}, max {:?} over {} trials",
        delays.iter().max().expect("trials"),
        delays.len()
    );
    assert!(p99 <= Duration::from_secs(1), "revocation p99 {p99:?} over 1 s: {delays:?}");
}
