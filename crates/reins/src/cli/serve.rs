//! `reins serve`.

use crate::Host;
use crate::server::{self, AppState};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The `reins.toml` to serve.
    #[arg(long, short)]
    config: PathBuf,
    /// Listen address (overrides `[server] listen`), e.g. 127.0.0.1:8080 or 127.0.0.1:0.
    #[arg(long)]
    listen: Option<String>,
    /// Allow a non-loopback listener without auth tokens.
    #[arg(long)]
    insecure: bool,
    /// This node's name in run leases (overrides `[state] node_id`; also
    /// `REINS_NODE_ID`). Stable names let a restarted node take its own
    /// interrupted runs back at once.
    #[arg(long, env = "REINS_NODE_ID")]
    node_id: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (overrides `[server] tls_cert`); needs --tls-key.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (overrides `[server] tls_key`).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    // `[telemetry]` is restart-only, read before the host so its first runs are traced.
    let exporting = crate::telemetry::for_config(&args.config, true)
        .with_context(|| format!("loading {}", args.config.display()))?;
    // Install the metrics recorder before plugins load, so their handles record.
    match exporting.metrics_recorder() {
        Some(otlp) => server::install_metrics_beside(Box::new(otlp)),
        None => server::install_metrics(),
    }
    let mut builder = Host::builder()
        .config_file(&args.config)
        .watch(true)
        .telemetry(exporting.telemetry.clone());
    if let Some(node) = args.node_id {
        builder = builder.node_id(node);
    }
    let host = builder
        .build()
        .await
        .with_context(|| format!("loading {}", args.config.display()))?;
    let host = Arc::new(host);
    eprintln!(
        "reins: node {} on a {} state store",
        host.node_id(),
        host.state().kind()
    );
    // Interrupted runs (this node's from before a crash, or any node's whose
    // lease expired) continue in the background; old runs are compacted.
    let _background = host.spawn_background();
    // reins.toml and the files it reads reload on change, on SIGHUP and on
    // POST /v1/admin/reload.
    host.watch_config()
        .with_context(|| format!("watching {}", args.config.display()))?;
    let _hangups = reload_on_hangup(host.clone());
    // MCP servers start now, so one that cannot is logged at start.
    let warm = host.clone();
    tokio::spawn(async move { warm.mcp_warm_up().await });
    // Restart-only: the listener is built from the config the process started with.
    let mut settings = server::ServerSettings::from_config(host.boot())?;
    // Paths in the config are relative to it; on the command line, to the working directory.
    settings.tls_cert = args
        .tls_cert
        .or_else(|| settings.tls_cert.as_deref().map(|p| host.boot().resolve(p)));
    settings.tls_key = args
        .tls_key
        .or_else(|| settings.tls_key.as_deref().map(|p| host.boot().resolve(p)));
    let listen = args.listen.unwrap_or_else(|| settings.listen.clone());
    let state = AppState::new(host, &settings)?;
    let profile = crate::profile::start();
    server::serve(state, &settings, &listen, args.insecure, shutdown_signal()).await?;
    profile.finish();
    // The last runs' spans and metrics go out before the process ends.
    tokio::task::block_in_place(|| exporting.shutdown());
    eprintln!("reins: shut down cleanly");
    Ok(0)
}

/// Reloads the configuration on every SIGHUP, the way daemons are told to
/// read their config again. A refused config is logged by the reload.
fn reload_on_hangup(host: Arc<Host>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut hangups =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("SIGHUP will not reload the config: {e}");
                        return;
                    }
                };
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let host = host.clone();
                let _ = tokio::task::spawn_blocking(move || host.reload()).await;
            }
        }
        #[cfg(not(unix))]
        drop(host);
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
