//! Shared server state.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::error::{FhirError, FhirResult};
use crate::interactions::Ctx;
use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The audit trail's queue.
    pub audit: Arc<crate::audit::AuditLog>,
    /// The authorization server.
    pub auth: Arc<crate::auth::server::AuthServer>,
    /// Interaction context (base URL, search registry, CapabilityStatement).
    pub ctx: Arc<Ctx>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Renders `/metrics`; `None` when no recorder could be installed (tests in one process).
    pub metrics: Option<PrometheusHandle>,
}

impl AppState {
    /// Run blocking store work on the blocking pool.
    pub async fn with_store<T, F>(&self, f: F) -> FhirResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store, &Ctx) -> FhirResult<T> + Send + 'static,
    {
        let store = self.store.clone();
        let ctx = self.ctx.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref(), &ctx))
            .await
            .map_err(|e| FhirError::internal(format!("store task failed: {e}")))?
    }
}
