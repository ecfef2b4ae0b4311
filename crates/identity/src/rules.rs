//! What the two stores must do alike, in one place so that they cannot drift apart: the input
//! rules (tenant names, key labels), the records a mutation makes (a new tenant, an issued key,
//! the tenant state a change carries, the admin log's rows), and the column conversions both SQL
//! schemas share (tenant ids as signed integers, times as Unix milliseconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::StoreError;
use crate::key::{KeyId, NewKey};
use crate::model::{ApiKey, Credential, Tenant, TenantId, TenantLimits, TenantState, TenantStatus};
use crate::sources::{KeyPurpose, SourceList};

/// The furthest ahead a key's expiry may be set: a century, so that every expiry fits the
/// stores' signed millisecond columns with room to spare.
pub const MAX_KEY_LIFETIME: Duration = Duration::from_secs(100 * 365 * 86_400);

pub(crate) fn validate_tenant_name(name: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    // A name must not read as a tenant id (admin URLs take either) nor as a path segment of its own.
    let ambiguous = name.bytes().all(|b| b.is_ascii_digit()) || name == "." || name == "..";
    if ok && !ambiguous {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "a tenant name is 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-', not all digits, not '.' or '..'",
        ))
    }
}

pub(crate) fn validate_label(label: &str) -> Result<(), StoreError> {
    let ok = (1..=100).contains(&label.chars().count()) && !label.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid("a key label is 1 to 100 characters, none of them control characters"))
    }
}

pub(crate) fn tenant_state(tenant: &Tenant) -> TenantState {
    TenantState { id: tenant.id, status: tenant.status, limits: tenant.limits.clone() }
}

/// A tenant id as SQLite and PostgreSQL bind it. Ids above 2^63 - 1 cannot exist (rowids and
/// BIGINT are signed), so they
/// become -1, which matches no row: a caller's absurd id is "not found", never a panic.
pub(crate) fn sql_tenant(id: TenantId) -> i64 {
    i64::try_from(id.get()).unwrap_or(-1)
}

/// A tenant id as the admin log keeps it: an id no tenant can have (over 2^63 - 1, asked for
/// and refused) is left out rather than kept as a number that would not read back.
pub(crate) fn log_tenant(id: TenantId) -> Option<i64> {
    i64::try_from(id.get()).ok()
}

pub(crate) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// A time as the stores keep it: Unix milliseconds (times before 1970 become 0).
pub(crate) fn to_ms(t: SystemTime) -> i64 {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// An expiry a caller asks for, in Unix milliseconds: after `now_ms` (an expiry in the past would
/// make a key dead on arrival, certainly a mistake) and within [`MAX_KEY_LIFETIME`].
pub(crate) fn validate_expiry(expires_at: SystemTime, now_ms: i64) -> Result<i64, StoreError> {
    let ms = to_ms(expires_at);
    if ms <= now_ms {
        return Err(StoreError::Invalid("an expiry must be in the future"));
    }
    if ms - now_ms > MAX_KEY_LIFETIME.as_millis() as i64 {
        return Err(StoreError::Invalid("an expiry must be within 100 years"));
    }
    Ok(ms)
}

pub(crate) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The tenant `create_tenant` makes: active, with the limits given, created at `created_at`
/// (Unix milliseconds).
pub(crate) fn new_tenant(id: TenantId, name: &str, limits: TenantLimits, created_at: i64) -> Tenant {
    Tenant { id, name: name.to_string(), status: TenantStatus::Active, limits, created_at: from_ms(created_at) }
}

/// The key `create_key` issued to `owner`, and the credential its change carries.
pub(crate) fn issued_key(
    new: &NewKey,
    owner: &Tenant,
    label: &str,
    created_at: i64,
    expires_at: Option<i64>,
    purpose: KeyPurpose,
) -> (ApiKey, Credential) {
    let api_key = ApiKey {
        id: new.id,
        tenant: owner.id,
        label: label.to_string(),
        created_at: from_ms(created_at),
        revoked_at: None,
        expires_at: expires_at.map(from_ms),
        purpose,
    };
    let credential = Credential {
        key: new.id,
        secret_hash: new.secret_hash,
        revoked: false,
        expires_at: expires_at.map(from_ms),
        purpose,
        tenant: tenant_state(owner),
    };
    (api_key, credential)
}

/// The expiry a rotation gives the old key: the one asked for, unless the key already expires
/// sooner (a rotation never lengthens a key's life). A revoked or expired key is refused.
pub(crate) fn rotated_expiry(old: &ApiKey, asked_ms: i64, now_ms: i64) -> Result<i64, StoreError> {
    if old.revoked_at.is_some() {
        return Err(StoreError::KeyRevoked(old.id));
    }
    match old.expires_at.map(to_ms) {
        Some(current) if current <= now_ms => Err(StoreError::KeyExpired(old.id)),
        Some(current) => Ok(current.min(asked_ms)),
        None => Ok(asked_ms),
    }
}

/// What the admin log keeps of one write besides who, when and how it ended.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogNote {
    pub tenant: Option<TenantId>,
    pub key: Option<KeyId>,
    pub detail: String,
}

