//! The store's behaviours, written once against the [`Store`] trait and run on each backend
//! (`tests/store.rs`: SQLite, `tests/pg.rs`: PostgreSQL): CRUD, case-insensitive uniqueness,
//! input rules, revocation, suspension, key expiry and rotation, the outbox each mutation writes,
//! snapshots, and the admin log. Both
//! stores must accept, refuse and record exactly alike; what only one backend has (a database
//! file, a server that goes away) stays in that backend's file.
//!
//! A backend file declares `#[macro_use] mod scenarios;` and calls `store_scenarios!(with_store)`,
//! where `with_store(name, scenario)` runs `scenario` on a fresh, empty store: one `#[test]` per
//! scenario, named as the scenario.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use identity::{
    parse_key, Actor, AdminAction, AuthError, ChangeKind, Credential, CredentialCache, KeyId, KeyPurpose, Missing,
    Snapshot, Store, StoreError, TenantId, TenantLimits, TenantState, TenantStatus,
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
            a_signing_keys_purpose_is_kept_travels_and_survives_rotation,
            suspension_round_trips_and_repeats_are_no_ops,
            every_mutation_appends_one_change_with_the_next_version,
            snapshot_holds_every_credential_at_its_version,
            a_key_expiry_is_kept_and_travels_with_the_key,
            rotation_issues_a_new_key_and_ends_the_old_one_together,
            a_revoked_or_expired_key_cannot_be_rotated,
            the_admin_log_names_who_did_what_to_which_and_how_it_ended,
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

/// An operator, as the admin API names the one whose token made a request.
pub fn alice() -> Actor {
    Actor { operator: "alice".into(), request_id: "req-1".into() }
}

/// Whole milliseconds: what the stores keep of a time.
fn ms(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis()
}

/// The last change, which must be a key's: its credential.
fn last_credential(store: &dyn Store) -> Credential {
    match store.changes_since(0).unwrap().pop().map(|c| c.kind) {
        Some(ChangeKind::Credential(c)) => c,
        other => panic!("expected a key change last, got {other:?}"),
    }
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
    let acme = store.create_tenant("acme", limits.clone()).unwrap();
    assert_eq!((acme.name.as_str(), acme.status, &acme.limits), ("acme", TenantStatus::Active, &limits));
    let globex = store.create_tenant("globex", TenantLimits::default()).unwrap();
    assert_ne!(acme.id, globex.id);

    assert_eq!(store.get_tenant(acme.id).unwrap(), acme);
    assert_eq!(store.tenant_by_name("ACME").unwrap(), acme);
    assert_eq!(store.list_tenants().unwrap(), vec![acme.clone(), globex.clone()]);

    let new_limits = TenantLimits { max_input_bytes: Some(1 << 20), ..TenantLimits::default() };
    let updated = store.update_limits(&alice(), acme.id, new_limits.clone()).unwrap();
    assert_eq!(updated.limits, new_limits);
    assert_eq!(store.get_tenant(acme.id).unwrap().limits, new_limits);
    assert_eq!(updated.created_at, acme.created_at);

    let missing = TenantId::new(999);
    assert!(matches!(store.get_tenant(missing), Err(StoreError::NotFound(Missing::Tenant(id))) if id == missing));
    assert!(matches!(store.update_limits(&alice(), missing, limits), Err(StoreError::NotFound(_))));
    assert!(matches!(store.set_status(&alice(), missing, TenantStatus::Suspended), Err(StoreError::NotFound(_))));
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
        quota: Some(identity::Quota {
            period: identity::QuotaPeriod::Rolling { seconds: identity::MAX_ROLLING_SECONDS },
            requests: Some(i64::MAX as u64),
            input_bytes: Some(0),
            output_pixels: None,
            cpu_us: Some(1),
            soft_percent: 100,
        }),
        sources: Some("images.example.com *.cdn.example.com http://intranet:8080/x/".parse().unwrap()),
        cache_max_age_secs: Some(identity::MAX_CACHE_MAX_AGE_SECS),
    };
    let initech = store.create_tenant("initech", big.clone()).unwrap();
    assert_eq!(store.get_tenant(initech.id).unwrap().limits, big);
    let state = TenantState { id: initech.id, status: TenantStatus::Active, limits: big };
    assert_eq!(store.changes_since(0).unwrap().last().unwrap().kind, ChangeKind::Tenant(state));

    // A quota is set, replaced and cleared like any limit, and travels in the outbox.
    let month = identity::Quota { requests: Some(100_000), ..identity::Quota::unlimited(identity::QuotaPeriod::Month) };
    let with_quota = TenantLimits { quota: Some(month), ..new_limits.clone() };
    assert_eq!(store.update_limits(&alice(), acme.id, with_quota.clone()).unwrap().limits, with_quota);
    assert_eq!(store.get_tenant(acme.id).unwrap().limits.quota, Some(month));
    let state = TenantState { id: acme.id, status: TenantStatus::Active, limits: with_quota };
    assert_eq!(store.changes_since(0).unwrap().last().unwrap().kind, ChangeKind::Tenant(state));
    assert_eq!(store.update_limits(&alice(), acme.id, new_limits).unwrap().limits.quota, None);
}

