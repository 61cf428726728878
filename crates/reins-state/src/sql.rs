//! The store written once for both databases: every statement, the
//! migrations, the lease fence and the row ↔ record mappings live here, and a
//! backend ([`Backend`]) only runs statements (SQLite in place, PostgreSQL
//! over a pool).
//!
//! Statements are written in PostgreSQL's `$N` placeholders and in the SQL
//! both databases speak (`ON CONFLICT ... DO UPDATE SET x = excluded.x`,
//! `IS NOT DISTINCT FROM`, `CAST`); [`Dialect`] holds the few places they
//! differ: placeholder spelling (SQLite's `?N`, which, unlike its `$N`, binds
//! by number), integer and serial column types, the implicit row id, the
//! per-counter lock, and PostgreSQL's one-round-trip checkpoint function.

use super::audit::{self, AuditEntry, AuditFilter, AuditReport, AuditRow};
use super::{
    ActionLog, ActionRecord, ActionState, ApprovalQuery, ApprovalRecord, ApprovalStatus, Approvals,
    AuditLog, CacheIndex, Counters, Housekeeping, RunRecord, RunStatus, RunStore, StateError,
    StepKind, StepRecord, ToolPin, ToolPins, now_ms, summary,
};
use serde_json::Value;
use std::sync::LazyLock;

/// Which SQL a backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The statements in this dialect, built once per process.
    pub fn sql(self) -> &'static Sql {
        static SQLITE: LazyLock<Sql> = LazyLock::new(|| Sql::new(Dialect::Sqlite));
        static POSTGRES: LazyLock<Sql> = LazyLock::new(|| Sql::new(Dialect::Postgres));
        match self {
            Dialect::Sqlite => &SQLITE,
            Dialect::Postgres => &POSTGRES,
        }
    }

    /// `sql` (written with `$N`) as this dialect numbers its parameters.
    fn placeholders(self, sql: &str) -> String {
        match self {
            Dialect::Sqlite => renumber(sql, 0, '?'),
            Dialect::Postgres => sql.to_owned(),
        }
    }

    /// The 64-bit integer column type (SQLite's INTEGER is 64-bit already,
    /// and files made before the list was shared say INTEGER).
    fn int(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER",
            Dialect::Postgres => "BIGINT",
        }
    }

    /// A column giving insertion order: SQLite has its implicit `rowid`;
    /// PostgreSQL needs one declared (`named`, a BIGSERIAL).
    fn row_id(self, named: &'static str) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => named,
        }
    }

    /// The DDL that declares [`Dialect::row_id`]'s column, `template`
    /// holding `{col}` (nothing on SQLite).
    fn serial(self, template: &str, named: &str) -> String {
        match self {
            Dialect::Sqlite => String::new(),
            Dialect::Postgres => template.replace("{col}", &format!("{named} BIGSERIAL")),
        }
    }
}

/// Renumbers `$N` placeholders to `{mark}{N + by}`.
fn renumber(sql: &str, by: u32, mark: char) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' || !chars.peek().is_some_and(char::is_ascii_digit) {
            out.push(c);
            continue;
        }
        let mut n = 0u32;
        while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
            n = n * 10 + d;
            chars.next();
        }
        out.push(mark);
        out.push_str(&(n + by).to_string());
    }
    out
}

/// `$first, $first+1, ... $last`.
fn params(first: u32, last: u32) -> String {
    (first..=last)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The schema, one entry per version, applied once each and in order
/// (SQLite counts them in `PRAGMA user_version`, PostgreSQL in
/// `reins_migrations`). Never edit an entry that has shipped; add one.
pub const MIGRATIONS: &[fn(Dialect) -> String] = &[
    base,
    leases,
    functions_moved,
    response_cache,
    audit_log,
    compaction,
    tool_pins,
];

fn base(d: Dialect) -> String {
    let int = d.int();
    format!(
        "CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT NOT NULL,
    request TEXT NOT NULL,
    idempotency_key TEXT,
    created_ms {int} NOT NULL,
    updated_ms {int} NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, updated_ms);
CREATE UNIQUE INDEX IF NOT EXISTS runs_key ON runs(pipeline, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    step {int} NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ms {int} NOT NULL,
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
    tries {int} NOT NULL DEFAULT 0,
    updated_ms {int} NOT NULL
);
CREATE INDEX IF NOT EXISTS actions_run ON actions(run_id);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    created_ms {int} NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_run ON approvals(run_id);
CREATE TABLE IF NOT EXISTS counters (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    value {int} NOT NULL,
    PRIMARY KEY (scope, key)
);"
    )
}

/// Leases, sessions and windowed counters.
fn leases(d: Dialect) -> String {
    let int = d.int();
    // Insertion order, for runs started within one millisecond.
    let seq = d.serial("ALTER TABLE runs ADD COLUMN {col};", "seq");
    let id = d.serial("{col} PRIMARY KEY,", "id");
    format!(
        "ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN lease_until {int} NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN session_id TEXT;
{seq}
CREATE INDEX IF NOT EXISTS runs_session ON runs(session_id, created_ms) WHERE session_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS counter_events (
    {id}
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    at_ms {int} NOT NULL,
    delta {int} NOT NULL,
    expires_ms {int} NOT NULL
);
CREATE INDEX IF NOT EXISTS counter_events_key ON counter_events(scope, key, at_ms);"
    )
}

/// Version 3 created PostgreSQL's write functions; they are now (re)defined
/// at every connect from [`Sql::functions`], so they always run the
/// statements of this build. Kept so the numbers of the others stay.
fn functions_moved(_: Dialect) -> String {
    String::new()
}

/// The response cache index. Idempotent: a SQLite file of the version
/// before this list (its `user_version` 3 meant "through the cache") runs
/// it again.
fn response_cache(d: Dialect) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS response_cache (
    key TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    answer TEXT NOT NULL,
    stored_ms {} NOT NULL
);",
        d.int()
    )
}

/// The audit log: append-only, `seq` numbered by the writer (1, 2, 3, ...)
/// so a gap is visible, each row chained to the one before by `prev_hash`.
fn audit_log(d: Dialect) -> String {
    let int = d.int();
    format!(
        "CREATE TABLE IF NOT EXISTS audit_log (
    seq {int} PRIMARY KEY,
    time_ms {int} NOT NULL,
    subject TEXT NOT NULL,
    tenant TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    request_id TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log(time_ms);"
    )
}

