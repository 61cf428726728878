//! One upstream MCP server: started (stdio) or reached (Streamable HTTP) on
//! first use, started again after it exits, its tool list remembered for a
//! moment so that a call does not list the tools again.

use super::{McpError, UpstreamTool};
use crate::config::McpServerConfig;
use rmcp::model::{CallToolRequestParams, CallToolResult, ProtocolVersion};
use rmcp::service::{Peer, RoleClient, RunningService, ServiceError, ServiceExt};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long a listed tool set stands in for the upstream's on a call.
/// `tools/list` always asks the upstream.
const TOOLS_FRESH: Duration = Duration::from_secs(2);

/// The protocol versions Reins speaks with an upstream.
fn supported() -> [ProtocolVersion; 5] {
    [
        ProtocolVersion::V_2024_11_05,
        ProtocolVersion::V_2025_03_26,
        ProtocolVersion::V_2025_06_18,
        ProtocolVersion::V_2025_11_25,
        ProtocolVersion::V_2026_07_28,
    ]
}

/// A connection that works, or the reason the last one did not.
struct Connected {
    service: RunningService<RoleClient, ()>,
    protocol: String,
}

/// Pins as read: when, for which listing (its hashes), and what they were.
type PinsRead = (Instant, Vec<String>, Arc<Vec<reins_state::ToolPin>>);

pub struct Upstream {
    name: String,
    config: McpServerConfig,
    base_dir: PathBuf,
    /// The live connection; the lock also serializes (re)starts.
    conn: Mutex<Option<Connected>>,
    tools: Mutex<Option<(Instant, Arc<Vec<UpstreamTool>>)>>,
    /// The pins last read for a listing (by its hashes), so a call does not
    /// write them again; as fresh as the tool list.
    pins: Mutex<Option<PinsRead>>,
    /// Starts after the first, for the log and `/v1/mcp/servers`.
    restarts: std::sync::atomic::AtomicU64,
    /// Why the last start failed (cleared by a start that works).
    last_error: std::sync::Mutex<Option<String>>,
}

