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

pub mod anthropic;
pub mod json;
pub mod media;
pub mod needs;
pub mod ollama;
pub mod openai;
pub mod responses;
pub mod upload;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::budget::Charge;
use crate::error::ClientError;
use crate::fleet::Engine;
use crate::prefix::PromptShape;
use crate::request::{Dialect, Endpoint, Kind, RouteRequest, estimate_tokens};
use json::RawObject;

/// Why a remote image URL is refused, in every dialect: herd does not
/// fetch on a client's behalf. Fetching would let anyone who can reach
/// herd make it request any address it can reach (the LAN behind it, the
/// machine itself), and would put a download of unknown size and speed in
/// front of the request — where Ollama, which takes inline images only,
/// would refuse it anyway.
pub const REMOTE_IMAGE: &str = "remote image URLs are not fetched (herd would be requesting addresses on its network for whoever can reach it); send the image inline as a base64 `data:` URL";

/// Fallback models a request may name (each one is a full routing pass).
pub const MAX_FALLBACKS: usize = 8;

/// herd-only fields that are removed before a body goes to a node.
const HERD_FIELDS: &[&str] = &["fallback_models", "tags"];

/// What parsing needs from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct ParseConfig<'a> {
    /// Fallback models per model, when the request names none.
    pub fallback_models: &'a BTreeMap<String, Vec<String>>,
    /// Aliases and cloud-id tiers (None: names are taken as they come).
    pub aliases: Option<(&'a crate::alias::Aliases, &'a crate::alias::AliasTiers)>,
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
    /// The token estimate.
    pub fn tokens(&self) -> u32 {
        estimate_tokens(self.chars, self.messages, self.images)
    }

    /// Adds one chat message (Ollama's or OpenAI's shape), read without
    /// building a tree: a string role is required.
    pub fn message(&mut self, i: usize, m: MessagePeek<'_>) -> Result<(), String> {
        if !m.role.is_some_and(|r| r.get().starts_with('"')) {
            return Err(format!("messages[{i}] needs a string role"));
        }
        if let Some(c) = m.content {
            self.content(c.get());
        }
        if let Some(im) = m.images {
            self.images += json::each::<IgnoredAny, _>(im.get(), |_, _| Ok(()))
                .map_err(|e| format!("messages[{i}].images: {e}"))?;
        }
        self.messages += 1;
        Ok(())
    }

    /// Adds a `content`: a string, or an array of parts (`text`, images).
    pub fn content(&mut self, raw: &str) {
        if raw.starts_with('"') {
            self.chars += raw.len().saturating_sub(2);
        } else if raw.starts_with('[') {
            let _ = json::each::<PartPeek<'_>, _>(raw, |_, p| {
                match p.kind.as_deref() {
                    Some("text" | "input_text") => {
                        self.chars += p.text.map_or(0, |t| t.get().len().saturating_sub(2))
                    }
                    Some("image_url" | "input_image" | "image") => self.images += 1,
                    _ => {}
                }
                Ok(())
            });
        }
    }

    /// Adds a string's length (a raw JSON string).
    pub fn string(&mut self, raw: Option<&str>) {
        if let Some(r) = raw.filter(|r| r.starts_with('"')) {
            self.chars += r.len() - 2;
        }
    }
}

/// The parts of a chat message herd reads to size it (everything else is
/// skipped unread).
#[derive(Debug, Deserialize)]
pub struct MessagePeek<'a> {
    /// Must be a string.
    #[serde(borrow)]
    pub role: Option<&'a RawValue>,
    /// A string, or an array of content parts.
    #[serde(borrow)]
    pub content: Option<&'a RawValue>,
    /// Ollama's base64 images.
    #[serde(borrow)]
    pub images: Option<&'a RawValue>,
}

/// One content part, as far as sizing needs.
#[derive(Debug, Deserialize)]
struct PartPeek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
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
        .take(64)
        .collect()
}

