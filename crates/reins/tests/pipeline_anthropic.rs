//! The `anthropic` provider against a fake Anthropic Messages server on
//! loopback that records every request's path, headers and body: how a
//! whole conversation (system, images, tool_use / tool_result, a failed tool
//! result), the sampling, the tools and tool_choice are translated; how text,
//! tool_use and usage are read back; JSON pipelines asking for JSON in the
//! system prompt; 429 and 529 retried after `retry-after`; a 400 not retried
//! and handed back to the caller as a refusal.

mod pipeline_support;

use axum::http::StatusCode;
use pipeline_support::*;
use reins::config::{Config, ProviderConfig};
use reins::pipeline::{Request, RunError, RunStatus};
use reins::provider::anthropic::JSON_INSTRUCTION;
use reins::provider::{
    Breaker, ChatRequest, ProviderError, ProviderSettings, Sampling, ToolChoice,
};
use reins::runtime::{Access, Message, MessageToolCall, Tool};
use reins_testing::model::{Step, Upstream, ok};
use reins_testing::{plugins, server};
use serde_json::{Value, json};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

/// A fake Anthropic server answering `steps` in order (the last one
/// repeats) and its base URL (the provider adds `/v1/messages`).
async fn anthropic(steps: Vec<Step>) -> (Upstream, String) {
    let fake = Upstream::steps(steps).await;
    let base = fake.origin();
    (fake, base)
}

/// A Messages API answer.
fn message(content: Value, input_tokens: u64, output_tokens: u64) -> Step {
    ok(&json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-test",
        "content": content, "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }))
}

fn text(t: &str) -> Step {
    message(json!([{"type": "text", "text": t}]), 20, 5)
}

/// An Anthropic error answer.
fn error(status: u16, kind: &str, headers: &[(&str, &str)]) -> Step {
    Step::Status {
        status,
        headers: headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        body: json!({"type": "error", "error": {"type": kind, "message": format!("the {kind} message")}}).to_string(),
    }
}

const KEY_ENV: &str = "REINS_TEST_ANTHROPIC_KEY";

fn set_key() {
    static ONCE: Once = Once::new();
    // SAFETY: set once, before any provider of this binary reads it.
    ONCE.call_once(|| unsafe { std::env::set_var(KEY_ENV, "sk-ant-test") });
}

/// The provider config of `[providers.claude]` with `extra` keys.
fn provider_config(base_url: &str, extra: &str) -> ProviderConfig {
    let text = format!(
        "plugins_dir = \".\"\n[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{base_url}\"\nmodel = \"claude-test\"\n\
         api_key_env = \"{KEY_ENV}\"\nbackoff_ms = 1\n{extra}\n"
    );
    let config = Config::parse(&text, "reins.toml", ".").unwrap_or_else(|e| panic!("{e}"));
    config.providers["claude"].clone()
}

/// The provider behind its breaker and retries, as a pipeline has it.
fn breaker(base_url: &str, extra: &str) -> Breaker {
    set_key();
    let config = provider_config(base_url, extra);
    let provider = reins::provider::from_config("claude", &config, std::path::Path::new("."))
        .expect("provider");
    Breaker::new(provider, ProviderSettings::for_config(&config))
}

fn request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        run_id: "run-1".into(),
        pipeline: "p".into(),
        attempt: 1,
        messages,
        schema: None,
        json: false,
        strict: false,
        tools: vec![],
        sampling: Sampling::default(),
        deadline: None,
        traceparent: None,
        turn: Default::default(),
    }
}

fn lookup_tool() -> Tool {
    Tool {
        name: "lookup".into(),
        description: "Look an order up".into(),
        parameters: json!({"type": "object", "properties": {"id": {"type": "string"}}}),
        access: Access::Read,
    }
}

