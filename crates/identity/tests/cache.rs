//! The credential cache fed from the store: the snapshot-then-changes path, gaps, replays, every
//! authentication outcome, and readers racing the updates.

use std::sync::atomic::{AtomicBool, Ordering};

use identity::{
    feed, Actor, AuthError, CacheError, CredentialCache, Fed, IdentityStore, KeyFormatError, TenantId, TenantLimits,
    TenantStatus,
};

struct Fixture {
    store: IdentityStore,
    tenant: TenantId,
}

/// A store with one tenant, `acme`.
fn fixture() -> Fixture {
    let store = IdentityStore::open_in_memory().unwrap();
    let tenant = store.create_tenant("acme", TenantLimits::default()).unwrap().id;
    Fixture { store, tenant }
}

/// A handful of mutations of every kind, so that the outbox has something to say.
fn churn(f: &Fixture, round: usize) -> Vec<String> {
    let other = f.store.create_tenant(&format!("other-{round}"), TenantLimits::default()).unwrap().id;
    let (a, token_a) = f.store.create_key(f.tenant, "a").unwrap();
    let (_, token_b) = f.store.create_key(other, "b").unwrap();
    let limits = TenantLimits { rate_per_sec: Some(round as f64 + 1.0), ..TenantLimits::default() };
    f.store.update_limits(&Actor::process(), f.tenant, limits).unwrap();
    f.store.set_status(&Actor::process(), other, TenantStatus::Suspended).unwrap();
    f.store.revoke_key(&Actor::process(), a.id).unwrap();
    vec![token_a, token_b]
}

#[test]
fn snapshot_then_changes_equals_a_fresh_snapshot() {
    let f = fixture();
    churn(&f, 0);
    let cache = CredentialCache::new();
    assert_eq!(feed(&f.store, &cache).unwrap(), Fed::Snapshot { version: 7 });
    assert_eq!(cache.to_snapshot(), f.store.snapshot().unwrap());

    churn(&f, 1);
    assert_eq!(feed(&f.store, &cache).unwrap(), Fed::Changes { applied: 6, version: 13 });
    assert_eq!(feed(&f.store, &cache).unwrap(), Fed::UpToDate { version: 13 });
    assert_eq!(cache.to_snapshot(), f.store.snapshot().unwrap());
    assert_eq!(cache.len(), 4);

    // A cache that only ever saw changes, from the first, ends in the same state.
    let from_changes = CredentialCache::new();
    assert_eq!(from_changes.apply_changes(f.store.changes_since(0).unwrap()), Ok(13));
    assert_eq!(from_changes.to_snapshot(), f.store.snapshot().unwrap());
}

#[test]
fn replayed_changes_are_ignored() {
    let f = fixture();
    churn(&f, 0);
    let cache = CredentialCache::new();
    feed(&f.store, &cache).unwrap();
    churn(&f, 1);
    let all = f.store.changes_since(0).unwrap();
    assert_eq!(cache.apply_changes(all.clone()), Ok(6));
    let settled = cache.to_snapshot();
    // Everything again, each one again, and the last one twice: nothing moves.
    assert_eq!(cache.apply_changes(all.clone()), Ok(0));
    for change in all.iter().cloned() {
        cache.apply_change(change).unwrap();
    }
    cache.apply_change(all.last().unwrap().clone()).unwrap();
    assert_eq!(cache.to_snapshot(), settled);
    assert_eq!(settled, f.store.snapshot().unwrap());
}

#[test]
fn a_missing_change_is_a_gap_and_the_changes_before_it_are_kept() {
    let f = fixture();
    let cache = CredentialCache::new();
    assert_eq!(feed(&f.store, &cache).unwrap(), Fed::Snapshot { version: 1 });
    churn(&f, 0);
    let mut changes = f.store.changes_since(cache.version()).unwrap();
    let skipped = changes.remove(1);
    assert_eq!(skipped.version, 3);
    assert_eq!(cache.apply_changes(changes), Err(CacheError::Gap { have: 2, got: 4 }));
    assert_eq!(cache.version(), 2);

    // The next ordered change is taken as usual; the rest follow.
    cache.apply_change(skipped).unwrap();
    assert_eq!(feed(&f.store, &cache).unwrap(), Fed::Changes { applied: 4, version: 7 });
    assert_eq!(cache.to_snapshot(), f.store.snapshot().unwrap());
}

#[test]
fn feed_answers_a_hole_in_the_outbox_with_a_snapshot() {
    let path = std::env::temp_dir().join(format!("identity-test-{}-hole.sqlite", std::process::id()));
    let remove = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    };
    remove();
    let store = IdentityStore::open(&path).unwrap();
    let tenant = store.create_tenant("acme", TenantLimits::default()).unwrap().id;
    let cache = CredentialCache::new();
    feed(&store, &cache).unwrap();
    let (key, token) = store.create_key(tenant, "a").unwrap();
    store.revoke_key(&Actor::process(), key.id).unwrap();
    // Nothing of ours deletes outbox rows; a hand-edited database can.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute("DELETE FROM changes WHERE version = 2", []).unwrap();
    drop(raw);

    assert_eq!(feed(&store, &cache).unwrap(), Fed::Snapshot { version: 3 });
    assert_eq!(cache.authenticate(&token), Err(AuthError::Revoked));
    assert_eq!(cache.to_snapshot(), store.snapshot().unwrap());
    drop(store);
    remove();
}

