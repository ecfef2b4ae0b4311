//! The authoritative store of the cluster: tenants, keys and the outbox of changes in PostgreSQL,
//! with exactly the methods and meanings of the SQLite [`IdentityStore`](crate::IdentityStore).
//! Consistent before available: every write is one transaction that first takes a
//! database-wide advisory lock, so writers — threads of one process or several identity
//! processes — are serialised as SQLite's `BEGIN IMMEDIATE` serialises them. That makes the
//! outbox's `MAX(version) + 1` gap-free (a sequence would leave holes on rollback) and commits
//! versions in order (the lock is released only after the commit is visible), and each change
//! row the exact state its transaction left.
//!
//! Connections: a pool of up to [`POOL_SIZE`], opened on demand; each call takes one for one
//! transaction. Connecting gives up after 2 s and every statement after 5 s (PostgreSQL's
//! `statement_timeout`, which also bounds waiting for the write lock), so a database that is
//! down or refuses comes back as [`StoreError::Storage`] promptly: the admin API answers 503
//! and nobody hangs. A pooled connection the server closed meanwhile (a restart) is replaced
//! once, transparently, when its transaction cannot begin; nothing needs to be recreated after
//! PostgreSQL comes back. A server that is frozen (SIGSTOP) but whose kernel still accepts data
//! is not detected: the blocking client has no per-call deadline.
//!
//! The API is synchronous and blocking (the `postgres` crate drives its own small runtime per
//! connection): call it from a blocking thread, never from async code. Dropping the store closes
//! its connections on a thread of its own, so that also works from async code.
//!
//! Schema: `PG_MIGRATIONS` mirrors the SQLite schema table for table; `schema_version` records
//! the migrations that ran, each in its own transaction under an advisory lock, so processes
//! starting together against a new database migrate it once.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use postgres::error::SqlState;
use postgres::types::{FromSql, Type};
use postgres::{Client, Config, IsolationLevel, NoTls, Row, Transaction};

use crate::error::{Missing, StorageError, StoreError};
use crate::key::{self, KeyId};
use crate::model::{
    Actor, AdminAction, AdminRecord, ApiKey, Change, ChangeKind, Credential, Rotation, Snapshot, Tenant, TenantId,
    TenantLimits, TenantState, TenantStatus,
};
// Shared with the SQLite store: both accept, refuse and record alike.
use crate::rules::{
    from_ms, grace_end, issued_key, key_detail, limits_detail, log_tenant, new_tenant, now_ms, quota_text, quoted,
    rotated_expiry, rotation_detail, sources_text, sql_tenant, tenant_state, to_ms, validate_expiry, validate_label,
    validate_tenant_name, LogNote,
};
use crate::sources::KeyPurpose;

/// Most connections one store holds open; a call beyond waits for one to be returned.
pub const POOL_SIZE: usize = 8;
/// How long opening a connection may take before the call fails with `Storage`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// `statement_timeout` of every connection, in milliseconds: bounds each statement, waiting for
/// the write lock included.
const STATEMENT_TIMEOUT_MS: u32 = 5_000;
/// A transaction left open by a vanished caller is ended by the server after this long.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u32 = 30_000;
/// Advisory lock keys (per database): "rsz_migr" and "rsz_writ" as big-endian ASCII.
const MIGRATION_LOCK: i64 = 0x7273_7a5f_6d69_6772;
const WRITE_LOCK: i64 = 0x7273_7a5f_7772_6974;
/// Attempts at a fresh random key id when one collides (at 71 bits, the second never runs).
const KEY_ID_ATTEMPTS: usize = 3;

