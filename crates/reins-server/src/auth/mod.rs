//! Who is calling. Every request resolves to one [`Identity`] from its
//! credential — a static bearer token (compared by sha256, so the config
//! holds only hashes or the name of an environment variable) or a JWT
//! verified against an issuer's keys — before any handler or plugin acts.
//! What the body says about tenant or role is never identity.

mod jwt;

use super::error::ApiError;
use super::settings::{Scope, ServerSettings, TokenSettings};
use axum::http::HeaderMap;
use reins_runtime::Caller;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};

pub use jwt::JwtError;

/// The credentials a server accepts. None at all means open (loopback
/// only, or `--insecure`).
#[derive(Debug, Default)]
pub struct Auth {
    by_hash: HashMap<[u8; 32], Identity>,
    jwt: Option<jwt::JwtVerifier>,
}

/// A resolved caller: who (for plugins, limits and ownership), what it may
/// do (scopes) and where (pipelines).
#[derive(Debug, Clone)]
pub struct Identity {
    pub caller: Caller,
    scopes: HashSet<Scope>,
    /// `None`: every pipeline.
    pipelines: Option<HashSet<String>>,
}

/// Why the credential settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("[[server.tokens]] {name:?}: give exactly one of `sha256` or `env`")]
    Source { name: String },
    #[error("[[server.tokens]] {name:?}: sha256 must be 64 hex digits")]
    BadHash { name: String },
    #[error("[[server.tokens]] {name:?}: environment variable {var} is not set or empty")]
    MissingEnv { name: String, var: String },
    #[error("[[server.tokens]] {name:?}: claims.{key} must be a string or a list of strings")]
    BadClaim { name: String, key: String },
    #[error(transparent)]
    Jwt(#[from] JwtError),
}

impl Identity {
    /// Open mode: nobody in particular, allowed everything (the listener is
    /// loopback-only, and the network layer checks `Host` and `Origin`).
    pub fn open() -> Identity {
        Identity {
            caller: Caller::anonymous(),
            scopes: [Scope::Run, Scope::Approve, Scope::Admin]
                .into_iter()
                .collect(),
            pipelines: None,
        }
    }

    /// 403 unless the credential holds `scope`.
    pub fn require(&self, scope: Scope) -> Result<&Identity, ApiError> {
        if self.scopes.contains(&scope) {
            Ok(self)
        } else {
            Err(ApiError::forbidden(scope.as_str()))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// Whether the credential may call `pipeline` (others answer 404, as if
    /// they did not exist).
    pub fn may_call(&self, pipeline: &str) -> bool {
        self.pipelines.as_ref().is_none_or(|p| p.contains(pipeline))
    }

    /// Whether this caller may see what `owner` started: an admin sees all;
    /// everyone else only its own tenant's (see `reins_core::identity`).
    pub fn may_see(&self, pipeline: &str, owner: &Caller) -> bool {
        self.is_admin()
            || (self.may_call(pipeline) && reins_core::identity::may_see(&self.caller, owner))
    }

    /// The 404 a caller gets for a pipeline it may not call.
    pub fn pipeline_or_404(&self, pipeline: &str) -> Result<(), ApiError> {
        if self.may_call(pipeline) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("no pipeline `{pipeline}`")))
        }
    }
}

impl Auth {
    pub fn from_settings(settings: &ServerSettings) -> Result<Self, AuthError> {
        let mut by_hash = HashMap::new();
        for t in &settings.tokens {
            by_hash.insert(token_hash(t)?, token_identity(t)?);
        }
        let jwt = settings
            .jwt
            .as_ref()
            .map(jwt::JwtVerifier::new)
            .transpose()?;
        Ok(Self { by_hash, jwt })
    }

    /// True when no credentials are configured.
    pub fn is_open(&self) -> bool {
        self.by_hash.is_empty() && self.jwt.is_none()
    }

    /// Resolves the request's credential. The credential is the bearer
    /// token (`Authorization: Bearer ...`), or the `x-api-key` header as
    /// Anthropic clients send it. A 401 says why (no credential, an unknown
    /// token, an expired JWT...), never which secret was close.
    pub async fn identify(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        if self.is_open() {
            return Ok(Identity::open());
        }
        let bearer = match headers.get(axum::http::header::AUTHORIZATION) {
            None => None,
            Some(v) => {
                let v = v.to_str().map_err(|_| {
                    ApiError::unauthorized_because("the Authorization header is not ASCII text")
                })?;
                let token = v
                    .strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .ok_or_else(|| {
                        ApiError::unauthorized_because(
                            "the Authorization header must be `Bearer TOKEN`",
                        )
                    })?;
                Some(token.trim())
            }
        };
        let api_key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let candidates: Vec<&str> = [bearer, api_key]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty())
            .collect();
        if candidates.is_empty() {
            return Err(ApiError::unauthorized());
        }
        for token in &candidates {
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Some(identity) = self.by_hash.get(&hash) {
                return Ok(identity.clone());
            }
        }
        // Not a static token: a JWT, if the server takes them and it looks like one.
        if let Some(verifier) = &self.jwt
            && let Some(token) = candidates.iter().find(|t| t.matches('.').count() == 2)
        {
            return verifier
                .verify(token)
                .await
                .map_err(|e| ApiError::unauthorized_because(&format!("the JWT is refused: {e}")));
        }
        Err(ApiError::unauthorized())
    }

    /// [`Auth::identify`], then 403 unless the credential holds `scope`.
    pub async fn check(&self, headers: &HeaderMap, scope: Scope) -> Result<Identity, ApiError> {
        let identity = self.identify(headers).await?;
        identity.require(scope)?;
        Ok(identity)
    }
}

fn token_hash(t: &TokenSettings) -> Result<[u8; 32], AuthError> {
    match (&t.sha256, &t.env) {
        (Some(h), None) => hex::decode(h)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| AuthError::BadHash {
                name: t.name.clone(),
            }),
        (None, Some(var)) => {
            let secret = std::env::var(var)
                .ok()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| AuthError::MissingEnv {
                    name: t.name.clone(),
                    var: var.clone(),
                })?;
            Ok(Sha256::digest(secret.as_bytes()).into())
        }
        _ => Err(AuthError::Source {
            name: t.name.clone(),
        }),
    }
}

/// A static token's identity: its name is the subject, its `claims` the rest.
fn token_identity(t: &TokenSettings) -> Result<Identity, AuthError> {
    let bad = |key: &str| AuthError::BadClaim {
        name: t.name.clone(),
        key: key.to_owned(),
    };
    let mut caller = Caller {
        subject: t.name.clone(),
        credential: format!("token:{}", t.name),
        ..Caller::anonymous()
    };
    for (key, value) in &t.claims {
        let ok = match value {
            Value::String(_) => true,
            Value::Array(a) => a.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return Err(bad(key));
        }
        match key.as_str() {
            "tenant" => caller.tenant = Some(value.as_str().ok_or_else(|| bad(key))?.to_owned()),
            "roles" | "role" => caller
                .roles
                .extend(reins_core::identity::claim_strings(Some(value))),
            _ => {
                caller.claims.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(Identity {
        caller,
        scopes: t.scopes.iter().copied().collect(),
        pipelines: t.pipelines.as_ref().map(|p| p.iter().cloned().collect()),
    })
}
