//! What a run returns: its status, its output, every attempt, every finding
//! and decision, and a trace of every step with its timing.

use crate::provider::ToolCall;
use reins_runtime::{Action, Decision, Violation};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// How a run ended (the store's status: one enum from the stored column to
/// the HTTP answer).
pub use reins_state::RunStatus;

/// A violation or finding, with what reported it (`json`, `schema`,
/// `constraints`, or a plugin's name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub source: String,
    #[serde(flatten)]
    pub violation: Violation,
}

/// Tokens one attempt spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    /// Counted by the host's tokenizer because the provider reported no usage.
    pub estimated: bool,
}

impl Tokens {
    /// Counts another call's tokens into these (an estimate makes the sum one).
    pub fn add(&mut self, other: Tokens) {
        self.prompt += other.prompt;
        self.completion += other.completion;
        self.total += other.total;
        self.estimated |= other.estimated;
    }
}

/// One model call and what validation made of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first call, 2 for the first repair...
    pub attempt: u32,
    /// The provider that answered (after any fallbacks).
    pub provider: String,
    pub model: String,
    /// The answer's text as the model wrote it.
    pub raw: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Everything validation found, in a stable order: `json`, `schema`, then
    /// validators by stage and config order, then constraints and gates.
    pub violations: Vec<Finding>,
    /// Validators whose deterministic fixes were applied, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixed_by: Vec<String>,
    pub tokens: Tokens,
    /// Model call latency.
    pub latency_us: u64,
}

impl Attempt {
    /// The violations that fail validation (severity `error`).
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.violations
            .iter()
            .filter(|f| f.violation.severity == reins_runtime::Severity::Error)
    }
}

/// A gate's decision on one proposed action.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GateDecision {
    pub attempt: u32,
    /// Index of the action in the attempt's tool calls.
    pub action: usize,
    pub tool: String,
    pub gate: String,
    pub decision: Decision,
}

/// An escalated action waiting for a human.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingApproval {
    /// Index of the action among the attempt's proposed actions.
    pub index: usize,
    pub action: Action,
    pub gate: String,
    pub reason: String,
}

/// One step of the trace.
#[derive(Debug, Clone, Serialize)]
pub struct TraceStep {
    /// Plugin layers (`normalizer`, `context`, `constraints`, `validator`,
    /// `gate`) and the host's steps: `history` (the conversation cut to its
    /// budget), `retrieve` (one retriever's search), `model`, `extract`,
    /// `schema`, `fix`, `action` (an action's check against its tool) and `repair`.
    pub layer: &'static str,
    /// The plugin or provider; empty for the host's own steps.
    pub name: String,
    /// The attempt it belongs to (0 before the first model call).
    pub attempt: u32,
    /// What happened, in a few words.
    pub result: String,
    /// Start, in µs since the run started.
    pub start_us: u64,
    pub duration_us: u64,
}

/// Every `TraceStep::layer` the engine writes. A stored trace reads back
/// into these names (anything else reads as `other`).
pub const TRACE_LAYERS: &[&str] = &[
    "normalizer",
    "history",
    "retrieve",
    "context",
    "constraints",
    "validator",
    "gate",
    "model",
    "extract",
    "schema",
    "fix",
    "action",
    "repair",
    "judge",
    "execute",
    "other",
];

/// A closed set's name from stored JSON, as the `'static` name the engine uses.
fn known_name(names: &[&'static str], name: &str) -> &'static str {
    names
        .iter()
        .copied()
        .find(|k| *k == name)
        .unwrap_or("other")
}

/// A [`TraceStep`] as stored, before its layer is matched to the engine's name.
#[derive(Deserialize)]
struct StoredTraceStep {
    layer: String,
    name: String,
    attempt: u32,
    result: String,
    start_us: u64,
    duration_us: u64,
}

impl<'de> Deserialize<'de> for TraceStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StoredTraceStep::deserialize(d).map(TraceStep::from)
    }
}

impl From<StoredTraceStep> for TraceStep {
    fn from(s: StoredTraceStep) -> TraceStep {
        TraceStep {
            layer: known_name(TRACE_LAYERS, &s.layer),
            name: s.name,
            attempt: s.attempt,
            result: s.result,
            start_us: s.start_us,
            duration_us: s.duration_us,
        }
    }
}

