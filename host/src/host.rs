//! [`Host`]: Reins as a library. The CLI and the server use exactly this API.

use crate::config::{Config, ConfigError};
use crate::pipeline::{Pipeline, Request, RunError, RunResult, engine};
use crate::provider::{self, Breaker, BreakerSettings, Provider};
use crate::runtime::PluginHost;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded configuration: plugins, providers and compiled pipelines.
///
/// Build one per process (from a `reins.toml` or with [`Host::builder`]) and
/// share it: [`Host::run`] takes `&self` and runs any number of requests
/// concurrently. Every run holds the plugin snapshot it started with, so a
/// hot reload never changes a run midway.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use reins::Host;
/// use reins::pipeline::{Request, RunStatus};
///
/// let plugins = tempfile::tempdir()?; // no plugins: JSON Schema only
/// let config = r#"
///     plugins_dir = "."
///
///     [providers.replay]
///     kind = "scripted"
///     responses = [
///         'Here you go: {"total": "12 EUR"}',
///         '''```json
///         {"total": 12}
///         ```''',
///     ]
///
///     [pipelines.invoice]
///     model = "replay"
///     system_prompt = "Extract the invoice total as JSON."
///     schema = { type = "object", required = ["total"], properties = { total = { type = "number" } } }
///     repair = { max_attempts = 2 }
/// "#;
/// let host = Host::builder().config_str(config, plugins.path()).build().await?;
///
/// let result = host.run("invoice", Request::text("Total due: 12 EUR")).await;
/// assert_eq!(result.status, RunStatus::Completed);
/// assert_eq!(result.output, Some(serde_json::json!({"total": 12})));
/// assert_eq!(result.repairs(), 1); // the first answer had a string total
/// eprintln!("{}", result.trace_table());
/// # Ok(()) }
/// ```
pub struct Host {
    config: Config,
    plugins: Arc<PluginHost>,
    providers: BTreeMap<String, Arc<Breaker>>,
    pipelines: BTreeMap<String, Arc<Pipeline>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("config", &self.config.origin)
            .field("pipelines", &self.pipelines.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Loads `reins.toml` at `path`: opens the plugins directory, builds the
    /// providers, compiles every pipeline and checks every plugin it names.
    pub async fn from_config(path: impl AsRef<Path>) -> Result<Host, ConfigError> {
        Host::builder().config_file(path).build().await
    }

    /// A builder, for configs that are not files, shared plugin hosts and
    /// providers made in code.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// Runs `request` through pipeline `pipeline`. Never fails outright:
    /// every failure is in the result's `status` and `error`, next to the
    /// trace of what happened before it.
    pub async fn run(&self, pipeline: &str, request: impl Into<Request>) -> RunResult {
        let request = request.into();
        match self.pipelines.get(pipeline) {
            Some(p) => engine::run(p, self.plugins.current(), request).await,
            None => {
                let mut result = RunResult::new(
                    request.run_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    pipeline,
                );
                result.error = Some(RunError::UnknownPipeline(pipeline.to_owned()));
                result
            }
        }
    }

    /// A compiled pipeline.
    pub fn pipeline(&self, name: &str) -> Option<&Arc<Pipeline>> {
        self.pipelines.get(name)
    }

    /// The names of the pipelines.
    pub fn pipeline_names(&self) -> impl Iterator<Item = &str> {
        self.pipelines.keys().map(String::as_str)
    }

    /// A provider by its config name (downcast with [`Provider::as_any`]).
    pub fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers.get(name).map(|b| b.provider())
    }

    /// A provider with its circuit breaker.
    pub fn breaker(&self, name: &str) -> Option<&Arc<Breaker>> {
        self.providers.get(name)
    }

    /// The plugin host (statuses, reloads).
    pub fn plugins(&self) -> &Arc<PluginHost> {
        &self.plugins
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

enum Source {
    File(PathBuf),
    Text { text: String, base_dir: PathBuf },
    Parsed(Box<Config>),
}

/// Builds a [`Host`].
#[derive(Default)]
pub struct HostBuilder {
    source: Option<Source>,
    providers: BTreeMap<String, Arc<dyn Provider>>,
    plugins: Option<Arc<PluginHost>>,
    watch: Option<bool>,
}

impl HostBuilder {
    /// Reads the config from a file (relative paths resolve against its directory).
    pub fn config_file(mut self, path: impl AsRef<Path>) -> Self {
        self.source = Some(Source::File(path.as_ref().to_owned()));
        self
    }

    /// Parses config text; relative paths resolve against `base_dir`.
    pub fn config_str(mut self, text: impl Into<String>, base_dir: impl AsRef<Path>) -> Self {
        self.source = Some(Source::Text {
            text: text.into(),
            base_dir: base_dir.as_ref().to_owned(),
        });
        self
    }

    /// Uses an already parsed config.
    pub fn config(mut self, config: Config) -> Self {
        self.source = Some(Source::Parsed(Box::new(config)));
        self
    }

    /// Replaces the provider the config defines under `name` with one made in
    /// code (the config must still define `name`, so that pipelines can refer to it).
    pub fn provider(mut self, name: impl Into<String>, provider: Arc<dyn Provider>) -> Self {
        self.providers.insert(name.into(), provider);
        self
    }

    /// Uses an open plugin host instead of opening `plugins_dir`.
    pub fn plugin_host(mut self, plugins: Arc<PluginHost>) -> Self {
        self.plugins = Some(plugins);
        self
    }

    /// Overrides the config's `watch` (hot reload of the plugins directory).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = Some(watch);
        self
    }

    pub async fn build(self) -> Result<Host, ConfigError> {
        let config = match self.source {
            None => {
                return Err(ConfigError::Io {
                    path: PathBuf::from("reins.toml"),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no configuration given to the builder"),
                });
            }
            Some(Source::File(path)) => Config::from_file(&path)?,
            Some(Source::Text { text, base_dir }) => Config::parse(&text, "<config>", &base_dir)?,
            Some(Source::Parsed(c)) => *c,
        };
        let mut providers = BTreeMap::new();
        for (name, pc) in &config.providers {
            let provider = match self.providers.get(name) {
                Some(p) => p.clone(),
                None => provider::from_config(name, pc, &config.base_dir)?,
            };
            providers.insert(
                name.clone(),
                Arc::new(Breaker::new(provider, BreakerSettings::for_config(pc))),
            );
        }
        let mut pipelines = BTreeMap::new();
        for name in config.pipelines.keys() {
            pipelines.insert(name.clone(), Arc::new(Pipeline::compile(&config, name, &providers)?));
        }
        let plugins = match self.plugins {
            Some(p) => p,
            None => {
                let dir = config.plugins_dir();
                let settings = config.runtime.clone();
                let watch = self.watch.unwrap_or(config.watch);
                let open_dir = dir.clone();
                tokio::task::spawn_blocking(move || PluginHost::open(&open_dir, &settings, watch))
                    .await
                    .map_err(|e| ConfigError::Runtime {
                        dir: dir.clone(),
                        source: Box::new(crate::runtime::RuntimeError::Engine {
                            message: format!("loader task failed: {e}"),
                        }),
                    })?
                    .map_err(|source| ConfigError::Runtime {
                        dir,
                        source: Box::new(source),
                    })?
            }
        };
        for p in pipelines.values() {
            p.check_plugins(&config, &plugins)?;
        }
        Ok(Host {
            config,
            plugins,
            providers,
            pipelines,
        })
    }
}
