//! The SQLite schema, as an append-only list of migrations. `PRAGMA user_version` records how many
//! have run; opening a database runs the rest, each in its own transaction with the version bump,
//! so a crash mid-migration leaves the previous version intact. Never edit a migration that has
//! shipped: add one.
//!
//! The PostgreSQL schema of the cluster mirrors this one table for table.

use rusqlite::{Connection, TransactionBehavior};

/// Migration `i` brings the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: tenants, keys, and the outbox of changes.
    r#"
    CREATE TABLE tenants (
        id               INTEGER PRIMARY KEY AUTOINCREMENT, -- AUTOINCREMENT: ids are never reused
        name             TEXT    NOT NULL COLLATE NOCASE UNIQUE,
        status           TEXT    NOT NULL CHECK (status IN ('active', 'suspended')),
        -- Limit overrides; NULL = the deployment's default.
        rate_per_sec     REAL    CHECK (rate_per_sec > 0),
        burst            INTEGER CHECK (burst BETWEEN 1 AND 4294967295),
        max_input_bytes  INTEGER CHECK (max_input_bytes >= 1),
        max_input_pixels INTEGER CHECK (max_input_pixels >= 1),
        created_at       INTEGER NOT NULL -- Unix milliseconds
    ) STRICT;

    CREATE TABLE api_keys (
        id            TEXT    PRIMARY KEY CHECK (length(id) = 12), -- the base62 id inside the key
        tenant_id     INTEGER NOT NULL REFERENCES tenants (id),
        label         TEXT    NOT NULL,
        secret_sha256 BLOB    NOT NULL CHECK (length(secret_sha256) = 32), -- never the secret itself
        created_at    INTEGER NOT NULL,
        revoked_at    INTEGER
    ) STRICT;
    CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id);

    -- The outbox: one row per committed mutation, written in the mutation's transaction.
    -- `version` is gap-free (MAX + 1 inside the write transaction), so a reader that sees
    -- n + 2 after n knows it missed one. Each row is the full new data-plane state of one tenant
    -- (kind 'tenant') or one key (kind 'key', with its tenant's state at that version).
    CREATE TABLE changes (
        version          INTEGER PRIMARY KEY,
        at               INTEGER NOT NULL, -- Unix milliseconds
        kind             TEXT    NOT NULL CHECK (kind IN ('tenant', 'key')),
        tenant_id        INTEGER NOT NULL,
        status           TEXT    NOT NULL CHECK (status IN ('active', 'suspended')),
        rate_per_sec     REAL,
        burst            INTEGER,
        max_input_bytes  INTEGER,
        max_input_pixels INTEGER,
        key_id           TEXT,
        secret_sha256    BLOB,
        revoked          INTEGER CHECK (revoked IN (0, 1)),
        CHECK ((kind = 'key') = (key_id IS NOT NULL AND secret_sha256 IS NOT NULL AND revoked IS NOT NULL))
    ) STRICT;
    "#,
    // 2: key expiry (NULL: never), in the table and in each key change; the admin log.
    r#"
    ALTER TABLE api_keys ADD COLUMN expires_at INTEGER; -- Unix milliseconds
    ALTER TABLE changes ADD COLUMN expires_at INTEGER CHECK (expires_at IS NULL OR kind = 'key');

    -- Who asked for which admin write, when, and how it ended. A committed write's row is
    -- written in the write's transaction; a refused write's in one of its own. Never a secret.
    CREATE TABLE admin_log (
        id         INTEGER PRIMARY KEY AUTOINCREMENT, -- commit order (writers are serialised)
        at         INTEGER NOT NULL,                  -- Unix milliseconds
        operator   TEXT    NOT NULL,
        request_id TEXT    NOT NULL,
        action     TEXT    NOT NULL,
        tenant_id  INTEGER,
        key_id     TEXT,
        outcome    TEXT    NOT NULL,
        detail     TEXT    NOT NULL
    ) STRICT;
    "#,
    // 3: a tenant's volume quota (NULL: the deployment's default), in its text form
    // (`identity::Quota`), in the table and in each change.
    r#"
    ALTER TABLE tenants ADD COLUMN quota TEXT;
    ALTER TABLE changes ADD COLUMN quota TEXT;
    "#,
    // 4: signed URLs: where a tenant's sources may come from (`identity::SourceList` text, NULL:
    // nowhere), its answers' max-age (NULL: the default), and what a key is for.
    r#"
    ALTER TABLE tenants ADD COLUMN sources TEXT;
    ALTER TABLE tenants ADD COLUMN cache_max_age INTEGER CHECK (cache_max_age >= 0);
    ALTER TABLE api_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'api' CHECK (purpose IN ('api', 'signing'));
    ALTER TABLE changes ADD COLUMN sources TEXT;
    ALTER TABLE changes ADD COLUMN cache_max_age INTEGER;
    ALTER TABLE changes ADD COLUMN purpose TEXT CHECK (purpose IS NULL OR kind = 'key');
    "#,
];

/// The schema version this build reads and writes.
pub(crate) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

#[derive(Debug)]
pub(crate) enum MigrateError {
    /// The database was written by a newer build; refusing it beats misreading it.
    TooNew {
        found: u32,
    },
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sqlite(e)
    }
}

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    loop {
        // IMMEDIATE: two processes opening the same new file must not both run migration 1.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: u32 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(MigrateError::TooNew { found: version });
        }
        let Some(migration) = MIGRATIONS.get(version as usize) else {
            return Ok(());
        };
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let version: u32 = conn.pragma_query_value(None, "user_version", |row| row.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        assert!(matches!(migrate(&mut conn), Err(MigrateError::TooNew { found }) if found == SCHEMA_VERSION + 1));
    }
}
