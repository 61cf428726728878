//! The embedded SQLite store: one file, WAL mode, `synchronous = NORMAL`
//! (a committed transaction survives a process crash; a power loss may lose
//! the last ones); several processes may share a file (busy timeout 5 s).
//!
//! Every call is a job, run in an IMMEDIATE transaction inside its own
//! savepoint (one job's failure rolls back only that job); a job is
//! answered only after its transaction commits, so a step is still durable
//! before the effect it guards is sent. Who commits depends on contention
//! (leader/follower):
//! - a caller that finds the connection free and nobody queued commits its
//!   own job in place: a lone run pays one commit, not two thread hand-offs
//!   (the hop to a writer thread and back cost a lone run more than the
//!   commit itself);
//! - otherwise the job goes on the writer thread's queue; the thread takes
//!   whatever jobs are waiting and commits them together, so concurrent
//!   runs' checkpoints share one commit and no async worker ever waits for
//!   the connection (a caller only ever `try_lock`s it).
//!
//! WAL checkpoints, which SQLite would otherwise run inside the commit that
//! crosses 1,000 pages (a stall of milliseconds for the runs in that
//! commit), run on a second thread with its own connection, `PASSIVE`
//! (never blocking the writer), woken by commits, at most every 50 ms, at
//! the lowest CPU priority. A checkpoint's fsyncs stall the commits that
//! write meanwhile, for as long as the data they flush takes: at one
//! connection a 200 ms gap made p99 7-9x p50, a 1 s gap 25-30x, and 50 ms
//! about 3x (a file on tmpfs, with no real fsync: 2x). The writer checks
//! the WAL itself only past 10,000 pages, should that thread fall behind.

use super::StateError;
use super::sql::{Arg, Backend, Dialect, Done, MIGRATIONS, Row, RowMap, SqlStore, Stmt};
use rusqlite::types::{ToSql, ToSqlOutput, Value as SqlValue};
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

/// The SQLite store.
pub type SqliteStore = SqlStore<SqliteDb>;

/// What commits, shared by the callers (in place) and the writer thread,
/// and the queue to the writer for the jobs that find it busy.
pub struct SqliteDb {
    committer: Arc<Committer>,
    jobs: mpsc::Sender<Job>,
}

/// The connection and everything a commit of it touches, whoever makes it.
struct Committer {
    conn: Mutex<Connection>,
    /// Jobs sent to the writer and not yet taken: a caller commits in
    /// place only when this is 0, so it never overtakes the queue's batch.
    queued: AtomicUsize,
    /// Wakes the checkpointer after a commit (none for `:memory:`).
    checkpoints: Option<mpsc::SyncSender<()>>,
    path: String,
}

/// How long a write waits for another process's write lock on the file.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// WAL pages past which the writer checkpoints in its own commit.
const WRITER_CHECKPOINT_PAGES: i64 = 10_000;
/// The least time between two checkpoints: short, so each one's fsyncs
/// flush little (see the module's comment).
const CHECKPOINT_GAP: std::time::Duration = std::time::Duration::from_millis(50);
/// What a reset WAL file is truncated to, in bytes.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Jobs one transaction carries at most: a bound on how long the first
/// job of a batch waits for the others.
const MAX_BATCH: usize = 256;

/// A caller's work and the way back to it.
type Job = Box<dyn Queued>;

trait Queued: Send {
    /// Runs inside the batch's transaction; says whether it failed (its
    /// savepoint, or a lone job's whole transaction, is then rolled back)
    /// and how to answer once the batch's commit is known.
    fn run(self: Box<Self>, conn: &Connection, path: &str) -> Ran;
    /// Answers without running: the batch could not begin.
    fn refuse(self: Box<Self>, message: String);
}

struct Ran {
    failed: bool,
    answer: Box<dyn FnOnce(Result<(), String>) + Send>,
}

struct Pending<U, F> {
    work: F,
    reply: tokio::sync::oneshot::Sender<Result<U, StateError>>,
}