#[tokio::test]
async fn a_whole_conversation_goes_out_in_the_messages_shape() {
    let (fake, base) = anthropic(vec![text("done")]).await;
    let claude = breaker(&base, "");
    let mut look = Message::new("user", "what is on this picture?");
    look.parts = Some(vec![
        json!({"type": "text", "text": "what is on this picture?"}),
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}),
        json!({"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}),
    ]);
    let mut failed = Message::tool_result("toolu_b", "no such order");
    failed.is_error = true;
    let mut req = request(vec![
        Message::new("system", "You answer about orders."),
        look,
        Message::tool_calls(
            "Let me look both up.",
            vec![
                MessageToolCall {
                    id: "toolu_a".into(),
                    name: "lookup".into(),
                    arguments: "{\"id\":\"A-1\"}".into(),
                },
                MessageToolCall {
                    id: "toolu_b".into(),
                    name: "lookup".into(),
                    arguments: "{\"id\":\"B-2\"}".into(),
                },
            ],
        ),
        Message::tool_result("toolu_a", "shipped"),
        failed,
        Message::new("user", "so where is A-1?"),
    ]);
    req.tools = vec![lookup_tool()];
    req.sampling = Sampling {
        temperature: Some(0.3),
        top_p: Some(0.9),
        max_tokens: Some(200),
        stop: vec!["END".into()],
        user: Some("user-7".into()),
        tool_choice: Some(ToolChoice::Tool("lookup".into())),
        parallel_tool_calls: Some(false),
        seed: Some(3),
        ..Sampling::default()
    };
    let answer = claude.complete(&req).await.expect("an answer");
    assert_eq!(answer.content, "done");

    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/messages");
    let header = |k: &str| seen[0].header(k).map(str::to_owned);
    assert_eq!(header("x-api-key").as_deref(), Some("sk-ant-test"));
    assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("authorization"), None);
    assert_eq!(
        seen[0].body,
        json!({
            "model": "claude-test",
            "max_tokens": 200,
            "system": "You answer about orders.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "what is on this picture?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look both up."},
                    {"type": "tool_use", "id": "toolu_a", "name": "lookup", "input": {"id": "A-1"}},
                    {"type": "tool_use", "id": "toolu_b", "name": "lookup", "input": {"id": "B-2"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "shipped"},
                    {"type": "tool_result", "tool_use_id": "toolu_b", "content": "no such order", "is_error": true},
                    {"type": "text", "text": "so where is A-1?"},
                ]},
            ],
            "temperature": 0.3,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "user-7"},
            "tools": [{
                "name": "lookup",
                "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
                "description": "Look an order up",
            }],
            "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": true},
        })
    );
}

#[tokio::test]
async fn tool_choice_maps_and_the_configured_defaults_fill_in() {
    let (fake, base) = anthropic(vec![text("ok")]).await;
    let claude = breaker(&base, "temperature = 0.5\nmax_tokens = 333");
    for (choice, wire) in [
        (None, None),
        (Some(ToolChoice::Auto), Some(json!({"type": "auto"}))),
        (Some(ToolChoice::Required), Some(json!({"type": "any"}))),
        (Some(ToolChoice::None), Some(json!({"type": "none"}))),
    ] {
        let mut req = request(vec![Message::new("user", "hi")]);
        req.tools = vec![lookup_tool()];
        req.sampling.tool_choice = choice;
        claude.complete(&req).await.expect("an answer");
        let body = fake.seen().last().expect("a request").body.clone();
        assert_eq!(body.get("tool_choice").cloned(), wire);
        assert_eq!(
            (body["max_tokens"].clone(), body["temperature"].clone()),
            (json!(333), json!(0.5))
        );
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
        assert!(body.get("system").is_none());
    }
    // Anthropic's temperature stops at 1 (a repair strategy may ask for more).
    let mut req = request(vec![Message::new("user", "hi")]);
    req.sampling.temperature = Some(1.6);
    claude.complete(&req).await.expect("an answer");
    assert_eq!(
        fake.seen().last().expect("a request").body["temperature"],
        json!(1.0)
    );
}