impl TraceStep {
    pub fn end_us(&self) -> u64 {
        self.start_us + self.duration_us
    }
}

/// The exit codes of `reins run`, the one list of them: scripts branch on
/// these numbers, so `reins run --help` prints [`ExitCode::help`] and the
/// run's outcome maps here ([`RunResult::exit_code`]), never to a bare number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Completed = 0,
    PluginFailed = 1,
    BadInput = 2,
    ValidationFailed = 3,
    Rejected = 4,
    ModelUnavailable = 5,
    AwaitingApproval = 6,
    RateLimited = 7,
    NotOwned = 8,
    Cancelled = 9,
}

impl ExitCode {
    /// Every code, lowest first.
    pub const ALL: [ExitCode; 10] = [
        ExitCode::Completed,
        ExitCode::PluginFailed,
        ExitCode::BadInput,
        ExitCode::ValidationFailed,
        ExitCode::Rejected,
        ExitCode::ModelUnavailable,
        ExitCode::AwaitingApproval,
        ExitCode::RateLimited,
        ExitCode::NotOwned,
        ExitCode::Cancelled,
    ];

    pub fn code(self) -> i32 {
        self as i32
    }

    /// What the code tells the caller, as `--help` prints it.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Completed => "completed: the output is on stdout",
            ExitCode::PluginFailed => {
                "a fail-closed plugin failed or is missing, or an action failed"
            }
            ExitCode::BadInput => {
                "bad input or config (unknown pipeline, empty input, the provider refused the request)"
            }
            ExitCode::ValidationFailed => "validation not repaired within the limits",
            ExitCode::Rejected => {
                "rejected by a normalizer or gate, or an approver rejected an action"
            }
            ExitCode::ModelUnavailable => "model unavailable",
            ExitCode::AwaitingApproval => {
                "awaiting approval: the output is on stdout, its actions wait for a human"
            }
            ExitCode::RateLimited => "rate limited, or every provider saturated (retry later)",
            ExitCode::NotOwned => {
                "the run continues on another node (or its idempotency key is another run's)"
            }
            ExitCode::Cancelled => "cancelled: the run's caller went away before the answer",
        }
    }

    /// The table `reins run --help` ends with.
    pub fn help() -> String {
        let mut out = String::from("Exit codes:");
        for c in ExitCode::ALL {
            out.push_str(&format!("\n  {}  {}", c.code(), c.meaning()));
        }
        out
    }
}

