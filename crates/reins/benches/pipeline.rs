//! The whole pipeline with a zero-latency scripted model, in one run,
//! printed as a table (see BENCHMARKS.md, "Pipeline"):
//!
//! - success path: normalizer + JSON Schema + 2 validator plugins + the
//!   constraint check + 1 gate, one model call;
//! - one-repair path: the same, where the first answer fails the schema and
//!   the repair passes (two model calls, two validation passes);
//! - fix path: `coerce-numbers` with `on_fail = "fix"` fixes the first answer
//!   (one model call, two validation passes);
//! - the native JSON Schema check alone, the baseline.
//!
//! Latency is one run at a time (p50/p99); throughput is runs/s with 8 runs
//! in flight on a 2-worker runtime.
//!
//! cargo bench -p reins --bench pipeline
//! REINS_PROFILE=FILE cargo bench -p reins --features profile --bench pipeline   # samples the one-repair path, per-call

use reins::Host;
use reins::pipeline::{Request, RunStatus};
use reins_testing::plugins;
use serde_json::{Value, json};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SAMPLES: usize = 3000;
const WARMUP: usize = 300;
const IN_FLIGHT: usize = 8;
const THROUGHPUT_RUNS: usize = 6000;

fn example(file: &str) -> String {
    std::fs::read_to_string(
        plugins::repo_root()
            .join("examples/contract-risks")
            .join(file),
    )
    .unwrap_or_else(|e| panic!("examples/contract-risks/{file}: {e}"))
}

/// The validated 5-risk answer of the example.
fn answer() -> Value {
    serde_json::from_str(&example("expected.json")).expect("expected.json")
}

fn with_cap(cap: Value) -> Value {
    let mut a = answer();
    a["risks"][0]["damage_cap"] = cap;
    a
}

/// Scripted entries: the answer text, a tool call for the gate, and usage as
/// an API reports it.
fn entry(attempt: Option<u32>, content: &Value) -> Value {
    let mut e = json!({
        "content": content.to_string(),
        "tool_calls": [{"name": "file_review", "arguments": {"contract": "NW-2024-117", "risk_count": 5, "amount": 1}}],
        "usage": {"prompt_tokens": 1650, "completion_tokens": 300, "total_tokens": 1950},
    });
    if let Some(a) = attempt {
        e["attempt"] = json!(a);
    }
    e
}

/// Writes a script file into `dir` and returns its `file = ...` line.
fn script(dir: &std::path::Path, name: &str, entries: &[Value]) -> String {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, Value::Array(entries.to_vec()).to_string()).expect("write script");
    format!("file = {:?}", path.display().to_string())
}

fn config(plugins: &std::path::Path) -> String {
    let schema = example("schema.json");
    let good = answer();
    let bad = with_cap(json!("$500,000"));
    let pipeline = |name: &str, model: &str, validators: &str| {
        format!(
            "[pipelines.{name}]\nmodel = \"{model}\"\nsystem_prompt_file = {prompt:?}\nnormalizers = [\"normalize-text\"]\n\
             schema = '''{schema}'''\nvalidators = {validators}\nconstraints = \"tool-manifest\"\ngates = [\"spend-limit\"]\n\
             repair = {{ max_attempts = 3 }}\n\n",
            prompt = plugins::repo_root()
                .join("examples/contract-risks/prompt.md")
                .display()
                .to_string(),
        )
    };
    format!(
        "plugins_dir = {dir:?}\n[runtime]\ncache_dir = {cache:?}\n\n\
         [providers.valid]\nkind = \"scripted\"\n{valid}\n\n\
         [providers.repair]\nkind = \"scripted\"\n{repair}\n\n\
         {success}{one_repair}{fix}",
        dir = plugins.display().to_string(),
        cache = plugins::settings()
            .resolved_cache_dir()
            .display()
            .to_string(),
        valid = script(plugins, "valid", &[entry(None, &good)]),
        repair = script(
            plugins,
            "repair",
            &[entry(Some(1), &bad), entry(Some(2), &good)]
        ),
        success = pipeline("success", "valid", "[\"ranges\", \"coerce-numbers\"]"),
        one_repair = pipeline("one-repair", "repair", "[\"ranges\", \"coerce-numbers\"]"),
        fix = pipeline(
            "fix",
            "repair",
            "[{ plugin = \"coerce-numbers\", on_fail = \"fix\" }, { plugin = \"ranges\", stage = 1 }]"
        ),
    )
}

