//! The CPU time of the calling thread, for metering: what a conversion cost, whatever else the
//! machine was doing.

use std::time::Duration;

pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; the thread CPU clock always exists
    // on Linux. On failure the zeroed value is returned (a zero cost, never a crash).
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}
