//! The PostgreSQL store against a real, private PostgreSQL server (`lab::Postgres`, one per
//! test): the SQLite store's behaviours (CRUD, case-insensitive uniqueness, revocation,
//! suspension, the outbox), plus what only a shared server brings — concurrent writers in several
//! threads and two stores, concurrent migration, a database that goes away and comes back, and
//! use from a tokio blocking thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use identity::{
    parse_key, ChangeKind, CredentialCache, IdentityStore, KeyId, Missing, PgIdentityStore, Snapshot, StoreError,
    TenantId, TenantLimits, TenantStatus,
};

/// A PostgreSQL server in a temporary directory; stopped and removed when dropped (the
/// directory is kept if the test panicked, logs included).
struct Server {
    pg: lab::Postgres,
    dir: PathBuf,
}

impl Server {
    fn start(label: &str) -> Server {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "identity-pg-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let opts = lab::PostgresOptions { die_with_parent: true, ..lab::PostgresOptions::default() };
        match lab::Postgres::start(&dir, &opts) {
            Ok(pg) => Server { pg, dir },
            Err(e) => panic!("PostgreSQL does not start (kept {}): {e}", dir.display()),
        }
    }

    fn url(&self) -> String {
        self.pg.url()
    }

    fn store(&self) -> PgIdentityStore {
        PgIdentityStore::connect(&self.url()).expect("connect and migrate")
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url(), postgres::NoTls).expect("raw connection")
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.pg.stop_gracefully() {
            eprintln!("stopping PostgreSQL: {e}");
        }
        if std::thread::panicking() {
            eprintln!("test dir kept for inspection: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn versions(store: &PgIdentityStore) -> Vec<u64> {
    store.changes_since(0).unwrap().iter().map(|c| c.version).collect()
}

/// The state a cache reaches from the outbox alone must be the store's snapshot.
fn assert_outbox_matches_tables(store: &PgIdentityStore) {
    let cache = CredentialCache::new();
    assert!(cache.apply_snapshot(Snapshot::default()));
    cache.apply_changes(store.changes_since(0).unwrap()).expect("no gap in the outbox");
    assert_eq!(cache.to_snapshot(), store.snapshot().unwrap());
}

#[test]
fn tenants_are_created_read_listed_and_updated() {
    let server = Server::start("tenants");
    let store = server.store();
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
    assert!(matches!(store.get_tenant(TenantId::new(u64::MAX)), Err(StoreError::NotFound(_))));
    assert!(matches!(store.list_keys(TenantId::new(u64::MAX)), Err(StoreError::NotFound(_))));
    assert!(store.changes_since(u64::MAX).unwrap().is_empty());

    // Extreme limits survive the signed columns.
    let big = TenantLimits {
        rate_per_sec: Some(0.5),
        burst: Some(u32::MAX),
        max_input_bytes: Some(identity::MAX_INPUT_BYTES_CEILING),
        max_input_pixels: Some(1),
    };
    let initech = store.create_tenant("initech", big).unwrap();
    assert_eq!(store.get_tenant(initech.id).unwrap().limits, big);
    assert!(matches!(&store.changes_since(0).unwrap().last().unwrap().kind, ChangeKind::Tenant(t) if t.limits == big));
}

#[test]
fn tenant_names_are_unique_ignoring_case_and_input_rules_match_sqlite() {
    let server = Server::start("names");
    let store = server.store();
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
    // Only ASCII letters fold, as with SQLite's NOCASE: the Kelvin sign is not a K.
    assert!(matches!(store.tenant_by_name("\u{212A}"), Err(StoreError::NotFound(_))));

    // Every input the SQLite store refuses, this one refuses the same way, before writing.
    let sqlite = IdentityStore::open_in_memory().unwrap();
    let names = ["", "has space", "ünï", "a/b", &"x".repeat(65), "123", ".", "..", "ok.name-1_2", &"y".repeat(64)];
    for name in names {
        let (pg, lite) =
            (store.create_tenant(name, TenantLimits::default()), sqlite.create_tenant(name, TenantLimits::default()));
        assert_eq!(pg.is_ok(), lite.is_ok(), "{name:?}");
        assert_eq!(matches!(pg, Err(StoreError::Invalid(_))), matches!(lite, Err(StoreError::Invalid(_))), "{name:?}");
    }
    let bad_limits = [
        TenantLimits { rate_per_sec: Some(0.0), ..TenantLimits::default() },
        TenantLimits { rate_per_sec: Some(f64::NAN), ..TenantLimits::default() },
        TenantLimits { burst: Some(0), ..TenantLimits::default() },
        TenantLimits { max_input_bytes: Some(0), ..TenantLimits::default() },
        TenantLimits { max_input_pixels: Some(u64::MAX), ..TenantLimits::default() },
    ];
    let acme = store.tenant_by_name("acme").unwrap();
    for limits in bad_limits {
        assert!(matches!(store.create_tenant("fresh", limits), Err(StoreError::Invalid(_))), "{limits:?}");
        assert!(matches!(store.update_limits(acme.id, limits), Err(StoreError::Invalid(_))), "{limits:?}");
    }
    for label in ["", "tab\there", &"l".repeat(101)] {
        assert!(matches!(store.create_key(acme.id, label), Err(StoreError::Invalid(_))), "{label:?}");
    }
    assert_eq!(store.version().unwrap(), 3, "acme and the two valid names only");
}

#[test]
fn keys_are_issued_once_listed_and_revoked_idempotently() {
    let server = Server::start("keys");
    let store = server.store();
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
    assert_eq!(store.revoke_key(ci.id).unwrap(), revoked);
    assert_eq!(store.version().unwrap(), version);
    assert_eq!(store.list_keys(acme.id).unwrap(), vec![revoked, prod]);

    let unknown: KeyId = "ZZZZZZZZZZZZ".parse().unwrap();
    assert!(matches!(store.revoke_key(unknown), Err(StoreError::NotFound(Missing::Key(id))) if id == unknown));
    assert!(matches!(store.get_key(unknown), Err(StoreError::NotFound(_))));

    // Only the secret's hash is stored.
    let secret = ci_token.split('_').nth(2).unwrap();
    let mut client = server.client();
    let found: i64 = client
        .query_one(
            "SELECT count(*) FROM api_keys WHERE position($1::bytea IN secret_sha256) > 0 OR label LIKE '%' || $2 || '%'",
            &[&secret.as_bytes(), &secret],
        )
        .unwrap()
        .get(0);
    assert_eq!(found, 0);
}

#[test]
fn every_mutation_appends_one_change_and_snapshots_agree() {
    let server = Server::start("outbox");
    let store = server.store();
    assert_eq!(store.version().unwrap(), 0);
    assert_eq!(store.snapshot().unwrap(), Snapshot::default());

    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let (key, token) = store.create_key(acme.id, "ci").unwrap();
    let (b, _) = store.create_key(acme.id, "b").unwrap();
    let limits = TenantLimits { burst: Some(9), ..TenantLimits::default() };
    store.update_limits(acme.id, limits).unwrap();
    store.set_status(acme.id, TenantStatus::Suspended).unwrap();
    // Repeats are no-ops: no change.
    store.set_status(acme.id, TenantStatus::Suspended).unwrap();
    store.update_limits(acme.id, limits).unwrap();
    store.revoke_key(key.id).unwrap();

    let changes = store.changes_since(0).unwrap();
    assert_eq!(versions(&store), [1, 2, 3, 4, 5, 6]);
    assert_eq!(store.version().unwrap(), 6);
    let hash = parse_key(&token).unwrap().secret_hash();
    assert!(matches!(&changes[0].kind, ChangeKind::Tenant(t) if t.id == acme.id && t.status == TenantStatus::Active));
    assert!(matches!(&changes[1].kind, ChangeKind::Credential(c)
        if c.key == key.id && c.secret_hash == hash && !c.revoked && c.tenant.id == acme.id));
    assert!(matches!(&changes[3].kind, ChangeKind::Tenant(t) if t.limits == limits));
    assert!(matches!(&changes[4].kind, ChangeKind::Tenant(t) if t.status == TenantStatus::Suspended));
    assert!(matches!(&changes[5].kind, ChangeKind::Credential(c)
        if c.revoked && c.tenant.status == TenantStatus::Suspended && c.tenant.limits == limits));
    assert_eq!(store.changes_since(3).unwrap(), changes[3..].to_vec());
    assert!(store.changes_since(6).unwrap().is_empty());

    let snapshot = store.snapshot().unwrap();
    assert_eq!(snapshot.version, 6);
    let mut ids = vec![key.id, b.id];
    ids.sort();
    assert_eq!(snapshot.credentials.iter().map(|c| c.key).collect::<Vec<_>>(), ids);
    for c in &snapshot.credentials {
        assert_eq!(c.revoked, c.key == key.id);
        assert_eq!(c.tenant.status, TenantStatus::Suspended);
    }
    assert_outbox_matches_tables(&store);
}

#[test]
fn concurrent_writers_in_threads_and_two_stores_leave_gap_free_versions() {
    let server = Server::start("concurrent");
    let stores = [Arc::new(server.store()), Arc::new(server.store())];
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let store = stores[i % 2].clone();
            std::thread::spawn(move || {
                let mut mutations = 0;
                let tenant = store.create_tenant(&format!("tenant-{i}"), TenantLimits::default()).unwrap();
                mutations += 1;
                for round in 0..8u32 {
                    let (key, _) = store.create_key(tenant.id, &format!("k{round}")).unwrap();
                    let limits = TenantLimits { burst: Some(round + 1), ..TenantLimits::default() };
                    store.update_limits(tenant.id, limits).unwrap();
                    store.revoke_key(key.id).unwrap();
                    mutations += 3;
                }
                // Everyone also fights over one name: exactly one thread wins it.
                if store.create_tenant("contested", TenantLimits::default()).is_ok() {
                    mutations += 1;
                }
                mutations
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().expect("writer thread")).sum();
    assert_eq!(total, 6 * 25 + 1);
    for store in &stores {
        assert_eq!(versions(store), (1..=total).collect::<Vec<_>>());
        assert_eq!(store.version().unwrap(), total);
        assert_eq!(store.snapshot().unwrap().version, total);
    }
    assert_eq!(stores[0].snapshot().unwrap().credentials.len(), 6 * 8);
    assert_outbox_matches_tables(&stores[1]);
}

#[test]
fn processes_starting_together_migrate_a_new_database_once() {
    let server = Server::start("migrate");
    let url = server.url();
    let connecting: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgIdentityStore::connect(&url).map(|_| ()))
        })
        .collect();
    for c in connecting {
        c.join().expect("thread").expect("connect and migrate");
    }
    let mut client = server.client();
    let rows: i64 = client.query_one("SELECT count(*) FROM schema_version", &[]).unwrap().get(0);
    assert_eq!(rows, 1);

