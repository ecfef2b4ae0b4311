//! Wiring: the routers, the layer every request passes through (request id, metrics, access
//! log, problem+json for the framework's own refusals), starting the credential-cache feeder,
//! and the graceful shutdown.
//!
//! It imports the handlers (`public.rs`, `admin.rs`, `internal.rs`); nothing imports it but the
//! crate root. Anything a handler needs from here belongs in a file of its own.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use identity::TenantId;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::connections::{self, ConnectionLimits};
use crate::credentials::{feed_credentials, refresh_credentials};
use crate::outcome::{Arrival, Outcome, Route};
use crate::problem::ApiError;
use crate::request_id::{self, RequestId};
use crate::{admin, by_url, internal, own, public, App};

/// The public and admin listeners, bound by the caller (so it knows the ports before serving).
pub struct Listeners {
    /// `None` for the identity service, which serves only the admin API.
    pub public: Option<TcpListener>,
    pub admin: TcpListener,
    /// Cluster mode: where workers fetch staged bytes and return results. It outlives the
    /// public listener at shutdown, so the requests being drained still get their results.
    pub internal: Option<TcpListener>,
    /// Every listener above speaks TLS with this (`api.tls_cert`, `api.tls_key`); None: plain
    /// HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves both APIs until `shutdown` resolves, then drains: `/readyz` turns 503, the listeners
/// close, in-flight requests get up to `shutdown_grace` to finish, the worker pool finishes its
/// queue, and this returns.
pub async fn serve(app: Arc<App>, listeners: Listeners, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    refresh_credentials(&app).await;
    if let Some(queue) = app.conversions.queue() {
        // A cluster api node counts the others, which share the tenants' rate limits with it,
        // and announces itself while it takes requests.
        let (client, node, peers) = (queue.queue.client().clone(), queue.node.clone(), queue.api_peers.clone());
        let app = Arc::downgrade(&app);
        let announcement = move || match app.upgrade() {
            Some(app) => app.announcement(),
            None => queue::Announcement { in_rotation: false, status: String::new() },
        };
        tokio::spawn(async move { queue::announce_and_count(client, &node, peers, announcement).await });
        tokio::spawn(queue.queue.clone().watch_stream_leader());
        tokio::spawn(queue.queue.clone().watch_server());
    }
    let feeder = app.store().is_some().then(|| tokio::spawn(feed_credentials(app.clone())));

    let (stop, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&stop| stop).await;
    };
    let header_timeout = app.config.header_timeout;
    let limits = move |max_connections| ConnectionLimits { header_timeout, max_connections };
    let max = app.config.max_connections;
    let tls = listeners.tls;
    let public = {
        let (app, stopped, tls) = (app.clone(), stopped.clone(), tls.clone());
        async move {
            match listeners.public {
                Some(listener) => {
                    let router = public_router(app);
                    connections::serve(listener, router, limits(max.public), tls, until_stopped(stopped)).await
                }
                None => Ok(()),
            }
        }
    };
    let admin = connections::serve(
        listeners.admin,
        admin_router(app.clone()),
        limits(max.admin),
        tls.clone(),
        until_stopped(stopped),
    );
    let servers = tokio::spawn(async move { tokio::try_join!(public, admin) });
    let (stop_internal, internal_stopped) = watch::channel(false);
    let internal = listeners.internal.map(|listener| {
        let router = internal::router(app.clone());
        tokio::spawn(connections::serve(listener, router, limits(max.internal), tls, until_stopped(internal_stopped)))
    });

    shutdown.await;
    app.shutting_down.store(true, Ordering::Relaxed);
    if let Some(queue) = app.conversions.queue() {
        queue.api_peers.rotation_changed();
    }
    tracing::info!(
        grace_ms = app.config.shutdown_grace.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    let _ = stop.send(true);
    let grace = app.config.shutdown_grace;
    let result = match tokio::time::timeout(grace, servers).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => {
            tracing::warn!("grace period over: in-flight requests abandoned");
            Ok(())
        }
    };
    let _ = stop_internal.send(true);
    if let Some(internal) = internal {
        let _ = tokio::time::timeout(grace, internal).await;
    }
    app.conversions.drain(grace).await;
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    tracing::info!("shut down");
    result
}

fn public_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/resize", post(public::resize))
        .route("/v1/img/{*signed}", get(by_url::image))
        .route("/v1/usage", get(own::usage))
        .route("/v1/audit", get(own::audit))
        .route("/v1/limits", get(own::limits))
        .route("/healthz", get(public::healthz))
        .route("/readyz", get(public::readyz))
        .route("/metrics", get(public::metrics))
        .route("/openapi.json", get(public::openapi_json))
        // The tenant console's static pages; what they show comes from the routes above.
        .merge(console::tenant_router().layer(middleware::map_response(console_route)))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

