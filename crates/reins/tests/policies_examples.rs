//! The example policies (`examples/policies/{rust,python,js}/`): each of the
//! three implementations of `pii-redaction` and `no-unreleased-products`,
//! built with `reins plugin build`, passes the same case file through the
//! real host, and all three give the same answer to every case.

mod policies_support;

use policies_support::{EXAMPLES, LANGS, examples_dir};
use reins::cases::{Case, read_cases, run_cases};
use reins::runtime::{CallContext, Layer, Manifest, Message, Plugin, Runtime, RuntimeError};
use reins_testing::plugins;
use reins_testing::plugins::repo_root;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

fn cases_file(name: &str) -> PathBuf {
    repo_root()
        .join("examples/policies/cases")
        .join(format!("{name}.json"))
}

fn wasm(lang: &str, name: &str) -> PathBuf {
    examples_dir(lang).join(format!("{name}.wasm"))
}

#[test]
fn every_implementation_passes_the_shared_case_file() {
    let runtime = Runtime::new(&plugins::settings()).expect("runtime");
    let mut failures = Vec::new();
    for name in EXAMPLES {
        let cases = read_cases(&cases_file(name)).expect("case file");
        assert!(cases.len() >= 8, "{name}: too few cases");
        for lang in LANGS {
            let outcomes = run_cases(&runtime, &wasm(lang, name), &cases).expect("load the plugin");
            assert_eq!(outcomes.len(), cases.len());
            for o in outcomes.iter().filter(|o| !o.passed) {
                failures.push(format!("{lang}/{name}: {}: {}", o.name, o.detail));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );
}

#[test]
fn each_project_ships_the_shared_cases() {
    for lang in LANGS {
        for name in EXAMPLES {
            let project = repo_root().join("examples/policies").join(lang).join(name);
            let own =
                std::fs::read_to_string(project.join("cases.json")).expect("project cases.json");
            let shared = std::fs::read_to_string(cases_file(name)).expect("shared cases");
            assert_eq!(
                own, shared,
                "{lang}/{name}/cases.json must be the shared case file"
            );
            let sidecar = project.join(format!("{name}.toml"));
            let m = Manifest::parse(
                &std::fs::read_to_string(&sidecar).expect("sidecar"),
                &sidecar,
            )
            .expect("manifest");
            assert!(
                m.layer.is_some(),
                "{}: declares its layer",
                sidecar.display()
            );
        }
    }
}

/// What a plugin answers to one case, as JSON (errors as `{"error": kind}`).
fn answer(runtime: &Runtime, wasm: &Path, case: &Case) -> Value {
    let sidecar = wasm.with_extension("toml");
    let text = std::fs::read_to_string(&sidecar).unwrap_or_default();
    let mut manifest = Manifest::parse(&text, &sidecar).expect("sidecar");
    if let Some(cfg) = &case.config {
        manifest.config = serde_json::from_value(cfg.clone()).expect("config as TOML");
    }
    let plugin: Plugin =
        match runtime.load_with_manifest(wasm, manifest, &format!("{text}\n{:?}", case.config)) {
            Ok(p) => p,
            // A plugin that checks its config in `init` refuses a bad one at
            // load; one that checks it per call refuses the call: the same answer.
            Err(RuntimeError::Init { cause, .. }) => return json!({"error": cause.kind()}),
            Err(e) => panic!("load {}: {e}", wasm.display()),
        };
    let ctx = CallContext {
        run_id: "compare".into(),
        pipeline: "compare".into(),
        attempt: 1,
        metadata: json!({}),
        ..Default::default()
    };
    let result = match plugin.layer() {
        Layer::Normalizer => {
            let messages: Vec<Message> = match &case.input {
                Value::String(s) => vec![Message::new("user", s.clone())],
                other => serde_json::from_value(other.clone()).expect("messages"),
            };
            plugin
                .normalize(&ctx, &messages)
                .map(|n| json!({"messages": n.messages, "findings": n.findings}))
        }
        Layer::Validator => {
            let text = match &case.input {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            plugin
                .validate(&ctx, &text)
                .map(|v| json!({"violations": v.violations, "fixed": v.fixed}))
        }
        other => panic!("no example of layer {other}"),
    };
    result.unwrap_or_else(|e| json!({"error": e.cause.kind()}))
}

#[test]
fn the_three_languages_answer_every_case_identically() {
    let runtime = Runtime::new(&plugins::settings()).expect("runtime");
    for name in EXAMPLES {
        let cases = read_cases(&cases_file(name)).expect("case file");
        for case in &cases {
            let rust = answer(&runtime, &wasm("rust", name), case);
            for lang in ["python", "js"] {
                let other = answer(&runtime, &wasm(lang, name), case);
                assert_eq!(
                    other, rust,
                    "{name}: case {:?}: {lang} answers differently from rust",
                    case.name
                );
            }
        }
    }
}

#[test]
fn heavy_examples_are_pooled_and_answer_within_their_deadline() {
    let runtime = Runtime::new(&plugins::settings()).expect("runtime");
    for lang in ["python", "js"] {
        for name in EXAMPLES {
            let plugin = runtime.load_file(&wasm(lang, name)).expect("load");
            let m = plugin.manifest();
            assert_eq!(
                m.isolation,
                reins::runtime::Isolation::Pooled,
                "{lang}/{name}"
            );
            // The first call instantiates from cold pages; it must fit the
            // sidecar's deadline with room to spare.
            let ctx = CallContext {
                run_id: "t".into(),
                pipeline: "t".into(),
                attempt: 1,
                metadata: json!({}),
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let ok = match plugin.layer() {
                Layer::Normalizer => plugin
                    .normalize(&ctx, &[Message::new("user", "call 555-123-4567")])
                    .is_ok(),
                _ => plugin.validate(&ctx, r#"{"a": "Nimbus"}"#).is_ok(),
            };
            let first = started.elapsed();
            assert!(ok, "{lang}/{name}: first call failed");
            assert!(
                first.as_millis() < u128::from(m.limits.deadline_ms),
                "{lang}/{name}: first call {first:?} vs deadline {} ms",
                m.limits.deadline_ms
            );
            eprintln!(
                "{lang}/{name}: first call {:.1} ms, compile {:.0} ms",
                first.as_secs_f64() * 1e3,
                plugin.info().compile_ms
            );
        }
    }
}

/// The pool is sized in component instances; a Python component needs 14
/// core instances each, so the pool must reserve that many per slot or a
/// few live Python instances exhaust it long before the slots run out.
#[test]
fn every_pool_slot_can_hold_a_python_instance() {
    let settings = reins::runtime::RuntimeSettings {
        pool: reins::runtime::PoolSettings {
            instances: 4,
            ..Default::default()
        },
        ..plugins::settings()
    };
    let runtime = Runtime::new(&settings).expect("runtime");
    if runtime.engine().allocator() != reins::runtime::Allocator::Pooling {
        eprintln!("pooling allocator unavailable here; nothing to check");
        return;
    }
    let plugin = runtime
        .load_file(&wasm("python", "no-unreleased-products"))
        .expect("load");
    let ctx = CallContext {
        run_id: "t".into(),
        pipeline: "t".into(),
        attempt: 1,
        metadata: json!({}),
        ..Default::default()
    };
    // Four calls at once: four live instances of the 4-slot pool.
    let barrier = std::sync::Barrier::new(4);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    (0..5)
                        .map(|_| plugin.validate(&ctx, r#"{"a": "Nimbus"}"#).map(|_| ()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed: {:?}",
        failed.len(),
        results.len(),
        failed.first()
    );
}
