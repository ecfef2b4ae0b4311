//! Closing a connection without destroying the answer just sent on it. A request refused before
//! its body was read (key, rate, size) is answered while the client may still be sending that
//! body; closing the socket with those bytes unread makes the kernel answer them with a reset,
//! and a peer that gets a reset while it still sends can lose the answer: HAProxy, busy
//! forwarding the body, then gives up on the request and closes its client's connection with no
//! answer at all. So the close is lingering (RFC 9112 §9.6, as Apache and nginx do it): this side
//! is shut (FIN after the answer), then what still arrives is read and dropped until the peer
//! closes, stays quiet for [`LINGER_IDLE`], or [`LINGER_TIME`] has passed; only then is the
//! socket closed.
//!
//! Knows nothing of HTTP: it wraps the TCP stream under hyper (and under TLS, when there is TLS),
//! and acts only in `poll_shutdown`, which hyper calls when it closes a connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The longest a closing connection is read and drained.
pub const LINGER_TIME: Duration = Duration::from_secs(5);
/// A closing connection on which nothing arrives for this long is closed.
pub const LINGER_IDLE: Duration = Duration::from_secs(1);

/// A stream whose shutdown lingers (see the module).
#[derive(Debug)]
pub struct Lingering<S> {
    inner: S,
    state: State,
}

#[derive(Debug)]
enum State {
    Open,
    /// This side is shut; reading and dropping until the peer closes or a limit passes.
    Draining {
        until: Instant,
        idle: Pin<Box<Sleep>>,
    },
    Closed,
}

impl<S> Lingering<S> {
    pub fn new(inner: S) -> Lingering<S> {
        Lingering { inner, state: State::Open }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lingering<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Open => {
                    // A peer already gone makes shutting this side fail: nothing left to save.
                    if ready!(Pin::new(&mut this.inner).poll_shutdown(cx)).is_err() {
                        this.state = State::Closed;
                        continue;
                    }
                    let now = Instant::now();
                    this.state = State::Draining {
                        until: now + LINGER_TIME,
                        idle: Box::pin(tokio::time::sleep_until(now + LINGER_IDLE)),
                    };
                }
                State::Draining { until, idle } => {
                    if idle.as_mut().poll(cx).is_ready() {
                        this.state = State::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 16 * 1024];
                    let mut buf = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                        // Something arrived: dropped, and the idle limit starts again (within
                        // the whole linger's limit).
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            let next = (Instant::now() + LINGER_IDLE).min(*until);
                            idle.as_mut().reset(next);
                        }
                        // The peer closed, or broke the connection: done.
                        Poll::Ready(_) => this.state = State::Closed,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_shutdown_reads_what_still_arrives_until_the_peer_closes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let address = listener.local_addr().expect("address");
        let client = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
            // Much more than the server reads before it answers and closes.
            let sent = stream.write_all(&vec![7u8; 8 << 20]).await;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.expect("the answer, then a clean end");
            (sent.is_ok(), answer)
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let mut stream = Lingering::new(stream);
        let mut first = [0u8; 1024];
        stream.read_exact(&mut first).await.expect("the start of the body");
        stream.write_all(b"refused").await.expect("answer");
        let started = Instant::now();
        stream.shutdown().await.expect("shutdown");
        assert!(started.elapsed() < LINGER_TIME, "the peer's close ends the linger");
        drop(stream);
        let (sent, answer) = client.await.expect("client");
        assert!(sent, "the client's body was read to its end, not reset");
        assert_eq!(answer, b"refused");
    }

    #[tokio::test]
    async fn a_quiet_peer_is_closed_after_the_idle_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
        let address = listener.local_addr().expect("address");
        // A peer that neither sends nor closes.
        let _peer = tokio::net::TcpStream::connect(address).await.expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let started = Instant::now();
        Lingering::new(stream).shutdown().await.expect("shutdown");
        let took = started.elapsed();
        assert!(took >= LINGER_IDLE && took < LINGER_IDLE * 2, "{took:?}");
    }
}
