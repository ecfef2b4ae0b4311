//! The credential cache: the data plane's in-memory copy of every API key, from which each api
//! node decides every request without a network hop. Available before consistent (the
//! blueprint's CAP choice for the data plane): it answers from what it has, and what it has lags
//! the store by one feed interval at most.
//!
//! It has exactly one way in, whoever feeds it — the embedded store ([`crate::feed`]) or, in the
//! cluster, a JetStream KV watcher: a [`Snapshot`] to start from, then [`Change`]s strictly in
//! version order. A change it already has is ignored, so replays are harmless; a change that
//! skips a version is refused with [`CacheError::Gap`], which tells the feeder to fetch a new
//! snapshot. It must not know where its data comes from, nor hold a secret: only SHA-256 hashes.
//!
//! Reads are hot and updates rare, so the state is an immutable map behind `RwLock<Arc<…>>`: an
//! update builds a new map off to the side and swaps the pointer; a reader holds the read lock
//! for one hash probe and a 32-byte comparison, and never waits for an update to be built.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use crate::key::{ct_eq, parse_key, KeyFormatError, KeyId};
use crate::model::{Change, ChangeKind, Credential, Snapshot, TenantId, TenantLimits, TenantState, TenantStatus};
use crate::sources::KeyPurpose;

/// Why a presented key was refused. The api maps `Malformed`, `UnknownKey` and `Expired` to 401,
/// `Revoked` and `TenantSuspended` to 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not an API key at all, or a mistyped one: refused on its shape, no lookup was made.
    #[error("malformed API key: {0}")]
    Malformed(KeyFormatError),
    /// No key has this id, or the secret does not match the id's (the two are not told apart,
    /// so a key id alone reveals nothing).
    #[error("unknown API key")]
    UnknownKey,
    /// The key was genuine and has been revoked.
    #[error("the API key has been revoked")]
    Revoked,
    /// The key was genuine and its lifetime is over (its `expires_at` has passed).
    #[error("the API key has expired")]
    Expired,
    /// The key is genuine but its tenant is suspended.
    #[error("the tenant of this API key is suspended")]
    TenantSuspended,
    /// The key is genuine but signs URLs: it authenticates no request.
    #[error("this is a URL signing key, not an API key")]
    SigningKey,
}

/// Proof that a request presented a valid key of an active tenant. Only
/// [`CredentialCache::authenticate`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    tenant: TenantId,
    key: KeyId,
    limits: TenantLimits,
}

impl Authenticated {
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    pub fn key(&self) -> KeyId {
        self.key
    }

    /// The tenant's overrides; resolve them against the deployment's defaults with
    /// [`TenantLimits::resolve`].
    pub fn limits(&self) -> &TenantLimits {
        &self.limits
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The next change the cache can take is `have + 1`; it was offered `got`. The feeder must
    /// apply a fresh snapshot (then carry on with the changes after it).
    #[error("credential cache is at version {have} and was offered change {got}: changes are missing, resnapshot")]
    Gap { have: u64, got: u64 },
}

#[derive(Default)]
pub struct CredentialCache {
    current: RwLock<Arc<State>>,
    /// Held for a whole read-modify-swap, so two feeders cannot lose each other's updates.
    /// Readers never take it.
    update: Mutex<()>,
}

#[derive(Debug, Clone, Default)]
struct State {
    version: u64,
    primed: bool,
    entries: HashMap<KeyId, Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    secret_hash: [u8; 32],
    revoked: bool,
    expires_at: Option<SystemTime>,
    purpose: KeyPurpose,
    tenant: TenantState,
}

impl Entry {
    fn of(c: Credential) -> (KeyId, Entry) {
        let entry = Entry {
            secret_hash: c.secret_hash,
            revoked: c.revoked,
            expires_at: c.expires_at,
            purpose: c.purpose,
            tenant: c.tenant,
        };
        (c.key, entry)
    }

    /// Revocation, expiry (from `expires_at` on, that instant included) and the tenant's
    /// status, in that order.
    fn check_standing(&self, now: SystemTime) -> Result<(), AuthError> {
        if self.revoked {
            return Err(AuthError::Revoked);
        }
        if self.expires_at.is_some_and(|end| now >= end) {
            return Err(AuthError::Expired);
        }
        if self.tenant.status == TenantStatus::Suspended {
            return Err(AuthError::TenantSuspended);
        }
        Ok(())
    }
}

impl CredentialCache {
    /// An empty cache at version 0: it knows no key until it is fed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides a presented key against the clock: see [`CredentialCache::authenticate_at`].
    pub fn authenticate(&self, presented: &str) -> Result<Authenticated, AuthError> {
        self.authenticate_at(presented, SystemTime::now())
    }

