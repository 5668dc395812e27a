//! Ollama's `/api/chat` NDJSON stream → Responses server-sent events.
//!
//! The order OpenAI's SDK helper (`client.responses.stream()`) checks:
//! `response.created` first, one response id throughout, every item opened
//! with `output_item.added` (and a `content_part.added` before text) and
//! closed with `output_item.done`, `response.completed` last with the whole
//! output and usage; `sequence_number` counts from 0.

use bytes::Bytes;
use serde_json::{Value, json};

use super::response::{arguments, envelope, usage};
use crate::dialect::anthropic::stream_event as event;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    None,
    Reasoning,
    Message,
}

/// One response's converter.
#[derive(Debug)]
pub struct ResponsesStream {
    id: String,
    bare: String,
    model: String,
    created: i64,
    seq: u64,
    started: bool,
    open: Open,
    thinking: String,
    text: String,
    items: Vec<Value>,
    calls: usize,
    finished: bool,
}

impl ResponsesStream {
    /// A converter for one response.
    pub fn new(id: &str, model: &str, created: i64) -> Self {
        ResponsesStream {
            id: id.to_string(),
            bare: id.trim_start_matches("resp_").to_string(),
            model: model.to_string(),
            created,
            seq: 0,
            started: false,
            open: Open::None,
            thinking: String::new(),
            text: String::new(),
            items: Vec::new(),
            calls: 0,
            finished: false,
        }
    }

    fn emit(&mut self, out: &mut Vec<Bytes>, name: &str, mut data: Value) {
        data["type"] = Value::String(name.to_string());
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.push(event(name, &data));
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = envelope(
            &self.id,
            &self.model,
            self.created,
            "in_progress",
            json!([]),
        );
        self.emit(out, "response.created", json!({"response": r}));
        let r = envelope(
            &self.id,
            &self.model,
            self.created,
            "in_progress",
            json!([]),
        );
        self.emit(out, "response.in_progress", json!({"response": r}));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        let index = self.items.len();
        match self.open {
            Open::None => {}
            Open::Reasoning => {
                let item_id = format!("rs_{}", self.bare);
                let text = std::mem::take(&mut self.thinking);
                self.emit(out, "response.reasoning_summary_text.done",
                    json!({"item_id": item_id, "output_index": index, "summary_index": 0, "text": text}));
                let part = json!({"type": "summary_text", "text": text});
                self.emit(out, "response.reasoning_summary_part.done",
                    json!({"item_id": item_id, "output_index": index, "summary_index": 0, "part": part}));
                let item = json!({"id": item_id, "type": "reasoning", "summary": [part]});
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.items.push(item);
            }
            Open::Message => {
                let item_id = format!("msg_{}", self.bare);
                let text = std::mem::take(&mut self.text);
                self.emit(out, "response.output_text.done",
                    json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                self.emit(out, "response.content_part.done",
                    json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part}));
                let item = json!({"id": item_id, "type": "message", "status": "completed",
                    "role": "assistant", "content": [part]});
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.items.push(item);
            }
        }
        self.open = Open::None;
    }

    fn open(&mut self, kind: Open, out: &mut Vec<Bytes>) {
        if self.open == kind {
            return;
        }
        self.close(out);
        let index = self.items.len();
        match kind {
            Open::Reasoning => {
                let item_id = format!("rs_{}", self.bare);
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index,
                    "item": {"id": item_id, "type": "reasoning", "summary": []}}),
                );
                self.emit(out, "response.reasoning_summary_part.added", json!({"item_id": item_id,
                    "output_index": index, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}));
            }
            Open::Message => {
                let item_id = format!("msg_{}", self.bare);
                self.emit(out, "response.output_item.added", json!({"output_index": index,
                    "item": {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}));
                self.emit(
                    out,
                    "response.content_part.added",
                    json!({"item_id": item_id,
                    "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}}),
                );
            }
            Open::None => {}
        }
        self.open = kind;
    }

    /// Events for one Ollama chunk.
    pub fn chunk(&mut self, c: &Value) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.start(&mut out);
        if let Some(e) = c.get("error").filter(|e| !e.is_null()) {
            let message = e.as_str().map_or_else(|| e.to_string(), str::to_string);
            let mut r = envelope(
                &self.id,
                &self.model,
                self.created,
                "failed",
                Value::Array(self.items.clone()),
            );
            r["error"] = json!({"code": "server_error", "message": message});
            self.emit(&mut out, "response.failed", json!({"response": r}));
            self.finished = true;
            return out;
        }
        let m = c.get("message");
        let s = |k: &str| {
            m.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let thinking = s("thinking");
        if !thinking.is_empty() {
            self.open(Open::Reasoning, &mut out);
            self.thinking.push_str(&thinking);
            let index = self.items.len();
            self.emit(&mut out, "response.reasoning_summary_text.delta", json!({
                "item_id": format!("rs_{}", self.bare), "output_index": index, "summary_index": 0, "delta": thinking}));
        }
        let text = s("content");
        if !text.is_empty() {
            self.open(Open::Message, &mut out);
            self.text.push_str(&text);
            let index = self.items.len();
            self.emit(
                &mut out,
                "response.output_text.delta",
                json!({
                "item_id": format!("msg_{}", self.bare), "output_index": index, "content_index": 0,
                "delta": text, "logprobs": []}),
            );
        }
        if let Some(calls) = m
            .and_then(|m| m.get("tool_calls"))
            .and_then(Value::as_array)
        {
            for call in calls.clone() {
                self.close(&mut out);
                let index = self.items.len();
                let i = self.calls;
                self.calls += 1;
                let item_id = format!("fc_{}_{i}", self.bare);
                let call_id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("call_{}_{i}", self.bare), str::to_string);
                let name = call
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let args = arguments(&call);
                self.emit(
                    &mut out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": {
                    "id": item_id, "type": "function_call", "status": "in_progress",
                    "call_id": call_id, "name": name, "arguments": ""}}),
                );
                self.emit(
                    &mut out,
                    "response.function_call_arguments.delta",
                    json!({
                    "item_id": item_id, "output_index": index, "delta": args}),
                );
                self.emit(
                    &mut out,
                    "response.function_call_arguments.done",
                    json!({
                    "item_id": item_id, "output_index": index, "arguments": args}),
                );
                let item = json!({"id": item_id, "type": "function_call", "status": "completed",
                    "call_id": call_id, "name": name, "arguments": args});
                self.emit(
                    &mut out,
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                self.items.push(item);
            }
        }
        if c.get("done").and_then(Value::as_bool) == Some(true) {
            if self.items.is_empty() && self.open == Open::None {
                // An empty answer is still one (empty) message.
                self.open(Open::Message, &mut out);
            }
            self.close(&mut out);
            let length = c.get("done_reason").and_then(Value::as_str) == Some("length");
            let status = if length { "incomplete" } else { "completed" };
            let mut r = envelope(
                &self.id,
                &self.model,
                self.created,
                status,
                Value::Array(self.items.clone()),
            );
            r["usage"] = usage(c);
            if length {
                r["incomplete_details"] = json!({"reason": "max_output_tokens"});
            }
            let name = if length {
                "response.incomplete"
            } else {
                "response.completed"
            };
            self.emit(&mut out, name, json!({"response": r}));
            self.finished = true;
        }
        out
    }

    /// Whether the last event went out.
    pub fn finished(&self) -> bool {
        self.finished
    }
}
