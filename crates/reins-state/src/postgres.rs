//! The PostgreSQL store: many hosts on one database. Migrations run at
//! connect, serialized across hosts by an advisory lock.
//!
//! Checkpoints, the writes every run step makes, go through one batcher
//! task: the calls waiting while a batch is on the wire go in the next
//! one, a single statement over arrays
//! ([`Sql::checkpoint_batch`](super::sql::Sql::checkpoint_batch)), so
//! concurrent runs share a round trip and a commit. A batch that fails as
//! a whole (one call's idempotency key taken) is redone call by call, so
//! each caller gets its own answer.

use super::sql::{Arg, Backend, Dialect, Done, MIGRATIONS, Row, RowMap, SqlStore, Stmt};
use super::{StateError, now_ms};
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row as _};

/// The PostgreSQL store.
pub type PgStore = SqlStore<PgDb>;

/// A connection pool, and the queue to the checkpoint batcher.
pub struct PgDb {
    pool: PgPool,
    checkpoints: tokio::sync::mpsc::UnboundedSender<Call>,
}

/// One checkpoint call waiting for its batch.
struct Call {
    args: Vec<Arg>,
    reply: tokio::sync::oneshot::Sender<Result<Option<i64>, StateError>>,
}

/// Calls one batch carries at most.
const MAX_BATCH: usize = 256;

impl PgStore {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore, StateError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        migrate(&pool).await?;
        let (checkpoints, queue) = tokio::sync::mpsc::unbounded_channel();
        // Ends when the store is dropped (the queue closes).
        tokio::spawn(batcher(pool.clone(), queue));
        Ok(SqlStore {
            db: PgDb { pool, checkpoints },
        })
    }
}

async fn migrate(pool: &PgPool) -> Result<(), StateError> {
    let mut tx = pool.begin().await?;
    // One host migrates at a time; the others wait here.
    sqlx::query("SELECT pg_advisory_xact_lock(7351001)")
        .execute(&mut *tx)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS reins_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let done: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM reins_migrations")
        .fetch_one(&mut *tx)
        .await?;
    for (version, migration) in (1i64..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(done).unwrap_or(0))
    {
        sqlx::raw_sql(&migration(Dialect::Postgres))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO reins_migrations (version, applied_ms) VALUES ($1, $2)")
            .bind(version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tracing::info!(version, "postgres state store migrated");
    }
    for function in &Dialect::Postgres.sql().functions {
        sqlx::raw_sql(function).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Sends the waiting checkpoint calls, a batch at a time.
async fn batcher(pool: PgPool, mut queue: tokio::sync::mpsc::UnboundedReceiver<Call>) {
    let sql = Dialect::Postgres.sql();
    let (Some(one), Some(many)) = (&sql.checkpoint_call, &sql.checkpoint_batch) else {
        return;
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let calls = std::mem::take(&mut batch);
        if calls.len() > 1 {
            match run_batch(&pool, many, &calls).await {
                Ok(answers) if answers.len() == calls.len() => {
                    for (call, answer) in calls.into_iter().zip(answers) {
                        let _ = call.reply.send(Ok(Some(answer)));
                    }
                    continue;
                }
                Ok(answers) => tracing::warn!(
                    calls = calls.len(),
                    answers = answers.len(),
                    "checkpoint batch: answers do not match; redone call by call"
                ),
                Err(e) => tracing::debug!(
                    calls = calls.len(),
                    "checkpoint batch failed, redone call by call: {e}"
                ),
            }
        }
        for call in calls {
            let s = Stmt {
                sql: one,
                args: call.args,
                fence: None,
            };
            let answer = fetch(&pool, &s, |r| r.int(0))
                .await
                .map(|rows| rows.into_iter().next().flatten());
            let _ = call.reply.send(answer);
        }
    }
}

/// Every call of `calls` in one statement: argument `i` of each call goes
/// in array `i` (an error when the calls' arguments differ in kind).
async fn run_batch(
    pool: &PgPool,
    many: &'static str,
    calls: &[Call],
) -> Result<Vec<i64>, StateError> {
    let mut q = sqlx::query(many);
    let width = calls.first().map_or(0, |c| c.args.len());
    for i in 0..width {
        q = match calls[0].args.get(i) {
            Some(Arg::Text(_)) => q.bind(
                calls
                    .iter()
                    .map(|c| match c.args.get(i) {
                        Some(Arg::Text(t)) => Ok(t.clone()),
                        _ => Err(StateError::Other(format!(
                            "checkpoint argument {i} is not text in every call"
                        ))),
                    })
                    .collect::<Result<Vec<Option<String>>, _>>()?,
            ),
            _ => q.bind(
                calls
                    .iter()
                    .map(|c| match c.args.get(i) {
                        Some(Arg::Int(n)) => Ok(*n),
                        _ => Err(StateError::Other(format!(
                            "checkpoint argument {i} is not an integer in every call"
                        ))),
                    })
                    .collect::<Result<Vec<Option<i64>>, _>>()?,
            ),
        };
    }
    let rows = q.fetch_all(pool).await?;
    rows.iter().map(|r| Ok(r.int(0)?.unwrap_or(0))).collect()
}

fn bind<'q>(
    mut q: Query<'q, Postgres, PgArguments>,
    args: &'q [Arg],
) -> Query<'q, Postgres, PgArguments> {
    for a in args {
        q = match a {
            Arg::Text(t) => q.bind(t.as_deref()),
            Arg::Int(i) => q.bind(*i),
        };
    }
    q
}

async fn exec<'e>(ex: impl sqlx::PgExecutor<'e>, s: &Stmt<'_>) -> Result<u64, StateError> {
    let done = bind(sqlx::query(s.sql), &s.args).execute(ex).await?;
    s.check(done.rows_affected())
}

