//! API key lifetimes, rotation and the admin log, against the real `resizer dev`: a key with a
//! short lifetime works and is then refused as expired; a rotated key's old secret works through
//! its grace and not after, the new one throughout; bad lifetimes are 400s that write nothing;
//! admin writes are logged with their operator, and a read-only token's write attempt is not.
//! And in the lab cluster (`resizer lab up`): an expiry set at the identity service holds on
//! every api node, which learn it through the identity bucket.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Lab;
use common::{png, DevServer, Response};
use serde_json::{json, Value};

type Result = anyhow::Result<()>;

const READ_TOKEN: &str = "rszr_KeysReadOnly0123456789abcdefghij";

fn body(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A resize with `key`: 200 while it works.
fn resize_status(server: &DevServer, key: &str) -> (u16, String) {
    let r = server.resize("width=10", Some(key), &png(40, 40), &[]);
    let problem = if r.status == 200 { String::new() } else { r.problem_type() };
    (r.status, problem)
}

/// Polls until `key` is refused (at most `within`), returning the refusal.
fn wait_until_refused(server: &DevServer, key: &str, within: Duration) -> (u16, String, Duration) {
    let started = Instant::now();
    loop {
        let (status, problem) = resize_status(server, key);
        if status != 200 || started.elapsed() > within {
            return (status, problem, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn new_tenant(server: &DevServer, name: &str) -> u64 {
    let created = server.admin("POST", "/v1/tenants", Some(json!({ "name": name })));
    assert_eq!(created.status, 201, "{}", body(&created));
    created.json()["id"].as_u64().expect("tenant id")
}

#[test]
fn a_key_with_a_short_lifetime_works_and_then_is_refused_as_expired() -> Result {
    let server = DevServer::start(&[])?;
    let tenant = new_tenant(&server, "short-lived");
    let created = server.admin(
        "POST",
        &format!("/v1/tenants/{tenant}/keys"),
        Some(json!({ "label": "brief", "expires_in_s": 2 })),
    );
    assert_eq!(created.status, 201, "{}", body(&created));
    let key = created.json()["key"].as_str().expect("the key").to_owned();
    let expires_at = created.json()["expires_at"].as_str().expect("an expiry").to_owned();
    let listed = server.admin("GET", &format!("/v1/tenants/{tenant}/keys"), None).json();
    assert_eq!(listed["keys"][0]["expires_at"].as_str(), Some(expires_at.as_str()), "{listed}");

    assert_eq!(resize_status(&server, &key), (200, String::new()), "the key works before its expiry");
    let (status, problem, after) = wait_until_refused(&server, &key, Duration::from_secs(10));
    assert_eq!((status, problem.as_str()), (401, "key-expired"), "after {after:?}");
    assert!(after < Duration::from_secs(3), "refused {after:?} after the first try, expected about 2 s");
    let r = server.resize("width=10", Some(&key), &png(40, 40), &[]);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("expired")), "{}", body(&r));
    assert!(server.metric("resizer_auth_failures_total{reason=\"expired\"}") >= 2.0, "expired keys are counted");

    // The CLI's list shows the expiry; a key without one says so.
    let cli = server.admin_cli(&["keys", "list", &tenant.to_string()]);
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success() && table.contains("expires") && table.contains(&expires_at), "{table}");
    let cli = server.admin_cli(&["keys", "create", &tenant.to_string(), "--label", "monthly", "--expires-in", "30d"]);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let printed: Value = serde_json::from_slice(&cli.stdout)?;
    let monthly = printed["expires_at"].as_str().expect("an expiry").to_owned();
    assert!(monthly.as_str() > expires_at.as_str(), "{monthly} vs {expires_at}");
    Ok(())
}

#[test]
fn a_rotated_key_works_through_its_grace_and_then_only_the_new_one_does() -> Result {
    let server = DevServer::start(&[])?;
    let (tenant, old_key) = server.tenant_with_key("rotating", json!({}));
    let old_id = old_key.split('_').nth(1).expect("key id").to_owned();

    let cli = server.admin_cli(&["keys", "rotate", &old_id, "--grace", "2s"]);
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let rotated: Value = serde_json::from_slice(&cli.stdout)?;
    let new_key = rotated["key"].as_str().expect("the new key").to_owned();
    assert_ne!(new_key, old_key);
    assert_eq!(rotated["label"], "test", "the old key's label: {rotated}");
    assert_eq!(rotated["tenant_id"].as_u64(), Some(tenant));
    assert_eq!(rotated["expires_at"], Value::Null);
    assert_eq!(rotated["old_key"]["id"].as_str(), Some(old_id.as_str()));
    assert!(rotated["old_key"]["expires_at"].is_string(), "{rotated}");

    // Both work during the grace; then only the new one.
    assert_eq!(resize_status(&server, &old_key), (200, String::new()), "the old key during its grace");
    assert_eq!(resize_status(&server, &new_key), (200, String::new()));
    let (status, problem, after) = wait_until_refused(&server, &old_key, Duration::from_secs(10));
    assert_eq!((status, problem.as_str()), (401, "key-expired"), "after {after:?}");
    assert_eq!(resize_status(&server, &new_key), (200, String::new()), "the new key after the grace");

    // An expired key cannot be rotated again, nor a revoked one; an unknown one is not found.
    let again = server.admin("POST", &format!("/v1/keys/{old_id}/rotate"), Some(json!({ "old_key_valid_for_s": 60 })));
    assert_eq!((again.status, again.problem_type().as_str()), (409, "conflict"), "{}", body(&again));
    let new_id = new_key.split('_').nth(1).expect("key id").to_owned();
    let revoked = server.admin("POST", &format!("/v1/keys/{new_id}/revoke"), None);
    assert_eq!(revoked.status, 200, "{}", body(&revoked));
    let again = server.admin("POST", &format!("/v1/keys/{new_id}/rotate"), Some(json!({ "old_key_valid_for_s": 60 })));
    assert_eq!((again.status, again.problem_type().as_str()), (409, "conflict"), "{}", body(&again));
    let detail = again.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("revoked") && detail.contains(&new_id), "{detail}");
    let unknown = server.admin("POST", "/v1/keys/ZZZZZZZZZZZZ/rotate", Some(json!({ "old_key_valid_for_s": 60 })));
    assert_eq!((unknown.status, unknown.problem_type().as_str()), (404, "not-found"));
    // Two keys only: the original and the rotation's new one.
    let keys = server.admin("GET", &format!("/v1/tenants/{tenant}/keys"), None).json();
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(2), "{keys}");
    Ok(())
}

