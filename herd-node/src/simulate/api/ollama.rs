//! Ollama's own API (`/`, `/api/*`): what herd's router, the Ollama SDKs
//! and Open WebUI speak to a node.
//!
//! Handlers here only read Ollama's request shapes and write Ollama's
//! envelopes (NDJSON streams, `{"error": ...}`); what is answered and when
//! comes from [`super::plan`], [`super::stream`] and [`super::embed`], which
//! the OpenAI side shares. Model management lives in [`super::manage`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::embed::{EmbedRequest, embed_core, inputs};
use super::plan::{
    GenInput, Reply, apply_stop, cache_text, chat_prompt, chat_reply, check_model, check_tools,
    decide_think, limit, parse_think, start, text_reply, thinking_for,
};
use super::stream::{Wire, streaming_response};
use super::wire::{Message, nanos, now_str, ollama_tool_calls, parse};
use super::{ApiError, AppState, PS_CONTEXT_LENGTH_SINCE, TAGS_CAPABILITIES_SINCE};
use crate::simulate::content::{KeepAlive, approx_tokens, parse_keep_alive, rfc3339};
use crate::simulate::engine::{Engine, EngineError, StoredModel};

// ---------------------------------------------------------------- requests

/// The model options herd's clients send; the rest are accepted and unused.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    num_predict: Option<i64>,
    num_ctx: Option<u32>,
    temperature: Option<f64>,
    stop: Option<Value>,
}

