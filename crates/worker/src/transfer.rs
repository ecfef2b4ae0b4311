//! The worker's two HTTP calls to the api node that staged a job: fetch its source bytes, and
//! hand back its result. Both present the job's capability token. They run on the async runtime
//! (hyper's HTTP/1 client over a small keep-alive pool per api node): a blocking client would
//! hand every call to another thread and back, twice per job, on machines where the conversion
//! threads already keep every core busy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use queue::{JobMessage, ResultMeta, RESULT_HEADER};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Idle connections kept per api node: one per job a worker holds is plenty.
const IDLE_PER_NODE: usize = 64;
/// Longest error body kept for the log.
const ERROR_BODY_LIMIT: u64 = 64 << 10;

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

/// Keep-alive HTTP/1.1 connections to the api nodes, by `scheme://host:port`.
#[derive(Default)]
pub(crate) struct Client {
    idle: Mutex<HashMap<String, Vec<Connection>>>,
    /// With it, only `https://` origins are spoken to, their certificates checked against the
    /// CA it trusts and the origin's host; without it, only `http://` ones.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// One connection; its driver task ends with it.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Client {
    pub(crate) fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        Client { idle: Mutex::default(), tls }
    }

    /// The job's source bytes (at most `max_input_bytes`, which the api already enforced).
    pub(crate) async fn fetch(&self, job: &JobMessage, timeout: Duration) -> Result<Vec<u8>, TransferError> {
        let request = request(job, Method::GET, "source").body(Full::default());
        let limit = job.max_input_bytes.saturating_add(1);
        within(timeout, self.send(job, request, limit)).await
    }

    /// Hands back the image (`report` set in `meta`) or the failure (`failure` set, empty image).
    pub(crate) async fn give_back(
        &self,
        job: &JobMessage,
        meta: &ResultMeta,
        image: Vec<u8>,
        timeout: Duration,
    ) -> Result<(), TransferError> {
        let unencodable = |e: serde_json::Error| TransferError::Unreachable(e.to_string());
        let request = request(job, Method::POST, "result");
        // The description rides in a header next to the image; a failure (whose message may hold
        // any character a client sent) is the JSON body instead.
        let request = if meta.failure.is_some() {
            let body = serde_json::to_vec(meta).map_err(unencodable)?;
            request.header("content-type", "application/json").body(Full::new(Bytes::from(body)))
        } else {
            let header = serde_json::to_string(meta).map_err(unencodable)?;
            request
                .header(RESULT_HEADER, header)
                .header("content-type", "application/octet-stream")
                .body(Full::new(Bytes::from(image)))
        };
        within(timeout, self.send(job, request, ERROR_BODY_LIMIT)).await.map(drop)
    }

    async fn send(
        &self,
        job: &JobMessage,
        request: Result<Request<Full<Bytes>>, hyper::http::Error>,
        limit: u64,
    ) -> Result<Vec<u8>, TransferError> {
        let bad_origin = |what: &dyn std::fmt::Display| TransferError::Unreachable(format!("{}: {what}", job.origin));
        let mut request = request.map_err(|e| bad_origin(&e))?;
        // A worker that trusts a CA speaks only TLS: a plaintext origin is refused, not used.
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let authority = match request.uri().authority() {
            Some(authority) if request.uri().scheme_str() == Some(scheme) => authority.clone(),
            _ => return Err(bad_origin(&format!("not an {scheme}://host:port address"))),
        };
        let node = format!("{scheme}://{authority}");
        let host = hyper::header::HeaderValue::from_str(authority.as_str()).map_err(|e| bad_origin(&e))?;
        request.headers_mut().insert(hyper::header::HOST, host);
        // On a connection of its own, the request line names the path only.
        if let Some(path) = request.uri().path_and_query() {
            *request.uri_mut() = hyper::Uri::from(path.clone());
        }
        let mut connection = match self.idle_connection(&node) {
            Some(connection) => connection,
            None => connect(&authority, self.tls.as_ref()).await?,
        };
        let response =
            connection.sender.send_request(request).await.map_err(|e| TransferError::Unreachable(error_chain(&e)))?;
        let (status, body) = read(response, limit).await;
        // Only a connection whose answer was read to its end can carry the next request.
        if body.is_ok() {
            self.keep(node, connection);
        }
        match status {
            200..=299 => body,
            410 => Err(TransferError::Gone),
            _ => Err(TransferError::Refused {
                status,
                body: String::from_utf8_lossy(&body.unwrap_or_default()).chars().take(300).collect(),
            }),
        }
    }

    fn idle_connection(&self, node: &str) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let connections = idle.get_mut(node)?;
        // A connection the api node closed (it restarted, or dropped it) is discarded here.
        while let Some(connection) = connections.pop() {
            if connection.sender.is_ready() {
                return Some(connection);
            }
        }
        None
    }

    fn keep(&self, node: String, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Api nodes come and go (each restart may get a new port): forget closed connections.
        idle.retain(|_, connections| {
            connections.retain(|c| !c.sender.is_closed());
            !connections.is_empty()
        });
        let connections = idle.entry(node).or_default();
        if connections.len() < IDLE_PER_NODE {
            connections.push(connection);
        }
    }
}

