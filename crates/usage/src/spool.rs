//! The api node's spool: an append-only local log of usage records, written before the response
//! is sent, cut into batches with unique ids that the aggregator applies exactly once.
//!
//! Durability, precisely:
//! - `append` returns once the record is in kernel memory that outlives the process: copied into
//!   the open batch's shared-memory file (with [`SpoolConfig::memory_dir`], `/dev/shm`), or
//!   written to its disk file with write(2) (page cache). Either survives the process being
//!   killed (`kill -9`, a panic, an OOM kill) at any moment after the client could have seen the
//!   answer; the next [`Spool::open`] recovers the shared-memory file's frames.
//! - `tick` copies the shared-memory file's new frames to the disk file and fsyncs it on a short
//!   interval (group commit: one fsync for every record of the interval), so a power loss or
//!   kernel crash can cost the records of the last interval (default 50 ms) — those requests were
//!   answered but go unbilled. A sealed batch is fsynced
//!   before its rename, and the rename is fsynced with the directory.
//!
//! Files: `open-<batch>.log` is the batch being written (one per node), `batch-<batch>.log` a
//! sealed one. Batch ids start with the cut time in milliseconds, so names sort by age. A file is a
//! sequence of frames, one record each, with a length and a checksum (`record::frame`): a frame torn
//! by a crash fails them and is dropped on recovery, and it can only be the last of an `open-` file.
//!
//! The records of the last few sealed batches are also kept in memory, so the aggregator of the
//! same process takes them ([`Spool::take`]) without reading and parsing the file again; the file
//! is what a restart recovers from.
//!
//! It must not interpret records (that is the aggregator's) and never deletes a batch that has
//! not been handed over (`remove` is called by whoever applied it).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::record::{frame, UsageRecord};

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// A batch is cut when it holds this many records (default 20,000)...
    pub max_batch_records: usize,
    /// ...or this many bytes (default 8 MiB)...
    pub max_batch_bytes: u64,
    /// ...or when its first record is this old (default 1 s): the bound on how stale usage and
    /// audit reads are, beyond the aggregator's own interval.
    pub max_batch_age: Duration,
    /// A tmpfs directory (`/dev/shm`) for the active batch's bytes: an append is then a copy into
    /// shared memory, which outlives the process, and the tick copies it to the disk file. None:
    /// each append (or group of appends) is a write(2) to the disk file.
    pub memory_dir: Option<PathBuf>,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        // Large enough that a busy node cuts on age (about one batch, and one Parquet file per
        // tenant, per second), small enough that the aggregator reads a batch in one go.
        SpoolConfig {
            max_batch_records: 20_000,
            max_batch_bytes: 8 << 20,
            max_batch_age: Duration::from_secs(1),
            memory_dir: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("usage spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("usage spool {path}: the record was not written: {message}")]
    WriteFailed { path: PathBuf, message: String },
    #[error("usage record of {bytes} bytes does not fit a batch of {max} bytes")]
    TooLarge { bytes: usize, max: usize },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io { path: path.to_owned(), source }
}

/// A sealed batch waiting to be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBatch {
    pub id: String,
    pub path: PathBuf,
}

pub struct Spool {
    dir: PathBuf,
    config: SpoolConfig,
    /// `<memory dir>/<prefix>...` are this spool's shared-memory files.
    memory_prefix: String,
    active: Mutex<Active>,
    /// The records of the most recently sealed batches, oldest first (at most
    /// [`HELD_BATCHES`]): a copy of what their files hold, for [`Spool::take`].
    held: Mutex<VecDeque<(String, Vec<UsageRecord>)>>,
    /// An applied batch's emptied vector, for the next batch to fill: its memory is resident
    /// already, where a fresh one of the same size would fault in every page again.
    spare: Mutex<Vec<UsageRecord>>,
    /// Why the last write to disk failed, until one succeeds (see [`Spool::health`]).
    failing: Mutex<Option<String>>,
}

/// Sealed batches whose records stay in memory. The aggregator normally takes each within one
/// interval; while it cannot (archive down), older batches are read back from their files.
const HELD_BATCHES: usize = 4;

struct Active {
    id: String,
    path: PathBuf,
    file: File,
    /// Every record written to `file`, in order.
    records: Vec<UsageRecord>,
    bytes: u64,
    /// When the first record of this batch was written (None while empty).
    first_at: Option<Instant>,
    /// Written since the last fsync.
    dirty: bool,
    /// A write failed: nothing more is appended to this file (the next write cuts the batch
    /// first).
    damaged: bool,
    /// Records waiting for their write(2); carried over when the batch is cut.
    queue: Queue,
    /// The batch's bytes in shared memory (with [`SpoolConfig::memory_dir`]).
    memory: Option<Memory>,
}

/// The active batch's bytes in a shared-memory (tmpfs) file: an append is a copy, no system call,
/// and a killed process leaves them behind for the next start. The disk file gets them on each
/// tick. One file serves batch after batch, so its pages are allocated once: it starts with a
/// header naming the batch its frames belong to, then the frames, then zeros.
struct Memory {
    path: PathBuf,
    map: memmap2::MmapMut,
    /// Bytes of frames after the header...
    len: usize,
    /// ...of which the disk file has the first `synced`.
    synced: usize,
}

/// `resizer-spool <batch id>\n`, zero-padded.
const MEMORY_HEADER: usize = 64;

