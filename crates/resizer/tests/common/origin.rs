//! A tiny origin for signed-URL tests: plain HTTP/1.1 on a free loopback port, serving the
//! images a test puts in it with an ETag each (304 to a matching `If-None-Match`), redirects, and
//! counting every connection and request so a test can prove a fetch did or did not happen. It
//! also serves plain files with their own content type (an HTML page for a browser to load).
//! Stopped (its thread ends) when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// What the origin answers for one path.
#[derive(Clone)]
pub enum Resource {
    /// An image with its ETag; `cache_control` is sent as is when given.
    Image { bytes: Vec<u8>, etag: String, cache_control: Option<String> },
    /// A redirect to `location`.
    Redirect { status: u16, location: String },
    /// A file served as is with `content_type` (no ETag, no caching headers).
    File { bytes: Vec<u8>, content_type: String },
}

#[derive(Default)]
struct State {
    resources: Mutex<HashMap<String, Resource>>,
    connections: AtomicUsize,
    /// Requests by path (200 and 304 alike).
    requests: Mutex<HashMap<String, usize>>,
    stop: AtomicBool,
}

pub struct TestOrigin {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl TestOrigin {
    /// Listening on 127.0.0.1, a free port.
    pub fn start() -> TestOrigin {
        Self::start_on("127.0.0.1:0")
    }

    pub fn start_on(addr: &str) -> TestOrigin {
        let listener = TcpListener::bind(addr).expect("bind the test origin");
        let addr = listener.local_addr().expect("its address");
        listener.set_nonblocking(true).expect("nonblocking accept");
        let state = Arc::new(State::default());
        let shared = state.clone();
        thread::spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        shared.connections.fetch_add(1, Ordering::SeqCst);
                        let state = shared.clone();
                        thread::spawn(move || serve(stream, &state));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        TestOrigin { addr, state }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn put(&self, path: &str, resource: Resource) {
        self.state.resources.lock().expect("lock").insert(path.to_owned(), resource);
    }

    pub fn put_image(&self, path: &str, bytes: &[u8], etag: &str) {
        self.put(path, Resource::Image { bytes: bytes.to_vec(), etag: etag.to_owned(), cache_control: None });
    }

    /// A file with its content type, e.g. `text/html; charset=utf-8`.
    pub fn put_file(&self, path: &str, bytes: &[u8], content_type: &str) {
        self.put(path, Resource::File { bytes: bytes.to_vec(), content_type: content_type.to_owned() });
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self, path: &str) -> usize {
        self.state.requests.lock().expect("lock").get(path).copied().unwrap_or(0)
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, state: &State) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let mut if_none_match = None;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "if-none-match" => if_none_match = Some(value.trim().to_owned()),
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        *state.requests.lock().expect("lock").entry(path.clone()).or_default() += 1;
        let resource = state.resources.lock().expect("lock").get(&path).cloned();
        let head_and_body = match resource {
            None => (b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(), Vec::new()),
            Some(Resource::Redirect { status, location }) => (
                format!("HTTP/1.1 {status} Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n").into_bytes(),
                Vec::new(),
            ),
            Some(Resource::File { bytes, content_type }) => (
                format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n", bytes.len())
                    .into_bytes(),
                bytes,
            ),
            Some(Resource::Image { bytes, etag, cache_control }) => {
                let control = cache_control.map(|c| format!("cache-control: {c}\r\n")).unwrap_or_default();
                if if_none_match.as_deref() == Some(etag.as_str()) {
                    (format!("HTTP/1.1 304 Not Modified\r\netag: {etag}\r\n{control}\r\n").into_bytes(), Vec::new())
                } else {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: image/jpeg\r\netag: {etag}\r\n{control}last-modified: Sat, 05 Dec 2026 10:00:00 GMT\r\ncontent-length: {}\r\n\r\n",
                        bytes.len()
                    );
                    (head.into_bytes(), bytes)
                }
            }
        };
        if out.write_all(&head_and_body.0).and_then(|()| out.write_all(&head_and_body.1)).is_err() {
            return;
        }
    }
}

/// A listener that only counts the connections made to it (and closes them): the address a
/// refused source must never be reached at.
pub struct CountingListener {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl CountingListener {
    pub fn start() -> CountingListener {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        listener.set_nonblocking(true).expect("nonblocking");
        let (count, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (c, s) = (count.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok(_) => {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        CountingListener { addr, count, stop }
    }

    pub fn connections(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
