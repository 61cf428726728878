//! Command-line surface. Each subcommand is a thin adapter over the library;
//! `anyhow` lives here and nowhere else.

mod audit;
mod build;
mod check;
mod mcp;
mod plugin;
pub mod run;
mod scaffold;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Reins: a harness that contains a language model.
#[derive(Parser)]
#[command(name = "reins", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work with policy plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run one request through a pipeline and print the validated output.
    Run(run::RunArgs),
    /// Load a configuration (plugins, pipelines, providers) and describe its pipelines.
    Check(check::CheckArgs),
    /// Serve the HTTP API (native runs, OpenAI-compatible, metrics).
    Serve(serve::ServeArgs),
    /// Read, follow, export and verify the audit log of the config's `[state]` store.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Serve one pipeline's MCP gateway over stdio (for desktop MCP clients).
    Mcp(mcp::McpArgs),
}

/// Parses arguments, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(run::run(args)))
            .map(|code| u8::try_from(code).unwrap_or(1)),
        Command::Check(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(check::check(args))),
        Command::Mcp(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(mcp::mcp(args))),
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve::serve(args))),
        Command::Audit(cmd) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(audit::run(cmd))),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let format = crate::telemetry::logs::Format::from_env().unwrap_or_else(|e| {
        eprintln!("reins: {e}; writing text logs");
        crate::telemetry::logs::Format::Text
    });
    crate::telemetry::logs::init(format);
}
