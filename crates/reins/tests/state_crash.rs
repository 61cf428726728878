//! The crash test: `reins serve` runs 20-step agent runs whose every step
//! calls a refund webhook; the server is SIGKILLed at seeded random moments
//! (at least 20 times) and restarted. Every run must complete and the sink
//! must have applied every refund exactly once: one idempotency key per
//! refund, no refund under two keys, none missing.
//!
//! The model is an OpenAI-compatible server in this process (it also checks
//! that every `tool` message answers a call by id, as OpenAI requires). Set
//! `REINS_CRASH_SEED` to replay a seed.

mod common;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STEPS: usize = 20;
const BATCHES: usize = 10;
const MIN_KILLS: usize = 20;

/// What the refund sink saw: per idempotency key, the order and how many
/// times the key was delivered.
#[derive(Default)]
struct Sink {
    applied: Mutex<HashMap<String, (String, u32)>>,
}

async fn refund(State(sink): State<Arc<Sink>>, headers: HeaderMap, Json(body): Json<Value>) -> Json<Value> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let order = body["arguments"]["order"].as_str().unwrap_or_default().to_owned();
    {
        let mut applied = sink.applied.lock().expect("lock");
        applied.entry(key.clone()).or_insert((order.clone(), 0)).1 += 1;
    }
    // The refund is applied; the answer takes a while, so some kills land
    // between the two (the action is `sending` and must be re-sent).
    let wait = 15 + key.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))) % 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    Json(json!({"refunded": order, "key": key}))
}

/// An OpenAI-compatible agent model: step n (n = tool results so far) asks
/// for refund `BATCH-n`; after `STEPS` it answers `{"done": n}`.
async fn model(Json(body): Json<Value>) -> Result<Json<Value>, (StatusCode, String)> {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let batch = messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let mut n = 0;
    for m in &messages {
        if m["role"] == "tool" {
            if m["tool_call_id"].as_str().is_none_or(str::is_empty) {
                return Err((StatusCode::BAD_REQUEST, "a tool message without tool_call_id".into()));
            }
            n += 1;
        }
    }
    let message = if n < STEPS {
        common::refund_call(&format!("{batch}-{n}"), 1.0)
    } else {
        json!({"role": "assistant", "content": json!({"done": n, "batch": batch}).to_string()})
    };
    Ok(Json(common::completion(message)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_servers_finish_every_run_and_apply_every_refund_exactly_once() {
    let seed: u64 = std::env::var("REINS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| reins::runtime::now_ms() as u64);
    eprintln!("crash test seed: {seed} (replay with REINS_CRASH_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let sink = Arc::new(Sink::default());
    let sink_url = common::listen(Router::new().route("/refund", post(refund)).with_state(sink.clone())).await;
    let model_url = common::listen(Router::new().route("/v1/chat/completions", post(model))).await;

    let plugins = common::plugins_dir(&["tool-manifest"]);
    std::fs::write(plugins.path().join("tool-manifest.toml"), common::REFUND_TOOL).expect("sidecar");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("reins.toml");
    std::fs::write(
        &config,
        format!(
            r#"
plugins_dir = "{plugins}"
[runtime]
cache_dir = "{cache}"
[state]
kind = "sqlite"
path = "state.db"
node_id = "crash-node"
lease_ms = 2000
[server]
request_timeout_ms = 120000
[providers.agent]
kind = "openai"
base_url = "{model_url}/v1"
model = "crash-agent"
[pipelines.refunds]
model = "agent"
mode = "agent"
max_steps = {max_steps}
output = "json"
constraints = "tool-manifest"
[pipelines.refunds.executors.issue_refund]
kind = "webhook"
url = "{sink_url}/refund"
retries = 20
"#,
            plugins = plugins.path().display(),
            cache = common::repo_root().join("target/reins-test-cache").display(),
            max_steps = STEPS + 5,
        ),
    )
    .expect("config");

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
        let server = common::serve(&config);
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
    assert_eq!(done.len(), BATCHES, "completed: {:?}", done.keys().collect::<Vec<_>>());
    for (batch, run) in &done {
        assert_eq!(run["output"], json!({"done": STEPS, "batch": batch}), "{batch}");
    }

    // Every refund applied exactly once: one key per order, every order there.
    let applied = sink.applied.lock().expect("lock").clone();
    let mut by_order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut deliveries = 0;
    for (key, (order, n)) in &applied {
        by_order.entry(order.clone()).or_default().push(key.clone());
        deliveries += n;
    }
    let twice: Vec<_> = by_order.iter().filter(|(_, keys)| keys.len() > 1).collect();
    assert!(twice.is_empty(), "refunds applied under two keys: {twice:?}");
    for b in 0..BATCHES {
        for n in 0..STEPS {
            let order = format!("batch{b}-{n}");
            assert!(by_order.contains_key(&order), "refund {order} never applied");
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
        let keys = applied.keys().filter(|k| k.starts_with(&format!("{run_id}."))).count();
        assert_eq!(keys, STEPS, "{run_id}");
    }
}
