//! What a running worker shows its health and metrics routes: its metrics, its slots, whether
//! it is connected to NATS and pulling jobs. Set by the pull loop, counted in by each job, read
//! by `http.rs`.
//!
//! It must not pull, run or acknowledge jobs, or import the files that do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::metrics::WorkerMetrics;

/// What the health and metrics routes read.
pub struct Status {
    pub metrics: WorkerMetrics,
    pub slots: usize,
    ready: AtomicBool,
    client: OnceLock<async_nats::Client>,
}

impl Status {
    pub fn new(slots: usize) -> Arc<Status> {
        Arc::new(Status {
            metrics: WorkerMetrics::default(),
            slots,
            ready: AtomicBool::new(false),
            client: OnceLock::new(),
        })
    }

    pub fn connected(&self) -> bool {
        self.client.get().is_some_and(|c| c.connection_state() == async_nats::connection::State::Connected)
    }

    /// Pulling jobs: set up, not shutting down, and connected to NATS.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.connected()
    }

    /// The NATS client whose connection `connected` reports; the first one set stays.
    pub(crate) fn set_client(&self, client: async_nats::Client) {
        let _ = self.client.set(client);
    }

    /// Whether the pull loop is set up and not shutting down.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}