#[tokio::test]
async fn text_tool_use_and_usage_are_read_back() {
    let (_fake, base) = anthropic(vec![ok(&json!({
            "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-test-2025",
            "content": [
                {"type": "text", "text": "Looking "},
                {"type": "text", "text": "it up."},
                {"type": "tool_use", "id": "toolu_01XYZ", "name": "lookup", "input": {"id": "A-1"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 30, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 7, "output_tokens": 12},
    }))])
    .await;
    let answer = breaker(&base, "")
        .complete(&request(vec![Message::new("user", "where is A-1?")]))
        .await
        .expect("an answer");
    assert_eq!(answer.content, "Looking it up.");
    assert_eq!(answer.model, "claude-test-2025");
    assert_eq!(answer.tool_calls.len(), 1);
    assert_eq!(answer.tool_calls[0].id.as_deref(), Some("toolu_01XYZ"));
    assert_eq!(answer.tool_calls[0].name, "lookup");
    assert_eq!(answer.tool_calls[0].arguments, json!({"id": "A-1"}));
    let usage = answer.usage.expect("usage");
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (42, 12, 54)
    );
}

/// A host whose pipeline `p` runs on the anthropic provider `claude`.
async fn host(base_url: &str, pipeline: &str) -> (reins::Host, tempfile::TempDir) {
    set_key();
    let plugins = plugins::plugins_dir(&[]);
    let body = format!(
        "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{base_url}\"\nmodel = \"claude-test\"\n\
         api_key_env = \"{KEY_ENV}\"\nbackoff_ms = 1\nmax_retries = 3\n\n[pipelines.p]\nmodel = \"claude\"\n{pipeline}\n"
    );
    let host = pipeline_support::host(plugins.path(), &body, &script(vec![])).await;
    (host, plugins)
}

#[tokio::test]
async fn a_json_pipeline_asks_for_json_in_the_system_prompt() {
    let answer = json!({"amount": 12.5, "currency": "EUR", "reason": "damaged parcel"});
    let (fake, base) = anthropic(vec![text(&answer.to_string())]).await;
    let pipeline = format!(
        "system_prompt = \"Extract the refund.\"\nschema = '{}'",
        refund_schema()
    );
    let (host, _plugins) = host(&base, &pipeline).await;
    let result = host
        .run(
            "p",
            Request::text("refund 12.50 EUR, the parcel was crushed"),
        )
        .await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    assert_eq!(result.output, Some(answer));
    assert_eq!(
        (
            result.tokens.prompt,
            result.tokens.completion,
            result.tokens.estimated
        ),
        (20, 5, false)
    );
    let body = &fake.seen()[0].body;
    assert_eq!(
        body["system"],
        json!(format!(
            "Extract the refund.\n\n{JSON_INSTRUCTION}\nIt must validate against this JSON Schema:\n{}",
            refund_schema()
        ))
    );
    assert_eq!(
        body["max_tokens"], 1024,
        "the provider's default: the API requires max_tokens"
    );
    assert!(body.get("response_format").is_none());
}

#[tokio::test]
async fn a_text_pipeline_gets_no_json_instruction() {
    let (fake, base) = anthropic(vec![text("Your parcel is on its way.")]).await;
    let (host, _plugins) = host(&base, "output = \"text\"\nsystem_prompt = \"Be kind.\"").await;
    let result = host.run("p", Request::text("where is my parcel?")).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    assert_eq!(result.output, Some(json!("Your parcel is on its way.")));
    assert_eq!(fake.seen()[0].body["system"], "Be kind.");
}

#[tokio::test]
async fn a_429_and_a_529_are_retried_after_retry_after() {
    let (fake, base) = anthropic(vec![
        error(429, "rate_limit_error", &[("retry-after", "1")]),
        error(529, "overloaded_error", &[]),
        text("at last"),
    ])
    .await;
    let started = Instant::now();
    let called = breaker(&base, "max_retries = 2")
        .call(&request(vec![Message::new("user", "hi")]))
        .await;
    let answer = called.result.expect("an answer after two retries");
    assert_eq!(
        (answer.content.as_str(), called.tries, fake.seen().len()),
        ("at last", 3, 3)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}, not retry-after's 1 s",
        started.elapsed()
    );

    // With no retries left, the error says what the upstream asked for.
    let (_fake, base) = anthropic(vec![error(
        429,
        "rate_limit_error",
        &[("retry-after", "7")],
    )])
    .await;
    let called = breaker(&base, "max_retries = 0")
        .call(&request(vec![Message::new("user", "hi")]))
        .await;
    match called.result {
        Err(e @ ProviderError::Status { status: 429, .. }) => {
            assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
            assert!(e.retryable() && !e.is_refusal());
        }
        other => panic!("expected a 429, got {other:?}"),
    }
}