fn string_list(v: Option<Value>, field: &str) -> Result<Vec<String>, ClientError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(ClientError::bad_request(format!(
                    "{field} must be a list of strings"
                ))),
            })
            .collect(),
        Some(_) => Err(ClientError::bad_request(format!(
            "{field} must be a list of strings"
        ))),
    }
}

/// The header every herd adds to what it forwards, naming itself; a herd
/// that receives a request naming it refuses it (a node whose URL leads
/// back to the router would otherwise loop).
pub const HOP_HEADER: &str = "x-herd-hop";

/// The herds a request passed through (`x-herd-hop`), when sane.
fn hops(headers: &HeaderMap) -> Option<String> {
    headers
        .get(HOP_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 512)
        .map(str::to_string)
}

/// Whether `headers` say this request already passed through the herd
/// named `router_id` (a loop: a node's URL leads back to the router).
pub fn looped(headers: &HeaderMap, router_id: &str) -> bool {
    headers
        .get_all(HOP_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|h| h.trim() == router_id)
}

pub use crate::request::{MAX_MODEL_NAME, check_model_name};

/// Content types are not checked: like Ollama, herd reads a JSON body as
/// JSON whatever the header says (LiteLLM's async client sends
/// `application/octet-stream`); only a body that is not JSON is refused.
/// A multipart form is named, so that a client sending one to a JSON
/// endpoint learns why it failed.
fn not_json(headers: &HeaderMap, e: json::NotAnObject) -> ClientError {
    let multipart = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/"));
    if multipart {
        ClientError::bad_request(format!(
            "this endpoint takes a JSON body, not a multipart form ({e})"
        ))
    } else {
        ClientError::bad_request(e.to_string())
    }
}

/// A JSON object body, indexed (inference and the endpoints that take one).
pub fn object(headers: &HeaderMap, body: Bytes) -> Result<RawObject, ClientError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ClientError::bad_request(
            "request body is empty; send a JSON object",
        ));
    }
    RawObject::parse(body).map_err(|e| not_json(headers, e))
}

/// A JSON object body as a map (the small management bodies).
pub fn object_map(headers: &HeaderMap, body: Bytes) -> Result<Map<String, Value>, ClientError> {
    let o = object(headers, body)?;
    serde_json::from_slice(o.bytes()).map_err(|e| ClientError::bad_request(e.to_string()))
}

