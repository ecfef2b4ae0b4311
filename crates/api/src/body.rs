//! Request and response bodies: reading a body within its byte limit, its deadline and the
//! node's budget of body bytes in flight (reserved before the bytes are read), draining the
//! body of a refused request so its client sees the answer rather than a reset, and JSON answers.
//!
//! It must not decide whether a request is admitted (the handlers do) or import a handler.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::{BodyExt, Limited};

use crate::budget::BodyBytes;
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

/// The length a request's head declares for its body, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
}

/// The body, refusing it as soon as it is known to be over `limit` bytes: from Content-Length
/// before reading anything, otherwise while it streams in. Its bytes are covered by `reserved`
/// (the node's budget of body bytes in flight) before they are read: a declared length at once,
/// a body without one frame by frame, each before it is kept.
pub async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: u64,
    deadline: tokio::time::Instant,
    reserved: &mut BodyBytes<'_>,
) -> Result<Bytes, ApiError> {
    let declared = declared_length(headers);
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    if let Some(len) = declared {
        reserved.cover(len)?;
    }
    let waited = deadline.saturating_duration_since(tokio::time::Instant::now());
    // One buffer of the declared size (within the limit, and reserved): no copy at the end.
    let mut input = Vec::with_capacity(declared.and_then(|len| usize::try_from(len).ok()).unwrap_or(0));
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(ApiError::BodyTimeout(waited)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ApiError::BadRequest(format!("could not read the request body: {e}"))),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue }; // trailers carry no image bytes
        let total = input.len() as u64 + data.len() as u64;
        if total > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
        reserved.cover(total)?;
        input.extend_from_slice(&data);
    }
    Ok(Bytes::from(input))
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