fn sidecars(dir: &std::path::Path, isolation: &str) {
    let schema = example("schema.json");
    let write = |name: &str, text: String| {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!("isolation = {isolation:?}\n{text}"),
        )
        .expect("sidecar")
    };
    write("normalize-text", "[config]\nmax_chars = 60000\n".into());
    write(
        "ranges",
        "[config]\nrules = [{ path = \"/risks/*/damage_cap\", min = 0, max = 1000000000 }]\n"
            .into(),
    );
    write(
        "coerce-numbers",
        format!("[config]\nschema = '''{schema}'''\n"),
    );
    write(
        "tool-manifest",
        "[[config.tools]]\nname = \"file_review\"\naccess = \"write\"\n\
         parameters = '{\"type\": \"object\", \"required\": [\"contract\", \"risk_count\"], \"properties\": \
         {\"contract\": {\"type\": \"string\"}, \"risk_count\": {\"type\": \"integer\", \"minimum\": 0}, \"amount\": {\"type\": \"number\"}}}'\n"
            .into(),
    );
    write(
        "spend-limit",
        "[config]\nescalate_above = 1000.0\ndaily_budget = 1000000000000.0\n".into(),
    );
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn micros(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The request: a short instruction (the contract itself mostly measures
    // the normalizer on 6 KB of text; see its row).
    let request = Request::text(
        "Review the attached master services agreement NW-2024-117 for customer risks.",
    );
    let contract = Request::text(example("contract.md"));
    let mut rows: Vec<(String, String, Stats, Option<f64>)> = Vec::new();

    for isolation in ["per-call", "pooled"] {
        let plugins = plugins::plugins_dir(&[
            "normalize-text",
            "ranges",
            "coerce-numbers",
            "tool-manifest",
            "spend-limit",
        ]);
        sidecars(plugins.path(), isolation);
        let host = Arc::new(
            rt.block_on(
                Host::builder()
                    .config_str(config(plugins.path()), plugins.path())
                    .build(),
            )
            .unwrap_or_else(|e| panic!("bench config: {e}")),
        );
        // Check every path does what it says before timing it.
        for (pipeline, attempts, fixes) in [("success", 1, 0), ("one-repair", 2, 0), ("fix", 1, 1)]
        {
            let r = rt.block_on(host.run(pipeline, request.clone()));
            assert_eq!(
                r.status,
                RunStatus::Completed,
                "{pipeline}: {:?}\n{}",
                r.error,
                r.trace_table()
            );
            assert_eq!(r.attempts.len(), attempts, "{pipeline}");
            assert_eq!(
                r.attempts.iter().map(|a| a.fixed_by.len()).sum::<usize>(),
                fixes,
                "{pipeline}"
            );
            assert_eq!(
                r.actions.len(),
                1,
                "{pipeline}: the gate allowed the action"
            );
            assert_eq!(r.output, Some(answer()), "{pipeline}");
        }
        let plugin_calls = |pipeline: &str| {
            let r = rt.block_on(host.run(pipeline, request.clone()));
            r.trace
                .iter()
                .filter(|s| {
                    matches!(
                        s.layer,
                        "normalizer" | "context" | "constraints" | "validator" | "gate"
                    )
                })
                .count()
        };
        let latency = |pipeline: &str, request: &Request| {
            for _ in 0..WARMUP {
                black_box(rt.block_on(host.run(pipeline, request.clone())));
            }
            let samples: Vec<Duration> = (0..SAMPLES)
                .map(|_| {
                    let r = request.clone();
                    let t = Instant::now();
                    let result = rt.block_on(host.run(pipeline, r));
                    let d = t.elapsed();
                    assert_eq!(result.status, RunStatus::Completed);
                    d
                })
                .collect();
            stats(samples)
        };
        let throughput = |pipeline: &'static str| {
            let t = Instant::now();
            rt.block_on(async {
                let per_task = THROUGHPUT_RUNS / IN_FLIGHT;
                let tasks: Vec<_> = (0..IN_FLIGHT)
                    .map(|_| {
                        let host = host.clone();
                        let request = request.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_task {
                                let r = host.run(pipeline, request.clone()).await;
                                assert_eq!(r.status, RunStatus::Completed);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("bench task");
                }
            });
            THROUGHPUT_RUNS as f64 / t.elapsed().as_secs_f64()
        };
        if std::env::var_os("REINS_BENCH_TRACE").is_some() {
            for _ in 0..WARMUP {
                rt.block_on(host.run("one-repair", request.clone()));
            }
            let t = Instant::now();
            let r = rt.block_on(host.run("one-repair", request.clone()));
            let wall = t.elapsed();
            eprintln!("{isolation}:\n{}", r.trace_table());
            // Where the run's time goes between its steps.
            let mut at = 0;
            for s in &r.trace {
                eprintln!(
                    "{:>6} µs idle, then {:<11} {:<15} {:>5} µs",
                    s.start_us.saturating_sub(at),
                    s.layer,
                    s.name,
                    s.duration_us
                );
                at = s.start_us + s.duration_us;
            }
            eprintln!("Host::run took {} µs in all\n", wall.as_micros());
        }
        for (pipeline, name, model_calls) in [
            ("success", "success path", 1),
            ("one-repair", "one-repair path", 2),
            ("fix", "fix path (coerce-numbers, on_fail = fix)", 1),
        ] {
            // `--features profile` and REINS_PROFILE=FILE: where the
            // one-repair path's time goes, per-call, one run at a time.
            let profile =
                (pipeline == "one-repair" && isolation == "per-call").then(reins::profile::start);
            let timed = latency(pipeline, &request);
            if let Some(p) = profile {
                p.finish();
            }
            rows.push((
                format!("{name}, {isolation}"),
                format!(
                    "{model_calls} model call(s), {} plugin calls",
                    plugin_calls(pipeline)
                ),
                timed,
                Some(throughput(pipeline)),
            ));
        }
        rows.push((
            format!("one-repair path, {isolation}, 6 KB contract as input"),
            "the normalizer cleans the whole contract".into(),
            latency("one-repair", &contract),
            None,
        ));
    }

    // The baseline: the native JSON Schema check alone (compiled once), on
    // the parsed 5-item answer, and parse + check from text.
    let validator = reins::pipeline::compile_schema(
        &serde_json::from_str(&example("schema.json")).expect("schema"),
    )
    .expect("schema compiles");
    let doc = answer();
    let text = doc.to_string();
    let native = |f: &dyn Fn() -> bool| {
        for _ in 0..1000 {
            black_box(f());
        }
        let samples: Vec<Duration> = (0..SAMPLES * 10)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            })
            .collect();
        stats(samples)
    };
    rows.push((
        "native JSON Schema check".into(),
        "compiled schema, parsed 5-item answer".into(),
        native(&|| validator.iter_errors(black_box(&doc)).next().is_none()),
        None,
    ));
    rows.push((
        "native parse + JSON Schema check".into(),
        "from the answer's JSON text".into(),
        native(&|| {
            let v: Value = serde_json::from_str(black_box(&text)).unwrap_or(Value::Null);
            validator.is_valid(&v)
        }),
        None,
    ));

    println!();
    println!(
        "pipeline bench: {} cores, {SAMPLES} sequential runs per row (after {WARMUP} warm-up); runs/s with {IN_FLIGHT} runs in flight on 2 tokio workers",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("| path | what runs | p50 µs | p99 µs | runs/s |");
    println!("|---|---|---:|---:|---:|");
    for (name, what, s, rps) in rows {
        println!(
            "| {name} | {what} | {} | {} | {} |",
            micros(s.p50),
            micros(s.p99),
            rps.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"))
        );
    }
}
