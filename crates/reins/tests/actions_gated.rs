//! Constraints, gates, executors and approvals end to end: real plugins
//! (tool-manifest, spend-limit, echo-gate), a scripted model, and a webhook
//! sink on loopback that counts what it applied by idempotency key.

use reins::Host;
use reins::approvals::{ApprovalError, Verdict};
use reins::pipeline::{ExecStatus, Request, RunError, RunStatus};
use reins_testing::plugins;
use reins_testing::webhook::Sink;
use serde_json::{Value, json};
use std::sync::Arc;

fn refund(amount: f64) -> Value {
    json!([{"name": "issue_refund", "arguments": {"order": "A-1", "amount": amount}}])
}

struct Fixture {
    _dir: tempfile::TempDir,
    host: Host,
    sink: Sink,
    config: String,
}

impl Fixture {
    /// A new host on the same config and state file (a restart).
    async fn restart(&self) -> Host {
        Host::builder()
            .config_str(self.config.clone(), self._dir.path())
            .build()
            .await
            .expect("host")
    }
}

async fn fixture(extra: &str, budget: u32) -> Fixture {
    let sink = Sink::start().await;
    let url = sink.url().to_owned();
    let dir = plugins::plugins_dir(&["tool-manifest", "spend-limit", "echo-gate"]);
    plugins::refund_sidecars(dir.path(), 100.0, f64::from(budget));
    let responses = json!([
        {"match": "refund 20", "tool_calls": refund(20.0)},
        {"match": "refund 10", "tool_calls": refund(10.0)},
        {"match": "refund 500", "tool_calls": refund(500.0)},
        {"match": "refund minus", "tool_calls": refund(-5.0)},
        {"match": "wire money", "tool_calls": [{"name": "wire_money", "arguments": {"to": "x"}}]},
        {"match": "bad arguments", "tool_calls": [{"name": "issue_refund", "arguments": {"order": 7}}]},
        {"attempt": 2, "match": "denied", "tool_calls": refund(5.0)},
        {"attempt": 2, "match": "not an available tool", "tool_calls": refund(20.0)},
        {"attempt": 2, "match": "issue_refund", "tool_calls": refund(20.0)},
    ]);
    let config = format!(
        r#"
plugins_dir = "."

[providers.script]
kind = "scripted"
responses = {responses}

[pipelines.refunds]
model = "script"
constraints = "tool-manifest"
gates = ["spend-limit"]

[pipelines.refunds.repair]
max_attempts = 2

[pipelines.refunds.executors.issue_refund]
kind = "webhook"
url = "{url}"
timeout_ms = 2000
retries = 3

{extra}
"#,
        responses = toml_inline(&responses)
    );
    let host = Host::builder()
        .config_str(config.clone(), dir.path())
        .build()
        .await
        .expect("host");
    Fixture {
        _dir: dir,
        host,
        sink,
        config,
    }
}

