//! Agent mode: model → tool calls → webhook results fed back as `tool`
//! messages → model, checkpointed after every step; a run interrupted after
//! step 2 resumes on a new host from its checkpoint and no side effect is
//! applied twice.

use reins::Host;
use reins::pipeline::{Request, RunStatus};
use reins_testing::webhook::Sink;
use reins_testing::{model, plugins};
use serde_json::json;
use std::sync::Arc;

/// A refund sink on loopback, a plugins dir with the refund tool (and
/// `plugins`), and the config of pipeline `agent` (agent mode, the sink as
/// its executor; `extra` goes into the pipeline's table).
async fn agent_fixture(plugins: &[&str], extra: &str) -> (tempfile::TempDir, Sink, String) {
    let sink = Sink::start().await;
    let url = sink.url().to_owned();
    let mut names = vec!["tool-manifest"];
    names.extend_from_slice(plugins);
    let dir = plugins::plugins_dir(&names);
    std::fs::write(dir.path().join("tool-manifest.toml"), plugins::REFUND_TOOL).expect("sidecar");
    let config = format!(
        r#"
plugins_dir = "."
[providers.agent]
kind = "scripted"
responses = []
[pipelines.agent]
model = "agent"
mode = "agent"
max_steps = 10
output = "json"
constraints = "tool-manifest"
{extra}
[pipelines.agent.executors.issue_refund]
kind = "webhook"
url = "{url}"
"#
    );
    (dir, sink, config)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_run_resumes_from_its_checkpoint_and_applies_each_action_once() {
    let (dir, sink, config) = agent_fixture(&[], "").await;
    let host = |fail_at| {
        Host::builder()
            .config_str(config.clone(), dir.path())
            .provider(
                "agent",
                Arc::new(model::AgentModel {
                    fail_at,
                    ..model::AgentModel::new(5)
                }),
            )
            .build()
    };
    // First process: the model is gone at step 3 (after two checkpoints).
    let a = host(Some(2)).await.expect("host");
    let r = a.run("agent", Request::text("refund five orders")).await;
    assert_eq!(r.status, RunStatus::Failed, "{:?}", r.error);
    assert_eq!(sink.keys().len(), 2);
    let steps = a.state().steps(&r.run_id).await.expect("steps");
    assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2]);
    // Emulate a crash at that moment: the run is still `running`.
    let mut record = a.state().run(&r.run_id).await.expect("store").expect("run");
    record.status = RunStatus::Running;
    a.state().put_run(&record).await.expect("put");
    drop(a);

    // A new process resumes it from step 3.
    let b = host(None).await.expect("host");
    let resumed = b.resume_interrupted().await.expect("resume");
    let done = resumed
        .iter()
        .find(|x| x.run_id == r.run_id)
        .expect("resumed");
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    assert_eq!(done.output, Some(json!({"done": 5})));
    let seen = sink.keys();
    assert_eq!(seen.len(), 5, "each step's action applied once: {seen:?}");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5);
    assert_eq!(b.state().steps(&r.run_id).await.expect("steps").len(), 5);
    assert!(seen[0].starts_with(&format!("{}.1:", r.run_id)));
    let stored = b.stored_run(&r.run_id).await.expect("stored");
    assert_eq!(stored["status"], "completed");
    assert!(matches!(
        b.resume(&r.run_id).await,
        Err(reins::ResumeError::NotResumable { .. })
    ));
}

