//! Pre-initialized plugins: a component that exports `reins:policy/init`
//! is told its config once, at load, and the initialized instance is
//! snapshotted with wizer, so every later instance starts set up.
//!
//! The snapshot is an ordinary component (the original with its memories
//! and globals as they were after `init`), compiled and cached on disk next
//! to the compile cache, keyed by the component's digest, the config's
//! digest and the engine's compatibility hash. A component wizer cannot
//! rewrite (e.g. one that is already a wizened language runtime) falls back
//! to calling `init` on every fresh instance.

use super::engine::{EngineHandle, digest};
use super::error::CallFailure;
use super::manifest::Manifest;
use super::state::StoreState;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use wasmtime::Store;
use wasmtime::component::{Component, ComponentExportIndex, Instance, Linker, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

/// The interface a plugin exports to be initialized.
pub const INIT_INTERFACE: &str = "reins:policy/init@0.2.0";
const INIT_FUNC: &str = "init";

/// The typed signature of `init: func(config: json) -> result<_, string>`.
type InitFunc = wasmtime::component::TypedFunc<(String,), (Result<(), String>,)>;

/// Where `component` exports `init`, if it does.
pub(crate) fn export_index(component: &Component) -> Option<ComponentExportIndex> {
    let iface = component.get_export_index(None, INIT_INTERFACE)?;
    component.get_export_index(Some(&iface), INIT_FUNC)
}

/// Why a plugin was not pre-initialized.
#[derive(Debug)]
pub(crate) enum InitFailure {
    /// The plugin's own `init` failed (returned `err`, trapped, ran out of
    /// fuel or time): the plugin is refused.
    Plugin(CallFailure),
    /// Wizer cannot snapshot this component; the host calls `init` on each
    /// fresh instance instead.
    Unsupported(String),
}

/// Calls `init(config)` on a live instance under the store's deadline and fuel.
pub(crate) fn call(
    store: &mut Store<StoreState>,
    instance: &Instance,
    index: &ComponentExportIndex,
    config: &str,
    manifest: &Manifest,
) -> Result<(), CallFailure> {
    let func: InitFunc =
        instance
            .get_typed_func(&mut *store, index)
            .map_err(|e| CallFailure::Instantiate {
                message: format!("`{INIT_INTERFACE}#{INIT_FUNC}` has the wrong type: {e:#}"),
            })?;
    match func.call(&mut *store, (config.to_string(),)) {
        Ok((Ok(()),)) => Ok(()),
        Ok((Err(message),)) => Err(CallFailure::Refused {
            message: super::plugin::truncate(&message, 2048),
        }),
        Err(e) => Err(super::plugin::classify(e, manifest)),
    }
}

/// What [`snapshot`] made.
pub(crate) struct Snapshot {
    pub component: Component,
    /// The compiled snapshot came from the disk cache (`init` did not run).
    pub cached: bool,
}

/// The cache key of a snapshot: which bytes, initialized with which config
/// (and under which grants and limits: a snapshot made under a larger
/// budget or with the clock granted is not reused for another manifest).
pub(crate) fn cache_key(wasm_digest: &str, config: &str, manifest: &Manifest) -> String {
    let material = format!("{config}\n{:?}\n{:?}", manifest.grants, manifest.limits);
    let config_digest = digest(material.as_bytes());
    format!("{wasm_digest}-init-{}", &config_digest[..16])
}

/// Instruments `wasm`, instantiates it in `store`, calls `init(config)` and
/// snapshots the result into a compiled component (or loads one from the
/// cache).
pub(crate) fn snapshot(
    engine: &EngineHandle,
    linker: &Linker<StoreState>,
    wasm: &[u8],
    wasm_digest: &str,
    config: &str,
    manifest: &Manifest,
    mut store: Store<StoreState>,
) -> Result<Snapshot, InitFailure> {
    let key = cache_key(wasm_digest, config, manifest);
    if let Some(component) = engine.cached(&key) {
        return Ok(Snapshot {
            component,
            cached: true,
        });
    }
    let wizer = Wizer::new();
    let unsupported =
        |what: &str, e: wasmtime::Error| InitFailure::Unsupported(format!("{what}: {e:#}"));
    let (cx, instrumented) = std::panic::catch_unwind(|| wizer.instrument_component(wasm))
        .map_err(|_| {
            InitFailure::Unsupported("wizer panicked while instrumenting the component".into())
        })?
        .map_err(|e| unsupported("wizer cannot instrument this component", e))?;
    let component = Component::new(engine.engine(), &instrumented)
        .map_err(|e| unsupported("the instrumented component does not compile", e))?;
    let index = export_index(&component).ok_or_else(|| {
        InitFailure::Unsupported("the instrumented component lost its init export".into())
    })?;
    // Compiling took time: the deadline starts now.
    super::plugin::arm(engine, manifest, &mut store);
    let instance = linker.instantiate(&mut store, &component).map_err(|e| {
        InitFailure::Plugin(match super::plugin::classify(e, manifest) {
            CallFailure::Trap { message } => CallFailure::Instantiate { message },
            other => other,
        })
    })?;
    call(&mut store, &instance, &index, config, manifest).map_err(InitFailure::Plugin)?;
    // Reading the state out runs accessor functions: give them room.
    let _ = store.set_fuel(u64::MAX);
    store.set_epoch_deadline(u64::MAX / 2);
    let mut access = Access {
        store: &mut store,
        instance,
        error: None,
    };
    // Wizer asserts what it expects of a component (`todo!` for v128
    // globals, say): a panic there is a component it cannot snapshot, not a
    // reason to take the loader down.
    let snapshotted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        block_on(wizer.snapshot_component(&cx, &mut access))
    }))
    .map_err(|_| {
        InitFailure::Unsupported("wizer panicked while reading the initialized state".into())
    })?;
    let bytes = snapshotted.map_err(|e| unsupported("wizer could not snapshot the instance", e))?;
    if let Some(e) = access.error.take() {
        return Err(InitFailure::Unsupported(format!(
            "reading the initialized state: {e}"
        )));
    }
    let component = Component::new(engine.engine(), &bytes)
        .map_err(|e| unsupported("the snapshot does not compile", e))?;
    engine.store(&key, &component);
    Ok(Snapshot {
        component,
        cached: false,
    })
}

