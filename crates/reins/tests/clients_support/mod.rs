//! A recording OpenAI-compatible upstream that plays a small tool-using
//! model, for the tests that drive real client libraries through `reins
//! serve`. It checks the structure of every conversation it receives (each
//! `tool` message answers a call an earlier `assistant` message made, with
//! that call's id) and keeps every request body, so a test asserts on what
//! the model was really sent.
//!
//! The model: a last message from `tool` gets a sentence that quotes the
//! tool's result; a repair prompt gets a refusal in words; a user message
//! with a `get_weather` tool available gets a call for the city it names,
//! with `issue_refund` a call for the amount it names; anything else an
//! echo.

use reins_testing::model::{Upstream, ok, text_of};
use reins_testing::plugins;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// The upstream and what was wrong with the structure of the
/// conversations it received, if anything.
pub struct Model {
    pub upstream: Upstream,
    problems: Arc<Mutex<Vec<String>>>,
}

impl Model {
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().expect("problems").clone()
    }
}

/// Starts the upstream on loopback.
pub async fn start() -> Model {
    let problems = Arc::new(Mutex::new(Vec::new()));
    let found = problems.clone();
    let mut n = 0;
    let upstream = Upstream::replying(move |seen| {
        n += 1;
        let messages = seen.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        found.lock().expect("problems").extend(check(&messages));
        ok(&chat(&seen.body, n))
    })
    .await;
    Model { upstream, problems }
}

/// Structure problems of one conversation.
fn check(messages: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        match m["role"].as_str() {
            Some("assistant") => {
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    match (
                        c["id"].as_str(),
                        c["type"].as_str(),
                        c.pointer("/function/name"),
                        c.pointer("/function/arguments"),
                    ) {
                        (
                            Some(id),
                            Some("function"),
                            Some(Value::String(_)),
                            Some(Value::String(args)),
                        ) => {
                            ids.insert(id.to_owned());
                            if serde_json::from_str::<Value>(args).is_err() {
                                problems.push(format!(
                                    "messages[{i}]: arguments are not JSON text: {args}"
                                ));
                            }
                        }
                        _ => problems.push(format!("messages[{i}]: malformed tool call {c}")),
                    }
                }
            }
            Some("tool") => match m["tool_call_id"].as_str() {
                Some(id) if ids.contains(id) => {}
                other => problems.push(format!(
                    "messages[{i}]: tool result for unknown call {other:?}"
                )),
            },
            Some("system" | "developer" | "user") => {}
            other => problems.push(format!("messages[{i}]: unexpected role {other:?}")),
        }
    }
    problems
}

fn has_tool(body: &Value, name: &str) -> bool {
    body["tools"].as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t.pointer("/function/name").and_then(Value::as_str) == Some(name))
    })
}

/// The answer to request `n` (1-based).
fn chat(body: &Value, n: usize) -> Value {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let last_text = text_of(&last, "\n");
    let city = ["Oslo", "Paris", "Lisbon"]
        .into_iter()
        .find(|c| messages.iter().any(|m| text_of(m, "\n").contains(c)))
        .unwrap_or("Paris");
    let message = if last["role"] == "tool" {
        json!({"role": "assistant", "content": format!("In {city} the weather is {last_text}.")})
    } else if last_text.contains("did not pass") {
        json!({"role": "assistant", "content": "I cannot do that: it was not allowed."})
    } else if has_tool(body, "get_weather") && body["tool_choice"] != "none" {
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call_up_{n}"), "type": "function",
            "function": {"name": "get_weather", "arguments": json!({"city": city}).to_string()}}]})
    } else if has_tool(body, "issue_refund") {
        let amount: f64 = last_text
            .split(|c: char| !(c.is_ascii_digit() || c == '-' || c == '.'))
            .filter_map(|w| w.parse().ok())
            .last()
            .unwrap_or(1.0);
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": format!("call_up_{n}"), "type": "function",
            "function": {"name": "issue_refund", "arguments": json!({"order": "A-1", "amount": amount}).to_string()}}]})
    } else {
        json!({"role": "assistant", "content": format!("You said: {last_text}")})
    };
    let finish = if message.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    json!({
        "id": format!("chatcmpl-up-{n}"), "object": "chat.completion", "created": 0, "model": "upstream-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    })
}

/// Runs `python3 tests/clients/SCRIPT BASE` and returns its stdout, after
/// checking it passed every check (it prints `N passed, 0 failed`).
pub fn run_client(script: &str, base: &str) -> String {
    let path = plugins::repo_root().join("tests/clients").join(script);
    let out = std::process::Command::new("python3")
        .arg(&path)
        .arg(base)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named") {
        panic!(
            "a client package is missing: pip install -r tests/clients/requirements.txt\n{stderr}"
        );
    }
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}\n{stderr}");
    stdout
}