/// Why a run did not complete. [`RunError::exit_code`] maps each class to
/// the exit code of `reins run`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error("no pipeline `{0}`")]
    UnknownPipeline(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("rejected by normalizer `{plugin}`: {reason}")]
    Rejected { plugin: String, reason: String },
    #[error("rejected by gate `{gate}` on `{tool}`: {reason}")]
    Denied {
        gate: String,
        tool: String,
        reason: String,
    },
    #[error("validation failed after {attempts} attempt(s) ({stop}): {summary}")]
    ValidationFailed {
        attempts: u32,
        stop: StopReason,
        summary: String,
    },
    #[error("model unavailable: {}", errors.join("; "))]
    ModelUnavailable { errors: Vec<String> },
    /// A stream checker (or the schema's prefix check) stopped a streamed
    /// answer; what it had passed was sent, the rest never was.
    #[error("the stream was cut by `{checker}`: {reason}")]
    StreamCut { checker: String, reason: String },
    /// The upstream failed after part of its answer had been streamed to
    /// the client, so no other provider could take over.
    #[error("the model's stream broke after part of the answer was sent: {message}")]
    StreamBroken { message: String },
    /// Every provider of the chain is saturated or at its limits and the
    /// run could not wait for one within its deadline: the caller should
    /// come back after `retry_after_ms`.
    #[error("overloaded: {}; retry in {} s", errors.join("; "), retry_after_ms.div_ceil(1000).max(1))]
    Overloaded {
        errors: Vec<String>,
        retry_after_ms: u64,
    },
    /// The upstream refused the request itself (a 4xx that no negotiation
    /// fixed): the caller's to change, not an outage.
    #[error("provider `{provider}` refused the request (HTTP {status}): {message}")]
    UpstreamRefused {
        provider: String,
        status: u16,
        message: String,
    },
    #[error("action `{tool}` failed: {message}")]
    ActionFailed { tool: String, message: String },
    #[error("approval {approval} for `{tool}` was rejected by {approver}: {comment}")]
    ApprovalRejected {
        approval: String,
        tool: String,
        approver: String,
        comment: String,
    },
    #[error("rate limit exceeded for {key}: {message}; retry in {retry_after_s} s")]
    RateLimited {
        key: String,
        message: String,
        retry_after_s: u64,
    },
    #[error("{layer} plugin `{plugin}` failed ({kind}): {message}")]
    Plugin {
        layer: &'static str,
        plugin: String,
        kind: &'static str,
        message: String,
    },
    /// The request says something its credential contradicts (a body
    /// `metadata` role or tenant the caller does not hold).
    #[error("forbidden: {message}")]
    Forbidden { key: String, message: String },
    #[error("{layer} plugin `{plugin}` is not loaded")]
    MissingPlugin { layer: &'static str, plugin: String },
    /// A retriever of the pipeline's context could not answer: no answer
    /// is given without the context it was meant to have.
    #[error("context unavailable: {message}")]
    ContextUnavailable { retriever: String, message: String },
    /// This node lost the run's lease (it stalled past it and another node
    /// took the run over) or the run is already being run: the run goes on
    /// where it is owned; ask the store for its result.
    #[error("run `{run_id}` continues elsewhere: {message}")]
    NotOwned { run_id: String, message: String },
    /// The run's caller went away before the answer (an HTTP client that
    /// disconnected, on a pipeline that does not finish such runs): the
    /// model call in flight was dropped, no action not yet started was
    /// sent. Actions already sent stay sent.
    #[error("cancelled: {reason}")]
    Cancelled { reason: String },
    /// An error read back from a stored run: its kind and message as they
    /// were recorded (the variant's fields are not stored).
    #[error("{message}")]
    Recorded { kind: &'static str, message: String },
}

/// Every [`RunError::kind`].
pub const ERROR_KINDS: &[&str] = &[
    "unknown_pipeline",
    "bad_request",
    "rejected",
    "denied",
    "validation_failed",
    "model_unavailable",
    "upstream_refused",
    "plugin_failed",
    "action_failed",
    "approval_rejected",
    "rate_limited",
    "overloaded",
    "missing_plugin",
    "not_owned",
    "forbidden",
    "cancelled",
    "stream_cut",
    "stream_broken",
    "other",
];

impl RunError {
    /// The run's client disconnected: the one message a cancelled run records.
    pub fn client_gone() -> RunError {
        RunError::Cancelled {
            reason: "the client disconnected before the answer; the run was stopped".to_owned(),
        }
    }

    /// A stable short name.
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::UnknownPipeline(_) => "unknown_pipeline",
            RunError::BadRequest(_) => "bad_request",
            RunError::Rejected { .. } => "rejected",
            RunError::Denied { .. } => "denied",
            RunError::ValidationFailed { .. } => "validation_failed",
            RunError::ModelUnavailable { .. } => "model_unavailable",
            RunError::UpstreamRefused { .. } => "upstream_refused",
            RunError::Plugin { .. } => "plugin_failed",
            RunError::ActionFailed { .. } => "action_failed",
            RunError::ApprovalRejected { .. } => "approval_rejected",
            RunError::RateLimited { .. } => "rate_limited",
            RunError::Overloaded { .. } => "overloaded",
            RunError::MissingPlugin { .. } => "missing_plugin",
            RunError::ContextUnavailable { .. } => "context_unavailable",
            RunError::NotOwned { .. } => "not_owned",
            RunError::Forbidden { .. } => "forbidden",
            RunError::Cancelled { .. } => "cancelled",
            RunError::StreamCut { .. } => "stream_cut",
            RunError::StreamBroken { .. } => "stream_broken",
            RunError::Recorded { kind, .. } => kind,
        }
    }

    /// `reins run`'s exit code (see [`ExitCode`]).
    pub fn exit_code(&self) -> i32 {
        self.exit().code()
    }

    fn exit(&self) -> ExitCode {
        match self {
            RunError::UnknownPipeline(_)
            | RunError::BadRequest(_)
            | RunError::UpstreamRefused { .. } => ExitCode::BadInput,
            RunError::ValidationFailed { .. } => ExitCode::ValidationFailed,
            RunError::Rejected { .. }
            | RunError::Denied { .. }
            | RunError::ApprovalRejected { .. }
            | RunError::Forbidden { .. } => ExitCode::Rejected,
            RunError::ModelUnavailable { .. }
            | RunError::StreamBroken { .. }
            | RunError::ContextUnavailable { .. } => ExitCode::ModelUnavailable,
            RunError::StreamCut { .. } => ExitCode::ValidationFailed,
            RunError::Plugin { .. }
            | RunError::MissingPlugin { .. }
            | RunError::ActionFailed { .. } => ExitCode::PluginFailed,
            RunError::RateLimited { .. } | RunError::Overloaded { .. } => ExitCode::RateLimited,
            RunError::NotOwned { .. } => ExitCode::NotOwned,
            RunError::Cancelled { .. } => ExitCode::Cancelled,
            RunError::Recorded { kind, .. } => match *kind {
                "unknown_pipeline" | "bad_request" | "upstream_refused" => ExitCode::BadInput,
                "validation_failed" | "stream_cut" => ExitCode::ValidationFailed,
                "rejected" | "denied" | "approval_rejected" | "forbidden" => ExitCode::Rejected,
                "model_unavailable" | "stream_broken" | "context_unavailable" => {
                    ExitCode::ModelUnavailable
                }
                "rate_limited" | "overloaded" => ExitCode::RateLimited,
                "not_owned" => ExitCode::NotOwned,
                "cancelled" => ExitCode::Cancelled,
                _ => ExitCode::PluginFailed,
            },
        }
    }
}

