//! The one wasmtime `Engine`, its epoch ticker and its on-disk compile cache.

use super::error::RuntimeError;
use super::settings::{Allocator, RuntimeSettings};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Core instances per component instance that the pool reserves room for.
/// A Rust `wasm32-wasip2` component instantiates 3 core modules (main module
/// plus the adapter's shims), a componentize-js one 4, a componentize-py one
/// 14 (libpython, libc and friends are separate modules); 16 lets every
/// component slot hold a Python plugin. Only the pool's total grows (address
/// space for instance records); a call costs the same.
const CORE_INSTANCES_PER_COMPONENT: u32 = 16;

/// The engine plus what keeps it honest: the ticker that turns wall deadlines
/// into epoch interrupts, and the cache that makes restarts cheap.
pub struct EngineHandle {
    engine: Engine,
    tick: Duration,
    cache_dir: PathBuf,
    engine_key: String,
    allocator: Allocator,
    stop: Arc<AtomicBool>,
}

impl EngineHandle {
    /// Builds the engine with the pooling allocator when it can be mapped,
    /// falling back to on-demand allocation with a warning.
    pub fn new(settings: &RuntimeSettings) -> Result<Self, RuntimeError> {
        let max_memory = settings.pool.max_memory_mib.max(1) << 20;
        let (engine, allocator) = match settings.allocator {
            Allocator::Pooling => match Engine::new(&config(Some(settings), max_memory)) {
                Ok(e) => (e, Allocator::Pooling),
                Err(e) => {
                    tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
                    (build(None, max_memory)?, Allocator::OnDemand)
                }
            },
            Allocator::OnDemand => (build(None, max_memory)?, Allocator::OnDemand),
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_key = format!("{}-{:016x}", env!("CARGO_PKG_VERSION"), h.finish());
        let tick = Duration::from_millis(settings.epoch_tick_ms.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.weak(), tick, stop.clone())?;
        Ok(Self {
            engine,
            tick,
            cache_dir: settings.resolved_cache_dir(),
            engine_key,
            allocator,
            stop,
        })
    }

    /// The engine all plugins share.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Which allocator the engine ended up with.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// Epoch ticks that cover `deadline` (at least two, so a call never
    /// starts with its deadline already due).
    pub fn ticks_for(&self, deadline: Duration) -> u64 {
        let tick = self.tick.as_nanos().max(1);
        (deadline.as_nanos().div_ceil(tick) as u64).max(1) + 1
    }

    /// Compiles `wasm` or loads the cached artifact for the same bytes and
    /// engine configuration. Returns the component and whether the cache hit.
    pub fn load_component(
        &self,
        wasm: &[u8],
        digest: &str,
    ) -> Result<(Component, CompileStats), RuntimeError> {
        let started = Instant::now();
        if let Some(c) = self.cached(digest) {
            return Ok((
                c,
                CompileStats {
                    cached: true,
                    elapsed: started.elapsed(),
                },
            ));
        }
        let component = Component::new(&self.engine, wasm).map_err(|e| RuntimeError::Compile {
            message: format!("{e:#}"),
        })?;
        self.store(digest, &component);
        Ok((
            component,
            CompileStats {
                cached: false,
                elapsed: started.elapsed(),
            },
        ))
    }

    /// The compiled component cached under `key` (a source digest, or a
    /// snapshot's key) for this engine, if there is a usable one.
    pub(crate) fn cached(&self, key: &str) -> Option<Component> {
        let path = self.cache_path(key);
        if !path.is_file() {
            return None;
        }
        // SAFETY: the artifact was written by this code, under a name that
        // binds it to its source's sha256 (and, for a snapshot, its config)
        // and to this engine's compatibility hash; wasmtime also checks its
        // own header.
        match unsafe { Component::deserialize_file(&self.engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached artifact");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Writes `component` to the cache under `key`; a failure is logged
    /// (the next load compiles again).
    pub(crate) fn store(&self, key: &str, component: &Component) {
        let path = self.cache_path(key);
        if let Err(e) = self.store_artifact(component, &path) {
            tracing::warn!(path = %path.display(), error = %e, "could not write compile cache");
        }
    }

    /// Where the artifact cached under `key` lives (whether or not it exists).
    pub fn cache_path(&self, key: &str) -> PathBuf {
        self.cache_dir
            .join(format!("{key}-{}.cwasm", self.engine_key))
    }

    fn store_artifact(&self, component: &Component, path: &Path) -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        std::fs::create_dir_all(&self.cache_dir)?;
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy)]
pub struct CompileStats {
    pub cached: bool,
    pub elapsed: Duration,
}

/// Hex sha256 of a plugin's bytes: its identity in caches, pins and errors.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn build(settings: Option<&RuntimeSettings>, max_memory: u64) -> Result<Engine, RuntimeError> {
    Engine::new(&config(settings, max_memory)).map_err(|e| RuntimeError::Engine {
        message: format!("{e:#}"),
    })
}

fn config(pooling: Option<&RuntimeSettings>, max_memory: u64) -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.consume_fuel(true);
    c.parallel_compilation(true);
    if let Some(settings) = pooling {
        let n = settings.pool.instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n * CORE_INSTANCES_PER_COMPONENT)
            .total_memories(n)
            .total_tables(n * 2)
            .max_memory_size(max_memory as usize)
            .linear_memory_keep_resident((settings.pool.keep_resident_kib << 10) as usize)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    c
}

/// Advances the engine's epoch every `tick` until the engine is dropped.
fn spawn_ticker(
    engine: wasmtime::EngineWeak,
    tick: Duration,
    stop: Arc<AtomicBool>,
) -> Result<(), RuntimeError> {
    std::thread::Builder::new()
        .name("reins-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                match engine.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| RuntimeError::Engine {
            message: format!("cannot start the epoch ticker: {e}"),
        })
}
