//! The Ollama (`/api/*`) and OpenAI-compatible (`/v1/*`) HTTP surface of a
//! simulated device.
//!
//! Shapes follow Ollama's `docs/api.md` and `docs/openai.md` closely because
//! the router, the official SDKs and the end-to-end tests all parse them; a
//! field the real server sends and we do not is a bug here. Timing comes from
//! the [`Engine`]: every chunk carries a deadline and is written when it is
//! due, so a router measuring TTFT and tokens/s sees what the config says.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::content::{
    self, KeepAlive, approx_tokens, digest_of, embedding, parse_keep_alive, reply_tokens, rfc3339,
    split_json, split_tokens, tool_arguments,
};
use super::engine::{Admission, Engine, EngineError};
use crate::config::ModelSpec;

/// State shared by every handler of one device.
#[derive(Debug)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Ids for OpenAI completions.
    pub next_id: AtomicU64,
}

/// An error answered in Ollama's shape, `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The message.
    pub message: String,
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
    pub fn openai(self) -> Response {
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

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn now_str() -> String {
    rfc3339(SystemTime::now())
}

fn wall(at: Instant) -> SystemTime {
    let now = Instant::now();
    if at >= now {
        SystemTime::now() + (at - now)
    } else {
        SystemTime::now() - (now - at)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------- requests

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    num_predict: Option<i64>,
    num_ctx: Option<u32>,
    temperature: Option<f64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
struct Message {
    role: String,
    content: Option<Value>,
}

impl Message {
    /// Text of the content: a string, or OpenAI's array of parts.
    fn text(&self) -> String {
        match &self.content {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        }
    }
}

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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OpenAiChatRequest {
    model: String,
    messages: Vec<Message>,
    tools: Vec<Value>,
    response_format: Option<Value>,
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f64>,
    stream: bool,
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamOptions {
    include_usage: bool,
}

// ---------------------------------------------------------------- generation

/// What the model will answer.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Text {
        tokens: Vec<String>,
        cut: bool,
    },
    ToolCall {
        name: String,
        arguments: Map<String, Value>,
    },
}

/// What a generation needs before it is admitted.
#[derive(Debug)]
struct GenInput {
    model: String,
    prompt_tokens: u32,
    reply: Reply,
    keep_alive: Option<KeepAlive>,
}

/// An admitted generation with its schedule.
#[derive(Debug)]
struct Plan {
    admission: Admission,
    model: String,
    arrival: Instant,
    prompt_tokens: u32,
    ttft: Duration,
    first_at: Instant,
    interval: Duration,
    reply: Reply,
}

impl Plan {
    fn eval_count(&self) -> u32 {
        match &self.reply {
            Reply::Text { tokens, .. } => tokens.len() as u32,
            Reply::ToolCall { arguments, .. } => {
                approx_tokens(&Value::Object(arguments.clone()).to_string()) + 4
            }
        }
    }

    fn done_at(&self) -> Instant {
        self.first_at + self.interval * self.eval_count()
    }

    fn done_reason(&self) -> &'static str {
        match &self.reply {
            Reply::Text { cut: true, .. } => "length",
            _ => "stop",
        }
    }

    fn content(&self) -> String {
        match &self.reply {
            Reply::Text { tokens, .. } => tokens.concat(),
            Reply::ToolCall { .. } => String::new(),
        }
    }

    /// Ollama's timing fields of the final chunk.
    fn ollama_stats(&self) -> Map<String, Value> {
        let done = self.done_at();
        let mut m = Map::new();
        m.insert("total_duration".into(), json!(nanos(done - self.arrival)));
        m.insert(
            "load_duration".into(),
            json!(nanos(self.admission.load_duration)),
        );
        m.insert("prompt_eval_count".into(), json!(self.prompt_tokens));
        m.insert("prompt_eval_duration".into(), json!(nanos(self.ttft)));
        m.insert("eval_count".into(), json!(self.eval_count()));
        m.insert("eval_duration".into(), json!(nanos(done - self.first_at)));
        m
    }

    /// `v` (an object) as Ollama's last line or whole answer: done, why,
    /// and the timing fields.
    fn ollama_final(&self, mut v: Value) -> Value {
        if let Value::Object(m) = &mut v {
            m.insert("done".into(), json!(true));
            m.insert("done_reason".into(), json!(self.done_reason()));
            m.extend(self.ollama_stats());
        }
        v
    }

    fn usage(&self) -> Value {
        let (p, c) = (self.prompt_tokens, self.eval_count());
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    }
}

fn chat_prompt(messages: &[Message]) -> (String, u32) {
    let text: String = messages
        .iter()
        .map(|m| format!("{}: {}\n", m.role, m.text()))
        .collect();
    let tokens = messages.iter().map(|m| approx_tokens(&m.text()) + 4).sum();
    (text, tokens)
}

fn limit(n: Option<i64>) -> Option<usize> {
    n.and_then(|n| usize::try_from(n).ok())
}

/// The model must exist and be able to do `what`.
fn check_model(engine: &Engine, model: &str, what: &'static str) -> Result<ModelSpec, ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let spec = engine
        .find(model)
        .ok_or_else(|| EngineError::NotFound(model.to_owned()))?;
    let embedding_only = spec.is_embedding();
    let ok = if what == "embeddings" {
        embedding_only
    } else {
        !embedding_only
    };
    if !ok {
        return Err(EngineError::Unsupported {
            model: model.to_owned(),
            what,
        }
        .into());
    }
    Ok(spec)
}

fn injected_failure(engine: &Engine) -> Result<(), ApiError> {
    let f = engine.faults();
    if f.error_500 && fastrand::f64() < f.error_500_probability {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulated failure: llama runner process has terminated",
        ));
    }
    Ok(())
}

