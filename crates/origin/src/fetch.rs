//! The client: one GET (and its redirects) to a tenant's origin, over connections this module
//! opens itself to addresses the guard checked, with the node's time-outs and the caller's byte
//! cap applied while the body streams in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use url::{Host, Url};

use crate::address::checked_addresses;
use crate::bucket::{Buckets, Read};
use crate::error::{FetchError, OriginError};
use crate::policy::{check_form, origin_of, parse_source, OriginPolicy, SourceRules};

/// What a cached copy is revalidated with (a conditional GET).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    /// A strong ETag, sent as `If-None-Match`.
    pub etag: Option<String>,
    /// Sent as `If-Modified-Since`.
    pub last_modified: Option<String>,
}

/// An origin's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    Body {
        bytes: Bytes,
        /// Strong ETags only: a weak one (`W/"…"`) cannot vouch for identical bytes.
        etag: Option<String>,
        last_modified: Option<String>,
        /// From `Cache-Control` (`s-maxage` before `max-age`: this node is a shared cache);
        /// `no-cache` is zero.
        max_age: Option<Duration>,
        no_store: bool,
        content_type: Option<String>,
    },
    /// 304 to a conditional GET: the caller's copy is still the origin's.
    NotModified { max_age: Option<Duration> },
}

/// An answer with the redirects that led to it (the cache checks them against each tenant).
pub(crate) struct Traced {
    pub fetched: Fetched,
    pub hops: Vec<Url>,
}