impl<U, F> Queued for Pending<U, F>
where
    U: Send + 'static,
    F: FnOnce(&Connection, &str) -> Result<U, StateError> + Send,
{
    fn run(self: Box<Self>, conn: &Connection, path: &str) -> Ran {
        let Pending { work, reply } = *self;
        let out = work(conn, path);
        Ran {
            failed: out.is_err(),
            answer: Box::new(move |committed| {
                let _ = reply.send(match committed {
                    Ok(()) => out,
                    Err(message) => out.and(Err(StateError::Other(message))),
                });
            }),
        }
    }

    fn refuse(self: Box<Self>, message: String) {
        let _ = self.reply.send(Err(StateError::Other(message)));
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the file at `path`.
    pub fn open(path: &Path) -> Result<SqliteStore, StateError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StateError::Other(format!("{}: {e}", dir.display())))?;
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
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        // IMMEDIATE: of several processes opening one file, one migrates.
        let tx = rusqlite::Transaction::new_unchecked(&conn, TransactionBehavior::Immediate)
            .map_err(err)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let done = usize::try_from(version).unwrap_or(0);
        if done < MIGRATIONS.len() {
            for migration in &MIGRATIONS[done..] {
                tx.execute_batch(&migration(Dialect::Sqlite)).map_err(err)?;
            }
            tx.execute_batch(&format!("PRAGMA user_version = {}", MIGRATIONS.len()))
                .map_err(err)?;
            tracing::info!(path = %path, from = done, to = MIGRATIONS.len(), "sqlite state store migrated");
        }
        tx.commit().map_err(err)?;
        // Woken (never blocked: one pending wake is enough) after each commit.
        let checkpoints = if path == ":memory:" {
            None
        } else {
            conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
                .map_err(err)?;
            conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
                .map_err(err)?;
            let other = Connection::open(&path).map_err(err)?;
            other.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
            let (wake, woken) = mpsc::sync_channel::<()>(1);
            let thread_path = path.clone();
            std::thread::Builder::new()
                .name("reins-sqlite-checkpointer".into())
                .spawn(move || checkpointer(other, woken, thread_path))
                .map_err(|e| {
                    StateError::Other(format!(
                        "sqlite state store {path}: starting its checkpointer: {e}"
                    ))
                })?;
            Some(wake)
        };
        let (jobs, queue) = mpsc::channel();
        let committer = Arc::new(Committer {
            conn: Mutex::new(conn),
            queued: AtomicUsize::new(0),
            checkpoints,
            path,
        });
        let thread_committer = committer.clone();
        std::thread::Builder::new()
            .name("reins-sqlite-writer".into())
            .spawn(move || writer(&thread_committer, queue))
            .map_err(|e| {
                StateError::Other(format!(
                    "sqlite state store {}: starting its writer thread: {e}",
                    committer.path
                ))
            })?;
        Ok(SqlStore {
            db: SqliteDb { committer, jobs },
        })
    }
}

/// The writer thread: batches of waiting jobs, one commit each. Ends when
/// the store is dropped (its queue closes) after the jobs already queued;
/// the last holder of the [`Committer`] then drops its wake, which ends the
/// checkpointer after the last commit.
fn writer(committer: &Committer, queue: mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        // Waits out a caller committing in place (one job's commit).
        let conn = match committer.conn.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        committer.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        if let Err(e) = begin(&conn) {
            let message = format!("sqlite state store {}: {e}", committer.path);
            for job in batch {
                job.refuse(message.clone());
            }
            continue;
        }
        committer.commit(conn, batch);
    }
}

/// Copies committed WAL frames into the database file after each commit,
/// until the writer ends; then once more, truncating the WAL, so the file
/// is whole when the process ends.
fn checkpointer(conn: Connection, woken: mpsc::Receiver<()>, path: String) {
    lowest_priority(&path);
    let checkpoint = |mode: &str| {
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(path, error = %e, "sqlite state store: WAL checkpoint failed (retried on the next commit)");
        }
    };
    while woken.recv().is_ok() {
        checkpoint("PASSIVE");
        // Commits meanwhile collapse into one wake: a checkpoint of more
        // frames at once copies each page once (under load, a checkpoint
        // after every commit spent 5 % of the process sorting frames).
        std::thread::sleep(CHECKPOINT_GAP);
    }
    checkpoint("TRUNCATE");
}

