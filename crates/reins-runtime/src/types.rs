//! Host-side values that cross the plugin boundary.
//!
//! These mirror the WIT records in `wit/reins.wit`, but carry parsed JSON
//! (`serde_json::Value`) instead of JSON text so that the pipeline never
//! handles unparsed plugin output: the runtime parses and checks every JSON
//! value a plugin returns before anyone sees it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The harness layer a plugin implements, detected from the component's exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Normalizer,
    Validator,
    Constraints,
    Gate,
    Context,
    /// Checks text while it streams (alone, or next to a validator).
    StreamChecker,
}

impl Layer {
    /// Every layer, in request-path order.
    pub const ALL: [Layer; 6] = [
        Layer::Normalizer,
        Layer::Context,
        Layer::Constraints,
        Layer::StreamChecker,
        Layer::Validator,
        Layer::Gate,
    ];

    /// The exported interface that identifies this layer.
    pub fn interface(self) -> &'static str {
        match self {
            Layer::Normalizer => "reins:policy/normalizer@0.2.0",
            Layer::Validator => "reins:policy/validator@0.2.0",
            Layer::Constraints => "reins:policy/constraints@0.2.0",
            Layer::Gate => "reins:policy/gate@0.2.0",
            Layer::Context => "reins:policy/context-builder@0.2.0",
            Layer::StreamChecker => "reins:policy/stream-checker@0.2.0",
        }
    }

    /// The WIT world a plugin of this layer targets.
    pub fn world(self) -> &'static str {
        match self {
            Layer::Normalizer => "normalizer-plugin",
            Layer::Validator => "validator-plugin",
            Layer::Constraints => "constraints-plugin",
            Layer::Gate => "gate-plugin",
            Layer::Context => "context-plugin",
            Layer::StreamChecker => "stream-checker-plugin",
        }
    }

    /// The name used in configs and on the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Normalizer => "normalizer",
            Layer::Validator => "validator",
            Layer::Constraints => "constraints",
            Layer::Gate => "gate",
            Layer::Context => "context",
            Layer::StreamChecker => "stream-checker",
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stream checker's answer about one piece of streamed text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "text")]
pub enum StreamVerdict {
    Pass,
    /// Wait for more text before deciding.
    Hold,
    /// Stop the stream, for this reason.
    Cut(String),
    /// Release this text instead.
    Replace(String),
}

/// One chat message, with everything a chat API may put on it. Plugins see
/// `role` and `content` (the text); the rest travels with the message to the
/// model untouched, so a conversation comes out the way it went in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    /// The text: the string content, or the text parts of a multi-part
    /// content joined by newlines. What normalizers see and rewrite.
    pub content: String,
    /// The tool calls an `assistant` message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<MessageToolCall>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A participant's name (OpenAI `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A `tool` message whose call failed (Anthropic `tool_result.is_error`).
    /// A model API with no such flag is shown [`TOOL_ERROR_MARK`] before the text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
    /// The original multi-part content (text and e.g. image parts), when the
    /// caller sent parts: non-text parts go to the model as they came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Vec<Value>>,
}

/// What marks a failed tool result's content for a model whose API has no
/// error flag on tool results (OpenAI's).
pub const TOOL_ERROR_MARK: &str = "[tool error] ";

/// `content` (a string, or a list of parts) marked as a failed tool result:
/// the mark goes before the text (before the first text part).
pub fn mark_tool_error(content: Value) -> Value {
    match content {
        Value::String(s) => Value::String(format!("{TOOL_ERROR_MARK}{s}")),
        Value::Array(mut parts) => {
            match parts
                .iter_mut()
                .find(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .and_then(|p| p.get_mut("text"))
            {
                Some(Value::String(t)) => *t = format!("{TOOL_ERROR_MARK}{t}"),
                _ => parts.insert(
                    0,
                    serde_json::json!({"type": "text", "text": TOOL_ERROR_MARK.trim_end()}),
                ),
            }
            Value::Array(parts)
        }
        other => other,
    }
}

/// A tool call recorded in a conversation: ids tie a `tool` result to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (JSON text, possibly invalid).
    pub arguments: String,
}

impl Message {
    /// A message with the given role, for building conversations in code.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            is_error: false,
            parts: None,
        }
    }

    /// A `tool` message answering call `id`.
    pub fn tool_result(id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(id.into()),
            ..Self::new("tool", content)
        }
    }

    /// An `assistant` message that calls tools.
    pub fn tool_calls(content: impl Into<String>, calls: Vec<MessageToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new("assistant", content)
        }
    }

    /// This message with its text replaced (by a normalizer): multi-part
    /// content keeps its non-text parts in place; the new text takes the
    /// first text part's place and the other text parts (whose text it now
    /// holds) go.
    pub fn with_text(mut self, text: String) -> Self {
        if text == self.content {
            return self;
        }
        if let Some(parts) = self.parts.take() {
            let mut placed = false;
            let mut out = Vec::with_capacity(parts.len());
            for part in parts {
                if part.get("type").and_then(Value::as_str) == Some("text") {
                    if !placed {
                        out.push(serde_json::json!({"type": "text", "text": text}));
                        placed = true;
                    }
                } else {
                    out.push(part);
                }
            }
            if !placed {
                out.insert(0, serde_json::json!({"type": "text", "text": text}));
            }
            self.parts = Some(out);
        }
        self.content = text;
        self
    }
}

