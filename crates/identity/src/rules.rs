//! What the two stores must do alike, in one place so that they cannot drift apart: the input
//! rules (tenant names, key labels), the records a mutation makes (a new tenant, an issued key,
//! the tenant state a change carries), and the column conversions both SQL schemas share (tenant
//! ids as signed integers, times as Unix milliseconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::StoreError;
use crate::key::NewKey;
use crate::model::{ApiKey, Credential, Tenant, TenantId, TenantLimits, TenantState, TenantStatus};

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
    TenantState { id: tenant.id, status: tenant.status, limits: tenant.limits }
}

/// A tenant id as SQLite and PostgreSQL bind it. Ids above 2^63 - 1 cannot exist (rowids and
/// BIGINT are signed), so they
/// become -1, which matches no row: a caller's absurd id is "not found", never a panic.
pub(crate) fn sql_tenant(id: TenantId) -> i64 {
    i64::try_from(id.get()).unwrap_or(-1)
}

pub(crate) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
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
pub(crate) fn issued_key(new: &NewKey, owner: &Tenant, label: &str, created_at: i64) -> (ApiKey, Credential) {
    let api_key = ApiKey {
        id: new.id,
        tenant: owner.id,
        label: label.to_string(),
        created_at: from_ms(created_at),
        revoked_at: None,
    };
    let credential =
        Credential { key: new.id, secret_hash: new.secret_hash, revoked: false, tenant: tenant_state(owner) };
    (api_key, credential)
}
