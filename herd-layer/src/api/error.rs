//! Errors as the client expects them.
//!
//! Every failure becomes a response in the caller's own dialect — Ollama's
//! `{"error": "..."}` or OpenAI's `{"error": {"message","type","code"}}` —
//! with the right status and, when waiting helps, a `Retry-After`.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::fleet::FleetView;
use crate::forward::{InvalidRequest, UpstreamError, UpstreamErrorKind};
use crate::queueing::{QueueTimeout, Shed};
use crate::request::ClientFormat;
use crate::retry::RetriesExhausted;
use crate::routed::BoxError;
use crate::scoring::NoCandidates;
use crate::translate;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub code: Option<&'static str>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            code: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    /// Map a routing-stack failure to what the client should see.
    pub fn from_stack(err: &BoxError, view: &FleetView) -> Self {
        if let Some(e) = err.downcast_ref::<NoCandidates>() {
            if e.model_unknown() {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "model {:?} not found on any node; {}",
                        e.model,
                        where_models_are(view)
                    ),
                )
                .code("model_not_found");
            }
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no node can serve model {:?} right now: {}",
                    e.model, e.summary
                ),
            )
            .code("no_eligible_node")
            .retry_after(Duration::from_secs(5));
        }
        if let Some(e) = err.downcast_ref::<crate::retry::AutoPullFailed>() {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{e}; {}", where_models_are(view)),
            )
            .code("model_not_found");
        }
        if let Some(e) = err.downcast_ref::<Shed>() {
            return ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
                .code("queue_full")
                .retry_after(e.retry_after);
        }
        if let Some(e) = err.downcast_ref::<QueueTimeout>() {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                .code("queue_timeout")
                .retry_after(e.retry_after);
        }
        if let Some(e) = err.downcast_ref::<RetriesExhausted>() {
            let status = e
                .status
                .filter(|s| (400..500).contains(s) && *s != 404 && *s != 429)
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY);
            return ApiError::new(status, e.to_string()).code("upstream_failed");
        }
        if let Some(e) = err.downcast_ref::<UpstreamError>() {
            return match &e.kind {
                UpstreamErrorKind::Status { status, message } if (400..500).contains(status) => {
                    ApiError::new(
                        StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                        message.clone(),
                    )
                }
                _ => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()).code("upstream_failed"),
            };
        }
        if let Some(e) = err.downcast_ref::<InvalidRequest>() {
            return ApiError::bad_request(e.to_string());
        }
        tracing::error!(error = %err, "unexpected routing failure");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
    }

    /// Render in the client's format.
    pub fn render(&self, format: ClientFormat) -> Response {
        let body = match format {
            ClientFormat::Ollama => translate::ollama_error(&self.message),
            ClientFormat::OpenAi => {
                let kind = match self.status.as_u16() {
                    429 => "rate_limit_error",
                    s if s >= 500 => "server_error",
                    _ => "invalid_request_error",
                };
                translate::openai_error(&self.message, kind, self.code)
            }
        };
        let mut rsp = (self.status, axum::Json(body)).into_response();
        if let Some(d) = self.retry_after {
            let secs = d.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                rsp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        rsp
    }
}

/// "available models: a (n1, n2), b (n3)", bounded in length.
pub fn where_models_are(view: &FleetView) -> String {
    let models = view.models();
    if models.is_empty() {
        return "no node reports any model yet".into();
    }
    let mut parts = Vec::new();
    for (name, nodes) in models.iter().take(20) {
        let nodes: Vec<&str> = nodes.iter().map(|n| &**n).collect();
        parts.push(format!("{name} ({})", nodes.join(", ")));
    }
    let more = models.len().saturating_sub(20);
    let mut s = format!("available models: {}", parts.join(", "));
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}
