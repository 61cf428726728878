//! The same validator (`no-unreleased-products`) in Rust, Python and
//! JavaScript: per-call cost with fresh and pooled instances, compile time
//! cold vs cached, and memory per loaded plugin. Printed as tables (see the
//! "Languages" section of BENCHMARKS.md).
//!
//! cargo bench -p reins --bench languages
//!
//! Builds the three examples with `reins plugin build` first (needs
//! componentize-py and componentize-js, like the tests).

#[path = "../tests/policies_support/mod.rs"]
mod policies_support;

use reins::runtime::{CallContext, InitMode, Plugin, Runtime, RuntimeSettings};
use serde_json::{Value, json};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NAME: &str = "no-unreleased-products";

/// A ~1 KB answer with 5 items; one mentions an unreleased product.
fn document() -> String {
    let items: Vec<Value> = (0..5)
        .map(|i| {
            json!({
                "name": if i == 3 { "Project Nimbus preview".to_string() } else { format!("Widget {i}") },
                "summary": "Ships in the spring with the same warranty as the previous model and a longer battery life.",
                "price": 100 * (i + 1),
                "tags": ["hardware", "spring"]
            })
        })
        .collect();
    json!({"items": items, "note": "Prices exclude tax."}).to_string()
}

/// Median µs per call over timed batches, after a warm-up.
fn per_call_us(plugin: &Plugin, ctx: &CallContext, doc: &str) -> f64 {
    let once = || {
        let v = plugin.validate(ctx, black_box(doc)).expect("call");
        black_box(v);
    };
    for _ in 0..20 {
        once();
    }
    let mut batches = Vec::new();
    let started = Instant::now();
    while batches.len() < 7
        || (started.elapsed() < Duration::from_millis(1500) && batches.len() < 100)
    {
        let t = Instant::now();
        for _ in 0..10 {
            once();
        }
        batches.push(t.elapsed().as_secs_f64() * 1e6 / 10.0);
    }
    batches.sort_by(f64::total_cmp);
    batches[batches.len() / 2]
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A copy of the plugin with another isolation mode (same bytes, new sidecar).
fn variant(dir: &Path, wasm: &Path, lang: &str, isolation: &str) -> PathBuf {
    let path = dir.join(format!("{lang}-{isolation}.wasm"));
    std::fs::copy(wasm, &path).expect("copy wasm");
    let sidecar = std::fs::read_to_string(wasm.with_extension("toml")).expect("sidecar");
    // Keep the config and limits; set the isolation (and a pool that never recycles).
    let body: String = sidecar
        .lines()
        .filter(|l| {
            !l.starts_with("isolation") && !l.starts_with("pool_size") && !l.starts_with("max_uses")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let head = if isolation == "pooled" {
        "isolation = \"pooled\"\npool_size = 1\nmax_uses = 100000000\n"
    } else {
        "isolation = \"per-call\"\n"
    };
    std::fs::write(path.with_extension("toml"), format!("{head}{body}")).expect("sidecar");
    path
}

struct Row {
    lang: &'static str,
    size: u64,
    compile_cold_ms: f64,
    compile_cached_ms: f64,
    loaded_kib: i64,
    first_call_ms: f64,
    instance_kib: i64,
    fresh_us: f64,
    pooled_us: f64,
    /// `none`, `snapshot` or `per-instance` (see `PluginInfo::init`).
    init: &'static str,
    fresh_off_us: f64,
    pooled_off_us: f64,
}

fn main() {
    let doc = document();
    let ctx = CallContext {
        run_id: "bench".into(),
        pipeline: "bench".into(),
        attempt: 1,
        metadata: json!({}),
        ..Default::default()
    };
    let scratch = tempfile::tempdir().expect("tmp");
    let mut rows = Vec::new();
    for lang in ["rust", "python", "js"] {
        let wasm = policies_support::examples_dir(lang).join(format!("{NAME}.wasm"));
        let size = std::fs::metadata(&wasm).map_or(0, |m| m.len());
        let fresh_path = variant(scratch.path(), &wasm, lang, "per-call");
        let pooled_path = variant(scratch.path(), &wasm, lang, "pooled");

        // Compile: cold (empty cache) vs cached artifact.
        let settings = RuntimeSettings {
            cache_dir: Some(scratch.path().join(format!("cache-{lang}"))),
            ..RuntimeSettings::default()
        };
        let (compile_cold_ms, compile_cached_ms) = {
            let runtime = Runtime::new(&settings).expect("runtime");
            let t = Instant::now();
            runtime.load_file(&fresh_path).expect("load");
            let cold = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let again = runtime.load_file(&fresh_path).expect("load");
            assert!(
                again.info().compile_cached,
                "{lang}: second load should hit the cache"
            );
            (cold, t.elapsed().as_secs_f64() * 1e3)
        };

        // Memory: what loading the cached artifact adds to the process, then
        // what its first (pooled, so kept alive) instance adds.
        let runtime = Runtime::new(&settings).expect("runtime");
        let rss0 = rss_kib() as i64;
        let pooled = runtime.load_file(&pooled_path).expect("load");
        let rss1 = rss_kib() as i64;
        let t = Instant::now();
        pooled.validate(&ctx, &doc).expect("first call");
        let first_call_ms = t.elapsed().as_secs_f64() * 1e3;
        let rss2 = rss_kib() as i64;
        let (loaded_kib, instance_kib) = (rss1 - rss0, rss2 - rss1);
        let fresh = runtime.load_file(&fresh_path).expect("load");
        let fresh_us = per_call_us(&fresh, &ctx, &doc);
        let pooled_us = per_call_us(&pooled, &ctx, &doc);
        // Before `init` existed: the same files with init never called.
        let off = Runtime::new(&RuntimeSettings {
            init: InitMode::Off,
            ..settings.clone()
        })
        .expect("runtime");
        let fresh_off_us = per_call_us(&off.load_file(&fresh_path).expect("load"), &ctx, &doc);
        let pooled_off_us = per_call_us(&off.load_file(&pooled_path).expect("load"), &ctx, &doc);
        let init = fresh.info().init;
        rows.push(Row {
            init,
            fresh_off_us,
            pooled_off_us,
            lang,
            size,
            compile_cold_ms,
            compile_cached_ms,
            loaded_kib,
            first_call_ms,
            instance_kib,
            fresh_us,
            pooled_us,
        });
    }

    // Native baseline: the Rust plugin's check as a plain function is not
    // exported, so compare languages with each other (Rust = 1.0×).
    let rust = rows.first().map_or(1.0, |r| r.fresh_us);
    let rust_pooled = rows.first().map_or(1.0, |r| r.pooled_us);
    println!(
        "`{NAME}` over a {} byte answer (5 items, one violation), median of batches",
        doc.len()
    );
    println!();
    println!(
        "| language | per call, fresh instance | per call, pooled | fresh vs Rust | pooled vs Rust |"
    );
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.1} µs | {:.1} µs | {:.1}× | {:.1}× |",
            r.lang,
            r.fresh_us,
            r.pooled_us,
            r.fresh_us / rust,
            r.pooled_us / rust_pooled
        );
    }
    println!();
    println!("Init: per call with `init` never called (off, as before) vs the host's default");
    println!();
    println!(
        "| language | init | per-call, off | per-call, default | pooled, off | pooled, default |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
            r.lang, r.init, r.fresh_off_us, r.fresh_us, r.pooled_off_us, r.pooled_us
        );
    }
    println!();
    println!(
        "| language | component | compile cold | cached artifact | first call | RSS per loaded plugin | RSS per live instance |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.2} MB | {:.0} ms | {:.1} ms | {:.1} ms | {:.1} MiB | {:.1} MiB |",
            r.lang,
            r.size as f64 / 1e6,
            r.compile_cold_ms,
            r.compile_cached_ms,
            r.first_call_ms,
            r.loaded_kib as f64 / 1024.0,
            r.instance_kib as f64 / 1024.0
        );
    }
}
