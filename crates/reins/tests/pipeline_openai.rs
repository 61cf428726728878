//! The `openai` provider against a local HTTP server started by each test:
//! the requests it sends (conversation, schema, tools, the exact repair
//! message, the API key), usage summed across attempts, retries, and clear
//! errors for 500s, timeouts, garbage and refused connections.

mod pipeline_support;

use pipeline_support::*;
use reins::pipeline::{Request, RunError, RunStatus};
use reins_testing::model::{Step, Upstream, ok, status};
use reins_testing::{plugins, server};
use serde_json::{Value, json};

/// A chat-completions response with `content` and usage.
fn completion(content: &str, prompt: u64, completion: u64) -> Step {
    ok(&json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }))
}

fn refund(amount: Value) -> String {
    json!({"amount": amount, "currency": "EUR", "reason": "damaged parcel"}).to_string()
}

/// A config with an `openai` provider `llm` and pipeline `p` on it.
fn body(base_url: &str, provider_extra: &str, pipeline_extra: &str) -> String {
    format!(
        "[providers.llm]\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"test-model\"\ntemperature = 0.0\n\
         backoff_ms = 1\n{provider_extra}\n\n\
         [pipelines.p]\nmodel = \"llm\"\nsystem_prompt = \"Answer with the refund as JSON.\"\nschema = '{}'\n{pipeline_extra}\n",
        refund_schema()
    )
}

const TOOLS: &str = "[[config.tools]]\nname = \"lookup_order\"\naccess = \"read\"\n\
    parameters = '{\"type\": \"object\", \"properties\": {\"id\": {\"type\": \"string\"}}}'\n";

#[tokio::test]
async fn requests_carry_the_conversation_schema_tools_key_and_exact_repair_message() {
    let server = Upstream::steps(vec![
        completion(&refund(json!("12,50 EUR")), 50, 10),
        completion(&refund(json!(12.5)), 80, 11),
    ])
    .await;
    // SAFETY: a variable only this test reads, set before any provider reads it.
    unsafe { std::env::set_var("REINS_TEST_OPENAI_KEY_1", "sk-test-1") };
    let plugins = plugins::plugins_dir(&["tool-manifest"]);
    sidecar(plugins.path(), "tool-manifest", TOOLS);
    let model = script(vec![]);
    let host = host(
        plugins.path(),
        &body(
            &server.base_url(),
            "api_key_env = \"REINS_TEST_OPENAI_KEY_1\"",
            "constraints = \"tool-manifest\"",
        ),
        &model,
    )
    .await;
    let result = host
        .run(
            "p",
            Request::text("My parcel arrived crushed; refund 12.50 EUR."),
        )
        .await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    assert_eq!(
        result.output.as_ref().map(|o| o["amount"].clone()),
        Some(json!(12.5))
    );
    // Usage as reported, summed across the two attempts.
    assert_eq!(
        (
            result.tokens.prompt,
            result.tokens.completion,
            result.tokens.total
        ),
        (130, 21, 151)
    );
    assert!(!result.tokens.estimated);
    assert_eq!(result.attempts[1].tokens.total, 91);

    let received = server.seen();
    assert_eq!(received.len(), 2);
    let first = &received[0];
    assert_eq!(first.path, "/v1/chat/completions");
    assert_eq!(first.header("authorization"), Some("Bearer sk-test-1"));
    assert_eq!(first.body["model"], "test-model");
    assert_eq!(first.body["temperature"], 0.0);
    assert_eq!(
        first.body["messages"],
        json!([
            {"role": "system", "content": "Answer with the refund as JSON."},
            {"role": "user", "content": "My parcel arrived crushed; refund 12.50 EUR."},
        ])
    );
    assert_eq!(first.body["response_format"]["type"], "json_schema");
    assert_eq!(first.body["response_format"]["json_schema"]["name"], "p");
    assert_eq!(
        first.body["response_format"]["json_schema"]["schema"],
        refund_schema()
    );
    assert_eq!(first.body["tools"][0]["type"], "function");
    assert_eq!(first.body["tools"][0]["function"]["name"], "lookup_order");

    // The repair: the original conversation, the previous answer, the exact repair message.
    let messages = received[1].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(messages.len(), 4);
    assert_eq!(
        messages[..2],
        first.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()[..]
    );
    assert_eq!(
        messages[2],
        json!({"role": "assistant", "content": refund(json!("12,50 EUR"))})
    );
    assert_eq!(
        messages[3],
        json!({"role": "user", "content": "Your previous answer did not pass validation. Fix every problem below:\n\
            - /amount [type]: \"12,50 EUR\" is not of type \"number\"\n\
            \n\
            Reply with the corrected JSON only: no prose, no code fences."})
    );
}

