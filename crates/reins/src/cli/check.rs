//! `reins check`: load a configuration the way `reins serve` would (every
//! plugin compiled, every pipeline checked, every provider built) and say
//! what each pipeline will do, without serving or calling a model.

use crate::Host;
use anyhow::Context;
use std::path::PathBuf;

/// Check a configuration and describe its pipelines.
///
/// Exit codes: 0 the configuration loads, 2 it does not (the error names
/// the file, the key and the fix).
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(short, long, default_value = "reins.toml")]
    pub config: PathBuf,
    /// Print the pipelines as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let host = Host::builder()
        .config_file(&args.config)
        .watch(false)
        .build()
        .await
        .with_context(|| format!("{} does not load", args.config.display()))?;
    let set = host.plugins().current();
    let pipelines: Vec<serde_json::Value> = host
        .pipeline_names()
        .filter_map(|n| host.pipeline(n))
        .map(|p| p.describe(&set))
        .collect();
    if args.json {
        println!("{}", serde_json::Value::Array(pipelines));
        return Ok(0);
    }
    println!("{}: ok, {} pipeline(s)", args.config.display(), pipelines.len());
    for p in &pipelines {
        let text = |k: &str| p[k].as_str().unwrap_or("-").to_owned();
        println!(
            "  {}: {} mode, answers {} ({}), caller tools: {}, model: {}",
            text("name"),
            text("mode"),
            text("output"),
            text("output_reason"),
            text("caller_tools"),
            text("model"),
        );
    }
    Ok(0)
}
