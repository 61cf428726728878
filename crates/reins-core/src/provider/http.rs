//! What the HTTP providers (`openai`, `anthropic`) share: the client with
//! its timeouts, one POST, and how a transport failure or an error status
//! becomes a [`ProviderError`].
//!
//! One call is one HTTP request, bounded by `connect_timeout_ms` and
//! `timeout_ms` (the whole request, body included, so a slow trickle times
//! out too). A non-2xx answer is a [`ProviderError::Status`] carrying the
//! body's start and the upstream's `retry-after-ms` / `Retry-After`; a
//! connection that breaks mid-answer is a [`ProviderError::Interrupted`].
//! Retries and the circuit breaker are the [`super::Breaker`]'s.

use super::ProviderError;
use crate::config::HttpConfig;
use std::time::{Duration, SystemTime};

/// A client bounded by the provider's timeouts.
pub(super) fn client(http: &HttpConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(http.connect_timeout_ms))
        .timeout(Duration::from_millis(http.timeout_ms))
        .build()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot configure the HTTP client; using defaults");
            reqwest::Client::new()
        })
}

/// Sends `request` (a POST to `url` built by the provider) and returns a
/// 2xx answer before its body is read (a stream reads it as it comes).
pub(super) async fn respond(
    provider: &str,
    url: &str,
    http: &HttpConfig,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(provider, url, http, e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
    let retry_after = super::retry::parse_retry_after(
        header("retry-after-ms"),
        header("retry-after"),
        SystemTime::now(),
    );
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport_error(provider, url, http, e))?;
    Err(ProviderError::Status {
        provider: provider.to_owned(),
        status: status.as_u16(),
        body: snippet(&bytes),
        retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
    })
}

/// [`respond`], and the body of the 2xx answer.
async fn send(
    provider: &str,
    url: &str,
    http: &HttpConfig,
    request: reqwest::RequestBuilder,
) -> Result<Vec<u8>, ProviderError> {
    let response = respond(provider, url, http, request).await?;
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport_error(provider, url, http, e))?;
    Ok(bytes.to_vec())
}

/// A failed request: a timeout, a refused connection, or a connection that
/// broke (reset, closed before the answer, a body cut short).
pub(super) fn transport_error(
    provider: &str,
    url: &str,
    http: &HttpConfig,
    e: reqwest::Error,
) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout {
            provider: provider.to_owned(),
            timeout_ms: if e.is_connect() {
                http.connect_timeout_ms
            } else {
                http.timeout_ms
            },
        };
    }
    // Walk the source chain: reqwest's own message is terse.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_connect() {
        ProviderError::Connect {
            provider: provider.to_owned(),
            url: url.to_owned(),
            message,
        }
    } else {
        ProviderError::Interrupted {
            provider: provider.to_owned(),
            message,
        }
    }
}

/// The start of a body, for error messages.
/// [`send`], then `parse` the answer; an answer that does not parse is a
/// `BadResponse` quoting the start of the body.
pub(super) async fn exchange<T>(
    provider: &str,
    url: &str,
    http: &HttpConfig,
    builder: reqwest::RequestBuilder,
    parse: fn(&[u8]) -> Result<T, String>,
) -> Result<T, ProviderError> {
    let bytes = send(provider, url, http, builder).await?;
    parse(&bytes).map_err(|message| ProviderError::BadResponse {
        provider: provider.to_owned(),
        message: format!("{message}; body: {}", snippet(&bytes)),
    })
}

pub(super) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}
