//! A pipeline's local fallbacks, compiled from its config: the response
//! cache and the static degraded answer (checked against the pipeline's
//! schema when the config loads; validator plugins check it at run time).

use super::cache::ResponseCache;
use super::extract_json;
use crate::config::{Config, ConfigError, PipelineConfig};
use std::time::Duration;

/// The static answer of last resort.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticAnswer {
    /// The answer as the text a model would have sent.
    pub answer: String,
    /// What the caller is told about it.
    pub message: String,
}

/// The cache (when `cache` is not `off`) and the static answer (when
/// `degraded` is set) of `config.pipelines[name]`.
pub(crate) fn compile(
    config: &Config,
    name: &str,
    p: &PipelineConfig,
    schema: Option<&jsonschema::Validator>,
) -> Result<(Option<ResponseCache>, Option<StaticAnswer>), ConfigError> {
    let cache = p
        .cache
        .reads()
        .then(|| ResponseCache::new(Duration::from_secs(p.cache_ttl_s), p.cache_max_entries));
    let Some(degraded) = &p.degraded else {
        return Ok((cache, None));
    };
    let invalid = |message: String| ConfigError::Invalid {
        path: config.origin.clone(),
        key: format!("pipelines.{name}.degraded.answer"),
        message,
    };
    let answer = degraded.answer_text();
    let doc = extract_json(&answer).map_err(|v| invalid(v.message))?;
    if let Some(first) = schema.and_then(|s| s.iter_errors(&doc).next()) {
        let at = first.instance_path().to_string();
        return Err(invalid(format!(
            "does not match the pipeline's schema at `{}`: {first}",
            if at.is_empty() { "(document)" } else { &at }
        )));
    }
    if degraded.message.trim().is_empty() {
        return Err(ConfigError::Invalid {
            path: config.origin.clone(),
            key: format!("pipelines.{name}.degraded.message"),
            message: "must say something: it is what the caller is told about the static answer"
                .to_owned(),
        });
    }
    Ok((
        cache,
        Some(StaticAnswer {
            answer,
            message: degraded.message.clone(),
        }),
    ))
}
