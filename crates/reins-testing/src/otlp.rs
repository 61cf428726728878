//! An OpenTelemetry collector stand-in: real OTLP receivers on loopback
//! that decode what real exporters send, so a test asserts on the spans
//! and metrics that would reach a production collector, wire format
//! included, rather than on what the SDK meant to send.
//!
//! [`Collector`] takes OTLP/HTTP (protobuf, optionally gzip) and OTLP/gRPC.
//! For a collector that misbehaves: [`stalled`] accepts connections and
//! never answers, and [`crate::server::dead_url`] refuses them — between
//! them, the tests that an exporter never blocks the host on its collector.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One span as the collector received it, flattened out of its resource
/// and scope so a test can filter a plain list.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits, empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `SpanKind` as on the wire: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, Value>,
    /// 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub resource: BTreeMap<String, Value>,
    /// The instrumentation scope's name.
    pub scope: String,
    pub flags: u32,
}

impl SpanRecord {
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key)?.as_str()
    }

    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key)?.as_i64()
    }
}

/// One metric of one export. A cumulative metric is sent again on every
/// export, so the same name shows up once per export.
#[derive(Clone, Debug)]
pub struct MetricRecord {
    pub name: String,
    /// "sum", "gauge", "histogram", "exponential_histogram", "summary" or "none".
    pub kind: &'static str,
    pub unit: String,
    pub resource: BTreeMap<String, Value>,
    pub scope: String,
    pub points: Vec<PointRecord>,
}

/// One data point. One struct for every kind keeps the assertions short:
/// sums and gauges fill `value`; histograms and summaries fill `count` and
/// `sum`, histograms also `bucket_counts` and `bounds`.
#[derive(Clone, Debug, Default)]
pub struct PointRecord {
    pub attributes: BTreeMap<String, Value>,
    pub value: f64,
    pub count: u64,
    pub sum: f64,
    pub bucket_counts: Vec<u64>,
    pub bounds: Vec<f64>,
}

impl PointRecord {
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key)?.as_str()
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<SpanRecord>,
    metrics: Vec<MetricRecord>,
    requests: Vec<(String, HeaderMap)>,
}

type Shared = Arc<Mutex<Received>>;

/// A running collector; its servers live as long as the test's runtime.
pub struct Collector {
    received: Shared,
    http: String,
    grpc: String,
}

