//! What tracing costs a run (see BENCHMARKS.md, "Telemetry"): the same
//! run (a normalizer, the constraints plugin, a model answer that fails
//! the schema, a repair, a gate: about a dozen spans) on three hosts in
//! one process, measured in alternating rounds:
//!
//! 1. telemetry off (the baseline);
//! 2. exporting over OTLP/HTTP to a live collector on loopback
//!    (`reins_testing::otlp::Collector`, which decodes every batch, on its
//!    own runtime but the same two cores);
//! 3. exporting to a dead collector (connection refused: every batch
//!    fails and is dropped, counted).
//!
//! The model is scripted (no latency), checkpoints are off: the run is as
//! lean as it gets, so the ratio is the worst case.
//!
//! cargo bench -p reins --bench telemetry [-- RUNS_PER_ROUND]

use reins::Host;
use reins::pipeline::{Request, RunStatus};
use reins::telemetry::{Exporting, Settings};
use reins_testing::bench::{quantile, us};
use reins_testing::otlp::Collector;
use reins_testing::{plugins, server};
use std::time::{Duration, Instant};

const ROUNDS: usize = 10;

fn config(dir: &std::path::Path, telemetry: &str) -> String {
    let answer = |a: Option<u32>, content: &str| {
        let attempt = a.map(|a| format!("attempt = {a}, ")).unwrap_or_default();
        format!(
            "{{ {attempt}content = '{content}', tool_calls = [{{ name = \"issue_refund\", arguments = {{ order = \"A-1\", amount = 20.0 }} }}], usage = {{ prompt_tokens = 900, completion_tokens = 40, total_tokens = 940 }} }}"
        )
    };
    format!(
        r#"plugins_dir = {dir:?}
[runtime]
cache_dir = {cache:?}

[state]
checkpoints = false

[providers.script]
kind = "scripted"
responses = [{first}, {second}]

[pipelines.traced]
model = "script"
normalizers = ["normalize-text"]
schema = '{{"type": "object", "required": ["refund"], "properties": {{"refund": {{"type": "string"}}}}}}'
constraints = "tool-manifest"
gates = ["spend-limit"]
repair = {{ max_attempts = 2 }}

{telemetry}
"#,
        dir = dir.display().to_string(),
        cache = plugins::settings()
            .resolved_cache_dir()
            .display()
            .to_string(),
        first = answer(Some(1), r#"{"refund": 20}"#),
        second = answer(Some(2), r#"{"refund": "A-1"}"#),
    )
}

async fn host(dir: &std::path::Path, telemetry: &str) -> (Host, Exporting) {
    let text = config(dir, telemetry);
    let parsed = reins::config::Config::parse(&text, "bench.toml", dir).expect("config");
    let settings = Settings::from_config(&parsed, &|_: &str| None).expect("settings");
    let exporting = Exporting::start(settings, false).expect("exporter");
    let host = Host::builder()
        .config_str(text, dir)
        .telemetry(exporting.telemetry.clone())
        .build()
        .await
        .expect("host");
    (host, exporting)
}

async fn round(host: &Host, runs: usize, out: &mut Vec<Duration>) {
    for _ in 0..runs {
        let start = Instant::now();
        let r = host
            .run(
                "traced",
                Request::text("Refund order A-1, it arrived broken."),
            )
            .await;
        out.push(start.elapsed());
        assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
        assert_eq!(r.attempts.len(), 2);
    }
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The collector decodes on a runtime of its own, as it would in its own
    // process; it still shares the machine's two cores with the runs.
    let collector_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("collector runtime");
    let collector = collector_rt.block_on(Collector::start());
    rt.block_on(async {
        let dir = plugins::plugins_dir(&["normalize-text", "tool-manifest", "spend-limit"]);
        plugins::refund_sidecars(dir.path(), 1000.0, 1e12);
        let live = format!(
            "[telemetry]\nenabled = true\nendpoint = \"{}\"\nschedule_delay_ms = 200\n",
            collector.endpoint()
        );
        let dead = format!(
            "[telemetry]\nenabled = true\nendpoint = \"{}\"\nschedule_delay_ms = 200\ntimeout_ms = 1000\n",
            server::dead_url()
        );
        let hosts = [
            ("off", host(dir.path(), "").await),
            ("live collector", host(dir.path(), &live).await),
            ("dead collector", host(dir.path(), &dead).await),
        ];
        let mut samples = vec![Vec::new(); hosts.len()];
        for (_, (h, _)) in &hosts {
            round(h, runs / 4 + 1, &mut Vec::new()).await; // warm-up
        }
        for _ in 0..ROUNDS {
            for (i, (_, (h, _))) in hosts.iter().enumerate() {
                round(h, runs, &mut samples[i]).await;
            }
        }
        let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
        let base = {
            let mut v = samples[0].clone();
            v.sort();
            (quantile(&v, 0.5), mean(&v))
        };
        println!(
            "telemetry cost per run ({} runs each, {ROUNDS} alternating rounds; a run = ~12 spans)",
            runs * ROUNDS
        );
        println!(
            "{:<16} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "tracing", "p50", "p99", "mean", "p50 ×off", "mean ×off"
        );
        for ((name, _), v) in hosts.iter().zip(samples.iter_mut()) {
            v.sort();
            let (p50, m) = (quantile(v, 0.5), mean(v));
            println!(
                "{:<16} {:>10} {:>10} {:>10} {:>10.3} {:>9.3}",
                name,
                us(p50),
                us(quantile(v, 0.99)),
                us(m),
                p50.as_secs_f64() / base.0.as_secs_f64(),
                m.as_secs_f64() / base.1.as_secs_f64(),
            );
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let spans = collector.spans();
        println!(
            "live collector received {} spans ({:.1} per run)",
            spans.len(),
            spans.len() as f64 / ((runs * ROUNDS + runs / 4 + 1) as f64)
        );
        for (_, (_, exporting)) in hosts {
            tokio::task::block_in_place(|| exporting.shutdown());
        }
    });
}
