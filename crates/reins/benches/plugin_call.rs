//! Plugin call cost: isolation modes and allocators against native Rust, in
//! one run, printed as a table (see BENCHMARKS.md).
//!
//! cargo bench -p reins --bench plugin_call
//!
//! The second part measures every bundled plugin per-call and pooled, with
//! its `init` snapshotted (`[runtime] init = "snapshot"`, the default) and
//! without (`init = "off"`: the set-up is done lazily by the call, as before
//! plugins had `init`), on the first case of its case file.

use reins::cases::{Case, read_cases};
use reins::runtime::{
    Access, Action, Allocator, CallContext, InitMode, Layer, Message, Plugin, PluginHost, Runtime,
    RuntimeSettings,
};
use reins_testing::plugins;
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
        t.insert(
            "schema".into(),
            serde_json::from_value(schema()).expect("schema as toml"),
        );
        let mut top = toml::Table::new();
        top.insert("config".into(), toml::Value::Table(t));
        top
    };
    let write = |name: &str, head: &str| {
        std::fs::write(
            d.join(format!("{name}.toml")),
            format!("{head}\n{schema_toml}"),
        )
        .expect("sidecar");
    };
    write("json-schema", "isolation = \"per-call\"");
    plugins::install(d, "json-schema", "json-schema-pooled");
    write(
        "json-schema-pooled",
        "isolation = \"pooled\"\npool_size = 4\nmax_uses = 1000000",
    );
    plugins::install(d, "stamp-a", "tiny-pooled");
    std::fs::write(
        d.join("tiny-pooled.toml"),
        "isolation = \"pooled\"\nmax_uses = 1000000\n",
    )
    .expect("sidecar");

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
        let p = set
            .get(name)
            .unwrap_or_else(|| panic!("{name} not loaded"))
            .clone();
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
        // Compiling only: json-schema without its config would refuse in init.
        let s = RuntimeSettings {
            cache_dir: Some(cold_dir.path().join(format!("c{i}"))),
            init: InitMode::Off,
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
    // A first load with init: compile, instrument + compile, init, snapshot +
    // compile (json-schema with the bench's schema, fresh cache).
    let init_dir = tempfile::tempdir().expect("tmp");
    std::fs::copy(&wasm, init_dir.path().join("json-schema.wasm")).expect("copy");
    std::fs::write(
        init_dir.path().join("json-schema.toml"),
        format!("{schema_toml}"),
    )
    .expect("sidecar");
    let rt = Runtime::new(&RuntimeSettings {
        cache_dir: Some(cold_dir.path().join("init")),
        ..RuntimeSettings::default()
    })
    .expect("rt");
    let t = Instant::now();
    rt.load_file(&init_dir.path().join("json-schema.wasm"))
        .expect("load");
    let cold_init = t.elapsed();
    let t = Instant::now();
    let again = rt
        .load_file(&init_dir.path().join("json-schema.wasm"))
        .expect("load");
    let warm_init = t.elapsed();
    assert!(again.info().init_cached, "the snapshot was not cached");

    let us = |ns: f64| ns / 1000.0;
    println!(
        "Plugin call cost, ~1 KB JSON document ({} bytes), median of batches",
        doc.len()
    );
    println!();
    println!("| path | per call | vs native |");
    println!("|---|---:|---:|");
    println!(
        "| native Rust: serde_json + jsonschema (compiled once) | {:.2} µs | 1.0× |",
        us(native)
    );
    println!(
        "| json-schema plugin, pooled instance | {:.2} µs | {:.1}× |",
        us(schema_pooled),
        schema_pooled / native
    );
    println!(
        "| json-schema plugin, per-call instance (starts from the init snapshot) | {:.2} µs | {:.1}× |",
        us(schema_per_call),
        schema_per_call / native
    );
    println!(
        "| native Rust: parse `{{}}` (tiny baseline) | {:.2} µs | 1.0× |",
        us(native_tiny)
    );
    println!(
        "| tiny validator, pooled instance | {:.2} µs | {:.1}× |",
        us(tiny_pooled),
        tiny_pooled / native_tiny
    );
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
    println!(
        "| load json-schema.wasm ({} KB) | time |",
        std::fs::metadata(&wasm).map_or(0, |m| m.len() / 1024)
    );
    println!("|---|---:|");
    println!(
        "| cold compile (median of 3) | {:.1} ms |",
        cold[1].as_secs_f64() * 1e3
    );
    println!(
        "| cached artifact (median of 3) | {:.2} ms |",
        warm[1].as_secs_f64() * 1e3
    );
    println!(
        "| ratio | {:.0}× |",
        cold[1].as_secs_f64() / warm[1].as_secs_f64()
    );
    println!(
        "| cold load with init: compile, instrument, init, snapshot (1 run) | {:.1} ms |",
        cold_init.as_secs_f64() * 1e3
    );
    println!(
        "| cached load with init: artifact + cached snapshot (1 run) | {:.2} ms |",
        warm_init.as_secs_f64() * 1e3
    );

    println!();
    every_bundled_plugin(&doc, &schema_toml);
}

