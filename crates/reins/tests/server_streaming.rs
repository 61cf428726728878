//! Streams that are checked, not bypassed: the official `openai` and
//! `anthropic` Python clients read `stream: true` answers from a real
//! `reins serve`, whose providers stream from upstreams on loopback
//! (`reins_testing::model::Step::Stream`, OpenAI's and Anthropic's event
//! formats). What a client sees:
//!
//! - text released while the upstream is still generating (an upstream that
//!   stalls mid-answer still got its first words to the client);
//! - a secret in the middle of a stream (an API key, a card number split
//!   between two upstream events) never reaches the client: the
//!   `redact-secrets` stream checker masks it first;
//! - an upstream cut before any release falls back to the next provider,
//!   transparently; one cut after a release ends with an error event, and
//!   the run record says `partial`;
//! - a whole-answer validator that fails after the text streamed ends the
//!   stream with `finish_reason` `content_filter` and an error, never a
//!   silent success;
//! - a JSON answer whose prefix breaks the schema is cut before release and
//!   repaired;
//! - the usage at the end is the upstream's.

use reins_testing::config::Config;
use reins_testing::model::{
    Seen, Step, StreamEnd, Upstream, anthropic_stream_text, first_user_text, stream_text,
    stream_words,
};
use reins_testing::{plugins, server};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const TOKEN_ENV: &str = "REINS_TEST_STREAM_TOKEN";
const TOKEN: &str = "reins-stream-test-token";
const KEY: &str = "sk-proj-Q7fTz2LmX9vB4nR8kW1pY6sD3hJ5cG0a";
const WORD: Duration = Duration::from_millis(15);

/// The primary upstream: what it streams depends on the prompt.
fn primary(seen: &Seen) -> Step {
    let said = first_user_text(&seen.body);
    let repair = seen.body["messages"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["role"] == "assistant"));
    let done = |pieces: Vec<(Duration, String)>| {
        let n = pieces.len() as u64;
        Step::Stream {
            pieces,
            end: StreamEnd::Done {
                prompt_tokens: 21,
                completion_tokens: n,
            },
        }
    };
    if said.contains("secret") {
        let mut pieces = stream_words(
            &format!("Sure. The key you asked about is {KEY} and the card on file is 4111"),
            WORD,
        );
        // The card number goes out in two events.
        pieces.push((WORD, " 1111 1111".to_owned()));
        pieces.extend(stream_words(" 1111, expiring soon. Anything else?", WORD));
        done(pieces)
    } else if said.contains("stall") {
        Step::Stream {
            pieces: stream_words(
                "The first part of this answer arrives, and then the model stops talking",
                WORD,
            ),
            end: StreamEnd::Stall,
        }
    } else if said.contains("cut early") {
        Step::Stream {
            pieces: Vec::new(),
            end: StreamEnd::Cut,
        }
    } else if said.contains("cut late") {
        Step::Stream {
            pieces: stream_words(
                "This answer starts well and goes on for a while before the connection",
                WORD,
            ),
            end: StreamEnd::Cut,
        }
    } else if said.contains("plans") {
        done(stream_words(
            "Here is what we know about the plans: project falcon launches in spring, quietly.",
            WORD,
        ))
    } else if said.contains("promise") {
        done(stream_words(
            "Our fund offers guaranteed returns to every investor who joins this year.",
            WORD,
        ))
    } else if said.contains("person") && !repair {
        done(stream_words(
            "{\"name\": \"Ada Lovelace\", \"age\": \"thirty-six\", \"field\": \"mathematics\"}",
            WORD,
        ))
    } else if said.contains("person") {
        done(stream_words(
            "{\"name\": \"Ada Lovelace\", \"age\": 36, \"field\": \"mathematics\"}",
            WORD,
        ))
    } else {
        stream_text(
            "Streaming through Reins keeps every byte checked before it leaves.",
            WORD,
        )
    }
}

