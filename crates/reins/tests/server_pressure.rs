//! Under pressure, against real `reins serve` processes on loopback and a
//! busy upstream (a capacity, then 429 with `Retry-After`): saturation is
//! not an outage (the breaker never opens), calls stay within the
//! upstream's capacity, the rest get a fast 429 with `Retry-After` in each
//! surface's shape, a fallback takes over when the pipeline says so, one
//! tenant's flood does not starve another, and the caller's shorter
//! timeout wins. Assertions are on outcomes and counts, never on timings.

use reins_testing::busy::BusyUpstream;
use reins_testing::config::Config;
use reins_testing::model::{Step, Upstream, rate_limited};
use reins_testing::server::{self, Served};
use serde_json::{Value, json};
use std::time::Duration;

struct Started {
    _dir: tempfile::TempDir,
    served: Served,
}

/// `reins serve` on a config of providers and pipelines.
fn start(config: Config) -> Started {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config.plugins_dir(".").test_cache().write(dir.path());
    let served = server::serve(&path);
    Started { _dir: dir, served }
}

fn base(s: &Started) -> &str {
    &s.served.base
}

/// One chat completion; status, `Retry-After`, `X-Reins-Degraded` and body.
async fn chat(
    client: &reqwest::Client,
    base: &str,
    model: &str,
    text: &str,
    metadata: Value,
    timeout: Option<&str>,
) -> (u16, Option<String>, Option<String>, Value) {
    let mut req = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": text}], "metadata": metadata}));
    if let Some(t) = timeout {
        req = req.header("x-reins-timeout", t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (retry_after, degraded) = (header("retry-after"), header("x-reins-degraded"));
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, retry_after, degraded, body)
}

async fn providers(client: &reqwest::Client, base: &str) -> Value {
    let resp = client
        .get(format!("{base}/v1/providers"))
        .send()
        .await
        .expect("providers");
    resp.json::<Value>().await.expect("json")
}

fn provider<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["data"]
        .as_array()
        .and_then(|d| d.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

/// `n` concurrent chat completions; their outcomes.
async fn burst(base: &str, model: &str, n: usize) -> Vec<(u16, Option<String>, Value)> {
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, base, model) = (client.clone(), base.to_owned(), model.to_owned());
            tokio::spawn(async move {
                let (s, ra, _, body) = chat(
                    &client,
                    &base,
                    &model,
                    &format!("call {i}"),
                    json!({}),
                    None,
                )
                .await;
                (s, ra, body)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

fn assert_fast_429s(outcomes: &[(u16, Option<String>, Value)]) -> usize {
    let mut refused = 0;
    for (status, retry_after, body) in outcomes {
        assert!(
            *status == 200 || *status == 429,
            "only answers or 429s: {status} {body}"
        );
        if *status == 429 {
            refused += 1;
            let secs: u64 = retry_after
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            assert!(
                secs >= 1,
                "a 429 says when to come back: {retry_after:?} {body}"
            );
            assert_eq!(body["error"]["type"], "overloaded", "{body}");
            let message = body["error"]["message"].as_str().unwrap_or("");
            assert!(
                message.contains("provider `busy`"),
                "the message names the provider: {message}"
            );
        }
    }
    refused
}

const BREAKER: &str = "max_retries = 2\nbreaker = { failure_rate = 0.5, min_calls = 4, window_ms = 60000, cooldown_ms = 30000 }";

#[tokio::test]
async fn a_busy_upstream_is_kept_within_its_capacity_and_the_rest_are_refused_fast() {
    let up = BusyUpstream::start(4, Duration::from_millis(1500), 1).await;
    let s = start(
        Config::new()
            .openai(
                "busy",
                &up.base_url(),
                "m",
                &format!("max_in_flight = 4\nqueue_size = 4\n{BREAKER}"),
            )
            .table("[pipelines.p]\nmodel = \"busy\"\n"),
    );
    let outcomes = burst(base(&s), "p", 30).await;
    let refused = assert_fast_429s(&outcomes);
    let answered = outcomes.len() - refused;
    assert_eq!(
        up.refused(),
        0,
        "reins never sent more than the upstream takes"
    );
    assert_eq!(up.peak(), 4, "and used all of it");
    assert_eq!(up.served() as usize, answered);
    assert!(
        answered >= 8,
        "the calls in flight and the queue were served: {answered}"
    );
    assert!(refused >= 1, "the rest were refused: {refused}");
    let list = providers(&reqwest::Client::new(), base(&s)).await;
    let busy = provider(&list, "busy");
    assert_eq!(busy["breaker"]["trips"], 0, "{busy}");
    assert_eq!(busy["state"], "closed", "{busy}");
    assert_eq!(busy["admission"]["in_flight"], 0, "{busy}");
    assert!(
        busy["admission"]["refused"]["queue_full"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{busy}"
    );
}

#[tokio::test]
async fn saturation_never_opens_the_breaker_and_calls_go_again_after_it() {
    // No limit configured: reins finds the capacity by the upstream's 429s.
    let up = BusyUpstream::start(2, Duration::from_millis(800), 1).await;
    let s = start(
        Config::new()
            .openai("busy", &up.base_url(), "m", BREAKER)
            .table("[pipelines.p]\nmodel = \"busy\"\n"),
    );
    let outcomes = burst(base(&s), "p", 12).await;
    assert_fast_429s(&outcomes);
    assert!(up.refused() >= 1, "the upstream pushed back");
    assert!(up.served() >= 2, "and served what it could");
    let client = reqwest::Client::new();
    let list = providers(&client, base(&s)).await;
    let busy = provider(&list, "busy");
    assert_eq!(busy["breaker"]["trips"], 0, "429s are not failures: {busy}");
    assert_eq!(busy["breaker"]["failures"], 0, "{busy}");
    assert!(
        busy["admission"]["saturations"].as_u64().unwrap_or(0) >= 1,
        "{busy}"
    );
    // Once the saturation is over, a call goes through.
    let (status, _, _, body) = chat(&client, base(&s), "p", "after", json!({}), None).await;
    assert_eq!(status, 200, "{body}");
    let metrics = client
        .get(format!("{}/metrics", base(&s)))
        .send()
        .await
        .expect("metrics");
    let text = metrics.text().await.expect("text");
    assert!(
        text.contains("reins_provider_saturations_total{provider=\"busy\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn a_saturated_provider_falls_back_when_the_pipeline_says_so() {
    let primary = Upstream::always(rate_limited("retry-after", "30")).await;
    let backup = Upstream::always(Step::Answer("from the backup".into())).await;
    let s = start(
        Config::new()
            .openai("primary", &primary.base_url(), "m", BREAKER)
            .openai("backup", &backup.base_url(), "m", "")
            .table(
                "[pipelines.fb]\nmodel = \"primary\"\nfallbacks = [\"backup\"]\non_saturated = \"fallback\"\n\
                 [pipelines.wait]\nmodel = \"primary\"\ndeadline_ms = 5000\n",
            ),
    );
    let client = reqwest::Client::new();
    for n in 0..3 {
        let (status, _, degraded, body) =
            chat(&client, base(&s), "fb", "hello", json!({}), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], "from the backup");
        assert_eq!(degraded.as_deref(), Some("backup"));
        // Only the first call reached the primary: then it was saturated for 30 s.
        assert_eq!(primary.count(), 1, "call {n}");
    }
    // A pipeline that queues, with no time to wait 30 s: refused at once.
    let (status, retry_after, _, body) =
        chat(&client, base(&s), "wait", "hello", json!({}), None).await;
    assert_eq!(status, 429, "{body}");
    let secs: u64 = retry_after
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        (20..=30).contains(&secs),
        "Retry-After is the saturation left: {retry_after:?}"
    );
    assert_eq!(primary.count(), 1);
    let list = providers(&client, base(&s)).await;
    assert_eq!(provider(&list, "primary")["state"], "saturated", "{list}");
    assert_eq!(provider(&list, "primary")["breaker"]["trips"], 0);
}

#[tokio::test]
async fn one_tenant_flooding_the_queue_does_not_starve_another() {
    let up = BusyUpstream::start(1, Duration::from_millis(300), 1).await;
    let s = start(
        Config::new()
            .openai(
                "busy",
                &up.base_url(),
                "m",
                "max_in_flight = 1\nqueue_size = 64",
            )
            .table("[pipelines.p]\nmodel = \"busy\"\ntrust_metadata = true\n"),
    );
    let client = reqwest::Client::new();
    let send = |tenant: &'static str, i: usize| {
        let (client, base) = (client.clone(), base(&s).to_owned());
        tokio::spawn(async move {
            chat(
                &client,
                &base,
                "p",
                &format!("{tenant} {i}"),
                json!({"tenant": tenant}),
                None,
            )
            .await
            .0
        })
    };
    let mut flood = Vec::new();
    for i in 0..8 {
        flood.push(send("flood", i));
    }
    // The flood is queued before the quiet tenant asks.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while provider(&providers(&client, base(&s)).await, "busy")["admission"]["queued"]
        .as_u64()
        .unwrap_or(0)
        < 7
    {
        assert!(std::time::Instant::now() < until, "the flood never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quiet = send("quiet", 0);
    assert_eq!(quiet.await.expect("quiet"), 200);
    for f in flood {
        assert_eq!(f.await.expect("flood"), 200);
    }
    let order = up.order();
    let at = order
        .iter()
        .position(|t| t == "quiet 0")
        .expect("the quiet call reached the upstream");
    assert!(
        at <= 2,
        "the quiet tenant's one call went next, not after the flood: {order:?}"
    );
}

#[tokio::test]
async fn the_callers_shorter_timeout_wins() {
    let up = Upstream::always(Step::Slow(Duration::from_secs(20), "late".into())).await;
    let s = start(
        Config::new()
            .openai("slow", &up.base_url(), "m", "max_retries = 0")
            .table("[pipelines.p]\nmodel = \"slow\"\ndeadline_ms = 30000\n"),
    );
    let client = reqwest::Client::new();
    let (status, _, _, body) = chat(&client, base(&s), "p", "hi", json!({}), Some("0.5")).await;
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("deadline"),
        "the run ended at the caller's deadline: {message}"
    );
    assert_eq!(up.count(), 1);
    // A malformed timeout names the header.
    let (status, _, _, body) = chat(&client, base(&s), "p", "hi", json!({}), Some("soon")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "X-Reins-Timeout", "{body}");
    // The durable runs endpoint takes it in the body.
    let resp = client
        .post(format!("{}/v1/pipelines/p/runs", base(&s)))
        .json(&json!({"input": "hi", "timeout_ms": 300}))
        .send()
        .await
        .expect("run");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("deadline"),
        "{body}"
    );
}

#[tokio::test]
async fn the_anthropic_surface_answers_overload_in_its_own_shape() {
    let primary = Upstream::always(rate_limited("retry-after", "30")).await;
    let s = start(
        Config::new()
            .openai("primary", &primary.base_url(), "m", "max_retries = 0")
            .table("[pipelines.p]\nmodel = \"primary\"\ndeadline_ms = 5000\n"),
    );
    let client = reqwest::Client::new();
    let ask = || {
        client
            .post(format!("{}/v1/messages", base(&s)))
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "p", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    // The first call saturates the provider, the second is refused before it is sent.
    for _ in 0..2 {
        let resp = ask().await.expect("messages");
        assert_eq!(resp.status().as_u16(), 429);
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(
            retry_after.parse::<u64>().unwrap_or(0) >= 1,
            "{retry_after:?}"
        );
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    }
    assert_eq!(primary.count(), 1);
}

#[test]
fn bad_limits_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (extra, key) in [
        ("max_in_flight = 0", "providers.up.max_in_flight"),
        ("adaptive = true", "providers.up.adaptive"),
        ("rpm = 0", "providers.up.rpm"),
    ] {
        let path = Config::new()
            .plugins_dir(".")
            .openai("up", "http://127.0.0.1:9/v1", "m", extra)
            .table("[pipelines.p]\nmodel = \"up\"\n")
            .write(dir.path());
        let out = std::process::Command::new(server::reins_exe())
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("reins check");
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{extra}: {text}");
        assert!(text.contains(key), "{extra}: the error names {key}: {text}");
    }
}

#[tokio::test]
async fn the_ops_listener_answers_probes_and_nothing_else() {
    let ops = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let up = Upstream::always(Step::Answer("hi".into())).await;
    let s = start(
        Config::new()
            .openai("up", &up.base_url(), "m", "")
            .table(&format!(
                "[pipelines.p]\nmodel = \"up\"\n[server]\nops_listen = \"{ops}\"\n"
            )),
    );
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = client
            .get(format!("http://{ops}{path}"))
            .send()
            .await
            .expect("ops");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    let metrics = client
        .get(format!("http://{ops}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert!(
        metrics.text().await.expect("text").contains("reins_"),
        "the same metrics as the main listener"
    );
    // Model work only on the main listener.
    let resp = client
        .post(format!("http://{ops}/v1/chat/completions"))
        .json(&json!({"model": "p", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("ops");
    assert_eq!(resp.status().as_u16(), 404);
    let (status, _, _, body) = chat(&client, base(&s), "p", "hi", json!({}), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn the_openai_and_anthropic_clients_get_their_own_rate_limit_errors_at_once() {
    let primary = Upstream::always(rate_limited("retry-after", "30")).await;
    let s = start(
        Config::new()
            .openai("primary", &primary.base_url(), "m", "max_retries = 0")
            // The pipeline would wait 50 s; the clients' 5 s timeout decides.
            .table("[pipelines.wait]\nmodel = \"primary\"\ndeadline_ms = 50000\n"),
    );
    // Saturate the provider: its upstream answers 429, Retry-After: 30.
    let client = reqwest::Client::new();
    let (status, _, _, body) = chat(&client, base(&s), "wait", "hi", json!({}), Some("5")).await;
    assert_eq!(status, 429, "{body}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/clients/overload_clients.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(base(&s))
        .output()
        .expect("run python3");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !stderr.contains("No module named"),
        "the client packages are missing: pip install -r tests/clients/requirements.txt\n{stderr}"
    );
    assert!(
        out.status.success(),
        "python client checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
    assert_eq!(
        primary.count(),
        1,
        "neither client's call reached the saturated upstream"
    );
}
