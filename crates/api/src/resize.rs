//! The steps of a resize that every route which resizes shares, as plain functions over plain
//! data: admission once the image bytes are in hand ([`admit_image`]: header probe, pixel
//! limit, output format), the conversion ([`convert`]), the answer ([`answer`]: metrics, the
//! outcome, the image response), and the usage record spooled before it leaves
//! ([`record_usage`]). Both resizing routes (`POST /v1/resize`, the signed `GET /v1/img/…`)
//! authenticate in their own way, pass [`admit_tenant`] (in-flight place, quota, rate), get
//! the image's bytes in their own way (a body, a source), then run these.
//!
//! It must not read a request or authenticate (the handlers do), must not decode pixels (the
//! conversion runs on the dispatcher's threads or a worker), and must not import a handler.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use identity::{Authenticated, EffectiveLimits};
use imaging::{AvifPolicy, ImageFormat, ImagingError, LimitExceeded, Limits, OutputFormat, ResizeSpec};

use crate::budget::BodyBytes;
use crate::conversions::{ConversionRequest, Converted};
use crate::in_flight::TenantSlot;
use crate::outcome::{Conversion, Outcome};
use crate::problem::ApiError;
use crate::quota::{self, QuotaHold};
use crate::request_id::RequestId;
use crate::{metrics, App};

/// What a resize holds of the node from its admission until its answer is done: its tenant's
/// place among the requests in flight and its input's bytes in the node's budget. Dropped, it
/// gives both back.
pub struct Held<'a> {
    pub slot: Option<TenantSlot<'a>>,
    pub body: BodyBytes<'a>,
    /// Its place among the tenant's requests counted against its quota, if it has one.
    pub quota: Option<QuotaHold<'a>>,
}

impl<'a> Held<'a> {
    pub fn new(app: &'a App) -> Held<'a> {
        Held { slot: None, body: app.body_budget.reservation(), quota: None }
    }
}

/// The admission every resizing route makes once it knows the tenant, cheapest refusal first:
/// the tenant's place among its requests in flight (before the rate token, so a request refused
/// for the cap costs no token), its quota (a tenant past it spends no tokens on refusals), its
/// rate token. Answers the tenant's limits with the deployment's defaults filled in.
pub fn admit_tenant<'a>(
    app: &'a App,
    auth: &Authenticated,
    outcome: &mut Outcome,
    held: &mut Held<'a>,
) -> Result<EffectiveLimits, ApiError> {
    outcome.tenant = Some(auth.tenant());
    outcome.key = Some(auth.key().as_str().to_owned());
    match app.tenants_in_flight.take(auth.tenant()) {
        Ok(slot) => held.slot = Some(slot),
        Err(capped) => {
            app.metrics.admission_refused(metrics::Refusal::TenantInFlight);
            return Err(capped.into());
        }
    }
    let limits = auth.limits().resolve(&app.config.default_limits);
    if let (Some(quota), Some(board)) = (&limits.quota, app.quota_board()) {
        let hold = quota::admit(board, auth.tenant().get(), quota, crate::time::now_ms()).inspect_err(|e| {
            if let ApiError::QuotaExceeded { dimension, .. } = e {
                app.metrics.quota_refused(dimension);
            }
        })?;
        held.quota = Some(hold);
    }
    app.take_token(&app.limiter, auth.tenant(), limits.rate_per_sec, limits.burst)
        .inspect_err(|_| app.metrics.rate_limited())?;
    Ok(limits)
}

/// A request's parameters as every resizing route parses them: [`ResizeSpec::from_query`], then
/// the deployment's cap on the AVIF encoder's effort (over it: 400, before any body or source is
/// read). Only api nodes check the cap: a worker runs what an api node admitted.
pub fn parse_spec(app: &App, query: &str) -> Result<ResizeSpec, ApiError> {
    let spec = ResizeSpec::from_query(query)?;
    app.config.avif.check(&spec)?;
    Ok(spec)
}

/// A request admitted to conversion: the image, what is asked of it, and the limits it is held
/// to.
pub struct Admitted {
    pub input: Bytes,
    /// With its output format decided (`format=auto` negotiated from `Accept`).
    pub spec: ResizeSpec,
    /// The request's query string: a remote worker parses the parameters from it again.
    pub params: String,
    pub limits: Limits,
    /// Width x height as the header declares them.
    pub pixels: u64,
    /// The output format was negotiated from `Accept`, so the answer varies with it.
    pub negotiated: bool,
}