    // A database from a newer build is refused, with a reason.
    client.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)", &[]).unwrap();
    match PgIdentityStore::connect(&url) {
        Err(StoreError::Storage(e)) => assert!(e.to_string().contains("newer resizer"), "{e}"),
        Err(other) => panic!("expected Storage, got {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

#[test]
fn a_database_that_goes_away_fails_fast_and_the_store_recovers_when_it_is_back() {
    let mut server = Server::start("outage");
    let store = server.store();
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    store.create_key(acme.id, "ci").unwrap();

    // Stopped (fast shutdown): pooled connections are closed, new ones refused.
    server.pg.stop_gracefully().expect("stop PostgreSQL");
    let t = Instant::now();
    assert!(matches!(store.list_tenants(), Err(StoreError::Storage(_))));
    assert!(matches!(store.create_tenant("globex", TenantLimits::default()), Err(StoreError::Storage(_))));
    assert!(matches!(store.changes_since(0), Err(StoreError::Storage(_))));
    assert!(matches!(PgIdentityStore::connect(&server.url()), Err(StoreError::Storage(_))));
    assert!(t.elapsed() < Duration::from_secs(5), "failures took {:?}", t.elapsed());

    // Back: the same store works again at once, versions carry on.
    server.pg.restart().expect("restart PostgreSQL");
    assert_eq!(store.list_tenants().unwrap(), vec![acme.clone()]);
    assert_eq!(store.version().unwrap(), 2);
    store.create_tenant("globex", TenantLimits::default()).unwrap();
    assert_eq!(versions(&store), [1, 2, 3]);

    // kill -9 while several connections are pooled: the same, and nothing committed is lost.
    let store = Arc::new(store);
    let mut monitor = server.client();
    let pooled = |monitor: &mut postgres::Client| -> i64 {
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'resizer-identity'";
        monitor.query_one(sql, &[]).unwrap().get(0)
    };
    for _ in 0..20 {
        let readers: Vec<_> = (0..6)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || (0..20).for_each(|_| drop(store.snapshot().unwrap())))
            })
            .collect();
        readers.into_iter().for_each(|r| r.join().expect("reader"));
        if pooled(&mut monitor) >= 3 {
            break;
        }
    }
    assert!(pooled(&mut monitor) >= 3, "the pool did not grow");
    drop(monitor);
    server.pg.kill().expect("kill -9");
    let t = Instant::now();
    assert!(matches!(store.set_status(acme.id, TenantStatus::Suspended), Err(StoreError::Storage(_))));
    assert!(matches!(store.snapshot(), Err(StoreError::Storage(_))));
    assert!(t.elapsed() < Duration::from_secs(5), "failures took {:?}", t.elapsed());
    server.pg.restart().expect("restart after kill -9");
    // Every pooled connection is dead; the first call after the restart still succeeds.
    store.set_status(acme.id, TenantStatus::Suspended).unwrap();
    assert_eq!(versions(&store), [1, 2, 3, 4]);
    assert_outbox_matches_tables(&store);
    assert!(server.dir().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_tokio_blocking_threads_and_drops_in_async_code() {
    let server = Server::start("tokio");
    let url = server.url();
    let store = tokio::task::spawn_blocking(move || PgIdentityStore::connect(&url).map(Arc::new))
        .await
        .expect("blocking task")
        .expect("connect");
    let s = store.clone();
    let tenant = tokio::task::spawn_blocking(move || s.create_tenant("acme", TenantLimits::default()))
        .await
        .expect("blocking task")
        .expect("create");
    let s = store.clone();
    let listed = tokio::task::spawn_blocking(move || s.list_tenants()).await.expect("blocking task").expect("list");
    assert_eq!(listed, vec![tenant]);
    // The last reference goes away on an async worker thread: closing the pooled connections
    // must not start a runtime inside this one.
    drop(store);
}