impl Serialize for RunError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("kind", self.kind())?;
        m.serialize_entry("message", &self.to_string())?;
        if let RunError::ValidationFailed { stop, .. } = self {
            m.serialize_entry("stop", stop)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for RunError {
    /// Reads the stored `{kind, message}` form back as [`RunError::Recorded`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Stored {
            kind: String,
            #[serde(default)]
            message: String,
        }
        let Stored { kind, message } = Stored::deserialize(d)?;
        Ok(RunError::Recorded {
            kind: known_name(ERROR_KINDS, &kind),
            message,
        })
    }
}

/// Why the repair loop stopped without a valid output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `max_attempts` model calls were made.
    MaxAttempts,
    /// The token budget is spent (or the next attempt would overspend it).
    TokenBudget,
    /// An attempt had the same violations as the one before: repairing is not converging.
    Repeated,
    /// A validator with `on_fail = "fail"` found a problem.
    FailFast,
    /// Part of the answer had been streamed to the client: it cannot be repaired.
    Streamed,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::MaxAttempts => "max_attempts reached",
            StopReason::TokenBudget => "token budget spent",
            StopReason::Repeated => {
                "the same violations twice in a row, with no repair strategy left to change"
            }
            StopReason::FailFast => "a fail-fast validator failed",
            StopReason::Streamed => "the answer had already been streamed to the client",
        })
    }
}

/// What the context stage did: every chunk it was offered (retrieved or
/// sent by the caller), which the builder kept, which it dropped and why,
/// with the tokens of each in the pipeline's tokenizer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextReport {
    pub query: String,
    /// `o200k_base`, `cl100k_base`, or `heuristic` (a model whose tokenizer
    /// is not known: about four characters a token).
    pub tokenizer: String,
    pub budget_tokens: u32,
    /// Tokens of the kept chunks, labels included.
    pub used_tokens: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::retrieval::SourceReport>,
    pub offered: Vec<ContextChunk>,
    /// In the order the model sees them.
    pub kept: Vec<ContextChunk>,
    pub dropped: Vec<ContextChunk>,
}

/// One chunk in a [`ContextReport`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContextChunk {
    pub id: String,
    pub source: String,
    pub score: f32,
    pub tokens: usize,
    /// Why it was dropped, or that it was trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The outcome of a run: what the library returns, what the API answers
