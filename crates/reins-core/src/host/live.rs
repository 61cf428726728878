//! What a reload replaces, and the reload itself.
//!
//! `reins.toml` and every file it reads become one [`Live`]: the config, the
//! providers built from it and the pipelines compiled from it. A reload
//! builds the next `Live` off the request path (every pipeline compiled,
//! every plugin present, of its layer and set up with the pipeline's own
//! settings, every provider built) and swaps it in whole; a run holds the
//! `Live` it started with to its end. A config that fails is refused with
//! every error found, and the one serving stays. Keys only a restart can
//! apply ([`crate::config::RESTART_ONLY`]) are reported, never half-applied.

use super::{Host, audit};
use crate::config::{Config, ConfigError, ProviderConfig};
use crate::pipeline::Pipeline;
use crate::provider::{self, Breaker, Provider, ProviderSettings};
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use reins_runtime::PluginHost;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One loaded configuration: what every run started under it uses.
pub struct Live {
    pub(super) config: Arc<Config>,
    pub(super) providers: BTreeMap<String, Arc<Breaker>>,
    pub(super) pipelines: BTreeMap<String, Arc<Pipeline>>,
    /// The MCP servers of `[mcp.servers]`: one whose table did not change
    /// keeps its connection (and its process) across a reload.
    pub(super) upstreams: BTreeMap<String, Arc<crate::mcp::Upstream>>,
    /// The `[retrievers]`: one whose table did not change keeps its index
    /// (and its watcher, its database pool) across a reload.
    pub(super) retrievers: BTreeMap<String, Arc<crate::retrieval::Retriever>>,
    /// Each provider's table and the files it reads, hashed: a provider
    /// whose fingerprint did not change keeps its breaker (and its state).
    fingerprints: BTreeMap<String, String>,
    /// The variants the plugin set serves for these pipelines.
    variants: Vec<reins_runtime::Variant>,
    /// 1 for the config loaded at start, +1 per reload that changed it.
    pub version: u64,
    /// SHA-256 of the config and every file it reads.
    pub digest: String,
    pub loaded_ms: u64,
    /// The config file (when it is one) and every file it reads.
    pub files: Vec<PathBuf>,
}

impl Live {
    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// A compiled pipeline.
    pub fn pipeline(&self, name: &str) -> Option<&Arc<Pipeline>> {
        self.pipelines.get(name)
    }

    /// The pipelines, by name.
    pub fn pipelines(&self) -> &BTreeMap<String, Arc<Pipeline>> {
        &self.pipelines
    }

    /// Every provider with its circuit breaker, by name.
    pub fn breakers(&self) -> &BTreeMap<String, Arc<Breaker>> {
        &self.providers
    }
}

/// What builds a [`Live`] besides the config.
pub(super) struct Inputs<'a> {
    /// Providers made in code ([`super::HostBuilder::provider`]).
    pub code: &'a BTreeMap<String, Arc<dyn Provider>>,
    pub plugins: &'a PluginHost,
    pub previous: Option<&'a Live>,
    /// The config's files and their digest ([`identity`]), computed once
    /// by the caller (a reload compares them before it builds anything).
    pub identity: (Vec<PathBuf>, String),
}

