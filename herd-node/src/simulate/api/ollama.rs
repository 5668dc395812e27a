//! Ollama's own API (`/`, `/api/*`): what herd's router, the Ollama SDKs
//! and Open WebUI speak to a node.
//!
//! Handlers here only read Ollama's request shapes and write Ollama's
//! envelopes (NDJSON streams, `{"error": ...}`); what is answered and when
//! comes from [`super::plan`], [`super::stream`] and [`super::embed`], which
//! the OpenAI side shares.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::embed::{EmbedRequest, embed_core, inputs};
use super::plan::{
    GenInput, Reply, chat_prompt, chat_reply, check_model, limit, start, text_reply,
};
use super::stream::{Wire, streaming_response};
use super::wire::{Message, nanos, ndjson, now_str, ollama_tool_calls, parse};
use super::{ApiError, AppState};
use crate::config::ModelSpec;
use crate::simulate::content::{KeepAlive, approx_tokens, digest_of, parse_keep_alive, rfc3339};
use crate::simulate::engine::Engine;

// ---------------------------------------------------------------- requests

/// The model options herd's clients send; the rest are accepted and unused.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    num_predict: Option<i64>,
    num_ctx: Option<u32>,
    temperature: Option<f64>,
}

/// `POST /api/chat`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    tools: Vec<Value>,
    format: Option<Value>,
    options: Options,
    stream: Option<bool>,
    keep_alive: Option<Value>,
}

/// `POST /api/generate`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GenerateRequest {
    model: String,
    prompt: Option<String>,
    system: Option<String>,
    format: Option<Value>,
    options: Options,
    stream: Option<bool>,
    keep_alive: Option<Value>,
}

/// `keep_alive` as Ollama reads it (seconds, a duration string, or
/// negative for forever); absent or null keeps the device's default.
fn keep_alive_of(v: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_keep_alive(v)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("invalid keep_alive: {v}"))),
    }
}

// ---------------------------------------------------------------- handlers

/// `GET /`
pub(super) async fn root() -> &'static str {
    "Ollama is running"
}

/// `GET /api/version`
pub(super) async fn version(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"version": s.engine.config().ollama_version}))
}

/// The `details` object of a model in `/api/tags`, `/api/ps` and `/api/show`.
fn details(m: &ModelSpec) -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": m.family,
        "families": [m.family],
        "parameter_size": m.parameter_size,
        "quantization_level": m.quantization,
    })
}

/// `modified_at` of a model that came with the device (not pulled).
const BUILTIN_MODIFIED: &str = "2025-10-01T12:00:00.000000000Z";

/// `GET /api/tags`
pub(super) async fn tags(State(s): State<Arc<AppState>>) -> Json<Value> {
    let models: Vec<Value> = s
        .engine
        .disk()
        .into_iter()
        .map(|(m, pulled)| {
            json!({
                "name": m.name, "model": m.name,
                "modified_at": pulled.map_or_else(|| BUILTIN_MODIFIED.to_owned(), rfc3339),
                "size": m.size_bytes,
                "digest": digest_of(&m.name),
                "details": details(&m),
            })
        })
        .collect();
    Json(json!({"models": models}))
}

/// `GET /api/ps`
pub(super) async fn ps(State(s): State<Arc<AppState>>) -> Json<Value> {
    let models: Vec<Value> = s
        .engine
        .loaded()
        .into_iter()
        .map(|l| {
            let expires = match l.expires_in {
                Some(d) => rfc3339(SystemTime::now() + d),
                // Ollama shows "forever" as a date far in the future.
                None => "2318-01-01T00:00:00.000000000Z".to_owned(),
            };
            json!({
                "name": l.spec.name, "model": l.spec.name,
                "size": l.spec.size_bytes,
                "digest": digest_of(&l.spec.name),
                "details": details(&l.spec),
                "expires_at": expires,
                "size_vram": l.spec.size_bytes,
                "context_length": l.spec.context_length,
            })
        })
        .collect();
    Json(json!({"models": models}))
}

/// `POST /api/show`'s body; `name` is the older spelling of `model`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ShowRequest {
    model: String,
    name: String,
}