/// Fetches sources under one [`OriginPolicy`]; cheap to clone (shared state).
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    policy: OriginPolicy,
    tls: Arc<ClientConfig>,
    buckets: Buckets,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("policy", &self.inner.policy).finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher trusting the system's CA roots and `policy.extra_ca`.
    pub fn new(policy: OriginPolicy) -> Result<Fetcher, OriginError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(%error, "a system CA certificate could not be read");
        }
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = &policy.extra_ca {
            roots.roots.extend(tls::ca_certificates(path)?.roots);
        }
        if roots.is_empty() {
            // Not fatal: a deployment may fetch only http:// or internal sources.
            tracing::warn!("no CA roots for origins: every https:// source will fail its handshake");
        }
        tracing::debug!(system_roots = added, total = roots.len(), "CA roots for origins");
        let tls = ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let buckets = Buckets::open(&policy)?;
        Ok(Fetcher { inner: Arc::new(Inner { policy, tls: Arc::new(tls), buckets }) })
    }

    pub fn policy(&self) -> &OriginPolicy {
        &self.inner.policy
    }

    /// GET `url` if `rules` allow it, following redirects that they (and the address guard)
    /// allow too, with at most `max_bytes` of body.
    pub async fn fetch(
        &self,
        url: &str,
        rules: &SourceRules,
        max_bytes: u64,
        conditional: Option<&Validators>,
    ) -> Result<Fetched, FetchError> {
        let url = parse_source(url)?;
        rules.check(&url)?;
        Ok(self.fetch_checked(&url, rules, max_bytes, conditional).await?.fetched)
    }

    /// [`fetch`](Self::fetch) of a URL already parsed and checked against `rules`.
    pub(crate) async fn fetch_checked(
        &self,
        url: &Url,
        rules: &SourceRules,
        max_bytes: u64,
        conditional: Option<&Validators>,
    ) -> Result<Traced, FetchError> {
        let total = self.inner.policy.total_timeout;
        if url.scheme() == "s3" {
            let get = self.inner.buckets.get(url, max_bytes, conditional.and_then(|v| v.etag.as_deref()));
            let fetched = match tokio::time::timeout(total, get).await.unwrap_or(Err(FetchError::TooSlow))? {
                Read::NotModified => Fetched::NotModified { max_age: None },
                // No freshness from a bucket: the node's `revalidate_after` applies.
                Read::Object { bytes, etag, last_modified } => Fetched::Body {
                    bytes,
                    etag,
                    last_modified: Some(last_modified),
                    max_age: None,
                    no_store: false,
                    content_type: None,
                },
            };
            return Ok(Traced { fetched, hops: Vec::new() });
        }
        let all = self.follow(url, rules, max_bytes, conditional);
        tokio::time::timeout(total, all).await.unwrap_or(Err(FetchError::TooSlow))
    }

    async fn follow(
        &self,
        start: &Url,
        rules: &SourceRules,
        max_bytes: u64,
        conditional: Option<&Validators>,
    ) -> Result<Traced, FetchError> {
        let mut url = start.clone();
        let mut hops = Vec::new();
        loop {
            let (response, _connection) = self.request(&url, conditional).await?;
            let status = response.status().as_u16();
            let headers = response.headers();
            match status {
                301 | 302 | 303 | 307 | 308 => {
                    if hops.len() as u64 >= u64::from(self.inner.policy.max_redirects) {
                        return Err(FetchError::TooManyRedirects);
                    }
                    let next = redirect_target(&url, headers, status)?;
                    if url.scheme() == "https" && next.scheme() == "http" && !rules.allow_http {
                        return Err(FetchError::NotAllowed(format!(
                            "{} redirected from https:// to http:// ({})",
                            origin_of(&url),
                            origin_of(&next)
                        )));
                    }
                    rules.check(&next)?;
                    hops.push(next.clone());
                    url = next;
                }
                304 if conditional.is_some() => {
                    let (max_age, _) = cache_control(headers);
                    return Ok(Traced { fetched: Fetched::NotModified { max_age }, hops });
                }
                200 | 203 => {
                    let (max_age, no_store) = cache_control(headers);
                    let etag = text(headers, &header::ETAG).filter(|tag| !tag.starts_with("W/"));
                    let last_modified = text(headers, &header::LAST_MODIFIED);
                    let content_type = text(headers, &header::CONTENT_TYPE);
                    let bytes = read_body(response, max_bytes, &url).await?;
                    let fetched = Fetched::Body { bytes, etag, last_modified, max_age, no_store, content_type };
                    return Ok(Traced { fetched, hops });
                }
                other => return Err(FetchError::OriginStatus(other)),
            }
        }
    }

    /// One request on a new connection to a checked address; the response's head, and the
    /// connection's driver to keep while its body is read.
    async fn request(
        &self,
        url: &Url,
        conditional: Option<&Validators>,
    ) -> Result<(Response<Incoming>, Driver), FetchError> {
        let policy = &self.inner.policy;
        let addresses = checked_addresses(url, policy).await?;
        let request = build_request(url, &policy.user_agent, conditional)?;
        let stream = connect(&addresses, policy.connect_timeout, url).await?;
        if url.scheme() != "https" {
            return send(TokioIo::new(stream), request, url).await;
        }
        let name = match url.host() {
            Some(Host::Ipv4(ip)) => ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
            Some(Host::Ipv6(ip)) => ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
            Some(Host::Domain(name)) => {
                ServerName::try_from(name.to_owned()).map_err(|e| FetchError::BadUrl(format!("host {name}: {e}")))?
            }
            None => return Err(FetchError::BadUrl("no host".to_string())),
        };
        let handshake = tokio_rustls::TlsConnector::from(self.inner.tls.clone()).connect(name, stream);
        let stream = tokio::time::timeout(policy.connect_timeout, handshake)
            .await
            .map_err(|_| FetchError::TooSlow)?
            .map_err(|e| FetchError::Unreachable(format!("TLS with {}: {e}", origin_of(url))))?;
        send(TokioIo::new(stream), request, url).await
    }
}

/// The checked addresses in order, each given `timeout`; the last failure if none answers.
async fn connect(addresses: &[SocketAddr], timeout: Duration, url: &Url) -> Result<TcpStream, FetchError> {
    let mut failure = FetchError::Unreachable(format!("{}: no address", origin_of(url)));
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => failure = FetchError::Unreachable(format!("connecting to {}: {e}", origin_of(url))),
            Err(_) => failure = FetchError::TooSlow,
        }
    }
    Err(failure)
}

