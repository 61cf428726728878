//! JWT bearer tokens (`[server.jwt]`): verified with the `jsonwebtoken`
//! crate against the keys of a JWKS file (re-read when it changes) or URL
//! (cached, refreshed, fetched with a timeout). Only asymmetric algorithms
//! are accepted: `none` proves nothing, and an HMAC token "signed" with a
//! public key proves only that its author read the JWKS.

use super::Identity;
use crate::settings::{JwtSettings, Scope};
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use reins_runtime::Caller;
use serde_json::{Map, Value};
use sha2::Digest;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// How often a JWKS file is looked at for changes.
const FILE_CHECK: Duration = Duration::from_secs(1);
/// How often an unknown `kid` may make the server fetch the JWKS URL again.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(30);
/// Tokens verified lately (by sha256), so a client that sends the same JWT
/// on every request pays for its signature once.
const VERIFIED_CACHE: usize = 10_000;
/// How long a verified token is trusted without a new check, at most (and
/// never past its `exp`).
const VERIFIED_TTL_S: u64 = 60;

/// Why `[server.jwt]` cannot be used, or why a token is refused. The
/// messages name the claim, the key or the file, never the token.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("[server.jwt]: give `jwks_file` or `jwks_url` (where the issuer's public keys are)")]
    NoKeySource,
    #[error(
        "[server.jwt] algorithms: {0:?} is not accepted; use RS256, ES256 or EdDSA (`none` and HMAC are always refused)"
    )]
    BadAlgorithm(String),
    #[error("[server.jwt] algorithms: the list is empty; name at least one of RS256, ES256, EdDSA")]
    NoAlgorithms,
    #[error("[server.jwt] jwks_file {path}: {message}")]
    JwksFile { path: PathBuf, message: String },
    #[error("the JWKS from {source_name} does not parse: {message}")]
    JwksParse {
        source_name: String,
        message: String,
    },
    #[error("the issuer's keys are not available: {0}")]
    KeysUnavailable(String),
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("alg `none` is refused: tokens must be signed")]
    AlgNone,
    #[error("alg `{0}` is not accepted here (accepted: {1})")]
    AlgNotAllowed(String, String),
    #[error("unknown key id (kid) {0:?}")]
    UnknownKey(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("wrong issuer (iss)")]
    WrongIssuer,
    #[error("wrong audience (aud)")]
    WrongAudience,
    #[error("the `{0}` claim is missing")]
    MissingClaim(String),
    #[error("the `{0}` claim must be a string")]
    BadClaim(String),
}

/// The issuer's keys as last loaded.
#[derive(Default)]
struct Keys {
    by_kid: Arc<HashMap<String, DecodingKey>>,
    /// Keys without a `kid`: used when the token names none.
    unnamed: Arc<Vec<DecodingKey>>,
    file_mtime: Option<SystemTime>,
    checked: Option<Instant>,
    fetched: Option<Instant>,
    fetch_attempted: Option<Instant>,
}