/// and what the store keeps as the run's `result` (it reads back with serde).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub run_id: String,
    pub pipeline: String,
    pub status: RunStatus,
    /// The validated output (also set when awaiting approval).
    pub output: Option<Value>,
    pub attempts: Vec<Attempt>,
    /// Normalizer findings.
    pub findings: Vec<Finding>,
    pub decisions: Vec<GateDecision>,
    /// Actions every gate allowed (to execute, or to hand to the caller).
    pub actions: Vec<Action>,
    /// True when the pipeline is a dry run: `actions` were approved but must
    /// not be executed.
    pub dry_run: bool,
    /// Escalated actions waiting for a human (the run is `awaiting_approval`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingApproval>,
    /// Ids of the approvals this run waits on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<String>,
    /// What happened to each approved action (webhook, returned, planned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub executions: Vec<super::Execution>,
    /// Budget the gates reserved, by action index; released when an action
    /// does not happen. Not part of the answer.
    #[serde(skip)]
    pub reservations: Vec<(usize, reins_runtime::Reservation)>,
    /// Index of each of `actions` among the attempt's proposed actions.
    #[serde(skip)]
    pub action_indices: Vec<usize>,
    /// Plugins skipped because they failed and are `fail_mode = "open"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    pub trace: Vec<TraceStep>,
    /// Tokens of all attempts together.
    pub tokens: Tokens,
    pub duration_us: u64,
    /// The answer came from a fallback (another provider, the cache or the
    /// static answer), not from the first provider of its chain.
    pub degraded: bool,
    /// What produced the final answer: a provider's name, `cache` or `static`.
    pub served_by: Option<String>,
    /// How the answer was streamed (`buffered`, `checked`, `json`), for a
    /// caller that asked for a stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// What the caller should be told about a degraded answer (the static
    /// answer's configured message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    pub error: Option<RunError>,
    /// What the context stage retrieved, kept and dropped, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextReport>,
    /// What the history budget did to the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<super::history::HistoryReport>,
    /// The run's trace and span (hex), when it was traced: where to find
    /// it in the tracing backend, and what its later steps (approved
    /// actions) join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// Who started the run (its owner: another tenant does not see it).
    #[serde(default, skip_serializing_if = "is_anonymous")]
    pub caller: reins_runtime::Caller,
}

fn is_anonymous(caller: &reins_runtime::Caller) -> bool {
    *caller == reins_runtime::Caller::anonymous()
}

impl RunResult {
    /// A fresh result for a run that has not done anything yet.
    pub fn new(run_id: impl Into<String>, pipeline: impl Into<String>) -> RunResult {
        RunResult {
            run_id: run_id.into(),
            pipeline: pipeline.into(),
            status: RunStatus::Failed,
            output: None,
            attempts: Vec::new(),
            findings: Vec::new(),
            decisions: Vec::new(),
            actions: Vec::new(),
            dry_run: false,
            pending: Vec::new(),
            executions: Vec::new(),
            approvals: Vec::new(),
            reservations: Vec::new(),
            action_indices: Vec::new(),
            skipped: Vec::new(),
            trace: Vec::new(),
            tokens: Tokens::default(),
            duration_us: 0,
            degraded: false,
            served_by: None,
            stream: None,
            notice: None,
            error: None,
            context: None,
            history: None,
            trace_id: None,
            span_id: None,
            caller: reins_runtime::Caller::anonymous(),
        }
    }

    /// Model calls that were repairs (attempts after the first).
    pub fn repairs(&self) -> usize {
        self.attempts.len().saturating_sub(1)
    }

    /// `reins run`'s exit code for this result.
    pub fn exit_code(&self) -> i32 {
        match (&self.error, self.status) {
            (Some(e), _) => e.exit(),
            (None, RunStatus::Completed) => ExitCode::Completed,
            (None, RunStatus::AwaitingApproval) => ExitCode::AwaitingApproval,
            (None, RunStatus::Rejected) => ExitCode::Rejected,
            (None, RunStatus::Cancelled) => ExitCode::Cancelled,
            (None, RunStatus::Failed | RunStatus::Running | RunStatus::Partial) => {
                ExitCode::PluginFailed
            }
        }
        .code()
    }

