use std::path::PathBuf;

/// The key of a layer's list in a pipeline's table.
pub fn layer_key(layer: &reins_runtime::Layer) -> &'static str {
    use reins_runtime::Layer;
    match layer {
        Layer::Normalizer => "normalizers",
        Layer::Context => "context",
        Layer::Constraints => "constraints",
        Layer::Validator => "validators",
        Layer::Gate => "gates",
        Layer::StreamChecker => "stream_checkers",
    }
}

/// A configuration that cannot be used. Every variant names the file and the
/// key, pipeline or plugin at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key, a missing key or a value of the wrong
    /// type; `message` carries the line, column and key.
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error(
        "{path}: `{key}` names provider `{provider}`, which is not defined (providers: {known})"
    )]
    UnknownProvider {
        path: PathBuf,
        key: String,
        provider: String,
        known: String,
    },
    #[error(
        "{path}: `pipelines.{pipeline}.{}`: pipeline `{pipeline}` uses {layer} plugin `{plugin}`, which is not loaded from {dir}{detail}",
        layer_key(.layer)
    )]
    MissingPlugin {
        path: PathBuf,
        pipeline: String,
        layer: reins_runtime::Layer,
        plugin: String,
        dir: PathBuf,
        /// Why the file was refused, when it was there but did not load.
        detail: String,
    },
    #[error(
        "{path}: pipeline `{pipeline}` lists `{plugin}` as a {expected} plugin, but it is a {actual} plugin"
    )]
    WrongLayer {
        path: PathBuf,
        pipeline: String,
        plugin: String,
        expected: reins_runtime::Layer,
        actual: reins_runtime::Layer,
    },
    #[error("{path}: pipeline `{pipeline}`: schema {origin} is not a valid JSON Schema: {message}")]
    Schema {
        path: PathBuf,
        pipeline: String,
        origin: String,
        message: String,
    },
    #[error("{path}: pipeline `{pipeline}`: repair template: {message}")]
    Template {
        path: PathBuf,
        pipeline: String,
        message: String,
    },
    #[error("scripted responses {path}: {message}")]
    Script { path: PathBuf, message: String },
    #[error("plugins directory {dir}: {source}")]
    Runtime {
        dir: PathBuf,
        source: Box<reins_runtime::RuntimeError>,
    },
    #[error("no pipeline `{0}` in the configuration")]
    UnknownPipeline(String),
    #[error("state store: {0}")]
    State(#[from] Box<reins_state::StateError>),
    /// Every error a load found (a config is checked whole, not up to its
    /// first mistake).
    #[error("{} errors:\n  {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// One error as itself, several as [`ConfigError::Several`].
    pub fn several(mut errors: Vec<ConfigError>) -> ConfigError {
        if errors.len() == 1 {
            errors.remove(0)
        } else {
            ConfigError::Several(errors)
        }
    }

    /// The errors one by one.
    pub fn into_list(self) -> Vec<ConfigError> {
        match self {
            ConfigError::Several(list) => list,
            one => vec![one],
        }
    }
}
