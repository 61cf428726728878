//! What the run's spans say (see `crate::telemetry`): the attributes of a
//! step, a plugin call, a model call and the run itself. The trace
//! ([`TraceStep`]) and the spans are written at the same place
//! ([`Run::trace_with`]), so the two cannot tell different stories.

use super::*;
use crate::provider::{ChatRequest, ChatResponse};
use crate::telemetry::{KeyValue, SpanId, SpanKind, StepSpan, genai};

/// A step's span beyond its layer, name and result.
#[derive(Default)]
pub(super) struct Extra {
    /// The span's name, when not `"{layer} {name}"`.
    pub(super) name: Option<String>,
    pub(super) kind: Option<SpanKind>,
    /// Reserved before the step, when its id went upstream.
    pub(super) id: Option<SpanId>,
    pub(super) attributes: Vec<KeyValue>,
    pub(super) error: Option<String>,
}

/// What a plugin call's result adds to its span.
pub(super) trait Outcome {
    fn violations(&self) -> usize {
        0
    }
    fn attributes(&self, _into: &mut Vec<KeyValue>) {}
}

impl Outcome for reins_runtime::Normalized {
    fn violations(&self) -> usize {
        self.findings.len()
    }
}
impl Outcome for reins_runtime::Verdict {
    fn violations(&self) -> usize {
        self.violations.len()
    }
    fn attributes(&self, into: &mut Vec<KeyValue>) {
        into.push(KeyValue::new("reins.validator.fixed", self.fixed.is_some()));
    }
}
impl Outcome for (Decision, reins_runtime::Reservation) {
    fn attributes(&self, into: &mut Vec<KeyValue>) {
        into.push(KeyValue::new("reins.gate.decision", self.0.kind()));
    }
}
impl Outcome for Vec<Tool> {
    fn attributes(&self, into: &mut Vec<KeyValue>) {
        into.push(KeyValue::new("reins.tools", self.len() as i64));
    }
}
impl Outcome for reins_runtime::Assembled {
    fn attributes(&self, into: &mut Vec<KeyValue>) {
        into.push(KeyValue::new("reins.chunks", self.chunks.len() as i64));
        into.push(KeyValue::new(
            "reins.chunks.dropped",
            self.dropped.len() as i64,
        ));
    }
}
impl Outcome for reins_runtime::StreamVerdict {}

/// A plugin call: which component ran (name, digest, isolation) and how it ended.
pub(super) fn plugin<T: Outcome>(plugin: &Plugin, outcome: &str, value: Option<&T>) -> Extra {
    let mut attributes = vec![
        KeyValue::new("reins.plugin.name", plugin.name().to_owned()),
        KeyValue::new("reins.plugin.digest", plugin.digest().to_owned()),
        KeyValue::new(
            "reins.plugin.isolation",
            match plugin.manifest().isolation {
                reins_runtime::Isolation::PerCall => "per-call",
                reins_runtime::Isolation::Pooled => "pooled",
            },
        ),
        KeyValue::new("reins.plugin.outcome", outcome.to_owned()),
        KeyValue::new(
            "reins.violations",
            value.map_or(0, Outcome::violations) as i64,
        ),
    ];
    if let Some(v) = value {
        v.attributes(&mut attributes);
    }
    Extra {
        attributes,
        ..Extra::default()
    }
}

/// Any step of the run's trace, as a child of the run's span.
pub(super) fn step(
    layer: &'static str,
    name: &str,
    attempt: u32,
    result: &str,
    start: Instant,
    end: Instant,
    extra: Extra,
) -> StepSpan {
    let mut attributes = Vec::with_capacity(extra.attributes.len() + 3);
    attributes.push(KeyValue::new("reins.layer", layer));
    attributes.push(KeyValue::new("reins.attempt", attempt as i64));
    attributes.push(KeyValue::new("reins.result", result.to_owned()));
    attributes.extend(extra.attributes);
    StepSpan {
        name: extra
            .name
            .unwrap_or_else(|| {
                if name.is_empty() {
                    format!("reins.{layer}")
                } else {
                    format!("{layer} {name}")
                }
            })
            .into(),
        kind: extra.kind.unwrap_or(SpanKind::Internal),
        id: extra.id,
        parent: None,
        start,
        end,
        attributes,
        error: extra.error,
    }
}