/// Makes the calling thread yield the CPU to every other thread of normal
/// priority (Linux: a thread's own nice value); elsewhere nothing.
fn lowest_priority(path: &str) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on this thread's
        // own id changes only this thread's nice value.
        let failed = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) != 0
        };
        if failed {
            tracing::debug!(
                path,
                "sqlite state store: the checkpointer keeps its priority"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
}

/// Runs a statement prepared once per connection: a lone commit runs in
/// place several times a run, so parsing them each time showed in profiles.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
}

/// Opens the batch's transaction. IMMEDIATE: the write lock is taken
/// first, so processes sharing the file write one at a time (a windowed
/// counter's add sees every add committed before it). A transaction some
/// failure left open (a panicking job, a COMMIT and then a ROLLBACK that
/// both failed) is rolled back first, or no batch could begin again.
fn begin(conn: &Connection) -> rusqlite::Result<()> {
    if !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
    exec(conn, "BEGIN IMMEDIATE")
}

impl Committer {
    /// Runs `batch` in the transaction [`begin`] opened on `conn`, commits
    /// it, answers every job, and wakes the checkpointer.
    fn commit(&self, conn: std::sync::MutexGuard<'_, Connection>, batch: Vec<Job>) {
        run_begun(&conn, batch, &self.path);
        drop(conn);
        if let Some(wake) = &self.checkpoints {
            let _ = wake.try_send(());
        }
    }

    /// Commits `job` on this thread if nobody holds the connection or
    /// waits for it; else gives it back.
    fn commit_in_place(&self, job: Job) -> Result<(), Job> {
        if self.queued.load(Ordering::Acquire) != 0 {
            return Err(job);
        }
        let Ok(conn) = self.conn.try_lock() else {
            return Err(job);
        };
        // Another process sharing the file may hold its write lock: rather
        // than wait for it here (the busy timeout is 5 s), the job goes to
        // the writer thread, which may wait.
        if conn.busy_timeout(std::time::Duration::ZERO).is_err() {
            return Err(job);
        }
        let begun = begin(&conn);
        if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
            tracing::warn!(path = %self.path, error = %e, "sqlite state store: the busy timeout was not restored");
        }
        if begun.is_err() {
            return Err(job);
        }
        self.commit(conn, vec![job]);
        Ok(())
    }
}

/// Runs `batch` in the transaction [`begin`] opened, commits it, and
/// answers every job.
fn run_begun(conn: &Connection, batch: Vec<Job>, path: &str) {
    let failed = |e: rusqlite::Error| format!("sqlite state store {path}: {e}");
    let exec = |sql: &str| exec(conn, sql);
    // A lone job needs no savepoint: if it fails, the whole transaction
    // is its own to roll back.
    let alone = batch.len() == 1;
    let mut lone_failed = false;
    let mut answers = Vec::with_capacity(batch.len());
    for job in batch {
        if !alone && let Err(e) = exec("SAVEPOINT job") {
            job.refuse(failed(e));
            continue;
        }
        let ran = job.run(conn, path);
        if alone {
            lone_failed = ran.failed;
        } else {
            let closed = if ran.failed {
                exec("ROLLBACK TO job").and_then(|()| exec("RELEASE job"))
            } else {
                exec("RELEASE job")
            };
            if let Err(e) = closed {
                tracing::warn!(path, error = %e, "sqlite state store: a job's savepoint did not close");
            }
        }
        answers.push(ran.answer);
    }
    let committed = if lone_failed {
        // The job answers with its own error; nothing of it is kept.
        if let Err(e) = exec("ROLLBACK") {
            tracing::warn!(path, error = %e, "sqlite state store: a failed job's transaction did not roll back");
        }
        Ok(())
    } else {
        let committed = exec("COMMIT").map_err(failed);
        if committed.is_err() {
            let _ = exec("ROLLBACK");
        }
        committed
    };
    for answer in answers {
        answer(committed.clone());
    }
}

/// A statement the writer thread can own.
struct Owned {
    sql: &'static str,
    args: Vec<Arg>,
    fence: Option<String>,
}

impl Owned {
    fn of(s: &Stmt<'_>) -> Owned {
        Owned {
            sql: s.sql,
            args: s.args.clone(),
            fence: s.fence.map(str::to_owned),
        }
    }
}