/// Compaction without a scan: a flag and an index find the finished runs
/// still holding their steps (runs compacted before this read their mark
/// from the result once, here).
fn compaction(d: Dialect) -> String {
    format!(
        "ALTER TABLE runs ADD COLUMN compacted {} NOT NULL DEFAULT 0;
UPDATE runs SET compacted = 1 WHERE result LIKE '%\"compacted\":true%';
CREATE INDEX IF NOT EXISTS runs_compaction ON runs(compacted, updated_ms);
CREATE INDEX IF NOT EXISTS actions_run ON actions(run_id);",
        d.int()
    )
}

/// MCP tool definitions as first seen (`hash`), and a changed one waiting
/// for an admin (`pending_*`): every node of a cluster hides the same tools.
fn tool_pins(d: Dialect) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS mcp_tool_pins (
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    hash TEXT NOT NULL,
    definition TEXT NOT NULL,
    pending_hash TEXT,
    pending_definition TEXT,
    updated_ms {} NOT NULL,
    PRIMARY KEY (server, tool)
);",
        d.int()
    )
}

/// Whether `node` may take a run's lease at `now` (SQL expressions): nobody
/// holds it, `node` does, or it has expired.
fn lease_open(node: &str, now: &str) -> String {
    format!("(runs.owner IS NULL OR runs.owner = {node} OR runs.lease_until < {now})")
}

const RUN_COLS: &str = "run_id, pipeline, status, result, request, idempotency_key, created_ms, updated_ms, session_id, owner, lease_until";
const ACTION_COLS: &str =
    "key, run_id, tool, arguments, state, response, CAST(http_status AS BIGINT), tries, updated_ms";
const APPROVAL_COLS: &str = "id, run_id, pipeline, status, created_ms, data";
const AUDIT_COLS: &str =
    "seq, time_ms, subject, tenant, action, target, outcome, detail, request_id, prev_hash, hash";

/// Every statement of the store, in one dialect.
pub struct Sql {
    pub upsert_run: String,
    pub run: String,
    pub run_by_key: String,
    pub runs_with_status: String,
    pub claim_run: String,
    pub claimable_runs: String,
    pub take_held: String,
    pub session_runs: String,
    pub upsert_step: String,
    /// A step of a run this node owns, written without touching the run's
    /// row (`$6` the run, `$7` this node): no row if it is not the owner.
    pub owned_step: String,
    /// PostgreSQL: the run and its step in one call (one round trip).
    pub checkpoint_call: Option<String>,
    /// PostgreSQL: many runs' checkpoint calls in one statement, their
    /// arguments as arrays (`$N` is the array of every call's Nth), one
    /// result row per call in order: a batch is one round trip and one commit.
    pub checkpoint_batch: Option<String>,
    pub steps: String,
    pub plan_action: String,
    pub action: String,
    pub actions: String,
    pub set_action: String,
    pub upsert_approval: String,
    pub approval: String,
    pub approvals: String,
    pub decide: String,
    pub counter_add: String,
    /// PostgreSQL: serializes the adds to one counter across every node
    /// (SQLite's write transactions are serialized already).
    pub counter_lock: Option<String>,
    pub window_expire: String,
    pub window_cancel: String,
    pub window_insert: String,
    pub window_total: String,
    pub cache_put: String,
    pub cache_get: String,
    pub drop_events: String,
    pub drop_cache: String,
    /// A page of finished runs still holding their steps.
    pub finished_runs: String,
    pub drop_turn_steps: String,
    pub drop_steps: String,
    pub compact_run: String,
    /// Deletes a page of finished runs past retention, with what they own.
    pub expire_steps: String,
    pub expire_actions: String,
    pub expire_approvals: String,
    pub expire_runs: String,
    /// PostgreSQL: serializes audit appends across every node, so the chain
    /// never forks (SQLite's write transactions are serialized already).
    pub audit_lock: Option<String>,
    pub audit_last: String,
    pub audit_insert: String,
    pub audit_list: String,
    pub audit_page: String,
    pub pin_insert: String,
    pub pin_propose: String,
    pub pin_approve: String,
    pub pins: String,
    /// What to (re)define after the migrations (PostgreSQL's functions).
    pub functions: Vec<String>,
}

