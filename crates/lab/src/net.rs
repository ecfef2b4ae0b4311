//! Loopback ports and waiting: free ports, "does this port accept", "does this URL answer 200",
//! and the polling loop every readiness check here is built on.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// The address every lab process listens on: loopback only.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A port on 127.0.0.1 that was free a moment ago (the kernel's pick for port 0).
///
/// Another process may take it before ours binds it; the window is short and the lab's readiness
/// checks report such a start failure with the process's log.
pub fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct free ports: all listeners are held until the last one is chosen.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| {
            TcpListener::bind((LOOPBACK, 0))
                .map_err(|source| LabError::Net { action: "bind 127.0.0.1:0".into(), source })
        })
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|source| LabError::Net { action: "local address of a bound socket".into(), source })
        })
        .collect()
}

/// Whether a TCP connection to `addr` succeeds within `timeout`.
pub fn tcp_accepts(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// Wait until `addr` accepts TCP connections.
pub fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    poll_until(&format!("{addr} to accept TCP connections"), timeout, Duration::from_millis(50), || {
        if tcp_accepts(addr, Duration::from_millis(250)) {
            Ok(())
        } else {
            Err("connection refused or timed out".into())
        }
    })
}

/// Wait until `GET url` answers 200.
pub fn wait_for_http_ok(url: &str, timeout: Duration) -> Result<()> {
    poll_until(&format!("GET {url} to answer 200"), timeout, Duration::from_millis(50), || {
        match http_get(url, Duration::from_millis(500)) {
            Ok(answer) if answer.status == 200 => Ok(()),
            Ok(answer) => Err(format!("status {}: {}", answer.status, answer.body.trim())),
            Err(e) => Err(e.to_string()),
        }
    })
}

/// A whole HTTP answer: status and body as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

/// `GET url` with an overall timeout; any status is an answer (only no answer is an error).
pub fn http_get(url: &str, timeout: Duration) -> Result<HttpAnswer> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into();
    let mut response =
        agent.get(url).call().map_err(|e| LabError::Http { url: url.to_string(), message: e.to_string() })?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| LabError::Http { url: url.to_string(), message: format!("reading the body: {e}") })?;
    Ok(HttpAnswer { status, body })
}

/// `GET url`, expecting 200 and a JSON body of type `T`.
pub fn http_get_json<T: serde::de::DeserializeOwned>(url: &str, timeout: Duration) -> Result<T> {
    let answer = http_get(url, timeout)?;
    if answer.status != 200 {
        return Err(LabError::BadAnswer {
            url: url.to_string(),
            message: format!("status {}: {}", answer.status, answer.body.trim()),
        });
    }
    serde_json::from_str(&answer.body)
        .map_err(|e| LabError::BadAnswer { url: url.to_string(), message: format!("unexpected JSON: {e}") })
}

/// Call `check` every `interval` until it returns `Ok`, or fail with [`LabError::Timeout`] after
/// `timeout`, carrying the last `Err` text (why it was not ready yet). `check` runs at least once.
pub fn poll_until<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(why) => {
                if start.elapsed() >= timeout {
                    return Err(LabError::Timeout { what: what.to_string(), waited: start.elapsed(), detail: why });
                }
            }
        }
        std::thread::sleep(interval);
    }
}
