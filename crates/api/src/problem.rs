//! Every failure the HTTP edge answers, and the one place that turns it into an RFC 9457
//! `application/problem+json` response. Handlers return `Result<_, ApiError>`; nothing else in
//! the crate picks a status code for an error.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use dispatch::DispatchError;
use identity::{AuthError, StoreError};
use imaging::ImagingError;

use crate::request_id::RequestId;
use crate::signed_url::UrlError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("send an API key as `Authorization: Bearer <key>`")]
    MissingKey,
    #[error("{0}")]
    Auth(AuthError),
    #[error("the admin API needs `Authorization: Bearer <admin token>`; the token given is missing or wrong")]
    AdminUnauthorized,
    /// A valid operator token without the access the route needs (a read-only token writing).
    #[error("operator `{operator}` has {access} access; this needs admin access")]
    AdminForbidden { operator: String, access: &'static str },
    /// Too many wrong admin tokens from this client: its guesses are not checked until the wait.
    #[error("too many wrong admin tokens from this address; retry after {} ms", retry_after.as_millis())]
    AdminThrottled { retry_after: Duration },
    #[error("rate limit reached; retry after {} ms", retry_after.as_millis())]
    RateLimited { retry_after: Duration },
    /// The tenant's quota for the period is used up in a dimension: refused until it ends.
    #[error(
        "the quota of {limit} {dimension} per {period} is used up; it opens again at {}",
        crate::time::rfc3339_ms(*period_end_ms)
    )]
    QuotaExceeded {
        /// The dimension's name (`requests`, `input_bytes`...: `quota::Dimension::as_str`).
        dimension: &'static str,
        limit: String,
        period: String,
        period_end_ms: i64,
        retry_after: Duration,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The request target (path and query) is longer than the server reads.
    #[error("the request target (path and query) is {len} bytes, over the limit of {limit}")]
    UriTooLong { len: usize, limit: usize },
    /// The request's header fields are more, or longer, than the server reads.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// The body had not arrived by the request's deadline (a slow or stalled upload).
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    #[error(transparent)]
    Imaging(#[from] ImagingError),
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("no such resource: {0}")]
    NotFound(String),
    #[error("method not allowed here")]
    MethodNotAllowed,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the server is not ready: {0}")]
    NotReady(&'static str),
    /// The usage record could not be spooled: the request is not answered as a success, since
    /// it could not be billed or audited.
    #[error("usage metering is unavailable; the request was not completed")]
    MeteringUnavailable(String),
    /// The cluster's job queue refused or could not take the job (no NATS, no stream leader,
    /// too many staged bytes).
    #[error("{0}")]
    Queue(queue::QueueError),
    /// The job was handed to `max_attempts` workers and none finished it (each died or froze):
    /// the image is not tried again.
    #[error("{0}")]
    PoisonJob(String),
    /// The node holds its budget of request-body bytes in flight (`api.max_body_bytes_in_flight`):
    /// refused at once, before (or while) the body is read.
    #[error("{0}")]
    BodyBudget(#[from] crate::budget::OverBudget),
    /// The tenant has its cap of requests in flight on this node
    /// (`api.max_requests_in_flight_per_tenant`): refused before the body is read.
    #[error("{0}")]
    TooManyInFlight(#[from] crate::in_flight::TooManyInFlight),
    /// A signed URL that is not the route's shape, not signed by its key, or past its `exp`.
    #[error("{0}")]
    SignedUrl(#[from] crate::signed_url::UrlError),
    /// Signed URLs need `api.url_signing_secret_file`, which this deployment does not set.
    #[error("signed URLs are off on this deployment: set api.url_signing_secret_file")]
    UrlSigningOff,
    /// The source of a signed URL could not be had (refused, unreachable, too slow, too large).
    #[error("{0}")]
    Source(#[from] origin::FetchError),
    /// A failure of ours that no client input explains (a worker panic, the database gone).
    #[error("internal error")]
    Internal(String),
}

/// What a problem document says about one kind of failure.
struct Kind {
    status: StatusCode,
    /// The last part of the problem `type` URI: stable, for clients to branch on.
    slug: &'static str,
    title: &'static str,
}

fn k(status: u16, slug: &'static str, title: &'static str) -> Kind {
    Kind { status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), slug, title }
}

const TYPE_PREFIX: &str = "urn:resizer:problem:";

impl ApiError {
    fn kind(&self) -> Kind {
        match self {
            ApiError::MissingKey => k(401, "missing-key", "API key required"),
            ApiError::Auth(AuthError::Malformed(_) | AuthError::UnknownKey) => k(401, "unknown-key", "Unknown API key"),
            ApiError::Auth(AuthError::Revoked) => k(403, "revoked-key", "API key revoked"),
            // 401, not 403: the key no longer authenticates anyone, and the client's fix is the
            // same as for an unknown key (get a valid one), but told apart so it knows why.
            ApiError::Auth(AuthError::Expired) => k(401, "key-expired", "API key expired"),
            ApiError::Auth(AuthError::TenantSuspended) => k(403, "tenant-suspended", "Tenant suspended"),
            ApiError::Auth(AuthError::SigningKey) => k(401, "signing-key", "A signing key is not an API key"),
            ApiError::SignedUrl(UrlError::Malformed(_)) => k(400, "bad-url", "Not a signed URL"),
            ApiError::SignedUrl(UrlError::BadSignature) => k(403, "bad-signature", "Signature does not match"),
            ApiError::SignedUrl(UrlError::Expired(_)) => k(403, "url-expired", "Signed URL expired"),
            ApiError::UrlSigningOff => k(404, "url-signing-off", "Signed URLs are off"),
            ApiError::Source(e) => source_kind(e),
            ApiError::AdminUnauthorized => k(401, "admin-unauthorized", "Admin token required"),
            ApiError::AdminForbidden { .. } => k(403, "admin-forbidden", "Admin access required"),
            ApiError::AdminThrottled { .. } => k(429, "admin-throttled", "Too many wrong admin tokens"),
            ApiError::RateLimited { .. } => k(429, "rate-limited", "Rate limit reached"),
            ApiError::QuotaExceeded { .. } => k(429, "quota-exceeded", "Quota exceeded"),
            ApiError::BadRequest(_) => k(400, "bad-request", "Bad request"),
            ApiError::BodyTooLarge { .. } => k(413, "too-large", "Input too large"),
            ApiError::BodyTimeout(_) => k(408, "body-timeout", "Request body too slow"),
            ApiError::UriTooLong { .. } => k(414, "uri-too-long", "Request target too long"),
            ApiError::HeadersTooLarge(_) => k(431, "headers-too-large", "Request header fields too large"),
            ApiError::Imaging(e) => imaging_kind(e),
            ApiError::Dispatch(e) => match e {
                DispatchError::Overloaded { .. } => k(503, "overloaded", "Overloaded"),
                DispatchError::ShuttingDown => k(503, "shutting-down", "Shutting down"),
                DispatchError::DeadlineExceeded => k(504, "deadline-exceeded", "Deadline exceeded"),
                DispatchError::Imaging(e) => imaging_kind(e),
                DispatchError::WorkerPanicked { .. } => k(500, "internal", "Internal error"),
            },
            ApiError::Store(e) => match e {
                StoreError::NotFound(_) => k(404, "not-found", "Not found"),
                StoreError::Conflict(_) => k(409, "conflict", "Conflict"),
                StoreError::Invalid(_) => k(400, "bad-request", "Bad request"),
                StoreError::KeyRevoked(_) | StoreError::KeyExpired(_) => k(409, "conflict", "Conflict"),
                // The database is down or unusable: consistency first, so the write is refused
                // whole, and the client may retry once it is back.
                StoreError::Storage(_) => k(503, "identity-store-unavailable", "Identity store unavailable"),
            },
            ApiError::NotFound(_) => k(404, "not-found", "Not found"),
            ApiError::MethodNotAllowed => k(405, "method-not-allowed", "Method not allowed"),
            ApiError::ShuttingDown => k(503, "shutting-down", "Shutting down"),
            ApiError::NotReady(_) => k(503, "not-ready", "Not ready"),
            ApiError::MeteringUnavailable(_) => k(503, "metering-unavailable", "Metering unavailable"),
            ApiError::Queue(queue::QueueError::Full | queue::QueueError::StagingFull) => {
                k(503, "overloaded", "Overloaded")
            }
            ApiError::Queue(queue::QueueError::Unavailable(_) | queue::QueueError::Config(_)) => {
                k(503, "queue-unavailable", "Job queue unavailable")
            }
            // The node's memory for uploads is taken: the same answer as any other overload.
            ApiError::BodyBudget(_) => k(503, "overloaded", "Overloaded"),
            ApiError::TooManyInFlight(_) => k(429, "too-many-in-flight", "Too many requests in flight"),
            ApiError::PoisonJob(_) => k(422, "poison-job", "Image failed every attempt"),
            ApiError::Internal(_) => k(500, "internal", "Internal error"),
        }
    }

    /// The last part of the problem type (`rate-limited`, ...): what usage records keep.
    pub fn slug(&self) -> &'static str {
        self.kind().slug
    }

    pub fn status(&self) -> StatusCode {
        self.kind().status
    }

    /// How long the client should wait before retrying, where that is known.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after }
            | ApiError::AdminThrottled { retry_after }
            | ApiError::QuotaExceeded { retry_after, .. } => Some(*retry_after),
            ApiError::Dispatch(DispatchError::Overloaded { retry_after, .. }) => Some(*retry_after),
            ApiError::Dispatch(DispatchError::ShuttingDown) | ApiError::ShuttingDown => Some(Duration::from_secs(1)),
            ApiError::MeteringUnavailable(_) | ApiError::Queue(_) | ApiError::Store(StoreError::Storage(_)) => {
                Some(Duration::from_secs(1))
            }
            // Room comes back when uploads in flight are answered: about a conversion's time,
            // which nothing here measures for the request refused.
            ApiError::BodyBudget(_) | ApiError::TooManyInFlight(_) => Some(IN_FLIGHT_RETRY_AFTER),
            _ => None,
        }
    }

    /// The reason label of `resizer_auth_failures_total`, for the failures that are auth failures.
    pub fn auth_failure_reason(&self) -> Option<&'static str> {
        match self {
            ApiError::MissingKey => Some("missing"),
            ApiError::Auth(AuthError::Malformed(_)) => Some("malformed"),
            ApiError::Auth(AuthError::UnknownKey) => Some("unknown"),
            ApiError::Auth(AuthError::Revoked) => Some("revoked"),
            ApiError::Auth(AuthError::Expired) => Some("expired"),
            ApiError::Auth(AuthError::TenantSuspended) => Some("suspended"),
            ApiError::Auth(AuthError::SigningKey) => Some("signing_key"),
            ApiError::SignedUrl(UrlError::BadSignature) => Some("bad_signature"),
            ApiError::SignedUrl(UrlError::Expired(_)) => Some("url_expired"),
            _ => None,
        }
    }

    /// The text for the client. A 5xx of ours says only that it happened (the details go to the
    /// log with the request id); everything else says exactly what was wrong.
    fn detail(&self) -> String {
        match self {
            ApiError::Internal(_) | ApiError::Dispatch(DispatchError::WorkerPanicked { .. }) => {
                "the server failed to handle this request; report the request id if it persists".into()
            }
            ApiError::Store(StoreError::Storage(_)) => {
                "the identity store is unavailable; nothing was changed, retry later".into()
            }
            ApiError::Imaging(ImagingError::Internal(_))
            | ApiError::Dispatch(DispatchError::Imaging(ImagingError::Internal(_))) => {
                "the server failed to convert this image; report the request id if it persists".into()
            }
            other => other.to_string(),
        }
    }

    /// The problem+json response, carrying the request id in the body (the header is added for
    /// every response by the request-id layer).
    pub fn into_response(self, request_id: &RequestId) -> Response {
        let kind = self.kind();
        let mut body = serde_json::json!({
            "type": format!("{TYPE_PREFIX}{}", kind.slug),
            "title": kind.title,
            "status": kind.status.as_u16(),
            "detail": self.detail(),
            "request_id": request_id.as_str(),
        });
        let retry_after = self.retry_after();
        if let Some(wait) = retry_after {
            body["retry_after_ms"] = serde_json::json!(retry_after_ms(wait));
        }
        if let ApiError::QuotaExceeded { dimension, period_end_ms, .. } = &self {
            body["quota"] = serde_json::json!({
                "dimension": dimension,
                "period_end": crate::time::rfc3339_ms(*period_end_ms),
            });
        }
        let mut response = Response::new(axum::body::Body::from(body.to_string()));
        *response.status_mut() = kind.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(wait) = retry_after {
            // RFC 9110 allows only whole seconds in Retry-After; the precise wait is in
            // Retry-After-Ms (and `retry_after_ms` in the body) for clients that can use it.
            let secs = wait.as_millis().div_ceil(1000).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
            headers.insert("retry-after-ms", HeaderValue::from(retry_after_ms(wait)));
        }
        if matches!(self, ApiError::MissingKey | ApiError::Auth(_) | ApiError::AdminUnauthorized)
            && kind.status == StatusCode::UNAUTHORIZED
        {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The retry hint of a refusal for bytes or requests in flight.
const IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_secs(1);

fn retry_after_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The pipeline's errors, whether they come straight from the probe or through a worker, as
/// imaging's one table says ([`ImagingError::class`]).
fn imaging_kind(e: &ImagingError) -> Kind {
    let class = e.class();
    k(class.status, class.slug, class.title)
}

/// A source that could not be had: the status and slug are the origin crate's; the title is
/// the API's words for them.
fn source_kind(e: &origin::FetchError) -> Kind {
    let title = match e.slug() {
        "bad-source-url" => "Bad source URL",
        "source-not-allowed" => "Source not allowed",
        "source-address-forbidden" => "Source address forbidden",
        "source-not-found" => "Source not found",
        "too-many-redirects" => "Too many redirects",
        "origin-unreachable" => "Origin unreachable",
        "origin-timeout" => "Origin too slow",
        "too-large" => "Input too large",
        _ => "Origin error",
    };
    k(e.status(), e.slug(), title)
}

/// Every problem `type` the API can answer, for the OpenAPI document.
pub const PROBLEM_TYPES: &[&str] = &[
    "missing-key",
    "unknown-key",
    "revoked-key",
    "key-expired",
    "tenant-suspended",
    "admin-unauthorized",
    "admin-forbidden",
    "admin-throttled",
    "rate-limited",
    "quota-exceeded",
    "too-many-in-flight",
    "bad-request",
    "bad-parameter",
    "too-large",
    "body-timeout",
    "uri-too-long",
    "headers-too-large",
    "unsupported-image",
    "corrupt-image",
    "poison-job",
    "overloaded",
    "shutting-down",
    "deadline-exceeded",
    "not-found",
    "conflict",
    "method-not-allowed",
    "not-ready",
    "metering-unavailable",
    "queue-unavailable",
    "identity-store-unavailable",
    "signing-key",
    "bad-url",
    "bad-signature",
    "url-expired",
    "url-signing-off",
    "bad-source-url",
    "source-not-allowed",
    "source-address-forbidden",
    "source-not-found",
    "origin-error",
    "too-many-redirects",
    "origin-unreachable",
    "origin-timeout",
    "internal",
    // Answered by the load balancer in front, not by this process (`lab::PROBLEM_ERRORS`,
    // `deploy/haproxy.cfg`), so that clients see one set of types.
    "service-unavailable",
    "bad-gateway",
    "gateway-timeout",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_contract() {
        let cases: Vec<(ApiError, u16)> = vec![
            (ApiError::MissingKey, 401),
            (ApiError::Auth(AuthError::UnknownKey), 401),
            (ApiError::Auth(AuthError::Revoked), 403),
            (ApiError::Auth(AuthError::TenantSuspended), 403),
            (ApiError::Auth(AuthError::Expired), 401),
            (ApiError::Store(StoreError::KeyRevoked("AbCdEf012345".parse().expect("key id"))), 409),
            (ApiError::Store(StoreError::KeyExpired("AbCdEf012345".parse().expect("key id"))), 409),
            (ApiError::RateLimited { retry_after: Duration::from_millis(5) }, 429),
            (ApiError::Imaging(ImagingError::BadParameter("x".into())), 400),
            (ApiError::BodyTooLarge { limit: 1 }, 413),
            (ApiError::BodyTimeout(Duration::from_secs(1)), 408),
            (ApiError::Imaging(ImagingError::Unsupported("x".into())), 415),
            (ApiError::Imaging(ImagingError::Corrupt("x".into())), 422),
            (
                ApiError::Dispatch(DispatchError::Overloaded {
                    lane: dispatch::Lane::Small,
                    retry_after: Duration::from_millis(3),
                }),
                503,
            ),
            (ApiError::Dispatch(DispatchError::DeadlineExceeded), 504),
            (ApiError::Dispatch(DispatchError::ShuttingDown), 503),
            (ApiError::Dispatch(DispatchError::WorkerPanicked { message: "x".into() }), 500),
            (ApiError::Dispatch(DispatchError::Imaging(ImagingError::Corrupt("x".into()))), 422),
            (ApiError::UriTooLong { len: 9000, limit: 8192 }, 414),
            (ApiError::HeadersTooLarge("x".into()), 431),
            (ApiError::PoisonJob("x".into()), 422),
            (ApiError::Queue(queue::QueueError::Unavailable("x".into())), 503),
            (ApiError::MeteringUnavailable("x".into()), 503),
            (ApiError::NotReady("x"), 503),
            (ApiError::BodyBudget(crate::budget::OverBudget { limit: 10, held: 8, wanted: 4 }), 503),
            (ApiError::TooManyInFlight(crate::in_flight::TooManyInFlight { cap: 2 }), 429),
            (ApiError::Auth(AuthError::SigningKey), 401),
            (ApiError::SignedUrl(UrlError::Malformed("x".into())), 400),
            (ApiError::SignedUrl(UrlError::BadSignature), 403),
            (ApiError::SignedUrl(UrlError::Expired(1)), 403),
            (ApiError::UrlSigningOff, 404),
            (ApiError::Source(origin::FetchError::BadUrl("x".into())), 400),
            (ApiError::Source(origin::FetchError::NotAllowed("x".into())), 403),
            (ApiError::Source(origin::FetchError::ForbiddenAddress("x".into())), 403),
            (ApiError::Source(origin::FetchError::OriginStatus(404)), 404),
            (ApiError::Source(origin::FetchError::OriginStatus(500)), 502),
            (ApiError::Source(origin::FetchError::TooManyRedirects), 502),
            (ApiError::Source(origin::FetchError::Unreachable("x".into())), 502),
            (ApiError::Source(origin::FetchError::TooSlow), 504),
            (ApiError::Source(origin::FetchError::TooLarge { limit: 1 }), 413),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            let slug = error.kind().slug;
            assert!(PROBLEM_TYPES.contains(&slug), "{slug} is not listed in PROBLEM_TYPES");
        }
    }

    #[test]
    fn imaging_errors_keep_their_status_type_and_title() {
        let cases = [
            (ImagingError::BadParameter("x".into()), 400, "bad-parameter", "Bad parameter"),
            (
                ImagingError::LimitExceeded(imaging::LimitExceeded::Reported("x".into())),
                413,
                "too-large",
                "Input too large",
            ),
            (ImagingError::Unsupported("x".into()), 415, "unsupported-image", "Unsupported image format"),
            (ImagingError::Corrupt("x".into()), 422, "corrupt-image", "Corrupt or undecodable image"),
            (ImagingError::Internal("x".into()), 500, "internal", "Internal error"),
        ];
        for (error, status, slug, title) in cases {
            let (direct, through_dispatch) =
                (imaging_kind(&error), ApiError::Dispatch(DispatchError::Imaging(error)).kind());
            for kind in [direct, through_dispatch] {
                assert_eq!((kind.status.as_u16(), kind.slug, kind.title), (status, slug, title));
                assert!(PROBLEM_TYPES.contains(&kind.slug), "{slug} is not listed in PROBLEM_TYPES");
            }
        }
    }

    #[test]
    fn an_expired_key_is_a_401_of_its_own_type_with_a_challenge() {
        let id = RequestId::from_client("t-3").expect("valid id");
        let e = ApiError::Auth(AuthError::Expired);
        assert_eq!((e.slug(), e.auth_failure_reason()), ("key-expired", Some("expired")));
        let r = e.into_response(&id);
        assert_eq!(r.status().as_u16(), 401);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let e = ApiError::Dispatch(DispatchError::WorkerPanicked { message: "index out of bounds at x.rs:3".into() });
        assert!(!e.detail().contains("x.rs"));
        assert_eq!(e.status().as_u16(), 500);
    }

    #[test]
    fn retry_after_is_whole_seconds_with_milliseconds_alongside() {
        let id = RequestId::from_client("t-1").expect("valid id");
        let r = ApiError::RateLimited { retry_after: Duration::from_millis(1200) }.into_response(&id);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(r.headers()["retry-after-ms"], "1200");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/problem+json");
    }

    #[test]
    fn refusals_for_what_is_in_flight_carry_a_retry_hint() {
        let id = RequestId::from_client("t-2").expect("valid id");
        let over = ApiError::BodyBudget(crate::budget::OverBudget { limit: 10, held: 8, wanted: 4 });
        assert_eq!(over.slug(), "overloaded");
        let r = over.into_response(&id);
        assert_eq!((r.status().as_u16(), r.headers()[header::RETRY_AFTER].to_str().ok()), (503, Some("1")));
        assert_eq!(r.headers()["retry-after-ms"], "1000");
        let capped = ApiError::TooManyInFlight(crate::in_flight::TooManyInFlight { cap: 2 });
        assert_eq!(capped.slug(), "too-many-in-flight");
        let r = capped.into_response(&id);
        assert_eq!((r.status().as_u16(), r.headers()[header::RETRY_AFTER].to_str().ok()), (429, Some("1")));
        assert!(r.headers().contains_key("retry-after-ms"));
    }
}
