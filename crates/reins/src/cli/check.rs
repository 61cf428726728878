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
    // A check touches no state: an in-memory store stands in for `[state]`.
    let scratch = crate::state::sqlite::SqliteStore::memory()
        .context("opening an in-memory state store for the check")?;
    let built = Host::builder()
        .config_file(&args.config)
        .watch(false)
        .state(std::sync::Arc::new(scratch))
        .build()
        .await;
    let host = match built {
        Ok(host) => host,
        Err(e) => {
            let errors: Vec<String> = e.into_list().iter().map(ToString::to_string).collect();
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"config": args.config, "ok": false, "errors": errors})
                );
            } else {
                eprintln!(
                    "{}: {} error(s); it does not load:",
                    args.config.display(),
                    errors.len()
                );
                for e in &errors {
                    eprintln!("  - {e}");
                }
            }
            return Ok(2);
        }
    };
    let set = host.plugins().current();
    let live = host.live();
    let pipelines: Vec<serde_json::Value> = live
        .pipelines()
        .values()
        .map(|p| p.describe(&set))
        .collect();
    if args.json {
        println!("{}", serde_json::Value::Array(pipelines));
        return Ok(0);
    }
    println!(
        "{}: ok, {} pipeline(s)",
        args.config.display(),
        pipelines.len()
    );
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
