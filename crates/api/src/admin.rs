//! The admin API: tenants, their limits and status, their keys (with their lifetimes and
//! rotation), and the admin log of who wrote what. Every call needs an operator's bearer token:
//! reads any, writes one with admin access (`operators.rs`). Writes go to the identity store off
//! the runtime, naming the operator and the request id (the store logs each in the write's own
//! transaction), and are then fed to this node's credential cache before the answer, so a key
//! revoked here is refused by the very next public request.
//!
//! The admin log records the writes that reach the store, committed or refused by it (404, 409,
//! 400 for a rule of the store). A request refused before — no or a wrong token (401), a
//! read-only token (403), a malformed body (400), a tenant in the path that the lookup before
//! the write does not find (404) — is not a write and is not logged there: the access log has it.
//!
//! It must not import another handler file or the wiring (`server.rs`), which imports it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use identity::{
    Actor, AdminRecord, ApiKey, KeyId, KeyPurpose, Store, StoreError, Tenant, TenantId, TenantLimits, TenantStatus,
    MAX_KEY_LIFETIME,
};
use serde_json::{json, Map, Value};

use crate::body::{awaits_continue, drain, json_response, DRAIN_LIMIT};
use crate::credentials::refresh_credentials;
use crate::operators::{Access, Operator};
use crate::outcome::{Outcome, Route};
use crate::problem::ApiError;
use crate::request_id::RequestId;
use crate::usage_report::{audit_page, usage_report};
use crate::{openapi, time, App};

/// After an admin write: this node's cache takes it before the answer, and the relay (if any)
/// is woken.
async fn written(app: &Arc<App>) {
    refresh_credentials(app).await;
    app.identity_written.notify_one();
}

/// Refuses a request without a valid operator token, from a client throttled for wrong ones, or
/// with a declared body over [`BODY_LIMIT`], before its body is parsed (a route layer on every
/// admin route but health and the OpenAPI document): an unauthenticated client gets 401, not the
/// body's parse error. Each wrong token is counted against the client's address.
pub(crate) async fn token_first(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let throttled = client.and_then(|ip| app.admin_throttle.refused(ip));
    let refusal = match throttled {
        Some(retry_after) => ApiError::AdminThrottled { retry_after },
        None => match check_token(&app, request.headers()) {
            Err(e) => {
                if let Some(ip) = client {
                    app.admin_throttle.failed(ip);
                }
                tracing::warn!(client = ?client, "admin request with a wrong or missing token");
                e
            }
            Ok(_) if declared.is_some_and(|len| len > BODY_LIMIT as u64) => {
                ApiError::BodyTooLarge { limit: BODY_LIMIT as u64 }
            }
            Ok(operator) => {
                let mut request = request;
                request.extensions_mut().insert(operator);
                return next.run(request).await;
            }
        },
    };
    let rid = request.extensions().get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    let mut outcome = Outcome::default();
    let mut response = outcome.fail(refusal, &rid);
    // As on the public API: a client still sending its body would see a reset instead of the
    // answer if the connection closed now, so a body up to 1 MiB is read and dropped first.
    let (parts, body) = request.into_parts();
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    if awaits_continue(&parts.headers) || !drain(body, DRAIN_LIMIT, deadline).await {
        response.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    }
    response.extensions_mut().insert(Route("admin"));
    response.extensions_mut().insert(outcome);
    response
}

/// How long a refused admin request's body is read before the connection is closed instead.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest admin request body: tenants, limits and labels are a few hundred bytes.
pub(crate) const BODY_LIMIT: usize = 64 << 10;

/// Runs an admin handler body: the token and its access first, then `handle` with the operator
/// who asked; errors become problem+json. `token_first` has already refused a wrong token on the
/// routes it layers; the token is looked up again here (two SHA-256 of a header, on the cold
/// admin path) so that a handler is never reached unauthenticated, whatever the router's layers.
async fn admin<F, Fut>(app: &Arc<App>, headers: &HeaderMap, rid: RequestId, needs: Access, handle: F) -> Response
where
    F: FnOnce(Operator) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let mut outcome = Outcome::default();
    let result = match check_token(app, headers) {
        Ok(operator) if operator.access >= needs => handle(operator).await,
        Ok(operator) => Err(ApiError::AdminForbidden { operator: operator.name, access: operator.access.as_str() }),
        Err(e) => Err(e),
    };
    let mut response = match result {
        Ok(response) => response,
        Err(e) => outcome.fail(e, &rid),
    };
    response.extensions_mut().insert(Route("admin"));
    response.extensions_mut().insert(outcome);
    response
}