/// Admission once the bytes are here: the header probe (format and size, no decoding) and the
/// tenant's pixel limit, so that a refused image never costs a decode; then the output format,
/// negotiated from `headers`' `Accept` where the parameters leave it to `auto` (AVIF among the
/// candidates where `avif.auto`, the deployment's `api.auto_avif`), and the deployment's bound
/// on an AVIF answer's pixels.
pub fn admit_image(
    input: Bytes,
    mut spec: ResizeSpec,
    params: &str,
    limits: &EffectiveLimits,
    headers: &HeaderMap,
    avif: &AvifPolicy,
    outcome: &mut Outcome,
) -> Result<Admitted, ApiError> {
    let probe = imaging::probe(&input).map_err(ImagingError::from)?;
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
    // An animation stays one where `frames=1` does not ask for a still: `auto` then picks
    // among the formats that hold animations.
    let animated = probe.frames > 1 && matches!(probe.format, ImageFormat::Gif | ImageFormat::Webp);
    if negotiated && animated && !spec.first_frame_only {
        spec.format = Some(animated_format_for(headers, probe.format));
    } else if negotiated {
        spec.format = Some(format_for(headers, OutputFormat::following(probe.format), avif.auto));
    }
    // An AVIF over the deployment's pixel bound (`limits.avif_max_output_pixels`): asked by name,
    // 413 before any decoding; negotiated, what `auto` picks without AVIF. The same source and
    // options always come to the same size, so a signed URL's ETag still names one answer.
    if spec.format == Some(OutputFormat::Avif) {
        let (w, h) = (probe.width, probe.height);
        // EXIF orientations 5–8 swap the axes: the plan is made on the upright size.
        let upright = if (5..=8).contains(&probe.orientation) { (h, w) } else { (w, h) };
        let (width, height) = imaging::plan(upright, &spec).output();
        if let Err(e) = avif.check_output(spec.format, width, height) {
            if !negotiated {
                return Err(ApiError::Imaging(e));
            }
            spec.format = Some(format_for(headers, OutputFormat::following(probe.format), false));
        }
    }
    if let Some(format) = spec.format {
        outcome.frames = imaging::frames_out(&probe, format, &spec);
    }
    let limits = Limits::with_input_bounds(limits.max_input_bytes, limits.max_input_pixels);
    Ok(Admitted { input, spec, params: params.to_owned(), limits, pixels, negotiated })
}

/// Hands the admitted image to [`App::conversions`](crate::Conversions) and awaits it, until
/// the request's deadline (`request_timeout` from its arrival).
pub async fn convert(app: &App, rid: &RequestId, admitted: Admitted, arrival: Instant) -> Result<Converted, ApiError> {
    let conversion = ConversionRequest {
        input: admitted.input,
        spec: admitted.spec,
        params: admitted.params,
        limits: admitted.limits,
        pixels: admitted.pixels,
        deadline: arrival + app.config.request_timeout,
        request_id: rid.as_str().into(),
    };
    app.conversions.convert(conversion, &app.metrics).await
}