/// JSON → a TOML inline value (arrays and inline tables).
fn toml_inline(v: &Value) -> String {
    match v {
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(toml_inline).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(o) => format!(
            "{{ {} }}",
            o.iter()
                .map(|(k, v)| format!(
                    "{} = {}",
                    serde_json::to_string(k).unwrap_or_default(),
                    toml_inline(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A request from a caller of `tenant`, as an embedder that authenticated
/// it sets it (budgets and limits key on the caller, not on metadata).
fn ask(text: &str, tenant: &str) -> Request {
    Request::text(text).with_caller(reins::runtime::Caller {
        subject: format!("user-of-{tenant}"),
        tenant: Some(tenant.to_owned()),
        credential: "token:test".to_owned(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allowed_refund_is_sent_once_with_its_idempotency_key() {
    let f = fixture("", 1000).await;
    let r = f.host.run("refunds", ask("please refund 20", "t1")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.executions.len(), 1);
    let e = &r.executions[0];
    assert_eq!(e.status, ExecStatus::Done);
    assert_eq!(e.idempotency_key, format!("{}:1:0", r.run_id));
    assert_eq!(f.sink.applied(), 1);
    assert_eq!(f.sink.keys(), vec![e.idempotency_key.clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tools_and_bad_arguments_never_execute_and_go_back_for_repair() {
    let f = fixture("", 1000).await;
    let r = f.host.run("refunds", ask("wire money to x", "t1")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.attempts.len(), 2);
    let first = &r.attempts[0].violations;
    assert!(
        first.iter().any(|v| v.violation.code == "tool-not-allowed"),
        "{first:?}"
    );
    assert_eq!(f.sink.applied(), 1, "only the repaired refund executes");

    let r = f.host.run("refunds", ask("bad arguments", "t2")).await;
    assert!(
        r.attempts[0]
            .violations
            .iter()
            .any(|v| v.violation.code == "tool-arguments")
    );
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(f.sink.applied(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_invalid_action_fail_fails_the_run_without_executing() {
    let f = fixture("", 1000).await;
    // The same pipeline with `on_invalid_action = "fail"`, built from the same plugins.
    let dir = f._dir.path();
    let text = std::fs::read_to_string(dir.join("tool-manifest.toml")).expect("read");
    assert!(text.contains("issue_refund"));
    let config = format!(
        "plugins_dir = \".\"\n[providers.script]\nkind = \"scripted\"\nresponses = [{{ match = \"wire\", tool_calls = [{{ name = \"wire_money\", arguments = {{ to = \"x\" }} }}] }}]\n[pipelines.strict]\nmodel = \"script\"\nconstraints = \"tool-manifest\"\non_invalid_action = \"fail\"\n"
    );
    let host = Host::builder()
        .config_str(config, dir)
        .build()
        .await
        .expect("host");
    let r = host.run("strict", ask("wire money", "t1")).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(r.attempts.len(), 1, "no repair");
    assert_eq!(f.sink.applied(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_action_is_repaired_and_the_rewrite_is_rechecked() {
    let f = fixture("", 1000).await;
    let r = f.host.run("refunds", ask("refund minus five", "t1")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert!(
        r.attempts[0]
            .violations
            .iter()
            .any(|v| v.violation.code == "denied")
    );
    assert_eq!(r.executions[0].arguments["amount"], json!(5.0));
    assert_eq!(f.sink.applied(), 1);

    // echo-gate rewrites the arguments to {"echo": ...}: that fails the
    // tool's schema, so the run fails and nothing is sent.
    let dir = f._dir.path();
    std::fs::write(dir.join("echo-gate.toml"), "[config]\nrewrite = true\n").expect("sidecar");
    let config = "plugins_dir = \".\"\n[providers.script]\nkind = \"scripted\"\nresponses = [{ match = \"refund\", tool_calls = [{ name = \"issue_refund\", arguments = { order = \"A\", amount = 1 } }] }]\n[pipelines.rw]\nmodel = \"script\"\nconstraints = \"tool-manifest\"\ngates = [\"echo-gate\"]\n";
    let host = Host::builder()
        .config_str(config, dir)
        .build()
        .await
        .expect("host");
    let r = host.run("rw", ask("refund", "t1")).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert!(
        matches!(
            r.error,
            Some(RunError::Plugin {
                kind: "bad_rewrite",
                ..
            })
        ),
        "{:?}",
        r.error
    );
    assert_eq!(r.decisions[0].decision.kind(), "rewrite");
}

#[tokio::test(flavor = "multi_thread")]
async fn escalate_then_approve_executes_exactly_once() {
    let f = fixture("", 1000).await;
    let r = f.host.run("refunds", ask("refund 500 please", "t1")).await;
    assert_eq!(r.status, RunStatus::AwaitingApproval, "{:?}", r.error);
    assert_eq!(f.sink.applied(), 0, "nothing runs before a human decides");
    assert_eq!(r.approvals.len(), 1);
    let id = r.approvals[0].clone();
    let pending = f.host.approvals(&Default::default()).await.unwrap();
    assert_eq!(pending[0].reason.is_empty(), false);
    assert_eq!(pending[0].action.arguments["amount"], json!(500.0));

    let (approval, run) = f
        .host
        .decide(&id, Verdict::Approve, "alice", Some("ok".into()))
        .await
        .expect("decide");
    assert_eq!(approval.decided_by.as_deref(), Some("alice"));
    assert!(approval.decided_at_ms.is_some());
    let run = run.expect("the run continues");
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.error);
    assert_eq!(run.executions[0].status, ExecStatus::Done);
    assert_eq!(f.sink.applied(), 1);

    // A decided approval cannot be decided again, and nothing is re-sent.
    let again = f.host.decide(&id, Verdict::Approve, "bob", None).await;
    assert!(matches!(again, Err(ApprovalError::AlreadyDecided { .. })));
    assert_eq!(f.sink.keys().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn escalate_then_reject_fails_and_releases_the_budget() {
    // Budget 500: the escalated 500 reserves it all.
    let f = fixture("", 500).await;
    let r = f.host.run("refunds", ask("refund 500 please", "t1")).await;
    assert_eq!(r.status, RunStatus::AwaitingApproval);
    let blocked = f.host.run("refunds", ask("refund 20", "t1")).await;
    assert_ne!(
        blocked.status,
        RunStatus::Completed,
        "the reservation holds the budget"
    );
    let (_, run) = f
        .host
        .decide(
            &r.approvals[0],
            Verdict::Reject,
            "alice",
            Some("too much".into()),
        )
        .await
        .expect("decide");
    let run = run.expect("run result");
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        matches!(run.error, Some(RunError::ApprovalRejected { .. })),
        "{:?}",
        run.error
    );
    assert_eq!(f.sink.applied(), 0);
    // The rejected reservation is released: a small refund fits again.
    let ok = f.host.run("refunds", ask("refund 20", "t1")).await;
    assert_eq!(ok.status, RunStatus::Completed, "{:?}", ok.error);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_executes_nothing_and_spends_nothing() {
    let f = fixture("", 25).await;
    let mut req = ask("refund 20", "t1");
    req.dry_run = true;
    for _ in 0..3 {
        let r = f.host.run("refunds", req.clone()).await;
        assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
        assert!(r.dry_run);
        assert_eq!(r.executions[0].status, ExecStatus::Planned);
        assert_eq!(r.decisions[0].decision.kind(), "allow");
    }
    assert_eq!(f.sink.keys().len(), 0, "the sink counts zero");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_reuse_the_idempotency_key_and_apply_once() {
    let f = fixture("", 1000).await;
    f.sink.fail_next(2);
    let r = f.host.run("refunds", ask("refund 20", "t1")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.executions[0].tries, 3);
    let seen = f.sink.keys();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|k| k == &seen[0]), "{seen:?}");
    assert_eq!(f.sink.applied(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_action_fails_the_run_and_releases_its_budget() {
    let f = fixture("", 25).await;
    f.sink.fail_next(100);
    let r = f.host.run("refunds", ask("refund 20", "t1")).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert!(
        matches!(r.error, Some(RunError::ActionFailed { .. })),
        "{:?}",
        r.error
    );
    assert_eq!(r.executions[0].tries, 4, "1 try + 3 retries");
    f.sink.fail_next(0);
    let ok = f.host.run("refunds", ask("refund 20", "t1")).await;
    assert_eq!(
        ok.status,
        RunStatus::Completed,
        "budget was released: {:?}",
        ok.error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_refunds_against_a_budget_for_ten() {
    let f = Arc::new(fixture("", 100).await);
    let runs: Vec<_> = (0..100)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move { f.host.run("refunds", ask("refund 10", "shared")).await })
        })
        .collect();
    let mut completed = 0;
    for r in runs {
        if r.await.expect("join").status == RunStatus::Completed {
            completed += 1;
        }
    }
    assert_eq!(completed, 10);
    assert_eq!(f.sink.applied(), 10, "exactly 10 executed");
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_refuse_then_admit_after_the_window() {
    let f = fixture(
        "[pipelines.refunds.limits]\nkey = \"tenant\"\nrequests = 2\nwindow_seconds = 1\n",
        1000,
    )
    .await;
    for _ in 0..2 {
        let r = f.host.run("refunds", ask("refund 10", "t1")).await;
        assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    }
    let r = f.host.run("refunds", ask("refund 10", "t1")).await;
    match &r.error {
        Some(RunError::RateLimited {
            retry_after_s, key, ..
        }) => {
            assert_eq!(key, "t1");
            assert!(*retry_after_s >= 1);
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    // Another tenant has its own window.
    assert_eq!(
        f.host.run("refunds", ask("refund 10", "t2")).await.status,
        RunStatus::Completed
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = f.host.run("refunds", ask("refund 10", "t1")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_listed_in_an_output_field_are_gated_and_executed() {
    let f = fixture("", 1000).await;
    let dir = f._dir.path();
    let config = r#"
plugins_dir = "."
[providers.script]
kind = "scripted"
responses = [
  { match = "small", content = { reply = "Refunding now.", actions = [ { tool = "issue_refund", arguments = { order = "A-9", amount = 15 } } ] } },
  { match = "malformed", content = { reply = "x", actions = [ { arguments = {} } ] } },
]
[pipelines.field]
model = "script"
constraints = "tool-manifest"
gates = ["spend-limit"]
actions_field = "/actions"
[pipelines.field.repair]
max_attempts = 1
"#;
    let host = Host::builder()
        .config_str(config, dir)
        .build()
        .await
        .expect("host");
    let r = host.run("field", ask("a small refund", "t1")).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.decisions[0].tool, "issue_refund");
    assert_eq!(r.executions[0].status, ExecStatus::Returned);
    assert_eq!(r.executions[0].arguments["amount"], json!(15));
    assert_eq!(
        r.output.as_ref().map(|o| o["reply"].clone()),
        Some(json!("Refunding now."))
    );

    let r = host.run("field", ask("malformed", "t1")).await;
    assert_eq!(r.status, RunStatus::Failed);
    assert!(
        r.attempts[0]
            .violations
            .iter()
            .any(|v| v.violation.path == "/actions/0"),
        "{:?}",
        r.attempts[0].violations
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_and_approvals_survive_a_restart_and_the_approved_action_runs_once() {
    let f = fixture("", 1000).await;
    let r = f.host.run("refunds", ask("refund 500 please", "t1")).await;
    assert_eq!(r.status, RunStatus::AwaitingApproval, "{:?}", r.error);
    let id = r.approvals[0].clone();
    let done = f.host.run("refunds", ask("please refund 20", "t1")).await;
    assert_eq!(f.sink.applied(), 1);

    // A new process on the same state file.
    let host = f.restart().await;
    let stored = host
        .stored_run(&done.run_id)
        .await
        .expect("the completed run is stored");
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["executions"][0]["status"], "done");
    let held = host
        .stored_run(&r.run_id)
        .await
        .expect("the held run is stored");
    assert_eq!(held["status"], "awaiting_approval");
    assert_eq!(held["approvals"], json!([id.clone()]));
    let pending = host
        .approval(&id)
        .await
        .unwrap()
        .expect("the approval survives");
    assert_eq!(pending.action.arguments["amount"], json!(500.0));

    let (_, run) = host
        .decide(&id, Verdict::Approve, "alice", None)
        .await
        .expect("decide");
    let run = run.expect("the run continues on the new host");
    assert_eq!(run.status, RunStatus::Completed, "{:?}", run.error);
    assert_eq!(
        run.executions[0].idempotency_key,
        format!("{}:1:0", r.run_id)
    );
    assert_eq!(f.sink.applied(), 2);
    let stored = host.stored_run(&r.run_id).await.unwrap();
    assert_eq!(stored["status"], "completed");
    assert!(
        stored["trace"].as_array().is_some_and(|t| !t.is_empty()),
        "the held run's trace is kept"
    );
    // The first host sees the decision too (one store).
    assert!(matches!(
        f.host.decide(&id, Verdict::Reject, "bob", None).await,
        Err(ApprovalError::AlreadyDecided { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_never_resends_a_done_action_and_resends_a_sending_one_with_its_key() {
    use reins::state::ActionState;
    let f = fixture("", 1000).await;
    let first = f.host.run("refunds", ask("please refund 20", "t1")).await;
    assert_eq!(first.status, RunStatus::Completed, "{:?}", first.error);
    let key = first.executions[0].idempotency_key.clone();
    let stored = f
        .host
        .state()
        .action(&key)
        .await
        .unwrap()
        .expect("recorded");
    assert_eq!(stored.state, ActionState::Done);

    // A crash after the action but before the run's end was recorded: the
    // run is still `running`; a new process resumes it and the done action
    // is not sent again.
    let crashed = |host: &reins::Host| {
        let (store, run_id) = (host.state().clone(), first.run_id.clone());
        async move {
            let mut record = store.run(&run_id).await.unwrap().expect("run");
            record.status = RunStatus::Running;
            store.put_run(&record).await.unwrap();
        }
    };
    crashed(&f.host).await;
    let host = f.restart().await;
    let again = host.resume(&first.run_id).await.expect("resume");
    assert_eq!(again.status, RunStatus::Completed, "{:?}", again.error);
    assert_eq!(again.executions[0].status, ExecStatus::Done);
    assert_eq!(
        f.sink.keys(),
        vec![key.clone()],
        "a done action is never sent again"
    );

    // A crash while sending leaves it `sending`: it is sent again, same key.
    host.state()
        .set_action(&key, ActionState::Sending, None, None, 1)
        .await
        .unwrap();
    crashed(&host).await;
    let third = host.resume(&first.run_id).await.expect("resume");
    assert_eq!(third.executions[0].status, ExecStatus::Done);
    assert_eq!(f.sink.keys(), vec![key.clone(), key.clone()]);
    assert_eq!(f.sink.applied(), 1, "the sink applies the key once");
    assert_eq!(
        host.state().action(&key).await.unwrap().unwrap().state,
        ActionState::Done
    );
}