fn chat_reply(
    model: &str,
    messages: &[Message],
    tools: &[Value],
    format: Option<&Value>,
    n: Option<usize>,
) -> Reply {
    let (prompt, _) = chat_prompt(messages);
    let last = messages.last();
    if let Some(last) = last.filter(|m| m.role == "user")
        && let Some(tool) = tools.first()
    {
        let _ = last;
        let f = tool.get("function").unwrap_or(tool);
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("tool")
            .to_owned();
        let arguments = tool_arguments(f.get("parameters").unwrap_or(&Value::Null));
        return Reply::ToolCall { name, arguments };
    }
    if let Some(last) = last.filter(|m| m.role == "tool") {
        let tokens = split_tokens(&format!("Tool result received: {}", last.text()));
        return Reply::Text { tokens, cut: false };
    }
    text_reply(model, &prompt, format, n)
}

fn text_reply(model: &str, prompt: &str, format: Option<&Value>, n: Option<usize>) -> Reply {
    match format {
        Some(f @ (Value::String(_) | Value::Object(_))) if !matches!(f, Value::String(s) if s.is_empty()) => {
            Reply::Text {
                tokens: split_json(&content::json_reply(model, prompt, f)),
                cut: false,
            }
        }
        _ => {
            let (tokens, cut) = reply_tokens(model, prompt, n);
            Reply::Text { tokens, cut }
        }
    }
}

async fn start(engine: &Arc<Engine>, input: GenInput) -> Result<Plan, ApiError> {
    let arrival = Instant::now();
    injected_failure(engine)?;
    let admission = engine.admit(&input.model, input.keep_alive).await?;
    let (ttft, interval) = engine.timing(&admission.spec, input.prompt_tokens);
    let first_at = Instant::now() + ttft;
    Ok(Plan {
        admission,
        model: input.model,
        arrival,
        prompt_tokens: input.prompt_tokens,
        ttft,
        first_at,
        interval,
        reply: input.reply,
    })
}

fn keep_alive_of(v: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_keep_alive(v)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("invalid keep_alive: {v}"))),
    }
}

// ---------------------------------------------------------------- streaming

/// The wire format of a streamed generation.
#[derive(Debug, Clone)]
enum Wire {
    Chat,
    Generate,
    OpenAi {
        id: String,
        created: u64,
        include_usage: bool,
    },
}

/// A stream of chunks, each written when due, cut after `die_after` chunks
/// when that fault is on. The admission (the slot) lives inside it.
fn paced_stream(
    plan: Plan,
    wire: Wire,
    die_after: u32,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let events = render_events(&plan, &wire);
    let state = (events.into_iter(), plan, 0u32, false);
    futures::stream::unfold(state, move |(mut it, plan, sent, dead)| async move {
        if dead {
            return None;
        }
        let (due, bytes) = it.next()?;
        tokio::time::sleep_until(due).await;
        if die_after > 0 && sent >= die_after {
            let err = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "simulated death");
            return Some((Err(err), (it, plan, sent, true)));
        }
        Some((Ok(bytes), (it, plan, sent + 1, false)))
    })
}