pub fn tenant_names_are_unique_ignoring_case(store: &dyn Store) {
    store.create_tenant("acme", TenantLimits::default()).unwrap();
    let version = store.version().unwrap();
    for dup in ["acme", "ACME", "Acme"] {
        // (Each refusal is logged, in the admin log; the outbox stays as it was.)
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
        TenantLimits {
            quota: Some(identity::Quota {
                requests: Some(u64::MAX),
                ..identity::Quota::unlimited(identity::QuotaPeriod::Month)
            }),
            ..TenantLimits::default()
        },
        TenantLimits {
            quota: Some(identity::Quota::unlimited(identity::QuotaPeriod::Rolling { seconds: 0 })),
            ..TenantLimits::default()
        },
    ];
    for limits in bad_limits.clone() {
        assert!(matches!(store.create_tenant("acme", limits.clone()), Err(StoreError::Invalid(_))), "{limits:?}");
    }
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    for limits in bad_limits {
        assert!(
            matches!(store.update_limits(&alice(), acme.id, limits.clone()), Err(StoreError::Invalid(_))),
            "{limits:?}"
        );
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

    let revoked = store.revoke_key(&alice(), ci.id).unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.get_key(ci.id).unwrap(), revoked);
    let version = store.version().unwrap();
    // Revoking again changes nothing: same timestamp, no new change.
    assert_eq!(store.revoke_key(&alice(), ci.id).unwrap(), revoked);
    assert_eq!(store.version().unwrap(), version);
    assert_eq!(store.list_keys(acme.id).unwrap(), vec![revoked, prod]);

    let unknown: KeyId = "ZZZZZZZZZZZZ".parse().unwrap();
    assert!(
        matches!(store.revoke_key(&alice(), unknown), Err(StoreError::NotFound(Missing::Key(id))) if id == unknown)
    );
    assert!(matches!(store.get_key(unknown), Err(StoreError::NotFound(_))));
}