/// The operator whose bearer token the request carries.
pub(crate) fn check_token(app: &App, headers: &HeaderMap) -> Result<Operator, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, token)| app.config.operators.authenticate(token.trim()))
        .ok_or(ApiError::AdminUnauthorized)
}

/// Who a write is by, for the store's admin log.
fn actor(operator: &Operator, rid: &RequestId) -> Actor {
    Actor { operator: operator.name.clone(), request_id: rid.as_str().to_owned() }
}

/// Runs a store call on the blocking pool.
async fn with_store<T, F>(app: &Arc<App>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = app
        .store()
        .cloned()
        .ok_or(ApiError::NotReady("tenants and keys are administered at the identity service, not on an api node"))?;
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| ApiError::Internal(format!("identity store task failed: {e}")))?
        .map_err(ApiError::Store)
}

/// The tenant id a usage or audit read names: a numeric id is taken as it is where the store is
/// not in this process (a cluster api node reads usage; the identity service knows names).
async fn resolve_tenant_id(app: &Arc<App>, reference: String) -> Result<TenantId, ApiError> {
    match (app.store(), reference.parse::<TenantId>()) {
        (None, Ok(id)) => Ok(id),
        _ => Ok(resolve_tenant(app, reference).await?.id),
    }
}

/// A tenant named in a path: its numeric id, or its name.
async fn resolve_tenant(app: &Arc<App>, reference: String) -> Result<Tenant, ApiError> {
    with_store(app, move |store| match reference.parse::<TenantId>() {
        Ok(id) => store.get_tenant(id),
        Err(_) => store.tenant_by_name(&reference),
    })
    .await
}

fn parse_json(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest("the body must be a JSON object".into())),
        Err(e) => Err(ApiError::BadRequest(format!("the body is not valid JSON: {e}"))),
    }
}

fn refuse_unknown_fields(map: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::BadRequest(format!("unknown field `{k}`; expected one of {}", known.join(", ")))),
        None => Ok(()),
    }
}

/// Applies a `limits` object to `base`: each field present sets that override, `null` clears it
/// back to the deployment default, absent fields stay as they were.
fn apply_limits(value: &Value, base: TenantLimits) -> Result<TenantLimits, ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::BadRequest("`limits` must be a JSON object".into()));
    };
    refuse_unknown_fields(
        map,
        &["rate_per_sec", "burst", "max_input_bytes", "max_input_pixels", "quota", "sources", "cache_max_age_secs"],
    )?;
    let mut limits = base;
    let bad = |field: &str, what: &str| ApiError::BadRequest(format!("`limits.{field}` must be {what} or null"));
    if let Some(v) = map.get("rate_per_sec") {
        limits.rate_per_sec =
            if v.is_null() { None } else { Some(v.as_f64().ok_or_else(|| bad("rate_per_sec", "a number"))?) };
    }
    if let Some(v) = map.get("burst") {
        limits.burst = if v.is_null() {
            None
        } else {
            Some(whole(v).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| bad("burst", "an integer up to 2^32-1"))?)
        };
    }
    for (field, slot) in
        [("max_input_bytes", &mut limits.max_input_bytes), ("max_input_pixels", &mut limits.max_input_pixels)]
    {
        if let Some(v) = map.get(field) {
            *slot = if v.is_null() { None } else { Some(whole(v).ok_or_else(|| bad(field, "a positive integer"))?) };
        }
    }
    if let Some(v) = map.get("quota") {
        limits.quota = if v.is_null() { None } else { Some(crate::quota::from_json(v)?) };
    }
    if let Some(v) = map.get("sources") {
        limits.sources = match v {
            Value::Null => None,
            Value::Array(items) => {
                let entries = items
                    .iter()
                    .map(|item| item.as_str().ok_or_else(|| bad("sources", "an array of strings")))
                    .collect::<Result<Vec<&str>, _>>()?;
                Some(identity::SourceList::from_entries(&entries).map_err(|e| ApiError::BadRequest(e.to_string()))?)
            }
            _ => return Err(bad("sources", "an array of strings")),
        };
    }
    if let Some(v) = map.get("cache_max_age_secs") {
        limits.cache_max_age_secs = if v.is_null() {
            None
        } else {
            Some(
                whole(v)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| bad("cache_max_age_secs", "a whole number of seconds"))?,
            )
        };
    }
    limits.validate().map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(limits)
}

