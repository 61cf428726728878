//! Every HTTP error is JSON `{"error": {"type", "message", ...}}` with the
//! status that says what happened.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use reins_core::ResumeError;
use reins_core::approvals::ApprovalError;
use reins_core::pipeline::RunError;
use reins_state::StateError;
use serde_json::{Value, json};

/// An error answer. `extra` fields are merged into the `error` object.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub extra: serde_json::Map<String, Value>,
    /// Sent as `Retry-After` (seconds), for 429 and 503 answers.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// The `error` object of an answer (or of a stream's error event).
    pub fn body(self) -> Value {
        let mut err = serde_json::Map::new();
        err.insert("type".into(), json!(self.kind));
        err.insert("message".into(), json!(self.message));
        err.insert("code".into(), json!(self.status.as_u16()));
        err.extend(self.extra);
        Value::Object(err)
    }

    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            extra: Default::default(),
            retry_after: None,
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or unknown token (send it as `Authorization: Bearer TOKEN` or `x-api-key: TOKEN`)",
        )
    }

    /// A 401 that says what is wrong with the credential (never a secret).
    pub fn unauthorized_because(reason: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            reason.to_owned(),
        )
    }

    pub fn forbidden(scope: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            format!("this token lacks the `{scope}` scope"),
        )
    }

    /// A 503: the store is down or refused, which a retry may fix.
    fn state_unavailable(message: String) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "state_unavailable",
            message,
        )
    }
}

// One conversion per domain error, so every endpoint answers the same
// failure with the same status and `type`.

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        Self::state_unavailable(e.to_string())
    }
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        match e {
            ApprovalError::NotFound(_) => Self::not_found(e.to_string()),
            ApprovalError::AlreadyDecided { .. } => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            ApprovalError::NotAllowed { .. } => {
                Self::new(StatusCode::FORBIDDEN, "permission_error", e.to_string())
            }
            ApprovalError::Store(_) => Self::state_unavailable(e.to_string()),
        }
    }
}

impl From<ResumeError> for ApiError {
    fn from(e: ResumeError) -> Self {
        match e {
            ResumeError::NotFound(_) => Self::not_found(e.to_string()),
            ResumeError::NotResumable { .. } | ResumeError::NoRequest(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            ResumeError::Store(_) => Self::state_unavailable(e.to_string()),
        }
    }
}

/// A run's error travels inside its result (which is stored and answered
/// too), hence by reference.
impl From<&RunError> for ApiError {
    fn from(e: &RunError) -> Self {
        let (status, kind) = match e {
            RunError::ValidationFailed { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation_error")
            }
            RunError::Rejected { .. } | RunError::Denied { .. } => {
                (StatusCode::BAD_REQUEST, "rejected")
            }
            RunError::BadRequest(_) | RunError::UpstreamRefused { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            RunError::ModelUnavailable { .. } | RunError::StreamBroken { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable")
            }
            RunError::ContextUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "context_unavailable")
            }
            // Cut before anything was sent: the answer broke a policy.
            RunError::StreamCut { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "content_filter"),
            RunError::UnknownPipeline(_) => (StatusCode::NOT_FOUND, "not_found_error"),
            RunError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded"),
            RunError::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            RunError::Forbidden { .. } => (StatusCode::FORBIDDEN, "permission_error"),
            RunError::Cancelled { .. } => (client_closed(), "cancelled"),
            RunError::Plugin { .. }
            | RunError::MissingPlugin { .. }
            | RunError::ActionFailed { .. }
            | RunError::ApprovalRejected { .. }
            | RunError::NotOwned { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "harness_error"),
            // A stored run's error: only its kind survived.
            RunError::Recorded { kind, .. } => match *kind {
                "validation_failed" => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
                "rejected" | "denied" => (StatusCode::BAD_REQUEST, "rejected"),
                "bad_request" | "upstream_refused" => {
                    (StatusCode::BAD_REQUEST, "invalid_request_error")
                }
                "model_unavailable" => (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable"),
                "unknown_pipeline" => (StatusCode::NOT_FOUND, "not_found_error"),
                "forbidden" => (StatusCode::FORBIDDEN, "permission_error"),
                "rate_limited" => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded"),
                "overloaded" => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
                "cancelled" => (client_closed(), "cancelled"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "harness_error"),
            },
        };
        let mut err = Self::new(status, kind, e.to_string());
        match e {
            RunError::RateLimited { retry_after_s, .. } => err.retry_after = Some(*retry_after_s),
            RunError::Overloaded { retry_after_ms, .. } => {
                err.retry_after = Some(retry_after_ms.div_ceil(1000).max(1))
            }
            RunError::Forbidden { key, .. } => err = err.with("param", json!(key)),
            _ => {}
        }
        err
    }
}

/// 499, "client closed request" (nginx's), for a cancelled run: its client
/// is normally gone, but a log or a proxy still sees why it ended.
fn client_closed() -> StatusCode {
    StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, retry_after) = (self.status, self.retry_after);
        respond(status, json!({ "error": self.body() }), retry_after)
    }
}

/// An error answer: `body` with `status`, and `Retry-After` when given.
pub(super) fn respond(status: StatusCode, body: Value, retry_after: Option<u64>) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Some(secs) = retry_after
        && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
    {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, v);
    }
    response
}

/// A JSON body extractor whose rejections are [`ApiError`]s: malformed JSON
/// is a 400 naming the problem, an oversized body a 413, a body that did not
/// arrive within `body_read_timeout_ms` a 408.
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => {
                let status = rejection.status();
                let kind = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "request_too_large"
                } else if crate::conn::BodyError::timed_out(&rejection) {
                    return Err(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        rejection.body_text(),
                    ));
                } else {
                    "invalid_request_error"
                };
                Err(ApiError::new(status, kind, rejection.body_text()))
            }
        }
    }
}
