//! What one request came to, as the handlers tell it to the tracking layer: its arrival, its
//! route label, and its [`Outcome`] (tenant, key, failure, what was converted) for the access
//! log, the metrics and the usage record.
//!
//! It must not answer requests or import a handler: handlers and the wiring both build on it.

use std::time::{Duration, Instant};

use axum::response::Response;
use identity::TenantId;

use crate::problem::ApiError;
use crate::request_id::RequestId;

/// When the request arrived (set by the tracking layer; deadlines count from here).
#[derive(Clone, Copy)]
pub struct Arrival(pub Instant);

/// The route label of metrics and logs, set by each handler on its response.
#[derive(Clone, Copy)]
pub struct Route(pub &'static str);

/// What a handler tells the access log about a request, beyond its status.
#[derive(Clone, Default)]
pub struct Outcome {
    pub tenant: Option<TenantId>,
    /// The API key's id, once authenticated.
    pub key: Option<String>,
    /// The problem type's slug of a failure (usage records keep it).
    pub error_slug: &'static str,
    /// What usage records need about the input and the conversion, as far as the request got.
    pub input_bytes: u64,
    pub input: Option<(&'static str, u32, u32)>,
    pub conversion: Option<Conversion>,
    pub lane: Option<&'static str>,
    /// The remote worker that converted the image (cluster mode).
    pub worker: Option<String>,
    pub detail: Option<String>,
    pub error: Option<String>,
    pub auth_failure: Option<&'static str>,
    /// The time and billable amounts of the record spooled for a 200: what quota counting adds.
    pub billed: Option<(i64, usage::Used)>,
    /// A signed URL's source: `hit`, `revalidated` or `fetched` from its origin.
    pub source: Option<&'static str>,
    /// Source bytes this request transferred from the origin.
    pub source_fetched_bytes: u64,
    /// Frames the conversion decodes, resizes and encodes (an animation kept as one: all of
    /// them; otherwise 1), known once the output format is: usage bills pixels per frame.
    pub frames: u32,
}

#[derive(Clone, Copy)]
pub struct Conversion {
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub queue_wait: Duration,
    pub wall: Duration,
    pub cpu: Duration,
}

impl Outcome {
    /// Records `error` for the log and metrics, and answers it as problem+json.
    pub fn fail(&mut self, error: ApiError, rid: &RequestId) -> Response {
        self.auth_failure = error.auth_failure_reason();
        self.error_slug = error.slug();
        // A 5xx keeps its internal detail (Debug) for the log; the client gets only the id.
        self.error = Some(if error.status().is_server_error() { format!("{error:?}") } else { error.to_string() });
        error.into_response(rid)
    }
}
