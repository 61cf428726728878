//! The embedded SQLite store: one file, WAL mode, `synchronous = NORMAL`
//! (a committed transaction survives a process crash; a power loss may lose
//! the last ones). Calls are short and run in place under one connection
//! mutex; several processes may share a file (busy timeout 5 s).

use super::StateError;
use super::sql::{Arg, Backend, Dialect, Done, MIGRATIONS, Row, RowMap, SqlStore, Stmt};
use rusqlite::types::{ToSql, ToSqlOutput, Value as SqlValue};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;

/// The SQLite store.
pub type SqliteStore = SqlStore<SqliteDb>;

/// One SQLite connection, shared under a mutex.
pub struct SqliteDb {
    conn: Mutex<Connection>,
    path: String,
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
        let tx = rusqlite::Transaction::new_unchecked(&conn, TransactionBehavior::Immediate).map_err(err)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        let done = usize::try_from(version).unwrap_or(0);
        if done < MIGRATIONS.len() {
            for migration in &MIGRATIONS[done..] {
                tx.execute_batch(&migration(Dialect::Sqlite)).map_err(err)?;
            }
            tx.execute_batch(&format!("PRAGMA user_version = {}", MIGRATIONS.len())).map_err(err)?;
            tracing::info!(path = %path, from = done, to = MIGRATIONS.len(), "sqlite state store migrated");
        }
        tx.commit().map_err(err)?;
        Ok(SqlStore {
            db: SqliteDb {
                conn: Mutex::new(conn),
                path,
            },
        })
    }
}

impl SqliteDb {
    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        move |source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// [`Backend::run`] on `conn` (a transaction when there are several statements).
    fn run_on<T>(
        &self,
        conn: &Connection,
        writes: &[Stmt<'_>],
        read: Option<(&Stmt<'_>, RowMap<T>)>,
    ) -> Result<Done<T>, StateError> {
        let err = self.err();
        let mut changed = Vec::with_capacity(writes.len());
        for w in writes {
            let n = conn
                .prepare_cached(w.sql)
                .and_then(|mut s| s.execute(rusqlite::params_from_iter(&w.args)))
                .map_err(&err)?;
            changed.push(w.check(n as u64)?);
        }
        let mut rows = Vec::new();
        if let Some((q, map)) = read {
            let mut s = conn.prepare_cached(q.sql).map_err(&err)?;
            let mut found = s.query(rusqlite::params_from_iter(&q.args)).map_err(&err)?;
            while let Some(row) = found.next().map_err(&err)? {
                rows.push(map(row)?);
            }
        }
        Ok(Done { changed, rows })
    }
}

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Text(Some(t)) => ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(t.as_bytes())),
            Arg::Int(Some(i)) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
            Arg::Text(None) | Arg::Int(None) => ToSqlOutput::Owned(SqlValue::Null),
        })
    }
}

impl Row for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<Option<String>, StateError> {
        self.get(i).map_err(|e| StateError::Row(format!("column {i}: {e}")))
    }
    fn int(&self, i: usize) -> Result<Option<i64>, StateError> {
        self.get(i).map_err(|e| StateError::Row(format!("column {i}: {e}")))
    }
}

#[async_trait::async_trait]
impl Backend for SqliteDb {
    const DIALECT: Dialect = Dialect::Sqlite;

    fn kind(&self) -> &'static str {
        if self.path == ":memory:" { "memory" } else { "sqlite" }
    }

    async fn run<T: Send + 'static>(
        &self,
        writes: &[Stmt<'_>],
        read: Option<(&Stmt<'_>, RowMap<T>)>,
    ) -> Result<Done<T>, StateError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if writes.len() + usize::from(read.is_some()) <= 1 {
            return self.run_on(&conn, writes, read);
        }
        // IMMEDIATE: the write lock is taken first, so processes sharing the
        // file write one at a time (a windowed counter's add sees every add
        // committed before it).
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(self.err())?;
        let done = self.run_on(&tx, writes, read)?;
        tx.commit().map_err(self.err())?;
        Ok(done)
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
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        // IMMEDIATE: another process on the file waits until this commits,
        // so what was read is still the newest when the writes land.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(self.err())?;
        let found = self.run_on(&tx, first, Some(read))?.rows;
        let (writes, out) = then(found);
        self.run_on::<()>(&tx, &writes, None)?;
        tx.commit().map_err(self.err())?;
        Ok(out)
    }
}
