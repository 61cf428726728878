//! Durable state: runs, their step checkpoints, approvals, actions with their
//! idempotency keys, and counters.
//!
//! Narrow traits, one per concept ([`RunStore`], [`ActionLog`],
//! [`Approvals`], [`Counters`], [`CacheIndex`], [`AuditLog`]), so a caller asks only for
//! what it uses; [`StateStore`] is all of them. Two backends, each behind a
//! cargo feature: [`sqlite::SqliteStore`] (the embedded default, a file next
//! to the config, WAL mode) and [`postgres::PgStore`] (many hosts on one
//! database; migrations run at start). Both are [`sql::SqlStore`]: the
//! statements, migrations and row mappings are written once in [`sql`], and a
//! backend only runs them. Every write that records a step is one
//! transaction: a step is never half-recorded.
//!
//! Values are stored as JSON text, so the schema does not follow every field
//! of `RunResult`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use audit::{AuditBreak, AuditEntry, AuditFilter, AuditReport, AuditRow};

pub mod audit;
pub mod counters;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[cfg(feature = "sqlite")]
    #[error("sqlite state store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[cfg(feature = "postgres")]
    #[error("postgres state store: {0}")]
    Postgres(#[from] sqlx::Error),
    /// The configured backend was left out of this build.
    #[error(
        "[state] kind = \"{kind}\" is not in this build of reins: rebuild with the cargo feature `{feature}`"
    )]
    NotCompiled {
        kind: &'static str,
        feature: &'static str,
    },
    /// A stored value no record type knows (a newer version wrote it, or a hand edit).
    #[error("stored {what} `{value}` is unknown")]
    Unknown { what: &'static str, value: String },
    /// A column did not read as the record expects.
    #[error("stored row: {0}")]
    Row(String),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "run `{run_id}` is leased to another node: this node lost it (its lease expired and was taken over)"
    )]
    LeaseLost { run_id: String },
    /// A unique key is taken (e.g. another run holds the idempotency key).
    #[error("state store conflict: {0}")]
    Conflict(String),
    #[error("state store: {0}")]
    Other(String),
}

impl StateError {
    /// Whether a unique key refused the write (told apart from other
    /// failures so a taken idempotency key is a [`StateError::Conflict`]).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            StateError::Sqlite {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            } => f.code == rusqlite::ErrorCode::ConstraintViolation,
            #[cfg(feature = "postgres")]
            StateError::Postgres(sqlx::Error::Database(db)) => db.is_unique_violation(),
            _ => false,
        }
    }
}

/// The `[state]` section of `reins.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// `sqlite` (default), `postgres`, or `memory` (an in-memory SQLite
    /// database: nothing survives the process).
    #[serde(default)]
    pub kind: StateKind,
    /// SQLite file; relative paths resolve against the config's directory.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// PostgreSQL URL (`postgres://user@host:port/db`). `${VAR}` is not
    /// expanded; use `url_env` to read it from the environment.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the PostgreSQL URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// Finished runs older than this many days are deleted, with their
    /// actions and approvals. 0 keeps them.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    /// Finished runs keep their steps (for `GET /v1/runs/{id}/steps` and
    /// debugging) this many seconds, then are compacted to their summary
    /// (run id, pipeline, status, output, error, tokens, duration): a few
    /// hundred bytes at rest instead of several KB. 0 never compacts.
    #[serde(default = "default_keep_steps")]
    pub keep_steps_s: u64,
    /// `reins serve` resumes runs that were interrupted (status `running`) at start.
    #[serde(default = "yes")]
    pub resume_on_start: bool,
    /// PostgreSQL pool size.
    #[serde(default = "default_pool")]
    pub max_connections: u32,
    /// This node's name in run leases (default: host name + a random
    /// suffix). A node with a fixed name takes its own interrupted runs back
    /// at start without waiting for their leases to expire; never give two
    /// live processes the same name.
    #[serde(default)]
    pub node_id: Option<String>,
    /// How long a node owns a running run without renewing its lease. A
    /// node renews every third of it; another node takes over a run whose
    /// lease has expired (it looks every half of it).
    #[serde(default = "default_lease")]
    pub lease_ms: u64,
    /// Checkpoint every step (each model attempt, gate decisions, each
    /// agent turn) so an interrupted run resumes where it was. `false`
    /// records only a run's start and end: cheaper, but a resume redoes the
    /// whole run (model calls included).
    #[serde(default = "yes")]
    pub checkpoints: bool,
    /// How often `reins serve` compacts finished runs past `keep_steps_s`
    /// and deletes those past `retention_days`.
    #[serde(default = "default_compact_every")]
    pub compact_every_s: u64,
    /// Plugin counters (budgets) and rate limits live in the store, shared
    /// by every node on it (`true`, the default with PostgreSQL), or in
    /// process memory (`false`, the default otherwise: faster, per process).
    #[serde(default)]
    pub shared_counters: Option<bool>,
    /// Finished runs kept in memory in front of the store, for reads right
    /// after a run ends (`GET /v1/runs/{id}`). The store stays the owner.
    #[serde(default = "default_recent_runs")]
    pub recent_runs: usize,
    /// The same runs' bound in bytes (each weighs the length of its result
    /// JSON): a few runs with long conversations must not hold what
    /// thousands of small ones would. The least recently read go first.
    #[serde(default = "default_recent_runs_bytes")]
    pub recent_runs_bytes: usize,
    /// Keep the audit log (runs, gate decisions, approvals, reloads, failed
    /// logins, admin calls). Off only for embedders that audit elsewhere.
    #[serde(default = "yes")]
    pub audit: bool,
}

