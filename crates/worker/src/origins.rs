//! Where a worker may fetch from: the api nodes' internal ports, named by the operator. A job
//! names its `origin`, and anyone able to publish a job could otherwise make a worker open a
//! connection to any address it can reach (server-side request forgery). A job whose origin is
//! not allowed fails before any connection is made.
//!
//! Knows no job and no NATS: an origin string in, yes or no out.

use std::net::IpAddr;

/// The allowed origins: exact `scheme://host:port` origins, and IP networks (`10.0.1.0/24`)
/// whose members are allowed on any port. A host name only matches an exact entry: a network
/// entry is never checked against a name, since that would need the DNS answer at fetch time.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins {
    exact: Vec<Origin>,
    networks: Vec<(IpAddr, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

#[derive(Debug, thiserror::Error)]
#[error("`{entry}` in worker.api_origins: {why}")]
pub struct InvalidOrigin {
    entry: String,
    why: &'static str,
}

impl AllowedOrigins {
    /// Parses a comma-separated list of origins (`http://10.0.1.11:8082`) and networks
    /// (`10.0.1.0/24`, `127.0.0.1/32`).
    pub fn parse(list: &str) -> Result<AllowedOrigins, InvalidOrigin> {
        let mut allowed = AllowedOrigins::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |why| InvalidOrigin { entry: entry.to_owned(), why };
            if entry.contains("://") {
                let origin =
                    parse_origin(entry).ok_or_else(|| bad("an origin is http(s)://host:port, nothing after"))?;
                allowed.exact.push(origin);
            } else {
                let (address, bits) =
                    entry.split_once('/').ok_or_else(|| bad("an origin URL or a network a.b.c.d/n"))?;
                let address: IpAddr = address.parse().map_err(|_| bad("the network's address is not an IP address"))?;
                let max = if address.is_ipv4() { 32 } else { 128 };
                let bits: u8 =
                    bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| bad("the prefix length is out of range"))?;
                allowed.networks.push((address, bits));
            }
        }
        Ok(allowed)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.networks.is_empty()
    }

    /// Whether a job's origin is one of ours.
    pub fn allows(&self, origin: &str) -> bool {
        let Some(origin) = parse_origin(origin.trim_end_matches('/')) else { return false };
        if self.exact.contains(&origin) {
            return true;
        }
        let Ok(ip) = origin.host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else { return false };
        self.networks.iter().any(|&(network, bits)| in_network(ip, network, bits))
    }
}

/// `scheme://host:port` with nothing else (no user, path or query), the port written or implied.
fn parse_origin(text: &str) -> Option<Origin> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal without a port ends in `]`.
        Some((host, port)) if !port.contains(']') => (host, port.parse().ok()?),
        _ => (rest, default_port),
    };
    if host.is_empty() {
        return None;
    }
    Some(Origin { scheme, host: host.to_ascii_lowercase(), port })
}

fn in_network(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    let (ip, network, width) = match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        (IpAddr::V6(a), IpAddr::V4(n)) => match a.to_ipv4_mapped() {
            Some(a) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32),
            None => return false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => return false,
    };
    let shift = width - u32::from(bits);
    shift >= 128 || (ip >> shift) == (network >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_and_networks() {
        let allowed =
            AllowedOrigins::parse("http://api-1.internal:8082, https://10.0.1.12:8443,10.0.2.0/24").expect("valid");
        assert!(allowed.allows("http://api-1.internal:8082"));
        assert!(allowed.allows("HTTP://API-1.internal:8082/"));
        assert!(allowed.allows("https://10.0.1.12:8443"));
        assert!(allowed.allows("http://10.0.2.200:9999"));
        for refused in [
            "http://api-1.internal:8083",
            "https://api-1.internal:8082",
            "http://10.0.1.12:8443",
            "http://10.0.3.1:80",
            "http://169.254.169.254",
            "http://10.0.2.5.evil.example:80",
            "http://user@10.0.2.5:80",
            "http://10.0.2.5:80/path",
            "file:///etc/passwd",
            "",
        ] {
            assert!(!allowed.allows(refused), "{refused} was allowed");
        }
        assert!(AllowedOrigins::parse("").expect("empty").is_empty());
        assert!(!AllowedOrigins::default().allows("http://127.0.0.1:80"));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "ftp://x:1", "http://x:1/path", "nonsense/8", "http://:80"] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad} was accepted");
        }
        let whole = AllowedOrigins::parse("0.0.0.0/0").expect("every IPv4 address");
        assert!(whole.allows("http://192.168.1.1:1"));
        assert!(AllowedOrigins::parse("::1/128").expect("v6").allows("http://[::1]:8082"));
    }
}
