//! The one error type of both stores, [`StoreError`], and its parts: what was not found
//! ([`Missing`]) and an opaque storage failure ([`StorageError`]) that hides which database failed
//! behind one type, so the admin API maps either store's errors alike.

use crate::key::KeyId;
use crate::migrations;
use crate::model::{InvalidLimits, TenantId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(Missing),
    /// A tenant with this name (compared case-insensitively) already exists.
    #[error("a tenant named `{0}` already exists")]
    Conflict(String),
    /// The caller's input breaks a rule stated on the model (name shape, limit ranges).
    #[error("{0}")]
    Invalid(&'static str),
    /// The key is revoked, so it cannot be rotated (nor its expiry changed).
    #[error("API key {0} is revoked: a revoked key cannot be rotated; create a new key instead")]
    KeyRevoked(KeyId),
    /// The key has expired, so it cannot be rotated.
    #[error("API key {0} has expired: an expired key cannot be rotated; create a new key instead")]
    KeyExpired(KeyId),
    /// The database failed or is unusable; nothing the caller sent can fix it.
    #[error("identity store: {0}")]
    Storage(StorageError),
}

impl StoreError {
    /// How the admin log names this refusal; `None` for a storage failure, which the log (in the
    /// same database) cannot record.
    pub fn outcome(&self) -> Option<&'static str> {
        match self {
            StoreError::NotFound(_) => Some("not-found"),
            StoreError::Conflict(_) => Some("conflict"),
            StoreError::Invalid(_) => Some("invalid"),
            StoreError::KeyRevoked(_) => Some("key-revoked"),
            StoreError::KeyExpired(_) => Some("key-expired"),
            StoreError::Storage(_) => None,
        }
    }
}

/// What was looked for and not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Tenant(TenantId),
    TenantNamed(String),
    Key(KeyId),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Tenant(id) => write!(f, "tenant {id}"),
            Missing::TenantNamed(name) => write!(f, "tenant `{name}`"),
            Missing::Key(id) => write!(f, "API key {id}"),
        }
    }
}

/// A failure of the storage layer, opaque so that the PostgreSQL store can return the same type.
#[derive(Debug)]
pub struct StorageError(Inner);

#[derive(Debug)]
enum Inner {
    Sqlite(rusqlite::Error),
    Postgres(postgres::Error),
    SchemaTooNew { found: u32 },
    Entropy(getrandom::Error),
    Tls(tls::TlsError),
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Sqlite(e) => write!(f, "sqlite: {e}"),
            Inner::Postgres(e) => {
                write!(f, "postgres: {e}")?;
                // The client's message names only the kind of failure; the server's words or
                // the I/O error are its source.
                match std::error::Error::source(e) {
                    Some(cause) => write!(f, ": {cause}"),
                    None => Ok(()),
                }
            }
            Inner::SchemaTooNew { found } => write!(
                f,
                "the database has schema version {found}, this build knows up to {}: it was written by a newer resizer",
                migrations::SCHEMA_VERSION
            ),
            Inner::Entropy(e) => write!(f, "no randomness for a new key: {e}"),
            Inner::Tls(e) => write!(f, "postgres TLS: {e}"),
        }
    }
}

impl std::error::Error for StorageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Inner::Sqlite(e) => Some(e),
            Inner::Postgres(e) => Some(e),
            Inner::Tls(e) => Some(e),
            // getrandom's error implements `std::error::Error` only with its `std` feature; the
            // message above carries it.
            Inner::SchemaTooNew { .. } | Inner::Entropy(_) => None,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Storage(StorageError(Inner::Sqlite(e)))
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Storage(StorageError(Inner::Postgres(e)))
    }
}

impl StorageError {
    /// The OS had no randomness for a new key (either store draws from the same generator).
    pub(crate) fn entropy(e: getrandom::Error) -> StoreError {
        StoreError::Storage(StorageError(Inner::Entropy(e)))
    }

    /// The database's CA file could not be read.
    pub(crate) fn tls(e: tls::TlsError) -> StoreError {
        StoreError::Storage(StorageError(Inner::Tls(e)))
    }

    /// The SQLite file was written by a newer build.
    pub(crate) fn schema_too_new(found: u32) -> StoreError {
        StoreError::Storage(StorageError(Inner::SchemaTooNew { found }))
    }
}

impl From<InvalidLimits> for StoreError {
    fn from(e: InvalidLimits) -> Self {
        StoreError::Invalid(e.0)
    }
}
