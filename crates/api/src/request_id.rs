//! The id that follows one request through every log line, the response headers and the problem
//! body. A client (or the load balancer) may send its own in `X-Request-Id`; a missing or unfit
//! one is replaced by a fresh id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub const HEADER: &str = "x-request-id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A client's id, if it is 1–128 characters of `[A-Za-z0-9._:-]` (safe in logs and headers).
    pub fn from_client(value: &str) -> Option<RequestId> {
        let fits = (1..=128).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        fits.then(|| RequestId(value.to_owned()))
    }

    /// 16 hex digits, unique within the process and unlikely to repeat across processes: a
    /// counter mixed with a random per-process seed (no system call per request).
    pub fn generate() -> RequestId {
        static SEED: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = *SEED.get_or_init(|| {
            let mut bytes = [0u8; 8];
            // Without entropy the ids are still unique within the process, which is what matters.
            let _ = getrandom::fill(&mut bytes);
            u64::from_le_bytes(bytes)
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        RequestId(format!("{:016x}", splitmix64(seed.wrapping_add(n))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A bijection on u64 (so distinct counters give distinct ids) that scatters the bits.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_taken_only_when_safe() {
        assert!(RequestId::from_client("abc-123_x.y:z").is_some());
        assert!(RequestId::from_client("").is_none());
        assert!(RequestId::from_client("a b").is_none());
        assert!(RequestId::from_client("line\nbreak").is_none());
        assert!(RequestId::from_client(&"a".repeat(129)).is_none());
    }

    #[test]
    fn generated_ids_differ() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 16);
    }
}
