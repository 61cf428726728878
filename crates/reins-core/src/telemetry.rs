//! The spans of a run, for an OpenTelemetry backend.
//!
//! Every span is built whole, as the SDK's [`SpanData`], when its step ends,
//! and handed to a [`SpanSink`] (the root's batching OTLP exporter). Why not
//! an SDK tracer: a model call's or a webhook's `traceparent` must name its
//! span before the request leaves, and plugin calls are timed on the
//! blocking pool, where no span could be entered. So this module chooses
//! the ids itself ([`RunTrace::child`]) and passes the run's trace as a value,
//! never through a task-local "current span".
//!
//! Off (no sink), a run records nothing and costs one branch per step; a
//! caller's `traceparent` is still passed on to upstreams unchanged, so the
//! trace stays whole across a Reins that does not export.
//!
//! Span attributes follow the OpenTelemetry semantic conventions
//! [`SEMCONV_VERSION`] (the GenAI conventions are "Development" there): a
//! model call is a `chat {model}` client span with the `gen_ai.*` attributes,
//! an executed action an `execute_tool {tool}` span. Reins' own attributes
//! are `reins.*`.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, Status, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SamplingDecision, ShouldSample};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use opentelemetry::KeyValue;
pub use opentelemetry::trace::{SpanId, SpanKind};
pub use opentelemetry_sdk::trace::{Sampler, SpanData};

/// The semantic conventions the spans follow.
pub const SEMCONV_VERSION: &str = "1.42.0";
/// Their schema URL, the instrumentation scope's (static: no allocation per span).
const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.42.0";

/// The GenAI attribute names of [`SEMCONV_VERSION`] (status "Development";
/// `opentelemetry-semantic-conventions` deprecates its copies, as the
/// GenAI conventions moved to a repository of their own). Kept here, one
/// list, so a rename is one change.
pub mod genai {
    pub const OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
    pub const REQUEST_TOP_P: &str = "gen_ai.request.top_p";
    pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
    pub const REQUEST_SEED: &str = "gen_ai.request.seed";
    pub const OUTPUT_TYPE: &str = "gen_ai.output.type";
    pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
    pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
    pub const TOOL_NAME: &str = "gen_ai.tool.name";
    pub const TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
}

/// Where finished spans go. Must not block: a sink that cannot keep up
/// drops spans and counts them (`reins_telemetry_spans_dropped_total`).
pub trait SpanSink: Send + Sync + 'static {
    fn record(&self, span: SpanData);
}

/// Whether and where runs are traced; cheap to clone, one per host.
#[derive(Clone, Default)]
pub struct Telemetry(Option<Arc<Export>>);

struct Export {
    sink: Arc<dyn SpanSink>,
    sampler: Sampler,
    capture_content: bool,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.0.is_some())
            .finish()
    }
}

impl Telemetry {
    /// Spans to `sink`, for the traces `sampler` keeps. `capture_content`
    /// records prompts and completions (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`); off, no text of a conversation is recorded.
    pub fn new(sink: Arc<dyn SpanSink>, sampler: Sampler, capture_content: bool) -> Telemetry {
        Telemetry(Some(Arc::new(Export {
            sink,
            sampler,
            capture_content,
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder("reins")
                .with_version(env!("CARGO_PKG_VERSION"))
                .with_schema_url(SCHEMA_URL)
                .build(),
        })))
    }

    pub fn off() -> Telemetry {
        Telemetry(None)
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// The trace of one run: a child of the caller's `parent`, or a new
    /// root; recording only if the sampler keeps it.
    pub fn run(&self, parent: Option<&TraceParent>) -> RunTrace {
        let clock = (Instant::now(), SystemTime::now());
        let parent_sc = parent.map(|p| p.0.clone());
        let Some(export) = &self.0 else {
            return RunTrace::forwarding(parent_sc, clock);
        };
        let trace_id = parent_sc
            .as_ref()
            .map(SpanContext::trace_id)
            .unwrap_or_else(|| export.ids.new_trace_id());
        let parent_cx = match &parent_sc {
            Some(sc) => Context::new().with_remote_span_context(sc.clone()),
            None => Context::new(),
        };
        let decision = export.sampler.should_sample(
            Some(&parent_cx),
            trace_id,
            "reins.run",
            &SpanKind::Server,
            &[],
            &[],
        );
        if decision.decision != SamplingDecision::RecordAndSample {
            return RunTrace::forwarding(parent_sc, clock);
        }
        RunTrace {
            export: Some(export.clone()),
            trace_id,
            run_span: export.ids.new_span_id(),
            flags: TraceFlags::SAMPLED,
            state: decision.trace_state,
            parent: parent_sc,
            clock,
        }
    }
}

/// `builder` with a call's W3C `traceparent`, when the run has a trace.
pub fn traced(
    builder: reqwest::RequestBuilder,
    traceparent: Option<&str>,
) -> reqwest::RequestBuilder {
    match traceparent {
        Some(tp) => builder.header("traceparent", tp),
        None => builder,
    }
}

impl Telemetry {
    /// The trace of a run recorded earlier (its `trace_id` and `span_id`),
    /// for what happens to it later, such as its approved actions: new
    /// spans join the run's own. Records nothing if the run was not traced.
    pub fn resume(&self, trace_id: Option<&str>, span_id: Option<&str>) -> RunTrace {
        let clock = (Instant::now(), SystemTime::now());
        let ids = trace_id
            .and_then(|t| TraceId::from_hex(t).ok())
            .zip(span_id.and_then(|s| SpanId::from_hex(s).ok()));
        match (&self.0, ids) {
            (Some(export), Some((trace_id, run_span))) => RunTrace {
                export: Some(export.clone()),
                trace_id,
                run_span,
                flags: TraceFlags::SAMPLED,
                state: TraceState::default(),
                parent: None,
                clock,
            },
            _ => RunTrace::forwarding(None, clock),
        }
    }
}

/// A caller's W3C trace context (`traceparent`, `tracestate` headers).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceParent(SpanContext);

impl TraceParent {
    /// The context the headers carry; `None` when `traceparent` is absent
    /// or malformed (a bad header starts a new trace, as W3C asks).
    pub fn from_headers(
        traceparent: Option<&str>,
        tracestate: Option<&str>,
    ) -> Option<TraceParent> {
        let mut carrier = HashMap::new();
        carrier.insert("traceparent".to_owned(), traceparent?.to_owned());
        if let Some(state) = tracestate {
            carrier.insert("tracestate".to_owned(), state.to_owned());
        }
        let cx = TraceContextPropagator::new().extract(&carrier);
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(TraceParent(sc))
    }

