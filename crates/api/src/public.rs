//! The public API's handlers. `POST /v1/resize` admits a request in the order that costs the
//! least first — key, rate, parameters, body size, header probe — so that a refused request
//! never costs a decode, then hands the image to the dispatcher and awaits it.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use identity::Authenticated;
use imaging::{ImagingError, LimitExceeded, Limits, OutputFormat, ResizeSpec};

use crate::conversions::ConversionRequest;
use crate::problem::ApiError;
use crate::request_id::RequestId;
use crate::server::{Arrival, Conversion, Outcome, Route};
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
    let response = match resize_inner(&app, &rid, parts, &mut body, arrival, &mut outcome).await {
        Ok(response) => response,
        Err(e) => outcome.fail(e, &rid),
    };
    let mut response = record_usage(&app, &rid, parts_query.as_deref(), &mut outcome, response).await;
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

/// Most bytes of a request's query kept in its usage record: every real resize fits, and a
/// client cannot make records (the spool, the usage stream, the archive) as large as it likes.
const MAX_RECORDED_PARAMS: usize = 2048;

/// The query as recorded: cut at [`MAX_RECORDED_PARAMS`] bytes (on a character boundary), with
/// `…` saying so.
fn recorded_params(query: &str) -> std::borrow::Cow<'_, str> {
    if query.len() <= MAX_RECORDED_PARAMS {
        return query.into();
    }
    let mut end = MAX_RECORDED_PARAMS;
    while !query.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &query[..end]).into()
}

/// Most bytes of a refused request's body read only to keep its connection open.
pub(crate) const DRAIN_LIMIT: usize = 1 << 20;

/// Whether the client waits for `100 Continue` before it sends its body.
pub(crate) fn awaits_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

pub(crate) async fn drain(body: Body, limit: usize, deadline: tokio::time::Instant) -> bool {
    matches!(tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await, Ok(Ok(_)))
}

/// A body must have arrived by the request's deadline: a stalled upload holds a connection
/// and its bytes, and is answered 408 then.
fn body_deadline(app: &App, arrival: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(arrival + app.config.request_timeout)
}

async fn resize_inner(
    app: &App,
    rid: &RequestId,
    parts: Parts,
    body: &mut Option<Body>,
    arrival: Instant,
    outcome: &mut Outcome,
) -> Result<Response, ApiError> {
    let auth = authenticate(app, &parts.headers)?;
    outcome.tenant = Some(auth.tenant());
    outcome.key = Some(auth.key().as_str().to_owned());
    let limits = auth.limits().resolve(&app.config.default_limits);
    app.take_token(&app.limiter, auth.tenant(), limits.rate_per_sec, limits.burst)?;

    let query = parts.uri.query().unwrap_or("");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let mut spec = ResizeSpec::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;

    let body = match body.take() {
        Some(body) => read_body(&parts.headers, body, limits.max_input_bytes, body_deadline(app, arrival)).await?,
        None => Bytes::new(),
    };
    outcome.input_bytes = body.len() as u64;
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request body is empty: send the image bytes as the body".into()));
    }
    let probe = imaging::probe(&body).map_err(ImagingError::from)?;
    let pixels = probe.total_pixels();
    outcome.input = Some((probe.format.as_str(), probe.width, probe.height));
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
    let conversion = ConversionRequest {
        input: body,
        spec,
        params: query.to_owned(),
        limits: imaging_limits,
        pixels,
        deadline: arrival + app.config.request_timeout,
        request_id: rid.as_str().into(),
    };
    let done = app.conversions.convert(conversion, &app.metrics).await?;

    let report = &done.report;
    app.metrics.conversion(done.lane, done.queue_wait, report.wall_time, report.cpu_time);
    app.metrics.usage(
        report.input_bytes,
        report.bytes,
        u64::from(report.input_width) * u64::from(report.input_height),
        u64::from(report.width) * u64::from(report.height),
    );
    outcome.lane = Some(done.lane.as_str());
    outcome.worker = done.worker.clone();
    outcome.conversion = Some(Conversion {
        format: report.format.as_str(),
        width: report.width,
        height: report.height,
        bytes: report.bytes,
        queue_wait: done.queue_wait,
        wall: report.wall_time,
        cpu: report.cpu_time,
    });
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
    *response.body_mut() = Body::from(done.image);
    Ok(response)
}

