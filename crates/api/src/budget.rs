//! The node-wide budget of request-body bytes in flight: a body's bytes are reserved here before
//! they are read (its `Content-Length` at once; a body without one frame by frame as it
//! arrives), held while the input is buffered and converted, and given back when the request's
//! answer is done (the [`BodyBytes`] reservation is dropped). Past the budget a request is
//! refused at once: buffered uploads can never take more of the node's memory than the budget,
//! whatever their tenants do.
//!
//! It must not wait for room (a request that does not fit is refused, never queued), must not
//! read a body or answer a request (`body.rs` and the handlers do), and knows no HTTP status:
//! `problem.rs` turns [`OverBudget`] into the answer.

use std::sync::atomic::{AtomicU64, Ordering};

/// At most `limit` bytes of request bodies held at once on this node.
#[derive(Debug)]
pub struct BodyBudget {
    limit: u64,
    held: AtomicU64,
}

/// A request that would take the node past its budget of body bytes in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this node holds {held} bytes of request bodies in flight; {wanted} more would pass its budget of {limit} bytes"
)]
pub struct OverBudget {
    pub limit: u64,
    pub held: u64,
    pub wanted: u64,
}

impl BodyBudget {
    pub fn new(limit: u64) -> BodyBudget {
        BodyBudget { limit, held: AtomicU64::new(0) }
    }

    /// The budget: most body bytes held at once.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Body bytes reserved now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// An empty reservation, which [`BodyBytes::cover`] grows as bytes are announced or arrive.
    pub fn reservation(&self) -> BodyBytes<'_> {
        BodyBytes { budget: self, bytes: 0 }
    }

    /// Adds `bytes` to what is held if the total stays within the limit; never waits.
    fn take(&self, bytes: u64) -> Result<(), OverBudget> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .map(|_| ())
            .map_err(|held| OverBudget { limit: self.limit, held, wanted: bytes })
    }

    fn give_back(&self, bytes: u64) {
        // Only what a reservation took is given back, so this never goes below zero; saturate
        // anyway rather than wrap if that ever stopped being true.
        let _ = self.held.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| Some(held.saturating_sub(bytes)));
    }
}

/// One request's share of the [`BodyBudget`]; given back when dropped.
#[derive(Debug)]
pub struct BodyBytes<'a> {
    budget: &'a BodyBudget,
    bytes: u64,
}

impl BodyBytes<'_> {
    /// Grows the reservation to `total` bytes if it holds fewer (it never shrinks); on refusal
    /// it keeps what it held.
    pub fn cover(&mut self, total: u64) -> Result<(), OverBudget> {
        if total > self.bytes {
            self.budget.take(total - self.bytes)?;
            self.bytes = total;
        }
        Ok(())
    }

    /// Bytes this reservation holds.
    #[cfg(test)] // the node reports the total (`held`), not one request's
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for BodyBytes<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_within_the_limit_and_refuses_past_it() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reservation();
        a.cover(60).expect("fits");
        let mut b = budget.reservation();
        assert_eq!(b.cover(41), Err(OverBudget { limit: 100, held: 60, wanted: 41 }));
        assert_eq!((b.bytes(), budget.held()), (0, 60), "a refusal takes nothing");
        b.cover(40).expect("exactly to the limit");
        assert_eq!(budget.held(), 100);
    }

    #[test]
    fn a_reservation_grows_by_the_difference_and_never_shrinks() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reservation();
        a.cover(10).expect("fits");
        a.cover(30).expect("grows by 20");
        a.cover(5).expect("covered already");
        assert_eq!((a.bytes(), budget.held()), (30, 30));
        assert!(a.cover(101).is_err());
        assert_eq!((a.bytes(), budget.held()), (30, 30), "a refused growth keeps what was held");
    }

    #[test]
    fn dropping_gives_back_and_the_count_never_goes_negative() {
        let budget = BodyBudget::new(100);
        {
            let mut a = budget.reservation();
            a.cover(70).expect("fits");
            let _empty = budget.reservation();
        }
        assert_eq!(budget.held(), 0);
        budget.give_back(5);
        assert_eq!(budget.held(), 0, "saturates at zero");
        let mut again = budget.reservation();
        again.cover(100).expect("the whole budget is free again");
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let budget = BodyBudget::new(1000);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        let mut r = budget.reservation();
                        if r.cover(300).is_ok() {
                            assert!(budget.held() <= 1000);
                        }
                    }
                });
            }
        });
        assert_eq!(budget.held(), 0);
    }
}