/// Builds everything a config describes, or says everything that is wrong
/// with it.
pub(super) fn build(config: Config, inputs: Inputs<'_>) -> Result<Live, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let previous = inputs.previous;
    let mut providers = BTreeMap::new();
    let mut fingerprints = BTreeMap::new();
    for (name, pc) in &config.providers {
        let fingerprint = fingerprint(&config, name, pc);
        let kept = previous.and_then(|p| {
            let same =
                inputs.code.contains_key(name) || p.fingerprints.get(name) == Some(&fingerprint);
            same.then(|| p.providers.get(name).cloned()).flatten()
        });
        let breaker = match kept {
            Some(b) => b,
            None => {
                let made = match inputs.code.get(name) {
                    Some(p) => Ok(p.clone()),
                    None => provider::from_config(name, pc, &config.base_dir),
                };
                match made {
                    Ok(p) => Arc::new(Breaker::new(p, ProviderSettings::for_config(pc))),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                }
            }
        };
        providers.insert(name.clone(), breaker);
        fingerprints.insert(name.clone(), fingerprint);
    }
    let mut upstreams = BTreeMap::new();
    for (name, sc) in &config.mcp.servers {
        let kept = previous
            .and_then(|p| p.upstreams.get(name))
            .filter(|u| u.config() == sc)
            .cloned();
        let upstream =
            kept.unwrap_or_else(|| Arc::new(crate::mcp::Upstream::new(name, sc, &config.base_dir)));
        upstreams.insert(name.clone(), upstream);
    }
    let mut retrievers = BTreeMap::new();
    for (name, rc) in &config.retrievers {
        let kept = previous
            .and_then(|p| p.retrievers.get(name))
            .filter(|r| r.config() == rc)
            .cloned();
        let opened = match kept {
            Some(r) => Ok(r),
            None => crate::retrieval::Retriever::open(
                name,
                rc,
                &config.origin,
                &config.base_dir,
                &providers,
            )
            .map(Arc::new),
        };
        match opened {
            Ok(r) => {
                retrievers.insert(name.clone(), r);
            }
            Err(e) => errors.push(e),
        }
    }
    let mut pipelines = BTreeMap::new();
    for name in config.pipelines.keys() {
        match Pipeline::compile(&config, name, &providers, &upstreams, &retrievers) {
            Ok(mut p) => {
                if let Some(old) = previous.and_then(|l| l.pipelines.get(name)) {
                    p.adopt_cache(old);
                }
                pipelines.insert(name.clone(), Arc::new(p));
            }
            Err(e) => errors.push(e),
        }
    }
    // The variants these pipelines need, next to those of the config still
    // serving (runs started under it may still ask for theirs).
    let mut variants: Vec<reins_runtime::Variant> = Vec::new();
    for p in pipelines.values() {
        for v in p.variants() {
            if !variants.contains(v) {
                variants.push(v.clone());
            }
        }
    }
    let mut wanted = variants.clone();
    for v in previous.map(|l| l.variants.as_slice()).unwrap_or_default() {
        if !wanted.contains(v) {
            wanted.push(v.clone());
        }
    }
    let mut failed = BTreeSet::new();
    // At start, new settings are snapshotted now (start-up may take
    // seconds); on a reload they serve at once and snapshot in the background.
    let cold = if previous.is_none() {
        reins_runtime::Cold::SnapshotNow
    } else {
        reins_runtime::Cold::SnapshotLater
    };
    let set = match inputs.plugins.configure(&wanted, cold) {
        Ok(set) => set,
        Err(refused) => {
            for (key, e) in refused.failures {
                failed.insert(key.clone());
                let plugin = key.split('#').next().unwrap_or(&key).to_owned();
                let users: Vec<&str> = pipelines
                    .values()
                    .filter(|p| p.variants().any(|v| v.key() == key))
                    .map(|p| p.name.as_str())
                    .collect();
                errors.push(ConfigError::Invalid {
                    path: config.origin.clone(),
                    key: format!("pipelines.{}", users.join(", pipelines.")),
                    message: format!(
                        "plugin `{plugin}` does not load with this pipeline's settings: {e}"
                    ),
                });
            }
            refused.set
        }
    };
    for p in pipelines.values() {
        // A variant that failed to build is missing from the set: said once, above.
        errors.extend(
            p.check_plugins(&config, &set, inputs.plugins.dir())
                .into_iter()
                .filter(|e| {
                    !matches!(e, ConfigError::MissingPlugin { layer, plugin, .. }
                        if failed.contains(p.plugin_key(*layer, plugin)))
                }),
        );
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (files, digest) = inputs.identity;
    Ok(Live {
        config: Arc::new(config),
        providers,
        retrievers,
        pipelines,
        upstreams,
        fingerprints,
        variants,
        version: previous.map_or(1, |p| p.version + 1),
        digest,
        loaded_ms: reins_runtime::now_ms(),
        files,
    })
}

/// A provider's table as written, and the bytes of the file it replays.
fn fingerprint(config: &Config, name: &str, pc: &ProviderConfig) -> String {
    let mut h = Sha256::new();
    let table = config
        .raw
        .get("providers")
        .and_then(|p| p.get(name))
        .map(ToString::to_string)
        .unwrap_or_default();
    h.update(table.as_bytes());
    if let ProviderConfig::Scripted(s) = pc
        && let Some(f) = &s.file
    {
        h.update(std::fs::read(config.resolve(f)).unwrap_or_default());
    }
    hex::encode(h.finalize())
}

/// The files a config consists of (the file itself, if it is one, and every
/// file it reads) and their digest: what tells two configs apart.
pub(super) fn identity(config: &Config, source: Option<&Path>) -> (Vec<PathBuf>, String) {
    let mut files: Vec<PathBuf> = source.map(Path::to_owned).into_iter().collect();
    files.extend(config.files());
    let digest = digest(config, &files);
    (files, digest)
}

/// The config as parsed and every file it reads, hashed.
fn digest(config: &Config, files: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    h.update(toml::to_string(&config.raw).unwrap_or_default().as_bytes());
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(std::fs::read(f).unwrap_or_default());
    }
    hex::encode(h.finalize())
}