/// A non-negative whole number, also when written as `262.0` (JSON Schema's `integer` allows it).
fn whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 2f64.powi(63)).map(|f| f as u64))
}

fn limits_json(limits: &TenantLimits) -> Value {
    json!({
        "rate_per_sec": limits.rate_per_sec,
        "burst": limits.burst,
        "max_input_bytes": limits.max_input_bytes,
        "max_input_pixels": limits.max_input_pixels,
        "quota": limits.quota.as_ref().map(crate::quota::to_json),
        "sources": limits.sources.as_ref().map(|s| s.entries().to_vec()),
        "cache_max_age_secs": limits.cache_max_age_secs,
    })
}

fn tenant_json(app: &App, tenant: &Tenant) -> Value {
    let effective = tenant.limits.resolve(&app.config.default_limits);
    json!({
        "id": tenant.id.get(),
        "name": tenant.name,
        "status": tenant.status.as_str(),
        "limits": limits_json(&tenant.limits),
        "effective_limits": {
            "rate_per_sec": effective.rate_per_sec,
            "burst": effective.burst,
            "max_input_bytes": effective.max_input_bytes,
            "max_input_pixels": effective.max_input_pixels,
            "quota": effective.quota.as_ref().map(crate::quota::to_json),
            "cache_max_age_secs": effective.cache_max_age_secs,
        },
        // Where the tenant stands against its quota, as this node's board knows it: the soft
        // flag (`soft_reached`) is how an operator finds the tenants near their limits.
        "quota_status": crate::quota::status(app, tenant.id, effective.quota.as_ref()),
        "created_at": time::rfc3339(tenant.created_at),
    })
}

fn key_json(key: &ApiKey) -> Value {
    json!({
        "id": key.id.as_str(),
        "tenant_id": key.tenant.get(),
        "label": key.label,
        "created_at": time::rfc3339(key.created_at),
        "revoked_at": key.revoked_at.map(time::rfc3339),
        "expires_at": key.expires_at.map(time::rfc3339),
        "purpose": key.purpose.as_str(),
    })
}

/// What a new key's holder is shown once: an API key's full token in `key`, or a signing key's
/// secret in `signing_secret` (its token authenticates nothing, so it is not shown).
fn with_secret(app: &App, mut body: Value, key: &ApiKey, token: String) -> Result<Value, ApiError> {
    match key.purpose {
        KeyPurpose::Api => body["key"] = Value::String(token),
        KeyPurpose::Signing => {
            let signing = app.config.url_signing.as_ref().ok_or(ApiError::UrlSigningOff)?;
            body["signing_secret"] = Value::String(signing.key_secret(key.id).to_hex());
        }
    }
    Ok(body)
}

/// A body's `<at_field>` (an RFC 3339 time in the future) or `<in_field>` (whole seconds from
/// now, at least 1), at most one of them, within [`MAX_KEY_LIFETIME`]; `None` if neither.
fn requested_expiry(map: &Map<String, Value>, at_field: &str, in_field: &str) -> Result<Option<SystemTime>, ApiError> {
    match (map.get(at_field), map.get(in_field)) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(ApiError::BadRequest(format!("give `{at_field}` or `{in_field}`, not both"))),
        (Some(at), None) => future_time(at, at_field).map(Some),
        (None, Some(seconds)) => Ok(Some(SystemTime::now() + lifetime(seconds, in_field, 1)?)),
    }
}