impl Memory {
    fn create(path: &Path, line_bytes: u64, batch_id: &str) -> Result<Memory, SpoolError> {
        use std::os::unix::fs::OpenOptionsExt;
        // Owner only: /dev/shm is shared by every user of the machine, and records name tenants.
        let file =
            OpenOptions::new().create_new(true).read(true).write(true).mode(0o600).open(path).map_err(io(path))?;
        file.set_len(MEMORY_HEADER as u64 + line_bytes).map_err(io(path))?;
        // SAFETY: the file was created just now under a name only this spool uses, and it is
        // never truncated while mapped, so the mapping cannot lose its pages under us.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.map_err(io(path))?;
        let mut memory = Memory { path: path.to_owned(), map, len: 0, synced: 0 };
        memory.start(batch_id);
        Ok(memory)
    }

    /// Hands the file to a new batch (the last one's frames are on disk, sealed): its frames are
    /// zeroed, then the header names the new batch. Killed half-way, the header names a sealed
    /// batch or none, and the next start ignores the file.
    fn start(&mut self, batch_id: &str) {
        self.map[..MEMORY_HEADER + self.len].fill(0);
        let header = format!("resizer-spool {batch_id}\n");
        let n = header.len().min(MEMORY_HEADER);
        self.map[..n].copy_from_slice(&header.as_bytes()[..n]);
        self.len = 0;
        self.synced = 0;
    }

    fn lines_mut(&mut self) -> &mut [u8] {
        &mut self.map[MEMORY_HEADER..]
    }

    /// Copies what the disk file lacks to it (at its offset, so a retry after a failed copy
    /// rewrites the same range). Returns whether there was anything to copy.
    fn copy_to(&mut self, file: &File, path: &Path) -> Result<bool, SpoolError> {
        use std::os::unix::fs::FileExt;
        if self.synced == self.len {
            return Ok(false);
        }
        let lines = &self.map[MEMORY_HEADER + self.synced..MEMORY_HEADER + self.len];
        file.write_all_at(lines, self.synced as u64).map_err(io(path))?;
        self.synced = self.len;
        Ok(true)
    }
}

/// The batch a memory file's header names, and its frames.
fn memory_contents(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let header = bytes.get(..MEMORY_HEADER)?;
    let line = header.split(|&b| b == b'\n').next()?;
    let id = std::str::from_utf8(line).ok()?.strip_prefix("resizer-spool ")?;
    Some((id, &bytes[MEMORY_HEADER..]))
}

thread_local! {
    // Records are encoded outside the lock, into a buffer each thread keeps.
    static FRAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What the spool has written since it opened: records, and the write(2) calls that carried
/// them (their ratio is how well group writes work).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub records: u64,
    pub writes: u64,
}

/// Group write: records are queued, and whoever writes next writes every queued frame in one
/// write(2). Each record has a sequence number; its appender returns once the queue has been
/// written through it, with that write's outcome.
#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    records: Vec<UsageRecord>,
    /// The sequence number of the last record queued...
    queued: u64,
    /// ...and of the last one whose write has been attempted.
    resolved: u64,
    stats: SpoolStats,
    /// Sequence ranges whose write failed (the most recent [`FAILURES_KEPT`]), with the error.
    failures: VecDeque<(std::ops::RangeInclusive<u64>, String)>,
}

