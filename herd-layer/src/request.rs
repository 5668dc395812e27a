//! The request as herd understands it, parsed once at the HTTP edge.
//!
//! Every layer reads a [`RouteRequest`]; none re-parses the body. The client's
//! JSON body is kept (minus herd-only fields such as `fallback_models`) so the
//! leaf can forward it, translated or not, without a second parse.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

/// The API dialect the client speaks; errors and responses use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientFormat {
    Ollama,
    #[serde(rename = "openai")]
    OpenAi,
}

/// What kind of work the request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Chat,
    Generate,
    Embed,
}

/// The exact endpoint the client called.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Endpoint {
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
    OllamaEmbeddings,
    OpenAiChat,
    OpenAiCompletions,
    OpenAiEmbeddings,
}

impl Endpoint {
    pub fn format(self) -> ClientFormat {
        match self {
            Endpoint::OllamaChat
            | Endpoint::OllamaGenerate
            | Endpoint::OllamaEmbed
            | Endpoint::OllamaEmbeddings => ClientFormat::Ollama,
            Endpoint::OpenAiChat | Endpoint::OpenAiCompletions | Endpoint::OpenAiEmbeddings => {
                ClientFormat::OpenAi
            }
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Endpoint::OllamaChat | Endpoint::OpenAiChat => Kind::Chat,
            Endpoint::OllamaGenerate | Endpoint::OpenAiCompletions => Kind::Generate,
            Endpoint::OllamaEmbed | Endpoint::OllamaEmbeddings | Endpoint::OpenAiEmbeddings => {
                Kind::Embed
            }
        }
    }

    /// The path the client used.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::OllamaChat => "/api/chat",
            Endpoint::OllamaGenerate => "/api/generate",
            Endpoint::OllamaEmbed => "/api/embed",
            Endpoint::OllamaEmbeddings => "/api/embeddings",
            Endpoint::OpenAiChat => "/v1/chat/completions",
            Endpoint::OpenAiCompletions => "/v1/completions",
            Endpoint::OpenAiEmbeddings => "/v1/embeddings",
        }
    }
}

/// One request, parsed once.
#[derive(Clone, Debug)]
pub struct RouteRequest {
    /// herd's id for the request (also sent to the node as `x-request-id`).
    pub id: String,
    pub endpoint: Endpoint,
    /// The model the client asked for, as written.
    pub model: String,
    /// Models to try, in order, when `model` cannot be served.
    pub fallback_models: Vec<String>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    /// Estimated prompt tokens (characters / 4, plus per-message and per-image costs).
    pub est_prompt_tokens: u32,
    /// The client's cap on output tokens, when it set one.
    pub max_output_tokens: Option<u32>,
    pub images: u32,
    /// The client's `options.num_ctx`, when set.
    pub num_ctx: Option<u32>,
    pub tags: Vec<String>,
    /// The client's body without herd-only fields.
    pub body: Arc<Map<String, Value>>,
    /// For OpenAI endpoints: the body translated once, at parse, to Ollama's
    /// native API (the leaf only sets the model it tries).
    pub ollama_body: Option<Arc<Map<String, Value>>>,
    /// W3C trace context from the client, forwarded to the node.
    pub traceparent: Option<String>,
}

impl RouteRequest {
    pub fn format(&self) -> ClientFormat {
        self.endpoint.format()
    }

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
    fn token_estimate_counts_messages_and_images() {
        assert_eq!(estimate_tokens(0, 0, 0), 1);
        assert_eq!(estimate_tokens(400, 2, 0), 108);
        assert_eq!(estimate_tokens(0, 1, 1), 154);
    }
}