fn default_recent_runs() -> usize {
    1_000
}

fn default_recent_runs_bytes() -> usize {
    64 << 20
}

fn default_path() -> PathBuf {
    PathBuf::from("reins-state.db")
}
fn default_retention() -> u32 {
    30
}
fn yes() -> bool {
    true
}
fn default_pool() -> u32 {
    8
}
fn default_lease() -> u64 {
    15_000
}
fn default_compact_every() -> u64 {
    60
}
fn default_keep_steps() -> u64 {
    600
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            kind: StateKind::default(),
            path: default_path(),
            url: None,
            url_env: None,
            retention_days: default_retention(),
            keep_steps_s: default_keep_steps(),
            resume_on_start: true,
            max_connections: default_pool(),
            node_id: None,
            lease_ms: default_lease(),
            compact_every_s: default_compact_every(),
            checkpoints: true,
            shared_counters: None,
            recent_runs: default_recent_runs(),
            recent_runs_bytes: default_recent_runs_bytes(),
            audit: true,
        }
    }
}

impl StateSettings {
    /// The node name to lease runs under.
    pub fn node(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_owned())
                })
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "reins".to_owned());
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}", &id[..8])
        })
    }

    /// Whether counters and rate limits go to the store.
    pub fn counters_shared(&self) -> bool {
        self.shared_counters
            .unwrap_or(self.kind == StateKind::Postgres)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    #[default]
    Sqlite,
    Postgres,
    Memory,
}

/// Opens the store `settings` describe (relative paths against `base_dir`).
#[cfg_attr(not(feature = "sqlite"), allow(unused_variables))]
pub async fn open(
    settings: &StateSettings,
    base_dir: &Path,
) -> Result<Arc<dyn StateStore>, StateError> {
    match settings.kind {
        #[cfg(feature = "sqlite")]
        StateKind::Sqlite => {
            let path = if settings.path.is_absolute() {
                settings.path.clone()
            } else {
                base_dir.join(&settings.path)
            };
            Ok(Arc::new(sqlite::SqliteStore::open(&path)?))
        }
        #[cfg(feature = "sqlite")]
        StateKind::Memory => Ok(Arc::new(sqlite::SqliteStore::memory()?)),
        #[cfg(feature = "postgres")]
        StateKind::Postgres => Ok(Arc::new(
            postgres::PgStore::connect(&postgres_url(settings)?, settings.max_connections).await?,
        )),
        #[allow(unreachable_patterns)]
        kind => Err(kind.not_compiled()),
    }
}

impl StateKind {
    /// The error for a backend whose feature this build lacks.
    #[allow(dead_code)]
    fn not_compiled(self) -> StateError {
        match self {
            StateKind::Sqlite => StateError::NotCompiled {
                kind: "sqlite",
                feature: "sqlite",
            },
            StateKind::Memory => StateError::NotCompiled {
                kind: "memory",
                feature: "sqlite",
            },
            StateKind::Postgres => StateError::NotCompiled {
                kind: "postgres",
                feature: "postgres",
            },
        }
    }
}

/// The PostgreSQL URL `settings` give (`url`, or the variable `url_env` names).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
fn postgres_url(settings: &StateSettings) -> Result<String, StateError> {
    match (&settings.url, &settings.url_env) {
        (Some(u), _) => Ok(u.clone()),
        (None, Some(var)) => std::env::var(var)
            .map_err(|_| StateError::Other(format!("[state] url_env: `{var}` is not set"))),
        (None, None) => Err(StateError::Other(
            "[state] kind = \"postgres\" needs `url` or `url_env`".into(),
        )),
    }
}