fn admin_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/tenants", get(admin::list_tenants).post(admin::create_tenant))
        .route("/v1/tenants/{tenant}", get(admin::get_tenant).patch(admin::update_tenant))
        .route("/v1/tenants/{tenant}/keys", get(admin::list_keys).post(admin::create_key))
        .route("/v1/keys/{key}/revoke", post(admin::revoke_key))
        .route("/v1/keys/{key}/rotate", post(admin::rotate_key))
        .route("/v1/admin/audit", get(admin::admin_log))
        .route("/v1/admin/nodes", get(admin::nodes))
        .route("/v1/tenants/{tenant}/usage", get(admin::tenant_usage))
        .route("/v1/tenants/{tenant}/audit", get(admin::tenant_audit))
        .route_layer(middleware::from_fn_with_state(app.clone(), admin::token_first))
        .layer(axum::extract::DefaultBodyLimit::max(admin::BODY_LIMIT))
        // Unauthenticated like the public port's: the identity service has no other port, and
        // an admin port is on the operators' network.
        .route("/healthz", get(public::healthz))
        .route("/readyz", get(public::readyz))
        .route("/metrics", get(public::metrics))
        .route("/openapi.json", get(admin::openapi_json))
        // The operator console's static pages, outside the token layer like health: they hold
        // no data, and every call they make carries the operator's token.
        .merge(console::operator_router().layer(middleware::map_response(console_route)))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// The console's files are counted and logged under one route label of their own.
async fn console_route(mut response: Response) -> Response {
    response.extensions_mut().insert(Route("console"));
    response
}

async fn not_found(request: Request) -> Response {
    let rid = request.extensions().get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    ApiError::NotFound(request.uri().path().to_owned()).into_response(&rid)
}

/// Every request: take or make its id, time it, refuse a head over the limits, turn a plain
/// framework refusal (405, a body over the JSON limit, a bad path) into problem+json, count it,
/// and write one access-log line.
async fn track(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    let arrival = Instant::now();
    let rid = request
        .headers()
        .get(request_id::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(RequestId::from_client)
        .unwrap_or_else(RequestId::generate);
    request.extensions_mut().insert(rid.clone());
    request.extensions_mut().insert(Arrival(arrival));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();

    let mut response = match connections::head_refusal(&request) {
        Some(error) => {
            let mut refusal = error.into_response(&rid);
            // The body, if any, is not read: the connection does not carry another request.
            refusal.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            refusal
        }
        None => next.run(request).await,
    };
    let status = response.status();
    let is_problem = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v == "application/problem+json");
    if status.is_client_error() && !is_problem {
        response = framework_refusal(response, &rid).await;
    }
    if let Ok(value) = HeaderValue::from_str(rid.as_str()) {
        response.headers_mut().insert(request_id::HEADER, value);
    }

    let elapsed = arrival.elapsed();
    let route = response.extensions().get::<Route>().map_or("unmatched", |r| r.0);
    let status = response.status().as_u16();
    app.metrics.http_request(route, status, elapsed);
    let outcome = response.extensions().get::<Outcome>().cloned().unwrap_or_default();
    if let Some(reason) = outcome.auth_failure {
        app.metrics.auth_failure(reason);
    }
    let ms = elapsed.as_secs_f64() * 1e3;
    let tenant = outcome.tenant.map(TenantId::get);
    if status >= 500 {
        tracing::error!(request_id = rid.as_str(), %method, path, route, status, ms, tenant, lane = outcome.lane,
            error = outcome.error.as_deref(), "request failed");
    } else {
        tracing::info!(request_id = rid.as_str(), %method, path, route, status, ms, tenant, lane = outcome.lane,
            source = outcome.source, source_fetched_bytes = outcome.source_fetched_bytes,
            detail = outcome.detail.as_deref(), error = outcome.error.as_deref(), "request");
    }
    response
}

/// A 4xx the framework produced itself (no handler ran, or an extractor refused) as problem+json.
async fn framework_refusal(response: Response, rid: &RequestId) -> Response {
    let (parts, body) = response.into_parts();
    let text = match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).trim().to_owned(),
        Err(_) => String::new(),
    };
    let error = match parts.status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        // Only the admin API's JSON bodies are read by the framework (with its limit).
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge { limit: admin::BODY_LIMIT as u64 },
        StatusCode::NOT_FOUND => ApiError::NotFound(text),
        _ if text.is_empty() => ApiError::BadRequest(parts.status.to_string()),
        _ => ApiError::BadRequest(text),
    };
    let mut problem = error.into_response(rid);
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        problem.headers_mut().insert(header::ALLOW, allow.clone());
    }
    problem.extensions_mut().extend(parts.extensions);
    problem
}
