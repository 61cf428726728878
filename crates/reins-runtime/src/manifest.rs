//! A plugin's sidecar manifest, `NAME.toml` next to `NAME.wasm`.
//!
//! The manifest is the operator's word on a plugin: where it runs in its
//! layer, what it may touch, how much it may spend and what happens when it
//! fails. Unknown keys are refused so that a typo never silently loosens a
//! limit. Where it runs among its layer's plugins is not here: each pipeline
//! lists its plugins in `reins.toml`, and one plugin may sit at different
//! places in different pipelines.

use super::types::Layer;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What happens to a request when this plugin traps, times out or errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// The request fails (the default: a broken guard must not wave traffic through).
    #[default]
    Closed,
    /// The plugin is skipped and the skip is recorded.
    Open,
}

/// How instances are reused between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A fresh instance for every call: nothing can leak between requests.
    #[default]
    PerCall,
    /// Instances are reused up to `max_uses` calls and discarded after any
    /// error; for plugins with expensive set-up (compiling a schema).
    Pooled,
}

/// What a validator can check: one JSON document, prose, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accepts {
    /// A JSON document (the default: validators written before text
    /// pipelines all parse their input as JSON).
    #[default]
    Json,
    /// Prose, as a JSON string.
    Text,
    Any,
}

impl Accepts {
    pub fn as_str(self) -> &'static str {
        match self {
            Accepts::Json => "json",
            Accepts::Text => "text",
            Accepts::Any => "any",
        }
    }
}

/// Resource limits of one call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock deadline of one call.
    pub deadline_ms: u64,
    /// Cap on the plugin's linear memory.
    pub memory_mib: u64,
    /// Optional instruction budget per call (deterministic, unlike the deadline).
    pub fuel: Option<u64>,
    /// Largest result (all strings together) the host accepts from one call.
    pub max_output_kib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline_ms: 50,
            memory_mib: 64,
            fuel: None,
            max_output_kib: 1024,
        }
    }
}

/// Capabilities beyond pure computation. Everything is denied by default: the
/// clock reads as the Unix epoch and randomness is a fixed sequence.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grants {
    pub clock: bool,
    pub random: bool,
    /// Let the plugin's stdout/stderr through to the host's.
    pub stdio: bool,
    pub network: bool,
    pub env: BTreeMap<String, String>,
    /// Read-only directories: guest path → host path.
    pub dirs: BTreeMap<String, PathBuf>,
}

/// A parsed sidecar.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Manifest {
    pub enabled: bool,
    /// If set, the component must export this layer.
    pub layer: Option<Layer>,
    /// Validators: what output they check (`json`, `text` or `any`). In a
    /// text pipeline the output is handed over as a JSON string.
    pub accepts: Accepts,
    pub fail_mode: FailMode,
    pub isolation: Isolation,
    /// Pooled isolation: idle instances kept per plugin.
    pub pool_size: usize,
    /// Pooled isolation: calls served by one instance before it is replaced.
    pub max_uses: u32,
    /// Hex sha256 the `.wasm` must have.
    pub sha256: Option<String>,
    pub limits: Limits,
    pub grants: Grants,
    /// Handed to every call as the context's `config` JSON object (a
    /// pipeline may merge settings of its own over it: [`crate::Variant`]).
    pub config: serde_json::Map<String, serde_json::Value>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            enabled: true,
            layer: None,
            accepts: Accepts::Json,
            fail_mode: FailMode::Closed,
            isolation: Isolation::PerCall,
            pool_size: 4,
            max_uses: 10_000,
            sha256: None,
            limits: Limits::default(),
            grants: Grants::default(),
            config: serde_json::Map::new(),
        }
    }
}

/// Why a sidecar was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A key older sidecars carry that no longer means anything; named on
    /// its own so the operator learns what replaced it, not just that serde
    /// did not know it.
    #[error("{path}: `{key}` was removed: {instead}; delete the line")]
    Removed {
        path: PathBuf,
        key: &'static str,
        instead: &'static str,
    },
}

/// Top-level keys sidecars once had, and what took their place.
const REMOVED_KEYS: &[(&str, &str)] = &[(
    "order",
    "plugins run in the order the pipeline lists them in reins.toml (`normalizers`, `validators`, `gates`)",
)];

impl Manifest {
    /// Reads `path` if it exists; a missing sidecar means all defaults.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(ManifestError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    /// Parses manifest text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let m: Manifest = toml::from_str(text).map_err(|e| {
            Self::removed_key(text, path).unwrap_or_else(|| ManifestError::Invalid {
                path: path.to_owned(),
                message: e.to_string().trim_end().to_string(),
            })
        })?;
        m.check().map_err(|message| ManifestError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(m)
    }

    /// Only asked once parsing failed, so a valid sidecar is parsed once.
    fn removed_key(text: &str, path: &Path) -> Option<ManifestError> {
        let table: toml::Table = toml::from_str(text).ok()?;
        REMOVED_KEYS
            .iter()
            .find(|(key, _)| table.contains_key(*key))
            .map(|&(key, instead)| ManifestError::Removed {
                path: path.to_owned(),
                key,
                instead,
            })
    }

    fn check(&self) -> Result<(), String> {
        if self.limits.deadline_ms == 0 {
            return Err("limits.deadline_ms must be at least 1".into());
        }
        if self.limits.memory_mib == 0 {
            return Err("limits.memory_mib must be at least 1".into());
        }
        if self.isolation == Isolation::Pooled && (self.pool_size == 0 || self.max_uses == 0) {
            return Err("pooled isolation needs pool_size >= 1 and max_uses >= 1".into());
        }
        if let Some(pin) = &self.sha256 {
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("sha256 must be 64 hex digits, got {pin:?}"));
            }
        }
        for host in self.grants.dirs.values() {
            if !host.is_dir() {
                return Err(format!(
                    "grants.dirs: {} is not a directory",
                    host.display()
                ));
            }
        }
        Ok(())
    }

    /// The `config` table as the JSON object plugins receive.
    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.config).unwrap_or_else(|_| "{}".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = Manifest::parse("dedline_ms = 5\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("dedline_ms"), "{err}");
        let err = Manifest::parse("[limits]\nmemory = 5\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn a_removed_key_says_what_replaced_it() {
        let err =
            Manifest::parse("order = 10\nfail_mode = \"open\"\n", Path::new("x.toml")).unwrap_err();
        assert!(
            matches!(err, ManifestError::Removed { key: "order", .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("`order` was removed") && message.contains("reins.toml"),
            "{message}"
        );
    }

    #[test]
    fn defaults_are_safe() {
        let m = Manifest::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(m.fail_mode, FailMode::Closed);
        assert_eq!(m.isolation, Isolation::PerCall);
        assert_eq!(m.limits.deadline_ms, 50);
        assert_eq!(m.limits.memory_mib, 64);
        assert!(!m.grants.clock && !m.grants.random && !m.grants.network);
    }

    #[test]
    fn config_becomes_a_json_object() {
        let m = Manifest::parse("[config]\nmax = 3\nname = \"a\"\n", Path::new("x.toml")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&m.config_json()).unwrap();
        assert_eq!(v, serde_json::json!({"max": 3, "name": "a"}));
    }

    #[test]
    fn bad_pin_is_refused() {
        let err = Manifest::parse("sha256 = \"abc\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
    }
}
