//! The engine as a drop-in: prose answers (text pipelines), the caller's
//! sampling under the pipeline's caps, what caller tools mean, whole
//! conversations (tool calls, ids, multi-part content) through normalizers,
//! and repair strategies that change something when answers repeat.

mod pipeline_support;

use pipeline_support::*;
use reins::pipeline::{Request, RequestTool, RunError, RunStatus, StopReason};
use reins::provider::{Sampling, ScriptedProvider, ToolChoice};
use reins::runtime::{Message, MessageToolCall};
use reins_testing::model::{Step, Upstream};
use reins_testing::plugins;
use serde_json::json;
use std::sync::Arc;

/// A host with the scripted `model` and a second scripted provider `backup`.
async fn host_with_backup(
    plugins: &std::path::Path,
    body: &str,
    model: &Arc<ScriptedProvider>,
    backup: &Arc<ScriptedProvider>,
) -> reins::Host {
    let body = format!("[providers.backup]\nkind = \"scripted\"\nresponses = []\n\n{body}");
    reins::Host::builder()
        .config_str(config(plugins, &body), plugins)
        .provider("model", model.clone())
        .provider("backup", backup.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("config error: {e}"))
}

#[tokio::test]
async fn a_pipeline_with_only_a_model_answers_prose_as_it_came() {
    let plugins = plugins::plugins_dir(&["normalize-text"]);
    let model = script(vec![json!("Hello! How can I help you today?")]);
    let host = host(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\nnormalizers = [\"normalize-text\"]\n",
        &model,
    )
    .await;
    let r = host.run("chat", Request::text("hi")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.output, Some(json!("Hello! How can I help you today?")));
    assert_eq!(model.call_count(), 1, "one model call, no repair");
    let sent = &model.calls()[0];
    assert!(
        !sent.json && sent.schema.is_none(),
        "a prose request asks for no structured output"
    );
    let (mode, why) = host
        .pipeline("chat")
        .expect("pipeline")
        .output_mode(&host.plugins().current());
    assert_eq!(mode.as_str(), "text", "{why}");
}

#[tokio::test]
async fn an_empty_prose_answer_is_repaired_and_a_caller_can_still_ask_for_json() {
    let plugins = plugins::plugins_dir(&[]);
    let model = script(by_attempt(&[json!(""), json!("Now with words.")]));
    let host = host(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\n",
        &model,
    )
    .await;
    let r = host.run("chat", Request::text("hi")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.output, Some(json!("Now with words.")));
    assert_eq!(r.attempts[0].violations[0].violation.code, "empty");
    let repair = &model.calls()[1].messages;
    assert!(
        repair
            .last()
            .expect("repair prompt")
            .content
            .contains("Reply with the corrected answer only")
    );

    // The caller's response_format json_object makes this request a JSON one.
    let model = script(vec![json!({"content": {"answer": 1}})]);
    let host = self::host(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\n",
        &model,
    )
    .await;
    let mut request = Request::text("json please");
    request.json = true;
    let r = host.run("chat", request).await;
    assert_eq!(r.output, Some(json!({"answer": 1})), "{:?}", r.error);
    assert!(model.calls()[0].json);
}

#[tokio::test]
async fn a_json_only_validator_on_a_text_pipeline_is_refused_at_load() {
    let plugins = plugins::plugins_dir(&["ranges"]);
    let err = host_err(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\noutput = \"text\"\nvalidators = [\"ranges\"]\n",
    )
    .await;
    assert!(
        err.contains("pipeline `chat`")
            && err.contains("`ranges`")
            && err.contains("accepts only JSON")
            && err.contains("output = \"json\""),
        "{err}"
    );
    // Without `output`, the same pipeline answers JSON, and says why.
    let model = script(vec![]);
    let host = host(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\nvalidators = [\"ranges\"]\n",
        &model,
    )
    .await;
    let (mode, why) = host
        .pipeline("chat")
        .expect("pipeline")
        .output_mode(&host.plugins().current());
    assert_eq!(
        (mode.as_str(), why.as_str()),
        ("json", "validator `ranges` accepts only JSON")
    );
}

#[tokio::test]
async fn the_callers_sampling_reaches_the_model_under_the_pipelines_caps() {
    let plugins = plugins::plugins_dir(&[]);
    let model = script(vec![json!("ok")]);
    let body = "[pipelines.chat]\nmodel = \"model\"\n[pipelines.chat.sampling]\nmax_tokens = 100\ntemperature = 0.0\n";
    let host = host(plugins.path(), body, &model).await;
    let mut request = Request::text("hi");
    request.sampling = Sampling {
        temperature: Some(1.5),
        top_p: Some(0.9),
        max_tokens: Some(4000),
        stop: vec!["END".into()],
        seed: Some(7),
        presence_penalty: Some(0.5),
        frequency_penalty: Some(-0.5),
        user: Some("u-1".into()),
        ..Sampling::default()
    };
    let r = host.run("chat", request).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    let sent = &model.calls()[0].sampling;
    assert_eq!(
        sent.temperature,
        Some(0.0),
        "the pipeline's fixed temperature wins"
    );
    assert_eq!(
        sent.max_tokens,
        Some(100),
        "the pipeline's ceiling caps the caller"
    );
    assert_eq!(
        (sent.top_p, sent.seed, sent.stop.clone()),
        (Some(0.9), Some(7), vec!["END".to_owned()])
    );
    assert_eq!(
        (sent.presence_penalty, sent.frequency_penalty),
        (Some(0.5), Some(-0.5))
    );
    assert_eq!(sent.user.as_deref(), Some("u-1"));
}

fn weather_tool() -> RequestTool {
    RequestTool {
        name: "get_weather".into(),
        description: "The weather in a city".into(),
        parameters: Some(
            json!({"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}),
        ),
    }
}

#[tokio::test]
async fn caller_tools_reach_the_model_without_a_constraints_plugin_and_are_still_checked() {
    let plugins = plugins::plugins_dir(&[]);
    let model = script(vec![
        json!({"attempt": 1, "tool_calls": [{"id": "call_a", "name": "get_weather", "arguments": {"town": "Oslo"}}]}),
        json!({"attempt": 2, "tool_calls": [{"id": "call_b", "name": "get_weather", "arguments": {"city": "Oslo"}}]}),
    ]);
    let host = host(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\n",
        &model,
    )
    .await;
    let mut request = Request::text("weather in Oslo?").with_tools(vec![weather_tool()]);
    request.sampling.tool_choice = Some(ToolChoice::Required);
    let r = host.run("chat", request).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    let calls = model.calls();
    assert_eq!(
        calls[0].tools[0].name, "get_weather",
        "the caller's tool went to the model"
    );
    assert_eq!(calls[0].sampling.tool_choice, Some(ToolChoice::Required));
    // The first call's arguments failed the caller's schema and were repaired.
    assert_eq!(r.attempts[0].violations[0].violation.code, "tool-arguments");
    assert_eq!(r.actions[0].arguments, json!({"city": "Oslo"}));
    assert_eq!(r.attempts[1].tool_calls[0].id.as_deref(), Some("call_b"));

    // `deny`: a request with tools is refused, naming the option.
    let host = host_deny(plugins.path(), &model).await;
    let r = host
        .run("chat", Request::text("x").with_tools(vec![weather_tool()]))
        .await;
    match r.error {
        Some(RunError::BadRequest(m)) => assert!(m.contains("caller_tools = \"deny\""), "{m}"),
        other => panic!("{other:?}"),
    }
    // A named tool_choice must name a tool of the request.
    let host = self::host(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\n",
        &model,
    )
    .await;
    let mut request = Request::text("x").with_tools(vec![weather_tool()]);
    request.sampling.tool_choice = Some(ToolChoice::Tool("get_time".into()));
    let r = host.run("chat", request).await;
    match r.error {
        Some(RunError::BadRequest(m)) => {
            assert!(m.contains("`get_time`") && m.contains("get_weather"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

async fn host_deny(plugins: &std::path::Path, model: &Arc<ScriptedProvider>) -> reins::Host {
    host(
        plugins,
        "[pipelines.chat]\nmodel = \"model\"\ncaller_tools = \"deny\"\n",
        model,
    )
    .await
}

#[tokio::test]
async fn a_whole_conversation_reaches_the_model_after_normalization() {
    let plugins = plugins::plugins_dir(&["normalize-text"]);
    let model = script(vec![json!("It is sunny in Oslo.")]);
    let host = host(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\nnormalizers = [\"normalize-text\"]\n",
        &model,
    )
    .await;
    let image =
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}});
    let mut user = Message::new("user", "What is the weather\u{200B} in Oslo?");
    user.parts = Some(vec![
        json!({"type": "text", "text": "What is the weather\u{200B} in Oslo?"}),
        image.clone(),
    ]);
    let call = MessageToolCall {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: "{\"city\":\"Oslo\"}".into(),
    };
    let conversation = vec![
        user,
        Message::tool_calls("", vec![call.clone()]),
        Message::tool_result("call_1", "{\"sky\": \"clear\u{200B}\"}"),
    ];
    let r = host
        .run(
            "chat",
            Request::from(conversation).with_tools(vec![weather_tool()]),
        )
        .await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.output, Some(json!("It is sunny in Oslo.")));
    let sent = &model.calls()[0].messages;
    let user = sent
        .iter()
        .find(|m| m.role == "user")
        .expect("user message");
    // The normalizer cleaned the text (the zero-width space is gone) and the image part stayed.
    assert_eq!(user.content, "What is the weather in Oslo?");
    assert_eq!(user.parts.as_ref().expect("parts")[1], image);
    let assistant = sent
        .iter()
        .find(|m| m.role == "assistant")
        .expect("assistant turn");
    assert_eq!(assistant.tool_calls, vec![call]);
    let tool = sent.iter().find(|m| m.role == "tool").expect("tool result");
    assert_eq!(tool.tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(
        tool.content, "{\"sky\": \"clear\"}",
        "tool results are normalized too"
    );
}

#[tokio::test]
async fn repeated_answers_change_strategy_in_order_before_the_run_stops() {
    let plugins = plugins::plugins_dir(&[]);
    let bad = refund(json!("twenty"));
    let model = script(vec![answer(bad.clone()); 8]);
    let backup = script(vec![json!({"attempt": 5, "content": refund(json!(20))})]);
    let body = format!(
        "[pipelines.p]\nmodel = \"model\"\nfallbacks = [\"backup\"]\nschema = '{}'\nrepair = {{ max_attempts = 6, temperature_step = 0.5 }}\n",
        refund_schema()
    );
    let host = host_with_backup(plugins.path(), &body, &model, &backup).await;
    let r = host.run("p", Request::text("refund 20")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.output, Some(refund(json!(20))));
    let calls = model.calls();
    // 1: first try; 2: plain repair (repeats); 3: strict format (repeats); 4: hotter (repeats); 5: the backup.
    assert_eq!(calls.len(), 4, "{}", r.trace_table());
    assert!(
        !calls[1].strict && calls[2].strict,
        "the strict format comes first"
    );
    assert_eq!(
        (calls[2].sampling.temperature, calls[3].sampling.temperature),
        (None, Some(0.5))
    );
    assert_eq!(backup.call_count(), 1, "then the fallback model");
    let switches: Vec<&str> = r
        .trace
        .iter()
        .filter(|s| s.layer == "repair" && !s.name.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(switches, ["strict_format", "temperature", "model"]);

    // With every strategy spent, the run stops as repeated.
    let model = script(vec![answer(bad); 8]);
    let host = self::host(
        plugins.path(),
        &format!(
            "[pipelines.p]\nmodel = \"model\"\nschema = '{}'\nrepair = {{ max_attempts = 8 }}\n",
            refund_schema()
        ),
        &model,
    )
    .await;
    let r = host.run("p", Request::text("refund 20")).await;
    assert!(
        matches!(
            r.error,
            Some(RunError::ValidationFailed {
                stop: StopReason::Repeated,
                attempts: 4,
                ..
            })
        ),
        "{:?}",
        r.error
    );
}

fn refund(amount: serde_json::Value) -> serde_json::Value {
    json!({"amount": amount, "currency": "USD", "reason": "late delivery"})
}

#[tokio::test]
async fn a_judge_fail_is_repaired_and_its_tokens_count_in_the_usage() {
    let plugins = plugins::plugins_dir(&["judge"]);
    let model = script(by_attempt(&[
        json!("Buy from Acme instead."),
        json!("Happy to help with your order."),
    ]));
    let grader = script(vec![
        json!({"match": "Acme", "content": "{\"pass\": false, \"reason\": \"it names a competitor\"}",
               "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}}),
        json!({"match": "Happy", "content": "{\"pass\": true}",
               "usage": {"prompt_tokens": 38, "completion_tokens": 4, "total_tokens": 42}}),
    ]);
    let body = "[providers.grader]\nkind = \"scripted\"\nresponses = []\n\n\
        [pipelines.chat]\nmodel = \"model\"\nvalidators = [\"judge\"]\njudge = { provider = \"grader\" }\n";
    let host = reins::Host::builder()
        .config_str(config(plugins.path(), body), plugins.path())
        .provider("model", model.clone())
        .provider("grader", grader.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("config error: {e}"));
    let r = host
        .run("chat", Request::text("Where can I buy this?"))
        .await;
    assert_eq!(
        r.status,
        RunStatus::Completed,
        "{:?}\n{}",
        r.error,
        r.trace_table()
    );
    assert_eq!(r.output, Some(json!("Happy to help with your order.")));
    let v = &r.attempts[0].violations[0];
    assert_eq!(
        (v.source.as_str(), v.violation.code.as_str()),
        ("judge", "judge")
    );
    assert!(
        v.violation.message.contains("it names a competitor"),
        "{}",
        v.violation.message
    );
    // The repair prompt carried the judge's reason.
    let repair = model.calls()[1]
        .messages
        .last()
        .expect("repair")
        .content
        .clone();
    assert!(repair.contains("it names a competitor"), "{repair}");
    // The judge saw the policy and the answer; its tokens are in the run's usage.
    let asked = grader.calls();
    assert_eq!(asked.len(), 2);
    assert!(
        asked[0].messages[1]
            .content
            .contains("must not mention competitors")
    );
    assert!(
        asked[0].messages[1]
            .content
            .contains("Buy from Acme instead.")
    );
    let judged: u64 = 49 + 42;
    assert!(r.tokens.total >= judged, "{:?}", r.tokens);
    let traced: Vec<&str> = r
        .trace
        .iter()
        .filter(|s| s.layer == "judge")
        .map(|s| s.result.as_str())
        .collect();
    assert_eq!(traced.len(), 2, "{}", r.trace_table());
    assert!(traced[0].contains("it names a competitor"), "{traced:?}");

    // Without the grant the pipeline does not load, and the error names it.
    let err = host_err(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\nvalidators = [\"judge\"]\n",
    )
    .await;
    assert!(
        err.contains("pipelines.chat.judge")
            && err.contains("grants none")
            && err.contains("`judge`"),
        "{err}"
    );
}

#[tokio::test]
async fn a_blocklist_pattern_that_does_not_compile_is_refused_at_load_naming_it() {
    let plugins = plugins::plugins_dir(&["blocklist"]);
    sidecar(
        plugins.path(),
        "blocklist",
        "accepts = \"any\"\n[config]\npatterns = [\"(unclosed\"]\n",
    );
    let err = host_err(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\nvalidators = [\"blocklist\"]\n",
    )
    .await;
    assert!(
        err.contains("pipelines.chat.validators")
            && err.contains("blocklist")
            && err.contains("(unclosed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_answer_and_an_upstream_that_sends_invalid_utf8_get_clear_outcomes() {
    let plugins = plugins::plugins_dir(&["pii"]);
    // 1 MB of prose with an address at the end: redacted, or refused by name.
    let huge = format!(
        "{} Mail bob@example.com.",
        "All is well with your order. ".repeat(36_000)
    );
    let model = script(vec![json!({"content": huge})]);
    let host = host(
        plugins.path(),
        "[pipelines.chat]\nmodel = \"model\"\nvalidators = [{ plugin = \"pii\", on_fail = \"fix\" }]\n",
        &model,
    )
    .await;
    let r = host.run("chat", Request::text("status?")).await;
    match (&r.status, &r.output, &r.error) {
        (RunStatus::Completed, Some(out), _) => {
            let text = out.as_str().expect("text");
            assert!(
                text.ends_with("Mail [EMAIL].") && text.len() > 1_000_000,
                "{}",
                &text[text.len() - 40..]
            );
        }
        (RunStatus::Failed, _, Some(RunError::Plugin { plugin, kind, .. })) => {
            assert_eq!(plugin, "pii", "{:?}", r.error);
            assert!(
                ["malformed", "timeout", "memory_limit"].contains(kind),
                "{:?}",
                r.error
            );
        }
        other => panic!("no clear outcome: {other:?}"),
    }

    // Invalid UTF-8 from an OpenAI-compatible upstream: an unreadable
    // response, named, and the host goes on serving.
    let mut body = br#"{"choices":[{"message":{"role":"assistant","content":"caf"#.to_vec();
    body.extend_from_slice(&[0xC3, 0x28, 0xFF]);
    body.extend_from_slice(br#""}}]}"#);
    let upstream = Upstream::always(Step::Bytes(body)).await;
    let base = upstream.origin();
    let body = format!(
        "[providers.bad]\nkind = \"openai\"\nbase_url = \"{base}/v1\"\nmodel = \"m\"\nmax_retries = 0\n\n\
         [pipelines.bad]\nmodel = \"bad\"\n\n[pipelines.chat]\nmodel = \"model\"\n"
    );
    let model = script(vec![json!("still here")]);
    let host = self::host(plugins.path(), &body, &model).await;
    let r = host.run("bad", Request::text("hi")).await;
    match &r.error {
        Some(RunError::ModelUnavailable { errors }) => {
            assert!(
                errors[0].contains("unreadable response") && errors[0].contains("not JSON"),
                "{errors:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        host.run("chat", Request::text("hi")).await.output,
        Some(json!("still here"))
    );
}
