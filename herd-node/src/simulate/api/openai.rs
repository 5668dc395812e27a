//! The OpenAI-compatible API (`/v1/*`) that Ollama serves beside its own,
//! for OpenAI SDKs, LiteLLM and agents pointed at a node.
//!
//! It follows Ollama's `docs/openai.md`, not OpenAI's full API: the same
//! fields, the same `fp_ollama` fingerprint, errors in OpenAI's shape with
//! only the types Ollama uses. Answers come from the same [`super::plan`] and
//! [`super::embed`] as Ollama's, so both APIs time and word a reply alike.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::embed::{EmbedRequest, embed_core, inputs};
use super::plan::{
    GenInput, Reply, apply_stop, cache_text, chat_prompt, chat_reply, check_model, check_tools,
    decide_think, limit, start, thinking_for,
};
use super::stream::{Wire, streaming_response};
use super::wire::{Message, openai_tool_calls, parse};
use super::{ApiError, AppState};
use crate::simulate::engine::EngineError;

// ---------------------------------------------------------------- requests

/// `POST /v1/chat/completions`' body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatCompletionRequest {
    model: String,
    messages: Vec<Message>,
    tools: Vec<Value>,
    response_format: Option<Value>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    stream: bool,
    stream_options: Option<StreamOptions>,
    stop: Option<Value>,
    reasoning_effort: Option<String>,
    reasoning: Option<ReasoningParam>,
}

/// `reasoning: {effort}`, the newer spelling of `reasoning_effort`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ReasoningParam {
    effort: Option<String>,
}

/// OpenAI's reasoning effort as Ollama's `think` (`thinkFromReasoningEffort`):
/// `none` is off, the other known levels are on; anything else is a 400.
pub(super) fn think_from_effort(effort: Option<&str>) -> Result<Option<bool>, ApiError> {
    match effort {
        None | Some("") => Ok(None),
        Some("none") => Ok(Some(false)),
        Some("minimal" | "low" | "medium" | "high" | "max" | "xhigh" | "ultra") => Ok(Some(true)),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid reasoning value: {} (must be \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")",
            Value::String(other.to_owned())
        ))),
    }
}

/// `stream_options`: whether a streamed answer ends with a usage chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamOptions {
    include_usage: bool,
}

/// Now, as OpenAI's `created` (Unix seconds).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------- handlers

/// `GET /v1/models`
pub(super) async fn models(State(s): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = s
        .engine
        .disk()
        .into_iter()
        .map(|m| {
            let created = m
                .modified_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // Ollama's owner is the name's namespace.
            let parts: Vec<&str> = m.spec.name.split('/').collect();
            let owner = if parts.len() >= 2 {
                parts[parts.len() - 2]
            } else {
                "library"
            };
            json!({"id": m.spec.name, "object": "model", "created": created, "owned_by": owner})
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `POST /v1/chat/completions`
pub(super) async fn chat_completions(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    chat_completions_inner(&s, &body)
        .await
        .unwrap_or_else(ApiError::openai)
}

async fn chat_completions_inner(s: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = parse(body)?;
    let _ = req.temperature;
    let effort = req
        .reasoning
        .as_ref()
        .and_then(|r| r.effort.as_deref())
        .or(req.reasoning_effort.as_deref());
    let asked = think_from_effort(effort)?;
    if req.model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let found = s
        .engine
        .find(&req.model)
        .ok_or_else(|| EngineError::NotFound(req.model.clone()))?;
    let thinks = decide_think(&s.engine, &found, asked, &req.model, false)?;
    let spec = check_model(&s.engine, &req.model, "chat")?;
    check_tools(&spec, &req.tools)?;
    super::media::check_vision(&spec, super::media::has_images(body))?;
    let model = spec.name.clone();
    if req.messages.is_empty() {
        return Err(ApiError::bad_request("[] is too short - 'messages'"));
    }
    let format = match &req.response_format {
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("json_object") => Some(json!("json")),
            Some("json_schema") => Some(
                rf.pointer("/json_schema/schema")
                    .cloned()
                    .unwrap_or_else(|| json!("json")),
            ),
            _ => None,
        },
        None => None,
    };
    let n = limit(req.max_completion_tokens.or(req.max_tokens));
    let reply = chat_reply(&model, &req.messages, &req.tools, format.as_ref(), n);
    let stops: Vec<String> = match &req.stop {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let reply = apply_stop(reply, &stops);
    let (prompt, prompt_tokens) = chat_prompt(&req.messages);
    let plan = start(
        &s.engine,
        GenInput {
            thinking: thinking_for(&model, &prompt, thinks),
            model,
            prompt_tokens,
            prompt: cache_text(&prompt),
            reply,
            keep_alive: None,
        },
    )
    .await?;
    let id = format!("chatcmpl-{}", s.next_id.fetch_add(1, Ordering::Relaxed));
    let created = unix_now();
    if req.stream {
        let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
        let wire = Wire::OpenAi {
            id,
            created,
            include_usage,
        };
        return Ok(streaming_response(plan, wire, &s.engine));
    }
    tokio::time::sleep_until(plan.done_at()).await;
    let (msg, finish) = match &plan.reply {
        Reply::ToolCall { name, arguments } => (
            json!({"role": "assistant", "content": "", "tool_calls": openai_tool_calls(&id, name, arguments, false)}),
            "tool_calls",
        ),
        Reply::Text { .. } => (
            json!({"role": "assistant", "content": plan.content()}),
            plan.done_reason(),
        ),
    };
    let mut msg = msg;
    let thinking = plan.thinking_text();
    if !thinking.is_empty() {
        msg["reasoning"] = json!(thinking);
    }
    Ok(Json(json!({
        "id": id, "object": "chat.completion", "created": created, "model": plan.model,
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
        "usage": plan.usage(),
    }))
    .into_response())
}

/// `POST /v1/embeddings`
pub(super) async fn embeddings(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let run = async {
        let req: EmbedRequest = parse(&body)?;
        let _ = req.encoding_format;
        let texts = inputs(&req.input)?;
        if texts.is_empty() {
            return Err(ApiError::bad_request("invalid input"));
        }
        let e = embed_core(&s.engine, &req.model, texts, req.dimensions, None).await?;
        let data: Vec<Value> = e
            .vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
            .collect();
        Ok::<_, ApiError>(Json(json!({
            "object": "list", "data": data, "model": e.model,
            "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens},
        })))
    };
    match run.await {
        Ok(j) => j.into_response(),
        Err(e) => e.openai(),
    }
}
