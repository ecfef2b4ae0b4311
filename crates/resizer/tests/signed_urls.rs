//! Signed GET URLs end to end against the real `resizer dev` and a real origin on loopback:
//! signing keys through the admin API, the signature and expiry checked before any fetch, the
//! sources a tenant allows and the addresses no tenant may reach, caching (ETag, 304 without a
//! fetch or a conversion, a changed origin giving a new ETag), metering, and the ways to sign a
//! URL that docs/urls.md shows (`resizer url`, Python, JavaScript, shell), each run and fetched.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::origin::{CountingListener, Resource, TestOrigin};
use common::{DevServer, BIN};
use serde_json::json;

const SAMPLE: &[u8] = include_bytes!("../../../examples/sample.jpg");

/// A dev server whose loopback origin is allowed as a private host, a tenant allowed to fetch
/// from it, and a signing key of that tenant: (server, tenant id, key id, secret).
fn setup(origin: &TestOrigin, extra_sources: &[String]) -> (DevServer, u64, String, String) {
    let allow = format!("sources.allow_private={}", origin.addr);
    let server = DevServer::start(&[&allow]).expect("resizer dev");
    let mut sources = vec![format!("{}/", origin.base())];
    sources.extend(extra_sources.iter().cloned());
    let created =
        server.admin("POST", "/v1/tenants", Some(json!({ "name": "shop", "limits": { "sources": sources } })));
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let tenant = created.json()["id"].as_u64().expect("tenant id");
    let (key_id, secret) = signing_key(&server, tenant);
    (server, tenant, key_id, secret)
}

fn signing_key(server: &DevServer, tenant: u64) -> (String, String) {
    let key = server.admin(
        "POST",
        &format!("/v1/tenants/{tenant}/keys"),
        Some(json!({ "label": "pages", "purpose": "signing" })),
    );
    assert_eq!(key.status, 201, "{}", String::from_utf8_lossy(&key.body));
    let body = key.json();
    assert_eq!(body["purpose"], "signing");
    assert!(body.get("key").is_none(), "a signing key's token is never shown: {body}");
    let secret = body["signing_secret"].as_str().expect("the signing secret, once").to_owned();
    assert_eq!(secret.len(), 64);
    (body["id"].as_str().expect("key id").to_owned(), secret)
}