/// Writes, syncs and removes a small file in `dir`: whether its volume takes writes again.
fn probe_volume(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(".probe");
    let result = (|| {
        let mut file = File::create(&path)?;
        file.write_all(&[0u8; 4096])?;
        file.sync_data()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// An appender looks its outcome up right after the write (a task yield later), so a short
/// history of failures is enough.
const FAILURES_KEPT: usize = 1024;

impl Queue {
    /// The outcome of the write that took record `seq`.
    fn outcome(&self, seq: u64, path: &Path) -> Result<(), SpoolError> {
        let failed = |message: &str| SpoolError::WriteFailed { path: path.to_owned(), message: message.to_owned() };
        if seq > self.resolved {
            return Err(failed("not written"));
        }
        match self.failures.iter().rev().find(|(range, _)| range.contains(&seq)) {
            Some((_, message)) => Err(failed(message)),
            None => Ok(()),
        }
    }

    /// Drops every queued record as failed: none of them may be billed, their requests are
    /// answered with an error.
    fn fail_all(&mut self, message: String) {
        if self.queued > self.resolved {
            self.failures.push_back((self.resolved + 1..=self.queued, message));
            if self.failures.len() > FAILURES_KEPT {
                self.failures.pop_front();
            }
        }
        self.lines.clear();
        self.records.clear();
        self.resolved = self.queued;
    }
}

impl Spool {
    /// Opens the spool in `dir`, sealing whatever a previous process left open (its torn last
    /// frame, if any, dropped), and starts a fresh batch.
    pub fn open(dir: &Path, config: SpoolConfig) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let dir = dir.canonicalize().map_err(io(dir))?;
        let memory_prefix = memory_prefix(&dir);
        if let Some(memory_dir) = &config.memory_dir {
            recover_from_memory(memory_dir, &memory_prefix, &dir)?;
        }
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let Some(id) = file_batch_id(&path, "open-") else { continue };
            recover_torn_tail(&path)?;
            seal_file(&dir, &path, &id)?;
        }
        let mut active = Active::create(&dir, config.memory_dir.is_some())?;
        if let Some(memory_dir) = &config.memory_dir {
            let path = memory_dir.join(format!("{memory_prefix}{}.log", active.id));
            active.memory = Some(Memory::create(&path, config.max_batch_bytes, &active.id)?);
        }
        Ok(Spool {
            dir,
            config,
            memory_prefix,
            active: Mutex::new(active),
            held: Mutex::default(),
            spare: Mutex::default(),
            failing: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn held(&self) -> MutexGuard<'_, VecDeque<(String, Vec<UsageRecord>)>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one record (see the module docs for what is durable when this returns), cutting
    /// the batch first if it is full.
    pub fn append(&self, record: UsageRecord) -> Result<(), SpoolError> {
        if self.config.memory_dir.is_some() {
            return self.note_failure(self.append_to_memory(record));
        }
        let seq = self.enqueue(record)?;
        self.note_disk_write(self.write_through(seq))
    }

    /// [`Spool::append`] for a request handler: it yields to the runtime once between queueing
    /// the record and writing, so that the records of the requests answered meanwhile on the same
    /// thread share one write(2). A busy node writes several records per system call; an idle one
    /// pays one task switch. Same guarantee when it returns.
    pub async fn append_grouped(&self, record: UsageRecord) -> Result<(), SpoolError> {
        if self.config.memory_dir.is_some() {
            // No system call per record: nothing to group.
            return self.note_failure(self.append_to_memory(record));
        }
        let seq = self.enqueue(record)?;
        tokio::task::yield_now().await;
        self.note_disk_write(self.write_through(seq))
    }

    /// Whether records can be written: Err with the reason while the last write to disk failed
    /// (a full or read-only volume), and no later one succeeded. A node whose spool fails
    /// answers every request 503 (no 200 without its record), so it must leave the load
    /// balancer's rotation; out of it, no request writes, so this probes the spool's volume
    /// itself (a small file written, synced and removed) to tell when it may come back.
    /// Blocking (the probe) only while failing.
    pub fn health(&self) -> Result<(), String> {
        let Some(reason) = self.failing.lock().unwrap_or_else(PoisonError::into_inner).clone() else {
            return Ok(());
        };
        match probe_volume(&self.dir).and_then(|()| self.recover_left_behind().map_err(std::io::Error::other)) {
            Ok(()) => {
                *self.failing.lock().unwrap_or_else(PoisonError::into_inner) = None;
                Ok(())
            }
            Err(e) => Err(format!("the usage spool cannot write ({reason}); a probe write failed too: {e}")),
        }
    }

    /// Once writes work again: seals the batches a failed cut left behind, as a start after a
    /// crash would (`open`), so their records are shipped now rather than at the next start — the
    /// memory files of this spool other than the active batch's, then the `open-` files other than
    /// the active batch's. Under the active batch's lock, so no cut runs meanwhile.
    fn recover_left_behind(&self) -> Result<(), SpoolError> {
        let active = self.lock();
        if let Some(memory_dir) = &self.config.memory_dir {
            let current = active.memory.as_ref().map(|m| m.path.clone());
            for entry in std::fs::read_dir(memory_dir).map_err(io(memory_dir))? {
                let memory = entry.map_err(io(memory_dir))?.path();
                let ours =
                    memory.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&self.memory_prefix));
                if !ours || Some(&memory) == current.as_ref() {
                    continue;
                }
                let bytes = std::fs::read(&memory).map_err(io(&memory))?;
                if let Some((id, lines)) = memory_contents(&bytes) {
                    let disk = self.dir.join(format!("open-{id}.log"));
                    if id != active.id && disk.exists() {
                        let keep = intact_prefix(lines);
                        let mut file = OpenOptions::new().write(true).truncate(true).open(&disk).map_err(io(&disk))?;
                        file.write_all(&lines[..keep]).map_err(io(&disk))?;
                        file.sync_all().map_err(io(&disk))?;
                        tracing::info!(
                            batch = id,
                            bytes = keep,
                            "usage spool: a batch left by a failed cut recovered from shared memory"
                        );
                    }
                }
                remove_if_present(&memory)?;
            }
        }
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            let Some(id) = file_batch_id(&path, "open-") else { continue };
            if id == active.id {
                continue;
            }
            recover_torn_tail(&path)?;
            seal_file(&self.dir, &path, &id)?;
            tracing::info!(batch = id, "usage spool: a batch left open by a failed cut sealed");
        }
        Ok(())
    }

    fn note_failure<T>(&self, result: Result<T, SpoolError>) -> Result<T, SpoolError> {
        if let Err(e) = &result {
            *self.failing.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
        }
        result
    }

    /// A write to disk's outcome: a success clears an earlier failure.
    fn note_disk_write<T>(&self, result: Result<T, SpoolError>) -> Result<T, SpoolError> {
        if result.is_ok() {
            *self.failing.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        self.note_failure(result)
    }

    pub fn stats(&self) -> SpoolStats {
        self.lock().queue.stats
    }

    fn append_to_memory(&self, record: UsageRecord) -> Result<(), SpoolError> {
        FRAME.with_borrow_mut(|line| {
            frame::encode(&record, line);
            let mut guard = self.lock();
            let count = guard.records.len();
            if count >= self.config.max_batch_records
                || guard.bytes + line.len() as u64 > self.config.max_batch_bytes && count > 0
                || guard.damaged
                // A cut that could not make the next batch its memory file: the next cut retries.
                || guard.memory.is_none()
            {
                self.cut(&mut guard)?;
            }
            let active = &mut *guard;
            let Some(memory) = active.memory.as_mut() else {
                return Err(SpoolError::WriteFailed { path: active.path.clone(), message: "no memory file".into() });
            };
            let start = memory.len;
            let lines = memory.lines_mut();
            let max = lines.len();
            let Some(free) = lines.get_mut(start..start + line.len()) else {
                return Err(SpoolError::TooLarge { bytes: line.len(), max });
            };
            free.copy_from_slice(line);
            memory.len += line.len();
            active.records.push(record);
            active.bytes += line.len() as u64;
            active.first_at.get_or_insert_with(Instant::now);
            active.dirty = true;
            active.queue.stats.records += 1;
            Ok(())
        })
    }

    fn enqueue(&self, record: UsageRecord) -> Result<u64, SpoolError> {
        FRAME.with_borrow_mut(|line| {
            frame::encode(&record, line);
            let mut active = self.lock();
            let queue = &mut active.queue;
            queue.lines.extend_from_slice(line);
            queue.records.push(record);
            queue.queued += 1;
            Ok(queue.queued)
        })
    }

    /// Returns once record `seq` has been written, by this call or an earlier one.
    fn write_through(&self, seq: u64) -> Result<(), SpoolError> {
        let mut active = self.lock();
        if active.queue.resolved < seq {
            // Its outcome is looked up below, like that of the records written by another caller.
            let _ = self.write_queued(&mut active);
        }
        active.queue.outcome(seq, &active.path)
    }

    /// Writes every queued record in one write(2), cutting the batch first if it is full. On
    /// failure the queued records are dropped (reported to their appenders) and whatever part of
    /// them reached the file is cut off again.
    fn write_queued(&self, active: &mut Active) -> Result<(), SpoolError> {
        if active.queue.records.is_empty() {
            return Ok(());
        }
        let count = active.records.len();
        let full = count >= self.config.max_batch_records
            || active.bytes + active.queue.lines.len() as u64 > self.config.max_batch_bytes && count > 0;
        if full || active.damaged {
            if let Err(e) = self.cut(active) {
                active.queue.fail_all(e.to_string());
                return Err(e);
            }
        }
        if let Err(e) = active.file.write_all(&active.queue.lines) {
            // A part of the frames may be in the file: those requests are answered with an error,
            // so their records must not be billed. If cutting them off fails too, their frames
            // stay in the file, and only a restart that reads this batch back from it would
            // bill them (the batch in memory never holds them).
            let _ = active.file.set_len(active.bytes);
            active.damaged = true;
            active.queue.fail_all(e.to_string());
            return Err(io(&active.path)(e));
        }
        active.bytes += active.queue.lines.len() as u64;
        let queue = &mut active.queue;
        queue.stats.records += queue.records.len() as u64;
        queue.stats.writes += 1;
        active.records.append(&mut queue.records);
        queue.lines.clear();
        queue.resolved = queue.queued;
        active.first_at.get_or_insert_with(Instant::now);
        active.dirty = true;
        Ok(())
    }

    /// The periodic duty: fsync what was written since the last tick (group commit), and cut
    /// the batch if its first record is older than `max_batch_age`. Blocking: run it off the
    /// async runtime.
    pub fn tick(&self) -> Result<(), SpoolError> {
        // A tick that succeeds may have written nothing (nothing queued, a sync of older bytes):
        // it says nothing about whether the volume takes writes again, so it never clears a
        // failure; an append that writes, or `health`'s probe, does.
        self.note_failure(self.tick_inner())
    }

    fn tick_inner(&self) -> Result<(), SpoolError> {
        let (to_sync, path) = {
            let mut active = self.lock();
            // Normally empty: an appender writes its own record. One whose task was dropped
            // between queueing and writing leaves it here.
            let _ = self.write_queued(&mut active);
            if active.first_at.is_some_and(|t| t.elapsed() >= self.config.max_batch_age) {
                return self.cut(&mut active);
            }
            if !active.dirty {
                return Ok(());
            }
            let active = &mut *active;
            if let Some(memory) = active.memory.as_mut() {
                // Under the lock: a cut copies the rest, and the disk file is written in order.
                if memory.copy_to(&active.file, &active.path)? {
                    active.queue.stats.writes += 1;
                }
            }
            active.dirty = false;
            (active.file.try_clone().map_err(io(&active.path))?, active.path.clone())
        };
        // Outside the lock: appends go on while the disk catches up.
        to_sync.sync_data().map_err(io(&path))
    }

    /// Seals the active batch if it holds anything (at shutdown, so the aggregator can take it).
    pub fn flush(&self) -> Result<(), SpoolError> {
        let mut active = self.lock();
        let _ = self.write_queued(&mut active);
        if !active.records.is_empty() {
            self.cut(&mut active)?;
        }
        Ok(())
    }

    fn cut(&self, active: &mut Active) -> Result<(), SpoolError> {
        let mut next = Active::create(&self.dir, self.config.memory_dir.is_some())?;
        // Sized like the batch before it: a busy node's batch grows to ~10^4 records a second, and
        // growing the vector by doubling would copy each record about once more.
        let expected = active.records.len() + active.records.len() / 8;
        next.records = std::mem::take(&mut *self.spare.lock().unwrap_or_else(PoisonError::into_inner));
        next.records.reserve(expected.min(self.config.max_batch_records));
        let mut done = std::mem::replace(active, next);
        active.queue = std::mem::take(&mut done.queue);
        // If any step fails, the memory file stays: the next start recovers the batch from it.
        if let Some(memory) = done.memory.as_mut() {
            if memory.copy_to(&done.file, &done.path)? {
                active.queue.stats.writes += 1;
            }
        }
        done.file.sync_data().map_err(io(&done.path))?;
        drop(done.file);
        seal_file(&self.dir, &done.path, &done.id)?;
        // The memory file goes on with the next batch. Lost only if a step above failed: then it
        // keeps the batch for the next start, and the next batch gets a file of its own.
        active.memory = match done.memory.take() {
            Some(mut memory) => {
                memory.start(&active.id);
                Some(memory)
            }
            None => match &self.config.memory_dir {
                Some(memory_dir) => {
                    let path = memory_dir.join(format!("{}{}.log", self.memory_prefix, active.id));
                    Some(Memory::create(&path, self.config.max_batch_bytes, &active.id)?)
                }
                None => None,
            },
        };
        if !done.records.is_empty() {
            let mut held = self.held();
            held.push_back((done.id, done.records));
            while held.len() > HELD_BATCHES {
                held.pop_front();
            }
        }
        Ok(())
    }

    /// The records of a sealed batch: from memory when this process sealed it recently, else
    /// read from its file (after a restart, or when the aggregator fell behind). Blocking.
    pub fn take(&self, batch: &SealedBatch) -> Result<Vec<UsageRecord>, SpoolError> {
        let mut held = self.held();
        if let Some(i) = held.iter().position(|(id, _)| *id == batch.id) {
            if let Some((_, records)) = held.remove(i) {
                return Ok(records);
            }
        }
        drop(held);
        read_batch(batch)
    }

    /// Sealed batches, oldest first.
    pub fn sealed(&self) -> Result<Vec<SealedBatch>, SpoolError> {
        let mut batches = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if let Some(id) = file_batch_id(&path, "batch-") {
                batches.push(SealedBatch { id, path });
            }
        }
        batches.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(batches)
    }

    /// Takes back an applied batch's records vector, to be reused (emptied) by a later batch.
    pub fn recycle(&self, mut records: Vec<UsageRecord>) {
        records.clear();
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if records.capacity() > spare.capacity() {
            *spare = records;
        }
    }

    /// Deletes a batch once it has been applied.
    pub fn remove(&self, batch: &SealedBatch) -> Result<(), SpoolError> {
        self.held().retain(|(id, _)| *id != batch.id);
        match std::fs::remove_file(&batch.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&batch.path)(e)),
            _ => Ok(()),
        }
    }
}

