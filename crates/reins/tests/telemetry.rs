//! OpenTelemetry, end to end: a real `reins serve` exports over OTLP/HTTP
//! (the `opentelemetry-otlp` exporter) to a collector on loopback that
//! decodes the protobuf with the `opentelemetry-proto` definitions
//! (`reins_testing::otlp`). What an operator sees in the tracing backend:
//!
//! - one tree per run, under the caller's `traceparent`: the run's span,
//!   and under it every plugin call (with the plugin's name, digest and
//!   isolation), both model calls of a run that was repaired, the repair,
//!   the gate's decision, the checkpoints and the webhook's `execute_tool`;
//! - model calls in the GenAI conventions (`gen_ai.*`);
//! - the `traceparent` each upstream and the webhook received names the
//!   span of the call that sent it;
//! - no prompt or completion text unless `capture_content = true`;
//! - the `/metrics` metrics, over OTLP too;
//! - JSON log lines that carry the run's trace and span ids;
//! - a dead or stalled collector costs the runs nothing: spans are dropped
//!   and counted.

use reins_testing::config::Config;
use reins_testing::model::{Seen, Step, Upstream, completion, ok, refund_call, server_error};
use reins_testing::otlp::{Collector, SpanRecord};
use reins_testing::webhook::Sink;
use reins_testing::{plugins, server};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const SECRET: &str = "PURPLE-OCTOPUS-42";
const WAIT: Duration = Duration::from_secs(20);

fn traceparent() -> String {
    format!("00-{TRACE}-{CALLER_SPAN}-01")
}

/// A model that first proposes a refund whose arguments break the tool's
/// schema (a repair), then, asked again, a valid one (gated, then sent to
/// the webhook).
fn refunds_model(seen: &Seen) -> Step {
    let repairing = seen.body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "assistant"));
    if !repairing {
        let bad = json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_0", "type": "function",
            "function": {"name": "issue_refund", "arguments": "{\"order\": 7, \"amount\": 20}"}
        }]});
        ok(&completion(bad))
    } else {
        ok(&completion(refund_call("A-1", 20.0)))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    served: server::Served,
    upstream: Upstream,
    sink: Sink,
    /// Set: the upstream's next answer is a 500 (then it answers again).
    fail_once: Arc<AtomicBool>,
}

/// `reins serve` on the refunds pipeline, with `telemetry` as its
/// `[telemetry]` table and `env` for the child.
async fn fixture(telemetry: &str, env: &[(&str, &str)], log: Option<&std::path::Path>) -> Fixture {
    let fail_once = Arc::new(AtomicBool::new(false));
    let failing = fail_once.clone();
    let upstream = Upstream::replying(move |seen| {
        if failing.swap(false, Ordering::SeqCst) {
            server_error()
        } else {
            refunds_model(seen)
        }
    })
    .await;
    let sink = Sink::start().await;
    let dir = plugins::plugins_dir(&["tool-manifest", "spend-limit"]);
    plugins::refund_sidecars(dir.path(), 100.0, 1000.0);
    let config = Config::new()
        .plugins_dir(".")
        .test_cache()
        .openai("up", &upstream.base_url(), "up-model", "max_retries = 0")
        .openai(
            "backup",
            &upstream.base_url(),
            "up-model",
            "max_retries = 0",
        )
        .table(&format!(
            r#"[pipelines.refunds]
model = "up"
fallbacks = ["backup"]
constraints = "tool-manifest"
gates = ["spend-limit"]

[pipelines.refunds.repair]
max_attempts = 2

[pipelines.refunds.executors.issue_refund]
kind = "webhook"
url = "{}"
timeout_ms = 2000
retries = 0

{telemetry}
"#,
            sink.url()
        ));
    let path = config.write(dir.path());
    let served = server::serve_env(&path, &[], env, log);
    Fixture {
        _dir: dir,
        served,
        upstream,
        sink,
        fail_once,
    }
}

async fn run(base: &str, traceparent: Option<&str>) -> (reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/v1/pipelines/refunds/runs"))
        .json(&json!({"input": format!("Refund order A-1 please. My passphrase is {SECRET}.")}));
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let response = request.send().await.expect("run");
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["status"], "completed", "{body}");
    (headers, body)
}

