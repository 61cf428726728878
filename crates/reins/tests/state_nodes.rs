//! Two `reins serve` nodes on one PostgreSQL (a fresh database per run):
//! a run escalated on node A is approved through node B and completes;
//! budgets and rate limits are shared (a reservation made on A and rejected
//! on B is given back); and killing node A mid-run lets node
//! B take the run over once A's lease has expired, with every side effect
//! applied once.
//!
//! Needs `REINS_TEST_PG_URL` (set by `scripts/test.sh`).

use reins_testing::config::Config;
use reins_testing::model::{self, Step, Upstream};
use reins_testing::pg::Database;
use reins_testing::webhook::{Delivery, Sink};
use reins_testing::{plugins, server};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const AGENT_STEPS: usize = 8;
const LEASE_MS: u64 = 1500;

/// Agent steps are slow at the sink, so the kill lands mid-run.
fn answer_delay(d: &Delivery) -> Duration {
    if d.order().starts_with("job") {
        Duration::from_millis(200)
    } else {
        Duration::ZERO
    }
}

/// An OpenAI-compatible model. `refund AMOUNT ORDER` → one refund call;
/// `agent JOB` → a refund per step for `AGENT_STEPS` steps, then
/// `{"done": n}`; anything else → a plain answer.
fn model(body: &Value) -> Step {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let user = model::first_user_text(body);
    let words: Vec<&str> = user.split_whitespace().collect();
    let message = match words.as_slice() {
        ["refund", amount, order] => model::refund_call(order, amount.parse().unwrap_or(1.0)),
        ["agent", job] => {
            let n = messages.iter().filter(|m| m["role"] == "tool").count();
            if n < AGENT_STEPS {
                model::refund_call(&format!("{job}-{n}"), 1.0)
            } else {
                json!({"role": "assistant", "content": json!({"done": n}).to_string()})
            }
        }
        _ => json!({"role": "assistant", "content": "hello"}),
    };
    model::ok(&model::completion(message))
}