/// Where a reload reads the config from.
pub(super) enum Source {
    File(PathBuf),
    /// Given as text or parsed: a reload builds it again (re-reading the
    /// files it names).
    Fixed(Box<Config>),
}

impl Source {
    fn load(&self) -> Result<Config, ConfigError> {
        match self {
            Source::File(path) => Config::from_file(path),
            Source::Fixed(config) => Ok((**config).clone()),
        }
    }

    fn path(&self) -> Option<&Path> {
        match self {
            Source::File(p) => Some(p),
            Source::Fixed(_) => None,
        }
    }
}

/// The state of the configuration, as `GET /v1/config` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigStatus {
    /// The config file, or `<config>` for one given in code.
    pub source: String,
    pub version: u64,
    pub digest: String,
    /// When the serving config was loaded (ms since the Unix epoch).
    pub loaded_ms: u64,
    /// The files a change to which reloads the config.
    pub files: Vec<String>,
    /// Reloads that swapped in a new config, and reloads refused.
    pub reloads: u64,
    pub refused: u64,
    /// The last refused reload, until one succeeds.
    pub last_error: Option<ReloadFailure>,
    /// Keys that differ from the running process's and need a restart.
    pub restart_required: Vec<String>,
    /// Watching the files for changes.
    pub watching: bool,
}

/// A refused reload: every error found, each naming its file and key.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadFailure {
    pub at_ms: u64,
    pub errors: Vec<String>,
}

/// What [`Host::reload`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// A new config serves (false: nothing had changed).
    pub swapped: bool,
    pub version: u64,
    pub digest: String,
    pub restart_required: Vec<String>,
}

/// A reload that was refused: the previous config keeps serving.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: the new configuration is refused, the previous one keeps serving:\n  {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct ReloadError {
    pub source_name: String,
    pub errors: Vec<ConfigError>,
}

/// Owns reloading: the source, serialization of reloads, their status and
/// the watcher.
pub(super) struct Reloader {
    pub(super) source: Source,
    pub(super) code: BTreeMap<String, Arc<dyn Provider>>,
    /// The config the process started with: restart-only keys compare to it.
    pub(super) boot: Arc<Config>,
    /// Serializes reloads (watcher, signal, API) so two never race to swap.
    lock: Mutex<()>,
    status: Mutex<Counters>,
    watcher: Mutex<Option<Watcher>>,
}

#[derive(Default)]
struct Counters {
    reloads: u64,
    refused: u64,
    last_error: Option<ReloadFailure>,
    /// What the refused config was: the same files refused again (an
    /// editor's save seen twice) are not counted or logged again.
    refused_digest: Option<String>,
    restart_required: Vec<String>,
}

struct Watcher {
    debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    dirs: BTreeSet<PathBuf>,
    /// What is watched: (canonical directory, file name).
    files: Arc<Mutex<BTreeSet<(PathBuf, OsString)>>>,
}

