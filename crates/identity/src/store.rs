//! The authoritative store of embedded mode: tenants, keys and the outbox of changes in one SQLite
//! file. Consistent before available (the blueprint's CAP choice for identity): every write is one
//! `BEGIN IMMEDIATE` transaction that also appends its [`Change`], so the outbox never disagrees
//! with the tables — a relay may publish it, a cache may replay it, and both see exactly what
//! committed, in commit order.
//!
//! The API is synchronous and blocking (a mutex around one connection): async callers run it on a
//! blocking thread. It must not know about HTTP, nor hold or log a key's secret.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::error::{Missing, StorageError, StoreError};
use crate::key::{self, KeyId};
use crate::migrations::{self, MigrateError};
use crate::model::{
    Actor, AdminAction, AdminRecord, ApiKey, Change, ChangeKind, Credential, Rotation, Snapshot, Tenant, TenantId,
    TenantLimits, TenantState, TenantStatus,
};
use crate::rules::{
    from_ms, grace_end, issued_key, key_detail, limits_detail, log_tenant, new_tenant, now_ms, quota_text, quoted,
    rotated_expiry, rotation_detail, sources_from_text, sources_text, sql_tenant, tenant_state, to_ms, validate_expiry,
    validate_label, validate_tenant_name, LogNote,
};
use crate::sources::KeyPurpose;

/// How long a writer waits for another process's write lock before giving up with `Storage`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at a fresh random key id when one collides (at 71 bits, the second never runs).
const KEY_ID_ATTEMPTS: usize = 3;

pub struct IdentityStore {
    conn: Mutex<Connection>,
}

