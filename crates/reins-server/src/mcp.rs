//! The MCP gateway's front: `/mcp/{pipeline}` over Streamable HTTP (rmcp's
//! tower service, behind Reins' own credential check) and the same server
//! over stdio for `reins mcp`. Each request is answered by `Host`; this file
//! only translates between MCP messages and the host's calls, and owns the
//! one map from `reins_core::mcp::McpError` to JSON-RPC errors. The admin
//! endpoints for pinned tool definitions (`/v1/mcp/...`) are here too.

use super::AppState;
use super::error::ApiError;
use super::settings::Scope;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use reins_core::Host;
use reins_core::mcp::{McpError, Passthrough};
use reins_core::telemetry::TraceParent;
use reins_runtime::Caller;
use rmcp::ErrorData;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, GetPromptRequestParams, GetPromptResponse,
    InitializeResult, ListPromptsResult, ListResourcesResult, ListToolsResult,
    PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

/// Which pipeline an MCP request is for, and who sent it: put in the HTTP
/// request by [`endpoint`] after the credential is checked (or fixed, over
/// stdio), read back by the handler on every request.
#[derive(Debug, Clone)]
pub struct McpTarget {
    pub pipeline: String,
    pub caller: Caller,
}

/// rmcp's Streamable HTTP service, shared by every pipeline.
pub type McpHttp = StreamableHttpService<McpFront, LocalSessionManager>;

/// The MCP server Reins is to an MCP client.
#[derive(Clone)]
pub struct McpFront {
    host: Arc<Host>,
    /// Over stdio: the one pipeline and caller of the process.
    fixed: Option<McpTarget>,
}

impl McpFront {
    /// The Streamable HTTP service for `host`. Reins' network layer checks
    /// `Host` and `Origin` already (with the operator's allowed hosts), so
    /// rmcp's own loopback-only check is off.
    pub fn http(host: Arc<Host>, body_limit: usize) -> McpHttp {
        let mut config = StreamableHttpServerConfig::default().disable_allowed_hosts();
        config.max_request_body_bytes = body_limit;
        StreamableHttpService::new(
            move || {
                Ok(McpFront {
                    host: host.clone(),
                    fixed: None,
                })
            },
            Arc::new(LocalSessionManager::default()),
            config,
        )
    }

    fn target(&self, ctx: &RequestContext<RoleServer>) -> Result<McpTarget, ErrorData> {
        if let Some(t) = &self.fixed {
            return Ok(t.clone());
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<McpTarget>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("the request carries no pipeline", None))
    }
}

/// The one map from the gateway's errors to JSON-RPC errors.
fn rpc_error(e: McpError) -> ErrorData {
    let message = e.to_string();
    match e {
        McpError::UnknownTool { allowed, .. } => {
            ErrorData::invalid_params(message, Some(json!({"allowed_tools": allowed})))
        }
        McpError::Denied { .. } | McpError::NoServers(_) | McpError::UnknownPipeline(_) => {
            ErrorData::invalid_request(message, None)
        }
        McpError::Upstream { .. }
        | McpError::Deadline { .. }
        | McpError::Refused(_)
        | McpError::Plugin { .. }
        | McpError::Store(_) => ErrorData::internal_error(message, None),
    }
}

/// A value of rmcp's model from the JSON the host answers.
fn from_json<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, ErrorData> {
    serde_json::from_value(v).map_err(|e| {
        ErrorData::internal_error(format!("an upstream's {what} is malformed: {e}"), None)
    })
}

