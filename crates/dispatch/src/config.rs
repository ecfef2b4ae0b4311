//! The size lanes and the configuration of the pool: how many threads, where the lanes split,
//! how many jobs each lane may hold. Every field has a documented default.

use std::fmt;

/// A size class. Each lane has its own bounded FIFO, so a burst of huge images fills only its
/// own lane and never the one small images wait in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Fewer than [`DispatchConfig::medium_from_pixels`] pixels (default: under 1 MP).
    Small,
    /// From `medium_from_pixels` up to [`DispatchConfig::large_from_pixels`] (default 1–16 MP).
    Medium,
    /// `large_from_pixels` and more (default: 16 MP and more).
    Large,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Small, Lane::Medium, Lane::Large];

    /// The name used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Small => "small",
            Lane::Medium => "medium",
            Lane::Large => "large",
        }
    }

    /// Large jobs (seconds each) may not take every thread: one is always left for the other
    /// lanes. Medium jobs (tens of milliseconds) may use them all; a small job waiting behind
    /// them waits about one medium service time, not a large one.
    pub(crate) fn is_capped(self) -> bool {
        self == Lane::Large
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per lane: capacities in the config, lane figures in the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerLane<T> {
    pub small: T,
    pub medium: T,
    pub large: T,
}

impl<T> PerLane<T> {
    pub fn get(&self, lane: Lane) -> &T {
        match lane {
            Lane::Small => &self.small,
            Lane::Medium => &self.medium,
            Lane::Large => &self.large,
        }
    }

    pub fn get_mut(&mut self, lane: Lane) -> &mut T {
        match lane {
            Lane::Small => &mut self.small,
            Lane::Medium => &mut self.medium,
            Lane::Large => &mut self.large,
        }
    }

    pub(crate) fn map<U>(&self, mut f: impl FnMut(Lane, &T) -> U) -> PerLane<U> {
        PerLane {
            small: f(Lane::Small, &self.small),
            medium: f(Lane::Medium, &self.medium),
            large: f(Lane::Large, &self.large),
        }
    }
}

/// How the pool is built. `Default` sizes it to this machine; [`DispatchConfig::with_threads`]
/// to a given number of threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchConfig {
    /// Pool threads, one per core: the conversion is CPU-bound and single-threaded per image.
    /// Default: `std::thread::available_parallelism()` (1 if unknown). 0 is treated as 1.
    pub threads: usize,
    /// Threads beyond `threads` that run small jobs only. Default 0. A worker with one thread
    /// keeps one, so a small image pulled while a medium one (half a second) converts starts at
    /// once: the two share the core for the few milliseconds the small one takes.
    pub small_reserve: usize,
    /// Jobs of this many pixels (width × height) or more go to the medium lane. Default 1,000,000.
    pub medium_from_pixels: u64,
    /// Jobs of this many pixels or more go to the large lane. Default 16,000,000.
    pub large_from_pixels: u64,
    /// Most jobs each lane may hold waiting (running jobs do not count). A submit to a full lane
    /// fails at once with `Overloaded`. Capacity 0 closes the lane.
    ///
    /// Defaults, per thread: small 32, medium 4, large 2. A job waits about
    /// depth × service time ÷ threads, so these keep a full lane's wait near the service's
    /// 500 ms p99 budget for typical service times (small ~10 ms, medium ~100 ms, large ~1 s);
    /// a longer lane would only hold bytes of jobs that expire before a thread reaches them.
    /// They also bound the memory of waiting inputs: capacity × `Limits::max_input_bytes`.
    pub capacity: PerLane<usize>,
}

impl DispatchConfig {
    /// The documented defaults for a pool of `threads` threads.
    pub fn with_threads(threads: usize) -> DispatchConfig {
        let threads = threads.max(1);
        DispatchConfig {
            threads,
            small_reserve: 0,
            medium_from_pixels: 1_000_000,
            large_from_pixels: 16_000_000,
            capacity: PerLane { small: 32 * threads, medium: 4 * threads, large: 2 * threads },
        }
    }

    /// The lane a job of `pixels` (width × height from `imaging::probe`) travels in.
    pub fn lane_for(&self, pixels: u64) -> Lane {
        if pixels >= self.large_from_pixels {
            Lane::Large
        } else if pixels >= self.medium_from_pixels {
            Lane::Medium
        } else {
            Lane::Small
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig::with_threads(std::thread::available_parallelism().map_or(1, usize::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_split_at_1_and_16_megapixels_by_default() {
        let config = DispatchConfig::with_threads(2);
        assert_eq!(config.lane_for(0), Lane::Small);
        assert_eq!(config.lane_for(999_999), Lane::Small);
        assert_eq!(config.lane_for(1_000_000), Lane::Medium);
        assert_eq!(config.lane_for(15_999_999), Lane::Medium);
        assert_eq!(config.lane_for(16_000_000), Lane::Large);
        assert_eq!(config.lane_for(u64::MAX), Lane::Large);
    }

    #[test]
    fn default_capacities_scale_with_threads() {
        let config = DispatchConfig::with_threads(4);
        assert_eq!(config.capacity, PerLane { small: 128, medium: 16, large: 8 });
        assert_eq!(DispatchConfig::with_threads(0).threads, 1);
    }
}
