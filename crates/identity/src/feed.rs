//! Embedded mode's feeder: brings a [`CredentialCache`] up to date from the store ([`Store`]) in
//! the same process, along the same path the cluster's feeder takes from JetStream KV — a
//! snapshot once, then the changes after the cache's version, in order, with a fresh snapshot
//! whenever a change is missing.
//!
//! The api calls [`feed`] after each admin write (so its own writes are visible at once) and on
//! a short interval (so writes by another process sharing the database are visible soon).

use crate::backend::Store;
use crate::cache::{CacheError, CredentialCache};
use crate::error::StoreError;

/// What a call to [`feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// The cache had nothing new to take.
    UpToDate { version: u64 },
    /// `applied` changes were applied, bringing the cache to `version`.
    Changes { applied: usize, version: u64 },
    /// The cache was (re)loaded from a snapshot at `version`: first feed, or a gap.
    Snapshot { version: u64 },
}

/// One round of feeding. Blocking (it reads SQLite): call it off the async runtime. Safe to call
/// from several threads at once; the cache serialises its updates and ignores what it has.
pub fn feed(store: &dyn Store, cache: &CredentialCache) -> Result<Fed, StoreError> {
    if !cache.is_primed() {
        return resnapshot(store, cache);
    }
    let have = cache.version();
    let changes = store.changes_since(have)?;
    if changes.is_empty() {
        return Ok(Fed::UpToDate { version: have });
    }
    match cache.apply_changes(changes) {
        Ok(applied) => Ok(Fed::Changes { applied, version: cache.version() }),
        // The store's outbox has no holes, so this means it was tampered with; start over.
        Err(CacheError::Gap { .. }) => resnapshot(store, cache),
    }
}

fn resnapshot(store: &dyn Store, cache: &CredentialCache) -> Result<Fed, StoreError> {
    let snapshot = store.snapshot()?;
    let version = snapshot.version;
    // Not applied only if another thread already fed the cache past it: that is just as good.
    cache.apply_snapshot(snapshot);
    Ok(Fed::Snapshot { version })
}
