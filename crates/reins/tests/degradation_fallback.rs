//! A pipeline's fallback chain against flaky upstreams on loopback: other
//! providers, then the response cache, then the static degraded answer,
//! each validated again; the run's deadline over every attempt and
//! fallback; `degraded` / `served_by` / `notice` on the result and over
//! HTTP (`X-Reins-Degraded`, the OpenAI `reins` object, `/v1/providers`,
//! `/metrics`); config errors for the degradation keys.

mod degradation_support;
mod pipeline_support;

use axum::http::StatusCode;
use degradation_support::*;
use pipeline_support::{host, host_err, refund_schema, script, sidecar};
use reins::Host;
use reins::pipeline::{Request, RunError, RunResult, RunStatus};
use reins::server::{self, AppState};
use reins_testing::model::{Step, Upstream, server_error};
use reins_testing::plugins;
use serde_json::{Value, json};
use std::sync::Arc;

const STATIC: &str = "degraded = { answer = { amount = 0, currency = \"EUR\", reason = \"refunds are reviewed by hand right now\" }, \
     message = \"Our assistant is offline; this is a placeholder, not a decision on your refund.\" }";

fn pipeline(name: &str, extra: &str) -> String {
    format!(
        "[pipelines.{name}]\nmodel = \"llm\"\nsystem_prompt = \"Answer with the refund as JSON.\"\nschema = '{}'\n{extra}\n\n",
        refund_schema()
    )
}

fn request(text: &str) -> Request {
    Request::text(text)
}

