//! A plugin with a pipeline's own settings: the same component, its
//! sidecar's `config` with the pipeline's keys merged over it. Two pipelines
//! can then use one plugin with different settings, each with its own pool
//! and its own `init` snapshot (both follow the plugin's config).

use super::error::RuntimeError;
use super::loader::Runtime;
use super::plugin::Plugin;
use serde_json::{Map, Value};
use std::sync::Arc;

/// One plugin under settings of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The plugin's name in the plugins directory.
    pub plugin: String,
    /// Top-level keys that replace the sidecar's.
    pub config: Map<String, Value>,
}

impl Variant {
    /// Its name in a plugin set: the plugin's, `#`, and 12 hex digits of the
    /// settings' SHA-256. Equal settings share one variant (and its pool).
    pub fn key(&self) -> String {
        let text = Value::Object(self.config.clone()).to_string();
        let digest = super::engine::digest(text.as_bytes());
        format!("{}#{}", self.plugin, &digest[..12])
    }

    /// Builds the variant from `base` (the plugin as its sidecar sets it up).
    /// The component is compiled already; a snapshot cached for these
    /// settings serves at once, else `cold` decides (at start, snapshot now
    /// like every plugin; on a reload, serve with `init` per instance while
    /// the snapshot is made in the background: a reload should take
    /// milliseconds, not seconds).
    pub(crate) fn build(
        &self,
        runtime: &Runtime,
        base: &Arc<Plugin>,
        cold: super::loader::Cold,
    ) -> Result<Plugin, RuntimeError> {
        let mut manifest = base.manifest().clone();
        for (k, v) in &self.config {
            manifest.config.insert(k.clone(), v.clone());
        }
        let key = self.key();
        let plugin = runtime.load_as(&base.info().path, manifest, &key, cold)?;
        if plugin.digest() != base.digest() {
            // The file changed between the scan and now: the watcher's
            // next scan rebuilds both from the new bytes.
            return Err(RuntimeError::Engine {
                message: format!(
                    "{} changed on disk while `{key}` was being set up; the next reload retries",
                    base.info().path.display()
                ),
            });
        }
        Ok(plugin)
    }
}
