//! CPU cost per usage record on each step of its path (one thread, no load around it):
//! spool append, batch read, Parquet archive write, rollup apply.
//! Run: `cargo run --release -p usage --example record_cost` (`TENANTS=n` spreads the batch over
//! n tenants, default 10: each tenant is one Parquet file per batch; `SPOOL_MEMORY=` appends with
//! write(2) instead of into /dev/shm).

use std::time::Instant;

use usage::{Archive, Rollups, Spool, SpoolConfig, UsageRecord};

fn record(n: u64, tenants: u64) -> UsageRecord {
    UsageRecord {
        request_id: format!("{n:016x}").into(),
        tenant: 1 + n % tenants,
        key_id: "AbCdEfGhIjKl".into(),
        time_ms: 1_795_628_767_000 + n as i64,
        node: "dev".into(),
        worker: "dev".into(),
        status: 200,
        error: Default::default(),
        params: "width=32".into(),
        input_format: "jpeg".into(),
        input_bytes: 1204,
        input_width: 64,
        input_height: 43,
        output_format: "jpeg".into(),
        output_bytes: 836,
        output_width: 32,
        output_height: 22,
        queue_wait_us: 1400,
        wall_us: 60,
        cpu_us: 45,
        source_bytes: 0,
        source: Default::default(),
        frames: 1,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const N: u64 = 20_000;
    let dir = std::env::temp_dir().join(format!("record-cost-{}", std::process::id()));
    // As the service: the open batch in /dev/shm (SPOOL_MEMORY= for one write(2) per record).
    let memory = std::env::var("SPOOL_MEMORY").unwrap_or_else(|_| "/dev/shm".into());
    let memory_dir = (!memory.is_empty()).then(|| std::path::PathBuf::from(&memory));
    let spool = Spool::open(&dir.join("spool"), SpoolConfig { memory_dir, ..SpoolConfig::default() })?;
    let tenants = std::env::var("TENANTS").ok().and_then(|t| t.parse().ok()).filter(|&t| t > 0).unwrap_or(10);
    let records: Vec<UsageRecord> = (0..N).map(|n| record(n, tenants)).collect();
    let per = |t: Instant| t.elapsed().as_secs_f64() * 1e6 / N as f64;

    let t = Instant::now();
    for r in records {
        spool.append(r)?;
    }
    println!(
        "spool append: {:.2} µs/record ({})",
        per(t),
        if memory.is_empty() { "write(2)" } else { "shared memory" }
    );
    spool.flush()?;
    let batch = spool.sealed()?.remove(0);
    let t = Instant::now();
    let read = usage::read_batch(&batch)?;
    println!("batch read:   {:.2} µs/record (from the file, after a restart)", per(t));
    let t = Instant::now();
    let taken = spool.take(&batch)?;
    println!("batch take:   {:.2} µs/record (from memory, the normal path)", per(t));
    assert_eq!(taken, read);
    let archive = Archive::local(&dir.join("archive"))?;
    // REPEAT=n writes the batch n times (for a profiler); the figure is per record and write.
    let repeat = std::env::var("REPEAT").ok().and_then(|r| r.parse().ok()).filter(|&r: &u32| r > 0).unwrap_or(1);
    let shared = std::sync::Arc::new(read.clone());
    let t = Instant::now();
    for _ in 0..repeat {
        archive.write_batch(&batch.id, shared.clone()).await?;
    }
    println!("archive:      {:.2} µs/record", per(t) / f64::from(repeat));
    let rollups = Rollups::open(&dir.join("usage.sqlite"))?;
    let t = Instant::now();
    rollups.apply(&batch.id, &read, 0)?;
    println!("rollups:      {:.2} µs/record", per(t));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