fn steps(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn errors(r: &RunResult) -> Vec<String> {
    match &r.error {
        Some(RunError::ModelUnavailable { errors }) => errors.clone(),
        other => panic!("expected model unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_hanging_primary_falls_back_within_the_deadline() {
    let primary = Upstream::always(Step::Hang).await;
    let backup = Upstream::always(Step::Answer(refund(12.5))).await;
    let plugins = plugins::plugins_dir(&[]);
    let body = openai(
        "llm",
        &primary.base_url(),
        "timeout_ms = 300\nmax_retries = 1",
    ) + &openai("backup", &backup.base_url(), "max_retries = 0")
        + &pipeline("p", "fallbacks = [\"backup\"]\ndeadline_ms = 30000");
    let host = host(plugins.path(), &body, &script(vec![])).await;
    let r = host.run("p", request("refund 12.50 EUR")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(
        (r.served_by.as_deref(), r.degraded, r.notice.as_deref()),
        (Some("backup"), true, None)
    );
    // The primary got its call and one retry, each cut by its own timeout;
    // only then did the backup get the request.
    assert_eq!((primary.count(), backup.count()), (2, 1));
    assert!(backup.seen()[0].at >= primary.seen()[1].at);
    assert_eq!(
        model_steps(&r),
        steps(&[
            ("llm", "failed: timeout, 2 tries"),
            ("backup", "ok (flaky-model)")
        ])
    );
    assert!(r.duration_us < 30_000_000);
}

#[tokio::test]
async fn the_deadline_covers_every_attempt_retry_and_fallback() {
    let primary = Upstream::always(Step::Hang).await;
    let backup = Upstream::always(Step::Hang).await;
    let plugins = plugins::plugins_dir(&[]);
    // Each provider alone would wait a minute, three times; the run has 400 ms.
    let slow = "timeout_ms = 60000\nmax_retries = 2";
    let body = openai("llm", &primary.base_url(), slow)
        + &openai("backup", &backup.base_url(), slow)
        + &pipeline(
            "p",
            &format!("fallbacks = [\"backup\"]\ndeadline_ms = 400\n{STATIC}"),
        )
        + &pipeline("bare", "fallbacks = [\"backup\"]\ndeadline_ms = 400");
    let host = host(plugins.path(), &body, &script(vec![])).await;

    let r = host.run("p", request("refund 12.50 EUR")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!((r.served_by.as_deref(), r.degraded), (Some("static"), true));
    assert_eq!(
        r.notice.as_deref(),
        Some("Our assistant is offline; this is a placeholder, not a decision on your refund.")
    );
    assert_eq!(
        r.output.as_ref().map(|o| o["amount"].clone()),
        Some(json!(0))
    );
    // The primary's one call was cut at the deadline; no retry, and the
    // backup was never called.
    assert_eq!((primary.count(), backup.count()), (1, 0));
    assert_eq!(
        model_steps(&r),
        steps(&[
            ("llm", "failed: deadline"),
            ("backup", "skipped: deadline passed"),
            ("static", "degraded answer"),
        ])
    );
    assert!(r.duration_us < 60_000_000);
    assert_eq!(r.tokens.total, 0);

    // With nothing local to serve: model unavailable, saying why.
    let r = host.run("bare", request("refund 12.50 EUR")).await;
    let errors = errors(&r);
    assert!(
        errors[0].contains("the run's deadline passed"),
        "{errors:?}"
    );
    assert!(
        errors[1].contains("not called, the run's deadline (400 ms) had passed"),
        "{errors:?}"
    );
    assert_eq!(r.exit_code(), 5);
    assert_eq!(backup.count(), 0);
}

#[tokio::test]
async fn cached_answers_serve_when_every_provider_is_down_flagged_degraded() {
    let primary = Upstream::always(Step::Answer(refund(12.5))).await;
    let backup = Upstream::always(server_error()).await;
    let plugins = plugins::plugins_dir(&[]);
    let body = openai("llm", &primary.base_url(), "max_retries = 0")
        + &openai("backup", &backup.base_url(), "max_retries = 0")
        + &pipeline("p", "fallbacks = [\"backup\"]\ncache = \"read-write\"");
    let host = host(plugins.path(), &body, &script(vec![])).await;
    let cache = host
        .pipeline("p")
        .and_then(|p| p.cache())
        .expect("cache on");

    let fresh = host.run("p", request("refund 12.50 EUR")).await;
    assert_eq!(fresh.status, RunStatus::Completed, "{:?}", fresh.error);
    assert_eq!(
        (fresh.served_by.as_deref(), fresh.degraded),
        (Some("llm"), false)
    );
    assert_eq!(cache.len(), 1);

    // Every provider down: the cached answer, validated again, flagged.
    primary.set_always(server_error());
    let cached = host
        .run(
            "p",
            request("refund 12.50 EUR").with_metadata(json!({"tenant": "other"})),
        )
        .await;
    assert_eq!(cached.status, RunStatus::Completed, "{:?}", cached.error);
    assert_eq!(
        (cached.served_by.as_deref(), cached.degraded),
        (Some("cache"), true)
    );
    assert_eq!(cached.output, fresh.output);
    assert_eq!(cached.attempts[0].provider, "cache");
    assert_eq!(cached.tokens.total, 0);
    let model = model_steps(&cached);
    assert_eq!(
        model[..2],
        steps(&[("llm", "failed: status"), ("backup", "failed: status")])[..]
    );
    assert!(
        model[2].0 == "cache" && model[2].1.starts_with("hit (") && model[2].1.contains("from llm"),
        "{model:?}"
    );
    assert!(
        cached
            .trace
            .iter()
            .any(|s| s.layer == "schema" && s.attempt == 1),
        "validated again"
    );
    assert_eq!((primary.count(), backup.count()), (2, 1));
    assert_eq!(cache.len(), 1, "a cached answer is not stored again");

    // Another request has no cached answer.
    let miss = host.run("p", request("refund 99 EUR")).await;
    assert!(
        errors(&miss)
            .iter()
            .any(|e| e == "cache: no answer stored for this request"),
        "{:?}",
        miss.error
    );
}

#[tokio::test]
async fn unvalidated_outputs_are_never_cached() {
    let invalid =
        json!({"amount": "12,50", "currency": "EUR", "reason": "damaged parcel"}).to_string();
    let up = Upstream::always(Step::Answer(invalid.clone())).await;
    let plugins = plugins::plugins_dir(&[]);
    let body = openai("llm", &up.base_url(), "max_retries = 0")
        + &pipeline("p", "cache = \"read-write\"\nrepair = { max_attempts = 2 }")
        + &pipeline("ro", "cache = \"read\"");
    let host = host(plugins.path(), &body, &script(vec![])).await;
    let cache = |name: &str| {
        host.pipeline(name)
            .and_then(|p| p.cache())
            .expect("cache on")
    };

    let r = host.run("p", request("refund 12.50 EUR")).await;
    assert!(
        matches!(r.error, Some(RunError::ValidationFailed { .. })),
        "{:?}",
        r.error
    );
    assert_eq!(cache("p").len(), 0, "a failed run stores nothing");

    // Repaired: only the validated second answer is stored and served.
    up.set(move |n| {
        if n % 2 == 0 {
            Step::Answer(invalid.clone())
        } else {
            Step::Answer(refund(12.5))
        }
    });
    let r = host.run("p", request("refund 12.50 EUR")).await;
    assert_eq!(
        (r.status, r.attempts.len()),
        (RunStatus::Completed, 2),
        "{:?}",
        r.error
    );
    assert_eq!(cache("p").len(), 1);
    up.set_always(server_error());
    let r = host.run("p", request("refund 12.50 EUR")).await;
    assert_eq!(r.served_by.as_deref(), Some("cache"), "{:?}", r.error);
    assert_eq!(
        r.output.as_ref().map(|o| o["amount"].clone()),
        Some(json!(12.5))
    );

    // `read` serves but never stores.
    up.set_always(Step::Answer(refund(3.0)));
    assert_eq!(
        host.run("ro", request("refund 3 EUR")).await.status,
        RunStatus::Completed
    );
    assert_eq!(cache("ro").len(), 0);
}

#[tokio::test]
async fn cached_and_static_answers_are_validated_by_the_current_validators() {
    let up = Upstream::always(Step::Answer(refund(50.0))).await;
    let plugins = plugins::plugins_dir(&["ranges"]);
    sidecar(
        plugins.path(),
        "ranges",
        "[config]\nrules = [{ path = \"/amount\", max = 100 }]\n",
    );
    let static_50 = "degraded = { answer = '{\"amount\": 40, \"currency\": \"EUR\", \"reason\": \"standard refund\"}' }";
    let body = openai("llm", &up.base_url(), "max_retries = 0")
        + &pipeline(
            "p",
            &format!("validators = [\"ranges\"]\ncache = \"read-write\"\n{static_50}"),
        );
    let host = host(plugins.path(), &body, &script(vec![])).await;
    assert_eq!(
        host.run("p", request("refund 50 EUR"))
            .await
            .served_by
            .as_deref(),
        Some("llm")
    );
    up.set_always(server_error());

    // The validators tighten (a hot reload): 50 and 40 are now out of range,
    // so neither the cached nor the static answer may be served.
    sidecar(
        plugins.path(),
        "ranges",
        "[config]\nrules = [{ path = \"/amount\", max = 10 }]\n",
    );
    host.plugins().reload().expect("reload");
    let r = host.run("p", request("refund 50 EUR")).await;
    assert_eq!(
        errors(&r)[1..],
        [
            "cache: the stored answer no longer passes validation".to_owned(),
            "static: the degraded answer does not pass validation".to_owned(),
        ]
    );
    let passed_over: Vec<_> = model_steps(&r)
        .into_iter()
        .filter(|(_, s)| s.starts_with("passed over"))
        .collect();
    assert_eq!(passed_over.len(), 2);
    assert!(
        r.trace
            .iter()
            .any(|s| s.layer == "validator" && s.name == "ranges")
    );

    // Loosened to 45: the cached 50 still fails, the static 40 passes, with
    // the default notice (the pipeline set no message).
    sidecar(
        plugins.path(),
        "ranges",
        "[config]\nrules = [{ path = \"/amount\", max = 45 }]\n",
    );
    host.plugins().reload().expect("reload");
    let r = host.run("p", request("refund 50 EUR")).await;
    assert_eq!(
        (r.served_by.as_deref(), r.notice.as_deref()),
        (
            Some("static"),
            Some(reins::config::default_degraded_message().as_str())
        )
    );
}

#[tokio::test]
async fn config_errors_name_the_degradation_key() {
    let plugins = plugins::plugins_dir(&[]);
    let up = "http://127.0.0.1:9/v1";
    let e = host_err(
        plugins.path(),
        &(openai("llm", up, "breaker = { failure_rate = 0.0 }") + &pipeline("p", "")),
    )
    .await;
    assert!(
        e.contains("`providers.llm.breaker.failure_rate`: must be in (0, 1]"),
        "{e}"
    );
    let e = host_err(
        plugins.path(),
        &(openai("llm", up, "breaker = { failure_rat = 0.5 }") + &pipeline("p", "")),
    )
    .await;
    assert!(
        e.contains("unknown field `failure_rat`") && e.contains("line "),
        "{e}"
    );
    let e = host_err(
        plugins.path(),
        &(openai("llm", up, "") + &pipeline("p", "cache = \"sometimes\"")),
    )
    .await;
    assert!(e.contains("sometimes") && e.contains("read-write"), "{e}");
    let e = host_err(
        plugins.path(),
        &(openai("llm", up, "") + &pipeline("p", "degraded = { answer = { amount = \"none\" } }")),
    )
    .await;
    assert!(
        e.contains("`pipelines.p.degraded.answer`: does not match the pipeline's schema"),
        "{e}"
    );
    let e = host_err(
        plugins.path(),
        &(openai("llm", up, "") + &pipeline("p", "degraded = { answer = 1, mesage = \"x\" }")),
    )
    .await;
    assert!(e.contains("unknown field `mesage`"), "{e}");
    let e = host_err(
        plugins.path(),
        &(openai("cache", up, "") + &pipeline("p", "").replace("\"llm\"", "\"cache\"")),
    )
    .await;
    assert!(
        e.contains("`providers.cache`") && e.contains("choose another provider name"),
        "{e}"
    );
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    reins_testing::server::call(
        state,
        method,
        uri,
        &[],
        body.map(|b| b.to_string().into_bytes()),
        1 << 20,
    )
    .await
}

#[tokio::test]
async fn http_answers_say_degraded_and_providers_show_their_breakers() {
    server::install_metrics();
    let down = Upstream::always(server_error()).await;
    let up = Upstream::always(Step::Answer(refund(7.0))).await;
    let plugins = plugins::plugins_dir(&[]);
    let body = openai(
        "deg-down",
        &down.base_url(),
        "max_retries = 0\nbreaker = { min_calls = 2, cooldown_ms = 60000 }",
    ) + &openai("deg-up", &up.base_url(), "max_retries = 0")
        + &pipeline("deg-static", STATIC).replace("\"llm\"", "\"deg-down\"")
        + &pipeline("deg-healthy", "").replace("\"llm\"", "\"deg-up\"");
    let host = Host::builder()
        .config_str(
            pipeline_support::config(plugins.path(), &body),
            plugins.path(),
        )
        .build()
        .await
        .expect("host");
    let settings = reins::server::ServerSettings::from_config(host.boot()).expect("[server]");
    let state = AppState::new(Arc::new(host), &settings).expect("state");
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "refund 7 EUR"}]});

    // Healthy: no degraded header.
    let (s, h, b) = call(
        &state,
        "POST",
        "/v1/chat/completions",
        Some(chat("deg-healthy")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(h.get("x-reins-degraded").is_none());
    assert_eq!(
        (
            b["reins"]["degraded"].clone(),
            b["reins"]["served_by"].clone()
        ),
        (json!(false), json!("deg-up"))
    );

    // Down: the static answer, flagged, with its honest message.
    for _ in 0..2 {
        let (s, h, b) = call(
            &state,
            "POST",
            "/v1/chat/completions",
            Some(chat("deg-static")),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(
            h.get("x-reins-degraded").and_then(|v| v.to_str().ok()),
            Some("static")
        );
        assert_eq!(b["reins"]["degraded"], json!(true));
        assert_eq!(b["reins"]["served_by"], json!("static"));
        assert!(
            b["reins"]["notice"]
                .as_str()
                .is_some_and(|n| n.contains("not a decision")),
            "{b}"
        );
        let content: Value =
            serde_json::from_str(b["choices"][0]["message"]["content"].as_str().unwrap_or(""))
                .expect("JSON");
        assert_eq!(content["amount"], json!(0));
    }
    assert_eq!(down.count(), 2);

    // Two failures of two calls opened deg-down's breaker.
    let (s, _, b) = call(&state, "GET", "/v1/providers", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let find = |name: &str| {
        b["data"]
            .as_array()
            .and_then(|d| d.iter().find(|p| p["name"] == name))
            .cloned()
            .unwrap_or_default()
    };
    let down_state = find("deg-down");
    assert_eq!(
        (down_state["state"].clone(), down_state["kind"].clone()),
        (json!("open"), json!("openai"))
    );
    assert_eq!(down_state["breaker"]["trips"], json!(1));
    assert_eq!(down_state["breaker"]["failures"], json!(2));
    assert!(
        down_state["breaker"]["retry_in_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0 && ms <= 60_000)
    );
    assert_eq!(down_state["breaker"]["settings"]["min_calls"], json!(2));
    assert_eq!(find("deg-up")["state"], json!("closed"));
    assert_eq!(
        find("model")["breaker"]["enabled"],
        json!(false),
        "a script has no breaker"
    );

    let (_, _, text) = call(&state, "GET", "/metrics", None).await;
    let text = text.as_str().unwrap_or_default().to_owned();
    for line in [
        "reins_breaker_state{provider=\"deg-down\"} 2",
        "reins_breaker_state{provider=\"deg-up\"} 0",
        "reins_breaker_trips_total{provider=\"deg-down\"} 1",
        "reins_fallback_uses_total{pipeline=\"deg-static\",step=\"static\"} 2",
        "reins_provider_calls_total{provider=\"deg-down\",outcome=\"status\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no `{line}` in /metrics:\n{text}"
        );
    }
}

#[tokio::test]
async fn cache_and_retry_metrics_are_exported() {
    server::install_metrics();
    let up = Upstream::steps(vec![
        server_error(),
        Step::Answer(refund(2.0)),
        server_error(),
    ])
    .await;
    let plugins = plugins::plugins_dir(&[]);
    let body = openai("met-llm", &up.base_url(), "max_retries = 1")
        + &pipeline("met-p", "cache = \"read-write\"").replace("\"llm\"", "\"met-llm\"");
    let host = Arc::new(host(plugins.path(), &body, &script(vec![])).await);
    let state = AppState::new(
        host.clone(),
        &reins::server::ServerSettings::from_config(host.boot()).expect("[server]"),
    )
    .expect("state");
    // A retry then an answer (stored); two failures then the cache; two failures then a miss.
    assert_eq!(
        host.run("met-p", request("refund 2 EUR"))
            .await
            .served_by
            .as_deref(),
        Some("met-llm")
    );
    assert_eq!(
        host.run("met-p", request("refund 2 EUR"))
            .await
            .served_by
            .as_deref(),
        Some("cache")
    );
    assert!(
        host.run("met-p", request("refund 3 EUR"))
            .await
            .error
            .is_some()
    );
    assert_eq!(up.count(), 6);
    let (_, _, text) = call(&state, "GET", "/metrics", None).await;
    let text = text.as_str().unwrap_or_default().to_owned();
    for line in [
        "reins_provider_retries_total{provider=\"met-llm\",reason=\"status\"} 3",
        "reins_cache_hits_total{pipeline=\"met-p\"} 1",
        "reins_cache_misses_total{pipeline=\"met-p\"} 1",
        "reins_cache_writes_total{pipeline=\"met-p\"} 1",
        "reins_fallback_uses_total{pipeline=\"met-p\",step=\"cache\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no `{line}` in /metrics:\n{text}"
        );
    }
}

/// The response cache is indexed in the state store: an answer cached by
/// one host serves another host on the same store (a restart, or another
/// node) when every provider is down.
#[tokio::test(flavor = "multi_thread")]
async fn a_cached_answer_serves_another_host_on_the_same_store() {
    let up = Upstream::always(Step::Answer(refund(12.5))).await;
    let down = Upstream::always(server_error()).await;
    let plugins = plugins::plugins_dir(&[]);
    let body = |url: &str| {
        openai("llm", url, "max_retries = 0") + &pipeline("p", "cache = \"read-write\"")
    };
    let first = host(plugins.path(), &body(&up.base_url()), &script(vec![])).await;
    let fresh = first.run("p", request("refund 12.50 EUR")).await;
    assert_eq!(fresh.status, RunStatus::Completed, "{:?}", fresh.error);
    drop(first);
    // The write-through is off the request path: wait until it landed.
    let db = rusqlite::Connection::open(plugins.path().join("reins-state.db")).expect("state file");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while db
        .query_row("SELECT COUNT(*) FROM response_cache", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_or(0)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the answer was never indexed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let second = host(plugins.path(), &body(&down.base_url()), &script(vec![])).await;
    let cache = second
        .pipeline("p")
        .and_then(|p| p.cache())
        .expect("cache on");
    assert_eq!(cache.len(), 0, "a new host starts with nothing in memory");
    let served = second.run("p", request("refund 12.50 EUR")).await;
    assert_eq!(served.status, RunStatus::Completed, "{:?}", served.error);
    assert_eq!(
        (served.served_by.as_deref(), served.degraded),
        (Some("cache"), true)
    );
    assert_eq!(served.output, fresh.output);
    assert_eq!(down.count(), 1, "the model was asked first");
    assert_eq!(cache.len(), 1, "the stored answer is kept in memory too");
    let other = second.run("p", request("refund 99 EUR")).await;
    assert_eq!(
        other.status,
        RunStatus::Failed,
        "another request has no cached answer"
    );
}