#[test]
fn bad_lifetimes_and_graces_are_400s_that_write_nothing() -> Result {
    let server = DevServer::start(&[])?;
    let (tenant, key) = server.tenant_with_key("strict", json!({}));
    let key_id = key.split('_').nth(1).expect("key id").to_owned();
    let create = format!("/v1/tenants/{tenant}/keys");
    for bad in [
        json!({ "expires_in_s": -5 }),
        json!({ "expires_in_s": 0 }),
        json!({ "expires_in_s": "3600" }),
        json!({ "expires_in_s": 2.5 }),
        json!({ "expires_at": "2001-02-03T04:05:06Z" }),
        json!({ "expires_at": "next tuesday" }),
        json!({ "expires_at": "2030-02-30T25:00:00Z" }),
        json!({ "expires_at": "2099-01-01T00:00:00Z", "expires_in_s": 60 }),
    ] {
        let r = server.admin("POST", &create, Some(bad.clone()));
        assert_eq!((r.status, r.problem_type().as_str()), (400, "bad-request"), "{bad}: {}", body(&r));
    }
    let rotate = format!("/v1/keys/{key_id}/rotate");
    for bad in [
        json!({}),
        json!({ "old_key_valid_for_s": -1 }),
        json!({ "old_key_valid_for_s": "1d" }),
        json!({ "old_key_expires_at": "2001-02-03T04:05:06Z" }),
        json!({ "old_key_expires_at": "soon" }),
        json!({ "old_key_valid_for_s": 60, "old_key_expires_at": "2099-01-01T00:00:00Z" }),
        json!({ "old_key_valid_for_s": 60, "expires_in_s": -1 }),
        json!({ "old_key_valid_for_s": 60, "grace": 5 }),
    ] {
        let r = server.admin("POST", &rotate, Some(bad.clone()));
        assert_eq!((r.status, r.problem_type().as_str()), (400, "bad-request"), "{bad}: {}", body(&r));
    }
    let keys = server.admin("GET", &create, None).json();
    assert_eq!(keys["keys"].as_array().map(Vec::len), Some(1), "{keys}");
    assert_eq!(keys["keys"][0]["expires_at"], Value::Null, "the key was not touched: {keys}");
    assert_eq!(resize_status(&server, &key), (200, String::new()));

    let cli = server.admin_cli(&["keys", "create", &tenant.to_string(), "--expires-in", "3y"]);
    assert!(!cli.status.success());
    assert!(String::from_utf8_lossy(&cli.stderr).contains("--expires-in"), "{}", String::from_utf8_lossy(&cli.stderr));
    Ok(())
}