/// Migration `i` brings the schema from version `i` to `i + 1`. Never edit one that has shipped.
const PG_MIGRATIONS: &[&str] = &[
    // 1: tenants, keys, and the outbox of changes (the SQLite schema's migration 1).
    r#"
    CREATE TABLE tenants (
        id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- never reused
        name             TEXT    NOT NULL,
        status           TEXT    NOT NULL CHECK (status IN ('active', 'suspended')),
        -- Limit overrides; NULL = the deployment's default.
        rate_per_sec     DOUBLE PRECISION CHECK (rate_per_sec > 0),
        burst            BIGINT  CHECK (burst BETWEEN 1 AND 4294967295),
        max_input_bytes  BIGINT  CHECK (max_input_bytes >= 1),
        max_input_pixels BIGINT  CHECK (max_input_pixels >= 1),
        created_at       BIGINT  NOT NULL -- Unix milliseconds
    );
    -- Names are ASCII (the store checks); under the C collation lower() folds exactly A-Z, as
    -- SQLite's NOCASE does, whatever the database's locale.
    CREATE UNIQUE INDEX tenants_name_nocase ON tenants (lower(name COLLATE "C"));

    CREATE TABLE api_keys (
        id            TEXT COLLATE "C" PRIMARY KEY CHECK (id ~ '^[0-9A-Za-z]{12}$'), -- the id inside the key
        seq           BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE, -- insertion order (SQLite's rowid)
        tenant_id     BIGINT NOT NULL REFERENCES tenants (id),
        label         TEXT   NOT NULL,
        secret_sha256 BYTEA  NOT NULL CHECK (length(secret_sha256) = 32), -- never the secret itself
        created_at    BIGINT NOT NULL,
        revoked_at    BIGINT
    );
    CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, seq);

    -- The outbox: one row per committed mutation, written in the mutation's transaction, under
    -- the write lock: `version` is MAX + 1, gap-free and committed in order.
    CREATE TABLE changes (
        version          BIGINT PRIMARY KEY CHECK (version >= 1),
        at               BIGINT NOT NULL, -- Unix milliseconds
        kind             TEXT   NOT NULL CHECK (kind IN ('tenant', 'key')),
        tenant_id        BIGINT NOT NULL,
        status           TEXT   NOT NULL CHECK (status IN ('active', 'suspended')),
        rate_per_sec     DOUBLE PRECISION,
        burst            BIGINT,
        max_input_bytes  BIGINT,
        max_input_pixels BIGINT,
        key_id           TEXT COLLATE "C" CHECK (key_id ~ '^[0-9A-Za-z]{12}$'),
        secret_sha256    BYTEA CHECK (length(secret_sha256) = 32),
        revoked          BOOLEAN,
        CHECK ((kind = 'key') = (key_id IS NOT NULL AND secret_sha256 IS NOT NULL AND revoked IS NOT NULL))
    );
    "#,
    // 2: key expiry (NULL: never), in the table and in each key change; the admin log (the
    // SQLite schema's migration 2).
    r#"
    ALTER TABLE api_keys ADD COLUMN expires_at BIGINT; -- Unix milliseconds
    ALTER TABLE changes ADD COLUMN expires_at BIGINT CHECK (expires_at IS NULL OR kind = 'key');

    -- Who asked for which admin write, when, and how it ended. A committed write's row is
    -- written in the write's transaction, under the write lock (so ids are in commit order); a
    -- refused write's in one of its own. Never a secret.
    CREATE TABLE admin_log (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at         BIGINT NOT NULL, -- Unix milliseconds
        operator   TEXT   NOT NULL,
        request_id TEXT   NOT NULL,
        action     TEXT   NOT NULL,
        tenant_id  BIGINT,
        key_id     TEXT COLLATE "C",
        outcome    TEXT   NOT NULL,
        detail     TEXT   NOT NULL
    );
    "#,
    // 3: a tenant's volume quota (NULL: the deployment's default), in its text form (the
    // SQLite schema's migration 3).
    r#"
    ALTER TABLE tenants ADD COLUMN quota TEXT;
    ALTER TABLE changes ADD COLUMN quota TEXT;
    "#,
    // 4: signed URLs: a tenant's sources and max-age, a key's purpose (SQLite's migration 4).
    r#"
    ALTER TABLE tenants ADD COLUMN sources TEXT;
    ALTER TABLE tenants ADD COLUMN cache_max_age BIGINT CHECK (cache_max_age >= 0);
    ALTER TABLE api_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'api' CHECK (purpose IN ('api', 'signing'));
    ALTER TABLE changes ADD COLUMN sources TEXT;
    ALTER TABLE changes ADD COLUMN cache_max_age BIGINT;
    ALTER TABLE changes ADD COLUMN purpose TEXT CHECK (purpose IS NULL OR kind = 'key');
    "#,
];

/// The schema version this build reads and writes.
const PG_SCHEMA_VERSION: usize = PG_MIGRATIONS.len();

/// The identity store on PostgreSQL. `Send + Sync`: share it (an `Arc`) between threads.
pub struct PgIdentityStore {
    config: Config,
    /// None: plaintext connections.
    tls: Option<tls::PostgresTls>,
    pool: Mutex<Pool>,
    /// Signalled whenever a connection or a slot for one is given back.
    returned: Condvar,
}

struct Pool {
    idle: Vec<Client>,
    /// Connections in existence (idle or in use) plus those being opened.
    open: usize,
}

/// How a transaction reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Each statement sees what committed before it (READ COMMITTED).
    Read,
    /// One consistent view of the whole transaction (REPEATABLE READ, read only).
    Consistent,
    /// Serialised with every other writer by the write lock.
    Write,
}