impl IdentityStore {
    /// Opens (creating if needed) the database at `path`, in WAL mode so that readers in other
    /// processes (an admin CLI) never block the writer, and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // Returns the mode it ended up in; WAL is refused only by exotic filesystems, where the
        // default rollback journal is still correct, just slower for concurrent readers.
        let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
        Self::init(conn)
    }

    /// A private database that disappears with the value: tests and throwaway dev runs.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrations::migrate(&mut conn).map_err(|e| match e {
            MigrateError::TooNew { found } => StorageError::schema_too_new(found),
            MigrateError::Sqlite(e) => e.into(),
        })?;
        Ok(IdentityStore { conn: Mutex::new(conn) })
    }

    /// A tenant the process makes for itself (the dev demo tenant), logged as [`Actor::process`].
    pub fn create_tenant(&self, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError> {
        self.create_tenant_as(&Actor::process(), name, limits)
    }

    pub fn create_tenant_as(&self, actor: &Actor, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError> {
        let asked = LogNote { detail: format!("name={}", quoted(name)), ..LogNote::default() };
        self.logged_write(actor, AdminAction::CreateTenant, asked, |tx| {
            validate_tenant_name(name)?;
            limits.validate()?;
            let created_at = now_ms();
            let inserted = tx.execute(
                "INSERT INTO tenants (name, status, rate_per_sec, burst, max_input_bytes, max_input_pixels, created_at,
                                      quota, sources, cache_max_age)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    name,
                    TenantStatus::Active.as_str(),
                    limits.rate_per_sec,
                    limits.burst,
                    limits.max_input_bytes,
                    limits.max_input_pixels,
                    created_at,
                    quota_text(&limits),
                    sources_text(&limits),
                    limits.cache_max_age_secs
                ],
            );
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(StoreError::Conflict(name.to_string())),
                other => other?,
            };
            let id = TenantId::new(u64::try_from(tx.last_insert_rowid()).expect("AUTOINCREMENT rowids are positive"));
            let note = LogNote::tenant(id, format!("name={} {}", quoted(name), limits_detail(&limits)));
            let tenant = new_tenant(id, name, limits, created_at);
            append_change(tx, created_at, &ChangeKind::Tenant(tenant_state(&tenant)))?;
            Ok((tenant, note))
        })
    }

    pub fn get_tenant(&self, id: TenantId) -> Result<Tenant, StoreError> {
        tenant_by_id(&self.lock(), id)
    }

    /// The tenant whose name equals `name` case-insensitively.
    pub fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError> {
        self.lock()
            .query_row(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE name = ?1"), [name], tenant_from_row)
            .optional()?
            .ok_or_else(|| StoreError::NotFound(Missing::TenantNamed(name.to_string())))
    }

    /// Every tenant, oldest first.
    pub fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"))?;
        let tenants = stmt.query_map([], tenant_from_row)?.collect::<Result<_, _>>()?;
        Ok(tenants)
    }

    /// Replaces the tenant's overrides as a whole (a `None` field returns to the default).
    /// Setting the limits it already has writes no change.
    pub fn update_limits(&self, actor: &Actor, id: TenantId, limits: TenantLimits) -> Result<Tenant, StoreError> {
        let asked = LogNote::tenant(id, limits_detail(&limits));
        self.logged_write(actor, AdminAction::UpdateLimits, asked.clone(), |tx| {
            limits.validate()?;
            let mut tenant = tenant_by_id(tx, id)?;
            if tenant.limits == limits {
                return Ok((tenant, asked.unchanged()));
            }
            tx.execute(
                "UPDATE tenants SET rate_per_sec = ?2, burst = ?3, max_input_bytes = ?4, max_input_pixels = ?5,
                                    quota = ?6, sources = ?7, cache_max_age = ?8
                 WHERE id = ?1",
                params![
                    sql_tenant(id),
                    limits.rate_per_sec,
                    limits.burst,
                    limits.max_input_bytes,
                    limits.max_input_pixels,
                    quota_text(&limits),
                    sources_text(&limits),
                    limits.cache_max_age_secs
                ],
            )?;
            tenant.limits = limits;
            append_change(tx, now_ms(), &ChangeKind::Tenant(tenant_state(&tenant)))?;
            Ok((tenant, asked))
        })
    }

    /// Suspends or reactivates a tenant. Setting the status it already has writes no change.
    pub fn set_status(&self, actor: &Actor, id: TenantId, status: TenantStatus) -> Result<Tenant, StoreError> {
        let asked = LogNote::tenant(id, format!("status={status}"));
        self.logged_write(actor, AdminAction::SetStatus, asked.clone(), |tx| {
            let mut tenant = tenant_by_id(tx, id)?;
            if tenant.status == status {
                return Ok((tenant, asked.unchanged()));
            }
            tx.execute("UPDATE tenants SET status = ?2 WHERE id = ?1", params![sql_tenant(id), status.as_str()])?;
            tenant.status = status;
            append_change(tx, now_ms(), &ChangeKind::Tenant(tenant_state(&tenant)))?;
            Ok((tenant, asked))
        })
    }

    /// A key the process makes for itself (the dev demo key), logged as [`Actor::process`].
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
            Ok(((api_key.clone(), token), LogNote { key: Some(api_key.id), ..asked }))
        })
    }

    pub fn get_key(&self, id: KeyId) -> Result<ApiKey, StoreError> {
        key_by_id(&self.lock(), id).map(|(key, _)| key)
    }

    /// The tenant's keys, revoked ones included, oldest first.
    pub fn list_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>, StoreError> {
        let mut conn = self.lock();
        // One read transaction, so that the tenant cannot vanish between the check and the list.
        let tx = conn.transaction()?;
        tenant_by_id(&tx, tenant)?;
        // rowid is insertion order, exact where created_at (milliseconds) ties.
        let mut stmt =
            tx.prepare(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = ?1 ORDER BY rowid"))?;
        let keys = stmt.query_map([sql_tenant(tenant)], key_from_row)?.collect::<Result<_, _>>()?;
        Ok(keys)
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
            tx.execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1", params![id.as_str(), revoked_at])?;
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
            tx.execute("UPDATE api_keys SET expires_at = ?2 WHERE id = ?1", params![id.as_str(), old_expires_at])?;
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
            let (new, token) = issue_key(tx, &owner, &old.label, now, new_expires_at, old.purpose)?;
            let note = LogNote::key(Some(old.tenant), id, rotation_detail(&new, old_expires_at));
            Ok((Rotation { old, new, token }, note))
        })
    }

    /// The admin log, newest first: at most `limit` records with ids below `before`.
    pub fn admin_log(&self, before: Option<u64>, limit: usize) -> Result<Vec<AdminRecord>, StoreError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare(&format!("SELECT {LOG_COLUMNS} FROM admin_log WHERE id < ?1 ORDER BY id DESC LIMIT ?2"))?;
        let before = before.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let records = stmt.query_map(params![before, limit], log_from_row)?.collect::<Result<_, _>>()?;
        Ok(records)
    }

    /// The version of the last change; 0 if nothing was ever written.
    pub fn version(&self) -> Result<u64, StoreError> {
        Ok(head_version(&self.lock())?)
    }

    /// Every credential, and the version they are current at, read in one transaction.
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let version = head_version(&tx)?;
        let mut stmt = tx.prepare(
            "SELECT k.id, k.secret_sha256, k.revoked_at IS NOT NULL,
                    t.id, t.status, t.rate_per_sec, t.burst, t.max_input_bytes, t.max_input_pixels, k.expires_at,
                    t.quota, t.sources, t.cache_max_age, k.purpose
             FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             ORDER BY k.id",
        )?;
        let credentials = stmt
            .query_map([], |row| {
                Ok(Credential {
                    key: key_id_from_row(row, 0)?,
                    secret_hash: hash_from_row(row, 1)?,
                    revoked: row.get(2)?,
                    expires_at: row.get::<_, Option<i64>>(9)?.map(from_ms),
                    purpose: purpose_from_row(row, 13)?,
                    tenant: TenantState {
                        id: TenantId::new(row.get(3)?),
                        status: status_from_row(row, 4)?,
                        limits: limits_from_row(row, 5, 10)?,
                    },
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Snapshot { version, credentials })
    }

    /// Every change with a version above `version`, in order.
    pub fn changes_since(&self, version: u64) -> Result<Vec<Change>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT version, at, kind, tenant_id, status, rate_per_sec, burst, max_input_bytes, max_input_pixels,
                    key_id, secret_sha256, revoked, expires_at, quota, sources, cache_max_age, purpose
             FROM changes WHERE version > ?1 ORDER BY version",
        )?;
        let changes =
            stmt.query_map([i64::try_from(version).unwrap_or(i64::MAX)], change_from_row)?.collect::<Result<_, _>>()?;
        Ok(changes)
    }

    /// Runs `f` in one write transaction: committed if it returns `Ok`, rolled back otherwise.
    /// IMMEDIATE takes the write lock up front, so a read-then-write cannot deadlock with
    /// another process (a deferred transaction's lock upgrade does not honour the busy timeout).
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
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
        f: impl FnOnce(&Transaction<'_>) -> Result<(T, LogNote), StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.write(|tx| {
            let (out, note) = f(tx)?;
            append_log(tx, actor, action, "ok", &note)?;
            Ok(out)
        });
        if let Err(e) = &result {
            if let Some(outcome) = e.outcome() {
                let _ = self.write(|tx| append_log(tx, actor, action, outcome, &asked.refused(e)));
            }
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction behind (the transaction's
        // drop rolls it back), so the connection is still good.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn with_connection<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        f(&self.lock())
    }
}

