//! `[mcp.servers.NAME]`: the MCP servers Reins fronts, and what a pipeline
//! lets through of them (`mcp_servers`, `[pipelines.P.mcp]`).

use serde::Deserialize;
use std::collections::BTreeMap;

/// `[mcp]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Upstream MCP servers by name; the name prefixes their tools
    /// (`NAME__TOOL`), so it may hold letters, digits, `-` and `_` only.
    #[serde(default)]
    pub servers: BTreeMap<String, McpServerConfig>,
}

/// One upstream MCP server: a command Reins starts (stdio) or a URL
/// (Streamable HTTP).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The program to start, speaking MCP on its stdin and stdout. Reins
    /// starts it on first use and again after it exits.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables for the command (nothing else of Reins'
    /// environment is hidden from it).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory of the command (default: the config's).
    #[serde(default)]
    pub cwd: Option<String>,
    /// A Streamable HTTP endpoint, e.g. `http://127.0.0.1:8931/mcp`.
    #[serde(default)]
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer …` to a `url` server.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Reuse connections to a `url` server. Off by default: servers that
    /// write a response's headers and its event separately without
    /// TCP_NODELAY (the Python SDK's, under uvicorn) stall every call on a
    /// reused connection for the client's delayed ACK, about 40 ms; a new
    /// connection per request on loopback costs a fraction of a
    /// millisecond. Turn it on for a remote TLS server that does not.
    #[serde(default)]
    pub keep_alive: bool,
    /// A call's deadline: past it the call fails (the upstream may still
    /// finish it).
    #[serde(default = "default_call_timeout_ms")]
    pub timeout_ms: u64,
    /// How long starting the server and its `initialize` may take.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_call_timeout_ms() -> u64 {
    30_000
}

fn default_connect_timeout_ms() -> u64 {
    20_000
}

/// `[pipelines.P.mcp]`: how the pipeline's MCP endpoint treats what is not
/// a tool call, and how long an escalated call waits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineMcp {
    /// How long an escalated `tools/call` waits for a human's decision
    /// before it fails (the approval stays listed, as expired for the call).
    #[serde(default = "default_approval_wait_ms")]
    pub approval_wait_ms: u64,
    /// `read`: upstream resources pass through read-only; `deny`: none.
    #[serde(default)]
    pub resources: Passthrough,
    /// `read`: upstream prompts pass through; `deny`: none.
    #[serde(default)]
    pub prompts: Passthrough,
    /// Pin each upstream tool's definition on first sight and hide one
    /// that changes until an admin approves it.
    #[serde(default = "yes")]
    pub pin_tools: bool,
}

impl Default for PipelineMcp {
    fn default() -> Self {
        PipelineMcp {
            approval_wait_ms: default_approval_wait_ms(),
            resources: Passthrough::Read,
            prompts: Passthrough::Read,
            pin_tools: true,
        }
    }
}

fn default_approval_wait_ms() -> u64 {
    300_000
}

fn yes() -> bool {
    true
}

/// Whether resources or prompts pass through a pipeline's MCP endpoint.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Passthrough {
    #[default]
    Read,
    Deny,
}

impl McpConfig {
    /// The problems of `[mcp]`, as (key, message).
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, s) in &self.servers {
            let key = |k: &str| format!("mcp.servers.{name}{k}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                || name.contains("__")
            {
                out.push((
                    key(""),
                    "a server name holds letters, digits, `-` and single `_` only (it prefixes its tools as NAME__TOOL)".to_owned(),
                ));
            }
            match (&s.command, &s.url) {
                (Some(_), Some(_)) => out.push((
                    key(""),
                    "set `command` (stdio) or `url` (Streamable HTTP), not both".to_owned(),
                )),
                (None, None) => out.push((
                    key(""),
                    "set `command` (a stdio server Reins starts) or `url` (a Streamable HTTP server)"
                        .to_owned(),
                )),
                (None, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                    out.push((key(".url"), "must start with http:// or https://".to_owned()))
                }
                (Some(c), None) if c.trim().is_empty() => {
                    out.push((key(".command"), "must not be empty".to_owned()))
                }
                _ => {}
            }
            if s.url.is_some() && (!s.args.is_empty() || !s.env.is_empty() || s.cwd.is_some()) {
                out.push((
                    key(".args"),
                    "`args`, `env` and `cwd` are for a `command` server".to_owned(),
                ));
            }
            if s.timeout_ms == 0 || s.connect_timeout_ms == 0 {
                out.push((
                    key(".timeout_ms"),
                    "timeouts must be at least 1 ms".to_owned(),
                ));
            }
        }
        out
    }
}
