//! The usage archive on S3-compatible storage: `resizer dev` with `usage.archive_url =
//! s3://bucket/prefix` against moto's S3 server (PyPI `moto[server]`, which scripts/test.sh
//! installs into target/s3-venv; RESIZER_TEST_MOTO_SERVER names another `moto_server`). The
//! records land as Parquet objects in the documented tenant/date layout, nothing is archived
//! locally, and the admin audit reads them back from the bucket. And signed URLs' sources in a
//! bucket the deployment registered (`sources.buckets`).

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::{png, DevServer};
use serde_json::json;

const BUCKET: &str = "resizer-usage";

/// A `moto_server` on a free loopback port, stopped on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Moto {
    fn start() -> anyhow::Result<Moto> {
        let program = std::env::var_os("RESIZER_TEST_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/s3-venv/bin/moto_server"));
        if !program.exists() {
            bail!(
                "no S3-compatible server for this test: {} does not exist. scripts/test.sh installs it \
                 (python3 -m venv target/s3-venv && target/s3-venv/bin/pip install 'moto[server]'), \
                 or set RESIZER_TEST_MOTO_SERVER to a moto_server",
                program.display()
            );
        }
        let port = lab::free_port()?;
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut moto = Moto { child, url: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        while ureq::get(&moto.url).call().is_err() {
            if let Some(status) = moto.child.try_wait()? {
                bail!("moto_server exited with {status} before answering");
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("moto_server did not answer at {} within 30 s", moto.url);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    /// The object keys under `prefix` (one listing page: this test writes few).
    fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let url = format!("{}/{BUCKET}?list-type=2&prefix={prefix}", self.url);
        let body = ureq::get(&url).call()?.body_mut().read_to_string()?;
        Ok(body.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).map(str::to_owned).collect())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_usage_archive_goes_to_s3_compatible_storage_and_the_audit_reads_it_back() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    ureq::put(&format!("{}/{BUCKET}", moto.url)).send_empty().context("creating the bucket")?;
    let url = format!("usage.archive_url=s3://{BUCKET}/archive");
    let options = format!(
        "usage.archive_options=endpoint={},region=us-east-1,access_key_id=test,secret_access_key=test,allow_http=true",
        moto.url
    );
    let server = DevServer::start(&["usage.batch_max_age_ms=100", &url, &options])?;
    let (tenant, key) = server.tenant_with_key("s3-tenant", json!({}));

    let mut sent = HashSet::new();
    for i in 0..20 {
        let id = format!("s3-{i}");
        let r = server.resize("width=10", Some(&key), &png(40, 30), &[("x-request-id", &id)]);
        assert_eq!(r.status, 200, "{id}");
        sent.insert(id);
    }
    let r = server.resize("width=0", Some(&key), &png(40, 30), &[("x-request-id", "s3-bad")]);
    assert_eq!(r.status, 400);
    sent.insert("s3-bad".to_owned());

    // The admin audit reads the archive, i.e. the bucket: every request, once.
    let started = Instant::now();
    let records = loop {
        let r = server.admin("GET", &format!("/v1/tenants/{tenant}/audit?limit=1000"), None);
        let records = r.json()["records"].as_array().cloned().unwrap_or_default();
        if r.status == 200 && records.len() >= sent.len() {
            break records;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the audit did not show {} records within 30 s (last: {} {})", sent.len(), r.status, r.json());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ids: Vec<&str> = records.iter().filter_map(|r| r["request_id"].as_str()).collect();
    assert_eq!(ids.len(), sent.len(), "a request recorded twice");
    assert_eq!(ids.into_iter().map(str::to_owned).collect::<HashSet<_>>(), sent);

    // The objects are in the bucket, in the documented layout; nothing went to a local archive.
    let keys = moto.keys(&format!("archive/tenant={tenant}/"))?;
    assert!(!keys.is_empty(), "no objects under archive/tenant={tenant}/");
    for key in &keys {
        assert!(key.contains("/date=") && key.ends_with(".parquet"), "unexpected object {key}");
    }
    assert!(!server.data_dir().join("archive").exists(), "a local archive was written too");
    Ok(())
}

const SAMPLE: &[u8] = include_bytes!("../../../examples/sample.jpg");

/// Signed GET URLs whose source is in an S3-compatible bucket the deployment registered
/// (`sources.buckets`, here moto's): the tenant names it `s3://photos/<key>`, its allow-list
/// holds a prefix of it, and the node reads the object with the deployment's credentials. The
/// object is read once per node (its ETag kept, a 304 answered without reading it), the prefix,
/// missing objects and the tenant's byte limit are refused with their problems, and the usage
/// record carries the bytes read.
#[test]
fn signed_urls_read_sources_from_a_registered_bucket_within_the_tenants_prefix() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    let bucket = "tenant-originals";
    let put = |key: &str, bytes: &[u8]| {
        ureq::put(&format!("{}/{bucket}/{key}", moto.url)).send(bytes).with_context(|| format!("putting {key}"))
    };
    ureq::put(&format!("{}/{bucket}", moto.url)).send_empty().context("creating the bucket")?;
    put("shop/photo.jpg", SAMPLE)?;
    put("shop/huge.jpg", &[0u8; 120_000])?;
    put("other-tenant/secret.jpg", SAMPLE)?;
    let buckets = format!(
        "sources.buckets=photos=s3://{bucket} endpoint={},region=us-east-1,access_key_id=test,\
         secret_access_key=test,allow_http=true",
        moto.url
    );
    let server = DevServer::start(&[&buckets])?;
    let created = server.admin(
        "POST",
        "/v1/tenants",
        Some(json!({ "name": "shop", "limits": { "sources": ["s3://photos/shop/"], "max_input_bytes": 100_000 } })),
    );
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let tenant = created.json()["id"].as_u64().context("tenant id")?;
    let key = server.admin(
        "POST",
        &format!("/v1/tenants/{tenant}/keys"),
        Some(json!({ "label": "pages", "purpose": "signing" })),
    );
    assert_eq!(key.status, 201, "{}", String::from_utf8_lossy(&key.body));
    let (key_id, secret) = (
        key.json()["id"].as_str().context("key id")?.parse()?,
        api::KeySecret::from_hex(key.json()["signing_secret"].as_str().context("secret")?).context("a hex secret")?,
    );
    let sign = |options: &str, source: &str| api::signed_path(key_id, &secret, options, source);
    let problem = |path: &str| {
        let r = server.get(path);
        (r.status, r.json()["type"].as_str().unwrap_or_default().rsplit(':').next().unwrap_or_default().to_owned())
    };

    let path = sign("width=100,format=jpeg", "s3://photos/shop/photo.jpg");
    let first = server.get(&path);
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    assert_eq!(imaging::probe(&first.body).map(|p| p.width).ok(), Some(100));
    let etag = first.header("etag").context("an ETag")?.to_owned();
    assert!(first.header("last-modified").is_some_and(|l| l.ends_with(" GMT")), "{:?}", first.header("last-modified"));
    let second = server.get(&sign("width=50,format=jpeg", "s3://photos/shop/photo.jpg"));
    assert_eq!(second.status, 200);
    let revalidated = server.get_with_headers(&path, &[("if-none-match", &etag)]);
    assert_eq!(revalidated.status, 304);
    assert_eq!(server.metric("resizer_sources_total{outcome=\"fetched\"}"), 1.0, "read from the bucket once");
    assert_eq!(server.metric("resizer_sources_total{outcome=\"hit\"}"), 1.0);

    assert_eq!(problem(&sign("width=100", "s3://photos/other-tenant/secret.jpg")), (403, "source-not-allowed".into()));
    assert_eq!(
        problem(&sign("width=100", "s3://photos/shop/../other-tenant/secret.jpg")),
        (403, "source-not-allowed".into())
    );
    assert_eq!(problem(&sign("width=100", "s3://photos/shop/missing.jpg")), (404, "source-not-found".into()));
    assert_eq!(problem(&sign("width=100", "s3://photos/shop/huge.jpg")), (413, "too-large".into()));
    assert_eq!(problem(&sign("width=100", "s3://photos/shop/a%2F..%2F..%2Fx.jpg")), (400, "bad-source-url".into()));

    // The record of the first GET carries the object's bytes as read from the bucket.
    let started = Instant::now();
    loop {
        let audit = server.admin("GET", &format!("/v1/tenants/{tenant}/audit?limit=100"), None);
        let records = audit.json()["records"].as_array().cloned().unwrap_or_default();
        let fetched: Vec<u64> =
            records.iter().filter(|r| r["source"] == "fetched").filter_map(|r| r["source_bytes"].as_u64()).collect();
        if fetched == [SAMPLE.len() as u64] {
            break;
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("no record of one fetch of {} bytes: {records:?}", SAMPLE.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
