//! The SQLite store through its public API: the shared store scenarios (`scenarios/mod.rs`) on a
//! fresh in-memory database each, plus what only a database file brings — data that outlives
//! the handle without the secret, and two handles on one file sharing one outbox.

#[macro_use]
mod scenarios;

use std::path::PathBuf;

use identity::{Actor, IdentityStore, StoreError, TenantLimits, TenantStatus};

/// Runs a shared scenario on a fresh in-memory store.
fn with_store(_name: &str, scenario: scenarios::Scenario) {
    scenario(&IdentityStore::open_in_memory().unwrap());
}

store_scenarios!(with_store);

/// A database file of its own in the temp dir, removed (with its WAL) when dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("identity-test-{}-{name}.sqlite", std::process::id()));
        let db = TempDb(path);
        db.remove();
        db
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

#[test]
fn a_database_file_keeps_its_data_and_never_the_secret() {
    let db = TempDb::new("persist");
    let (tenant, key, token) = {
        let store = IdentityStore::open(&db.0).unwrap();
        let tenant = store.create_tenant("acme", TenantLimits::default()).unwrap();
        let (key, token) = store.create_key(tenant.id, "ci").unwrap();
        (tenant, key, token)
    };
    let store = IdentityStore::open(&db.0).unwrap();
    assert_eq!(store.get_tenant(tenant.id).unwrap(), tenant);
    assert_eq!(store.get_key(key.id).unwrap(), key);
    assert_eq!(store.version().unwrap(), 2);
    drop(store);

    // Closing the last connection checkpoints the WAL into the main file; search every file.
    let secret = token.split('_').nth(2).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db.0.display())) {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "secret found in {suffix:?}");
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
        }
    }
}

#[test]
fn two_handles_on_one_file_share_one_outbox() {
    let db = TempDb::new("two-handles");
    let first = IdentityStore::open(&db.0).unwrap();
    let second = IdentityStore::open(&db.0).unwrap();
    let acme = first.create_tenant("acme", TenantLimits::default()).unwrap();
    second.create_key(acme.id, "ci").unwrap();
    first.set_status(&Actor::process(), acme.id, TenantStatus::Suspended).unwrap();
    assert!(matches!(second.create_tenant("ACME", TenantLimits::default()), Err(StoreError::Conflict(_))));
    let versions: Vec<u64> = second.changes_since(0).unwrap().iter().map(|c| c.version).collect();
    assert_eq!(versions, [1, 2, 3]);
}
