//! The client APIs herd speaks, one module each, behind one table.
//!
//! A dialect owns everything that depends on how its clients talk: reading
//! and validating a body into a [`RouteRequest`] (parsed once, here, for the
//! proxy and herd-epp alike), translating it to the node's native call, how
//! the answer comes back ([`Mode`]: passed through or translated, streamed or
//! whole), and the shape of its errors. Ollama's native API is the hub every
//! translation goes through, because every node speaks it and its answers
//! carry the timing stats herd learns from.
//!
//! The endpoints themselves are rows of [`crate::request::ENDPOINTS`]. To add
//! a dialect: a module here, its variant of [`Dialect`] and its rows in that
//! table, then the `match` arms the compiler asks for in this file.

pub mod json;
pub mod ollama;
pub mod openai;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};

use crate::error::ClientError;
use crate::fleet::Engine;
use crate::request::{Dialect, Endpoint, RouteRequest, estimate_tokens};

/// Fallback models a request may name (each one is a full routing pass).
pub const MAX_FALLBACKS: usize = 8;

/// herd-only fields that are removed before a body goes to a node.
const HERD_FIELDS: &[&str] = &["fallback_models", "tags"];

/// What parsing needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct ParseConfig<'a> {
    /// Fallback models per model, when the request names none.
    pub fallback_models: &'a BTreeMap<String, Vec<String>>,
}

/// The size of a prompt, for context fit and expected time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Size {
    /// Characters of text.
    pub chars: usize,
    /// Messages (each costs a few tokens of framing).
    pub messages: usize,
    /// Images.
    pub images: usize,
}

impl Size {
    /// Counts a chat's messages; each needs a string role.
    pub fn messages(&mut self, ms: &[Value]) -> Result<(), ClientError> {
        for (i, m) in ms.iter().enumerate() {
            if m.get("role").and_then(Value::as_str).is_none() {
                return Err(ClientError::bad_request(format!(
                    "messages[{i}] needs a string role"
                )));
            }
            let (c, im) = content_size(m.get("content"));
            self.chars += c;
            self.images += im;
            self.images += m
                .get("images")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            self.messages += 1;
        }
        Ok(())
    }

    /// The token estimate.
    pub fn tokens(&self) -> u32 {
        estimate_tokens(self.chars, self.messages, self.images)
    }
}

/// Characters of text and number of images in a message's `content`.
fn content_size(content: Option<&Value>) -> (usize, usize) {
    match content {
        Some(Value::String(s)) => (s.len(), 0),
        Some(Value::Array(parts)) => parts.iter().fold((0, 0), |(c, i), p| {
            match p.get("type").and_then(Value::as_str) {
                Some("text") => (
                    c + p.get("text").and_then(Value::as_str).map_or(0, str::len),
                    i,
                ),
                Some("image_url") | Some("input_image") => (c, i + 1),
                _ => (c, i),
            }
        }),
        _ => (0, 0),
    }
}

fn positive_u32(v: Option<&Value>) -> Option<u32> {
    v.and_then(Value::as_i64)
        .filter(|n| *n > 0)
        .map(|n| n.min(u32::MAX as i64) as u32)
}

/// herd's id for a request: the client's `x-request-id` when it is a sane
/// token (1–128 visible ASCII characters), else a fresh random one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)))
}

fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn string_list(v: Option<&Value>, field: &str) -> Result<Vec<String>, ClientError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str().map(str::to_string).ok_or_else(|| {
                    ClientError::bad_request(format!("{field} must be a list of strings"))
                })
            })
            .collect(),
        Some(_) => Err(ClientError::bad_request(format!(
            "{field} must be a list of strings"
        ))),
    }
}

/// Accepted content types. Missing is fine, and so is curl's default form
/// type, because Ollama's own docs use `curl -d '{…}'` without a header.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), ClientError> {
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    let ok = essence.is_empty()
        || essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
        || essence == "text/plain"
        || essence == "application/x-www-form-urlencoded";
    if ok {
        Ok(())
    } else {
        Err(ClientError::new(
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {essence:?} is not supported; send JSON (application/json)"),
        )
        .code("unsupported_media_type"))
    }
}

/// A JSON object body (inference and the endpoints that take one).
pub fn object(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, ClientError> {
    check_content_type(headers)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ClientError::bad_request(
            "request body is empty; send a JSON object",
        ));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ClientError::bad_request(
            "request body must be a JSON object",
        )),
        Err(e) => Err(ClientError::bad_request(format!(
            "invalid JSON in request body: {e}"
        ))),
    }
}

