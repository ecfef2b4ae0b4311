//! Serving a router on a listener, as `axum::serve` does, plus what it leaves out and a public
//! server needs against slow or idle clients: a deadline for each request's head (which is also
//! how long a kept-alive connection may sit idle between requests) and a cap on open
//! connections, so that file descriptors stay for the spool, NATS and the database. Connections
//! over the cap wait in the kernel's accept backlog. Also the limits on a request's head, checked
//! by the router's first layer so that a refusal is problem+json like every other.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::lingering::Lingering;

/// The longest request target (path and query) read; a longer one is answered 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Header fields per request at most; more are answered 431.
pub const MAX_HEADER_FIELDS: usize = 100;
/// Bytes of header fields (names and values) per request at most; more are answered 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// hyper refuses heads on its own (414 past 64 KiB of target, 431 past this many fields or its
/// ~400 KiB read buffer) with empty bodies, and has no hook to change them; its limits sit above
/// ours so that only heads far past them get those.
const HYPER_MAX_HEADER_FIELDS: usize = 128;

/// Why a request's head is refused, if it breaks one of the limits above.
pub fn head_refusal(request: &axum::extract::Request) -> Option<crate::problem::ApiError> {
    use crate::problem::ApiError;
    let target = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(ApiError::UriTooLong { len: target, limit: MAX_URI_BYTES });
    }
    let headers = request.headers();
    if headers.len() > MAX_HEADER_FIELDS {
        return Some(ApiError::HeadersTooLarge(format!(
            "the request has {} header fields, over the limit of {MAX_HEADER_FIELDS}",
            headers.len()
        )));
    }
    let bytes: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len()).sum();
    if bytes > MAX_HEADER_BYTES {
        return Some(ApiError::HeadersTooLarge(format!(
            "the request's header fields hold {bytes} bytes, over the limit of {MAX_HEADER_BYTES}"
        )));
    }
    None
}

/// How one listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request's head must arrive within this, and an idle kept-alive connection is closed
    /// after it.
    pub header_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// The router with the connection's peer address in every request's extensions, as axum's
/// `ConnectInfo` (the admin API throttles wrong tokens per address).
fn with_peer(
    router: Router,
    peer: SocketAddr,
) -> tower::util::MapRequest<Router, impl FnMut(Request<Incoming>) -> Request<Incoming> + Clone> {
    tower::util::MapRequest::new(router, move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        request
    })
}

/// Accepts and serves connections until `stop` resolves, then waits for the open ones to finish
/// their requests (the caller bounds that wait with its grace period). With `tls`, every
/// connection is TLS: its handshake must finish within the head's deadline too, and one that
/// fails (plaintext, a client that does not trust the certificate) is closed unanswered.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: not fatal.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        // The lingering close is under TLS, on the socket itself.
        let stream = Lingering::new(stream);
        let (router, watcher, acceptor) = (router.clone(), graceful.watcher(), acceptor.clone());
        let timeout = limits.header_timeout;
        tokio::spawn(async move {
            match acceptor {
                None => serve_connection(stream, router, peer, timeout, watcher).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        serve_connection(stream, router, peer, timeout, watcher).await;
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// HTTP/1 on one connection, plain or TLS, until it closes.
async fn serve_connection<S>(
    stream: S,
    router: Router,
    peer: SocketAddr,
    header_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_headers(HYPER_MAX_HEADER_FIELDS)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(with_peer(router, peer)));
    // Errors here are a client's (a reset, a malformed head, a head too slow): hyper has
    // answered what can be answered.
    let _ = watcher.watch(connection).await;
}
