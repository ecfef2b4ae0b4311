//! The api node's spool: an append-only local log of usage records, written before the response
//! is sent, cut into batches with unique ids that the aggregator applies exactly once.
//!
//! Durability, precisely:
//! - `append` returns after write(2): the record is in the kernel's page cache, so it survives
//!   the process being killed (`kill -9`, a panic, an OOM kill) at any moment after the client
//!   could have seen the answer.
//! - `tick` fsyncs the active batch on a short interval (group commit: one fsync for every record
//!   of the interval), so a power loss or kernel crash can cost the records of the last interval
//!   (default 50 ms) — those requests were answered but go unbilled. A sealed batch is fsynced
//!   before its rename, and the rename is fsynced with the directory.
//!
//! Files: `open-<batch>.log` is the batch being written (one per node), `batch-<batch>.log` a
//! sealed one. Batch ids start with the cut time in milliseconds, so names sort by age. Each line
//! is `<crc32 hex> <json>`: a line torn by a crash fails its checksum and is dropped on recovery,
//! and it can only be the last line of an `open-` file.
//!
//! The records of the last few sealed batches are also kept in memory, so the aggregator of the
//! same process takes them ([`Spool::take`]) without reading and parsing the file again; the file
//! is what a restart recovers from.
//!
//! It must not interpret records (that is the aggregator's) and never deletes a batch that has
//! not been handed over (`remove` is called by whoever applied it).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::record::UsageRecord;

#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// A batch is cut when it holds this many records (default 20,000)...
    pub max_batch_records: usize,
    /// ...or this many bytes (default 8 MiB)...
    pub max_batch_bytes: u64,
    /// ...or when its first record is this old (default 1 s): the bound on how stale usage and
    /// audit reads are, beyond the aggregator's own interval.
    pub max_batch_age: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        // Large enough that a busy node cuts on age (about one batch, and one Parquet file per
        // tenant, per second), small enough that the aggregator reads a batch in one go.
        SpoolConfig { max_batch_records: 20_000, max_batch_bytes: 8 << 20, max_batch_age: Duration::from_secs(1) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("usage spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("usage record could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
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
    active: Mutex<Active>,
    /// The records of the most recently sealed batches, oldest first (at most
    /// [`HELD_BATCHES`]): a copy of what their files hold, for [`Spool::take`].
    held: Mutex<VecDeque<(String, Vec<UsageRecord>)>>,
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
    /// A write failed part-way: the file may end in a torn line, so nothing more is appended to
    /// it (the next append cuts the batch first).
    damaged: bool,
}

impl Spool {
    /// Opens the spool in `dir`, sealing whatever a previous process left open (its torn last
    /// line, if any, dropped), and starts a fresh batch.
    pub fn open(dir: &Path, config: SpoolConfig) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let Some(id) = file_batch_id(&path, "open-") else { continue };
            recover_torn_tail(&path)?;
            seal_file(dir, &path, &id)?;
        }
        let active = Active::create(dir)?;
        Ok(Spool { dir: dir.to_owned(), config, active: Mutex::new(active), held: Mutex::default() })
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
        let line = encode_line(&record)?;
        let mut active = self.lock();
        let count = active.records.len();
        if count >= self.config.max_batch_records
            || active.bytes + line.len() as u64 > self.config.max_batch_bytes && count > 0
            || active.damaged
        {
            self.cut(&mut active)?;
        }
        if let Err(e) = active.file.write_all(&line) {
            active.damaged = true;
            return Err(io(&active.path)(e));
        }
        active.records.push(record);
        active.bytes += line.len() as u64;
        active.first_at.get_or_insert_with(Instant::now);
        active.dirty = true;
        Ok(())
    }

    /// The periodic duty: fsync what was written since the last tick (group commit), and cut
    /// the batch if its first record is older than `max_batch_age`. Blocking: run it off the
    /// async runtime.
    pub fn tick(&self) -> Result<(), SpoolError> {
        let (to_sync, path) = {
            let mut active = self.lock();
            if active.first_at.is_some_and(|t| t.elapsed() >= self.config.max_batch_age) {
                return self.cut(&mut active);
            }
            if !active.dirty {
                return Ok(());
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
        if !active.records.is_empty() {
            self.cut(&mut active)?;
        }
        Ok(())
    }

    fn cut(&self, active: &mut Active) -> Result<(), SpoolError> {
        let next = Active::create(&self.dir)?;
        let done = std::mem::replace(active, next);
        done.file.sync_data().map_err(io(&done.path))?;
        drop(done.file);
        seal_file(&self.dir, &done.path, &done.id)?;
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

    /// Deletes a batch once it has been applied.
    pub fn remove(&self, batch: &SealedBatch) -> Result<(), SpoolError> {
        self.held().retain(|(id, _)| *id != batch.id);
        match std::fs::remove_file(&batch.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&batch.path)(e)),
            _ => Ok(()),
        }
    }
}

