//! Generated bindings for the WIT worlds in `wit/reins.wit`.
//!
//! `types` and `host` are generated once (world `host-imports`) and shared by
//! every plugin world through `with`, so a `Violation` from a validator and a
//! finding from a normalizer are the same Rust type.

pub mod shared {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "host-imports",
    });
}

pub use shared::reins::policy::{host as host_iface, judge as judge_iface, types as wit_types};

macro_rules! plugin_world {
    ($module:ident, $world:literal) => {
        pub mod $module {
            wasmtime::component::bindgen!({
                path: "../../wit",
                world: $world,
                with: {
                    "reins:policy/types": super::shared::reins::policy::types,
                    "reins:policy/host": super::shared::reins::policy::host,
                },
            });
        }
    };
}

plugin_world!(normalizer, "normalizer-plugin");
plugin_world!(validator, "validator-plugin");
plugin_world!(gate, "gate-plugin");
plugin_world!(context, "context-plugin");

plugin_world!(constraints, "constraints-plugin");
plugin_world!(stream_checker, "stream-checker-plugin");
