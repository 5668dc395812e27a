//! Ollama's `/api/chat` NDJSON stream → Anthropic's server-sent events.
//!
//! Every event carries an `event:` line naming it (Anthropic's SDKs drop
//! events without one) and a `data:` object whose `type` is that name.
//! Blocks are opened and closed in order, indexed from 0: thinking, text,
//! then one `tool_use` block per call with its whole input in one
//! `input_json_delta`.

use bytes::Bytes;
use serde_json::{Value, json};

use super::response::{arguments, count, stop_reason, tool_id};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    None,
    Thinking,
    Text,
}

/// One response's converter.
#[derive(Debug)]
pub struct MessagesStream {
    id: String,
    model: String,
    input_estimate: u32,
    started: bool,
    open: Open,
    next_index: usize,
    calls: usize,
    finished: bool,
}

/// One server-sent event with its name.
pub fn event(name: &str, data: &Value) -> Bytes {
    let mut b = format!("event: {name}\ndata: ").into_bytes();
    b.extend_from_slice(&serde_json::to_vec(data).unwrap_or_default());
    b.extend_from_slice(b"\n\n");
    Bytes::from(b)
}

impl MessagesStream {
    /// A converter for one message; `input_estimate` stands in for the
    /// prompt's tokens until the node counts them.
    pub fn new(id: &str, model: &str, input_estimate: u32) -> Self {
        MessagesStream {
            id: id.to_string(),
            model: model.to_string(),
            input_estimate,
            started: false,
            open: Open::None,
            next_index: 0,
            calls: 0,
            finished: false,
        }
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": self.input_estimate, "output_tokens": 0},
            }}),
        ));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.open != Open::None {
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.next_index - 1}),
            ));
            self.open = Open::None;
        }
    }

    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<Bytes>) {
        if self.open == kind {
            return;
        }
        self.close(out);
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.next_index, "content_block": block}),
        ));
        self.next_index += 1;
        self.open = kind;
    }

    /// Events for one Ollama chunk.
    pub fn chunk(&mut self, c: &Value) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if let Some(e) = c.get("error").filter(|e| !e.is_null()) {
            let message = e.as_str().map_or_else(|| e.to_string(), str::to_string);
            self.start(&mut out);
            out.push(event(
                "error",
                &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            ));
            self.finished = true;
            return out;
        }
        self.start(&mut out);
        let m = c.get("message");
        let s = |k: &str| {
            m.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let thinking = s("thinking");
        if !thinking.is_empty() {
            self.open(
                Open::Thinking,
                json!({"type": "thinking", "thinking": ""}),
                &mut out,
            );
            out.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": self.next_index - 1,
                    "delta": {"type": "thinking_delta", "thinking": thinking}}),
            ));
        }
        let text = s("content");
        if !text.is_empty() {
            self.open(Open::Text, json!({"type": "text", "text": ""}), &mut out);
            out.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": self.next_index - 1,
                    "delta": {"type": "text_delta", "text": text}}),
            ));
        }
        if let Some(calls) = m
            .and_then(|m| m.get("tool_calls"))
            .and_then(Value::as_array)
        {
            for call in calls {
                self.close(&mut out);
                let index = self.next_index;
                self.next_index += 1;
                let name = call
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                out.push(event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": index, "content_block": {
                        "type": "tool_use", "id": tool_id(call, &self.id, self.calls), "name": name, "input": {}}}),
                ));
                out.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": arguments(call).to_string()}}),
                ));
                out.push(event(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": index}),
                ));
                self.calls += 1;
            }
        }
        if c.get("done").and_then(Value::as_bool) == Some(true) {
            self.close(&mut out);
            out.push(event(
                "message_delta",
                &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(c.get("done_reason").and_then(Value::as_str), self.calls > 0), "stop_sequence": null},
                    "usage": {"input_tokens": count(c, "prompt_eval_count"), "output_tokens": count(c, "eval_count")}}),
            ));
            out.push(event("message_stop", &json!({"type": "message_stop"})));
            self.finished = true;
        }
        out
    }

    /// Whether the final events went out.
    pub fn finished(&self) -> bool {
        self.finished
    }
}