#[tokio::test]
async fn a_400_is_not_retried_and_goes_back_to_the_caller_as_a_refusal() {
    let (fake, base) = anthropic(vec![error(400, "invalid_request_error", &[])]).await;
    let (host, _plugins) = host(&base, "output = \"text\"").await;
    let result = host.run("p", Request::text("hi")).await;
    assert_eq!(result.status, RunStatus::Failed);
    match &result.error {
        Some(RunError::UpstreamRefused {
            provider,
            status,
            message,
        }) => {
            assert_eq!((provider.as_str(), *status), ("claude", 400));
            assert!(
                message.contains("the invalid_request_error message"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        fake.seen().len(),
        1,
        "a 400 is not retried (max_retries = 3)"
    );
}

#[tokio::test]
async fn a_missing_key_fails_before_any_call() {
    let (fake, base) = anthropic(vec![text("never")]).await;
    let text = format!(
        "plugins_dir = \".\"\n[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{base}\"\nmodel = \"m\"\napi_key_env = \"REINS_TEST_ANTHROPIC_UNSET\"\n"
    );
    let config = Config::parse(&text, "reins.toml", ".").expect("config");
    let provider = reins::provider::from_config(
        "claude",
        &config.providers["claude"],
        std::path::Path::new("."),
    )
    .expect("provider");
    let err = provider
        .complete(&request(vec![Message::new("user", "hi")]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "missing_api_key");
    assert!(
        err.to_string().contains("REINS_TEST_ANTHROPIC_UNSET"),
        "{err}"
    );
    assert!(fake.seen().is_empty());
}

/// One request to the router: a POST of `body` as JSON, else a GET.
async fn call(
    state: &reins::server::AppState,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let method = if body.is_some() { "POST" } else { "GET" };
    server::call(
        state,
        method,
        uri,
        headers,
        body.map(|b| b.to_string().into_bytes()),
        1 << 20,
    )
    .await
}

#[tokio::test]
async fn the_messages_surface_runs_on_the_anthropic_provider_both_ways() {
    set_key();
    let (fake, base) = anthropic(vec![text("Bonjour !")]).await;
    let dead = server::dead_url();
    let plugins = plugins::plugins_dir(&[]);
    let body = format!(
        "[server]\n[[server.tokens]]\nname = \"app\"\nenv = \"{KEY_ENV}\"\nscopes = [\"run\"]\n\n\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{base}\"\nmodel = \"claude-test\"\napi_key_env = \"{KEY_ENV}\"\n\n\
         [providers.gone]\nkind = \"anthropic\"\nbase_url = \"{dead}\"\nmodel = \"claude-test\"\napi_key_env = \"{KEY_ENV}\"\nmax_retries = 0\n\n\
         [pipelines.chat]\nmodel = \"claude\"\noutput = \"text\"\nsystem_prompt = \"Answer in French.\"\n\n\
         [pipelines.down]\nmodel = \"gone\"\noutput = \"text\"\n\n\
         [pipelines.limited]\nmodel = \"claude\"\noutput = \"text\"\nlimits = {{ key = \"user_id\", requests = 1, window_seconds = 60 }}\n"
    );
    let host = reins::Host::builder()
        .config_str(
            pipeline_support::config(plugins.path(), &body),
            plugins.path(),
        )
        .build()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let settings = reins::server::ServerSettings::from_config(host.boot()).expect("[server]");
    let state = reins::server::AppState::new(Arc::new(host), &settings).expect("state");
    let key = [("x-api-key", "sk-ant-test")];
    let hello = |model: &str| {
        json!({"model": model, "max_tokens": 64, "system": "Be brief.",
               "messages": [{"role": "user", "content": "hello"}], "metadata": {"user_id": "u-1"}})
    };

    // In through the Messages surface, out through the anthropic provider.
    let (status, headers, b) = call(&state, "/v1/messages", &key, Some(hello("chat"))).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["content"], json!([{"type": "text", "text": "Bonjour !"}]));
    assert_eq!(
        (b["stop_reason"].clone(), b["usage"].clone()),
        (
            json!("end_turn"),
            json!({"input_tokens": 20, "output_tokens": 5})
        )
    );
    assert_eq!(
        headers.get("x-reins-run-id").and_then(|v| v.to_str().ok()),
        b["reins"]["run_id"].as_str()
    );
    let sent = &fake.seen()[0].body;
    assert_eq!(sent["system"], "Answer in French.\n\nBe brief.");
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "hello"}])
    );
    assert_eq!(
        (sent["max_tokens"].clone(), sent["metadata"].clone()),
        (json!(64), json!({"user_id": "u-1"}))
    );

    // The same, streamed: the event sequence the SDKs parse.
    let mut streamed = hello("chat");
    streamed["stream"] = json!(true);
    let (status, headers, b) = call(&state, "/v1/messages", &key, Some(streamed)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let sse = b.as_str().expect("an event stream");
    let names: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("JSON data"))
        .collect();
    assert_eq!(data[0]["message"]["content"], json!([]));
    assert_eq!(
        data[2]["delta"],
        json!({"type": "text_delta", "text": "Bonjour !"})
    );
    assert_eq!(data[4]["delta"]["stop_reason"], "end_turn");
    assert_eq!(data[4]["usage"]["output_tokens"], 5);

    // Every provider down: Anthropic's "overloaded".
    let (status, _, b) = call(&state, "/v1/messages", &key, Some(hello("down"))).await;
    assert_eq!(
        (
            status.as_u16(),
            b["type"].clone(),
            b["error"]["type"].clone()
        ),
        (529, json!("error"), json!("overloaded_error")),
        "{b}"
    );

    // A pipeline's rate limit: 429 rate_limit_error with Retry-After.
    let (status, _, _) = call(&state, "/v1/messages", &key, Some(hello("limited"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, b) = call(&state, "/v1/messages", &key, Some(hello("limited"))).await;
    assert_eq!(
        (status.as_u16(), b["error"]["type"].clone()),
        (429, json!("rate_limit_error")),
        "{b}"
    );
    assert!(headers.get("retry-after").is_some());

    // max_tokens is required, as by Anthropic; no token, no run.
    let mut missing = hello("chat");
    missing.as_object_mut().map(|o| o.remove("max_tokens"));
    let (status, _, b) = call(&state, "/v1/messages", &key, Some(missing)).await;
    assert_eq!(
        (status.as_u16(), b["error"]["type"].clone()),
        (400, json!("invalid_request_error")),
        "{b}"
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("max_tokens")),
        "{b}"
    );
    let (status, _, b) = call(
        &state,
        "/v1/messages",
        &[("x-api-key", "wrong")],
        Some(hello("chat")),
    )
    .await;
    assert_eq!(
        (status.as_u16(), b["error"]["type"].clone()),
        (401, json!("authentication_error")),
        "{b}"
    );
    let (status, _, b) = call(&state, "/v1/messages", &key, Some(json!("not an object"))).await;
    assert_eq!(
        (status.as_u16(), b["type"].clone()),
        (400, json!("error")),
        "{b}"
    );
    assert_eq!(
        fake.seen().len(),
        3,
        "refused requests never reached the model"
    );

    // GET /v1/providers names the kind and where it sends its calls.
    let admin = reins::server::AppState::new(
        state.host.clone(),
        &reins::server::ServerSettings::default(),
    )
    .expect("state");
    let (status, _, b) = call(&admin, "/v1/providers", &[], None).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let claude = b["data"]
        .as_array()
        .and_then(|d| d.iter().find(|p| p["name"] == "claude"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (claude["kind"].clone(), claude["base_url"].clone()),
        (json!("anthropic"), json!(base))
    );
    assert_eq!(claude["upstream"]["anthropic_version"], "2023-06-01");
}
