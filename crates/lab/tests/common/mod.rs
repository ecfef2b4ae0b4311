//! Helpers shared by the lab's integration tests: a temporary DIR and tiny HTTP backends.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A fresh directory under the system's temp dir; removed on drop unless the test panicked
/// (then its path is printed, logs included).
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(label: &str) -> TestDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "lab-test-{label}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test dir kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A one-thread HTTP server: `/readyz` answers 200 while ready (503 otherwise), every other path
/// answers 200 with the backend's name. `close()` drops the listener: connections are refused.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    ready: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestBackend {
    pub fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let ready = Arc::new(AtomicBool::new(true));
        let closed = Arc::new(AtomicBool::new(false));
        let (r, c, n) = (ready.clone(), closed.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            while !c.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => answer(stream, &n, r.load(Ordering::SeqCst)),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        TestBackend { name: name.to_string(), addr, ready, closed, thread: Some(thread) }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Stop answering: the listening socket is closed.
    pub fn close(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.close();
    }
}

fn answer(mut stream: TcpStream, name: &str, ready: bool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request);
    let path = text.split_whitespace().nth(1).unwrap_or("/");
    let (status, body) = match path {
        "/readyz" if ready => ("200 OK", "ready".to_string()),
        "/readyz" => ("503 Service Unavailable", "draining".to_string()),
        _ => ("200 OK", name.to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
