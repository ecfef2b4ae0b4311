//! Request and response bodies: reading a body within its byte limit and deadline, draining the
//! body of a refused request so its client sees the answer rather than a reset, and JSON answers.
//!
//! It must not decide whether a request is admitted (the handlers do) or import a handler.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::problem::ApiError;

/// Most bytes of a refused request's body read only to keep its connection open.
pub const DRAIN_LIMIT: usize = 1 << 20;

/// Whether the client waits for `100 Continue` before it sends its body.
pub fn awaits_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// Reads and drops `body` up to `limit` bytes by `deadline`; false if it was longer or slower.
pub async fn drain(body: Body, limit: usize, deadline: tokio::time::Instant) -> bool {
    matches!(tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await, Ok(Ok(_)))
}

/// The body, refusing it as soon as it is known to be over `limit` bytes: from Content-Length
/// before reading anything, otherwise while it streams in.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    deadline: tokio::time::Instant,
) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let waited = deadline.saturating_duration_since(tokio::time::Instant::now());
    let collected = tokio::time::timeout_at(deadline, Limited::new(body, limit_usize).collect())
        .await
        .map_err(|_| ApiError::BodyTimeout(waited))?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::BodyTooLarge { limit }),
        Err(e) => Err(ApiError::BadRequest(format!("could not read the request body: {e}"))),
    }
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