/// The records of a sealed batch. Its frames are intact (recovery cut off a torn tail before
/// sealing); should one be damaged anyway, the records before it are returned and the rest skipped.
pub fn read_batch(batch: &SealedBatch) -> Result<Vec<UsageRecord>, SpoolError> {
    let bytes = std::fs::read(&batch.path).map_err(io(&batch.path))?;
    let mut records = Vec::new();
    let mut at = 0;
    while let Some((record, len)) = frame::decode(&bytes[at..]) {
        records.push(record);
        at += len;
    }
    if at < bytes.len() {
        tracing::warn!(batch = batch.id, skipped_bytes = bytes.len() - at, "usage spool: skipped a damaged tail");
    }
    Ok(records)
}

impl Active {
    /// A new batch's disk file (its memory, if any, is set by the caller).
    fn create(dir: &Path, in_memory: bool) -> Result<Active, SpoolError> {
        let id = new_batch_id();
        let path = dir.join(format!("open-{id}.log"));
        // Written at offsets from the memory file, appended to otherwise.
        let file = OpenOptions::new().create_new(true).write(true).append(!in_memory).open(&path).map_err(io(&path))?;
        Ok(Active {
            id,
            path,
            file,
            records: Vec::new(),
            bytes: 0,
            first_at: None,
            dirty: false,
            damaged: false,
            queue: Queue::default(),
            memory: None,
        })
    }
}