struct Setup {
    served: server::Served,
    primary: Upstream,
    backup: Upstream,
    claude: Upstream,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let primary_up = runtime.block_on(Upstream::replying(primary));
    let backup = runtime.block_on(Upstream::replying(|_| {
        stream_text("The backup model answered this one in full.", WORD)
    }));
    let claude = runtime.block_on(Upstream::replying(|seen| {
        if first_user_text(&seen.body).contains("secret") {
            Step::AnthropicStream {
                pieces: stream_words(&format!("Here it is: {KEY} and nothing more."), WORD),
                end: StreamEnd::Done {
                    prompt_tokens: 13,
                    completion_tokens: 9,
                },
            }
        } else {
            anthropic_stream_text("Claude streams this answer word by word.", WORD)
        }
    }));
    let dir = plugins::plugins_dir(&["redact-secrets", "blocklist"]);
    let config = Config::new()
        .plugins_dir(".")
        .test_cache()
        .openai("up", &primary_up.base_url(), "up-model", "max_retries = 0")
        .openai("backup", &backup.base_url(), "backup-model", "max_retries = 0")
        .table(&format!(
            "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\nmodel = \"claude-test\"\napi_key_env = \"\"\nmax_retries = 0\n",
            claude.origin()
        ))
        .table(&format!(
            "[[server.tokens]]\nname = \"app\"\nenv = \"{TOKEN_ENV}\"\nscopes = [\"run\"]\n"
        ))
        .table(
            r#"[pipelines.chat]
model = "up"
fallbacks = ["backup"]
output = "text"
deadline_ms = 4000
stream_checkers = ["redact-secrets", { plugin = "blocklist", config = { phrases = ["project falcon"], patterns = [] } }]

[pipelines.final]
model = "up"
output = "text"
validators = [{ plugin = "blocklist", on_fail = "fail" }]

[pipelines.buffered]
model = "up"
output = "text"
stream = "buffered"

[pipelines.extract]
model = "up"
stream = "json"
schema = '{"type":"object","required":["name","age"],"properties":{"name":{"type":"string"},"age":{"type":"integer"},"field":{"type":"string"}}}'
repair = { max_attempts = 2 }

[pipelines.claude]
model = "claude"
output = "text"
stream_checkers = ["redact-secrets"]
"#,
        )
        .write(dir.path());
    // SAFETY: set before the server starts; every test sets the same value.
    unsafe { std::env::set_var(TOKEN_ENV, TOKEN) };
    Setup {
        served: server::serve(&config),
        primary: primary_up,
        backup,
        claude,
        _runtime: runtime,
        _dir: dir,
    }
}

