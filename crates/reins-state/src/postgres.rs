//! The PostgreSQL store: many hosts on one database. Migrations run at
//! connect, serialized across hosts by an advisory lock.

use super::sql::{Arg, Backend, Dialect, Done, MIGRATIONS, Row, RowMap, SqlStore, Stmt};
use super::{StateError, now_ms};
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{Postgres, Row as _};

/// The PostgreSQL store.
pub type PgStore = SqlStore<PgDb>;

/// A connection pool.
pub struct PgDb {
    pool: PgPool,
}

impl PgStore {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore, StateError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        migrate(&pool).await?;
        Ok(SqlStore { db: PgDb { pool } })
    }
}

async fn migrate(pool: &PgPool) -> Result<(), StateError> {
    let mut tx = pool.begin().await?;
    // One host migrates at a time; the others wait here.
    sqlx::query("SELECT pg_advisory_xact_lock(7351001)").execute(&mut *tx).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS reins_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let done: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM reins_migrations")
        .fetch_one(&mut *tx)
        .await?;
    for (version, migration) in (1i64..).zip(MIGRATIONS).skip(usize::try_from(done).unwrap_or(0)) {
        sqlx::raw_sql(&migration(Dialect::Postgres)).execute(&mut *tx).await?;
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

fn bind<'q>(mut q: Query<'q, Postgres, PgArguments>, args: &'q [Arg]) -> Query<'q, Postgres, PgArguments> {
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

async fn fetch<'e, T>(ex: impl sqlx::PgExecutor<'e>, s: &Stmt<'_>, map: RowMap<T>) -> Result<Vec<T>, StateError> {
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
