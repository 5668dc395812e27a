//! The request as herd understands it, parsed once at the HTTP edge.
//!
//! Every layer reads a [`RouteRequest`]; none re-parses the body. The client's
//! JSON body is kept (minus herd-only fields such as `fallback_models`) so the
//! leaf can forward it, translated or not, without a second parse.

pub use crate::model_name::{normalize_model, normalized};
use std::sync::Arc;

use serde::Serialize;

use crate::budget::Charge;
use crate::dialect::json::RawObject;

/// The API dialect a client speaks; its requests are parsed, its answers
/// framed and its errors shaped by the matching module of
/// [`crate::dialect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Ollama's native API (`/api/*`): NDJSON streams, `{"error": …}`.
    Ollama,
    /// OpenAI's API (`/v1/*`): server-sent events, `{"error": {…}}`.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic's Messages API (`/v1/messages`): named server-sent events,
    /// `{"type":"error","error":{…}}`.
    Anthropic,
    /// OpenAI's Responses API (`/v1/responses`): named server-sent events,
    /// OpenAI's errors.
    Responses,
}

impl Dialect {
    /// The dialect's name in traces and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Ollama => "ollama",
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
            Dialect::Responses => "responses",
        }
    }
}

/// What kind of work the request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A conversation turn.
    Chat,
    /// A completion of a raw prompt.
    Generate,
    /// Embeddings of inputs.
    Embed,
    /// Speech to text (an uploaded audio file).
    Transcribe,
    /// Image generation.
    Image,
}

impl Kind {
    /// The kind's name in traces, metrics and `/fleet/explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Chat => "chat",
            Kind::Generate => "generate",
            Kind::Embed => "embed",
            Kind::Transcribe => "transcribe",
            Kind::Image => "image",
        }
    }
}

/// How an endpoint's body comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyKind {
    /// A JSON object, read whole and parsed once.
    Json,
    /// A `multipart/form-data` upload (audio, an image to edit): read only
    /// until its `model` field, then streamed through (see
    /// [`crate::dialect::upload`]).
    Multipart,
}

/// An inference endpoint herd routes. Every fact about one lives in its row
/// of [`ENDPOINTS`]: the HTTP router, herd-epp and the forward leaf all read
/// that table, so an endpoint is added in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Endpoint {
    /// `POST /api/chat`.
    OllamaChat,
    /// `POST /api/generate`.
    OllamaGenerate,
    /// `POST /api/embed`.
    OllamaEmbed,
    /// `POST /api/embeddings` (Ollama's older embeddings API).
    OllamaEmbeddings,
    /// `POST /v1/chat/completions`.
    OpenAiChat,
    /// `POST /v1/completions`.
    OpenAiCompletions,
    /// `POST /v1/embeddings`.
    OpenAiEmbeddings,
    /// `POST /v1/messages` (Anthropic).
    AnthropicMessages,
    /// `POST /v1/responses` (OpenAI Responses).
    Responses,
    /// `POST /v1/audio/transcriptions` (speech to text, multipart).
    AudioTranscriptions,
    /// `POST /v1/audio/translations` (speech to English text, multipart).
    AudioTranslations,
    /// `POST /v1/images/generations`.
    ImageGenerations,
    /// `POST /v1/images/edits` (multipart).
    ImageEdits,
}

/// One row of [`ENDPOINTS`].
#[derive(Clone, Copy, Debug)]
pub struct EndpointSpec {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The path clients call.
    pub path: &'static str,
    /// The dialect it belongs to.
    pub dialect: Dialect,
    /// The work it asks for.
    pub kind: Kind,
    /// Whether a body without `stream` streams (Ollama's chat and generate do).
    pub streams_by_default: bool,
    /// Whether it can stream at all.
    pub can_stream: bool,
    /// How its body comes.
    pub body: BodyKind,
}

const fn row(
    endpoint: Endpoint,
    path: &'static str,
    dialect: Dialect,
    kind: Kind,
    streams_by_default: bool,
    can_stream: bool,
    body: BodyKind,
) -> EndpointSpec {
    EndpointSpec {
        endpoint,
        path,
        dialect,
        kind,
        streams_by_default,
        can_stream,
        body,
    }
}

