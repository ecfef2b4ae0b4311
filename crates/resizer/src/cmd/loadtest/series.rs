//! The run cut into time windows (one second each to begin with), each with its own small latency
//! histogram and status counts: what the report draws over time. Memory is bounded whatever the
//! duration: past `MAX_WINDOWS`, neighbouring windows are merged in pairs and the width doubles.

use std::collections::BTreeMap;
use std::time::Duration;

use super::histogram::WindowHistogram;

/// At most this many windows per run (4 KiB each): a 10-minute step keeps 1-second windows; a day
/// long run ends with 4-minute ones.
pub const MAX_WINDOWS: usize = 600;

#[derive(Debug, Clone)]
pub struct TimeSeries {
    width: Duration,
    windows: Vec<Window>,
}

#[derive(Debug, Clone, Default)]
pub struct Window {
    pub latency: WindowHistogram,
    pub status: BTreeMap<u16, u64>,
    /// Connect and request failures (no status).
    pub errors: u64,
}

impl Window {
    pub fn responses(&self) -> u64 {
        self.status.values().sum()
    }

    fn merge(&mut self, other: &Window) {
        self.latency.merge(&other.latency);
        for (&code, &count) in &other.status {
            *self.status.entry(code).or_default() += count;
        }
        self.errors += other.errors;
    }
}

/// What one measured request came to, as a window counts it.
pub enum Event {
    Answered { status: u16, latency_us: u64 },
    Failed,
}

impl Default for TimeSeries {
    fn default() -> Self {
        TimeSeries { width: Duration::from_secs(1), windows: Vec::new() }
    }
}

impl TimeSeries {
    pub fn width(&self) -> Duration {
        self.width
    }

    /// Windows from the start of the measurement, each `width()` long (the last may be cut short
    /// by the end of the run).
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// Counts `event`, which finished `offset` after the start of the measurement.
    pub fn record(&mut self, offset: Duration, event: Event) {
        let mut index = self.index_of(offset);
        while index >= MAX_WINDOWS {
            self.halve();
            index = self.index_of(offset);
        }
        if index >= self.windows.len() {
            self.windows.resize_with(index + 1, Window::default);
        }
        let window = &mut self.windows[index];
        match event {
            Event::Answered { status, latency_us } => {
                *window.status.entry(status).or_default() += 1;
                window.latency.record(latency_us);
            }
            Event::Failed => window.errors += 1,
        }
    }

    /// The index of the last window that has begun at `offset`: the progress display's "now".
    pub fn index_of(&self, offset: Duration) -> usize {
        usize::try_from(offset.as_nanos() / self.width.as_nanos()).unwrap_or(usize::MAX)
    }

    /// Merges windows in pairs: half as many, twice as wide.
    fn halve(&mut self) {
        let old = std::mem::take(&mut self.windows);
        let mut pairs = old.chunks(2);
        for pair in &mut pairs {
            let mut merged = pair[0].clone();
            if let Some(second) = pair.get(1) {
                merged.merge(second);
            }
            self.windows.push(merged);
        }
        self.width *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_land_in_their_second() {
        let mut series = TimeSeries::default();
        series.record(Duration::from_millis(100), Event::Answered { status: 200, latency_us: 5_000 });
        series.record(Duration::from_millis(2_500), Event::Answered { status: 503, latency_us: 100 });
        series.record(Duration::from_millis(2_900), Event::Failed);
        let windows = series.windows();
        assert_eq!(windows.len(), 3);
        assert_eq!(windows[0].status, BTreeMap::from([(200, 1)]));
        assert_eq!(windows[1].responses(), 0);
        assert_eq!((windows[2].responses(), windows[2].errors), (1, 1));
        assert_eq!(series.width(), Duration::from_secs(1));
    }

    #[test]
    fn a_long_run_halves_its_windows_and_keeps_every_count() {
        let mut series = TimeSeries::default();
        for second in 0..(3 * MAX_WINDOWS as u64) {
            series.record(Duration::from_secs(second), Event::Answered { status: 200, latency_us: second });
        }
        assert!(series.windows().len() <= MAX_WINDOWS);
        assert_eq!(series.width(), Duration::from_secs(4));
        let total: u64 = series.windows().iter().map(Window::responses).sum();
        assert_eq!(total, 3 * MAX_WINDOWS as u64);
        assert_eq!(series.windows()[0].latency.max_us(), Some(3));
    }
}