/// Reads an instrumented instance's state for wizer, synchronously (the
/// engine has no async support; these futures never wait).
struct Access<'a> {
    store: &'a mut Store<StoreState>,
    instance: Instance,
    /// The first failed accessor call (wizer's interface cannot return one).
    error: Option<String>,
}

impl Access<'_> {
    fn call<R: wasmtime::component::Lift + wasmtime::component::ComponentType + 'static>(
        &mut self,
        instance: &str,
        func: &str,
    ) -> Option<R> {
        let result = (|| {
            let (_, iface) = self
                .instance
                .get_export(&mut *self.store, None, instance)
                .ok_or_else(|| format!("no export {instance}"))?;
            let (_, f) = self
                .instance
                .get_export(&mut *self.store, Some(&iface), func)
                .ok_or_else(|| format!("no export {instance}#{func}"))?;
            let f = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *self.store, f)
                .map_err(|e| format!("{instance}#{func}: {e:#}"))?;
            f.call(&mut *self.store, ())
                .map(|(r,)| r)
                .map_err(|e| format!("{instance}#{func}: {e:#}"))
        })();
        match result {
            Ok(r) => Some(r),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        match self.call::<WasmList<u8>>(instance, func) {
            Some(list) => contents(list.as_le_slice(&*self.store)),
            None => contents(&[]),
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).unwrap_or(0)
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).unwrap_or(0)
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func).map_or(0, f32::to_bits)
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func).map_or(0, f64::to_bits)
    }
}

/// Polls a future that never waits to completion.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}