/// `<unix ms, 13 digits>-<sequence, 6 digits>-<64 random bits>`: sorts by age (the sequence
/// orders batches cut within one millisecond), unique across nodes and restarts.
fn new_batch_id() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    let mut random = [0u8; 8];
    // Without entropy, the process id still tells two nodes' batches of one millisecond apart.
    if getrandom::fill(&mut random).is_err() {
        random = (std::process::id() as u64 ^ ms as u64).to_le_bytes();
    }
    format!("{ms:013}-{seq:06}-{:016x}", u64::from_le_bytes(random))
}

fn file_batch_id(path: &Path, prefix: &str) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(prefix)?.strip_suffix(".log").map(str::to_owned)
}

/// Cuts an `open-` file after its last intact frame (a crash can tear only the last one).
fn recover_torn_tail(path: &Path) -> Result<(), SpoolError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let keep = intact_prefix(&bytes);
    if keep < bytes.len() {
        tracing::warn!(path = %path.display(), dropped_bytes = bytes.len() - keep, "usage spool: torn tail dropped");
        let file = OpenOptions::new().write(true).open(path).map_err(io(path))?;
        file.set_len(keep as u64).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
    }
    Ok(())
}

impl Drop for Spool {
    /// A clean stop without [`Spool::flush`] (a test, an error path): the disk file gets the
    /// memory file's bytes and the memory file goes, as a tick would do. After a crash the next
    /// start does the same from the memory file.
    fn drop(&mut self) {
        let active = &mut *self.lock();
        if let Some(memory) = active.memory.as_mut() {
            let copied = memory.copy_to(&active.file, &active.path).and_then(|_| {
                active.file.sync_data().map_err(io(&active.path))?;
                remove_if_present(&memory.path)
            });
            if let Err(e) = copied {
                tracing::warn!(error = %e, "usage spool: the memory file stays for the next start");
            }
        }
    }
}

