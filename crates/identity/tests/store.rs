//! The SQLite store through its public API: CRUD, uniqueness, revocation, suspension, and the
//! outbox each mutation writes.

use std::path::PathBuf;

use identity::{
    parse_key, ChangeKind, IdentityStore, KeyId, Missing, StoreError, TenantId, TenantLimits, TenantStatus,
};

fn store() -> IdentityStore {
    IdentityStore::open_in_memory().unwrap()
}

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
fn tenants_are_created_read_listed_and_updated() {
    let store = store();
    let limits = TenantLimits { rate_per_sec: Some(20.0), burst: Some(40), ..TenantLimits::default() };
    let acme = store.create_tenant("acme", limits).unwrap();
    assert_eq!((acme.name.as_str(), acme.status, acme.limits), ("acme", TenantStatus::Active, limits));
    let globex = store.create_tenant("globex", TenantLimits::default()).unwrap();
    assert_ne!(acme.id, globex.id);

    assert_eq!(store.get_tenant(acme.id).unwrap(), acme);
    assert_eq!(store.tenant_by_name("ACME").unwrap(), acme);
    assert_eq!(store.list_tenants().unwrap(), vec![acme.clone(), globex.clone()]);

    let new_limits = TenantLimits { max_input_bytes: Some(1 << 20), ..TenantLimits::default() };
    let updated = store.update_limits(acme.id, new_limits).unwrap();
    assert_eq!(updated.limits, new_limits);
    assert_eq!(store.get_tenant(acme.id).unwrap().limits, new_limits);
    assert_eq!(updated.created_at, acme.created_at);

    let missing = TenantId::new(999);
    assert!(matches!(store.get_tenant(missing), Err(StoreError::NotFound(Missing::Tenant(id))) if id == missing));
    assert!(matches!(store.update_limits(missing, limits), Err(StoreError::NotFound(_))));
    assert!(matches!(store.set_status(missing, TenantStatus::Suspended), Err(StoreError::NotFound(_))));
    assert!(matches!(store.create_key(missing, "x"), Err(StoreError::NotFound(_))));
    assert!(matches!(store.list_keys(missing), Err(StoreError::NotFound(_))));
    assert!(matches!(store.tenant_by_name("initech"), Err(StoreError::NotFound(Missing::TenantNamed(_)))));
    // Ids and versions from a URL can be anything a u64 holds; absurd ones are just not there.
    assert!(matches!(store.get_tenant(TenantId::new(u64::MAX)), Err(StoreError::NotFound(_))));
    assert!(matches!(store.list_keys(TenantId::new(u64::MAX)), Err(StoreError::NotFound(_))));
    assert!(store.changes_since(u64::MAX).unwrap().is_empty());
}

#[test]
fn tenant_names_are_unique_ignoring_case() {
    let store = store();
    store.create_tenant("acme", TenantLimits::default()).unwrap();
    let version = store.version().unwrap();
    for dup in ["acme", "ACME", "Acme"] {
        assert!(
            matches!(store.create_tenant(dup, TenantLimits::default()), Err(StoreError::Conflict(name)) if name == dup)
        );
    }
    // A refused mutation leaves no change behind.
    assert_eq!(store.version().unwrap(), version);
    assert_eq!(store.list_tenants().unwrap().len(), 1);
}

#[test]
fn invalid_input_is_refused_before_anything_is_written() {
    let store = store();
    for name in ["", "has space", "ünï", "a/b", &"x".repeat(65)] {
        assert!(matches!(store.create_tenant(name, TenantLimits::default()), Err(StoreError::Invalid(_))), "{name:?}");
    }
    let bad_limits = [
        TenantLimits { rate_per_sec: Some(0.0), ..TenantLimits::default() },
        TenantLimits { rate_per_sec: Some(f64::NAN), ..TenantLimits::default() },
        TenantLimits { rate_per_sec: Some(f64::INFINITY), ..TenantLimits::default() },
        TenantLimits { burst: Some(0), ..TenantLimits::default() },
        TenantLimits { max_input_bytes: Some(0), ..TenantLimits::default() },
        TenantLimits { max_input_pixels: Some(u64::MAX), ..TenantLimits::default() },
    ];
    for limits in bad_limits {
        assert!(matches!(store.create_tenant("acme", limits), Err(StoreError::Invalid(_))), "{limits:?}");
    }
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    for limits in bad_limits {
        assert!(matches!(store.update_limits(acme.id, limits), Err(StoreError::Invalid(_))), "{limits:?}");
    }
    for label in ["", "tab\there", &"l".repeat(101)] {
        assert!(matches!(store.create_key(acme.id, label), Err(StoreError::Invalid(_))), "{label:?}");
    }
    assert_eq!(store.version().unwrap(), 1);
}