/// A request to the job's api node, with its capability token and the client's request id (so
/// the hop shows in the api node's logs under the id the client knows).
fn request(job: &JobMessage, method: Method, what: &str) -> hyper::http::request::Builder {
    let origin = job.origin.trim_end_matches('/');
    let builder = Request::builder()
        .method(method)
        .uri(format!("{origin}/internal/v1/jobs/{}/{what}", job.job_id))
        .header("authorization", format!("Bearer {}", job.token));
    match hyper::header::HeaderValue::from_str(&job.request_id) {
        Ok(id) => builder.header("x-request-id", id),
        Err(_) => builder,
    }
}

async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, TransferError>>,
) -> Result<T, TransferError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(TransferError::Unreachable(format!("no answer within {} ms", timeout.as_millis()))))
}

async fn connect(
    authority: &hyper::http::uri::Authority,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Connection, TransferError> {
    let node = authority.as_str();
    let unreachable = |what: String| TransferError::Unreachable(format!("{node}: {what}"));
    let late = || unreachable(format!("no connection within {} ms", CONNECT_TIMEOUT.as_millis()));
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(node))
        .await
        .map_err(|_| late())?
        .map_err(|e| unreachable(e.to_string()))?;
    // Small requests answered at once: Nagle's delay would only add latency.
    stream.set_nodelay(true).map_err(|e| unreachable(e.to_string()))?;
    let Some(config) = tls else { return handshake(TokioIo::new(stream), &unreachable).await };
    // The certificate must name the origin's host (`[::1]` as the address `::1`).
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| unreachable(e.to_string()))?;
    let stream =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_rustls::TlsConnector::from(config.clone()).connect(name, stream))
            .await
            .map_err(|_| late())?
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
    handshake(TokioIo::new(stream), &unreachable).await
}

async fn handshake<S>(
    io: TokioIo<S>,
    unreachable: &impl Fn(String) -> TransferError,
) -> Result<Connection, TransferError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| unreachable(error_chain(&e)))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Connection { sender, driver })
}

/// The status and the body read to its end (at most `limit` bytes; the body's own failure is
/// kept apart so that a refusal with a broken body still says its status).
async fn read(response: Response<hyper::body::Incoming>, limit: u64) -> (u16, Result<Vec<u8>, TransferError>) {
    let status = response.status().as_u16();
    let announced = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_long = || TransferError::Unreachable(format!("an answer over {limit} bytes"));
    if announced.is_some_and(|length| length > limit) {
        return (status, Err(too_long()));
    }
    let mut body = response.into_body();
    let mut bytes = Vec::with_capacity(usize::try_from(announced.unwrap_or(0)).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return (status, Err(TransferError::Unreachable(error_chain(&e)))),
        };
        if let Ok(data) = frame.into_data() {
            if bytes.len() as u64 + data.len() as u64 > limit {
                return (status, Err(too_long()));
            }
            bytes.extend_from_slice(&data);
        }
    }
    (status, Ok(bytes))
}