fn sign(key_id: &str, secret: &str, options: &str, source: &str) -> String {
    let key = key_id.parse().expect("key id");
    api::signed_path(key, &api::KeySecret::from_hex(secret).expect("secret"), options, source)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn image_size(bytes: &[u8]) -> (u32, u32) {
    let probe = imaging::probe(bytes).expect("an image");
    (probe.width, probe.height)
}

#[test]
fn a_signed_url_is_resized_with_caching_headers_and_answered_304_without_a_fetch_or_a_conversion() {
    let origin = TestOrigin::start();
    origin.put_image("/photo.jpg", SAMPLE, "\"v1\"");
    let (server, tenant, key_id, secret) = setup(&origin, &[]);
    let source = format!("{}/photo.jpg", origin.base());
    let path = sign(&key_id, &secret, "width=120,format=jpeg", &source);

    let first = server.get(&path);
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(first.header("content-type"), Some("image/jpeg"));
    assert_eq!(image_size(&first.body).0, 120);
    let etag = first.header("etag").expect("an ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "a strong ETag: {etag}");
    assert_eq!(first.header("cache-control"), Some("public, max-age=31536000"));
    assert_eq!(first.header("last-modified"), Some("Sat, 05 Dec 2026 10:00:00 GMT"));
    assert_eq!(first.header("vary"), None, "the format was asked for, not negotiated");
    assert_eq!(first.header("access-control-allow-origin"), Some("*"));
    assert_eq!(origin.requests("/photo.jpg"), 1);

    // Another size of the same original: converted again, fetched once per node.
    let other_size = server.get(&sign(&key_id, &secret, "width=60,format=jpeg", &source));
    assert_eq!((other_size.status, image_size(&other_size.body).0), (200, 60));
    assert_eq!(origin.requests("/photo.jpg"), 1, "the source cache serves the second size");

    // Revalidation by a browser or CDN: 304, no fetch, no conversion.
    let conversions = server.metric("resizer_usage_total{quantity=\"output_bytes\"}");
    let again = server.get_with_headers(&path, &[("if-none-match", &etag)]);
    assert_eq!(again.status, 304, "{}", String::from_utf8_lossy(&again.body));
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(again.header("cache-control"), Some("public, max-age=31536000"));
    assert_eq!(origin.requests("/photo.jpg"), 1, "no origin fetch for a 304");
    assert_eq!(server.metric("resizer_usage_total{quantity=\"output_bytes\"}"), conversions, "no conversion for a 304");
    assert_eq!(server.metric("resizer_sources_total{outcome=\"not_modified\"}"), 1.0);
    assert_eq!(server.metric("resizer_sources_total{outcome=\"fetched\"}"), 1.0);
    assert_eq!(server.metric("resizer_sources_total{outcome=\"hit\"}"), 1.0);
    // A tag for other options does not match.
    let other =
        server.get_with_headers(&sign(&key_id, &secret, "width=121,format=jpeg", &source), &[("if-none-match", &etag)]);
    assert_eq!(other.status, 200);
    assert_ne!(other.header("etag"), Some(etag.as_str()));

    // format=auto is negotiated from Accept, and says so.
    let auto = sign(&key_id, &secret, "width=120,format=auto", &source);
    let webp = server.get_with_headers(&auto, &[("accept", "image/webp,*/*")]);
    assert_eq!(
        (webp.status, webp.header("content-type"), webp.header("vary")),
        (200, Some("image/webp"), Some("Accept"))
    );
    let jpeg = server.get_with_headers(&auto, &[("accept", "image/jpeg")]);
    assert_eq!(jpeg.header("content-type"), Some("image/jpeg"));
    assert_ne!(webp.header("etag"), jpeg.header("etag"), "what Accept decides is in the ETag");

    // Metering: the GETs are billed like POSTs (input bytes are the source's); the 304 is
    // recorded, not billed.
    // The records reach the audit once the spool's batch is applied: a moment after the answers.
    let started = Instant::now();
    let records = loop {
        let audit = server.admin("GET", &format!("/v1/tenants/{tenant}/audit?limit=100"), None);
        assert_eq!(audit.status, 200, "{}", String::from_utf8_lossy(&audit.body));
        let records = audit.json()["records"].as_array().cloned().unwrap_or_default();
        if records.len() >= 6 || started.elapsed() > Duration::from_secs(10) {
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let statuses: Vec<u64> = records.iter().filter_map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses.iter().filter(|&&s| s == 304).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 5, "{statuses:?}");
    assert!(records
        .iter()
        .filter(|r| r["status"] == 200)
        .all(|r| r["input_bytes"].as_u64() == Some(SAMPLE.len() as u64)));
    // Each record says where its source came from and what it transferred from the origin: the
    // first GET fetched the sample, the other 200s found it in the node's source cache, and the
    // 304 (answered from the cache's current validator) read no source at all.
    let sources: Vec<(u64, &str, u64)> = records
        .iter()
        .map(|r| {
            let source = r["source"].as_str().unwrap_or_else(|| panic!("a source field: {r}"));
            (r["status"].as_u64().unwrap_or(0), source, r["source_bytes"].as_u64().expect("source_bytes"))
        })
        .collect();
    let count =
        |status: u64, source: &str, bytes: u64| sources.iter().filter(|&&s| s == (status, source, bytes)).count();
    assert_eq!(count(200, "fetched", SAMPLE.len() as u64), 1, "{sources:?}");
    assert_eq!(count(200, "hit", 0), 4, "{sources:?}");
    assert_eq!(count(304, "", 0), 1, "{sources:?}");
    let usage = server.admin("GET", &format!("/v1/tenants/{tenant}/usage?granularity=day"), None);
    let usage = usage.json();
    assert_eq!(usage["billable"]["requests"].as_u64(), Some(5), "{usage}");
    assert_eq!(usage["billable"]["source_bytes"].as_u64(), Some(SAMPLE.len() as u64), "{usage}");
    assert_eq!(usage["total"]["source_bytes"].as_u64(), Some(SAMPLE.len() as u64), "{usage}");
    let day = &usage["buckets"][0];
    assert_eq!(day["by_status"]["304"]["source_bytes"].as_u64(), Some(0), "{usage}");
    assert_eq!(day["billable"]["source_bytes"].as_u64(), Some(SAMPLE.len() as u64), "{usage}");

    // A browser naming AVIF gets AVIF (`api.auto_avif`, on by default), under an ETag of its own
    // (after the metering checks above, which count the requests before it).
    let avif = server.get_with_headers(&auto, &[("accept", "image/avif,image/webp,*/*")]);
    assert_eq!(
        (avif.status, avif.header("content-type"), avif.header("vary")),
        (200, Some("image/avif"), Some("Accept"))
    );
    assert_ne!(avif.header("etag"), webp.header("etag"), "AVIF is a negotiation class of its own");
}

#[test]
fn a_changed_origin_gives_a_new_etag_after_revalidation() {
    let origin = TestOrigin::start();
    // `no-cache`: the node revalidates at every request.
    let image = |etag: &str, bytes: &[u8]| Resource::Image {
        bytes: bytes.to_vec(),
        etag: etag.to_owned(),
        cache_control: Some("no-cache".to_owned()),
    };
    origin.put("/live.jpg", image("\"a\"", SAMPLE));
    let (server, _, key_id, secret) = setup(&origin, &[]);
    let path = sign(&key_id, &secret, "width=80,format=jpeg", &format!("{}/live.jpg", origin.base()));
    let first = server.get(&path);
    assert_eq!(first.status, 200);
    let etag = first.header("etag").expect("etag").to_owned();
    // Unchanged at the origin: a 304 from it, so a 304 here, without a conversion.
    let same = server.get_with_headers(&path, &[("if-none-match", &etag)]);
    assert_eq!(same.status, 304);
    assert_eq!(server.metric("resizer_sources_total{outcome=\"revalidated\"}"), 1.0);
    // Changed at the origin: a new body, a new ETag, the client's old tag no longer matches.
    origin.put("/live.jpg", image("\"b\"", &common::png(160, 120)));
    let changed = server.get_with_headers(&path, &[("if-none-match", &etag)]);
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    assert_eq!(image_size(&changed.body), (80, 60));
}

#[test]
fn a_tampered_expired_unsigned_or_revoked_url_is_refused_before_any_fetch() {
    let origin = TestOrigin::start();
    origin.put_image("/photo.jpg", SAMPLE, "\"v1\"");
    origin.put_image("/other.jpg", SAMPLE, "\"v1\"");
    let (server, tenant, key_id, secret) = setup(&origin, &[]);
    let source = format!("{}/photo.jpg", origin.base());
    let exp = now_secs() + 3600;
    let good = sign(&key_id, &secret, &format!("width=100,exp={exp}"), &source);
    // The source segment (base64url of the source URL) of a path.
    let encoded = |s: &str| sign(&key_id, &secret, "w=1", s).rsplit('/').next().expect("a segment").to_owned();
    let (other_key, other_secret) = signing_key(&server, tenant);
    let tampered = [
        good.replace("width=100", "width=101"),
        good.replace(&format!("exp={exp}"), &format!("exp={}", exp + 1)),
        good.replace(&encoded(&source), &encoded(&format!("{}/other.jpg", origin.base()))),
        good.replace(&key_id, &other_key),
        // Signed with another key's secret under this key's id.
        sign(&key_id, &other_secret, &format!("width=100,exp={exp}"), &source),
        // No signature at all.
        good.replacen(good.split('/').nth(4).expect("the signature segment"), "unsigned", 1),
    ];
    for path in &tampered {
        let r = server.get(path);
        assert_eq!((r.status, r.problem_type().as_str()), (403, "bad-signature"), "{path}");
    }
    let expired = server.get(&sign(&key_id, &secret, &format!("width=100,exp={}", now_secs() - 1), &source));
    assert_eq!((expired.status, expired.problem_type().as_str()), (403, "url-expired"));
    let malformed = server.get("/v1/img/not-a-key/x/width=1/aGk");
    assert_eq!((malformed.status, malformed.problem_type().as_str()), (400, "bad-url"));
    assert_eq!(origin.connections(), 0, "nothing refused reached the origin");
    assert_eq!(server.metric("resizer_auth_failures_total{reason=\"bad_signature\"}"), tampered.len() as f64);

    // The signing key is no API key, and an API key's id signs nothing.
    let (_, api_key) = {
        let key = server.admin("POST", &format!("/v1/tenants/{tenant}/keys"), Some(json!({ "label": "backend" })));
        (key.json()["id"].as_str().expect("id").to_owned(), key.json()["key"].as_str().expect("token").to_owned())
    };
    let api_key_id = api_key.split('_').nth(1).expect("the id inside the key").to_owned();
    let by_api_key = server.get(&sign(&api_key_id, &secret, "width=100", &source));
    assert_eq!((by_api_key.status, by_api_key.problem_type().as_str()), (403, "bad-signature"));
    let signing_token = format!("rsz_{key_id}_{}", "x".repeat(32));
    let as_bearer = server.resize("width=10", Some(&signing_token), SAMPLE, &[]);
    assert_eq!(as_bearer.status, 401, "a signing key's id with any secret is no API key");

    // A good URL works; once its key is revoked it stops, at once in one process.
    assert_eq!(server.get(&good).status, 200);
    let revoked = server.admin("POST", &format!("/v1/keys/{key_id}/revoke"), None);
    assert_eq!(revoked.status, 200, "{}", String::from_utf8_lossy(&revoked.body));
    let after = server.get(&good);
    assert_eq!((after.status, after.problem_type().as_str()), (403, "revoked-key"));
    let suspend = server.admin("PATCH", &format!("/v1/tenants/{tenant}"), Some(json!({ "status": "suspended" })));
    assert_eq!(suspend.status, 200);
    let by_other = server.get(&sign(&other_key, &other_secret, "width=100", &source));
    assert_eq!((by_other.status, by_other.problem_type().as_str()), (403, "tenant-suspended"));
}

#[test]
fn sources_outside_the_tenants_list_or_on_private_addresses_are_refused_without_a_connection() {
    let origin = TestOrigin::start();
    let forbidden = CountingListener::start();
    let forbidden_url = format!("http://{}/x.jpg", forbidden.addr);
    origin.put("/redirect", Resource::Redirect { status: 302, location: forbidden_url.clone() });
    origin.put_image("/big.jpg", &vec![0xff; 300_000], "\"big\"");
    // The tenant lists the forbidden listener, a DNS name for loopback and the metadata
    // address: the address guard, not the list, must refuse them.
    let extra = [
        format!("http://{}/", forbidden.addr),
        format!("http://localhost:{}/", forbidden.addr.port()),
        "http://169.254.169.254/".to_owned(),
    ];
    let (server, tenant, key_id, secret) = setup(&origin, &extra);
    let get = |source: &str| server.get(&sign(&key_id, &secret, "width=50", source));
    for (source, status, problem) in [
        (forbidden_url.clone(), 403, "source-address-forbidden"),
        (format!("http://localhost:{}/x.jpg", forbidden.addr.port()), 403, "source-address-forbidden"),
        ("http://169.254.169.254/latest/meta-data/".to_owned(), 403, "source-address-forbidden"),
        (format!("{}/redirect", origin.base()), 403, "source-address-forbidden"),
        ("https://images.example.com/a.jpg".to_owned(), 403, "source-not-allowed"),
        (format!("{}/missing.jpg", origin.base()), 404, "source-not-found"),
        ("file:///etc/passwd".to_owned(), 400, "bad-source-url"),
    ] {
        let started = Instant::now();
        let r = get(&source);
        assert_eq!((r.status, r.problem_type().as_str()), (status, problem), "{source}");
        assert!(started.elapsed() < Duration::from_secs(2), "{source} took {:?}", started.elapsed());
    }
    assert_eq!(forbidden.connections(), 0, "no connection to a forbidden address, directly or by redirect");
    assert_eq!(origin.requests("/redirect"), 1);

    // The tenant's byte limit holds while the source streams in.
    let limited = server.admin(
        "PATCH",
        &format!("/v1/tenants/{tenant}"),
        Some(json!({ "limits": { "max_input_bytes": 100000 } })),
    );
    assert_eq!(limited.status, 200, "{}", String::from_utf8_lossy(&limited.body));
    let big = get(&format!("{}/big.jpg", origin.base()));
    assert_eq!((big.status, big.problem_type().as_str()), (413, "too-large"));
}

/// Every way docs/urls.md shows to sign a URL, run as written, gives a URL the server answers.
#[test]
fn resizer_url_and_the_documented_snippets_make_urls_the_server_accepts() {
    let origin = TestOrigin::start();
    origin.put_image("/photo.jpg", SAMPLE, "\"v1\"");
    let (server, _, key_id, secret) = setup(&origin, &[]);
    let source = format!("{}/photo.jpg", origin.base());
    let options = "width=90,format=png";

    let cli = Command::new(BIN)
        .args([
            "url",
            "--key-id",
            &key_id,
            "--options",
            options,
            "--expires-in",
            "600",
            "--base",
            &server.api_url,
            &source,
        ])
        .env("RESIZER_URL_SECRET", &secret)
        .output()
        .expect("resizer url");
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let mut urls = vec![("resizer url".to_owned(), String::from_utf8_lossy(&cli.stdout).trim().to_owned())];

    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/urls.md"))
        .expect("docs/urls.md");
    for (language, program) in [("python", ["python3", "-c"]), ("js", ["node", "-e"]), ("sh", ["sh", "-c"])] {
        let code = tested_snippet(&doc, language);
        let out = Command::new(program[0])
            .args([program[1], &code])
            .env("KEY_ID", &key_id)
            .env("SECRET", &secret)
            .env("OPTIONS", options)
            .env("SOURCE", &source)
            .env("BASE", &server.api_url)
            .output()
            .unwrap_or_else(|e| panic!("{} is needed to run the {language} snippet: {e}", program[0]));
        assert!(out.status.success(), "{language}: {}", String::from_utf8_lossy(&out.stderr));
        urls.push((language.to_owned(), String::from_utf8_lossy(&out.stdout).trim().to_owned()));
    }
    for (how, url) in &urls {
        let path = url.strip_prefix(&server.api_url).unwrap_or_else(|| panic!("{how}: {url}"));
        let r = server.get(path);
        assert_eq!(r.status, 200, "{how}: {url}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!((r.header("content-type"), image_size(&r.body).0), (Some("image/png"), 90), "{how}");
    }
    // The snippets sign the same bytes as the server's own code.
    let expected = format!("{}{}", server.api_url, sign(&key_id, &secret, options, &source));
    for (how, url) in &urls[1..] {
        assert_eq!(url, &expected, "{how}");
    }
}

/// The fenced block of `language` that follows a `<!-- tested -->` line in the doc.
fn tested_snippet(doc: &str, language: &str) -> String {
    let fence = format!("<!-- tested -->\n```{language}\n");
    let start =
        doc.find(&fence).unwrap_or_else(|| panic!("docs/urls.md has no tested {language} snippet")) + fence.len();
    let end = doc[start..].find("```").expect("the snippet's end") + start;
    doc[start..end].to_owned()
}