/// What a plugin call is told about the request it serves. The plugin's own
/// `config` is added by the runtime from the plugin's manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallContext {
    pub run_id: String,
    pub pipeline: String,
    pub attempt: u32,
    /// The caller's metadata (channel, locale...), a JSON object: hints the
    /// caller wrote itself, never proof of who it is.
    pub metadata: Value,
    /// Who is calling, as the credential says (see [`Caller`]).
    pub caller: Caller,
    /// What the request says, for the `request-text` import (grounding).
    #[serde(skip)]
    pub request_text: std::sync::Arc<str>,
    /// The pipeline's MCP upstream tools as a JSON array, for the
    /// `upstream-tools` import; empty means `[]`.
    #[serde(skip)]
    pub upstream_tools: std::sync::Arc<str>,
    /// The judge model, when the pipeline grants it (the `judge` import).
    #[serde(skip)]
    pub judge: Option<JudgeHandle>,
    /// The tokenizer family of the pipeline's model, for the
    /// `count-tokens` import.
    #[serde(skip)]
    pub tokenizer: crate::tokens::Tokenizer,
    /// This run's context chunks as a JSON array of `{id, source, score,
    /// kept}`, for the `context-chunks` import (citation checks); empty
    /// means `[]`.
    #[serde(skip)]
    pub context_chunks: std::sync::Arc<str>,
}

/// Who is calling: resolved by the host from the credential (a token's
/// claims, a verified JWT) before any plugin runs, never from the request
/// body. Plugins key budgets, tools and rate limits on this; `metadata`
/// stays a caller-written hint. A pipeline with `trust_metadata = true`
/// (open local development) fills what the credential leaves empty from
/// `metadata`, and says so in `credential`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Caller {
    /// The token's name or the JWT's `sub`; `anonymous` without a credential.
    pub subject: String,
    pub tenant: Option<String>,
    pub roles: Vec<String>,
    /// How the identity was established: `token:NAME`, `jwt:ISSUER`,
    /// `metadata` (trusted by the pipeline) or `none`.
    pub credential: String,
    /// Every other claim the credential carries (strings and string arrays).
    pub claims: serde_json::Map<String, Value>,
}

impl Default for Caller {
    fn default() -> Caller {
        Caller::anonymous()
    }
}

impl Caller {
    /// No credential: no tenant, no roles.
    pub fn anonymous() -> Caller {
        Caller {
            subject: "anonymous".to_owned(),
            tenant: None,
            roles: Vec::new(),
            credential: "none".to_owned(),
            claims: serde_json::Map::new(),
        }
    }

    /// True when a credential (not the caller's own word) established it.
    pub fn is_verified(&self) -> bool {
        self.credential != "none" && self.credential != "metadata"
    }

    /// The value of one identity key: `tenant`, `subject`, `roles`/`role`,
    /// or any other claim.
    pub fn get(&self, key: &str) -> Option<Value> {
        match key {
            "tenant" => self.tenant.clone().map(Value::String),
            "subject" | "sub" | "user" => Some(Value::String(self.subject.clone())),
            "roles" | "role" if !self.roles.is_empty() => Some(Value::from(self.roles.clone())),
            "roles" | "role" => None,
            other => self.claims.get(other).cloned(),
        }
    }
}

/// A model a plugin may ask (the `judge` import). The runtime knows nothing
/// of providers: the pipeline hands one in per run.
pub trait Judge: Send + Sync {
    /// Blocks until the judge answers `question`, or says why it cannot,
    /// within `within` (what is left of the asking plugin's deadline).
    fn ask(
        &self,
        system: &str,
        question: &str,
        within: std::time::Duration,
    ) -> Result<String, String>;
}

/// A shared [`Judge`], carried by a call's context.
#[derive(Clone)]
pub struct JudgeHandle(pub std::sync::Arc<dyn Judge>);

impl std::fmt::Debug for JudgeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JudgeHandle")
    }
}

/// How bad a finding is; `Error` findings reject a request or fail validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One problem, addressed by JSON Pointer, written so that a model can fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Violation {
    pub path: String,
    pub code: String,
    pub message: String,
    pub severity: Severity,
}

/// What a normalizer returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalized {
    pub messages: Vec<Message>,
    pub findings: Vec<Violation>,
}

/// What a validator returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    /// A corrected document (already parsed), for validators that fix.
    pub fixed: Option<Value>,
}

/// How dangerous a tool is; gates and approvals key off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    Irreversible,
}

/// A tool the model may call in this request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    pub access: Access,
}

/// An action the model proposes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub tool: String,
    pub arguments: Value,
    pub access: Access,
}

/// A gate's decision on one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny(String),
    Escalate(String),
    Rewrite(Value),
}

impl Decision {
    /// The decision's kind, for metrics and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny(_) => "deny",
            Decision::Escalate(_) => "escalate",
            Decision::Rewrite(_) => "rewrite",
        }
    }
}

/// A retrieved piece of context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    pub id: String,
    pub text: String,
    pub score: f32,
    pub source: String,
}

/// What a context builder returns: the chunks for the model, in order, and
/// why it left others out (or trimmed them), for the run's trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Assembled {
    pub chunks: Vec<Chunk>,
    /// What the plugin said through `explain-drop` during the call, in the
    /// order it said it (capped: see [`MAX_DROPPED`]).
    pub dropped: Vec<Dropped>,
}

/// One chunk a context builder left out or trimmed, and why, in its words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub id: String,
    pub reason: String,
}

/// Most `explain-drop` entries one call keeps: a plugin cannot grow a
/// run's trace without bound.
pub const MAX_DROPPED: usize = 1000;
/// Longest `explain-drop` reason kept, in bytes (cut at a character).
pub const MAX_DROP_REASON: usize = 512;
/// Longest `explain-drop` chunk id kept, in bytes (cut at a character).
pub const MAX_DROP_ID: usize = 256;
