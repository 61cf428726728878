//! `reins plugin check`, `test`, `new` and `build`.

use super::build::build;
use super::scaffold::{Lang, LayerArg, scaffold};
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
    Test { file: PathBuf, cases: PathBuf },
    /// Write a ready plugin project: code, WIT, sidecar, cases, build script, README.
    New {
        /// The plugin's name (lowercase letters, digits, hyphens): the directory and `NAME.wasm`.
        name: String,
        #[arg(long, value_enum)]
        layer: LayerArg,
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// Where to create the project directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Build the project in DIR with its language's tool into `NAME.wasm`.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Plugin name (default: the directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Layer of a Python/JS project (default: the sidecar's `layer`).
        #[arg(long, value_enum)]
        layer: Option<LayerArg>,
        /// Write `NAME.wasm` (and copy the sidecar) here instead of DIR, e.g. a served plugins directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(cmd: PluginCommand) -> anyhow::Result<u8> {
    match cmd {
        PluginCommand::Check { file, json } => check(file, json),
        PluginCommand::Test { file, cases } => test(file, cases),
        PluginCommand::New {
            name,
            layer,
            lang,
            dir,
        } => {
            let (project, files) = scaffold(&dir, &name, layer, lang)?;
            println!(
                "created {} ({} {}):",
                project.display(),
                lang.name(),
                layer.as_str()
            );
            for f in files {
                println!("  {f}");
            }
            println!(
                "next:\n  reins plugin build {0}\n  reins plugin test {0}/{name}.wasm {0}/cases.json",
                project.display()
            );
            Ok(0)
        }
        PluginCommand::Build {
            dir,
            name,
            layer,
            out,
        } => {
            let built = build(&dir, name.as_deref(), layer, out.as_deref())?;
            println!(
                "built {} ({}, {:.1} MB, {:.1} s)",
                built.wasm.display(),
                built.lang.name(),
                built.bytes as f64 / 1e6,
                built.seconds
            );
            Ok(0)
        }
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
    let cost = call_cost(&plugin);
    if json {
        let mut v = serde_json::to_value(info)?;
        v["first_call_ms"] = serde_json::json!(cost.first_ms);
        v["call_us"] = serde_json::json!(cost.median_us);
        v["call_outcome"] = serde_json::json!(cost.outcome);
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("plugin   {}", info.name);
    println!("layer    {} (world {})", info.layer, info.world);
    println!("digest   sha256:{}", info.digest);
    println!("size     {} bytes", info.size_bytes);
    println!(
        "compile  {:.1} ms{}",
        info.compile_ms,
        if info.compile_cached {
            " (cached artifact)"
        } else {
            ""
        }
    );
    if info.init != "none" {
        println!(
            "init     {}{}",
            info.init,
            if info.init_cached {
                " (cached snapshot)".to_string()
            } else {
                format!(", {:.1} ms at load", info.init_ms)
            }
        );
    }
    let m = plugin.manifest();
    println!(
        "call     first {:.2} ms, then {:.0} µs median over {} calls ({:?}; sample input: {})",
        cost.first_ms, cost.median_us, CHECK_CALLS, m.isolation, cost.outcome
    );
    println!(
        "limits   deadline {} ms, memory {} MiB, fuel {}, isolation {:?}, fail_mode {:?}",
        m.limits.deadline_ms,
        m.limits.memory_mib,
        m.limits
            .fuel
            .map_or("unlimited".to_string(), |f| f.to_string()),
        m.isolation,
        m.fail_mode
    );
    if cost.first_ms > m.limits.deadline_ms as f64 * 0.5 {
        println!(
            "warning  the first call took {:.1} ms of a {} ms deadline: raise limits.deadline_ms or use isolation = \"pooled\"",
            cost.first_ms, m.limits.deadline_ms
        );
    }
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
    let width = outcomes
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{name}: {} cases from {}",
        outcomes.len(),
        cases_path.display()
    );
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

const CHECK_CALLS: usize = 20;

struct CallCost {
    first_ms: f64,
    median_us: f64,
    outcome: String,
}

/// Times calls with a minimal input of the plugin's layer: the first call
/// (cold pages, a fresh instance) and the median of the next ones.
fn call_cost(plugin: &crate::runtime::Plugin) -> CallCost {
    use crate::runtime::{Access, Action, CallContext, Layer, Message};
    let ctx = CallContext {
        run_id: "check".into(),
        pipeline: "plugin-check".into(),
        attempt: 1,
        metadata: serde_json::json!({}),
        ..Default::default()
    };
    let once = || -> Result<(), crate::runtime::PluginError> {
        match plugin.layer() {
            Layer::Normalizer => plugin
                .normalize(&ctx, &[Message::new("user", "hello")])
                .map(|_| ()),
            Layer::Validator => plugin.validate(&ctx, "{}").map(|_| ()),
            Layer::Constraints => plugin.tools(&ctx).map(|_| ()),
            Layer::Gate => plugin
                .check(
                    &ctx,
                    &Action {
                        tool: "noop".into(),
                        arguments: serde_json::json!({}),
                        access: Access::Read,
                    },
                )
                .map(|_| ()),
            Layer::Context => plugin.assemble(&ctx, "", &[], 100).map(|_| ()),
            Layer::StreamChecker => plugin.check_stream(&ctx, "", "hello ", false).map(|_| ()),
        }
    };
    let started = Instant::now();
    let first = once();
    let first_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut samples: Vec<f64> = (0..CHECK_CALLS)
        .map(|_| {
            let t = Instant::now();
            let _ = once();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    CallCost {
        first_ms,
        median_us: samples[samples.len() / 2],
        outcome: match first {
            Ok(()) => "answered".to_string(),
            Err(e) => format!("failed: {}", e.cause),
        },
    }
}
