//! The audit log: the hash chain on SQLite and PostgreSQL (`reins audit
//! verify`, the real binary, names the row that was edited or follows a
//! removed one), and a real `reins serve` recording runs, gate decisions,
//! approvals, plugin reloads, failed logins and admin calls — with no
//! secret in any row.

use reins::state::{AuditEntry, AuditFilter, StateSettings, StateStore};
use reins_testing::config::Config;
use reins_testing::{pg, plugins, server};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `reins audit ARGS --config CONFIG`: exit code and stdout.
fn reins_audit(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reins"))
        .arg("audit")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run reins audit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        format!("{}{stderr}", String::from_utf8_lossy(&out.stdout)),
    )
}

fn state_config(dir: &Path, state: &str) -> std::path::PathBuf {
    Config::new().plugins_dir(".").table(state).write(dir)
}

fn entry(i: usize, tenant: &str) -> AuditEntry {
    let action = if i % 2 == 0 {
        "gate.allow"
    } else {
        "run.start"
    };
    AuditEntry::new(action, format!("run-{i}"), "ok")
        .by("ops", Some(tenant.to_owned()))
        .detail(json!({"i": i, "nested": {"b": 2, "a": [1, 2.5]}}))
}

/// Appends `n` rows one batch at a time and checks what lists and verifies.
async fn append_and_list(store: &dyn StateStore, n: usize) {
    for i in 0..n {
        let tenant = if i < n / 2 { "acme" } else { "globex" };
        let rows = store
            .audit_append(vec![entry(i, tenant)])
            .await
            .expect("append");
        assert_eq!(rows.len(), 1);
    }
    let all = store
        .audit_list(&AuditFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=n as i64).collect::<Vec<_>>()
    );
    assert_eq!(
        all[0].entry.detail,
        json!({"i": 0, "nested": {"b": 2, "a": [1, 2.5]}})
    );
    assert_eq!(all[1].prev_hash, all[0].hash);
    let gates = store
        .audit_list(&AuditFilter {
            action: Some("gate.".into()),
            tenant: Some("acme".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(
        !gates.is_empty()
            && gates.iter().all(
                |r| r.entry.action == "gate.allow" && r.entry.tenant.as_deref() == Some("acme")
            )
    );
    let page = store
        .audit_list(&AuditFilter {
            after: Some(2),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("page");
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3, 4]);
    let future = store
        .audit_list(&AuditFilter {
            since_ms: Some(i64::MAX - 1),
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(future.is_empty());
    let report = store.audit_verify().await.expect("verify");
    assert_eq!(report.to_string(), format!("audit log intact: {n} rows"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_chain_detects_an_edited_and_a_removed_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = state_config(
        dir.path(),
        "[state]\nkind = \"sqlite\"\npath = \"audit.db\"\n",
    );
    let settings: StateSettings =
        toml::from_str("kind = \"sqlite\"\npath = \"audit.db\"").expect("settings");
    let store = reins::state::open(&settings, dir.path())
        .await
        .expect("open");
    append_and_list(&*store, 6).await;
    drop(store);
    assert_eq!(
        reins_audit(&config, &["verify"]),
        (0, "audit log intact: 6 rows\n".to_owned())
    );

    let db = rusqlite::Connection::open(dir.path().join("audit.db")).expect("open the file");
    db.execute("DELETE FROM audit_log WHERE seq = 3", [])
        .expect("delete");
    let (code, out) = reins_audit(&config, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row 4: prev_hash does not match row 2 (a row before it was removed)"),
        "{out}"
    );

    db.execute("UPDATE audit_log SET outcome = 'denied' WHERE seq = 2", [])
        .expect("edit");
    let (code, out) = reins_audit(&config, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row 2: hash does not match its contents (edited)"),
        "{out}"
    );

    // list and export read the same rows.
    let (code, out) = reins_audit(&config, &["export", "--action", "gate."]);
    assert_eq!(code, 0, "{out}");
    let seqs: Vec<i64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("a JSON line")["seq"]
                .as_i64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, [1, 5]);
    let (code, out) = reins_audit(&config, &["list", "--tenant", "globex", "--limit", "1"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("4\t"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_chain_never_forks_and_detects_tampering() {
    let db = pg::Database::create().await;
    let settings: StateSettings =
        toml::from_str(&format!("kind = \"postgres\"\nurl = \"{}\"", db.url)).expect("settings");
    let store = reins::state::open(&settings, Path::new("."))
        .await
        .expect("open");
    append_and_list(&*store, 6).await;

    // Two hosts (two pools) appending at once still make one chain.
    let other = reins::state::open(&settings, Path::new("."))
        .await
        .expect("open");
    let mut tasks = Vec::new();
    for (k, s) in [store.clone(), other.clone()].into_iter().enumerate() {
        let s: Arc<dyn StateStore> = s;
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                s.audit_append(vec![entry(100 * k + i, "acme"), entry(100 * k + i, "acme")])
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let report = store.audit_verify().await.expect("verify");
    assert_eq!(report.to_string(), "audit log intact: 106 rows");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = state_config(
        dir.path(),
        &format!("[state]\nkind = \"postgres\"\nurl = \"{}\"\n", db.url),
    );
    assert_eq!(reins_audit(&config, &["verify"]).0, 0);
    let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
    sqlx::query("DELETE FROM audit_log WHERE seq = 60")
        .execute(&pool)
        .await
        .expect("delete");
    let (code, out) = reins_audit(&config, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row 61: prev_hash does not match row 59 (a row before it was removed)"),
        "{out}"
    );
    sqlx::query("UPDATE audit_log SET subject = 'someone-else' WHERE seq = 40")
        .execute(&pool)
        .await
        .expect("edit");
    let (code, out) = reins_audit(&config, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("row 40: hash does not match its contents (edited)"),
        "{out}"
    );
    pool.close().await;
}

const ADMIN_TOKEN: &str = "admin-token-8c1f2e";
const WRONG_TOKEN: &str = "sk-wrong-SECRET-d41d8cd98f00b204";

async fn get(base: &str, path: &str, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("json")
}

fn actions(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| r["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_run_its_gates_approvals_reloads_and_failed_logins_are_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin_dir = dir.path().join("plugins");
    std::fs::create_dir(&plugin_dir).expect("mkdir");
    plugins::install(&plugin_dir, "tool-manifest", "tool-manifest");
    plugins::install(&plugin_dir, "spend-limit", "spend-limit");
    std::fs::write(plugin_dir.join("tool-manifest.toml"), plugins::REFUND_TOOL).expect("sidecar");
    std::fs::write(
        plugin_dir.join("spend-limit.toml"),
        "[config]\nescalate_above = 100\n",
    )
    .expect("sidecar");
    let admin_hash = hex::encode(Sha256::digest(ADMIN_TOKEN.as_bytes()));
    let config = Config::new()
        .plugins_dir("plugins")
        .test_cache()
        .scripted(
            "refund-script",
            r#"[ { match = "refund", tool_calls = [ { name = "issue_refund", arguments = { order = "A-1", amount = 500 } } ] } ]"#,
        )
        .table(&format!(
            r#"
[pipelines.refunds]
model = "refund-script"
constraints = "tool-manifest"
gates = ["spend-limit"]
# One token starts and approves here (the audit rows are the subject).
self_approval = true

[state]
kind = "sqlite"
path = "state.db"

[[server.tokens]]
name = "ops"
sha256 = "{admin_hash}"
scopes = ["run", "approve", "admin"]
claims = {{ tenant = "acme" }}
"#
        ))
        .write(dir.path());
    let served = server::serve(&config);
    let base = served.base.clone();

    let run = post(
        &base,
        "/v1/pipelines/refunds/runs",
        json!({"input": "refund it", "metadata": {"tenant": "acme"}}),
    )
    .await;
    assert_eq!(run["status"], "awaiting_approval", "{run}");
    let run_id = run["run_id"].as_str().expect("run id").to_owned();
    let approval = run["approvals"][0]
        .as_str()
        .expect("an approval")
        .to_owned();
    let decided = post(
        &base,
        &format!("/v1/approvals/{approval}"),
        json!({"decision": "approve"}),
    )
    .await;
    assert_eq!(decided["run"]["status"], "completed", "{decided}");

    let (status, _) = get(&base, "/v1/pipelines", WRONG_TOKEN).await;
    assert_eq!(status, 401);

    let (status, list) = get(&base, "/v1/audit", ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    assert!(list["next"].is_null(), "{list}");
    let seen = actions(&list);
    for want in [
        "run.start",
        "gate.escalate",
        "run.end",
        "approval.decide",
        "auth.failed",
    ] {
        assert!(seen.iter().any(|a| a == want), "no {want} in {seen:?}");
    }
    let rows = list["data"].as_array().expect("rows");
    let start = rows
        .iter()
        .find(|r| r["action"] == "run.start")
        .expect("run.start");
    assert_eq!(
        (start["target"].as_str(), start["tenant"].as_str()),
        (Some(run_id.as_str()), Some("acme"))
    );
    let gate = rows
        .iter()
        .find(|r| r["action"] == "gate.escalate")
        .expect("gate row");
    assert_eq!(gate["detail"]["gate"], "spend-limit");
    assert!(
        gate["detail"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{gate}"
    );
    let decision = rows
        .iter()
        .find(|r| r["action"] == "approval.decide")
        .expect("decision");
    assert_eq!(
        (decision["subject"].as_str(), decision["outcome"].as_str()),
        (Some("ops"), Some("approved"))
    );
    let failed = rows
        .iter()
        .find(|r| r["action"] == "auth.failed")
        .expect("auth.failed");
    assert_eq!(failed["target"], "GET /v1/pipelines");
    assert_eq!(failed["detail"]["credential"], "authorization");

    // Filters and pages over HTTP; the first read was itself recorded.
    let (_, gates) = get(&base, "/v1/audit?action=gate.&tenant=acme", ADMIN_TOKEN).await;
    assert_eq!(actions(&gates), ["gate.escalate"]);
    let (_, page) = get(&base, "/v1/audit?limit=2", ADMIN_TOKEN).await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2));
    let (_, rest) = get(
        &base,
        &format!("/v1/audit?after={}", page["next"]),
        ADMIN_TOKEN,
    )
    .await;
    assert_eq!(
        rest["data"][0]["seq"].as_i64(),
        page["next"].as_i64().map(|n| n + 1)
    );
    assert!(actions(&rest).iter().any(|a| a == "admin.audit"), "{rest}");
    let (status, _) = get(&base, "/v1/audit?limit=5000", ADMIN_TOKEN).await;
    assert_eq!(status, 400);

    // A plugin that changes on disk is reloaded, and the reload recorded.
    plugins::install(&plugin_dir, "spend-limit", "spend-limit-copy");
    let deadline = Instant::now() + Duration::from_secs(60);
    let reload = loop {
        let (_, list) = get(&base, "/v1/audit?action=plugins.reload", ADMIN_TOKEN).await;
        if let Some(row) = list["data"].as_array().and_then(|rows| {
            rows.iter()
                .find(|r| {
                    r["detail"]["changed"]
                        .to_string()
                        .contains("spend-limit-copy")
                })
                .cloned()
        }) {
            break row;
        }
        assert!(Instant::now() < deadline, "no plugins.reload row: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (reload["subject"].as_str(), reload["outcome"].as_str()),
        (Some("system"), Some("ok"))
    );
    drop(served);

    // No secret anywhere in the table: not the wrong token, not the right one.
    let db = rusqlite::Connection::open(dir.path().join("state.db")).expect("open");
    let mut stmt = db
        .prepare("SELECT seq || subject || COALESCE(tenant, '') || action || target || outcome || detail || COALESCE(request_id, '') FROM audit_log")
        .expect("select");
    let text: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .expect("rows")
        .map(|r| r.expect("row"))
        .collect();
    assert!(text.len() >= 8, "{text:?}");
    for t in &text {
        assert!(
            !t.contains(WRONG_TOKEN) && !t.contains("SECRET") && !t.contains(ADMIN_TOKEN),
            "{t}"
        );
    }

    assert_eq!(
        reins_audit(&config, &["verify"]),
        (0, format!("audit log intact: {} rows\n", text.len()))
    );
    db.execute(
        "UPDATE audit_log SET outcome = 'allow' WHERE action = 'gate.escalate'",
        [],
    )
    .expect("edit");
    let gate_seq = db
        .query_row(
            "SELECT seq FROM audit_log WHERE action = 'gate.escalate'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("gate row");
    let (code, out) = reins_audit(&config, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "row {gate_seq}: hash does not match its contents (edited)"
        )),
        "{out}"
    );
}