/// Appends one change with the next version. Callers are inside a write transaction, so the
/// MAX + 1 cannot race and the version sequence has no holes (a PostgreSQL sequence would: it
/// does not roll back, so the cluster's store must take the next version from a locked row too).
fn append_change(tx: &Transaction<'_>, at: i64, kind: &ChangeKind) -> Result<u64, StoreError> {
    let version = head_version(tx)? + 1;
    let (tenant, key) = match kind {
        ChangeKind::Tenant(tenant) => (tenant, None),
        ChangeKind::Credential(c) => (&c.tenant, Some(c)),
    };
    tx.execute(
        "INSERT INTO changes (version, at, kind, tenant_id, status, rate_per_sec, burst, max_input_bytes,
                              max_input_pixels, key_id, secret_sha256, revoked, expires_at, quota, sources,
                              cache_max_age, purpose)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        params![
            version,
            at,
            if key.is_some() { "key" } else { "tenant" },
            sql_tenant(tenant.id),
            tenant.status.as_str(),
            tenant.limits.rate_per_sec,
            tenant.limits.burst,
            tenant.limits.max_input_bytes,
            tenant.limits.max_input_pixels,
            key.map(|c| c.key.as_str()),
            key.map(|c| &c.secret_hash[..]),
            key.map(|c| c.revoked),
            key.and_then(|c| c.expires_at).map(to_ms),
            quota_text(&tenant.limits),
            sources_text(&tenant.limits),
            tenant.limits.cache_max_age_secs,
            key.map(|c| c.purpose.as_str()),
        ],
    )?;
    Ok(version)
}

