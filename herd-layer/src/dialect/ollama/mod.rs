//! Ollama's dialect: `/api/chat`, `/api/generate`, `/api/embed`,
//! `/api/embeddings`. It is herd's hub: every engine herd talks to natively
//! speaks it, so these requests go to Ollama nodes as they are (only the model
//! may be swapped for a fallback, and `stream` is made explicit), and their
//! NDJSON answers pass through line by line.
//!
//! Nothing here builds a tree of the body: the prompt is sized by walking
//! its fields ([`super::json::each`]), and the body goes upstream as the
//! bytes it came in.

mod collect;

pub use collect::{CollectError, Collector};

use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::json::{self, RawObject};
use super::{MessagePeek, Size};
use crate::error::ClientError;
use crate::request::Endpoint;

fn bad(field: &str, what: &str) -> ClientError {
    ClientError::bad_request(format!("{field} {what}"))
}

/// Reads the prompt's size from an Ollama body, refusing shapes herd relies on.
pub fn measure(endpoint: Endpoint, obj: &RawObject) -> Result<Size, ClientError> {
    let mut size = Size::default();
    match endpoint {
        Endpoint::OllamaChat => match obj.raw("messages") {
            None | Some("null") => {}
            Some(r) if r.starts_with('[') => {
                json::each::<MessagePeek<'_>, _>(r, |i, m| size.message(i, m))
                    .map_err(|e| ClientError::bad_request(format!("messages: {e}")))?;
            }
            Some(_) => return Err(bad("messages", "must be a list of messages")),
        },
        Endpoint::OllamaGenerate => {
            match obj.raw("prompt") {
                None | Some("null") => {}
                Some(r) if r.starts_with('"') => size.string(Some(r)),
                Some(_) => return Err(bad("prompt", "must be a string")),
            }
            size.string(obj.raw("system"));
            if let Some(r) = obj.raw("images").filter(|r| r.starts_with('[')) {
                size.images += json::each::<IgnoredAny, _>(r, |_, _| Ok(()))
                    .map_err(|e| ClientError::bad_request(format!("images: {e}")))?;
            }
        }
        Endpoint::OllamaEmbed => match obj.raw("input") {
            Some(r) if r.starts_with('"') => size.string(Some(r)),
            Some(r) if r.starts_with('[') && r != "[]" => {
                json::each::<&RawValue, _>(r, |_, v| {
                    size.string(Some(v.get()));
                    Ok(())
                })
                .map_err(|e| ClientError::bad_request(format!("input: {e}")))?;
            }
            _ => return Err(bad("input", "is required (a string or a list of strings)")),
        },
        Endpoint::OllamaEmbeddings => match obj.raw("prompt") {
            Some(r) if r.starts_with('"') => size.string(Some(r)),
            _ => return Err(bad("prompt", "is required (a string)")),
        },
        other => unreachable!("{other:?} is not Ollama's"),
    }
    Ok(size)
}

/// The client's cap on output tokens (`options.num_predict`).
pub fn max_output_tokens(options: Option<&Value>) -> Option<u32> {
    super::positive_u32(options.and_then(|o| o.get("num_predict")))
}

/// An Ollama error body: `{"error": "..."}`.
pub fn ollama_error(message: &str) -> Value {
    json!({"error": message})
}
