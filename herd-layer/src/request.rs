//! The request as herd understands it, parsed once at the HTTP edge.
//!
//! Every layer reads a [`RouteRequest`]; none re-parses the body. The client's
//! JSON body is kept (minus herd-only fields such as `fallback_models`) so the
//! leaf can forward it, translated or not, without a second parse.

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
}

impl Dialect {
    /// The dialect's name in traces and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Ollama => "ollama",
            Dialect::OpenAi => "openai",
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
}

const fn row(
    endpoint: Endpoint,
    path: &'static str,
    dialect: Dialect,
    kind: Kind,
    streams_by_default: bool,
    can_stream: bool,
) -> EndpointSpec {
    EndpointSpec {
        endpoint,
        path,
        dialect,
        kind,
        streams_by_default,
        can_stream,
    }
}

/// Every inference endpoint, once. Order matches [`Endpoint`]'s variants.
pub const ENDPOINTS: &[EndpointSpec] = &[
    row(
        Endpoint::OllamaChat,
        "/api/chat",
        Dialect::Ollama,
        Kind::Chat,
        true,
        true,
    ),
    row(
        Endpoint::OllamaGenerate,
        "/api/generate",
        Dialect::Ollama,
        Kind::Generate,
        true,
        true,
    ),
    row(
        Endpoint::OllamaEmbed,
        "/api/embed",
        Dialect::Ollama,
        Kind::Embed,
        false,
        false,
    ),
    row(
        Endpoint::OllamaEmbeddings,
        "/api/embeddings",
        Dialect::Ollama,
        Kind::Embed,
        false,
        false,
    ),
    row(
        Endpoint::OpenAiChat,
        "/v1/chat/completions",
        Dialect::OpenAi,
        Kind::Chat,
        false,
        true,
    ),
    row(
        Endpoint::OpenAiCompletions,
        "/v1/completions",
        Dialect::OpenAi,
        Kind::Generate,
        false,
        true,
    ),
    row(
        Endpoint::OpenAiEmbeddings,
        "/v1/embeddings",
        Dialect::OpenAi,
        Kind::Embed,
        false,
        false,
    ),
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
}

/// One request, parsed once.
#[derive(Clone, Debug)]
pub struct RouteRequest {
    /// herd's id for the request (also sent to the node as `x-request-id`).
    pub id: String,
    /// The endpoint called (its dialect and kind follow).
    pub endpoint: Endpoint,
    /// The model the client asked for, as written.
    pub model: String,
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

/// Ollama's model naming: a name without a tag means `:latest`.
pub fn normalize_model(name: &str) -> String {
    let name = name.trim();
    // A tag follows the last ':' that comes after the last '/' (registry hosts may carry ports).
    let last_segment = name.rsplit('/').next().unwrap_or(name);
    if last_segment.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// [`normalize_model`] without allocating when the name already has a tag
/// (the common case on the request path).
pub fn normalized(name: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = name.trim();
    let last_segment = trimmed.rsplit('/').next().unwrap_or(trimmed);
    if last_segment.contains(':') {
        std::borrow::Cow::Borrowed(trimmed)
    } else {
        std::borrow::Cow::Owned(format!("{trimmed}:latest"))
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
