//! The collector stand-in decodes what real OTLP exporters send: the
//! opentelemetry-otlp exporters over HTTP/protobuf and gRPC, driven by the
//! SDK's own providers, not messages this crate built for itself.
//!
//! The SDK's batch processor and periodic reader export from their own
//! threads with the blocking reqwest client, so the SDK side runs in
//! `spawn_blocking`: flushing blocks, and the collector on the runtime
//! must keep answering meanwhile.

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span as _, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry_otlp::{
    MetricExporter, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message as _;
use reins_testing::otlp::{Collector, SpanRecord, stalled};
use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// A parent and a child span with attributes of each type, through
/// `provider`, flushed before it returns.
fn parent_and_child(provider: SdkTracerProvider) {
    let tracer = provider.tracer("reins-test-scope");
    let parent = tracer.start("parent");
    let cx = opentelemetry::Context::current_with_span(parent);
    let mut child = tracer.start_with_context("child", &cx);
    child.set_attribute(KeyValue::new("gen_ai.request.model", "small-model"));
    child.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", 42_i64));
    child.set_attribute(KeyValue::new("reins.cached", true));
    child.set_attribute(KeyValue::new("reins.cost", 0.25));
    child.set_attribute(KeyValue::new(
        "reins.tags",
        opentelemetry::Value::Array(opentelemetry::Array::String(vec!["a".into(), "b".into()])),
    ));
    child.set_status(Status::error("upstream said no"));
    child.end();
    cx.span().end();
    provider.force_flush().expect("flush spans");
    provider.shutdown().expect("shut down the tracer provider");
}

fn resource() -> Resource {
    Resource::builder()
        .with_service_name("reins-otlp-test")
        .build()
}

/// The two spans of [`parent_and_child`], checked as the collector decoded them.
fn assert_parent_and_child(spans: &[SpanRecord]) {
    let parent = spans.iter().find(|s| s.name == "parent").expect("parent");
    let child = spans.iter().find(|s| s.name == "child").expect("child");
    assert_eq!(parent.trace_id.len(), 32, "{parent:?}");
    assert_eq!(parent.span_id.len(), 16, "{parent:?}");
    assert_eq!(parent.parent_span_id, "", "a root span has no parent");
    assert_eq!(child.trace_id, parent.trace_id);
    assert_eq!(child.parent_span_id, parent.span_id);
    assert_ne!(child.span_id, parent.span_id);
    assert_eq!(child.attr_str("gen_ai.request.model"), Some("small-model"));
    assert_eq!(child.attr_i64("gen_ai.usage.input_tokens"), Some(42));
    assert_eq!(child.attributes["reins.cached"], serde_json::json!(true));
    assert_eq!(child.attributes["reins.cost"], serde_json::json!(0.25));
    assert_eq!(
        child.attributes["reins.tags"],
        serde_json::json!(["a", "b"])
    );
    assert_eq!(child.status_code, 2, "error");
    assert_eq!(child.status_message, "upstream said no");
    assert_eq!(child.scope, "reins-test-scope");
    assert_eq!(
        child.resource["service.name"],
        serde_json::json!("reins-otlp-test")
    );
    assert!(child.start_unix_nano > 0 && child.end_unix_nano >= child.start_unix_nano);
    assert!(parent.end_unix_nano >= child.end_unix_nano);
}

fn both(spans: &[SpanRecord]) -> bool {
    ["parent", "child"]
        .iter()
        .all(|n| spans.iter().any(|s| s.name == *n))
}

#[tokio::test(flavor = "multi_thread")]
async fn http_exporter_spans_arrive_with_parents_attributes_and_headers() {
    let collector = Collector::start().await;
    let endpoint = format!("{}/v1/traces", collector.endpoint());
    tokio::task::spawn_blocking(move || {
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_headers(HashMap::from([(
                "authorization".to_owned(),
                "Bearer otlp-secret".to_owned(),
            )]))
            .build()
            .expect("HTTP span exporter");
        parent_and_child(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource())
                .build(),
        );
    })
    .await
    .expect("SDK side");

    let spans = collector.wait_for_spans(both, WAIT).await;
    assert_parent_and_child(&spans);
    let requests = collector.requests();
    assert!(!requests.is_empty());
    for (path, headers) in &requests {
        assert_eq!(path, "/v1/traces");
        assert_eq!(headers["authorization"], "Bearer otlp-secret");
        assert_eq!(headers["content-type"], "application/x-protobuf");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_exporter_spans_arrive_with_parents_attributes_and_metadata() {
    let collector = Collector::start().await;
    let endpoint = collector.grpc_endpoint();
    // In the runtime's context: the tonic channel spawns its worker there.
    tokio::task::spawn_blocking(move || {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(
            "authorization",
            "Bearer grpc-secret".parse().expect("value"),
        );
        let exporter = SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_metadata(metadata)
            .build()
            .expect("gRPC span exporter");
        parent_and_child(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource())
                .build(),
        );
    })
    .await
    .expect("SDK side");

    let spans = collector.wait_for_spans(both, WAIT).await;
    assert_parent_and_child(&spans);
    let (path, headers) = collector.requests().into_iter().next().expect("a request");
    assert_eq!(
        path,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    assert_eq!(headers["authorization"], "Bearer grpc-secret");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_exporter_metrics_arrive_with_values_and_attributes() {
    let collector = Collector::start().await;
    let endpoint = format!("{}/v1/metrics", collector.endpoint());
    tokio::task::spawn_blocking(move || {
        let exporter = MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
            .expect("HTTP metric exporter");
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter).build())
            .with_resource(resource())
            .build();
        let meter = provider.meter("reins-test-scope");
        let counter = meter.u64_counter("reins.test.requests").build();
        counter.add(2, &[KeyValue::new("route", "chat")]);
        counter.add(3, &[KeyValue::new("route", "chat")]);
        let histogram = meter
            .f64_histogram("reins.test.latency")
            .with_unit("s")
            .with_boundaries(vec![0.1, 1.0])
            .build();
        histogram.record(0.05, &[]);
        histogram.record(0.5, &[]);
        histogram.record(2.0, &[]);
        provider.force_flush().expect("flush metrics");
        provider.shutdown().expect("shut down the meter provider");
    })
    .await
    .expect("SDK side");

    let counter = collector.wait_for_metric("reins.test.requests", WAIT).await;
    assert_eq!(counter.kind, "sum");
    assert_eq!(counter.scope, "reins-test-scope");
    assert_eq!(
        counter.resource["service.name"],
        serde_json::json!("reins-otlp-test")
    );
    let [point] = counter.points.as_slice() else {
        panic!("one point: {counter:?}");
    };
    assert_eq!(point.value, 5.0);
    assert_eq!(point.attr_str("route"), Some("chat"));

    let latency = collector.wait_for_metric("reins.test.latency", WAIT).await;
    assert_eq!((latency.kind, latency.unit.as_str()), ("histogram", "s"));
    let [point] = latency.points.as_slice() else {
        panic!("one point: {latency:?}");
    };
    assert_eq!(point.count, 3);
    assert_eq!(point.sum, 2.55);
    assert_eq!(point.bounds, [0.1, 1.0]);
    assert_eq!(point.bucket_counts, [1, 1, 1]);
}

/// What no exporter of ours sends but a collector must survive: gzip is
/// inflated, a bad body is a 400 and JSON a 415 (with the reason), and
/// none of them takes the server down or is left out of `requests()`.
#[tokio::test(flavor = "multi_thread")]
async fn gzip_bodies_are_inflated_and_bad_ones_refused() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let collector = Collector::start().await;
    let url = format!("{}/v1/traces", collector.endpoint());
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![0xab; 16],
                    span_id: vec![0xcd; 8],
                    name: "gzipped".into(),
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&request.encode_to_vec()).expect("gzip");
    let gzipped = gz.finish().expect("gzip");

    let client = reqwest::Client::new();
    let post = |body: Vec<u8>, content_type: &'static str, encoding: Option<&'static str>| {
        let mut req = client
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        req.send()
    };

    let ok = post(gzipped, "application/x-protobuf", Some("gzip"))
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "application/x-protobuf");
    let spans = collector.spans();
    let [span] = spans.as_slice() else {
        panic!("one span: {spans:?}");
    };
    assert_eq!(
        (
            span.name.as_str(),
            span.trace_id.as_str(),
            span.span_id.as_str()
        ),
        (
            "gzipped",
            "abababababababababababababababab",
            "cdcdcdcdcdcdcdcd"
        )
    );

    let garbage = post(vec![0xff; 7], "application/x-protobuf", None)
        .await
        .expect("send");
    assert_eq!(garbage.status(), 400);
    assert!(
        garbage
            .text()
            .await
            .expect("body")
            .contains("bad OTLP protobuf body")
    );
    let bad_gzip = post(vec![1, 2, 3], "application/x-protobuf", Some("gzip"))
        .await
        .expect("send");
    assert_eq!(bad_gzip.status(), 400);
    let json = post(b"{}".to_vec(), "application/json", None)
        .await
        .expect("send");
    assert_eq!(json.status(), 415);
    let zstd = post(Vec::new(), "application/x-protobuf", Some("zstd"))
        .await
        .expect("send");
    assert_eq!(zstd.status(), 415);

    assert_eq!(collector.spans().len(), 1);
    assert_eq!(collector.requests().len(), 5);
}

