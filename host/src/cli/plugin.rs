//! `reins plugin check` and `reins plugin test`.

use crate::cases::{read_cases, run_cases};
use crate::runtime::{Runtime, RuntimeSettings};
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Load a plugin as the host would and report what it is.
    Check {
        /// The component (`.wasm`); its sidecar `NAME.toml` is read if present.
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a plugin's case file through the real host.
    Test {
        file: PathBuf,
        cases: PathBuf,
    },
}

pub fn run(cmd: PluginCommand) -> anyhow::Result<u8> {
    match cmd {
        PluginCommand::Check { file, json } => check(file, json),
        PluginCommand::Test { file, cases } => test(file, cases),
    }
}

fn check(file: PathBuf, json: bool) -> anyhow::Result<u8> {
    let runtime = Runtime::new(&RuntimeSettings::default()).context("starting the runtime")?;
    let plugin = match runtime.load_file(&file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: refused: {e}", file.display());
            return Ok(1);
        }
    };
    let info = plugin.info();
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(0);
    }
    println!("plugin   {}", info.name);
    println!("layer    {} (world {})", info.layer, info.world);
    println!("digest   sha256:{}", info.digest);
    println!("size     {} bytes", info.size_bytes);
    println!(
        "compile  {:.1} ms{}",
        info.compile_ms,
        if info.compile_cached { " (cached artifact)" } else { "" }
    );
    let m = plugin.manifest();
    println!(
        "limits   deadline {} ms, memory {} MiB, fuel {}, isolation {:?}, fail_mode {:?}",
        m.limits.deadline_ms,
        m.limits.memory_mib,
        m.limits.fuel.map_or("unlimited".to_string(), |f| f.to_string()),
        m.isolation,
        m.fail_mode
    );
    println!("imports");
    for i in &info.imports {
        println!("  {i}");
    }
    Ok(0)
}

fn test(file: PathBuf, cases_path: PathBuf) -> anyhow::Result<u8> {
    let runtime = Runtime::new(&RuntimeSettings::default()).context("starting the runtime")?;
    let cases = read_cases(&cases_path)?;
    let started = Instant::now();
    let outcomes = run_cases(&runtime, &file, &cases)?;
    let name = crate::runtime::plugin_name(&file);
    let width = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(4).max(4);
    println!("{name}: {} cases from {}", outcomes.len(), cases_path.display());
    println!("  {:<6} {:<width$} {:>8}  detail", "result", "case", "µs");
    for o in &outcomes {
        println!(
            "  {:<6} {:<width$} {:>8}  {}",
            if o.passed { "pass" } else { "FAIL" },
            o.name,
            o.micros,
            o.detail
        );
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    println!(
        "{} passed, {} failed ({:.1} ms)",
        outcomes.len() - failed,
        failed,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(if failed > 0 { 1 } else { 0 })
}
