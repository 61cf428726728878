//! One provider against a flaky upstream on loopback: the circuit breaker
//! (opens on the failure rate, fails fast while open, half-open probes
//! decide), retries (bounded, `Retry-After` honoured, 4xx never retried,
//! broken connections retried) and what garbage, truncated bodies and slow
//! trickles become. Every assertion is on what the upstream saw, by count
//! and order; the only timings asserted are lower bounds a server asked for.

mod degradation_support;
mod pipeline_support;

use degradation_support::*;
use pipeline_support::{host, refund_schema, script};
use reins::Host;
use reins::pipeline::{Request, RunError, RunResult, RunStatus};
use reins::provider::CircuitState;
use reins_testing::model::{Step, Upstream, rate_limited, raw_200, server_error, status};
use reins_testing::plugins;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn pipeline(extra: &str) -> String {
    format!(
        "[pipelines.p]\nmodel = \"llm\"\nsystem_prompt = \"Answer with the refund as JSON.\"\nschema = '{}'\n{extra}\n",
        refund_schema()
    )
}

/// A host with provider `llm` on `up` (with `provider_extra`) and pipeline `p`.
async fn llm_host(
    plugins: &tempfile::TempDir,
    up: &Upstream,
    provider_extra: &str,
    pipeline_extra: &str,
) -> Host {
    let body = openai("llm", &up.base_url(), provider_extra) + &pipeline(pipeline_extra);
    host(plugins.path(), &body, &script(vec![json!(refund(1.0))])).await
}

async fn run(host: &Host) -> RunResult {
    host.run(
        "p",
        Request::text("My parcel arrived crushed; refund 12.50 EUR."),
    )
    .await
}

