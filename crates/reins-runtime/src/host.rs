//! A plugins directory that serves: the current [`PluginSet`], swapped
//! atomically when files change.

use super::error::RuntimeError;
use super::loader::{PluginSet, PluginStatus, Runtime};
use super::settings::RuntimeSettings;
use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Owns the plugins directory. Requests call [`PluginHost::current`] once and
/// keep that snapshot; reloads build a new set off the request path and swap
/// it in whole, so in-flight requests finish on the set they started with.
pub struct PluginHost {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    current: ArcSwap<PluginSet>,
    /// Serializes reloads (watcher and manual) so two never race to swap.
    reload_lock: Mutex<()>,
    reloads: AtomicU64,
    refused: AtomicU64,
    watcher: Mutex<
        Option<
            notify_debouncer_full::Debouncer<
                notify::RecommendedWatcher,
                notify_debouncer_full::RecommendedCache,
            >,
        >,
    >,
    /// Told about every reload (e.g. the host's audit log).
    listeners: Mutex<Vec<ReloadListener>>,
}

type ReloadListener = Box<dyn Fn(&ReloadReport) + Send + Sync>;

/// Variants that could not be built ([`PluginHost::configure`]).
pub struct Unconfigured {
    /// The set with every variant that could be built; it does not serve.
    pub set: Arc<PluginSet>,
    /// Each failure, by [`crate::Variant::key`].
    pub failures: Vec<(String, RuntimeError)>,
}

impl std::fmt::Debug for Unconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unconfigured")
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

/// What one reload did, for whoever records it ([`PluginHost::on_reload`]).
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    pub dir: PathBuf,
    /// Plugins loaded anew or changed (by name).
    pub changed: Vec<String>,
    /// Plugins no longer served.
    pub removed: Vec<String>,
    /// Files refused by this reload (the previous version, if any, keeps serving).
    pub refused: Vec<String>,
    /// The generation serving after the reload.
    pub generation: u64,
    /// Set when the directory could not be rescanned (nothing was swapped).
    pub error: Option<String>,
}

impl PluginHost {
    /// Builds a runtime, loads every plugin in `dir` and, if `watch`, starts
    /// hot reload. Refused files are recorded in [`statuses`](Self::statuses);
    /// only an unreadable directory or an engine failure is an error.
    pub fn open(
        dir: &Path,
        settings: &RuntimeSettings,
        watch: bool,
    ) -> Result<Arc<Self>, RuntimeError> {
        let runtime = Runtime::new(settings)?;
        Self::with_runtime(runtime, dir, settings, watch)
    }

    /// Like [`open`](Self::open) on an existing runtime.
    pub fn with_runtime(
        runtime: Arc<Runtime>,
        dir: &Path,
        settings: &RuntimeSettings,
        watch: bool,
    ) -> Result<Arc<Self>, RuntimeError> {
        let set = PluginSet::scan(&runtime, dir, None)?;
        let host = Arc::new(Self {
            runtime,
            dir: dir.to_owned(),
            current: ArcSwap::from_pointee(set),
            reload_lock: Mutex::new(()),
            reloads: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            watcher: Mutex::new(None),
            listeners: Mutex::new(Vec::new()),
        });
        if watch {
            host.start_watcher(Duration::from_millis(settings.reload_debounce_ms))?;
        }
        Ok(host)
    }

    /// The set serving now. Hold it for the whole request.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.current.load().statuses()
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Swaps done so far, and files refused during reloads.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.reloads.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    /// Calls `listener` after every reload, on the thread that reloaded
    /// (the watcher's, or the caller of [`PluginHost::reload`]): keep it short.
    pub fn on_reload(&self, listener: impl Fn(&ReloadReport) + Send + Sync + 'static) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(listener));
    }