impl Sql {
    fn new(d: Dialect) -> Sql {
        let q = |sql: &str| d.placeholders(sql);
        let running = RunStatus::Running.as_str();
        let upsert_run = format!(
            "INSERT INTO runs (run_id, pipeline, status, result, request, idempotency_key, created_ms,
       updated_ms, session_id, owner, lease_until)
     VALUES ({})
     ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, result = excluded.result,
       request = CASE WHEN excluded.request = 'null' THEN runs.request ELSE excluded.request END,
       idempotency_key = COALESCE(runs.idempotency_key, excluded.idempotency_key),
       session_id = COALESCE(runs.session_id, excluded.session_id),
       owner = excluded.owner, lease_until = excluded.lease_until,
       updated_ms = excluded.updated_ms
     WHERE runs.owner IS NOT DISTINCT FROM excluded.owner
        OR (runs.status = '{running}' AND {})",
            params(1, 11),
            lease_open("excluded.owner", "excluded.updated_ms"),
        );
        let upsert_step = "INSERT INTO steps (run_id, step, kind, data, created_ms) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (run_id, step) DO UPDATE SET kind = excluded.kind, data = excluded.data, created_ms = excluded.created_ms";
        let event_id = d.row_id("id");
        let finished = RunStatus::FINISHED.map(|s| format!("'{s}'")).join(", ");
        // Deletes what `table` holds of a page of finished runs, oldest first
        // (the order fixed, so each statement of a page picks the same runs).
        let expire = |table: &str| {
            q(&format!(
                "DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM runs WHERE updated_ms < $1
                 AND status IN ({finished}) ORDER BY updated_ms, run_id LIMIT $2)"
            ))
        };
        let functions = match d {
            Dialect::Sqlite => Vec::new(),
            Dialect::Postgres => pg_functions(&upsert_run, upsert_step),
        };
        Sql {
            run: q(&format!("SELECT {RUN_COLS} FROM runs WHERE run_id = $1")),
            run_by_key: q(&format!("SELECT {RUN_COLS} FROM runs WHERE pipeline = $1 AND idempotency_key = $2")),
            runs_with_status: q(&format!(
                "SELECT {RUN_COLS} FROM runs WHERE status = $1 ORDER BY updated_ms, run_id LIMIT $2"
            )),
            claim_run: q(&format!(
                "UPDATE runs SET owner = $2, lease_until = $4 WHERE run_id = $1 AND status = '{running}' AND {}",
                lease_open("$2", "$3")
            )),
            claimable_runs: q(&format!(
                "SELECT {RUN_COLS} FROM runs WHERE status = '{running}' AND {} ORDER BY updated_ms, run_id LIMIT $3",
                lease_open("$1", "$2")
            )),
            take_held: q(&format!(
                "UPDATE runs SET status = '{running}', owner = $2, lease_until = $4, updated_ms = $3
             WHERE run_id = $1 AND status = '{}'",
                RunStatus::AwaitingApproval
            )),
            session_runs: q(&format!(
                "SELECT {RUN_COLS} FROM runs WHERE session_id = $1 AND pipeline = $2 AND status <> '{running}'
                 ORDER BY created_ms DESC, {} DESC LIMIT $3",
                d.row_id("seq")
            )),
            checkpoint_call: (d == Dialect::Postgres)
                .then(|| format!("SELECT CAST(CAST(reins_checkpoint({}) AS INTEGER) AS BIGINT)", params(1, 16))),
            checkpoint_batch: (d == Dialect::Postgres).then(checkpoint_batch),
            steps: q("SELECT run_id, step, kind, data, created_ms FROM steps WHERE run_id = $1 ORDER BY step"),
            plan_action: q(&format!(
                "INSERT INTO actions (key, run_id, tool, arguments, state, response, http_status, tries, updated_ms)
                 VALUES ($1, $2, $3, $4, '{}', NULL, NULL, 0, $5) ON CONFLICT (key) DO NOTHING",
                ActionState::Planned
            )),
            action: q(&format!("SELECT {ACTION_COLS} FROM actions WHERE key = $1")),
            actions: q(&format!("SELECT {ACTION_COLS} FROM actions WHERE run_id = $1 ORDER BY key")),
            set_action: q(
                "UPDATE actions SET state = $2, response = COALESCE($3, response), http_status = COALESCE($4, http_status),
                   tries = $5, updated_ms = $6 WHERE key = $1",
            ),
            upsert_approval: q(&format!(
                "INSERT INTO approvals ({APPROVAL_COLS}) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, pipeline = excluded.pipeline,
                   status = excluded.status, created_ms = excluded.created_ms, data = excluded.data"
            )),
            approval: q(&format!("SELECT {APPROVAL_COLS} FROM approvals WHERE id = $1")),
            approvals: q(&format!(
                "SELECT {APPROVAL_COLS} FROM approvals
                 WHERE (CAST($1 AS TEXT) IS NULL OR status = $1) AND (CAST($2 AS TEXT) IS NULL OR pipeline = $2)
                   AND (CAST($3 AS TEXT) IS NULL OR run_id = $3)
                 ORDER BY created_ms, id"
            )),
            decide: q(&format!(
                "UPDATE approvals SET status = $2, data = $3 WHERE id = $1 AND status = '{}'",
                ApprovalStatus::Pending
            )),
            counter_add: q("INSERT INTO counters (scope, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (scope, key) DO UPDATE SET value = counters.value + excluded.value RETURNING value"),
            counter_lock: (d == Dialect::Postgres)
                .then(|| "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(31) || $2, 7351))".to_owned()),
            window_expire: q("DELETE FROM counter_events WHERE scope = $1 AND key = $2 AND at_ms <= $3"),
            window_cancel: q(&format!(
                "DELETE FROM counter_events WHERE {event_id} = (SELECT {event_id} FROM counter_events
                   WHERE scope = $1 AND key = $2 AND delta = $3 ORDER BY at_ms DESC, {event_id} DESC LIMIT 1)"
            )),
            window_insert: q(
                "INSERT INTO counter_events (scope, key, at_ms, delta, expires_ms) VALUES ($1, $2, $3, $4, $5)",
            ),
            window_total: q(
                "SELECT CAST(COALESCE(SUM(delta), 0) AS BIGINT) FROM counter_events WHERE scope = $1 AND key = $2",
            ),
            cache_put: q("INSERT INTO response_cache (key, pipeline, answer, stored_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET pipeline = excluded.pipeline, answer = excluded.answer,
                   stored_ms = excluded.stored_ms"),
            cache_get: q("SELECT answer, stored_ms FROM response_cache WHERE key = $1 AND stored_ms >= $2"),
            drop_events: q("DELETE FROM counter_events WHERE expires_ms < $1"),
            drop_cache: q("DELETE FROM response_cache WHERE stored_ms < $1"),
            finished_runs: q(&format!(
                "SELECT run_id, result FROM runs WHERE compacted = 0 AND updated_ms < $1 AND status IN ({finished})
                 ORDER BY updated_ms LIMIT $2"
            )),
            // The run's agent turns' steps (`RUN.STEP`, one per step of the
            // run) and its own, each found by its key.
            drop_turn_steps: q("DELETE FROM steps WHERE run_id IN
                 (SELECT CAST($1 AS TEXT) || '.' || CAST(step AS TEXT) FROM steps WHERE run_id = $1)"),
            drop_steps: q("DELETE FROM steps WHERE run_id = $1"),
            // SQLite: the compacted row is written anew (a new rowid, at the
            // end of the table) rather than shrunk in place, where the space
            // it freed stayed stranded in its page: the live file grew
            // 1.1 KB a compacted run, against 0.46 KB this way. Every column
            // of `runs` but `result`, `request` and `compacted` is copied;
            // a migration that adds one must add it here
            // (`compaction_keeps_summaries` checks them). The new rowid
            // matters only to `session_runs`' tie-break: two runs of one
            // session created in the same millisecond may swap there.
            compact_run: match d {
                Dialect::Sqlite => q("REPLACE INTO runs (run_id, pipeline, status, result, request, idempotency_key, created_ms, updated_ms, owner, lease_until, session_id, compacted)
                 SELECT run_id, pipeline, status, $2, 'null', idempotency_key, created_ms, updated_ms, owner, lease_until, session_id, 1 FROM runs WHERE run_id = $1"),
                Dialect::Postgres => q("UPDATE runs SET result = $2, request = 'null', compacted = 1 WHERE run_id = $1"),
            },
            expire_steps: expire("steps"),
            expire_actions: expire("actions"),
            expire_approvals: expire("approvals"),
            expire_runs: expire("runs"),
            audit_lock: (d == Dialect::Postgres).then(|| "SELECT pg_advisory_xact_lock(7351003)".to_owned()),
            audit_last: q("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"),
            audit_insert: q(&format!("INSERT INTO audit_log ({AUDIT_COLS}) VALUES ({})", params(1, 11))),
            audit_list: q(&format!(
                "SELECT {AUDIT_COLS} FROM audit_log
                 WHERE seq > $1 AND time_ms >= $2 AND time_ms <= $3 AND (CAST($4 AS TEXT) IS NULL OR tenant = $4)
                   AND (CAST($5 AS TEXT) IS NULL OR action = $5)
                   AND (CAST($6 AS TEXT) IS NULL OR substr(action, 1, length($6)) = $6)
                 ORDER BY seq LIMIT $7"
            )),
            audit_page: q(&format!("SELECT {AUDIT_COLS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")),
            pin_insert: q("INSERT INTO mcp_tool_pins (server, tool, hash, definition, updated_ms) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (server, tool) DO NOTHING"),
            pin_propose: q("UPDATE mcp_tool_pins SET pending_hash = $3, pending_definition = $4, updated_ms = $5
                 WHERE server = $1 AND tool = $2 AND hash <> $3
                   AND (pending_hash IS NULL OR pending_hash <> $3)"),
            pin_approve: q("UPDATE mcp_tool_pins SET hash = pending_hash, definition = pending_definition,
                   pending_hash = NULL, pending_definition = NULL, updated_ms = $4
                 WHERE server = $1 AND tool = $2 AND pending_hash = $3"),
            pins: q("SELECT server, tool, hash, definition, pending_hash, pending_definition, updated_ms
                 FROM mcp_tool_pins WHERE (CAST($1 AS TEXT) IS NULL OR server = $1) ORDER BY server, tool"),
            upsert_run: q(&upsert_run),
            upsert_step: q(upsert_step),
            owned_step: q("INSERT INTO steps (run_id, step, kind, data, created_ms)
     SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = $6 AND owner = $7)
     ON CONFLICT (run_id, step) DO UPDATE SET kind = excluded.kind, data = excluded.data, created_ms = excluded.created_ms"),
            functions,
        }
    }
}

/// PostgreSQL's run write and checkpoint as functions, so a checkpoint is
/// one round trip instead of four (BEGIN, two statements, COMMIT). Their
/// bodies are the shared statements: PL/pgSQL reads `$N` as the function's
/// N-th argument. The argument names are those version 3 created them with
/// (`CREATE OR REPLACE` may not rename them).
fn pg_functions(upsert_run: &str, upsert_step: &str) -> Vec<String> {
    let run_args = "p_run_id TEXT, p_pipeline TEXT, p_status TEXT, p_result TEXT, p_request TEXT,
    p_key TEXT, p_created BIGINT, p_updated BIGINT, p_session TEXT, p_owner TEXT, p_lease BIGINT";
    vec![
        format!(
            "CREATE OR REPLACE FUNCTION reins_put_run({run_args})
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE n INTEGER;
BEGIN
    {upsert_run};
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END $$"
        ),
        format!(
            "CREATE OR REPLACE FUNCTION reins_checkpoint({run_args},
    p_step_run_id TEXT, p_step BIGINT, p_kind TEXT, p_data TEXT, p_step_created BIGINT)
RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    IF NOT reins_put_run({}) THEN
        RETURN FALSE;
    END IF;
    -- The step may be an agent turn's (`RUN.STEP`), fenced on its run's row.
    {};
    RETURN TRUE;
END $$",
            params(1, 11),
            renumber(upsert_step, 11, '$'),
        ),
    ]
}

/// [`Sql::checkpoint_batch`]: the columns' array types follow the
/// arguments a checkpoint call binds.
fn checkpoint_batch() -> String {
    let mut sample = run_args(&RunRecord::new("", "", RunStatus::Running));
    sample.extend(step_args(&StepRecord {
        run_id: String::new(),
        step: 0,
        kind: StepKind::Run,
        data: Value::Null,
        created_ms: 0,
    }));
    let arrays: Vec<String> = sample
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            Arg::Text(_) => format!("CAST(${} AS TEXT[])", i + 1),
            Arg::Int(_) => format!("CAST(${} AS BIGINT[])", i + 1),
        })
        .collect();
    let cols: Vec<String> = (1..=sample.len()).map(|i| format!("c{i}")).collect();
    format!(
        "SELECT CAST(CAST(reins_checkpoint({}) AS INTEGER) AS BIGINT)
         FROM unnest({}) WITH ORDINALITY AS b({}, n) ORDER BY b.n",
        cols.iter()
            .map(|c| format!("b.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        arrays.join(", "),
        cols.join(", ")
    )
}

/// A statement's argument, bound the same way by either backend.
#[derive(Debug, Clone)]
pub enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Arg {
        Arg::Text(v.map(str::to_owned))
    }
}
impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Arg {
        Arg::Text(v.clone())
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Arg {
        Arg::Text(v)
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(Some(v))
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Arg {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<Option<u16>> for Arg {
    fn from(v: Option<u16>) -> Arg {
        Arg::Int(v.map(i64::from))
    }
}
impl From<&Value> for Arg {
    fn from(v: &Value) -> Arg {
        Arg::Text(Some(v.to_string()))
    }
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(Arg::from($a)),*] };
}

/// One statement with its arguments.
pub struct Stmt<'a> {
    /// One of [`Sql`]'s statements (they live for the process), so a
    /// backend may carry it to another thread.
    pub sql: &'static str,
    pub args: Vec<Arg>,
    /// The run whose lease fences this write: if it changes no row, the
    /// transaction is rolled back and the answer is [`StateError::LeaseLost`].
    pub fence: Option<&'a str>,
}

fn stmt(sql: &'static str, args: Vec<Arg>) -> Stmt<'static> {
    Stmt {
        sql,
        args,
        fence: None,
    }
}

impl Stmt<'_> {
    /// `changed` rows were written: an error if the statement is fenced and wrote none.
    pub fn check(&self, changed: u64) -> Result<u64, StateError> {
        match self.fence {
            Some(run_id) if changed == 0 => Err(StateError::LeaseLost {
                run_id: run_id.to_owned(),
            }),
            _ => Ok(changed),
        }
    }
}

/// A result row, read by column number, whichever database it came from.
pub trait Row {
    fn text(&self, i: usize) -> Result<Option<String>, StateError>;
    fn int(&self, i: usize) -> Result<Option<i64>, StateError>;
}

/// Maps a row to a record.
pub type RowMap<T> = fn(&dyn Row) -> Result<T, StateError>;

impl dyn Row + '_ {
    fn string(&self, i: usize) -> Result<String, StateError> {
        self.text(i)?
            .ok_or_else(|| StateError::Row(format!("column {i} is NULL")))
    }
    fn i64(&self, i: usize) -> Result<i64, StateError> {
        self.int(i)?
            .ok_or_else(|| StateError::Row(format!("column {i} is NULL")))
    }
    fn json(&self, i: usize) -> Result<Value, StateError> {
        Ok(serde_json::from_str(&self.string(i)?)?)
    }
}