impl Options {
    /// `stop`: one string or a list.
    fn stops(&self) -> Vec<String> {
        match &self.stop {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    }
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
    think: Option<Value>,
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
    think: Option<Value>,
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
pub(super) fn details(m: &StoredModel) -> Value {
    json!({
        "parent_model": m.parent_model,
        "format": "gguf",
        "family": m.spec.family,
        "families": [m.spec.family],
        "parameter_size": m.spec.parameter_size,
        "quantization_level": m.spec.quantization,
    })
}

/// `GET /api/tags`: newest first; `capabilities` from Ollama 0.30.0.
pub(super) async fn tags(State(s): State<Arc<AppState>>) -> Json<Value> {
    let caps = s.engine.config().ollama_at_least(TAGS_CAPABILITIES_SINCE);
    let models: Vec<Value> = s
        .engine
        .disk()
        .into_iter()
        .map(|m| {
            let mut v = json!({
                "name": m.spec.name, "model": m.spec.name,
                "modified_at": rfc3339(m.modified_at),
                "size": m.spec.size_bytes,
                "digest": m.digest,
                "details": details(&m),
            });
            if caps {
                v["capabilities"] = json!(m.spec.capabilities());
            }
            v
        })
        .collect();
    Json(json!({"models": models}))
}

/// `GET /api/ps`: latest expiry first, as Ollama sorts it.
pub(super) async fn ps(State(s): State<Arc<AppState>>) -> Json<Value> {
    let context = s.engine.config().ollama_at_least(PS_CONTEXT_LENGTH_SINCE);
    let mut loaded = s.engine.loaded();
    // A model kept forever (None) sorts as the latest expiry.
    loaded.sort_by_key(|l| std::cmp::Reverse(l.expires_in.unwrap_or(Duration::MAX)));
    let models: Vec<Value> = loaded
        .into_iter()
        .map(|l| {
            let expires = match l.expires_in {
                Some(d) => rfc3339(SystemTime::now() + d),
                // Ollama shows "forever" as a date far in the future.
                None => "2318-01-01T00:00:00.000000000Z".to_owned(),
            };
            // A model deleted while loaded keeps running; its manifest is gone.
            let stored = s
                .engine
                .stored(&l.spec.name)
                .unwrap_or_else(|| StoredModel {
                    digest: l.digest.clone(),
                    ..StoredModel::pulled(l.spec.clone(), SystemTime::now())
                });
            let mut v = json!({
                "name": l.spec.name, "model": l.spec.name,
                "size": l.spec.size_bytes,
                "digest": l.digest,
                "details": details(&stored),
                "expires_at": expires,
                "size_vram": l.spec.size_bytes,
            });
            if context {
                v["context_length"] = json!(l.spec.context_length);
            }
            v
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

/// Default `parameters` text of a model nobody configured.
const DEFAULT_PARAMETERS: &str = "stop                           \"<|eot_id|>\"";
/// Default template of a model nobody configured.
const DEFAULT_TEMPLATE: &str = "{{ .System }}{{ .Prompt }}";

/// `parameters` as `/api/show` prints them: one `key value` line per
/// value, the key padded to 30 columns.
fn parameters_text(params: &Map<String, Value>) -> String {
    let mut lines = Vec::new();
    for (k, v) in params {
        let values = match v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        for v in values {
            lines.push(format!("{k:<30} {v}"));
        }
    }
    lines.join("\n")
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
        .stored(&name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("model '{name}' not found")))?;
    let spec = &m.spec;
    let arch = spec.family.clone();
    let params = parse_param_count(&spec.parameter_size);
    let mut info = Map::new();
    info.insert("general.architecture".into(), json!(arch));
    info.insert("general.parameter_count".into(), json!(params));
    info.insert(format!("{arch}.context_length"), json!(spec.context_length));
    if let Some(d) = spec.embedding_dims {
        info.insert(format!("{arch}.embedding_length"), json!(d));
    }
    let parameters = if m.parameters.is_empty() {
        DEFAULT_PARAMETERS.to_owned()
    } else {
        parameters_text(&m.parameters)
    };
    let template = m
        .template
        .clone()
        .unwrap_or_else(|| DEFAULT_TEMPLATE.to_owned());
    let mut modelfile = format!("FROM {}\nTEMPLATE \"\"\"{template}\"\"\"\n", spec.name);
    if let Some(sys) = &m.system {
        modelfile.push_str(&format!("SYSTEM \"\"\"{sys}\"\"\"\n"));
    }
    for line in parameters.lines() {
        modelfile.push_str(&format!("PARAMETER {line}\n"));
    }
    let mut v = json!({
        "license": m.license.join("\n"),
        "modelfile": modelfile,
        "parameters": parameters,
        "template": template,
        "details": details(&m),
        "model_info": info,
        "capabilities": spec.capabilities(),
        "modified_at": rfc3339(m.modified_at),
    });
    if let Some(sys) = &m.system {
        v["system"] = json!(sys);
    }
    Ok(Json(v))
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

/// The model a generation names, checked in the order Ollama's handlers
/// check it: it exists, `think` fits it, it can do `what`, it takes the
/// tools. Returns the spec and whether it thinks.
fn admit_checks(
    engine: &Engine,
    model: &str,
    think: Option<&Value>,
    what: &'static str,
    tools: &[Value],
) -> Result<(crate::config::ModelSpec, bool), ApiError> {
    let asked = parse_think(think)?;
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let spec = engine
        .find(model)
        .ok_or_else(|| EngineError::NotFound(model.to_owned()))?;
    let thinks = decide_think(engine, &spec, asked, model, false)?;
    let spec = check_model(engine, model, what)?;
    check_tools(&spec, tools)?;
    Ok((spec, thinks))
}

async fn chat_inner(s: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(body)?;
    let (spec, thinks) = admit_checks(
        &s.engine,
        &req.model,
        req.think.as_ref(),
        "chat",
        &req.tools,
    )?;
    super::media::check_vision(&spec, super::media::has_images(body))?;
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
    let reply = apply_stop(reply, &req.options.stops());
    let (prompt, prompt_tokens) = chat_prompt(&req.messages);
    let plan = start(
        &s.engine,
        GenInput {
            thinking: thinking_for(&model, &prompt, thinks),
            model,
            prompt_tokens,
            prompt: cache_text(&prompt),
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
    let thinking = plan.thinking_text();
    if !thinking.is_empty() {
        msg["thinking"] = json!(thinking);
    }
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
    let (spec, thinks) = admit_checks(&s.engine, &req.model, req.think.as_ref(), "generate", &[])?;
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
    let reply = apply_stop(reply, &req.options.stops());
    let system = req.system.unwrap_or_default();
    let prompt_tokens = approx_tokens(&system) + approx_tokens(&prompt) + 4;
    let plan = start(
        &s.engine,
        GenInput {
            thinking: thinking_for(&model, &prompt, thinks),
            model,
            prompt_tokens,
            prompt: format!("{system}{prompt}"),
            reply,
            keep_alive,
        },
    )
    .await?;
    if req.stream.unwrap_or(true) {
        return Ok(streaming_response(plan, Wire::Generate, &s.engine));
    }
    tokio::time::sleep_until(plan.done_at()).await;
    let mut v = json!({"model": plan.model, "created_at": now_str(), "response": plan.content()});
    let thinking = plan.thinking_text();
    if !thinking.is_empty() {
        v["thinking"] = json!(thinking);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_counts() {
        assert_eq!(parse_param_count("8.2B"), 8_200_000_000);
        assert_eq!(parse_param_count("137M"), 137_000_000);
    }
}
