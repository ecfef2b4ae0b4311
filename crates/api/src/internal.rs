//! The internal port of an api node in the cluster: workers fetch a staged job's source bytes
//! and hand back its result here, presenting the job's capability token. Never exposed through
//! the load balancer; nothing here is reachable with an API key.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, Limited};
use queue::{Failure, FailureKind, RemoteDone, ResultMeta, Staging, StagingError, RESULT_HEADER};

use crate::App;

/// Largest result a worker may hand back: far above any output the limits allow.
const MAX_RESULT_BYTES: usize = 256 << 20;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/internal/v1/jobs/{job}/source", get(source))
        .route("/internal/v1/jobs/{job}/result", post(result))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(app)
}

fn staging(app: &App) -> Option<&Arc<Staging>> {
    app.conversions.queue().map(|q| &q.staging)
}

fn token(headers: &HeaderMap) -> &str {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// A refused result, counted by why.
fn refused_result(app: &App, e: &StagingError, headers: &HeaderMap) -> Response {
    app.metrics.result(match e {
        StagingError::Gone(_) => "gone",
        StagingError::WrongToken(_) => "wrong_token",
    });
    refusal(e, headers)
}

/// The worker's hop refused, logged under the client's request id (the worker sends it): a job
/// gone is routine (answered at its deadline, or by another attempt), a wrong token is not.
fn refusal(e: &StagingError, headers: &HeaderMap) -> Response {
    let request_id = headers.get(crate::request_id::HEADER).and_then(|v| v.to_str().ok());
    match e {
        StagingError::Gone(_) => tracing::debug!(request_id, error = %e, "internal: job gone"),
        StagingError::WrongToken(_) => tracing::warn!(request_id, error = %e, "internal: wrong job token"),
    }
    let status = match e {
        StagingError::Gone(_) => StatusCode::GONE,
        StagingError::WrongToken(_) => StatusCode::FORBIDDEN,
    };
    (status, format!("{e}\n")).into_response()
}

async fn source(State(app): State<Arc<App>>, Path(job): Path<String>, headers: HeaderMap) -> Response {
    let Some(staging) = staging(&app) else { return StatusCode::NOT_FOUND.into_response() };
    match staging.source(&job, token(&headers)) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], Body::from(bytes)).into_response(),
        Err(e) => refusal(&e, &headers),
    }
}

async fn result(State(app): State<Arc<App>>, Path(job): Path<String>, request: Request) -> Response {
    let Some(staging) = staging(&app) else { return StatusCode::NOT_FOUND.into_response() };
    let (parts, body) = request.into_parts();
    let token = token(&parts.headers).to_owned();
    // Refuse a wrong or dead token before reading the body.
    if let Err(e) = staging.source(&job, &token) {
        return refused_result(&app, &e, &parts.headers);
    }
    let body: Bytes = match Limited::new(body, MAX_RESULT_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return (StatusCode::BAD_REQUEST, format!("result body not read: {e}\n")).into_response(),
    };
    let described_in_header = parts.headers.get(RESULT_HEADER).and_then(|v| v.to_str().ok());
    let meta: ResultMeta = match described_in_header {
        Some(text) => serde_json::from_str(text),
        None => serde_json::from_slice(&body),
    }
    .map_err(|e| e.to_string())
    .unwrap_or_else(|e| ResultMeta {
        worker: String::new(),
        attempt: 0,
        queue_wait_us: 0,
        fetch_us: 0,
        report: None,
        failure: Some(Failure::new(FailureKind::Internal, format!("the worker's result was not readable: {e}"))),
    });
    let delivery = match (&meta.report, &meta.failure) {
        (_, Some(failure)) => Err(failure.clone()),
        (Some(report), None) => match report.to_report() {
            Some(report) => Ok(RemoteDone { image: body, report, meta }),
            None => Err(Failure::new(FailureKind::Internal, "the worker reported a format this node does not know")),
        },
        (None, None) => Err(Failure::new(FailureKind::Internal, "the worker sent neither a result nor a failure")),
    };
    match staging.deliver(&job, &token, delivery) {
        Ok(()) => {
            app.metrics.result("accepted");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => refused_result(&app, &e, &parts.headers),
    }
}
