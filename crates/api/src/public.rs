//! The public API's handlers. `POST /v1/resize` admits a request in the order that costs the
//! least first — key, the tenant's requests in flight, rate, parameters, body size and the
//! node's budget of body bytes, header probe — so that a refused request never costs a decode,
//! then hands the image to the dispatcher and awaits it (the steps after the body are
//! `resize.rs`'s). Also the caller's own usage, health, readiness, metrics and the
//! OpenAPI document.
//!
//! It must not import another handler file or the wiring (`server.rs`), which imports it.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use crate::body::{awaits_continue, drain, json_response, read_body, DRAIN_LIMIT};
use crate::credentials::authenticate;
use crate::outcome::{Arrival, Outcome, Route};
use crate::problem::ApiError;
use crate::request_id::RequestId;
use crate::resize::{self, record_usage, Admitted, Held};
use crate::{metrics, openapi, App};

pub async fn resize(State(app): State<Arc<App>>, request: Request) -> Response {
    let rid = request.extensions().get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    let arrival = request.extensions().get::<Arrival>().map_or_else(Instant::now, |a| a.0);
    let mut outcome = Outcome::default();
    let (parts, body) = request.into_parts();
    let parts_query = parts.uri.query().map(str::to_owned);
    // A client that asked `Expect: 100-continue` has sent no body yet: reading it to drain it
    // would make hyper invite the upload the answer refuses.
    let awaits_continue = awaits_continue(&parts.headers);
    let mut body = Some(body);
    let mut held = Held::new(&app);
    let response = match resize_inner(&app, &rid, parts, &mut body, arrival, &mut outcome, &mut held).await {
        Ok(response) => response,
        Err(e) => outcome.fail(e, &rid),
    };
    let mut response = record_usage(&app, &rid, parts_query.as_deref(), &mut outcome, response).await;
    if let Some(quota) = held.quota.take() {
        quota.finish(outcome.billed);
    }
    // The answer is done: the input bytes and the tenant's place go back before a refused
    // body is drained (which holds neither).
    drop(held);
    if let Some(unread) = body {
        // Refused before its body was read (key, rate, parameters). A client still sending it
        // would see a reset instead of the answer if the connection closed now: read a small
        // body to the end and keep the connection; close after a large one.
        if awaits_continue || !drain(unread, DRAIN_LIMIT, body_deadline(&app, arrival)).await {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response.extensions_mut().insert(Route("resize"));
    response.extensions_mut().insert(outcome);
    response
}

/// A body must have arrived by the request's deadline: a stalled upload holds a connection
/// and its bytes, and is answered 408 then.
fn body_deadline(app: &App, arrival: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(arrival + app.config.request_timeout)
}

/// One resize: admission, conversion, answer.
async fn resize_inner<'a>(
    app: &'a App,
    rid: &RequestId,
    parts: Parts,
    body: &mut Option<Body>,
    arrival: Instant,
    outcome: &mut Outcome,
    held: &mut Held<'a>,
) -> Result<Response, ApiError> {
    let admitted = admit(app, &parts, body, arrival, outcome, held).await?;
    let negotiated = admitted.negotiated;
    let done = resize::convert(app, rid, admitted, arrival).await?;
    Ok(resize::answer(app, done, negotiated, outcome))
}

/// Admission of `POST /v1/resize`, the cheapest refusal first: the key, the tenant's requests
/// in flight, its quota, its rate, the parameters, the body (within the tenant's byte limit and the node's
/// budget of body bytes in flight, reserved before it is read), then the image's header.
async fn admit<'a>(
    app: &'a App,
    parts: &Parts,
    body: &mut Option<Body>,
    arrival: Instant,
    outcome: &mut Outcome,
    held: &mut Held<'a>,
) -> Result<Admitted, ApiError> {
    let auth = authenticate(app, &parts.headers)?;
    let limits = resize::admit_tenant(app, &auth, outcome, held)?;

    let query = parts.uri.query().unwrap_or("");
    let spec = resize::parse_spec(app, query)?;

    // A body larger than the whole budget could never be admitted: it is too large for this
    // node (413), not a passing overload.
    let max_bytes = limits.max_input_bytes.min(app.body_budget.limit());
    let input = match body.take() {
        Some(body) => {
            let deadline = body_deadline(app, arrival);
            read_body(&parts.headers, body, max_bytes, deadline, &mut held.body).await.inspect_err(|e| {
                if matches!(e, ApiError::BodyBudget(_)) {
                    app.metrics.admission_refused(metrics::Refusal::BodyBudget);
                }
            })?
        }
        None => Bytes::new(),
    };
    outcome.input_bytes = input.len() as u64;
    if input.is_empty() {
        return Err(ApiError::BadRequest("the request body is empty: send the image bytes as the body".into()));
    }
    resize::admit_image(input, spec, query, &limits, &parts.headers, &app.config.avif, outcome)
}

pub async fn healthz() -> Response {
    let mut response = json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
    response.extensions_mut().insert(Route("healthz"));
    response
}

pub async fn readyz(State(app): State<Arc<App>>, request: Request) -> Response {
    let rid = request.extensions().get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    let mut response = match app.not_ready() {
        Some(reason) => ApiError::NotReady(reason).into_response(&rid),
        None => json_response(StatusCode::OK, &app.readiness()),
    };
    response.extensions_mut().insert(Route("readyz"));
    response
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let gauges = metrics::Gauges {
        dispatch: app.conversions.stats(),
        staged: app.conversions.queue().map(|q| q.staging.load()),
        body_bytes_in_flight: (app.body_budget.held(), app.body_budget.limit()),
        tenants_in_flight: app.tenants_in_flight.tenants(),
        queue_connected: app.conversions.queue().map(|q| q.queue.connected()),
        api_nodes: app.conversions.queue().map(|q| q.api_peers.count()),
        job_stream_leader: app.conversions.queue().and_then(|q| q.queue.stream_leader()),
        spool_writable: app.spool().map(|spool| spool.health().is_ok()),
        shipments: app
            .metering
            .as_ref()
            .and_then(|m| m.shipments.as_ref())
            .map(|s| (s.unconfirmed(), s.shipped_again())),
        replica: app.replica().map(|r| (r.watching(), r.lag(), r.since_contact())),
        spool: app.metering.as_ref().and_then(|m| m.spool.as_ref()).map(|spool| spool.stats()),
        cache_keys: app.cache.len(),
        source_cache: app.sources.as_ref().map(|c| {
            let stats = c.stats();
            (stats.entries, stats.bytes_held)
        }),
        cache_version: app.cache.version(),
        ready: app.not_ready().is_none(),
    };
    let mut response = Response::new(Body::from(app.metrics.render(&gauges)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response.extensions_mut().insert(Route("metrics"));
    response
}

pub async fn openapi_json() -> Response {
    let mut response = json_response(StatusCode::OK, &openapi::public_document());
    response.extensions_mut().insert(Route("openapi"));
    response
}
