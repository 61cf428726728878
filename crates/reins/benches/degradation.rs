//! Graceful degradation under a flaky upstream (see BENCHMARKS.md,
//! "Degradation"): 10,000 runs per scenario through `reins::Host::run`,
//! against OpenAI-compatible upstreams on loopback (the tests' flaky server):
//!
//! - healthy: the primary always answers (the baseline);
//! - flaky + breaker: the primary fails 50 % of calls (HTTP 500, seeded
//!   random), one retry, its circuit breaker on, and a healthy fallback;
//! - flaky, no breaker: the same with the breaker disabled.
//!
//! Reported: success rate, upstream calls per run, how many runs the
//! fallback served, breaker trips, p50/p99 latency and the p99 added next
//! to the healthy run; and the runs that took the open-breaker path alone.
//! Runs go one at a time, the scenarios interleaved run by run, on a
//! 2-worker runtime (the upstreams share it).
//!
//! cargo bench -p reins --bench degradation

#[path = "../tests/degradation_support/mod.rs"]
mod degradation_support;

use degradation_support::{openai, refund};
use reins::Host;
use reins::pipeline::{Request, RunResult, RunStatus};
use reins_testing::model::{Step, Upstream, server_error};
use reins_testing::{bench, plugins};
use std::time::{Duration, Instant};

const RUNS: usize = 10_000;
const WARMUP: usize = 200;

const SCHEMA: &str = r#"{"type": "object", "required": ["amount", "currency", "reason"], "additionalProperties": false,
  "properties": {"amount": {"type": "number", "minimum": 0}, "currency": {"enum": ["USD", "EUR"]}, "reason": {"type": "string"}}}"#;

/// 50 % of calls fail, by a seeded xorshift (the same sequence every run).
fn half_failing() -> impl FnMut(usize) -> Step + Send + 'static {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x & 1 == 0 {
            server_error()
        } else {
            Step::Answer(refund(12.5))
        }
    }
}

fn pipeline(name: &str, model: &str, fallbacks: &str) -> String {
    format!(
        "[pipelines.{name}]\nmodel = \"{model}\"\nfallbacks = [{fallbacks}]\nschema = '''{SCHEMA}'''\nrepair = {{ max_attempts = 1 }}\n\n"
    )
}

struct Row {
    name: &'static str,
    runs: usize,
    ok: usize,
    calls: (usize, usize),
    by_fallback: usize,
    trips: u64,
    p50: Duration,
    p99: Duration,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let healthy = rt.block_on(Upstream::always(Step::Answer(refund(12.5))));
    let flaky = rt.block_on(Upstream::start(half_failing()));
    let flaky_nb = rt.block_on(Upstream::start(half_failing()));
    let backup = rt.block_on(Upstream::always(Step::Answer(refund(12.5))));
    let backup_nb = rt.block_on(Upstream::always(Step::Answer(refund(12.5))));

    let retries = "max_retries = 1\nbackoff_ms = 2\n";
    let breaker = "breaker = { failure_rate = 0.5, min_calls = 20, window_ms = 5000, cooldown_ms = 200, probes = 1 }";
    let plugins = plugins::plugins_dir(&[]);
    let config = format!(
        "plugins_dir = {dir:?}\n\n{}{}{}{}{}{}{}{}",
        openai("healthy", &healthy.base_url(), retries),
        openai("flaky", &flaky.base_url(), &format!("{retries}{breaker}")),
        openai(
            "flaky-nb",
            &flaky_nb.base_url(),
            &format!("{retries}breaker = {{ enabled = false }}")
        ),
        openai("backup", &backup.base_url(), "max_retries = 0"),
        openai("backup-nb", &backup_nb.base_url(), "max_retries = 0"),
        pipeline("healthy", "healthy", ""),
        pipeline("flaky", "flaky", "\"backup\""),
        pipeline("flaky-nb", "flaky-nb", "\"backup-nb\""),
        dir = plugins.path().display().to_string(),
    );
    let host = rt
        .block_on(Host::builder().config_str(config, plugins.path()).build())
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    let request = Request::text("My parcel arrived crushed; refund 12.50 EUR.");