impl Collector {
    /// Starts the OTLP/HTTP receiver and the OTLP/gRPC one, each on its own
    /// ephemeral loopback port, both recording into the same lists.
    pub async fn start() -> Collector {
        let received = Shared::default();
        let app = axum::Router::new()
            .route("/v1/traces", post(http_traces))
            .route("/v1/metrics", post(http_metrics))
            .fallback(http_unknown)
            // Exporters batch; the default 2 MB cap would reject a big batch.
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(received.clone());
        let http = crate::server::listen(app).await;

        let incoming = tonic::transport::server::TcpIncoming::bind(([127, 0, 0, 1], 0).into())
            .expect("bind the gRPC receiver");
        let addr = incoming.local_addr().expect("addr");
        let grpc = Grpc(received.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(grpc.clone()))
                .add_service(MetricsServiceServer::new(grpc))
                .serve_with_incoming(incoming)
                .await;
        });
        Collector {
            received,
            http,
            grpc: format!("http://{addr}"),
        }
    }

    /// `http://127.0.0.1:PORT`: the base `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// takes; exporters append `/v1/traces` and `/v1/metrics` to it (a
    /// per-signal endpoint must name the full path).
    pub fn endpoint(&self) -> String {
        self.http.clone()
    }

    /// `http://127.0.0.1:PORT` of the gRPC receiver, for `with_tonic()`
    /// exporters and `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub fn grpc_endpoint(&self) -> String {
        self.grpc.clone()
    }

    pub fn spans(&self) -> Vec<SpanRecord> {
        self.lock().spans.clone()
    }

    /// Polls until `pred` holds on every span received so far. Exports are
    /// asynchronous, so a test waits for what it expects instead of
    /// sleeping; on a timeout the panic lists what did arrive.
    pub async fn wait_for_spans(
        &self,
        pred: impl Fn(&[SpanRecord]) -> bool,
        timeout: Duration,
    ) -> Vec<SpanRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the collector's spans did not match within {timeout:?}; received {}:\n{}\nrequests: {:?}",
                    spans.len(),
                    dump(&spans),
                    self.paths(),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn metrics(&self) -> Vec<MetricRecord> {
        self.lock().metrics.clone()
    }

    /// The latest export of metric `name`, once one arrived: for a
    /// cumulative metric that is the most complete one.
    pub async fn wait_for_metric(&self, name: &str, timeout: Duration) -> MetricRecord {
        let deadline = Instant::now() + timeout;
        loop {
            let metrics = self.metrics();
            if let Some(m) = metrics.iter().rev().find(|m| m.name == name) {
                return m.clone();
            }
            if Instant::now() >= deadline {
                let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
                panic!(
                    "no metric {name:?} within {timeout:?}; received {names:?}; requests: {:?}",
                    self.paths(),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every request in arrival order, even the rejected ones: the path
    /// (for gRPC, the method's, e.g.
    /// `/opentelemetry.proto.collector.trace.v1.TraceService/Export`) and
    /// its headers, for what `OTEL_EXPORTER_OTLP_HEADERS` set.
    pub fn requests(&self) -> Vec<(String, HeaderMap)> {
        self.lock().requests.clone()
    }

    fn paths(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().expect("collector lock")
    }
}

/// A base URL whose server accepts connections and never answers, holding
/// them open: a collector that hangs, which must cost the host nothing
/// more than the exporter's own timeout.
pub async fn stalled() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    format!("http://{addr}")
}

fn dump(spans: &[SpanRecord]) -> String {
    spans
        .iter()
        .map(|s| {
            let parent = if s.parent_span_id.is_empty() {
                "root"
            } else {
                &s.parent_span_id
            };
            format!(
                "  {} trace={} span={} parent={parent}",
                s.name, s.trace_id, s.span_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- OTLP/HTTP ----

async fn http_traces(State(received): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    record_request(&received, "/v1/traces", &headers);
    match decode::<ExportTraceServiceRequest>(&headers, &body) {
        Ok(req) => {
            add_spans(&received, req);
            protobuf(ExportTraceServiceResponse::default())
        }
        Err(rejection) => rejection.into_response(),
    }
}

async fn http_metrics(State(received): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    record_request(&received, "/v1/metrics", &headers);
    match decode::<ExportMetricsServiceRequest>(&headers, &body) {
        Ok(req) => {
            add_metrics(&received, req);
            protobuf(ExportMetricsServiceResponse::default())
        }
        Err(rejection) => rejection.into_response(),
    }
}

/// Recorded too, so a test whose exporter posts to the wrong path sees
/// where it went.
async fn http_unknown(State(received): State<Shared>, uri: Uri, headers: HeaderMap) -> StatusCode {
    record_request(&received, uri.path(), &headers);
    StatusCode::NOT_FOUND
}

/// The body as a protobuf message. JSON (OTLP/HTTP's other encoding) and
/// compressions other than gzip are refused with 415, as a collector
/// without them would, rather than misread.
fn decode<M: Message + Default>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<M, (StatusCode, String)> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let content_type = header(CONTENT_TYPE);
    if !content_type.is_empty() && !content_type.starts_with("application/x-protobuf") {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("only application/x-protobuf is accepted, not {content_type}"),
        ));
    }
    let inflated;
    let body = match header(CONTENT_ENCODING) {
        "" | "identity" => body,
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad gzip body: {e}")))?;
            inflated = out;
            &inflated
        }
        other => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content-encoding {other} is not supported (only gzip)"),
            ));
        }
    };
    M::decode(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("bad OTLP protobuf body: {e}"),
        )
    })
}

fn protobuf(msg: impl Message) -> Response {
    (
        [(CONTENT_TYPE, "application/x-protobuf")],
        msg.encode_to_vec(),
    )
        .into_response()
}

// ---- OTLP/gRPC ----

#[derive(Clone)]
struct Grpc(Shared);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let (metadata, _, req) = request.into_parts();
        record_request(
            &self.0,
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            &metadata.into_headers(),
        );
        add_spans(&self.0, req);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let (metadata, _, req) = request.into_parts();
        record_request(
            &self.0,
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            &metadata.into_headers(),
        );
        add_metrics(&self.0, req);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

// ---- Recording ----