fn run_record(r: &dyn Row) -> Result<RunRecord, StateError> {
    Ok(RunRecord {
        run_id: r.string(0)?,
        pipeline: r.string(1)?,
        status: RunStatus::parse(&r.string(2)?)?,
        result: r.json(3)?,
        request: r.json(4)?,
        idempotency_key: r.text(5)?,
        created_ms: r.i64(6)?,
        updated_ms: r.i64(7)?,
        session_id: r.text(8)?,
        owner: r.text(9)?,
        lease_until_ms: r.i64(10)?,
    })
}

/// The arguments of [`Sql::upsert_run`] (and the first eleven of the checkpoint call).
fn run_args(run: &RunRecord) -> Vec<Arg> {
    args![
        &run.run_id,
        &run.pipeline,
        run.status.as_str(),
        &run.result,
        &run.request,
        &run.idempotency_key,
        run.created_ms,
        run.updated_ms,
        &run.session_id,
        &run.owner,
        run.lease_until_ms,
    ]
}

fn step_record(r: &dyn Row) -> Result<StepRecord, StateError> {
    Ok(StepRecord {
        run_id: r.string(0)?,
        step: u32::try_from(r.i64(1)?).map_err(|e| StateError::Row(format!("step number: {e}")))?,
        kind: StepKind::parse(&r.string(2)?)?,
        data: r.json(3)?,
        created_ms: r.i64(4)?,
    })
}