/// Every inference endpoint, once. Order matches [`Endpoint`]'s variants.
/// Columns: endpoint, path, dialect, kind, streams by default, can stream,
/// body. The media endpoints' answers pass through as the engine sends
/// them (`stream` there is the engine's business), so herd never streams
/// them itself.
#[rustfmt::skip]
pub const ENDPOINTS: &[EndpointSpec] = &[
    row(Endpoint::OllamaChat, "/api/chat", Dialect::Ollama, Kind::Chat, true, true, BodyKind::Json),
    row(Endpoint::OllamaGenerate, "/api/generate", Dialect::Ollama, Kind::Generate, true, true, BodyKind::Json),
    row(Endpoint::OllamaEmbed, "/api/embed", Dialect::Ollama, Kind::Embed, false, false, BodyKind::Json),
    row(Endpoint::OllamaEmbeddings, "/api/embeddings", Dialect::Ollama, Kind::Embed, false, false, BodyKind::Json),
    row(Endpoint::OpenAiChat, "/v1/chat/completions", Dialect::OpenAi, Kind::Chat, false, true, BodyKind::Json),
    row(Endpoint::OpenAiCompletions, "/v1/completions", Dialect::OpenAi, Kind::Generate, false, true, BodyKind::Json),
    row(Endpoint::OpenAiEmbeddings, "/v1/embeddings", Dialect::OpenAi, Kind::Embed, false, false, BodyKind::Json),
    row(Endpoint::AnthropicMessages, "/v1/messages", Dialect::Anthropic, Kind::Chat, false, true, BodyKind::Json),
    row(Endpoint::Responses, "/v1/responses", Dialect::Responses, Kind::Chat, false, true, BodyKind::Json),
    row(Endpoint::AudioTranscriptions, "/v1/audio/transcriptions", Dialect::OpenAi, Kind::Transcribe, false, false, BodyKind::Multipart),
    row(Endpoint::AudioTranslations, "/v1/audio/translations", Dialect::OpenAi, Kind::Transcribe, false, false, BodyKind::Multipart),
    row(Endpoint::ImageGenerations, "/v1/images/generations", Dialect::OpenAi, Kind::Image, false, false, BodyKind::Json),
    row(Endpoint::ImageEdits, "/v1/images/edits", Dialect::OpenAi, Kind::Image, false, false, BodyKind::Multipart),
];

impl Endpoint {
    /// This endpoint's row of [`ENDPOINTS`].
    pub fn spec(self) -> &'static EndpointSpec {
        let s = &ENDPOINTS[self as usize];
        debug_assert_eq!(s.endpoint, self, "ENDPOINTS is in variant order");
        s
    }

    /// The endpoint a path names (a trailing `/` and a query are ignored).
    pub fn from_path(path: &str) -> Option<Endpoint> {
        let p = path.split('?').next().unwrap_or("");
        let p = p.strip_suffix('/').unwrap_or(p);
        ENDPOINTS.iter().find(|s| s.path == p).map(|s| s.endpoint)
    }

    /// The dialect the client speaks.
    pub fn dialect(self) -> Dialect {
        self.spec().dialect
    }

    /// The work asked for.
    pub fn kind(self) -> Kind {
        self.spec().kind
    }

    /// The path the client used.
    pub fn path(self) -> &'static str {
        self.spec().path
    }

    /// Whether its body is a multipart upload.
    pub fn multipart(self) -> bool {
        self.spec().body == BodyKind::Multipart
    }

    /// Whether its answer passes through as the engine sends it (media:
    /// a transcript, images), not as a token stream herd reads.
    pub fn opaque(self) -> bool {
        matches!(self.kind(), Kind::Transcribe | Kind::Image)
    }
}

/// One request, parsed once.
#[derive(Clone, Debug)]
pub struct RouteRequest {
    /// herd's id for the request (also sent to the node as `x-request-id`).
    pub id: String,
    /// The endpoint called (its dialect and kind follow).
    pub endpoint: Endpoint,
    /// The model to route: the client's, or what its alias stands for.
    pub model: String,
    /// The model as the client named it (an alias, say); response bodies
    /// carry this name, `x-herd-model` the one served.
    pub client_model: String,
    /// Models to try, in order, when `model` cannot be served.
    pub fallback_models: Vec<String>,
    /// Whether the answer streams.
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// Estimated prompt tokens (characters / 4, plus per-message and per-image costs).
    pub est_prompt_tokens: u32,
    /// The client's cap on output tokens, when it set one.
    pub max_output_tokens: Option<u32>,
    /// Images in the prompt.
    pub images: u32,
    /// What the model must be able to do (from the content: images, tools,
    /// `think`, audio, image generation).
    pub needs: crate::capability::Caps,
    /// A multipart upload, streamed through rather than parsed (`body` is
    /// then empty).
    pub upload: Option<Arc<crate::dialect::upload::Upload>>,
    /// The client's `options.num_ctx`, when set.
    pub num_ctx: Option<u32>,
    /// Tags for analytics (body `metadata.tags`/`tags`, `x-herd-tags`, `user:`…).
    pub tags: Vec<String>,
    /// The client's body as it arrived, indexed; herd-only fields are out
    /// of its index (see [`crate::dialect::json`]).
    pub body: Arc<RawObject>,
    /// For dialects other than Ollama's: the body translated once, at parse,
    /// to Ollama's native API (the leaf only sets the model it tries).
    pub native: Option<Arc<RawObject>>,
    /// W3C trace context from the client, forwarded to the node.
    pub traceparent: Option<String>,
    /// The herds this request already passed through (`x-herd-hop`).
    pub via: Option<String>,
    /// The memory the body holds, charged to the body budget until the
    /// request is over.
    pub charge: Arc<Charge>,
    /// The prompt's block hashes, for prefix-cache affinity (see
    /// [`crate::prefix`]); empty when the request has no prompt to cache.
    pub prefix: crate::prefix::Prefix,
    /// Who is asking, when the edge knows (an API key in the proxy, the
    /// identity header in herd-epp): limited by [`crate::limit`], named
    /// in traces and metrics.
    pub tenant: Option<crate::limit::Tenant>,
    /// Whether a model no node has may be pulled for this request (the
    /// proxy allows it to admin callers only).
    pub may_pull: bool,
}

