//! A private PostgreSQL server: its own initdb in DIR, a free loopback port, connections with the
//! real client, kill -9 and restart with the data intact, and `lab up`/`status`/`down` with it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestDir;
use lab::{ClusterFile, InfraOptions, LabCa, LabGuard, Postgres, PostgresOptions, ProcessState, POSTGRES_ROLE};

fn options() -> PostgresOptions {
    PostgresOptions { die_with_parent: true, ..PostgresOptions::default() }
}

fn connect(url: &str) -> postgres::Client {
    try_connect(url, None).expect("connects")
}

/// Over TLS trusting `ca` (and requiring it), or plaintext without.
fn try_connect(url: &str, ca: Option<&Path>) -> Result<postgres::Client, String> {
    let mut config: postgres::Config = url.parse().expect("the lab's URL parses");
    config.connect_timeout(Duration::from_secs(2));
    let connected = match ca {
        Some(ca) => {
            tls::PostgresTls::require(&mut config);
            config.connect(tls::PostgresTls::new(ca).map_err(|e| e.to_string())?)
        }
        None => config.connect(postgres::NoTls),
    };
    // The client's message names only the kind of failure; the server's words are its source.
    connected.map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
}

#[test]
fn a_private_server_keeps_its_data_across_kill_9_and_restart() {
    let dir = TestDir::new("postgres");
    let mut pg = Postgres::start(dir.path(), &options()).expect("PostgreSQL starts");
    assert_eq!(pg.url(), format!("postgres://resizer@127.0.0.1:{}/resizer", pg.port));
    assert_eq!(pg.component().role, POSTGRES_ROLE);
    assert!(pg.data_dir.starts_with(std::fs::canonicalize(dir.path()).expect("canonical")));
    assert!(pg.data_dir.join("PG_VERSION").exists());
    assert!(pg.component().log.starts_with(std::fs::canonicalize(dir.path()).expect("canonical").join("logs")));

    let mut client = connect(&pg.url());
    let row = client.query_one("SELECT current_user::text, current_database()::text, version()", &[]).expect("query");
    let (user, database, version): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!((user.as_str(), database.as_str()), ("resizer", "resizer"));
    eprintln!("{version}");
    // Loopback only, and the socket inside DIR.
    let row = client
        .query_one("SELECT current_setting('listen_addresses'), current_setting('unix_socket_directories')", &[])
        .expect("settings");
    let (listen, sockets): (String, String) = (row.get(0), row.get(1));
    assert_eq!(listen, "127.0.0.1");
    assert!(
        sockets.is_empty()
            || sockets.starts_with(&std::fs::canonicalize(dir.path()).expect("canonical").display().to_string()),
        "{sockets}"
    );
    client.batch_execute("CREATE TABLE t (n int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3);").expect("write");

    // kill -9 with the connection open: every process of the group goes, the client notices.
    let old_pid = pg.component().pid;
    pg.kill().expect("kill -9");
    assert_eq!(pg.state(), ProcessState::Gone);
    assert!(lab::group_members(pg.component()).is_empty());
    assert!(client.query_one("SELECT 1", &[]).is_err());

    let t = Instant::now();
    pg.restart().expect("restarts after crash recovery");
    eprintln!("restart after kill -9 ready in {:?}", t.elapsed());
    assert_ne!(pg.component().pid, old_pid);
    let mut client = connect(&pg.url());
    let sum: i64 = client.query_one("SELECT sum(n) FROM t", &[]).expect("read").get(0);
    assert_eq!(sum, 6, "committed rows survive kill -9");

    // SIGSTOP: the server answers nothing until continued.
    lab::send_signal(pg.component(), lab::Signal::Stop).expect("SIGSTOP");
    lab::poll_until("the postmaster to stop", Duration::from_secs(2), Duration::from_millis(5), || match pg.state() {
        ProcessState::Stopped => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .expect("stopped");
    lab::send_signal(pg.component(), lab::Signal::Cont).expect("SIGCONT");
    assert_eq!(client.query_one("SELECT count(*) FROM t", &[]).expect("read").get::<_, i64>(0), 3);

    // A fast shutdown ends open sessions and is prompt; a start on the same DIR reuses the data.
    let t = Instant::now();
    pg.stop_gracefully().expect("fast shutdown");
    assert!(t.elapsed() < Duration::from_secs(10), "shutdown took {:?}", t.elapsed());
    assert!(lab::group_members(pg.component()).is_empty());
    assert!(std::fs::read_to_string(&pg.component().log).expect("log").contains("database system is shut down"));
    drop(pg);
    let pg = Postgres::start(dir.path(), &options()).expect("starts again on the same data");
    let sum: i64 = connect(&pg.url()).query_one("SELECT sum(n) FROM t", &[]).expect("read").get(0);
    assert_eq!(sum, 6);
}

#[test]
fn lab_up_with_postgres_lists_it_restarts_it_and_down_leaves_nothing() {
    let dir = TestDir::new("postgres-up");
    let _guard = LabGuard::new(dir.path());
    let mut infra = lab::up_infrastructure(dir.path(), &InfraOptions::for_tests()).expect("infrastructure");
    let url = infra.add_postgres().expect("PostgreSQL").url();
    assert_eq!(infra.cluster_file().fields.get("postgres_url").and_then(|v| v.as_str()), Some(url.as_str()));
    // The lab runs TLS: plaintext is refused by pg_hba.conf, a client trusting another CA
    // refuses the server's certificate, a client trusting the lab's CA is served.
    let ca = infra.ca_file().expect("the lab's CA").to_path_buf();
    assert_eq!(infra.cluster_file().fields.get("tls_ca").and_then(|v| v.as_str()), ca.to_str());
    let refused = try_connect(&url, None).err().expect("a plaintext client is refused");
    assert!(refused.contains("no encryption"), "{refused}");
    let other = LabCa::create(&dir.path().join("other-ca"), "another CA").expect("another CA");
    let refused = try_connect(&url, Some(other.ca_file())).err().expect("a certificate of another CA is refused");
    assert!(refused.to_lowercase().contains("unknownissuer"), "{refused}");
    let connect = |url: &str| try_connect(url, Some(&ca)).expect("connects over TLS");
    let mut client = connect(&url);
    let ssl: bool =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).expect("ssl").get(0);
    assert!(ssl, "the session is not encrypted");
    client.batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7);").expect("write");
    drop(client);

    // Restart through the infrastructure: new pid recorded, data kept.
    let old = infra.component("postgres").expect("recorded").pid;
    lab::send_signal(infra.component("postgres").expect("recorded"), lab::Signal::Kill).expect("kill -9");
    let new = infra.restart("postgres").expect("restart");
    assert_ne!(new.pid, old);
    assert_eq!(infra.cluster_file().component("postgres").map(|c| c.pid), Some(new.pid));
    let mut client = connect(&url);
    assert_eq!(client.query_one("SELECT n FROM kept", &[]).expect("read").get::<_, i32>(0), 7);

    let file = infra.finish(serde_json::Map::new()).expect("finish");
    assert_eq!(ClusterFile::read(dir.path()).expect("cluster.json"), file);
    let pg = lab::status(dir.path()).expect("status").into_iter().find(|s| s.role == POSTGRES_ROLE).expect("listed");
    assert_eq!((pg.state, pg.healthy), (ProcessState::Running, Some(true)));
    let pg_component = file.component("postgres").expect("in cluster.json").clone();

    // `down` with a session still open: it is ended, nothing is left, well within the grace time.
    let t = Instant::now();
    let report = lab::down(dir.path(), Duration::from_secs(10)).expect("down");
    assert!(t.elapsed() < Duration::from_secs(10), "down took {:?}", t.elapsed());
    assert!(report.stopped.contains(&"postgres".to_string()), "{report:?}");
    assert!(lab::group_members(&pg_component).is_empty());
    assert!(ClusterFile::read(dir.path()).expect("cluster.json").live().is_empty());
    assert!(client.query_one("SELECT 1", &[]).is_err());
    let statuses = lab::status(dir.path()).expect("status");
    assert!(statuses.iter().all(|s| s.state == ProcessState::Gone), "{statuses:?}");
}

