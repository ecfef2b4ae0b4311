//! Hourly rollups per tenant, applied exactly once per batch: a batch's id is recorded in the
//! same transaction as its sums, so a replayed batch changes nothing. Two stores: the embedded
//! database (SQLite, `resizer dev`) and PostgreSQL (the cluster, where several aggregators
//! apply batches at once: the second to insert a batch id waits for the first's transaction and
//! then finds it applied).
//!
//! The same database keeps the messages an aggregator refused (`quarantine.rs`).
//!
//! Buckets are UTC hours; a day is 24 of them (`granularity=day` sums them at read time, so there
//! is one source of truth). Counts are kept per status, which is what billing rules and the
//! "what the clients saw" checks need.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::quota::{batch_sums, NodeMarks, PeriodTotals, TenantTotals, Used, WindowSums, MONTH};
use crate::record::UsageRecord;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

#[derive(Debug, thiserror::Error)]
pub enum RollupError {
    #[error("usage rollups: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("usage rollups (PostgreSQL): {0}")]
    Postgres(#[from] postgres::Error),
    #[error("usage rollups (PostgreSQL TLS): {0}")]
    Tls(#[from] tls::TlsError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    fn millis(self) -> i64 {
        match self {
            Granularity::Hour => HOUR_MS,
            Granularity::Day => DAY_MS,
        }
    }
}

/// Sums over some requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub requests: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub input_pixels: u64,
    pub output_pixels: u64,
    pub cpu_us: u64,
    /// Source bytes transferred from the tenants' origins (signed GETs).
    pub source_bytes: u64,
}

impl Totals {
    /// Saturating: a record's pixels come from a header the client wrote (a refused 2³¹ × 2³¹
    /// image is recorded as such), and a sum must never wrap or fail a batch.
    pub fn add(&mut self, other: &Totals) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_bytes = self.input_bytes.saturating_add(other.input_bytes);
        self.output_bytes = self.output_bytes.saturating_add(other.output_bytes);
        self.input_pixels = self.input_pixels.saturating_add(other.input_pixels);
        self.output_pixels = self.output_pixels.saturating_add(other.output_pixels);
        self.cpu_us = self.cpu_us.saturating_add(other.cpu_us);
        self.source_bytes = self.source_bytes.saturating_add(other.source_bytes);
    }

    fn of(record: &UsageRecord) -> Totals {
        Totals {
            requests: 1,
            input_bytes: record.input_bytes,
            output_bytes: record.output_bytes,
            input_pixels: record.input_pixels(),
            output_pixels: record.output_pixels(),
            cpu_us: record.cpu_us,
            source_bytes: record.source_bytes,
        }
    }
}

/// One time bucket of a tenant's usage, by status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start_ms: i64,
    pub by_status: BTreeMap<u16, Totals>,
}

impl Bucket {
    /// Every request of the bucket, whatever its status. A refused image's pixels are the ones
    /// its header declared.
    pub fn total(&self) -> Totals {
        let mut total = Totals::default();
        self.by_status.values().for_each(|t| total.add(t));
        total
    }

    /// What the billing rules bill (docs/usage.md): the requests answered 200.
    pub fn billable(&self) -> Totals {
        self.by_status.get(&200).copied().unwrap_or_default()
    }
}

pub struct Rollups {
    store: Store,
}

enum Store {
    Sqlite(Mutex<Connection>),
    /// One connection (the aggregator applies one batch at a time), reopened after a failure.
    Postgres {
        url: String,
        /// None: plaintext connections.
        tls: Option<tls::PostgresTls>,
        client: Box<Mutex<Option<postgres::Client>>>,
    },
}

/// The quarantine's table (`quarantine.rs`) in SQLite, created with the rollups: it lives in
/// their database, and the schema with theirs, so that this file imports nothing from that one.
const QUARANTINE_SQLITE_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS quarantine (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id   TEXT    NOT NULL,
        claimed_node TEXT    NOT NULL,
        reason       TEXT    NOT NULL,
        payload      BLOB    NOT NULL,
        received_ms  INTEGER NOT NULL
    );";

/// The quarantine's PostgreSQL table, created by the aggregators with the rollups (their role owns it).
const QUARANTINE_PG_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS usage_quarantine (
        id           BIGSERIAL PRIMARY KEY,
        message_id   TEXT   NOT NULL,
        claimed_node TEXT   NOT NULL,
        reason       TEXT   NOT NULL,
        payload      BYTEA  NOT NULL,
        received_ms  BIGINT NOT NULL
    );";