/// An RFC 3339 time after now and within [`MAX_KEY_LIFETIME`] of it.
fn future_time(value: &Value, field: &str) -> Result<SystemTime, ApiError> {
    let bad = || ApiError::BadRequest(format!("`{field}` must be an RFC 3339 time, e.g. 2030-01-31T12:00:00Z"));
    let ms = value.as_str().and_then(time::parse_ms).ok_or_else(bad)?;
    let at = u64::try_from(ms).map(|ms| UNIX_EPOCH + Duration::from_millis(ms)).map_err(|_| bad())?;
    match at.duration_since(SystemTime::now()) {
        Ok(ahead) if ahead > MAX_KEY_LIFETIME => {
            Err(ApiError::BadRequest(format!("`{field}` must be within 100 years from now")))
        }
        Ok(ahead) if ahead > Duration::ZERO => Ok(at),
        _ => Err(ApiError::BadRequest(format!("`{field}` is not in the future: {}", time::rfc3339(at)))),
    }
}

/// A whole number of seconds, at least `min`, within [`MAX_KEY_LIFETIME`].
fn lifetime(value: &Value, field: &str, min: u64) -> Result<Duration, ApiError> {
    let max = MAX_KEY_LIFETIME.as_secs();
    whole(value)
        .filter(|s| (min..=max).contains(s))
        .map(Duration::from_secs)
        .ok_or_else(|| ApiError::BadRequest(format!("`{field}` must be a whole number of seconds from {min} to {max}")))
}

pub async fn list_tenants(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    admin(&app, &headers, rid, Access::Read, |_operator| async {
        let tenants = with_store(&app, |store| store.list_tenants()).await?;
        let list: Vec<Value> = tenants.iter().map(|t| tenant_json(&app, t)).collect();
        Ok(json_response(StatusCode::OK, &json!({ "tenants": list })))
    })
    .await
}

pub async fn create_tenant(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (app, by) = (&app, rid.clone());
    admin(app, &headers, rid, Access::Admin, |operator| async move {
        let actor = actor(&operator, &by);
        let map = parse_json(&body)?;
        refuse_unknown_fields(&map, &["name", "limits"])?;
        let name = map
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::BadRequest("`name` (a string) is required".into()))?
            .to_owned();
        let limits = match map.get("limits") {
            Some(v) => apply_limits(v, TenantLimits::default())?,
            None => TenantLimits::default(),
        };
        let tenant = with_store(app, move |store| store.create_tenant_as(&actor, &name, limits)).await?;
        written(app).await;
        Ok(json_response(StatusCode::CREATED, &tenant_json(app, &tenant)))
    })
    .await
}

pub async fn get_tenant(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    admin(&app, &headers, rid, Access::Read, |_operator| async {
        let tenant = resolve_tenant(&app, tenant).await?;
        Ok(json_response(StatusCode::OK, &tenant_json(&app, &tenant)))
    })
    .await
}

pub async fn update_tenant(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (app, by) = (&app, rid.clone());
    admin(app, &headers, rid, Access::Admin, |operator| async move {
        let actor = actor(&operator, &by);
        let map = parse_json(&body)?;
        refuse_unknown_fields(&map, &["limits", "status"])?;
        let status = match map.get("status") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .and_then(|s| s.parse::<TenantStatus>().ok())
                    .ok_or_else(|| ApiError::BadRequest("`status` must be \"active\" or \"suspended\"".into()))?,
            ),
        };
        let mut tenant = resolve_tenant(app, tenant).await?;
        if let Some(v) = map.get("limits") {
            let limits = apply_limits(v, tenant.limits)?;
            let (id, actor) = (tenant.id, actor.clone());
            tenant = with_store(app, move |store| store.update_limits(&actor, id, limits)).await?;
        }
        if let Some(status) = status {
            let id = tenant.id;
            tenant = with_store(app, move |store| store.set_status(&actor, id, status)).await?;
        }
        written(app).await;
        Ok(json_response(StatusCode::OK, &tenant_json(app, &tenant)))
    })
    .await
}

