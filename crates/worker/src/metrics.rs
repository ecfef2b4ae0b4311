//! The worker's Prometheus metrics: the queue hop by lane (publish → this worker's receipt),
//! fetch and return transfer times, redeliveries, poison and expired jobs, outcomes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use promtext::{gauge, Counters, Family};

#[derive(Default)]
pub struct WorkerMetrics {
    queue_wait: Family,
    fetch: Family,
    give_back: Family,
    conversion_wall: Family,
    jobs: Counters,
    redeliveries: Counters,
    busy: AtomicU64,
}

impl WorkerMetrics {
    pub(crate) fn received(&self, lane: &str, queue_wait: Duration, attempt: u32) {
        self.queue_wait.observe(&[lane], queue_wait);
        if attempt > 1 {
            self.redeliveries.add(&[lane], 1);
        }
    }

    pub(crate) fn fetched(&self, lane: &str, took: Duration) {
        self.fetch.observe(&[lane], took);
    }

    pub(crate) fn returned(&self, lane: &str, took: Duration) {
        self.give_back.observe(&[lane], took);
    }

    pub(crate) fn converted(&self, lane: &str, wall: Duration) {
        self.conversion_wall.observe(&[lane], wall);
    }

    /// `outcome`: ok, failed (a typed failure returned), poison, expired, gone (the api node no
    /// longer waits), undeliverable (the api node could not be reached), malformed.
    pub(crate) fn finished(&self, lane: &str, outcome: &'static str) {
        self.jobs.add(&[lane, outcome], 1);
    }

    pub fn jobs(&self, lane: &str, outcome: &str) -> u64 {
        self.jobs.get(&[lane, outcome])
    }

    pub(crate) fn busy(&self, delta: i64) {
        if delta >= 0 {
            self.busy.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.busy.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    pub fn render(&self, slots: usize, connected: bool, ready: bool) -> String {
        let mut out = String::with_capacity(8 << 10);
        self.queue_wait.render(
            &mut out,
            "resizer_worker_queue_wait_seconds",
            "From the api publishing a job to this worker receiving it (the queue hop), by lane.",
            &["lane"],
        );
        self.fetch.render(
            &mut out,
            "resizer_worker_fetch_seconds",
            "Fetching a job's source bytes from its api node.",
            &["lane"],
        );
        self.give_back.render(
            &mut out,
            "resizer_worker_return_seconds",
            "Handing a job's result back to its api node.",
            &["lane"],
        );
        self.conversion_wall.render(
            &mut out,
            "resizer_worker_conversion_wall_seconds",
            "Wall-clock time of a conversion on this worker.",
            &["lane"],
        );
        self.jobs.render(
            &mut out,
            "resizer_worker_jobs_total",
            "Jobs this worker finished, by lane and outcome.",
            &["lane", "outcome"],
        );
        self.redeliveries.render(
            &mut out,
            "resizer_worker_redeliveries_total",
            "Jobs received that an earlier worker had received and not acknowledged.",
            &["lane"],
        );
        gauge(&mut out, "resizer_worker_slots", "Jobs this worker runs at once.", slots as f64);
        gauge(
            &mut out,
            "resizer_worker_busy",
            "Jobs in flight on this worker.",
            self.busy.load(Ordering::Relaxed) as f64,
        );
        gauge(&mut out, "resizer_worker_nats_connected", "1 while connected to NATS.", f64::from(u8::from(connected)));
        gauge(&mut out, "resizer_ready", "1 while the worker pulls jobs.", f64::from(u8::from(ready)));
        out
    }
}