impl SqliteDb {
    /// Runs `job` and waits for its answer, given after its commit: in
    /// place when the connection is free and nobody is queued, else in the
    /// writer thread's next batch.
    async fn submit<U: Send + 'static>(
        &self,
        in_place: bool,
        job: impl FnOnce(&Connection, &str) -> Result<U, StateError> + Send + 'static,
    ) -> Result<U, StateError> {
        let stopped = || {
            StateError::Other(format!(
                "sqlite state store {}: its writer thread stopped",
                self.committer.path
            ))
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(Pending { work: job, reply });
        let tried = if in_place {
            self.committer.commit_in_place(job)
        } else {
            Err(job)
        };
        if let Err(job) = tried {
            let queued = &self.committer.queued;
            queued.fetch_add(1, Ordering::AcqRel);
            if self.jobs.send(job).is_err() {
                queued.fetch_sub(1, Ordering::AcqRel);
                return Err(stopped());
            }
        }
        answer.await.map_err(|_| stopped())?
    }

    /// `writes` then `read` as one job, in place if `in_place` allows.
    async fn statements<T: Send + 'static>(
        &self,
        in_place: bool,
        writes: &[Stmt<'_>],
        read: Option<(&Stmt<'_>, RowMap<T>)>,
    ) -> Result<Done<T>, StateError> {
        let writes: Vec<Owned> = writes.iter().map(Owned::of).collect();
        let read = read.map(|(q, map)| (Owned::of(q), map));
        self.submit(in_place, move |conn, path| run_on(conn, path, writes, read))
            .await
    }
}

fn sqlite_err(path: &str) -> impl Fn(rusqlite::Error) -> StateError + '_ {
    move |source| StateError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// Runs `writes` then `read` on `conn` (inside the batch's transaction).
fn run_on<T>(
    conn: &Connection,
    path: &str,
    writes: Vec<Owned>,
    read: Option<(Owned, RowMap<T>)>,
) -> Result<Done<T>, StateError> {
    let err = sqlite_err(path);
    let mut changed = Vec::with_capacity(writes.len());
    for Owned { sql, args, fence } in writes {
        let n = conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute(rusqlite::params_from_iter(&args)))
            .map_err(&err)?;
        let w = Stmt {
            sql,
            args: Vec::new(),
            fence: fence.as_deref(),
        };
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

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Text(Some(t)) => {
                ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(t.as_bytes()))
            }
            Arg::Int(Some(i)) => ToSqlOutput::Owned(SqlValue::Integer(*i)),
            Arg::Text(None) | Arg::Int(None) => ToSqlOutput::Owned(SqlValue::Null),
        })
    }
}

impl Row for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<Option<String>, StateError> {
        self.get(i)
            .map_err(|e| StateError::Row(format!("column {i}: {e}")))
    }
    fn int(&self, i: usize) -> Result<Option<i64>, StateError> {
        self.get(i)
            .map_err(|e| StateError::Row(format!("column {i}: {e}")))
    }
}

#[async_trait::async_trait]
impl Backend for SqliteDb {
    const DIALECT: Dialect = Dialect::Sqlite;

    fn kind(&self) -> &'static str {
        if self.committer.path == ":memory:" {
            "memory"
        } else {
            "sqlite"
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        writes: &[Stmt<'_>],
        read: Option<(&Stmt<'_>, RowMap<T>)>,
    ) -> Result<Done<T>, StateError> {
        self.statements(true, writes, read).await
    }

    async fn run_aside<T: Send + 'static>(
        &self,
        writes: &[Stmt<'_>],
        read: Option<(&Stmt<'_>, RowMap<T>)>,
    ) -> Result<Done<T>, StateError> {
        self.statements(false, writes, read).await
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
        let first: Vec<Owned> = first.iter().map(Owned::of).collect();
        let read = (Owned::of(read.0), read.1);
        // One job: what was read is still the newest when the writes land.
        self.submit(true, move |conn, path| {
            let found = run_on(conn, path, first, Some(read))?.rows;
            let (writes, out) = then(found);
            run_on::<()>(conn, path, writes.iter().map(Owned::of).collect(), None)?;
            Ok(out)
        })
        .await
    }
}