fn ndjson(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn ollama_tool_calls(name: &str, arguments: &Map<String, Value>) -> Value {
    json!([{"function": {"name": name, "arguments": arguments}}])
}

fn openai_tool_calls(id: &str, name: &str, arguments: &Map<String, Value>, index: bool) -> Value {
    let mut call = json!({
        "id": format!("call_{}", &digest_of(id)[..8]),
        "type": "function",
        "function": {"name": name, "arguments": Value::Object(arguments.clone()).to_string()}
    });
    if index {
        call["index"] = json!(0);
    }
    json!([call])
}

/// Every chunk of a streamed answer with its deadline.
fn render_events(plan: &Plan, wire: &Wire) -> Vec<(Instant, Bytes)> {
    let mut out = Vec::new();
    let model = &plan.model;
    let done_at = plan.done_at();
    match wire {
        Wire::Chat | Wire::Generate => {
            let piece = |at: Instant, text: &str, tool: Option<Value>| {
                let mut v = json!({"model": model, "created_at": rfc3339(wall(at))});
                if matches!(wire, Wire::Chat) {
                    let mut msg = json!({"role": "assistant", "content": text});
                    if let Some(t) = tool {
                        msg["tool_calls"] = t;
                    }
                    v["message"] = msg;
                } else {
                    v["response"] = json!(text);
                }
                v
            };
            match &plan.reply {
                Reply::Text { tokens, .. } => {
                    for (i, t) in tokens.iter().enumerate() {
                        let at = plan.first_at + plan.interval * i as u32;
                        let mut v = piece(at, t, None);
                        v["done"] = json!(false);
                        out.push((at, ndjson(&v)));
                    }
                }
                Reply::ToolCall { name, arguments } => {
                    let mut v = piece(plan.first_at, "", Some(ollama_tool_calls(name, arguments)));
                    v["done"] = json!(false);
                    out.push((plan.first_at, ndjson(&v)));
                }
            }
            let last = plan.ollama_final(piece(done_at, "", None));
            out.push((done_at, ndjson(&last)));
        }
        Wire::OpenAi {
            id,
            created,
            include_usage,
        } => {
            let chunk = |delta: Value, finish: Value| {
                json!({
                    "id": id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                })
            };
            let finish = match &plan.reply {
                Reply::Text { tokens, .. } => {
                    for (i, t) in tokens.iter().enumerate() {
                        let at = plan.first_at + plan.interval * i as u32;
                        let v = chunk(json!({"role": "assistant", "content": t}), Value::Null);
                        out.push((at, sse(&v)));
                    }
                    plan.done_reason()
                }
                Reply::ToolCall { name, arguments } => {
                    let calls = openai_tool_calls(id, name, arguments, true);
                    let delta = json!({"role": "assistant", "content": "", "tool_calls": calls});
                    out.push((plan.first_at, sse(&chunk(delta, Value::Null))));
                    "tool_calls"
                }
            };
            let last = chunk(json!({"role": "assistant", "content": ""}), json!(finish));
            out.push((done_at, sse(&last)));
            if *include_usage {
                let usage = json!({
                    "id": id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": "fp_ollama",
                    "choices": [], "usage": plan.usage()
                });
                out.push((done_at, sse(&usage)));
            }
            out.push((done_at, Bytes::from_static(b"data: [DONE]\n\n")));
        }
    }
    out
}

fn streaming_response(plan: Plan, wire: Wire, engine: &Engine) -> Response {
    let content_type = match wire {
        Wire::OpenAi { .. } => "text/event-stream",
        _ => "application/x-ndjson",
    };
    let die_after = engine.faults().die_mid_stream_after;
    let body = Body::from_stream(paced_stream(plan, wire, die_after));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

// ---------------------------------------------------------------- handlers

/// `GET /`
pub async fn root() -> &'static str {
    "Ollama is running"
}

/// `GET /api/version`
pub async fn version(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"version": s.engine.config().ollama_version}))
}

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

const BUILTIN_MODIFIED: &str = "2025-10-01T12:00:00.000000000Z";