/// The memory files of the spool in `dir`: `resizer-spool-<hash of the dir's path>-`, so that
/// two spools sharing a memory dir never take each other's.
fn memory_prefix(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("resizer-spool-{hex}-")
}

/// A crashed process's memory file holds its open batch whole; the disk file holds what the last
/// tick copied, a prefix of it. The memory file's intact frames replace the disk file's. A memory
/// file whose batch has no `open-` file any more (sealed by a process that died before the file
/// was handed on) or no header is left over; every file of this spool is removed afterwards.
fn recover_from_memory(memory_dir: &Path, prefix: &str, dir: &Path) -> Result<(), SpoolError> {
    for entry in std::fs::read_dir(memory_dir).map_err(io(memory_dir))? {
        let memory = entry.map_err(io(memory_dir))?.path();
        if !memory.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix)) {
            continue;
        }
        let bytes = std::fs::read(&memory).map_err(io(&memory))?;
        if let Some((id, lines)) = memory_contents(&bytes) {
            let disk = dir.join(format!("open-{id}.log"));
            if disk.exists() {
                let keep = intact_prefix(lines);
                let mut file = OpenOptions::new().write(true).truncate(true).open(&disk).map_err(io(&disk))?;
                file.write_all(&lines[..keep]).map_err(io(&disk))?;
                file.sync_all().map_err(io(&disk))?;
                tracing::info!(batch = id, bytes = keep, "usage spool: open batch recovered from shared memory");
            }
        }
        remove_if_present(&memory)?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), SpoolError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// The length of the intact frames at the start of `bytes`: a torn frame (or a memory file's
/// unwritten zeros) ends them.
fn intact_prefix(bytes: &[u8]) -> usize {
    let mut keep = 0;
    while let Some(len) = frame::intact_len(&bytes[keep..]) {
        keep += len;
    }
    keep
}