/// The run's own span.
pub(crate) fn run(pipeline: &Pipeline, result: &RunResult, started: Instant) -> StepSpan {
    let mut attributes = vec![
        KeyValue::new("reins.run_id", result.run_id.clone()),
        KeyValue::new("reins.pipeline", pipeline.name.clone()),
        KeyValue::new("reins.status", result.status.as_str()),
        KeyValue::new("reins.attempts", result.attempts.len() as i64),
        KeyValue::new("reins.degraded", result.degraded),
        KeyValue::new(genai::USAGE_INPUT_TOKENS, result.tokens.prompt as i64),
        KeyValue::new(genai::USAGE_OUTPUT_TOKENS, result.tokens.completion as i64),
    ];
    if let Some(id) = &result.caller.tenant {
        attributes.push(KeyValue::new("reins.tenant", id.clone()));
    }
    let error = result.error.as_ref().map(|e| {
        attributes.push(KeyValue::new("error.type", e.kind()));
        e.to_string()
    });
    StepSpan {
        kind: SpanKind::Server,
        attributes,
        error,
        ..StepSpan::new(
            format!("reins.run {}", pipeline.name),
            started,
            Instant::now(),
        )
    }
}

/// A model call, in the GenAI conventions: `chat {model}`, a client span
/// with what was asked (model, sampling) and what came back (model, usage,
/// finish reasons); the conversation itself only with `capture_content`.
pub(super) fn model(
    id: SpanId,
    provider: &dyn crate::provider::Provider,
    request: &ChatRequest,
    answer: Result<&ChatResponse, &crate::provider::ProviderError>,
    capture_content: bool,
) -> Extra {
    let s = &request.sampling;
    let mut a = vec![
        KeyValue::new(genai::OPERATION_NAME, "chat"),
        KeyValue::new(genai::PROVIDER_NAME, provider.system()),
        KeyValue::new(genai::REQUEST_MODEL, provider.model().to_owned()),
        KeyValue::new("reins.provider", provider.name().to_owned()),
    ];
    if let Some(t) = s.temperature {
        a.push(KeyValue::new(genai::REQUEST_TEMPERATURE, t));
    }
    if let Some(t) = s.top_p {
        a.push(KeyValue::new(genai::REQUEST_TOP_P, t));
    }
    if let Some(t) = s.max_completion_tokens.or(s.max_tokens) {
        a.push(KeyValue::new(genai::REQUEST_MAX_TOKENS, t as i64));
    }
    if let Some(t) = s.seed {
        a.push(KeyValue::new(genai::REQUEST_SEED, t));
    }
    if request.json {
        a.push(KeyValue::new(genai::OUTPUT_TYPE, "json"));
    }
    let mut error = None;
    match answer {
        Ok(r) => {
            a.push(KeyValue::new(genai::RESPONSE_MODEL, r.model.clone()));
            if let Some(u) = &r.usage {
                a.push(KeyValue::new(
                    genai::USAGE_INPUT_TOKENS,
                    u.prompt_tokens as i64,
                ));
                a.push(KeyValue::new(
                    genai::USAGE_OUTPUT_TOKENS,
                    u.completion_tokens as i64,
                ));
            }
            let reason = r.finish_reason.clone().unwrap_or_else(|| {
                if r.tool_calls.is_empty() {
                    "stop"
                } else {
                    "tool_calls"
                }
                .to_owned()
            });
            a.push(KeyValue::new(
                genai::RESPONSE_FINISH_REASONS,
                opentelemetry::Value::Array(vec![opentelemetry::StringValue::from(reason)].into()),
            ));
            if capture_content {
                a.push(KeyValue::new(
                    genai::OUTPUT_MESSAGES,
                    serde_json::json!([{
                        "role": "assistant",
                        "parts": [{"type": "text", "content": r.content}],
                        "tool_calls": r.tool_calls,
                    }])
                    .to_string(),
                ));
            }
        }
        Err(e) => {
            a.push(KeyValue::new("error.type", e.kind()));
            error = Some(e.to_string());
        }
    }
    if capture_content {
        let input: Vec<Value> = request
            .messages
            .iter()
            .map(|m| serde_json::json!({"role": m.role, "parts": [{"type": "text", "content": m.content}]}))
            .collect();
        a.push(KeyValue::new(
            genai::INPUT_MESSAGES,
            Value::Array(input).to_string(),
        ));
    }
    Extra {
        name: Some(format!("chat {}", provider.model())),
        kind: Some(SpanKind::Client),
        id: Some(id),
        attributes: a,
        error,
    }
}
