//! The official `anthropic` Python client against a real `reins serve`
//! process whose pipelines sit on an `openai` provider pointed at a
//! recording upstream on loopback: what the client sees (messages, a tool
//! loop over two turns, tool_choice, images, streaming text and tool_use,
//! usage, a 202 for an action held for approval, errors in Anthropic's
//! shape, `x-api-key`) and what the upstream
//! was sent (the same tool ids, tool results, tool_choice, sampling).
//! (The client is installed by `scripts/test.sh` / `.ci/run` from
//! tests/clients/requirements.txt.)

use reins_testing::config::Config;
use reins_testing::model::{Upstream, ok, text_of};
use reins_testing::{plugins, server};
use serde_json::{Value, json};
use std::process::Command;

const TOKEN_ENV: &str = "REINS_TEST_ANTHROPIC_SERVER_TOKEN";
const TOKEN: &str = "reins-anthropic-test-token";

fn weather_call(id: &str, arguments: Value) -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": id, "type": "function", "function": {"name": "get_weather", "arguments": arguments.to_string()}}
    ]})
}

/// What the upstream model answers: decided by the last message, so the
/// client's checks can tell each path apart.
fn reply(body: &Value) -> Value {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let said = text_of(&last, " ");
    let message = if last["role"] == "tool" {
        json!({"role": "assistant", "content": format!("Tool said: {said}")})
    } else if let Some(city) = said
        .strip_prefix("forced: ")
        .or_else(|| said.strip_prefix("any tool: "))
    {
        weather_call("call_forced", json!({"city": city}))
    } else if said.contains("stream the weather") {
        weather_call(
            "call_up_2",
            json!({"city": "Paris", "units": "celsius", "detail": "hourly, with wind and humidity for the whole afternoon"}),
        )
    } else if said.contains("weather in Paris") {
        weather_call("call_up_1", json!({"city": "Paris"}))
    } else if said.contains("refund order A-1") {
        // Over spend-limit's escalation threshold: held for a human.
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_refund", "type": "function",
            "function": {"name": "issue_refund", "arguments": json!({"order": "A-1", "amount": 5000}).to_string()}}]})
    } else if said.contains("story") {
        json!({"role": "assistant", "content": format!("Once upon a time {}there was an answer.", "there was a harness, and ".repeat(8))})
    } else if said.contains("bad json") {
        json!({"role": "assistant", "content": "{\"answer\": \"many\"}"})
    } else if said.contains("json") {
        json!({"role": "assistant", "content": "{\"answer\": 42}"})
    } else if said.contains("image") {
        let images = last["content"].as_array().map_or(0, |parts| {
            parts.iter().filter(|p| p["type"] == "image_url").count()
        });
        json!({"role": "assistant", "content": format!("I see {images} image(s)")})
    } else {
        json!({"role": "assistant", "content": "Hello from upstream"})
    };
    json!({
        "id": "chatcmpl-up", "object": "chat.completion", "model": "up-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    })
}

/// The one request whose last message says `needle`.
fn request_saying<'a>(seen: &'a [Value], needle: &str) -> &'a Value {
    let found: Vec<&Value> = seen
        .iter()
        .filter(|b| {
            b["messages"]
                .as_array()
                .and_then(|m| m.last())
                .is_some_and(|m| text_of(m, " ").contains(needle))
        })
        .collect();
    assert_eq!(found.len(), 1, "requests saying {needle:?}: {seen:#?}");
    found[0]
}

#[test]
fn official_anthropic_python_client_works_against_reins_serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let model = runtime.block_on(Upstream::replying(|seen| ok(&reply(&seen.body))));

    let dir = plugins::plugins_dir(&["spend-limit", "tool-manifest"]);
    std::fs::write(dir.path().join("tool-manifest.toml"), plugins::REFUND_TOOL)
        .expect("tools sidecar");
    let config = Config::new()
        .plugins_dir(".")
        .test_cache()
        .openai("up", &model.base_url(), "up-model", "max_retries = 0")
        .table(&format!(
            "[[server.tokens]]\nname = \"app\"\nenv = \"{TOKEN_ENV}\"\nscopes = [\"run\"]\n"
        ))
        .table(
            r#"[pipelines.chat]
model = "up"
output = "text"

[pipelines.extract]
model = "up"
schema = '{"type":"object","required":["answer"],"properties":{"answer":{"type":"integer"}}}'
repair = { max_attempts = 1 }

[pipelines.refunds]
model = "up"
constraints = "tool-manifest"
gates = ["spend-limit"]
# One credential plays two tenants (metadata.tenant): the opt-in for that.
trust_metadata = true
"#,
        )
        .write(dir.path());
    // SAFETY: the only test of this binary; set before the server starts.
    unsafe { std::env::set_var(TOKEN_ENV, TOKEN) };
    let served = server::serve(&config);

    let script = plugins::repo_root().join("tests/clients/anthropic_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&served.base)
        .arg(TOKEN)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'anthropic'") {
        panic!(
            "the `anthropic` Python package is missing: pip install -r tests/clients/requirements.txt"
        );
    }
    drop(served);
    assert!(
        out.status.success(),
        "python client checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("17 passed, 0 failed"), "{stdout}");

    let seen = model.bodies();
    // Refused requests (unknown model, top_k, an unanswered tool_result, a
    // wrong key) never reached the model; each check that ran made its calls.
    assert_eq!(seen.len(), 15, "{seen:#?}");

    // A plain message: the caller's system prompt, metadata.user_id as `user`, max_tokens.
    let plain = seen
        .iter()
        .find(|b| b["user"] == "user-42")
        .expect("the plain message reached the upstream");
    assert_eq!(
        plain["messages"],
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}])
    );
    assert_eq!(plain["max_tokens"], 100);

    // The tool loop: the assistant's tool call keeps the upstream's own id,
    // and the tool result answers it.
    let second = request_saying(&seen, "18C and sunny");
    let messages = second["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert_eq!(
        messages[0],
        json!({"role": "user", "content": "what is the weather in Paris?"})
    );
    let call = &messages[1]["tool_calls"][0];
    assert_eq!(
        (messages[1]["role"].as_str(), call["id"].as_str()),
        (Some("assistant"), Some("call_up_1"))
    );
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or(""))
            .expect("JSON arguments");
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "call_up_1", "content": "18C and sunny"})
    );
    assert_eq!(second["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        second["tools"][0]["function"]["parameters"]["required"],
        json!(["city"])
    );

    // A failed tool result is marked for a model whose API has no error flag.
    let failed = request_saying(&seen, "no such city");
    assert_eq!(
        failed["messages"][2],
        json!({"role": "tool", "tool_call_id": "toolu_err", "content": "[tool error] no such city"})
    );

    // tool_choice: a named tool, serial; `any` is `required`.
    let forced = request_saying(&seen, "forced: Oslo");
    assert_eq!(
        forced["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(forced["parallel_tool_calls"], json!(false));
    assert_eq!(
        request_saying(&seen, "any tool: Rome")["tool_choice"],
        "required"
    );

    // The image block arrived as an image_url part with a data URL.
    let image = request_saying(&seen, "describe this image");
    let parts = image["messages"][0]["content"].as_array().expect("parts");
    assert_eq!(parts[0]["type"], "image_url");
    assert!(
        parts[0]["image_url"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("data:image/png;base64,iVBOR")),
        "{parts:?}"
    );
    assert_eq!(
        parts[1],
        json!({"type": "text", "text": "describe this image"})
    );
}