/// Per-call vs pooled, before (init off) vs after (snapshot), every bundled
/// plugin; json-schema on the ~1 KB document, the others on the first case
/// of their case file that uses the bundled config.
fn every_bundled_plugin(doc: &str, schema_toml: &toml::Table) {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    for name in plugins::BUNDLED {
        let sidecar = plugins::sidecar_path(name)
            .map(|p| std::fs::read_to_string(p).expect("sidecar"))
            .unwrap_or_default();
        // The bundled config, without the isolation lines: set per copy below.
        let body: String = sidecar
            .lines()
            .filter(|l| {
                !["isolation", "pool_size", "max_uses"]
                    .iter()
                    .any(|k| l.trim_start().starts_with(k))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let body = if name == "json-schema" {
            format!("[limits]\ndeadline_ms = 50\n\n{schema_toml}")
        } else {
            body
        };
        for (suffix, head) in [
            ("per-call", "isolation = \"per-call\"\n"),
            (
                "pooled",
                "isolation = \"pooled\"\npool_size = 4\nmax_uses = 1000000\n",
            ),
        ] {
            let as_name = format!("{name}.{suffix}");
            plugins::install(d, name, &as_name);
            plugins::sidecar(d, &as_name, &format!("{head}{body}"));
        }
    }
    let host = |init: InitMode| {
        let s = RuntimeSettings {
            init,
            ..plugins::settings()
        };
        PluginHost::open(d, &s, false).expect("host")
    };
    let after = host(InitMode::Snapshot);
    let before = host(InitMode::Off);
    let (after, before) = (after.current(), before.current());

    println!(
        "Every bundled plugin: µs per call (median of batches), init off (before) vs snapshotted (after)"
    );
    println!();
    println!(
        "| plugin | input | per-call before | per-call after | pooled before | pooled after | after: per-call / pooled |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for name in plugins::BUNDLED {
        let (label, call) = bench_call(name, doc);
        let time = |set: &reins::runtime::PluginSet, suffix: &str| {
            let p = set
                .get(&format!("{name}.{suffix}"))
                .unwrap_or_else(|| panic!("{name}.{suffix} not loaded"))
                .clone();
            let call = call.clone();
            call(&p); // fails loudly here rather than inside the timing loop
            measure(move || call(&p)) / 1000.0
        };
        let (pc_before, pc_after) = (time(&before, "per-call"), time(&after, "per-call"));
        let (po_before, po_after) = (time(&before, "pooled"), time(&after, "pooled"));
        println!(
            "| {name} | {label} | {pc_before:.2} | {pc_after:.2} | {po_before:.2} | {po_after:.2} | {:.1}× |",
            pc_after / po_after
        );
    }
}

type BenchCall = std::sync::Arc<dyn Fn(&Plugin) + Send + Sync>;

/// What to call `name` with, and a label for it.
fn bench_call(name: &str, doc: &str) -> (String, BenchCall) {
    let mut ctx = CallContext {
        run_id: "bench".into(),
        pipeline: "bench".into(),
        attempt: 1,
        metadata: json!({}),
        ..Default::default()
    };
    if name == "json-schema" {
        let doc = doc.to_string();
        let label = format!("{} B document", doc.len());
        return (
            label,
            std::sync::Arc::new(move |p: &Plugin| {
                black_box(p.validate(&ctx, black_box(&doc)).expect("call"));
            }),
        );
    }
    let cases = read_cases(&plugins::cases_path(name)).expect("case file");
    let case: Case = cases
        .into_iter()
        .find(|c| c.config.is_none())
        .unwrap_or_else(|| panic!("{name}: no case with the bundled config"));
    if let Some(caller) = &case.caller {
        ctx.caller = caller.clone();
    }
    if let Some(request) = &case.request {
        ctx.request_text = request.as_str().into();
    }
    let label = format!("case {:?}", case.name);
    let input = case.input.clone();
    let call: BenchCall = std::sync::Arc::new(move |p: &Plugin| match p.layer() {
        Layer::Normalizer => {
            let messages: Vec<Message> = match &input {
                Value::String(s) => vec![Message::new("user", s.clone())],
                other => serde_json::from_value(other.clone()).expect("messages"),
            };
            black_box(p.normalize(&ctx, &messages).expect("call"));
        }
        Layer::Validator => {
            let text = match &input {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            black_box(p.validate(&ctx, &text).expect("call"));
        }
        Layer::Constraints => {
            black_box(p.tools(&ctx).expect("call"));
        }
        Layer::Gate => {
            let action = Action {
                tool: input["tool"].as_str().unwrap_or_default().to_string(),
                arguments: input.get("arguments").cloned().unwrap_or(json!({})),
                access: serde_json::from_value::<Access>(
                    input.get("access").cloned().unwrap_or(json!("write")),
                )
                .expect("access"),
            };
            // A gate that reserves (spend-limit) gives the reservation back,
            // so the budget never runs out during the bench.
            let (decision, mut reservation) = p.check_reserving(&ctx, &action).expect("call");
            reservation.release();
            black_box(decision);
        }
        Layer::StreamChecker => {
            let text = input.as_str().unwrap_or_default();
            black_box(p.check_stream(&ctx, "", text, true).expect("call"));
        }
        Layer::Context => panic!("no bundled context plugin"),
    });
    (label, call)
}