/// `open-<id>.log` → `batch-<id>.log`, durable (or removed, if empty).
fn seal_file(dir: &Path, path: &Path, id: &str) -> Result<(), SpoolError> {
    if std::fs::metadata(path).map_err(io(path))?.len() == 0 {
        return std::fs::remove_file(path).map_err(io(path));
    }
    let sealed = dir.join(format!("batch-{id}.log"));
    std::fs::rename(path, &sealed).map_err(io(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(n: u64) -> UsageRecord {
        UsageRecord {
            request_id: format!("req-{n}").into(),
            tenant: 1 + n % 3,
            key_id: "KEY000000000".into(),
            time_ms: 1_795_628_767_000 + n as i64,
            node: "node-a".into(),
            worker: "node-a".into(),
            status: 200,
            error: Default::default(),
            params: "width=10".into(),
            input_format: "png".into(),
            input_bytes: 100 + n,
            input_width: 20,
            input_height: 10,
            output_format: "png".into(),
            output_bytes: 50,
            output_width: 10,
            output_height: 5,
            queue_wait_us: 3,
            wall_us: 100,
            cpu_us: 90,
            // Odd records as signed GETs that fetched their source.
            source_bytes: if n % 2 == 1 { 1000 + n } else { 0 },
            source: if n % 2 == 1 { "fetched".into() } else { Default::default() },
            frames: (n % 3) as u32,
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("usage-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// The sealed batches hold `expected` in order, read from their files and taken from memory.
    fn assert_sealed_hold(spool: &Spool, batches: usize, expected: impl Iterator<Item = u64>) {
        let sealed = spool.sealed().unwrap();
        assert_eq!(sealed.len(), batches);
        let all: Vec<UsageRecord> = sealed.iter().flat_map(|b| read_batch(b).unwrap()).collect();
        assert_eq!(all, expected.map(record).collect::<Vec<_>>());
        // What `take` hands over from memory is what the files hold.
        let taken: Vec<UsageRecord> = sealed.iter().flat_map(|b| spool.take(b).unwrap()).collect();
        assert_eq!(taken, all);
    }

    #[test]
    fn batches_are_cut_by_count_and_read_back() {
        let dir = temp_dir("count");
        let spool = Spool::open(&dir, SpoolConfig { max_batch_records: 4, ..SpoolConfig::default() }).unwrap();
        for n in 0..10 {
            spool.append(record(n)).unwrap();
        }
        spool.flush().unwrap();
        assert_sealed_hold(&spool, 3, 0..10);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn only_recent_batches_are_held_in_memory_and_the_rest_come_from_files() {
        let dir = temp_dir("held");
        let spool = Spool::open(&dir, SpoolConfig { max_batch_records: 1, ..SpoolConfig::default() }).unwrap();
        let n = HELD_BATCHES as u64 + 3;
        for i in 0..n {
            spool.append(record(i)).unwrap();
        }
        spool.flush().unwrap();
        assert_eq!(spool.held().len(), HELD_BATCHES);
        let batches = spool.sealed().unwrap();
        let taken: Vec<UsageRecord> = batches.iter().flat_map(|b| spool.take(b).unwrap()).collect();
        assert_eq!(taken, (0..n).map(record).collect::<Vec<_>>());
        assert!(spool.held().is_empty(), "take hands each held batch over once");
        std::fs::remove_dir_all(&dir).ok();
    }

    fn with_memory(name: &str, config: SpoolConfig) -> (PathBuf, SpoolConfig) {
        let memory = temp_dir(&format!("{name}-memory"));
        std::fs::create_dir_all(&memory).unwrap();
        (memory.clone(), SpoolConfig { memory_dir: Some(memory), ..config })
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn in_memory_batches_are_cut_copied_to_disk_and_read_back() {
        let dir = temp_dir("memory-count");
        let (memory, config) = with_memory("count", SpoolConfig { max_batch_records: 4, ..SpoolConfig::default() });
        let spool = Spool::open(&dir, config).unwrap();
        for n in 0..10 {
            spool.append(record(n)).unwrap();
        }
        assert_eq!(files(&memory).len(), 1, "the active batch has a memory file");
        spool.tick().unwrap();
        let open = files(&dir).into_iter().find(|n| n.starts_with("open-")).unwrap();
        let on_disk = read_batch(&SealedBatch { id: String::new(), path: dir.join(open) }).unwrap();
        assert_eq!(on_disk, (8..10).map(record).collect::<Vec<_>>(), "the tick copied the open batch to disk");
        spool.flush().unwrap();
        assert_eq!(files(&memory).len(), 1, "sealed batches' memory files are removed, the new batch has one");
        assert_sealed_hold(&spool, 3, 0..10);
        // Two cuts and the tick copied; the flush found nothing left to copy.
        assert_eq!(spool.stats(), SpoolStats { records: 10, writes: 3 });
        drop(spool);
        assert!(files(&memory).is_empty());
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_dir_all(&memory).ok();
    }

    #[test]
    fn a_killed_process_leaves_its_records_in_memory_for_the_next_start() {
        let dir = temp_dir("memory-killed");
        let (memory, config) = with_memory("killed", SpoolConfig::default());
        {
            let spool = Spool::open(&dir, config.clone()).unwrap();
            spool.append(record(1)).unwrap();
            spool.tick().unwrap();
            spool.append(record(2)).unwrap();
            spool.append(record(3)).unwrap();
            // Killed mid-copy of a fourth record, before any tick copied the last two to disk.
            let name = files(&memory).remove(0);
            let mut bytes = std::fs::read(memory.join(&name)).unwrap();
            let end = MEMORY_HEADER + intact_prefix(&bytes[MEMORY_HEADER..]);
            let mut torn = Vec::new();
            frame::encode(&record(4), &mut torn);
            bytes[end..end + 20].copy_from_slice(&torn[..20]);
            std::fs::write(memory.join(&name), &bytes).unwrap();
            std::mem::forget(spool);
        }
        // Memory files left by processes that died after sealing their batch, or while starting one.
        let prefix = memory_prefix(&dir.canonicalize().unwrap());
        let mut sealed = b"resizer-spool 0000000000000-000000-0\n".to_vec();
        sealed.resize(MEMORY_HEADER, 0);
        let mut line = Vec::new();
        frame::encode(&record(9), &mut line);
        sealed.extend_from_slice(&line);
        std::fs::write(memory.join(format!("{prefix}a.log")), sealed).unwrap();
        std::fs::write(memory.join(format!("{prefix}b.log")), [0u8; 100]).unwrap();
        let spool = Spool::open(&dir, config).unwrap();
        let batches = spool.sealed().unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(read_batch(&batches[0]).unwrap(), vec![record(1), record(2), record(3)]);
        assert_eq!(files(&memory).len(), 1, "only the new active batch's memory file is left");
        drop(spool);
        assert!(files(&memory).is_empty(), "dropping the spool copies and removes its memory file");
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_dir_all(&memory).ok();
    }

    #[test]
    fn a_record_larger_than_a_batch_is_refused() {
        let dir = temp_dir("memory-large");
        let (memory, config) = with_memory("large", SpoolConfig { max_batch_bytes: 500, ..SpoolConfig::default() });
        let spool = Spool::open(&dir, config).unwrap();
        let mut large = record(1);
        large.params = "w=1&".repeat(150).into();
        assert!(matches!(spool.append(large), Err(SpoolError::TooLarge { .. })));
        spool.append(record(2)).unwrap();
        drop(spool);
        std::fs::remove_dir_all(&dir).ok();
        std::fs::remove_dir_all(&memory).ok();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn records_answered_together_share_one_write() {
        let dir = temp_dir("grouped");
        let spool = std::sync::Arc::new(Spool::open(&dir, SpoolConfig::default()).unwrap());
        // On one thread, the first appender's yield lets the other seven queue theirs first.
        let appenders: Vec<_> = (0..8)
            .map(|n| {
                let spool = spool.clone();
                tokio::spawn(async move { spool.append_grouped(record(n)).await })
            })
            .collect();
        for appender in appenders {
            appender.await.unwrap().unwrap();
        }
        assert_eq!(spool.stats(), SpoolStats { records: 8, writes: 1 });
        spool.append_grouped(record(8)).await.unwrap();
        assert_eq!(spool.stats(), SpoolStats { records: 9, writes: 2 }, "alone, a record has a write of its own");
        spool.flush().unwrap();
        let batches = spool.sealed().unwrap();
        assert_eq!(read_batch(&batches[0]).unwrap(), (0..9).map(record).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_record_whose_appender_went_away_is_written_by_the_next_tick() {
        let dir = temp_dir("dropped");
        let spool = Spool::open(&dir, SpoolConfig::default()).unwrap();
        // Polled once (queued, then parked at the yield) and dropped: a client that hung up.
        let dropped = futures_util::FutureExt::now_or_never(spool.append_grouped(record(1)));
        assert!(dropped.is_none());
        assert_eq!(spool.stats().records, 0);
        spool.tick().unwrap();
        assert_eq!(spool.stats().records, 1);
        spool.flush().unwrap();
        assert_eq!(read_batch(&spool.sealed().unwrap()[0]).unwrap(), vec![record(1)]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_failed_write_fails_exactly_the_records_it_carried() {
        let path = Path::new("spool");
        let mut queue = Queue { queued: 3, ..Queue::default() };
        queue.fail_all("No space left on device".into());
        queue.queued = 5;
        queue.resolved = 5; // the next write, of records 4 and 5, succeeded
        for seq in 1..=3 {
            let err = queue.outcome(seq, path).unwrap_err().to_string();
            assert!(err.contains("No space left"), "{err}");
        }
        assert!(queue.outcome(4, path).is_ok() && queue.outcome(5, path).is_ok());
        assert!(queue.outcome(6, path).is_err(), "a record not yet written is not reported written");
        for _ in 0..FAILURES_KEPT + 5 {
            queue.queued += 1;
            queue.fail_all("again".into());
        }
        assert_eq!(queue.failures.len(), FAILURES_KEPT);
    }

    /// A volume that stops taking writes, as the process sees it: the file-size limit
    /// (RLIMIT_FSIZE) makes every write past it fail (EFBIG, with SIGXFSZ ignored), as a full
    /// disk fails with ENOSPC. The limit is this process's only: nextest runs each test alone.
    fn limit_file_size(bytes: u64) {
        let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: plain system calls on this process's own signal disposition and limit.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0, "setrlimit");
        }
    }

    #[test]
    fn health_reports_a_failing_volume_and_clears_once_a_probe_write_succeeds() {
        let dir = temp_dir("health");
        let spool = Spool::open(&dir, SpoolConfig::default()).unwrap();
        spool.append(record(0)).unwrap();
        assert_eq!(spool.health(), Ok(()));
        let written = spool.lock().bytes;
        limit_file_size(written + 10);
        let err = spool.append(record(1)).unwrap_err().to_string();
        spool.tick().expect("a tick with nothing to write succeeds");
        let health = spool.health().unwrap_err();
        assert!(health.contains("cannot write") && health.contains(&err), "{health}");
        assert!(spool.health().is_err(), "the probe fails as long as the volume does");
        limit_file_size(libc::RLIM_INFINITY);
        assert_eq!(spool.health(), Ok(()), "the probe succeeds once the volume takes writes");
        spool.append(record(2)).unwrap();
        spool.flush().unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_applied_batchs_vector_is_filled_again_by_a_later_batch() {
        let dir = temp_dir("recycle");
        let spool = Spool::open(&dir, SpoolConfig::default()).unwrap();
        for n in 0..3 {
            spool.append(record(n)).unwrap();
        }
        spool.flush().unwrap();
        let batch = spool.sealed().unwrap().remove(0);
        let records = spool.take(&batch).unwrap();
        let capacity = records.capacity();
        spool.remove(&batch).unwrap();
        spool.recycle(records);
        spool.append(record(3)).unwrap();
        spool.flush().unwrap();
        let active = spool.lock();
        assert!(active.records.is_empty() && active.records.capacity() >= capacity);
        drop(active);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn age_cuts_a_batch_on_tick() {
        let dir = temp_dir("age");
        let spool = Spool::open(&dir, SpoolConfig { max_batch_age: Duration::ZERO, ..SpoolConfig::default() }).unwrap();
        spool.tick().unwrap();
        assert!(spool.sealed().unwrap().is_empty(), "an empty batch is never cut");
        spool.append(record(1)).unwrap();
        spool.tick().unwrap();
        assert_eq!(spool.sealed().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_crashed_writer_is_recovered_without_its_torn_line() {
        let dir = temp_dir("torn");
        {
            let spool = Spool::open(&dir, SpoolConfig::default()).unwrap();
            spool.append(record(1)).unwrap();
            spool.append(record(2)).unwrap();
            // The process dies mid-write: half a frame at the end of the open file.
            let open = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("open-")));
            let mut f = OpenOptions::new().append(true).open(open.unwrap()).unwrap();
            let mut torn = Vec::new();
            frame::encode(&record(3), &mut torn);
            f.write_all(&torn[..torn.len() / 2]).unwrap();
            std::mem::forget(spool);
        }
        let spool = Spool::open(&dir, SpoolConfig::default()).unwrap();
        let batches = spool.sealed().unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(read_batch(&batches[0]).unwrap(), vec![record(1), record(2)]);
        spool.remove(&batches[0]).unwrap();
        assert!(spool.sealed().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
