//! Each tenant's resize requests in flight on this node, capped: a request takes a
//! [`TenantSlot`] at admission (once its key is known, before its body is read) and gives it
//! back when its answer is done (the slot is dropped). Past the cap the tenant's next request is
//! refused at once, so one tenant cannot hold every upload, every conversion place and the
//! node's body budget while the others wait.
//!
//! It must not wait for a slot (refuse, never queue), must not read or answer requests, and
//! knows no HTTP status: `problem.rs` turns [`TooManyInFlight`] into the answer.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use identity::TenantId;

/// At most `cap` requests of each tenant in flight at once on this node.
#[derive(Debug)]
pub struct TenantsInFlight {
    cap: usize,
    /// Only tenants with a request in flight have an entry: it goes when its count reaches 0.
    counts: Mutex<HashMap<TenantId, usize>>,
}

/// A tenant already has its cap of requests in flight here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this tenant already has {cap} requests in flight on this node, its cap; retry when one is answered")]
pub struct TooManyInFlight {
    pub cap: usize,
}

impl TenantsInFlight {
    pub fn new(cap: usize) -> TenantsInFlight {
        TenantsInFlight { cap, counts: Mutex::new(HashMap::new()) }
    }

    /// A slot for one more of `tenant`'s requests, if it has fewer than the cap in flight.
    pub fn take(&self, tenant: TenantId) -> Result<TenantSlot<'_>, TooManyInFlight> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.get(&tenant).copied().unwrap_or(0) >= self.cap {
            return Err(TooManyInFlight { cap: self.cap });
        }
        *counts.entry(tenant).or_insert(0) += 1;
        Ok(TenantSlot { owner: self, tenant })
    }

    /// `tenant`'s requests in flight now.
    #[cfg(test)] // the node reports how many tenants have requests in flight, not who
    pub fn count(&self, tenant: TenantId) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).get(&tenant).copied().unwrap_or(0)
    }

    /// Tenants with at least one request in flight now.
    pub fn tenants(&self) -> usize {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn give_back(&self, tenant: TenantId) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&tenant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&tenant);
            }
        }
    }
}

/// One request of a tenant counted in flight; given back when dropped.
#[derive(Debug)]
pub struct TenantSlot<'a> {
    owner: &'a TenantsInFlight,
    tenant: TenantId,
}

impl Drop for TenantSlot<'_> {
    fn drop(&mut self) {
        self.owner.give_back(self.tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_has_its_own_cap_and_slots_come_back_on_drop() {
        let in_flight = TenantsInFlight::new(2);
        let (a, b) = (TenantId::new(1), TenantId::new(2));
        let a1 = in_flight.take(a).expect("first");
        let a2 = in_flight.take(a).expect("second");
        assert_eq!(in_flight.take(a).err(), Some(TooManyInFlight { cap: 2 }));
        let _b1 = in_flight.take(b).expect("another tenant is not held back");
        assert_eq!((in_flight.count(a), in_flight.count(b), in_flight.tenants()), (2, 1, 2));
        drop(a1);
        let _a3 = in_flight.take(a).expect("a slot came back");
        drop(a2);
        assert_eq!(in_flight.count(a), 1);
    }

    #[test]
    fn a_tenant_with_nothing_in_flight_leaves_no_entry() {
        let in_flight = TenantsInFlight::new(1);
        drop(in_flight.take(TenantId::new(7)).expect("free"));
        assert_eq!(in_flight.tenants(), 0);
        let none = TenantsInFlight::new(0);
        assert!(none.take(TenantId::new(7)).is_err());
        assert_eq!(none.tenants(), 0, "a refusal leaves no entry either");
    }
}