/// A collector that hangs and one that is gone both cost a flush no more
/// than the exporter's timeout, and fail it rather than report success;
/// the hanging one does hold the flush for that timeout (it is not
/// refusing in disguise).
#[tokio::test(flavor = "multi_thread")]
async fn stalled_and_dead_collectors_fail_the_export_within_its_timeout() {
    for (base, hangs) in [
        (stalled().await, true),
        (reins_testing::server::dead_url(), false),
    ] {
        let endpoint = format!("{base}/v1/traces");
        let (elapsed, flushed) = tokio::task::spawn_blocking(move || {
            let exporter = SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(endpoint)
                .with_timeout(Duration::from_secs(1))
                .build()
                .expect("HTTP span exporter");
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .build();
            provider.tracer("t").start("lost").end();
            let started = Instant::now();
            let flushed = provider.force_flush();
            let elapsed = started.elapsed();
            let _ = provider.shutdown();
            (elapsed, flushed)
        })
        .await
        .expect("SDK side");
        assert!(flushed.is_err(), "{base}: the export must fail");
        assert!(
            elapsed < Duration::from_secs(5),
            "{base}: flush took {elapsed:?}"
        );
        if hangs {
            assert!(
                elapsed >= Duration::from_millis(900),
                "{base}: answered in {elapsed:?}"
            );
        }
    }
}
