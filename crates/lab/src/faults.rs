//! The faults on the lab's own network ([`crate::LabNetwork`]), by component name, from any
//! process that has the lab's DIR: partitions and loss as iptables rules in the hurt node's own
//! namespace, latency through an NFQUEUE rule and a delay process ([`run_delay_queue`]), a filled
//! volume; [`heal_network`] undoes them all.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::cluster::ClusterFile;
use crate::error::{LabError, Result};
use crate::netns::{run, Host, NetworkRecord, NETWORK_FIELD};
use crate::process::{self, Component, ProcessSpec, ProcessState};

/// The role of the processes a fault starts (the latency queues): `heal` stops them.
pub const FAULT_ROLE: &str = "fault";
/// The NFQUEUE number the latency rule and its delay process use inside a node's namespace
/// (queues are per namespace).
const DELAY_QUEUE: u16 = 7;
/// The file [`fill_volume`] fills a volume with; [`heal_network`] removes it.
const FILL_FILE: &str = ".lab-fill";

/// The record in DIR/cluster.json (an error naming `--netns` when the lab has none).
fn network_of(dir: &Path) -> Result<NetworkRecord> {
    let file = ClusterFile::read(dir)?;
    let value = file.fields.get(NETWORK_FIELD).cloned().ok_or_else(|| {
        LabError::Invalid(format!(
            "the lab in {} runs on loopback: network faults need a lab started with `lab up --netns`",
            dir.display()
        ))
    })?;
    serde_json::from_value(value).map_err(|source| LabError::Json { path: ClusterFile::path(dir), source })
}

fn iptables(netns: &str, args: &[&str]) -> Result<()> {
    crate::binaries::find_program("iptables").ok_or_else(|| {
        LabError::Invalid("`iptables` not found: network faults need Debian's iptables package".into())
    })?;
    run("iptables", Some(netns), args).map(drop)
}

fn netns_of(host: &Host) -> Result<&str> {
    host.netns.as_deref().ok_or_else(|| LabError::Invalid(format!("{} runs in this machine's namespace", host.name)))
}

/// Cut component `name` off from `from` (component names; every other host of the lab when
/// empty): whatever it sends them and whatever they send it is dropped, silently, as a pulled
/// cable or a failed switch would. This machine's side of the bridge (HAProxy, tests, operators)
/// is no lab host and still reaches it. Returns the peers cut off.
pub fn partition(dir: &Path, name: &str, from: &[String]) -> Result<Vec<String>> {
    let record = network_of(dir)?;
    let host = record.host(name)?;
    let netns = netns_of(host)?;
    let peers: Vec<&Host> = if from.is_empty() {
        record.hosts.iter().filter(|h| h.name != name).collect()
    } else {
        from.iter().map(|f| record.host(f)).collect::<Result<_>>()?
    };
    for peer in &peers {
        let addr = peer.addr.to_string();
        iptables(netns, &["-I", "INPUT", "-s", &addr, "-j", "DROP"])?;
        iptables(netns, &["-I", "OUTPUT", "-d", &addr, "-j", "DROP"])?;
    }
    Ok(peers.iter().map(|p| p.name.clone()).collect())
}

/// What [`slow`] does to a node's links.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Slowness {
    /// Added to every packet the node sends on the lab's network.
    pub delay: Duration,
    /// Share of those packets dropped, 0 to 100.
    pub loss_percent: f64,
}

