//! The SSRF guard: a source's host is resolved here, once, and every address it resolved to
//! must be public; the client then connects only to those checked addresses (no library
//! resolves the name again, so a rebinding answer cannot slip in between).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

use crate::error::FetchError;
use crate::policy::OriginPolicy;

/// The addresses to connect to for `url`, in the resolver's order, all checked.
pub(crate) async fn checked_addresses(url: &Url, policy: &OriginPolicy) -> Result<Vec<SocketAddr>, FetchError> {
    let port = url.port_or_known_default().ok_or_else(|| FetchError::BadUrl("no port".to_string()))?;
    let host_text = url.host_str().unwrap_or("");
    let addresses: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(name)) => {
            let found = tokio::time::timeout(policy.connect_timeout, tokio::net::lookup_host((name, port)))
                .await
                .map_err(|_| FetchError::TooSlow)?
                .map_err(|e| FetchError::Unreachable(format!("resolving {host_text}: {e}")))?;
            found.collect()
        }
        None => return Err(FetchError::BadUrl("no host".to_string())),
    };
    if addresses.is_empty() {
        return Err(FetchError::Unreachable(format!("{host_text} has no address")));
    }
    if policy.private_allowed(url) {
        return Ok(addresses);
    }
    // Any non-public address refuses the host: connecting only to the public ones would still
    // let a name that mixes them probe the inside whenever the public ones fail.
    if let Some(bad) = addresses.iter().find(|a| !is_public(a.ip())) {
        let class = class_of(bad.ip());
        return Err(FetchError::ForbiddenAddress(match url.host() {
            Some(Host::Domain(_)) => format!("{host_text} resolves to a non-public address ({class})"),
            _ => format!("{host_text} is not a public address ({class})"),
        }));
    }
    Ok(addresses)
}

/// Whether `ip` is an address of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_class(v4).is_none(),
        IpAddr::V6(v6) => v6_class(v6).is_none(),
    }
}

fn class_of(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
    .unwrap_or("public")
}

/// The non-public range `ip` is in, if any.
fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "this network",
        (10, _, _) => "private",
        (100, 64..=127, _) => "shared address space",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local",
        (172, 16..=31, _) => "private",
        (192, 0, 0) => "IETF protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 168, _) => "private",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved",
        _ => return None,
    })
}

fn v6_class(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96) reach
    // the embedded IPv4 address: judge that one.
    let embedded = match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8))
        }
        _ => None,
    };
    if let Some(v4) = embedded {
        return v4_class(v4);
    }
    Some(match s[0] {
        0xfc00..=0xfdff => "unique local",
        0xfe80..=0xfebf => "link-local",
        0xfec0..=0xfeff => "site-local",
        0xff00..=0xffff => "multicast",
        0x2001 if s[1] == 0x0db8 => "documentation",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_non_public_ranges_are_refused_and_public_addresses_pass() {
        let refused = [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.1.1.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "::127.0.0.1",
        ];
        for text in refused {
            let ip: IpAddr = text.parse().unwrap();
            assert!(!is_public(ip), "{text} counted as public");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.0.1.1",
            "198.17.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2001:db9::1",
        ];
        for text in public {
            let ip: IpAddr = text.parse().unwrap();
            assert!(is_public(ip), "{text} counted as not public");
        }
    }
}
