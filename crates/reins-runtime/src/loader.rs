//! Turning files into plugins: the checks a `.wasm` must pass before it may
//! serve, and the scan of a plugins directory into a [`PluginSet`].

use super::counters::{CounterStore, MemoryCounters};
use super::engine::{EngineHandle, digest};
use super::error::RuntimeError;
use super::manifest::Manifest;
use super::plugin::{LayerPre, Plugin, PluginInfo, now_ms};
use super::settings::{InitMode, RuntimeSettings};
use super::state::StoreState;
use super::types::Layer;
use super::variant::Variant;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Component, Linker};

const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// The engine, the linker with everything the host offers plugins, and the
/// counters behind `counter-add`. Cheap to share; one per process.
pub struct Runtime {
    engine: Arc<EngineHandle>,
    linker: Linker<StoreState>,
    counters: Arc<dyn CounterStore>,
    init_mode: InitMode,
}

impl Runtime {
    /// A runtime with process-local counters.
    pub fn new(settings: &RuntimeSettings) -> Result<Arc<Self>, RuntimeError> {
        Self::with_counters(settings, Arc::new(MemoryCounters::new()))
    }

    /// A runtime whose `counter-add` goes to `counters` (e.g. a shared database).
    pub fn with_counters(
        settings: &RuntimeSettings,
        counters: Arc<dyn CounterStore>,
    ) -> Result<Arc<Self>, RuntimeError> {
        let engine = Arc::new(EngineHandle::new(settings)?);
        let mut linker = Linker::new(engine.engine());
        let link_err = |e: wasmtime::Error| RuntimeError::Engine {
            message: format!("linking host functions: {e:#}"),
        };
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err)?;
        super::bindings::shared::HostImports::add_to_linker::<
            _,
            wasmtime::component::HasSelf<StoreState>,
        >(&mut linker, |s| s)
        .map_err(link_err)?;
        Ok(Arc::new(Self {
            engine,
            linker,
            counters: Arc::new(super::counters::Metered::new(counters)),
            init_mode: settings.init,
        }))
    }

    /// Where `counter-add` goes (to release a reservation another process made).
    pub fn counters(&self) -> &Arc<dyn CounterStore> {
        &self.counters
    }

    /// The engine handle (for tools that report on compilation).
    pub fn engine(&self) -> &Arc<EngineHandle> {
        &self.engine
    }

    /// Loads one plugin from `wasm_path`, with the sidecar next to it.
    pub fn load_file(&self, wasm_path: &Path) -> Result<Plugin, RuntimeError> {
        let manifest_path = wasm_path.with_extension("toml");
        let manifest_text = match std::fs::read_to_string(&manifest_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(RuntimeError::Read {
                    path: manifest_path,
                    source,
                });
            }
        };
        let manifest = match &manifest_text {
            Some(t) => Manifest::parse(t, &manifest_path)?,
            None => Manifest::default(),
        };
        self.load_with_manifest(wasm_path, manifest, manifest_text.as_deref().unwrap_or(""))
    }

    /// Loads one plugin with an explicit manifest (used by `plugin test`,
    /// whose cases may override the config).
    pub fn load_with_manifest(
        &self,
        wasm_path: &Path,
        manifest: Manifest,
        manifest_text: &str,
    ) -> Result<Plugin, RuntimeError> {
        self.load_as(wasm_path, manifest, manifest_text, Cold::SnapshotNow)
    }

    /// [`Runtime::load_with_manifest`], choosing what a plugin with `init`
    /// and no cached snapshot does (see [`Cold`]).
    pub(crate) fn load_as(
        &self,
        wasm_path: &Path,
        manifest: Manifest,
        manifest_text: &str,
        cold: Cold,
    ) -> Result<Plugin, RuntimeError> {
        let bytes = std::fs::read(wasm_path).map_err(|source| RuntimeError::Read {
            path: wasm_path.to_owned(),
            source,
        })?;
        check_header(&bytes)?;
        let digest = digest(&bytes);
        if let Some(pin) = &manifest.sha256 {
            if !pin.eq_ignore_ascii_case(&digest) {
                return Err(RuntimeError::PinMismatch {
                    pinned: pin.clone(),
                    actual: digest,
                });
            }
        }
        let (component, stats) = self.engine.load_component(&bytes, &digest)?;
        let layer = detect_layer(self.engine.engine(), &component)?;
        if let Some(declared) = manifest.layer {
            if declared != layer {
                return Err(RuntimeError::LayerMismatch {
                    declared,
                    detected: layer,
                });
            }
        }
        let pre = self.layer_pre(layer, &component)?;
        let ty = component.component_type();
        let imports = ty
            .imports(self.engine.engine())
            .map(|(n, _)| n.to_string())
            .collect();
        let name = plugin_name(wasm_path);
        let init = match super::init::export_index(&component) {
            None => Initialized::none(pre),
            Some(_) if self.init_mode == InitMode::Off => Initialized {
                mode: InitMode::Off.as_str(),
                ..Initialized::none(pre)
            },
            Some(index) => self.initialize(
                wasm_path, &name, &bytes, &digest, &manifest, layer, pre, index, cold,
            )?,
        };
        let info = PluginInfo {
            name,
            layer,
            world: layer.world(),
            digest: digest.clone(),
            path: wasm_path.to_owned(),
            size_bytes: bytes.len() as u64,
            loaded_at_ms: now_ms(),
            compile_ms: stats.elapsed.as_secs_f64() * 1e3,
            compile_cached: stats.cached,
            imports,
            init: init.mode,
            init_cached: init.cached,
            init_ms: init.elapsed_ms,
        };
        let fingerprint = fingerprint(&digest, manifest_text);
        Ok(Plugin::new(
            info,
            manifest,
            fingerprint,
            init.pre,
            init.per_instance,
            self.engine.clone(),
            self.counters.clone(),
        ))
    }
}

