//! Host-side values that cross the plugin boundary.
//!
//! These mirror the WIT records in `wit/reins.wit`, but carry parsed JSON
//! (`serde_json::Value`) instead of JSON text so that the pipeline never
//! handles unparsed plugin output: the runtime parses and checks every JSON
//! value a plugin returns before anyone sees it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The harness layer a plugin implements, detected from the component's exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Normalizer,
    Validator,
    Constraints,
    Gate,
    Context,
}

impl Layer {
    /// Every layer, in request-path order.
    pub const ALL: [Layer; 5] = [
        Layer::Normalizer,
        Layer::Context,
        Layer::Constraints,
        Layer::Validator,
        Layer::Gate,
    ];

    /// The exported interface that identifies this layer.
    pub fn interface(self) -> &'static str {
        match self {
            Layer::Normalizer => "reins:policy/normalizer@0.1.0",
            Layer::Validator => "reins:policy/validator@0.1.0",
            Layer::Constraints => "reins:policy/constraints@0.1.0",
            Layer::Gate => "reins:policy/gate@0.1.0",
            Layer::Context => "reins:policy/context-builder@0.1.0",
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
        }
    }
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// A message with the given role, for building conversations in code.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What a plugin call is told about the request it serves. The plugin's own
/// `config` is added by the runtime from the plugin's manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CallContext {
    pub run_id: String,
    pub pipeline: String,
    pub attempt: u32,
    /// The caller's metadata (tenant, user, role...), a JSON object.
    pub metadata: Value,
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
