//! # identity-kv
//!
//! How identity reaches every api node in the cluster (../shared/BLUEPRINT.md §2): the identity
//! service's relay copies the store's outbox, in version order, into a JetStream key-value bucket
//! (3 replicas) — one key per tenant (`t.<id>`) and per API key (`k.<id>`), each holding that
//! thing's latest full state as an `identity::Change` — and each api node watches the bucket:
//! the bucket's current values become a `Snapshot`, every later put one change, applied to its
//! `CredentialCache` in order (a gap means a fresh snapshot).
//!
//! The CAP choice: the store (PostgreSQL) is consistent; the caches are available. When NATS or
//! the identity service is away, api nodes keep deciding from the last state they have, and
//! report how stale it is ([`ReplicaStatus`]); the outbox keeps every change, and the relay
//! publishes what is pending as soon as NATS is back.
//!
//! It must not decide requests (the cache does), write to the store, or carry a key's secret:
//! only its SHA-256 travels, as in the store.

mod codec;
mod relay;
mod watch;

pub use codec::{decode, encode, key_of, DecodeError};
pub use relay::{ensure_bucket, relay, BUCKET, RELAYED_KEY};
pub use watch::{watch, ReplicaStatus};
