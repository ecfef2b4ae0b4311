//! The management plane's data model: tenants, their limits and their API keys, plus the two
//! shapes in which the data plane receives it — a [`Snapshot`] of every credential and an ordered
//! stream of [`Change`]s. The store writes these types; the credential cache reads them; neither
//! the SQL nor a wire format lives here.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::key::KeyId;
use crate::quota::Quota;
use crate::sources::{KeyPurpose, SourceList};

/// A tenant's id: assigned by the store, never reused. Not a secret and not a capability — it
/// names a tenant in admin URLs, logs and usage records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantId(u64);

impl TenantId {
    pub const fn new(id: u64) -> Self {
        TenantId(id)
    }

    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TenantId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(TenantId)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantStatus {
    Active,
    /// Every key of the tenant is refused (HTTP 403) until it is reactivated; keys are kept.
    Suspended,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = InvalidStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(TenantStatus::Active),
            "suspended" => Ok(TenantStatus::Suspended),
            _ => Err(InvalidStatus),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a tenant status is `active` or `suspended`")]
pub struct InvalidStatus;

/// A tenant's own limits. Every field is an override: `None` means "the deployment's default",
/// which the api takes from its configuration (see [`EffectiveLimits`]) — so changing the global
/// default changes every tenant that has not been given its own value, which is what an operator
/// expects. The store only holds what was set explicitly.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantLimits {
    /// Sustained requests per second (token bucket refill rate). Finite and > 0.
    pub rate_per_sec: Option<f64>,
    /// Requests that may be made at once above the sustained rate (token bucket size). ≥ 1.
    pub burst: Option<u32>,
    /// Largest request body, in bytes. ≥ 1.
    pub max_input_bytes: Option<u64>,
    /// Largest width × height of an input image, as declared in its header. ≥ 1.
    pub max_input_pixels: Option<u64>,
    /// The tenant's volume quota; `Some` of a quota without limits exempts it from the
    /// deployment's default quota.
    pub quota: Option<Quota>,
    /// Where the tenant's signed URLs may fetch sources from; `None` or empty: nowhere.
    pub sources: Option<SourceList>,
    /// `Cache-Control: max-age` of the tenant's signed-URL answers, in seconds.
    pub cache_max_age_secs: Option<u32>,
}

/// The longest `max-age` a tenant may be given: ten years.
pub const MAX_CACHE_MAX_AGE_SECS: u32 = 10 * 365 * 86_400;

impl TenantLimits {
    /// Every override, with the defaults filling the gaps.
    pub fn resolve(&self, defaults: &EffectiveLimits) -> EffectiveLimits {
        EffectiveLimits {
            rate_per_sec: self.rate_per_sec.unwrap_or(defaults.rate_per_sec),
            burst: self.burst.unwrap_or(defaults.burst),
            // Clamped also here: a value stored before the ceilings existed must not apply.
            max_input_bytes: self.max_input_bytes.unwrap_or(defaults.max_input_bytes).min(MAX_INPUT_BYTES_CEILING),
            max_input_pixels: self.max_input_pixels.unwrap_or(defaults.max_input_pixels).min(MAX_INPUT_PIXELS_CEILING),
            quota: self.quota.or(defaults.quota).filter(|q| !q.is_unlimited()),
            cache_max_age_secs: self.cache_max_age_secs.unwrap_or(defaults.cache_max_age_secs),
        }
    }

    /// Refuses values no limiter can use, and input limits over the ceilings
    /// ([`MAX_INPUT_BYTES_CEILING`], [`MAX_INPUT_PIXELS_CEILING`]). The other bounds come from the stores: SQLite and
    /// PostgreSQL integers are signed 64-bit.
    pub fn validate(&self) -> Result<(), InvalidLimits> {
        if let Some(rate) = self.rate_per_sec {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(InvalidLimits("rate_per_sec must be a finite number above 0"));
            }
        }
        if self.burst == Some(0) {
            return Err(InvalidLimits("burst must be at least 1"));
        }
        let in_range = |v: Option<u64>, ceiling: u64| v.is_none_or(|v| (1..=ceiling).contains(&v));
        if !in_range(self.max_input_bytes, MAX_INPUT_BYTES_CEILING) {
            return Err(InvalidLimits("max_input_bytes must be between 1 and 1073741824 (1 GiB)"));
        }
        if !in_range(self.max_input_pixels, MAX_INPUT_PIXELS_CEILING) {
            return Err(InvalidLimits("max_input_pixels must be between 1 and 4294967296"));
        }
        if self.cache_max_age_secs.is_some_and(|s| s > MAX_CACHE_MAX_AGE_SECS) {
            return Err(InvalidLimits("cache_max_age_secs must be at most 315360000 (ten years)"));
        }
        if let Some(quota) = &self.quota {
            quota.validate().map_err(|_| InvalidLimits("the quota has a value out of range"))?;
        }
        Ok(())
    }
}

/// The most any tenant may send in one body: an api node holds the body in memory while it
/// works on it, so no limit may let one request take more (1 GiB).
pub const MAX_INPUT_BYTES_CEILING: u64 = 1 << 30;
/// The most pixels any tenant's input may declare (65,536 × 65,536, JPEG's own ceiling).
pub const MAX_INPUT_PIXELS_CEILING: u64 = 1 << 32;

/// Why a [`TenantLimits`] was refused; the message is fit for an admin client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidLimits(pub &'static str);

/// Limits with every value decided: what the rate limiter and the body cap actually use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EffectiveLimits {
    pub rate_per_sec: f64,
    pub burst: u32,
    pub max_input_bytes: u64,
    pub max_input_pixels: u64,
    /// The quota the tenant is held to; None: none.
    pub quota: Option<Quota>,
    /// `Cache-Control: max-age` of signed-URL answers.
    pub cache_max_age_secs: u32,
}

