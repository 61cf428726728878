//! The PostgreSQL store: many hosts on one database. Migrations run at
//! connect, serialized across hosts by an advisory lock.

use super::{
    ActionRecord, ActionState, ApprovalQuery, ApprovalRecord, FINISHED, RunRecord, StateError, StateStore, StepRecord,
    now_ms, summary,
};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row};

/// Each entry is applied once, in order, in one transaction.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT NOT NULL,
    request TEXT NOT NULL,
    idempotency_key TEXT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX runs_status ON runs(status, updated_ms);
CREATE UNIQUE INDEX runs_key ON runs(pipeline, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE steps (
    run_id TEXT NOT NULL,
    step BIGINT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE actions (
    key TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    response TEXT,
    http_status INTEGER,
    tries BIGINT NOT NULL DEFAULT 0,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX actions_run ON actions(run_id);
CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX approvals_run ON approvals(run_id);
CREATE TABLE counters (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
"#, r#"
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN session_id TEXT;
-- Insertion order, for runs started within one millisecond.
ALTER TABLE runs ADD COLUMN seq BIGSERIAL;
CREATE INDEX runs_session ON runs(session_id, created_ms) WHERE session_id IS NOT NULL;
CREATE TABLE counter_events (
    id BIGSERIAL PRIMARY KEY,
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    delta BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX counter_events_key ON counter_events(scope, key, at_ms);
"#, r#"
-- A run write, fenced on the lease, and a checkpoint (run + step), each one
-- call: one round trip instead of four (BEGIN, two statements, COMMIT).
CREATE FUNCTION reins_put_run(p_run_id TEXT, p_pipeline TEXT, p_status TEXT, p_result TEXT, p_request TEXT,
    p_key TEXT, p_created BIGINT, p_updated BIGINT, p_session TEXT, p_owner TEXT, p_lease BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE n INTEGER;
BEGIN
    INSERT INTO runs (run_id, pipeline, status, result, request, idempotency_key, created_ms, updated_ms,
        session_id, owner, lease_until)
    VALUES (p_run_id, p_pipeline, p_status, p_result, p_request, p_key, p_created, p_updated, p_session, p_owner, p_lease)
    ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, result = excluded.result,
        request = CASE WHEN excluded.request = 'null' THEN runs.request ELSE excluded.request END,
        idempotency_key = COALESCE(runs.idempotency_key, excluded.idempotency_key),
        session_id = COALESCE(runs.session_id, excluded.session_id),
        owner = excluded.owner, lease_until = excluded.lease_until,
        updated_ms = excluded.updated_ms
    WHERE runs.owner IS NOT DISTINCT FROM excluded.owner
        OR (runs.status = 'running' AND (runs.owner IS NULL OR runs.lease_until < excluded.updated_ms));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END $$;
CREATE FUNCTION reins_checkpoint(p_run_id TEXT, p_pipeline TEXT, p_status TEXT, p_result TEXT, p_request TEXT,
    p_key TEXT, p_created BIGINT, p_updated BIGINT, p_session TEXT, p_owner TEXT, p_lease BIGINT,
    p_step_run_id TEXT, p_step BIGINT, p_kind TEXT, p_data TEXT, p_step_created BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    IF NOT reins_put_run(p_run_id, p_pipeline, p_status, p_result, p_request, p_key, p_created, p_updated,
            p_session, p_owner, p_lease) THEN
        RETURN FALSE;
    END IF;
    -- The step may be an agent turn's (`RUN.STEP`), fenced on its run's row.
    INSERT INTO steps (run_id, step, kind, data, created_ms)
    VALUES (p_step_run_id, p_step, p_kind, p_data, p_step_created)
    ON CONFLICT (run_id, step) DO UPDATE SET kind = excluded.kind, data = excluded.data, created_ms = excluded.created_ms;
    RETURN TRUE;
END $$;
"#, r#"
CREATE TABLE response_cache (
    key TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    answer TEXT NOT NULL,
    stored_ms BIGINT NOT NULL
);
"#];

pub struct PgStore {
    pool: PgPool,
}

fn json_col(text: String) -> Result<Value, StateError> {
    Ok(serde_json::from_str(&text)?)
}

impl PgStore {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore, StateError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// A conditional lease update (`$1` run, `$2` node, `$3` now, `$4` until):
    /// `true` if this node got the run.
    async fn lease_update(&self, sql: &str, run_id: &str, node: &str, now_ms: i64, until_ms: i64) -> Result<bool, StateError> {
        let done = sqlx::query(sql)
            .bind(run_id)
            .bind(node)
            .bind(now_ms)
            .bind(until_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn migrate(&self) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        // One host migrates at a time; the others wait here.
        sqlx::query("SELECT pg_advisory_xact_lock(7351001)").execute(&mut *tx).await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS reins_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let done: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM reins_migrations")
            .fetch_one(&mut *tx)
            .await?;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= done {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO reins_migrations (version, applied_ms) VALUES ($1, $2)")
                .bind(version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

const RUN_COLS: &str =
    "run_id, pipeline, status, result, request, idempotency_key, created_ms, updated_ms, session_id, owner, lease_until";

fn run_record(r: PgRow) -> Result<RunRecord, StateError> {
    Ok(RunRecord {
        run_id: r.try_get(0)?,
        pipeline: r.try_get(1)?,
        status: r.try_get(2)?,
        result: json_col(r.try_get(3)?)?,
        request: json_col(r.try_get(4)?)?,
        idempotency_key: r.try_get(5)?,
        created_ms: r.try_get(6)?,
        updated_ms: r.try_get(7)?,
        session_id: r.try_get(8)?,
        owner: r.try_get(9)?,
        lease_until_ms: r.try_get(10)?,
    })
}

const ACTION_COLS: &str = "key, run_id, tool, arguments, state, response, http_status, tries, updated_ms";

fn action_record(r: PgRow) -> Result<ActionRecord, StateError> {
    let state: String = r.try_get(4)?;
    let response: Option<String> = r.try_get(5)?;
    let http: Option<i32> = r.try_get(6)?;
    let tries: i64 = r.try_get(7)?;
    Ok(ActionRecord {
        key: r.try_get(0)?,
        run_id: r.try_get(1)?,
        tool: r.try_get(2)?,
        arguments: json_col(r.try_get(3)?)?,
        state: ActionState::parse(&state)?,
        response: response.map(json_col).transpose()?,
        http_status: http.and_then(|s| u16::try_from(s).ok()),
        tries: u32::try_from(tries).unwrap_or(0),
        updated_ms: r.try_get(8)?,
    })
}

fn approval_record(r: PgRow) -> Result<ApprovalRecord, StateError> {
    Ok(ApprovalRecord {
        id: r.try_get(0)?,
        run_id: r.try_get(1)?,
        pipeline: r.try_get(2)?,
        status: r.try_get(3)?,
        created_ms: r.try_get(4)?,
        data: json_col(r.try_get(5)?)?,
    })
}

/// The run's columns as the eleven leading arguments of `reins_put_run` and
/// `reins_checkpoint`.
fn bind_run<'q>(
    q: sqlx::query::QueryScalar<'q, Postgres, bool, sqlx::postgres::PgArguments>,
    run: &'q RunRecord,
) -> sqlx::query::QueryScalar<'q, Postgres, bool, sqlx::postgres::PgArguments> {
    q.bind(&run.run_id)
        .bind(&run.pipeline)
        .bind(&run.status)
        .bind(run.result.to_string())
        .bind(run.request.to_string())
        .bind(&run.idempotency_key)
        .bind(run.created_ms)
        .bind(run.updated_ms)
        .bind(&run.session_id)
        .bind(&run.owner)
        .bind(run.lease_until_ms)
}

/// The runs a `SELECT {RUN_COLS}` query finds.
async fn runs(
    q: sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>,
    pool: &PgPool,
) -> Result<Vec<RunRecord>, StateError> {
    q.fetch_all(pool).await?.into_iter().map(run_record).collect()
}

/// A fenced write's answer: `false` is another node's lease.
fn fenced(written: bool, run: &RunRecord) -> Result<(), StateError> {
    if written {
        Ok(())
    } else {
        Err(StateError::LeaseLost {
            run_id: run.run_id.clone(),
        })
    }
}

/// Writes `run` unless another node's lease fences it.
async fn upsert_run<'e>(ex: impl sqlx::PgExecutor<'e>, run: &RunRecord) -> Result<(), StateError> {
    let q = sqlx::query_scalar("SELECT reins_put_run($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)");
    let written = bind_run(q, run).fetch_one(ex).await.map_err(|e| conflict(e, run))?;
    fenced(written, run)
}

/// A unique violation (another run holds the idempotency key) as a conflict.
fn conflict(e: sqlx::Error, run: &RunRecord) -> StateError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StateError::Conflict(format!("run `{}`: another run holds its idempotency key", run.run_id))
        }
        _ => StateError::Postgres(e),
    }
}

#[async_trait::async_trait]
impl StateStore for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn put_run(&self, run: &RunRecord) -> Result<(), StateError> {
        upsert_run(&self.pool, run).await
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        sqlx::query(&format!("SELECT {RUN_COLS} FROM runs WHERE run_id = $1"))
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .map(run_record)
            .transpose()
    }

    async fn run_by_key(&self, pipeline: &str, key: &str) -> Result<Option<RunRecord>, StateError> {
        sqlx::query(&format!(
            "SELECT {RUN_COLS} FROM runs WHERE pipeline = $1 AND idempotency_key = $2"
        ))
        .bind(pipeline)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?
        .map(run_record)
        .transpose()
    }

    async fn runs_with_status(&self, status: &str, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        let sql = format!("SELECT {RUN_COLS} FROM runs WHERE status = $1 ORDER BY updated_ms, run_id LIMIT $2");
        runs(sqlx::query(&sql).bind(status).bind(i64::from(limit)), &self.pool).await
    }

    async fn claim_run(&self, run_id: &str, node: &str, now_ms: i64, until_ms: i64) -> Result<bool, StateError> {
        self.lease_update(
            "UPDATE runs SET owner = $2, lease_until = $4 WHERE run_id = $1 AND status = 'running'
               AND (owner IS NULL OR owner = $2 OR lease_until < $3)",
            run_id,
            node,
            now_ms,
            until_ms,
        )
        .await
    }

    async fn claimable_runs(&self, node: &str, now_ms: i64, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs WHERE status = 'running' AND (owner IS NULL OR owner = $1 OR lease_until < $2)
             ORDER BY updated_ms, run_id LIMIT $3"
        );
        runs(sqlx::query(&sql).bind(node).bind(now_ms).bind(i64::from(limit)), &self.pool).await
    }

    async fn take_held(&self, run_id: &str, node: &str, now_ms: i64, until_ms: i64) -> Result<bool, StateError> {
        self.lease_update(
            "UPDATE runs SET status = 'running', owner = $2, lease_until = $4, updated_ms = $3
             WHERE run_id = $1 AND status = 'awaiting_approval'",
            run_id,
            node,
            now_ms,
            until_ms,
        )
        .await
    }

    async fn session_runs(&self, session_id: &str, pipeline: &str, limit: u32) -> Result<Vec<RunRecord>, StateError> {
        let sql = format!(
            "SELECT {RUN_COLS} FROM runs WHERE session_id = $1 AND pipeline = $2 AND status <> 'running'
             ORDER BY created_ms DESC, seq DESC LIMIT $3"
        );
        runs(sqlx::query(&sql).bind(session_id).bind(pipeline).bind(i64::from(limit)), &self.pool).await
    }

    async fn checkpoint(&self, run: &RunRecord, step: &StepRecord) -> Result<(), StateError> {
        let q = sqlx::query_scalar(
            "SELECT reins_checkpoint($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        );
        let written = bind_run(q, run)
            .bind(&step.run_id)
            .bind(i64::from(step.step))
            .bind(&step.kind)
            .bind(step.data.to_string())
            .bind(step.created_ms)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| conflict(e, run))?;
        fenced(written, run)
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError> {
        let rows = sqlx::query("SELECT run_id, step, kind, data, created_ms FROM steps WHERE run_id = $1 ORDER BY step")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| {
                let step: i64 = r.try_get(1)?;
                Ok(StepRecord {
                    run_id: r.try_get(0)?,
                    step: u32::try_from(step).unwrap_or(0),
                    kind: r.try_get(2)?,
                    data: json_col(r.try_get(3)?)?,
                    created_ms: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn plan_action(&self, a: &ActionRecord) -> Result<ActionRecord, StateError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO actions (key, run_id, tool, arguments, state, response, http_status, tries, updated_ms)
             VALUES ($1, $2, $3, $4, 'planned', NULL, NULL, 0, $5) ON CONFLICT(key) DO NOTHING",
        )
        .bind(&a.key)
        .bind(&a.run_id)
        .bind(&a.tool)
        .bind(a.arguments.to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!("SELECT {ACTION_COLS} FROM actions WHERE key = $1"))
            .bind(&a.key)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
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
        sqlx::query(
            "UPDATE actions SET state = $2, response = COALESCE($3, response), http_status = COALESCE($4, http_status),
               tries = $5, updated_ms = $6 WHERE key = $1",
        )
        .bind(key)
        .bind(state.as_str())
        .bind(response.map(Value::to_string))
        .bind(http_status.map(i32::from))
        .bind(i64::from(tries))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn action(&self, key: &str) -> Result<Option<ActionRecord>, StateError> {
        sqlx::query(&format!("SELECT {ACTION_COLS} FROM actions WHERE key = $1"))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(action_record)
            .transpose()
    }

    async fn actions(&self, run_id: &str) -> Result<Vec<ActionRecord>, StateError> {
        sqlx::query(&format!("SELECT {ACTION_COLS} FROM actions WHERE run_id = $1 ORDER BY key"))
            .bind(run_id)
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(action_record)
            .collect()
    }

    async fn hold(&self, run: &RunRecord, approvals: &[ApprovalRecord]) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        upsert_run(&mut *tx, run).await?;
        for a in approvals {
            sqlx::query(
                "INSERT INTO approvals (id, run_id, pipeline, status, created_ms, data) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, data = excluded.data",
            )
            .bind(&a.id)
            .bind(&a.run_id)
            .bind(&a.pipeline)
            .bind(&a.status)
            .bind(a.created_ms)
            .bind(a.data.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError> {
        sqlx::query("SELECT id, run_id, pipeline, status, created_ms, data FROM approvals WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(approval_record)
            .transpose()
    }

    async fn approvals(&self, q: &ApprovalQuery) -> Result<Vec<ApprovalRecord>, StateError> {
        sqlx::query(
            "SELECT id, run_id, pipeline, status, created_ms, data FROM approvals
             WHERE ($1::TEXT IS NULL OR status = $1) AND ($2::TEXT IS NULL OR pipeline = $2) AND ($3::TEXT IS NULL OR run_id = $3)
             ORDER BY created_ms, id",
        )
        .bind(&q.status)
        .bind(&q.pipeline)
        .bind(&q.run_id)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(approval_record)
        .collect()
    }

    async fn decide(&self, d: &ApprovalRecord) -> Result<bool, StateError> {
        let done = sqlx::query("UPDATE approvals SET status = $2, data = $3 WHERE id = $1 AND status = 'pending'")
            .bind(&d.id)
            .bind(&d.status)
            .bind(d.data.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn counter_add(&self, scope: &str, key: &str, delta: i64) -> Result<i64, StateError> {
        let v: i64 = sqlx::query_scalar(
            "INSERT INTO counters (scope, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (scope, key) DO UPDATE SET value = counters.value + excluded.value RETURNING value",
        )
        .bind(scope)
        .bind(key)
        .bind(delta)
        .fetch_one(&self.pool)
        .await?;
        Ok(v)
    }

    async fn counter_window_add(
        &self,
        scope: &str,
        key: &str,
        delta: i64,
        window_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StateError> {
        let mut tx = self.pool.begin().await?;
        // One add per counter at a time, across every node: the sum below
        // sees every add committed before it.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7351))")
            .bind(scope)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM counter_events WHERE scope = $1 AND key = $2 AND at_ms <= $3")
            .bind(scope)
            .bind(key)
            .bind(now_ms - window_ms)
            .execute(&mut *tx)
            .await?;
        let mut cancelled = false;
        if delta < 0 {
            cancelled = sqlx::query(
                "DELETE FROM counter_events WHERE id = (SELECT id FROM counter_events
                   WHERE scope = $1 AND key = $2 AND delta = $3 ORDER BY at_ms DESC, id DESC LIMIT 1)",
            )
            .bind(scope)
            .bind(key)
            .bind(-delta)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
        }
        // A negative add that cancels nothing (its add already left the
        // window) is not a credit for the next window.
        if !cancelled && delta > 0 {
            sqlx::query("INSERT INTO counter_events (scope, key, at_ms, delta, expires_ms) VALUES ($1, $2, $3, $4, $5)")
                .bind(scope)
                .bind(key)
                .bind(now_ms)
                .bind(delta)
                .bind(now_ms.saturating_add(window_ms))
                .execute(&mut *tx)
                .await?;
        }
        let total: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(delta), 0)::BIGINT FROM counter_events WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(total)
    }

    async fn cache_put(&self, key: &str, pipeline: &str, answer: &Value, stored_ms: i64) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO response_cache (key, pipeline, answer, stored_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key) DO UPDATE SET answer = excluded.answer, stored_ms = excluded.stored_ms",
        )
        .bind(key)
        .bind(pipeline)
        .bind(answer.to_string())
        .bind(stored_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn cache_get(&self, key: &str, fresh_since_ms: i64) -> Result<Option<(Value, i64)>, StateError> {
        let row = sqlx::query("SELECT answer, stored_ms FROM response_cache WHERE key = $1 AND stored_ms >= $2")
            .bind(key)
            .bind(fresh_since_ms)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((json_col(r.try_get(0)?)?, r.try_get(1)?))).transpose()
    }

    async fn compact(&self, before_ms: i64) -> Result<u64, StateError> {
        sqlx::query("DELETE FROM counter_events WHERE expires_ms < $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM response_cache WHERE stored_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query(
            "SELECT run_id, result FROM runs WHERE status = ANY($1) AND updated_ms < $2
             AND result NOT LIKE '%\"compacted\":true%'",
        )
        .bind(FINISHED.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut n = 0;
        for r in rows {
            let run_id: String = r.try_get(0)?;
            let small = summary(&json_col(r.try_get(1)?)?).to_string();
            let mut tx = self.pool.begin().await?;
            // The run's steps and its agent turns' (`RUN.STEP`).
            sqlx::query("DELETE FROM steps WHERE run_id = $1 OR substr(run_id, 1, length($1) + 1) = $1 || '.'")
                .bind(&run_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM actions WHERE run_id = $1").bind(&run_id).execute(&mut *tx).await?;
            sqlx::query("UPDATE runs SET result = $2, request = 'null' WHERE run_id = $1")
                .bind(&run_id)
                .bind(small)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            n += 1;
        }
        Ok(n)
    }
}
