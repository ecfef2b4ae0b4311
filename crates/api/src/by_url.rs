//! `GET /v1/img/<key id>/<signature>/<options>/<source>`: an image by a signed URL, for `<img
//! src>`, browsers and CDNs. Admission, cheapest refusal first and before any fetch: the URL's
//! shape, its signature under the key's derived secret, its expiry, the key's standing (revoked,
//! expired, tenant suspended), the tenant's in-flight place, quota and rate, the options. Then
//! the source through the node's source cache (the tenant's allow-list and the address guard are
//! the origin crate's), and the same steps as a POST (`resize.rs`).
//!
//! Caching: the answer's strong `ETag` covers the source's validator, the options, the pipeline
//! version and what `Accept` decides; `If-None-Match` is answered 304 without a fetch or a
//! conversion while the source's validator is known to be current, and without a conversion when
//! a revalidation shows it unchanged. `Cache-Control: public, max-age` is the tenant's.
//!
//! It must not import another handler file or the wiring (`server.rs`), which imports it.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use identity::{EffectiveLimits, SourceList};
use imaging::OutputFormat;
use origin::{CacheOutcome, SourceRules};
use sha2::{Digest, Sha256};

use crate::outcome::{Arrival, Outcome, Route};
use crate::problem::ApiError;
use crate::request_id::RequestId;
use crate::resize::{self, record_usage, Held};
use crate::signed_url::SignedPath;
use crate::App;

/// What the answer of a given source and options depends on besides them: a new pipeline may
/// give other pixels, so it gives other ETags.
const PIPELINE_VERSION: &str = concat!("resizer/", env!("CARGO_PKG_VERSION"));

pub async fn image(State(app): State<Arc<App>>, request: Request) -> Response {
    let rid = request.extensions().get::<RequestId>().cloned().unwrap_or_else(RequestId::generate);
    let arrival = request.extensions().get::<Arrival>().map_or_else(Instant::now, |a| a.0);
    let mut outcome = Outcome::default();
    let (parts, _) = request.into_parts();
    let mut held = Held::new(&app);
    // The options in the POST form, once parsed: what the usage record keeps as the parameters.
    let mut recorded = None;
    let response = match image_inner(&app, &rid, &parts, arrival, &mut outcome, &mut held, &mut recorded).await {
        Ok(response) => response,
        Err(e) => outcome.fail(e, &rid),
    };
    let mut response = record_usage(&app, &rid, recorded.as_deref(), &mut outcome, response).await;
    // A signed URL is a public link, and a page on any origin may read what it answers (its
    // image, its ETag, its problem): what `<img crossorigin>`, canvas and fetch() need.
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("etag, x-image-width, x-image-height, x-request-id, server-timing"),
    );
    if let Some(quota) = held.quota.take() {
        quota.finish(outcome.billed);
    }
    drop(held);
    response.extensions_mut().insert(Route("image"));
    response.extensions_mut().insert(outcome);
    response
}

async fn image_inner<'a>(
    app: &'a App,
    rid: &RequestId,
    parts: &Parts,
    arrival: Instant,
    outcome: &mut Outcome,
    held: &mut Held<'a>,
    recorded: &mut Option<String>,
) -> Result<Response, ApiError> {
    let signing = app.config.url_signing.as_ref().ok_or(ApiError::UrlSigningOff)?;
    let sources = app.sources.as_ref().ok_or(ApiError::UrlSigningOff)?;
    let url = SignedPath::parse(parts.uri.path())?;
    // The signature first: nothing about the key, the tenant or the source is revealed to, or
    // done for, a URL its signer did not make.
    url.verify(&signing.key_secret(url.key))?;
    let now = SystemTime::now();
    let options = url.options(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))?;
    let auth = app.cache.signing_key_at(url.key, now).map_err(ApiError::Auth)?;
    let limits = resize::admit_tenant(app, &auth, outcome, held)?;
    let spec = resize::parse_spec(app, &options.query)?;
    *recorded = Some(options.query.clone());
    let source_url = url.source_url()?;
    let rules = rules_for(&source_url, auth.limits().sources.as_ref());
    let negotiation = negotiation_class(&parts.headers, spec.format.is_none(), app.config.avif.auto);

    // Conditional: answered from what the cache knows, with no fetch, while it is current.
    if let Some(validator) = sources.current_validator(&source_url, &rules) {
        let etag = etag(&validator, &options.query, &negotiation);
        if if_none_match(&parts.headers, &etag) {
            app.metrics.source_not_modified();
            return Ok(not_modified(&etag, &limits, spec.format.is_none()));
        }
    }
    let source = sources.get(&source_url, &rules, limits.max_input_bytes).await?;
    app.metrics.source(source.outcome, source.fetched_bytes);
    // The source is held in memory until the answer is done: it counts in the node's budget
    // like a body would.
    held.body.cover(source.bytes.len() as u64)?;
    let etag = etag(&source.validator, &options.query, &negotiation);
    if if_none_match(&parts.headers, &etag) {
        app.metrics.source_not_modified();
        return Ok(not_modified(&etag, &limits, spec.format.is_none()));
    }
    outcome.input_bytes = source.bytes.len() as u64;
    outcome.source = Some(match source.outcome {
        CacheOutcome::Hit => "hit",
        CacheOutcome::Revalidated => "revalidated",
        CacheOutcome::Fetched => "fetched",
    });
    outcome.source_fetched_bytes = source.fetched_bytes;
    let admitted =
        resize::admit_image(source.bytes, spec, &options.query, &limits, &parts.headers, &app.config.avif, outcome)?;
    let negotiated = admitted.negotiated;
    let done = resize::convert(app, rid, admitted, arrival).await?;
    let mut response = resize::answer(app, done, negotiated, outcome);
    let headers = response.headers_mut();
    caching_headers(headers, &etag, &limits);
    if let Some(modified) = source.last_modified.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        headers.insert(header::LAST_MODIFIED, modified);
    }
    Ok(response)
}

