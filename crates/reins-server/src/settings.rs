//! The `[server]` section of `reins.toml`.

use serde::Deserialize;

/// How `reins serve` listens and whom it lets in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on; `--listen` overrides it.
    pub listen: String,
    /// Largest request body, in bytes (larger → 413).
    pub body_limit_bytes: usize,
    /// Deadline for one request, end to end (→ 504).
    pub request_timeout_ms: u64,
    /// Bearer tokens. With none, only a loopback listener is allowed (unless `--insecure`).
    pub tokens: Vec<TokenSettings>,
}

impl ServerSettings {
    /// The `[server]` section of a loaded config, checked (unknown keys
    /// refused, named with the file they came from).
    pub fn from_config(config: &reins_core::config::Config) -> Result<ServerSettings, reins_core::config::ConfigError> {
        ServerSettings::deserialize(toml::Value::Table(config.server.clone())).map_err(|e| {
            reins_core::config::ConfigError::Invalid {
                path: config.origin.clone(),
                key: "server".into(),
                message: e.to_string().trim_end().to_owned(),
            }
        })
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 1 << 20,
            request_timeout_ms: 60_000,
            tokens: Vec::new(),
        }
    }
}

/// One bearer token. The secret itself never sits in the config: either its
/// sha256 (hex) or the name of an environment variable that holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    pub name: String,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub env: Option<String>,
    pub scopes: Vec<Scope>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Start runs and read them.
    Run,
    /// Decide approvals.
    Approve,
    /// Read plugin state and operate the host.
    Admin,
}