/// With a superuser password, every TCP login needs its own password: a role cannot log in as
/// another, a wrong password is refused, and the setup's roles have only what it grants them.
#[test]
fn with_passwords_each_login_is_its_own_and_holds_only_its_grants() {
    let dir = TestDir::new("postgres-access");
    let access = lab::PostgresAccess {
        superuser_password: Some("superSecret0123456789".into()),
        setup: vec![
            "CREATE ROLE reader LOGIN PASSWORD 'readerSecret0123456789'".into(),
            "GRANT CONNECT ON DATABASE resizer TO reader".into(),
        ],
    };
    let pg = Postgres::start(dir.path(), &PostgresOptions { access, ..options() }).expect("PostgreSQL starts");
    let url = pg.url();
    assert!(url.starts_with("postgres://resizer:superSecret0123456789@127.0.0.1:"), "{url}");
    let mut admin = connect(&url);
    admin.batch_execute("CREATE TABLE t (x INT); INSERT INTO t VALUES (1)").expect("the superuser writes");

    let at = |user: &str, password: Option<&str>| {
        let mut config = postgres::Config::new();
        config.host("127.0.0.1").port(pg.port).dbname("resizer").user(user).connect_timeout(Duration::from_secs(2));
        if let Some(password) = password {
            config.password(password);
        }
        config.connect(postgres::NoTls)
    };
    for (user, password) in [("resizer", None), ("resizer", Some("wrong")), ("reader", Some("superSecret0123456789"))] {
        // Without a password the server asks for one, which the client reports as missing.
        let refused = at(user, password).err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(
            refused.contains("password authentication failed") || refused.contains("password missing"),
            "{user} with {password:?}: {refused}"
        );
    }
    let mut reader = at("reader", Some("readerSecret0123456789")).expect("the reader logs in");
    let denied = reader.batch_execute("INSERT INTO t VALUES (2)").expect_err("no grant to write");
    assert!(format!("{denied:?}").contains("permission denied"), "{denied:?}");
    let denied = reader.batch_execute("CREATE TABLE mine (x INT)").expect_err("no grant to create");
    assert!(format!("{denied:?}").contains("permission denied"), "{denied:?}");
}
