//! Fetching a tenant's source image from its origin, for the signed GET route.
//!
//! Owns: the SSRF guard (every address checked after DNS resolution, connections made only to
//! checked addresses, redirects checked the same way), time-outs and byte caps while streaming,
//! and the node's bounded cache of sources with their validators.
//! Must not: know HTTP routes, tenants' keys or signatures, or decode images.
//!
//! `policy.rs` the node's [`OriginPolicy`] and a tenant's [`SourceRules`]; `address.rs` the
//! guard on resolved addresses; `fetch.rs` the [`Fetcher`] (its own TCP, TLS and HTTP/1
//! connections); `bucket.rs` sources in the deployment's S3-compatible buckets; `cache.rs` the [`SourceCache`]; `error.rs` [`FetchError`] with its statuses.

mod address;
mod bucket;
mod cache;
mod error;
mod fetch;
mod policy;

#[cfg(test)]
mod tests;

pub use address::is_public;
pub use cache::{CacheOutcome, CacheStats, Source, SourceCache};
pub use error::{FetchError, OriginError};
pub use fetch::{Fetched, Fetcher, Validators};
pub use policy::{BucketSpec, OriginPolicy, SourceRules};
