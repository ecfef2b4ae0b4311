//! The worker's own small HTTP listener: liveness, readiness and metrics (no job ever comes in
//! through it).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::status::Status;

pub fn router(status: Arc<Status>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(status)
}

async fn ready(State(status): State<Arc<Status>>) -> impl IntoResponse {
    if status.ready() {
        (StatusCode::OK, "ready\n")
    } else if !status.connected() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: not connected to NATS\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the job queue is not set up yet, or shutting down\n")
    }
}

async fn metrics(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let text = status.metrics.render(status.slots, status.connected(), status.ready());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