/// hyper's own message is terse ("connection error"); the causes say what happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Path;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// An api node's internal routes: job `big` has a source over the limit, `gone` is answered 410,
    /// anything else has the source `source of <job>`; a result is answered with its length.
    async fn api_node(connections: Arc<AtomicUsize>) -> String {
        let app = internal_routes();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let address = listener.local_addr().expect("its address");
        // Count the connections accepted, to see them reused.
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            connections.fetch_add(1, Ordering::Relaxed);
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}/")
    }

    /// The same routes served over TLS with `config`; returns the https origin.
    async fn tls_api_node(config: Arc<rustls::ServerConfig>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let address = listener.local_addr().expect("its address");
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(internal_routes());
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        format!("https://{address}/")
    }

    fn internal_routes() -> axum::Router {
        axum::Router::new()
            .route(
                "/internal/v1/jobs/{job}/source",
                get(|Path(job): Path<String>, headers: HeaderMap| async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer token-1") {
                        return (StatusCode::UNAUTHORIZED, Vec::new());
                    }
                    match job.as_str() {
                        "big" => (StatusCode::OK, vec![7; 2000]),
                        "gone" => (StatusCode::GONE, Vec::new()),
                        _ => (StatusCode::OK, format!("source of {job}").into_bytes()),
                    }
                }),
            )
            .route(
                "/internal/v1/jobs/{job}/result",
                post(|headers: HeaderMap, body: Bytes| async move {
                    match headers.get(RESULT_HEADER) {
                        Some(_) if body.len() == 5 => (StatusCode::NO_CONTENT, String::new()),
                        _ => (StatusCode::BAD_REQUEST, format!("{} bytes", body.len())),
                    }
                }),
            )
    }

    /// With a CA, only https origins whose certificates it signed are spoken to: an http origin
    /// is refused before any connection, a certificate of another CA at the handshake.
    #[tokio::test]
    async fn with_a_ca_only_https_origins_signed_by_it_are_spoken_to() {
        let dir = std::env::temp_dir().join(format!("worker-tls-{}", std::process::id()));
        let ca = lab::LabCa::create(&dir.join("ca"), "test CA").expect("CA");
        let other = lab::LabCa::create(&dir.join("other"), "another CA").expect("another CA");
        let cert = ca.issue("api-0").expect("certificate");
        let origin = tls_api_node(tls::server_config(&cert.cert, &cert.key).expect("server config")).await;
        let second = Duration::from_secs(1);
        let client = Client::new(Some(tls::client_config(ca.ca_file()).expect("client config")));
        assert_eq!(client.fetch(&job(&origin, "a"), second).await.expect("the source"), b"source of a");
        client.give_back(&job(&origin, "a"), &meta(), b"image".to_vec(), second).await.expect("taken");
        let plain = client.fetch(&job(&origin.replace("https://", "http://"), "a"), second).await;
        assert!(matches!(plain, Err(TransferError::Unreachable(ref e)) if e.contains("not an https://")), "{plain:?}");
        let stranger = Client::new(Some(tls::client_config(other.ca_file()).expect("client config")));
        let refused = stranger.fetch(&job(&origin, "a"), second).await;
        let unknown = |e: &str| e.to_lowercase().contains("unknownissuer");
        assert!(matches!(refused, Err(TransferError::Unreachable(ref e)) if unknown(e)), "{refused:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn job(origin: &str, id: &str) -> JobMessage {
        JobMessage {
            job_id: id.into(),
            request_id: "r".into(),
            origin: origin.into(),
            token: "token-1".into(),
            params: String::new(),
            format: None,
            max_input_bytes: 1000,
            max_input_pixels: 1000,
            pixels: 1,
            input_bytes: 1,
            deadline_unix_ms: 0,
            published_unix_us: 0,
        }
    }

    fn meta() -> ResultMeta {
        ResultMeta { worker: "w".into(), attempt: 1, queue_wait_us: 0, fetch_us: 0, report: None, failure: None }
    }

    #[tokio::test]
    async fn fetches_and_gives_back_over_one_kept_connection() {
        let connections = Arc::new(AtomicUsize::new(0));
        let origin = api_node(connections.clone()).await;
        let client = Client::default();
        let second = Duration::from_secs(1);
        for id in ["a", "b", "c"] {
            let source = client.fetch(&job(&origin, id), second).await.expect("the source");
            assert_eq!(source, format!("source of {id}").into_bytes());
        }
        client.give_back(&job(&origin, "a"), &meta(), b"image".to_vec(), second).await.expect("taken");
        assert_eq!(connections.load(Ordering::Relaxed), 1, "one keep-alive connection for all four calls");
    }

    #[tokio::test]
    async fn a_gone_job_an_oversized_source_and_a_refusal_are_told_apart() {
        let origin = api_node(Arc::default()).await;
        let client = Client::default();
        let second = Duration::from_secs(1);
        assert!(matches!(client.fetch(&job(&origin, "gone"), second).await, Err(TransferError::Gone)));
        let oversized = client.fetch(&job(&origin, "big"), second).await;
        assert!(
            matches!(oversized, Err(TransferError::Unreachable(ref e)) if e.contains("over 1001 bytes")),
            "{oversized:?}"
        );
        let mut stranger = job(&origin, "a");
        stranger.token = "token-2".into();
        assert!(matches!(client.fetch(&stranger, second).await, Err(TransferError::Refused { status: 401, .. })));
        let refused = client.give_back(&job(&origin, "a"), &meta(), b"too long".to_vec(), second).await;
        assert!(
            matches!(refused, Err(TransferError::Refused { status: 400, ref body }) if body == "8 bytes"),
            "{refused:?}"
        );
        // After all that, a good fetch still works.
        assert!(client.fetch(&job(&origin, "a"), second).await.is_ok());
    }

    #[tokio::test]
    async fn an_api_node_that_is_down_is_unreachable_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let origin = format!("http://{}", listener.local_addr().expect("its address"));
        drop(listener);
        let fetched = Client::default().fetch(&job(&origin, "a"), Duration::from_secs(5)).await;
        assert!(matches!(fetched, Err(TransferError::Unreachable(_))), "{fetched:?}");
        let not_http = Client::default().fetch(&job("ftp://127.0.0.1:1", "a"), Duration::from_secs(5)).await;
        assert!(matches!(not_http, Err(TransferError::Unreachable(ref e)) if e.contains("http://")), "{not_http:?}");
    }
}