impl PgIdentityStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`), brings its schema up
    /// to date and keeps that connection as the pool's first. With `tls_ca` every connection
    /// requires TLS and a server certificate from that CA naming the URL's host.
    pub fn connect(url: &str, tls_ca: Option<&std::path::Path>) -> Result<Self, StoreError> {
        let mut config: Config = url.parse()?;
        let tls = tls_ca.map(tls::PostgresTls::new).transpose().map_err(StorageError::tls)?;
        if tls.is_some() {
            tls::PostgresTls::require(&mut config);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("resizer-identity");
        }
        let store = PgIdentityStore {
            config,
            tls,
            pool: Mutex::new(Pool { idle: Vec::new(), open: 0 }),
            returned: Condvar::new(),
        };
        let mut first = store.open_connection()?;
        migrate(&mut first)?;
        let mut pool = store.lock();
        pool.idle.push(first);
        pool.open += 1;
        drop(pool);
        Ok(store)
    }

    /// A tenant the process makes for itself, logged as [`Actor::process`].
    pub fn create_tenant(&self, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError> {
        self.create_tenant_as(&Actor::process(), name, limits)
    }

    pub fn create_tenant_as(&self, actor: &Actor, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError> {
        let asked = LogNote { detail: format!("name={}", quoted(name)), ..LogNote::default() };
        self.logged_write(actor, AdminAction::CreateTenant, asked, |tx| {
            validate_tenant_name(name)?;
            limits.validate()?;
            let created_at = now_ms();
            let l = SqlLimits::from(&limits);
            let inserted = tx.query_opt(
                "INSERT INTO tenants (name, status, rate_per_sec, burst, max_input_bytes, max_input_pixels, created_at,
                                      quota, sources, cache_max_age)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT DO NOTHING
                 RETURNING id",
                &[
                    &name,
                    &TenantStatus::Active.as_str(),
                    &l.rate,
                    &l.burst,
                    &l.bytes,
                    &l.pixels,
                    &created_at,
                    &l.quota,
                    &l.sources,
                    &l.max_age,
                ],
            )?;
            // The only unique key a new row can collide with is the name's.
            let Some(row) = inserted else { return Err(StoreError::Conflict(name.to_string())) };
            let detail = format!("name={} {}", quoted(name), limits_detail(&limits));
            let tenant = new_tenant(TenantId::new(row.try_get::<_, Unsigned>(0)?.0), name, limits.clone(), created_at);
            append_change(tx, created_at, &ChangeKind::Tenant(tenant_state(&tenant)))?;
            let note = LogNote::tenant(tenant.id, detail);
            Ok((tenant, note))
        })
    }

    pub fn get_tenant(&self, id: TenantId) -> Result<Tenant, StoreError> {
        self.run(Access::Read, |tx| tenant_by_id(tx, id))
    }

    /// The tenant whose name equals `name` case-insensitively.
    pub fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError> {
        self.run(Access::Read, |tx| {
            let row = tx.query_opt(
                &format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants WHERE lower(name COLLATE \"C\") = lower($1 COLLATE \"C\")"
                ),
                &[&name],
            )?;
            match row {
                Some(row) => Ok(tenant_from_row(&row)?),
                None => Err(StoreError::NotFound(Missing::TenantNamed(name.to_string()))),
            }
        })
    }

    /// Every tenant, oldest first.
    pub fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.run(Access::Read, |tx| {
            let rows = tx.query(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"), &[])?;
            Ok(rows.iter().map(tenant_from_row).collect::<Result<_, _>>()?)
        })
    }

    /// Replaces the tenant's overrides as a whole (a `None` field returns to the default).
    /// Setting the limits it already has writes no change.
    pub fn update_limits(&self, actor: &Actor, id: TenantId, limits: TenantLimits) -> Result<Tenant, StoreError> {
        let asked = LogNote::tenant(id, limits_detail(&limits));
        self.logged_write(actor, AdminAction::UpdateLimits, asked.clone(), |tx| {
            limits.validate()?;
            let mut tenant = tenant_by_id(tx, id)?;
            if tenant.limits == limits {
                return Ok((tenant, asked.clone().unchanged()));
            }
            let l = SqlLimits::from(&limits);
            tx.execute(
                "UPDATE tenants SET rate_per_sec = $2, burst = $3, max_input_bytes = $4, max_input_pixels = $5,
                                    quota = $6, sources = $7, cache_max_age = $8
                 WHERE id = $1",
                &[&sql_tenant(id), &l.rate, &l.burst, &l.bytes, &l.pixels, &l.quota, &l.sources, &l.max_age],
            )?;
            tenant.limits = limits.clone();
            append_change(tx, now_ms(), &ChangeKind::Tenant(tenant_state(&tenant)))?;
            Ok((tenant, asked.clone()))
        })
    }

    /// Suspends or reactivates a tenant. Setting the status it already has writes no change.
    pub fn set_status(&self, actor: &Actor, id: TenantId, status: TenantStatus) -> Result<Tenant, StoreError> {
        let asked = LogNote::tenant(id, format!("status={status}"));
        self.logged_write(actor, AdminAction::SetStatus, asked.clone(), |tx| {
            let mut tenant = tenant_by_id(tx, id)?;
            if tenant.status == status {
                return Ok((tenant, asked.clone().unchanged()));
            }
            tx.execute("UPDATE tenants SET status = $2 WHERE id = $1", &[&sql_tenant(id), &status.as_str()])?;
            tenant.status = status;
            append_change(tx, now_ms(), &ChangeKind::Tenant(tenant_state(&tenant)))?;
            Ok((tenant, asked.clone()))
        })
    }

    /// A key the process makes for itself, logged as [`Actor::process`].
    pub fn create_key(&self, tenant: TenantId, label: &str) -> Result<(ApiKey, String), StoreError> {
        self.create_key_as(&Actor::process(), tenant, label, None, KeyPurpose::Api)
    }

    /// Issues a key, refused from `expires_at` on if given (which must be in the future). The
    /// returned string is the whole key (`rsz_…`), the only time its secret exists outside the
    /// caller: the store keeps its SHA-256. A suspended tenant may be given keys; they are
    /// refused like its others until it is reactivated.
    pub fn create_key_as(
        &self,
        actor: &Actor,
        tenant: TenantId,
        label: &str,
        expires_at: Option<SystemTime>,
        purpose: KeyPurpose,
    ) -> Result<(ApiKey, String), StoreError> {
        let asked = LogNote { tenant: Some(tenant), key: None, detail: key_detail(label, expires_at, purpose) };
        self.logged_write(actor, AdminAction::CreateKey, asked.clone(), |tx| {
            validate_label(label)?;
            let created_at = now_ms();
            let expires_at = expires_at.map(|t| validate_expiry(t, created_at)).transpose()?;
            let owner = tenant_by_id(tx, tenant)?;
            let (api_key, token) = issue_key(tx, &owner, label, created_at, expires_at, purpose)?;
            let note = LogNote { key: Some(api_key.id), ..asked.clone() };
            Ok(((api_key, token), note))
        })
    }

    pub fn get_key(&self, id: KeyId) -> Result<ApiKey, StoreError> {
        self.run(Access::Read, |tx| Ok(key_by_id(tx, id)?.0))
    }

    /// The tenant's keys, revoked ones included, oldest first.
    pub fn list_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>, StoreError> {
        // One consistent view, so that the tenant cannot vanish between the check and the list.
        self.run(Access::Consistent, |tx| {
            tenant_by_id(tx, tenant)?;
            let rows = tx.query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY seq"),
                &[&sql_tenant(tenant)],
            )?;
            Ok(rows.iter().map(key_from_row).collect::<Result<_, _>>()?)
        })
    }

    /// Revokes a key for good. Revoking a revoked key changes nothing and returns it as it is.
    pub fn revoke_key(&self, actor: &Actor, id: KeyId) -> Result<ApiKey, StoreError> {
        let asked = LogNote::key(None, id, String::new());
        self.logged_write(actor, AdminAction::RevokeKey, asked, |tx| {
            let (mut api_key, secret_hash) = key_by_id(tx, id)?;
            let note = LogNote::key(Some(api_key.tenant), id, String::new());
            if api_key.revoked_at.is_some() {
                return Ok((api_key, note.unchanged()));
            }
            let revoked_at = now_ms();
            tx.execute("UPDATE api_keys SET revoked_at = $2 WHERE id = $1", &[&id.as_str(), &revoked_at])?;
            api_key.revoked_at = Some(from_ms(revoked_at));
            let owner = tenant_by_id(tx, api_key.tenant)?;
            let credential = Credential {
                key: id,
                secret_hash,
                revoked: true,
                expires_at: api_key.expires_at,
                purpose: api_key.purpose,
                tenant: tenant_state(&owner),
            };
            append_change(tx, revoked_at, &ChangeKind::Credential(credential))?;
            Ok((api_key, note))
        })
    }

    /// Replaces a key in one transaction: a new key for its tenant and label (expiring at
    /// `new_expires_at`, if given), and the old key set to expire `grace` from now, or when it
    /// already would if that is sooner. A revoked or expired key is refused.
    pub fn rotate_key(
        &self,
        actor: &Actor,
        id: KeyId,
        grace: Duration,
        new_expires_at: Option<SystemTime>,
    ) -> Result<Rotation, StoreError> {
        let asked = LogNote::key(None, id, format!("grace_ms={}", grace.as_millis()));
        self.logged_write(actor, AdminAction::RotateKey, asked, |tx| {
            let now = now_ms();
            let (mut old, secret_hash) = key_by_id(tx, id)?;
            let old_expires_at = rotated_expiry(&old, grace_end(now, grace)?, now)?;
            let new_expires_at = new_expires_at.map(|t| validate_expiry(t, now)).transpose()?;
            tx.execute("UPDATE api_keys SET expires_at = $2 WHERE id = $1", &[&id.as_str(), &old_expires_at])?;
            old.expires_at = Some(from_ms(old_expires_at));
            let owner = tenant_by_id(tx, old.tenant)?;
            let credential = Credential {
                key: id,
                secret_hash,
                revoked: false,
                expires_at: old.expires_at,
                purpose: old.purpose,
                tenant: tenant_state(&owner),
            };
            append_change(tx, now, &ChangeKind::Credential(credential))?;
            let (new, token) = issue_key(tx, &owner, &old.label.clone(), now, new_expires_at, old.purpose)?;
            let note = LogNote::key(Some(old.tenant), id, rotation_detail(&new, old_expires_at));
            Ok((Rotation { old: old.clone(), new, token }, note))
        })
    }

    /// The admin log, newest first: at most `limit` records with ids below `before`.
    pub fn admin_log(&self, before: Option<u64>, limit: usize) -> Result<Vec<AdminRecord>, StoreError> {
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(Access::Read, |tx| {
            let rows = tx.query(
                &format!("SELECT {LOG_COLUMNS} FROM admin_log WHERE id < $1 ORDER BY id DESC LIMIT $2"),
                &[&before, &limit],
            )?;
            Ok(rows.iter().map(log_from_row).collect::<Result<_, _>>()?)
        })
    }

    /// The version of the last change; 0 if nothing was ever written.
    pub fn version(&self) -> Result<u64, StoreError> {
        self.run(Access::Read, |tx| Ok(head_version(tx)?))
    }

    /// Every credential, and the version they are current at, read in one consistent view.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.run(Access::Consistent, |tx| {
            let version = head_version(tx)?;
            let rows = tx.query(
                "SELECT k.id, k.secret_sha256, k.revoked_at IS NOT NULL,
                        t.id, t.status, t.rate_per_sec, t.burst, t.max_input_bytes, t.max_input_pixels, k.expires_at,
                        t.quota, t.sources, t.cache_max_age, k.purpose
                 FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                 ORDER BY k.id",
                &[],
            )?;
            let credentials = rows
                .iter()
                .map(|row| {
                    Ok(Credential {
                        key: row.try_get::<_, Key>(0)?.0,
                        secret_hash: row.try_get::<_, Hash>(1)?.0,
                        revoked: row.try_get(2)?,
                        expires_at: row.try_get::<_, Option<i64>>(9)?.map(from_ms),
                        purpose: purpose_from_row(row, 13)?,
                        tenant: TenantState {
                            id: TenantId::new(row.try_get::<_, Unsigned>(3)?.0),
                            status: row.try_get::<_, Status>(4)?.0,
                            limits: limits_from_row(row, 5, 10)?,
                        },
                    })
                })
                .collect::<Result<_, postgres::Error>>()?;
            Ok(Snapshot { version, credentials })
        })
    }

    /// Every change with a version above `version`, in order.
    pub fn changes_since(&self, version: u64) -> Result<Vec<Change>, StoreError> {
        self.run(Access::Read, |tx| {
            let rows = tx.query(
                "SELECT version, at, kind, tenant_id, status, rate_per_sec, burst, max_input_bytes, max_input_pixels,
                        key_id, secret_sha256, revoked, expires_at, quota, sources, cache_max_age, purpose
                 FROM changes WHERE version > $1 ORDER BY version",
                &[&i64::try_from(version).unwrap_or(i64::MAX)],
            )?;
            Ok(rows.iter().map(change_from_row).collect::<Result<_, _>>()?)
        })
    }

    /// An admin write: `f` and the admin log's row for it in one write transaction. If the store
    /// refuses the write, the refusal is logged in a transaction of its own, with what was
    /// `asked`; if even that fails, the caller still gets the refusal (the write did not happen,
    /// so only the record of an attempt is lost).
    fn logged_write<T>(
        &self,
        actor: &Actor,
        action: AdminAction,
        asked: LogNote,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<(T, LogNote), StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.run(Access::Write, |tx| {
            let (out, note) = f(tx)?;
            append_log(tx, actor, action, "ok", &note)?;
            Ok(out)
        });
        if let Err(e) = &result {
            if let Some(outcome) = e.outcome() {
                let refused = asked.clone().refused(e);
                let _ = self.run(Access::Write, |tx| append_log(tx, actor, action, outcome, &refused));
            }
        }
        result
    }

    /// Runs `f` in one transaction on a pooled connection: committed if it returns `Ok`, rolled
    /// back otherwise. A write transaction first takes the write lock.
    fn run<T>(
        &self,
        access: Access,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.checkout()?;
        let result = match transact(conn.client(), access, &mut f) {
            // A pooled connection the server has closed since it was last used (a restart, an
            // administrator): nothing ran on it, so a fresh one may take its place, once. The
            // other idle ones date from before too: they go as well.
            Err(Attempt::NotStarted(e)) if connection_lost(&e) => {
                conn.discard();
                self.discard_idle();
                conn = self.checkout()?;
                transact(conn.client(), access, &mut f)
            }
            other => other,
        };
        conn.discard_if_closed();
        result.map_err(|attempt| match attempt {
            Attempt::NotStarted(e) => e.into(),
            Attempt::Failed(e) => e,
        })
    }

    /// An idle connection, or a new one while fewer than [`POOL_SIZE`] exist, or the next one
    /// given back.
    fn checkout(&self) -> Result<Pooled<'_>, StoreError> {
        let mut pool = self.lock();
        loop {
            if let Some(client) = pool.idle.pop() {
                return Ok(Pooled { store: self, client: Some(client) });
            }
            if pool.open < POOL_SIZE {
                pool.open += 1;
                break;
            }
            pool = self.returned.wait(pool).unwrap_or_else(PoisonError::into_inner);
        }
        drop(pool);
        match self.open_connection() {
            Ok(client) => Ok(Pooled { store: self, client: Some(client) }),
            Err(e) => {
                self.lock().open -= 1;
                self.returned.notify_one();
                Err(e)
            }
        }
    }

    /// Close every idle connection (after one of them turned out dead).
    fn discard_idle(&self) {
        let stale = {
            let mut pool = self.lock();
            let stale = std::mem::take(&mut pool.idle);
            pool.open -= stale.len();
            stale
        };
        if !stale.is_empty() {
            self.returned.notify_all();
        }
        drop(stale);
    }

    fn open_connection(&self) -> Result<Client, StoreError> {
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone())?,
            None => self.config.connect(NoTls)?,
        };
        client.batch_execute(&format!(
            "SET statement_timeout = {STATEMENT_TIMEOUT_MS};
             SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS};"
        ))?;
        Ok(client)
    }

    fn lock(&self) -> MutexGuard<'_, Pool> {
        // The pool's bookkeeping is updated in single statements: a panic elsewhere cannot leave
        // it half-changed.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for PgIdentityStore {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.pool.get_mut().unwrap_or_else(PoisonError::into_inner).idle);
        if idle.is_empty() {
            return;
        }
        // Closing a connection runs its runtime, which panics on a thread that is inside an async
        // runtime: close them on a thread of our own.
        if let Ok(closer) = std::thread::Builder::new().name("identity-pg-close".into()).spawn(move || drop(idle)) {
            let _ = closer.join();
        }
    }
}

/// A connection taken from the pool; given back (or, if broken, its slot freed) when dropped.
struct Pooled<'a> {
    store: &'a PgIdentityStore,
    client: Option<Client>,
}

impl Pooled<'_> {
    fn client(&mut self) -> &mut Client {
        // Invariant: `client` is `Some` until `discard` or drop.
        self.client.as_mut().expect("a pooled connection is held until dropped")
    }

    /// Close this connection and free its slot.
    fn discard(&mut self) {
        if self.client.take().is_some() {
            self.store.lock().open -= 1;
            self.store.returned.notify_one();
        }
    }

    fn discard_if_closed(&mut self) {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.discard();
        }
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.store.lock().idle.push(client);
            self.store.returned.notify_one();
        }
    }
}

/// Why a transaction did not commit.
enum Attempt {
    /// It could not even begin: nothing ran.
    NotStarted(postgres::Error),
    Failed(StoreError),
}

/// One transaction of `access` on `client` around `f`.
fn transact<T>(
    client: &mut Client,
    access: Access,
    f: &mut impl FnMut(&mut Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, Attempt> {
    let mut builder = client.build_transaction();
    if access == Access::Consistent {
        builder = builder.isolation_level(IsolationLevel::RepeatableRead).read_only(true);
    }
    let mut tx = builder.start().map_err(Attempt::NotStarted)?;
    let mut body = || {
        if access == Access::Write {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
        }
        f(&mut tx)
    };
    let out = body().map_err(Attempt::Failed)?;
    tx.commit().map_err(|e| Attempt::Failed(e.into()))?;
    Ok(out)
}

/// The error says the connection is gone (closed, reset, the server shutting down) rather than
/// that a statement failed.
fn connection_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || code.code().starts_with("08");
    }
    // No SQLSTATE: the failure is the client's own (I/O), not a statement's.
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// Brings the schema up to date, one migration per transaction, each under the migration lock
/// so that processes starting together run each migration once.
fn migrate(client: &mut Client) -> Result<(), StoreError> {
    loop {
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version    INTEGER PRIMARY KEY,
                 applied_at BIGINT  NOT NULL -- Unix milliseconds
             )",
        )?;
        // A newer build's database is refused rather than misread; the server words the error,
        // so that it is a `Storage` error like every other failure here.
        tx.batch_execute(&format!(
            "DO $$ DECLARE found INTEGER := (SELECT MAX(version) FROM schema_version); BEGIN
                 IF found > {PG_SCHEMA_VERSION} THEN
                     RAISE EXCEPTION 'the database has schema version %, this build knows up to {PG_SCHEMA_VERSION}: it was written by a newer resizer', found;
                 END IF;
             END $$"
        ))?;
        let version: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?.try_get(0)?;
        let Some(migration) = usize::try_from(version).ok().and_then(|v| PG_MIGRATIONS.get(v)) else {
            return Ok(tx.commit()?);
        };
        tx.batch_execute(migration)?;
        tx.execute("INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)", &[&(version + 1), &now_ms()])?;
        tx.commit()?;
    }
}

/// Appends one change with the next version. Callers hold the write lock, so the MAX + 1 cannot
/// race and the version sequence has no holes.
fn append_change(tx: &mut Transaction<'_>, at: i64, kind: &ChangeKind) -> Result<u64, StoreError> {
    let version = head_version(tx)? + 1;
    let (tenant, key) = match kind {
        ChangeKind::Tenant(tenant) => (tenant, None),
        ChangeKind::Credential(c) => (&c.tenant, Some(c)),
    };
    let l = SqlLimits::from(&tenant.limits);
    tx.execute(
        "INSERT INTO changes (version, at, kind, tenant_id, status, rate_per_sec, burst, max_input_bytes,
                              max_input_pixels, key_id, secret_sha256, revoked, expires_at, quota, sources,
                              cache_max_age, purpose)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        &[
            &i64::try_from(version).unwrap_or(i64::MAX),
            &at,
            &if key.is_some() { "key" } else { "tenant" },
            &sql_tenant(tenant.id),
            &tenant.status.as_str(),
            &l.rate,
            &l.burst,
            &l.bytes,
            &l.pixels,
            &key.map(|c| c.key.as_str()),
            &key.map(|c| &c.secret_hash[..]),
            &key.map(|c| c.revoked),
            &key.and_then(|c| c.expires_at).map(to_ms),
            &l.quota,
            &l.sources,
            &l.max_age,
            &key.map(|c| c.purpose.as_str()),
        ],
    )?;
    Ok(version)
}

/// Inserts a new key for `owner` and appends its change (a fresh random id if one collides).
fn issue_key(
    tx: &mut Transaction<'_>,
    owner: &Tenant,
    label: &str,
    created_at: i64,
    expires_at: Option<i64>,
    purpose: KeyPurpose,
) -> Result<(ApiKey, String), StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let new = key::generate().map_err(StorageError::entropy)?;
        // A colliding id is skipped (a failed statement would end the transaction); from the
        // last attempt on the insert is plain, so that a collision is the database's error and
        // the loop ends.
        let on_conflict = if attempt < KEY_ID_ATTEMPTS { "ON CONFLICT (id) DO NOTHING" } else { "" };
        let inserted = tx.execute(
            &format!(
                "INSERT INTO api_keys (id, tenant_id, label, secret_sha256, created_at, expires_at, purpose)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) {on_conflict}"
            ),
            &[
                &new.id.as_str(),
                &sql_tenant(owner.id),
                &label,
                &&new.secret_hash[..],
                &created_at,
                &expires_at,
                &purpose.as_str(),
            ],
        )?;
        if inserted == 0 {
            continue;
        }
        let (api_key, credential) = issued_key(&new, owner, label, created_at, expires_at, purpose);
        append_change(tx, created_at, &ChangeKind::Credential(credential))?;
        return Ok((api_key, new.token));
    }
}

fn append_log(
    tx: &mut Transaction<'_>,
    actor: &Actor,
    action: AdminAction,
    outcome: &str,
    note: &LogNote,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO admin_log (at, operator, request_id, action, tenant_id, key_id, outcome, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &now_ms(),
            &actor.operator,
            &actor.request_id,
            &action.as_str(),
            &note.tenant.and_then(log_tenant),
            &note.key.as_ref().map(KeyId::as_str),
            &outcome,
            &note.detail,
        ],
    )?;
    Ok(())
}

fn head_version(tx: &mut Transaction<'_>) -> Result<u64, postgres::Error> {
    Ok(tx.query_one("SELECT COALESCE(MAX(version), 0) FROM changes", &[])?.try_get::<_, Unsigned>(0)?.0)
}

const TENANT_COLUMNS: &str =
    "id, name, status, rate_per_sec, burst, max_input_bytes, max_input_pixels, created_at, quota, sources, cache_max_age";
const KEY_COLUMNS: &str = "id, tenant_id, label, created_at, revoked_at, expires_at, purpose";
const LOG_COLUMNS: &str = "id, at, operator, request_id, action, tenant_id, key_id, outcome, detail";

/// A key and its secret's hash.
fn key_by_id(tx: &mut Transaction<'_>, id: KeyId) -> Result<(ApiKey, [u8; 32]), StoreError> {
    let row = tx
        .query_opt(&format!("SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys WHERE id = $1"), &[&id.as_str()])?
        .ok_or(StoreError::NotFound(Missing::Key(id)))?;
    Ok((key_from_row(&row)?, row.try_get::<_, Hash>(7)?.0))
}

fn tenant_by_id(tx: &mut Transaction<'_>, id: TenantId) -> Result<Tenant, StoreError> {
    match tx.query_opt(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"), &[&sql_tenant(id)])? {
        Some(row) => Ok(tenant_from_row(&row)?),
        None => Err(StoreError::NotFound(Missing::Tenant(id))),
    }
}

fn tenant_from_row(row: &Row) -> Result<Tenant, postgres::Error> {
    Ok(Tenant {
        id: TenantId::new(row.try_get::<_, Unsigned>(0)?.0),
        name: row.try_get(1)?,
        status: row.try_get::<_, Status>(2)?.0,
        limits: limits_from_row(row, 3, 8)?,
        created_at: from_ms(row.try_get(7)?),
    })
}

fn key_from_row(row: &Row) -> Result<ApiKey, postgres::Error> {
    Ok(ApiKey {
        id: row.try_get::<_, Key>(0)?.0,
        tenant: TenantId::new(row.try_get::<_, Unsigned>(1)?.0),
        label: row.try_get(2)?,
        created_at: from_ms(row.try_get(3)?),
        revoked_at: row.try_get::<_, Option<i64>>(4)?.map(from_ms),
        expires_at: row.try_get::<_, Option<i64>>(5)?.map(from_ms),
        purpose: purpose_from_row(row, 6)?,
    })
}

fn log_from_row(row: &Row) -> Result<AdminRecord, postgres::Error> {
    Ok(AdminRecord {
        id: row.try_get::<_, Unsigned>(0)?.0,
        at: from_ms(row.try_get(1)?),
        operator: row.try_get(2)?,
        request_id: row.try_get(3)?,
        action: row.try_get::<_, Action>(4)?.0,
        tenant: row.try_get::<_, Option<Unsigned>>(5)?.map(|v| TenantId::new(v.0)),
        key: row.try_get::<_, Option<Key>>(6)?.map(|k| k.0),
        outcome: row.try_get(7)?,
        detail: row.try_get(8)?,
    })
}

fn change_from_row(row: &Row) -> Result<Change, postgres::Error> {
    let tenant = TenantState {
        id: TenantId::new(row.try_get::<_, Unsigned>(3)?.0),
        status: row.try_get::<_, Status>(4)?.0,
        limits: limits_from_row(row, 5, 13)?,
    };
    let kind = match row.try_get::<_, &str>(2)? {
        "tenant" => ChangeKind::Tenant(tenant),
        _ => ChangeKind::Credential(Credential {
            key: row.try_get::<_, Key>(9)?.0,
            secret_hash: row.try_get::<_, Hash>(10)?.0,
            revoked: row.try_get(11)?,
            expires_at: row.try_get::<_, Option<i64>>(12)?.map(from_ms),
            purpose: purpose_from_row(row, 16)?,
            tenant,
        }),
    };
    Ok(Change { version: row.try_get::<_, Unsigned>(0)?.0, at: from_ms(row.try_get(1)?), kind })
}

/// The four limit columns, in model order, starting at `first`, and the quota's text at `quota`.
fn limits_from_row(row: &Row, first: usize, quota: usize) -> Result<TenantLimits, postgres::Error> {
    Ok(TenantLimits {
        rate_per_sec: row.try_get(first)?,
        burst: row.try_get::<_, Option<Unsigned<u32>>>(first + 1)?.map(|v| v.0),
        max_input_bytes: row.try_get::<_, Option<Unsigned>>(first + 2)?.map(|v| v.0),
        max_input_pixels: row.try_get::<_, Option<Unsigned>>(first + 3)?.map(|v| v.0),
        quota: row.try_get::<_, Option<QuotaText>>(quota)?.map(|q| q.0),
        sources: row.try_get::<_, Option<SourcesText>>(quota + 1)?.map(|s| s.0),
        cache_max_age_secs: row.try_get::<_, Option<Unsigned<u32>>>(quota + 2)?.map(|v| v.0),
    })
}

/// A key's purpose column; NULL (a tenant change's row) reads as an API key.
fn purpose_from_row(row: &Row, idx: usize) -> Result<KeyPurpose, postgres::Error> {
    Ok(row.try_get::<_, Option<Purpose>>(idx)?.map_or(KeyPurpose::Api, |p| p.0))
}

/// Limits as PostgreSQL binds them (it has no unsigned integers). `validate` has kept every value
/// within `i64` and `burst` within `u32`.
struct SqlLimits {
    rate: Option<f64>,
    burst: Option<i64>,
    bytes: Option<i64>,
    pixels: Option<i64>,
    quota: Option<String>,
    sources: Option<String>,
    max_age: Option<i64>,
}

impl From<&TenantLimits> for SqlLimits {
    fn from(l: &TenantLimits) -> Self {
        let signed = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        SqlLimits {
            rate: l.rate_per_sec,
            burst: l.burst.map(i64::from),
            bytes: l.max_input_bytes.map(signed),
            pixels: l.max_input_pixels.map(signed),
            quota: quota_text(l),
            sources: sources_text(l),
            max_age: l.cache_max_age_secs.map(i64::from),
        }
    }
}

// Column decoders: a value the model refuses is the client library's conversion error (so a
// `Storage` error), never a panic. The schema's CHECKs keep such values out in the first place.

/// A non-negative BIGINT as `u64` (or a narrower unsigned type).
struct Unsigned<T = u64>(T);
/// A `tenants.status` / `changes.status` value.
struct Status(TenantStatus);
/// An API key id.
struct Key(KeyId);
/// A quota in its text form.
struct QuotaText(crate::Quota);
/// A tenant's sources in their text form.
struct SourcesText(crate::SourceList);
/// An `api_keys.purpose` / `changes.purpose` value.
struct Purpose(KeyPurpose);
/// A SHA-256 digest.
struct Hash([u8; 32]);
/// An `admin_log.action` value.
struct Action(AdminAction);

type DecodeError = Box<dyn std::error::Error + Sync + Send>;

impl<'a, T> FromSql<'a> for Unsigned<T>
where
    T: TryFrom<i64>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Unsigned(T::try_from(i64::from_sql(ty, raw)?)?))
    }
    fn accepts(ty: &Type) -> bool {
        <i64 as FromSql>::accepts(ty)
    }
}

impl<'a> FromSql<'a> for Status {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Status(<&str>::from_sql(ty, raw)?.parse()?))
    }
    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

impl<'a> FromSql<'a> for SourcesText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(SourcesText(<&str>::from_sql(ty, raw)?.parse()?))
    }
    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

impl<'a> FromSql<'a> for Purpose {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Purpose(<&str>::from_sql(ty, raw)?.parse()?))
    }
    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

impl<'a> FromSql<'a> for QuotaText {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(QuotaText(<&str>::from_sql(ty, raw)?.parse()?))
    }
    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

impl<'a> FromSql<'a> for Key {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Key(<&str>::from_sql(ty, raw)?.parse()?))
    }
    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

impl<'a> FromSql<'a> for Action {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Action(<&str>::from_sql(ty, raw)?.parse()?))
    }
    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

impl<'a> FromSql<'a> for Hash {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(Hash(<&[u8]>::from_sql(ty, raw)?.try_into()?))
    }
    fn accepts(ty: &Type) -> bool {
        <&[u8] as FromSql>::accepts(ty)
    }
}