impl ServerHandler for McpFront {
    fn get_info(&self) -> InitializeResult {
        from_json(
            json!({
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}, "resources": {}, "prompts": {}},
                "serverInfo": {"name": "reins", "version": env!("CARGO_PKG_VERSION")},
                "instructions": "Reins gateway: every tool call passes the pipeline's gates; a refused call answers a tool error that says why.",
            }),
            "server info",
        )
        .unwrap_or_default()
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let t = self.target(&ctx)?;
        let tools = self
            .host
            .mcp_tools(&t.pipeline, &t.caller)
            .await
            .map_err(rpc_error)?;
        let listed: Vec<Value> = tools
            .iter()
            .map(|tool| {
                let mut annotations = tool.annotations.clone().unwrap_or_else(|| json!({}));
                if let Some(a) = annotations.as_object_mut() {
                    // The access level the pipeline grades it with, as hints a client understands.
                    a.insert(
                        "readOnlyHint".into(),
                        json!(tool.access == reins_runtime::Access::Read),
                    );
                    a.insert(
                        "destructiveHint".into(),
                        json!(tool.access == reins_runtime::Access::Irreversible),
                    );
                }
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "inputSchema": tool.input_schema,
                    "annotations": annotations,
                })
            })
            .collect();
        from_json(json!({ "tools": listed }), "tool list")
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let t = self.target(&ctx)?;
        // The caller's trace context: in the request's `_meta` (the MCP
        // conventions' place, for every transport), else the HTTP header.
        let meta = request
            .meta
            .as_ref()
            .and_then(|m| m.get("traceparent"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let header = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.headers.get("traceparent"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let parent = TraceParent::from_headers(meta.or(header).as_deref(), None);
        let result = self
            .host
            .mcp_call(
                &t.pipeline,
                &t.caller,
                &request.name,
                request.arguments,
                parent.as_ref(),
            )
            .await
            .map_err(rpc_error)?;
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        self.pass(&ctx, Passthrough::ListResources, "resource list")
            .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        self.pass(&ctx, Passthrough::ReadResource(request), "resource")
            .await
            .map(ReadResourceResponse::Complete)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        self.pass(&ctx, Passthrough::ListPrompts, "prompt list")
            .await
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        self.pass(&ctx, Passthrough::GetPrompt(request), "prompt")
            .await
            .map(GetPromptResponse::Complete)
    }
}

impl McpFront {
    /// A read-only request the host passes to the pipeline's upstreams.
    async fn pass<T: serde::de::DeserializeOwned>(
        &self,
        ctx: &RequestContext<RoleServer>,
        what: Passthrough,
        label: &str,
    ) -> Result<T, ErrorData> {
        let t = self.target(ctx)?;
        let v = self
            .host
            .mcp_passthrough(&t.pipeline, what)
            .await
            .map_err(rpc_error)?;
        from_json(v, label)
    }
}

/// `/mcp/{pipeline}`: the credential (run scope) and the pipeline are
/// checked here, then rmcp's service answers the MCP request.
pub async fn endpoint(
    State(state): State<AppState>,
    Path(pipeline): Path<String>,
    req: Request<Body>,
) -> Response {
    let identity = match state.auth.check(req.headers(), Scope::Run).await {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = identity.pipeline_or_404(&pipeline) {
        return e.into_response();
    }
    match state.host.pipeline(&pipeline) {
        None => return ApiError::not_found(format!("no pipeline `{pipeline}`")).into_response(),
        Some(p) if p.upstreams().is_empty() => {
            return ApiError::not_found(McpError::NoServers(pipeline).to_string()).into_response();
        }
        Some(_) => {}
    }
    let req = match checked_message(req).await {
        Ok(req) => req,
        Err(resp) => return resp,
    };
    let mut req = req;
    req.extensions_mut().insert(McpTarget {
        pipeline,
        caller: identity.caller.clone(),
    });
    let closing = req.method() == axum::http::Method::DELETE;
    match state.mcp.clone().oneshot(req).await {
        Ok(resp) => {
            let mut resp = resp.map(Body::new);
            // Ending a session is done when answered: clients expect 200, not 202.
            if closing && resp.status() == StatusCode::ACCEPTED {
                *resp.status_mut() = StatusCode::OK;
            }
            resp
        }
        Err(never) => match never {},
    }
}

/// A POSTed body that is not one JSON-RPC message gets the JSON-RPC error
/// the spec names (400 with `-32700` for text that is not JSON, `-32600`
/// for JSON that is no message), not a transport-level refusal.
async fn checked_message(req: Request<Body>) -> Result<Request<Body>, Response> {
    if req.method() != axum::http::Method::POST {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                e.to_string(),
            )
            .into_response());
        }
    };
    let rpc_error = |code: i64, message: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}}),
            ),
        )
            .into_response()
    };
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| rpc_error(-32700, format!("Parse error: the body is not JSON: {e}")))?;
    let is_message = value.as_object().is_some_and(|o| {
        o.get("jsonrpc") == Some(&json!("2.0"))
            && (o.get("method").is_some_and(Value::is_string)
                || o.contains_key("result")
                || o.contains_key("error"))
    });
    if !is_message {
        return Err(rpc_error(
            -32600,
            "Invalid Request: send one JSON-RPC 2.0 message, an object with \"jsonrpc\": \"2.0\" and a \"method\" (batches are not part of MCP)".to_owned(),
        ));
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Serves pipeline `pipeline` over stdin and stdout until the client
/// closes them (`reins mcp`), as `caller`.
pub async fn serve_stdio(host: Arc<Host>, pipeline: &str, caller: Caller) -> Result<(), String> {
    use rmcp::ServiceExt;
    let p = host.pipeline(pipeline).ok_or_else(|| {
        format!(
            "no pipeline `{pipeline}` (pipelines: {})",
            host.pipeline_names().join(", ")
        )
    })?;
    if p.upstreams().is_empty() {
        return Err(McpError::NoServers(pipeline.to_owned()).to_string());
    }
    let front = McpFront {
        host,
        fixed: Some(McpTarget {
            pipeline: pipeline.to_owned(),
            caller,
        }),
    };
    let running = front
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("MCP over stdio: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| format!("MCP over stdio: {e}"))?;
    Ok(())
}

/// `GET /v1/mcp/servers` (admin): every upstream and its connection.
pub async fn servers(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin).await?;
    Ok(Json(json!({"servers": state.host.mcp_servers().await})))
}

/// `GET /v1/mcp/pins` (admin): the pinned tool definitions, and changed
/// ones waiting for approval.
pub async fn pins(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.auth.check(&headers, Scope::Admin).await?;
    let pins = state.host.mcp_pins().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "state_unavailable",
            e.to_string(),
        )
    })?;
    Ok(Json(json!({"pins": pins})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovePin {
    server: String,
    tool: String,
    /// The pending definition's hash, as `GET /v1/mcp/pins` shows it: what
    /// the admin looked at is what is approved.
    hash: String,
}

/// `POST /v1/mcp/pins/approve` (admin): offer a changed tool again.
pub async fn approve_pin(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<ApprovePin>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let who = state.auth.check(&headers, Scope::Admin).await?;
    let Json(body) = body.map_err(|e| {
        ApiError::bad_request(format!("{e}; send {{\"server\", \"tool\", \"hash\"}}"))
    })?;
    let done = state
        .host
        .mcp_approve_tool(&body.server, &body.tool, &body.hash, &who.caller.subject)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "state_unavailable",
                e.to_string(),
            )
        })?;
    if !done {
        return Err(ApiError::not_found(format!(
            "no pending definition {} of `{}` on MCP server `{}` (see GET /v1/mcp/pins)",
            body.hash, body.tool, body.server
        )));
    }
    Ok(Json(
        json!({"approved": true, "server": body.server, "tool": body.tool, "hash": body.hash}),
    ))
}