    pub fn trace_id(&self) -> String {
        self.0.trace_id().to_string()
    }
}

/// One step's span, described when it ends.
#[derive(Debug)]
pub struct StepSpan {
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    /// Reserved by [`RunTrace::child`] when the step sent its id upstream;
    /// otherwise a new one.
    pub id: Option<SpanId>,
    /// The span this one belongs to; the run's when `None`.
    pub parent: Option<SpanId>,
    pub start: Instant,
    pub end: Instant,
    pub attributes: Vec<KeyValue>,
    /// What went wrong, as the span's error status.
    pub error: Option<String>,
}

impl StepSpan {
    pub fn new(name: impl Into<Cow<'static, str>>, start: Instant, end: Instant) -> StepSpan {
        StepSpan {
            name: name.into(),
            kind: SpanKind::Internal,
            id: None,
            parent: None,
            start,
            end,
            attributes: Vec::new(),
            error: None,
        }
    }
}

/// The span of a human's decision on an escalated action: from the hold to
/// the decision (`status`: `approved`, `rejected`, or `pending`).
pub fn approval_wait(
    approval: Option<&str>,
    status: &str,
    gate: &str,
    tool: &str,
    start: Instant,
    end: Instant,
) -> StepSpan {
    let mut attributes = vec![
        KeyValue::new("reins.approval.status", status.to_owned()),
        KeyValue::new("reins.gate", gate.to_owned()),
        KeyValue::new(genai::TOOL_NAME, tool.to_owned()),
    ];
    if let Some(id) = approval {
        attributes.push(KeyValue::new("reins.approval.id", id.to_owned()));
    }
    StepSpan {
        attributes,
        ..StepSpan::new("reins.approval.wait", start, end)
    }
}

/// The trace of one run: its ids and clock, and where its spans go.
#[derive(Clone)]
pub struct RunTrace {
    /// `None`: nothing is recorded (telemetry off, or sampled out).
    export: Option<Arc<Export>>,
    trace_id: TraceId,
    /// The run's own span; the caller's span when forwarding.
    run_span: SpanId,
    flags: TraceFlags,
    state: TraceState,
    parent: Option<SpanContext>,
    /// One instant paired with the wall clock, to date spans timed by `Instant`.
    clock: (Instant, SystemTime),
}

impl std::fmt::Debug for RunTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunTrace")
            .field("trace_id", &self.trace_id)
            .field("recording", &self.recording())
            .finish()
    }
}

impl Default for RunTrace {
    fn default() -> RunTrace {
        RunTrace::forwarding(None, (Instant::now(), SystemTime::now()))
    }
}

impl RunTrace {
    /// A trace that records nothing and passes the caller's context on unchanged.
    fn forwarding(parent: Option<SpanContext>, clock: (Instant, SystemTime)) -> RunTrace {
        let (trace_id, run_span, flags, state) = match &parent {
            Some(sc) => (
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags(),
                sc.trace_state().clone(),
            ),
            None => (
                TraceId::INVALID,
                SpanId::INVALID,
                TraceFlags::default(),
                TraceState::default(),
            ),
        };
        RunTrace {
            export: None,
            trace_id,
            run_span,
            flags,
            state,
            parent,
            clock,
        }
    }

    pub fn recording(&self) -> bool {
        self.export.is_some()
    }

    /// Whether prompts and completions may go into spans.
    pub fn captures_content(&self) -> bool {
        self.export.as_ref().is_some_and(|e| e.capture_content)
    }

