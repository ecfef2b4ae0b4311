//! Loopback ports and waiting: free ports, "does this port accept", "does this URL answer 200",
//! and the polling loop every readiness check here is built on.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// The address every lab process listens on: loopback only.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A port on 127.0.0.1 that was free a moment ago, outside the kernel's ephemeral range.
///
/// Another process may still take it before ours binds it; see [`free_ports`] for why that is
/// rare, and the lab's readiness checks report such a start failure with the process's log.
pub fn free_port() -> Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` distinct ports on 127.0.0.1 that were free a moment ago: all are held until the last one
/// is chosen.
///
/// Not the kernel's pick for port 0: that comes from the ephemeral range, the same range every
/// outgoing connection's local port comes from, so on a busy machine (a test suite making
/// thousands of loopback connections) a port chosen that way was taken by some client socket
/// before the server started, now and then (`Address already in use`). These come from the
/// ports below that range (or above it, if there is more room there), at a random place, each
/// checked by binding it, and never one this process handed out before (its server may not have
/// bound it yet). Another process choosing listen ports the same way at the same moment can
/// still collide, at odds of a few in tens of thousands.
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let (low, high) = ephemeral_range();
    let candidates = listen_range(low, high);
    let span = u32::from(candidates.end - candidates.start);
    let mut listeners = Vec::with_capacity(n);
    if span >= 1024 {
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = random_u32();
        for _ in 0..span {
            if listeners.len() == n {
                break;
            }
            let port = candidates.start + (next % span) as u16;
            // A multiplier coprime with 2^32 visits offsets widely spread, not side by side, so
            // two labs starting together do not walk the same ports in step.
            next = next.wrapping_mul(2_654_435_761).wrapping_add(1);
            if handed_out.contains(&port) {
                continue;
            }
            if let Ok(listener) = TcpListener::bind((LOOPBACK, port)) {
                handed_out.insert(port);
                listeners.push(listener);
            }
        }
    }
    // No room outside the ephemeral range (or it is full): the kernel's pick.
    while listeners.len() < n {
        listeners.push(
            TcpListener::bind((LOOPBACK, 0))
                .map_err(|source| LabError::Net { action: "bind 127.0.0.1:0".into(), source })?,
        );
    }
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|source| LabError::Net { action: "local address of a bound socket".into(), source })
        })
        .collect()
}

/// Ports [`free_ports`] returned in this process: a lab hands out ports for one process after
/// another without waiting for each to bind, and restarts reuse theirs.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`); Linux's default when it
/// cannot be read.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .filter(|(low, high)| low <= high)
        .unwrap_or((32768, 60999))
}

/// Where listen ports are chosen: the larger of the stretches below and above the ephemeral
/// range, leaving out the well-known ports and the first registered ones (10000 and up) unless
/// the range leaves no room above them.
fn listen_range(low: u16, high: u16) -> std::ops::Range<u16> {
    const FIRST: u16 = 10000;
    if low <= FIRST + 1024 && high >= u16::MAX - 1024 {
        return 1024..low.max(1024);
    }
    let below = FIRST..low.max(FIRST);
    let above = high.saturating_add(1).max(FIRST)..u16::MAX;
    if below.len() >= above.len() {
        below
    } else {
        above
    }
}

/// A random number, good enough to spread choices: std's per-process random hash keys.
pub(crate) fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(since.as_nanos());
    }
    hasher.finish() as u32
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
    wait_for_http_ok_trusting(url, timeout, None)
}

/// [`wait_for_http_ok`], an `https://` URL's certificate checked against `ca`.
pub fn wait_for_http_ok_trusting(url: &str, timeout: Duration, ca: Option<&Path>) -> Result<()> {
    poll_until(&format!("GET {url} to answer 200"), timeout, Duration::from_millis(50), || {
        match http_get_trusting(url, Duration::from_millis(500), ca) {
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

/// ureq's TLS settings trusting only the CA certificates in `ca` (rustls on [`tls::provider`]):
/// for the lab's own checks, the admin CLI and tests speaking HTTPS to the lab.
pub fn ureq_tls(ca: &Path) -> Result<ureq::tls::TlsConfig> {
    let invalid = |e: String| LabError::Invalid(format!("{}: {e}", ca.display()));
    let certs = tls::certificate_chain(ca).map_err(|e| invalid(e.to_string()))?;
    let certs = certs.iter().map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()).collect();
    Ok(ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(tls::provider())
        .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
        .build())
}

/// `GET url` with an overall timeout; any status is an answer (only no answer is an error).
pub fn http_get(url: &str, timeout: Duration) -> Result<HttpAnswer> {
    http_get_trusting(url, timeout, None)
}

/// [`http_get`], an `https://` URL's certificate checked against `ca` (without it, https is
/// refused: no system roots).
pub fn http_get_trusting(url: &str, timeout: Duration, ca: Option<&Path>) -> Result<HttpAnswer> {
    let mut config =
        ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).max_idle_connections(0);
    if let Some(ca) = ca {
        config = config.tls_config(ureq_tls(ca)?);
    }
    let agent: ureq::Agent = config.build().into();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_chosen_outside_the_ephemeral_range() {
        let (low, high) = ephemeral_range();
        let ports = free_ports(20).expect("free ports");
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), 20, "{ports:?}");
        if listen_range(low, high).len() >= 1024 {
            assert!(ports.iter().all(|&p| p < low || p > high), "{ports:?} inside {low}-{high}");
        }
        for port in ports {
            TcpListener::bind((LOOPBACK, port)).expect("a chosen port is free once its check socket is closed");
        }
    }

    #[test]
    fn the_larger_stretch_outside_the_ephemeral_range_is_used() {
        assert_eq!(listen_range(32768, 60999), 10000..32768);
        assert_eq!(listen_range(1024, 20000), 20001..65535);
        assert_eq!(listen_range(12000, 64000), 10000..12000);
        assert_eq!(listen_range(10000, 65535), 1024..10000);
        assert!(listen_range(1024, 65535).is_empty());
    }
}
