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
//! - [`ollama`] and [`openai`]: each dialect's handlers and request shapes;
//! - [`anthropic`] and [`responses`]: the Anthropic Messages and OpenAI
//!   Responses APIs as Ollama serves them (translated to a chat, answered
//!   by the same plan, rendered by converters that follow Ollama's own);
//! - [`manage`]: model management (`/api/create`, `copy`, `delete`,
//!   `blobs`, `push`, `pull`), which changes the device's disk.
//!
//! Dependencies run one way: `wire` ← `plan` ← `stream` and `embed` ←
//! the dialect modules; only those know a dialect.
//!
//! Routes exist from the Ollama version that added them
//! ([`DeviceConfig::ollama_version`](crate::config::DeviceConfig)): an older
//! device answers `404 page not found`, as gin does for an unknown path.

mod anthropic;
mod embed;
mod manage;
mod media;
mod ollama;
mod openai;
mod plan;
mod responses;
mod stream;
mod wire;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::engine::{Engine, EngineError};
use crate::agent::Controls;
use crate::config::SimEngine;

/// The first Ollama with `POST /v1/responses` (commit 1eb5e759).
pub(crate) const RESPONSES_SINCE: (u64, u64, u64) = (0, 13, 3);
/// The first Ollama with `POST /v1/messages` (commit 2b2cda7a).
pub(crate) const MESSAGES_SINCE: (u64, u64, u64) = (0, 14, 0);
/// The first Ollama whose `/api/tags` entries carry `capabilities`
/// (commit 4b2d5299).
pub(crate) const TAGS_CAPABILITIES_SINCE: (u64, u64, u64) = (0, 30, 0);
/// The first Ollama whose `/api/ps` entries carry `context_length`
/// (commit 34088dbc).
pub(crate) const PS_CONTEXT_LENGTH_SINCE: (u64, u64, u64) = (0, 10, 0);
/// The first Ollama that thinks by default with a reasoning model when the
/// request does not say (commit 90d429f5).
pub(crate) const THINK_BY_DEFAULT_SINCE: (u64, u64, u64) = (0, 12, 4);

/// Every Ollama and OpenAI route of one device, over `engine`; `controls`
/// is poked when the disk changes so the next report goes out at once.
pub(super) fn router(engine: Arc<Engine>, controls: Arc<Controls>) -> Router {
    let cfg = engine.config().clone();
    let state = Arc::new(AppState {
        engine,
        controls,
        next_id: AtomicU64::new(1),
    });
    // A server that speaks only OpenAI's API has just its routes.
    let only = match cfg.engine {
        SimEngine::Ollama => None,
        SimEngine::OpenAi => Some(
            Router::new()
                .route("/v1/chat/completions", post(openai::chat_completions))
                .route("/v1/embeddings", post(openai::embeddings)),
        ),
        SimEngine::Stt => Some(
            Router::new()
                .route("/v1/audio/transcriptions", post(media::transcriptions))
                .route("/v1/audio/translations", post(media::translations)),
        ),
        SimEngine::Image => Some(
            Router::new()
                .route("/v1/images/generations", post(media::generations))
                .route("/v1/images/edits", post(media::edits)),
        ),
    };
    if let Some(r) = only {
        return r
            .route("/v1/models", get(media::models))
            .fallback(page_not_found)
            .with_state(state);
    }
    let mut r = Router::new()
        .route("/", get(ollama::root))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/pull", post(manage::pull))
        .route("/api/push", post(manage::push))
        .route("/api/create", post(manage::create))
        .route("/api/copy", post(manage::copy))
        .route("/api/delete", axum::routing::delete(manage::delete))
        .route(
            "/api/blobs/{digest}",
            post(manage::create_blob).head(manage::head_blob),
        )
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings));
    if cfg.ollama_at_least(RESPONSES_SINCE) {
        r = r.route("/v1/responses", post(responses::responses));
    }
    if cfg.ollama_at_least(MESSAGES_SINCE) {
        r = r.route("/v1/messages", post(anthropic::messages));
    }
    if cfg.ollama_at_least(media::TRANSCRIPTIONS_SINCE) {
        r = r.route("/v1/audio/transcriptions", post(media::transcriptions));
    }
    r.fallback(page_not_found).with_state(state)
}

/// What gin answers for a path it has no route for.
async fn page_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain")],
        "404 page not found",
    )
        .into_response()
}

/// State shared by every handler of one device.
#[derive(Debug)]
struct AppState {
    /// The simulated machine: models, slots, timing, faults.
    engine: Arc<Engine>,
    /// The agent's knobs: a disk change asks for a report now.
    controls: Arc<Controls>,
    /// The number in the next OpenAI `chatcmpl-N` id.
    next_id: AtomicU64,
}

impl AppState {
    /// The disk changed (pull, create, copy, delete): report it now.
    fn disk_changed(&self) {
        self.controls.report_now();
    }
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

    /// The same error in Anthropic's shape, with Ollama's mapping of
    /// status to type (`anthropic.NewError`) and a fresh `req_` id.
    fn anthropic(self) -> Response {
        let ty = match self.status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        };
        let body = json!({
            "type": "error",
            "error": {"type": ty, "message": self.message},
            "request_id": format!("req_{}", wire::random_hex(12)),
        });
        (self.status, Json(body)).into_response()
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