/// The records of a sealed batch. A line that fails its checksum is skipped: only an `open-`
/// file's last line can be torn, and recovery removed that before sealing.
pub fn read_batch(batch: &SealedBatch) -> Result<Vec<UsageRecord>, SpoolError> {
    let file = File::open(&batch.path).map_err(io(&batch.path))?;
    let mut records = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io(&batch.path))?;
        if let Some(record) = parse_line(&line) {
            records.push(record);
        } else {
            tracing::warn!(batch = batch.id, "usage spool: skipped a damaged line");
        }
    }
    Ok(records)
}

/// `<crc32 of the JSON, 8 hex digits> <JSON>\n`, built in one buffer.
fn encode_line(record: &UsageRecord) -> Result<Vec<u8>, SpoolError> {
    const PREFIX: usize = 9;
    let mut line = Vec::with_capacity(512);
    line.extend_from_slice(b"00000000 ");
    serde_json::to_writer(&mut line, record)?;
    let crc = crc32fast::hash(&line[PREFIX..]);
    for (i, digit) in line[..8].iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[(crc >> (28 - 4 * i)) as usize & 0xf];
    }
    line.push(b'\n');
    Ok(line)
}

fn parse_line(line: &str) -> Option<UsageRecord> {
    let (crc, json) = line.split_once(' ')?;
    let crc = u32::from_str_radix(crc, 16).ok()?;
    (crc32fast::hash(json.as_bytes()) == crc).then(|| serde_json::from_str(json).ok()).flatten()
}

impl Active {
    fn create(dir: &Path) -> Result<Active, SpoolError> {
        let id = new_batch_id();
        let path = dir.join(format!("open-{id}.log"));
        let file = OpenOptions::new().create_new(true).append(true).open(&path).map_err(io(&path))?;
        Ok(Active { id, path, file, records: Vec::new(), bytes: 0, first_at: None, dirty: false, damaged: false })
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

/// Cuts an `open-` file after its last intact line (a crash can tear only the last one).
fn recover_torn_tail(path: &Path) -> Result<(), SpoolError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let mut keep = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let intact =
            line.ends_with(b"\n") && std::str::from_utf8(&line[..line.len() - 1]).ok().and_then(parse_line).is_some();
        if !intact {
            break;
        }
        keep += line.len();
    }
    if keep < bytes.len() {
        tracing::warn!(path = %path.display(), dropped_bytes = bytes.len() - keep, "usage spool: torn tail dropped");
        let file = OpenOptions::new().write(true).open(path).map_err(io(path))?;
        file.set_len(keep as u64).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
    }
    Ok(())
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
            request_id: format!("req-{n}"),
            tenant: 1 + n % 3,
            key_id: "KEY000000000".into(),
            time_ms: 1_795_628_767_000 + n as i64,
            node: "node-a".into(),
            worker: "node-a".into(),
            status: 200,
            error: String::new(),
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
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("usage-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn batches_are_cut_by_count_and_read_back() {
        let dir = temp_dir("count");
        let spool = Spool::open(&dir, SpoolConfig { max_batch_records: 4, ..SpoolConfig::default() }).unwrap();
        for n in 0..10 {
            spool.append(record(n)).unwrap();
        }
        spool.flush().unwrap();
        let batches = spool.sealed().unwrap();
        assert_eq!(batches.len(), 3);
        let all: Vec<UsageRecord> = batches.iter().flat_map(|b| read_batch(b).unwrap()).collect();
        assert_eq!(all, (0..10).map(record).collect::<Vec<_>>());
        // What `take` hands over from memory is what the files hold.
        let taken: Vec<UsageRecord> = batches.iter().flat_map(|b| spool.take(b).unwrap()).collect();
        assert_eq!(taken, all);
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
            // The process dies mid-write: half a line at the end of the open file.
            let open = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("open-")));
            let mut f = OpenOptions::new().append(true).open(open.unwrap()).unwrap();
            f.write_all(b"0badc0de {\"request_id\":\"req-3\",\"ten").unwrap();
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