/// Parse and validate one inference request for `endpoint`. The body is
/// kept as it came; `charge` is what it holds of the body budget.
pub fn parse(
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: Bytes,
    cfg: ParseConfig<'_>,
    charge: Charge,
) -> Result<RouteRequest, ClientError> {
    if endpoint.multipart() {
        // A whole form (herd-epp): only its model is read.
        return media::parse_form(endpoint, headers, body, cfg, charge);
    }
    let mut obj = object(headers, body)?;
    let model = match obj.value("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_string(),
        Some(Value::String(_)) | None => {
            return Err(ClientError::bad_request("model is required").code("model_required"));
        }
        Some(_) => return Err(ClientError::bad_request("model must be a string")),
    };
    check_model_name(&model)?;
    let resolve = |m: String| match cfg.aliases.and_then(|(a, t)| a.resolve(t, &m)) {
        Some(to) => to.to_string(),
        None => m,
    };
    let client_model = model.clone();
    let model = resolve(model);
    let spec = endpoint.spec();
    let stream = match obj.value("stream") {
        None => spec.streams_by_default,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(ClientError::bad_request("stream must be true or false")),
    } && spec.can_stream;
    let include_usage = obj
        .value("stream_options")
        .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
        .unwrap_or(false);
    let options = obj.value("options");
    if options.as_ref().is_some_and(|o| !o.is_object()) {
        return Err(ClientError::bad_request("options must be an object"));
    }
    let num_ctx = positive_u32(options.as_ref().and_then(|o| o.get("num_ctx")));

    // Tags: body metadata.tags or tags, the x-herd-tags header, OpenAI's user.
    let mut tags = string_list(
        obj.value("metadata").and_then(|m| m.get("tags").cloned()),
        "metadata.tags",
    )?;
    tags.extend(string_list(obj.value("tags"), "tags")?);
    tags.extend(header_list(headers, "x-herd-tags"));
    if let Some(Value::String(u)) = obj.value("user") {
        tags.push(format!("user:{u}"));
    }
    let mut seen = std::collections::HashSet::new();
    tags.retain(|t| t.len() <= 128 && seen.insert(t.clone()));
    tags.truncate(32);

    let mut fallback_models = string_list(obj.value("fallback_models"), "fallback_models")?;
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
    for m in &fallback_models {
        check_model_name(m)?;
    }
    let mut fallback_models: Vec<String> = fallback_models.into_iter().map(resolve).collect();
    fallback_models.retain(|m| !crate::request::same_model(m, &model));

    for f in HERD_FIELDS {
        obj.remove(f);
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
    let (size, max_output_tokens, native) = match spec.dialect {
        // Media requests go to engines that speak OpenAI's API as they are.
        _ if endpoint.opaque() => (media::image_request(&obj)?, None, None),
        Dialect::Ollama => (
            ollama::measure(endpoint, &obj)?,
            ollama::max_output_tokens(options.as_ref()),
            None,
        ),
        Dialect::OpenAi => {
            let (native, size) = openai::to_ollama(endpoint, &obj, &model)?;
            let max = openai::max_output_tokens(&obj);
            (size, max, Some(Arc::new(native)))
        }
        Dialect::Anthropic => {
            let (native, size) = anthropic::to_ollama(&obj, &model)?;
            let max = anthropic::max_output_tokens(&obj);
            (size, max, Some(Arc::new(native)))
        }
        Dialect::Responses => {
            let (native, size) = responses::to_ollama(&obj, &model)?;
            let max = responses::max_output_tokens(&obj);
            (size, max, Some(Arc::new(native)))
        }
    };

    // From here on the request holds its body and its translation.
    let mut charge = charge;
    charge.keep(obj.bytes().len() + native.as_ref().map_or(0, |n| n.bytes().len()));
    // The prompt's blocks, hashed once from the native shape (so a
    // conversation hashes alike whatever API it comes through).
    let shape = match endpoint.kind() {
        Kind::Chat => Some(PromptShape::Chat),
        Kind::Generate => Some(PromptShape::Generate),
        _ => None,
    };
    let prefix = crate::prefix::of_native(shape, native.as_deref().unwrap_or(&obj));

    Ok(RouteRequest {
        id: request_id(headers),
        endpoint,
        model,
        client_model,
        fallback_models,
        stream,
        include_usage,
        est_prompt_tokens: size.tokens(),
        max_output_tokens,
        images: u32::try_from(size.images).unwrap_or(u32::MAX),
        needs: needs::needs(
            endpoint.kind(),
            native.as_deref().unwrap_or(&obj),
            u32::try_from(size.images).unwrap_or(u32::MAX),
        ),
        upload: None,
        num_ctx,
        tags,
        body: Arc::new(obj),
        native,
        traceparent,
        via: hops(headers),
        charge: Arc::new(charge),
        prefix,
        tenant: None,
        may_pull: true,
    })
}

/// A request known only by its model: what herd-epp routes when Envoy sends
/// headers without a body (the model from `x-ai-eg-model` or the path).
pub fn model_only(endpoint: Endpoint, model: String, headers: &HeaderMap) -> RouteRequest {
    RouteRequest {
        id: request_id(headers),
        endpoint,
        client_model: model.clone(),
        model,
        fallback_models: Vec::new(),
        stream: false,
        include_usage: false,
        est_prompt_tokens: 1,
        max_output_tokens: None,
        images: 0,
        needs: needs::needs(endpoint.kind(), &RawObject::empty(), 0),
        upload: None,
        num_ctx: None,
        tags: Vec::new(),
        body: Arc::new(RawObject::empty()),
        native: None,
        traceparent: None,
        via: hops(headers),
        charge: Arc::new(Charge::none()),
        prefix: crate::prefix::Prefix::default(),
        tenant: None,
        may_pull: true,
    }
}

/// A body on a path herd does not parse in full (herd-epp routes any path
/// Envoy sends it): only `model` and `stream` are read, the rest is the
/// engine's business. Routed as an OpenAI chat.
pub fn parse_unknown(headers: &HeaderMap, body: Bytes) -> Result<RouteRequest, ClientError> {
    let obj = object(headers, body)?;
    let model = obj
        .value("model")
        .and_then(|m| m.as_str().map(|m| m.trim().to_string()))
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ClientError::bad_request("model is required").code("model_required"))?;
    check_model_name(&model)?;
    let mut r = model_only(Endpoint::OpenAiChat, model, headers);
    r.stream = obj.get::<bool>("stream").ok().flatten().unwrap_or(false);
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
    /// Ollama /api/chat stream → Anthropic Messages SSE.
    MessagesToSse,
    /// Ollama /api/chat stream → Responses SSE.
    ResponsesToSse,
    /// SSE from a node that speaks the client's API itself (an OpenAI
    /// engine; Ollama's own /v1/messages and /v1/responses), passed through.
    Sse,
    /// Ollama chat/generate streamed from the node, collected into the one
    /// JSON object Ollama answers without streaming. herd always streams
    /// from Ollama: the first token shows the node is alive (a hung node is
    /// caught by the first-byte deadline) and times the TTFT, and a failure
    /// before the end is still retried, since the client has nothing yet.
    CollectOllama,
    /// As [`Mode::CollectOllama`], then → chat.completion.
    CollectChat,
    /// As [`Mode::CollectOllama`], then → text_completion.
    CollectCompletion,
    /// As [`Mode::CollectOllama`], then → an Anthropic message.
    CollectMessages,
    /// As [`Mode::CollectOllama`], then → a Responses `response`.
    CollectResponses,
    /// One Ollama JSON object (embeddings), passed through.
    OllamaJson,
    /// Ollama /api/embed → OpenAI embeddings list.
    EmbedToOpenAi,
    /// One JSON object from a node that speaks the client's API itself,
    /// passed through.
    NativeJson,
    /// A media answer (a transcript, images) passed through byte for byte
    /// as the engine sends it, with its content type; streamed, so the
    /// slot is held until the last byte.
    Opaque,
}

