//! `reins serve`: a thin HTTP layer over [`reins_core::Host`].
//!
//! Handlers parse, authorize, call the host and shape the answer; everything
//! else lives in the library. See `docs/ARCHITECTURE.md` ("Server").

mod answer;
mod anthropic;
mod approvals;
mod audit;
mod auth;
mod config;
mod conn;
mod error;
mod exemplars;
mod inflight;
pub mod mcp;
mod metrics_export;
pub use metrics_export::Metrics;
mod net;
mod openai;
mod ops;
mod providers;
mod runs;
mod service;
mod settings;
mod stream;
mod tls;

pub use auth::{Auth, AuthError, Identity, JwtError};
pub use conn::ConnLimits;
pub use error::ApiError;
pub use net::{NetError, SLOWED_HEADER};
pub use settings::{CorsSettings, JwtSettings, Scope, ServerSettings, TokenSettings};
pub use tls::TlsError;

/// Installs the Prometheus recorder (idempotent). Call before loading plugins.
pub fn install_metrics() {
    let _ = metrics_export::handle();
}

/// [`install_metrics`], with `beside` (e.g. an OTLP exporter's recorder)
/// fed the same values as `/metrics`.
pub fn install_metrics_beside(beside: Box<dyn metrics::Recorder + Send + Sync>) {
    let _ = metrics_export::install(Some(beside));
}

use axum::Router;
use axum::extract::DefaultBodyLimit;
use reins_core::Host;

use axum::routing::{any, get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub host: Arc<Host>,
    pub auth: Arc<Auth>,
    pub metrics: metrics_export::Metrics,
    pub request_timeout: Duration,
    /// Who may reach the server: `Host` / `Origin`, CORS, failed-auth slowing.
    pub net: Arc<net::NetPolicy>,
    /// The memory requests in flight may hold (`[server] inflight_memory_bytes`).
    pub inflight: Arc<inflight::InflightBudget>,
    /// The MCP gateway's Streamable HTTP service (`/mcp/{pipeline}`).
    pub mcp: mcp::McpHttp,
}

impl AppState {
    /// State for a host with the given server settings.
    pub fn new(host: Arc<Host>, settings: &ServerSettings) -> Result<Self, ServeError> {
        let auth = Arc::new(Auth::from_settings(settings)?);
        Ok(Self {
            net: Arc::new(net::NetPolicy::from_settings(settings, auth.is_open())?),
            auth,
            metrics: metrics_export::handle(),
            request_timeout: Duration::from_millis(settings.request_timeout_ms.max(1)),
            inflight: Arc::new(inflight::InflightBudget::new(
                settings.inflight_memory_bytes,
                settings.body_limit_bytes,
            )),
            mcp: mcp::McpFront::http(host.clone(), settings.body_limit_bytes),
            host,
        })
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(
        "refusing to listen on non-loopback {addr} with no auth tokens configured; add [[server.tokens]] or pass --insecure"
    )]
    Insecure { addr: SocketAddr },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The router with every endpoint inside the network layers (`net.rs`);
/// tests drive it with `tower::ServiceExt::oneshot`.
pub fn router(state: AppState, body_limit: usize) -> Router {
    let net = state.net.clone();
    net::layer(routes(state, body_limit), &net)
}

/// The endpoints without the network layers, so a bench can price them.
pub fn routes(state: AppState, body_limit: usize) -> Router {
    probe_routes()
        .route("/v1/plugins", get(ops::plugins))
        .route("/v1/config", get(config::status))
        .route("/v1/admin/reload", post(config::reload))
        .route("/v1/providers", get(providers::list))
        .route("/v1/pipelines", get(ops::pipelines))
        .route("/v1/pipelines/{name}/runs", post(runs::create))
        .route("/v1/pipelines/{name}/context", get(runs::preview_context))
        .route("/v1/runs/{id}", get(runs::get))
        .route("/v1/runs/{id}/resume", post(runs::resume))
        .route("/v1/runs/{id}/steps", get(runs::steps))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", post(approvals::decide))
        .route("/ui/approvals", get(approvals::page))
        .route("/ui/approvals.js", get(approvals::script))
        .route("/ui/approvals.css", get(approvals::style))
        .route("/v1/audit", get(audit::list))
        .route("/mcp/{pipeline}", any(mcp::endpoint))
        .route("/v1/mcp/servers", get(mcp::servers))
        .route("/v1/mcp/pins", get(mcp::pins))
        .route("/v1/mcp/pins/approve", post(mcp::approve_pin))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            inflight::reserve,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::record,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// What a probe or a scraper asks for; the same on the main listener and
/// on `ops_listen`.
fn probe_routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish, and returns. With `tls_cert` and `tls_key` set it serves
/// HTTPS; the files are checked before binding. Connections are accepted and
/// limited by `conn.rs`, the same way for both.
pub async fn serve(
    state: AppState,
    settings: &ServerSettings,
    listen: &str,
    insecure: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => Some(tls::load(cert, key)?),
        (None, None) => None,
        (Some(_), None) => {
            return Err(TlsError::Half {
                given: "certificate",
            }
            .into());
        }
        (None, Some(_)) => return Err(TlsError::Half { given: "key" }.into()),
    };
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
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "reins listening");
    // Tests and scripts read the bound address (useful with port 0).
    println!("listening on {scheme}://{addr}");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let ops = match &settings.ops_listen {
        Some(ops_listen) => Some(spawn_ops(&state, settings, ops_listen, stopping)?),
        None => None,
    };
    let pending = tokio::spawn(approvals::gauge_pending(state.host.clone()));
    let app = router(state, settings.body_limit_bytes);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    conn::run(
        listener,
        app,
        tls,
        ConnLimits::from_settings(settings),
        shutdown,
    )
    .await;
    pending.abort();
    if let Some(ops) = ops {
        let _ = tokio::task::spawn_blocking(move || ops.join()).await;
    }
    Ok(())
}

/// The ops listener: its own OS thread and single-threaded runtime, so its
/// answers never wait behind the main runtime's model work, however many
/// requests flood the main listener (the OS schedules the thread apart).
fn spawn_ops(
    state: &AppState,
    settings: &ServerSettings,
    listen: &str,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<std::thread::JoinHandle<()>, ServeError> {
    let bind_error = |source| ServeError::Bind {
        addr: listen.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(listen).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && state.auth.is_open() {
        tracing::warn!(%addr, "ops listener on a non-loopback address of an open server: /metrics is readable by anyone who reaches it");
    }
    println!("ops listening on http://{addr}");
    let app = net::layer(probe_routes().with_state(state.clone()), &state.net);
    let limits = ConnLimits::from_settings(settings);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(std::thread::Builder::new()
        .name("reins-ops".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    tracing::error!(%addr, "ops listener: cannot register the socket");
                    return;
                };
                let shutdown = async move {
                    let _ = stopping.wait_for(|stop| *stop).await;
                };
                conn::run(listener, app, None, limits, shutdown).await;
            });
        })?)
}
