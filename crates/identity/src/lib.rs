//! # identity
//!
//! Who may call resizer, and within which limits. It owns the management plane's data — tenants,
//! their limits and their API keys — in the embedded store (SQLite, [`IdentityStore`]) or the
//! cluster's (PostgreSQL, [`PgIdentityStore`], the same methods and meanings), and the
//! data plane's [`CredentialCache`], from which every api node decides every request in
//! microseconds without a network hop. It also owns the API key format ([`parse_key`]).
//!
//! The store is consistent and the source of truth: every write also appends a [`Change`] to an
//! outbox in the same transaction, with gap-free versions, and a row naming its [`Actor`] to the
//! admin log ([`AdminRecord`]). The cache is available and lags by a
//! bounded interval: it is fed a [`Snapshot`] and then the changes in version order — by [`feed`]
//! in embedded mode, by a JetStream KV watcher in the cluster, through the same two methods.
//!
//! It must not know about HTTP (the api maps [`AuthError`] and [`StoreError`] to statuses), must
//! not store, log or print a key's secret (only its SHA-256 is kept, and the full key exists once,
//! in the value [`IdentityStore::create_key`] returns), and must not reach into other crates.
//!
//! Files: `key.rs` the key format and key ids, `model.rs` the other types, `error.rs` the stores'
//! error, `rules.rs` what both stores do alike (input rules, new records, column conversions),
//! `backend.rs` the [`Store`] trait over both, `store.rs` the SQLite store, `migrations.rs` its
//! schema, `pg.rs` the PostgreSQL store with its schema, `cache.rs` the credential cache,
//! `feed.rs` store → cache, `quota.rs` a tenant's volume quota and its text form, `sources.rs`
//! where a tenant's signed URLs may fetch from and what a key is for (API or URL signing).

mod backend;
mod cache;
mod error;
mod feed;
mod key;
mod migrations;
mod model;
mod pg;
mod quota;
mod rules;
mod sources;
mod store;

pub use backend::Store;
pub use cache::{AuthError, Authenticated, CacheError, CredentialCache};
pub use error::{Missing, StorageError, StoreError};
pub use feed::{feed, Fed};
pub use key::{parse_key, InvalidKeyId, KeyFormatError, KeyId, ParsedKey, KEY_LEN, KEY_PREFIX};
pub use model::{
    Actor, AdminAction, AdminRecord, ApiKey, Change, ChangeKind, Credential, EffectiveLimits, InvalidAction,
    InvalidLimits, InvalidStatus, Rotation, Snapshot, Tenant, TenantId, TenantLimits, TenantState, TenantStatus,
    MAX_CACHE_MAX_AGE_SECS, MAX_INPUT_BYTES_CEILING, MAX_INPUT_PIXELS_CEILING,
};
pub use pg::{PgIdentityStore, POOL_SIZE};
pub use quota::{InvalidQuota, Quota, QuotaPeriod, DEFAULT_SOFT_PERCENT, MAX_ROLLING_SECONDS};
pub use rules::MAX_KEY_LIFETIME;
pub use sources::{InvalidPurpose, InvalidSources, KeyPurpose, SourceList, MAX_SOURCE_ENTRIES};
pub use store::IdentityStore;
