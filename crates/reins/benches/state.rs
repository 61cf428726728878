//! What durable state costs (see BENCHMARKS.md, "State"):
//!
//! 1. one checkpoint (a step record and the run's row, one transaction) on
//!    SQLite (a file, WAL) and on PostgreSQL (loopback), p50/p99;
//! 2. runs/s of a 5-step agent pipeline through `reins::Host::run`, with
//!    checkpoints on and off (`[state] checkpoints`), on SQLite and
//!    PostgreSQL, with an instant in-process model (the harness alone: the
//!    worst case for the ratio) and with a 2 ms model (a fast local model);
//! 3. the audit log: one append of a run's rows (run.start, a gate
//!    decision, run.end) in the caller's path, and the same agent runs with
//!    `[state] audit` on and off (rows go to the store through the writer
//!    task, off the run's path).
//!
//! PostgreSQL rows need `REINS_TEST_PG_URL` (`. scripts/pg-test.sh` sets it);
//! without it they are left out.
//!
//! cargo bench -p reins --bench state

use reins::Host;
use reins::pipeline::{Request, RunStatus};
use reins::state::{
    AuditEntry, RunRecord, StateSettings, StateStore, StepKind, StepRecord, now_ms,
};
use reins_testing::{bench, model, plugins};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WRITES: usize = 3_000;
const RUNS: usize = 300;
const STEPS: usize = 5;

fn pg_settings() -> Option<StateSettings> {
    let url = std::env::var("REINS_TEST_PG_URL").ok()?;
    toml::from_str(&format!("kind = \"postgres\"\nurl = \"{url}\"")).ok()
}

/// A typical agent step: a few messages of conversation and an execution.
fn step_data(step: u32) -> serde_json::Value {
    let messages: Vec<_> = (0..2 * step + 1)
        .map(|i| json!({"role": if i % 2 == 0 { "assistant" } else { "tool" }, "content": "x".repeat(160)}))
        .collect();
    json!({"messages": messages, "executions": [{"tool": "issue_refund", "arguments": {"order": "A-1", "amount": 1},
        "idempotency_key": "run.1:1:0", "status": "done", "tries": 1}], "tokens": {"prompt": 300, "completion": 20}})
}

/// The `i`th checkpoint of `run`: an agent step (steps 1..=20, reused).
async fn checkpoint(store: &dyn StateStore, run: &mut RunRecord, i: usize) {
    let step = (i % 20) as u32 + 1;
    run.updated_ms = now_ms();
    run.lease_until_ms = run.updated_ms + 15_000;
    let record = StepRecord {
        run_id: run.run_id.clone(),
        step,
        kind: StepKind::Agent,
        data: step_data(step.min(5)),
        created_ms: run.updated_ms,
    };
    store.checkpoint(run, &record).await.expect("checkpoint");
}

async fn checkpoint_cost(store: Arc<dyn StateStore>) -> (Duration, Duration) {
    let id = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut run = RunRecord::new(&id, "bench", RunStatus::Running);
    run.owner = Some("bench-node".into());
    store.put_run(&run).await.expect("put");
    let mut times = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let start = Instant::now();
        checkpoint(&*store, &mut run, i).await;
        times.push(start.elapsed());
    }
    times.sort();
    (bench::quantile(&times, 0.5), bench::quantile(&times, 0.99))
}

