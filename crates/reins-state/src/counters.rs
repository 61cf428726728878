//! Plugin counters (budgets) and rate-limit windows in the state store, so
//! every node on one database enforces one budget.
//!
//! [`CounterStore::add`] is synchronous: plugins call `counter-add` from
//! inside a WebAssembly call, which has no async context. SQLite's store is
//! waited on in place (its writer thread answers, never this runtime);
//! PostgreSQL gets a
//! dedicated thread with its own small runtime and connection pool, so a
//! call never needs the caller's runtime (which may be the very thread that
//! is blocked waiting).

use super::{Counters, StateError, StateKind, StateSettings, now_ms};
use reins_runtime::CounterStore;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

/// What a failing store answers: far over any budget, so gates deny (fail
/// closed) rather than spend money nobody counted.
pub const UNAVAILABLE: i64 = i64::MAX / 4;

type Reply = mpsc::SyncSender<Result<i64, StateError>>;

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
struct Job {
    scope: String,
    key: String,
    delta: i64,
    window: Option<Duration>,
    reply: Reply,
}

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
enum Bridge {
    /// A store answered by its own thread, waited on in place (SQLite).
    InPlace(Arc<dyn Counters>),
    /// A worker thread with its own runtime and store.
    Thread(mpsc::Sender<Job>),
}

/// A [`CounterStore`] over the state store.
pub struct StoreCounters {
    bridge: Bridge,
}

async fn add(
    store: &dyn Counters,
    scope: &str,
    key: &str,
    delta: i64,
    window: Option<Duration>,
) -> Result<i64, StateError> {
    match window {
        Some(w) => {
            let window_ms = i64::try_from(w.as_millis()).unwrap_or(i64::MAX);
            store
                .counter_window_add(scope, key, delta, window_ms, now_ms())
                .await
        }
        None => store.counter_add(scope, key, delta).await,
    }
}

impl StoreCounters {
    /// Counters on `store` (opened from `settings`; PostgreSQL gets its own
    /// worker thread and a pool of two connections).
    pub fn new(settings: &StateSettings, store: Arc<dyn Counters>) -> Result<Self, StateError> {
        if settings.kind != StateKind::Postgres {
            return Ok(StoreCounters {
                bridge: Bridge::InPlace(store),
            });
        }
        Self::worker(settings)
    }

    #[cfg(not(feature = "postgres"))]
    fn worker(settings: &StateSettings) -> Result<Self, StateError> {
        Err(settings.kind.not_compiled())
    }

    /// The PostgreSQL worker thread.
    #[cfg(feature = "postgres")]
    fn worker(settings: &StateSettings) -> Result<Self, StateError> {
        let url = super::postgres_url(settings)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), StateError>>(1);
        std::thread::Builder::new()
            .name("reins-counters".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StateError::Other(format!(
                            "counter worker runtime: {e}"
                        ))));
                        return;
                    }
                };
                let store = match rt.block_on(super::postgres::PgStore::connect(&url, 2)) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Ok(job) = rx.recv() {
                    let result =
                        rt.block_on(add(&store, &job.scope, &job.key, job.delta, job.window));
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| StateError::Other(format!("counter worker thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| StateError::Other("counter worker thread ended".into()))??;
        Ok(StoreCounters {
            bridge: Bridge::Thread(tx),
        })
    }

    fn try_add(
        &self,
        scope: &str,
        key: &str,
        delta: i64,
        window: Option<Duration>,
    ) -> Result<i64, StateError> {
        match &self.bridge {
            Bridge::InPlace(store) => {
                off_workers(|| futures_executor::block_on(add(&**store, scope, key, delta, window)))
            }
            Bridge::Thread(tx) => {
                let (reply, answer) = mpsc::sync_channel(1);
                tx.send(Job {
                    scope: scope.to_owned(),
                    key: key.to_owned(),
                    delta,
                    window,
                    reply,
                })
                .map_err(|_| StateError::Other("counter worker thread ended".into()))?;
                off_workers(|| answer.recv())
                    .map_err(|_| StateError::Other("counter worker thread ended".into()))?
            }
        }
    }
}

/// Runs a wait for another thread's answer off the async workers when there
/// are several (tokio moves this worker's other tasks away meanwhile).
fn off_workers<T>(wait: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(wait)
    } else {
        wait()
    }
}

impl CounterStore for StoreCounters {
    fn add(&self, scope: &str, key: &str, delta: i64, window: Option<Duration>) -> i64 {
        match self.try_add(scope, key, delta, window) {
            Ok(total) => total,
            Err(e) => {
                tracing::error!(
                    scope,
                    key,
                    delta,
                    "counter store unavailable, answering over-budget: {e}"
                );
                UNAVAILABLE
            }
        }
    }
}