/// The quota totals (`quota.rs`): billable sums per tenant and window of each quota period, and
/// per tenant and api node the latest billable record's time they include. Written in each
/// batch's transaction; a window's row is never read after it ends.
const QUOTA_SQLITE_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS quota_totals (
        tenant        INTEGER NOT NULL,
        period_s      INTEGER NOT NULL,
        start_ms      INTEGER NOT NULL,
        end_ms        INTEGER NOT NULL,
        requests      INTEGER NOT NULL,
        input_bytes   INTEGER NOT NULL,
        output_pixels INTEGER NOT NULL,
        cpu_us        INTEGER NOT NULL,
        PRIMARY KEY (tenant, period_s, start_ms)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS quota_marks (
        tenant  INTEGER NOT NULL,
        node    TEXT    NOT NULL,
        time_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, node)
    ) WITHOUT ROWID;";

const QUOTA_PG_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS usage_quota_totals (
        tenant        BIGINT  NOT NULL,
        period_s      INTEGER NOT NULL,
        start_ms      BIGINT  NOT NULL,
        end_ms        BIGINT  NOT NULL,
        requests      BIGINT  NOT NULL,
        input_bytes   BIGINT  NOT NULL,
        output_pixels BIGINT  NOT NULL,
        cpu_us        BIGINT  NOT NULL,
        PRIMARY KEY (tenant, period_s, start_ms)
    );
    CREATE TABLE IF NOT EXISTS usage_quota_marks (
        tenant  BIGINT NOT NULL,
        node    TEXT   NOT NULL,
        time_ms BIGINT NOT NULL,
        PRIMARY KEY (tenant, node)
    );";

const QUOTA_COLUMNS: [&str; 4] = ["requests", "input_bytes", "output_pixels", "cpu_us"];

/// The sums added to the hourly table after its first release (`hourly` in SQLite, `usage_hourly`
/// in PostgreSQL), with their type in each: (column, SQLite type, PostgreSQL type). The
/// `CREATE TABLE` statements stay as first released; every open that may write adds the columns
/// missing here, `NOT NULL DEFAULT 0`, so a database made by an older build is brought up to date
/// (its hours read 0) and a fresh one takes the same path. The default also keeps an older
/// aggregator's inserts, which do not name them, working during an upgrade. Append only.
const HOURLY_ADDED_SUMS: &[(&str, &str, &str)] = &[("source_bytes", "INTEGER", "BIGINT")];