/// Aborts the task driving a connection when the exchange is over (or abandoned half-way, as
/// when a body runs over its cap).
struct Driver(tokio::task::JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn send<S>(
    io: TokioIo<S>,
    request: Request<Empty<Bytes>>,
    url: &Url,
) -> Result<(Response<Incoming>, Driver), FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| FetchError::Unreachable(format!("{}: {}", origin_of(url), error_chain(&e)));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(failed)?;
    let driver = Driver(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender.send_request(request).await.map_err(failed)?;
    Ok((response, driver))
}

fn build_request(
    url: &Url,
    user_agent: &str,
    conditional: Option<&Validators>,
) -> Result<Request<Empty<Bytes>>, FetchError> {
    let host = url.host_str().unwrap_or("");
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(target)
        .header(header::HOST, host)
        .header(header::USER_AGENT, user_agent)
        .header(header::ACCEPT, "image/*")
        // One request per connection: say so, so that the origin need not wait for another.
        .header(header::CONNECTION, "close");
    if let Some(validators) = conditional {
        // A validator that is not a valid header value is left out: the GET is then plain.
        if let Some(etag) = validators.etag.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(date) = validators.last_modified.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            request = request.header(header::IF_MODIFIED_SINCE, date);
        }
    }
    request.body(Empty::new()).map_err(|e| FetchError::BadUrl(format!("path: {e}")))
}

/// The checked URL a redirect points to.
fn redirect_target(from: &Url, headers: &HeaderMap, status: u16) -> Result<Url, FetchError> {
    // A redirect without a usable Location is a broken origin, not a refusal.
    let location = text(headers, &header::LOCATION).ok_or(FetchError::OriginStatus(status))?;
    let mut next = from.join(&location).map_err(|_| FetchError::OriginStatus(status))?;
    check_form(&next)
        .map_err(|e| FetchError::NotAllowed(format!("{} redirected to a URL that is refused: {e}", origin_of(from))))?;
    next.set_fragment(None);
    Ok(next)
}

fn text(headers: &HeaderMap, name: &header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string())
}

/// `(max_age, no_store)` from the answer's `Cache-Control` headers.
fn cache_control(headers: &HeaderMap) -> (Option<Duration>, bool) {
    let (mut max_age, mut s_maxage, mut no_store, mut no_cache) = (None, None, false, false);
    for value in headers.get_all(header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()) {
        for directive in value.split(',') {
            let (name, argument) = match directive.split_once('=') {
                Some((name, argument)) => (name.trim(), Some(argument.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = argument.and_then(|a| a.parse::<u64>().ok()).map(Duration::from_secs);
            match name.to_ascii_lowercase().as_str() {
                "max-age" => max_age = max_age.or(seconds),
                "s-maxage" => s_maxage = s_maxage.or(seconds),
                "no-store" => no_store = true,
                "no-cache" => no_cache = true,
                _ => {}
            }
        }
    }
    let max_age = if no_cache { Some(Duration::ZERO) } else { s_maxage.or(max_age) };
    (max_age, no_store)
}

/// The body, refused as soon as it is known to run over `max_bytes`: from its Content-Length
/// before reading any of it, else when the bytes read pass the cap.
async fn read_body(response: Response<Incoming>, max_bytes: u64, url: &Url) -> Result<Bytes, FetchError> {
    let announced = text(response.headers(), &header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > max_bytes) {
        return Err(FetchError::TooLarge { limit: max_bytes });
    }
    // Trust the announced length for the allocation only up to a few MiB: it may lie.
    let capacity = announced.unwrap_or(0).min(8 << 20);
    let mut bytes = BytesMut::with_capacity(usize::try_from(capacity).unwrap_or(0));
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            FetchError::Unreachable(format!("reading the body from {}: {}", origin_of(url), error_chain(&e)))
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() as u64 + data.len() as u64 > max_bytes {
                return Err(FetchError::TooLarge { limit: max_bytes });
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.freeze())
}

/// hyper's own message is terse ("connection error"); the causes say what happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn cache_control_gives_freshness_and_no_store() {
        assert_eq!(cache_control(&headers(&[])), (None, false));
        assert_eq!(
            cache_control(&headers(&[("cache-control", "public, max-age=300")])),
            (Some(Duration::from_secs(300)), false)
        );
        let shared = headers(&[("cache-control", "max-age=10"), ("cache-control", "s-maxage=\"20\"")]);
        assert_eq!(cache_control(&shared), (Some(Duration::from_secs(20)), false));
        assert_eq!(cache_control(&headers(&[("cache-control", "No-Store")])), (None, true));
        assert_eq!(
            cache_control(&headers(&[("cache-control", "no-cache, max-age=60")])),
            (Some(Duration::ZERO), false)
        );
    }
}