impl Default for EffectiveLimits {
    /// The built-in global defaults, for a deployment whose configuration says nothing:
    /// 100 requests/s with bursts of 200, and the same input caps as `imaging::Limits`
    /// (32 MiB, 100 megapixels) so that a tenant without overrides is bounded by the pipeline's
    /// own limits and nothing else.
    fn default() -> Self {
        EffectiveLimits {
            rate_per_sec: 100.0,
            burst: 200,
            max_input_bytes: 32 << 20,
            max_input_pixels: 100_000_000,
            quota: None,
            // A year, as imgproxy and thumbor default: a signed URL's answer changes only
            // with its source, whose validator is in the ETag.
            cache_max_age_secs: 365 * 86_400,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    /// Unique, compared case-insensitively; 1–64 characters from `[A-Za-z0-9._-]`.
    pub name: String,
    pub status: TenantStatus,
    pub limits: TenantLimits,
    /// Millisecond precision (what the store keeps).
    pub created_at: SystemTime,
}

/// An API key as the management plane shows it. The secret is not here: the store keeps only its
/// SHA-256 and hands the full key string back once, from `create_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: KeyId,
    pub tenant: TenantId,
    /// Free text for humans ("ci", "production"); not unique. 1–100 characters, no control characters.
    pub label: String,
    pub created_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
    /// From this instant on the key is refused (HTTP 401 `key-expired`); `None`: it never expires.
    /// Set at creation, or by a rotation (which only ever brings it closer).
    pub expires_at: Option<SystemTime>,
    /// An API key or a URL signing key; fixed at creation.
    pub purpose: KeyPurpose,
}

/// What the data plane needs to know about a tenant to decide a request.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantState {
    pub id: TenantId,
    pub status: TenantStatus,
    pub limits: TenantLimits,
}

/// One API key as the credential cache holds it: everything an authentication decision needs,
/// denormalised so that deciding is one lookup. Revoked keys are kept, so that a revoked key is
/// told apart from an unknown one (403 against 401).
#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    pub key: KeyId,
    /// SHA-256 of the key's secret part (the 32 characters between the second and third `_`).
    pub secret_hash: [u8; 32],
    pub revoked: bool,
    /// The key is refused from this instant on (millisecond precision); checked against the
    /// clock at every request, so expiry needs no change to travel.
    pub expires_at: Option<SystemTime>,
    pub purpose: KeyPurpose,
    /// The key's tenant as of the version this credential was read at.
    pub tenant: TenantState,
}

/// Every credential at one version of the outbox: applying the changes after `version` to it
/// gives the current state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// The version of the last change included; 0 for a store that never changed.
    pub version: u64,
    /// Ordered by key id.
    pub credentials: Vec<Credential>,
}

/// One row of the outbox. Versions start at 1 and have no holes: change `n + 1` is the one that
/// follows change `n`, which is how a reader detects that it missed one.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub version: u64,
    /// When the mutation committed (store clock), so a reader can measure its propagation lag.
    pub at: SystemTime,
    pub kind: ChangeKind,
}

/// Each change carries the full new state of one thing, not a delta, so applying it twice is
/// harmless and the last change per thing is all a compacted log (a KV bucket) needs to keep.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// A tenant was created, suspended, reactivated or given new limits: every credential of it
    /// takes this state.
    Tenant(TenantState),
    /// A key was created or revoked: its whole credential, with its tenant's state at that version.
    Credential(Credential),
}

/// Who made an admin write, for the admin log: the operator named by the token (see the api's
/// operators) and the request id that ties the log row to the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub operator: String,
    pub request_id: String,
}

impl Actor {
    /// The process itself (the demo tenant `resizer dev` makes at start). Parentheses cannot
    /// appear in an operator's name, so this never reads as one.
    pub fn process() -> Actor {
        Actor { operator: "(resizer)".into(), request_id: String::new() }
    }
}

/// The admin writes the admin log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminAction {
    CreateTenant,
    UpdateLimits,
    SetStatus,
    CreateKey,
    RevokeKey,
    RotateKey,
}

impl AdminAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminAction::CreateTenant => "create-tenant",
            AdminAction::UpdateLimits => "update-limits",
            AdminAction::SetStatus => "set-status",
            AdminAction::CreateKey => "create-key",
            AdminAction::RevokeKey => "revoke-key",
            AdminAction::RotateKey => "rotate-key",
        }
    }
}

/// A stored action name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown admin action `{0}`")]
pub struct InvalidAction(String);

impl FromStr for AdminAction {
    type Err = InvalidAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AdminAction::CreateTenant,
            AdminAction::UpdateLimits,
            AdminAction::SetStatus,
            AdminAction::CreateKey,
            AdminAction::RevokeKey,
            AdminAction::RotateKey,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| InvalidAction(s.to_owned()))
    }
}

/// One row of the admin log: who asked for which write, on what, when, and how it ended. Never
/// holds a secret: keys appear by id only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRecord {
    /// Increasing in commit order; the cursor of the log's pages.
    pub id: u64,
    pub at: SystemTime,
    pub operator: String,
    pub request_id: String,
    pub action: AdminAction,
    pub tenant: Option<TenantId>,
    pub key: Option<KeyId>,
    /// `ok`, or what refused it: `not-found`, `conflict`, `invalid`, `key-revoked`, `key-expired`.
    pub outcome: String,
    /// What was asked or changed, for a human: `name=acme`, `status=suspended`, `new_key=…`.
    pub detail: String,
}

/// What a rotation made: the old key with its new expiry, the new key, and the new key's full
/// token (the only time it exists outside the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub old: ApiKey,
    pub new: ApiKey,
    pub token: String,
}
