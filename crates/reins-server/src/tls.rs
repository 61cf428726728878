//! HTTPS for `reins serve`: the certificate and key files read and checked
//! before the server binds, so a bad file stops startup with a message that
//! names it instead of failing the first handshake.

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the TLS files cannot be served with.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "TLS needs both a certificate and a key (--tls-cert and --tls-key, or [server] tls_cert and tls_key); only the {given} is given"
    )]
    Half { given: &'static str },
    /// The I/O error is in the message, not a `source`, so a printed chain
    /// says it once.
    #[error("TLS {what} {}: cannot read it: {error}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("TLS {what} {}: {problem}", path.display())]
    Bad {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("TLS key {} does not go with certificate {}: {problem}", key.display(), cert.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        problem: String,
    },
}

/// The server's TLS setup from `cert` (a PEM chain, leaf first) and `key`
/// (a PEM private key: PKCS#8, PKCS#1 or SEC1).
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let bad = |what, path: &Path, problem: String| TlsError::Bad {
        what,
        path: path.to_owned(),
        problem,
    };
    let cert_pem = read("certificate", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", cert, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(bad(
            "certificate",
            cert,
            "holds no `BEGIN CERTIFICATE` block".into(),
        ));
    }
    let key_pem = read("key", key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => bad(
            "key",
            key,
            "holds no `BEGIN PRIVATE KEY` (or RSA / EC PRIVATE KEY) block".into(),
        ),
        e => bad("key", key, format!("not a PEM private key: {e}")),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("certificate", cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            problem: e.to_string(),
        })?;
    // HTTP/1.1 only, like the plain listener: one protocol to reason about.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        what,
        path: path.to_owned(),
        error,
    })
}