/// Runs tests/clients/stream_client.py: one streamed request through the
/// real SDK, and what it saw.
fn client(sdk: &str, base: &str, model: &str, prompt: &str) -> Value {
    let script = plugins::repo_root().join("tests/clients/stream_client.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([sdk, base, TOKEN, model, prompt])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "stream client failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"))
}

fn openai(s: &Setup, model: &str, prompt: &str) -> Value {
    client("openai", &format!("{}/v1", s.served.base), model, prompt)
}

#[test]
fn a_secret_in_the_middle_of_a_stream_never_reaches_the_client() {
    let s = setup();
    let seen = openai(&s, "chat", "tell me the secret");
    assert_eq!(seen["error"], Value::Null, "{seen:#}");
    let text = seen["text"].as_str().expect("text");
    assert!(!text.contains("Q7fTz2"), "the key leaked: {text}");
    assert!(!text.contains("1111 1111"), "the card leaked: {text}");
    assert!(text.contains("[SECRET:openai-api-key]"), "{text}");
    assert!(text.contains("[SECRET:card]"), "{text}");
    assert!(text.starts_with("Sure. The key"), "{text}");
    assert!(text.ends_with("Anything else?"), "{text}");
    // No single delta carried any part of either secret.
    for d in seen["deltas"].as_array().expect("deltas") {
        let d = d.as_str().unwrap_or_default();
        assert!(!d.contains("sk-proj") && !d.contains("4111"), "{d:?}");
    }
    assert!(
        seen["deltas"].as_array().map_or(0, Vec::len) > 2,
        "streamed in pieces: {seen:#}"
    );
    assert_eq!(seen["finish_reason"], "stop");
    // The usage is the upstream's.
    assert_eq!(seen["usage"]["prompt_tokens"], 21, "{seen:#}");
    let words = s.primary.bodies().len();
    assert_eq!(words, 1);
    assert_eq!(s.primary.bodies()[0]["stream"], true);

    // The Anthropic surface and the anthropic provider, streamed end to end.
    let seen = client("anthropic", &s.served.base, "claude", "the secret please");
    assert_eq!(seen["error"], Value::Null, "{seen:#}");
    let text = seen["text"].as_str().expect("text");
    assert!(!text.contains("Q7fTz2"), "the key leaked: {text}");
    assert_eq!(
        text,
        "Here it is: [SECRET:openai-api-key] and nothing more."
    );
    assert_eq!(seen["finish_reason"], "end_turn");
    assert_eq!(
        (
            &seen["usage"]["input_tokens"],
            &seen["usage"]["output_tokens"]
        ),
        (&json!(13), &json!(9)),
        "{seen:#}"
    );
    assert_eq!(s.claude.bodies()[0]["stream"], true);
}

#[test]
fn a_blocked_phrase_cuts_the_stream_before_it_is_sent() {
    let s = setup();
    let seen = openai(&s, "chat", "what are the plans?");
    let text = seen["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("Here is what we know"), "{seen:#}");
    // `project` was held back until the next word showed what it began.
    assert!(!text.contains("project"), "{seen:#}");
    assert_eq!(seen["finish_reason"], "content_filter", "{seen:#}");
    let message = seen["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("blocklist") && message.contains("project falcon"),
        "{seen:#}"
    );
}

#[test]
fn text_is_released_while_the_upstream_still_generates() {
    let s = setup();
    // The upstream sends some words, then nothing: a buffered answer would
    // never have started; a checked stream already delivered those words.
    let seen = openai(&s, "chat", "stall after a while");
    let text = seen["text"].as_str().expect("text");
    assert!(
        text.starts_with("The first part of this answer arrives"),
        "{seen:#}"
    );
    let error = &seen["error"];
    assert_eq!(error["type"], "APIError", "{seen:#}");
    assert!(
        error["message"].as_str().unwrap_or("").contains("deadline"),
        "{seen:#}"
    );
    // Buffered, the same request is whole, then sent.
    let seen = openai(&s, "buffered", "plain answer");
    assert_eq!(
        seen["text"],
        "Streaming through Reins keeps every byte checked before it leaves."
    );
    // `stream_text` reports 10 prompt tokens and a token a word.
    let words = seen["text"]
        .as_str()
        .map_or(0, |t| t.split_whitespace().count());
    assert_eq!(seen["usage"]["prompt_tokens"], 10, "{seen:#}");
    assert_eq!(seen["usage"]["completion_tokens"], words, "{seen:#}");
}

#[test]
fn a_cut_before_any_release_falls_back_and_a_cut_after_one_ends_partial() {
    let s = setup();
    let seen = openai(&s, "chat", "cut early please");
    assert_eq!(seen["error"], Value::Null, "{seen:#}");
    assert_eq!(seen["text"], "The backup model answered this one in full.");
    assert_eq!(seen["finish_reason"], "stop");
    assert_eq!((s.primary.count(), s.backup.count()), (1, 1));

    // After a release: the client keeps what it got, then an error.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (status, run_id, body) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let response = client
            .post(format!("{}/v1/chat/completions", s.served.base))
            .bearer_auth(TOKEN)
            .json(
                &json!({"model": "chat", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "cut late"}]}),
            )
            .send()
            .await
            .expect("send");
        let status = response.status();
        let run_id = response
            .headers()
            .get("x-reins-run-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("x-reins-run-id");
        (status, run_id, response.text().await.expect("body"))
    });
    assert_eq!(status, 200);
    assert!(body.contains("This answer starts well"), "{body}");
    assert!(body.contains("\"error\""), "{body}");
    assert!(body.contains("stream broke"), "{body}");
    assert!(!body.contains("[DONE]"), "{body}");
    let run: Value = runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/v1/runs/{run_id}", s.served.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("get run")
            .json()
            .await
            .expect("run JSON")
    });
    assert_eq!(run["status"], "partial", "{run:#}");
    assert_eq!(run["error"]["kind"], "stream_broken", "{run:#}");
    assert_eq!(run["stream"], "checked", "{run:#}");
    // Nothing fell back once text was out.
    assert_eq!(s.backup.count(), 1);

    // The same through the SDK: what came, then the error.
    let seen = openai(&s, "chat", "cut late again");
    assert!(
        seen["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("This answer starts well")),
        "{seen:#}"
    );
    assert_eq!(seen["error"]["type"], "APIError", "{seen:#}");
}

#[test]
fn a_final_validator_that_fails_after_the_stream_is_never_a_silent_success() {
    let s = setup();
    let seen = openai(&s, "final", "make me a promise");
    assert!(
        seen["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Our fund offers")),
        "{seen:#}"
    );
    assert_eq!(seen["finish_reason"], "content_filter", "{seen:#}");
    assert_eq!(seen["error"]["type"], "APIError", "{seen:#}");
    assert!(
        seen["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("guaranteed returns"),
        "{seen:#}"
    );
    // The usage still came, before the error.
    assert_eq!(seen["usage"]["prompt_tokens"], 21, "{seen:#}");
    // Not repaired: the client already had the text.
    assert_eq!(s.primary.count(), 1);
}

#[test]
fn a_json_prefix_that_breaks_the_schema_is_cut_before_release_and_repaired() {
    let s = setup();
    let seen = openai(&s, "extract", "describe a person");
    assert_eq!(seen["error"], Value::Null, "{seen:#}");
    let doc: Value = serde_json::from_str(seen["text"].as_str().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {seen:#}"));
    assert_eq!(
        doc,
        json!({"name": "Ada Lovelace", "age": 36, "field": "mathematics"})
    );
    let bodies = s.primary.bodies();
    assert_eq!(bodies.len(), 2, "one repair");
    let repair = bodies[1]["messages"].to_string();
    assert!(
        repair.contains("/age"),
        "the repair names the path: {repair}"
    );
    // The first, broken answer was stopped at `age`: nothing after it was read.
    assert!(
        seen["deltas"].as_array().map_or(0, Vec::len) >= 2,
        "{seen:#}"
    );
}
