//! The embedded SQLite store: one file, WAL mode, `synchronous = NORMAL`
//! (a committed transaction survives a process crash; a power loss may lose
//! the last ones). Calls are short and run in place under one connection
//! mutex; several processes may share a file (busy timeout 5 s).

use super::{
    ActionRecord, ActionState, ApprovalQuery, ApprovalRecord, FINISHED, RunRecord, StateError, StateStore, StepRecord,
    now_ms, summary,
};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT NOT NULL,
    request TEXT NOT NULL,
    idempotency_key TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, updated_ms);
CREATE UNIQUE INDEX IF NOT EXISTS runs_key ON runs(pipeline, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS actions (
    key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    response TEXT,
    http_status INTEGER,
    tries INTEGER NOT NULL DEFAULT 0,
    updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_run ON actions(run_id);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_run ON approvals(run_id);
CREATE TABLE IF NOT EXISTS counters (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
"#;

/// Leases, sessions and windowed counters (schema version 2), applied once
/// to a file made by an earlier version.
const SCHEMA_V2: &str = r#"
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN session_id TEXT;
CREATE INDEX IF NOT EXISTS runs_session ON runs(session_id, created_ms) WHERE session_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS counter_events (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    delta INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS counter_events_key ON counter_events(scope, key, at_ms);
"#;

/// The response cache index (schema version 3).
const SCHEMA_V3: &str = r#"
CREATE TABLE IF NOT EXISTS response_cache (
    key TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    answer TEXT NOT NULL,
    stored_ms INTEGER NOT NULL
);
"#;

pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: String,
}

fn json_col(text: String) -> Result<Value, StateError> {
    Ok(serde_json::from_str(&text)?)
}

impl SqliteStore {
    /// Opens (creating if needed) the file at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StateError::Other(format!("{}: {e}", dir.display())))?;
        }
        let shown = path.display().to_string();
        let conn = Connection::open(path).map_err(|source| StateError::Sqlite {
            path: shown.clone(),
            source,
        })?;
        Self::init(conn, shown)
    }

    /// A private in-memory database.
    pub fn memory() -> Result<SqliteStore, StateError> {
        let conn = Connection::open_in_memory().map_err(|source| StateError::Sqlite {
            path: ":memory:".into(),
            source,
        })?;
        Self::init(conn, ":memory:".into())
    }

    fn init(conn: Connection, path: String) -> Result<SqliteStore, StateError> {
        let err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        // IMMEDIATE: of several processes opening one file, one migrates.
        let tx = rusqlite::Transaction::new_unchecked(&conn, rusqlite::TransactionBehavior::Immediate).map_err(err)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        if version < 2 {
            tx.execute_batch(SCHEMA).map_err(err)?;
            tx.execute_batch(SCHEMA_V2).map_err(err)?;
        }
        if version < 3 {
            tx.execute_batch(SCHEMA_V3).map_err(err)?;
            tx.execute_batch("PRAGMA user_version = 3").map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// Runs `f` on the connection, mapping its errors.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StateError>) -> Result<T, StateError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// A conditional lease update (`?1` run, `?2` node, `?3` now, `?4` until):
    /// `true` if this node got the run.
    fn lease_update(&self, sql: &str, run_id: &str, node: &str, now_ms: i64, until_ms: i64) -> Result<bool, StateError> {
        let err = self.err();
        self.with(|c| exec(c, sql, params![run_id, node, now_ms, until_ms]).map(|n| n == 1).map_err(&err))
    }

    /// The runs a `SELECT {RUN_COLS}` query finds.
    fn query_runs(&self, sql: &str, args: impl rusqlite::Params) -> Result<Vec<RunRecord>, StateError> {
        let err = self.err();
        let rows = self.with(|c| {
            let mut stmt = c.prepare_cached(sql).map_err(&err)?;
            let rows = stmt
                .query_map(args, run_row)
                .map_err(&err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&err)?;
            Ok(rows)
        })?;
        rows.into_iter().map(run_record).collect()
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        move |source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

const RUN_COLS: &str =
    "run_id, pipeline, status, result, request, idempotency_key, created_ms, updated_ms, session_id, owner, lease_until";

/// A run row with its JSON columns still text.
struct RunRow(RunRecord, String, String);

fn run_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let (result, request) = (r.get(3)?, r.get(4)?);
    Ok(RunRow(
        RunRecord {
            run_id: r.get(0)?,
            pipeline: r.get(1)?,
            status: r.get(2)?,
            result: Value::Null,
            request: Value::Null,
            idempotency_key: r.get(5)?,
            created_ms: r.get(6)?,
            updated_ms: r.get(7)?,
            session_id: r.get(8)?,
            owner: r.get(9)?,
            lease_until_ms: r.get(10)?,
        },
        result,
        request,
    ))
}

fn run_record(RunRow(mut run, result, request): RunRow) -> Result<RunRecord, StateError> {
    run.result = json_col(result)?;
    run.request = json_col(request)?;
    Ok(run)
}

type ActionRow = (String, String, String, String, String, Option<String>, Option<i64>, i64, i64);

const ACTION_COLS: &str = "key, run_id, tool, arguments, state, response, http_status, tries, updated_ms";

fn action_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn action_record(row: ActionRow) -> Result<ActionRecord, StateError> {
    Ok(ActionRecord {
        key: row.0,
        run_id: row.1,
        tool: row.2,
        arguments: json_col(row.3)?,
        state: ActionState::parse(&row.4)?,
        response: row.5.map(json_col).transpose()?,
        http_status: row.6.and_then(|s| u16::try_from(s).ok()),
        tries: u32::try_from(row.7).unwrap_or(0),
        updated_ms: row.8,
    })
}

type ApprovalRow = (String, String, String, String, i64, String);

fn approval_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

fn approval_record(row: ApprovalRow) -> Result<ApprovalRecord, StateError> {
    Ok(ApprovalRecord {
        id: row.0,
        run_id: row.1,
        pipeline: row.2,
        status: row.3,
        created_ms: row.4,
        data: json_col(row.5)?,
    })
}

const UPSERT_RUN: &str = "INSERT INTO runs (run_id, pipeline, status, result, request, idempotency_key, created_ms,
       updated_ms, session_id, owner, lease_until)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
     ON CONFLICT(run_id) DO UPDATE SET status = excluded.status, result = excluded.result,
       request = CASE WHEN excluded.request = 'null' THEN runs.request ELSE excluded.request END,
       idempotency_key = COALESCE(runs.idempotency_key, excluded.idempotency_key),
       session_id = COALESCE(runs.session_id, excluded.session_id),
       owner = excluded.owner, lease_until = excluded.lease_until,
       updated_ms = excluded.updated_ms
     WHERE runs.owner IS excluded.owner
        OR (runs.status = 'running' AND (runs.owner IS NULL OR runs.lease_until < excluded.updated_ms))";

/// Runs one statement, prepared once per connection.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Writes `run` unless another node's lease fences it.
fn upsert_run(conn: &Connection, run: &RunRecord) -> Result<(), rusqlite::Error> {
    let n = exec(conn, UPSERT_RUN,
        params![
            run.run_id,
            run.pipeline,
            run.status,
            run.result.to_string(),
            run.request.to_string(),
            run.idempotency_key,
            run.created_ms,
            run.updated_ms,
            run.session_id,
            run.owner,
            run.lease_until_ms
        ],
    )?;
    if n == 0 {
        return Err(rusqlite::Error::QueryReturnedNoRows);
    }
    Ok(())
}

/// [`upsert_run`]'s errors, with a fenced write as [`StateError::LeaseLost`].
fn upsert_err<'a>(store: &'a SqliteStore, run: &'a RunRecord) -> impl Fn(rusqlite::Error) -> StateError + 'a {
    move |e| match e {
        rusqlite::Error::QueryReturnedNoRows => StateError::LeaseLost {
            run_id: run.run_id.clone(),
        },
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StateError::Conflict(format!("run `{}`: another run holds its idempotency key", run.run_id))
        }
        source => StateError::Sqlite {
            path: store.path.clone(),
            source,
        },
    }
}

#[async_trait::async_trait]
impl StateStore for SqliteStore {
    fn kind(&self) -> &'static str {
        if self.path == ":memory:" { "memory" } else { "sqlite" }
    }

    async fn put_run(&self, run: &RunRecord) -> Result<(), StateError> {
        let err = upsert_err(self, run);
        self.with(|c| upsert_run(c, run).map_err(&err))
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        let err = self.err();
        let row = self.with(|c| {
            c.query_row(&format!("SELECT {RUN_COLS} FROM runs WHERE run_id = ?1"), [run_id], run_row)
                .optional()
                .map_err(&err)
        })?;
        row.map(run_record).transpose()
    }

    async fn run_by_key(&self, pipeline: &str, key: &str) -> Result<Option<RunRecord>, StateError> {
        let err = self.err();
        let row = self.with(|c| {
            c.query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE pipeline = ?1 AND idempotency_key = ?2"),
                [pipeline, key],
                run_row,
            )
            .optional()
            .map_err(&err)
        })?;
        row.map(run_record).transpose()
    }

    async fn runs_with_status(&self, status: &str, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        self.query_runs(
            &format!("SELECT {RUN_COLS} FROM runs WHERE status = ?1 ORDER BY updated_ms, run_id LIMIT ?2"),
            params![status, limit],
        )
    }

    async fn claim_run(&self, run_id: &str, node: &str, now_ms: i64, until_ms: i64) -> Result<bool, StateError> {
        self.lease_update(
            "UPDATE runs SET owner = ?2, lease_until = ?4 WHERE run_id = ?1 AND status = 'running'
               AND (owner IS NULL OR owner = ?2 OR lease_until < ?3)",
            run_id,
            node,
            now_ms,
            until_ms,
        )
    }

    async fn claimable_runs(&self, node: &str, now_ms: i64, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        self.query_runs(
            &format!(
                "SELECT {RUN_COLS} FROM runs WHERE status = 'running' AND (owner IS NULL OR owner = ?1 OR lease_until < ?2)
                 ORDER BY updated_ms, run_id LIMIT ?3"
            ),
            params![node, now_ms, limit],
        )
    }

    async fn take_held(&self, run_id: &str, node: &str, now_ms: i64, until_ms: i64) -> Result<bool, StateError> {
        self.lease_update(
            "UPDATE runs SET status = 'running', owner = ?2, lease_until = ?4, updated_ms = ?3
             WHERE run_id = ?1 AND status = 'awaiting_approval'",
            run_id,
            node,
            now_ms,
            until_ms,
        )
    }

    async fn session_runs(&self, session_id: &str, pipeline: &str, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        self.query_runs(
            &format!(
                "SELECT {RUN_COLS} FROM runs WHERE session_id = ?1 AND pipeline = ?2 AND status <> 'running'
                 ORDER BY created_ms DESC, rowid DESC LIMIT ?3"
            ),
            params![session_id, pipeline, limit],
        )
    }

    async fn checkpoint(&self, run: &RunRecord, step: &StepRecord) -> Result<(), StateError> {
        let err = self.err();
        self.with(|c| {
            let tx = c.transaction().map_err(&err)?;
            exec(&tx, "INSERT OR REPLACE INTO steps (run_id, step, kind, data, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![step.run_id, step.step, step.kind, step.data.to_string(), step.created_ms],
            )
            .map_err(&err)?;
            upsert_run(&tx, run).map_err(upsert_err(self, run))?;
            tx.commit().map_err(&err)
        })
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError> {
        let err = self.err();
        let rows: Vec<(String, u32, String, String, i64)> = self.with(|c| {
            let mut stmt = c
                .prepare_cached("SELECT run_id, step, kind, data, created_ms FROM steps WHERE run_id = ?1 ORDER BY step")
                .map_err(&err)?;
            let rows = stmt
                .query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
                .map_err(&err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&err)?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(|(run_id, step, kind, data, created_ms)| {
                Ok(StepRecord {
                    run_id,
                    step,
                    kind,
                    data: json_col(data)?,
                    created_ms,
                })
            })
            .collect()
    }

    async fn plan_action(&self, a: &ActionRecord) -> Result<ActionRecord, StateError> {
        let err = self.err();
        let row = self.with(|c| {
            let tx = c.transaction().map_err(&err)?;
            exec(&tx, "INSERT INTO actions (key, run_id, tool, arguments, state, response, http_status, tries, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, 'planned', NULL, NULL, 0, ?5) ON CONFLICT(key) DO NOTHING",
                params![a.key, a.run_id, a.tool, a.arguments.to_string(), now_ms()],
            )
            .map_err(&err)?;
            let row = tx
                .query_row(&format!("SELECT {ACTION_COLS} FROM actions WHERE key = ?1"), [&a.key], action_row)
                .map_err(&err)?;
            tx.commit().map_err(&err)?;
            Ok(row)
        })?;
        action_record(row)
    }

    async fn set_action(
        &self,
        key: &str,
        state: ActionState,
        response: Option<&Value>,
        http_status: Option<u16>,
        tries: u32,
    ) -> Result<(), StateError> {
        let err = self.err();
        self.with(|c| {
            exec(c, "UPDATE actions SET state = ?2, response = COALESCE(?3, response), http_status = COALESCE(?4, http_status),
                   tries = ?5, updated_ms = ?6 WHERE key = ?1",
                params![
                    key,
                    state.as_str(),
                    response.map(Value::to_string),
                    http_status,
                    tries,
                    now_ms()
                ],
            )
            .map(|_| ())
            .map_err(&err)
        })
    }

    async fn action(&self, key: &str) -> Result<Option<ActionRecord>, StateError> {
        let err = self.err();
        let row = self.with(|c| {
            c.query_row(&format!("SELECT {ACTION_COLS} FROM actions WHERE key = ?1"), [key], action_row)
                .optional()
                .map_err(&err)
        })?;
        row.map(action_record).transpose()
    }

    async fn actions(&self, run_id: &str) -> Result<Vec<ActionRecord>, StateError> {
        let err = self.err();
        let rows = self.with(|c| {
            let mut stmt = c
                .prepare_cached(&format!("SELECT {ACTION_COLS} FROM actions WHERE run_id = ?1 ORDER BY key"))
                .map_err(&err)?;
            let rows = stmt
                .query_map([run_id], action_row)
                .map_err(&err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&err)?;
            Ok(rows)
        })?;
        rows.into_iter().map(action_record).collect()
    }

    async fn hold(&self, run: &RunRecord, approvals: &[ApprovalRecord]) -> Result<(), StateError> {
        let err = self.err();
        self.with(|c| {
            let tx = c.transaction().map_err(&err)?;
            upsert_run(&tx, run).map_err(upsert_err(self, run))?;
            for a in approvals {
                exec(&tx, "INSERT OR REPLACE INTO approvals (id, run_id, pipeline, status, created_ms, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![a.id, a.run_id, a.pipeline, a.status, a.created_ms, a.data.to_string()],
                )
                .map_err(&err)?;
            }
            tx.commit().map_err(&err)
        })
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError> {
        let err = self.err();
        let row = self.with(|c| {
            c.query_row(
                "SELECT id, run_id, pipeline, status, created_ms, data FROM approvals WHERE id = ?1",
                [id],
                approval_row,
            )
            .optional()
            .map_err(&err)
        })?;
        row.map(approval_record).transpose()
    }

    async fn approvals(&self, q: &ApprovalQuery) -> Result<Vec<ApprovalRecord>, StateError> {
        let err = self.err();
        let rows = self.with(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, run_id, pipeline, status, created_ms, data FROM approvals
                     WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR pipeline = ?2) AND (?3 IS NULL OR run_id = ?3)
                     ORDER BY created_ms, id",
                )
                .map_err(&err)?;
            let rows = stmt
                .query_map(params![q.status, q.pipeline, q.run_id], approval_row)
                .map_err(&err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&err)?;
            Ok(rows)
        })?;
        rows.into_iter().map(approval_record).collect()
    }

    async fn decide(&self, d: &ApprovalRecord) -> Result<bool, StateError> {
        let err = self.err();
        self.with(|c| {
            exec(c, "UPDATE approvals SET status = ?2, data = ?3 WHERE id = ?1 AND status = 'pending'",
                params![d.id, d.status, d.data.to_string()],
            )
            .map(|n| n == 1)
            .map_err(&err)
        })
    }

    async fn counter_add(&self, scope: &str, key: &str, delta: i64) -> Result<i64, StateError> {
        let err = self.err();
        self.with(|c| {
            c.query_row(
                "INSERT INTO counters (scope, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(scope, key) DO UPDATE SET value = counters.value + excluded.value RETURNING value",
                params![scope, key, delta],
                |r| r.get(0),
            )
            .map_err(&err)
        })
    }

    async fn counter_window_add(
        &self,
        scope: &str,
        key: &str,
        delta: i64,
        window_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StateError> {
        let err = self.err();
        self.with(|c| {
            // IMMEDIATE: the write lock is taken first, so processes sharing
            // the file add one at a time.
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(&err)?;
            exec(&tx, "DELETE FROM counter_events WHERE scope = ?1 AND key = ?2 AND at_ms <= ?3",
                params![scope, key, now_ms - window_ms],
            )
            .map_err(&err)?;
            let cancelled = delta < 0
                && tx
                    .execute(
                        "DELETE FROM counter_events WHERE rowid = (SELECT rowid FROM counter_events
                           WHERE scope = ?1 AND key = ?2 AND delta = ?3 ORDER BY at_ms DESC LIMIT 1)",
                        params![scope, key, -delta],
                    )
                    .map_err(&err)?
                    == 1;
            // A negative add that cancels nothing (its add already left the
            // window) is not a credit for the next window.
            if !cancelled && delta > 0 {
                exec(&tx, "INSERT INTO counter_events (scope, key, at_ms, delta, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![scope, key, now_ms, delta, now_ms.saturating_add(window_ms)],
                )
                .map_err(&err)?;
            }
            let total: i64 = tx
                .query_row(
                    "SELECT COALESCE(SUM(delta), 0) FROM counter_events WHERE scope = ?1 AND key = ?2",
                    params![scope, key],
                    |r| r.get(0),
                )
                .map_err(&err)?;
            tx.commit().map_err(&err)?;
            Ok(total)
        })
    }

    async fn cache_put(&self, key: &str, pipeline: &str, answer: &Value, stored_ms: i64) -> Result<(), StateError> {
        let err = self.err();
        self.with(|c| {
            exec(
                c,
                "INSERT OR REPLACE INTO response_cache (key, pipeline, answer, stored_ms) VALUES (?1, ?2, ?3, ?4)",
                params![key, pipeline, answer.to_string(), stored_ms],
            )
            .map(|_| ())
            .map_err(&err)
        })
    }

    async fn cache_get(&self, key: &str, fresh_since_ms: i64) -> Result<Option<(Value, i64)>, StateError> {
        let err = self.err();
        let row: Option<(String, i64)> = self.with(|c| {
            c.prepare_cached("SELECT answer, stored_ms FROM response_cache WHERE key = ?1 AND stored_ms >= ?2")
                .and_then(|mut s| s.query_row(params![key, fresh_since_ms], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(&err)
        })?;
        row.map(|(answer, at)| Ok((json_col(answer)?, at))).transpose()
    }

    async fn compact(&self, before_ms: i64) -> Result<u64, StateError> {
        let err = self.err();
        self.with(|c| {
            exec(c, "DELETE FROM counter_events WHERE expires_ms < ?1", [now_ms()]).map_err(&err)?;
            exec(c, "DELETE FROM response_cache WHERE stored_ms < ?1", [before_ms]).map_err(&err)
        })?;
        let old: Vec<(String, String)> = self.with(|c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT run_id, result FROM runs WHERE status IN ('{}', '{}', '{}') AND updated_ms < ?1
                     AND result NOT LIKE '%\"compacted\":true%'",
                    FINISHED[0], FINISHED[1], FINISHED[2]
                ))
                .map_err(&err)?;
            let rows = stmt
                .query_map([before_ms], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(&err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(&err)?;
            Ok(rows)
        })?;
        let mut n = 0;
        for (run_id, result) in old {
            let small = summary(&json_col(result)?).to_string();
            self.with(|c| {
                let tx = c.transaction().map_err(&err)?;
                // The run's steps and its agent turns' (`RUN.STEP`).
                exec(&tx, "DELETE FROM steps WHERE run_id = ?1 OR substr(run_id, 1, length(?1) + 1) = ?1 || '.'", [&run_id])
                    .map_err(&err)?;
                exec(&tx, "DELETE FROM actions WHERE run_id = ?1", [&run_id]).map_err(&err)?;
                exec(&tx, "UPDATE runs SET result = ?2, request = 'null' WHERE run_id = ?1",
                    params![run_id, small],
                )
                .map_err(&err)?;
                tx.commit().map_err(&err)
            })?;
            n += 1;
        }
        Ok(n)
    }
}