/// Slow component `name`'s links: `delay` on everything it sends on the lab's network (so every
/// round trip through it takes that much longer), `loss_percent` of it dropped. The delay is
/// held by `delay_process` (a command running [`run_delay_queue`] with the queue number and delay
/// it is given in `RESIZER_LAB_DELAY_QUEUE` and `RESIZER_LAB_DELAY_MS`), started in the node's
/// namespace and recorded as a component of role [`FAULT_ROLE`]. Undone by [`heal_network`].
pub fn slow(dir: &Path, name: &str, slowness: Slowness, delay_process: ProcessSpec) -> Result<()> {
    let record = network_of(dir)?;
    let netns = netns_of(record.host(name)?)?.to_string();
    if !(0.0..=100.0).contains(&slowness.loss_percent) {
        return Err(LabError::Invalid(format!("loss of {}% is no share", slowness.loss_percent)));
    }
    if slowness.loss_percent > 0.0 {
        let p = format!("{:.4}", slowness.loss_percent / 100.0);
        iptables(
            &netns,
            &["-A", "OUTPUT", "-o", "eth0", "-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"],
        )?;
    }
    if !slowness.delay.is_zero() {
        let mut file = ClusterFile::read(dir)?;
        let mut spec = delay_process;
        spec.name = format!("delay-{name}");
        spec.role = FAULT_ROLE.into();
        spec.netns = Some(netns.clone());
        spec = spec
            .env("RESIZER_LAB_DELAY_QUEUE", DELAY_QUEUE.to_string())
            .env("RESIZER_LAB_DELAY_MS", slowness.delay.as_millis().to_string());
        if file.component(&spec.name).is_some_and(|c| c.state() != ProcessState::Gone) {
            return Err(LabError::Invalid(format!("{name} is slowed already: heal first")));
        }
        let component = process::start_process(dir, &spec)?;
        file.upsert(component.clone());
        file.write()?;
        // The queue must be bound before packets go to it; until then `--queue-bypass` would let
        // them through undelayed, so wait for the process to say it is bound.
        let started = Instant::now();
        while !process::log_tail(&component.log, 3).contains(&format!("delay queue {DELAY_QUEUE} bound")) {
            if component.state() == ProcessState::Gone || started.elapsed() > Duration::from_secs(5) {
                return Err(LabError::Exited {
                    name: component.name.clone(),
                    log: component.log.clone(),
                    tail: component.log_tail(10),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let queue = DELAY_QUEUE.to_string();
        iptables(&netns, &["-A", "OUTPUT", "-o", "eth0", "-j", "NFQUEUE", "--queue-num", &queue, "--queue-bypass"])?;
    }
    Ok(())
}

/// Fill component `name`'s volume ([`crate::LabNetwork::add_volume`]) to the last byte, as a full disk
/// would be, and keep it full ([`keep_full`]): writes to it fail with ENOSPC until
/// [`heal_network`]. Returns the bytes written.
pub fn fill_volume(dir: &Path, name: &str) -> Result<u64> {
    let record = network_of(dir)?;
    let volume = record
        .volumes
        .iter()
        .find(|v| v.component == name)
        .ok_or_else(|| LabError::Invalid(format!("{name} has no volume of the lab's to fill")))?;
    let path = volume.path.join(FILL_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| LabError::io("open", &path, e))?;
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(LabError::io("write", &path, e)),
        }
    }
    // Whatever room a partial chunk left, byte by byte.
    while file.write(&[0]).is_ok_and(|n| n == 1) {
        written += 1;
    }
    keep_full(dir, name, &path)?;
    Ok(written)
}

/// Keeps a filled volume full, as a disk is that another writer fills: without it, a file the
/// component deletes (a usage batch shipped) gives room back and its writes succeed again, so
/// whether it ever sees ENOSPC would depend on timing. A shell loop of component `name`'s, of
/// role [`FAULT_ROLE`], appends to `fill` whatever room appears; [`heal_network`] stops it
/// before it empties the volume.
fn keep_full(dir: &Path, name: &str, fill: &Path) -> Result<()> {
    let mut file = ClusterFile::read(dir)?;
    let spec = ProcessSpec::new(FAULT_ROLE, format!("fill-{name}"), "/bin/sh").args([
        "-c".to_owned(),
        "while :; do cat /dev/zero >> \"$1\" 2>/dev/null; sleep 0.02; done".to_owned(),
        "keep-full".to_owned(),
        fill.display().to_string(),
    ]);
    if file.component(&spec.name).is_some_and(|c| c.state() != ProcessState::Gone) {
        return Ok(());
    }
    let component = process::start_process(dir, &spec)?;
    file.upsert(component);
    file.write().map(drop)
}

/// Undo every network fault of the lab in DIR: flush each namespace's rules, stop the delay
/// processes, empty the filled volumes. Returns what was healed.
pub fn heal_network(dir: &Path) -> Result<Vec<String>> {
    let record = network_of(dir)?;
    let mut healed = Vec::new();
    for host in &record.hosts {
        let Some(netns) = &host.netns else { continue };
        if !Path::new("/run/netns").join(netns).exists() {
            continue;
        }
        let rules = run("iptables", Some(netns), &["-S"])?;
        if rules.lines().any(|l| l.starts_with("-A ")) {
            iptables(netns, &["-F"])?;
            healed.push(host.name.clone());
        }
    }
    // The fault processes first: the one keeping a volume full would fill it again.
    let mut file = ClusterFile::read(dir)?;
    let faults: Vec<Component> = file.components.iter().filter(|c| c.role == FAULT_ROLE).cloned().collect();
    process::stop_components(&faults, Duration::from_secs(2))?;
    file.components.retain(|c| c.role != FAULT_ROLE);
    file.write()?;
    for volume in &record.volumes {
        let fill = volume.path.join(FILL_FILE);
        if fill.exists() {
            std::fs::remove_file(&fill).map_err(|e| LabError::io("remove", &fill, e))?;
            healed.push(format!("{}'s volume", volume.component));
        }
    }
    Ok(healed)
}

/// The delay process's loop: bind NFQUEUE `queue` in this namespace and let each packet go
/// `delay` after it arrived, in arrival order. Runs until killed. Prints `delay queue N bound`
/// once packets may be sent to it.
pub fn run_delay_queue(queue: u16, delay: Duration) -> Result<()> {
    let fail = |what: &str, e: std::io::Error| LabError::Invalid(format!("delay queue {queue}: {what}: {e}"));
    let mut q = nfq::Queue::open().map_err(|e| fail("open", e))?;
    q.bind(queue).map_err(|e| fail("bind", e))?;
    // Headers are enough to hold a packet back; copying whole packets is work for nothing.
    q.set_copy_range(queue, 64).map_err(|e| fail("copy range", e))?;
    // Thousands of packets are in flight at once; past the queue's length they would be dropped.
    q.set_queue_max_len(queue, 65_536).map_err(|e| fail("queue length", e))?;
    q.set_fail_open(queue, true).map_err(|e| fail("fail open", e))?;
    q.set_nonblocking(true);
    println!("delay queue {queue} bound, holding every packet {} ms", delay.as_millis());
    let _ = std::io::stdout().flush();
    let mut held: std::collections::VecDeque<(Instant, nfq::Message)> = std::collections::VecDeque::new();
    loop {
        loop {
            match q.recv() {
                Ok(mut msg) => {
                    msg.set_verdict(nfq::Verdict::Accept);
                    held.push_back((Instant::now() + delay, msg));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail("receive", e)),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, msg)) = held.pop_front() {
                q.verdict(msg).map_err(|e| fail("verdict", e))?;
            }
        }
        // A millisecond's sleep bounds the added jitter and costs a few hundred wake-ups a second.
        std::thread::sleep(Duration::from_millis(1));
    }
}
