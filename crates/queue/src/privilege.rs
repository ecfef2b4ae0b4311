//! A role must log in to NATS as its own user, allowed only its subjects (`permissions.rs`);
//! given a login that may do more (the operators' all-permissions user, say), the lists protect
//! nothing. This checks it from the outside: a request to the JetStream account API
//! ([`PROBE_SUBJECT`]), which no role's list allows, is answered only for a login that may do
//! everything. Each NATS server logs the refusal of a role's probe as a permissions violation
//! on that subject, once per start.

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use bytes::Bytes;

use crate::error::QueueError;
use crate::jetstream::connect;
use crate::permissions::Role;

/// Answered by the server itself to a login allowed to publish to it; no role is.
pub const PROBE_SUBJECT: &str = "$JS.API.INFO";

/// How long the probe waits for NATS to be reachable before it gives up checking.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// How long a broad login's answer may take: the server answers at once.
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginScope {
    /// The probe went unanswered: the login is held to a list.
    Narrow,
    /// NATS was not reachable within [`CONNECT_WAIT`]: nothing could be checked.
    Unchecked,
}

/// Err when the login in `urls` may do what `role` must not (the probe was answered); meant to
/// stop the role. Opens a connection of its own (TLS with `tls_ca`, as the role's) and closes it.
pub async fn check_login_scope(urls: &[String], tls_ca: Option<&Path>, role: Role) -> Result<LoginScope, QueueError> {
    let client = connect(urls, "login-scope-check", Some(role), tls_ca).await?;
    let started = Instant::now();
    while client.connection_state() != State::Connected {
        if started.elapsed() > CONNECT_WAIT {
            return Ok(LoginScope::Unchecked);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = tokio::time::timeout(ANSWER_WAIT, client.request(PROBE_SUBJECT, Bytes::new())).await;
    drop(client);
    match answer {
        Ok(Ok(_)) => Err(QueueError::Config(format!(
            "the NATS login in queue.nats_urls may do more than the {role} role: it was answered on {PROBE_SUBJECT}, \
             which no role's permissions allow. Give this process the `{role}` user (deploy/README.md), \
             never an all-permissions one",
            role = role.as_str()
        ))),
        _ => Ok(LoginScope::Narrow),
    }
}