/// Inserts a new key for `owner` and appends its change (a fresh random id if one collides).
fn issue_key(
    tx: &Transaction<'_>,
    owner: &Tenant,
    label: &str,
    created_at: i64,
    expires_at: Option<i64>,
    purpose: KeyPurpose,
) -> Result<(ApiKey, String), StoreError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let new = key::generate().map_err(StorageError::entropy)?;
        let inserted = tx.execute(
            "INSERT INTO api_keys (id, tenant_id, label, secret_sha256, created_at, expires_at, purpose)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                new.id.as_str(),
                sql_tenant(owner.id),
                label,
                &new.secret_hash[..],
                created_at,
                expires_at,
                purpose.as_str()
            ],
        );
        match inserted {
            Err(e) if is_unique_violation(&e) && attempts < KEY_ID_ATTEMPTS => continue,
            other => other?,
        };
        let (api_key, credential) = issued_key(&new, owner, label, created_at, expires_at, purpose);
        append_change(tx, created_at, &ChangeKind::Credential(credential))?;
        return Ok((api_key, new.token));
    }
}

fn append_log(
    tx: &Transaction<'_>,
    actor: &Actor,
    action: AdminAction,
    outcome: &str,
    note: &LogNote,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO admin_log (at, operator, request_id, action, tenant_id, key_id, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            now_ms(),
            actor.operator,
            actor.request_id,
            action.as_str(),
            note.tenant.and_then(log_tenant),
            note.key.as_ref().map(KeyId::as_str),
            outcome,
            note.detail
        ],
    )?;
    Ok(())
}

fn head_version(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COALESCE(MAX(version), 0) FROM changes", [], |row| row.get(0))
}

const TENANT_COLUMNS: &str =
    "id, name, status, rate_per_sec, burst, max_input_bytes, max_input_pixels, created_at, quota, sources, cache_max_age";
const KEY_COLUMNS: &str = "id, tenant_id, label, created_at, revoked_at, expires_at, purpose";
const LOG_COLUMNS: &str = "id, at, operator, request_id, action, tenant_id, key_id, outcome, detail";

/// A key and its secret's hash.
fn key_by_id(conn: &Connection, id: KeyId) -> Result<(ApiKey, [u8; 32]), StoreError> {
    conn.query_row(&format!("SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys WHERE id = ?1"), [id.as_str()], |row| {
        Ok((key_from_row(row)?, hash_from_row(row, 7)?))
    })
    .optional()?
    .ok_or(StoreError::NotFound(Missing::Key(id)))
}

fn tenant_by_id(conn: &Connection, id: TenantId) -> Result<Tenant, StoreError> {
    conn.query_row(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1"), [sql_tenant(id)], tenant_from_row)
        .optional()?
        .ok_or(StoreError::NotFound(Missing::Tenant(id)))
}

fn tenant_from_row(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: TenantId::new(row.get(0)?),
        name: row.get(1)?,
        status: status_from_row(row, 2)?,
        limits: limits_from_row(row, 3, 8)?,
        created_at: from_ms(row.get(7)?),
    })
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: key_id_from_row(row, 0)?,
        tenant: TenantId::new(row.get(1)?),
        label: row.get(2)?,
        created_at: from_ms(row.get(3)?),
        revoked_at: row.get::<_, Option<i64>>(4)?.map(from_ms),
        expires_at: row.get::<_, Option<i64>>(5)?.map(from_ms),
        purpose: purpose_from_row(row, 6)?,
    })
}