pub async fn list_keys(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    admin(&app, &headers, rid, Access::Read, |_operator| async {
        let tenant = resolve_tenant(&app, tenant).await?;
        let keys = with_store(&app, move |store| store.list_keys(tenant.id)).await?;
        let list: Vec<Value> = keys.iter().map(key_json).collect();
        Ok(json_response(StatusCode::OK, &json!({ "keys": list })))
    })
    .await
}

pub async fn create_key(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (app, by) = (&app, rid.clone());
    admin(app, &headers, rid, Access::Admin, |operator| async move {
        let actor = actor(&operator, &by);
        let map = parse_json(&body)?;
        refuse_unknown_fields(&map, &["label", "expires_at", "expires_in_s", "purpose"])?;
        let label = match map.get("label") {
            None => "default".to_owned(),
            Some(v) => v.as_str().ok_or_else(|| ApiError::BadRequest("`label` must be a string".into()))?.to_owned(),
        };
        let expires_at = requested_expiry(&map, "expires_at", "expires_in_s")?;
        let purpose = match map.get("purpose") {
            None => KeyPurpose::Api,
            Some(v) => v
                .as_str()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| ApiError::BadRequest("`purpose` must be \"api\" (the default) or \"signing\"".into()))?,
        };
        // Refused before anything is written: a signing key whose secret cannot be shown is no use.
        if purpose == KeyPurpose::Signing && app.config.url_signing.is_none() {
            return Err(ApiError::UrlSigningOff);
        }
        let tenant = resolve_tenant(app, tenant).await?;
        let (key, token) =
            with_store(app, move |store| store.create_key_as(&actor, tenant.id, &label, expires_at, purpose)).await?;
        written(app).await;
        // The only time the full key (or the signing secret) is shown: the store keeps a hash.
        let body = with_secret(app, key_json(&key), &key, token)?;
        Ok(json_response(StatusCode::CREATED, &body))
    })
    .await
}

pub async fn revoke_key(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (app, by) = (&app, rid.clone());
    admin(app, &headers, rid, Access::Admin, |operator| async move {
        let actor = actor(&operator, &by);
        let id: KeyId = key.parse().map_err(|_| ApiError::NotFound(format!("API key {key}")))?;
        let key = with_store(app, move |store| store.revoke_key(&actor, id)).await?;
        written(app).await;
        Ok(json_response(StatusCode::OK, &key_json(&key)))
    })
    .await
}

/// Replaces a key: a new key for the same tenant and label, and the old one ends after a grace
/// (`old_key_valid_for_s`, 0 for at once, or `old_key_expires_at`), in one store transaction.
/// The new key may be given its own `expires_at` / `expires_in_s`. Answers the new key (its
/// full token in `key`, this once) with the old one in `old_key`.
pub async fn rotate_key(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (app, by) = (&app, rid.clone());
    admin(app, &headers, rid, Access::Admin, |operator| async move {
        let actor = actor(&operator, &by);
        let map = parse_json(&body)?;
        refuse_unknown_fields(&map, &["old_key_valid_for_s", "old_key_expires_at", "expires_at", "expires_in_s"])?;
        let grace = match (map.get("old_key_valid_for_s"), map.get("old_key_expires_at")) {
            (Some(seconds), None) => lifetime(seconds, "old_key_valid_for_s", 0)?,
            (None, Some(end)) => {
                // Measured as a duration from here, so that the store applies it on its own clock.
                future_time(end, "old_key_expires_at")?.duration_since(SystemTime::now()).unwrap_or_default()
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "give how long the old key keeps working, one of `old_key_valid_for_s` (0: it stops now) or `old_key_expires_at`".into(),
                ))
            }
        };
        let new_expires_at = requested_expiry(&map, "expires_at", "expires_in_s")?;
        let id: KeyId = key.parse().map_err(|_| ApiError::NotFound(format!("API key {key}")))?;
        let rotation = with_store(app, move |store| store.rotate_key(&actor, id, grace, new_expires_at)).await?;
        written(app).await;
        // The only time the new key (or its signing secret) is shown: the store keeps a hash.
        let mut body = with_secret(app, key_json(&rotation.new), &rotation.new, rotation.token)?;
        body["old_key"] = key_json(&rotation.old);
        Ok(json_response(StatusCode::CREATED, &body))
    })
    .await
}

