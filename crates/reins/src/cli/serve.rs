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
    // Install the metrics recorder before plugins load, so their handles record.
    server::install_metrics();
    let mut builder = Host::builder().config_file(&args.config).watch(true);
    if let Some(node) = args.node_id {
        builder = builder.node_id(node);
    }
    let host = builder
        .build()
        .await
        .with_context(|| format!("loading {}", args.config.display()))?;
    let host = Arc::new(host);
    eprintln!("reins: node {} on a {} state store", host.node_id(), host.state().kind());
    // Interrupted runs (this node's from before a crash, or any node's whose
    // lease expired) continue in the background; old runs are compacted.
    let _background = host.spawn_background();
    let mut settings = server::ServerSettings::from_config(host.config())?;
    // Paths in the config are relative to it; on the command line, to the working directory.
    settings.tls_cert = args.tls_cert.or_else(|| settings.tls_cert.as_deref().map(|p| host.config().resolve(p)));
    settings.tls_key = args.tls_key.or_else(|| settings.tls_key.as_deref().map(|p| host.config().resolve(p)));
    let listen = args.listen.unwrap_or_else(|| settings.listen.clone());
    let state = AppState::new(host, &settings)?;
    server::serve(state, &settings, &listen, args.insecure, shutdown_signal()).await?;
    eprintln!("reins: shut down cleanly");
    Ok(0)
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