/// A single run checkpoints its input and every attempt; resumed after a
/// crash, it replays the recorded attempts instead of calling the model
/// again, and only the model step after the last checkpoint is redone.
#[tokio::test(flavor = "multi_thread")]
async fn a_single_run_resumes_by_replaying_its_recorded_attempts() {
    use reins::provider::{ScriptEntry, ScriptedProvider};
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("state.db");
    let config = format!(
        r#"
plugins_dir = "."
[state]
path = "{}"
[providers.model]
kind = "scripted"
responses = []
[pipelines.invoice]
model = "model"
schema = {{ type = "object", required = ["total"], properties = {{ total = {{ type = "number" }} }} }}
repair = {{ max_attempts = 3 }}
"#,
        db.display()
    );
    let host = |entries: Vec<ScriptEntry>| {
        let provider = Arc::new(ScriptedProvider::new("model", "m", entries));
        let built = Host::builder()
            .config_str(config.clone(), dir.path())
            .provider("model", provider.clone())
            .build();
        async move { (built.await.expect("host"), provider) }
    };
    let entry = |attempt: u32, text: &str| ScriptEntry {
        attempt: Some(attempt),
        ..ScriptEntry::text(text)
    };
    let gone = |attempt: u32| ScriptEntry {
        attempt: Some(attempt),
        error: Some("connection reset".into()),
        ..ScriptEntry::default()
    };
    // First process: attempt 1 answers a string total, then the model is gone.
    let (a, _) = host(vec![entry(1, r#"{"total": "12 EUR"}"#), gone(2)]).await;
    let r = a.run("invoice", Request::text("Total: 12 EUR")).await;
    assert_eq!(r.status, RunStatus::Failed);
    let steps = a.state().steps(&r.run_id).await.expect("steps");
    let kinds: Vec<_> = steps.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["input", "attempt"],
        "input and the one attempt, in order"
    );
    assert_eq!(steps[1].data["attempt"]["raw"], r#"{"total": "12 EUR"}"#);
    assert_eq!(
        steps[1].data["attempt"]["violations"][0]["source"],
        "schema"
    );
    // Emulate a crash at that moment: the run is still `running`.
    let mut record = a.state().run(&r.run_id).await.expect("store").expect("run");
    record.status = RunStatus::Running;
    a.state().put_run(&record).await.expect("put");
    drop(a);

    // Second process: attempt 1 would now be an outage; it is not called.
    let (b, model) = host(vec![gone(1), entry(2, r#"{"total": 12}"#)]).await;
    let done = b.resume(&r.run_id).await.expect("resume");
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    assert_eq!(done.output, Some(json!({"total": 12})));
    let calls = model.calls();
    assert_eq!(
        calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [2],
        "only the step after the checkpoint"
    );
    assert!(
        done.trace.iter().any(|t| t.result.contains("replayed")),
        "{}",
        done.trace_table()
    );
    assert_eq!(done.attempts.len(), 2);
    let kinds: Vec<_> = b
        .state()
        .steps(&r.run_id)
        .await
        .expect("steps")
        .into_iter()
        .map(|s| s.kind.as_str())
        .collect();
    assert_eq!(kinds, ["input", "attempt", "attempt"]);
}

/// A refund sink and an agent pipeline whose third turn (a refund of 500)
/// the spend-limit gate escalates; `extra` goes into the pipeline's table.
async fn escalating_agent(extra: &str) -> (tempfile::TempDir, Sink, String) {
    let (dir, sink, config) = agent_fixture(
        &["spend-limit"],
        &format!("gates = [\"spend-limit\"]\n{extra}"),
    )
    .await;
    std::fs::write(
        dir.path().join("spend-limit.toml"),
        "[config]\nescalate_above = 100\ndaily_budget = 10000\n",
    )
    .expect("sidecar");
    (dir, sink, config)
}

async fn escalating_host(dir: &std::path::Path, config: &str) -> Host {
    Host::builder()
        .config_str(config, dir)
        .provider(
            "agent",
            Arc::new(model::AgentModel {
                big_at: Some(2),
                ..model::AgentModel::new(5)
            }),
        )
        .build()
        .await
        .expect("host")
}

/// An agent turn a gate escalates holds the run; the approval (decided in
/// another process) executes the held action with the key a direct turn
/// would use, and the agent goes on to the end.
#[tokio::test(flavor = "multi_thread")]
async fn an_escalated_agent_turn_continues_after_its_approval() {
    let (dir, sink, config) = escalating_agent("").await;
    let a = escalating_host(dir.path(), &config).await;
    let held = a.run("agent", Request::text("refund five orders")).await;
    assert_eq!(held.status, RunStatus::AwaitingApproval, "{:?}", held.error);
    assert_eq!(sink.keys().len(), 2, "the turns before the escalation ran");
    assert_eq!(held.approvals.len(), 1);
    drop(a);

    let b = escalating_host(dir.path(), &config).await;
    let (_, run) = b
        .decide(
            &held.approvals[0],
            reins::approvals::Verdict::Approve,
            "alice",
            None,
        )
        .await
        .expect("decide");
    let run = run.expect("the run goes on");
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.error);
    assert_eq!(run.output, Some(json!({"done": 5})));
    let seen = sink.keys();
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        (seen.len(), unique.len()),
        (5, 5),
        "each turn's refund once: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|k| k.starts_with(&format!("{}.3:", held.run_id))),
        "the approved turn keeps its turn's key: {seen:?}"
    );
    assert_eq!(
        run.executions.len(),
        5,
        "every turn's executions, before and after the hold"
    );
    assert_eq!(b.state().steps(&held.run_id).await.expect("steps").len(), 5);
    assert_eq!(
        b.stored_run(&held.run_id).await.expect("stored")["status"],
        "completed"
    );
}

/// A rejected agent turn is told to the model (who rejected it and why),
/// nothing of it is sent, and the agent goes on; `on_rejection = "fail"`
/// ends the run instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_agent_turn_is_told_to_the_model_or_fails_the_run() {
    let (dir, sink, config) = escalating_agent("").await;
    let host = escalating_host(dir.path(), &config).await;
    let held = host.run("agent", Request::text("refund five orders")).await;
    assert_eq!(held.status, RunStatus::AwaitingApproval, "{:?}", held.error);
    let (_, run) = host
        .decide(
            &held.approvals[0],
            reins::approvals::Verdict::Reject,
            "alice",
            Some("too much".into()),
        )
        .await
        .expect("decide");
    let run = run.expect("the run goes on");
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.error);
    assert_eq!(sink.keys().len(), 4, "the rejected refund was never sent");
    let rejected: Vec<_> = run
        .executions
        .iter()
        .filter(|e| e.status == reins::pipeline::ExecStatus::Rejected)
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].arguments["amount"], json!(500));
    let steps = host.state().steps(&held.run_id).await.expect("steps");
    let told = steps[2].data["messages"].to_string();
    assert!(
        told.contains("rejected") && told.contains("alice") && told.contains("too much"),
        "{told}"
    );

    let (dir, sink, config) = escalating_agent("on_rejection = \"fail\"").await;
    let host = escalating_host(dir.path(), &config).await;
    let held = host.run("agent", Request::text("refund five orders")).await;
    let (_, run) = host
        .decide(
            &held.approvals[0],
            reins::approvals::Verdict::Reject,
            "bob",
            None,
        )
        .await
        .expect("decide");
    let run = run.expect("result");
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        matches!(
            run.error,
            Some(reins::pipeline::RunError::ApprovalRejected { .. })
        ),
        "{:?}",
        run.error
    );
    assert_eq!(sink.keys().len(), 2);
}