/// The lock is only poisoned if a test thread panicked while holding it;
/// the server goes on with the data rather than panic in its turn.
fn with<T>(received: &Shared, f: impl FnOnce(&mut Received) -> T) -> T {
    let mut guard = received
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut guard)
}

fn record_request(received: &Shared, path: &str, headers: &HeaderMap) {
    with(received, |r| {
        r.requests.push((path.to_owned(), headers.clone()))
    });
}

fn add_spans(received: &Shared, req: ExportTraceServiceRequest) {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = resource_attrs(rs.resource.as_ref());
        for ss in rs.scope_spans {
            let scope = scope_name(ss.scope.as_ref());
            for span in ss.spans {
                let status = span.status.unwrap_or_default();
                out.push(SpanRecord {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    attributes: attrs(&span.attributes),
                    status_code: status.code,
                    status_message: status.message,
                    resource: resource.clone(),
                    scope: scope.clone(),
                    flags: span.flags,
                });
            }
        }
    }
    with(received, |r| r.spans.extend(out));
}

fn add_metrics(received: &Shared, req: ExportMetricsServiceRequest) {
    let mut out = Vec::new();
    for rm in req.resource_metrics {
        let resource = resource_attrs(rm.resource.as_ref());
        for sm in rm.scope_metrics {
            let scope = scope_name(sm.scope.as_ref());
            for m in sm.metrics {
                let (kind, points) = points(m.data);
                out.push(MetricRecord {
                    name: m.name,
                    kind,
                    unit: m.unit,
                    resource: resource.clone(),
                    scope: scope.clone(),
                    points,
                });
            }
        }
    }
    with(received, |r| r.metrics.extend(out));
}

fn points(data: Option<metric::Data>) -> (&'static str, Vec<PointRecord>) {
    let number = |p: opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| PointRecord {
        attributes: attrs(&p.attributes),
        value: match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            Some(number_data_point::Value::AsInt(v)) => v as f64,
            None => 0.0,
        },
        ..PointRecord::default()
    };
    match data {
        Some(metric::Data::Sum(s)) => ("sum", s.data_points.into_iter().map(number).collect()),
        Some(metric::Data::Gauge(g)) => ("gauge", g.data_points.into_iter().map(number).collect()),
        Some(metric::Data::Histogram(h)) => (
            "histogram",
            h.data_points
                .into_iter()
                .map(|p| PointRecord {
                    attributes: attrs(&p.attributes),
                    count: p.count,
                    sum: p.sum.unwrap_or(0.0),
                    bucket_counts: p.bucket_counts,
                    bounds: p.explicit_bounds,
                    ..PointRecord::default()
                })
                .collect(),
        ),
        Some(metric::Data::ExponentialHistogram(h)) => (
            "exponential_histogram",
            h.data_points
                .into_iter()
                .map(|p| PointRecord {
                    attributes: attrs(&p.attributes),
                    count: p.count,
                    sum: p.sum.unwrap_or(0.0),
                    ..PointRecord::default()
                })
                .collect(),
        ),
        Some(metric::Data::Summary(s)) => (
            "summary",
            s.data_points
                .into_iter()
                .map(|p| PointRecord {
                    attributes: attrs(&p.attributes),
                    count: p.count,
                    sum: p.sum,
                    ..PointRecord::default()
                })
                .collect(),
        ),
        None => ("none", Vec::new()),
    }
}

fn resource_attrs(resource: Option<&Resource>) -> BTreeMap<String, Value> {
    resource.map(|r| attrs(&r.attributes)).unwrap_or_default()
}

fn scope_name(scope: Option<&InstrumentationScope>) -> String {
    scope.map(|s| s.name.clone()).unwrap_or_default()
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any(kv.value.as_ref())))
        .collect()
}

/// JSON for an `AnyValue`; bytes as hex, a float JSON cannot hold (NaN,
/// infinities) as null.
fn any(value: Option<&AnyValue>) -> Value {
    use any_value::Value as V;
    match value.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        Some(V::DoubleValue(d)) => Value::from(*d),
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(|v| any(Some(v))).collect()),
        Some(V::KvlistValue(kvs)) => Value::Object(
            kvs.values
                .iter()
                .map(|kv| (kv.key.clone(), any(kv.value.as_ref())))
                .collect(),
        ),
        Some(V::BytesValue(b)) => Value::String(hex::encode(b)),
        Some(V::StringValueStrindex(i)) => Value::from(*i),
    }
}