/// [`reins_runtime::now_ms`] (the host's one clock) as the stores' BIGINT.
pub fn now_ms() -> i64 {
    i64::try_from(reins_runtime::now_ms()).unwrap_or(i64::MAX)
}

/// A closed set of values stored as text: the variant's string is both its
/// column value and its JSON form, so the two cannot drift apart.
macro_rules! stored_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }

            pub fn parse(s: &str) -> Result<$name, StateError> {
                match s {
                    $($s => Ok($name::$variant),)+
                    other => Err(StateError::Unknown { what: $what, value: other.to_owned() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

stored_enum! {
    /// Where a run stands: `Running` while a node works on it, else how it ended.
    RunStatus, "run status" {
        /// Started and not finished: a node holds it or will resume it.
        Running = "running",
        /// The output passed every validator and every action every gate.
        Completed = "completed",
        /// Validation was not repaired within the limits, the model was
        /// unavailable, or a fail-closed plugin failed.
        Failed = "failed",
        /// A normalizer or a gate refused the request.
        Rejected = "rejected",
        /// A gate escalated an action; a human must decide.
        AwaitingApproval = "awaiting_approval",
        /// Its client went away before the answer (and the pipeline does not
        /// finish such runs): the model call in flight was dropped and no
        /// action that had not started was sent.
        Cancelled = "cancelled",
        /// Part of the answer was streamed to the client, then the stream
        /// ended in an error (the upstream broke, a checker cut it, or the
        /// whole answer failed a validator): the client has an unfinished answer.
        Partial = "partial",
    }
}

impl RunStatus {
    /// Statuses of runs that are over for good (and can be compacted); a run
    /// awaiting approval may still go on.
    pub const FINISHED: [RunStatus; 5] = [
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Rejected,
        RunStatus::Cancelled,
        RunStatus::Partial,
    ];

    pub fn is_finished(self) -> bool {
        RunStatus::FINISHED.contains(&self)
    }
}

stored_enum! {
    /// What a checkpoint records.
    StepKind, "step kind" {
        /// A whole pipeline run.
        Run = "run",
        /// One model → tools turn of an agent run.
        Agent = "agent",
        /// The normalized input of a single-mode run.
        Input = "input",
        /// One model attempt with its violations, tokens and gate decisions.
        Attempt = "attempt",
    }
}

stored_enum! {
    /// Where an approval stands.
    ApprovalStatus, "approval status" {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
    }
}

stored_enum! {
    /// Where a side effect stands.
    ActionState, "action state" {
        /// Recorded, not sent yet.
        Planned = "planned",
        /// Being sent: after a crash it is sent again with the same key.
        Sending = "sending",
        /// Applied: never sent again.
        Done = "done",
        /// Refused or unreachable within the retries.
        Failed = "failed",
    }
}

/// A run as stored: the `RunResult` JSON and what is needed to resume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub status: RunStatus,
    /// The `RunResult` as JSON (the latest known).
    pub result: Value,
    /// The request, for resuming (`null` when not resumable).
    pub request: Value,
    /// The caller's idempotency key, if any.
    pub idempotency_key: Option<String>,
    /// The conversation the run belongs to (for session memory).
    #[serde(default)]
    pub session_id: Option<String>,
    /// The node that last wrote the run; it owns the run until `lease_until_ms`.
    #[serde(default)]
    pub owner: Option<String>,
    /// 0: nobody holds the run (finished, held for approval, or never leased).
    #[serde(default)]
    pub lease_until_ms: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl RunRecord {
    pub fn new(run_id: &str, pipeline: &str, status: RunStatus) -> RunRecord {
        let now = now_ms();
        RunRecord {
            run_id: run_id.to_owned(),
            pipeline: pipeline.to_owned(),
            status,
            result: Value::Null,
            request: Value::Null,
            idempotency_key: None,
            session_id: None,
            owner: None,
            lease_until_ms: 0,
            created_ms: now,
            updated_ms: now,
        }
    }
}

/// One checkpoint: what a step of a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run_id: String,
    /// 1-based; the same step written twice replaces the first.
    pub step: u32,
    pub kind: StepKind,
    pub data: Value,
    pub created_ms: i64,
}

/// One side effect, keyed by its idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub key: String,
    pub run_id: String,
    pub tool: String,
    pub arguments: Value,
    pub state: ActionState,
    /// The executor's answer (a webhook's body), once there is one.
    pub response: Option<Value>,
    pub http_status: Option<u16>,
    pub tries: u32,
    pub updated_ms: i64,
}

/// An approval as stored: its JSON plus the columns it is found by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub id: String,
    pub run_id: String,
    pub pipeline: String,
    pub status: ApprovalStatus,
    pub created_ms: i64,
    pub data: Value,
}

/// Filters for [`Approvals::approvals`].
#[derive(Debug, Clone, Default)]
pub struct ApprovalQuery {
    pub status: Option<ApprovalStatus>,
    pub pipeline: Option<String>,
    pub run_id: Option<String>,
}

/// Runs with their leases and step checkpoints. Every method is one transaction.
#[async_trait::async_trait]
pub trait RunStore: Send + Sync {
    /// Inserts or replaces a run (the idempotency key, session and
    /// `created_ms` of an existing run are kept). Fenced: a stored run whose
    /// lease another node holds (`owner` differs, `lease_until_ms` not past
    /// `run.updated_ms`) is not overwritten and [`StateError::LeaseLost`]
    /// is returned.
    async fn put_run(&self, run: &RunRecord) -> Result<(), StateError>;
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, StateError>;
    /// The run a caller's idempotency key started.
    async fn run_by_key(&self, pipeline: &str, key: &str) -> Result<Option<RunRecord>, StateError>;
    /// Runs with `status`, oldest first.
    async fn runs_with_status(
        &self,
        status: RunStatus,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StateError>;

    /// Takes or renews the lease of a `running` run for `node` until
    /// `until_ms`, if nobody else holds it at `now_ms`. `false`: another
    /// node does (or the run is not running).
    async fn claim_run(
        &self,
        run_id: &str,
        node: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StateError>;
    /// `running` runs `node` may take: unleased, leased by `node` itself,
    /// or whose lease has expired at `now_ms`. Oldest first.
    async fn claimable_runs(
        &self,
        node: &str,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StateError>;
    /// Moves a run held for approval back to `running` under `node`'s lease,
    /// for the node that continues it. `false`: it is not held (any more) —
    /// another node is continuing it.
    async fn take_held(
        &self,
        run_id: &str,
        node: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StateError>;
    /// The finished runs of a session on `pipeline`, newest first.
    async fn session_runs(
        &self,
        session_id: &str,
        pipeline: &str,
        limit: u32,
    ) -> Result<Vec<RunRecord>, StateError>;

    /// Records step `step.step`, fenced like [`RunStore::put_run`]: nothing
    /// is written if the lease is lost. The run's row gets `run`'s state
    /// when it must (no row yet, or an open lease to take over); a store
    /// may leave it alone when this node already owns the run (SQLite does:
    /// a row rewritten per step tripled the WAL, and the lease is renewed
    /// on its own timer), so a running run's progress is in its steps.
    async fn checkpoint(&self, run: &RunRecord, step: &StepRecord) -> Result<(), StateError>;
    /// Every step of a run, in order.
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError>;
}

/// Side effects keyed by their idempotency keys, so none is sent twice.
#[async_trait::async_trait]
pub trait ActionLog: Send + Sync {
    /// Records a planned action unless its key is known; returns the stored
    /// record either way (so a `done` action is seen and not sent again).
    async fn plan_action(&self, action: &ActionRecord) -> Result<ActionRecord, StateError>;
    /// Moves an action to `state`, with the executor's answer.
    async fn set_action(
        &self,
        key: &str,
        state: ActionState,
        response: Option<&Value>,
        http_status: Option<u16>,
        tries: u32,
    ) -> Result<(), StateError>;
    async fn action(&self, key: &str) -> Result<Option<ActionRecord>, StateError>;
    /// The actions of a run, by key.
    async fn actions(&self, run_id: &str) -> Result<Vec<ActionRecord>, StateError>;
}

/// Escalated actions waiting for (or decided by) a human, and the runs they hold.
#[async_trait::async_trait]
pub trait Approvals: Send + Sync {
    /// Records approvals and the run they hold, together.
    async fn hold(&self, run: &RunRecord, approvals: &[ApprovalRecord]) -> Result<(), StateError>;
    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError>;
    /// Approvals matching `q`, oldest first.
    async fn approvals(&self, q: &ApprovalQuery) -> Result<Vec<ApprovalRecord>, StateError>;
    /// Records a decision if the approval is still pending. `false`: someone
    /// decided it first (or it does not exist).
    async fn decide(&self, decided: &ApprovalRecord) -> Result<bool, StateError>;
}

/// Plugin counters and rate-limit windows shared by every node on the store.
#[async_trait::async_trait]
pub trait Counters: Send + Sync {
    /// Adds `delta` to a counter and returns its new total.
    async fn counter_add(&self, scope: &str, key: &str, delta: i64) -> Result<i64, StateError>;
    /// Adds `delta` to a sliding-window counter at `now_ms` and returns the
    /// total of the last `window_ms`. A negative `delta` equal to an earlier
    /// positive add in the window cancels that add (a released
    /// reservation); one that cancels nothing credits nothing. Serialized
    /// per counter across every node on the store.
    async fn counter_window_add(
        &self,
        scope: &str,
        key: &str,
        delta: i64,
        window_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StateError>;
}

/// The response cache's index of validated answers.
#[async_trait::async_trait]
pub trait CacheIndex: Send + Sync {
    /// Stores a validated answer of the response cache under `key` (the
    /// hex of the request's hash), replacing an older one.
    async fn cache_put(
        &self,
        key: &str,
        pipeline: &str,
        answer: &Value,
        stored_ms: i64,
    ) -> Result<(), StateError>;
    /// The answer cached under `key` if it was stored at or after
    /// `fresh_since_ms`, with when it was stored.
    async fn cache_get(
        &self,
        key: &str,
        fresh_since_ms: i64,
    ) -> Result<Option<(Value, i64)>, StateError>;
}

/// One MCP tool definition as first recorded, with a changed definition
/// waiting for an admin's approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolPin {
    pub server: String,
    /// The upstream's own tool name.
    pub tool: String,
    /// SHA-256 of the approved definition (name, description, schema).
    pub hash: String,
    pub definition: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_definition: Option<Value>,
    pub updated_ms: i64,
}

/// MCP tool definitions pinned on first sight, so a tool that redefines
/// itself after it was approved is noticed by every node.
#[async_trait::async_trait]
pub trait ToolPins: Send + Sync {
    /// Records what `server` lists now (`seen`: tool, hash, definition):
    /// a tool seen for the first time is pinned as it is; one whose hash
    /// differs from its pin is recorded as pending. Returns every pin of
    /// the server.
    async fn pin_tools(&self, server: &str, seen: &[ToolPin]) -> Result<Vec<ToolPin>, StateError>;
    /// Makes the pending definition with `hash` the pinned one; false when
    /// there is no such pending definition.
    async fn approve_tool(&self, server: &str, tool: &str, hash: &str) -> Result<bool, StateError>;
    /// Every pin, or a server's.
    async fn tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, StateError>;
}

/// Who did what: an append-only, hash-chained log (see [`audit`]).
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends entries in order, in one transaction, chained after the
    /// newest row; serialized across every process on the store, so the
    /// chain never forks.
    async fn audit_append(&self, entries: Vec<AuditEntry>) -> Result<Vec<AuditRow>, StateError>;
    /// Rows matching `filter`, oldest first.
    async fn audit_list(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StateError>;
    /// Walks the whole chain; the report names the first row that does not hold.
    async fn audit_verify(&self) -> Result<AuditReport, StateError>;
}

/// What concerns the store as a whole rather than one concept.
#[async_trait::async_trait]
pub trait Housekeeping: Send + Sync {
    /// `sqlite`, `memory` or `postgres`.
    fn kind(&self) -> &'static str;
    /// Compacts finished runs last updated before `before_ms` to their
    /// summary: their steps and stored request are dropped, so a finished
    /// run weighs its summary at rest (expired counter events go too).
    /// Returns how many runs; a compacted run is never visited again.
    async fn compact(&self, before_ms: i64) -> Result<u64, StateError>;
    /// Deletes finished runs last updated before `before_ms`, with their
    /// steps, actions (and so their idempotency keys) and approvals, and
    /// cached answers stored before it. Returns how many runs.
    async fn expire(&self, before_ms: i64) -> Result<u64, StateError>;
}

/// The whole durable store, for the callers that hold one handle to it
/// (`Arc<dyn StateStore>`); a caller that needs one concept takes its trait.
pub trait StateStore:
    RunStore + ActionLog + Approvals + Counters + CacheIndex + AuditLog + ToolPins + Housekeeping
{
}

impl<
    T: RunStore + ActionLog + Approvals + Counters + CacheIndex + AuditLog + ToolPins + Housekeeping,
> StateStore for T
{
}

/// What a compacted run keeps of its result.
pub fn summary(result: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in [
        "run_id",
        "pipeline",
        "status",
        "output",
        "error",
        "tokens",
        "duration_us",
    ] {
        if let Some(v) = result.get(k) {
            out.insert(k.to_owned(), v.clone());
        }
    }
    out.insert("compacted".to_owned(), Value::Bool(true));
    Value::Object(out)
}
