//! Feeding this node's credential cache from the identity store in this process (`resizer dev`,
//! the identity service): on an interval, and at once after an admin write. A cluster api node's
//! cache is fed by the JetStream KV watch instead, and this does nothing there. And asking the
//! cache about a request's bearer key ([`authenticate`]), for every handler that takes one.
//!
//! It must not decide credentials (that is `identity`'s cache) or block the runtime: the store
//! is read on the blocking pool.

use std::sync::Arc;

use axum::http::{header, HeaderMap};
use identity::Authenticated;

use crate::problem::ApiError;
use crate::App;

/// The key from `Authorization: Bearer <key>`, decided by the credential cache.
pub fn authenticate(app: &App, headers: &HeaderMap) -> Result<Authenticated, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(ApiError::MissingKey)?;
    let value = value.to_str().map_err(|_| ApiError::Auth(identity::AuthError::UnknownKey))?;
    let key = match value.split_once(' ') {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => key.trim(),
        _ => return Err(ApiError::MissingKey),
    };
    app.cache.authenticate(key).map_err(ApiError::Auth)
}

/// Keeps the credential cache within `identity_refresh` of the store.
pub async fn feed_credentials(app: Arc<App>) {
    let mut ticks = tokio::time::interval(app.config.identity_refresh);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        refresh_credentials(&app).await;
    }
}

/// One round of feeding, off the runtime (it reads SQLite). A failure leaves the cache as it
/// was: requests keep being decided on the last known state, which is the availability side
/// the blueprint chooses for the data plane.
pub async fn refresh_credentials(app: &Arc<App>) {
    let Some(store) = app.store().cloned() else { return };
    let cache = app.cache.clone();
    match tokio::task::spawn_blocking(move || identity::feed(store.as_ref(), &cache)).await {
        Ok(Ok(identity::Fed::UpToDate { .. })) => {}
        Ok(Ok(fed)) => tracing::debug!(?fed, "credential cache updated"),
        Ok(Err(e)) => tracing::warn!(error = %e, "credential cache not updated: identity store failed"),
        Err(e) => tracing::error!(error = %e, "credential feeder panicked"),
    }
}