/// Spools the request's usage record before the response leaves (see `usage::Spool` for what
/// that guarantees). Only requests of an authenticated tenant are recorded: a request refused
/// for its key has no tenant to bill or to show the record to (the access log keeps it). If the
/// record cannot be written, the request is not answered as a success.
async fn record_usage(
    app: &App,
    rid: &RequestId,
    query: Option<&str>,
    outcome: &mut Outcome,
    response: Response,
) -> Response {
    let (Some(metering), Some(tenant)) = (&app.metering, outcome.tenant) else { return response };
    let input = outcome.input.unwrap_or(("", 0, 0));
    let conversion = outcome.conversion;
    let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let record = usage::UsageRecord {
        request_id: rid.as_str().into(),
        tenant: tenant.get(),
        key_id: outcome.key.as_deref().unwrap_or_default().into(),
        time_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        node: metering.node.as_str().into(),
        worker: match (&outcome.worker, conversion) {
            (Some(worker), _) => worker.as_str().into(),
            (None, Some(_)) => metering.node.as_str().into(),
            (None, None) => usage::Text::default(),
        },
        status: response.status().as_u16(),
        error: outcome.error_slug.into(),
        params: recorded_params(query.unwrap_or("")).into(),
        input_format: input.0.into(),
        input_bytes: outcome.input_bytes,
        input_width: input.1,
        input_height: input.2,
        output_format: conversion.map_or("", |c| c.format).into(),
        output_bytes: conversion.map_or(0, |c| c.bytes),
        output_width: conversion.map_or(0, |c| c.width),
        output_height: conversion.map_or(0, |c| c.height),
        queue_wait_us: conversion.map_or(0, |c| micros(c.queue_wait)),
        wall_us: conversion.map_or(0, |c| micros(c.wall)),
        cpu_us: conversion.map_or(0, |c| micros(c.cpu)),
    };
    let Some(spool) = &metering.spool else {
        return outcome.fail(ApiError::MeteringUnavailable("this node has no usage spool".into()), rid);
    };
    match spool.append_grouped(record).await {
        Ok(()) => response,
        Err(e) => outcome.fail(ApiError::MeteringUnavailable(e.to_string()), rid),
    }
}

const USAGE_READS_PER_SEC: f64 = 10.0;
const USAGE_READ_BURST: u32 = 20;

/// `GET /v1/usage?from=&to=&granularity=hour|day`: the caller's own tenant, nobody else's.
pub async fn usage(State(app): State<Arc<App>>, request: Request) -> Response {
    let rid = request.extensions().get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    let mut outcome = Outcome::default();
    // Only the head: a `Request` (its body) is not `Sync`, so it cannot be borrowed across awaits.
    let (parts, _) = request.into_parts();
    let result = async {
        let auth = authenticate(&app, &parts.headers)?;
        outcome.tenant = Some(auth.tenant());
        // Reads have their own bucket: a tenant throttled on resizes can still see its usage.
        app.take_token(&app.read_limiter, auth.tenant(), USAGE_READS_PER_SEC, USAGE_READ_BURST)?;
        usage_report(&app, auth.tenant().get(), parts.uri.query().unwrap_or("")).await
    }
    .await;
    let mut response = match result {
        Ok(response) => response,
        Err(e) => outcome.fail(e, &rid),
    };
    response.extensions_mut().insert(Route("usage"));
    response.extensions_mut().insert(outcome);
    response
}