/// Parse and validate one inference request for `endpoint`.
pub fn parse(
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
    cfg: ParseConfig<'_>,
) -> Result<RouteRequest, ClientError> {
    let mut obj = object(headers, body)?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_string(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ClientError::bad_request("model is required").code("model_required"));
        }
        Some(_) => return Err(ClientError::bad_request("model must be a string")),
    };
    let spec = endpoint.spec();
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => spec.streams_by_default,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ClientError::bad_request("stream must be true or false")),
    } && spec.can_stream;
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if obj
        .get("options")
        .is_some_and(|o| !o.is_object() && !o.is_null())
    {
        return Err(ClientError::bad_request("options must be an object"));
    }

    let (size, max_output_tokens) = match spec.dialect {
        Dialect::Ollama => (
            ollama::measure(endpoint, &obj)?,
            ollama::max_output_tokens(&obj),
        ),
        Dialect::OpenAi => (
            openai::measure(endpoint, &obj)?,
            openai::max_output_tokens(&obj),
        ),
    };
    let num_ctx = positive_u32(obj.get("options").and_then(|o| o.get("num_ctx")));

    // Tags: body metadata.tags or tags, the x-herd-tags header, OpenAI's user.
    let mut tags = string_list(
        obj.get("metadata").and_then(|m| m.get("tags")),
        "metadata.tags",
    )?;
    tags.extend(string_list(obj.get("tags"), "tags")?);
    tags.extend(header_list(headers, "x-herd-tags"));
    if let Some(u) = obj.get("user").and_then(Value::as_str) {
        tags.push(format!("user:{u}"));
    }
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| t.len() <= 128 && seen.insert(t.clone()));
    tags.truncate(32);

    let mut fallback_models = string_list(obj.get("fallback_models"), "fallback_models")?;
    if fallback_models.is_empty() {
        fallback_models = header_list(headers, "x-herd-fallback-models");
    }
    if fallback_models.is_empty() {
        fallback_models = cfg
            .fallback_models
            .iter()
            .find(|(k, _)| crate::request::same_model(k, &model))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
    }
    fallback_models.retain(|m| !crate::request::same_model(m, &model));
    let mut seen = std::collections::HashSet::new();
    fallback_models
        .retain(|m| !m.trim().is_empty() && seen.insert(crate::request::normalize_model(m)));
    if fallback_models.len() > MAX_FALLBACKS {
        return Err(ClientError::bad_request(format!(
            "fallback_models lists {} models; at most {MAX_FALLBACKS} are tried",
            fallback_models.len()
        )));
    }

    for f in HERD_FIELDS {
        obj.remove(*f);
    }
    if spec.dialect == Dialect::Ollama {
        // Ollama has no metadata field; herd reads tags from it.
        obj.remove("metadata");
    }
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|s| s.len() <= 128)
        .map(str::to_string);

    // Bodies of other dialects are translated to Ollama's API here, once:
    // what cannot be translated is refused before the request waits for a slot.
    let ollama_body = match spec.dialect {
        Dialect::Ollama => None,
        Dialect::OpenAi => Some(Arc::new(openai::to_ollama(endpoint, &obj, &model)?)),
    };

    Ok(RouteRequest {
        id: request_id(headers),
        endpoint,
        model,
        fallback_models,
        stream,
        include_usage,
        est_prompt_tokens: size.tokens(),
        max_output_tokens,
        images: size.images as u32,
        num_ctx,
        tags,
        body: Arc::new(obj),
        ollama_body,
        traceparent,
    })
}

/// A request known only by its model: what herd-epp routes when Envoy sends
/// headers without a body (the model from `x-ai-eg-model` or the path).
pub fn model_only(endpoint: Endpoint, model: String, headers: &HeaderMap) -> RouteRequest {
    RouteRequest {
        id: request_id(headers),
        endpoint,
        model,
        fallback_models: Vec::new(),
        stream: false,
        include_usage: false,
        est_prompt_tokens: 1,
        max_output_tokens: None,
        images: 0,
        num_ctx: None,
        tags: Vec::new(),
        body: Arc::new(Map::new()),
        ollama_body: None,
        traceparent: None,
    }
}

/// A body on a path herd does not parse in full (herd-epp routes any path
/// Envoy sends it): only `model` and `stream` are read, the rest is the
/// engine's business. Routed as an OpenAI chat.
pub fn parse_unknown(headers: &HeaderMap, body: &[u8]) -> Result<RouteRequest, ClientError> {
    let obj = object(headers, body)?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ClientError::bad_request("model is required").code("model_required"))?;
    let mut r = model_only(Endpoint::OpenAiChat, model.to_string(), headers);
    r.stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    Ok(r)
}