fn step_args(step: &StepRecord) -> Vec<Arg> {
    args![
        &step.run_id,
        step.step,
        step.kind.as_str(),
        &step.data,
        step.created_ms
    ]
}

fn action_record(r: &dyn Row) -> Result<ActionRecord, StateError> {
    Ok(ActionRecord {
        key: r.string(0)?,
        run_id: r.string(1)?,
        tool: r.string(2)?,
        arguments: r.json(3)?,
        state: ActionState::parse(&r.string(4)?)?,
        response: r.text(5)?.map(|t| serde_json::from_str(&t)).transpose()?,
        http_status: r.int(6)?.and_then(|s| u16::try_from(s).ok()),
        tries: u32::try_from(r.i64(7)?).unwrap_or(0),
        updated_ms: r.i64(8)?,
    })
}

fn approval_record(r: &dyn Row) -> Result<ApprovalRecord, StateError> {
    Ok(ApprovalRecord {
        id: r.string(0)?,
        run_id: r.string(1)?,
        pipeline: r.string(2)?,
        status: ApprovalStatus::parse(&r.string(3)?)?,
        created_ms: r.i64(4)?,
        data: r.json(5)?,
    })
}

/// A stored audit row with its `detail` as stored (what its hash covers).
fn audit_row(r: &dyn Row) -> Result<(AuditRow, String), StateError> {
    let detail_text = r.string(7)?;
    let row = AuditRow {
        seq: r.i64(0)?,
        entry: AuditEntry {
            time_ms: r.i64(1)?,
            subject: r.string(2)?,
            tenant: r.text(3)?,
            action: r.string(4)?,
            target: r.string(5)?,
            outcome: r.string(6)?,
            // An unreadable detail is kept as its text: verify reports the
            // row rather than failing to read the log.
            detail: serde_json::from_str(&detail_text)
                .unwrap_or_else(|_| Value::String(detail_text.clone())),
            request_id: r.text(8)?,
        },
        prev_hash: r.string(9)?,
        hash: r.string(10)?,
    };
    Ok((row, detail_text))
}

fn audit_args(row: &AuditRow, detail_text: String) -> Vec<Arg> {
    let e = &row.entry;
    let mut args = args![
        row.seq, e.time_ms, &e.subject, &e.tenant, &e.action, &e.target, &e.outcome
    ];
    args.extend(args![detail_text, &e.request_id, &row.prev_hash, &row.hash]);
    args
}

fn last_link(r: &dyn Row) -> Result<(i64, String), StateError> {
    Ok((r.i64(0)?, r.string(1)?))
}

fn int(r: &dyn Row) -> Result<i64, StateError> {
    r.i64(0)
}

fn cache_hit(r: &dyn Row) -> Result<(Value, i64), StateError> {
    Ok((r.json(0)?, r.i64(1)?))
}

fn run_result(r: &dyn Row) -> Result<(String, Value), StateError> {
    Ok((r.string(0)?, r.json(1)?))
}

/// What a backend answers for [`Backend::run`].
pub struct Done<T> {
    /// Rows each write changed, in order.
    pub changed: Vec<u64>,
    /// The read's rows, mapped.
    pub rows: Vec<T>,
}

