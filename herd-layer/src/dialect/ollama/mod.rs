//! Ollama's dialect: `/api/chat`, `/api/generate`, `/api/embed`,
//! `/api/embeddings`. It is herd's hub: every engine herd talks to natively
//! speaks it, so these requests go to Ollama nodes as they are (only the model
//! may be swapped for a fallback, and `stream` is made explicit), and their
//! NDJSON answers pass through line by line.

use serde_json::{Value, json};

use super::Size;
use crate::error::ClientError;
use crate::request::Endpoint;

/// Reads the prompt's size from an Ollama body, refusing shapes herd relies on.
pub fn measure(
    endpoint: Endpoint,
    obj: &serde_json::Map<String, Value>,
) -> Result<Size, ClientError> {
    let mut size = Size::default();
    match endpoint {
        Endpoint::OllamaChat => match obj.get("messages") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ms)) => size.messages(ms)?,
            _ => {
                return Err(ClientError::bad_request(
                    "messages must be a list of messages",
                ));
            }
        },
        Endpoint::OllamaGenerate => {
            match obj.get("prompt") {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => size.chars += s.len(),
                _ => return Err(ClientError::bad_request("prompt must be a string")),
            }
            size.chars += obj
                .get("system")
                .and_then(Value::as_str)
                .map_or(0, str::len);
            size.images += obj
                .get("images")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
        }
        Endpoint::OllamaEmbed => match obj.get("input") {
            Some(Value::String(s)) => size.chars += s.len(),
            Some(Value::Array(a)) if !a.is_empty() => {
                size.chars += a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::len)
                    .sum::<usize>();
            }
            _ => {
                return Err(ClientError::bad_request(
                    "input is required (a string or a list of strings)",
                ));
            }
        },
        Endpoint::OllamaEmbeddings => match obj.get("prompt") {
            Some(Value::String(s)) => size.chars += s.len(),
            _ => return Err(ClientError::bad_request("prompt is required (a string)")),
        },
        other => unreachable!("{other:?} is not Ollama's"),
    }
    Ok(size)
}

/// The client's cap on output tokens (`options.num_predict`).
pub fn max_output_tokens(obj: &serde_json::Map<String, Value>) -> Option<u32> {
    super::positive_u32(obj.get("options").and_then(|o| o.get("num_predict")))
}

/// An Ollama error body: `{"error": "..."}`.
pub fn ollama_error(message: &str) -> Value {
    json!({"error": message})
}