/// `GET /api/tags`
pub async fn tags(State(s): State<Arc<AppState>>) -> Json<Value> {
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
pub async fn ps(State(s): State<Arc<AppState>>) -> Json<Value> {
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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ShowRequest {
    model: String,
    name: String,
}

/// `POST /api/show`
pub async fn show(State(s): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
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
pub async fn chat(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
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
pub async fn generate(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EmbedRequest {
    model: String,
    input: Value,
    prompt: Option<String>,
    truncate: Option<bool>,
    options: Option<Value>,
    keep_alive: Option<Value>,
    dimensions: Option<usize>,
    encoding_format: Option<String>,
}

fn inputs(v: &Value) -> Result<Vec<String>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Array(toks) => Ok(Value::Array(toks.clone()).to_string()),
                other => Err(ApiError::bad_request(format!("invalid input: {other}"))),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        other => Err(ApiError::bad_request(format!(
            "invalid input type: {other}"
        ))),
    }
}

struct Embedded {
    model: String,
    vectors: Vec<Vec<f32>>,
    prompt_tokens: u32,
    load: Duration,
    total: Duration,
}

async fn embed_core(
    engine: &Arc<Engine>,
    model: &str,
    texts: Vec<String>,
    dims: Option<usize>,
    keep_alive: Option<KeepAlive>,
) -> Result<Embedded, ApiError> {
    let arrival = Instant::now();
    let spec = check_model(engine, model, "embeddings")?;
    injected_failure(engine)?;
    let admission = engine.admit(&spec.name, keep_alive).await?;
    let prompt_tokens: u32 = texts.iter().map(|t| approx_tokens(t) + 1).sum();
    let (ttft, _) = engine.timing(&spec, prompt_tokens);
    tokio::time::sleep(ttft).await;
    let full = spec.embedding_dims.unwrap_or(384) as usize;
    let d = dims.filter(|d| *d > 0).map_or(full, |d| d.min(full));
    let vectors = texts
        .iter()
        .map(|t| {
            let mut v = embedding(t, full);
            v.truncate(d);
            content::normalize(&mut v);
            v
        })
        .collect();
    let load = admission.load_duration;
    drop(admission);
    Ok(Embedded {
        model: spec.name,
        vectors,
        prompt_tokens,
        load,
        total: arrival.elapsed(),
    })
}

/// `POST /api/embed`
pub async fn embed(State(s): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
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
pub async fn embeddings(
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

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PullRequest {
    model: String,
    name: String,
    insecure: bool,
    stream: Option<bool>,
}

/// `POST /api/pull`
pub async fn pull(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
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

// ---------------------------------------------------------------- OpenAI

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `GET /v1/models`
pub async fn v1_models(State(s): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = s
        .engine
        .disk()
        .into_iter()
        .map(|(m, _)| json!({"id": m.name, "object": "model", "created": 1_759_320_000u64, "owned_by": "library"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// `POST /v1/chat/completions`
pub async fn v1_chat(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    v1_chat_inner(&s, &body)
        .await
        .unwrap_or_else(ApiError::openai)
}

async fn v1_chat_inner(s: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let req: OpenAiChatRequest = parse(body)?;
    let _ = req.temperature;
    let spec = check_model(&s.engine, &req.model, "chat")?;
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
    let (_, prompt_tokens) = chat_prompt(&req.messages);
    let plan = start(
        &s.engine,
        GenInput {
            model,
            prompt_tokens,
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
    Ok(Json(json!({
        "id": id, "object": "chat.completion", "created": created, "model": plan.model,
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
        "usage": plan.usage(),
    }))
    .into_response())
}

/// `POST /v1/embeddings`
pub async fn v1_embeddings(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DeviceConfig, GIB};
    use futures::StreamExt;

    fn engine(speed: f64) -> Arc<Engine> {
        Engine::new(DeviceConfig {
            speed,
            ttft_base_ms: 100,
            ttft_ms_per_prompt_token: 1.0,
            models: vec![ModelSpec {
                name: "m:1".into(),
                size_bytes: GIB,
                ..ModelSpec::default()
            }],
            loaded: vec!["m:1".into()],
            ..DeviceConfig::default()
        })
    }

    fn input(tokens: usize) -> GenInput {
        let (tokens, _) = reply_tokens("m:1", "p", Some(tokens));
        GenInput {
            model: "m:1".into(),
            prompt_tokens: 40,
            reply: Reply::Text { tokens, cut: false },
            keep_alive: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_paced_on_a_deadline() {
        let e = engine(20.0);
        let plan = start(&e, input(20)).await.expect("plan");
        let t0 = Instant::now();
        let mut stream = Box::pin(paced_stream(plan, Wire::Generate, 0));
        let mut first = None;
        let mut n = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("chunk");
            first.get_or_insert_with(Instant::now);
            n += 1;
            let v: Value = serde_json::from_slice(&chunk).expect("ndjson");
            if v["done"] == json!(true) {
                assert_eq!(v["eval_count"], json!(20));
                assert_eq!(v["eval_duration"], json!(1_000_000_000u64));
                assert_eq!(v["prompt_eval_duration"], json!(140_000_000u64));
            }
        }
        let first = first.expect("first chunk");
        // TTFT = 100 ms + 40 prompt tokens * 1 ms.
        assert_eq!(first - t0, Duration::from_millis(140));
        // 20 tokens at 20 tok/s take one second from the first token to done.
        assert_eq!(Instant::now() - first, Duration::from_secs(1));
        assert_eq!(n, 21);
        assert_eq!(e.stats().active, 0, "slot released at end of stream");
    }

    #[tokio::test(start_paused = true)]
    async fn slot_is_held_until_the_stream_ends_or_is_dropped() {
        let e = engine(10.0);
        let plan = start(&e, input(10)).await.expect("plan");
        let mut stream = Box::pin(paced_stream(plan, Wire::Chat, 0));
        stream.next().await.expect("one chunk").expect("ok");
        assert_eq!(e.stats().active, 1);
        drop(stream);
        assert_eq!(e.stats().active, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ttft_grows_with_prompt_length() {
        let e = engine(100.0);
        let mut ttfts = Vec::new();
        for words in [1usize, 400, 4000] {
            let msg = Message {
                role: "user".into(),
                content: Some(json!("word ".repeat(words))),
            };
            let (_, prompt_tokens) = chat_prompt(std::slice::from_ref(&msg));
            let mut i = input(3);
            i.prompt_tokens = prompt_tokens;
            let t0 = Instant::now();
            let plan = start(&e, i).await.expect("plan");
            let mut stream = Box::pin(paced_stream(plan, Wire::Chat, 0));
            stream.next().await.expect("chunk").expect("ok");
            ttfts.push(t0.elapsed());
        }
        assert!(ttfts[0] < ttfts[1] && ttfts[1] < ttfts[2], "{ttfts:?}");
        // 4000 words * 5 chars / 4 + 4 tokens, 1 ms each, plus 100 ms.
        assert_eq!(ttfts[2], Duration::from_millis(100 + 5000 + 4));
    }

    #[tokio::test(start_paused = true)]
    async fn die_mid_stream_cuts_after_n_chunks() {
        let e = engine(100.0);
        let plan = start(&e, input(10)).await.expect("plan");
        let items: Vec<_> = paced_stream(plan, Wire::Chat, 3).collect().await;
        assert_eq!(items.len(), 4);
        assert!(items[..3].iter().all(Result::is_ok));
        assert!(items[3].is_err());
    }

    #[test]
    fn tool_call_from_schema_when_last_message_is_user() {
        let tools = vec![
            json!({"type": "function", "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "number"}}, "required": ["city"]}
            }}),
            json!({"type": "function", "function": {"name": "other"}}),
        ];
        let user = Message {
            role: "user".into(),
            content: Some(json!("weather?")),
        };
        let reply = chat_reply("m:1", std::slice::from_ref(&user), &tools, None, None);
        let Reply::ToolCall { name, arguments } = reply else {
            panic!("expected a tool call")
        };
        assert_eq!(name, "get_weather");
        assert_eq!(Value::Object(arguments), json!({"city": "sim"}));
        let tool = Message {
            role: "tool".into(),
            content: Some(json!("22C")),
        };
        let reply = chat_reply("m:1", &[user, tool], &tools, None, None);
        let Reply::Text { tokens, .. } = reply else {
            panic!("expected text")
        };
        assert_eq!(tokens.concat(), "Tool result received: 22C");
    }

    #[test]
    fn param_counts() {
        assert_eq!(parse_param_count("8.2B"), 8_200_000_000);
        assert_eq!(parse_param_count("137M"), 137_000_000);
    }
}