    /// The trace's id (hex), when there is a trace: recorded, or the caller's.
    pub fn trace_id(&self) -> Option<String> {
        (self.trace_id != TraceId::INVALID).then(|| self.trace_id.to_string())
    }

    /// The run span's id (hex), when recorded.
    pub fn span_id(&self) -> Option<String> {
        self.recording().then(|| self.run_span.to_string())
    }

    /// An id for a span of this run that is sent upstream before it ends.
    pub fn child(&self) -> SpanId {
        match &self.export {
            Some(e) => e.ids.new_span_id(),
            None => self.run_span,
        }
    }

    /// The `traceparent` header naming `span` (from [`RunTrace::child`]);
    /// `None` when there is no trace to pass on.
    pub fn traceparent(&self, span: SpanId) -> Option<String> {
        (self.trace_id != TraceId::INVALID && span != SpanId::INVALID)
            .then(|| format!("00-{}-{}-{:02x}", self.trace_id, span, self.flags.to_u8()))
    }

    /// The `tracestate` header to send beside [`RunTrace::traceparent`].
    pub fn tracestate(&self) -> Option<String> {
        let s = self.state.header();
        (!s.is_empty()).then_some(s)
    }

    /// The instant of a wall-clock time (ms since the Unix epoch), for a
    /// step timed by the store's clock, such as an approval's wait.
    pub fn instant_of(&self, unix_ms: u64) -> Instant {
        let (base, wall) = self.clock;
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
        match wall.duration_since(at) {
            Ok(ago) => base.checked_sub(ago).unwrap_or(base),
            Err(ahead) => base + ahead.duration(),
        }
    }

    fn time(&self, t: Instant) -> SystemTime {
        let (base, wall) = self.clock;
        match t.checked_duration_since(base) {
            Some(d) => wall + d,
            None => wall - base.saturating_duration_since(t),
        }
    }

    /// Records a step's span (nothing when not recording).
    pub fn record(&self, step: StepSpan) {
        let Some(export) = &self.export else {
            return;
        };
        let id = step.id.unwrap_or_else(|| export.ids.new_span_id());
        let parent = step.parent.unwrap_or(self.run_span);
        self.emit(export, id, parent, false, step);
    }

    /// Records the run's own span, the root of its steps.
    pub fn end_run(&self, step: StepSpan) {
        let Some(export) = &self.export else {
            return;
        };
        let parent = self
            .parent
            .as_ref()
            .map(SpanContext::span_id)
            .unwrap_or(SpanId::INVALID);
        self.emit(export, self.run_span, parent, self.parent.is_some(), step);
    }

    fn emit(&self, export: &Export, id: SpanId, parent: SpanId, remote: bool, step: StepSpan) {
        let status = match step.error {
            Some(message) => Status::error(message),
            None => Status::Unset,
        };
        export.sink.record(SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                id,
                self.flags,
                false,
                self.state.clone(),
            ),
            parent_span_id: parent,
            parent_span_is_remote: remote,
            span_kind: step.kind,
            name: step.name,
            start_time: self.time(step.start),
            end_time: self.time(step.end.max(step.start)),
            attributes: step.attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: export.scope.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<SpanData>>);
    impl SpanSink for Collect {
        fn record(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
    }

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_run_is_a_child_of_the_callers_trace_and_its_steps_children_of_the_run() {
        let sink = Arc::new(Collect::default());
        let t = Telemetry::new(
            sink.clone(),
            Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            false,
        );
        let parent = TraceParent::from_headers(Some(PARENT), None).unwrap();
        let run = t.run(Some(&parent));
        let model = run.child();
        let header = run.traceparent(model).unwrap();
        assert!(header.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        assert!(header.ends_with("-01"));
        let now = Instant::now();
        run.record(StepSpan {
            id: Some(model),
            ..StepSpan::new("chat m", now, now)
        });
        run.end_run(StepSpan::new("reins.run", now, now));
        let spans = sink.0.lock().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].span_context.span_id(), model);
        assert_eq!(spans[0].parent_span_id, spans[1].span_context.span_id());
        assert_eq!(spans[1].parent_span_id.to_string(), "b7ad6b7169203331");
        assert!(spans[1].parent_span_is_remote);
    }

    #[test]
    fn off_it_passes_the_callers_context_on_unchanged_and_records_nothing() {
        let parent = TraceParent::from_headers(Some(PARENT), None).unwrap();
        let run = Telemetry::off().run(Some(&parent));
        assert_eq!(run.traceparent(run.child()).as_deref(), Some(PARENT));
        assert!(!run.recording());
        let alone = Telemetry::off().run(None);
        assert_eq!(alone.traceparent(alone.child()), None);
    }

    #[test]
    fn a_sampled_out_run_records_nothing_and_a_bad_header_starts_a_new_trace() {
        let sink = Arc::new(Collect::default());
        let t = Telemetry::new(sink.clone(), Sampler::AlwaysOff, false);
        let run = t.run(None);
        run.end_run(StepSpan::new("reins.run", Instant::now(), Instant::now()));
        assert!(sink.0.lock().unwrap().is_empty());
        assert_eq!(TraceParent::from_headers(Some("00-zz-11-01"), None), None);
    }
}
