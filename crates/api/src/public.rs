//! The public API's handlers. `POST /v1/resize` admits a request in the order that costs the
//! least first — key, rate, parameters, body size, header probe — so that a refused request
//! never costs a decode, then hands the image to the dispatcher and awaits it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use dispatch::Job;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use identity::Authenticated;
use imaging::{ImagingError, LimitExceeded, Limits, OutputFormat, ResizeSpec};

use crate::problem::ApiError;
use crate::request_id::RequestId;
use crate::server::{Arrival, Outcome, Route};
use crate::{metrics, openapi, App};

pub async fn resize(State(app): State<Arc<App>>, request: Request) -> Response {
    let rid = request.extensions().get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    let arrival = request.extensions().get::<Arrival>().map_or_else(Instant::now, |a| a.0);
    let mut outcome = Outcome::default();
    let (parts, body) = request.into_parts();
    let mut body = Some(body);
    let mut response = match resize_inner(&app, parts, &mut body, arrival, &mut outcome).await {
        Ok(response) => response,
        Err(e) => outcome.fail(e, &rid),
    };
    if let Some(unread) = body {
        // Refused before its body was read (key, rate, parameters). A client still sending it
        // would see a reset instead of the answer if the connection closed now: read a small
        // body to the end and keep the connection; close after a large one.
        if !drain(unread, DRAIN_LIMIT).await {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    response.extensions_mut().insert(Route("resize"));
    response.extensions_mut().insert(outcome);
    response
}

/// Most bytes of a refused request's body read only to keep its connection open.
const DRAIN_LIMIT: usize = 1 << 20;

async fn drain(body: Body, limit: usize) -> bool {
    Limited::new(body, limit).collect().await.is_ok()
}

async fn resize_inner(
    app: &App,
    parts: Parts,
    body: &mut Option<Body>,
    arrival: Instant,
    outcome: &mut Outcome,
) -> Result<Response, ApiError> {
    let auth = authenticate(app, &parts.headers)?;
    outcome.tenant = Some(auth.tenant());
    let limits = auth.limits().resolve(&app.config.default_limits);
    app.limiter
        .take(auth.tenant(), limits.rate_per_sec, limits.burst, Instant::now())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })?;

    let query = parts.uri.query().unwrap_or("");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let mut spec = ResizeSpec::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;

    let body = match body.take() {
        Some(body) => read_body(&parts.headers, body, limits.max_input_bytes).await?,
        None => Bytes::new(),
    };
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request body is empty: send the image bytes as the body".into()));
    }
    let probe = imaging::probe(&body).map_err(ImagingError::from)?;
    let pixels = probe.total_pixels();
    if pixels > limits.max_input_pixels {
        let exceeded = LimitExceeded::InputPixels {
            width: probe.width,
            height: probe.height,
            actual: pixels,
            limit: limits.max_input_pixels,
        };
        return Err(ApiError::Imaging(exceeded.into()));
    }
    let negotiated = spec.format.is_none();
    if negotiated {
        spec.format = Some(format_for(&parts.headers, OutputFormat::following(probe.format)));
    }
    let imaging_limits = Limits {
        max_input_bytes: limits.max_input_bytes,
        max_input_pixels: limits.max_input_pixels,
        ..Limits::default()
    };
    let job = Job {
        input: Vec::from(body),
        spec,
        limits: imaging_limits,
        pixels,
        deadline: arrival + app.config.request_timeout,
    };
    let done = app.dispatcher.submit(job).await?;

    let report = &done.output.report;
    app.metrics.conversion(done.lane, done.queue_wait, report.wall_time, report.cpu_time);
    app.metrics.usage(
        report.input_bytes,
        report.bytes,
        u64::from(report.input_width) * u64::from(report.input_height),
        u64::from(report.width) * u64::from(report.height),
    );
    outcome.lane = Some(done.lane.as_str());
    outcome.detail = Some(format!(
        "{} {}x{} -> {} {}x{} {} bytes, queue {:.1} ms, cpu {:.1} ms",
        report.input_format.as_str(),
        report.input_width,
        report.input_height,
        report.format.as_str(),
        report.width,
        report.height,
        report.bytes,
        done.queue_wait.as_secs_f64() * 1e3,
        report.cpu_time.as_secs_f64() * 1e3,
    ));

    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(report.format.mime()));
    headers.insert("x-image-width", HeaderValue::from(report.width));
    headers.insert("x-image-height", HeaderValue::from(report.height));
    let timing = format!(
        "queue;dur={:.3}, convert;dur={:.3}",
        done.queue_wait.as_secs_f64() * 1e3,
        report.wall_time.as_secs_f64() * 1e3
    );
    if let Ok(timing) = HeaderValue::from_str(&timing) {
        headers.insert("server-timing", timing);
    }
    if negotiated {
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    *response.body_mut() = Body::from(done.output.bytes);
    Ok(response)
}