/// `POST /api/show`
pub(super) async fn show(
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: ShowRequest = parse(&body)?;
    let name = if req.model.is_empty() {
        req.name
    } else {
        req.model
    };
    let m = s
        .engine
        .find(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("model '{name}' not found")))?;
    let arch = m.family.clone();
    let params = parse_param_count(&m.parameter_size);
    let mut info = Map::new();
    info.insert("general.architecture".into(), json!(arch));
    info.insert("general.parameter_count".into(), json!(params));
    info.insert(format!("{arch}.context_length"), json!(m.context_length));
    if let Some(d) = m.embedding_dims {
        info.insert(format!("{arch}.embedding_length"), json!(d));
    }
    let caps = if m.is_embedding() {
        json!(["embedding"])
    } else {
        json!(["completion", "tools"])
    };
    Ok(Json(json!({
        "license": "",
        "modelfile": format!("FROM {}\n", m.name),
        "parameters": "stop                           \"<|eot_id|>\"",
        "template": "{{ .System }}{{ .Prompt }}",
        "details": details(&m),
        "model_info": info,
        "capabilities": caps,
        "modified_at": BUILTIN_MODIFIED,
    })))
}

/// `8.2B` / `137M` / `1K` as a count, for `general.parameter_count`.
fn parse_param_count(s: &str) -> u64 {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('B') => (&s[..s.len() - 1], 1e9),
        Some('M') => (&s[..s.len() - 1], 1e6),
        Some('K') => (&s[..s.len() - 1], 1e3),
        _ => (s, 1.0),
    };
    num.parse::<f64>()
        .map(|n| (n * mult).round() as u64)
        .unwrap_or(0)
}

/// A warm-up or unload request (no prompt / no messages).
async fn load_only(
    engine: &Arc<Engine>,
    model: &str,
    keep_alive: Option<KeepAlive>,
    chat: bool,
) -> Result<Json<Value>, ApiError> {
    let reason = if keep_alive == Some(KeepAlive::For(Duration::ZERO)) {
        engine.unload(model);
        "unload"
    } else {
        engine.warm(model, keep_alive).await?;
        "load"
    };
    let mut v =
        json!({"model": model, "created_at": now_str(), "done": true, "done_reason": reason});
    if chat {
        v["message"] = json!({"role": "assistant", "content": ""});
    } else {
        v["response"] = json!("");
    }
    Ok(Json(v))
}

