//! A tiny origin for the tests: a TCP listener (optionally TLS) that counts the connections it
//! accepts and the requests it reads, and answers each request with what the test's handler
//! says, written by hand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A request's head as the origin read it.
#[derive(Clone, Debug)]
pub struct Head {
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the origin does with a request.
pub enum Reply {
    /// These bytes, then close.
    Raw(Vec<u8>),
    /// Never answer; hold the connection until the client goes.
    Hang,
    /// This head (which announces a body), then nothing more until the client goes.
    HeadOnly(String),
    /// A chunked 200 whose chunks never end (until the client goes or 64 MiB).
    EndlessChunks,
    /// Another reply after a pause.
    Later(Duration, Box<Reply>),
}

impl Reply {
    /// A full answer: status line, `headers` (each `Name: value`), Content-Length and body.
    pub fn with(status: &str, headers: &[&str], body: &[u8]) -> Reply {
        let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for header in headers {
            head.push_str(header);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        Reply::Raw(bytes)
    }

    pub fn ok(body: &[u8]) -> Reply {
        Reply::with("200 OK", &["Content-Type: image/png"], body)
    }

    pub fn redirect(status: &str, location: &str) -> Reply {
        Reply::with(status, &[&format!("Location: {location}")], b"")
    }
}

type Handler = Arc<dyn Fn(&Head) -> Reply + Send + Sync>;

pub struct TestOrigin {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<Head>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestOrigin {
    /// Plain HTTP on 127.0.0.1.
    pub async fn start(handler: impl Fn(&Head) -> Reply + Send + Sync + 'static) -> TestOrigin {
        Self::bind("127.0.0.1:0", None, handler).await.expect("binding 127.0.0.1")
    }

    /// On `addr` (`[::1]:0` may fail on a machine without IPv6), with TLS if `tls` is given.
    pub async fn bind(
        addr: &str,
        tls: Option<TlsAcceptor>,
        handler: impl Fn(&Head) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<TestOrigin> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let (counted, kept) = (connections.clone(), heads.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (handler, kept, tls) = (handler.clone(), kept.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, &handler, &kept).await;
                            }
                        }
                        None => serve(stream, &handler, &kept).await,
                    }
                });
            }
        });
        Ok(TestOrigin { addr, connections, heads, task })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests read so far, in order.
    pub fn heads(&self) -> Vec<Head> {
        self.heads.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

/// One request per connection, as the client sends.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, handler: &Handler, kept: &Mutex<Vec<Head>>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buffer).into_owned();
    let mut lines = text.split("\r\n");
    let target = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let head = Head { target, headers };
    kept.lock().unwrap().push(head.clone());
    let mut reply = handler(&head);
    while let Reply::Later(pause, next) = reply {
        tokio::time::sleep(pause).await;
        reply = *next;
    }
    match reply {
        Reply::Raw(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.shutdown().await;
        }
        Reply::Hang => wait_for_close(&mut stream).await,
        Reply::HeadOnly(head) => {
            let _ = stream.write_all(head.as_bytes()).await;
            wait_for_close(&mut stream).await;
        }
        Reply::EndlessChunks => {
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: image/png\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
            for _ in 0..4096 {
                if stream.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        Reply::Later(..) => unreachable!("unwrapped above"),
    }
}

async fn wait_for_close<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut sink = [0u8; 1024];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}