pub struct JwtVerifier {
    settings: JwtSettings,
    /// One per accepted algorithm: `jsonwebtoken` wants every algorithm of
    /// a validation to fit the key, so the token's own (allowed) one is used.
    validations: Vec<(Algorithm, Validation)>,
    keys: RwLock<Keys>,
    /// One fetch of the JWKS URL at a time.
    fetching: tokio::sync::Mutex<()>,
    /// sha256 of a verified token → its identity and until when (unix s)
    /// it may be reused. Emptied whenever the keys change.
    verified: std::sync::Mutex<lru::LruCache<[u8; 32], (Identity, u64)>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    pub fn new(settings: &JwtSettings) -> Result<JwtVerifier, JwtError> {
        if settings.jwks_file.is_none() && settings.jwks_url.is_none() {
            return Err(JwtError::NoKeySource);
        }
        let mut algorithms = Vec::new();
        for name in &settings.algorithms {
            let alg = match name.as_str() {
                "RS256" => Algorithm::RS256,
                "ES256" => Algorithm::ES256,
                "EdDSA" => Algorithm::EdDSA,
                other => return Err(JwtError::BadAlgorithm(other.to_owned())),
            };
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            return Err(JwtError::NoAlgorithms);
        }
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut validation = Validation::new(*alg);
                validation.leeway = settings.leeway_s;
                validation.validate_nbf = true;
                validation.set_issuer(&[&settings.issuer]);
                validation.set_audience(&settings.audience.values());
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                (*alg, validation)
            })
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.jwks_timeout_ms.max(1)))
            .build()
            .map_err(|e| JwtError::KeysUnavailable(e.to_string()))?;
        let verifier = JwtVerifier {
            settings: settings.clone(),
            validations,
            keys: RwLock::new(Keys::default()),
            fetching: tokio::sync::Mutex::new(()),
            verified: std::sync::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(VERIFIED_CACHE).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            http,
        };
        if let Some(path) = &settings.jwks_file {
            // A bad file at start is a config error; later ones keep the last good keys.
            let (mtime, set) = read_file(path)?;
            verifier.install(set, Some(mtime), &path.display().to_string())?;
        }
        Ok(verifier)
    }

    /// Verifies `token` and maps its claims to an identity.
    pub async fn verify(&self, token: &str) -> Result<Identity, JwtError> {
        self.refresh_file();
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Ok(mut cache) = self.verified.lock()
            && let Some((identity, until)) = cache.get(&digest)
        {
            if *until > now {
                return Ok(identity.clone());
            }
            cache.pop(&digest);
        }
        let (validation, kid) = self.header(token)?;
        if self.settings.jwks_url.is_some() {
            self.refresh_url(false).await?;
        }
        let key = match self.key(kid.as_deref()) {
            Some(k) => k,
            None if self.settings.jwks_url.is_some() => {
                // A rotated key: fetch once more (not for every bad token).
                self.refresh_url(true).await?;
                self.key(kid.as_deref())
                    .ok_or_else(|| JwtError::UnknownKey(kid.clone().unwrap_or_default()))?
            }
            None => return Err(JwtError::UnknownKey(kid.unwrap_or_default())),
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => JwtError::Expired,
                ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
                ErrorKind::InvalidAudience => JwtError::WrongAudience,
                ErrorKind::InvalidSignature => JwtError::BadSignature,
                ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c.clone()),
                ErrorKind::InvalidAlgorithm => {
                    JwtError::Malformed("its alg does not match the key".into())
                }
                _ => JwtError::Malformed(e.to_string()),
            },
        )?;
        let exp = data
            .claims
            .get("exp")
            .and_then(Value::as_u64)
            .unwrap_or(now);
        let identity = self.identity(data.claims)?;
        if let Ok(mut cache) = self.verified.lock() {
            cache.put(digest, (identity.clone(), exp.min(now + VERIFIED_TTL_S)));
        }
        Ok(identity)
    }

    /// Reads the header before any key is looked up, so that `none` and
    /// HMAC are refused by name.
    fn header(&self, token: &str) -> Result<(&Validation, Option<String>), JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed(
                "a JWT has three dot-separated parts".into(),
            ));
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h.trim_end_matches('='))
            .map_err(|_| JwtError::Malformed("the header is not base64url".into()))?;
        let header: Value = serde_json::from_slice(&raw)
            .map_err(|_| JwtError::Malformed("the header is not JSON".into()))?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if alg.eq_ignore_ascii_case("none") || alg.is_empty() {
            return Err(JwtError::AlgNone);
        }
        let accepted = self.settings.algorithms.join(", ");
        let parsed: Algorithm = alg
            .parse()
            .map_err(|_| JwtError::AlgNotAllowed(alg.to_owned(), accepted.clone()))?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == parsed) else {
            return Err(JwtError::AlgNotAllowed(alg.to_owned(), accepted));
        };
        Ok((
            validation,
            header.get("kid").and_then(Value::as_str).map(str::to_owned),
        ))
    }

    fn key(&self, kid: Option<&str>) -> Option<DecodingKey> {
        let keys = self.keys.read().ok()?;
        match kid {
            Some(kid) => keys.by_kid.get(kid).cloned(),
            None if keys.unnamed.len() == 1 && keys.by_kid.is_empty() => {
                keys.unnamed.first().cloned()
            }
            None if keys.by_kid.len() == 1 && keys.unnamed.is_empty() => {
                keys.by_kid.values().next().cloned()
            }
            None => None,
        }
    }

    fn install(
        &self,
        set: JwkSet,
        mtime: Option<SystemTime>,
        source: &str,
    ) -> Result<usize, JwtError> {
        let mut by_kid = HashMap::new();
        let mut unnamed = Vec::new();
        for jwk in &set.keys {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| JwtError::JwksParse {
                source_name: source.to_owned(),
                message: format!(
                    "key {:?}: {e}",
                    jwk.common.key_id.as_deref().unwrap_or("(no kid)")
                ),
            })?;
            match &jwk.common.key_id {
                Some(kid) => {
                    by_kid.insert(kid.clone(), key);
                }
                None => unnamed.push(key),
            }
        }
        let n = by_kid.len() + unnamed.len();
        // A token verified with a key that is gone must be checked again.
        if let Ok(mut cache) = self.verified.lock() {
            cache.clear();
        }
        if let Ok(mut keys) = self.keys.write() {
            keys.by_kid = Arc::new(by_kid);
            keys.unnamed = Arc::new(unnamed);
            keys.file_mtime = mtime.or(keys.file_mtime);
        }
        Ok(n)
    }

    /// Re-reads the JWKS file when it changed; a file that does not parse
    /// keeps the last good keys (and says so in the log).
    fn refresh_file(&self) {
        let Some(path) = &self.settings.jwks_file else {
            return;
        };
        let now = Instant::now();
        {
            let Ok(mut keys) = self.keys.write() else {
                return;
            };
            if keys
                .checked
                .is_some_and(|c| now.duration_since(c) < FILE_CHECK)
            {
                return;
            }
            keys.checked = Some(now);
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if mtime.is_none() || mtime == keys.file_mtime {
                return;
            }
            // Whatever happens, this version of the file is dealt with.
            keys.file_mtime = mtime;
        }
        match read_file(path)
            .and_then(|(mtime, set)| self.install(set, Some(mtime), &path.display().to_string()))
        {
            Ok(n) => tracing::info!(path = %path.display(), keys = n, "JWKS file reloaded"),
            Err(e) => {
                tracing::warn!(path = %path.display(), "JWKS reload failed, keeping the last good keys: {e}")
            }
        }
    }

    /// Fetches the JWKS URL when the keys are stale (or, `unknown_kid`, at
    /// most every 30 s). A failed fetch keeps the last good keys; with no
    /// keys at all the token cannot be verified.
    async fn refresh_url(&self, unknown_kid: bool) -> Result<(), JwtError> {
        let Some(url) = &self.settings.jwks_url else {
            return Ok(());
        };
        let refresh = Duration::from_secs(self.settings.jwks_refresh_s);
        let due = |keys: &Keys| {
            let now = Instant::now();
            let since_attempt = |d: Duration| {
                keys.fetch_attempted
                    .is_none_or(|a| now.duration_since(a) >= d)
            };
            match keys.fetched {
                Some(f) if now.duration_since(f) < refresh => {
                    unknown_kid && since_attempt(UNKNOWN_KID_REFETCH)
                }
                // Stale or never fetched: a failing issuer is asked at most once a second.
                _ => since_attempt(FILE_CHECK),
            }
        };
        let no_keys = |keys: &Keys| keys.by_kid.is_empty() && keys.unnamed.is_empty();
        match self.keys.read() {
            Ok(k) if !due(&k) && no_keys(&k) => {
                return Err(JwtError::KeysUnavailable(
                    "the last fetch of the JWKS failed; retrying shortly".into(),
                ));
            }
            Ok(k) if !due(&k) => return Ok(()),
            _ => {}
        }
        let _one = self.fetching.lock().await;
        if !self.keys.read().map(|k| due(&k)).unwrap_or(false) {
            return Ok(()); // another request just fetched
        }
        if let Ok(mut k) = self.keys.write() {
            k.fetch_attempted = Some(Instant::now());
        }
        let fetched = async {
            let response = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            response
                .bytes()
                .await
                .map_err(|e| e.without_url().to_string())
        }
        .await;
        let outcome = fetched.map_err(JwtError::KeysUnavailable).and_then(|body| {
            let set: JwkSet = serde_json::from_slice(&body).map_err(|e| JwtError::JwksParse {
                source_name: url.clone(),
                message: e.to_string(),
            })?;
            self.install(set, None, url)
        });
        match outcome {
            Ok(n) => {
                if let Ok(mut k) = self.keys.write() {
                    k.fetched = Some(Instant::now());
                }
                tracing::info!(%url, keys = n, "JWKS fetched");
                Ok(())
            }
            Err(e) => {
                let have_keys = self
                    .keys
                    .read()
                    .map(|k| !k.by_kid.is_empty() || !k.unnamed.is_empty())
                    .unwrap_or(false);
                tracing::warn!(%url, "JWKS fetch failed{}: {e}", if have_keys { ", keeping the last good keys" } else { "" });
                if have_keys { Ok(()) } else { Err(e) }
            }
        }
    }

    fn identity(&self, claims: Map<String, Value>) -> Result<Identity, JwtError> {
        let m = &self.settings.claims;
        let string = |name: &str| -> Result<Option<String>, JwtError> {
            match claims.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(JwtError::BadClaim(name.to_owned())),
            }
        };
        let subject =
            string(&m.subject)?.ok_or_else(|| JwtError::MissingClaim(m.subject.clone()))?;
        let tenant = string(&m.tenant)?.ok_or_else(|| JwtError::MissingClaim(m.tenant.clone()))?;
        let list = |name: &str| -> Option<Vec<String>> {
            match claims.get(name)? {
                Value::String(s) => Some(s.split_whitespace().map(str::to_owned).collect()),
                Value::Array(a) => Some(
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect(),
                ),
                _ => None,
            }
        };
        let roles = list(&m.roles).unwrap_or_default();
        let scopes = match list(&m.scopes) {
            Some(names) => names.iter().filter_map(|s| Scope::parse(s)).collect(),
            None => self.settings.default_scopes.iter().copied().collect(),
        };
        let mut extra = Map::new();
        for name in &m.extra {
            if let Some(v) = claims.get(name)
                && (v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
            {
                extra.insert(name.clone(), v.clone());
            }
        }
        Ok(Identity {
            caller: Caller {
                subject,
                tenant: Some(tenant),
                roles,
                credential: format!("jwt:{}", self.settings.issuer),
                claims: extra,
            },
            scopes,
            pipelines: None,
        })
    }
}

fn read_file(path: &PathBuf) -> Result<(SystemTime, JwkSet), JwtError> {
    let file_err = |message: String| JwtError::JwksFile {
        path: path.clone(),
        message,
    };
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| file_err(e.to_string()))?;
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| file_err(format!("not a JWKS ({{\"keys\": [...]}}): {e}")))?;
    Ok((mtime, set))
}
