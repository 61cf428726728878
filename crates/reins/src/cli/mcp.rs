//! `reins mcp`: one pipeline's MCP gateway over stdin and stdout, for
//! desktop clients that start their MCP servers as processes. Logs go to
//! stderr (stdout is the protocol).

use crate::Host;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Arc;

/// Serve a pipeline's MCP gateway over stdio.
///
/// The client is the local user: its identity is what the flags say (no
/// credential crosses a pipe), and gates key budgets and tools on it.
#[derive(Debug, Clone, clap::Args)]
pub struct McpArgs {
    /// The configuration file.
    #[arg(short, long, default_value = "reins.toml")]
    pub config: PathBuf,
    /// The pipeline whose MCP servers, constraints and gates apply.
    #[arg(short, long)]
    pub pipeline: String,
    /// Who the client is, for gates and the audit log.
    #[arg(long, default_value = "local")]
    pub subject: String,
    #[arg(long)]
    pub tenant: Option<String>,
    /// A role of the client (repeat for more).
    #[arg(long = "role")]
    pub roles: Vec<String>,
}

pub async fn mcp(args: McpArgs) -> anyhow::Result<u8> {
    let exporting = crate::telemetry::for_config(&args.config, false)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let host = Host::builder()
        .config_file(&args.config)
        .telemetry(exporting.telemetry.clone())
        .build()
        .await
        .map_err(|e| {
            let list: Vec<String> = e.into_list().iter().map(ToString::to_string).collect();
            anyhow::anyhow!("{}", list.join("\n"))
        })
        .with_context(|| format!("loading {}", args.config.display()))?;
    let host = Arc::new(host);
    if host.boot().watch
        && let Err(e) = host.watch_config()
    {
        tracing::warn!("reins.toml is not watched: {e}");
    }
    let caller = reins_runtime::Caller {
        subject: args.subject,
        tenant: args.tenant,
        roles: args.roles,
        credential: "stdio".to_owned(),
        claims: serde_json::Map::new(),
    };
    let served = reins_server::mcp::serve_stdio(host, &args.pipeline, caller).await;
    // The session's spans go out before the process ends.
    tokio::task::block_in_place(|| exporting.shutdown());
    served.map_err(anyhow::Error::msg)?;
    Ok(0)
}
