//! What both APIs put on the wire the same way: JSON bodies in, time and
//! duration fields, NDJSON and SSE framing, chat messages and tool calls.
//!
//! Ollama and OpenAI differ in their envelopes, not in these pieces; keeping
//! one copy here is what keeps a chat answered on `/api/chat` and on
//! `/v1/chat/completions` the same answer.

use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::ApiError;
use crate::simulate::content::{digest_of, rfc3339};

/// A JSON body, or a 400 with serde's reason (what Ollama answers too).
pub(super) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))
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

// ---------------------------------------------------------------- tool calls

/// A tool call in Ollama's shape: arguments as an object.
pub(super) fn ollama_tool_calls(name: &str, arguments: &Map<String, Value>) -> Value {
    json!([{"function": {"name": name, "arguments": arguments}}])
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
