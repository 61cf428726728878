//! The `[server]` section of `reins.toml`.

use serde::Deserialize;
use std::path::PathBuf;

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
    /// Names an open server (no tokens) answers to as `Host`, besides
    /// localhost, 127.0.0.1 and [::1]: any other name may be a DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// Browser origins (`scheme://host[:port]`) allowed to call, besides
    /// loopback origins and the server's own pages.
    pub allowed_origins: Vec<String>,
    /// Cross-origin browser access; off unless configured.
    pub cors: Option<CorsSettings>,
    /// PEM certificate chain to serve HTTPS with (relative to the config); `--tls-cert` overrides it.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`; `--tls-key` overrides it.
    pub tls_key: Option<PathBuf>,
}

/// `[server.cors]`: which other sites' pages may call this server from a
/// browser and read the answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Exact origins, `scheme://host[:port]`; there is no wildcard, since a
    /// wildcard would hand every site the answers of a token-less server.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds.
    #[serde(default = "CorsSettings::default_max_age_s")]
    pub max_age_s: u64,
}

impl CorsSettings {
    fn default_max_age_s() -> u64 {
        600
    }
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
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            cors: None,
            tls_cert: None,
            tls_key: None,
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