impl LogNote {
    pub fn tenant(tenant: TenantId, detail: String) -> LogNote {
        LogNote { tenant: Some(tenant), key: None, detail }
    }

    pub fn key(tenant: Option<TenantId>, key: KeyId, detail: String) -> LogNote {
        LogNote { tenant, key: Some(key), detail }
    }

    /// The note of a write that found nothing to change.
    pub fn unchanged(mut self) -> LogNote {
        self.detail.push_str(if self.detail.is_empty() { "unchanged" } else { " (unchanged)" });
        self
    }

    /// The note of a refused write: what was asked, and why it was refused.
    pub fn refused(mut self, error: &StoreError) -> LogNote {
        if !self.detail.is_empty() {
            self.detail.push_str("; ");
        }
        self.detail.push_str(&error.to_string());
        self
    }
}

/// A name or label as the log shows it: quoted and escaped, and cut at 100 characters (a refused
/// one can be anything a client sent).
pub(crate) fn quoted(s: &str) -> String {
    let cut: String = s.chars().take(100).collect();
    format!("{cut:?}")
}

pub(crate) fn key_detail(label: &str, expires_at: Option<SystemTime>, purpose: KeyPurpose) -> String {
    let mut detail = format!("label={}", quoted(label));
    if let Some(t) = expires_at {
        detail.push_str(&format!(" expires_at={}", time_detail(to_ms(t))));
    }
    if purpose != KeyPurpose::Api {
        detail.push_str(&format!(" purpose={}", purpose.as_str()));
    }
    detail
}

pub(crate) fn rotation_detail(new: &ApiKey, old_expires_at: i64) -> String {
    let mut detail = format!("new_key={} old_key_expires_at={}", new.id, time_detail(old_expires_at));
    if let Some(t) = new.expires_at {
        detail.push_str(&format!(" new_key_expires_at={}", time_detail(to_ms(t))));
    }
    detail
}

/// When a rotation's grace ends, in Unix milliseconds; a grace over [`MAX_KEY_LIFETIME`] is refused.
pub(crate) fn grace_end(now_ms: i64, grace: Duration) -> Result<i64, StoreError> {
    if grace > MAX_KEY_LIFETIME {
        return Err(StoreError::Invalid("a rotation's grace must be within 100 years"));
    }
    Ok(now_ms.saturating_add(grace.as_millis() as i64))
}

/// The quota column's value: its text form, NULL for the deployment's default.
pub(crate) fn quota_text(limits: &TenantLimits) -> Option<String> {
    limits.quota.map(|q| q.to_string())
}

/// The sources column's value: its text form, NULL for none set.
pub(crate) fn sources_text(limits: &TenantLimits) -> Option<String> {
    limits.sources.as_ref().map(SourceList::to_string)
}

/// The sources column read back; a value this build cannot read is refused rather than widened.
pub(crate) fn sources_from_text(text: Option<String>) -> Result<Option<SourceList>, crate::sources::InvalidSources> {
    text.map(|t| t.parse()).transpose()
}

pub(crate) fn limits_detail(limits: &TenantLimits) -> String {
    let show = |v: Option<String>| v.unwrap_or_else(|| "default".into());
    format!(
        "rate_per_sec={} burst={} max_input_bytes={} max_input_pixels={} quota={} sources={} cache_max_age_secs={}",
        show(limits.rate_per_sec.map(|v| v.to_string())),
        show(limits.burst.map(|v| v.to_string())),
        show(limits.max_input_bytes.map(|v| v.to_string())),
        show(limits.max_input_pixels.map(|v| v.to_string())),
        show(quota_text(limits)),
        show(sources_text(limits).map(|t| quoted(&t))),
        show(limits.cache_max_age_secs.map(|v| v.to_string())),
    )
}

/// A time in log details: RFC 3339 UTC with milliseconds (Howard Hinnant's civil-from-days).
pub(crate) fn time_detail(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_are_rfc3339() {
        assert_eq!(time_detail(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_detail(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    }
}
