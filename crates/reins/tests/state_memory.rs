//! Session memory: a run with a `session_id` gets what the session's
//! earlier runs said as one system message, never over its token budget
//! (truncating: the newest exchanges; summarizing: a model's summary cut to
//! the budget); other sessions and runs without one get nothing.

use reins::Host;
use reins::pipeline::{Request, RunStatus};
use reins::provider::ScriptedProvider;
use reins::tokens;

const CONFIG: &str = r#"
plugins_dir = "."
[state]
kind = "memory"

[providers.script]
kind = "scripted"
responses = [
    { match = "capital of France", content = { answer = "Paris" } },
    { match = "capital of Italy", content = { answer = "Rome" } },
    { match = "filler", content = { answer = "Noted: a long remark about nothing in particular, kept for the record." } },
    '{"answer": "I do not know"}',
]

[providers.summarizer]
kind = "scripted"
responses = [
    { match = "user:", content = "The user asked about the capital of France; it is Paris. PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING PADDING" },
]

[pipelines.chat]
model = "script"
memory = { budget_tokens = 80 }

[pipelines.summed]
model = "script"
memory = { budget_tokens = 30, mode = "summarize", model = "summarizer" }

[pipelines.forgetful]
model = "script"
"#;

fn in_session(text: &str, session: &str) -> Request {
    let mut r = Request::text(text);
    r.session_id = Some(session.to_owned());
    r
}

fn script(host: &Host, name: &str) -> Vec<reins::provider::ChatRequest> {
    let provider = host.provider(name).expect("provider");
    provider
        .as_any()
        .downcast_ref::<ScriptedProvider>()
        .expect("scripted provider")
        .calls()
}

/// The memory message of the model's latest call, if any.
fn memory_of_last_call(host: &Host) -> Option<reins::runtime::Message> {
    let calls = script(host, "script");
    let last = calls.last().expect("a call");
    last.messages
        .iter()
        .find(|m| m.role == "system" && m.content.contains("conversation"))
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earlier_runs_are_remembered_within_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = Host::builder()
        .config_str(CONFIG, dir.path())
        .build()
        .await
        .expect("host");

    let first = host
        .run("chat", in_session("What is the capital of France?", "s1"))
        .await;
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    assert!(
        memory_of_last_call(&host).is_none(),
        "nothing earlier in the session"
    );

    host.run("chat", in_session("And the capital of Italy?", "s1"))
        .await;
    let memory = memory_of_last_call(&host).expect("the second run remembers the first");
    assert!(
        memory.content.contains("capital of France") && memory.content.contains("Paris"),
        "{}",
        memory.content
    );
    assert!(tokens::count_message(&memory) <= 80);

    // Another session, and a run without one, remember nothing.
    host.run("chat", in_session("What is the capital of Italy?", "s2"))
        .await;
    assert!(memory_of_last_call(&host).is_none());
    host.run("chat", Request::text("What is the capital of Italy?"))
        .await;
    assert!(memory_of_last_call(&host).is_none());

    // A long session: the memory keeps the newest exchanges and its budget.
    for i in 0..12 {
        host.run(
            "chat",
            in_session(&format!("filler number {i}, please remember it"), "s1"),
        )
        .await;
    }
    host.run("chat", in_session("What did I say last?", "s1"))
        .await;
    let memory = memory_of_last_call(&host).expect("memory");
    let used = tokens::count_message(&memory);
    assert!(used <= 80, "{used} tokens: {}", memory.content);
    assert!(used >= 40, "the budget is used, not wasted: {used}");
    assert!(
        memory.content.contains("filler number 11"),
        "the newest is kept: {}",
        memory.content
    );
    assert!(
        !memory.content.contains("capital of France"),
        "the oldest is dropped: {}",
        memory.content
    );

    // Pipelines without memory ignore the session.
    host.run(
        "forgetful",
        in_session("What is the capital of Italy?", "s1"),
    )
    .await;
    assert!(memory_of_last_call(&host).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summarized_memory_is_cut_to_its_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let host = Host::builder()
        .config_str(CONFIG, dir.path())
        .build()
        .await
        .expect("host");
    host.run("summed", in_session("What is the capital of France?", "s3"))
        .await;
    assert!(
        script(&host, "summarizer").is_empty(),
        "nothing to summarize yet"
    );
    let r = host
        .run("summed", in_session("And the capital of Italy?", "s3"))
        .await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    let asked = script(&host, "summarizer");
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0]
            .last_user_message()
            .unwrap_or_default()
            .contains("capital of France")
    );
    let memory = memory_of_last_call(&host).expect("memory");
    assert!(
        memory.content.starts_with("Summary of earlier"),
        "{}",
        memory.content
    );
    assert!(memory.content.contains("Paris"));
    assert!(tokens::count_message(&memory) <= 30, "{}", memory.content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_memory_model_is_refused_at_load() {
    let bad = CONFIG.replace("model = \"summarizer\"", "model = \"nobody\"");
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Host::builder()
        .config_str(bad, dir.path())
        .build()
        .await
        .expect_err("unknown provider");
    assert!(err.to_string().contains("memory.model"), "{err}");
}
