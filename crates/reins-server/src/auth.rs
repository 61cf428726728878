//! Bearer tokens with scopes. Tokens are compared by sha256, so the config
//! holds only hashes (or the name of an environment variable).

use super::error::ApiError;
use super::settings::{Scope, TokenSettings};
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

/// The tokens a server accepts. Empty means open (loopback only, or `--insecure`).
#[derive(Debug, Default)]
pub struct Auth {
    by_hash: HashMap<[u8; 32], (String, HashSet<Scope>)>,
}

/// Why the token settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token {name:?}: give exactly one of `sha256` or `env`")]
    Source { name: String },
    #[error("token {name:?}: sha256 must be 64 hex digits")]
    BadHash { name: String },
    #[error("token {name:?}: environment variable {var} is not set or empty")]
    MissingEnv { name: String, var: String },
}

impl Auth {
    pub fn from_settings(tokens: &[TokenSettings]) -> Result<Self, AuthError> {
        let mut by_hash = HashMap::new();
        for t in tokens {
            let hash: [u8; 32] = match (&t.sha256, &t.env) {
                (Some(h), None) => hex::decode(h)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| AuthError::BadHash { name: t.name.clone() })?,
                (None, Some(var)) => {
                    let secret = std::env::var(var).ok().filter(|s| !s.is_empty()).ok_or_else(|| {
                        AuthError::MissingEnv {
                            name: t.name.clone(),
                            var: var.clone(),
                        }
                    })?;
                    Sha256::digest(secret.as_bytes()).into()
                }
                _ => return Err(AuthError::Source { name: t.name.clone() }),
            };
            by_hash.insert(hash, (t.name.clone(), t.scopes.iter().copied().collect()));
        }
        Ok(Self { by_hash })
    }

    /// True when no tokens are configured.
    pub fn is_open(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Checks the request's token for `scope`; returns the token's name.
    /// The token is the bearer token (`Authorization: Bearer ...`), or the
    /// `x-api-key` header as Anthropic clients send it; when both are sent,
    /// the first one that is a known token counts.
    pub fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<Option<String>, ApiError> {
        if self.is_open() {
            return Ok(None);
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let api_key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
        let (name, scopes) = [bearer, api_key]
            .into_iter()
            .flatten()
            .find_map(|token| {
                let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
                self.by_hash.get(&hash)
            })
            .ok_or_else(ApiError::unauthorized)?;
        if !scopes.contains(&scope) {
            let s = match scope {
                Scope::Run => "run",
                Scope::Approve => "approve",
                Scope::Admin => "admin",
            };
            return Err(ApiError::forbidden(s));
        }
        Ok(Some(name.clone()))
    }
}
