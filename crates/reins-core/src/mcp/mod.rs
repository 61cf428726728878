//! Reins as an MCP gateway: the upstream servers a config declares
//! ([`Upstream`]), the tools a pipeline offers of them ([`ExposedTool`]) and
//! what can go wrong on the way ([`McpError`]). The orchestration of a
//! `tools/call` (gates, approvals, action log, result screening) is
//! `Host::mcp_call`; the plugin stages it runs are the engine's.

use reins_runtime::{Access, Tool};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod http;
mod upstream;
pub use upstream::{Passthrough, Upstream};

/// The separator of a namespaced tool name, `SERVER__TOOL`.
pub const SEPARATOR: &str = "__";

/// The key a constraints plugin sets in a tool's `parameters` to say which
/// upstream tool a renamed tool stands for; stripped before anyone sees it.
pub const UPSTREAM_KEY: &str = "x-reins-upstream";

/// A tool as an upstream lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamTool {
    /// Namespaced: `SERVER__TOOL`.
    pub name: String,
    pub server: String,
    /// The upstream's own name.
    pub tool: String,
    pub description: String,
    pub input_schema: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
    /// SHA-256 of the name, description and input schema: what a pin holds.
    pub hash: String,
}

impl UpstreamTool {
    /// From one entry of a `tools/list` answer (as JSON).
    pub fn from_listing(server: &str, listed: &Value) -> UpstreamTool {
        let tool = listed["name"].as_str().unwrap_or_default().to_owned();
        let description = listed["description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let input_schema = match &listed["inputSchema"] {
            Value::Object(o) => {
                let mut o = o.clone();
                // Only the operator's manifest routes a tool to another one.
                o.remove(UPSTREAM_KEY);
                Value::Object(o)
            }
            _ => json!({"type": "object"}),
        };
        let annotations = listed.get("annotations").filter(|a| a.is_object()).cloned();
        UpstreamTool {
            name: format!("{server}{SEPARATOR}{tool}"),
            server: server.to_owned(),
            hash: definition_hash(&tool, &description, &input_schema),
            tool,
            description,
            input_schema,
            annotations,
        }
    }

    /// The access level the upstream's hints suggest: read-only tools
    /// read, destructive ones are irreversible, the rest write.
    pub fn access(&self) -> Access {
        let hint = |k: &str| {
            self.annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .and_then(Value::as_bool)
        };
        if hint("readOnlyHint") == Some(true) {
            Access::Read
        } else if hint("destructiveHint") == Some(true) {
            Access::Irreversible
        } else {
            Access::Write
        }
    }

    /// The definition a pin records.
    pub fn definition(&self) -> Value {
        json!({"name": self.tool, "description": self.description, "inputSchema": self.input_schema})
    }
}

