//! `reins run`: one request through one pipeline, from the command line.
//!
//! Prints the validated output JSON to stdout and the trace to stderr.

use crate::Host;
use crate::pipeline::{ExitCode, Request, RunStatus};
use anyhow::Context;
use std::io::{Read, Write};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceFormat {
    /// A table on stderr: layer, plugin, attempt, result, µs.
    Human,
    /// The whole run result (attempts, violations, decisions, trace) as JSON on stderr.
    Json,
    /// Nothing on stderr but errors.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// A JSON object with `messages` is a request; anything else is the text of one user message.
    Auto,
    /// The input is the text of one user message.
    Text,
    /// The input is a request: {"messages": [...], "metadata": {...}, "chunks": [...]}.
    Json,
}

/// Run one request through a pipeline and print the validated output.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = ExitCode::help())]
pub struct RunArgs {
    /// The configuration file.
    #[arg(short, long, default_value = "reins.toml")]
    pub config: PathBuf,
    /// The pipeline to run (may be left out when the config has only one).
    #[arg(short, long)]
    pub pipeline: Option<String>,
    /// The request: a file, or `-` for stdin.
    #[arg(short, long, default_value = "-")]
    pub input: String,
    /// How to read the input.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub input_format: InputFormat,
    /// Caller metadata handed to every plugin, as a JSON object (e.g. '{"tenant": "acme"}').
    #[arg(short, long)]
    pub metadata: Option<String>,
    /// How to print the trace on stderr.
    #[arg(long, value_enum, default_value_t = TraceFormat::Human)]
    pub trace: TraceFormat,
}

/// Runs the subcommand; returns the process exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let request = match read_request(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("reins run: {e:#}");
            return Ok(ExitCode::BadInput.code());
        }
    };
    let exporting = match crate::telemetry::for_config(&args.config, false) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("reins run: {e}");
            return Ok(ExitCode::BadInput.code());
        }
    };
    let host = match Host::builder()
        .config_file(&args.config)
        .telemetry(exporting.telemetry.clone())
        .build()
        .await
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("reins run: {e}");
            return Ok(ExitCode::BadInput.code());
        }
    };
    let pipeline = match &args.pipeline {
        Some(p) => p.clone(),
        None => {
            let names = host.pipeline_names();
            match names.as_slice() {
                [only] => only.clone(),
                _ => {
                    eprintln!(
                        "reins run: choose a pipeline with --pipeline (the config has: {})",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    );
                    return Ok(ExitCode::BadInput.code());
                }
            }
        }
    };
    // A parent trace in the environment (`TRACEPARENT`, the OpenTelemetry
    // convention for processes): the run's span joins it.
    let mut request = request;
    request.trace_parent = reins_core::telemetry::TraceParent::from_headers(
        std::env::var("TRACEPARENT").ok().as_deref(),
        std::env::var("TRACESTATE").ok().as_deref(),
    );
    let result = host.run(&pipeline, request).await;
    // The run's audit rows are written off the run's path; they must land before the process exits.
    host.audit_flush().await;
    tokio::task::block_in_place(|| exporting.shutdown());

    let mut stderr = std::io::stderr().lock();
    match args.trace {
        TraceFormat::Human => {
            let _ = stderr.write_all(result.trace_table().as_bytes());
        }
        TraceFormat::Json => {
            let _ = serde_json::to_writer_pretty(&mut stderr, &result);
            let _ = writeln!(stderr);
        }
        TraceFormat::None => {
            if let Some(e) = &result.error {
                let _ = writeln!(stderr, "reins run: {e}");
            }
        }
    }
    if let (RunStatus::Completed | RunStatus::AwaitingApproval, Some(output)) =
        (result.status, &result.output)
    {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, output).context("writing the output")?;
        writeln!(stdout).context("writing the output")?;
    }
    Ok(result.exit_code())
}

fn read_request(args: &RunArgs) -> anyhow::Result<Request> {
    let text = if args.input == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input))?
    };
    let mut request = match args.input_format {
        InputFormat::Text => Request::text(text),
        InputFormat::Json => serde_json::from_str(&text).context("the input is not a request")?,
        InputFormat::Auto => {
            let looks_like_request = text.trim_start().starts_with('{')
                && serde_json::from_str::<serde_json::Value>(&text)
                    .is_ok_and(|v| v.get("messages").is_some());
            if looks_like_request {
                serde_json::from_str(&text).context("the input is not a request")?
            } else {
                Request::text(text)
            }
        }
    };
    if request.messages.iter().all(|m| m.content.trim().is_empty()) {
        anyhow::bail!("the input is empty");
    }
    if let Some(m) = &args.metadata {
        let metadata: serde_json::Value =
            serde_json::from_str(m).context("--metadata is not JSON")?;
        anyhow::ensure!(metadata.is_object(), "--metadata must be a JSON object");
        request.metadata = metadata;
    }
    Ok(request)
}
