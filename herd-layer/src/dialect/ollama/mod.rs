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

/// Whether a chat or generate body asks only to unload its model: nothing
/// to answer (no prompt, no messages) and `keep_alive` zero. Ollama unloads
/// the model where it runs; herd unloads it on every node that holds it.
pub fn is_unload(endpoint: Endpoint, obj: &RawObject) -> bool {
    let empty = |key: &str| matches!(obj.raw(key), None | Some("null" | "\"\"" | "[]"));
    let nothing_asked = match endpoint {
        Endpoint::OllamaChat => empty("messages"),
        Endpoint::OllamaGenerate => empty("prompt") && empty("images"),
        _ => false,
    };
    nothing_asked && obj.value("keep_alive").is_some_and(|k| zero_duration(&k))
}

/// `keep_alive` as Ollama reads it: a number of seconds, or a Go duration
/// string (`"0"`, `"0s"`, `"0m0s"`); true when it is zero.
fn zero_duration(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => {
            let s = s.trim();
            let units_ok = s
                .trim_start_matches(['+', '-'])
                .split(|c: char| c.is_ascii_alphabetic() || c == 'µ')
                .all(|num| num.bytes().all(|b| b == b'0' || b == b'.'));
            !s.is_empty() && units_ok && s.bytes().any(|b| b == b'0')
        }
        _ => false,
    }
}

/// The answer Ollama gives to an unload (`done_reason: "unload"`).
pub fn unload_response(endpoint: Endpoint, model: &str, created_at: &str) -> Value {
    if endpoint == Endpoint::OllamaChat {
        json!({"model": model, "created_at": created_at, "message": {"role": "assistant", "content": ""}, "done_reason": "unload", "done": true})
    } else {
        json!({"model": model, "created_at": created_at, "response": "", "done": true, "done_reason": "unload"})
    }
}

/// An Ollama error body: `{"error": "..."}`.
pub fn ollama_error(message: &str) -> Value {
    json!({"error": message})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unload(endpoint: Endpoint, body: &str) -> bool {
        is_unload(
            endpoint,
            &RawObject::parse(body.to_string().into()).unwrap(),
        )
    }

    #[test]
    fn an_unload_is_an_empty_request_with_keep_alive_zero() {
        let chat = Endpoint::OllamaChat;
        let gen_ = Endpoint::OllamaGenerate;
        assert!(unload(
            chat,
            r#"{"model":"m","messages":[],"keep_alive":0}"#
        ));
        assert!(unload(chat, r#"{"model":"m","keep_alive":"0s"}"#));
        assert!(unload(gen_, r#"{"model":"m","keep_alive":"0m0s"}"#));
        assert!(unload(
            gen_,
            r#"{"model":"m","prompt":"","keep_alive":0.0}"#
        ));
        // Something to answer, or a non-zero keep_alive: not an unload.
        assert!(!unload(
            gen_,
            r#"{"model":"m","prompt":"hi","keep_alive":0}"#
        ));
        assert!(!unload(
            chat,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"keep_alive":0}"#
        ));
        assert!(!unload(gen_, r#"{"model":"m","keep_alive":"5m"}"#));
        assert!(!unload(gen_, r#"{"model":"m","keep_alive":-1}"#));
        assert!(!unload(gen_, r#"{"model":"m"}"#));
        assert!(!unload(gen_, r#"{"model":"m","keep_alive":""}"#));
        assert!(!unload(
            Endpoint::OllamaEmbed,
            r#"{"model":"m","keep_alive":0}"#
        ));
    }
}