    let scenarios = [
        ("healthy upstream", "healthy", &healthy, None),
        (
            "50 % failing + breaker + fallback",
            "flaky",
            &flaky,
            Some(&backup),
        ),
        (
            "50 % failing, no breaker + fallback",
            "flaky-nb",
            &flaky_nb,
            Some(&backup_nb),
        ),
    ];
    for _ in 0..WARMUP {
        for (_, pipeline, _, _) in &scenarios {
            rt.block_on(host.run(pipeline, request.clone()));
        }
    }
    struct Tally {
        samples: Vec<Duration>,
        ok: usize,
        by_fallback: usize,
        before: (usize, usize),
        trips_before: u64,
    }
    let mut tallies: Vec<Tally> = scenarios
        .iter()
        .map(|(_, pipeline, primary, fallback)| Tally {
            samples: Vec::with_capacity(RUNS),
            ok: 0,
            by_fallback: 0,
            before: (primary.count(), fallback.map_or(0, |f| f.count())),
            trips_before: host.breaker(pipeline).map_or(0, |b| b.trips()),
        })
        .collect();
    let mut open_path: Vec<Duration> = Vec::new();
    // Interleaved, one run of each scenario in turn, so that whatever else
    // the machine does falls on all of them alike.
    for _ in 0..RUNS {
        for ((_, pipeline, _, _), tally) in scenarios.iter().zip(&mut tallies) {
            let t = Instant::now();
            let r: RunResult = rt.block_on(host.run(pipeline, request.clone()));
            let d = t.elapsed();
            tally.samples.push(d);
            tally.ok += usize::from(r.status == RunStatus::Completed);
            tally.by_fallback += usize::from(r.degraded);
            let refused = r
                .trace
                .iter()
                .any(|s| s.layer == "model" && s.result == "failed: breaker_open");
            if *pipeline == "flaky" && refused {
                open_path.push(d);
            }
        }
    }
    let mut rows = Vec::new();
    for ((name, pipeline, primary, fallback), mut t) in scenarios.into_iter().zip(tallies) {
        t.samples.sort();
        rows.push(Row {
            name,
            runs: RUNS,
            ok: t.ok,
            calls: (
                primary.count() - t.before.0,
                fallback.map_or(0, |f| f.count()) - t.before.1,
            ),
            by_fallback: t.by_fallback,
            trips: host.breaker(pipeline).map_or(0, |b| b.trips()) - t.trips_before,
            p50: bench::quantile(&t.samples, 0.50),
            p99: bench::quantile(&t.samples, 0.99),
        });
    }
    open_path.sort();
    let base_p99 = rows[0].p99;

    println!(
        "| scenario | success | upstream calls / run (primary + fallback) | served by the fallback | breaker trips | p50 µs | p99 µs | p99 added vs healthy |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let per_run = |n: usize| n as f64 / r.runs as f64;
        println!(
            "| {} | {:.2} % | {:.3} ({:.3} + {:.3}) | {:.1} % | {} | {} | {} | {} |",
            r.name,
            100.0 * r.ok as f64 / r.runs as f64,
            per_run(r.calls.0 + r.calls.1),
            per_run(r.calls.0),
            per_run(r.calls.1),
            100.0 * r.by_fallback as f64 / r.runs as f64,
            r.trips,
            bench::us(r.p50),
            bench::us(r.p99),
            if r.name == rows[0].name {
                "—".to_owned()
            } else {
                format!(
                    "{:+} µs",
                    r.p99.as_micros() as i64 - base_p99.as_micros() as i64
                )
            },
        );
    }
    println!(
        "| …of which the open-breaker path (refused at once → fallback) | {} runs | 1 (0 + 1) | 100 % | | {} | {} | {:+} µs |",
        open_path.len(),
        bench::us(bench::quantile(&open_path, 0.50)),
        bench::us(bench::quantile(&open_path, 0.99)),
        bench::quantile(&open_path, 0.99).as_micros() as i64 - base_p99.as_micros() as i64,
    );
}