    /// Decides a presented key at `now`: format and checksum first (no lookup), then the key id,
    /// a constant-time comparison of the secret's SHA-256, the key's revocation, its expiry (a
    /// key is refused from its `expires_at` on, that instant included) and the tenant's status,
    /// in that order — revocation, expiry and suspension are only revealed to the key's holder.
    pub fn authenticate_at(&self, presented: &str, now: SystemTime) -> Result<Authenticated, AuthError> {
        let parsed = parse_key(presented).map_err(AuthError::Malformed)?;
        // Hashed before the lookup, so an unknown id and a wrong secret cost about the same.
        let hash = parsed.secret_hash();
        let key = parsed.key_id();
        let state = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let entry = state.entries.get(&key).ok_or(AuthError::UnknownKey)?;
        if !ct_eq(&hash, &entry.secret_hash) {
            return Err(AuthError::UnknownKey);
        }
        entry.check_standing(now)?;
        if entry.purpose != KeyPurpose::Api {
            return Err(AuthError::SigningKey);
        }
        Ok(Authenticated { tenant: entry.tenant.id, key, limits: entry.tenant.limits.clone() })
    }

    /// The standing of the signing key a signed URL names, at `now`: the URL's signature has
    /// been checked by the caller against the key's secret (which this cache does not hold).
    /// An API key's id named as a signing key is unknown: the purposes never mix.
    pub fn signing_key_at(&self, key: KeyId, now: SystemTime) -> Result<Authenticated, AuthError> {
        let state = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let entry =
            state.entries.get(&key).filter(|e| e.purpose == KeyPurpose::Signing).ok_or(AuthError::UnknownKey)?;
        entry.check_standing(now)?;
        Ok(Authenticated { tenant: entry.tenant.id, key, limits: entry.tenant.limits.clone() })
    }

    /// Replaces the whole state with `snapshot`, unless the cache is already past it (a slower
    /// feeder's older snapshot must not roll back a revocation): returns whether it was applied.
    /// Versions never go backwards, so a store restored from an older backup needs a new cache.
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> bool {
        let _update = self.update.lock().unwrap_or_else(PoisonError::into_inner);
        if snapshot.version < self.version() {
            return false;
        }
        let entries = snapshot.credentials.into_iter().map(Entry::of).collect();
        self.swap(State { version: snapshot.version, primed: true, entries });
        true
    }

    /// Applies one change: the next version is applied, an old one ignored, a later one refused.
    pub fn apply_change(&self, change: Change) -> Result<(), CacheError> {
        self.apply_changes([change]).map(|_| ())
    }

    /// Applies changes in order with a single swap at the end; returns how many were new.
    /// On a gap, the changes before it are kept and the gap is reported.
    pub fn apply_changes(&self, changes: impl IntoIterator<Item = Change>) -> Result<usize, CacheError> {
        let _update = self.update.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.load();
        let mut next: Option<State> = None;
        let mut result = Ok(0);
        for change in changes {
            let have = next.as_ref().map_or(current.version, |s| s.version);
            if change.version <= have {
                continue;
            }
            if change.version != have + 1 {
                result = Err(CacheError::Gap { have, got: change.version });
                break;
            }
            // Copy-on-write: the map is cloned once per batch, not per change.
            let state = next.get_or_insert_with(|| State::clone(&current));
            apply(state, change);
            result = result.map(|n| n + 1);
        }
        if let Some(state) = next {
            self.swap(state);
        }
        result
    }

    /// A tenant's limits as the cache holds them with its keys; None for a tenant without keys.
    /// A scan of every key: for callers outside the request path (the aggregator asks once per
    /// tenant of a batch).
    pub fn tenant_limits(&self, tenant: TenantId) -> Option<TenantLimits> {
        self.load().entries.values().find(|e| e.tenant.id == tenant).map(|e| e.tenant.limits.clone())
    }

    /// The version of the last change applied (or of the snapshot); 0 when never fed.
    pub fn version(&self) -> u64 {
        self.load().version
    }

