//! Ollama's NDJSON streams → OpenAI server-sent events, chunk by chunk.

use serde_json::{Map, Value, json};

use super::response::*;
use super::{FINGERPRINT, openai_error};

pub(super) fn ollama_stream_error(chunk: &Value) -> Option<Value> {
    let error = chunk.get("error").filter(|e| !e.is_null())?;
    let message = match error {
        Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| other.to_string(), str::to_owned),
    };
    Some(openai_error(&message, "server_error", None))
}

/// Turns Ollama /api/chat NDJSON chunks into OpenAI `chat.completion.chunk` payloads.
#[derive(Debug, Clone)]
pub struct ChatStream {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    role_sent: bool,
    tool_calls_sent: usize,
    finished: bool,
}

impl ChatStream {
    /// A converter for one response: `id`, `model` and `created` go on every chunk.
    pub fn new(id: &str, model: &str, created: i64, include_usage: bool) -> Self {
        Self {
            id: id.to_owned(),
            model: model.to_owned(),
            created,
            include_usage,
            role_sent: false,
            tool_calls_sent: 0,
            finished: false,
        }
    }

    fn envelope(&self, choices: Value) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        self.envelope(json!([{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason,
        }]))
    }

    /// One Ollama NDJSON chunk → zero or more OpenAI SSE payloads, in order.
    pub fn chunk(&mut self, ollama_chunk: &Value) -> Vec<Value> {
        if let Some(error) = ollama_stream_error(ollama_chunk) {
            return vec![error];
        }
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        if !self.role_sent {
            self.role_sent = true;
            out.push(self.delta(json!({"role": "assistant", "content": ""}), None));
        }

        let message = ollama_chunk.get("message");
        let content = message_str(message, "content");
        let thinking = message_str(message, "thinking");
        let calls = openai_tool_calls(
            message_tool_calls(message),
            &self.id,
            self.tool_calls_sent,
            true,
        );
        self.tool_calls_sent += calls.len();

        let mut delta = Map::new();
        if !content.is_empty() {
            delta.insert("content".to_owned(), Value::String(content.to_owned()));
        }
        if !thinking.is_empty() {
            delta.insert("reasoning".to_owned(), Value::String(thinking.to_owned()));
        }
        if !calls.is_empty() {
            delta.insert("tool_calls".to_owned(), Value::Array(calls));
        }
        if !delta.is_empty() {
            out.push(self.delta(Value::Object(delta), None));
        }

        if ollama_chunk.get("done").and_then(Value::as_bool) == Some(true) {
            self.finished = true;
            let reason = finish_reason(ollama_chunk, self.tool_calls_sent > 0);
            out.push(self.delta(json!({}), Some(reason)));
            if self.include_usage {
                let mut last = self.envelope(json!([]));
                last["usage"] = usage(ollama_chunk);
                out.push(last);
            }
        }
        out
    }

    /// Whether Ollama's final chunk (`done: true`) has been seen.
    pub fn finished(&self) -> bool {
        self.finished
    }
}

/// Turns Ollama /api/generate NDJSON chunks into OpenAI `text_completion` stream payloads.
#[derive(Debug, Clone)]
pub struct CompletionStream {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    finished: bool,
}

impl CompletionStream {
    /// A converter for one response: `id`, `model` and `created` go on every chunk.
    pub fn new(id: &str, model: &str, created: i64, include_usage: bool) -> Self {
        Self {
            id: id.to_owned(),
            model: model.to_owned(),
            created,
            include_usage,
            finished: false,
        }
    }

    fn envelope(&self, choices: Value) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn text(&self, text: &str, finish_reason: Option<&str>) -> Value {
        self.envelope(json!([{
            "text": text,
            "index": 0,
            "logprobs": null,
            "finish_reason": finish_reason,
        }]))
    }

    /// One Ollama NDJSON chunk → zero or more OpenAI SSE payloads, in order.
    pub fn chunk(&mut self, c: &Value) -> Vec<Value> {
        if let Some(error) = ollama_stream_error(c) {
            return vec![error];
        }
        if self.finished {
            return Vec::new();
        }
        let mut out = Vec::new();
        let text = c
            .get("response")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !text.is_empty() {
            out.push(self.text(text, None));
        }
        if c.get("done").and_then(Value::as_bool) == Some(true) {
            self.finished = true;
            out.push(self.text("", Some(finish_reason(c, false))));
            if self.include_usage {
                let mut last = self.envelope(json!([]));
                last["usage"] = usage(c);
                out.push(last);
            }
        }
        out
    }

    /// Whether Ollama's final chunk (`done: true`) has been seen.
    pub fn finished(&self) -> bool {
        self.finished
    }
}
