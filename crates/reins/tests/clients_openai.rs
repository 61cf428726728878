//! Real client libraries, unmodified, running agent loops through a real
//! `reins serve` in front of a recording OpenAI-compatible upstream: the
//! `openai` package (a manual tool loop, streamed tool calls, include_usage,
//! gates that deny and escalate mid-loop, refusals), `langchain-openai`
//! (`bind_tools`) and `openai-agents` (`OpenAIChatCompletionsModel`). Each
//! test asserts what the client got (in the Python script) and what the
//! model was sent (the upstream's record).

mod clients_support;

use reins_testing::config::Config;
use reins_testing::{plugins, server};
use serde_json::{Value, json};

/// `reins serve`'s config: pipelines on an `openai` provider at `base_url`.
fn config(base_url: &str) -> Config {
    Config::new()
        .plugins_dir(".")
        .test_cache()
        .openai("up", base_url, "upstream-model", "max_retries = 0")
        .table(
            r#"[pipelines.assistant]
model = "up"
normalizers = ["normalize-text"]

[pipelines.refunds]
model = "up"
normalizers = ["normalize-text"]
gates = ["spend-limit"]
repair = { max_attempts = 2 }
"#,
        )
}

/// The upstream, a `reins serve` in front of it, and the dir they live in.
async fn setup() -> (server::Served, clients_support::Model, tempfile::TempDir) {
    let model = clients_support::start().await;
    let dir = plugins::plugins_dir(&["normalize-text", "spend-limit"]);
    let path = config(&model.upstream.base_url()).write(dir.path());
    (server::serve(&path), model, dir)
}

/// The requests whose conversation ends with a `tool` message.
fn after_tools(log: &clients_support::Model) -> Vec<Value> {
    log.upstream
        .bodies()
        .into_iter()
        .filter(|b| {
            b["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|m| m["role"] == "tool")
        })
        .collect()
}

/// Runs `script` against `served` off the async workers (the upstream
/// answers on them), checks it passed `checks` checks, and that every
/// conversation the upstream received was sound.
async fn drive(
    served: &server::Served,
    log: &clients_support::Model,
    script: &'static str,
    checks: usize,
) {
    let base = format!("{}/v1", served.base);
    let out = tokio::task::spawn_blocking(move || clients_support::run_client(script, &base))
        .await
        .expect("client");
    assert!(out.contains(&format!("{checks} passed, 0 failed")), "{out}");
    assert_sound(log);
}

fn assert_sound(log: &clients_support::Model) {
    let problems = log.problems();
    assert!(
        problems.is_empty(),
        "conversations the upstream received were broken: {problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_package_runs_agent_loops_through_reins() {
    let (served, log, _dir) = setup().await;
    drive(&served, &log, "openai_agent.py", 7).await;
    // `GET /v1/pipelines` says which output mode is in force, and why.
    let listed: Value = reqwest::get(format!("{}/v1/pipelines", served.base))
        .await
        .expect("GET /v1/pipelines")
        .json()
        .await
        .expect("JSON");
    let assistant = listed["data"]
        .as_array()
        .and_then(|d| d.iter().find(|p| p["name"] == "assistant"))
        .expect("assistant");
    assert_eq!(assistant["output"], "text");
    assert_eq!(
        assistant["output_reason"],
        "no schema and no JSON-only validator"
    );
    assert_eq!(assistant["caller_tools"], "allow");

    // The second turn of the manual loop reached the model whole: the
    // assistant's call with the model's own id, then the result tagged with it.
    let second = after_tools(&log);
    let turn = second.first().expect("a turn after a tool result");
    let messages = turn["messages"].as_array().expect("messages");
    let n = messages.len();
    let call = &messages[n - 2]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(messages[n - 1]["tool_call_id"], call["id"]);
    assert_eq!(messages[n - 1]["content"], "cold and clear");
    assert_eq!(
        messages[0],
        json!({"role": "system", "content": "You are a weather assistant."})
    );
    // The caller's sampling parameters and tools reached the model.
    assert_eq!(
        (
            turn["temperature"].as_f64(),
            turn["seed"].as_i64(),
            turn["max_tokens"].as_u64()
        ),
        (Some(0.3), Some(7), Some(200))
    );
    assert_eq!(turn["user"], "alice");
    assert_eq!(turn["tools"][0]["function"]["name"], "get_weather");
    assert!(
        turn.get("response_format").is_none(),
        "a prose pipeline asks for no JSON: {turn}"
    );

    // The denied refund went back to the model as a repair, naming the gate's reason.
    let bodies = log.upstream.bodies();
    let repair = bodies
        .iter()
        .find(|b| {
            b["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|m| m["content"].as_str().is_some_and(|t| t.contains("denied")))
        })
        .expect("a repair request after the denial");
    let last = repair["messages"]
        .as_array()
        .and_then(|m| m.last())
        .expect("last");
    assert!(
        last["content"]
            .as_str()
            .is_some_and(|t| t.contains("issue_refund")),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn langchain_openai_bind_tools_loop_runs_through_reins() {
    let (served, log, _dir) = setup().await;
    drive(&served, &log, "langchain_agent.py", 2).await;
    let turn = after_tools(&log)
        .into_iter()
        .next()
        .expect("a turn after a tool result");
    let messages = turn["messages"].as_array().expect("messages");
    assert_eq!(messages[messages.len() - 1]["content"], "sunny");
    assert_eq!(turn["temperature"].as_f64(), Some(0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_agents_sdk_runs_a_function_tool_through_reins() {
    let (served, log, _dir) = setup().await;
    drive(&served, &log, "openai_agents_sdk.py", 2).await;
    let turn = after_tools(&log)
        .into_iter()
        .next()
        .expect("a turn after a tool result");
    let messages = turn["messages"].as_array().expect("messages");
    assert_eq!(
        messages[0]["content"],
        "You answer weather questions with the get_weather tool."
    );
    assert_eq!(messages[messages.len() - 1]["content"], "cold and clear");
}
