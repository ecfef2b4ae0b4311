//! The signals that stop a server role gracefully: SIGTERM (what service managers send) and
//! SIGINT (Ctrl-C).

pub async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                _ = term.recv() => tracing::info!("SIGTERM received"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this process gracefully");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