fn error_text(r: &RunResult) -> String {
    r.error
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// Polls `cond` every 20 ms for up to 10 s.
async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const BREAKER: &str = "max_retries = 0\nbreaker = { failure_rate = 0.5, min_calls = 4, window_ms = 60000, cooldown_ms = 1500, probes = 1 }";

#[tokio::test]
async fn the_breaker_opens_at_the_threshold_then_the_upstream_sees_nothing_until_a_probe_closes_it()
{
    let up = Upstream::always(server_error()).await;
    let plugins = plugins::plugins_dir(&[]);
    let host = llm_host(&plugins, &up, BREAKER, "").await;
    let breaker = host.breaker("llm").expect("provider llm");

    // Three failures: under min_calls, the breaker stays closed.
    for n in 1..=3 {
        let r = run(&host).await;
        assert!(
            matches!(r.error, Some(RunError::ModelUnavailable { .. })),
            "{:?}",
            r.error
        );
        assert_eq!(up.count(), n);
        assert_eq!(breaker.snapshot().state, CircuitState::Closed);
    }
    // The fourth makes 4 of 4: open.
    run(&host).await;
    assert_eq!(up.count(), 4);
    assert_eq!(breaker.snapshot().state, CircuitState::Open);
    assert_eq!(breaker.trips(), 1);

    // While open, runs fail fast and the upstream receives nothing.
    for _ in 0..5 {
        let r = run(&host).await;
        assert!(
            error_text(&r).contains("circuit breaker open (4 of the last 4 calls failed)"),
            "{}",
            error_text(&r)
        );
        assert_eq!(
            model_steps(&r),
            [("llm".to_owned(), "failed: breaker_open".to_owned())]
        );
    }
    assert_eq!(up.count(), 4, "an open breaker never touches the upstream");
    let snapshot = breaker.snapshot();
    assert_eq!(
        (snapshot.state, snapshot.rejected),
        (CircuitState::Open, 5),
        "all five were refused while open"
    );

    // After the cool-down, the upstream recovers (slowly). Four runs at once:
    // exactly one probe reaches it; the others are refused while it is out.
    up.set_always(Step::Slow(Duration::from_millis(300), refund(12.5)));
    wait_for("half-open", || {
        breaker.snapshot().state == CircuitState::HalfOpen
    })
    .await;
    let results = futures_util::future::join_all((0..4).map(|_| run(&host))).await;
    assert_eq!(up.count(), 5, "one probe, not four");
    let completed = results
        .iter()
        .filter(|r| r.status == RunStatus::Completed)
        .count();
    let refused = results
        .iter()
        .filter(|r| error_text(r).contains("circuit breaker open"))
        .count();
    assert_eq!((completed, refused), (1, 3));
    // The probe succeeded: closed, with a fresh window; calls flow again.
    assert_eq!(breaker.snapshot().state, CircuitState::Closed);
    assert_eq!(run(&host).await.status, RunStatus::Completed);
    assert_eq!(up.count(), 6);
    assert_eq!(breaker.trips(), 1);
}

#[tokio::test]
async fn a_failing_probe_reopens_the_breaker() {
    let up = Upstream::always(server_error()).await;
    let plugins = plugins::plugins_dir(&[]);
    let host = llm_host(&plugins, &up, BREAKER, "").await;
    let breaker = host.breaker("llm").expect("provider llm");
    for _ in 0..4 {
        run(&host).await;
    }
    assert_eq!((up.count(), breaker.trips()), (4, 1));
    wait_for("half-open", || {
        breaker.snapshot().state == CircuitState::HalfOpen
    })
    .await;

    // The probe goes through, fails, and opens the breaker for another cool-down.
    let r = run(&host).await;
    assert_eq!(
        model_steps(&r),
        [("llm".to_owned(), "failed: status".to_owned())]
    );
    assert_eq!(up.count(), 5);
    assert_eq!(breaker.snapshot().state, CircuitState::Open);
    assert_eq!(breaker.trips(), 2);
    for _ in 0..3 {
        assert!(error_text(&run(&host).await).contains("circuit breaker open"));
    }
    assert_eq!(up.count(), 5, "reopened: nothing reaches the upstream");
}

#[tokio::test]
async fn retry_after_is_honoured_in_milliseconds_and_seconds() {
    let plugins = plugins::plugins_dir(&[]);
    for (header, value, at_least) in [
        ("retry-after-ms", "300", Duration::from_millis(300)),
        ("Retry-After", "1", Duration::from_secs(1)),
    ] {
        let up = Upstream::steps(vec![
            rate_limited(header, value),
            Step::Answer(refund(12.5)),
        ])
        .await;
        let host = llm_host(&plugins, &up, "max_retries = 2", "").await;
        let r = run(&host).await;
        assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
        assert_eq!(
            model_steps(&r),
            [("llm".to_owned(), "ok (flaky-model, 2 tries)".to_owned())]
        );
        let seen = up.seen();
        assert_eq!(seen.len(), 2);
        // Backoff alone would have waited at most a millisecond.
        let gap = seen[1].at.duration_since(seen[0].at);
        assert!(
            gap >= at_least,
            "{header}: {value} but the retry came after {gap:?}"
        );
    }
}

#[tokio::test]
async fn retries_stop_at_the_bound_and_4xx_are_never_retried() {
    let plugins = plugins::plugins_dir(&[]);
    // 503 every time: one call and three retries, then the error.
    let up = Upstream::always(status(503, "{\"error\": \"overloaded\"}")).await;
    let host = llm_host(&plugins, &up, "max_retries = 3", "").await;
    let r = run(&host).await;
    assert_eq!(up.count(), 4);
    assert_eq!(
        model_steps(&r),
        [("llm".to_owned(), "failed: status, 4 tries".to_owned())]
    );
    assert!(
        error_text(&r).contains("HTTP 503") && error_text(&r).contains("overloaded"),
        "{}",
        error_text(&r)
    );

    // A 400, 404 or 422 will not change: one call each, and the breaker
    // (which would open on one failure) does not count them.
    for code in [400, 404, 422] {
        let up = Upstream::always(status(code, "{\"error\": \"bad request\"}")).await;
        let extra = "max_retries = 3\nbreaker = { failure_rate = 0.1, min_calls = 1 }";
        let host = llm_host(&plugins, &up, extra, "").await;
        for n in 1..=3 {
            let r = run(&host).await;
            assert!(
                error_text(&r).contains(&format!("HTTP {code}")),
                "{}",
                error_text(&r)
            );
            assert_eq!(up.count(), n, "HTTP {code} is not retried");
        }
        assert_eq!(
            host.breaker("llm").map(|b| b.snapshot().state),
            Some(CircuitState::Closed)
        );
    }

    // A 429 asking for longer than max_backoff_ms is not waited for: the
    // pipeline falls back at once.
    let up = Upstream::steps(vec![
        rate_limited("retry-after", "120"),
        Step::Answer(refund(1.0)),
    ])
    .await;
    let host = llm_host(
        &plugins,
        &up,
        "max_retries = 3\nmax_backoff_ms = 2000",
        "fallbacks = [\"model\"]",
    )
    .await;
    let r = run(&host).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(up.count(), 1);
    assert_eq!((r.served_by.as_deref(), r.degraded), (Some("model"), true));
}

#[tokio::test]
async fn resets_closed_connections_and_cut_bodies_are_retried() {
    let up = Upstream::steps(vec![
        Step::Reset,
        Step::Close,
        Step::Truncated(refund(12.5)),
        Step::Answer(refund(12.5)),
    ])
    .await;
    let plugins = plugins::plugins_dir(&[]);
    let host = llm_host(&plugins, &up, "max_retries = 3", "").await;
    let r = run(&host).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(up.count(), 4);
    assert_eq!(
        model_steps(&r),
        [("llm".to_owned(), "ok (flaky-model, 4 tries)".to_owned())]
    );

    // Without retries each is a provider error that says what broke.
    for step in [Step::Reset, Step::Close, Step::Truncated(refund(1.0))] {
        let up = Upstream::always(step.clone()).await;
        let host = llm_host(&plugins, &up, "max_retries = 0", "").await;
        let r = run(&host).await;
        assert!(
            error_text(&r).contains("provider `llm`: the connection broke"),
            "{step:?}: {}",
            error_text(&r)
        );
        assert_eq!(up.count(), 1);
    }
}

#[tokio::test]
async fn garbage_bodies_are_provider_errors_and_broken_answers_are_violations() {
    let plugins = plugins::plugins_dir(&[]);
    // Not a chat completion: an unreadable response (not retried, counted by the breaker).
    for body in [
        "<html>502 Bad Gateway</html>",
        "",
        "{\"choices\": [{\"message\": {\"content\": 42}}]}",
        "{\"choices\": [{\"message\": {\"content\": null, \"tool_calls\": [{\"function\": {}}]}}]}",
        "{\"choices\": [{\"message\": {\"content\": \"{}\"}}], \"usage\": {\"prompt_tokens\": \"many\"}}",
        "[1, 2, 3",
    ] {
        let up = Upstream::always(raw_200(body)).await;
        let host = llm_host(&plugins, &up, "max_retries = 2", "").await;
        let r = run(&host).await;
        assert_eq!(r.status, RunStatus::Failed);
        assert!(
            error_text(&r).contains("provider `llm`: unreadable response"),
            "{body}: {}",
            error_text(&r)
        );
        assert_eq!(up.count(), 1, "{body}: garbage is not retried");
        assert_eq!(host.breaker("llm").map(|b| b.snapshot().failures), Some(1));
    }
    // A well-formed completion whose answer is cut short or empty: a `json`
    // violation, sent back for repair like any other.
    let broken = "{\"amount\": 12.5, \"curr";
    let up = Upstream::steps(vec![
        Step::Answer(broken.to_owned()),
        Step::Answer(String::new()),
        Step::Answer(refund(12.5)),
    ])
    .await;
    let host = llm_host(
        &plugins,
        &up,
        "max_retries = 0",
        "repair = { max_attempts = 3 }",
    )
    .await;
    let r = run(&host).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.attempts.len(), 3);
    for a in &r.attempts[..2] {
        assert_eq!(a.violations[0].violation.code, "json", "{:?}", a.violations);
    }
    assert_eq!(r.attempts[0].raw, broken);
    assert_eq!(
        r.output.as_ref().map(|o| o["amount"].clone()),
        Some(Value::from(12.5))
    );
}

#[tokio::test]
async fn a_slow_trickle_times_out_as_a_whole() {
    // Headers at once, then a byte every 50 ms (~15 s for the body): the
    // total timeout (400 ms) ends it, not a per-read one.
    let up = Upstream::always(Step::Trickle {
        content: refund(1.0),
        every: Duration::from_millis(50),
    })
    .await;
    let plugins = plugins::plugins_dir(&[]);
    let host = llm_host(
        &plugins,
        &up,
        "max_retries = 0\ntimeout_ms = 400\nconnect_timeout_ms = 400",
        "",
    )
    .await;
    let r = run(&host).await;
    assert!(
        error_text(&r).contains("provider `llm`: no response within 400 ms"),
        "{}",
        error_text(&r)
    );
    assert_eq!(up.count(), 1);
    assert_eq!(
        model_steps(&r),
        [("llm".to_owned(), "failed: timeout".to_owned())]
    );
}