/// A database that runs [`Sql`]'s statements.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    const DIALECT: Dialect;
    fn kind(&self) -> &'static str;
    /// Runs `writes` then `read`; more than one statement is one
    /// transaction, rolled back if any fails (a fenced write that changes
    /// nothing fails: see [`Stmt::check`]).
    async fn run<T: Send + 'static>(
        &self,
        writes: &[Stmt<'_>],
        read: Option<(&Stmt<'_>, RowMap<T>)>,
    ) -> Result<Done<T>, StateError>;

    /// Runs `first` and `read`, then the writes `then` makes of the rows
    /// read, all in one transaction: for a write that depends on what is
    /// stored (the audit chain's next link) and must not race another.
    async fn read_then_write<T, U, F>(
        &self,
        first: &[Stmt<'_>],
        read: (&Stmt<'_>, RowMap<T>),
        then: F,
    ) -> Result<U, StateError>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: FnOnce(Vec<T>) -> (Vec<Stmt<'static>>, U) + Send + 'static;

    /// [`Backend::run`] for housekeeping (compaction and expiry pages,
    /// hundreds of rows a transaction): never on the caller's thread, where
    /// a backend could run a short job there (SQLite's commit in place); by
    /// default `run`.
    async fn run_aside<T: Send + 'static>(
        &self,
        writes: &[Stmt<'_>],
        read: Option<(&Stmt<'_>, RowMap<T>)>,
    ) -> Result<Done<T>, StateError> {
        self.run(writes, read).await
    }

    /// `call`, a statement answering one integer, run together with other
    /// callers' where the backend can batch them (PostgreSQL's checkpoint
    /// call); by default on its own.
    async fn call_batched(&self, call: Stmt<'static>) -> Result<Option<i64>, StateError> {
        Ok(self
            .run(&[], Some((&call, int)))
            .await?
            .rows
            .into_iter()
            .next())
    }
}

/// The store over a [`Backend`]: every trait written once for both databases.
pub struct SqlStore<B> {
    pub(crate) db: B,
}

impl<B: Backend> SqlStore<B> {
    fn sql(&self) -> &'static Sql {
        B::DIALECT.sql()
    }

    async fn write(&self, writes: &[Stmt<'_>]) -> Result<Vec<u64>, StateError> {
        Ok(self.db.run::<()>(writes, None).await?.changed)
    }

    /// [`SqlStore::write`] for housekeeping: see [`Backend::run_aside`].
    async fn write_aside(&self, writes: &[Stmt<'_>]) -> Result<Vec<u64>, StateError> {
        Ok(self.db.run_aside::<()>(writes, None).await?.changed)
    }

    /// Whether `s` changed exactly one row.
    async fn changed_one(&self, s: Stmt<'_>) -> Result<bool, StateError> {
        Ok(self.write(&[s]).await? == [1])
    }

    async fn rows<T: Send + 'static>(
        &self,
        s: Stmt<'_>,
        map: RowMap<T>,
    ) -> Result<Vec<T>, StateError> {
        Ok(self.db.run(&[], Some((&s, map))).await?.rows)
    }

    async fn one<T: Send + 'static>(
        &self,
        s: Stmt<'_>,
        map: RowMap<T>,
    ) -> Result<Option<T>, StateError> {
        Ok(self.rows(s, map).await?.into_iter().next())
    }

    /// Writes fenced on `run`, with a taken idempotency key as a conflict.
    async fn write_run(&self, run: &RunRecord, writes: &[Stmt<'_>]) -> Result<(), StateError> {
        self.write(writes)
            .await
            .map(|_| ())
            .map_err(|e| key_conflict(run, e))
    }

    fn upsert_run<'a>(&'a self, run: &'a RunRecord) -> Stmt<'a> {
        Stmt {
            sql: &self.sql().upsert_run,
            args: run_args(run),
            fence: Some(&run.run_id),
        }
    }
}

/// A taken idempotency key as a [`StateError::Conflict`].
fn key_conflict(run: &RunRecord, e: StateError) -> StateError {
    if e.is_unique_violation() {
        StateError::Conflict(format!(
            "run `{}`: another run holds its idempotency key",
            run.run_id
        ))
    } else {
        e
    }
}

#[async_trait::async_trait]
impl<B: Backend> RunStore for SqlStore<B> {
    async fn put_run(&self, run: &RunRecord) -> Result<(), StateError> {
        self.write_run(run, &[self.upsert_run(run)]).await
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        self.one(stmt(&self.sql().run, args![run_id]), run_record)
            .await
    }

    async fn run_by_key(&self, pipeline: &str, key: &str) -> Result<Option<RunRecord>, StateError> {
        self.one(
            stmt(&self.sql().run_by_key, args![pipeline, key]),
            run_record,
        )
        .await
    }

    async fn runs_with_status(
        &self,
        status: RunStatus,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StateError> {
        self.rows(
            stmt(&self.sql().runs_with_status, args![status.as_str(), limit]),
            run_record,
        )
        .await
    }

    async fn claim_run(
        &self,
        run_id: &str,
        node: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StateError> {
        self.changed_one(stmt(
            &self.sql().claim_run,
            args![run_id, node, now_ms, until_ms],
        ))
        .await
    }

    async fn claimable_runs(
        &self,
        node: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StateError> {
        self.rows(
            stmt(&self.sql().claimable_runs, args![node, now_ms, limit]),
            run_record,
        )
        .await
    }

    async fn take_held(
        &self,
        run_id: &str,
        node: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StateError> {
        self.changed_one(stmt(
            &self.sql().take_held,
            args![run_id, node, now_ms, until_ms],
        ))
        .await
    }

    async fn session_runs(
        &self,
        session_id: &str,
        pipeline: &str,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StateError> {
        self.rows(
            stmt(&self.sql().session_runs, args![session_id, pipeline, limit]),
            run_record,
        )
        .await
    }

    async fn checkpoint(&self, run: &RunRecord, step: &StepRecord) -> Result<(), StateError> {
        let sql = self.sql();
        let Some(call) = &sql.checkpoint_call else {
            // A run this node owns gains its step alone. Rewriting its row
            // too (request and result included, and both indexes on
            // `updated_ms`) tripled the pages, and so the WAL, that every
            // checkpoint wrote; the lease is renewed on its own timer.
            let mut owned = step_args(step);
            owned.extend(args![&run.run_id, &run.owner]);
            if self.write(&[stmt(&sql.owned_step, owned)]).await? == [1] {
                return Ok(());
            }
            // Not (or no longer) its owner, or no row yet: the fenced upsert
            // takes over an open lease, writes a row a failed start never
            // wrote, or answers `LeaseLost`.
            let step = stmt(&sql.upsert_step, step_args(step));
            return self.write_run(run, &[step, self.upsert_run(run)]).await;
        };
        let mut all = run_args(run);
        all.extend(step_args(step));
        match self
            .db
            .call_batched(stmt(call, all))
            .await
            .map_err(|e| key_conflict(run, e))?
        {
            Some(1) => Ok(()),
            _ => Err(StateError::LeaseLost {
                run_id: run.run_id.clone(),
            }),
        }
    }

    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError> {
        self.rows(stmt(&self.sql().steps, args![run_id]), step_record)
            .await
    }
}

#[async_trait::async_trait]
impl<B: Backend> ActionLog for SqlStore<B> {
    async fn plan_action(&self, a: &ActionRecord) -> Result<ActionRecord, StateError> {
        let sql = self.sql();
        let plan = stmt(
            &sql.plan_action,
            args![&a.key, &a.run_id, &a.tool, &a.arguments, now_ms()],
        );
        let read = stmt(&sql.action, args![&a.key]);
        let done = self.db.run(&[plan], Some((&read, action_record))).await?;
        done.rows.into_iter().next().ok_or_else(|| {
            StateError::Other(format!(
                "action `{}` is not stored after planning it",
                a.key
            ))
        })
    }

    async fn set_action(
        &self,
        key: &str,
        state: ActionState,
        response: Option<&Value>,
        http_status: Option<u16>,
        tries: u32,
    ) -> Result<(), StateError> {
        let response = Arg::Text(response.map(Value::to_string));
        let s = stmt(
            &self.sql().set_action,
            vec![
                key.into(),
                state.as_str().into(),
                response,
                http_status.into(),
                tries.into(),
                now_ms().into(),
            ],
        );
        self.write(&[s]).await.map(|_| ())
    }

    async fn action(&self, key: &str) -> Result<Option<ActionRecord>, StateError> {
        self.one(stmt(&self.sql().action, args![key]), action_record)
            .await
    }

    async fn actions(&self, run_id: &str) -> Result<Vec<ActionRecord>, StateError> {
        self.rows(stmt(&self.sql().actions, args![run_id]), action_record)
            .await
    }
}

#[async_trait::async_trait]
impl<B: Backend> Approvals for SqlStore<B> {
    async fn hold(&self, run: &RunRecord, approvals: &[ApprovalRecord]) -> Result<(), StateError> {
        let sql = self.sql();
        let mut writes = vec![self.upsert_run(run)];
        writes.extend(approvals.iter().map(|a| {
            stmt(
                &sql.upsert_approval,
                args![
                    &a.id,
                    &a.run_id,
                    &a.pipeline,
                    a.status.as_str(),
                    a.created_ms,
                    &a.data
                ],
            )
        }));
        self.write_run(run, &writes).await
    }

    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError> {
        self.one(stmt(&self.sql().approval, args![id]), approval_record)
            .await
    }

    async fn approvals(&self, q: &ApprovalQuery) -> Result<Vec<ApprovalRecord>, StateError> {
        let status = q.status.map(ApprovalStatus::as_str);
        let s = stmt(&self.sql().approvals, args![status, &q.pipeline, &q.run_id]);
        self.rows(s, approval_record).await
    }

    async fn decide(&self, d: &ApprovalRecord) -> Result<bool, StateError> {
        self.changed_one(stmt(
            &self.sql().decide,
            args![&d.id, d.status.as_str(), &d.data],
        ))
        .await
    }
}

#[async_trait::async_trait]
impl<B: Backend> Counters for SqlStore<B> {
    async fn counter_add(&self, scope: &str, key: &str, delta: i64) -> Result<i64, StateError> {
        let total = self
            .one(stmt(&self.sql().counter_add, args![scope, key, delta]), int)
            .await?;
        total.ok_or_else(|| {
            StateError::Other(format!("counter `{scope}`/`{key}` returned no total"))
        })
    }

    /// The windowed-counter algorithm of the store (the in-memory one is
    /// `reins_runtime::counters::Window`): events older than the window
    /// go, a release cancels the latest equal reservation, and a release
    /// that cancels nothing credits nothing — so only a positive `delta`
    /// is inserted.
    async fn counter_window_add(
        &self,
        scope: &str,
        key: &str,
        delta: i64,
        window_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StateError> {
        let sql = self.sql();
        let mut writes = Vec::with_capacity(3);
        if let Some(lock) = &sql.counter_lock {
            writes.push(stmt(lock, args![scope, key]));
        }
        writes.push(stmt(
            &sql.window_expire,
            args![scope, key, now_ms - window_ms],
        ));
        if delta < 0 {
            writes.push(stmt(&sql.window_cancel, args![scope, key, -delta]));
        }
        if delta > 0 {
            let expires = now_ms.saturating_add(window_ms);
            writes.push(stmt(
                &sql.window_insert,
                args![scope, key, now_ms, delta, expires],
            ));
        }
        let total = stmt(&sql.window_total, args![scope, key]);
        let done = self.db.run(&writes, Some((&total, int))).await?;
        Ok(done.rows.into_iter().next().unwrap_or(0))
    }
}

#[async_trait::async_trait]
impl<B: Backend> CacheIndex for SqlStore<B> {
    async fn cache_put(
        &self,
        key: &str,
        pipeline: &str,
        answer: &Value,
        stored_ms: i64,
    ) -> Result<(), StateError> {
        let s = stmt(
            &self.sql().cache_put,
            args![key, pipeline, answer, stored_ms],
        );
        self.write(&[s]).await.map(|_| ())
    }

    async fn cache_get(
        &self,
        key: &str,
        fresh_since_ms: i64,
    ) -> Result<Option<(Value, i64)>, StateError> {
        self.one(
            stmt(&self.sql().cache_get, args![key, fresh_since_ms]),
            cache_hit,
        )
        .await
    }
}

fn pin(r: &dyn Row) -> Result<ToolPin, StateError> {
    let pending_definition = match r.text(5)? {
        Some(text) => Some(serde_json::from_str(&text)?),
        None => None,
    };
    Ok(ToolPin {
        server: r.string(0)?,
        tool: r.string(1)?,
        hash: r.string(2)?,
        definition: r.json(3)?,
        pending_hash: r.text(4)?,
        pending_definition,
        updated_ms: r.i64(6)?,
    })
}

#[async_trait::async_trait]
impl<B: Backend> ToolPins for SqlStore<B> {
    async fn pin_tools(&self, server: &str, seen: &[ToolPin]) -> Result<Vec<ToolPin>, StateError> {
        let sql = self.sql();
        let now = now_ms();
        let mut writes = Vec::with_capacity(seen.len() * 2);
        for t in seen {
            writes.push(stmt(
                &sql.pin_insert,
                args![server, &t.tool, &t.hash, &t.definition, now],
            ));
            writes.push(stmt(
                &sql.pin_propose,
                args![server, &t.tool, &t.hash, &t.definition, now],
            ));
        }
        let read = stmt(&sql.pins, args![Some(server)]);
        Ok(self.db.run(&writes, Some((&read, pin))).await?.rows)
    }

    async fn approve_tool(&self, server: &str, tool: &str, hash: &str) -> Result<bool, StateError> {
        self.changed_one(stmt(
            &self.sql().pin_approve,
            args![server, tool, hash, now_ms()],
        ))
        .await
    }

    async fn tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, StateError> {
        self.rows(stmt(&self.sql().pins, args![server]), pin).await
    }
}

#[async_trait::async_trait]
impl<B: Backend> AuditLog for SqlStore<B> {
    async fn audit_append(&self, entries: Vec<AuditEntry>) -> Result<Vec<AuditRow>, StateError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let sql = self.sql();
        let lock: Vec<Stmt<'_>> = sql.audit_lock.iter().map(|l| stmt(l, Vec::new())).collect();
        let last = stmt(&sql.audit_last, Vec::new());
        // The newest link is read inside the transaction (under the lock on
        // PostgreSQL), so two appends can never chain to the same row.
        self.db
            .read_then_write(
                &lock,
                (&last, last_link),
                move |found: Vec<(i64, String)>| {
                    let mut prev = found.into_iter().next();
                    let mut writes = Vec::with_capacity(entries.len());
                    let mut rows = Vec::with_capacity(entries.len());
                    for entry in entries {
                        let (row, detail_text) = audit::chain(prev.take(), entry);
                        writes.push(stmt(&sql.audit_insert, audit_args(&row, detail_text)));
                        prev = Some((row.seq, row.hash.clone()));
                        rows.push(row);
                    }
                    (writes, rows)
                },
            )
            .await
    }

    async fn audit_list(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StateError> {
        let (exact, prefix) = f.action_match();
        let s = stmt(
            &self.sql().audit_list,
            args![
                f.after.unwrap_or(0),
                f.since_ms.unwrap_or(i64::MIN),
                f.until_ms.unwrap_or(i64::MAX),
                &f.tenant,
                exact,
                prefix,
                f.page_size(),
            ],
        );
        Ok(self
            .rows(s, audit_row)
            .await?
            .into_iter()
            .map(|(row, _)| row)
            .collect())
    }

    async fn audit_verify(&self) -> Result<AuditReport, StateError> {
        const PAGE: u32 = 1000;
        let mut verifier = audit::Verifier::default();
        let mut after = 0i64;
        loop {
            let page = self
                .rows(stmt(&self.sql().audit_page, args![after, PAGE]), audit_row)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = last.seq;
            let full = page.len() == PAGE as usize;
            if !page.iter().all(|(row, detail)| verifier.check(row, detail)) || !full {
                break;
            }
        }
        Ok(verifier.report())
    }
}

#[async_trait::async_trait]
impl<B: Backend> Housekeeping for SqlStore<B> {
    fn kind(&self) -> &'static str {
        self.db.kind()
    }

    async fn compact(&self, before_ms: i64) -> Result<u64, StateError> {
        let sql = self.sql();
        self.write_aside(&[stmt(&sql.drop_events, args![now_ms()])])
            .await?;
        let mut n = 0;
        loop {
            let read = stmt(&sql.finished_runs, args![before_ms, HOUSEKEEPING_PAGE]);
            let page = self
                .db
                .run_aside(&[], Some((&read, run_result)))
                .await?
                .rows;
            // One transaction per page, not per run.
            let mut writes = Vec::with_capacity(3 * page.len());
            for (run_id, result) in &page {
                writes.push(stmt(&sql.drop_turn_steps, args![run_id.as_str()]));
                writes.push(stmt(&sql.drop_steps, args![run_id.as_str()]));
                writes.push(stmt(
                    &sql.compact_run,
                    args![run_id.as_str(), &summary(result)],
                ));
            }
            if !writes.is_empty() {
                self.write_aside(&writes).await?;
            }
            n += page.len() as u64;
            if (page.len() as i64) < HOUSEKEEPING_PAGE {
                return Ok(n);
            }
        }
    }

    async fn expire(&self, before_ms: i64) -> Result<u64, StateError> {
        let sql = self.sql();
        self.write_aside(&[stmt(&sql.drop_cache, args![before_ms])])
            .await?;
        let mut n = 0;
        loop {
            let page = args![before_ms, HOUSEKEEPING_PAGE];
            let changed = self
                .write_aside(&[
                    stmt(&sql.expire_steps, page.clone()),
                    stmt(&sql.expire_actions, page.clone()),
                    stmt(&sql.expire_approvals, page.clone()),
                    stmt(&sql.expire_runs, page),
                ])
                .await?;
            let runs = changed.last().copied().unwrap_or(0);
            n += runs;
            if (runs as i64) < HOUSEKEEPING_PAGE {
                return Ok(n);
            }
        }
    }
}

/// Runs one housekeeping transaction handles: short enough that the
/// writes of serving runs queued behind it wait little.
const HOUSEKEEPING_PAGE: i64 = 500;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_and_dollar_quotes_kept() {
        assert_eq!(
            renumber("a = $1 OR b = $12 AS $$ x $$", 0, '?'),
            "a = ?1 OR b = ?12 AS $$ x $$"
        );
        assert_eq!(renumber("VALUES ($1, $5)", 11, '$'), "VALUES ($12, $16)");
    }

    #[test]
    fn every_statement_of_sqlite_is_numbered_its_way() {
        let sql = Dialect::Sqlite.sql();
        for s in [
            &sql.upsert_run,
            &sql.claim_run,
            &sql.window_cancel,
            &sql.session_runs,
        ] {
            assert!(!s.contains('$'), "{s}");
        }
        assert!(Dialect::Postgres.sql().claim_run.contains("$4"));
    }
}