    /// Whether a snapshot has been applied: until then the cache refuses every key, which is
    /// why an api node should not report ready before.
    pub fn is_primed(&self) -> bool {
        self.load().primed
    }

    /// Number of keys held, revoked ones included.
    pub fn len(&self) -> usize {
        self.load().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache's state in the store's snapshot form (credentials ordered by key id): for
    /// checking that a cache fed by changes agrees with the store, and for debugging.
    pub fn to_snapshot(&self) -> Snapshot {
        let state = self.load();
        let mut credentials: Vec<Credential> = state
            .entries
            .iter()
            .map(|(&key, e)| Credential {
                key,
                secret_hash: e.secret_hash,
                revoked: e.revoked,
                expires_at: e.expires_at,
                purpose: e.purpose,
                tenant: e.tenant.clone(),
            })
            .collect();
        credentials.sort_by_key(|c| c.key);
        Snapshot { version: state.version, credentials }
    }

    fn load(&self) -> Arc<State> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn swap(&self, state: State) {
        let old =
            std::mem::replace(&mut *self.current.write().unwrap_or_else(PoisonError::into_inner), Arc::new(state));
        // The old map is freed here, after the write lock is released, not under it.
        drop(old);
    }
}

fn apply(state: &mut State, change: Change) {
    match change.kind {
        ChangeKind::Tenant(tenant) => {
            // A tenant without keys has nothing here; its keys' own changes will carry its state.
            for entry in state.entries.values_mut().filter(|e| e.tenant.id == tenant.id) {
                entry.tenant = tenant.clone();
            }
        }
        ChangeKind::Credential(c) => {
            let (key, entry) = Entry::of(c);
            state.entries.insert(key, entry);
        }
    }
    state.version = change.version;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::key::{format_key, secret_hash};

    const SECRET: &[u8; 32] = b"0123456789abcdefghijABCDEFGHIJxy";
    const TENANT: TenantId = TenantId::new(7);

    fn key_id(s: &str) -> KeyId {
        s.parse().unwrap()
    }

    fn active() -> TenantState {
        TenantState { id: TENANT, status: TenantStatus::Active, limits: TenantLimits::default() }
    }

    fn credential(id: KeyId, revoked: bool, tenant: TenantState) -> Credential {
        Credential {
            key: id,
            secret_hash: secret_hash(SECRET),
            revoked,
            expires_at: None,
            purpose: KeyPurpose::Api,
            tenant,
        }
    }

    fn change(version: u64, kind: ChangeKind) -> Change {
        Change { version, at: SystemTime::UNIX_EPOCH, kind }
    }

    fn cache_with(credentials: Vec<Credential>) -> CredentialCache {
        let cache = CredentialCache::new();
        assert!(cache.apply_snapshot(Snapshot { version: 10, credentials }));
        cache
    }

    #[test]
    fn a_signing_key_authenticates_nothing_and_an_api_key_signs_nothing() {
        let (signing, api, revoked) = (key_id("SigningSigni"), key_id("ApiKeyApiKey"), key_id("RevokedSigni"));
        let as_signing = |c: Credential| Credential { purpose: KeyPurpose::Signing, ..c };
        let cache = cache_with(vec![
            as_signing(credential(signing, false, active())),
            credential(api, false, active()),
            as_signing(credential(revoked, true, active())),
        ]);
        let now = SystemTime::now();
        assert_eq!(cache.signing_key_at(signing, now).map(|a| a.tenant()), Ok(TENANT));
        assert_eq!(cache.authenticate(&format_key(signing, SECRET)), Err(AuthError::SigningKey));
        assert_eq!(cache.signing_key_at(api, now), Err(AuthError::UnknownKey));
        assert_eq!(cache.signing_key_at(revoked, now), Err(AuthError::Revoked));
        assert_eq!(cache.signing_key_at(key_id("NobodyNobody"), now), Err(AuthError::UnknownKey));
    }

    #[test]
    fn authenticate_outcomes() {
        let good = key_id("GoodGoodGood");
        let revoked = key_id("RevokedRevok");
        let suspended = key_id("SuspendedSus");
        let limits = TenantLimits { burst: Some(3), ..TenantLimits::default() };
        let cache = cache_with(vec![
            credential(good, false, TenantState { limits: limits.clone(), ..active() }),
            credential(revoked, true, active()),
            credential(suspended, false, TenantState { status: TenantStatus::Suspended, ..active() }),
        ]);

        let ok = cache.authenticate(&format_key(good, SECRET)).unwrap();
        assert_eq!((ok.tenant(), ok.key(), ok.limits()), (TENANT, good, &limits));

        assert_eq!(cache.authenticate(&format_key(revoked, SECRET)), Err(AuthError::Revoked));
        assert_eq!(cache.authenticate(&format_key(suspended, SECRET)), Err(AuthError::TenantSuspended));
        assert_eq!(cache.authenticate(&format_key(key_id("NobodyNobody"), SECRET)), Err(AuthError::UnknownKey));
        // A well-formed key with a known id but another secret is as unknown as an unknown id,
        // and reveals neither revocation nor suspension.
        let other_secret = b"xy0123456789abcdefghijABCDEFGHIJ";
        for id in [good, revoked, suspended] {
            assert_eq!(cache.authenticate(&format_key(id, other_secret)), Err(AuthError::UnknownKey));
        }
        let mut typo = format_key(good, SECRET);
        typo.replace_range(20..21, "Q");
        assert_eq!(cache.authenticate(&typo), Err(AuthError::Malformed(KeyFormatError::Checksum)));
        assert_eq!(cache.authenticate("hunter2"), Err(AuthError::Malformed(KeyFormatError::Prefix)));
    }

    #[test]
    fn changes_apply_in_order_and_replays_are_ignored() {
        let a = key_id("AAAAAAAAAAAA");
        let cache = cache_with(vec![]);
        cache.apply_change(change(11, ChangeKind::Credential(credential(a, false, active())))).unwrap();
        assert!(cache.authenticate(&format_key(a, SECRET)).is_ok());

        let revoke = change(12, ChangeKind::Credential(credential(a, true, active())));
        cache.apply_change(revoke.clone()).unwrap();
        assert_eq!(cache.authenticate(&format_key(a, SECRET)), Err(AuthError::Revoked));

        // Replaying an older change must not un-revoke the key.
        cache.apply_change(change(11, ChangeKind::Credential(credential(a, false, active())))).unwrap();
        cache.apply_change(revoke).unwrap();
        assert_eq!(cache.version(), 12);
        assert_eq!(cache.authenticate(&format_key(a, SECRET)), Err(AuthError::Revoked));
    }

    #[test]
    fn a_gap_is_refused_and_keeps_what_came_before_it() {
        let (a, b) = (key_id("AAAAAAAAAAAA"), key_id("BBBBBBBBBBBB"));
        let cache = cache_with(vec![]);
        let err = cache.apply_change(change(12, ChangeKind::Credential(credential(a, false, active()))));
        assert_eq!(err, Err(CacheError::Gap { have: 10, got: 12 }));
        assert_eq!((cache.version(), cache.len()), (10, 0));

        let batch = vec![
            change(11, ChangeKind::Credential(credential(a, false, active()))),
            change(13, ChangeKind::Credential(credential(b, false, active()))),
        ];
        assert_eq!(cache.apply_changes(batch), Err(CacheError::Gap { have: 11, got: 13 }));
        assert_eq!((cache.version(), cache.len()), (11, 1));
    }

    #[test]
    fn a_tenant_change_reaches_every_key_of_that_tenant_only() {
        let (a, b, c) = (key_id("AAAAAAAAAAAA"), key_id("BBBBBBBBBBBB"), key_id("CCCCCCCCCCCC"));
        let other = TenantState { id: TenantId::new(8), ..active() };
        let cache = cache_with(vec![
            credential(a, false, active()),
            credential(b, false, active()),
            credential(c, false, other),
        ]);
        let suspended = TenantState { status: TenantStatus::Suspended, ..active() };
        cache.apply_change(change(11, ChangeKind::Tenant(suspended))).unwrap();
        assert_eq!(cache.authenticate(&format_key(a, SECRET)), Err(AuthError::TenantSuspended));
        assert_eq!(cache.authenticate(&format_key(b, SECRET)), Err(AuthError::TenantSuspended));
        assert_eq!(cache.authenticate(&format_key(c, SECRET)).unwrap().tenant(), TenantId::new(8));
    }

    #[test]
    fn an_older_snapshot_does_not_roll_the_cache_back() {
        let a = key_id("AAAAAAAAAAAA");
        let cache = cache_with(vec![credential(a, true, active())]);
        assert!(!cache.apply_snapshot(Snapshot { version: 9, credentials: vec![credential(a, false, active())] }));
        assert_eq!(cache.authenticate(&format_key(a, SECRET)), Err(AuthError::Revoked));
        assert!(cache.apply_snapshot(Snapshot { version: 10, credentials: vec![] }));
        assert!(cache.is_empty());
    }

    #[test]
    fn an_expired_key_is_refused_from_its_expiry_on() {
        let (lasting, expiring) = (key_id("LastingLasti"), key_id("ExpiringExpi"));
        let end = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let cache = cache_with(vec![
            credential(lasting, false, active()),
            Credential { expires_at: Some(end), ..credential(expiring, false, active()) },
        ]);
        let token = format_key(expiring, SECRET);
        let just_before = end - Duration::from_millis(1);
        assert_eq!(cache.authenticate_at(&token, just_before).map(|a| a.key()), Ok(expiring));
        // The boundary: the instant of expiry is already too late.
        assert_eq!(cache.authenticate_at(&token, end), Err(AuthError::Expired));
        assert_eq!(cache.authenticate_at(&token, end + Duration::from_secs(86_400)), Err(AuthError::Expired));
        // A key without an expiry lasts, and the wall clock is what `authenticate` uses.
        assert!(cache.authenticate_at(&format_key(lasting, SECRET), end + Duration::from_secs(1 << 40)).is_ok());
        let wall = |end: SystemTime| {
            let cache = cache_with(vec![Credential { expires_at: Some(end), ..credential(expiring, false, active()) }]);
            cache.authenticate(&token).map(|a| a.key())
        };
        assert_eq!(wall(SystemTime::now() + Duration::from_secs(3600)), Ok(expiring));
        assert_eq!(wall(SystemTime::now() - Duration::from_millis(1)), Err(AuthError::Expired));
        // Only the holder of the secret learns that the key expired.
        assert_eq!(
            cache.authenticate_at(&format_key(expiring, b"xy0123456789abcdefghijABCDEFGHIJ"), end),
            Err(AuthError::UnknownKey)
        );
        // Revocation comes first; suspension only after expiry.
        let revoked = Credential { expires_at: Some(end), ..credential(expiring, true, active()) };
        cache.apply_change(change(11, ChangeKind::Credential(revoked))).unwrap();
        assert_eq!(cache.authenticate_at(&token, end), Err(AuthError::Revoked));
        let suspended = TenantState { status: TenantStatus::Suspended, ..active() };
        let expired_and_suspended = Credential { expires_at: Some(end), ..credential(expiring, false, suspended) };
        cache.apply_change(change(12, ChangeKind::Credential(expired_and_suspended))).unwrap();
        assert_eq!(cache.authenticate_at(&token, end), Err(AuthError::Expired));
        assert_eq!(cache.authenticate_at(&token, just_before), Err(AuthError::TenantSuspended));
    }

    #[test]
    fn an_expiry_arrives_with_a_change_and_a_snapshot() {
        let a = key_id("AAAAAAAAAAAA");
        let end = SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let cache = cache_with(vec![credential(a, false, active())]);
        let token = format_key(a, SECRET);
        assert!(cache.authenticate_at(&token, end).is_ok());
        let expiring = Credential { expires_at: Some(end), ..credential(a, false, active()) };
        cache.apply_change(change(11, ChangeKind::Credential(expiring.clone()))).unwrap();
        assert_eq!(cache.authenticate_at(&token, end), Err(AuthError::Expired));
        assert_eq!(cache.to_snapshot().credentials, vec![expiring.clone()]);

        let fresh = CredentialCache::new();
        assert!(fresh.apply_snapshot(Snapshot { version: 11, credentials: vec![expiring] }));
        assert_eq!(fresh.authenticate_at(&token, end), Err(AuthError::Expired));
    }

    #[test]
    fn a_new_cache_knows_nothing() {
        let cache = CredentialCache::new();
        assert!(!cache.is_primed());
        assert_eq!((cache.version(), cache.len()), (0, 0));
        assert_eq!(cache.authenticate(&format_key(key_id("AAAAAAAAAAAA"), SECRET)), Err(AuthError::UnknownKey));
    }
}
