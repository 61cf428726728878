//! One store test suite, run against SQLite (a file, WAL) and PostgreSQL
//! (`REINS_TEST_PG_URL`, set by `scripts/test.sh`; the PostgreSQL tests fail,
//! never skip, when it is unset).

use reins::state::{
    ActionRecord, ActionState, ApprovalQuery, ApprovalRecord, ApprovalStatus, Counters,
    Housekeeping, RunRecord, RunStatus, RunStore, StateError, StateSettings, StateStore, StepKind,
    StepRecord, ToolPin, now_ms,
};
use serde_json::json;
use std::sync::Arc;

fn uid(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn suite(store: Arc<dyn StateStore>) {
    runs_and_checkpoints(&*store).await;
    actions_move_through_states(&*store).await;
    approvals_are_decided_once(store.clone()).await;
    counters_add_atomically(store.clone()).await;
    compaction_keeps_summaries(&*store).await;
    expiry_deletes_finished_runs_with_what_they_own(&*store).await;
    cancelled_runs_read_back_and_compact_as_finished(&*store).await;
    leases_fence_writes(store.clone()).await;
    concurrent_checkpoints_each_get_their_own_answer(store.clone()).await;
    finished_runs_are_fenced_and_held_runs_taken_once(store.clone()).await;
    sessions_list_finished_runs_newest_first(&*store).await;
    window_counters_expire_cancel_and_serialize(store.clone()).await;
    the_response_cache_index_keeps_fresh_answers(&*store).await;
    tool_pins_keep_the_first_definition_until_approved(&*store).await;
}

fn pin(server: &str, tool: &str, hash: &str) -> ToolPin {
    ToolPin {
        server: server.to_owned(),
        tool: tool.to_owned(),
        hash: hash.to_owned(),
        definition: json!({"name": tool, "description": hash}),
        pending_hash: None,
        pending_definition: None,
        updated_ms: 0,
    }
}

async fn tool_pins_keep_the_first_definition_until_approved(store: &dyn StateStore) {
    let server = uid("srv");
    let first = store
        .pin_tools(
            &server,
            &[pin(&server, "read", "h1"), pin(&server, "write", "w1")],
        )
        .await
        .expect("pin");
    assert_eq!(
        first.iter().map(|p| p.hash.as_str()).collect::<Vec<_>>(),
        ["h1", "w1"]
    );
    // A changed definition is pending; the pin stays.
    let changed = store
        .pin_tools(&server, &[pin(&server, "read", "h2")])
        .await
        .expect("pin");
    let read = changed.iter().find(|p| p.tool == "read").expect("read");
    assert_eq!(
        (read.hash.as_str(), read.pending_hash.as_deref()),
        ("h1", Some("h2"))
    );
    assert_eq!(
        read.pending_definition
            .as_ref()
            .map(|d| d["description"].clone()),
        Some(json!("h2"))
    );
    // Only the pending hash can be approved, once.
    assert!(
        !store
            .approve_tool(&server, "read", "h3")
            .await
            .expect("approve")
    );
    assert!(
        store
            .approve_tool(&server, "read", "h2")
            .await
            .expect("approve")
    );
    assert!(
        !store
            .approve_tool(&server, "read", "h2")
            .await
            .expect("approve")
    );
    let all = store.tool_pins(Some(&server)).await.expect("pins");
    let read = all.iter().find(|p| p.tool == "read").expect("read");
    assert_eq!(
        (read.hash.as_str(), read.pending_hash.as_deref()),
        ("h2", None)
    );
    assert!(store.tool_pins(None).await.expect("all pins").len() >= 2);
}

async fn the_response_cache_index_keeps_fresh_answers(store: &dyn StateStore) {
    let key = uid("cache");
    assert!(store.cache_get(&key, 0).await.unwrap().is_none());
    store
        .cache_put(&key, "p", &json!({"content": "1"}), 5_000)
        .await
        .unwrap();
    store
        .cache_put(&key, "p", &json!({"content": "2"}), 6_000)
        .await
        .unwrap();
    assert_eq!(
        store.cache_get(&key, 6_000).await.unwrap(),
        Some((json!({"content": "2"}), 6_000))
    );
    assert!(
        store.cache_get(&key, 6_001).await.unwrap().is_none(),
        "older than asked for"
    );
}

/// Checkpoints made at once share a commit (SQLite's writer, PostgreSQL's
/// batcher), yet each caller gets its own answer: a fenced one fails alone,
/// a taken idempotency key fails alone, and the others are all written.
async fn concurrent_checkpoints_each_get_their_own_answer(store: Arc<dyn StateStore>) {
    let pipeline = uid("pipe");
    let key = uid("key");
    let mut holder = RunRecord::new(&uid("holder"), &pipeline, RunStatus::Running);
    holder.idempotency_key = Some(key.clone());
    store.put_run(&holder).await.unwrap();
    let mut fenced = RunRecord::new(&uid("fenced"), &pipeline, RunStatus::Running);
    fenced.owner = Some("n2".into());
    fenced.lease_until_ms = now_ms() + 60_000;
    store.put_run(&fenced).await.unwrap();

    let mut calls = Vec::new();
    for i in 0..40 {
        let mut run = RunRecord::new(&uid("many"), &pipeline, RunStatus::Running);
        run.owner = Some("n1".into());
        run.lease_until_ms = now_ms() + 60_000;
        let expect = match i {
            7 => {
                run = fenced.clone();
                run.owner = Some("n1".into());
                "lease"
            }
            23 => {
                run.idempotency_key = Some(key.clone());
                "conflict"
            }
            _ => "ok",
        };
        calls.push((run, expect));
    }
    let results = futures_util::future::join_all(calls.iter().map(|(run, _)| {
        let store = store.clone();
        let step = StepRecord {
            run_id: run.run_id.clone(),
            step: 1,
            kind: StepKind::Attempt,
            data: json!({"attempt": 1}),
            created_ms: now_ms(),
        };
        let run = run.clone();
        async move { store.checkpoint(&run, &step).await }
    }))
    .await;
    for ((run, expect), result) in calls.iter().zip(results) {
        match (*expect, &result) {
            ("ok", Ok(())) => assert_eq!(
                store.steps(&run.run_id).await.unwrap().len(),
                1,
                "{}",
                run.run_id
            ),
            ("lease", Err(StateError::LeaseLost { .. })) => {
                assert!(
                    store.steps(&run.run_id).await.unwrap().is_empty(),
                    "a fenced checkpoint writes no step"
                )
            }
            ("conflict", Err(StateError::Conflict(_))) => {
                assert!(
                    store.run(&run.run_id).await.unwrap().is_none(),
                    "the refused run is not written"
                )
            }
            (want, got) => panic!("{}: expected {want}, got {got:?}", run.run_id),
        }
    }
}

async fn leases_fence_writes(store: Arc<dyn StateStore>) {
    let id = uid("leased");
    let mut mine = RunRecord::new(&id, "p", RunStatus::Running);
    mine.owner = Some("n1".into());
    mine.lease_until_ms = now_ms() + 60_000;
    store.put_run(&mine).await.unwrap();
    // Another node can neither write nor claim it while the lease holds.
    let mut theirs = mine.clone();
    theirs.owner = Some("n2".into());
    theirs.updated_ms = now_ms();
    assert!(matches!(
        store.put_run(&theirs).await,
        Err(StateError::LeaseLost { .. })
    ));
    let step = StepRecord {
        run_id: id.clone(),
        step: 1,
        kind: StepKind::Agent,
        data: json!({}),
        created_ms: now_ms(),
    };
    assert!(matches!(
        store.checkpoint(&theirs, &step).await,
        Err(StateError::LeaseLost { .. })
    ));
    assert!(
        store.steps(&id).await.unwrap().is_empty(),
        "a fenced checkpoint writes no step"
    );
    assert!(
        !store
            .claim_run(&id, "n2", now_ms(), now_ms() + 1_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_run(&id, "n1", now_ms(), now_ms() + 60_000)
            .await
            .unwrap(),
        "the owner renews"
    );
    let claimable = |node: &'static str| {
        let store = store.clone();
        let id = id.clone();
        async move {
            store
                .claimable_runs(node, now_ms(), 100_000)
                .await
                .unwrap()
                .iter()
                .any(|r| r.run_id == id)
        }
    };
    assert!(claimable("n1").await, "a node may take its own runs back");
    assert!(!claimable("n2").await);

    // The lease runs out: exactly one of many nodes gets the run.
    mine.lease_until_ms = now_ms() - 1;
    store.put_run(&mine).await.unwrap();
    assert!(claimable("n2").await);
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (s, id) = (store.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            s.claim_run(&id, &format!("m{n}"), now_ms(), now_ms() + 60_000)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "one claim wins");
    // The old owner is fenced out now; the new one writes.
    mine.lease_until_ms = now_ms() + 60_000;
    mine.updated_ms = now_ms();
    assert!(matches!(
        store.put_run(&mine).await,
        Err(StateError::LeaseLost { .. })
    ));
    let stored = store.run(&id).await.unwrap().unwrap();
    let winner = stored.owner.clone().unwrap();
    assert!(winner.starts_with('m'));
    let mut done = stored;
    done.status = RunStatus::Completed;
    done.lease_until_ms = 0;
    done.updated_ms = now_ms();
    store.put_run(&done).await.unwrap();
    assert!(
        !store
            .claim_run(&id, "n1", now_ms(), now_ms() + 1)
            .await
            .unwrap(),
        "finished runs are not claimed"
    );
}

async fn finished_runs_are_fenced_and_held_runs_taken_once(store: Arc<dyn StateStore>) {
    let id = uid("finished");
    let mut done = RunRecord::new(&id, "p", RunStatus::Completed);
    done.owner = Some("n1".into());
    store.put_run(&done).await.unwrap();
    // A stalled node's late write cannot turn a finished run back.
    let mut late = RunRecord::new(&id, "p", RunStatus::Running);
    late.owner = Some("n2".into());
    late.lease_until_ms = now_ms() + 60_000;
    assert!(matches!(
        store.put_run(&late).await,
        Err(StateError::LeaseLost { .. })
    ));
    assert_eq!(
        store.run(&id).await.unwrap().unwrap().status,
        RunStatus::Completed
    );

    let held_id = uid("held");
    let mut held = RunRecord::new(&held_id, "p", RunStatus::AwaitingApproval);
    held.owner = Some("n1".into());
    store.put_run(&held).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..6 {
        let (s, id) = (store.clone(), held_id.clone());
        tasks.push(tokio::spawn(async move {
            s.take_held(&id, &format!("d{n}"), now_ms(), now_ms() + 60_000)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "one node continues a held run");
    let taken = store.run(&held_id).await.unwrap().unwrap();
    assert_eq!(taken.status, RunStatus::Running);
    assert!(taken.owner.unwrap().starts_with('d'));
}

async fn sessions_list_finished_runs_newest_first(store: &dyn StateStore) {
    let session = uid("session");
    for (i, status) in [
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Completed,
        RunStatus::Running,
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = RunRecord::new(&format!("{session}-{i}"), "p", status);
        r.session_id = Some(session.clone());
        r.created_ms = 1_000 + i as i64;
        store.put_run(&r).await.unwrap();
    }
    let mut other = RunRecord::new(&uid("other"), "p", RunStatus::Completed);
    other.session_id = Some(uid("session"));
    store.put_run(&other).await.unwrap();
    let mut elsewhere = RunRecord::new(&uid("elsewhere"), "q", RunStatus::Completed);
    elsewhere.session_id = Some(session.clone());
    store.put_run(&elsewhere).await.unwrap();
    let runs = store.session_runs(&session, "p", 10).await.unwrap();
    let ids: Vec<_> = runs.iter().map(|r| r.run_id.clone()).collect();
    assert_eq!(ids, [2, 1, 0].map(|i| format!("{session}-{i}")));
    assert_eq!(store.session_runs(&session, "p", 1).await.unwrap().len(), 1);
    assert!(
        store
            .session_runs("nobody", "p", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.session_runs(&session, "q", 10).await.unwrap().len(),
        1,
        "sessions are per pipeline"
    );
}

async fn window_counters_expire_cancel_and_serialize(store: Arc<dyn StateStore>) {
    let key = uid("window");
    let t = 1_000_000;
    assert_eq!(
        store
            .counter_window_add("g", &key, 100, 60_000, t)
            .await
            .unwrap(),
        100
    );
    assert_eq!(
        store
            .counter_window_add("g", &key, 40, 60_000, t + 10)
            .await
            .unwrap(),
        140
    );
    // A release cancels its reservation (not just the oldest add).
    assert_eq!(
        store
            .counter_window_add("g", &key, -40, 60_000, t + 20)
            .await
            .unwrap(),
        100
    );
    // Once the window has passed, both the reservation and its release are gone.
    assert_eq!(
        store
            .counter_window_add("g", &key, 0, 60_000, t + 60_001)
            .await
            .unwrap(),
        0
    );
    // A release after its add left the window credits nothing.
    assert_eq!(
        store
            .counter_window_add("g", &key, -100, 60_000, t + 60_002)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .counter_window_add("g", &key, 7, 60_000, t + 60_003)
            .await
            .unwrap(),
        7
    );
    assert_eq!(
        store
            .counter_window_add("h", &key, 1, 60_000, t)
            .await
            .unwrap(),
        1,
        "scopes are separate"
    );
    let key = uid("concurrent");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (s, k) = (store.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..10 {
                seen.push(
                    s.counter_window_add("g", &k, 1, 60_000, now_ms())
                        .await
                        .unwrap(),
                );
            }
            seen
        }));
    }
    let mut totals = Vec::new();
    for t in tasks {
        totals.extend(t.await.unwrap());
    }
    totals.sort();
    assert_eq!(
        totals,
        (1..=80).collect::<Vec<_>>(),
        "every add sees every add before it, and only those"
    );
}

async fn runs_and_checkpoints(store: &dyn StateStore) {
    let id = uid("run");
    let mut run = RunRecord::new(&id, "p", RunStatus::Running);
    run.request = json!({"messages": [{"role": "user", "content": "hi"}]});
    run.idempotency_key = Some(uid("key"));
    run.result = json!({"run_id": id, "status": "running"});
    store.put_run(&run).await.unwrap();
    assert_eq!(store.run(&id).await.unwrap().as_ref(), Some(&run));
    let by_key = store
        .run_by_key("p", run.idempotency_key.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(by_key.map(|r| r.run_id), Some(id.clone()));
    assert!(
        store
            .run_by_key("other", run.idempotency_key.as_deref().unwrap())
            .await
            .unwrap()
            .is_none()
    );

    for step in 1..=3u32 {
        let mut next = run.clone();
        next.result = json!({"run_id": id, "step": step});
        next.request = serde_json::Value::Null; // keeps the stored request
        next.updated_ms = now_ms();
        let rec = StepRecord {
            run_id: id.clone(),
            step,
            kind: StepKind::Agent,
            data: json!({"messages": step}),
            created_ms: now_ms(),
        };
        store.checkpoint(&next, &rec).await.unwrap();
    }
    // Writing a step again replaces it.
    let again = StepRecord {
        run_id: id.clone(),
        step: 3,
        kind: StepKind::Agent,
        data: json!({"messages": "3b"}),
        created_ms: now_ms(),
    };
    store.checkpoint(&run, &again).await.unwrap();
    // A step written under another id (an agent turn's, `RUN.STEP`), fenced
    // on the run's row, stays apart from the run's own steps.
    let turn = StepRecord {
        run_id: format!("{id}.2"),
        step: 1,
        kind: StepKind::Attempt,
        data: json!({"turn": true}),
        created_ms: now_ms(),
    };
    store.checkpoint(&run, &turn).await.unwrap();
    assert_eq!(
        store.steps(&format!("{id}.2")).await.unwrap()[0].data,
        json!({"turn": true})
    );
    let steps = store.steps(&id).await.unwrap();
    assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(steps[2].data, json!({"messages": "3b"}));
    let stored = store.run(&id).await.unwrap().unwrap();
    assert_eq!(
        stored.request, run.request,
        "a null request keeps the stored one"
    );
    assert!(stored.idempotency_key.is_some());

    let running = store
        .runs_with_status(RunStatus::Running, 10_000)
        .await
        .unwrap();
    assert!(running.iter().any(|r| r.run_id == id));
    let mut done = stored.clone();
    done.status = RunStatus::Completed;
    store.put_run(&done).await.unwrap();
    let running = store
        .runs_with_status(RunStatus::Running, 10_000)
        .await
        .unwrap();
    assert!(!running.iter().any(|r| r.run_id == id));
    assert!(store.run("nope").await.unwrap().is_none());

    // A run whose start the store never recorded (it refused the write;
    // the run went on) gets its row, owned, from its first checkpoint, and
    // its owner's later checkpoints land.
    let unseen = uid("unseen");
    let mut first = RunRecord::new(&unseen, "p", RunStatus::Running);
    first.owner = Some("n1".into());
    first.lease_until_ms = now_ms() + 60_000;
    for step in 1..=2 {
        let s = StepRecord {
            run_id: unseen.clone(),
            step,
            kind: StepKind::Attempt,
            data: json!({"attempt": step}),
            created_ms: now_ms(),
        };
        store.checkpoint(&first, &s).await.unwrap();
    }
    let row = store
        .run(&unseen)
        .await
        .unwrap()
        .expect("the checkpoint wrote the run's row");
    assert_eq!(row.owner.as_deref(), Some("n1"));
    assert_eq!(row.status, RunStatus::Running);
    assert_eq!(store.steps(&unseen).await.unwrap().len(), 2);
}

async fn actions_move_through_states(store: &dyn StateStore) {
    let run_id = uid("run");
    let key = format!("{run_id}:1:0");
    let planned = ActionRecord {
        key: key.clone(),
        run_id: run_id.clone(),
        tool: "refund".into(),
        arguments: json!({"amount": 5}),
        state: ActionState::Planned,
        response: None,
        http_status: None,
        tries: 0,
        updated_ms: 0,
    };
    let first = store.plan_action(&planned).await.unwrap();
    assert_eq!(first.state, ActionState::Planned);
    store
        .set_action(&key, ActionState::Sending, None, None, 0)
        .await
        .unwrap();
    // Planning the same key again returns what is stored, not a fresh plan.
    let second = store.plan_action(&planned).await.unwrap();
    assert_eq!(second.state, ActionState::Sending);
    store
        .set_action(
            &key,
            ActionState::Done,
            Some(&json!({"ok": true})),
            Some(200),
            2,
        )
        .await
        .unwrap();
    let done = store.action(&key).await.unwrap().unwrap();
    assert_eq!(done.state, ActionState::Done);
    assert_eq!(done.response, Some(json!({"ok": true})));
    assert_eq!(done.http_status, Some(200));
    assert_eq!(done.tries, 2);
    assert_eq!(done.arguments, json!({"amount": 5}));
    assert_eq!(
        store.plan_action(&planned).await.unwrap().state,
        ActionState::Done
    );
    assert_eq!(store.actions(&run_id).await.unwrap().len(), 1);
    assert!(store.action("missing").await.unwrap().is_none());
}

async fn approvals_are_decided_once(store: Arc<dyn StateStore>) {
    let run_id = uid("run");
    let pipeline = uid("pipe");
    let mut run = RunRecord::new(&run_id, &pipeline, RunStatus::AwaitingApproval);
    run.result = json!({"run_id": run_id});
    let approvals: Vec<ApprovalRecord> = (0..2)
        .map(|i| ApprovalRecord {
            id: uid("apr"),
            run_id: run_id.clone(),
            pipeline: pipeline.clone(),
            status: ApprovalStatus::Pending,
            created_ms: now_ms() + i,
            data: json!({"index": i}),
        })
        .collect();
    store.hold(&run, &approvals).await.unwrap();
    assert_eq!(
        store.run(&run_id).await.unwrap().unwrap().status,
        RunStatus::AwaitingApproval
    );
    let q = ApprovalQuery {
        pipeline: Some(pipeline.clone()),
        ..Default::default()
    };
    let listed = store.approvals(&q).await.unwrap();
    assert_eq!(listed, approvals);
    // Two concurrent decisions: exactly one wins.
    let mut a = approvals[0].clone();
    a.status = ApprovalStatus::Approved;
    let mut b = approvals[0].clone();
    b.status = ApprovalStatus::Rejected;
    let (s1, s2) = (store.clone(), store.clone());
    let (r1, r2) = tokio::join!(
        tokio::spawn(async move { s1.decide(&a).await.unwrap() }),
        tokio::spawn(async move { s2.decide(&b).await.unwrap() })
    );
    assert!(r1.unwrap() ^ r2.unwrap(), "exactly one decision wins");
    let pending = store
        .approvals(&ApprovalQuery {
            status: Some(ApprovalStatus::Pending),
            pipeline: Some(pipeline.clone()),
            run_id: Some(run_id.clone()),
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, approvals[1].id);
    assert!(store.approval("apr-none").await.unwrap().is_none());
}

async fn counters_add_atomically(store: Arc<dyn StateStore>) {
    let key = uid("budget");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = store.clone();
        let k = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.counter_add("plugin", &k, 3).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.counter_add("plugin", &key, 0).await.unwrap(), 240);
    assert_eq!(store.counter_add("plugin", &key, -40).await.unwrap(), 200);
    assert_eq!(store.counter_add("other", &key, 1).await.unwrap(), 1);
}

/// `cancelled` is a terminal status like `completed`: its column reads
/// back, the readers find it, and retention compacts it.
async fn cancelled_runs_read_back_and_compact_as_finished(store: &dyn StateStore) {
    let id = uid("cancelled");
    let mut run = RunRecord::new(&id, "p", RunStatus::Cancelled);
    run.updated_ms = 1_000; // long ago
    run.result = json!({"run_id": id, "status": "cancelled", "error": {"kind": "cancelled", "message": "gone"}, "trace": [1]});
    store.put_run(&run).await.unwrap();
    assert_eq!(
        store.run(&id).await.unwrap().unwrap().status,
        RunStatus::Cancelled
    );
    let listed = store
        .runs_with_status(RunStatus::Cancelled, 10_000)
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .any(|r| r.run_id == id && r.status == RunStatus::Cancelled)
    );
    assert!(RunStatus::Cancelled.is_finished());
    assert!(store.compact(now_ms() - 86_400_000).await.unwrap() >= 1);
    assert_eq!(
        store.run(&id).await.unwrap().unwrap().result["compacted"],
        true
    );
}

async fn compaction_keeps_summaries(store: &dyn StateStore) {
    let id = uid("old");
    let mut run = RunRecord::new(&id, "p", RunStatus::Completed);
    run.updated_ms = 1_000; // long ago
    run.result =
        json!({"run_id": id, "status": "completed", "output": {"x": 1}, "trace": [1, 2, 3]});
    run.request = json!({"messages": []});
    run.created_ms = 900;
    run.idempotency_key = Some(uid("key"));
    run.session_id = Some(uid("session"));
    run.owner = Some("n1".into());
    run.lease_until_ms = 0;
    let step = StepRecord {
        run_id: id.clone(),
        step: 1,
        kind: StepKind::Run,
        data: json!({}),
        created_ms: 1_000,
    };
    store.checkpoint(&run, &step).await.unwrap();
    // An agent turn's steps live under `RUN.STEP`; they go with the run's.
    let turn = StepRecord {
        run_id: format!("{id}.1"),
        ..step.clone()
    };
    store.checkpoint(&run, &turn).await.unwrap();
    let other_turn = StepRecord {
        run_id: format!("{id}x.1"),
        ..step.clone()
    };
    store.checkpoint(&run, &other_turn).await.unwrap();
    let live = uid("live");
    let mut running = RunRecord::new(&live, "p", RunStatus::Running);
    running.updated_ms = 1_000;
    store.put_run(&running).await.unwrap();
    let n = store.compact(now_ms() - 86_400_000).await.unwrap();
    assert!(n >= 1);
    let got = store.run(&id).await.unwrap().unwrap();
    assert_eq!(
        got.result,
        json!({"run_id": id, "status": "completed", "output": {"x": 1}, "compacted": true})
    );
    // Everything else of the run is kept as it was (its key still finds it,
    // its session still lists it).
    let mut kept = run.clone();
    kept.result = got.result.clone();
    kept.request = serde_json::Value::Null;
    assert_eq!(got, kept);
    let by_key = store
        .run_by_key("p", run.idempotency_key.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(by_key.map(|r| r.run_id), Some(id.clone()));
    assert!(store.steps(&id).await.unwrap().is_empty());
    assert!(
        store.steps(&format!("{id}.1")).await.unwrap().is_empty(),
        "the agent turn's steps go too"
    );
    assert_eq!(
        store.steps(&format!("{id}x.1")).await.unwrap().len(),
        1,
        "another run's are kept"
    );
    assert_eq!(
        store.run(&live).await.unwrap().unwrap().status,
        RunStatus::Running,
        "running runs are kept"
    );
    assert_eq!(
        store.compact(now_ms() - 86_400_000).await.unwrap(),
        0,
        "compaction is idempotent"
    );
}

/// Past retention a finished run is deleted with its steps and actions;
/// a run still running is not, however old.
async fn expiry_deletes_finished_runs_with_what_they_own(store: &dyn StateStore) {
    let id = uid("expired");
    let mut run = RunRecord::new(&id, "p", RunStatus::Failed);
    run.updated_ms = 1_500;
    run.result = json!({"run_id": id, "status": "failed"});
    let step = StepRecord {
        run_id: id.clone(),
        step: 1,
        kind: StepKind::Run,
        data: json!({}),
        created_ms: 1_500,
    };
    store.checkpoint(&run, &step).await.unwrap();
    let action = ActionRecord {
        key: uid("key"),
        run_id: id.clone(),
        tool: "refund".into(),
        arguments: json!({}),
        state: ActionState::Done,
        response: None,
        http_status: None,
        tries: 1,
        updated_ms: 1_500,
    };
    store.plan_action(&action).await.unwrap();
    let live = uid("live");
    let mut running = RunRecord::new(&live, "p", RunStatus::Running);
    running.updated_ms = 1_500;
    store.put_run(&running).await.unwrap();
    let recent = uid("recent");
    store
        .put_run(&RunRecord::new(&recent, "p", RunStatus::Completed))
        .await
        .unwrap();

    assert!(store.expire(2_000).await.unwrap() >= 1);
    assert!(
        store.run(&id).await.unwrap().is_none(),
        "the expired run is deleted"
    );
    assert!(store.steps(&id).await.unwrap().is_empty());
    assert!(
        store.actions(&id).await.unwrap().is_empty(),
        "its actions go with it"
    );
    assert!(store.action(&action.key).await.unwrap().is_none());
    assert!(
        store.run(&live).await.unwrap().is_some(),
        "a running run is kept"
    );
    assert!(
        store.run(&recent).await.unwrap().is_some(),
        "a recent run is kept"
    );
    assert_eq!(
        store.expire(2_000).await.unwrap(),
        0,
        "expiry is idempotent"
    );
}

/// What issue 14 asks of the state at rest: a finished run compacted to its
/// summary weighs at most 1 KB in the file, and under steady load with
/// retention the file stops growing (freed pages are reused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_runs_weigh_under_a_kilobyte_and_the_file_stays_flat() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = reins::state::sqlite::SqliteStore::open(&path).unwrap();
    const RUNS: usize = 2_000;
    // A run as a harnessed chat request leaves it: a result with its trace,
    // the request, and a checkpoint per attempt (several KB in all).
    let write_runs = |round: i64| {
        let store = &store;
        async move {
            for i in 0..RUNS {
                let id = uid("r");
                let mut run = RunRecord::new(&id, "contract-risks-fix", RunStatus::Completed);
                run.updated_ms = round * 10_000 + i as i64;
                run.result = json!({
                    "run_id": id, "pipeline": "contract-risks-fix", "status": "completed",
                    "output": {"risks": [{"clause": "9.2", "severity": "high"}]},
                    "tokens": {"prompt": 812, "completion": 40, "total": 852, "estimated": true},
                    "duration_us": 1234,
                    "trace": (0..12).map(|k| json!({"layer": "validator", "plugin": format!("p{k}"), "outcome": "pass", "detail": "x".repeat(200)})).collect::<Vec<_>>(),
                });
                run.request = json!({"messages": [{"role": "user", "content": "y".repeat(1_500)}]});
                for step in 1..=2 {
                    let s = StepRecord {
                        run_id: id.clone(),
                        step,
                        kind: StepKind::Run,
                        data: json!({"attempt": step, "answer": "z".repeat(800)}),
                        created_ms: run.updated_ms,
                    };
                    store.checkpoint(&run, &s).await.unwrap();
                }
            }
        }
    };
    // The database file once every committed page is in it (the WAL is
    // scratch space SQLite reuses, and truncates when it resets).
    // The store's own checkpointer may be mid-checkpoint: a TRUNCATE
    // checkpoint then answers busy (or fails) without having copied every
    // frame, so it is retried until it has.
    let file_size = || {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        for _ in 0..500 {
            let busy = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
            if matches!(busy, Ok(0)) {
                return std::fs::metadata(&path).unwrap().len();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the WAL never checkpointed whole");
    };
    write_runs(1).await;
    let full = file_size();
    assert!(
        full / RUNS as u64 > 4_096,
        "the uncompacted runs weigh several KB each ({} B)",
        full / RUNS as u64
    );
    assert_eq!(store.compact(i64::MAX).await.unwrap(), RUNS as u64);
    // The compacted rows alone, as a fresh file holds them.
    let packed = dir.path().join("packed.db");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(&format!("VACUUM INTO '{}'", packed.display()), [])
        .unwrap();
    let per_run = std::fs::metadata(&packed).unwrap().len() / RUNS as u64;
    assert!(
        per_run <= 1_024,
        "a compacted run weighs {per_run} B at rest"
    );
    drop(c);
    // Before retention deletes anything, the live file grows by about the
    // compacted runs: the space of the full ones is used again.
    write_runs(2).await;
    store.compact(i64::MAX).await.unwrap();
    let grown = (file_size() - full) / RUNS as u64;
    assert!(
        grown <= 1_024,
        "the file grew {grown} B a compacted run with nothing deleted"
    );
    // Steady load: each round writes as many runs as retention deletes.
    assert_eq!(
        store.expire(2 * 10_000).await.unwrap(),
        RUNS as u64,
        "round 1 is past retention"
    );
    let settled = file_size();
    for round in 3..6 {
        write_runs(round).await;
        store.compact(i64::MAX).await.unwrap();
        assert_eq!(store.expire(round * 10_000).await.unwrap(), RUNS as u64);
        let now = file_size();
        eprintln!(
            "round {round}: {now} B (settled at {settled} B; {full} B before compaction; {per_run} B per compacted run)"
        );
        assert!(
            now <= settled + settled / 10,
            "round {round}: the file grew from {settled} to {now} B"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StateSettings::default();
    let store = reins::state::open(&settings, dir.path()).await.unwrap();
    assert_eq!(store.kind(), "sqlite");
    suite(store).await;
    assert!(dir.path().join("reins-state.db").exists());
    // Reopening the file sees what was written (and the schema is not re-created).
    let again = reins::state::open(&settings, dir.path()).await.unwrap();
    assert!(
        !again
            .runs_with_status(RunStatus::Completed, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_from_the_first_schema_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, status TEXT NOT NULL,
               result TEXT NOT NULL, request TEXT NOT NULL, idempotency_key TEXT,
               created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
             INSERT INTO runs VALUES ('old-run', 'p', 'running', '{}', 'null', NULL, 1, 1);",
        )
        .unwrap();
    }
    let store = reins::state::sqlite::SqliteStore::open(&path).unwrap();
    let old = store.run("old-run").await.unwrap().expect("kept");
    assert_eq!(
        (old.owner, old.lease_until_ms, old.session_id),
        (None, 0, None)
    );
    assert!(
        store
            .claim_run("old-run", "n1", now_ms(), now_ms() + 1_000)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .counter_window_add("g", "k", 2, 1_000, 5)
            .await
            .unwrap(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_suite() {
    let settings: StateSettings = toml::from_str("kind = \"memory\"").unwrap();
    suite(
        reins::state::open(&settings, std::path::Path::new("."))
            .await
            .unwrap(),
    )
    .await;
}

/// The PostgreSQL URL of the test cluster `scripts/test.sh` starts.
pub fn pg_url() -> String {
    std::env::var("REINS_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "REINS_TEST_PG_URL is not set: run the tests through `bash scripts/test.sh`, which installs and starts \
             a throwaway PostgreSQL on 127.0.0.1, or export a URL of a database these tests may write to"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_suite() {
    let settings: StateSettings =
        toml::from_str(&format!("kind = \"postgres\"\nurl = \"{}\"", pg_url())).unwrap();
    let store = reins::state::open(&settings, std::path::Path::new("."))
        .await
        .unwrap();
    assert_eq!(store.kind(), "postgres");
    suite(store).await;
    // A second connect finds the schema migrated and leaves it be.
    let again = reins::state::open(&settings, std::path::Path::new("."))
        .await
        .unwrap();
    assert!(
        !again
            .runs_with_status(RunStatus::Completed, 100)
            .await
            .unwrap()
            .is_empty()
    );
}
