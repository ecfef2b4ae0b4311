//! The crate's tests against real sockets on loopback: a hand-written origin server that counts
//! its connections ([`server`]), and one file per concern.

mod cache;
mod https;
mod limits;
mod rules;
mod server;
mod ssrf;

use std::time::Duration;

use crate::{OriginPolicy, SourceRules};

/// Short time-outs: a test that hangs fails in seconds.
fn policy() -> OriginPolicy {
    OriginPolicy {
        connect_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_secs(3),
        ..OriginPolicy::default()
    }
}

/// [`policy`] with `host:port` entries allowed to be private (the test origins on loopback).
fn policy_allowing(private: &[String]) -> OriginPolicy {
    OriginPolicy { allow_private: private.to_vec(), ..policy() }
}

fn rules(allowed: &[String], allow_http: bool) -> SourceRules {
    SourceRules { allowed: allowed.to_vec(), allow_http }
}