/// The key from `Authorization: Bearer <key>`, decided by the credential cache.
fn authenticate(app: &App, headers: &HeaderMap) -> Result<Authenticated, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(ApiError::MissingKey)?;
    let value = value.to_str().map_err(|_| ApiError::Auth(identity::AuthError::UnknownKey))?;
    let key = match value.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
        _ => return Err(ApiError::MissingKey),
    };
    app.cache.authenticate(key).map_err(ApiError::Auth)
}

/// The body, refusing it as soon as it is known to be over `limit` bytes: from Content-Length
/// before reading anything, otherwise while it streams in.
async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::BodyTooLarge { limit }),
        Err(e) => Err(ApiError::BadRequest(format!("could not read the request body: {e}"))),
    }
}

/// `format=auto`: WebP when the client says it accepts it (smaller at the same quality),
/// otherwise the format that follows the input's.
fn format_for(headers: &HeaderMap, following: OutputFormat) -> OutputFormat {
    let accepts_webp = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|accept| {
        accept.split(',').any(|item| {
            let mut params = item.split(';');
            let mime = params.next().unwrap_or("").trim();
            let refused = params.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            mime.eq_ignore_ascii_case("image/webp") && !refused
        })
    });
    if accepts_webp {
        OutputFormat::Webp
    } else {
        following
    }
}

pub async fn healthz() -> Response {
    let mut response = json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }));
    response.extensions_mut().insert(Route("healthz"));
    response
}

pub async fn readyz(State(app): State<Arc<App>>, request: Request) -> Response {
    let rid = request.extensions().get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    let not_ready = if app.shutting_down.load(Ordering::Relaxed) {
        Some("shutting down")
    } else if !app.cache.is_primed() {
        Some("the credential cache has not been loaded yet")
    } else {
        None
    };
    let mut response = match not_ready {
        Some(reason) => ApiError::NotReady(reason).into_response(&rid),
        None => json_response(StatusCode::OK, &serde_json::json!({ "status": "ready" })),
    };
    response.extensions_mut().insert(Route("readyz"));
    response
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let gauges = metrics::Gauges {
        dispatch: app.dispatcher.stats(),
        cache_keys: app.cache.len(),
        cache_version: app.cache.version(),
        ready: !app.shutting_down.load(Ordering::Relaxed) && app.cache.is_primed(),
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

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("ascii"));
        h
    }

    #[test]
    fn auto_format_prefers_webp_only_when_accepted() {
        let browser = accept("image/avif,image/webp,image/apng,image/*,*/*;q=0.8");
        assert_eq!(format_for(&browser, OutputFormat::Jpeg), OutputFormat::Webp);
        assert_eq!(format_for(&accept("image/*"), OutputFormat::Png), OutputFormat::Png);
        assert_eq!(format_for(&accept("image/webp;q=0"), OutputFormat::Jpeg), OutputFormat::Jpeg);
        assert_eq!(format_for(&HeaderMap::new(), OutputFormat::Jpeg), OutputFormat::Jpeg);
    }
}