pub fn a_signing_keys_purpose_is_kept_travels_and_survives_rotation(store: &dyn Store) {
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let (api, _) = store.create_key(acme.id, "backend").unwrap();
    let (signing, token) = store.create_key_as(&alice(), acme.id, "pages", None, KeyPurpose::Signing).unwrap();
    assert_eq!((api.purpose, signing.purpose), (KeyPurpose::Api, KeyPurpose::Signing));
    assert_eq!(store.get_key(signing.id).unwrap(), signing);
    assert_eq!(last_credential(store).purpose, KeyPurpose::Signing);
    let cache = CredentialCache::new();
    cache.apply_snapshot(store.snapshot().unwrap());
    assert_eq!(cache.authenticate(&token), Err(AuthError::SigningKey), "a signing key authenticates nothing");
    assert_eq!(cache.signing_key_at(signing.id, SystemTime::now()).map(|a| a.tenant()), Ok(acme.id));
    assert_eq!(cache.signing_key_at(api.id, SystemTime::now()), Err(AuthError::UnknownKey));

    let rotation = store.rotate_key(&alice(), signing.id, Duration::from_secs(60), None).unwrap();
    assert_eq!(rotation.new.purpose, KeyPurpose::Signing, "a rotation keeps what the key is for");
    let revoked = store.revoke_key(&alice(), rotation.new.id).unwrap();
    assert_eq!(revoked.purpose, KeyPurpose::Signing);
    let fed = CredentialCache::new();
    fed.apply_snapshot(Snapshot::default());
    fed.apply_changes(store.changes_since(0).unwrap()).unwrap();
    assert_eq!(fed.signing_key_at(rotation.new.id, SystemTime::now()), Err(AuthError::Revoked));
    assert_eq!(fed.to_snapshot().credentials, store.snapshot().unwrap().credentials);
}

pub fn suspension_round_trips_and_repeats_are_no_ops(store: &dyn Store) {
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let suspended = store.set_status(&alice(), acme.id, TenantStatus::Suspended).unwrap();
    assert_eq!(suspended.status, TenantStatus::Suspended);
    assert_eq!(store.get_tenant(acme.id).unwrap().status, TenantStatus::Suspended);
    let version = store.version().unwrap();
    store.set_status(&alice(), acme.id, TenantStatus::Suspended).unwrap();
    store.update_limits(&alice(), acme.id, acme.limits).unwrap();
    assert_eq!(store.version().unwrap(), version);
    assert_eq!(store.set_status(&alice(), acme.id, TenantStatus::Active).unwrap().status, TenantStatus::Active);
    assert_eq!(store.version().unwrap(), version + 1);
}