/// What a load does for a plugin with `init` whose snapshot is not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cold {
    /// Make the snapshot now (seconds: instrument, init, snapshot, compile).
    SnapshotNow,
    /// Serve at once with `init` called on every fresh instance, and make
    /// the snapshot on a thread of its own for the next load: a config
    /// reload must not wait seconds for a pipeline's new plugin settings.
    SnapshotLater,
}

/// A plugin's serving component after its `init` (if any).
struct Initialized {
    pre: LayerPre,
    per_instance: Option<wasmtime::component::ComponentExportIndex>,
    mode: &'static str,
    cached: bool,
    elapsed_ms: f64,
}

impl Initialized {
    fn none(pre: LayerPre) -> Self {
        Self {
            pre,
            per_instance: None,
            mode: "none",
            cached: false,
            elapsed_ms: 0.0,
        }
    }
}

impl Runtime {
    /// Links `component` and checks its exports against `layer`'s world.
    fn layer_pre(&self, layer: Layer, component: &Component) -> Result<LayerPre, RuntimeError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| RuntimeError::Link {
                import: format!("{e:#}"),
            })?;
        LayerPre::new(layer, pre).map_err(|e| RuntimeError::UnknownWorld {
            expected: layer.world().to_string(),
            found: format!("{e:#}"),
        })
    }

    /// Runs the plugin's `init` with its config: snapshots the initialized
    /// instance (or takes the snapshot from the cache), or, where wizer
    /// cannot rewrite the component, checks `init` once and calls it on
    /// every fresh instance. A failing `init` refuses the plugin.
    #[allow(clippy::too_many_arguments)]
    fn initialize(
        &self,
        path: &Path,
        name: &str,
        wasm: &[u8],
        digest: &str,
        manifest: &Manifest,
        layer: Layer,
        pre: LayerPre,
        index: wasmtime::component::ComponentExportIndex,
        cold: Cold,
    ) -> Result<Initialized, RuntimeError> {
        let started = std::time::Instant::now();
        let config = manifest.config_json();
        let cached = || {
            self.engine
                .cache_path(&super::init::cache_key(digest, &config, manifest))
                .is_file()
        };
        let later = cold == Cold::SnapshotLater && !cached();
        let store = || {
            super::plugin::new_store(
                &self.engine,
                Arc::from(name),
                manifest,
                self.counters.clone(),
            )
        };
        let refused = |cause| RuntimeError::Init {
            path: path.to_owned(),
            cause,
        };
        if self.init_mode == InitMode::Snapshot && later {
            self.snapshot_in_background(name, wasm, digest, &config, manifest);
        }
        if self.init_mode == InitMode::Snapshot && !later {
            match super::init::snapshot(
                &self.engine,
                &self.linker,
                wasm,
                digest,
                &config,
                manifest,
                store(),
            ) {
                Ok(snap) => {
                    let elapsed_ms = if snap.cached {
                        0.0
                    } else {
                        started.elapsed().as_secs_f64() * 1e3
                    };
                    tracing::debug!(plugin = %name, cached = snap.cached, elapsed_ms, "plugin initialized from a snapshot");
                    return Ok(Initialized {
                        pre: self.layer_pre(layer, &snap.component)?,
                        per_instance: None,
                        mode: InitMode::Snapshot.as_str(),
                        cached: snap.cached,
                        elapsed_ms,
                    });
                }
                Err(super::init::InitFailure::Plugin(cause)) => return Err(refused(cause)),
                Err(super::init::InitFailure::Unsupported(why)) => {
                    tracing::warn!(plugin = %name, "cannot snapshot the plugin after init; calling init on every fresh instance: {why}");
                }
            }
        }
        // Per instance: check once now, so a failing init refuses the plugin.
        let mut store = store();
        let instance = pre.instantiate_raw(&mut store).map_err(|e| {
            refused(match super::plugin::classify(e, manifest) {
                super::error::CallFailure::Trap { message } => {
                    super::error::CallFailure::Instantiate { message }
                }
                other => other,
            })
        })?;
        super::init::call(&mut store, &instance, &index, &config, manifest).map_err(refused)?;
        Ok(Initialized {
            pre,
            per_instance: Some(index),
            mode: InitMode::PerInstance.as_str(),
            cached: false,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}

impl Runtime {
    /// A plugin serving with `init` per instance whose snapshot has been
    /// made since (in the background): loading it again would serve the
    /// snapshot.
    pub(crate) fn snapshot_ready(&self, p: &Plugin) -> bool {
        self.init_mode == InitMode::Snapshot
            && p.info().init == InitMode::PerInstance.as_str()
            && self
                .engine
                .cache_path(&super::init::cache_key(
                    p.digest(),
                    &p.manifest().config_json(),
                    p.manifest(),
                ))
                .is_file()
    }

    /// Makes and caches the snapshot of `wasm` initialized with `config` on
    /// a thread of its own; a failure there is logged (the plugin serves
    /// with `init` per instance, and the next load tries again).
    fn snapshot_in_background(
        &self,
        name: &str,
        wasm: &[u8],
        digest: &str,
        config: &str,
        manifest: &Manifest,
    ) {
        let (engine, linker, counters) = (
            self.engine.clone(),
            self.linker.clone(),
            self.counters.clone(),
        );
        let (name, wasm, digest, config, manifest) = (
            Arc::<str>::from(name),
            wasm.to_vec(),
            digest.to_owned(),
            config.to_owned(),
            manifest.clone(),
        );
        let named = name.clone();
        let spawned = std::thread::Builder::new()
            .name("reins-snapshot".into())
            .spawn(move || {
                let store = super::plugin::new_store(&engine, named.clone(), &manifest, counters);
                match super::init::snapshot(
                    &engine, &linker, &wasm, &digest, &config, &manifest, store,
                ) {
                    Ok(_) => tracing::debug!(plugin = %named, "snapshot made for the next load"),
                    Err(super::init::InitFailure::Plugin(e)) => {
                        tracing::warn!(plugin = %named, "snapshot not made: init failed: {e}")
                    }
                    Err(super::init::InitFailure::Unsupported(why)) => {
                        tracing::debug!(plugin = %named, "no snapshot: {why}")
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(plugin = %name, "no thread for the snapshot: {e}");
        }
    }
}

/// What the host knows about one file in the plugins directory.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub path: PathBuf,
    /// `loaded`, `disabled` or `refused`.
    pub status: &'static str,
    /// Layer, digest and load time of the version that is serving, if any
    /// (a refused update keeps the previous version serving).
    pub layer: Option<Layer>,
    pub digest: Option<String>,
    pub loaded_at_ms: Option<u64>,
    pub last_error: Option<String>,
}

/// An immutable snapshot of every plugin that is serving. A run holds one
/// snapshot from start to end, so a reload never changes a run midway.
#[derive(Default)]
pub struct PluginSet {
    plugins: BTreeMap<String, Arc<Plugin>>,
    statuses: BTreeMap<String, PluginStatus>,
    generation: u64,
    /// Plugins under a pipeline's own settings, served under
    /// [`Variant::key`] next to the files; rebuilt when their file changes.
    variants: Vec<Variant>,
}

impl PluginSet {
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    pub fn plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    pub fn statuses(&self) -> Vec<PluginStatus> {
        self.statuses.values().cloned().collect()
    }

    /// Increases by one with every swap; tells callers which set served them.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The variants this set serves besides its files.
    pub fn variants(&self) -> &[Variant] {
        &self.variants
    }

    /// This set serving exactly `wanted` as variants (built `cold` where
    /// their snapshot is not cached): those it has are kept,
    /// the others built from their plugin. A variant whose plugin is not
    /// loaded is left out (the pipeline that names it reports the missing
    /// plugin), and so is one that fails to build: its failure, by key, is
    /// returned next to the set.
    pub(crate) fn with_variants(
        &self,
        runtime: &Runtime,
        wanted: &[Variant],
        cold: Cold,
    ) -> (PluginSet, Vec<(String, RuntimeError)>) {
        // The files' plugins: everything but this set's own variants.
        let served: std::collections::BTreeSet<String> =
            self.variants.iter().map(Variant::key).collect();
        let mut next = PluginSet {
            plugins: self
                .plugins
                .iter()
                .filter(|(k, _)| !served.contains(*k))
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect(),
            statuses: self
                .statuses
                .iter()
                .filter(|(k, _)| !served.contains(*k))
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect(),
            generation: self.generation,
            variants: Vec::new(),
        };
        let mut failures = Vec::new();
        for v in wanted {
            let key = v.key();
            if next.plugins.contains_key(&key) {
                continue;
            }
            let Some(base) = self.plugins.get(&v.plugin) else {
                continue;
            };
            // Kept, unless it serves with init per instance and its
            // snapshot is ready now.
            let built = match self.plugins.get(&key) {
                Some(p) if !runtime.snapshot_ready(p) => Ok(p.clone()),
                _ => v.build(runtime, base, cold).map(Arc::new),
            };
            match built {
                Ok(p) => {
                    next.serve_variant(key, base, p);
                    next.variants.push(v.clone());
                }
                Err(e) => failures.push((key, e)),
            }
        }
        (next, failures)
    }

    /// Serves `p` under `key`, its status naming the file of its `base`.
    fn serve_variant(&mut self, key: String, base: &Arc<Plugin>, p: Arc<Plugin>) {
        self.statuses.insert(
            key.clone(),
            status(&key, &base.info().path, "loaded", Some(&p), None),
        );
        self.plugins.insert(key, p);
    }

    /// After a scan: every variant of `previous` again, kept where its
    /// plugin did not change, rebuilt where it did. A variant that fails to
    /// build keeps its previous version serving, like a refused file.
    fn carry_variants(&mut self, runtime: &Runtime, previous: &PluginSet) {
        for v in &previous.variants {
            let key = v.key();
            let old = previous.plugins.get(&key);
            let Some(base) = self.plugins.get(&v.plugin).cloned() else {
                continue;
            };
            let unchanged = previous
                .plugins
                .get(&v.plugin)
                .is_some_and(|p| Arc::ptr_eq(p, &base));
            let outcome = match old {
                Some(old) if unchanged => Ok(old.clone()),
                _ => v.build(runtime, &base, Cold::SnapshotLater).map(Arc::new),
            };
            match outcome {
                Ok(p) => self.serve_variant(key, &base, p),
                Err(e) => {
                    let message = e.to_string();
                    tracing::warn!(plugin = %key, "plugin variant refused: {message}");
                    self.statuses.insert(
                        key.clone(),
                        status(&key, &base.info().path, "refused", old, Some(message)),
                    );
                    if let Some(old) = old {
                        self.plugins.insert(key, old.clone());
                    }
                }
            }
            self.variants.push(v.clone());
        }
    }

    /// Scans `dir`. Unchanged files reuse their plugin from `previous`; a
    /// file that fails keeps its previous version serving.
    pub fn scan(
        runtime: &Runtime,
        dir: &Path,
        previous: Option<&PluginSet>,
    ) -> Result<Self, RuntimeError> {
        let entries = std::fs::read_dir(dir).map_err(|source| RuntimeError::Directory {
            path: dir.to_owned(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
            .collect();
        files.sort();

        let loaded = load_parallel(runtime, &files, previous);
        let mut set = PluginSet {
            generation: previous.map_or(1, |p| p.generation + 1),
            ..Default::default()
        };
        for (path, outcome) in files.into_iter().zip(loaded) {
            let name = plugin_name(&path);
            let old = previous.and_then(|p| p.plugins.get(&name));
            match outcome {
                Outcome::Disabled => {
                    set.statuses
                        .insert(name.clone(), status(&name, &path, "disabled", None, None));
                }
                Outcome::Loaded(plugin) => {
                    set.statuses.insert(
                        name.clone(),
                        status(&name, &path, "loaded", Some(&plugin), None),
                    );
                    set.plugins.insert(name, plugin);
                }
                Outcome::Refused(err) => {
                    let message = err.to_string();
                    tracing::warn!(plugin = %name, path = %path.display(), "plugin refused: {message}");
                    set.statuses.insert(
                        name.clone(),
                        status(&name, &path, "refused", old, Some(message)),
                    );
                    if let Some(old) = old {
                        set.plugins.insert(name, old.clone());
                    }
                }
            }
        }
        if let Some(previous) = previous {
            set.carry_variants(runtime, previous);
        }
        Ok(set)
    }
}

enum Outcome {
    Loaded(Arc<Plugin>),
    Disabled,
    Refused(RuntimeError),
}

/// Loads files on as many threads as there are cores; each compile is
/// itself parallel, so this mostly overlaps I/O and small components.
fn load_parallel(
    runtime: &Runtime,
    files: &[PathBuf],
    previous: Option<&PluginSet>,
) -> Vec<Outcome> {
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(files.len().max(1));
    let mut out: Vec<Option<Outcome>> = (0..files.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let chunks: Vec<_> = out
            .chunks_mut(files.len().div_ceil(threads).max(1))
            .zip(files.chunks(files.len().div_ceil(threads).max(1)))
            .map(|(slots, paths)| {
                s.spawn(move || {
                    for (slot, path) in slots.iter_mut().zip(paths) {
                        *slot = Some(load_one(runtime, path, previous));
                    }
                })
            })
            .collect();
        for c in chunks {
            let _ = c.join();
        }
    });
    out.into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                Outcome::Refused(RuntimeError::Engine {
                    message: "loader thread panicked".into(),
                })
            })
        })
        .collect()
}

fn load_one(runtime: &Runtime, path: &Path, previous: Option<&PluginSet>) -> Outcome {
    let manifest_path = path.with_extension("toml");
    let manifest_text = match std::fs::read_to_string(&manifest_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Outcome::Refused(RuntimeError::Read {
                path: manifest_path,
                source,
            });
        }
    };
    let manifest = match Manifest::parse(&manifest_text, &manifest_path) {
        Ok(m) => m,
        Err(e) => return Outcome::Refused(e.into()),
    };
    if !manifest.enabled {
        return Outcome::Disabled;
    }
    // Reuse the compiled plugin when neither the bytes nor the manifest changed.
    if let Some(old) = previous.and_then(|p| p.plugins.get(&plugin_name(path))) {
        if let Ok(bytes) = std::fs::read(path) {
            if old.fingerprint() == fingerprint(&digest(&bytes), &manifest_text) {
                return Outcome::Loaded(old.clone());
            }
        }
    }
    match runtime.load_with_manifest(path, manifest, &manifest_text) {
        Ok(p) => Outcome::Loaded(Arc::new(p)),
        Err(e) => Outcome::Refused(e),
    }
}

fn status(
    name: &str,
    path: &Path,
    status: &'static str,
    p: Option<&Arc<Plugin>>,
    err: Option<String>,
) -> PluginStatus {
    PluginStatus {
        name: name.to_string(),
        path: path.to_owned(),
        status,
        layer: p.map(|p| p.layer()),
        digest: p.map(|p| p.digest().to_string()),
        loaded_at_ms: p.map(|p| p.info().loaded_at_ms),
        last_error: err,
    }
}

/// A plugin is named by its file stem: `plugins/json-schema.wasm` is `json-schema`.
pub fn plugin_name(path: &Path) -> String {
    path.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}

fn fingerprint(digest: &str, manifest_text: &str) -> String {
    format!(
        "{digest}:{}",
        super::engine::digest(manifest_text.as_bytes())
    )
}

fn check_header(bytes: &[u8]) -> Result<(), RuntimeError> {
    if bytes.len() >= 8 && bytes[..8] == COMPONENT_HEADER {
        return Ok(());
    }
    let message = if bytes.len() >= 8 && bytes[..8] == MODULE_HEADER {
        "this is a core WebAssembly module; build it as a component (target wasm32-wasip2, or `wasm-tools component new`)".to_string()
    } else if bytes.len() >= 4 && bytes[..4] == COMPONENT_HEADER[..4] {
        "WebAssembly of an unknown version or layer".to_string()
    } else {
        format!(
            "the file does not start with the WebAssembly magic bytes ({} bytes long)",
            bytes.len()
        )
    };
    Err(RuntimeError::NotAComponent { message })
}

/// The layer is whichever Reins interface the component exports.
fn detect_layer(engine: &wasmtime::Engine, component: &Component) -> Result<Layer, RuntimeError> {
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(n, _)| n.to_string())
        .collect();
    let found: Vec<Layer> = Layer::ALL
        .into_iter()
        .filter(|l| exports.iter().any(|e| e == l.interface()))
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        // A layer that also checks streams is that layer.
        [a, b] if *a == Layer::StreamChecker || *b == Layer::StreamChecker => {
            Ok(if *a == Layer::StreamChecker { *b } else { *a })
        }
        [] => Err(RuntimeError::UnknownWorld {
            expected: Layer::ALL
                .iter()
                .map(|l| l.interface())
                .collect::<Vec<_>>()
                .join(", "),
            found: if exports.is_empty() {
                "nothing".into()
            } else {
                exports.join(", ")
            },
        }),
        many => Err(RuntimeError::AmbiguousWorld {
            found: many
                .iter()
                .map(|l| l.interface())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