impl Mode {
    /// The same conversion for a non-streamed answer.
    pub fn buffered(self) -> Mode {
        match self {
            Mode::Ndjson => Mode::CollectOllama,
            Mode::ChatToSse => Mode::CollectChat,
            Mode::CompletionToSse => Mode::CollectCompletion,
            Mode::MessagesToSse => Mode::CollectMessages,
            Mode::ResponsesToSse => Mode::CollectResponses,
            Mode::Sse => Mode::NativeJson,
            other => other,
        }
    }

    /// Whether the client gets the answer as a stream.
    pub fn streams_to_client(self) -> bool {
        matches!(
            self,
            Mode::Ndjson
                | Mode::ChatToSse
                | Mode::CompletionToSse
                | Mode::MessagesToSse
                | Mode::ResponsesToSse
                | Mode::Sse
                | Mode::Opaque
        )
    }

    /// Whether the answer is collected from an Ollama stream.
    pub fn collects(self) -> bool {
        matches!(
            self,
            Mode::CollectOllama
                | Mode::CollectChat
                | Mode::CollectCompletion
                | Mode::CollectMessages
                | Mode::CollectResponses
        )
    }

    /// Whether the node is asked to stream (its `stream` field).
    pub fn upstream_streams(self) -> bool {
        self.streams_to_client() || self.collects()
    }

    /// Whether bytes pass through unchanged (only framed and observed).
    pub fn is_pass_through(self) -> bool {
        matches!(self, Mode::Ndjson | Mode::Sse | Mode::Opaque)
    }

