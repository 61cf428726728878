//! The `[server]` section of `reins.toml`.

use serde::Deserialize;
use std::path::PathBuf;

/// How `reins serve` listens and whom it lets in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on; `--listen` overrides it.
    pub listen: String,
    /// A second address serving only `/healthz`, `/readyz` and `/metrics`
    /// (plain HTTP), on a thread and runtime of its own: probes and scrapes
    /// get an answer even while the main listener is flooded. Absent: none.
    pub ops_listen: Option<String>,
    /// Largest request body, in bytes (larger → 413).
    pub body_limit_bytes: usize,
    /// Deadline for one request, end to end (→ 504).
    pub request_timeout_ms: u64,
    /// Memory the requests in flight may hold together, in bytes: each
    /// reserves about 4 × its body + 64 KiB until its response is sent; one
    /// that does not fit now is a 429 with `Retry-After`. 0: no budget.
    pub inflight_memory_bytes: usize,
    /// Bearer tokens. With none (and no `jwt`), only a loopback listener is
    /// allowed (unless `--insecure`).
    pub tokens: Vec<TokenSettings>,
    /// JWT bearer tokens, verified against an issuer's keys.
    pub jwt: Option<JwtSettings>,
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
    /// How long a client may take to send a whole request head, counted
    /// from when the server starts waiting for it (after accepting, or after
    /// the previous answer on a kept-alive connection).
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send a whole request body, counted
    /// from the end of its head: a total, so trickling bytes does not reset it.
    pub body_read_timeout_ms: u64,
    /// A connection on which no byte moves either way for this long, with
    /// no request being handled, is closed.
    pub idle_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes; larger → 431.
    pub max_header_bytes: usize,
    /// Most connections open at once; absent: derived from the process's
    /// open-file limit (80 % of the soft limit, less a reserve).
    pub max_connections: Option<usize>,
    /// Most connections open at once from one client address (an IPv6 /64
    /// counts as one address).
    pub max_connections_per_ip: usize,
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
    pub fn from_config(
        config: &reins_core::config::Config,
    ) -> Result<ServerSettings, reins_core::config::ConfigError> {
        let mut settings = ServerSettings::deserialize(toml::Value::Table(config.server.clone()))
            .map_err(|e| reins_core::config::ConfigError::Invalid {
            path: config.origin.clone(),
            key: "server".into(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        // Like every path in the config, relative to the config's directory.
        if let Some(jwt) = &mut settings.jwt
            && let Some(file) = &mut jwt.jwks_file
        {
            *file = config.base_dir.join(&*file);
        }
        settings
            .check()
            .map_err(|(key, message)| reins_core::config::ConfigError::Invalid {
                path: config.origin.clone(),
                key: format!("server.{key}"),
                message: message.to_owned(),
            })?;
        Ok(settings)
    }

    /// The connection limits that must be positive to make sense: a zero
    /// timeout would close every connection, a zero cap refuse them all.
    fn check(&self) -> Result<(), (&'static str, &'static str)> {
        let positive = [
            (
                "header_read_timeout_ms",
                self.header_read_timeout_ms as usize,
            ),
            ("body_read_timeout_ms", self.body_read_timeout_ms as usize),
            ("idle_timeout_ms", self.idle_timeout_ms as usize),
            ("max_connections", self.max_connections.unwrap_or(1)),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_header_bytes", self.max_header_bytes),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((key, _)) => Err((key, "must be greater than 0")),
            None => Ok(()),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            ops_listen: None,
            body_limit_bytes: 1 << 20,
            request_timeout_ms: 60_000,
            inflight_memory_bytes: 256 << 20,
            tokens: Vec::new(),
            jwt: None,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            cors: None,
            tls_cert: None,
            tls_key: None,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_header_bytes: 64 * 1024,
            max_connections: None,
            max_connections_per_ip: 256,
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
    /// Who the token speaks for: `tenant`, `roles` and any other claims
    /// (strings or lists of strings) that plugins and limits key on.
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The pipelines this token may call (absent: all); others answer 404.
    #[serde(default)]
    pub pipelines: Option<Vec<String>>,
}

/// `[server.jwt]`: bearer tokens that are JWTs from an identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` values accepted (a token must name one of them).
    pub audience: Audience,
    /// A JWKS file, re-read when it changes (a bad file keeps the last good keys).
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// A JWKS URL, fetched with `jwks_timeout_ms` and refreshed every
    /// `jwks_refresh_s` (and on an unknown `kid`, at most every 30 s).
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default = "defaults::jwks_refresh_s")]
    pub jwks_refresh_s: u64,
    #[serde(default = "defaults::jwks_timeout_ms")]
    pub jwks_timeout_ms: u64,
    /// Accepted signature algorithms: any of `RS256`, `ES256`, `EdDSA`
    /// (`none` and HMAC are always refused: an HMAC "signed" with a public
    /// key proves nothing).
    #[serde(default = "defaults::algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "defaults::leeway_s")]
    pub leeway_s: u64,
    /// Which claim holds what.
    #[serde(default)]
    pub claims: ClaimMapping,
    /// Scopes of a token whose scope claim is absent.
    #[serde(default = "defaults::jwt_scopes")]
    pub default_scopes: Vec<Scope>,
}

/// One audience or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn values(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(a) => a.clone(),
        }
    }
}

/// Claim names (`tenant = "org_id"`). A tenant claim is required: a token
/// without one is refused rather than made tenantless.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    pub subject: String,
    pub tenant: String,
    pub roles: String,
    /// A space-separated string (OAuth `scope`) or a list.
    pub scopes: String,
    /// Other claims handed to plugins as they are.
    pub extra: Vec<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        ClaimMapping {
            subject: "sub".into(),
            tenant: "tenant".into(),
            roles: "roles".into(),
            scopes: "scope".into(),
            extra: Vec::new(),
        }
    }
}

mod defaults {
    pub fn jwks_refresh_s() -> u64 {
        300
    }
    pub fn jwks_timeout_ms() -> u64 {
        2000
    }
    pub fn algorithms() -> Vec<String> {
        vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
    }
    pub fn leeway_s() -> u64 {
        30
    }
    pub fn jwt_scopes() -> Vec<super::Scope> {
        vec![super::Scope::Run]
    }
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

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Run => "run",
            Scope::Approve => "approve",
            Scope::Admin => "admin",
        }
    }

    /// An OAuth scope name, if it is one of ours.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "run" => Some(Scope::Run),
            "approve" => Some(Scope::Approve),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}
