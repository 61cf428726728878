//! Durable state: runs, their step checkpoints, approvals, actions with their
//! idempotency keys, and counters.
//!
//! One trait, [`StateStore`], two backends: [`sqlite::SqliteStore`] (the
//! embedded default, a file next to the config, WAL mode) and
//! [`postgres::PgStore`] (many hosts on one database; migrations run at
//! start). Every write that records a step is one transaction: a step is
//! never half-recorded.
//!
//! Values are stored as JSON text, so the schema does not follow every field
//! of `RunResult`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod counters;
pub mod postgres;
pub mod sqlite;

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("sqlite state store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("postgres state store: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("run `{run_id}` is leased to another node: this node lost it (its lease expired and was taken over)")]
    LeaseLost { run_id: String },
    /// A unique key is taken (e.g. another run holds the idempotency key).
    #[error("state store conflict: {0}")]
    Conflict(String),
    #[error("state store: {0}")]
    Other(String),
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
    /// Finished runs older than this many days are compacted to their
    /// summary (steps and actions dropped). 0 keeps everything.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
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
    /// How often `reins serve` compacts finished runs past `retention_days`.
    #[serde(default = "default_compact_every")]
    pub compact_every_s: u64,
    /// Plugin counters (budgets) and rate limits live in the store, shared
    /// by every node on it (`true`, the default with PostgreSQL), or in
    /// process memory (`false`, the default otherwise: faster, per process).
    #[serde(default)]
    pub shared_counters: Option<bool>,
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
    3_600
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings {
            kind: StateKind::default(),
            path: default_path(),
            url: None,
            url_env: None,
            retention_days: default_retention(),
            resume_on_start: true,
            max_connections: default_pool(),
            node_id: None,
            lease_ms: default_lease(),
            compact_every_s: default_compact_every(),
            checkpoints: true,
            shared_counters: None,
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
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "reins".to_owned());
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("{host}-{}", &id[..8])
        })
    }

    /// Whether counters and rate limits go to the store.
    pub fn counters_shared(&self) -> bool {
        self.shared_counters.unwrap_or(self.kind == StateKind::Postgres)
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
pub async fn open(settings: &StateSettings, base_dir: &Path) -> Result<Arc<dyn StateStore>, StateError> {
    match settings.kind {
        StateKind::Sqlite => {
            let path = if settings.path.is_absolute() {
                settings.path.clone()
            } else {
                base_dir.join(&settings.path)
            };
            Ok(Arc::new(sqlite::SqliteStore::open(&path)?))
        }
        StateKind::Memory => Ok(Arc::new(sqlite::SqliteStore::memory()?)),
        StateKind::Postgres => Ok(Arc::new(
            postgres::PgStore::connect(&postgres_url(settings)?, settings.max_connections).await?,
        )),
    }
}

/// The PostgreSQL URL `settings` give (`url`, or the variable `url_env` names).
fn postgres_url(settings: &StateSettings) -> Result<String, StateError> {
    match (&settings.url, &settings.url_env) {
        (Some(u), _) => Ok(u.clone()),
        (None, Some(var)) => {
            std::env::var(var).map_err(|_| StateError::Other(format!("[state] url_env: `{var}` is not set")))
        }
        (None, None) => Err(StateError::Other("[state] kind = \"postgres\" needs `url` or `url_env`".into())),
    }
}

/// [`reins_runtime::now_ms`] (the host's one clock) as the stores' BIGINT.
pub fn now_ms() -> i64 {
    i64::try_from(reins_runtime::now_ms()).unwrap_or(i64::MAX)
}

/// A run as stored: the `RunResult` JSON and what is needed to resume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    /// `running`, or a finished `RunStatus` (`completed`, `failed`,
    /// `rejected`, `awaiting_approval`).
    pub status: String,
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
    pub fn new(run_id: &str, pipeline: &str, status: &str) -> RunRecord {
        let now = now_ms();
        RunRecord {
            run_id: run_id.to_owned(),
            pipeline: pipeline.to_owned(),
            status: status.to_owned(),
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
    /// `run` (a whole pipeline run) or `agent` (one model → tools turn).
    pub kind: String,
    pub data: Value,
    pub created_ms: i64,
}

/// Where a side effect stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionState {
    /// Recorded, not sent yet.
    Planned,
    /// Being sent: after a crash it is sent again with the same key.
    Sending,
    /// Applied: never sent again.
    Done,
    /// Refused or unreachable within the retries.
    Failed,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Planned => "planned",
            ActionState::Sending => "sending",
            ActionState::Done => "done",
            ActionState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Result<ActionState, StateError> {
        Ok(match s {
            "planned" => ActionState::Planned,
            "sending" => ActionState::Sending,
            "done" => ActionState::Done,
            "failed" => ActionState::Failed,
            other => return Err(StateError::Other(format!("unknown action state `{other}`"))),
        })
    }
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
    /// `pending`, `approved`, `rejected`.
    pub status: String,
    pub created_ms: i64,
    pub data: Value,
}

/// Filters for [`StateStore::approvals`].
#[derive(Debug, Clone, Default)]
pub struct ApprovalQuery {
    pub status: Option<String>,
    pub pipeline: Option<String>,
    pub run_id: Option<String>,
}

/// The durable store. Every method is one transaction.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// `sqlite`, `memory` or `postgres`.
    fn kind(&self) -> &'static str;

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
    async fn runs_with_status(&self, status: &str, limit: u32) -> Result<Vec<RunRecord>, StateError>;

    /// Takes or renews the lease of a `running` run for `node` until
    /// `until_ms`, if nobody else holds it at `now_ms`. `false`: another
    /// node does (or the run is not running).
    async fn claim_run(&self, run_id: &str, node: &str, now_ms: i64, until_ms: i64) -> Result<bool, StateError>;
    /// `running` runs `node` may take: unleased, leased by `node` itself,
    /// or whose lease has expired at `now_ms`. Oldest first.
    async fn claimable_runs(&self, node: &str, now_ms: i64, limit: u32) -> Result<Vec<RunRecord>, StateError>;
    /// Moves a run held for approval back to `running` under `node`'s lease,
    /// for the node that continues it. `false`: it is not held (any more) —
    /// another node is continuing it.
    async fn take_held(&self, run_id: &str, node: &str, now_ms: i64, until_ms: i64) -> Result<bool, StateError>;
    /// The finished runs of a session on `pipeline`, newest first.
    async fn session_runs(&self, session_id: &str, pipeline: &str, limit: u32) -> Result<Vec<RunRecord>, StateError>;

    /// Records step `step.step` and the run's new state together (fenced
    /// like [`StateStore::put_run`]: nothing is written if the lease is lost).
    async fn checkpoint(&self, run: &RunRecord, step: &StepRecord) -> Result<(), StateError>;
    /// Every step of a run, in order.
    async fn steps(&self, run_id: &str) -> Result<Vec<StepRecord>, StateError>;

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

    /// Records approvals and the run they hold, together.
    async fn hold(&self, run: &RunRecord, approvals: &[ApprovalRecord]) -> Result<(), StateError>;
    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, StateError>;
    /// Approvals matching `q`, oldest first.
    async fn approvals(&self, q: &ApprovalQuery) -> Result<Vec<ApprovalRecord>, StateError>;
    /// Records a decision if the approval is still pending. `false`: someone
    /// decided it first (or it does not exist).
    async fn decide(&self, decided: &ApprovalRecord) -> Result<bool, StateError>;

    /// Adds `delta` to a counter and returns its new total.
    async fn counter_add(&self, scope: &str, key: &str, delta: i64) -> Result<i64, StateError>;
    /// Adds `delta` to a sliding-window counter at `now_ms` and returns the
    /// total of the last `window_ms`. A negative `delta` equal to an earlier
    /// positive add in the window cancels that add (a released
    /// reservation). Serialized per counter across every node on the store.
    async fn counter_window_add(
        &self,
        scope: &str,
        key: &str,
        delta: i64,
        window_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StateError>;

    /// Stores a validated answer of the response cache under `key` (the
    /// hex of the request's hash), replacing an older one.
    async fn cache_put(&self, key: &str, pipeline: &str, answer: &Value, stored_ms: i64) -> Result<(), StateError>;
    /// The answer cached under `key` if it was stored at or after
    /// `fresh_since_ms`, with when it was stored.
    async fn cache_get(&self, key: &str, fresh_since_ms: i64) -> Result<Option<(Value, i64)>, StateError>;

    /// Compacts finished runs last updated before `before_ms` to their
    /// summary: their steps and actions are dropped (as are counter events
    /// and cached answers older than that). Returns how many runs.
    async fn compact(&self, before_ms: i64) -> Result<u64, StateError>;
}

/// What a compacted run keeps of its result.
pub fn summary(result: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["run_id", "pipeline", "status", "output", "error", "tokens", "duration_us"] {
        if let Some(v) = result.get(k) {
            out.insert(k.to_owned(), v.clone());
        }
    }
    out.insert("compacted".to_owned(), Value::Bool(true));
    Value::Object(out)
}

/// Statuses of runs that are finished (and can be compacted).
pub const FINISHED: [&str; 3] = ["completed", "failed", "rejected"];