    /// Whether the node gets the request translated to Ollama's API (else
    /// the client's own body).
    pub fn translates(self) -> bool {
        !matches!(
            self,
            Mode::Ndjson
                | Mode::CollectOllama
                | Mode::OllamaJson
                | Mode::Sse
                | Mode::NativeJson
                | Mode::Opaque
        )
    }
}

/// A request in Ollama's shape sent to an engine that speaks only OpenAI's
/// API: herd translates the request to OpenAI's and the answer back to
/// Ollama's lines (see [`openai::engine`]), so every dialect's modes work
/// on it as they do on an Ollama.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bridge {
    /// `/api/chat` (and the dialects translated to it) → `/v1/chat/completions`.
    Chat,
    /// `/api/generate` → `/v1/chat/completions`, or `/v1/completions` for a
    /// raw prompt or a suffix.
    Generate,
    /// `/api/embed` → `/v1/embeddings`.
    Embed,
    /// `/api/embeddings` → `/v1/embeddings`.
    EmbedLegacy,
}

/// How one attempt is carried out on the picked engine.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// The engine's path to call.
    pub path: &'static str,
    /// How its answer becomes the client's.
    pub mode: Mode,
    /// The dialect the client receives.
    pub dialect: Dialect,
    /// Set when herd translates Ollama's API to the engine's OpenAI API
    /// (the path then follows from the translated request).
    pub bridge: Option<Bridge>,
}

/// A version string (`0.14.1`, `0.13.3-rc2`) at least `min`.
pub fn version_at_least(version: &str, min: (u64, u64, u64)) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().ok());
    let mut next = || parts.next().flatten();
    match (next(), next(), next()) {
        (Some(a), Some(b), c) => (a, b, c.unwrap_or(0)) >= min,
        _ => false,
    }
}

/// The Ollama version that first served an endpoint itself, for the
/// endpoints it did not always have (as a number and as written).
pub fn native_since(endpoint: Endpoint) -> Option<((u64, u64, u64), &'static str)> {
    match endpoint {
        Endpoint::AnthropicMessages => Some(((0, 14, 0), "Ollama 0.14.0")),
        Endpoint::Responses => Some(((0, 13, 3), "Ollama 0.13.3")),
        Endpoint::AudioTranscriptions => Some(((0, 20, 0), "Ollama 0.20.0")),
        Endpoint::ImageGenerations | Endpoint::ImageEdits => Some(((0, 14, 3), "Ollama 0.14.3")),
        _ => None,
    }
}

/// The Ollama release that removed image generation (the experimental MLX
/// `x/imagegen`): from it on, images come from a separate engine.
pub const OLLAMA_IMAGES_REMOVED: (u64, u64, u64) = (0, 32, 6);

/// Whether an engine serves `endpoint` as the client sent it (herd-epp can
/// only route to such nodes: Envoy carries the body unchanged).
pub fn serves_natively(endpoint: Endpoint, engine: Engine, version: &str) -> bool {
    match engine {
        Engine::OpenAi => endpoint.dialect() == Dialect::OpenAi,
        Engine::Stt => endpoint.kind() == Kind::Transcribe,
        Engine::Image => endpoint.kind() == Kind::Image,
        Engine::Ollama => match endpoint {
            // Ollama never had a translations route.
            Endpoint::AudioTranslations => false,
            Endpoint::ImageGenerations | Endpoint::ImageEdits => {
                version_at_least(version, (0, 14, 3))
                    && !version_at_least(version, OLLAMA_IMAGES_REMOVED)
            }
            _ => native_since(endpoint).is_none_or(|(v, _)| version_at_least(version, v)),
        },
    }
}

