//! Plugin call cost: isolation modes and allocators against native Rust, in
//! one run, printed as a table (see BENCHMARKS.md).
//!
//! cargo bench -p reins --bench plugin_call

use reins_testing::plugins;
use reins::runtime::{Allocator, CallContext, PluginHost, Runtime, RuntimeSettings};
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// This bench's sampling: see `reins_testing::bench::median_ns`.
fn measure(f: impl FnMut()) -> f64 {
    let sampling = reins_testing::bench::Sampling {
        warmup: 200,
        batch: 200,
        budget: Duration::from_millis(600),
    };
    reins_testing::bench::median_ns(&sampling, f)
}

const RISKS: [&str; 3] = ["low", "medium", "high"];

fn document() -> String {
    let items: Vec<Value> = (0..5)
        .map(|i| {
            json!({
                "clause": format!("Clause {i}: limitation of liability and indemnification"),
                "risk": RISKS[i % 3],
                "damage_cap": 100000 * (i + 1),
                "rationale": "The supplier caps its aggregate liability at the fees paid in the twelve months before the claim."
            })
        })
        .collect();
    Value::Array(items).to_string()
}

fn schema() -> Value {
    json!({
        "type": "array", "maxItems": 20,
        "items": {
            "type": "object", "additionalProperties": false,
            "required": ["clause", "risk", "damage_cap", "rationale"],
            "properties": {
                "clause": {"type": "string", "minLength": 1},
                "risk": {"enum": ["low", "medium", "high"]},
                "damage_cap": {"type": ["number", "null"], "minimum": 0},
                "rationale": {"type": "string"}
            }
        }
    })
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
    let dir = plugins::plugins_dir(&["json-schema", "stamp-a"]);
    let d = dir.path();
    let schema_toml = {
        let mut t = toml::Table::new();
        t.insert("schema".into(), serde_json::from_value(schema()).expect("schema as toml"));
        let mut top = toml::Table::new();
        top.insert("config".into(), toml::Value::Table(t));
        top
    };
    let write = |name: &str, head: &str| {
        std::fs::write(d.join(format!("{name}.toml")), format!("{head}\n{schema_toml}")).expect("sidecar");
    };
    write("json-schema", "isolation = \"per-call\"");
    plugins::install(d, "json-schema", "json-schema-pooled");
    write("json-schema-pooled", "isolation = \"pooled\"\npool_size = 4\nmax_uses = 1000000");
    plugins::install(d, "stamp-a", "tiny-pooled");
    std::fs::write(d.join("tiny-pooled.toml"), "isolation = \"pooled\"\nmax_uses = 1000000\n").expect("sidecar");

    let pooling = plugins::settings();
    let host = PluginHost::open(d, &pooling, false).expect("host");
    let on_demand = RuntimeSettings {
        allocator: Allocator::OnDemand,
        ..plugins::settings()
    };
    let host_od = PluginHost::open(d, &on_demand, false).expect("host");
    let set = host.current();
    let set_od = host_od.current();

    // Native baseline: the same check with the same crate, compiled once.
    let validator = jsonschema::validator_for(&schema()).expect("schema");
    let native = measure(|| {
        let v: Value = serde_json::from_str(black_box(&doc)).expect("json");
        black_box(validator.is_valid(&v));
    });
    let native_tiny = measure(|| {
        let v: Value = serde_json::from_str(black_box("{}")).expect("json");
        black_box(v.is_object());
    });

    let call = |set: &reins::runtime::PluginSet, name: &str, input: &str| {
        let p = set.get(name).unwrap_or_else(|| panic!("{name} not loaded")).clone();
        let ctx = ctx.clone();
        let input = input.to_string();
        measure(move || {
            let v = p.validate(&ctx, black_box(&input)).expect("call");
            black_box(v);
        })
    };
    let schema_pooled = call(&set, "json-schema-pooled", &doc);
    let schema_per_call = call(&set, "json-schema", &doc);
    let tiny_per_call = call(&set, "stamp-a", "{}");
    let tiny_pooled = call(&set, "tiny-pooled", "{}");
    let tiny_on_demand = call(&set_od, "stamp-a", "{}");

    // Compile cost: cold compile vs cached artifact.
    let cold_dir = tempfile::tempdir().expect("tmp");
    let wasm = plugins::wasm_path("json-schema");
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for i in 0..3 {
        let s = RuntimeSettings {
            cache_dir: Some(cold_dir.path().join(format!("c{i}"))),
            ..RuntimeSettings::default()
        };
        let rt = Runtime::new(&s).expect("rt");
        let t = Instant::now();
        rt.load_file(&wasm).expect("load");
        cold.push(t.elapsed());
        let t = Instant::now();
        rt.load_file(&wasm).expect("load");
        warm.push(t.elapsed());
    }
    cold.sort();
    warm.sort();

    let us = |ns: f64| ns / 1000.0;
    println!("Plugin call cost, ~1 KB JSON document ({} bytes), median of batches", doc.len());
    println!();
    println!("| path | per call | vs native |");
    println!("|---|---:|---:|");
    println!("| native Rust: serde_json + jsonschema (compiled once) | {:.2} µs | 1.0× |", us(native));
    println!("| json-schema plugin, pooled instance | {:.2} µs | {:.1}× |", us(schema_pooled), schema_pooled / native);
    println!(
        "| json-schema plugin, per-call instance (recompiles its schema) | {:.2} µs | {:.1}× |",
        us(schema_per_call),
        schema_per_call / native
    );
    println!("| native Rust: parse `{{}}` (tiny baseline) | {:.2} µs | 1.0× |", us(native_tiny));
    println!("| tiny validator, pooled instance | {:.2} µs | {:.1}× |", us(tiny_pooled), tiny_pooled / native_tiny);
    println!(
        "| tiny validator, per-call instance, pooling allocator | {:.2} µs | {:.1}× |",
        us(tiny_per_call),
        tiny_per_call / native_tiny
    );
    println!(
        "| tiny validator, per-call instance, on-demand allocator | {:.2} µs | {:.1}× |",
        us(tiny_on_demand),
        tiny_on_demand / native_tiny
    );
    println!();
    println!("| load json-schema.wasm ({} KB) | time |", std::fs::metadata(&wasm).map_or(0, |m| m.len() / 1024));
    println!("|---|---:|");
    println!("| cold compile (median of 3) | {:.1} ms |", cold[1].as_secs_f64() * 1e3);
    println!("| cached artifact (median of 3) | {:.2} ms |", warm[1].as_secs_f64() * 1e3);
    println!("| ratio | {:.0}× |", cold[1].as_secs_f64() / warm[1].as_secs_f64());
}
