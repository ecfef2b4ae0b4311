//! The identity store's operations as one trait, for its two real implementations: SQLite in one
//! process (`resizer dev`, [`crate::IdentityStore`]) and PostgreSQL for the cluster's identity
//! service. The admin API and the feeders take `&dyn Store`, so both modes run the same code.
//! Every method blocks: call it from a blocking thread.

use crate::error::StoreError;
use crate::key::KeyId;
use crate::model::{ApiKey, Change, Snapshot, Tenant, TenantId, TenantLimits, TenantStatus};
use crate::store::IdentityStore;

pub trait Store: Send + Sync {
    fn create_tenant(&self, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError>;
    fn get_tenant(&self, id: TenantId) -> Result<Tenant, StoreError>;
    fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError>;
    fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    fn update_limits(&self, id: TenantId, limits: TenantLimits) -> Result<Tenant, StoreError>;
    fn set_status(&self, id: TenantId, status: TenantStatus) -> Result<Tenant, StoreError>;
    /// The new key and, once only, its full token.
    fn create_key(&self, tenant: TenantId, label: &str) -> Result<(ApiKey, String), StoreError>;
    fn get_key(&self, id: KeyId) -> Result<ApiKey, StoreError>;
    fn list_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>, StoreError>;
    fn revoke_key(&self, id: KeyId) -> Result<ApiKey, StoreError>;
    /// The version of the last change in the outbox (0 when there is none).
    fn version(&self) -> Result<u64, StoreError>;
    fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// The outbox after `version`, in version order.
    fn changes_since(&self, version: u64) -> Result<Vec<Change>, StoreError>;
}

/// Each implementation's inherent methods are the trait's, one for one.
macro_rules! delegate_store {
    ($ty:ty) => {
        impl Store for $ty {
            fn create_tenant(&self, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError> {
                <$ty>::create_tenant(self, name, limits)
            }
            fn get_tenant(&self, id: TenantId) -> Result<Tenant, StoreError> {
                <$ty>::get_tenant(self, id)
            }
            fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError> {
                <$ty>::tenant_by_name(self, name)
            }
            fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
                <$ty>::list_tenants(self)
            }
            fn update_limits(&self, id: TenantId, limits: TenantLimits) -> Result<Tenant, StoreError> {
                <$ty>::update_limits(self, id, limits)
            }
            fn set_status(&self, id: TenantId, status: TenantStatus) -> Result<Tenant, StoreError> {
                <$ty>::set_status(self, id, status)
            }
            fn create_key(&self, tenant: TenantId, label: &str) -> Result<(ApiKey, String), StoreError> {
                <$ty>::create_key(self, tenant, label)
            }
            fn get_key(&self, id: KeyId) -> Result<ApiKey, StoreError> {
                <$ty>::get_key(self, id)
            }
            fn list_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>, StoreError> {
                <$ty>::list_keys(self, tenant)
            }
            fn revoke_key(&self, id: KeyId) -> Result<ApiKey, StoreError> {
                <$ty>::revoke_key(self, id)
            }
            fn version(&self) -> Result<u64, StoreError> {
                <$ty>::version(self)
            }
            fn snapshot(&self) -> Result<Snapshot, StoreError> {
                <$ty>::snapshot(self)
            }
            fn changes_since(&self, version: u64) -> Result<Vec<Change>, StoreError> {
                <$ty>::changes_since(self, version)
            }
        }
    };
}

delegate_store!(IdentityStore);
delegate_store!(crate::pg::PgIdentityStore);