async fn fetch<'e, T>(
    ex: impl sqlx::PgExecutor<'e>,
    s: &Stmt<'_>,
    map: RowMap<T>,
) -> Result<Vec<T>, StateError> {
    let rows = bind(sqlx::query(s.sql), &s.args).fetch_all(ex).await?;
    rows.iter().map(|r| map(r)).collect()
}

impl Row for PgRow {
    fn text(&self, i: usize) -> Result<Option<String>, StateError> {
        Ok(self.try_get(i)?)
    }
    fn int(&self, i: usize) -> Result<Option<i64>, StateError> {
        Ok(self.try_get(i)?)
    }
}

#[async_trait::async_trait]
impl Backend for PgDb {
    const DIALECT: Dialect = Dialect::Postgres;

    async fn call_batched(&self, call: Stmt<'static>) -> Result<Option<i64>, StateError> {
        let batched: Option<&'static str> = Self::DIALECT.sql().checkpoint_call.as_deref();
        if batched != Some(call.sql) {
            return Ok(fetch(&self.pool, &call, |r| r.int(0))
                .await?
                .into_iter()
                .next()
                .flatten());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.checkpoints
            .send(Call {
                args: call.args,
                reply,
            })
            .map_err(|_| {
                StateError::Other("postgres state store: the checkpoint batcher stopped".into())
            })?;
        answer.await.map_err(|_| {
            StateError::Other("postgres state store: the checkpoint batcher stopped".into())
        })?
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn run<T: Send + 'static>(
        &self,
        writes: &[Stmt<'_>],
        read: Option<(&Stmt<'_>, RowMap<T>)>,
    ) -> Result<Done<T>, StateError> {
        match (writes, read) {
            ([], Some((q, map))) => Ok(Done {
                changed: Vec::new(),
                rows: fetch(&self.pool, q, map).await?,
            }),
            ([w], None) => Ok(Done {
                changed: vec![exec(&self.pool, w).await?],
                rows: Vec::new(),
            }),
            (writes, read) => {
                // Dropped without commit on an error: rolled back.
                let mut tx = self.pool.begin().await?;
                let mut changed = Vec::with_capacity(writes.len());
                for w in writes {
                    changed.push(exec(&mut *tx, w).await?);
                }
                let rows = match read {
                    Some((q, map)) => fetch(&mut *tx, q, map).await?,
                    None => Vec::new(),
                };
                tx.commit().await?;
                Ok(Done { changed, rows })
            }
        }
    }
    async fn read_then_write<T, U, F>(
        &self,
        first: &[Stmt<'_>],
        read: (&Stmt<'_>, RowMap<T>),
        then: F,
    ) -> Result<U, StateError>
    where
        T: Send + 'static,
        U: Send + 'static,
        F: FnOnce(Vec<T>) -> (Vec<Stmt<'static>>, U) + Send + 'static,
    {
        let mut tx = self.pool.begin().await?;
        for w in first {
            exec(&mut *tx, w).await?;
        }
        let found = fetch(&mut *tx, read.0, read.1).await?;
        let (writes, out) = then(found);
        for w in &writes {
            exec(&mut *tx, w).await?;
        }
        tx.commit().await?;
        Ok(out)
    }
}