#[test]
fn keys_are_issued_once_listed_and_revoked() {
    let store = store();
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let globex = store.create_tenant("globex", TenantLimits::default()).unwrap();

    let (ci, ci_token) = store.create_key(acme.id, "ci").unwrap();
    let (prod, _) = store.create_key(acme.id, "production ✓").unwrap();
    let (other, _) = store.create_key(globex.id, "ci").unwrap();
    assert_eq!(parse_key(&ci_token).unwrap().key_id(), ci.id);
    assert_eq!((ci.tenant, ci.label.as_str(), ci.revoked_at), (acme.id, "ci", None));

    assert_eq!(store.list_keys(acme.id).unwrap(), vec![ci.clone(), prod.clone()]);
    assert_eq!(store.list_keys(globex.id).unwrap(), vec![other]);
    assert_eq!(store.get_key(ci.id).unwrap(), ci);

    let revoked = store.revoke_key(ci.id).unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.get_key(ci.id).unwrap(), revoked);
    let version = store.version().unwrap();
    // Revoking again changes nothing: same timestamp, no new change.
    assert_eq!(store.revoke_key(ci.id).unwrap(), revoked);
    assert_eq!(store.version().unwrap(), version);
    assert_eq!(store.list_keys(acme.id).unwrap(), vec![revoked, prod]);

    let unknown: KeyId = "ZZZZZZZZZZZZ".parse().unwrap();
    assert!(matches!(store.revoke_key(unknown), Err(StoreError::NotFound(Missing::Key(id))) if id == unknown));
    assert!(matches!(store.get_key(unknown), Err(StoreError::NotFound(_))));
}

#[test]
fn suspension_round_trips_and_repeats_are_no_ops() {
    let store = store();
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let suspended = store.set_status(acme.id, TenantStatus::Suspended).unwrap();
    assert_eq!(suspended.status, TenantStatus::Suspended);
    assert_eq!(store.get_tenant(acme.id).unwrap().status, TenantStatus::Suspended);
    let version = store.version().unwrap();
    store.set_status(acme.id, TenantStatus::Suspended).unwrap();
    store.update_limits(acme.id, acme.limits).unwrap();
    assert_eq!(store.version().unwrap(), version);
    assert_eq!(store.set_status(acme.id, TenantStatus::Active).unwrap().status, TenantStatus::Active);
    assert_eq!(store.version().unwrap(), version + 1);
}

#[test]
fn every_mutation_appends_one_change_with_the_next_version() {
    let store = store();
    assert_eq!(store.version().unwrap(), 0);
    assert!(store.changes_since(0).unwrap().is_empty());

    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let (key, token) = store.create_key(acme.id, "ci").unwrap();
    let limits = TenantLimits { burst: Some(9), ..TenantLimits::default() };
    store.update_limits(acme.id, limits).unwrap();
    store.set_status(acme.id, TenantStatus::Suspended).unwrap();
    store.revoke_key(key.id).unwrap();

    let changes = store.changes_since(0).unwrap();
    let versions: Vec<u64> = changes.iter().map(|c| c.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(store.version().unwrap(), 5);

    let hash = parse_key(&token).unwrap().secret_hash();
    match &changes[..] {
        [c1, c2, c3, c4, c5] => {
            assert!(matches!(&c1.kind, ChangeKind::Tenant(t) if t.id == acme.id && t.status == TenantStatus::Active));
            assert!(matches!(&c2.kind, ChangeKind::Credential(c)
                if c.key == key.id && c.secret_hash == hash && !c.revoked && c.tenant.id == acme.id));
            assert!(matches!(&c3.kind, ChangeKind::Tenant(t) if t.limits == limits));
            assert!(matches!(&c4.kind, ChangeKind::Tenant(t) if t.status == TenantStatus::Suspended));
            // A key's change carries its tenant's state as of that version.
            assert!(matches!(&c5.kind, ChangeKind::Credential(c)
                if c.revoked && c.tenant.status == TenantStatus::Suspended && c.tenant.limits == limits));
        }
        other => panic!("expected five changes, got {other:?}"),
    }
    assert_eq!(store.changes_since(3).unwrap(), changes[3..].to_vec());
    assert!(store.changes_since(5).unwrap().is_empty());
    assert!(store.changes_since(50).unwrap().is_empty());
}

#[test]
fn snapshot_holds_every_credential_at_its_version() {
    let store = store();
    assert_eq!(store.snapshot().unwrap().version, 0);
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let (a, _) = store.create_key(acme.id, "a").unwrap();
    let (b, _) = store.create_key(acme.id, "b").unwrap();
    store.revoke_key(a.id).unwrap();
    store.set_status(acme.id, TenantStatus::Suspended).unwrap();

    let snapshot = store.snapshot().unwrap();
    assert_eq!(snapshot.version, 5);
    let mut ids = vec![a.id, b.id];
    ids.sort();
    assert_eq!(snapshot.credentials.iter().map(|c| c.key).collect::<Vec<_>>(), ids);
    for c in &snapshot.credentials {
        assert_eq!(c.revoked, c.key == a.id);
        assert_eq!(c.tenant.status, TenantStatus::Suspended);
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
    first.set_status(acme.id, TenantStatus::Suspended).unwrap();
    assert!(matches!(second.create_tenant("ACME", TenantLimits::default()), Err(StoreError::Conflict(_))));
    let versions: Vec<u64> = second.changes_since(0).unwrap().iter().map(|c| c.version).collect();
    assert_eq!(versions, [1, 2, 3]);
}