/// `POST /api/chat`
pub(super) async fn chat(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    chat_inner(&s, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn chat_inner(s: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(body)?;
    let spec = check_model(&s.engine, &req.model, "chat")?;
    let model = spec.name.clone();
    let keep_alive = keep_alive_of(req.keep_alive.as_ref())?;
    let _ = (req.options.num_ctx, req.options.temperature);
    if req.messages.is_empty() {
        return Ok(load_only(&s.engine, &model, keep_alive, true)
            .await?
            .into_response());
    }
    let n = limit(req.options.num_predict);
    let reply = chat_reply(&model, &req.messages, &req.tools, req.format.as_ref(), n);
    let (_, prompt_tokens) = chat_prompt(&req.messages);
    let plan = start(
        &s.engine,
        GenInput {
            model,
            prompt_tokens,
            reply,
            keep_alive,
        },
    )
    .await?;
    if req.stream.unwrap_or(true) {
        return Ok(streaming_response(plan, Wire::Chat, &s.engine));
    }
    tokio::time::sleep_until(plan.done_at()).await;
    let mut msg = json!({"role": "assistant", "content": plan.content()});
    if let Reply::ToolCall { name, arguments } = &plan.reply {
        msg["tool_calls"] = ollama_tool_calls(name, arguments);
    }
    let v = json!({"model": plan.model, "created_at": now_str(), "message": msg});
    Ok(Json(plan.ollama_final(v)).into_response())
}

/// `POST /api/generate`
pub(super) async fn generate(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    generate_inner(&s, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn generate_inner(s: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let req: GenerateRequest = parse(body)?;
    let spec = check_model(&s.engine, &req.model, "generate")?;
    let model = spec.name.clone();
    let keep_alive = keep_alive_of(req.keep_alive.as_ref())?;
    let prompt = req.prompt.unwrap_or_default();
    if prompt.is_empty() {
        return Ok(load_only(&s.engine, &model, keep_alive, false)
            .await?
            .into_response());
    }
    let n = limit(req.options.num_predict);
    let reply = text_reply(&model, &prompt, req.format.as_ref(), n);
    let system = req.system.unwrap_or_default();
    let prompt_tokens = approx_tokens(&system) + approx_tokens(&prompt) + 4;
    let plan = start(
        &s.engine,
        GenInput {
            model,
            prompt_tokens,
            reply,
            keep_alive,
        },
    )
    .await?;
    if req.stream.unwrap_or(true) {
        return Ok(streaming_response(plan, Wire::Generate, &s.engine));
    }
    tokio::time::sleep_until(plan.done_at()).await;
    let v = json!({"model": plan.model, "created_at": now_str(), "response": plan.content()});
    Ok(Json(plan.ollama_final(v)).into_response())
}

/// `POST /api/embed`
pub(super) async fn embed(
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: EmbedRequest = parse(&body)?;
    let _ = (req.truncate, &req.options);
    let keep_alive = keep_alive_of(req.keep_alive.as_ref())?;
    let texts = inputs(&req.input)?;
    if texts.is_empty() {
        // No input: just load the model, like a generate without a prompt.
        let spec = check_model(&s.engine, &req.model, "embeddings")?;
        let load = s.engine.warm(&spec.name, keep_alive).await?;
        return Ok(Json(json!({
            "model": spec.name, "embeddings": [], "total_duration": nanos(load),
            "load_duration": nanos(load), "prompt_eval_count": 0,
        })));
    }
    let e = embed_core(&s.engine, &req.model, texts, req.dimensions, keep_alive).await?;
    Ok(Json(json!({
        "model": e.model,
        "embeddings": e.vectors,
        "total_duration": nanos(e.total),
        "load_duration": nanos(e.load),
        "prompt_eval_count": e.prompt_tokens,
    })))
}

/// `POST /api/embeddings` (legacy)
pub(super) async fn embeddings(
    State(s): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: EmbedRequest = parse(&body)?;
    let keep_alive = keep_alive_of(req.keep_alive.as_ref())?;
    let texts = vec![req.prompt.unwrap_or_default()];
    let mut e = embed_core(&s.engine, &req.model, texts, None, keep_alive).await?;
    Ok(Json(
        json!({"embedding": e.vectors.pop().unwrap_or_default()}),
    ))
}

/// `POST /api/pull`'s body; `name` is the older spelling of `model`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PullRequest {
    model: String,
    name: String,
    insecure: bool,
    stream: Option<bool>,
}

/// `POST /api/pull`
pub(super) async fn pull(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    let req: PullRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let _ = req.insecure;
    let name = if req.model.is_empty() {
        req.name
    } else {
        req.model
    };
    let (spec, steps) = match s.engine.pull_plan(&name) {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let start = Instant::now();
    if !req.stream.unwrap_or(true) {
        if let Some((last, _)) = steps.last() {
            tokio::time::sleep_until(start + *last).await;
        }
        s.engine.finish_pull(spec);
        return Json(json!({"status": "success"})).into_response();
    }
    let engine = s.engine.clone();
    let total = steps.len();
    let stream = futures::stream::unfold(
        (steps.into_iter().enumerate(), Some(spec)),
        move |(mut it, mut spec)| {
            let engine = engine.clone();
            async move {
                let (i, (offset, event)) = it.next()?;
                tokio::time::sleep_until(start + offset).await;
                if i + 1 == total
                    && let Some(spec) = spec.take()
                {
                    engine.finish_pull(spec);
                }
                Some((Ok::<_, Infallible>(ndjson(&event)), (it, spec)))
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_counts() {
        assert_eq!(parse_param_count("8.2B"), 8_200_000_000);
        assert_eq!(parse_param_count("137M"), 137_000_000);
    }
}
