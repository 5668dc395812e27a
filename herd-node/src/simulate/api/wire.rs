//! What both APIs put on the wire the same way: JSON bodies in, time and
//! duration fields, NDJSON and SSE framing, chat messages and tool calls.
//!
//! Ollama and OpenAI differ in their envelopes, not in these pieces; keeping
//! one copy here is what keeps a chat answered on `/api/chat` and on
//! `/v1/chat/completions` the same answer.

use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::ApiError;
use crate::simulate::content::{digest_of, rfc3339};

/// A JSON body, or a 400 with serde's reason (what Ollama answers too);
/// an empty body is Ollama's `missing request body`.
pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("missing request body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// A field that may be `null`, read as its default the way Go's decoder
/// leaves a field alone on `null` (`#[serde(deserialize_with = "nullable")]`).
pub(super) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `n` random bytes as lowercase hex (ids the real server draws at random).
pub(super) fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:02x}", fastrand::u8(..)))
        .collect()
}

/// A tool call id as Ollama's chat handler draws it: `call_` and eight
/// lowercase letters or digits.
pub(super) fn tool_call_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let tail: String = (0..8)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect();
    format!("call_{tail}")
}

/// Now, as Ollama's `created_at`.
pub(super) fn now_str() -> String {
    rfc3339(SystemTime::now())
}

/// The wall-clock time of a tokio deadline, so a chunk's `created_at` says
/// when it was due (paused test time included).
pub(super) fn wall(at: Instant) -> SystemTime {
    let now = Instant::now();
    if at >= now {
        SystemTime::now() + (at - now)
    } else {
        SystemTime::now() - (now - at)
    }
}

/// A duration as Ollama's integer nanoseconds.
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------- requests

/// One chat message, as both APIs send it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(super) struct Message {
    pub(super) role: String,
    pub(super) content: Option<Value>,
}

impl Message {
    /// Text of the content: a string, or OpenAI's array of parts.
    pub(super) fn text(&self) -> String {
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

// ---------------------------------------------------------------- framing

/// One line of Ollama's `application/x-ndjson` stream.
pub(super) fn ndjson(v: &Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

/// One event of OpenAI's `text/event-stream`.
pub(super) fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// One named event, `event:` line and `data:` line, as Ollama writes the
/// Anthropic and Responses streams (`writeSSE`).
pub(super) fn sse_event(name: &str, v: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {v}\n\n"))
}

// ---------------------------------------------------------------- names

/// Whether Ollama would accept `name` as a model name (`model.ParseName`
/// then `IsValid`): `[host/][namespace/]model[:tag]`, each part starting
/// with a letter or digit (a tag may start with `_`) and made of letters,
/// digits, `_`, `.` and `-`, within Ollama's length limits.
pub(super) fn valid_model_name(name: &str) -> bool {
    fn part(s: &str, max: usize, first_underscore: bool) -> bool {
        let mut chars = s.chars();
        let Some(first) = chars.next() else {
            return false;
        };
        (first.is_ascii_alphanumeric() || (first_underscore && first == '_'))
            && s.len() <= max
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }
    let name = name.trim();
    let (rest, tag) = match name.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (name, None),
    };
    if tag.is_some_and(|t| !part(t, 80, true)) {
        return false;
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let (model, ns, host) = match parts.as_slice() {
        [m] => (*m, None, None),
        [n, m] => (*m, Some(*n), None),
        [h, n, m] => (*m, Some(*n), Some(*h)),
        _ => return false,
    };
    part(model, 80, false)
        && ns.is_none_or(|n| part(n, 80, false))
        && host.is_none_or(|h| {
            !h.is_empty()
                && h.len() <= 350
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'))
        })
}

/// A name as Ollama spells it in full (`registry.ollama.ai/library/m:tag`),
/// which is how its capability errors name a model.
pub(super) fn full_model_name(normalized: &str) -> String {
    match normalized.matches('/').count() {
        0 => format!("registry.ollama.ai/library/{normalized}"),
        1 => format!("registry.ollama.ai/{normalized}"),
        _ => normalized.to_owned(),
    }
}

// ---------------------------------------------------------------- tool calls

/// A tool call in Ollama's shape: arguments as an object.
pub(super) fn ollama_tool_calls(name: &str, arguments: &Map<String, Value>) -> Value {
    json!([{"function": {"name": name, "arguments": arguments}}])
}

/// A tool given in Anthropic's (`{name, description, input_schema}`) or
/// the Responses API's (`{type, name, description, parameters}`) flat
/// shape, as the chat request Ollama makes of it.
pub(super) fn function_tool(name: &str, description: Option<&Value>, parameters: &Value) -> Value {
    json!({"type": "function", "function": {
        "name": name,
        "description": description.and_then(Value::as_str).unwrap_or(""),
        "parameters": parameters,
    }})
}

/// A tool call in OpenAI's shape: arguments as a JSON string, an id derived
/// from the completion's, and `index` only in streamed deltas.
pub(super) fn openai_tool_calls(
    id: &str,
    name: &str,
    arguments: &Map<String, Value>,
    index: bool,
) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_as_ollama_parses_them() {
        for ok in [
            "llama3.2",
            "llama3.2:3b",
            "ns/m:latest",
            "host.com:5000/ns/m:v1",
            "m:_x",
        ] {
            assert!(valid_model_name(ok), "{ok}");
        }
        for bad in ["", " ", "a b", ":tag", "-m", "m:", "a/b/c/d", "m:t/x", "m!"] {
            assert!(!valid_model_name(bad), "{bad}");
        }
        assert_eq!(full_model_name("m:1"), "registry.ollama.ai/library/m:1");
        assert_eq!(full_model_name("ns/m:1"), "registry.ollama.ai/ns/m:1");
    }

    #[test]
    fn empty_body_is_missing() {
        let e = parse::<Value>(b"").expect_err("empty");
        assert_eq!(e.message, "missing request body");
        assert!(parse::<Value>(b"{").is_err());
    }
}