/// The PostgreSQL schema; `IF NOT EXISTS` makes it safe for several processes to run it.
const PG_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS usage_applied_batches (
        batch_id   TEXT PRIMARY KEY,
        records    BIGINT NOT NULL,
        applied_ms BIGINT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS usage_hourly (
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

impl Rollups {
    pub fn open(path: &Path) -> Result<Rollups, RollupError> {
        let conn = Connection::open(path)?;
        let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Rollups, RollupError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Rollups, RollupError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS applied_batches (
                 batch_id TEXT PRIMARY KEY,
                 records INTEGER NOT NULL,
                 applied_ms INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS hourly (
                 tenant INTEGER NOT NULL,
                 hour_ms INTEGER NOT NULL,
                 status INTEGER NOT NULL,
                 requests INTEGER NOT NULL,
                 input_bytes INTEGER NOT NULL,
                 output_bytes INTEGER NOT NULL,
                 input_pixels INTEGER NOT NULL,
                 output_pixels INTEGER NOT NULL,
                 cpu_us INTEGER NOT NULL,
                 PRIMARY KEY (tenant, hour_ms, status)
             ) WITHOUT ROWID;",
        )?;
        conn.execute_batch(QUARANTINE_SQLITE_SCHEMA)?;
        conn.execute_batch(QUOTA_SQLITE_SCHEMA)?;
        // IMMEDIATE: two processes opening the same database must not both add a column.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (column, sqlite_type, _) in HOURLY_ADDED_SUMS {
            let present: bool = tx.query_row(
                "SELECT count(*) > 0 FROM pragma_table_info('hourly') WHERE name = ?1",
                [column],
                |row| row.get(0),
            )?;
            if !present {
                tx.execute_batch(&format!("ALTER TABLE hourly ADD COLUMN {column} {sqlite_type} NOT NULL DEFAULT 0"))?;
            }
        }
        tx.commit()?;
        Ok(Rollups { store: Store::Sqlite(Mutex::new(conn)) })
    }

    /// The rollups in PostgreSQL at `url`, for a process that only reads them (api nodes, the
    /// identity service): no table is created, so its database role needs no more than `SELECT`
    /// on them. Until an aggregator has made them, reads fail. Blocking. `tls_ca` as for
    /// [`connect_postgres`](Self::connect_postgres).
    pub fn connect_postgres_reader(url: &str, tls_ca: Option<&Path>) -> Result<Rollups, RollupError> {
        let tls = tls_ca.map(tls::PostgresTls::new).transpose()?;
        let rollups =
            Rollups { store: Store::Postgres { url: url.to_owned(), tls, client: Box::new(Mutex::new(None)) } };
        rollups.with_pg(|client| client.simple_query("SELECT 1").map(drop))?;
        Ok(rollups)
    }

    /// The rollups in PostgreSQL at `url` (tables created if missing), for the aggregators that
    /// write them. Blocking. With `tls_ca` connections require TLS and a server certificate from
    /// that CA naming the URL's host.
    pub fn connect_postgres(url: &str, tls_ca: Option<&Path>) -> Result<Rollups, RollupError> {
        let tls = tls_ca.map(tls::PostgresTls::new).transpose()?;
        let rollups =
            Rollups { store: Store::Postgres { url: url.to_owned(), tls, client: Box::new(Mutex::new(None)) } };
        // Several processes start at once (api nodes, aggregators): `IF NOT EXISTS` alone races
        // in PostgreSQL's catalog, so the schema is made under a transaction-scoped lock.
        rollups.with_pg(|client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock(7262001)", &[])?;
            tx.batch_execute(PG_SCHEMA)?;
            for (column, _, pg_type) in HOURLY_ADDED_SUMS {
                tx.batch_execute(&format!(
                    "ALTER TABLE usage_hourly ADD COLUMN IF NOT EXISTS {column} {pg_type} NOT NULL DEFAULT 0"
                ))?;
            }
            tx.batch_execute(QUARANTINE_PG_SCHEMA)?;
            tx.batch_execute(QUOTA_PG_SCHEMA)?;
            tx.commit()
        })?;
        Ok(rollups)
    }

    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.store, Store::Postgres { .. })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        match &self.store {
            Store::Sqlite(conn) => conn.lock().unwrap_or_else(PoisonError::into_inner),
            Store::Postgres { .. } => unreachable!("SQLite paths are taken only for the SQLite store"),
        }
    }

    /// Runs `f` on the PostgreSQL connection, opening it first if needed; a failed call drops
    /// the connection so the next call opens a fresh one (the database may have restarted).
    pub(crate) fn with_pg<T>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, RollupError> {
        let Store::Postgres { url, tls, client } = &self.store else {
            unreachable!("PostgreSQL paths are taken only for the PostgreSQL store")
        };
        let mut slot = client.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            let mut config: postgres::Config = url.parse()?;
            // Every call is bounded: a statement by the server (statement_timeout), a database
            // that stops answering by the socket (unacknowledged data, then keepalives). A
            // stalled database then fails a usage read or a batch, which is retried, instead of
            // holding a thread of the blocking pool for good.
            config
                .connect_timeout(std::time::Duration::from_secs(2))
                .options("-c statement_timeout=10000")
                .tcp_user_timeout(std::time::Duration::from_secs(10))
                .keepalives_idle(std::time::Duration::from_secs(10))
                .keepalives_interval(std::time::Duration::from_secs(2))
                .keepalives_retries(3);
            if tls.is_some() {
                tls::PostgresTls::require(&mut config);
            }
            let connect = || match tls {
                Some(tls) => config.connect(tls.clone()),
                None => config.connect(postgres::NoTls),
            };
            *slot = Some(match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(connect)?
                }
                _ => connect()?,
            });
        }
        let Some(conn) = slot.as_mut() else { unreachable!("opened above") };
        // The blocking client runs its own small runtime: on a worker thread of ours (the
        // compaction predicate is called from async code), step off the runtime first.
        let result = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| f(conn))
            }
            _ => f(conn),
        };
        if result.is_err() {
            *slot = None;
        }
        Ok(result?)
    }

    pub fn is_applied(&self, batch_id: &str) -> Result<bool, RollupError> {
        if let Store::Postgres { .. } = self.store {
            return self.with_pg(|c| {
                Ok(c.query_opt("SELECT 1 FROM usage_applied_batches WHERE batch_id = $1", &[&batch_id])?.is_some())
            });
        }
        let conn = self.lock();
        let found: Option<i64> = conn
            .query_row("SELECT 1 FROM applied_batches WHERE batch_id = ?1", [batch_id], |row| row.get(0))
            .optional()?;
        Ok(found.is_some())
    }

    /// Adds a batch's records to the rollups, unless this batch id was applied before. Returns
    /// whether it was applied now. Blocking.
    pub fn apply(&self, batch_id: &str, records: &[UsageRecord], now_ms: i64) -> Result<bool, RollupError> {
        self.apply_with_quotas(batch_id, records, now_ms, &|_| MONTH)
    }

    /// [`apply`](Self::apply), and the batch's billable usage to the quota totals in the same
    /// transaction: every tenant's calendar month, and the window of the rolling period
    /// `rolling_period` gives a tenant (0: none). Blocking.
    pub fn apply_with_quotas(
        &self,
        batch_id: &str,
        records: &[UsageRecord],
        now_ms: i64,
        rolling_period: &dyn Fn(u64) -> u32,
    ) -> Result<bool, RollupError> {
        let quota = batch_sums(records, rolling_period);
        let mut sums: BTreeMap<(u64, i64, u16), Totals> = BTreeMap::new();
        for r in records {
            let hour = r.time_ms.div_euclid(HOUR_MS) * HOUR_MS;
            sums.entry((r.tenant, hour, r.status)).or_default().add(&Totals::of(r));
        }
        if let Store::Postgres { .. } = self.store {
            return self.with_pg(|c| apply_pg(c, batch_id, records.len(), &sums, &quota, now_ms));
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO applied_batches (batch_id, records, applied_ms) VALUES (?1, ?2, ?3)",
            params![batch_id, records.len() as i64, now_ms],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        {
            let mut upsert = tx.prepare_cached(&format!(
                "INSERT INTO hourly (tenant, hour_ms, status, requests, input_bytes, output_bytes, input_pixels,
                                     output_pixels, cpu_us, source_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (tenant, hour_ms, status) DO UPDATE SET {}",
                saturating_sums("hourly", "excluded")
            ))?;
            for ((tenant, hour, status), t) in &sums {
                upsert.execute(params![
                    *tenant as i64,
                    hour,
                    status,
                    db_int(t.requests),
                    db_int(t.input_bytes),
                    db_int(t.output_bytes),
                    db_int(t.input_pixels),
                    db_int(t.output_pixels),
                    db_int(t.cpu_us),
                    db_int(t.source_bytes),
                ])?;
            }
            let (windows, marks) = &quota;
            let mut upsert = tx.prepare_cached(&format!(
                "INSERT INTO quota_totals (tenant, period_s, start_ms, end_ms, requests, input_bytes, output_pixels,
                                           cpu_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (tenant, period_s, start_ms) DO UPDATE SET {}",
                saturating_columns(&QUOTA_COLUMNS, "quota_totals", "excluded")
            ))?;
            for ((tenant, period_s, start), (end, u)) in windows {
                upsert.execute(params![
                    *tenant as i64,
                    period_s,
                    start,
                    end,
                    db_int(u.requests),
                    db_int(u.input_bytes),
                    db_int(u.output_pixels),
                    db_int(u.cpu_us),
                ])?;
            }
            let mut mark = tx.prepare_cached(
                "INSERT INTO quota_marks (tenant, node, time_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, node) DO UPDATE SET time_ms = max(quota_marks.time_ms, excluded.time_ms)",
            )?;
            for ((tenant, node), time_ms) in marks {
                mark.execute(params![*tenant as i64, node, time_ms])?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// The quota totals of the windows not yet ended at `now_ms`, with the api nodes' marks:
    /// of `tenants`, or of every tenant that has any (`None`). Blocking.
    pub fn quota_totals(&self, tenants: Option<&[u64]>, now_ms: i64) -> Result<Vec<TenantTotals>, RollupError> {
        let mut out: BTreeMap<u64, TenantTotals> = BTreeMap::new();
        let mut add_period = |tenant: i64, p: PeriodTotals| {
            let t = out
                .entry(tenant as u64)
                .or_insert_with(|| TenantTotals { tenant: tenant as u64, ..Default::default() });
            t.periods.push(p);
        };
        let filter: Vec<i64> = tenants.map(|t| t.iter().map(|&t| db_int(t)).collect()).unwrap_or_default();
        let marks: Vec<(i64, String, i64)>;
        if let Store::Postgres { .. } = self.store {
            let (periods, pg_marks) = self.with_pg(|c| {
                let all = tenants.is_none();
                let periods = c.query(
                    "SELECT tenant, period_s, start_ms, end_ms, requests, input_bytes, output_pixels, cpu_us
                     FROM usage_quota_totals WHERE end_ms > $1 AND ($2 OR tenant = ANY($3))",
                    &[&now_ms, &all, &filter],
                )?;
                let marks = c.query(
                    "SELECT tenant, node, time_ms FROM usage_quota_marks WHERE $1 OR tenant = ANY($2)",
                    &[&all, &filter],
                )?;
                Ok((periods, marks))
            })?;
            for row in periods {
                let period_s: i32 = row.try_get(1)?;
                add_period(
                    row.try_get(0)?,
                    PeriodTotals {
                        period_s: period_s as u32,
                        start_ms: row.try_get(2)?,
                        end_ms: row.try_get(3)?,
                        used: Used {
                            requests: row.try_get::<_, i64>(4)? as u64,
                            input_bytes: row.try_get::<_, i64>(5)? as u64,
                            output_pixels: row.try_get::<_, i64>(6)? as u64,
                            cpu_us: row.try_get::<_, i64>(7)? as u64,
                        },
                    },
                );
            }
            marks = pg_marks
                .iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
                .collect::<Result<_, postgres::Error>>()?;
        } else {
            let conn = self.lock();
            let tenant_list: Vec<Option<i64>> =
                if tenants.is_none() { vec![None] } else { filter.iter().map(|&t| Some(t)).collect() };
            let mut periods = conn.prepare_cached(
                "SELECT tenant, period_s, start_ms, end_ms, requests, input_bytes, output_pixels, cpu_us
                 FROM quota_totals WHERE end_ms > ?1 AND (?2 IS NULL OR tenant = ?2)",
            )?;
            let mut mark_rows =
                conn.prepare_cached("SELECT tenant, node, time_ms FROM quota_marks WHERE ?1 IS NULL OR tenant = ?1")?;
            let mut found = Vec::new();
            for tenant in &tenant_list {
                let rows = periods.query_map(params![now_ms, tenant], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        PeriodTotals {
                            period_s: row.get(1)?,
                            start_ms: row.get(2)?,
                            end_ms: row.get(3)?,
                            used: Used {
                                requests: row.get::<_, i64>(4)? as u64,
                                input_bytes: row.get::<_, i64>(5)? as u64,
                                output_pixels: row.get::<_, i64>(6)? as u64,
                                cpu_us: row.get::<_, i64>(7)? as u64,
                            },
                        },
                    ))
                })?;
                for row in rows {
                    let (tenant, p) = row?;
                    add_period(tenant, p);
                }
                let rows = mark_rows.query_map(params![tenant], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
                for row in rows {
                    found.push(row?);
                }
            }
            marks = found;
        }
        for (tenant, node, time_ms) in marks {
            let t = out
                .entry(tenant as u64)
                .or_insert_with(|| TenantTotals { tenant: tenant as u64, ..Default::default() });
            t.marks.insert(node, time_ms);
        }
        Ok(out.into_values().collect())
    }

    /// `tenant`'s usage in buckets of `granularity` covering `[from_ms, to_ms)`; buckets without
    /// requests are left out. Blocking.
    pub fn query(
        &self,
        tenant: u64,
        from_ms: i64,
        to_ms: i64,
        granularity: Granularity,
    ) -> Result<Vec<Bucket>, RollupError> {
        // Whole hours only: a bucket is counted if its hour starts in the range.
        let from_hour = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let step = granularity.millis();
        let mut buckets: BTreeMap<i64, BTreeMap<u16, Totals>> = BTreeMap::new();
        if let Store::Postgres { .. } = self.store {
            let select = |source_bytes: &str| {
                let sql = format!(
                    "SELECT hour_ms, status, requests, input_bytes, output_bytes, input_pixels, output_pixels, cpu_us,
                            {source_bytes}
                     FROM usage_hourly WHERE tenant = $1 AND hour_ms >= $2 AND hour_ms < $3 ORDER BY hour_ms"
                );
                self.with_pg(|c| c.query(&sql, &[&(tenant as i64), &from_hour, &to_ms]))
            };
            // A reader (an api node, which makes no tables) may be upgraded before the aggregators
            // that add `source_bytes`: until they have, its hours read 0.
            let rows = match select("source_bytes") {
                Err(RollupError::Postgres(e)) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_COLUMN) => {
                    select("0::BIGINT")?
                }
                rows => rows?,
            };
            for row in rows {
                let hour: i64 = row.get(0);
                let status = u16::try_from(row.get::<_, i32>(1)).unwrap_or(0);
                let n = |i: usize| row.get::<_, i64>(i) as u64;
                let totals = Totals {
                    requests: n(2),
                    input_bytes: n(3),
                    output_bytes: n(4),
                    input_pixels: n(5),
                    output_pixels: n(6),
                    cpu_us: n(7),
                    source_bytes: n(8),
                };
                buckets.entry(hour.div_euclid(step) * step).or_default().entry(status).or_default().add(&totals);
            }
            return Ok(buckets.into_iter().map(|(start_ms, by_status)| Bucket { start_ms, by_status }).collect());
        }
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT hour_ms, status, requests, input_bytes, output_bytes, input_pixels, output_pixels, cpu_us,
                    source_bytes
             FROM hourly WHERE tenant = ?1 AND hour_ms >= ?2 AND hour_ms < ?3 ORDER BY hour_ms",
        )?;
        let rows = stmt.query_map(params![tenant as i64, from_hour, to_ms], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, u16>(1)?,
                Totals {
                    requests: row.get::<_, i64>(2)? as u64,
                    input_bytes: row.get::<_, i64>(3)? as u64,
                    output_bytes: row.get::<_, i64>(4)? as u64,
                    input_pixels: row.get::<_, i64>(5)? as u64,
                    output_pixels: row.get::<_, i64>(6)? as u64,
                    cpu_us: row.get::<_, i64>(7)? as u64,
                    source_bytes: row.get::<_, i64>(8)? as u64,
                },
            ))
        })?;
        for row in rows {
            let (hour, status, totals) = row?;
            let start = hour.div_euclid(step) * step;
            buckets.entry(start).or_default().entry(status).or_default().add(&totals);
        }
        Ok(buckets.into_iter().map(|(start_ms, by_status)| Bucket { start_ms, by_status }).collect())
    }
}

