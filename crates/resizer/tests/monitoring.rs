//! The cluster roles' own listeners (the worker's and the usage aggregator's health, readiness and
//! metrics) defend themselves like the api's: a request head must arrive within
//! `api.header_timeout_ms`, else the connection is closed. Each role is started with its queue
//! and database out of reach (it keeps retrying them), which is enough to serve its listener.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use common::{TempDir, BIN};

type Result = anyhow::Result<()>;

/// A role's process, killed when dropped (also when a test fails).
struct Role {
    child: Child,
    dir: TempDir,
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Role {
    fn start(args: &[&str]) -> anyhow::Result<Role> {
        let dir = TempDir::new();
        let child = Command::new(BIN)
            .args(args)
            .current_dir(&dir.0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.0.join("stderr.log"))?))
            .spawn()
            .with_context(|| format!("starting {BIN}"))?;
        Ok(Role { child, dir })
    }

    /// The address its start line names (`"listen": "127.0.0.1:<port>"`).
    fn listen_addr(&mut self) -> anyhow::Result<String> {
        let started = Instant::now();
        loop {
            let log = std::fs::read_to_string(self.dir.0.join("stderr.log")).unwrap_or_default();
            let listen = log
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find_map(|v| v["listen"].as_str().map(str::to_owned));
            if let Some(addr) = listen {
                return Ok(addr);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the role exited with {status} before listening; stderr:\n{log}");
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("no start line within 20 s; stderr:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `/healthz` answers, and a connection that sends only part of a head is closed by the server
/// soon after the 300 ms head deadline (a bare `axum::serve` would keep it open for ever).
fn defends_its_listener(role: &mut Role) -> Result {
    let addr = role.listen_addr()?;
    let mut ok = TcpStream::connect(&addr)?;
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    ok.read_to_string(&mut answer)?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let mut slow = TcpStream::connect(&addr)?;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")?;
    slow.set_read_timeout(Some(Duration::from_secs(5)))?;
    let sent = Instant::now();
    let mut rest = Vec::new();
    match slow.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            bail!("a head left unfinished for 5 s still holds its connection")
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => return Err(e.into()),
    }
    let held = sent.elapsed();
    assert!(held < Duration::from_secs(3), "the unfinished head was cut off only after {held:?}");
    Ok(())
}

#[test]
fn the_workers_listener_cuts_off_a_slow_head() -> Result {
    let mut worker = Role::start(&[
        "worker",
        "--set",
        "queue.nats_urls=nats://127.0.0.1:9",
        "--set",
        "worker.api_origins=127.0.0.1/32",
        "--set",
        "worker.listen=127.0.0.1:0",
        "--set",
        "api.header_timeout_ms=300",
    ])?;
    defends_its_listener(&mut worker)
}

#[test]
fn the_usage_aggregators_listener_cuts_off_a_slow_head() -> Result {
    let mut aggregator = Role::start(&[
        "usage",
        "--set",
        "queue.nats_urls=nats://127.0.0.1:9",
        "--set",
        "usage.rollups_database=postgres://resizer@127.0.0.1:9/resizer",
        "--set",
        "usage.listen=127.0.0.1:0",
        "--set",
        "api.header_timeout_ms=300",
    ])?;
    defends_its_listener(&mut aggregator)
}
