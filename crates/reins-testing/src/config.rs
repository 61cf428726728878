//! A small builder for `reins.toml` text. Tests describe the parts they
//! care about (their pipelines, mostly as text) and the builder adds what
//! every test config needs: the plugins dir, the shared compile cache, and
//! providers in the shapes the fakes of [`crate::model`] expect.
//!
//! Top-level keys are kept apart from tables, so the order of calls never
//! puts a key into the wrong table.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct Config {
    keys: String,
    tables: String,
}

impl Config {
    pub fn new() -> Config {
        Config::default()
    }

    /// `plugins_dir`: relative paths are read from the config's directory.
    pub fn plugins_dir(mut self, dir: impl AsRef<Path>) -> Config {
        self.keys.push_str(&format!(
            "plugins_dir = {:?}\n",
            dir.as_ref().display().to_string()
        ));
        self
    }

    /// `[runtime] cache_dir`: the compile cache every test shares, so a
    /// `reins serve` child deserializes what an earlier test compiled.
    pub fn test_cache(self) -> Config {
        let cache = crate::plugins::cache_dir();
        self.table(&format!(
            "[runtime]\ncache_dir = {:?}\n",
            cache.display().to_string()
        ))
    }

    /// A `scripted` provider with these `responses` (TOML or JSON array text).
    pub fn scripted(self, name: &str, responses: &str) -> Config {
        self.table(&format!(
            "[providers.{name}]\nkind = \"scripted\"\nresponses = {responses}\n"
        ))
    }

    /// An `openai` provider on `base_url` (e.g. [`crate::model::Upstream::base_url`])
    /// with more keys in `extra`.
    pub fn openai(self, name: &str, base_url: &str, model: &str, extra: &str) -> Config {
        self.table(&format!(
            "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"{model}\"\n{extra}\n"
        ))
    }

    /// Any tables as text (pipelines, `[state]`, `[server]`).
    pub fn table(mut self, text: &str) -> Config {
        self.tables.push('\n');
        self.tables.push_str(text);
        if !text.ends_with('\n') {
            self.tables.push('\n');
        }
        self
    }

    /// Writes the config as `dir/reins.toml` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("reins.toml");
        std::fs::write(&path, self.to_string()).expect("write reins.toml");
        path
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.keys, self.tables)
    }
}