impl Drop for Rollups {
    /// The blocking client closes its connection on drop by running its own runtime, which
    /// cannot start on a thread that drives ours: close it on a thread of its own.
    fn drop(&mut self) {
        if let Store::Postgres { client, .. } = &mut self.store {
            if let Some(client) = client.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = std::thread::Builder::new().name("pg-close".into()).spawn(move || drop(client));
            }
        }
    }
}

/// One batch in one PostgreSQL transaction: the batch id first (a concurrent aggregator with the
/// same batch waits here for this transaction, then finds the id and does nothing), then the sums.
fn apply_pg(
    c: &mut postgres::Client,
    batch_id: &str,
    records: usize,
    sums: &BTreeMap<(u64, i64, u16), Totals>,
    (windows, marks): &(WindowSums, NodeMarks),
    now_ms: i64,
) -> Result<bool, postgres::Error> {
    let mut tx = c.transaction()?;
    let inserted = tx.execute(
        "INSERT INTO usage_applied_batches (batch_id, records, applied_ms) VALUES ($1, $2, $3)
         ON CONFLICT (batch_id) DO NOTHING",
        &[&batch_id, &(records as i64), &now_ms],
    )?;
    if inserted == 0 {
        return Ok(false);
    }
    let upsert = tx.prepare(&format!(
        "INSERT INTO usage_hourly (tenant, hour_ms, status, requests, input_bytes, output_bytes, input_pixels,
                                   output_pixels, cpu_us, source_bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (tenant, hour_ms, status) DO UPDATE SET {}",
        saturating_sums("usage_hourly", "EXCLUDED")
    ))?;
    for ((tenant, hour, status), t) in sums {
        tx.execute(
            &upsert,
            &[
                &(*tenant as i64),
                hour,
                &i32::from(*status),
                &db_int(t.requests),
                &db_int(t.input_bytes),
                &db_int(t.output_bytes),
                &db_int(t.input_pixels),
                &db_int(t.output_pixels),
                &db_int(t.cpu_us),
                &db_int(t.source_bytes),
            ],
        )?;
    }
    let upsert = tx.prepare(&format!(
        "INSERT INTO usage_quota_totals (tenant, period_s, start_ms, end_ms, requests, input_bytes, output_pixels,
                                         cpu_us)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (tenant, period_s, start_ms) DO UPDATE SET {}",
        saturating_columns(&QUOTA_COLUMNS, "usage_quota_totals", "EXCLUDED")
    ))?;
    for ((tenant, period_s, start), (end, u)) in windows {
        tx.execute(
            &upsert,
            &[
                &(*tenant as i64),
                &(*period_s as i32),
                start,
                end,
                &db_int(u.requests),
                &db_int(u.input_bytes),
                &db_int(u.output_pixels),
                &db_int(u.cpu_us),
            ],
        )?;
    }
    let mark = tx.prepare(
        "INSERT INTO usage_quota_marks (tenant, node, time_ms) VALUES ($1, $2, $3)
         ON CONFLICT (tenant, node) DO UPDATE SET time_ms = GREATEST(usage_quota_marks.time_ms, EXCLUDED.time_ms)",
    )?;
    for ((tenant, node), time_ms) in marks {
        tx.execute(&mark, &[&(*tenant as i64), node, time_ms])?;
    }
    tx.commit()?;
    Ok(true)
}

