//! The worker's two HTTP calls to the api node that staged a job: fetch its source bytes, and
//! hand back its result. Both present the job's capability token and run on a blocking thread
//! (ureq), like the conversion between them.

use std::time::Duration;

use queue::{JobMessage, ResultMeta, RESULT_HEADER};

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(1)))
        .max_idle_connections(256)
        .max_idle_connections_per_host(64)
        .build()
        .into()
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum TransferError {
    /// The api node no longer holds the job (answered, expired, or the token is dead): stop.
    #[error("the job is gone from its api node")]
    Gone,
    #[error("the api node answered {status}: {body}")]
    Refused { status: u16, body: String },
    /// No answer: the api node is down or unreachable (its requests died with it).
    #[error("the api node is unreachable: {0}")]
    Unreachable(String),
}

fn url(job: &JobMessage, what: &str) -> String {
    format!("{}/internal/v1/jobs/{}/{what}", job.origin.trim_end_matches('/'), job.job_id)
}

/// The job's source bytes (at most `max_input_bytes`, which the api already enforced).
pub(crate) fn fetch(agent: &ureq::Agent, job: &JobMessage, timeout: Duration) -> Result<Vec<u8>, TransferError> {
    let response = agent
        .get(url(job, "source"))
        .header("authorization", format!("Bearer {}", job.token))
        .config()
        .timeout_global(Some(timeout))
        .build()
        .call()
        .map_err(|e| TransferError::Unreachable(e.to_string()))?;
    let limit = job.max_input_bytes.saturating_add(1);
    read(response, limit)
}

/// Hands back the image (`report` set in `meta`) or the failure (`failure` set, empty image).
pub(crate) fn give_back(
    agent: &ureq::Agent,
    job: &JobMessage,
    meta: &ResultMeta,
    image: &[u8],
    timeout: Duration,
) -> Result<(), TransferError> {
    let request = agent
        .post(url(job, "result"))
        .header("authorization", format!("Bearer {}", job.token))
        .config()
        .timeout_global(Some(timeout))
        .build();
    // The description rides in a header next to the image; a failure (whose message may hold
    // any character a client sent) is the JSON body instead.
    let sent = if meta.failure.is_some() {
        let body = serde_json::to_vec(meta).map_err(|e| TransferError::Unreachable(e.to_string()))?;
        request.header("content-type", "application/json").send(&body[..])
    } else {
        let header = serde_json::to_string(meta).map_err(|e| TransferError::Unreachable(e.to_string()))?;
        request.header(RESULT_HEADER, header).header("content-type", "application/octet-stream").send(image)
    };
    let response = sent.map_err(|e| TransferError::Unreachable(e.to_string()))?;
    read(response, 64 << 10).map(drop)
}

fn read(mut response: ureq::http::Response<ureq::Body>, limit: u64) -> Result<Vec<u8>, TransferError> {
    let status = response.status().as_u16();
    let body = response.body_mut().with_config().limit(limit).read_to_vec();
    match status {
        200..=299 => body.map_err(|e| TransferError::Unreachable(e.to_string())),
        410 => Err(TransferError::Gone),
        _ => Err(TransferError::Refused {
            status,
            body: String::from_utf8_lossy(&body.unwrap_or_default()).chars().take(300).collect(),
        }),
    }
}