#[test]
fn every_authentication_outcome_end_to_end() {
    let f = fixture();
    let limits = TenantLimits { burst: Some(5), max_input_pixels: Some(1_000_000), ..TenantLimits::default() };
    f.store.update_limits(&Actor::process(), f.tenant, limits.clone()).unwrap();
    let (key, token) = f.store.create_key(f.tenant, "ci").unwrap();
    let (spare, spare_token) = f.store.create_key(f.tenant, "spare").unwrap();
    let cache = CredentialCache::new();
    feed(&f.store, &cache).unwrap();

    let ok = cache.authenticate(&token).unwrap();
    assert_eq!((ok.tenant(), ok.key(), ok.limits()), (f.tenant, key.id, &limits));

    assert_eq!(cache.authenticate("Bearer abc"), Err(AuthError::Malformed(KeyFormatError::Prefix)));
    assert_eq!(cache.authenticate(&token[..40]), Err(AuthError::Malformed(KeyFormatError::Length(40))));
    let mut typo = token.clone();
    let flipped = if typo.as_bytes()[30] == b'x' { "y" } else { "x" };
    typo.replace_range(30..31, flipped);
    assert_eq!(cache.authenticate(&typo), Err(AuthError::Malformed(KeyFormatError::Checksum)));

    // A key from another store (well-formed, unknown id) is unknown here.
    let elsewhere = IdentityStore::open_in_memory().unwrap();
    let t = elsewhere.create_tenant("acme", TenantLimits::default()).unwrap();
    let (_, foreign) = elsewhere.create_key(t.id, "x").unwrap();
    assert_eq!(cache.authenticate(&foreign), Err(AuthError::UnknownKey));

    f.store.set_status(&Actor::process(), f.tenant, TenantStatus::Suspended).unwrap();
    feed(&f.store, &cache).unwrap();
    assert_eq!(cache.authenticate(&token), Err(AuthError::TenantSuspended));
    f.store.set_status(&Actor::process(), f.tenant, TenantStatus::Active).unwrap();
    feed(&f.store, &cache).unwrap();
    assert!(cache.authenticate(&token).is_ok());

    f.store.revoke_key(&Actor::process(), key.id).unwrap();
    feed(&f.store, &cache).unwrap();
    assert_eq!(cache.authenticate(&token), Err(AuthError::Revoked));
    assert_eq!(cache.authenticate(&spare_token).unwrap().key(), spare.id);

    // Revoked wins over suspended: the key is dead whatever becomes of the tenant.
    f.store.set_status(&Actor::process(), f.tenant, TenantStatus::Suspended).unwrap();
    feed(&f.store, &cache).unwrap();
    assert_eq!(cache.authenticate(&token), Err(AuthError::Revoked));
    assert_eq!(cache.authenticate(&spare_token), Err(AuthError::TenantSuspended));
}

#[test]
fn a_key_created_for_a_suspended_tenant_is_refused_as_suspended() {
    let f = fixture();
    let cache = CredentialCache::new();
    feed(&f.store, &cache).unwrap();
    f.store.set_status(&Actor::process(), f.tenant, TenantStatus::Suspended).unwrap();
    let (_, token) = f.store.create_key(f.tenant, "late").unwrap();
    feed(&f.store, &cache).unwrap();
    assert_eq!(cache.authenticate(&token), Err(AuthError::TenantSuspended));
}

/// Readers authenticate in a loop while the store revokes keys one by one and two feeders race to
/// apply the changes. No reader may ever see a key the cache does not know, nor a revoked key come
/// back, nor the version go down; at the end every key is revoked everywhere.
#[test]
fn concurrent_readers_see_a_monotonic_cache_while_it_is_fed() {
    const KEYS: usize = 40;
    let f = fixture();
    let tokens: Vec<String> = (0..KEYS).map(|i| f.store.create_key(f.tenant, &format!("k{i}")).unwrap().1).collect();
    let cache = CredentialCache::new();
    feed(&f.store, &cache).unwrap();
    let done = AtomicBool::new(false);

    std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut revoked = [false; KEYS];
                    let mut last_version = 0;
                    let mut rounds = 0u64;
                    loop {
                        // Read `done` before the pass, so the last pass starts after the last feed.
                        let finished = done.load(Ordering::Acquire);
                        for (i, token) in tokens.iter().enumerate() {
                            match cache.authenticate(token) {
                                Ok(auth) => {
                                    assert!(!revoked[i], "key {i} came back after revocation");
                                    assert_eq!(auth.tenant(), f.tenant);
                                }
                                Err(AuthError::Revoked) => revoked[i] = true,
                                Err(other) => panic!("key {i}: {other}"),
                            }
                        }
                        let version = cache.version();
                        assert!(version >= last_version, "version went from {last_version} to {version}");
                        last_version = version;
                        rounds += 1;
                        if finished {
                            assert!(revoked.iter().all(|&r| r), "after the last feed every key is revoked");
                            return rounds;
                        }
                    }
                })
            })
            .collect();
        let feeder = s.spawn(|| {
            while !done.load(Ordering::Acquire) {
                feed(&f.store, &cache).unwrap();
            }
        });

        for token in &tokens {
            let id = identity::parse_key(token).unwrap().key_id();
            f.store.revoke_key(&Actor::process(), id).unwrap();
            feed(&f.store, &cache).unwrap();
        }
        done.store(true, Ordering::Release);
        feeder.join().unwrap();
        for reader in readers {
            assert!(reader.join().unwrap() >= 1);
        }
    });
    assert_eq!(cache.to_snapshot(), f.store.snapshot().unwrap());
    assert_eq!(cache.version(), 1 + 2 * KEYS as u64);
}