impl Reloader {
    pub(super) fn new(
        source: Source,
        code: BTreeMap<String, Arc<dyn Provider>>,
        boot: Arc<Config>,
    ) -> Self {
        Self {
            source,
            code,
            boot,
            lock: Mutex::new(()),
            status: Mutex::new(Counters::default()),
            watcher: Mutex::new(None),
        }
    }

    pub(super) fn load(&self) -> Result<Config, ConfigError> {
        self.source.load()
    }

    pub(super) fn source_path(&self) -> Option<&Path> {
        self.source.path()
    }

    fn source_name(&self) -> String {
        self.source
            .path()
            .map_or_else(|| "<config>".to_owned(), |p| p.display().to_string())
    }
}

impl Host {
    /// The configuration serving now: hold it for as long as one answer
    /// must stay consistent (a request, a listing).
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Reads the config again and, when it changed and loads, swaps it in.
    /// Blocks while it builds (plugins may be set up): call it from a
    /// blocking thread, not an async worker.
    pub fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        let r = &self.reloader;
        let _guard = r.lock.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.live.load_full();
        let loaded = r.load();
        // The same files as the serving config (a save seen twice, a touch):
        // nothing to build.
        let (files, digest) = match &loaded {
            Ok(config) => identity(config, r.source_path()),
            Err(_) => (
                Vec::new(),
                r.source_path()
                    .and_then(|p| std::fs::read(p).ok())
                    .map(|bytes| hex::encode(Sha256::digest(bytes)))
                    .unwrap_or_default(),
            ),
        };
        tracing::debug!(digest = %&digest[..digest.len().min(12)], serving = %&previous.digest[..12], "config read");
        if loaded.is_ok() && digest == previous.digest {
            // Back to the serving config after a refused one: all is well.
            let mut status = r.status.lock().unwrap_or_else(|p| p.into_inner());
            if status.last_error.take().is_some() {
                status.refused_digest = None;
                metrics::gauge!(reins_runtime::metric_names::CONFIG_RELOAD_FAILING).set(0.0);
            }
            return Ok(ReloadOutcome {
                swapped: false,
                version: previous.version,
                digest,
                restart_required: status.restart_required.clone(),
            });
        }
        let outcome = loaded.map_err(|e| vec![e]).and_then(|config| {
            let restart = r.boot.restart_keys(&config);
            build(
                config,
                Inputs {
                    code: &r.code,
                    plugins: &self.plugins,
                    previous: Some(&previous),
                    identity: (files, digest.clone()),
                },
            )
            .map(|live| (live, restart))
        });
        let mut status = r.status.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok((live, restart)) => {
                status.last_error = None;
                status.refused_digest = None;
                if !restart.is_empty() && restart != status.restart_required {
                    tracing::warn!(keys = ?restart, "reins.toml: these keys changed but apply only on a restart");
                }
                status.restart_required = restart.clone();
                let swapped = live.digest != previous.digest;
                let (version, digest) = if swapped {
                    let (v, d) = (live.version, live.digest.clone());
                    self.live.store(Arc::new(live));
                    status.reloads += 1;
                    metrics::counter!(reins_runtime::metric_names::CONFIG_RELOADS_TOTAL, "outcome" => "ok").increment(1);
                    metrics::gauge!(reins_runtime::metric_names::CONFIG_VERSION).set(v as f64);
                    tracing::info!(version = v, digest = %&d[..12], "configuration reloaded");
                    self.audit.send(audit::config_reload(&r.source_name(), "ok", serde_json::json!({"version": v, "digest": d, "restart_required": restart})));
                    (v, d)
                } else {
                    (previous.version, previous.digest.clone())
                };
                metrics::gauge!(reins_runtime::metric_names::CONFIG_RELOAD_FAILING).set(0.0);
                Ok(ReloadOutcome {
                    swapped,
                    version,
                    digest,
                    restart_required: restart,
                })
            }
            Err(errors) => {
                let texts: Vec<String> = errors.iter().map(ToString::to_string).collect();
                let e = ReloadError {
                    source_name: r.source_name(),
                    errors,
                };
                if status.refused_digest.as_deref() != Some(digest.as_str()) {
                    status.refused_digest = Some(digest);
                    status.refused += 1;
                    status.last_error = Some(ReloadFailure {
                        at_ms: reins_runtime::now_ms(),
                        errors: texts.clone(),
                    });
                    metrics::counter!(reins_runtime::metric_names::CONFIG_RELOADS_TOTAL, "outcome" => "refused").increment(1);
                    metrics::gauge!(reins_runtime::metric_names::CONFIG_RELOAD_FAILING).set(1.0);
                    tracing::error!("{e}");
                    self.audit.send(audit::config_reload(
                        &r.source_name(),
                        "refused",
                        serde_json::json!({"errors": texts}),
                    ));
                }
                Err(e)
            }
        }
        .inspect(|_| {
            drop(status);
            self.watch_files();
        })
    }

    /// The serving config's version and digest, and how reloads went.
    pub fn config_status(&self) -> ConfigStatus {
        let live = self.live.load();
        let r = &self.reloader;
        let status = r.status.lock().unwrap_or_else(|p| p.into_inner());
        ConfigStatus {
            source: r.source_name(),
            version: live.version,
            digest: live.digest.clone(),
            loaded_ms: live.loaded_ms,
            files: live.files.iter().map(|f| f.display().to_string()).collect(),
            reloads: status.reloads,
            refused: status.refused,
            last_error: status.last_error.clone(),
            restart_required: status.restart_required.clone(),
            watching: r
                .watcher
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some(),
        }
    }

    /// Reloads whenever the config file or a file it reads changes (editors
    /// that save by renaming included: directories are watched). Stops when
    /// the host is dropped.
    pub fn watch_config(self: &Arc<Self>) -> Result<(), ConfigError> {
        let weak = Arc::downgrade(self);
        let files: Arc<Mutex<BTreeSet<(PathBuf, OsString)>>> = Arc::default();
        let wanted = files.clone();
        let debounce = Duration::from_millis(self.reloader.boot.runtime.reload_debounce_ms.max(10));
        let debouncer = new_debouncer(debounce, None, move |res: DebounceEventResult| {
            let Some(host) = weak.upgrade() else { return };
            let relevant = match &res {
                Ok(events) => {
                    let wanted = wanted.lock().unwrap_or_else(|p| p.into_inner());
                    let paths: Vec<&PathBuf> = events.iter().flat_map(|e| e.paths.iter()).collect();
                    let relevant = paths
                        .iter()
                        .filter_map(|p| watch_key(p))
                        .any(|k| wanted.contains(&k));
                    tracing::debug!(?paths, relevant, "config watcher");
                    relevant
                }
                Err(_) => true,
            };
            if relevant {
                // Refusals are logged, counted and shown by `config_status`.
                let _ = host.reload();
            }
        })
        .map_err(|e| ConfigError::Io {
            path: PathBuf::from(self.reloader.source_name()),
            source: std::io::Error::other(format!("cannot watch: {e}")),
        })?;
        *self
            .reloader
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Watcher {
            debouncer,
            dirs: BTreeSet::new(),
            files,
        });
        self.watch_files();
        Ok(())
    }

    /// Points the watcher at the serving config's files (they change with it).
    fn watch_files(&self) {
        let mut guard = self
            .reloader
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(w) = guard.as_mut() else { return };
        let live = self.live.load();
        let keys: BTreeSet<(PathBuf, OsString)> =
            live.files.iter().filter_map(|f| watch_key(f)).collect();
        for (dir, _) in &keys {
            if !w.dirs.contains(dir) {
                match w.debouncer.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        w.dirs.insert(dir.clone());
                    }
                    Err(e) => tracing::warn!(dir = %dir.display(), "cannot watch: {e}"),
                }
            }
        }
        *w.files.lock().unwrap_or_else(|p| p.into_inner()) = keys;
    }
}

/// A file as the watcher names it: its directory, canonical (the file itself
/// may be gone mid-rename), and its name.
fn watch_key(path: &Path) -> Option<(PathBuf, OsString)> {
    let name = path.file_name()?.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    Some((std::fs::canonicalize(dir).ok()?, name))
}