/// The answer to a finished conversion: counted in the metrics, told to the outcome (access
/// log, usage record), and the image with its size and timing headers.
pub fn answer(app: &App, done: Converted, negotiated: bool, outcome: &mut Outcome) -> Response {
    let report = &done.report;
    app.metrics.conversion(done.lane, done.queue_wait, report.wall_time, report.cpu_time);
    // Every frame of an animation is decoded, resized and encoded: its pixels count per frame.
    let frames = u64::from(outcome.frames.max(1));
    app.metrics.usage(
        report.input_bytes,
        report.bytes,
        u64::from(report.input_width) * u64::from(report.input_height) * frames,
        u64::from(report.width) * u64::from(report.height) * frames,
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
    response
}

/// Spools the request's usage record before the response leaves (see `usage::Spool` for what
/// that guarantees). Only requests of an authenticated tenant are recorded: a request refused
/// for its key has no tenant to bill or to show the record to (the access log keeps it). If the
/// record cannot be written, the request is not answered as a success.
pub async fn record_usage(
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
        // A signed GET's source (POST: none).
        source_bytes: outcome.source_fetched_bytes,
        source: outcome.source.unwrap_or_default().into(),
        frames: outcome.frames,
    };
    let Some(spool) = &metering.spool else {
        return outcome.fail(ApiError::MeteringUnavailable("this node has no usage spool".into()), rid);
    };
    let billed = (record.status == 200).then(|| (record.time_ms, usage::Used::of(&record)));
    match spool.append_grouped(record).await {
        Ok(()) => {
            outcome.billed = billed;
            response
        }
        Err(e) => outcome.fail(ApiError::MeteringUnavailable(e.to_string()), rid),
    }
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

/// (media type in lower case, q clamped to 0–1, 1 when absent) of every item of every `Accept`
/// header, in order.
fn accept_items(headers: &HeaderMap) -> Vec<(String, f32)> {
    headers
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
        .collect()
}

/// `format=auto`, negotiated from `Accept` with its q-values: the output format with the highest
/// q; at equal q a type named outright beats one matched by `image/*` or `*/*`, then AVIF (when
/// `avif`: the deployment allows it) and WebP (the smallest at equal quality, in that order) if
/// named outright, then the format that follows the input's, then JPEG. AVIF is a candidate
/// only when named outright: `image/*` and `*/*` are sent by clients that cannot decode it.
/// Without `Accept`, or when it takes none of ours, the format that follows the input's.
pub(crate) fn format_for(headers: &HeaderMap, following: OutputFormat, avif: bool) -> OutputFormat {
    let items = accept_items(headers);
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
        if format == OutputFormat::Avif && specificity < 2 {
            return None;
        }
        let preference = match format {
            OutputFormat::Avif => 4u8,
            OutputFormat::Webp if specificity == 2 => 3,
            _ if format == following => 2,
            // Every client decodes JPEG.
            OutputFormat::Jpeg => 1,
            _ => 0,
        };
        (q > 0.0).then_some(((q * 1000.0) as u32, specificity == 2, preference))
    };
    let avif = avif.then_some(OutputFormat::Avif);
    [OutputFormat::Webp, OutputFormat::Jpeg, OutputFormat::Png]
        .into_iter()
        .chain(avif)
        .filter_map(|format| rank(format).map(|r| (r, format)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map_or(following, |(_, format)| format)
}

/// `format=auto` for an animation kept as one: WebP where `Accept` names it (with q > 0), else
/// the input's own family (GIF stays GIF, WebP stays WebP, as for `Accept: */*`), and GIF for
/// a WebP whose client refuses WebP by name (q=0). Never a still format: that would drop every
/// frame but the first without the client asking (`frames=1` asks).
pub(crate) fn animated_format_for(headers: &HeaderMap, input: ImageFormat) -> OutputFormat {
    let webp_q = accept_items(headers).into_iter().find(|(mime, _)| mime == "image/webp").map(|(_, q)| q);
    match webp_q {
        Some(q) if q > 0.0 => OutputFormat::Webp,
        Some(_) => OutputFormat::Gif,
        None if input == ImageFormat::Webp => OutputFormat::Webp,
        None => OutputFormat::Gif,
    }
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

    /// The negotiation of a deployment without AVIF in `auto`, as before AVIF existed.
    fn format_for_(headers: &HeaderMap, following: OutputFormat) -> OutputFormat {
        format_for(headers, following, false)
    }

    /// Chromium's `Accept` for images, as sent for `<img>`.
    const CHROMIUM: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";

    #[test]
    fn auto_format_prefers_avif_where_allowed_and_named() {
        let avif = |accept_: &str, following| format_for(&accept(accept_), following, true);
        assert_eq!(avif(CHROMIUM, OutputFormat::Jpeg), OutputFormat::Avif);
        assert_eq!(avif(CHROMIUM, OutputFormat::Png), OutputFormat::Avif);
        assert_eq!(format_for(&accept(CHROMIUM), OutputFormat::Jpeg, false), OutputFormat::Webp, "AVIF off");
        // Safari before AVIF, Firefox's `image/*` and curl's `*/*` never get AVIF.
        assert_eq!(avif("image/webp,image/png,image/*;q=0.8", OutputFormat::Jpeg), OutputFormat::Webp);
        assert_eq!(avif("image/*", OutputFormat::Png), OutputFormat::Png);
        assert_eq!(avif("*/*", OutputFormat::Jpeg), OutputFormat::Jpeg);
        // q-values still rule: AVIF named but not preferred, or refused.
        assert_eq!(avif("image/avif;q=0.5,image/webp", OutputFormat::Jpeg), OutputFormat::Webp);
        assert_eq!(avif("image/avif;q=0,image/*", OutputFormat::Png), OutputFormat::Png);
        assert_eq!(avif("image/avif", OutputFormat::Png), OutputFormat::Avif);
    }

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("ascii"));
        h
    }

    #[test]
    fn an_animation_negotiates_webp_or_its_own_family() {
        let (gif, webp) = (ImageFormat::Gif, ImageFormat::Webp);
        assert_eq!(animated_format_for(&accept(CHROMIUM), gif), OutputFormat::Webp);
        assert_eq!(animated_format_for(&accept(CHROMIUM), webp), OutputFormat::Webp);
        // `*/*`, `image/*` or nothing: the input's family, never AVIF, PNG or JPEG.
        for plain in ["*/*", "image/*", "image/png,image/avif"] {
            assert_eq!(animated_format_for(&accept(plain), gif), OutputFormat::Gif, "{plain}");
            assert_eq!(animated_format_for(&accept(plain), webp), OutputFormat::Webp, "{plain}");
        }
        assert_eq!(animated_format_for(&HeaderMap::new(), gif), OutputFormat::Gif);
        assert_eq!(animated_format_for(&accept("image/webp;q=0,*/*"), webp), OutputFormat::Gif, "refused by name");
        assert_eq!(animated_format_for(&accept("image/gif, image/WebP;q=0.5"), gif), OutputFormat::Webp);
    }

    #[test]
    fn auto_format_prefers_webp_only_when_accepted() {
        let browser = accept("image/avif,image/webp,image/apng,image/*,*/*;q=0.8");
        assert_eq!(format_for_(&browser, OutputFormat::Jpeg), OutputFormat::Webp);
        assert_eq!(format_for_(&accept("image/*"), OutputFormat::Png), OutputFormat::Png);
        assert_eq!(format_for_(&accept("image/webp;q=0"), OutputFormat::Jpeg), OutputFormat::Jpeg);
        assert_eq!(format_for_(&HeaderMap::new(), OutputFormat::Jpeg), OutputFormat::Jpeg);
        assert_eq!(format_for_(&accept("*/*"), OutputFormat::Jpeg), OutputFormat::Jpeg, "curl's Accept");
    }

    #[test]
    fn auto_format_follows_q_values_and_named_types() {
        let jpeg_preferred = accept("image/webp;q=0.5, image/jpeg;q=1");
        assert_eq!(format_for_(&jpeg_preferred, OutputFormat::Png), OutputFormat::Jpeg);
        assert_eq!(format_for_(&accept("image/png"), OutputFormat::Jpeg), OutputFormat::Png);
        assert_eq!(format_for_(&accept("image/jpeg"), OutputFormat::Png), OutputFormat::Jpeg);
        assert_eq!(format_for_(&accept("image/webp, image/jpeg"), OutputFormat::Jpeg), OutputFormat::Webp);
        assert_eq!(format_for_(&accept("image/png, image/*;q=0.9"), OutputFormat::Jpeg), OutputFormat::Png);
        assert_eq!(
            format_for_(&accept("image/*, image/png;q=0"), OutputFormat::Png),
            OutputFormat::Jpeg,
            "png refused"
        );
        assert_eq!(format_for_(&accept("text/html"), OutputFormat::Png), OutputFormat::Png, "none of ours");
        assert_eq!(format_for_(&accept("IMAGE/WEBP;Q=0.8, image/jpeg;q=0.7"), OutputFormat::Png), OutputFormat::Webp);
        assert_eq!(format_for_(&accept("image/webp;q=0.5, */*"), OutputFormat::Png), OutputFormat::Png, "*/* at q=1");
    }
}
