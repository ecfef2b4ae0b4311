//! The identity store's operations as one trait, for its two real implementations: SQLite in one
//! process (`resizer dev`, [`crate::IdentityStore`]) and PostgreSQL for the cluster's identity
//! service. The admin API and the feeders take `&dyn Store`, so both modes run the same code.
//! Every method blocks: call it from a blocking thread.
//!
//! Every write names its [`Actor`] and is recorded in the admin log: in the write's own
//! transaction when it commits (so a write and its log row exist together or not at all), in a
//! transaction of its own when the store refuses it (nothing was written to lose).

use std::time::{Duration, SystemTime};

use crate::error::StoreError;
use crate::key::KeyId;
use crate::model::{
    Actor, AdminRecord, ApiKey, Change, Rotation, Snapshot, Tenant, TenantId, TenantLimits, TenantStatus,
};
use crate::sources::KeyPurpose;
use crate::store::IdentityStore;

pub trait Store: Send + Sync {
    fn create_tenant_as(&self, actor: &Actor, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError>;
    fn get_tenant(&self, id: TenantId) -> Result<Tenant, StoreError>;
    fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError>;
    fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    fn update_limits(&self, actor: &Actor, id: TenantId, limits: TenantLimits) -> Result<Tenant, StoreError>;
    fn set_status(&self, actor: &Actor, id: TenantId, status: TenantStatus) -> Result<Tenant, StoreError>;
    /// The new key and, once only, its full token; `expires_at` must be in the future. A
    /// signing key's token is of no use to anyone (it authenticates nothing): the api gives out
    /// the key's derived signing secret instead.
    fn create_key_as(
        &self,
        actor: &Actor,
        tenant: TenantId,
        label: &str,
        expires_at: Option<SystemTime>,
        purpose: KeyPurpose,
    ) -> Result<(ApiKey, String), StoreError>;
    fn get_key(&self, id: KeyId) -> Result<ApiKey, StoreError>;
    fn list_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>, StoreError>;
    fn revoke_key(&self, actor: &Actor, id: KeyId) -> Result<ApiKey, StoreError>;
    /// In one transaction: a new key for the old one's tenant and label (expiring at
    /// `new_expires_at`), and the old key set to expire `grace` from now (or when it already
    /// would, if that is sooner). A revoked or expired key is refused. The grace is a duration,
    /// not an instant, so that it is measured on the store's clock.
    fn rotate_key(
        &self,
        actor: &Actor,
        id: KeyId,
        grace: Duration,
        new_expires_at: Option<SystemTime>,
    ) -> Result<Rotation, StoreError>;
    /// The admin log, newest first: at most `limit` records with ids below `before` (all when
    /// `None`).
    fn admin_log(&self, before: Option<u64>, limit: usize) -> Result<Vec<AdminRecord>, StoreError>;
    /// The version of the last change in the outbox (0 when there is none).
    fn version(&self) -> Result<u64, StoreError>;
    fn snapshot(&self) -> Result<Snapshot, StoreError>;
    /// The outbox after `version`, in version order.
    fn changes_since(&self, version: u64) -> Result<Vec<Change>, StoreError>;

    /// A tenant the process makes for itself (the dev demo tenant), logged as [`Actor::process`].
    fn create_tenant(&self, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError> {
        self.create_tenant_as(&Actor::process(), name, limits)
    }

    /// A key the process makes for itself (the dev demo key), logged as [`Actor::process`].
    fn create_key(&self, tenant: TenantId, label: &str) -> Result<(ApiKey, String), StoreError> {
        self.create_key_as(&Actor::process(), tenant, label, None, KeyPurpose::Api)
    }
}

/// Each implementation's inherent methods are the trait's, one for one.
macro_rules! delegate_store {
    ($ty:ty) => {
        impl Store for $ty {
            fn create_tenant_as(&self, actor: &Actor, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError> {
                <$ty>::create_tenant_as(self, actor, name, limits)
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
            fn update_limits(&self, actor: &Actor, id: TenantId, limits: TenantLimits) -> Result<Tenant, StoreError> {
                <$ty>::update_limits(self, actor, id, limits)
            }
            fn set_status(&self, actor: &Actor, id: TenantId, status: TenantStatus) -> Result<Tenant, StoreError> {
                <$ty>::set_status(self, actor, id, status)
            }
            fn create_key_as(
                &self,
                actor: &Actor,
                tenant: TenantId,
                label: &str,
                expires_at: Option<SystemTime>,
                purpose: KeyPurpose,
            ) -> Result<(ApiKey, String), StoreError> {
                <$ty>::create_key_as(self, actor, tenant, label, expires_at, purpose)
            }
            fn get_key(&self, id: KeyId) -> Result<ApiKey, StoreError> {
                <$ty>::get_key(self, id)
            }
            fn list_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>, StoreError> {
                <$ty>::list_keys(self, tenant)
            }
            fn revoke_key(&self, actor: &Actor, id: KeyId) -> Result<ApiKey, StoreError> {
                <$ty>::revoke_key(self, actor, id)
            }
            fn rotate_key(
                &self,
                actor: &Actor,
                id: KeyId,
                grace: Duration,
                new_expires_at: Option<SystemTime>,
            ) -> Result<Rotation, StoreError> {
                <$ty>::rotate_key(self, actor, id, grace, new_expires_at)
            }
            fn admin_log(&self, before: Option<u64>, limit: usize) -> Result<Vec<AdminRecord>, StoreError> {
                <$ty>::admin_log(self, before, limit)
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
            fn create_tenant(&self, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError> {
                <$ty>::create_tenant(self, name, limits)
            }
            fn create_key(&self, tenant: TenantId, label: &str) -> Result<(ApiKey, String), StoreError> {
                <$ty>::create_key(self, tenant, label)
            }
        }
    };
}

delegate_store!(IdentityStore);
delegate_store!(crate::pg::PgIdentityStore);
