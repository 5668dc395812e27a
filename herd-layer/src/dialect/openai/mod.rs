//! The OpenAI dialect: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, translated both ways to Ollama's native API.
//!
//! herd serves OpenAI clients (the official `openai` SDKs, LiteLLM, Open WebUI) from Ollama
//! nodes by *translating* each OpenAI request into Ollama's native `/api/chat`,
//! `/api/generate` and `/api/embed` calls, and each native response back into OpenAI's shapes.
//! It deliberately does **not** forward to Ollama's own `/v1` compatibility layer:
//!
//! * the native endpoints report Ollama's timing stats (`total_duration`, `load_duration`,
//!   `prompt_eval_count`, `prompt_eval_duration`, `eval_count`, `eval_duration`) on every
//!   response, which herd's scoring learns node speed from — `/v1` hides them;
//! * the native endpoints exist, with the same shapes, on every Ollama version herd supports,
//!   whereas `/v1` arrived late and its coverage (tools, images, `json_schema`) differs by
//!   version.
//!
//! Everything here is a pure function over [`serde_json::Value`]: no I/O, no clock, no
//! randomness (tool-call ids are derived deterministically from the response id).
//!
//! Supported and unsupported OpenAI features:
//!
//! * chat: roles `system`, `developer` (→ `system`), `user`, `assistant`, `tool`; text and
//!   `image_url` content parts (inline `data:` URLs only — herd never fetches URLs); tool
//!   calls and tool results; function `tools` (`tool_choice: "none"` drops them; other
//!   `tool_choice` values cannot be enforced by Ollama and are ignored); `response_format`
//!   (`text`, `json_object`, `json_schema`); sampling options; `stream` and
//!   `stream_options.include_usage`.
//! * Ollama extras passed through when present in an OpenAI body: `keep_alive`, `options`
//!   (explicit OpenAI parameters win over it), `think` (chat and completions) and `truncate`
//!   (embeddings).
//! * completions: one prompt (a string or an array holding one string), `suffix`, sampling
//!   options. `echo`, `logprobs`, `best_of` and `logit_bias` are ignored.
//! * embeddings: a string or an array of strings; `dimensions`; `encoding_format` `float` or
//!   `base64` (little-endian `f32`, as OpenAI does). Token-id inputs are rejected.
//! * `n > 1` is rejected; other unknown OpenAI fields are ignored.
//! * Model "thinking" is returned as a non-standard `reasoning` field on the message (or
//!   stream delta), only when non-empty.

pub mod engine;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use request::{
    chat_fields, chat_messages, chat_request, completion_request, embeddings_base64,
    embeddings_fields, embeddings_input, embeddings_request, include_usage, wants_stream,
};
pub use response::{chat_response, completion_response, embeddings_response};
pub use stream::{ChatStream, CompletionStream};

use serde_json::{Map, Value, json};

use super::Size;
use super::json::RawObject;
use crate::error::ClientError;
use crate::request::Endpoint;

/// A client request that cannot be translated. The `Display` text is meant for the API user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A required field is absent or `null`. Holds the field's path, e.g. `messages`.
    #[error("{0}: is required")]
    MissingField(String),
    /// A field has the wrong type or value. `field` is its path, e.g. `messages[1].role`.
    /// A field has the wrong type or value (`field` is its path, e.g. `messages[1].role`).
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's path.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A feature herd cannot serve from Ollama; `message` is the whole user-facing sentence.
    /// A feature herd cannot serve from Ollama (`message` is the whole sentence for the user).
    #[error("{message}")]
    Unsupported {
        /// The field's path.
        field: String,
        /// The sentence for the user.
        message: String,
    },
}

impl TranslateError {
    /// The request field the error is about (OpenAI's `error.param`).
    pub fn param(&self) -> &str {
        match self {
            Self::MissingField(field)
            | Self::Invalid { field, .. }
            | Self::Unsupported { field, .. } => field,
        }
    }

    /// This error as an OpenAI error body (`invalid_request_error`, with `param` set).
    pub fn to_openai(&self) -> Value {
        let mut body = openai_error(&self.to_string(), "invalid_request_error", None);
        body["error"]["param"] = Value::String(self.param().to_owned());
        body
    }

    pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(super) fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub(super) type Result<T, E = TranslateError> = std::result::Result<T, E>;

pub(super) const FINGERPRINT: &str = "fp_ollama";

/// An OpenAI error body: `{"error":{"message","type","param":null,"code"}}`.
pub fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// The client's cap on output tokens.
pub fn max_output_tokens(obj: &RawObject) -> Option<u32> {
    let n = |k| super::positive_u32(obj.value(k).as_ref());
    n("max_completion_tokens").or_else(|| n("max_tokens"))
}

/// Every field of `obj` but `skip`, as values (the small fields).
fn small_fields(obj: &RawObject, skip: &str) -> Map<String, Value> {
    obj.keys()
        .filter(|k| *k != skip)
        .map(|k| (k.to_string(), obj.value(k).unwrap_or(Value::Null)))
        .collect()
}

/// An object of already-translated fields, `first` leading.
fn assemble(first: Option<(&str, &str)>, rest: &Map<String, Value>) -> RawObject {
    let texts: Vec<(String, String)> = rest
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(texts.len() + 1);
    let mut first = first;
    for (k, v) in &texts {
        fields.push((k, v));
        if k == "model"
            && let Some(f) = first.take()
        {
            fields.push(f);
        }
    }
    fields.extend(first);
    RawObject::from_fields(fields)
}

fn client(e: TranslateError) -> ClientError {
    ClientError::bad_request(e.to_string())
}

/// The body as Ollama's native call for `endpoint`, and the prompt's size.
/// Messages and inputs are translated element by element, never held as
/// a tree (see [`super::json`]).
pub fn to_ollama(
    endpoint: Endpoint,
    obj: &RawObject,
    model: &str,
) -> Result<(RawObject, Size), ClientError> {
    let mut size = Size::default();
    match endpoint {
        Endpoint::OpenAiChat => {
            let raw = match obj.raw("messages") {
                None | Some("null") => {
                    return Err(client(TranslateError::MissingField("messages".into())));
                }
                Some(r) if r.starts_with('[') => r,
                Some(_) => {
                    return Err(client(TranslateError::invalid(
                        "messages",
                        "must be a non-empty array",
                    )));
                }
            };
            let messages = chat_messages(raw, &mut size).map_err(client)?;
            let rest = chat_fields(&small_fields(obj, "messages"), model).map_err(client)?;
            Ok((assemble(Some(("messages", &messages)), &rest), size))
        }
        Endpoint::OpenAiCompletions => {
            let small = small_fields(obj, "");
            let out = completion_request(&small, model).map_err(client)?;
            size.string(obj.raw("prompt"));
            if let Some(Value::Array(a)) = small.get("prompt") {
                size.chars += a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::len)
                    .sum::<usize>();
            }
            Ok((assemble(None, &out), size))
        }
        Endpoint::OpenAiEmbeddings => {
            let raw = obj.raw("input");
            embeddings_input(raw, &mut size).map_err(client)?;
            let rest = embeddings_fields(&small_fields(obj, "input"), model).map_err(client)?;
            let input = raw.unwrap_or("null");
            Ok((assemble(Some(("input", input)), &rest), size))
        }
        other => unreachable!("{other:?} is not OpenAI's"),
    }
}