#[tokio::test]
async fn response_format_can_be_json_object_or_nothing() {
    for (setting, expected) in [
        (
            "response_format = \"json_object\"",
            Some(json!({"type": "json_object"})),
        ),
        ("response_format = \"none\"", None),
    ] {
        let server = Upstream::steps(vec![completion(&refund(json!(1)), 1, 1)]).await;
        let plugins = plugins::plugins_dir(&[]);
        let host = host(
            plugins.path(),
            &body(&server.base_url(), setting, ""),
            &script(vec![]),
        )
        .await;
        let result = host.run("p", Request::text("refund 1 EUR")).await;
        assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
        assert_eq!(
            server.seen()[0].body.get("response_format").cloned(),
            expected
        );
        assert!(server.seen()[0].body.get("tools").is_none());
        assert!(
            server.seen()[0].header("authorization").is_none(),
            "no api_key_env, no header"
        );
    }
}

#[tokio::test]
async fn a_500_is_retried_with_backoff() {
    let server = Upstream::steps(vec![
        status(500, "{\"error\": \"busy\"}"),
        completion(&refund(json!(3)), 5, 5),
    ])
    .await;
    let plugins = plugins::plugins_dir(&[]);
    let host = host(
        plugins.path(),
        &body(&server.base_url(), "max_retries = 2", ""),
        &script(vec![]),
    )
    .await;
    let result = host.run("p", Request::text("refund 3 EUR")).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    assert_eq!(server.seen().len(), 2);
    assert_eq!(result.attempts.len(), 1, "a retry is not a repair attempt");
}

/// Runs pipeline `p` against a provider configured by `provider_extra` and returns the error.
async fn failure(base_url: &str, provider_extra: &str) -> (String, i32) {
    let plugins = plugins::plugins_dir(&[]);
    let host = host(
        plugins.path(),
        &body(base_url, provider_extra, ""),
        &script(vec![]),
    )
    .await;
    let result = host.run("p", Request::text("refund 3 EUR")).await;
    assert_eq!(result.status, RunStatus::Failed);
    assert!(
        matches!(result.error, Some(RunError::ModelUnavailable { .. })),
        "{:?}",
        result.error
    );
    let code = result.exit_code();
    (
        result.error.map(|e| e.to_string()).unwrap_or_default(),
        code,
    )
}

