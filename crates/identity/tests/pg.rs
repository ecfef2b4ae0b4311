//! The PostgreSQL store against a real, private PostgreSQL server (`lab::Postgres`, one per
//! test): the shared store scenarios (`scenarios/mod.rs`), plus what only a server brings — a
//! table to search for the secret, concurrent writers in several threads and two stores,
//! concurrent migration, a database that goes away and comes back, and use from a tokio blocking
//! thread.

#[macro_use]
mod scenarios;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use identity::{Actor, PgIdentityStore, StoreError, TenantLimits, TenantStatus};

use scenarios::{assert_outbox_matches_tables, versions};

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
        PgIdentityStore::connect(&self.url(), None).expect("connect and migrate")
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

/// Runs a shared scenario on a fresh store, on a server of its own.
fn with_store(name: &str, scenario: scenarios::Scenario) {
    let server = Server::start(name);
    scenario(&server.store());
}

store_scenarios!(with_store);

#[test]
fn only_the_secrets_hash_is_stored() {
    let server = Server::start("secret");
    let store = server.store();
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let (_, token) = store.create_key(acme.id, "ci").unwrap();

    let secret = token.split('_').nth(2).unwrap();
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
                    store.update_limits(&Actor::process(), tenant.id, limits).unwrap();
                    store.revoke_key(&Actor::process(), key.id).unwrap();
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
        assert_eq!(versions(&**store), (1..=total).collect::<Vec<_>>());
        assert_eq!(store.version().unwrap(), total);
        assert_eq!(store.snapshot().unwrap().version, total);
    }
    assert_eq!(stores[0].snapshot().unwrap().credentials.len(), 6 * 8);
    assert_outbox_matches_tables(&*stores[1]);
    // One log row per write, and one per refusal (the five losers of the contested name).
    let log = stores[1].admin_log(None, 1000).unwrap();
    assert_eq!(log.iter().filter(|r| r.outcome == "ok").count() as u64, total);
    assert_eq!(log.iter().filter(|r| r.outcome == "conflict").count(), 5);
    assert!(log.windows(2).all(|w| w[0].id > w[1].id));
}

#[test]
fn a_write_whose_log_row_cannot_be_written_does_not_happen() {
    let server = Server::start("log-down");
    let store = server.store();
    let acme = store.create_tenant("acme", TenantLimits::default()).unwrap();
    let (key, _) = store.create_key(acme.id, "ci").unwrap();
    let (before, log_before) = (store.snapshot().unwrap(), store.admin_log(None, 100).unwrap());
    let mut client = server.client();
    client
        .batch_execute(
            "CREATE FUNCTION log_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'log down'; END $$;
             CREATE TRIGGER log_down BEFORE INSERT ON admin_log FOR EACH ROW EXECUTE FUNCTION log_down();",
        )
        .unwrap();
    let actor = Actor::process();
    let storage = |r: Result<(), StoreError>| assert!(matches!(r, Err(StoreError::Storage(_))), "{r:?}");
    storage(store.create_tenant("globex", TenantLimits::default()).map(drop));
    storage(store.create_key(acme.id, "prod").map(drop));
    storage(store.rotate_key(&actor, key.id, Duration::from_secs(60), None).map(drop));
    storage(store.revoke_key(&actor, key.id).map(drop));
    storage(store.set_status(&actor, acme.id, TenantStatus::Suspended).map(drop));
    client.batch_execute("DROP TRIGGER log_down ON admin_log").unwrap();

    assert_eq!(store.snapshot().unwrap(), before);
    assert_eq!(store.admin_log(None, 100).unwrap(), log_before);
    assert_eq!(store.list_keys(acme.id).unwrap(), vec![key]);
    assert!(matches!(store.tenant_by_name("globex"), Err(StoreError::NotFound(_))));
}

#[test]
fn processes_starting_together_migrate_a_new_database_once() {
    let server = Server::start("migrate");
    let url = server.url();
    let connecting: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgIdentityStore::connect(&url, None).map(|_| ()))
        })
        .collect();
    for c in connecting {
        c.join().expect("thread").expect("connect and migrate");
    }
    let mut client = server.client();
    // One row per migration: each ran once, whichever process ran it.
    let row = client.query_one("SELECT count(*), max(version)::BIGINT FROM schema_version", &[]).unwrap();
    let (rows, last): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((rows, last), (4, 4));

    // A database from a newer build is refused, with a reason.
    client.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, 0)", &[]).unwrap();
    match PgIdentityStore::connect(&url, None) {
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
    assert!(matches!(PgIdentityStore::connect(&server.url(), None), Err(StoreError::Storage(_))));
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
    assert!(matches!(
        store.set_status(&Actor::process(), acme.id, TenantStatus::Suspended),
        Err(StoreError::Storage(_))
    ));
    assert!(matches!(store.snapshot(), Err(StoreError::Storage(_))));
    assert!(t.elapsed() < Duration::from_secs(5), "failures took {:?}", t.elapsed());
    server.pg.restart().expect("restart after kill -9");
    // Every pooled connection is dead; the first call after the restart still succeeds.
    store.set_status(&Actor::process(), acme.id, TenantStatus::Suspended).unwrap();
    assert_eq!(versions(&*store), [1, 2, 3, 4]);
    assert_outbox_matches_tables(&*store);
    assert!(server.dir().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_tokio_blocking_threads_and_drops_in_async_code() {
    let server = Server::start("tokio");
    let url = server.url();
    let store = tokio::task::spawn_blocking(move || PgIdentityStore::connect(&url, None).map(Arc::new))
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
