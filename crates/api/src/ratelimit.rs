//! Per-tenant token buckets: `rate_per_sec` tokens flow in, at most `burst` are kept, each request
//! takes one. The limits are read per request from the credential cache, so a change made through
//! the admin API applies to the next request without resetting the bucket.
//!
//! State is one small entry per tenant that has made a request, so memory is bounded by the
//! number of tenants in the identity store. Shards keep two requests of different tenants from
//! contending for one lock.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use identity::TenantId;

const SHARDS: usize = 16;

#[derive(Default)]
pub struct RateLimiter {
    shards: [Mutex<HashMap<TenantId, Bucket>>; SHARDS],
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// Takes one token from `tenant`'s bucket, or says how long until one is there.
    pub fn take(&self, tenant: TenantId, rate_per_sec: f64, burst: u32, now: Instant) -> Result<(), Duration> {
        let shard = &self.shards[(tenant.get() % SHARDS as u64) as usize];
        let mut buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let capacity = f64::from(burst.max(1));
        let bucket = buckets.entry(tenant).or_insert(Bucket { tokens: capacity, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate_per_sec).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate_per_sec;
            // `rate_per_sec` is validated finite and > 0 by identity; the clamp keeps a tiny rate
            // from overflowing a Duration.
            Err(Duration::from_secs_f64(wait.clamp(0.001, 86_400.0)))
        }
    }
}

impl RateLimiter {
    /// The tokens `tenant`'s bucket holds at `now`, taking none: a tenant never seen has a full
    /// bucket.
    pub fn available(&self, tenant: TenantId, rate_per_sec: f64, burst: u32, now: Instant) -> f64 {
        let shard = &self.shards[(tenant.get() % SHARDS as u64) as usize];
        let buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let capacity = f64::from(burst.max(1));
        buckets.get(&tenant).map_or(capacity, |bucket| {
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            (bucket.tokens + elapsed * rate_per_sec).min(capacity)
        })
    }
}

/// A node's share of a tenant's limits when `nodes` api nodes take its requests: the rate
/// divided among them, and the burst too (at least one request, or a small burst would refuse
/// everything).
pub fn share(rate_per_sec: f64, burst: u32, nodes: usize) -> (f64, u32) {
    let burst = u32::try_from(queue::node_share(burst as usize, nodes)).unwrap_or(u32::MAX);
    (rate_per_sec / nodes.max(1) as f64, burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_limit_and_never_refuse_everything() {
        assert_eq!(share(10.0, 20, 1), (10.0, 20));
        assert_eq!(share(10.0, 20, 2), (5.0, 10));
        assert_eq!(share(9.0, 5, 3), (3.0, 2));
        assert_eq!(share(1.0, 1, 4), (0.25, 1));
        assert_eq!(share(1.0, 0, 0), (1.0, 1));
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let limiter = RateLimiter::default();
        let tenant = TenantId::new(7);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take(tenant, 2.0, 3, t0).is_ok());
        }
        let wait = limiter.take(tenant, 2.0, 3, t0).expect_err("bucket is empty");
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert!(limiter.take(tenant, 2.0, 3, t0 + Duration::from_millis(499)).is_err());
        assert!(limiter.take(tenant, 2.0, 3, t0 + Duration::from_millis(1000)).is_ok());
    }

    #[test]
    fn tenants_have_their_own_buckets() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.take(TenantId::new(1), 1.0, 1, t0).is_ok());
        assert!(limiter.take(TenantId::new(1), 1.0, 1, t0).is_err());
        assert!(limiter.take(TenantId::new(17), 1.0, 1, t0).is_ok(), "same shard, other tenant");
    }
}
