//! How the exporters reach the collector with the config's headers on top
//! of `OTEL_EXPORTER_OTLP_HEADERS` (which the exporters apply themselves,
//! after anything set on their builders).

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// The blocking HTTP client of the OTLP/HTTP exporters (they export from
/// their own threads), setting the config's headers on every request.
#[derive(Debug, Clone)]
pub struct HeadedClient {
    inner: reqwest::blocking::Client,
    headers: http::HeaderMap,
}

impl HeadedClient {
    pub fn new(
        headers: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<HeadedClient, String> {
        let headers = header_map(headers)?;
        // A blocking client must be built off the async runtime's threads.
        let inner = std::thread::spawn(move || {
            reqwest::blocking::Client::builder()
                .timeout(timeout)
                .build()
        })
        .join()
        .map_err(|_| "the thread building the OTLP HTTP client panicked".to_owned())?
        .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))?;
        Ok(HeadedClient { inner, headers })
    }
}

fn header_map(headers: &BTreeMap<String, String>) -> Result<http::HeaderMap, String> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("header `{k}` is not a valid HTTP header name"))?;
        let mut value = http::HeaderValue::from_str(v)
            .map_err(|_| format!("the value of header `{k}` is not a valid HTTP header value"))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HeadedClient {
    async fn send_bytes(
        &self,
        mut request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        for (k, v) in &self.headers {
            request.headers_mut().insert(k.clone(), v.clone());
        }
        self.inner.send_bytes(request).await
    }
}

/// The gRPC exporters' interceptor: the config's headers as metadata.
#[derive(Clone)]
pub struct Metadata(
    Vec<(
        tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
        tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    )>,
);

impl Metadata {
    pub fn new(headers: &BTreeMap<String, String>) -> Result<Metadata, String> {
        headers
            .iter()
            .map(|(k, v)| {
                let key = k
                    .parse()
                    .map_err(|_| format!("header `{k}` is not a valid gRPC metadata key"))?;
                let value = v
                    .parse()
                    .map_err(|_| format!("the value of header `{k}` is not valid gRPC metadata"))?;
                Ok((key, value))
            })
            .collect::<Result<_, String>>()
            .map(Metadata)
    }
}

impl tonic::service::Interceptor for Metadata {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        for (k, v) in &self.0 {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        Ok(request)
    }
}
