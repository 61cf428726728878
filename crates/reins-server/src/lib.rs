//! `reins serve`: a thin HTTP layer over [`reins_core::Host`].
//!
//! Handlers parse, authorize, call the host and shape the answer; everything
//! else lives in the library. See `docs/ARCHITECTURE.md` ("Server").

mod anthropic;
mod answer;
mod approvals;
mod audit;
mod auth;
mod error;
mod metrics_export;
mod openai;
mod ops;
mod providers;
mod runs;
mod service;
mod settings;

pub use auth::{Auth, AuthError};
pub use error::ApiError;
pub use settings::{Scope, ServerSettings, TokenSettings};

/// Installs the Prometheus recorder (idempotent). Call before loading plugins.
pub fn install_metrics() {
    let _ = metrics_export::handle();
}

use reins_core::Host;
use axum::Router;
use axum::extract::DefaultBodyLimit;

use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub host: Arc<Host>,
    pub auth: Arc<Auth>,
    pub metrics: PrometheusHandle,
    pub request_timeout: Duration,
}

impl AppState {
    /// State for a host with the given server settings.
    pub fn new(host: Arc<Host>, settings: &ServerSettings) -> Result<Self, ServeError> {
        Ok(Self {
            auth: Arc::new(Auth::from_settings(&settings.tokens)?),
            metrics: metrics_export::handle(),
            request_timeout: Duration::from_millis(settings.request_timeout_ms.max(1)),
            host,
        })
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(
        "refusing to listen on non-loopback {addr} with no auth tokens configured; add [[server.tokens]] or pass --insecure"
    )]
    Insecure { addr: SocketAddr },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The router with every endpoint; tests drive it with `tower::ServiceExt::oneshot`.
pub fn router(state: AppState, body_limit: usize) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/plugins", get(ops::plugins))
        .route("/v1/providers", get(providers::list))
        .route("/v1/pipelines", get(ops::pipelines))
        .route("/v1/pipelines/{name}/runs", post(runs::create))
        .route("/v1/runs/{id}", get(runs::get))
        .route("/v1/runs/{id}/resume", post(runs::resume))
        .route("/v1/runs/{id}/steps", get(runs::steps))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", post(approvals::decide))
        .route("/ui/approvals", get(approvals::page))
        .route("/v1/audit", get(audit::list))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit::record))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish, and returns.
pub async fn serve(
    state: AppState,
    settings: &ServerSettings,
    listen: &str,
    insecure: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && state.auth.is_open() && !insecure {
        return Err(ServeError::Insecure { addr });
    }
    tracing::info!(%addr, "reins listening");
    // Tests and scripts read the bound address (useful with port 0).
    println!("listening on http://{addr}");
    let app = router(state, settings.body_limit_bytes);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