/// Most admin log records one page holds, and how many without a `limit`.
const LOG_PAGE_MAX: usize = 1000;
const LOG_PAGE_DEFAULT: usize = 100;

/// The health of the nodes: this process's own readiness (what its `/readyz` says), and every
/// api node the cluster's presence announcements reach it from, with what each last said and
/// how long ago. Without a cluster (`resizer dev`) the list is this node alone.
pub async fn nodes(State(app): State<Arc<App>>, Extension(rid): Extension<RequestId>, headers: HeaderMap) -> Response {
    let app = &app;
    admin(app, &headers, rid, Access::Read, |_operator| async move {
        let api_nodes: Option<Vec<Value>> = app.node_board().map(|board| {
            board
                .nodes()
                .into_iter()
                .map(|n| {
                    json!({
                        "node": n.node,
                        "in_rotation": n.in_rotation,
                        "since_heard_ms": n.since_heard.as_millis() as u64,
                        // Three announcements missed: killed, frozen or cut off from NATS.
                        "silent": n.since_heard >= queue::FORGET_AFTER,
                        "status": n.status,
                    })
                })
                .collect()
        });
        let body = json!({
            "this_node": app.readiness(),
            "cluster": api_nodes.is_some(),
            "api_nodes": api_nodes.unwrap_or_default(),
        });
        Ok(json_response(StatusCode::OK, &body))
    })
    .await
}

/// The admin log, newest first: `limit` records (1–1000, default 100) before the cursor
/// `before` (the `next` of the previous page).
pub async fn admin_log(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let app = &app;
    admin(app, &headers, rid, Access::Read, |_operator| async move {
        let (mut limit, mut before) = (LOG_PAGE_DEFAULT, None);
        for (name, value) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "limit" => {
                    limit = value.parse().ok().filter(|n| (1..=LOG_PAGE_MAX).contains(n)).ok_or_else(|| {
                        ApiError::BadRequest(format!("`limit` must be a whole number from 1 to {LOG_PAGE_MAX}"))
                    })?
                }
                "before" => {
                    before = Some(value.parse::<u64>().map_err(|_| {
                        ApiError::BadRequest("`before` must be the `next` of a previous page, unchanged".into())
                    })?)
                }
                other => {
                    return Err(ApiError::BadRequest(format!("unknown parameter `{other}`; expected limit, before")))
                }
            }
        }
        // One more than asked for tells whether there is a next page.
        let mut records = with_store(app, move |store| store.admin_log(before, limit + 1)).await?;
        let more = records.len() > limit;
        records.truncate(limit);
        let list: Vec<Value> = records.iter().map(admin_record_json).collect();
        let mut body = json!({ "records": list, "truncated": more });
        if let (true, Some(last)) = (more, records.last()) {
            body["next"] = Value::String(last.id.to_string());
        }
        Ok(json_response(StatusCode::OK, &body))
    })
    .await
}

fn admin_record_json(r: &AdminRecord) -> Value {
    json!({
        "id": r.id,
        "time": time::rfc3339(r.at),
        "operator": r.operator,
        "request_id": r.request_id,
        "action": r.action.as_str(),
        "tenant_id": r.tenant.map(TenantId::get),
        "key_id": r.key.as_ref().map(KeyId::as_str),
        "outcome": r.outcome,
        "detail": r.detail,
    })
}

pub async fn tenant_usage(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    admin(&app, &headers, rid, Access::Read, |_operator| async {
        // The quota from the store where it is here, else (a cluster api node, which reads
        // usage by numeric id) from the credential cache.
        let (id, limits) = match app.store() {
            Some(_) => {
                let tenant = resolve_tenant(&app, tenant).await?;
                (tenant.id, Some(tenant.limits))
            }
            None => {
                let id = resolve_tenant_id(&app, tenant).await?;
                (id, app.cache().tenant_limits(id))
            }
        };
        let quota = limits.unwrap_or_default().resolve(&app.config.default_limits).quota;
        let status = crate::quota::status(&app, id, quota.as_ref());
        usage_report(&app, id.get(), status, query.as_deref().unwrap_or("")).await
    })
    .await
}

