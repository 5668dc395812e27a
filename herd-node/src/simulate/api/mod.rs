//! The Ollama (`/api/*`) and OpenAI-compatible (`/v1/*`) HTTP surface of a
//! simulated device.
//!
//! Shapes follow Ollama's `docs/api.md` and `docs/openai.md` closely because
//! the router, the official SDKs and the end-to-end tests all parse them; a
//! field the real server sends and we do not is a bug here. Timing comes from
//! the [`Engine`]: every chunk carries a deadline and is written when it is
//! due, so a router measuring TTFT and tokens/s sees what the config says.
//!
//! The two APIs are two views of one generation, so the files split where
//! the seams are: what both dialects share sits apart from what only one of
//! them speaks, and a change to OpenAI's shapes cannot touch Ollama's.
//!
//! - this file: the shared state, the error type and the route table;
//! - [`wire`]: body parsing, time and duration fields, NDJSON/SSE framing,
//!   tool-call shapes;
//! - [`plan`]: what a request will answer and when (admission, TTFT, pace);
//! - [`stream`]: a plan played out chunk by chunk on its deadlines;
//! - [`embed`]: embeddings, which both APIs serve from one core;
//! - [`ollama`] and [`openai`]: each dialect's handlers and request shapes.
//!
//! Dependencies run one way: `wire` ← `plan` ← `stream` and `embed` ←
//! `ollama` and `openai`; only those last two know a dialect.

mod embed;
mod ollama;
mod openai;
mod plan;
mod stream;
mod wire;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::engine::{Engine, EngineError};

/// Every Ollama and OpenAI route of one device, over `engine`.
pub(super) fn router(engine: Arc<Engine>) -> Router {
    let state = Arc::new(AppState {
        engine,
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/", get(ollama::root))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/pull", post(ollama::pull))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .with_state(state)
}

/// State shared by every handler of one device.
#[derive(Debug)]
struct AppState {
    /// The simulated machine: models, slots, timing, faults.
    engine: Arc<Engine>,
    /// The number in the next OpenAI `chatcmpl-N` id.
    next_id: AtomicU64,
}

/// An error answered in Ollama's shape, `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq)]
struct ApiError {
    /// HTTP status.
    status: StatusCode,
    /// What the client reads under `error` (or `error.message`).
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The same error in OpenAI's shape.
    fn openai(self) -> Response {
        // Ollama's compat layer uses only these three types; param and code
        // are always null.
        let ty = match self.status {
            StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            _ => "api_error",
        };
        let body =
            json!({"error": {"message": self.message, "type": ty, "param": null, "code": null}});
        (self.status, Json(body)).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match e {
            EngineError::NotFound(_) => StatusCode::NOT_FOUND,
            EngineError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Unsupported { .. } => StatusCode::BAD_REQUEST,
            EngineError::TooBig { .. } | EngineError::NotInCatalog => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}