fn log_from_row(row: &Row<'_>) -> rusqlite::Result<AdminRecord> {
    Ok(AdminRecord {
        id: row.get(0)?,
        at: from_ms(row.get(1)?),
        operator: row.get(2)?,
        request_id: row.get(3)?,
        action: row.get_ref(4)?.as_str()?.parse().map_err(|e| conversion_error(4, e))?,
        tenant: row.get::<_, Option<u64>>(5)?.map(TenantId::new),
        key: match row.get_ref(6)?.as_str_or_null()? {
            Some(s) => Some(s.parse().map_err(|e| conversion_error(6, e))?),
            None => None,
        },
        outcome: row.get(7)?,
        detail: row.get(8)?,
    })
}

fn change_from_row(row: &Row<'_>) -> rusqlite::Result<Change> {
    let tenant = TenantState {
        id: TenantId::new(row.get(3)?),
        status: status_from_row(row, 4)?,
        limits: limits_from_row(row, 5, 13)?,
    };
    let kind = match row.get_ref(2)?.as_str()? {
        "tenant" => ChangeKind::Tenant(tenant),
        _ => ChangeKind::Credential(Credential {
            key: key_id_from_row(row, 9)?,
            secret_hash: hash_from_row(row, 10)?,
            revoked: row.get(11)?,
            expires_at: row.get::<_, Option<i64>>(12)?.map(from_ms),
            purpose: purpose_from_row(row, 16)?,
            tenant,
        }),
    };
    Ok(Change { version: row.get(0)?, at: from_ms(row.get(1)?), kind })
}

/// The four limit columns, in model order, starting at `first`, and the quota's text at `quota`
/// followed by the sources' text and the cache max-age.
fn limits_from_row(row: &Row<'_>, first: usize, quota: usize) -> rusqlite::Result<TenantLimits> {
    Ok(TenantLimits {
        rate_per_sec: row.get(first)?,
        burst: row.get(first + 1)?,
        max_input_bytes: row.get(first + 2)?,
        max_input_pixels: row.get(first + 3)?,
        quota: match row.get_ref(quota)?.as_str_or_null()? {
            Some(text) => Some(text.parse().map_err(|e| conversion_error(quota, e))?),
            None => None,
        },
        sources: sources_from_text(row.get(quota + 1)?).map_err(|e| conversion_error(quota + 1, e))?,
        cache_max_age_secs: row.get(quota + 2)?,
    })
}

/// A key's purpose column; NULL (a tenant change's row) reads as an API key.
fn purpose_from_row(row: &Row<'_>, idx: usize) -> rusqlite::Result<KeyPurpose> {
    match row.get_ref(idx)?.as_str_or_null()? {
        Some(text) => text.parse().map_err(|e| conversion_error(idx, e)),
        None => Ok(KeyPurpose::Api),
    }
}

fn status_from_row(row: &Row<'_>, idx: usize) -> rusqlite::Result<TenantStatus> {
    row.get_ref(idx)?.as_str()?.parse().map_err(|e| conversion_error(idx, e))
}

fn key_id_from_row(row: &Row<'_>, idx: usize) -> rusqlite::Result<KeyId> {
    row.get_ref(idx)?.as_str()?.parse().map_err(|e| conversion_error(idx, e))
}

fn hash_from_row(row: &Row<'_>, idx: usize) -> rusqlite::Result<[u8; 32]> {
    row.get(idx)
}

