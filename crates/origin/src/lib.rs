//! Fetching a tenant's source image from its origin, for the signed GET route.
//!
//! Owns: the SSRF guard (every address checked after DNS resolution, connections made only to
//! checked addresses, redirects checked the same way), time-outs and byte caps while streaming,
//! and the node's bounded cache of sources with their validators.
//! Must not: know HTTP routes, tenants' keys or signatures, or decode images.
