//! The node's settings for origins ([`OriginPolicy`]) and a tenant's rules for its sources
//! ([`SourceRules`]): which URLs may be fetched at all, before any name is resolved.

use std::path::PathBuf;
use std::time::Duration;

use url::{Host, Url};

use crate::error::FetchError;

/// How this node fetches sources: deployment settings, the same for every tenant.
#[derive(Clone, Debug)]
pub struct OriginPolicy {
    /// `host` or `host:port` (as in the URL, case-insensitive; IPv6 in brackets) whose
    /// addresses need not be public: an internal origin of the deployment, or tests.
    pub allow_private: Vec<String>,
    /// For each TCP connect (and the TLS handshake after it).
    pub connect_timeout: Duration,
    /// For a whole fetch: resolution, connections, redirects, headers and the whole body.
    pub total_timeout: Duration,
    pub max_redirects: u32,
    /// A PEM file of CA certificates trusted besides the system's roots.
    pub extra_ca: Option<PathBuf>,
    /// How long a cached source counts as current when its origin said nothing about freshness.
    pub revalidate_after: Duration,
    /// The source cache's byte budget.
    pub cache_bytes: u64,
    pub user_agent: String,
    /// The S3-compatible buckets sources may name as `s3://<name>/<key>`.
    pub buckets: Vec<BucketSpec>,
}

/// A bucket registered by the deployment, as configured: sources `s3://<name>/<key>` are the
/// objects `<prefix>/<key>` of the bucket `url` (`s3://bucket[/prefix]`) names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketSpec {
    pub name: String,
    pub url: String,
    /// object_store's S3 options: endpoint, region, access_key_id, secret_access_key,
    /// allow_http, ...
    pub options: Vec<(String, String)>,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        OriginPolicy {
            allow_private: Vec::new(),
            connect_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(8),
            max_redirects: 3,
            extra_ca: None,
            revalidate_after: Duration::from_secs(60),
            cache_bytes: 256 << 20,
            user_agent: format!("resizer/{}", env!("CARGO_PKG_VERSION")),
            buckets: Vec::new(),
        }
    }
}

impl OriginPolicy {
    /// Whether `url`'s `host` or `host:port` is listed in `allow_private`.
    pub(crate) fn private_allowed(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        let port = url.port_or_known_default().unwrap_or(0);
        let with_port = format!("{host}:{port}");
        // An IPv6 host may be listed without its brackets when no port is given.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        self.allow_private.iter().any(|entry| {
            let entry = entry.trim();
            entry.eq_ignore_ascii_case(host)
                || entry.eq_ignore_ascii_case(&with_port)
                || entry.eq_ignore_ascii_case(bare)
        })
    }
}

/// A tenant's rules for its sources.
///
/// An entry of `allowed` is a host (`images.example.com`), subdomains of one
/// (`*.example.com`, not `example.com` itself), either with `:port`, or a URL prefix
/// (`https://cdn.example.com/customer-a/`: same scheme, host and port, and a path starting with
/// the prefix's). A host entry without a port allows only the scheme's default port (80, 443).
/// `http://` sources only with `allow_http`. A bucket the deployment registered is allowed by a
/// prefix only (`s3://photos/customer-a/`, or `s3://photos/` for all of it), never by a host
/// entry. No entries, no sources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceRules {
    pub allowed: Vec<String>,
    pub allow_http: bool,
}

impl SourceRules {
    /// Whether this tenant may fetch `url` (already parsed by [`parse_source`]).
    pub(crate) fn check(&self, url: &Url) -> Result<(), FetchError> {
        if url.scheme() == "http" && !self.allow_http {
            return Err(FetchError::NotAllowed(format!("http:// sources are not allowed ({})", origin_of(url))));
        }
        if self.allowed.iter().any(|entry| Entry::parse(entry).is_some_and(|e| e.matches(url))) {
            Ok(())
        } else {
            Err(FetchError::NotAllowed(format!("{} is not among the tenant's allowed sources", origin_of(url))))
        }
    }
}

