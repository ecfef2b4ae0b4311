//! The store's behaviours, written once against the [`Store`] trait and run on each backend
//! (`tests/store.rs`: SQLite, `tests/pg.rs`: PostgreSQL): CRUD, case-insensitive uniqueness,
//! input rules, revocation, suspension, the outbox each mutation writes, and snapshots. Both
//! stores must accept, refuse and record exactly alike; what only one backend has (a database
//! file, a server that goes away) stays in that backend's file.
//!
//! A backend file declares `#[macro_use] mod scenarios;` and calls `store_scenarios!(with_store)`,
//! where `with_store(name, scenario)` runs `scenario` on a fresh, empty store: one `#[test]` per
//! scenario, named as the scenario.

use identity::{
    parse_key, ChangeKind, CredentialCache, KeyId, Missing, Snapshot, Store, StoreError, TenantId, TenantLimits,
    TenantState, TenantStatus,
};

/// One `#[test]` per scenario below, each on a fresh store from `$with_store`. A scenario missing
/// from this list is dead code, which the lints refuse.
macro_rules! store_scenarios {
    ($with_store:path) => {
        store_scenarios!(@each $with_store;
            tenants_are_created_read_listed_and_updated,
            tenant_names_are_unique_ignoring_case,
            invalid_input_is_refused_before_anything_is_written,
            keys_are_issued_once_listed_and_revoked,
            suspension_round_trips_and_repeats_are_no_ops,
            every_mutation_appends_one_change_with_the_next_version,
            snapshot_holds_every_credential_at_its_version,
        );
    };
    (@each $with_store:path; $($scenario:ident,)*) => {
        $(
            #[test]
            fn $scenario() {
                $with_store(stringify!($scenario), scenarios::$scenario);
            }
        )*
    };
}

/// A scenario: runs against an empty store and panics on the first difference.
pub type Scenario = fn(&dyn Store);

/// The versions in the outbox, in order.
pub fn versions(store: &dyn Store) -> Vec<u64> {
    store.changes_since(0).unwrap().iter().map(|c| c.version).collect()
}

/// The state a cache reaches from the outbox alone must be the store's snapshot.
pub fn assert_outbox_matches_tables(store: &dyn Store) {
    let cache = CredentialCache::new();
    assert!(cache.apply_snapshot(Snapshot::default()));
    cache.apply_changes(store.changes_since(0).unwrap()).expect("no gap in the outbox");
    assert_eq!(cache.to_snapshot(), store.snapshot().unwrap());
}

pub fn tenants_are_created_read_listed_and_updated(store: &dyn Store) {
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

    // Extreme limits survive the signed columns, in the table and in the outbox.
    let big = TenantLimits {
        rate_per_sec: Some(0.5),
        burst: Some(u32::MAX),
        max_input_bytes: Some(identity::MAX_INPUT_BYTES_CEILING),
        max_input_pixels: Some(1),
    };
    let initech = store.create_tenant("initech", big).unwrap();
    assert_eq!(store.get_tenant(initech.id).unwrap().limits, big);
    let state = TenantState { id: initech.id, status: TenantStatus::Active, limits: big };
    assert_eq!(store.changes_since(0).unwrap().last().unwrap().kind, ChangeKind::Tenant(state));
}

pub fn tenant_names_are_unique_ignoring_case(store: &dyn Store) {
    store.create_tenant("acme", TenantLimits::default()).unwrap();
    let version = store.version().unwrap();
    for dup in ["acme", "ACME", "Acme"] {
        assert!(
            matches!(store.create_tenant(dup, TenantLimits::default()), Err(StoreError::Conflict(name)) if name == dup)
        );
    }
    // A refused mutation leaves no change behind, and the store goes on.
    assert_eq!(store.version().unwrap(), version);
    assert_eq!(store.list_tenants().unwrap().len(), 1);
    // Only ASCII letters fold (SQLite's NOCASE; PostgreSQL's lower() under the C collation): the
    // Kelvin sign is not a K.
    assert!(matches!(store.tenant_by_name("\u{212A}"), Err(StoreError::NotFound(_))));
}

pub fn invalid_input_is_refused_before_anything_is_written(store: &dyn Store) {
    for name in ["", "has space", "ünï", "a/b", &"x".repeat(65), "123", ".", ".."] {
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

    // The edges of the rules are names like any other.
    for name in ["ok.name-1_2", &"y".repeat(64)] {
        store.create_tenant(name, TenantLimits::default()).unwrap_or_else(|e| panic!("{name:?}: {e}"));
    }
    assert_eq!(store.version().unwrap(), 3, "acme and the two edge names only");
}

pub fn keys_are_issued_once_listed_and_revoked(store: &dyn Store) {
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

pub fn suspension_round_trips_and_repeats_are_no_ops(store: &dyn Store) {
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

pub fn every_mutation_appends_one_change_with_the_next_version(store: &dyn Store) {
    assert_eq!(store.version().unwrap(), 0);
    assert!(store.changes_since(0).unwrap().is_empty());
    assert_eq!(store.snapshot().unwrap(), Snapshot::default());

    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let (key, token) = store.create_key(acme.id, "ci").unwrap();
    let limits = TenantLimits { burst: Some(9), ..TenantLimits::default() };
    store.update_limits(acme.id, limits).unwrap();
    store.set_status(acme.id, TenantStatus::Suspended).unwrap();
    // Repeats are no-ops: no change.
    store.set_status(acme.id, TenantStatus::Suspended).unwrap();
    store.update_limits(acme.id, limits).unwrap();
    store.revoke_key(key.id).unwrap();

    let changes = store.changes_since(0).unwrap();
    assert_eq!(versions(store), [1, 2, 3, 4, 5]);
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
    assert_outbox_matches_tables(store);
}

pub fn snapshot_holds_every_credential_at_its_version(store: &dyn Store) {
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
    assert_outbox_matches_tables(store);
}