impl RouteRequest {
    /// The dialect the client speaks.
    pub fn dialect(&self) -> Dialect {
        self.endpoint.dialect()
    }

    /// The work asked for.
    pub fn kind(&self) -> Kind {
        self.endpoint.kind()
    }
}

pub use herd_proto::node::MAX_MODEL_NAME;

/// A model name as a client may send it: `[host[:port]/][namespace/]name[:tag]`
/// or a digest, in letters, digits and `._-:/@+`, at most
/// [`MAX_MODEL_NAME`] bytes. Anything else cannot name a model on any node,
/// and must not grow herd's maps either.
pub fn check_model_name(m: &str) -> Result<(), crate::error::ClientError> {
    if herd_proto::node::model_name_ok(m) {
        Ok(())
    } else {
        let shown: String = m.chars().take(64).collect();
        Err(crate::error::ClientError::bad_request(format!(
            "{shown:?}{} is not a model name: use letters, digits and ._-:/@+, at most {MAX_MODEL_NAME} characters (e.g. qwen3:8b)",
            if m.chars().count() > 64 { "…" } else { "" }
        ))
        .code("invalid_model"))
    }
}

/// Whether two model names denote the same model.
pub fn same_model(a: &str, b: &str) -> bool {
    a == b || normalized(a) == normalized(b)
}

/// Rough token estimate used for context fit and expected time: characters / 4,
/// plus 4 tokens of framing per message and 150 per image, at least 1.
pub fn estimate_tokens(chars: usize, messages: usize, images: usize) -> u32 {
    let t = chars / 4 + messages * 4 + images * 150;
    u32::try_from(t.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_without_tag_mean_latest() {
        assert_eq!(normalize_model("qwen3"), "qwen3:latest");
        assert_eq!(normalize_model("qwen3:8b"), "qwen3:8b");
        assert_eq!(normalize_model("host:5000/lib/m"), "host:5000/lib/m:latest");
        assert!(same_model("llama3.2", "llama3.2:latest"));
        assert!(same_model("library/llama3.2", "llama3.2:latest"));
        assert!(same_model(
            "registry.ollama.ai/library/Llama3.2",
            "llama3.2"
        ));
        assert!(same_model("QWEN3:8B", "qwen3:8b"));
        assert!(!same_model("qwen3:8b", "qwen3:4b"));
        assert!(!same_model("me/qwen3", "qwen3"));
        assert_eq!(normalize_model("library/qwen3"), "qwen3:latest");
        assert!(!same_model("llama3.2:1b", "llama3.2:latest"));
        assert!(matches!(
            normalized("a:1b"),
            std::borrow::Cow::Borrowed("a:1b")
        ));
        assert_eq!(normalized(" a "), "a:latest");
    }

    #[test]
    fn the_endpoint_table_is_in_variant_order_and_paths_resolve() {
        for (i, s) in ENDPOINTS.iter().enumerate() {
            assert_eq!(s.endpoint as usize, i, "{:?}", s.endpoint);
            assert_eq!(Endpoint::from_path(s.path), Some(s.endpoint));
            assert_eq!(s.endpoint.spec().path, s.path);
            assert!(s.can_stream || !s.streams_by_default);
        }
        assert_eq!(
            Endpoint::from_path("/v1/chat/completions/?x=1"),
            Some(Endpoint::OpenAiChat)
        );
        assert_eq!(Endpoint::from_path("/api/pull"), None);
    }

    #[test]
    fn token_estimate_counts_messages_and_images() {
        assert_eq!(estimate_tokens(0, 0, 0), 1);
        assert_eq!(estimate_tokens(400, 2, 0), 108);
        assert_eq!(estimate_tokens(0, 1, 1), 154);
    }
}