/// Checkpoints/s with `writers` runs checkpointing at once, each awaiting
/// its own (as concurrent requests do): what group commit is for.
async fn concurrent_checkpoints(store: Arc<dyn StateStore>, writers: usize) -> f64 {
    let per_writer = WRITES / writers;
    let began = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = format!("bench-{}", uuid::Uuid::new_v4().simple());
                let mut run = RunRecord::new(&id, "bench", RunStatus::Running);
                run.owner = Some("bench-node".into());
                store.put_run(&run).await.expect("put");
                for i in 0..per_writer {
                    checkpoint(&*store, &mut run, i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    (per_writer * writers) as f64 / began.elapsed().as_secs_f64()
}

/// One `audit_append` of the three rows a gated run writes, awaited.
async fn audit_append_cost(store: Arc<dyn StateStore>) -> (Duration, Duration) {
    let mut times = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let run = format!("run-{i}");
        let rows = vec![
            AuditEntry::new("run.start", &run, "running").detail(json!({"pipeline": "agent"})),
            AuditEntry::new("gate.allow", &run, "allow")
                .detail(json!({"gate": "spend-limit", "tool": "issue_refund"})),
            AuditEntry::new("run.end", &run, "completed")
                .detail(json!({"pipeline": "agent", "tokens": 320})),
        ];
        let start = Instant::now();
        store.audit_append(rows).await.expect("append");
        times.push(start.elapsed());
    }
    times.sort();
    (bench::quantile(&times, 0.5), bench::quantile(&times, 0.99))
}

struct AgentRow {
    p50: Duration,
    p99: Duration,
    runs_per_s: f64,
}

/// `state` is the `[state]` table's body (the store, `checkpoints`, `audit`).
async fn agent_runs(state: &str, latency: Duration, plugins: &std::path::Path) -> AgentRow {
    let config = format!(
        r#"
plugins_dir = "{plugins}"
[runtime]
cache_dir = "{cache}"
[state]
{state}
[providers.agent]
kind = "scripted"
responses = []
[pipelines.agent]
model = "agent"
mode = "agent"
max_steps = {max_steps}
constraints = "tool-manifest"
"#,
        plugins = plugins.display(),
        cache = plugins::repo_root()
            .join("target/reins-test-cache")
            .display(),
        max_steps = STEPS + 1,
    );
    let host = Host::builder()
        .config_str(config, plugins)
        .provider(
            "agent",
            Arc::new(model::AgentModel {
                latency,
                ..model::AgentModel::new(STEPS)
            }),
        )
        .watch(false)
        .build()
        .await
        .expect("host");
    for _ in 0..20 {
        host.run("agent", Request::text("refund five orders")).await;
    }
    let mut times = Vec::with_capacity(RUNS);
    let began = Instant::now();
    for _ in 0..RUNS {
        let start = Instant::now();
        let r = host.run("agent", Request::text("refund five orders")).await;
        times.push(start.elapsed());
        assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
        assert_eq!(r.executions.len(), STEPS);
    }
    let total = began.elapsed();
    times.sort();
    AgentRow {
        p50: bench::quantile(&times, 0.5),
        p99: bench::quantile(&times, 0.99),
        runs_per_s: RUNS as f64 / total.as_secs_f64(),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite_settings: StateSettings = toml::from_str("kind = \"sqlite\"").expect("settings");
        let pg = pg_settings();

        println!("## One checkpoint (step row + run row, one transaction), {WRITES} writes\n");
        println!("| store | p50 µs | p99 µs |");
        println!("|---|---|---|");
        let sqlite = reins::state::open(&sqlite_settings, dir.path()).await.expect("sqlite");
        let (p50, p99) = checkpoint_cost(sqlite).await;
        println!("| SQLite (file, WAL, synchronous=NORMAL) | {} | {} |", bench::us(p50), bench::us(p99));
        if let Some(pg) = &pg {
            let store = reins::state::open(pg, dir.path()).await.expect("postgres");
            let (p50, p99) = checkpoint_cost(store).await;
            println!("| PostgreSQL (loopback) | {} | {} |", bench::us(p50), bench::us(p99));
        } else {
            println!("| PostgreSQL | (REINS_TEST_PG_URL not set) | |");
        }

        println!("\n## Concurrent checkpoints: runs checkpointing at once, each awaiting its own\n");
        println!("| store | writers | checkpoints/s | share of the in-memory store |");
        println!("|---|---:|---:|---:|");
        let memory_settings: StateSettings = toml::from_str("kind = \"memory\"").expect("settings");
        for writers in [1, 16, 64] {
            let memory = reins::state::open(&memory_settings, dir.path()).await.expect("memory");
            let floor = concurrent_checkpoints(memory, writers).await;
            println!("| in-memory SQLite | {writers} | {floor:.0} | 100 % |");
            let mut durable = vec![("SQLite (file, WAL)", sqlite_settings.clone())];
            if let Some(pg) = &pg {
                durable.push(("PostgreSQL (loopback)", pg.clone()));
            }
            for (name, settings) in durable {
                let store = reins::state::open(&settings, dir.path()).await.expect("store");
                let rate = concurrent_checkpoints(store, writers).await;
                println!("| {name} | {writers} | {rate:.0} | {:.0} % |", 100.0 * rate / floor);
            }
        }

        let plugins = plugins::plugins_dir(&["tool-manifest"]);
        std::fs::write(plugins.path().join("tool-manifest.toml"), plugins::REFUND_TOOL).expect("sidecar");
        println!("\n## A {STEPS}-step agent run, {RUNS} runs one at a time\n");
        println!("| store | model | checkpoints | p50 µs/run | p99 µs/run | runs/s | added per step | on/off |");
        println!("|---|---|---|---|---|---|---|---|");
        let db = dir.path().join("agent.db");
        let sqlite_state = format!("kind = \"sqlite\"\npath = \"{}\"", db.display());
        let mut stores = vec![("SQLite", sqlite_state)];
        if let Ok(url) = std::env::var("REINS_TEST_PG_URL") {
            stores.push(("PostgreSQL", format!("kind = \"postgres\"\nurl = \"{url}\"")));
        }
        for (store, state) in &stores {
            for (model, latency) in [("instant", Duration::ZERO), ("2 ms", Duration::from_millis(2))] {
                let off = agent_runs(&format!("{state}\ncheckpoints = false"), latency, plugins.path()).await;
                let on = agent_runs(&format!("{state}\ncheckpoints = true"), latency, plugins.path()).await;
                let per_step = (on.p50.as_secs_f64() - off.p50.as_secs_f64()) / STEPS as f64;
                for (label, row) in [("off", &off), ("on", &on)] {
                    let (added, ratio) = if label == "on" {
                        (
                            format!("{:.0} µs", per_step * 1e6),
                            format!("{:.2}×", on.p50.as_secs_f64() / off.p50.as_secs_f64()),
                        )
                    } else {
                        ("—".into(), "—".into())
                    };
                    println!(
                        "| {store} | {model} | {label} | {} | {} | {:.0} | {added} | {ratio} |",
                        bench::us(row.p50),
                        bench::us(row.p99),
                        row.runs_per_s
                    );
                }
            }
        }

        println!("\n## The audit log\n");
        println!("One append of a gated run's 3 rows (one transaction), awaited, {WRITES} appends:\n");
        println!("| store | p50 µs | p99 µs |");
        println!("|---|---|---|");
        let sqlite = reins::state::open(&sqlite_settings, dir.path()).await.expect("sqlite");
        let (p50, p99) = audit_append_cost(sqlite).await;
        println!("| SQLite | {} | {} |", bench::us(p50), bench::us(p99));
        if let Some(pg) = &pg {
            let (p50, p99) = audit_append_cost(reins::state::open(pg, dir.path()).await.expect("postgres")).await;
            println!("| PostgreSQL | {} | {} |", bench::us(p50), bench::us(p99));
        }
        println!("\nThe {STEPS}-step agent run (instant model, checkpoints on), audit rows through the writer task:\n");
        println!("| store | audit | p50 µs/run | p99 µs/run | runs/s | on/off p50 |");
        println!("|---|---|---|---|---|---|");
        for (store, state) in &stores {
            // Off, on, off, on: a drift of the machine shows as two off rows that disagree.
            let mut rows = Vec::new();
            for audit in [false, true, false, true] {
                let row = agent_runs(&format!("{state}\naudit = {audit}"), Duration::ZERO, plugins.path()).await;
                rows.push((audit, row));
            }
            let off = rows.iter().filter(|(a, _)| !a).map(|(_, r)| r.p50.as_secs_f64()).sum::<f64>() / 2.0;
            for (audit, row) in &rows {
                let ratio = if *audit { format!("{:.2}×", row.p50.as_secs_f64() / off) } else { "—".into() };
                println!(
                    "| {store} | {} | {} | {} | {:.0} | {ratio} |",
                    if *audit { "on" } else { "off" },
                    bench::us(row.p50),
                    bench::us(row.p99),
                    row.runs_per_s
                );
            }
        }
    });
}