#[test]
fn admin_writes_are_logged_with_their_operator_and_a_read_only_write_is_not() -> Result {
    let read = format!("api.read_token={READ_TOKEN}");
    let server = DevServer::start(&[&read])?;
    let created = server.admin("POST", "/v1/tenants", Some(json!({ "name": "audited" })));
    assert_eq!(created.status, 201, "{}", body(&created));
    let tenant = created.json()["id"].as_u64().expect("tenant id");
    let issued = server.admin("POST", &format!("/v1/tenants/{tenant}/keys"), Some(json!({ "label": "ci" })));
    assert_eq!(issued.status, 201, "{}", body(&issued));
    let key_id = issued.json()["id"].as_str().expect("key id").to_owned();
    let secret = issued.json()["key"].as_str().expect("key").split('_').nth(2).expect("secret").to_owned();

    // Read access is enough to read the log; no token is not.
    let log = server.admin_with_token("GET", "/v1/admin/audit", None, READ_TOKEN);
    assert_eq!(log.status, 200, "{}", body(&log));
    assert!(!body(&log).contains(&secret), "a secret in the admin log");
    let records = log.json()["records"].as_array().cloned().unwrap_or_default();
    let ours: Vec<&Value> = records.iter().filter(|r| r["operator"] == "admin").collect();
    assert_eq!(ours.len(), 2, "{records:?}");
    let (key_row, tenant_row) = (ours[0], ours[1]);
    assert_eq!(
        (&key_row["action"], &key_row["tenant_id"], &key_row["key_id"], &key_row["outcome"]),
        (&json!("create-key"), &json!(tenant), &json!(key_id), &json!("ok")),
        "{key_row}"
    );
    assert_eq!(
        (&tenant_row["action"], &tenant_row["tenant_id"], &tenant_row["key_id"], &tenant_row["outcome"]),
        (&json!("create-tenant"), &json!(tenant), &Value::Null, &json!("ok")),
        "{tenant_row}"
    );
    assert_eq!(key_row["request_id"].as_str(), issued.header("x-request-id"));
    assert_eq!(tenant_row["request_id"].as_str(), created.header("x-request-id"));
    assert!(key_row["time"].as_str() >= tenant_row["time"].as_str());
    let anonymous = server.admin_with_token("GET", "/v1/admin/audit", None, "");
    assert_eq!(anonymous.status, 401);

    // A read-only token's write is refused before the store: it is not a write, and not logged.
    let newest = records[0]["id"].clone();
    let refused = server.admin_with_token("POST", "/v1/tenants", Some(json!({ "name": "sneaky" })), READ_TOKEN);
    assert_eq!((refused.status, refused.problem_type().as_str()), (403, "admin-forbidden"));
    let rotate = format!("/v1/keys/{key_id}/rotate");
    let refused = server.admin_with_token("POST", &rotate, Some(json!({ "old_key_valid_for_s": 0 })), READ_TOKEN);
    assert_eq!(refused.status, 403);
    let after = server.admin("GET", "/v1/admin/audit?limit=1", None).json();
    assert_eq!(after["records"][0]["id"], newest, "{after}");
    // A write the store refuses is logged, with why.
    let taken = server.admin("POST", "/v1/tenants", Some(json!({ "name": "AUDITED" })));
    assert_eq!(taken.status, 409);
    let after = server.admin("GET", "/v1/admin/audit?limit=1", None).json();
    let row = &after["records"][0];
    assert_eq!((&row["action"], &row["outcome"]), (&json!("create-tenant"), &json!("conflict")), "{row}");

    // Pages: `next` is the cursor of the older ones.
    let first = server.admin("GET", "/v1/admin/audit?limit=2", None).json();
    assert_eq!(first["truncated"], true, "{first}");
    let next = first["next"].as_str().expect("a cursor").to_owned();
    let second = server.admin("GET", &format!("/v1/admin/audit?limit=2&before={next}"), None).json();
    assert_eq!(second["records"][0]["id"], ours[1]["id"], "{second}");
    for bad in ["limit=0", "limit=abc", "before=-1", "since=1"] {
        let r = server.admin("GET", &format!("/v1/admin/audit?{bad}"), None);
        assert_eq!((r.status, r.problem_type().as_str()), (400, "bad-request"), "{bad}");
    }

    // The CLI, as a table and as JSON.
    let cli = server.admin_cli(&["operator-audit", "--limit", "5"]);
    let table = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success() && table.contains("create-key") && table.contains(&key_id), "{table}");
    let cli = server.admin_cli(&["operator-audit", "--json", "--limit", "3"]);
    let printed: Value = serde_json::from_slice(&cli.stdout)?;
    assert_eq!(printed["records"][1]["key_id"].as_str(), Some(key_id.as_str()), "{printed}");
    Ok(())
}