/// A crash inside an agent turn — after the model answered, while its
/// refund was being sent — is resumed by replaying that turn's recorded
/// answer: the same action is re-sent with the same key, even though the
/// model would now answer something else.
#[tokio::test(flavor = "multi_thread")]
async fn a_turn_redone_after_a_crash_replays_the_models_answer() {
    let (dir, sink, config) = agent_fixture(&[], "").await;
    let host = |model: model::AgentModel| {
        Host::builder()
            .config_str(config.clone(), dir.path())
            .provider("agent", Arc::new(model))
            .build()
    };
    let a = host(model::AgentModel::new(5)).await.expect("host");
    let first = a.run("agent", Request::text("refund five orders")).await;
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    let last_key = first.executions[4].idempotency_key.clone();

    // Emulate the crash: turn 5 not checkpointed, its refund `sending`, the run `running`.
    let db = rusqlite::Connection::open(dir.path().join("reins-state.db")).expect("state file");
    db.execute(
        "DELETE FROM steps WHERE run_id = ?1 AND step = 5",
        [&first.run_id],
    )
    .expect("delete");
    let store = a.state().clone();
    store
        .set_action(&last_key, reins::state::ActionState::Sending, None, None, 1)
        .await
        .expect("sending");
    let mut record = store.run(&first.run_id).await.expect("store").expect("run");
    record.status = RunStatus::Running;
    store.put_run(&record).await.expect("put");
    drop(a);

    // The model would now ask for 500 in turn 5; the recorded answer (1) is used.
    let b = host(model::AgentModel {
        big_at: Some(4),
        ..model::AgentModel::new(5)
    })
    .await
    .expect("host");
    let done = b.resume(&first.run_id).await.expect("resume");
    assert_eq!(done.status, RunStatus::Completed, "{:?}", done.error);
    assert_eq!(done.output, Some(json!({"done": 5})));
    assert_eq!(
        done.executions[4].arguments["amount"],
        json!(1),
        "the replayed answer's action"
    );
    let seen = sink.keys();
    assert_eq!(seen.len(), 6, "turn 5's refund re-sent once: {seen:?}");
    assert_eq!(
        seen.iter().filter(|k| **k == last_key).count(),
        2,
        "with the same key"
    );
}