fn named<'a>(spans: &'a [SpanRecord], name: &str) -> Vec<&'a SpanRecord> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn one<'a>(spans: &'a [SpanRecord], name: &str) -> &'a SpanRecord {
    let found = named(spans, name);
    assert_eq!(
        found.len(),
        1,
        "one span `{name}` expected: {:#?}",
        names(spans)
    );
    found[0]
}

fn names(spans: &[SpanRecord]) -> Vec<String> {
    spans
        .iter()
        .map(|s| format!("{} ({} <- {})", s.name, s.span_id, s.parent_span_id))
        .collect()
}

fn has_run(spans: &[SpanRecord]) -> bool {
    spans.iter().any(|s| s.name == "reins.run refunds")
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_one_tree_under_the_callers_span_down_to_the_webhook() {
    let collector = Collector::start().await;
    let endpoint = collector.endpoint();
    let f = fixture(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_SERVICE_NAME", "reins-under-test"),
        ],
        None,
    )
    .await;
    let (headers, body) = run(&f.served.base, Some(&traceparent())).await;
    assert_eq!(body["attempts"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(
        headers
            .get("x-reins-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(TRACE),
        "the answer names the run's trace"
    );
    let spans = collector.wait_for_spans(has_run, WAIT).await;

    // One trace, rooted at the caller's span.
    assert!(
        spans.iter().all(|s| s.trace_id == TRACE),
        "{:#?}",
        names(&spans)
    );
    let run = one(&spans, "reins.run refunds");
    assert_eq!(run.parent_span_id, CALLER_SPAN);
    assert_eq!(run.kind, SERVER);
    assert_eq!(run.attr_str("reins.status"), Some("completed"));
    assert_eq!(run.attr_i64("reins.attempts"), Some(2));
    assert_eq!(run.attr_str("reins.run_id"), body["run_id"].as_str());
    assert_eq!(run.resource["service.name"], "reins-under-test");
    for s in spans.iter().filter(|s| s.span_id != run.span_id) {
        assert_eq!(
            s.parent_span_id, run.span_id,
            "`{}` is not a child of the run",
            s.name
        );
    }

    // Two model calls in the GenAI conventions; each upstream request
    // carried its own span's id.
    let calls = named(&spans, "chat up-model");
    assert_eq!(calls.len(), 2, "{:#?}", names(&spans));
    for call in &calls {
        assert_eq!(call.kind, CLIENT);
        assert_eq!(call.attr_str("gen_ai.operation.name"), Some("chat"));
        assert_eq!(call.attr_str("gen_ai.provider.name"), Some("openai"));
        assert_eq!(call.attr_str("gen_ai.request.model"), Some("up-model"));
        assert_eq!(call.attr_str("gen_ai.response.model"), Some("test"));
        assert_eq!(call.attr_i64("gen_ai.usage.input_tokens"), Some(10));
        assert_eq!(call.attr_i64("gen_ai.usage.output_tokens"), Some(5));
        assert_eq!(
            call.attributes["gen_ai.response.finish_reasons"],
            json!(["stop"])
        );
    }
    let mut sent: Vec<String> = f
        .upstream
        .seen()
        .iter()
        .map(|s| s.header("traceparent").unwrap_or("none").to_owned())
        .collect();
    let mut expected: Vec<String> = calls
        .iter()
        .map(|c| format!("00-{TRACE}-{}-01", c.span_id))
        .collect();
    sent.sort();
    expected.sort();
    assert_eq!(sent, expected, "each model request names its call's span");

    // The repair, the plugins (name, digest, isolation), the gate's decision, a checkpoint.
    let repair = spans
        .iter()
        .find(|s| s.attr_str("reins.layer") == Some("repair"))
        .unwrap_or_else(|| panic!("no repair span: {:#?}", names(&spans)));
    assert_eq!(repair.attr_i64("reins.attempt"), Some(1));
    let gate = one(&spans, "gate spend-limit");
    assert_eq!(gate.attr_str("reins.gate.decision"), Some("allow"));
    assert_eq!(gate.attr_str("reins.plugin.outcome"), Some("ok"));
    let constraints = one(&spans, "constraints tool-manifest");
    let digest = constraints
        .attr_str("reins.plugin.digest")
        .unwrap_or_default();
    assert!(
        digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()),
        "{digest}"
    );
    assert!(constraints.attr_str("reins.plugin.isolation").is_some());
    assert!(
        !named(&spans, "reins.checkpoint").is_empty(),
        "{:#?}",
        names(&spans)
    );

    // The webhook: one execution span, whose id the webhook received, with
    // the idempotency key it received.
    let exec = one(&spans, "execute_tool issue_refund");
    assert_eq!(exec.kind, CLIENT);
    let delivered = f.sink.deliveries();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].traceparent,
        format!("00-{TRACE}-{}-01", exec.span_id)
    );
    assert_eq!(
        exec.attr_str("reins.idempotency_key"),
        Some(delivered[0].key.as_str())
    );
    assert_eq!(exec.attr_str("gen_ai.tool.name"), Some("issue_refund"));

    // No conversation text by default.
    for s in &spans {
        assert!(
            !s.attributes.contains_key("gen_ai.input.messages")
                && !s.attributes.contains_key("gen_ai.output.messages"),
            "`{}` records the conversation without capture_content",
            s.name
        );
        let all = serde_json::to_string(&s.attributes).unwrap_or_default();
        assert!(
            !all.contains(SECRET),
            "`{}` records prompt text: {all}",
            s.name
        );
    }

    // The same metrics as /metrics, over OTLP.
    let requests = collector
        .wait_for_metric("reins_requests_total", WAIT)
        .await;
    assert!(
        requests
            .points
            .iter()
            .any(|p| p.attr_str("pipeline") == Some("refunds")
                && p.attr_str("status") == Some("completed")
                && p.value >= 1.0),
        "{:?}",
        requests.points
    );
    let latency = collector
        .wait_for_metric("reins_model_latency_seconds", WAIT)
        .await;
    assert_eq!(latency.kind, "histogram");
    assert!(latency.points.iter().map(|p| p.count).sum::<u64>() >= 2);
}

/// The headers of the collector's requests to `path` (the last one).
fn headers_to(collector: &Collector, path: &str) -> axum::http::HeaderMap {
    collector
        .requests()
        .into_iter()
        .rev()
        .find(|(p, _)| p.ends_with(path))
        .map(|(_, h)| h)
        .unwrap_or_else(|| panic!("no request to {path}: {:?}", collector.requests()))
}

fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The config's headers win over `OTEL_EXPORTER_OTLP_HEADERS`; the
/// environment's other headers still go.
const ENV_HEADERS: (&str, &str) = (
    "OTEL_EXPORTER_OTLP_HEADERS",
    "authorization=Bearer env-token,x-team=ml",
);
const CONFIG_HEADERS: &str = "headers = { authorization = \"Bearer team-token\" }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_content_records_the_conversation_and_only_then() {
    let collector = Collector::start().await;
    let f = fixture(
        &format!(
            "[telemetry]\nendpoint = \"{}\"\nschedule_delay_ms = 100\ncapture_content = true\nmetrics = false\n{CONFIG_HEADERS}",
            collector.endpoint()
        ),
        &[ENV_HEADERS],
        None,
    )
    .await;
    // No traceparent: the run is a root of its own trace.
    let (headers, _) = run(&f.served.base, None).await;
    let spans = collector.wait_for_spans(has_run, WAIT).await;
    let run = one(&spans, "reins.run refunds");
    assert_eq!(run.parent_span_id, "");
    assert_eq!(
        headers
            .get("x-reins-trace-id")
            .and_then(|v| v.to_str().ok()),
        Some(run.trace_id.as_str())
    );
    let calls = named(&spans, "chat up-model");
    assert_eq!(calls.len(), 2);
    let input = calls[0]
        .attr_str("gen_ai.input.messages")
        .unwrap_or_default();
    let messages: Value = serde_json::from_str(input).expect("input messages are JSON");
    assert!(messages.to_string().contains(SECRET), "{messages}");
    let output = calls[1]
        .attr_str("gen_ai.output.messages")
        .unwrap_or_default();
    assert!(output.contains("issue_refund"), "{output}");
    let sent = headers_to(&collector, "/v1/traces");
    assert_eq!(header(&sent, "authorization"), Some("Bearer team-token"));
    assert_eq!(header(&sent, "x-team"), Some("ml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_go_over_grpc_too() {
    let collector = Collector::start().await;
    let f = fixture(
        &format!(
            "[telemetry]\nprotocol = \"grpc\"\nendpoint = \"{}\"\nschedule_delay_ms = 100\nmetrics_interval_ms = 300\n{CONFIG_HEADERS}",
            collector.grpc_endpoint()
        ),
        &[ENV_HEADERS],
        None,
    )
    .await;
    run(&f.served.base, Some(&traceparent())).await;
    let spans = collector.wait_for_spans(has_run, WAIT).await;
    let run = one(&spans, "reins.run refunds");
    assert_eq!(
        (run.trace_id.as_str(), run.parent_span_id.as_str()),
        (TRACE, CALLER_SPAN)
    );
    assert_eq!(named(&spans, "chat up-model").len(), 2);
    let sent = headers_to(&collector, "TraceService/Export");
    assert_eq!(header(&sent, "authorization"), Some("Bearer team-token"));
    assert_eq!(header(&sent, "x-team"), Some("ml"));
    let requests = collector
        .wait_for_metric("reins_requests_total", WAIT)
        .await;
    assert!(
        requests.points.iter().any(|p| p.value >= 1.0),
        "{:?}",
        requests.points
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_runs_trace_and_span_ids() {
    let collector = Collector::start().await;
    let endpoint = collector.endpoint();
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("reins.log");
    // A first call that fails logs a warning inside the run.
    let f = fixture(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("REINS_LOG_FORMAT", "json"),
            ("REINS_LOG", "warn"),
        ],
        Some(&log),
    )
    .await;
    f.fail_once.store(true, Ordering::SeqCst);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/pipelines/refunds/runs", f.served.base))
        .header("traceparent", traceparent())
        .json(&json!({"input": "Refund order A-1"}))
        .send()
        .await
        .expect("run");
    let body: Value = response.json().await.expect("json");
    let spans = collector.wait_for_spans(has_run, WAIT).await;
    let run = one(&spans, "reins.run refunds");
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("model call failed"))
        })
        .unwrap_or_else(|| panic!("no warning in the log: {text}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["trace_id"], TRACE, "{failed}");
    assert_eq!(failed["span_id"], run.span_id.as_str(), "{failed}");
    assert_eq!(failed["run_id"], body["run_id"], "{failed}");
    assert!(
        failed["timestamp"]
            .as_str()
            .is_some_and(|t| t.contains('T'))
    );
}

/// `reins_telemetry_spans_dropped_total{reason}` once it counts a drop.
async fn wait_dropped(base: &str, reason: &str) -> f64 {
    let key = format!("reins_telemetry_spans_dropped_total{{reason=\"{reason}\"}}");
    server::metric_reaches(base, &key, 1.0, WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_drops_spans_and_counts_them_while_runs_go_on() {
    let dead = server::dead_url();
    let f = fixture(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "60000"),
        ],
        None,
    )
    .await;
    for _ in 0..3 {
        run(&f.served.base, Some(&traceparent())).await;
    }
    assert!(wait_dropped(&f.served.base, "export_failed").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_fills_the_queue_and_runs_go_on() {
    let stalled = reins_testing::otlp::stalled().await;
    // A queue of two: the first export hangs (the collector never
    // answers), so the spans of the next runs find the queue full.
    let f = fixture(
        &format!(
            "[telemetry]\nendpoint = \"{stalled}\"\nschedule_delay_ms = 20\nmax_queue_size = 2\nmax_export_batch_size = 2\ntimeout_ms = 30000\nmetrics = false\n"
        ),
        &[],
        None,
    )
    .await;
    for _ in 0..3 {
        run(&f.served.base, None).await;
    }
    assert!(wait_dropped(&f.served.base, "queue_full").await >= 1.0);
}