/// How long a usage read waits for the rollups.
const USAGE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A tenant's rollups as JSON (shared by the public and the admin usage routes).
pub async fn usage_report(app: &App, tenant: u64, query: &str) -> Result<Response, ApiError> {
    let metering = app.metering.as_ref().ok_or(ApiError::NotReady(
        "usage is not read on this node: metering is off, or (identity service) usage.rollups_database is not set",
    ))?;
    let range = UsageQuery::parse(query, true)?;
    let rollups = metering.rollups.clone();
    let (from, to, granularity) = (range.from_ms, range.to_ms, range.granularity);
    // The permit goes with the blocking call, not with this request: it is returned when the
    // thread is, which after the timeout below may be much later.
    let permit = metering.rollup_reads.clone().try_acquire_owned().map_err(|_| {
        ApiError::MeteringUnavailable(format!(
            "{} usage reads are already waiting for the rollups database",
            crate::ROLLUP_READS_AT_ONCE
        ))
    })?;
    let query = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        rollups.query(tenant, from, to, granularity)
    });
    // A database that stopped answering gets the client a 503, not a request that never ends.
    let buckets = tokio::time::timeout(USAGE_READ_TIMEOUT, query)
        .await
        .map_err(|_| {
            ApiError::MeteringUnavailable(format!("the usage rollups did not answer within {USAGE_READ_TIMEOUT:?}"))
        })?
        .map_err(|e| ApiError::Internal(format!("usage query task failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (mut total, mut billable) = (usage::Totals::default(), usage::Totals::default());
    let list: Vec<serde_json::Value> = buckets
        .iter()
        .map(|b| {
            let t = b.total();
            total.add(&t);
            billable.add(&b.billable());
            let mut bucket = totals_json(&t);
            bucket["start"] = crate::time::rfc3339_ms(b.start_ms).into();
            bucket["billable"] = totals_json(&b.billable());
            bucket["by_status"] = b
                .by_status
                .iter()
                .map(|(status, t)| (status.to_string(), totals_json(t)))
                .collect::<serde_json::Map<_, _>>()
                .into();
            bucket
        })
        .collect();
    // Rollups are whole hours: say which range the answer covers (an hour that starts before
    // `to` is counted whole), so that adjacent windows show their overlap instead of hiding it.
    const HOUR_MS: i64 = 3_600_000;
    let covered_from = range.from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let covered_to = range
        .to_ms
        .div_euclid(HOUR_MS)
        .saturating_add(i64::from(range.to_ms.rem_euclid(HOUR_MS) != 0))
        .saturating_mul(HOUR_MS);
    let body = serde_json::json!({
        "tenant": tenant,
        "from": crate::time::rfc3339_ms(covered_from),
        "to": crate::time::rfc3339_ms(covered_to),
        "granularity": if granularity == usage::Granularity::Hour { "hour" } else { "day" },
        "total": totals_json(&total),
        "billable": totals_json(&billable),
        "buckets": list,
    });
    Ok(json_response(StatusCode::OK, &body))
}

fn totals_json(t: &usage::Totals) -> serde_json::Value {
    serde_json::json!({
        "requests": t.requests,
        "input_bytes": t.input_bytes,
        "output_bytes": t.output_bytes,
        "input_megapixels": t.input_pixels as f64 / 1e6,
        "output_megapixels": t.output_pixels as f64 / 1e6,
        "cpu_ms": t.cpu_us as f64 / 1e3,
    })
}

/// `from`, `to` (RFC 3339 or YYYY-MM-DD; default: the last 24 hours) and, for rollups,
/// `granularity` (hour, default, or day); `limit` and `after` (a previous page's `next`) for
/// audit reads.
pub struct UsageQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub granularity: usage::Granularity,
    pub limit: usize,
    pub after: Option<usage::AuditCursor>,
}

impl UsageQuery {
    pub fn parse(query: &str, rollups: bool) -> Result<UsageQuery, ApiError> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut q = UsageQuery {
            from_ms: now - 86_400_000,
            to_ms: now,
            granularity: usage::Granularity::Hour,
            limit: 1000,
            after: None,
        };
        let mut from = None;
        let mut seen = Vec::new();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            if seen.contains(&k) {
                return Err(ApiError::BadRequest(format!("parameter '{k}' is given more than once")));
            }
            seen.push(k.clone());
            let time = || {
                crate::time::parse_ms(&v).ok_or_else(|| {
                    ApiError::BadRequest(format!("{k} must be an RFC 3339 time or YYYY-MM-DD, got '{v}'"))
                })
            };
            match k.as_ref() {
                "from" => from = Some(time()?),
                "to" => q.to_ms = time()?,
                "granularity" if rollups => {
                    q.granularity = match v.as_ref() {
                        "hour" => usage::Granularity::Hour,
                        "day" => usage::Granularity::Day,
                        _ => return Err(ApiError::BadRequest(format!("granularity must be hour or day, got '{v}'"))),
                    }
                }
                "limit" if !rollups => {
                    q.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=10_000).contains(n))
                        .ok_or_else(|| ApiError::BadRequest(format!("limit must be 1 to 10000, got '{v}'")))?
                }
                "after" if !rollups => {
                    q.after = Some(usage::AuditCursor::parse(&v).ok_or_else(|| {
                        ApiError::BadRequest("after must be the `next` of a previous page, unchanged".into())
                    })?)
                }
                other => return Err(ApiError::BadRequest(format!("unknown parameter '{other}'"))),
            }
        }
        q.from_ms = from.unwrap_or(q.to_ms - 86_400_000);
        if q.from_ms >= q.to_ms {
            return Err(ApiError::BadRequest("from must be before to".into()));
        }
        if q.to_ms - q.from_ms > 400 * 86_400_000 {
            return Err(ApiError::BadRequest("a range is at most 400 days".into()));
        }
        Ok(q)
    }
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
async fn read_body(
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

/// `format=auto`, negotiated from `Accept` with its q-values: the output format with the highest
/// q; at equal q a type named outright beats one matched by `image/*` or `*/*`, then WebP (the
/// smallest at equal quality) if named outright, then the format that follows the input's, then
/// JPEG.
/// Without `Accept`, or when it takes none of ours, the format that follows the input's.
fn format_for(headers: &HeaderMap, following: OutputFormat) -> OutputFormat {
    // (type, q) of every item of every Accept header.
    let items: Vec<(String, f32)> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|accept| accept.split(','))
        .map(|item| {
            let mut params = item.split(';');
            let mime = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = params
                .filter_map(|p| {
                    p.trim().to_ascii_lowercase().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok())
                })
                .next()
                .filter(|q| q.is_finite())
                .map_or(1.0, |q| q.clamp(0.0, 1.0));
            (mime, q)
        })
        .collect();
    // A format's q comes from its most specific matching item: 2 its type, 1 image/*, 0 */*.
    let rank = |format: OutputFormat| {
        let exact = format!("image/{}", format.as_str());
        let matched = items
            .iter()
            .filter_map(|(mime, q)| match mime.as_str() {
                m if m == exact => Some((2u8, *q)),
                "image/*" => Some((1, *q)),
                "*/*" => Some((0, *q)),
                _ => None,
            })
            .max_by(|a, b| a.0.cmp(&b.0));
        let (specificity, q) = matched?;
        let preference = match format {
            OutputFormat::Webp if specificity == 2 => 3u8,
            _ if format == following => 2,
            // Every client decodes JPEG.
            OutputFormat::Jpeg => 1,
            _ => 0,
        };
        (q > 0.0).then_some(((q * 1000.0) as u32, specificity == 2, preference))
    };
    [OutputFormat::Webp, OutputFormat::Jpeg, OutputFormat::Png]
        .into_iter()
        .filter_map(|format| rank(format).map(|r| (r, format)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map_or(following, |(_, format)| format)
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
        None => {
            let mut body = serde_json::json!({ "status": "ready" });
            if let Some(replica) = app.replica() {
                // Still ready when the watch is down: requests are decided on the last known
                // credentials (availability over consistency for the data plane); say how stale.
                body["identity"] = serde_json::json!({
                    "replication": if replica.watching() { "live" } else { "stale: serving the last known credentials" },
                    "version": app.cache.version(),
                    "lag_ms": replica.lag().as_millis() as u64,
                    "since_contact_ms": replica.since_contact().map(|d| d.as_millis() as u64),
                });
            }
            json_response(StatusCode::OK, &body)
        }
    };
    response.extensions_mut().insert(Route("readyz"));
    response
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let gauges = metrics::Gauges {
        dispatch: app.conversions.stats(),
        staged: app.conversions.queue().map(|q| q.staging.load()),
        queue_connected: app.conversions.queue().map(|q| q.queue.connected()),
        api_nodes: app.conversions.queue().map(|q| q.api_peers.count()),
        replica: app.replica().map(|r| (r.watching(), r.lag(), r.since_contact())),
        spool: app.metering.as_ref().and_then(|m| m.spool.as_ref()).map(|spool| spool.stats()),
        cache_keys: app.cache.len(),
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

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_params_are_bounded_on_a_character_boundary() {
        assert_eq!(recorded_params("width=100&format=webp"), "width=100&format=webp");
        let long = format!("width=1&x={}", "é".repeat(3000));
        let kept = recorded_params(&long);
        assert!(kept.len() <= MAX_RECORDED_PARAMS + '…'.len_utf8(), "{}", kept.len());
        assert!(kept.starts_with("width=1&x=é") && kept.ends_with('…'));
    }

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
        assert_eq!(format_for(&accept("*/*"), OutputFormat::Jpeg), OutputFormat::Jpeg, "curl's Accept");
    }

    #[test]
    fn auto_format_follows_q_values_and_named_types() {
        let jpeg_preferred = accept("image/webp;q=0.5, image/jpeg;q=1");
        assert_eq!(format_for(&jpeg_preferred, OutputFormat::Png), OutputFormat::Jpeg);
        assert_eq!(format_for(&accept("image/png"), OutputFormat::Jpeg), OutputFormat::Png);
        assert_eq!(format_for(&accept("image/jpeg"), OutputFormat::Png), OutputFormat::Jpeg);
        assert_eq!(format_for(&accept("image/webp, image/jpeg"), OutputFormat::Jpeg), OutputFormat::Webp);
        assert_eq!(format_for(&accept("image/png, image/*;q=0.9"), OutputFormat::Jpeg), OutputFormat::Png);
        assert_eq!(format_for(&accept("image/*, image/png;q=0"), OutputFormat::Png), OutputFormat::Jpeg, "png refused");
        assert_eq!(format_for(&accept("text/html"), OutputFormat::Png), OutputFormat::Png, "none of ours");
        assert_eq!(format_for(&accept("IMAGE/WEBP;Q=0.8, image/jpeg;q=0.7"), OutputFormat::Png), OutputFormat::Webp);
        assert_eq!(format_for(&accept("image/webp;q=0.5, */*"), OutputFormat::Png), OutputFormat::Png, "*/* at q=1");
    }
}
