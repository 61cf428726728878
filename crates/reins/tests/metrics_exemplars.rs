//! Exemplars on the latency histograms: a run made with a caller's
//! `traceparent` leaves its trace id on the buckets of
//! `reins_run_duration_seconds` and `reins_model_latency_seconds`, in the
//! OpenMetrics text a real `reins serve` answers to a Prometheus-style scrape
//! (read by the official Python client's parser), while a plain scrape
//! still gets text 0.0.4.

use reins_testing::config::Config;
use reins_testing::{plugins, server};
use serde_json::{Value, json};

/// The caller's trace; the run's span is a child of `SPAN` in it.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";
/// Each model call takes this long, so both histograms have a bucket
/// above the smallest to find the exemplar in.
const DELAY_MS: u64 = 300;

fn config() -> Config {
    Config::new()
        .plugins_dir(".")
        .test_cache()
        .scripted(
            "slow-model",
            &format!("[ {{ content = {{ answer = 7 }}, delay_ms = {DELAY_MS} }} ]"),
        )
        .table("[pipelines.traced]\nmodel = \"slow-model\"\n")
}

async fn run(client: &reqwest::Client, base: &str, traceparent: Option<&str>) -> Value {
    let mut req = client
        .post(format!("{base}/v1/pipelines/traced/runs"))
        .json(&json!({"input": "how much?"}));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = req.send().await.expect("run request");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.expect("run json")
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_buckets_link_to_the_callers_trace_in_openmetrics() {
    let dir = plugins::plugins_dir(&[]);
    let served = server::serve(&config().write(dir.path()));
    let client = reqwest::Client::new();

    let traced = run(
        &client,
        &served.base,
        Some(&format!("00-{TRACE}-{SPAN}-01")),
    )
    .await;
    assert_eq!(traced["status"], "completed", "{traced}");
    // An untraced run in the same buckets leaves the traced exemplars alone.
    let untraced = run(&client, &served.base, None).await;
    assert_eq!(untraced["status"], "completed", "{untraced}");

    // A scrape that does not ask for OpenMetrics: text 0.0.4, as before.
    let resp = client
        .get(format!("{}/metrics", served.base))
        .send()
        .await
        .expect("plain scrape");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4")
    );
    let plain = resp.text().await.expect("plain text");
    assert!(!plain.contains("# EOF"), "{plain}");
    assert!(!plain.contains("trace_id"), "{plain}");
    for line in [
        "# TYPE reins_requests_total counter",
        "reins_requests_total{pipeline=\"traced\",status=\"completed\"} 2",
        "# TYPE reins_run_duration_seconds histogram",
        "# TYPE reins_model_latency_seconds histogram",
        "reins_run_duration_seconds_count{pipeline=\"traced\",status=\"completed\"} 2",
        "reins_model_latency_seconds_bucket{provider=\"slow-model\",le=\"+Inf\"} 2",
    ] {
        assert!(
            plain.lines().any(|l| l == line),
            "no `{line}` in /metrics:\n{plain}"
        );
    }
    assert!(
        !plain.contains("reins_model_latency_seconds{provider=\"slow-model\",quantile="),
        "model latency is a histogram now:\n{plain}"
    );

    // The OpenMetrics scrape, checked by prometheus_client's parser.
    let base = served.base.clone();
    let min_seconds = format!("{}", DELAY_MS as f64 / 1000.0);
    let out = tokio::task::spawn_blocking(move || {
        let script = plugins::repo_root().join("tests/clients/openmetrics_scrape.py");
        std::process::Command::new("python3")
            .arg(&script)
            .args([base.as_str(), TRACE, "traced", "slow-model", &min_seconds])
            .output()
            .expect("run python3")
    })
    .await
    .expect("scrape script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named"),
        "a client package is missing: pip install -r tests/clients/requirements.txt\n{stderr}"
    );
    assert!(
        out.status.success() && stdout.contains("4 passed, 0 failed"),
        "{stdout}\n{stderr}"
    );
}