pub fn every_mutation_appends_one_change_with_the_next_version(store: &dyn Store) {
    assert_eq!(store.version().unwrap(), 0);
    assert!(store.changes_since(0).unwrap().is_empty());
    assert_eq!(store.snapshot().unwrap(), Snapshot::default());

    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let (key, token) = store.create_key(acme.id, "ci").unwrap();
    let limits = TenantLimits { burst: Some(9), ..TenantLimits::default() };
    store.update_limits(&alice(), acme.id, limits.clone()).unwrap();
    store.set_status(&alice(), acme.id, TenantStatus::Suspended).unwrap();
    // Repeats are no-ops: no change.
    store.set_status(&alice(), acme.id, TenantStatus::Suspended).unwrap();
    store.update_limits(&alice(), acme.id, limits.clone()).unwrap();
    store.revoke_key(&alice(), key.id).unwrap();

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
    store.revoke_key(&alice(), a.id).unwrap();
    store.set_status(&alice(), acme.id, TenantStatus::Suspended).unwrap();

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

pub fn a_key_expiry_is_kept_and_travels_with_the_key(store: &dyn Store) {
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    // Sub-millisecond parts are dropped: the stores keep milliseconds.
    let asked = SystemTime::now() + Duration::from_secs(3600) + Duration::from_micros(1500);
    let end = UNIX_EPOCH + Duration::from_millis(ms(asked) as u64);
    let (key, token) = store.create_key_as(&alice(), acme.id, "ci", Some(asked), KeyPurpose::Api).unwrap();
    assert_eq!(key.expires_at, Some(end));
    assert_eq!(store.get_key(key.id).unwrap(), key);
    assert_eq!(store.list_keys(acme.id).unwrap(), vec![key.clone()]);
    let (lasting, _) = store.create_key_as(&alice(), acme.id, "forever", None, KeyPurpose::Api).unwrap();
    assert_eq!(lasting.expires_at, None);

    // In the outbox and in the snapshot alike, so every cache learns it however it is fed.
    assert!(
        matches!(&store.changes_since(1).unwrap()[0].kind, ChangeKind::Credential(c) if c.key == key.id && c.expires_at == Some(end))
    );
    let snapshot = store.snapshot().unwrap();
    let found = snapshot.credentials.iter().find(|c| c.key == key.id).unwrap();
    assert_eq!(found.expires_at, Some(end));
    assert_outbox_matches_tables(store);
    let cache = CredentialCache::new();
    cache.apply_snapshot(snapshot);
    assert!(cache.authenticate(&token).is_ok());
    assert_eq!(cache.authenticate_at(&token, end), Err(AuthError::Expired));

    // Revocation keeps the expiry in the change it writes.
    store.revoke_key(&alice(), key.id).unwrap();
    assert_eq!(last_credential(store).expires_at, Some(end));

    // An expiry in the past, now, or beyond a century is refused, and nothing is written.
    let version = store.version().unwrap();
    let now = SystemTime::now();
    for bad in [now - Duration::from_secs(1), UNIX_EPOCH, now + identity::MAX_KEY_LIFETIME + Duration::from_secs(60)] {
        let refused = store.create_key_as(&alice(), acme.id, "late", Some(bad), KeyPurpose::Api);
        assert!(matches!(refused, Err(StoreError::Invalid(_))), "{refused:?}");
    }
    assert_eq!(store.version().unwrap(), version);
    assert_eq!(store.list_keys(acme.id).unwrap().len(), 2);
}

pub fn rotation_issues_a_new_key_and_ends_the_old_one_together(store: &dyn Store) {
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let (old, old_token) = store.create_key(acme.id, "production").unwrap();
    let version = store.version().unwrap();
    let before = SystemTime::now();
    let rotation = store.rotate_key(&alice(), old.id, Duration::from_secs(86_400), None).unwrap();
    let after = SystemTime::now();

    let (new, token) = (&rotation.new, &rotation.token);
    assert_eq!(parse_key(token).unwrap().key_id(), new.id);
    assert_ne!(new.id, old.id);
    assert_eq!((new.tenant, new.label.as_str(), new.expires_at, new.revoked_at), (acme.id, "production", None, None));
    let old_end = rotation.old.expires_at.expect("the old key now expires");
    let day = Duration::from_secs(86_400);
    assert!(ms(before + day) <= ms(old_end) && ms(old_end) <= ms(after + day), "{old_end:?}");
    assert_eq!(rotation.old, store.get_key(old.id).unwrap());
    assert_eq!(store.list_keys(acme.id).unwrap(), vec![rotation.old.clone(), new.clone()]);

    // Two changes: the old key with its end, then the new key.
    let changes = store.changes_since(version).unwrap();
    assert_eq!(changes.iter().map(|c| c.version).collect::<Vec<_>>(), [version + 1, version + 2]);
    assert!(
        matches!(&changes[0].kind, ChangeKind::Credential(c) if c.key == old.id && c.expires_at == Some(old_end) && !c.revoked)
    );
    assert!(matches!(&changes[1].kind, ChangeKind::Credential(c) if c.key == new.id && c.expires_at.is_none()));
    assert_outbox_matches_tables(store);
    let cache = CredentialCache::new();
    cache.apply_snapshot(store.snapshot().unwrap());
    assert!(cache.authenticate(&old_token).is_ok(), "the old key works during the grace");
    assert_eq!(cache.authenticate_at(&old_token, old_end), Err(AuthError::Expired));
    assert!(cache.authenticate_at(token, old_end + day).is_ok());

    // Rotating again never lengthens the old key's life; the new key may be given an expiry.
    let new_end = SystemTime::now() + Duration::from_secs(7 * 86_400);
    let again = store.rotate_key(&alice(), old.id, Duration::from_secs(30 * 86_400), Some(new_end)).unwrap();
    assert_eq!(again.old.expires_at, Some(old_end));
    assert_eq!(again.new.expires_at.map(ms), Some(ms(new_end)));
    // A shorter grace shortens it.
    let shorter = store.rotate_key(&alice(), old.id, Duration::from_secs(60), None).unwrap();
    assert!(shorter.old.expires_at.unwrap() < old_end);

    // A bad expiry for the new key refuses the whole rotation: the old key is untouched.
    let version = store.version().unwrap();
    let refused = store.rotate_key(&alice(), new.id, day, Some(SystemTime::now() - day));
    assert!(matches!(refused, Err(StoreError::Invalid(_))), "{refused:?}");
    let refused = store.rotate_key(&alice(), new.id, identity::MAX_KEY_LIFETIME + day, None);
    assert!(matches!(refused, Err(StoreError::Invalid(_))), "{refused:?}");
    assert_eq!(store.version().unwrap(), version);
    assert_eq!(store.get_key(new.id).unwrap().expires_at, None);
    assert_eq!(store.list_keys(acme.id).unwrap().len(), 4);
}

pub fn a_revoked_or_expired_key_cannot_be_rotated(store: &dyn Store) {
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let (revoked, _) = store.create_key(acme.id, "old").unwrap();
    store.revoke_key(&alice(), revoked.id).unwrap();
    let version = store.version().unwrap();
    let day = Duration::from_secs(86_400);
    let refused = store.rotate_key(&alice(), revoked.id, day, None);
    assert!(matches!(refused, Err(StoreError::KeyRevoked(id)) if id == revoked.id), "{refused:?}");
    let message = refused.unwrap_err().to_string();
    assert!(message.contains("revoked") && message.contains(revoked.id.as_str()), "{message}");

    // A grace of zero ends the old key at once; after that it is expired, and refused too.
    let (ending, _) = store.create_key(acme.id, "ending").unwrap();
    let ended = store.rotate_key(&alice(), ending.id, Duration::ZERO, None).unwrap();
    assert!(ended.old.expires_at.unwrap() <= SystemTime::now());
    let version_after = store.version().unwrap();
    let refused = store.rotate_key(&alice(), ending.id, day, None);
    assert!(matches!(refused, Err(StoreError::KeyExpired(id)) if id == ending.id), "{refused:?}");
    assert_eq!(store.version().unwrap(), version_after);

    let unknown: KeyId = "ZZZZZZZZZZZZ".parse().unwrap();
    assert!(matches!(store.rotate_key(&alice(), unknown, day, None), Err(StoreError::NotFound(Missing::Key(_)))));
    // Refusals write nothing but their log rows: no key, no change.
    assert_eq!(store.version().unwrap(), version + 3, "the `ending` key and its rotation only");
    assert_eq!(store.list_keys(acme.id).unwrap().len(), 3);
}

pub fn the_admin_log_names_who_did_what_to_which_and_how_it_ended(store: &dyn Store) {
    assert!(store.admin_log(None, 10).unwrap().is_empty());
    let bob = Actor { operator: "bob@ops".into(), request_id: "req-2".into() };
    let acme = store.create_tenant_as(&alice(), "acme", TenantLimits::default()).unwrap();
    let limits = TenantLimits { burst: Some(9), ..TenantLimits::default() };
    store.update_limits(&bob, acme.id, limits).unwrap();
    store.set_status(&alice(), acme.id, TenantStatus::Suspended).unwrap();
    let (key, token) = store.create_key_as(&bob, acme.id, "ci", None, KeyPurpose::Api).unwrap();
    let rotation = store.rotate_key(&alice(), key.id, Duration::from_secs(60), None).unwrap();
    store.revoke_key(&bob, rotation.new.id).unwrap();
    // Refusals are logged with what refused them; a process's own write with its own name.
    assert!(store.create_tenant_as(&bob, "ACME", TenantLimits::default()).is_err());
    assert!(store.rotate_key(&alice(), rotation.new.id, Duration::from_secs(60), None).is_err());
    let missing = TenantId::new(999);
    assert!(store.create_key_as(&bob, missing, "x", None, KeyPurpose::Api).is_err());
    store.create_tenant("demo", TenantLimits::default()).unwrap();

    let log = store.admin_log(None, 100).unwrap();
    type Row<'a> = (&'a str, &'a str, AdminAction, Option<TenantId>, Option<KeyId>, &'a str);
    let rows: Vec<Row> = log
        .iter()
        .map(|r| (r.operator.as_str(), r.request_id.as_str(), r.action, r.tenant, r.key, r.outcome.as_str()))
        .collect();
    let demo = store.tenant_by_name("demo").unwrap().id;
    assert_eq!(
        rows,
        vec![
            ("(resizer)", "", AdminAction::CreateTenant, Some(demo), None, "ok"),
            ("bob@ops", "req-2", AdminAction::CreateKey, Some(missing), None, "not-found"),
            ("alice", "req-1", AdminAction::RotateKey, None, Some(rotation.new.id), "key-revoked"),
            ("bob@ops", "req-2", AdminAction::CreateTenant, None, None, "conflict"),
            ("bob@ops", "req-2", AdminAction::RevokeKey, Some(acme.id), Some(rotation.new.id), "ok"),
            ("alice", "req-1", AdminAction::RotateKey, Some(acme.id), Some(key.id), "ok"),
            ("bob@ops", "req-2", AdminAction::CreateKey, Some(acme.id), Some(key.id), "ok"),
            ("alice", "req-1", AdminAction::SetStatus, Some(acme.id), None, "ok"),
            ("bob@ops", "req-2", AdminAction::UpdateLimits, Some(acme.id), None, "ok"),
            ("alice", "req-1", AdminAction::CreateTenant, Some(acme.id), None, "ok"),
        ]
    );
    // Newest first, ids increasing in commit order, times in order.
    assert!(log.windows(2).all(|w| w[0].id > w[1].id && w[0].at >= w[1].at));
    // The details say what was asked, never a secret.
    assert!(log[5].detail.contains(rotation.new.id.as_str()), "{}", log[5].detail);
    assert!(log[8].detail.contains("burst=9"), "{}", log[8].detail);
    assert!(log[3].detail.contains("already exists"), "{}", log[3].detail);
    let secrets = [token.as_str(), rotation.token.as_str()].map(|t| t.split('_').nth(2).unwrap().to_owned());
    for r in &log {
        for secret in &secrets {
            assert!(!r.detail.contains(secret.as_str()), "a secret in the log: {r:?}");
        }
    }

    // Pages: `before` the last id seen.
    let first = store.admin_log(None, 4).unwrap();
    assert_eq!(first, log[..4].to_vec());
    let second = store.admin_log(Some(first[3].id), 4).unwrap();
    assert_eq!(second, log[4..8].to_vec());
    let last = store.admin_log(Some(second[3].id), 4).unwrap();
    assert_eq!(last, log[8..].to_vec());
    assert!(store.admin_log(Some(log[9].id), 4).unwrap().is_empty());
    assert!(store.admin_log(Some(u64::MAX), 0).unwrap().is_empty());

    // An absurd id from a URL is refused and logged without making the log unreadable.
    let absurd = TenantId::new(u64::MAX);
    assert!(matches!(store.create_key_as(&bob, absurd, "x", None, KeyPurpose::Api), Err(StoreError::NotFound(_))));
    assert!(matches!(store.set_status(&bob, absurd, TenantStatus::Suspended), Err(StoreError::NotFound(_))));
    let newest = store.admin_log(None, 2).unwrap();
    assert_eq!(
        newest.iter().map(|r| (r.action, r.tenant)).collect::<Vec<_>>(),
        [(AdminAction::SetStatus, None), (AdminAction::CreateKey, None)]
    );
}
