//! The one bridge from blocking plugin calls to async: each call runs on
//! tokio's blocking pool, bounded by the plugin's own deadline, so a slow
//! plugin holds a pool thread, never a runtime worker.

use super::*;

/// A plugin call's result and when it ran.
pub(super) struct Timed<T> {
    pub(super) result: Result<T, PluginError>,
    pub(super) start: Instant,
    pub(super) end: Instant,
}

/// A plugin call started on the blocking pool.
pub(super) struct Pending<T> {
    pub(super) handle: tokio::task::JoinHandle<Timed<T>>,
    pub(super) plugin: Arc<Plugin>,
    pub(super) queued: Instant,
}

/// Starts `f(plugin)` on the blocking pool at once.
pub(super) fn spawn_call<T, F>(plugin: &Arc<Plugin>, f: F) -> Pending<T>
where
    T: Send + 'static,
    F: FnOnce(&Plugin) -> Result<T, PluginError> + Send + 'static,
{
    let p = plugin.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let result = f(&p);
        Timed {
            result,
            start,
            end: Instant::now(),
        }
    });
    Pending {
        handle,
        plugin: plugin.clone(),
        queued: Instant::now(),
    }
}

impl<T> Pending<T> {
    pub(super) async fn wait(self) -> Timed<T> {
        let Pending {
            handle,
            plugin,
            queued,
        } = self;
        handle.await.unwrap_or_else(|e| Timed {
            result: Err(PluginError {
                plugin: plugin.name().to_owned(),
                digest: plugin.digest().to_owned(),
                cause: CallFailure::Trap {
                    message: format!("host task failed: {e}"),
                },
            }),
            start: queued,
            end: Instant::now(),
        })
    }
}

/// Calls `f(plugin)` and waits for it. On a multi-thread runtime the call
/// runs on this thread under `block_in_place` (tokio moves this worker's
/// other tasks away meanwhile), which saves two thread hand-offs per call;
/// elsewhere it goes to the blocking pool.
pub(super) async fn blocking<T, F>(plugin: &Arc<Plugin>, f: F) -> Timed<T>
where
    T: Send + 'static,
    F: FnOnce(&Plugin) -> Result<T, PluginError> + Send + 'static,
{
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(|| {
            let start = Instant::now();
            let result = f(plugin.as_ref());
            Timed {
                result,
                start,
                end: Instant::now(),
            }
        })
    } else {
        spawn_call(plugin, f).wait().await
    }
}