/// The tenant's allow-list as the source's scheme needs it: plain-HTTP sources only from
/// entries written `http://…`, HTTPS ones from the others (so that listing a host never opens
/// it over plain HTTP, and a redirect never downgrades).
fn rules_for(source_url: &str, sources: Option<&SourceList>) -> SourceRules {
    let entries = sources.map(SourceList::entries).unwrap_or_default();
    let http = source_url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    let allowed = entries.iter().filter(|e| e.starts_with("http://") == http).cloned().collect();
    SourceRules { allowed, allow_http: http }
}

/// What `Accept` decides about the output: for `format=auto`, the format chosen for each
/// family an input can have; nothing otherwise. Two requests in the same class get the same
/// bytes for the same source, whatever the rest of their `Accept` says. `avif` (the deployment's
/// `api.auto_avif`) is part of the decision, so turning it on or off changes the ETags of the
/// browsers it concerns, and only theirs.
fn negotiation_class(headers: &HeaderMap, negotiated: bool, avif: bool) -> String {
    if !negotiated {
        return String::new();
    }
    let stills = [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp]
        .into_iter()
        .map(|following| resize::format_for(headers, following, avif));
    // And for an animation of each family.
    let animation = [imaging::ImageFormat::Gif, imaging::ImageFormat::Webp]
        .into_iter()
        .map(|input| resize::animated_format_for(headers, input));
    stills.chain(animation).map(OutputFormat::as_str).collect::<Vec<_>>().join(",")
}

/// A strong ETag: SHA-256 over the source's validator, the options, the pipeline version and the
/// negotiation class, cut to 128 bits.
fn etag(validator: &str, options: &str, negotiation: &str) -> String {
    let mut hash = Sha256::new();
    for part in [validator, options, PIPELINE_VERSION, negotiation] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// Whether `If-None-Match` names `etag` (or is `*`). Weak comparison, as RFC 9110 says for
/// `If-None-Match`: a `W/` prefix on the client's tag is ignored.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

fn caching_headers(headers: &mut HeaderMap, etag: &str, limits: &EffectiveLimits) {
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, etag);
    }
    let control = format!("public, max-age={}", limits.cache_max_age_secs);
    if let Ok(control) = HeaderValue::from_str(&control) {
        headers.insert(header::CACHE_CONTROL, control);
    }
}

fn not_modified(etag: &str, limits: &EffectiveLimits, negotiated: bool) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    caching_headers(headers, etag, limits);
    if negotiated {
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> SourceList {
        text.parse().expect("sources")
    }

    #[test]
    fn plain_http_sources_come_only_from_http_entries() {
        let sources = list("images.example.com http://intranet/x/ https://cdn.example.com/a/");
        let https = rules_for("https://images.example.com/a.jpg", Some(&sources));
        assert_eq!(https.allowed, ["images.example.com", "https://cdn.example.com/a/"]);
        assert!(!https.allow_http);
        let http = rules_for("HTTP://intranet/x/a.jpg", Some(&sources));
        assert_eq!(http.allowed, ["http://intranet/x/"]);
        assert!(http.allow_http);
        assert!(rules_for("https://a/", None).allowed.is_empty());
    }

    #[test]
    fn etags_change_with_every_input_and_match_weakly() {
        let base = etag("\"v1\"", "width=100", "");
        assert_ne!(base, etag("\"v2\"", "width=100", ""));
        assert_ne!(base, etag("\"v1\"", "width=101", ""));
        assert_ne!(base, etag("\"v1\"", "width=100", "webp,webp,webp"));
        // Lengths are hashed too: moving a boundary changes the tag.
        assert_ne!(etag("ab", "c", ""), etag("a", "bc", ""));
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&format!("\"x\", W/{base}")).expect("ascii"));
        assert!(if_none_match(&headers, &base));
        assert!(!if_none_match(&headers, &etag("\"v2\"", "width=100", "")));
    }

    #[test]
    fn the_negotiation_class_depends_on_accept_only_for_auto() {
        let mut browser = HeaderMap::new();
        browser.insert(header::ACCEPT, HeaderValue::from_static("image/webp,*/*"));
        // The families of a still JPEG, PNG and WebP, then of an animated GIF and WebP.
        assert_eq!(negotiation_class(&browser, true, true), "webp,webp,webp,webp,webp");
        assert_eq!(negotiation_class(&HeaderMap::new(), true, true), "jpeg,png,webp,gif,webp");
        let mut no_webp = HeaderMap::new();
        no_webp.insert(header::ACCEPT, HeaderValue::from_static("image/webp;q=0,*/*"));
        assert_eq!(negotiation_class(&no_webp, true, true), "jpeg,png,jpeg,gif,gif");
        assert_eq!(negotiation_class(&browser, false, true), "");
        // Chromium: AVIF where the deployment allows it in `auto`, WebP where not; each its class.
        let mut chromium = HeaderMap::new();
        let accept = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        chromium.insert(header::ACCEPT, HeaderValue::from_static(accept));
        assert_eq!(negotiation_class(&chromium, true, true), "avif,avif,avif,webp,webp");
        assert_eq!(negotiation_class(&chromium, true, false), "webp,webp,webp,webp,webp");
        assert_eq!(negotiation_class(&chromium, false, true), "");
    }
}