    /// Serves exactly `wanted` as variants from now on (see
    /// [`crate::Variant`]): builds those the current set lacks (see
    /// [`crate::Cold`] for those whose snapshot is not cached) and swaps in
    /// the set with them. Returns the set now serving. When any fails to
    /// build, nothing is swapped: the error holds every failure, by variant
    /// key, and the set as it would have been without them (for checking
    /// the rest of a config), which does not serve.
    pub fn configure(
        &self,
        wanted: &[crate::Variant],
        cold: crate::Cold,
    ) -> Result<Arc<PluginSet>, Unconfigured> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current.load_full();
        let upgradable = current.variants().iter().any(|v| {
            current
                .get(&v.key())
                .is_some_and(|p| self.runtime.snapshot_ready(p))
        });
        if current.variants() == wanted && !upgradable {
            return Ok(current);
        }
        let (next, failures) = current.with_variants(&self.runtime, wanted, cold);
        let next = Arc::new(next);
        if !failures.is_empty() {
            return Err(Unconfigured {
                set: next,
                failures,
            });
        }
        self.current.store(next.clone());
        Ok(next)
    }

    /// Rescans the directory now and swaps in the result.
    pub fn reload(&self) -> Result<(), RuntimeError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = ReloadReport {
            dir: self.dir.clone(),
            ..ReloadReport::default()
        };
        let done = self.swap(&mut report);
        if let Err(e) = &done {
            report.error = Some(e.to_string());
        }
        report.generation = self.current.load().generation();
        for listener in self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            listener(&report);
        }
        done
    }

    /// Builds the next set and swaps it in, noting in `report` what changed.
    fn swap(&self, report: &mut ReloadReport) -> Result<(), RuntimeError> {
        let previous = self.current.load_full();
        let next = PluginSet::scan(&self.runtime, &self.dir, Some(&previous))?;
        // Count refusals that are new: a file that stays broken is not
        // refused again on every unrelated reload.
        let before = previous.statuses();
        report.refused = next
            .statuses()
            .into_iter()
            .filter(|s| s.status == "refused")
            .filter(|s| {
                !before.iter().any(|b| {
                    b.name == s.name && b.status == "refused" && b.last_error == s.last_error
                })
            })
            .map(|s| s.name)
            .collect();
        let refused = report.refused.len() as u64;
        report.changed = next
            .plugins()
            .filter(|p| {
                previous
                    .get(p.name())
                    .is_none_or(|old| !Arc::ptr_eq(old, p))
            })
            .map(|p| p.name().to_owned())
            .collect();
        report.removed = previous
            .plugins()
            .filter(|p| next.get(p.name()).is_none())
            .map(|p| p.name().to_owned())
            .collect();
        let changed = !report.changed.is_empty() || !report.removed.is_empty();
        self.current.store(Arc::new(next));
        self.refused.fetch_add(refused, Ordering::Relaxed);
        metrics::counter!(crate::metric_names::PLUGIN_REFUSED_TOTAL).increment(refused);
        if changed {
            metrics::counter!(crate::metric_names::PLUGIN_SWAPS_TOTAL).increment(1);
            self.reloads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(dir = %self.dir.display(), refused, "plugin set reloaded");
        }
        Ok(())
    }

    fn start_watcher(self: &Arc<Self>, debounce: Duration) -> Result<(), RuntimeError> {
        let weak = Arc::downgrade(self);
        let mut debouncer = new_debouncer(debounce, None, move |res: DebounceEventResult| {
            let Some(host) = weak.upgrade() else { return };
            let relevant = match &res {
                Ok(events) => events.iter().any(|e| {
                    e.paths
                        .iter()
                        .any(|p| p.extension().is_some_and(|x| x == "wasm" || x == "toml"))
                }),
                Err(_) => true,
            };
            if relevant {
                if let Err(e) = host.reload() {
                    tracing::error!(error = %e, "plugin reload failed");
                }
            }
        })
        .map_err(|e| RuntimeError::Engine {
            message: format!("cannot watch {}: {e}", self.dir.display()),
        })?;
        debouncer
            .watch(&self.dir, RecursiveMode::NonRecursive)
            .map_err(|e| RuntimeError::Engine {
                message: format!("cannot watch {}: {e}", self.dir.display()),
            })?;
        *self.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(debouncer);
        Ok(())
    }
}