impl Lab {
    /// A POST to the identity service's admin API: (status, JSON body).
    fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin("POST", path, Some(body))
    }

    fn api_nodes(&self) -> Vec<String> {
        let components = self.file["components"].as_array().expect("components");
        let urls: Vec<String> = components
            .iter()
            .filter(|c| c["role"] == "api")
            .map(|c| c["urls"]["http"].as_str().expect("an api node's URL").to_owned())
            .collect();
        assert!(urls.len() >= 2, "the lab has {} api nodes", urls.len());
        urls
    }

    /// What an api node answers `key` with on a route that authenticates and does no work: the
    /// status and the problem type (empty when accepted).
    fn auth_at(&self, node: &str, key: &str) -> (u16, String) {
        let r = self.agent.get(format!("{node}/v1/usage")).header("authorization", format!("Bearer {key}")).call();
        match r {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let body: Value =
                    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default()).unwrap_or(Value::Null);
                (status, body["type"].as_str().unwrap_or("").trim_start_matches("urn:resizer:problem:").to_owned())
            }
            Err(e) => panic!("GET {node}/v1/usage: {e}"),
        }
    }

    /// Waits until every api node answers `key` as `wanted` says, at most `within`.
    fn until_every_node(&self, key: &str, within: Duration, what: &str, wanted: impl Fn(u16, &str) -> bool) {
        let started = Instant::now();
        for node in self.api_nodes() {
            loop {
                let (status, problem) = self.auth_at(&node, key);
                if wanted(status, &problem) {
                    break;
                }
                assert!(started.elapsed() < within, "{node}: {what} not within {within:?}: {status} {problem}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Past authentication: 200, or 429 from the usage-read bucket.
fn accepted(status: u16, _problem: &str) -> bool {
    !matches!(status, 401 | 403)
}

#[test]
fn in_the_cluster_a_keys_expiry_and_a_rotation_hold_on_every_api_node() {
    let lab = Lab::up(&["--workers", "1", "--worker-slots", "1"]);
    let (status, short) = lab.admin_post("/v1/tenants/demo/keys", json!({ "label": "brief", "expires_in_s": 3 }));
    assert_eq!(status, 201, "{short}");
    let short = short["key"].as_str().expect("key").to_owned();
    let (status, rotating) = lab.admin_post("/v1/tenants/demo/keys", json!({ "label": "rotating" }));
    assert_eq!(status, 201, "{rotating}");
    let (old, old_id) =
        (rotating["key"].as_str().expect("key").to_owned(), rotating["id"].as_str().expect("id").to_owned());
    lab.until_every_node(&short, Duration::from_secs(2), "the new key accepted", accepted);
    lab.until_every_node(&old, Duration::from_secs(2), "the new key accepted", accepted);

    let (status, rotated) = lab.admin_post(&format!("/v1/keys/{old_id}/rotate"), json!({ "old_key_valid_for_s": 3 }));
    assert_eq!(status, 201, "{rotated}");
    let new = rotated["key"].as_str().expect("the new key").to_owned();
    lab.until_every_node(&new, Duration::from_secs(2), "the rotated-in key accepted", accepted);
    for node in lab.api_nodes() {
        assert!(accepted(lab.auth_at(&node, &old).0, ""), "{node}: the old key refused during its grace");
    }

    // Nothing is written when a key expires: each node holds the expiry and checks its clock.
    let expired = |status: u16, problem: &str| status == 401 && problem == "key-expired";
    lab.until_every_node(&short, Duration::from_secs(6), "the short key refused as expired", expired);
    lab.until_every_node(&old, Duration::from_secs(6), "the rotated-out key refused as expired", expired);
    for node in lab.api_nodes() {
        assert!(accepted(lab.auth_at(&node, &new).0, ""), "{node}: the new key refused after the grace");
    }
}
