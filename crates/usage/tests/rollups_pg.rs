//! The rollups in PostgreSQL against a real, private server (`lab::Postgres`): a database made by
//! a build before `source_bytes` is read by a reader of this build as it is (its hours read 0),
//! brought up to date by the first aggregator that connects, and keeps taking the older build's
//! inserts.

use std::path::PathBuf;

use usage::{Granularity, Rollups, Totals, UsageRecord};

/// A PostgreSQL server in a temporary directory; stopped and removed when dropped (kept, with
/// its log, if the test panicked).
struct Server {
    pg: lab::Postgres,
    dir: PathBuf,
}

impl Server {
    fn start(label: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("usage-pg-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        let opts = lab::PostgresOptions { die_with_parent: true, ..lab::PostgresOptions::default() };
        match lab::Postgres::start(&dir, &opts) {
            Ok(pg) => Server { pg, dir },
            Err(e) => panic!("PostgreSQL does not start (kept {}): {e}", dir.display()),
        }
    }

    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.pg.url(), postgres::NoTls).expect("raw connection")
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

/// The rollups' tables as the builds before `source_bytes` made them.
const SCHEMA_BEFORE_SOURCE_BYTES: &str = "
    CREATE TABLE usage_applied_batches (
        batch_id   TEXT PRIMARY KEY,
        records    BIGINT NOT NULL,
        applied_ms BIGINT NOT NULL
    );
    CREATE TABLE usage_hourly (
        tenant        BIGINT  NOT NULL,
        hour_ms       BIGINT  NOT NULL,
        status        INTEGER NOT NULL,
        requests      BIGINT  NOT NULL,
        input_bytes   BIGINT  NOT NULL,
        output_bytes  BIGINT  NOT NULL,
        input_pixels  BIGINT  NOT NULL,
        output_pixels BIGINT  NOT NULL,
        cpu_us        BIGINT  NOT NULL,
        PRIMARY KEY (tenant, hour_ms, status)
    );";

const HOUR_MS: i64 = 3_600_000;
const HOUR: i64 = 499_000 * HOUR_MS;
const TENANT: u64 = 4;

/// What an older aggregator writes: an hour's sums without `source_bytes`.
fn old_insert(client: &mut postgres::Client, status: i32) {
    client
        .execute(
            "INSERT INTO usage_hourly (tenant, hour_ms, status, requests, input_bytes, output_bytes, input_pixels,
                                       output_pixels, cpu_us) VALUES ($1, $2, $3, 5, 500, 250, 1000, 250, 450)",
            &[&(TENANT as i64), &HOUR, &status],
        )
        .expect("an older build's insert");
}

fn hour(rollups: &Rollups) -> usage::Bucket {
    let buckets = rollups.query(TENANT, HOUR, HOUR + HOUR_MS, Granularity::Hour).expect("query");
    assert_eq!(buckets.len(), 1, "{buckets:?}");
    buckets.into_iter().next().expect("one hour")
}

#[test]
fn a_database_of_an_older_build_is_read_then_migrated_and_still_takes_its_inserts() {
    let server = Server::start("migrate");
    let mut client = server.client();
    client.batch_execute(SCHEMA_BEFORE_SOURCE_BYTES).expect("old schema");
    old_insert(&mut client, 200);
    let old = Totals {
        requests: 5,
        input_bytes: 500,
        output_bytes: 250,
        input_pixels: 1000,
        output_pixels: 250,
        cpu_us: 450,
        source_bytes: 0,
    };

    // A reader of this build before any aggregator of this build has connected.
    let reader = Rollups::connect_postgres_reader(&server.pg.url(), None).expect("reader");
    assert_eq!(hour(&reader).billable(), old);

    // The first aggregator adds the column; a second connect (another aggregator) changes nothing.
    let writer = Rollups::connect_postgres(&server.pg.url(), None).expect("writer");
    let again = Rollups::connect_postgres(&server.pg.url(), None).expect("second writer");
    drop(again);
    assert_eq!(hour(&writer).billable(), old, "the old hour reads 0 source bytes");
    let fetched = UsageRecord {
        request_id: "r1".into(),
        tenant: TENANT,
        time_ms: HOUR + 1,
        status: 200,
        input_bytes: 70,
        cpu_us: 5,
        source_bytes: 70,
        source: "fetched".into(),
        frames: 1,
        ..Default::default()
    };
    let hit = UsageRecord { request_id: "r2".into(), source_bytes: 0, source: "hit".into(), ..fetched.clone() };
    assert!(writer.apply("b1", &[fetched, hit], 0).expect("apply"));
    let billable = hour(&writer).billable();
    assert_eq!((billable.requests, billable.input_bytes, billable.source_bytes), (7, 640, 70));
    assert_eq!(hour(&reader).billable(), billable, "the reader now reads the column");

    // An older aggregator, still running during the upgrade, inserts without naming it.
    old_insert(&mut client, 429);
    let total = hour(&reader).total();
    assert_eq!((total.requests, total.source_bytes), (12, 70));
    let column: (String, String, bool) = {
        let row = client
            .query_one(
                "SELECT data_type, column_default, is_nullable = 'NO' FROM information_schema.columns
                 WHERE table_name = 'usage_hourly' AND column_name = 'source_bytes'",
                &[],
            )
            .expect("the column");
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(column, ("bigint".to_owned(), "0".to_owned(), true));
}