/// The hash of a tool definition, over canonical JSON (sorted keys), so
/// that key order in an upstream's answer does not count as a change.
pub fn definition_hash(name: &str, description: &str, schema: &Value) -> String {
    let canonical =
        canonical(&json!({"name": name, "description": description, "inputSchema": schema}));
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&o[*k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// The upstream tools as the `upstream-tools` import answers them.
pub fn upstream_json(tools: &[UpstreamTool]) -> String {
    Value::Array(
        tools
            .iter()
            .map(|t| {
                json!({
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.input_schema,
                    "server": t.server,
                    "tool": t.tool,
                    "annotations": t.annotations,
                })
            })
            .collect(),
    )
    .to_string()
}

/// A tool a pipeline's MCP endpoint offers, and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExposedTool {
    /// What the agent sees and calls.
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub access: Access,
    pub server: String,
    /// The upstream's own name.
    pub tool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
}

impl ExposedTool {
    /// As the gates and the argument check see it.
    pub fn as_tool(&self) -> Tool {
        Tool {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: self.input_schema.clone(),
            access: self.access,
        }
    }
}

/// What a pipeline offers: with a constraints plugin, the tools it
/// returns that stand for an upstream tool (by name, or renamed with
/// [`UPSTREAM_KEY`]), with its description, schema and access level;
/// without one, every upstream tool, graded by its hints.
pub fn expose(plugin_tools: Option<Vec<Tool>>, upstream: &[UpstreamTool]) -> Vec<ExposedTool> {
    let Some(tools) = plugin_tools else {
        return upstream
            .iter()
            .map(|u| ExposedTool {
                name: u.name.clone(),
                description: u.description.clone(),
                input_schema: u.input_schema.clone(),
                access: u.access(),
                server: u.server.clone(),
                tool: u.tool.clone(),
                annotations: u.annotations.clone(),
            })
            .collect();
    };
    let mut out: Vec<ExposedTool> = Vec::new();
    for t in tools {
        let mut schema = t.parameters.clone();
        let target = match schema.as_object_mut().and_then(|o| o.remove(UPSTREAM_KEY)) {
            Some(Value::String(s)) => s,
            _ => t.name.clone(),
        };
        let Some(u) = upstream.iter().find(|u| u.name == target) else {
            tracing::debug!(tool = %t.name, upstream = %target, "constraints named a tool no upstream lists now; not offered");
            continue;
        };
        if out.iter().any(|e| e.name == t.name) {
            continue;
        }
        let description = if t.description.is_empty() {
            u.description.clone()
        } else {
            t.description.clone()
        };
        // An empty or bare-object schema from the manifest keeps the upstream's.
        let bare = schema
            .as_object()
            .is_none_or(|o| o.keys().all(|k| k == "type"));
        out.push(ExposedTool {
            name: t.name.clone(),
            description,
            input_schema: if bare { u.input_schema.clone() } else { schema },
            access: t.access,
            server: u.server.clone(),
            tool: u.tool.clone(),
            annotations: u.annotations.clone(),
        });
    }
    out
}

/// The text parts of a tool's result, joined by newlines.
pub fn result_text(result: &rmcp::model::CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What can go wrong between an MCP client, Reins and an upstream.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("no pipeline `{0}`")]
    UnknownPipeline(String),
    #[error(
        "pipeline `{0}` fronts no MCP servers: add `mcp_servers = [\"NAME\"]` to it and declare [mcp.servers.NAME]"
    )]
    NoServers(String),
    #[error("unknown tool `{name}`; the tools are: {}", if .allowed.is_empty() { "none".to_owned() } else { .allowed.join(", ") })]
    UnknownTool { name: String, allowed: Vec<String> },
    #[error("MCP server `{server}` {message}")]
    Upstream { server: String, message: String },
    #[error("MCP server `{server}`: {what} did not answer within {ms} ms (timeout_ms)")]
    Deadline {
        server: String,
        what: String,
        ms: u64,
    },
    #[error("{0}")]
    Refused(String),
    #[error("pipeline `{pipeline}` denies {what}")]
    Denied {
        pipeline: String,
        what: &'static str,
    },
    #[error("{layer} plugin `{plugin}` failed: {message}")]
    Plugin {
        layer: &'static str,
        plugin: String,
        message: String,
    },
    #[error("state store: {0}")]
    Store(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str, hints: Value) -> UpstreamTool {
        UpstreamTool::from_listing(
            "fs",
            &json!({"name": name, "description": "d", "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}}, "annotations": hints}),
        )
    }

    #[test]
    fn the_hash_ignores_key_order_but_not_the_description() {
        let a = definition_hash(
            "t",
            "d",
            &json!({"type": "object", "properties": {"a": {}, "b": {}}}),
        );
        let b = definition_hash(
            "t",
            "d",
            &json!({"properties": {"b": {}, "a": {}}, "type": "object"}),
        );
        let c = definition_hash(
            "t",
            "e",
            &json!({"type": "object", "properties": {"a": {}, "b": {}}}),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn hints_grade_access() {
        assert_eq!(
            up("r", json!({"readOnlyHint": true})).access(),
            Access::Read
        );
        assert_eq!(
            up("d", json!({"destructiveHint": true})).access(),
            Access::Irreversible
        );
        assert_eq!(up("w", json!({})).access(), Access::Write);
    }

    #[test]
    fn a_manifest_renames_hides_and_grades() {
        let upstream = vec![
            up("read_file", json!({})),
            up("write_file", json!({})),
            up("move_file", json!({})),
        ];
        let tools = vec![
            Tool {
                name: "fs__read_file".into(),
                description: String::new(),
                parameters: json!({"type": "object"}),
                access: Access::Read,
            },
            Tool {
                name: "save".into(),
                description: "Save a file".into(),
                parameters: json!({"type": "object", UPSTREAM_KEY: "fs__write_file"}),
                access: Access::Irreversible,
            },
            Tool {
                name: "gone".into(),
                description: String::new(),
                parameters: json!({}),
                access: Access::Read,
            },
        ];
        let out = expose(Some(tools), &upstream);
        let names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["fs__read_file", "save"]);
        assert_eq!(
            out[0].input_schema, upstream[0].input_schema,
            "a bare schema keeps the upstream's"
        );
        assert_eq!(out[1].tool, "write_file");
        assert_eq!(out[1].access, Access::Irreversible);
        assert!(
            out[1].input_schema.get(UPSTREAM_KEY).is_none(),
            "the routing key is stripped"
        );
        assert_eq!(expose(None, &upstream).len(), 3);
    }
}