/// Whether an engine can serve `endpoint`, natively or translated by herd:
/// Ollama serves every text endpoint (translated to its own API when it
/// lacks the client's) and the media ones its release has; an OpenAI-only
/// engine serves OpenAI's API natively and every other dialect through
/// Ollama's (a [`Bridge`]); speech-to-text and image engines serve their
/// endpoints only.
pub fn engine_serves(endpoint: Endpoint, engine: Engine, version: &str) -> bool {
    let media = endpoint.opaque();
    match engine {
        Engine::Ollama if media => serves_natively(endpoint, engine, version),
        Engine::Ollama | Engine::OpenAi => true,
        Engine::Stt | Engine::Image => serves_natively(endpoint, engine, version),
    }
}

/// The plan for `endpoint` on an `engine` of `version`.
pub fn plan(endpoint: Endpoint, engine: Engine, version: &str, stream: bool) -> Plan {
    use Endpoint::*;
    let native = serves_natively(endpoint, engine, version);
    let mut bridge = None;
    let (path, mode) = match (engine, endpoint) {
        _ if endpoint.opaque() => (endpoint.path(), Mode::Opaque),
        (Engine::Ollama, OllamaChat | OllamaGenerate) => (endpoint.path(), Mode::Ndjson),
        (Engine::Ollama, OllamaEmbed | OllamaEmbeddings) => (endpoint.path(), Mode::OllamaJson),
        (Engine::Ollama, OpenAiChat) => ("/api/chat", Mode::ChatToSse),
        (Engine::Ollama, OpenAiCompletions) => ("/api/generate", Mode::CompletionToSse),
        (Engine::Ollama, OpenAiEmbeddings) => ("/api/embed", Mode::EmbedToOpenAi),
        (Engine::Ollama, AnthropicMessages | Responses) if native => (endpoint.path(), Mode::Sse),
        (Engine::Ollama, AnthropicMessages) => ("/api/chat", Mode::MessagesToSse),
        (Engine::Ollama, Responses) => ("/api/chat", Mode::ResponsesToSse),
        (_, _) if native => (endpoint.path(), Mode::Sse),
        (_, OllamaChat) => {
            bridge = Some(Bridge::Chat);
            ("/v1/chat/completions", Mode::Ndjson)
        }
        (_, OllamaGenerate) => {
            bridge = Some(Bridge::Generate);
            ("/v1/chat/completions", Mode::Ndjson)
        }
        (_, OllamaEmbed) => {
            bridge = Some(Bridge::Embed);
            ("/v1/embeddings", Mode::OllamaJson)
        }
        (_, OllamaEmbeddings) => {
            bridge = Some(Bridge::EmbedLegacy);
            ("/v1/embeddings", Mode::OllamaJson)
        }
        (_, AnthropicMessages) => {
            bridge = Some(Bridge::Chat);
            ("/v1/chat/completions", Mode::MessagesToSse)
        }
        (_, Responses) => {
            bridge = Some(Bridge::Chat);
            ("/v1/chat/completions", Mode::ResponsesToSse)
        }
        // Served natively above (an OpenAI engine speaks OpenAI's API);
        // engines that cannot serve it at all never get here (scoring).
        (_, _) => (endpoint.path(), Mode::Sse),
    };
    let mode = if stream { mode } else { mode.buffered() };
    Plan {
        path,
        mode,
        dialect: endpoint.dialect(),
        bridge,
    }
}

/// `e` as the dialect's error body.
pub fn error_body(dialect: Dialect, e: &ClientError) -> Value {
    match dialect {
        Dialect::Ollama => ollama::ollama_error(&e.message),
        Dialect::Anthropic => anthropic::anthropic_error(e.status.as_u16(), &e.message),
        Dialect::OpenAi | Dialect::Responses => {
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
        Dialect::Anthropic => {
            anthropic::stream_event("error", &anthropic::anthropic_error(500, message))
        }
        Dialect::Responses => anthropic::stream_event(
            "error",
            &serde_json::json!({"type": "error", "code": "server_error", "message": message}),
        ),
    }
}

/// The content type of a streamed answer in `dialect`.
pub fn stream_content_type(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::OpenAi | Dialect::Anthropic | Dialect::Responses => "text/event-stream",
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
