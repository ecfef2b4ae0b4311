//! Reads a month of hourly rollups for one tenant while 1,000 tenants' data is present.
//! Issue target: < 50 ms. Run: `cargo run --release -p usage --example rollup_bench`.

use std::time::{Duration, Instant};

use usage::{Granularity, Rollups, UsageRecord};

const TENANTS: u64 = 1_000;
const DAYS: i64 = 30;
const HOUR_MS: i64 = 3_600_000;

fn record(tenant: u64, time_ms: i64, status: u16) -> UsageRecord {
    UsageRecord {
        request_id: Default::default(),
        tenant,
        key_id: Default::default(),
        time_ms,
        node: Default::default(),
        worker: Default::default(),
        status,
        error: Default::default(),
        params: Default::default(),
        input_format: "jpeg".into(),
        input_bytes: 200_000,
        input_width: 1200,
        input_height: 800,
        output_format: "jpeg".into(),
        output_bytes: 20_000,
        output_width: 512,
        output_height: 341,
        queue_wait_us: 100,
        wall_us: 10_000,
        cpu_us: 9_000,
        source_bytes: 0,
        source: Default::default(),
        frames: 1,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("rollup-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rollups = Rollups::open(&dir.join("usage.sqlite"))?;
    let start = 20_000 * 24 * HOUR_MS;
    let fill = Instant::now();
    // One batch per hour, every tenant with a 200 and a 429 in it: 1,000 × 720 × 2 = 1.44 M rows.
    for hour in 0..DAYS * 24 {
        let t = start + hour * HOUR_MS;
        let records: Vec<UsageRecord> =
            (1..=TENANTS).flat_map(|tenant| [record(tenant, t + 1, 200), record(tenant, t + 2, 429)]).collect();
        rollups.apply(&format!("hour-{hour}"), &records, 0)?;
    }
    println!("filled {} tenants × {} hours × 2 statuses in {:.1} s", TENANTS, DAYS * 24, fill.elapsed().as_secs_f64());

    for granularity in [Granularity::Hour, Granularity::Day] {
        let mut times: Vec<Duration> = Vec::new();
        for i in 0..200 {
            let tenant = 1 + (i * 7919) % TENANTS;
            let t0 = Instant::now();
            let buckets = rollups.query(tenant, start, start + DAYS * 24 * HOUR_MS, granularity)?;
            times.push(t0.elapsed());
            let expected = if granularity == Granularity::Hour { DAYS * 24 } else { DAYS };
            assert_eq!(buckets.len() as i64, expected);
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{granularity:?}: 200 reads of one tenant's month: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(times[100]),
            ms(times[198]),
            ms(times[199])
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
