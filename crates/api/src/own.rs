//! What a tenant may read about itself with its own API key: its usage (`GET /v1/usage`, the
//! rollups), its recent requests (`GET /v1/audit`, the records of the archive) and its limits
//! with the rate limit's state on this node (`GET /v1/limits`). What the tenant console shows.
//!
//! Each answer is the caller's own tenant's, decided by the key alone: no parameter names a
//! tenant. Reads take tokens from the reads' own bucket, as `GET /v1/usage` does.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use crate::body::json_response;
use crate::credentials::authenticate;
use crate::outcome::{Outcome, Route};
use crate::problem::ApiError;
use crate::request_id::RequestId;
use crate::usage_report::{audit_page, usage_report};
use crate::{quota, ratelimit, App};

/// Reads of a tenant's own records have a bucket of their own, this size.
const OWN_READS_PER_SEC: f64 = 10.0;
const OWN_READ_BURST: u32 = 20;

/// `GET /v1/usage?from=&to=&granularity=hour|day`: the caller's tenant's rollups with its quota.
pub async fn usage(State(app): State<Arc<App>>, request: Request) -> Response {
    read(&app, request, "usage", |app, auth, query| async move {
        let quota = auth.limits().resolve(&app.config.default_limits).quota;
        let status = quota::status(&app, auth.tenant(), quota.as_ref());
        usage_report(&app, auth.tenant().get(), status, &query).await
    })
    .await
}

/// `GET /v1/audit`: the caller's tenant's records, oldest first (`from`, `to`, `limit`, `after`
/// as the admin audit route takes them).
pub async fn audit(State(app): State<Arc<App>>, request: Request) -> Response {
    read(&app, request, "audit", |app, auth, query| async move { audit_page(&app, auth.tenant(), &query).await }).await
}

/// `GET /v1/limits`: the caller's effective limits (its own, else the deployment's defaults),
/// its quota now, and how many requests this node's share of its rate limit would take at once.
pub async fn limits(State(app): State<Arc<App>>, request: Request) -> Response {
    read(&app, request, "limits", |app, auth, _query| async move {
        let limits = auth.limits().resolve(&app.config.default_limits);
        let nodes = app.api_nodes();
        let (rate, burst) = ratelimit::share(limits.rate_per_sec, limits.burst, nodes);
        let available = app.limiter.available(auth.tenant(), rate, burst, Instant::now());
        let sources: Vec<String> = auth.limits().sources.as_ref().map(|s| s.entries().to_vec()).unwrap_or_default();
        let body = json!({
            "tenant": auth.tenant().get(),
            "limits": {
                "rate_per_sec": limits.rate_per_sec,
                "burst": limits.burst,
                "max_input_bytes": limits.max_input_bytes,
                "max_input_pixels": limits.max_input_pixels,
                "cache_max_age_secs": limits.cache_max_age_secs,
                "sources": sources,
            },
            "rate_limit": {
                "api_nodes": nodes,
                "node_rate_per_sec": rate,
                "node_burst": burst,
                // Whole requests: a fraction of a token admits none.
                "node_available": available.floor() as u64,
            },
            "quota": quota::status(&app, auth.tenant(), limits.quota.as_ref()),
        });
        Ok(json_response(StatusCode::OK, &body))
    })
    .await
}

/// Authenticates the key, takes a token from the reads' own bucket (a tenant throttled on
/// resizes can still see why), runs `answer` with the query string, and labels the response for
/// metrics and the access log.
async fn read<F, Fut>(app: &Arc<App>, request: Request, route: &'static str, answer: F) -> Response
where
    F: FnOnce(Arc<App>, identity::Authenticated, String) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let rid = request.extensions().get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    let mut outcome = Outcome::default();
    let (parts, _) = request.into_parts();
    let result = async {
        let auth = authenticate(app, &parts.headers)?;
        outcome.tenant = Some(auth.tenant());
        app.take_token(&app.read_limiter, auth.tenant(), OWN_READS_PER_SEC, OWN_READ_BURST)?;
        answer(app.clone(), auth, parts.uri.query().unwrap_or("").to_owned()).await
    }
    .await;
    let mut response = result.unwrap_or_else(|e| outcome.fail(e, &rid));
    response.extensions_mut().insert(Route(route));
    response.extensions_mut().insert(outcome);
    response
}