/// How the node's answer becomes the client's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Ollama NDJSON stream, passed through.
    Ndjson,
    /// Ollama /api/chat stream → OpenAI chat.completion.chunk SSE.
    ChatToSse,
    /// Ollama /api/generate stream → OpenAI text_completion SSE.
    CompletionToSse,
    /// OpenAI SSE from an OpenAI engine, passed through.
    Sse,
    /// One Ollama JSON object, passed through.
    OllamaJson,
    /// One Ollama /api/chat object → chat.completion.
    ChatJson,
    /// One Ollama /api/generate object → text_completion.
    CompletionJson,
    /// Ollama /api/embed → OpenAI embeddings list.
    EmbedToOpenAi,
    /// One OpenAI JSON object from an OpenAI engine, passed through.
    OpenAiJson,
}

impl Mode {
    /// The same conversion for a non-streamed answer.
    pub fn buffered(self) -> Mode {
        match self {
            Mode::Ndjson => Mode::OllamaJson,
            Mode::ChatToSse => Mode::ChatJson,
            Mode::CompletionToSse => Mode::CompletionJson,
            Mode::Sse => Mode::OpenAiJson,
            other => other,
        }
    }

    /// Whether the answer is read whole before the client gets it.
    pub fn is_buffered(self) -> bool {
        matches!(
            self,
            Mode::OllamaJson
                | Mode::ChatJson
                | Mode::CompletionJson
                | Mode::EmbedToOpenAi
                | Mode::OpenAiJson
        )
    }

    /// Whether bytes pass through unchanged (only framed and observed).
    pub fn is_pass_through(self) -> bool {
        matches!(self, Mode::Ndjson | Mode::Sse)
    }

    /// The dialect of what the client receives.
    pub fn dialect(self) -> Dialect {
        match self {
            Mode::Ndjson | Mode::OllamaJson => Dialect::Ollama,
            _ => Dialect::OpenAi,
        }
    }
}

/// How one attempt is carried out on the picked engine.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// The engine's path to call.
    pub path: &'static str,
    /// How its answer becomes the client's.
    pub mode: Mode,
}

/// The plan for `endpoint` on an `engine`.
pub fn plan(endpoint: Endpoint, engine: Engine, stream: bool) -> Plan {
    use Endpoint::*;
    let (path, mode) = match (engine, endpoint) {
        (Engine::Ollama, OllamaChat | OllamaGenerate | OllamaEmbed | OllamaEmbeddings) => {
            (endpoint.path(), Mode::Ndjson)
        }
        (Engine::Ollama, OpenAiChat) => ("/api/chat", Mode::ChatToSse),
        (Engine::Ollama, OpenAiCompletions) => ("/api/generate", Mode::CompletionToSse),
        (Engine::Ollama, OpenAiEmbeddings) => ("/api/embed", Mode::EmbedToOpenAi),
        (Engine::OpenAi, _) => (endpoint.path(), Mode::Sse),
    };
    let mode = if stream { mode } else { mode.buffered() };
    Plan { path, mode }
}

/// Whether an engine can serve a dialect's requests.
pub fn engine_speaks(engine: Engine, dialect: Dialect) -> bool {
    match engine {
        Engine::Ollama => true,
        Engine::OpenAi => dialect == Dialect::OpenAi,
    }
}

/// `e` as the dialect's error body.
pub fn error_body(dialect: Dialect, e: &ClientError) -> Value {
    match dialect {
        Dialect::Ollama => ollama::ollama_error(&e.message),
        Dialect::OpenAi => {
            let kind = match e.status.as_u16() {
                429 => "rate_limit_error",
                s if s >= 500 => "server_error",
                _ => "invalid_request_error",
            };
            openai::openai_error(&e.message, kind, e.code)
        }
    }
}

/// The last frame of a stream the node broke off: a well-formed error in
/// the dialect's stream framing.
pub fn stream_error(dialect: Dialect, message: &str) -> Bytes {
    match dialect {
        Dialect::Ollama => {
            let mut line = serde_json::to_vec(&ollama::ollama_error(message)).unwrap_or_default();
            line.push(b'\n');
            Bytes::from(line)
        }
        Dialect::OpenAi => sse(&openai::openai_error(message, "server_error", None)),
    }
}

/// The content type of a streamed answer in `dialect`.
pub fn stream_content_type(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::OpenAi => "text/event-stream",
        Dialect::Ollama => "application/x-ndjson",
    }
}

/// One server-sent event carrying `v`.
pub fn sse(v: &Value) -> Bytes {
    let mut b = b"data: ".to_vec();
    b.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

const MAX_ERROR_CHARS: usize = 500;

/// A human message from an Ollama error body (`{"error":"..."}`), an OpenAI one
/// (`{"error":{"message":"..."}}`), or else the raw text — trimmed, at most 500 characters.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let extracted = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| match v.get("error") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(e) => e.get("message").and_then(Value::as_str).map(str::to_owned),
            None => v.get("message").and_then(Value::as_str).map(str::to_owned),
        });
    let message = extracted.as_deref().map_or(text, str::trim);
    message.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests;
