//! The crash test: `reins serve` runs 20-step agent runs whose every step
//! calls a refund webhook; the server is SIGKILLed at seeded random moments
//! (at least 20 times) and restarted. Every run must complete and the sink
//! must have applied every refund exactly once: one idempotency key per
//! refund, no refund under two keys, none missing.
//!
//! The model is an OpenAI-compatible server in this process (it also checks
//! that every `tool` message answers a call by id, as OpenAI requires). Set
//! `REINS_CRASH_SEED` to replay a seed.

use rand::{RngExt, SeedableRng};
use reins_testing::config::Config;
use reins_testing::model::{self, Step, Upstream};
use reins_testing::webhook::{Delivery, Sink};
use reins_testing::{plugins, server};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STEPS: usize = 20;
const BATCHES: usize = 10;
const MIN_KILLS: usize = 20;

/// How long the sink takes to answer a delivery it has applied: a while,
/// so some kills land between the two (the action is `sending` and must be
/// re-sent).
fn answer_delay(d: &Delivery) -> Duration {
    let wait = 15
        + d.key
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)))
            % 50;
    Duration::from_millis(wait)
}

/// An OpenAI-compatible agent model: step n (n = tool results so far) asks
/// for refund `BATCH-n`; after `STEPS` it answers `{"done": n}`.
fn model(body: &Value) -> Step {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let batch = model::first_user_text(body);
    let mut n = 0;
    for m in &messages {
        if m["role"] == "tool" {
            if m["tool_call_id"].as_str().is_none_or(str::is_empty) {
                return model::status(400, "a tool message without tool_call_id");
            }
            n += 1;
        }
    }
    let message = if n < STEPS {
        model::refund_call(&format!("{batch}-{n}"), 1.0)
    } else {
        json!({"role": "assistant", "content": json!({"done": n, "batch": batch}).to_string()})
    };
    model::ok(&model::completion(message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_servers_finish_every_run_and_apply_every_refund_exactly_once() {
    let seed: u64 = std::env::var("REINS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| reins::runtime::now_ms() as u64);
    eprintln!("crash test seed: {seed} (replay with REINS_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let sink = Sink::with_delay(answer_delay).await;
    let upstream = Upstream::replying(|seen| model(&seen.body)).await;

    let plugins = plugins::plugins_dir(&["tool-manifest"]);
    std::fs::write(
        plugins.path().join("tool-manifest.toml"),
        plugins::REFUND_TOOL,
    )
    .expect("sidecar");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::new()
        .plugins_dir(plugins.path())
        .test_cache()
        .table(
            "[state]\nkind = \"sqlite\"\npath = \"state.db\"\nnode_id = \"crash-node\"\nlease_ms = 2000\n\
             [server]\nrequest_timeout_ms = 120000\n",
        )
        .openai("agent", &upstream.base_url(), "crash-agent", "")
        .table(&format!(
            r#"[pipelines.refunds]
model = "agent"
mode = "agent"
max_steps = {max_steps}
output = "json"
constraints = "tool-manifest"
[pipelines.refunds.executors.issue_refund]
kind = "webhook"
url = "{sink_url}"
retries = 20
"#,
            sink_url = sink.url(),
            max_steps = STEPS + 5,
        ))
        .write(dir.path());

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    // Each batch is started (and later polled) by POSTing with its
    // idempotency key: a retry answers with the stored run.
    let done: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let base: Arc<Mutex<String>> = Arc::default();
    let start_batch = |batch: String| {
        let (client, done, base) = (client.clone(), done.clone(), base.clone());
        tokio::spawn(async move {
            loop {
                let url = format!("{}/v1/pipelines/refunds/runs", base.lock().expect("lock"));
                let sent = client
                    .post(url)
                    .json(&json!({"input": batch, "idempotency_key": batch}))
                    .send()
                    .await;
                if let Ok(resp) = sent
                    && let Ok(body) = resp.json::<Value>().await
                    && body["status"] == "completed"
                {
                    done.lock().expect("lock").insert(batch.clone(), body);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let mut kills = 0;
    let mut started = 0;
    let mut pollers = Vec::new();
    let began = Instant::now();
    loop {
        let server = server::serve(&config);
        *base.lock().expect("lock") = server.base.clone();
        // A new batch every other life, so kills keep landing mid-run.
        while started < BATCHES && started <= kills / 2 {
            pollers.push(start_batch(format!("batch{started}")));
            started += 1;
        }
        if kills >= MIN_KILLS && started == BATCHES {
            // Last life: let everything finish.
            let deadline = Instant::now() + Duration::from_secs(120);
            while done.lock().expect("lock").len() < BATCHES && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(server);
            break;
        }
        let wait = rng.random_range(80..600);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let finished = done.lock().expect("lock").len();
        drop(server); // SIGKILL (Served's drop)
        kills += 1;
        eprintln!("kill {kills}: after {wait} ms; {finished}/{started} batches done");
    }
    for p in pollers {
        p.abort();
    }
    eprintln!("{kills} kills in {:.1} s", began.elapsed().as_secs_f64());
    assert!(kills >= MIN_KILLS);

    // Every run completed with the model's final answer.
    let done = done.lock().expect("lock").clone();
    assert_eq!(
        done.len(),
        BATCHES,
        "completed: {:?}",
        done.keys().collect::<Vec<_>>()
    );
    for (batch, run) in &done {
        assert_eq!(
            run["output"],
            json!({"done": STEPS, "batch": batch}),
            "{batch}"
        );
    }

    // Every refund applied exactly once: one key per order, every order there.
    let applied = sink.counts();
    let by_order = sink.by_order();
    let deliveries: u32 = applied.values().sum();
    let twice: Vec<_> = by_order.iter().filter(|(_, keys)| keys.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "refunds applied under two keys: {twice:?}"
    );
    for b in 0..BATCHES {
        for n in 0..STEPS {
            let order = format!("batch{b}-{n}");
            assert!(
                by_order.contains_key(&order),
                "refund {order} never applied"
            );
        }
    }
    assert_eq!(applied.len(), BATCHES * STEPS, "one key per refund");
    eprintln!(
        "{} refunds applied once each; {} deliveries ({} re-sent with the same key after a kill)",
        applied.len(),
        deliveries,
        deliveries as usize - applied.len()
    );
    // The keys name the run and its step.
    for run in done.values() {
        let run_id = run["run_id"].as_str().expect("run id");
        let keys = applied
            .keys()
            .filter(|k| k.starts_with(&format!("{run_id}.")))
            .count();
        assert_eq!(keys, STEPS, "{run_id}");
    }
}