    /// The output of a completed run, or why there is none.
    pub fn into_output(self) -> Result<Value, RunError> {
        match (self.status, self.error, self.output) {
            (RunStatus::Completed, _, Some(output)) => Ok(output),
            (_, Some(e), _) => Err(e),
            (status, None, _) => Err(RunError::BadRequest(format!(
                "run ended {}",
                status.as_str()
            ))),
        }
    }

    /// The trace as a table: layer, name, attempt, result, µs.
    pub fn trace_table(&self) -> String {
        use std::fmt::Write;
        let rows: Vec<[String; 5]> = self
            .trace
            .iter()
            .map(|s| {
                [
                    s.layer.to_owned(),
                    if s.name.is_empty() {
                        "-".to_owned()
                    } else {
                        s.name.clone()
                    },
                    if s.attempt == 0 {
                        "-".to_owned()
                    } else {
                        s.attempt.to_string()
                    },
                    s.result.clone(),
                    s.duration_us.to_string(),
                ]
            })
            .collect();
        let header = ["layer", "plugin", "attempt", "result", "µs"];
        let mut widths = header.map(|h| h.chars().count());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: [&str; 5]| {
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                let pad = w.saturating_sub(cell.chars().count());
                if i == 4 {
                    let _ = write!(out, "{}{cell}", " ".repeat(pad));
                } else {
                    let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
                }
            }
            out.push('\n');
        };
        line(&mut out, header);
        for row in &rows {
            line(&mut out, [&row[0], &row[1], &row[2], &row[3], &row[4]]);
        }
        if let Some(c) = &self.context {
            let _ = writeln!(
                out,
                "context: {} of {} chunks kept, {} of {} tokens ({}): {}",
                c.kept.len(),
                c.offered.len(),
                c.used_tokens,
                c.budget_tokens,
                c.tokenizer,
                c.kept
                    .iter()
                    .map(|k| match &k.reason {
                        Some(r) => format!("{} ({r})", k.id),
                        None => k.id.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for d in &c.dropped {
                let _ = writeln!(
                    out,
                    "  dropped {}: {}",
                    d.id,
                    d.reason.as_deref().unwrap_or("-")
                );
            }
        }
        let _ = writeln!(
            out,
            "run {} {}: {} attempt(s), {} repair(s), {} tokens{}, {} µs",
            self.run_id,
            self.status.as_str(),
            self.attempts.len(),
            self.repairs(),
            self.tokens.total,
            if self.tokens.estimated {
                " (estimated)"
            } else {
                ""
            },
            self.duration_us
        );
        if let Some(e) = &self.error {
            let _ = writeln!(out, "error: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored form of a run reads back into the same answer, so a node
    /// restoring a held run sees what the node that held it saw.
    #[test]
    fn a_stored_result_reads_back_the_same() {
        let mut r = RunResult::new("r1", "p");
        r.status = RunStatus::AwaitingApproval;
        r.output = Some(serde_json::json!({"refund": 40}));
        r.attempts.push(Attempt {
            attempt: 1,
            provider: "m".into(),
            model: "x".into(),
            raw: "{}".into(),
            tool_calls: Vec::new(),
            violations: Vec::new(),
            fixed_by: vec!["coerce".into()],
            tokens: Tokens {
                prompt: 3,
                completion: 2,
                total: 5,
                estimated: true,
            },
            latency_us: 7,
        });
        r.trace.push(TraceStep {
            layer: "validator",
            name: "ranges".into(),
            attempt: 1,
            result: "ok".into(),
            start_us: 1,
            duration_us: 2,
        });
        r.error = Some(RunError::ValidationFailed {
            attempts: 2,
            stop: StopReason::Repeated,
            summary: "x".into(),
        });
        let stored = serde_json::to_value(&r).expect("serializes");
        let back: RunResult = serde_json::from_value(stored.clone()).expect("reads back");
        assert_eq!(serde_json::to_value(&back).expect("serializes"), {
            let mut s = stored;
            s["error"].as_object_mut().expect("error").remove("stop");
            s
        });
        assert_eq!(back.trace[0].layer, "validator");
        assert_eq!(
            back.error.as_ref().map(RunError::kind),
            Some("validation_failed")
        );
        assert_eq!(back.exit_code(), r.exit_code());
    }
}