async fn get(client: &reqwest::Client, url: String) -> Value {
    client
        .get(url)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json")
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let resp = client.post(url).json(&body).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_runs_approvals_budgets_limits_and_take_over_a_dead_nodes_run() {
    let db = Database::create().await;
    let sink = Sink::with_delay(answer_delay).await;
    let upstream = Upstream::replying(|seen| model(&seen.body)).await;

    let plugins = plugins::plugins_dir(&["tool-manifest", "spend-limit"]);
    std::fs::write(
        plugins.path().join("tool-manifest.toml"),
        plugins::REFUND_TOOL,
    )
    .expect("sidecar");
    std::fs::write(
        plugins.path().join("spend-limit.toml"),
        "[config]\nescalate_above = 450\ndaily_budget = 1000\n",
    )
    .expect("sidecar");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::new()
        .plugins_dir(plugins.path())
        .test_cache()
        .table(&format!(
            "[state]\nkind = \"postgres\"\nurl = \"{}\"\nlease_ms = {LEASE_MS}\n[server]\nrequest_timeout_ms = 60000\n",
            db.url
        ))
        .openai("model", &upstream.base_url(), "nodes", "")
        .table(&format!(
            r#"[pipelines.refunds]
model = "model"
constraints = "tool-manifest"
gates = ["spend-limit"]
# The callers are anonymous: the tenant is the body's word.
trust_metadata = true
limits = {{ requests = 5, window_seconds = 60, key = "tenant" }}
[pipelines.refunds.executors.issue_refund]
kind = "webhook"
url = "{sink_url}"
[pipelines.jobs]
model = "model"
mode = "agent"
max_steps = {max_steps}
output = "json"
constraints = "tool-manifest"
[pipelines.jobs.executors.issue_refund]
kind = "webhook"
url = "{sink_url}"
"#,
            sink_url = sink.url(),
            max_steps = AGENT_STEPS + 2,
        ))
        .write(dir.path());
    let mut a = server::serve_with(&config, &["--node-id", "node-a"]);
    let b = server::serve_with(&config, &["--node-id", "node-b"]);
    let client = reqwest::Client::new();
    let run_url = |base: &str, pipeline: &str| format!("{base}/v1/pipelines/{pipeline}/runs");

    // 1. Escalated on A, approved on B: B continues A's run.
    let (status, held) = post(
        &client,
        run_url(&a.base, "refunds"),
        json!({"input": "refund 500 o1", "metadata": {"tenant": "t1"}}),
    )
    .await;
    assert_eq!(status, 200, "{held}");
    assert_eq!(held["status"], "awaiting_approval", "{held}");
    let run_id = held["run_id"].as_str().expect("run id").to_owned();
    let approval = held["approvals"][0]
        .as_str()
        .expect("approval id")
        .to_owned();
    let pending: Value = get(&client, format!("{}/v1/approvals?status=pending", b.base)).await;
    assert!(
        pending.to_string().contains(&approval),
        "B lists A's approval: {pending}"
    );
    assert!(
        sink.by_order().is_empty(),
        "nothing runs before the approval"
    );
    let (status, decided) = post(
        &client,
        format!("{}/v1/approvals/{approval}", b.base),
        json!({"decision": "approve", "comment": "ok"}),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["run"]["status"], "completed", "{decided}");
    assert_eq!(sink.by_order().get("o1").map(Vec::len), Some(1));
    // A sees the run B finished.
    let on_a: Value = get(&client, format!("{}/v1/runs/{run_id}", a.base)).await;
    assert_eq!(on_a["status"], "completed", "{on_a}");

    // 2. One budget (1000 a day for t1): 500 spent through B's approval, 400
    // more on B fits, another 400 on A does not.
    let (_, r) = post(
        &client,
        run_url(&b.base, "refunds"),
        json!({"input": "refund 400 o2", "metadata": {"tenant": "t1"}}),
    )
    .await;
    assert_eq!(r["status"], "completed", "{r}");
    let (_, r) = post(
        &client,
        run_url(&a.base, "refunds"),
        json!({"input": "refund 400 o3", "metadata": {"tenant": "t1"}}),
    )
    .await;
    assert_ne!(r["status"], "completed", "the budget is shared: {r}");
    assert!(r.to_string().contains("budget"), "{r}");
    assert!(!sink.by_order().contains_key("o3"));

    // 2b. A reservation made on A and rejected on B is given back: t3's
    // escalated 500 holds half the budget until B rejects it, then two 400s fit.
    let (_, held) = post(
        &client,
        run_url(&a.base, "refunds"),
        json!({"input": "refund 500 o5", "metadata": {"tenant": "t3"}}),
    )
    .await;
    assert_eq!(held["status"], "awaiting_approval", "{held}");
    let approval = held["approvals"][0]
        .as_str()
        .expect("approval id")
        .to_owned();
    let (status, decided) = post(
        &client,
        format!("{}/v1/approvals/{approval}", b.base),
        json!({"decision": "reject", "comment": "no"}),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["run"]["status"], "failed", "{decided}");
    for (base, order) in [(&b.base, "o6"), (&a.base, "o7")] {
        let (_, r) = post(
            &client,
            run_url(base, "refunds"),
            json!({"input": format!("refund 400 {order}"), "metadata": {"tenant": "t3"}}),
        )
        .await;
        assert_eq!(
            r["status"], "completed",
            "the rejected reservation was released: {r}"
        );
    }
    assert!(!sink.by_order().contains_key("o5"));

    // 3. One rate limit (5 runs a minute for t9) across both nodes.
    let mut codes = Vec::new();
    for i in 0..6 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let (status, _) = post(
            &client,
            run_url(base, "refunds"),
            json!({"input": "hi", "metadata": {"tenant": "t9"}}),
        )
        .await;
        codes.push(status);
    }
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 1, "{codes:?}");

    // 4. A dies mid-run; B takes the run over after A's lease expires.
    let started = {
        let (client, url) = (client.clone(), run_url(&a.base, "jobs"));
        tokio::spawn(async move {
            let _ = client
                .post(url)
                .json(&json!({"input": "agent job1", "idempotency_key": "job1"}))
                .send()
                .await;
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink
        .by_order()
        .keys()
        .filter(|o| o.starts_with("job1-"))
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "node A made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = a.child.kill(); // SIGKILL
    let _ = a.child.wait();
    let killed = Instant::now();
    started.abort();
    let (_, job) = post(
        &client,
        run_url(&b.base, "jobs"),
        json!({"input": "agent job1", "idempotency_key": "job1"}),
    )
    .await;
    let job_id = job["run_id"]
        .as_str()
        .expect("the run is known to B")
        .to_owned();
    let mut result = Value::Null;
    while Instant::now() < killed + Duration::from_secs(30) {
        result = get(&client, format!("{}/v1/runs/{job_id}", b.base)).await;
        if result["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        result["status"], "completed",
        "B finished A's run: {result}"
    );
    assert_eq!(result["output"], json!({"done": AGENT_STEPS}));
    // B waited for the lease: A renewed it at most a third of a lease before dying.
    let first_after = sink
        .deliveries()
        .iter()
        .filter(|d| d.order().starts_with("job1-") && d.at > killed)
        .map(|d| d.at.duration_since(killed))
        .min()
        .expect("B sent the remaining steps");
    assert!(
        first_after >= Duration::from_millis(LEASE_MS * 2 / 3 - 100),
        "B took over {first_after:?} after the kill, before A's lease expired"
    );
    let orders = sink.by_order();
    for n in 0..AGENT_STEPS {
        let keys = orders
            .get(&format!("job1-{n}"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(keys.len(), 1, "step {n} applied once: {keys:?}");
    }
    // The run's history, as any node serves it: B owns it now, every turn
    // is checkpointed and every action is done.
    let history = get(&client, format!("{}/v1/runs/{job_id}/steps", b.base)).await;
    assert_eq!(history["owner"], "node-b", "{history}");
    assert_eq!(history["status"], "completed");
    assert_eq!(history["steps"].as_array().map(Vec::len), Some(AGENT_STEPS));
    let actions = history["actions"].as_array().cloned().unwrap_or_default();
    assert_eq!(actions.len(), AGENT_STEPS, "{history}");
    assert!(actions.iter().all(|a| a["state"] == "done"), "{history}");
    let metrics = client
        .get(format!("{}/metrics", b.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("reins_runs_taken_over_total"), "{metrics}");
    drop(b);
}