/// The raw records of one tenant over a time range, from the archive (oldest first, at most
/// `limit`, then the next page from `after=<next>`). Records reach the archive within about a
/// second of their request.
pub async fn tenant_audit(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    admin(&app, &headers, rid, Access::Read, |_operator| async {
        let tenant = resolve_tenant_id(&app, tenant).await?;
        audit_page(&app, tenant, query.as_deref().unwrap_or("")).await
    })
    .await
}

pub async fn openapi_json() -> Response {
    let mut response = json_response(StatusCode::OK, &openapi::admin_document());
    response.extensions_mut().insert(Route("openapi"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_patch_sets_clears_and_keeps() {
        let base = TenantLimits { rate_per_sec: Some(5.0), burst: Some(10), ..TenantLimits::default() };
        let patched =
            apply_limits(&json!({ "burst": null, "max_input_bytes": 1000 }), base.clone()).expect("valid patch");
        assert_eq!(patched.rate_per_sec, Some(5.0));
        assert_eq!(patched.burst, None);
        assert_eq!(patched.max_input_bytes, Some(1000));
        assert!(apply_limits(&json!({ "rate": 1 }), base.clone()).is_err());
        assert!(apply_limits(&json!({ "rate_per_sec": -1 }), base.clone()).is_err());
        assert!(apply_limits(&json!({ "burst": "ten" }), base.clone()).is_err());
        assert!(apply_limits(&json!({ "burst": 2.5 }), base.clone()).is_err());
        assert_eq!(apply_limits(&json!({ "burst": 262.0 }), base.clone()).expect("whole").burst, Some(262));
        let urls = apply_limits(&json!({ "sources": ["Images.Example.com"], "cache_max_age_secs": 60 }), base.clone())
            .expect("sources and max-age");
        assert_eq!(urls.sources.as_ref().map(|s| s.entries().to_vec()), Some(vec!["images.example.com".to_owned()]));
        assert_eq!(urls.cache_max_age_secs, Some(60));
        assert!(apply_limits(&json!({ "sources": "images.example.com" }), base.clone()).is_err(), "not an array");
        assert!(apply_limits(&json!({ "sources": ["ftp://x/"] }), base.clone()).is_err());
        assert!(apply_limits(&json!({ "cache_max_age_secs": -1 }), base).is_err());
    }

    #[test]
    fn expiries_are_future_times_or_positive_whole_seconds_never_both() {
        let ask = |body: Value| {
            let Value::Object(map) = body else { panic!("an object") };
            requested_expiry(&map, "expires_at", "expires_in_s")
        };
        assert!(ask(json!({})).expect("none asked").is_none());
        let in_an_hour = ask(json!({ "expires_in_s": 3600 })).expect("valid").expect("an expiry");
        let ahead = in_an_hour.duration_since(SystemTime::now()).expect("in the future");
        assert!(ahead > Duration::from_secs(3590) && ahead <= Duration::from_secs(3600), "{ahead:?}");
        assert!(ask(json!({ "expires_at": "2099-01-31T12:00:00Z" })).expect("valid").is_some());
        for bad in [
            json!({ "expires_in_s": -5 }),
            json!({ "expires_in_s": 0 }),
            json!({ "expires_in_s": 1.5 }),
            json!({ "expires_in_s": "3600" }),
            json!({ "expires_in_s": 4_000_000_000u64 }),
            json!({ "expires_at": "2001-01-01T00:00:00Z" }),
            json!({ "expires_at": "tomorrow" }),
            json!({ "expires_at": "2030-13-01T00:00:00Z" }),
            json!({ "expires_at": 1_900_000_000 }),
            json!({ "expires_at": "2099-01-31T12:00:00Z", "expires_in_s": 60 }),
            json!({ "expires_at": "2999-01-31T12:00:00Z" }),
        ] {
            assert!(matches!(ask(bad.clone()), Err(ApiError::BadRequest(_))), "{bad} was accepted");
        }
    }
}