#[tokio::test]
async fn a_server_error_is_reported_with_status_and_body_after_the_retries() {
    let server = Upstream::steps(vec![status(500, "{\"error\": \"upstream exploded\"}")]).await;
    let (message, code) = failure(&server.base_url(), "max_retries = 1").await;
    assert!(
        message.contains("provider `llm`: HTTP 500") && message.contains("upstream exploded"),
        "{message}"
    );
    assert_eq!(code, 5);
    assert_eq!(server.seen().len(), 2, "one call and one retry");
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let server = Upstream::steps(vec![status(401, "{\"error\": \"bad key\"}")]).await;
    let (message, _) = failure(&server.base_url(), "max_retries = 3").await;
    assert!(
        message.contains("HTTP 401") && message.contains("bad key"),
        "{message}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn a_timeout_is_reported_as_such() {
    let server = Upstream::steps(vec![Step::Hang]).await;
    let (message, _) = failure(&server.base_url(), "timeout_ms = 200\nmax_retries = 0").await;
    assert!(
        message.contains("provider `llm`: no response within 200 ms"),
        "{message}"
    );
}

#[tokio::test]
async fn garbage_is_an_unreadable_response() {
    let server = Upstream::steps(vec![status(200, "<html>502 Bad Gateway</html>")]).await;
    let (message, _) = failure(&server.base_url(), "max_retries = 0").await;
    assert!(
        message.contains("unreadable response: not JSON"),
        "{message}"
    );
    assert!(
        message.contains("<html>502 Bad Gateway</html>"),
        "{message}"
    );
    let server = Upstream::steps(vec![ok(&json!({"choices": []}))]).await;
    let (message, _) = failure(&server.base_url(), "max_retries = 0").await;
    assert!(message.contains("no choices[0].message"), "{message}");
}

#[tokio::test]
async fn a_refused_connection_and_a_missing_key_are_clear() {
    let dead = format!("{}/v1", server::dead_url());
    let (message, _) = failure(&dead, "max_retries = 0").await;
    assert!(
        message.contains(&format!("cannot connect to {dead}/chat/completions")),
        "{message}"
    );
    let server = Upstream::steps(vec![completion("{}", 1, 1)]).await;
    let (message, _) = failure(&server.base_url(), "api_key_env = \"REINS_TEST_UNSET_KEY\"").await;
    assert!(
        message.contains("environment variable REINS_TEST_UNSET_KEY (api_key_env) is not set"),
        "{message}"
    );
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn a_dead_endpoint_falls_back_to_the_next_provider() {
    let plugins = plugins::plugins_dir(&[]);
    let model = script(vec![json!(refund(json!(4)))]);
    let config = body(
        &format!("{}/v1", server::dead_url()),
        "max_retries = 0",
        "fallbacks = [\"model\"]",
    );
    let host = host(plugins.path(), &config, &model).await;
    let result = host.run("p", Request::text("refund 4 EUR")).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    assert_eq!(result.attempts[0].provider, "model");
    assert!(
        result
            .trace
            .iter()
            .any(|s| s.name == "llm" && s.result == "failed: connect")
    );
}

/// llama-cpp-python's answer to `response_format: {"type": "json_schema"}`.
const REFUSES_JSON_SCHEMA: &str = "{\"detail\": [{\"type\": \"literal_error\", \"loc\": [\"body\", \"response_format\", \"type\"], \"msg\": \"Input should be 'text' or 'json_object'\"}]}";

#[tokio::test]
async fn a_server_that_refuses_json_schema_is_asked_again_and_the_mode_is_kept() {
    let server = Upstream::steps(vec![
        status(500, REFUSES_JSON_SCHEMA),
        completion(&refund(json!(3)), 5, 5),
        completion(&refund(json!(4)), 5, 5),
    ])
    .await;
    let plugins = plugins::plugins_dir(&[]);
    let body = body(
        &server.base_url(),
        "max_retries = 0\nbreaker = { failure_rate = 0.5, min_calls = 1 }",
        "",
    );
    let host = host(plugins.path(), &body, &script(vec![])).await;
    let result = host.run("p", Request::text("refund 3 EUR")).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    let received = server.seen();
    assert_eq!(received.len(), 2, "one refusal, one answer");
    assert_eq!(received[0].body["response_format"]["type"], "json_schema");
    assert_eq!(
        received[1].body["response_format"],
        json!({"type": "json_object", "schema": refund_schema()}),
        "the next mode down, with the schema"
    );
    // The refusal was not an outage: the breaker stayed closed.
    let breaker = host.breaker("llm").expect("breaker");
    assert_eq!(
        breaker.snapshot().state,
        reins::provider::CircuitState::Closed
    );
    assert_eq!(breaker.trips(), 0);
    // The mode that works is kept: the next run asks with it at once.
    let result = host.run("p", Request::text("refund 4 EUR")).await;
    assert_eq!(result.status, RunStatus::Completed, "{:?}", result.error);
    let received = server.seen();
    assert_eq!(received.len(), 3);
    assert_eq!(received[2].body["response_format"]["type"], "json_object");
    let status = host.provider("llm").expect("provider").status();
    assert_eq!(status["structured_output"], "json_object+schema");
}

#[tokio::test]
async fn a_request_the_upstream_refuses_goes_back_to_the_caller_without_tripping_the_breaker() {
    let server = Upstream::steps(vec![status(
        400,
        "{\"error\": {\"message\": \"messages[1].content is too long\"}}",
    )])
    .await;
    let plugins = plugins::plugins_dir(&[]);
    let body = body(
        &server.base_url(),
        "max_retries = 3\nbreaker = { failure_rate = 0.5, min_calls = 1 }",
        "",
    );
    let host = host(plugins.path(), &body, &script(vec![])).await;
    for _ in 0..3 {
        let result = host.run("p", Request::text("refund 3 EUR")).await;
        match &result.error {
            Some(RunError::UpstreamRefused {
                status: 400,
                message,
                ..
            }) => assert!(message.contains("too long"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(result.exit_code(), 2);
    }
    assert_eq!(server.seen().len(), 3, "a refusal is not retried");
    assert_eq!(
        host.breaker("llm").expect("breaker").snapshot().state,
        reins::provider::CircuitState::Closed
    );
}