/// The rollup columns' update on a conflict: each sum saturates at `i64::MAX`, the largest a
/// column holds, instead of failing the batch (PostgreSQL: "bigint out of range") or turning
/// into a REAL (SQLite). Both values are ≥ 0, so the subtraction cannot overflow.
fn saturating_sums(table: &str, excluded: &str) -> String {
    saturating_columns(
        &["requests", "input_bytes", "output_bytes", "input_pixels", "output_pixels", "cpu_us", "source_bytes"],
        table,
        excluded,
    )
}

fn saturating_columns(columns: &[&str], table: &str, excluded: &str) -> String {
    columns
        .iter()
        .map(|c| {
            format!(
                "{c} = CASE WHEN {table}.{c} > 9223372036854775807 - {excluded}.{c} THEN 9223372036854775807 \
                 ELSE {table}.{c} + {excluded}.{c} END"
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A sum as the database's signed 64-bit integer, saturated.
fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// How often a cluster api node reads the quota totals the aggregators keep with the rollups.
pub const TOTALS_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);
/// Every this many reads, the totals of every tenant (else of the tenants the board knows).
const FULL_READ_EVERY: u32 = 25;

/// A cluster api node's (and the identity service's) feed of its board: the totals the
/// aggregators commit with each batch, read from the rollups database every
/// [`TOTALS_POLL_INTERVAL`], off the request path: an api node reads the tenants it has
/// admitted (every tenant's each 5 s); with `every_tenant` (the identity service, which admits
/// none but reports every tenant's quota) every tenant's each time. When the read fails (the
/// database away) the board keeps the last totals and its own count goes on from them.
pub async fn follow_totals(
    rollups: std::sync::Arc<Rollups>,
    board: std::sync::Arc<crate::quota::QuotaBoard>,
    every_tenant: bool,
) {
    let mut reads: u32 = 0;
    let mut failing = false;
    loop {
        let tenants = (!every_tenant && !reads.is_multiple_of(FULL_READ_EVERY)).then(|| board.tenants());
        reads = reads.wrapping_add(1);
        let rollups = rollups.clone();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let read = tokio::task::spawn_blocking(move || rollups.quota_totals(tenants.as_deref(), now)).await;
        match read {
            Ok(Ok(totals)) => {
                if failing {
                    tracing::info!("quota totals: read again");
                    failing = false;
                }
                crate::quota::TotalsSink::publish(&*board, totals);
            }
            Ok(Err(e)) if !failing => {
                tracing::warn!(error = %e, "quota totals: cannot read them; counting on from the last ones");
                failing = true;
            }
            Ok(Err(_)) => {}
            Err(e) => tracing::error!(error = %e, "quota totals: read task failed"),
        }
        tokio::time::sleep(TOTALS_POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::tests::record;

    #[test]
    fn a_batch_is_applied_once() {
        let rollups = Rollups::open_in_memory().unwrap();
        let records: Vec<UsageRecord> = (0..9).map(record).collect();
        assert!(rollups.apply("b1", &records, 0).unwrap());
        assert!(!rollups.apply("b1", &records, 0).unwrap(), "a replay changes nothing");
        assert!(rollups.is_applied("b1").unwrap());
        let t0 = records[0].time_ms;
        let buckets = rollups.query(1, t0 - HOUR_MS, t0 + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!(buckets.len(), 1);
        let totals = buckets[0].total();
        // Tenant 1 has records 0, 3, 6.
        assert_eq!(totals.requests, 3);
        assert_eq!(totals.input_bytes, 100 + 103 + 106);
        assert_eq!(totals.input_pixels, 3 * 200);
        // Of those, record 3 fetched its source (odd records do).
        assert_eq!(totals.source_bytes, 1003);
        assert_eq!(buckets[0].billable().source_bytes, 1003);
    }

    /// The hourly table as the builds before `source_bytes` made it.
    const HOURLY_BEFORE_SOURCE_BYTES: &str = "
        CREATE TABLE applied_batches (
            batch_id TEXT PRIMARY KEY,
            records INTEGER NOT NULL,
            applied_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE hourly (
            tenant INTEGER NOT NULL,
            hour_ms INTEGER NOT NULL,
            status INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            input_bytes INTEGER NOT NULL,
            output_bytes INTEGER NOT NULL,
            input_pixels INTEGER NOT NULL,
            output_pixels INTEGER NOT NULL,
            cpu_us INTEGER NOT NULL,
            PRIMARY KEY (tenant, hour_ms, status)
        ) WITHOUT ROWID;";

    #[test]
    fn a_database_of_an_older_build_gains_source_bytes_and_keeps_its_hours() {
        let dir = std::env::temp_dir().join(format!("usage-rollups-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rollups.sqlite");
        let r = record(1);
        let hour = r.time_ms.div_euclid(HOUR_MS) * HOUR_MS;
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(HOURLY_BEFORE_SOURCE_BYTES).unwrap();
            old.execute(
                "INSERT INTO hourly VALUES (?1, ?2, 200, 5, 500, 250, 1000, 250, 450)",
                params![r.tenant as i64, hour],
            )
            .unwrap();
        }
        let rollups = Rollups::open(&path).unwrap();
        let before = rollups.query(r.tenant, hour, hour + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!(
            before[0].billable(),
            Totals {
                requests: 5,
                input_bytes: 500,
                output_bytes: 250,
                input_pixels: 1000,
                output_pixels: 250,
                cpu_us: 450,
                source_bytes: 0
            }
        );
        assert!(rollups.apply("b1", std::slice::from_ref(&r), 0).unwrap());
        let after = rollups.query(r.tenant, hour, hour + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!((after[0].billable().requests, after[0].billable().source_bytes), (6, r.source_bytes));
        drop(rollups);
        // Opening it again adds nothing; an older aggregator's insert, which does not name the
        // column, still works (its sums read 0).
        let rollups = Rollups::open(&path).unwrap();
        rollups
            .lock()
            .execute(
                "INSERT INTO hourly (tenant, hour_ms, status, requests, input_bytes, output_bytes, input_pixels,
                                     output_pixels, cpu_us) VALUES (?1, ?2, 429, 1, 0, 0, 0, 0, 0)",
                params![r.tenant as i64, hour],
            )
            .unwrap();
        let again = rollups.query(r.tenant, hour, hour + HOUR_MS, Granularity::Hour).unwrap();
        assert_eq!((again[0].total().requests, again[0].total().source_bytes), (7, r.source_bytes));
        drop(rollups);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sums_saturate_instead_of_failing_a_batch() {
        let rollups = Rollups::open_in_memory().unwrap();
        // A refused 2147483647 × 2147483647 header, three times in one hour: each record is
        // 4.6e18 pixels, their sum over i64::MAX.
        let mut huge = record(0);
        (huge.input_width, huge.input_height, huge.status) = (i32::MAX as u32, i32::MAX as u32, 413);
        let t0 = huge.time_ms;
        for batch in ["h1", "h2", "h3"] {
            assert!(rollups.apply(batch, &[huge.clone(), huge.clone()], 0).unwrap(), "{batch} applied");
        }
        let normal = record(3);
        assert!(rollups.apply("n1", std::slice::from_ref(&normal), 0).unwrap(), "the next batch still applies");
        for granularity in [Granularity::Hour, Granularity::Day] {
            let buckets = rollups.query(1, t0 - HOUR_MS, t0 + HOUR_MS, granularity).unwrap();
            let refused = buckets.iter().map(|b| b.by_status[&413]).next().expect("the 413 bucket");
            assert_eq!(refused.requests, 6);
            assert_eq!(refused.input_pixels, i64::MAX as u64, "saturated, not wrapped");
            let total = buckets[0].total();
            assert_eq!(total.input_pixels, i64::MAX as u64 + normal.input_pixels());
        }
    }

    #[test]
    fn days_sum_their_hours_and_statuses_stay_apart() {
        let rollups = Rollups::open_in_memory().unwrap();
        let day = 20_000 * DAY_MS;
        let mut a = record(0);
        a.tenant = 7;
        a.time_ms = day + 3 * HOUR_MS;
        let mut b = a.clone();
        b.time_ms = day + 5 * HOUR_MS;
        b.status = 429;
        let mut c = a.clone();
        c.time_ms = day + DAY_MS + 1;
        rollups.apply("x", &[a, b, c], 0).unwrap();
        let hours = rollups.query(7, day, day + 2 * DAY_MS, Granularity::Hour).unwrap();
        assert_eq!(hours.len(), 3);
        let days = rollups.query(7, day, day + 2 * DAY_MS, Granularity::Day).unwrap();
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].by_status[&200].requests, 1);
        assert_eq!(days[0].by_status[&429].requests, 1);
        assert!(rollups.query(8, day, day + 2 * DAY_MS, Granularity::Day).unwrap().is_empty(), "other tenant");
    }
}