/// `scheme://host[:port]`: how a source is named in messages (its path and query may hold
/// secrets).
pub(crate) fn origin_of(url: &Url) -> String {
    match url.port() {
        Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or("")),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("")),
    }
}

/// A source URL as this crate accepts it: absolute `https://` or `http://` with a host, or
/// `s3://<bucket name>/<key>`; no userinfo; the fragment dropped (it is never sent).
pub(crate) fn parse_source(text: &str) -> Result<Url, FetchError> {
    let mut url = Url::parse(text.trim()).map_err(|e| FetchError::BadUrl(e.to_string()))?;
    check_form(&url)?;
    url.set_fragment(None);
    Ok(url)
}

pub(crate) fn check_form(url: &Url) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "https" | "http" | "s3") {
        return Err(FetchError::BadUrl(format!("scheme {}: only https://, http:// and s3:// sources", url.scheme())));
    }
    if url.scheme() == "s3" && url.port().is_some() {
        return Err(FetchError::BadUrl("an s3:// source names a registered bucket, without a port".to_string()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials have no place in a URL that browsers and CDNs pass around.
        return Err(FetchError::BadUrl("user name or password in the URL".to_string()));
    }
    if url.host().is_none() {
        return Err(FetchError::BadUrl("no host".to_string()));
    }
    Ok(())
}

/// One entry of [`SourceRules::allowed`], parsed.
enum Entry {
    Host { host: String, port: Option<u16> },
    Subdomains { suffix: String, port: Option<u16> },
    Prefix(Url),
}

impl Entry {
    fn parse(text: &str) -> Option<Entry> {
        let text = text.trim();
        if text.contains("://") {
            let url = Url::parse(text).ok()?;
            check_form(&url).ok()?;
            return Some(Entry::Prefix(url));
        }
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (host, port) = split_port(rest)?;
        // The same normalisation as the URL's host (case, IDNA, IPv4 forms, IPv6 brackets).
        let host = if host.contains(':') && !host.starts_with('[') {
            Host::parse(&format!("[{host}]")).ok()?.to_string()
        } else {
            Host::parse(host).ok()?.to_string()
        };
        if wildcard {
            Some(Entry::Subdomains { suffix: format!(".{host}"), port })
        } else {
            Some(Entry::Host { host, port })
        }
    }

    fn matches(&self, url: &Url) -> bool {
        if url.scheme() == "s3" {
            // A registered bucket: its name and a key prefix, nothing else.
            return match self {
                Entry::Prefix(prefix) => {
                    prefix.scheme() == "s3"
                        && prefix.host_str() == url.host_str()
                        && url.path().starts_with(prefix.path())
                }
                Entry::Host { .. } | Entry::Subdomains { .. } => false,
            };
        }
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { return false };
        let port_ok = |wanted: &Option<u16>| match wanted {
            Some(wanted) => *wanted == port,
            None => url.port().is_none(),
        };
        match self {
            Entry::Host { host: wanted, port: wanted_port } => host == wanted && port_ok(wanted_port),
            Entry::Subdomains { suffix, port: wanted_port } => {
                matches!(url.host(), Some(Host::Domain(_))) && host.ends_with(suffix.as_str()) && port_ok(wanted_port)
            }
            Entry::Prefix(prefix) => {
                prefix.scheme() == url.scheme()
                    && prefix.host_str() == Some(host)
                    && prefix.port_or_known_default() == Some(port)
                    && url.path().starts_with(prefix.path())
            }
        }
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address → host and port.
fn split_port(text: &str) -> Option<(&str, Option<u16>)> {
    if text.starts_with('[') {
        let end = text.find(']')?;
        let (host, rest) = text.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match text.split_once(':') {
        Some((host, port)) if !port.contains(':') => Some((host, Some(port.parse().ok()?))),
        Some(_) => Some((text, None)), // a bare IPv6 address
        None => Some((text, None)),
    }
}