impl Upstream {
    pub fn new(name: &str, config: &McpServerConfig, base_dir: &Path) -> Upstream {
        Upstream {
            name: name.to_owned(),
            config: config.clone(),
            base_dir: base_dir.to_owned(),
            conn: Mutex::new(None),
            tools: Mutex::new(None),
            pins: Mutex::new(None),
            restarts: std::sync::atomic::AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &McpServerConfig {
        &self.config
    }

    /// What a status page shows of it.
    pub async fn status(&self) -> Value {
        let conn = self.conn.lock().await;
        let (connected, protocol) = match &*conn {
            Some(c) if !c.service.is_closed() => (true, Some(c.protocol.clone())),
            _ => (false, None),
        };
        serde_json::json!({
            "name": self.name,
            "transport": if self.config.url.is_some() { "http" } else { "stdio" },
            "connected": connected,
            "protocol_version": protocol,
            "restarts": self.restarts.load(std::sync::atomic::Ordering::Relaxed),
            "last_error": self.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
        })
    }

    /// The peer to send to, connecting (again) when there is none.
    async fn peer(&self) -> Result<Peer<RoleClient>, McpError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = &*conn {
            if !c.service.is_closed() && !c.service.peer().is_transport_closed() {
                return Ok(c.service.peer().clone());
            }
            tracing::warn!(server = %self.name, "MCP server connection closed; starting it again");
            self.restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        *conn = None;
        let deadline = Duration::from_millis(self.config.connect_timeout_ms);
        let connected = tokio::time::timeout(deadline, self.connect())
            .await
            .unwrap_or_else(|_| {
                Err(McpError::Upstream {
                    server: self.name.clone(),
                    message: format!(
                        "did not finish `initialize` within {} ms (connect_timeout_ms)",
                        self.config.connect_timeout_ms
                    ),
                })
            });
        let connected = match connected {
            Ok(c) => {
                self.set_error(None);
                c
            }
            Err(e) => {
                tracing::error!(server = %self.name, "{e}");
                self.set_error(Some(e.to_string()));
                return Err(e);
            }
        };
        let peer = connected.service.peer().clone();
        *conn = Some(connected);
        Ok(peer)
    }

    async fn connect(&self) -> Result<Connected, McpError> {
        let fail = |message: String| McpError::Upstream {
            server: self.name.clone(),
            message,
        };
        let service = match (&self.config.command, &self.config.url) {
            (Some(command), _) => {
                let mut cmd = tokio::process::Command::new(command);
                cmd.args(&self.config.args)
                    .envs(&self.config.env)
                    .current_dir(match &self.config.cwd {
                        Some(dir) => self.base_dir.join(dir),
                        None => self.base_dir.clone(),
                    })
                    .kill_on_drop(true);
                let (transport, stderr) = rmcp::transport::TokioChildProcess::builder(cmd)
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| fail(format!("cannot start `{command}`: {e}")))?;
                if let Some(stderr) = stderr {
                    forward_stderr(self.name.clone(), stderr);
                }
                ().serve(transport)
                    .await
                    .map_err(|e| fail(format!("`initialize` failed: {e}")))?
            }
            (None, Some(url)) => {
                use rmcp::transport::StreamableHttpClientTransport;
                use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                let mut config = StreamableHttpClientTransportConfig::default();
                config.uri = url.as_str().into();
                config.auth_header = self.config.bearer_token.clone();
                let transport = StreamableHttpClientTransport::with_client(
                    super::http::UpstreamHttp::new(self.config.keep_alive),
                    config,
                );
                ().serve(transport)
                    .await
                    .map_err(|e| fail(format!("`initialize` at {url} failed: {e}")))?
            }
            (None, None) => return Err(fail("has neither `command` nor `url`".to_owned())),
        };
        let Some(info) = service.peer_info() else {
            return Err(fail(
                "answered `initialize` without server information".to_owned(),
            ));
        };
        let version = info.protocol_version.clone();
        let known = supported();
        if !known.contains(&version) {
            return Err(fail(format!(
                "speaks MCP protocol version {version}, which Reins does not support (supported: {})",
                known
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        tracing::info!(server = %self.name, protocol = %version, "MCP server connected");
        Ok(Connected {
            service,
            protocol: version.to_string(),
        })
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = e;
        }
    }

    /// Forgets a connection that failed mid-request, so the next request
    /// starts the server again.
    async fn drop_connection(&self) {
        let mut conn = self.conn.lock().await;
        if conn.take().is_some() {
            self.restarts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn service_error(&self, what: &str, e: ServiceError) -> McpError {
        McpError::Upstream {
            server: self.name.clone(),
            message: format!("{what}: {e}"),
        }
    }

    /// The upstream's tools now (a `tools/list`), remembered for calls.
    pub async fn list_tools(&self) -> Result<Arc<Vec<UpstreamTool>>, McpError> {
        let peer = self.peer().await?;
        let deadline = Duration::from_millis(self.config.timeout_ms);
        let listed = match tokio::time::timeout(deadline, peer.list_all_tools()).await {
            Ok(Ok(tools)) => tools,
            Ok(Err(e)) => {
                if is_gone(&e) {
                    self.drop_connection().await;
                }
                return Err(self.service_error("tools/list failed", e));
            }
            Err(_) => {
                return Err(McpError::Deadline {
                    server: self.name.clone(),
                    what: "tools/list".to_owned(),
                    ms: self.config.timeout_ms,
                });
            }
        };
        let tools: Vec<UpstreamTool> = listed
            .into_iter()
            .filter_map(|t| {
                let v = serde_json::to_value(&t).ok()?;
                Some(UpstreamTool::from_listing(&self.name, &v))
            })
            .collect();
        let tools = Arc::new(tools);
        *self.tools.lock().await = Some((Instant::now(), tools.clone()));
        Ok(tools)
    }

    /// The tools as listed a moment ago, or now.
    pub async fn tools(&self) -> Result<Arc<Vec<UpstreamTool>>, McpError> {
        if let Some((at, tools)) = &*self.tools.lock().await
            && at.elapsed() < TOOLS_FRESH
        {
            return Ok(tools.clone());
        }
        self.list_tools().await
    }

    /// The pins of `tools`: those read a moment ago for the same listing,
    /// or what `fetch` records and reads now (always, when `fresh`).
    pub async fn pins_for<E>(
        &self,
        tools: &[UpstreamTool],
        fresh: bool,
        fetch: impl AsyncFnOnce() -> Result<Vec<reins_state::ToolPin>, E>,
    ) -> Result<Arc<Vec<reins_state::ToolPin>>, E> {
        let key: Vec<String> = tools.iter().map(|t| t.hash.clone()).collect();
        if !fresh
            && let Some((at, k, pins)) = &*self.pins.lock().await
            && *k == key
            && at.elapsed() < TOOLS_FRESH
        {
            return Ok(pins.clone());
        }
        let pins = Arc::new(fetch().await?);
        *self.pins.lock().await = Some((Instant::now(), key, pins.clone()));
        Ok(pins)
    }

    /// Drops the remembered pins (an admin approved a definition).
    pub async fn forget_pins(&self) {
        *self.pins.lock().await = None;
    }

    /// Calls `tool` (the upstream's own name) within `timeout_ms`.
    pub async fn call_tool(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
        traceparent: Option<&str>,
    ) -> Result<CallToolResult, McpError> {
        let peer = self.peer().await?;
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = Some(arguments);
        // The trace context travels in the request's `_meta`, as the
        // OpenTelemetry MCP conventions ask (one transport-neutral place).
        if let Some(tp) = traceparent {
            let mut meta = Map::new();
            meta.insert("traceparent".to_owned(), Value::String(tp.to_owned()));
            params.meta = Some(rmcp::model::RequestMetaObject::from(meta));
        }
        let deadline = Duration::from_millis(self.config.timeout_ms);
        match tokio::time::timeout(deadline, peer.call_tool(params)).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(e)) => {
                if is_gone(&e) {
                    // A server that died mid-call is started again on the next one.
                    self.drop_connection().await;
                    return Err(McpError::Upstream {
                        server: self.name.clone(),
                        message: format!(
                            "the server closed the connection during `{tool}` (it is started again on the next call): {e}"
                        ),
                    });
                }
                Err(self.service_error(&format!("`{tool}` failed"), e))
            }
            Err(_) => Err(McpError::Deadline {
                server: self.name.clone(),
                what: format!("tools/call `{tool}`"),
                ms: self.config.timeout_ms,
            }),
        }
    }

    /// A read-only request passed through as JSON (`resources/list`,
    /// `resources/read`, `prompts/list`, `prompts/get`).
    pub async fn passthrough(&self, method: Passthrough) -> Result<Value, McpError> {
        let peer = self.peer().await?;
        let deadline = Duration::from_millis(self.config.timeout_ms);
        let what = method.name();
        let call = async {
            match method {
                Passthrough::ListResources => peer
                    .list_all_resources()
                    .await
                    .map(|r| serde_json::to_value(r).unwrap_or(Value::Null)),
                Passthrough::ListPrompts => peer
                    .list_all_prompts()
                    .await
                    .map(|r| serde_json::to_value(r).unwrap_or(Value::Null)),
                Passthrough::ReadResource(params) => peer
                    .read_resource(params)
                    .await
                    .map(|r| serde_json::to_value(r).unwrap_or(Value::Null)),
                Passthrough::GetPrompt(params) => peer
                    .get_prompt(params)
                    .await
                    .map(|r| serde_json::to_value(r).unwrap_or(Value::Null)),
            }
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if is_gone(&e) {
                    self.drop_connection().await;
                }
                Err(self.service_error(&format!("{what} failed"), e))
            }
            Err(_) => Err(McpError::Deadline {
                server: self.name.clone(),
                what: what.to_owned(),
                ms: self.config.timeout_ms,
            }),
        }
    }
}

/// The read-only requests that pass through.
#[derive(Debug, Clone)]
pub enum Passthrough {
    ListResources,
    ListPrompts,
    ReadResource(rmcp::model::ReadResourceRequestParams),
    GetPrompt(rmcp::model::GetPromptRequestParams),
}

impl Passthrough {
    /// Lists (every upstream's answer joined) rather than one read.
    pub fn is_list(&self) -> bool {
        matches!(self, Passthrough::ListResources | Passthrough::ListPrompts)
    }

    /// `resources` or `prompts`: what a pipeline allows or denies, and the
    /// key of a list's answer.
    pub fn family(&self) -> &'static str {
        match self {
            Passthrough::ListResources | Passthrough::ReadResource(_) => "resources",
            Passthrough::ListPrompts | Passthrough::GetPrompt(_) => "prompts",
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Passthrough::ListResources => "resources/list",
            Passthrough::ListPrompts => "prompts/list",
            Passthrough::ReadResource(_) => "resources/read",
            Passthrough::GetPrompt(_) => "prompts/get",
        }
    }
}

/// Whether the connection itself failed (the server must be started again).
fn is_gone(e: &ServiceError) -> bool {
    matches!(
        e,
        ServiceError::TransportClosed
            | ServiceError::TransportSend(_)
            | ServiceError::Cancelled { .. }
    )
}

/// A stdio server's stderr, line by line into the log (it is how such a
/// server reports why it failed).
fn forward_stderr(server: String, stderr: tokio::process::ChildStderr) {
    use tokio::io::AsyncBufReadExt;
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(server = %server, "mcp server: {line}");
        }
    });
}