fn conversion_error(idx: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation
            && matches!(f.extended_code, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes every insert into the outbox fail, as a full disk or a crash between the two writes
    /// would: the mutation that went with it must vanish too.
    fn break_the_outbox(store: &IdentityStore) {
        store.with_connection(|conn| {
            conn.execute_batch(
                "CREATE TRIGGER outbox_down BEFORE INSERT ON changes BEGIN SELECT RAISE(ABORT, 'outbox down'); END;",
            )
            .unwrap()
        });
    }

    fn mend_the_outbox(store: &IdentityStore) {
        store.with_connection(|conn| conn.execute_batch("DROP TRIGGER outbox_down;").unwrap());
    }

    #[test]
    fn a_mutation_whose_change_cannot_be_written_does_not_happen() {
        let store = IdentityStore::open_in_memory().unwrap();
        let tenant = store.create_tenant("acme", TenantLimits::default()).unwrap();
        let (key, _) = store.create_key(tenant.id, "ci").unwrap();
        let before = store.snapshot().unwrap();
        let log_before = store.admin_log(None, 100).unwrap();

        break_the_outbox(&store);
        let actor = Actor::process();
        assert!(matches!(store.create_tenant("globex", TenantLimits::default()), Err(StoreError::Storage(_))));
        assert!(matches!(store.create_key(tenant.id, "prod"), Err(StoreError::Storage(_))));
        assert!(matches!(store.revoke_key(&actor, key.id), Err(StoreError::Storage(_))));
        let grace = Duration::from_secs(60);
        assert!(matches!(store.rotate_key(&actor, key.id, grace, None), Err(StoreError::Storage(_))));
        assert!(matches!(store.set_status(&actor, tenant.id, TenantStatus::Suspended), Err(StoreError::Storage(_))));
        let limits = TenantLimits { burst: Some(5), ..TenantLimits::default() };
        assert!(matches!(store.update_limits(&actor, tenant.id, limits), Err(StoreError::Storage(_))));
        mend_the_outbox(&store);

        assert_eq!(store.snapshot().unwrap(), before);
        // Nor is any of them in the admin log: a write and its log row go together.
        assert_eq!(store.admin_log(None, 100).unwrap(), log_before);
        assert_eq!(store.list_tenants().unwrap(), vec![tenant.clone()]);
        assert_eq!(store.list_keys(tenant.id).unwrap(), vec![key]);
        assert!(matches!(store.tenant_by_name("globex"), Err(StoreError::NotFound(_))));
        // And the store still works, with versions carrying on where they were.
        store.create_tenant("globex", TenantLimits::default()).unwrap();
        assert_eq!(store.version().unwrap(), before.version + 1);
    }

    #[test]
    fn a_database_from_before_key_expiry_keeps_its_keys_which_never_expire() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(migrations::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let hash = [7u8; 32];
        conn.execute_batch(
            "INSERT INTO tenants (id, name, status, created_at) VALUES (1, 'acme', 'active', 1700000000000);
             INSERT INTO changes (version, at, kind, tenant_id, status) VALUES (1, 1700000000000, 'tenant', 1, 'active');",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO api_keys (id, tenant_id, label, secret_sha256, created_at) VALUES ('AbCdEf012345', 1, 'ci', ?1, 1700000000001)",
            [&hash[..]],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO changes (version, at, kind, tenant_id, status, key_id, secret_sha256, revoked)
             VALUES (2, 1700000000001, 'key', 1, 'active', 'AbCdEf012345', ?1, 0)",
            [&hash[..]],
        )
        .unwrap();

        let store = IdentityStore::init(conn).unwrap();
        let id: KeyId = "AbCdEf012345".parse().unwrap();
        assert_eq!(store.get_key(id).unwrap().expires_at, None);
        assert_eq!(store.snapshot().unwrap().credentials[0].expires_at, None);
        assert!(
            matches!(&store.changes_since(1).unwrap()[0].kind, ChangeKind::Credential(c) if c.expires_at.is_none())
        );
        assert!(store.admin_log(None, 10).unwrap().is_empty());
        let rotation = store.rotate_key(&Actor::process(), id, Duration::from_secs(60), None).unwrap();
        assert!(rotation.old.expires_at.is_some());
        assert_eq!(store.version().unwrap(), 4);
    }

    #[test]
    fn a_write_whose_log_row_cannot_be_written_does_not_happen() {
        let store = IdentityStore::open_in_memory().unwrap();
        let tenant = store.create_tenant("acme", TenantLimits::default()).unwrap();
        let (key, _) = store.create_key(tenant.id, "ci").unwrap();
        let (before, log_before) = (store.snapshot().unwrap(), store.admin_log(None, 100).unwrap());
        store.with_connection(|conn| {
            conn.execute_batch(
                "CREATE TRIGGER log_down BEFORE INSERT ON admin_log BEGIN SELECT RAISE(ABORT, 'log down'); END;",
            )
            .unwrap()
        });
        let actor = Actor::process();
        assert!(matches!(store.create_tenant("globex", TenantLimits::default()), Err(StoreError::Storage(_))));
        assert!(matches!(store.rotate_key(&actor, key.id, Duration::from_secs(60), None), Err(StoreError::Storage(_))));
        assert!(matches!(store.revoke_key(&actor, key.id), Err(StoreError::Storage(_))));
        store.with_connection(|conn| conn.execute_batch("DROP TRIGGER log_down;").unwrap());
        assert_eq!(store.snapshot().unwrap(), before);
        assert_eq!(store.admin_log(None, 100).unwrap(), log_before);
        assert_eq!(store.get_key(key.id).unwrap(), key);
    }

    #[test]
    fn a_rotation_that_fails_halfway_leaves_the_old_key_as_it_was() {
        let store = IdentityStore::open_in_memory().unwrap();
        let tenant = store.create_tenant("acme", TenantLimits::default()).unwrap();
        let (key, _) = store.create_key(tenant.id, "ci").unwrap();
        let before = store.snapshot().unwrap();
        // The rotation's first change (the old key's expiry) goes in; its second (the new key's)
        // fails, after the old key's row was already updated.
        store.with_connection(|conn| {
            conn.execute_batch(&format!(
                "CREATE TRIGGER second_change_fails BEFORE INSERT ON changes WHEN NEW.version = {}
                 BEGIN SELECT RAISE(ABORT, 'outbox down'); END;",
                before.version + 2
            ))
            .unwrap()
        });
        let rotated = store.rotate_key(&Actor::process(), key.id, Duration::from_secs(60), None);
        assert!(matches!(rotated, Err(StoreError::Storage(_))), "{rotated:?}");
        assert_eq!(store.get_key(key.id).unwrap(), key, "the old key keeps no expiry");
        assert_eq!(store.list_keys(tenant.id).unwrap(), vec![key]);
        assert_eq!(store.snapshot().unwrap(), before);
    }

    #[test]
    fn input_limits_over_the_ceilings_are_refused() {
        let store = IdentityStore::open_in_memory().unwrap();
        let over = |bytes: u64, pixels: u64| TenantLimits {
            max_input_bytes: Some(bytes),
            max_input_pixels: Some(pixels),
            ..TenantLimits::default()
        };
        let huge = store.create_tenant("huge", over(99_999_999_999, 1));
        assert!(matches!(huge, Err(StoreError::Invalid(_))), "{huge:?}");
        let huge = store.create_tenant("huge", over(1, crate::MAX_INPUT_PIXELS_CEILING + 1));
        assert!(matches!(huge, Err(StoreError::Invalid(_))), "{huge:?}");
        // A value from before the ceilings is clamped when it is used.
        let resolved = over(u64::MAX, u64::MAX).resolve(&crate::EffectiveLimits::default());
        assert_eq!(resolved.max_input_bytes, crate::MAX_INPUT_BYTES_CEILING);
    }

    #[test]
    fn limits_round_trip_through_the_database() {
        let store = IdentityStore::open_in_memory().unwrap();
        let limits = TenantLimits {
            rate_per_sec: Some(0.5),
            burst: Some(u32::MAX),
            max_input_bytes: Some(crate::MAX_INPUT_BYTES_CEILING),
            max_input_pixels: Some(1),
            quota: Some("rolling=60;requests=9;output_pixels=0;soft=1".parse().unwrap()),
            sources: Some("images.example.com https://cdn.example.com/a/".parse().unwrap()),
            cache_max_age_secs: Some(0),
        };
        let tenant = store.create_tenant("big", limits.clone()).unwrap();
        assert_eq!(store.get_tenant(tenant.id).unwrap().limits, limits);
        let change = store.changes_since(0).unwrap().pop().unwrap();
        assert_eq!(change.kind, ChangeKind::Tenant(tenant_state(&tenant)));
    }
}
