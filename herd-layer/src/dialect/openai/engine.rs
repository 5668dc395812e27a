//! Talking to an OpenAI-only engine (llama.cpp server, vLLM, LM Studio,
//! MLX servers) on behalf of a request in Ollama's shape: the other way
//! round from the rest of this module.
//!
//! Ollama's API is herd's hub: Ollama clients' requests are in it, and
//! Anthropic and Responses requests are translated to it at parse. So an
//! OpenAI-only engine serves all of them through one bridge — the hub's
//! request becomes an OpenAI request ([`request`]), always streamed, and the
//! engine's answer becomes the lines an Ollama would have sent
//! ([`Lines`]): NDJSON for chat and generate, one object for embeddings.
//! Everything downstream (the relay, the collectors, the Anthropic and
//! Responses converters, what herd learns from the final line's counts
//! and durations) then works as it does on an Ollama.
//!
//! Pure functions and a pure state machine: no I/O; the time of each chunk
//! is given by the caller.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::dialect::Bridge;
use crate::dialect::json::RawObject;

/// The path and body of the OpenAI request for a body in Ollama's shape,
/// with `model` the name the engine serves.
pub fn request(bridge: Bridge, ollama: &RawObject, model: &str) -> (&'static str, Vec<u8>) {
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.to_owned()));
    let options = ollama.value("options").filter(Value::is_object);
    let path = match bridge {
        Bridge::Embed => {
            out.insert("input".into(), ollama.value("input").unwrap_or(Value::Null));
            if let Some(d) = ollama.value("dimensions").filter(Value::is_u64) {
                out.insert("dimensions".into(), d);
            }
            out.insert("encoding_format".into(), json!("float"));
            "/v1/embeddings"
        }
        Bridge::EmbedLegacy => {
            out.insert(
                "input".into(),
                ollama.value("prompt").unwrap_or(Value::Null),
            );
            out.insert("encoding_format".into(), json!("float"));
            "/v1/embeddings"
        }
        Bridge::Generate
            if ollama.value("raw") == Some(Value::Bool(true)) || ollama.has("suffix") =>
        {
            out.insert("prompt".into(), ollama.value("prompt").unwrap_or(json!("")));
            if let Some(s) = ollama.value("suffix").filter(Value::is_string) {
                out.insert("suffix".into(), s);
            }
            sampling(&mut out, options.as_ref(), ollama);
            "/v1/completions"
        }
        Bridge::Generate => {
            let mut messages = Vec::new();
            if let Some(Value::String(s)) = ollama.value("system")
                && !s.is_empty()
            {
                messages.push(json!({"role": "system", "content": s}));
            }
            let images = ollama.value("images");
            let prompt = ollama.value("prompt");
            messages.push(user_content(
                "user",
                prompt.as_ref().and_then(Value::as_str).unwrap_or(""),
                images.as_ref(),
            ));
            out.insert("messages".into(), Value::Array(messages));
            sampling(&mut out, options.as_ref(), ollama);
            "/v1/chat/completions"
        }
        Bridge::Chat => {
            let messages = match ollama.value("messages") {
                Some(Value::Array(m)) => chat_messages(&m),
                _ => Vec::new(),
            };
            out.insert("messages".into(), Value::Array(messages));
            if let Some(Value::Array(t)) = ollama.value("tools")
                && !t.is_empty()
            {
                out.insert("tools".into(), Value::Array(t));
            }
            sampling(&mut out, options.as_ref(), ollama);
            "/v1/chat/completions"
        }
    };
    if matches!(bridge, Bridge::Chat | Bridge::Generate) {
        // Always streamed: the first token shows the engine is alive, and
        // the usage chunk carries the token counts herd learns from.
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    (
        path,
        serde_json::to_vec(&Value::Object(out)).unwrap_or_default(),
    )
}

/// Ollama's sampling `options`, `format` and `think` in OpenAI's fields.
fn sampling(out: &mut Map<String, Value>, options: Option<&Value>, ollama: &RawObject) {
    if let Some(o) = options {
        for (from, to) in [
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("top_k", "top_k"),
            ("seed", "seed"),
            ("frequency_penalty", "frequency_penalty"),
            ("presence_penalty", "presence_penalty"),
            ("stop", "stop"),
        ] {
            if let Some(v) = o.get(from).filter(|v| !v.is_null()) {
                out.insert(to.into(), v.clone());
            }
        }
        if let Some(n) = o
            .get("num_predict")
            .and_then(Value::as_i64)
            .filter(|n| *n > 0)
        {
            out.insert("max_tokens".into(), json!(n));
        }
    }
    match ollama.value("format") {
        Some(Value::String(f)) if f == "json" => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(schema @ Value::Object(_)) => {
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
            );
        }
        _ => {}
    }
    // A reasoning level is OpenAI's `reasoning_effort`; a bare on/off is
    // left to the engine (OpenAI has no switch for it).
    if let Some(Value::String(level)) = ollama.value("think")
        && matches!(level.as_str(), "low" | "medium" | "high")
    {
        out.insert("reasoning_effort".into(), Value::String(level));
    }
}

/// The media type of a base64 image, from its first bytes (Ollama takes
/// bare base64; OpenAI wants a data URL).
fn image_type(b64: &str) -> &'static str {
    if b64.starts_with("/9j/") {
        "image/jpeg"
    } else if b64.starts_with("R0lG") {
        "image/gif"
    } else if b64.starts_with("UklGR") {
        "image/webp"
    } else {
        "image/png"
    }
}

/// A message with text and Ollama's base64 images as OpenAI content.
fn user_content(role: &str, text: &str, images: Option<&Value>) -> Value {
    let images: Vec<&str> = images
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if images.is_empty() {
        return json!({"role": role, "content": text});
    }
    let mut parts = vec![json!({"type": "text", "text": text})];
    for img in images {
        parts.push(json!({"type": "image_url", "image_url": {"url": format!("data:{};base64,{img}", image_type(img))}}));
    }
    json!({"role": role, "content": parts})
}

/// Ollama's chat messages as OpenAI's: images as data-URL parts, tool
/// calls with ids (Ollama's have none: herd numbers them) and arguments as
/// JSON text, tool results tied to the call they answer by its name.
fn chat_messages(messages: &[Value]) -> Vec<Value> {
    let mut out = Vec::with_capacity(messages.len());
    // Calls made and not answered yet: (id, function name).
    let mut open: Vec<(String, String)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").and_then(Value::as_str).unwrap_or("");
        match role {
            "assistant" => {
                let mut msg = json!({"role": "assistant", "content": content});
                let calls: Vec<Value> = m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .map(|calls| {
                        calls
                            .iter()
                            .enumerate()
                            .map(|(j, c)| {
                                let f = c.get("function").cloned().unwrap_or(Value::Null);
                                let name = f.get("name").and_then(Value::as_str).unwrap_or("");
                                let args = match f.get("arguments") {
                                    Some(Value::String(s)) => s.clone(),
                                    Some(v) => v.to_string(),
                                    None => "{}".into(),
                                };
                                let id = c
                                    .get("id")
                                    .and_then(Value::as_str)
                                    .map_or_else(|| format!("call_{i}_{j}"), str::to_owned);
                                open.push((id.clone(), name.to_owned()));
                                json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                out.push(msg);
            }
            "tool" => {
                let name = m.get("tool_name").and_then(Value::as_str);
                let at = match name {
                    Some(n) => open.iter().position(|(_, f)| f == n),
                    None => (!open.is_empty()).then_some(0),
                };
                let id = at
                    .map(|k| open.remove(k).0)
                    .or_else(|| {
                        m.get("tool_call_id")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| format!("call_{i}"));
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            other => out.push(user_content(
                if other == "system" { "system" } else { "user" },
                content,
                m.get("images"),
            )),
        }
    }
    out
}

/// What kind of Ollama answer the lines make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `/api/chat` lines: `message`.
    Chat,
    /// `/api/generate` lines: `response`.
    Generate,
    /// `/api/embed`'s object.
    Embed,
    /// `/api/embeddings`' object.
    EmbedLegacy,
}

/// The longest SSE event (or whole answer) held while waiting for its end.
const MAX_PENDING: usize = 16 * 1024 * 1024;

/// An OpenAI engine's answer turned, as it arrives, into what an Ollama
/// would have sent: NDJSON lines for chat and generate (SSE chunks or one
/// whole JSON answer, whichever the engine sends), one object for
/// embeddings.
#[derive(Debug)]
pub struct Lines {
    shape: Shape,
    model: String,
    started: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
    buf: Vec<u8>,
    /// The engine answered with one JSON object, not a stream.
    whole: bool,
    /// Tool calls being assembled: (id, name, arguments text).
    calls: Vec<(String, String, String)>,
    prompt_tokens: Option<u64>,
    output_tokens: Option<u64>,
    finish_reason: Option<String>,
    done: bool,
}

impl Lines {
    /// For `bridge`'s answers; `model` is what the lines name, `started`
    /// when the request was sent.
    pub fn new(bridge: Bridge, model: &str, started: Instant) -> Self {
        Lines {
            shape: match bridge {
                Bridge::Chat => Shape::Chat,
                Bridge::Generate => Shape::Generate,
                Bridge::Embed => Shape::Embed,
                Bridge::EmbedLegacy => Shape::EmbedLegacy,
            },
            model: model.to_owned(),
            started,
            first_token: None,
            last_token: None,
            buf: Vec::new(),
            whole: false,
            calls: Vec::new(),
            prompt_tokens: None,
            output_tokens: None,
            finish_reason: None,
            done: false,
        }
    }

    /// Feed bytes of the answer that arrived at `now`; returns the lines to
    /// pass on (each ending in `\n`).
    pub fn feed(&mut self, data: &[u8], now: Instant) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() > MAX_PENDING {
            self.buf.clear();
            self.error("the engine sent an event longer than 16 MiB", &mut out);
            return out;
        }
        if matches!(self.shape, Shape::Embed | Shape::EmbedLegacy) {
            return out;
        }
        if !self.whole && self.buf.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            self.whole = true;
        }
        if self.whole {
            return out;
        }
        while let Some(end) = event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end).collect();
            for line in event.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let Some(data) = line.strip_prefix(b"data:") else {
                    continue;
                };
                let data = data.trim_ascii();
                if data == b"[DONE]" {
                    self.end(now, &mut out);
                    return out;
                }
                match serde_json::from_slice::<Value>(data) {
                    Ok(v) => self.chunk(&v, now, &mut out),
                    Err(e) => {
                        self.error(&format!("the engine sent an invalid event: {e}"), &mut out);
                        return out;
                    }
                }
                if self.done {
                    return out;
                }
            }
        }
        out
    }

    /// The answer ended; returns the last lines (the final one, or an
    /// error line when the engine stopped before finishing).
    pub fn finish(&mut self, now: Instant) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let rest = std::mem::take(&mut self.buf);
        match self.shape {
            Shape::Embed | Shape::EmbedLegacy => match serde_json::from_slice::<Value>(&rest) {
                Ok(v) => out.push(self.embeddings(&v, now)),
                Err(e) => self.error(&format!("the engine sent invalid JSON: {e}"), &mut out),
            },
            _ if self.whole => match serde_json::from_slice::<Value>(&rest) {
                Ok(v) => {
                    self.first_token.get_or_insert(now);
                    self.whole_answer(&v, now, &mut out);
                }
                Err(e) => self.error(&format!("the engine sent invalid JSON: {e}"), &mut out),
            },
            _ => {
                // A last event without its blank line.
                if !rest.trim_ascii().is_empty() {
                    let mut tail = rest;
                    tail.extend_from_slice(b"\n\n");
                    out.extend(self.feed(&tail, now));
                }
                if !self.done {
                    if self.finish_reason.is_some() {
                        self.end(now, &mut out);
                    } else {
                        self.error(
                            "the engine's stream ended before the model finished",
                            &mut out,
                        );
                    }
                }
            }
        }
        self.done = true;
        out
    }

    fn line(&self, body: Value) -> Bytes {
        let mut v = json!({"model": self.model, "created_at": herd_proto::time::rfc3339_now()});
        if let (Value::Object(o), Value::Object(b)) = (&mut v, body) {
            o.extend(b);
        }
        let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn text_line(&self, content: &str, thinking: &str) -> Bytes {
        match self.shape {
            Shape::Generate => {
                let mut b = json!({"response": content, "done": false});
                if !thinking.is_empty() {
                    b["thinking"] = json!(thinking);
                }
                self.line(b)
            }
            _ => {
                let mut m = json!({"role": "assistant", "content": content});
                if !thinking.is_empty() {
                    m["thinking"] = json!(thinking);
                }
                self.line(json!({"message": m, "done": false}))
            }
        }
    }

    fn error(&mut self, message: &str, out: &mut Vec<Bytes>) {
        if self.done {
            return;
        }
        self.done = true;
        let mut b = serde_json::to_vec(&json!({"error": message})).unwrap_or_default();
        b.push(b'\n');
        out.push(Bytes::from(b));
    }

    fn usage(&mut self, v: &Value) {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            if let Some(p) = u.get("prompt_tokens").and_then(Value::as_u64) {
                self.prompt_tokens = Some(p);
            }
            if let Some(c) = u.get("completion_tokens").and_then(Value::as_u64) {
                self.output_tokens = Some(c);
            }
        }
    }

    fn token(&mut self, now: Instant) {
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
    }

    /// One streamed chunk.
    fn chunk(&mut self, v: &Value, now: Instant, out: &mut Vec<Bytes>) {
        if let Some(e) = v.get("error") {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .or_else(|| e.as_str())
                .unwrap_or("the engine failed");
            self.error(msg, out);
            return;
        }
        self.usage(v);
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(r.to_owned());
        }
        let (content, thinking) = match self.shape {
            Shape::Generate if choice.get("text").is_some() => {
                (choice.get("text").and_then(Value::as_str).unwrap_or(""), "")
            }
            _ => {
                let d = choice.get("delta").unwrap_or(&Value::Null);
                if let Some(calls) = d.get("tool_calls").and_then(Value::as_array) {
                    self.token(now);
                    for c in calls {
                        let idx = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                        if idx >= 128 {
                            continue;
                        }
                        while self.calls.len() <= idx {
                            self.calls.push(Default::default());
                        }
                        let slot = &mut self.calls[idx];
                        if let Some(id) = c.get("id").and_then(Value::as_str) {
                            slot.0 = id.to_owned();
                        }
                        let f = c.get("function").unwrap_or(&Value::Null);
                        if let Some(n) = f.get("name").and_then(Value::as_str) {
                            slot.1.push_str(n);
                        }
                        if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                            slot.2.push_str(a);
                        }
                    }
                }
                (
                    d.get("content").and_then(Value::as_str).unwrap_or(""),
                    d.get("reasoning_content")
                        .or_else(|| d.get("reasoning"))
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                )
            }
        };
        if !content.is_empty() || !thinking.is_empty() {
            self.token(now);
            out.push(self.text_line(content, thinking));
        }
    }

    /// A non-streamed answer (an engine that ignored `stream`).
    fn whole_answer(&mut self, v: &Value, now: Instant, out: &mut Vec<Bytes>) {
        if v.get("error").is_some() {
            return self.chunk(v, now, out);
        }
        self.usage(v);
        let choice = v
            .get("choices")
            .and_then(|c| c.get(0))
            .unwrap_or(&Value::Null);
        self.finish_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let m = choice.get("message").unwrap_or(&Value::Null);
        let content = choice
            .get("text")
            .or_else(|| m.get("content"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let thinking = m
            .get("reasoning_content")
            .or_else(|| m.get("reasoning"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for c in calls.iter().take(128) {
                let f = c.get("function").unwrap_or(&Value::Null);
                self.calls.push((
                    c.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                    f.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    f.get("arguments")
                        .and_then(Value::as_str)
                        .unwrap_or("{}")
                        .to_owned(),
                ));
            }
        }
        self.token(now);
        if !content.is_empty() || !thinking.is_empty() {
            out.push(self.text_line(content, thinking));
        }
        self.end(now, out);
    }

    /// The tool calls made, as Ollama's (arguments as an object).
    fn tool_calls(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.calls)
            .into_iter()
            .filter(|(_, name, _)| !name.is_empty())
            .map(|(_, name, args)| {
                let args: Value = serde_json::from_str(&args)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({}));
                json!({"function": {"name": name, "arguments": args}})
            })
            .collect()
    }

    /// The answer is complete: the tool calls, then the final line with
    /// the counts and durations an Ollama reports.
    fn end(&mut self, now: Instant, out: &mut Vec<Bytes>) {
        if self.done {
            return;
        }
        let calls = self.tool_calls();
        if !calls.is_empty() && self.shape == Shape::Chat {
            out.push(self.line(json!({
                "message": {"role": "assistant", "content": "", "tool_calls": calls},
                "done": false,
            })));
        }
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let first = self.first_token.unwrap_or(now);
        let last = self.last_token.unwrap_or(now);
        let reason = match self.finish_reason.as_deref() {
            Some("length") => "length",
            _ => "stop",
        };
        let mut fin = json!({
            "done": true,
            "done_reason": reason,
            "total_duration": ns(now.saturating_duration_since(self.started)),
            "load_duration": 0,
            "prompt_eval_duration": ns(first.saturating_duration_since(self.started)),
            // Never zero: tokens per second divide by it.
            "eval_duration": ns(last.saturating_duration_since(first)).max(1_000_000),
        });
        if let Some(p) = self.prompt_tokens {
            fin["prompt_eval_count"] = json!(p);
        }
        if let Some(c) = self.output_tokens {
            fin["eval_count"] = json!(c);
        }
        match self.shape {
            Shape::Generate => fin["response"] = json!(""),
            _ => fin["message"] = json!({"role": "assistant", "content": ""}),
        }
        out.push(self.line(fin));
        self.done = true;
    }

    /// `/v1/embeddings`' answer as `/api/embed`'s or `/api/embeddings`'.
    fn embeddings(&mut self, v: &Value, now: Instant) -> Bytes {
        let mut data: Vec<(u64, Value)> = v
            .get("data")
            .and_then(Value::as_array)
            .map(|d| {
                d.iter()
                    .enumerate()
                    .map(|(i, e)| {
                        (
                            e.get("index").and_then(Value::as_u64).unwrap_or(i as u64),
                            e.get("embedding").cloned().unwrap_or(Value::Null),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        data.sort_by_key(|(i, _)| *i);
        self.usage(v);
        let ns = now.saturating_duration_since(self.started).as_nanos() as u64;
        let body = match self.shape {
            Shape::EmbedLegacy => {
                json!({"embedding": data.into_iter().next().map(|(_, e)| e).unwrap_or(json!([]))})
            }
            _ => {
                let mut b = json!({
                    "model": self.model,
                    "embeddings": data.into_iter().map(|(_, e)| e).collect::<Vec<_>>(),
                    "total_duration": ns,
                    "load_duration": 0,
                });
                if let Some(p) = self.prompt_tokens {
                    b["prompt_eval_count"] = json!(p);
                }
                b
            }
        };
        self.done = true;
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }
}

/// The end of the first whole SSE event in `buf` (after its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    (1..buf.len())
        .find(|&i| {
            buf[i] == b'\n'
                && (buf[i - 1] == b'\n' || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n'))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> RawObject {
        RawObject::parse(Bytes::from(v.to_string())).unwrap()
    }

    fn body(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    fn lines(out: &[Bytes]) -> Vec<Value> {
        out.iter().map(|b| body(b)).collect()
    }

    #[test]
    fn an_ollama_chat_becomes_a_streamed_openai_chat() {
        let (path, b) = request(
            Bridge::Chat,
            &obj(json!({
                "model": "m", "stream": false, "keep_alive": "5m", "think": "high",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]},
                    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "look", "arguments": {"x": 1}}}]},
                    {"role": "tool", "tool_name": "look", "content": "a cat"},
                ],
                "tools": [{"type": "function", "function": {"name": "look"}}],
                "format": "json",
                "options": {"temperature": 0.2, "num_predict": 9, "num_ctx": 4096, "stop": ["x"]},
            })),
            "served:latest",
        );
        assert_eq!(path, "/v1/chat/completions");
        let b = body(&b);
        assert_eq!(b["model"], "served:latest");
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["max_tokens"], 9);
        assert_eq!(b["temperature"], 0.2);
        assert_eq!(b["stop"], json!(["x"]));
        assert_eq!(b["reasoning_effort"], "high");
        assert_eq!(b["response_format"]["type"], "json_object");
        assert!(b.get("keep_alive").is_none() && b.get("num_ctx").is_none());
        let m = &b["messages"];
        assert_eq!(
            m[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,iVBORw0KGgo="
        );
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"x\":1}");
        let id = m[2]["tool_calls"][0]["id"].as_str().unwrap();
        assert_eq!(
            m[3]["tool_call_id"], id,
            "the result answers the call by its name"
        );
        assert_eq!(b["tools"][0]["function"]["name"], "look");
    }

    #[test]
    fn generate_is_a_chat_unless_raw_and_embeddings_ask_for_floats() {
        let (p, b) = request(
            Bridge::Generate,
            &obj(json!({"model": "m", "prompt": "hi", "system": "sys"})),
            "m",
        );
        assert_eq!(p, "/v1/chat/completions");
        assert_eq!(body(&b)["messages"][0]["role"], "system");
        assert_eq!(body(&b)["messages"][1]["content"], "hi");
        let (p, b) = request(
            Bridge::Generate,
            &obj(json!({"model": "m", "prompt": "fn a(", "suffix": ")", "raw": true})),
            "m",
        );
        assert_eq!(p, "/v1/completions");
        assert_eq!(body(&b)["suffix"], ")");
        let (p, b) = request(
            Bridge::Embed,
            &obj(json!({"model": "m", "input": ["a", "b"]})),
            "m",
        );
        assert_eq!(p, "/v1/embeddings");
        assert_eq!(body(&b)["input"], json!(["a", "b"]));
        assert!(body(&b).get("stream").is_none());
        let (_, b) = request(
            Bridge::EmbedLegacy,
            &obj(json!({"model": "m", "prompt": "a"})),
            "m",
        );
        assert_eq!(body(&b)["input"], "a");
    }

    #[test]
    fn a_streamed_chat_answer_becomes_ollama_lines_with_counts() {
        let t0 = Instant::now();
        let mut l = Lines::new(Bridge::Chat, "m", t0);
        let mut out = l.feed(
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            t0,
        );
        assert!(out.is_empty(), "nothing said yet");
        out.extend(l.feed(b"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hel", t0 + Duration::from_millis(100)));
        out.extend(l.feed(b"lo\"}}]}\r\n\r\n: keepalive\n\ndata: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n", t0 + Duration::from_millis(200)));
        out.extend(l.feed(b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n", t0 + Duration::from_millis(300)));
        out.extend(l.finish(t0 + Duration::from_millis(400)));
        let v = lines(&out);
        assert_eq!(v[0]["message"]["thinking"], "hm");
        assert_eq!(v[1]["message"]["content"], "Hello");
        assert_eq!(
            v[2]["message"]["tool_calls"][0]["function"]["arguments"],
            json!({"a": 1})
        );
        let fin = v.last().unwrap();
        assert_eq!(fin["done"], true);
        assert_eq!(fin["done_reason"], "stop");
        assert_eq!(
            (
                fin["prompt_eval_count"].as_u64(),
                fin["eval_count"].as_u64()
            ),
            (Some(5), Some(7))
        );
        assert_eq!(fin["eval_duration"].as_u64(), Some(200_000_000));
        assert_eq!(v.len(), 4);
        assert!(out.iter().all(|b| b.ends_with(b"\n")));
    }

    #[test]
    fn generate_lines_and_whole_answers_and_errors() {
        let t0 = Instant::now();
        let mut l = Lines::new(Bridge::Generate, "m", t0);
        let mut out = l.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"length\"}]}\n\n", t0);
        out.extend(l.finish(t0));
        let v = lines(&out);
        assert_eq!(v[0]["response"], "hi");
        assert_eq!(
            (v[1]["done"].as_bool(), v[1]["done_reason"].as_str()),
            (Some(true), Some("length"))
        );

        let mut l = Lines::new(Bridge::Chat, "m", t0);
        let mut out = l.feed(
            b"{\"choices\":[{\"message\":{\"content\":\"whole\"},\"finish_reason\":\"stop\"}],",
            t0,
        );
        out.extend(l.feed(b"\"usage\":{\"completion_tokens\":1}}", t0));
        out.extend(l.finish(t0));
        let v = lines(&out);
        assert_eq!(v[0]["message"]["content"], "whole");
        assert_eq!(v[1]["eval_count"], 1);

        let mut l = Lines::new(Bridge::Chat, "m", t0);
        let out = l.feed(b"data: {\"error\":{\"message\":\"model crashed\"}}\n\n", t0);
        assert_eq!(lines(&out)[0]["error"], "model crashed");
        assert!(l.finish(t0).is_empty());

        let mut l = Lines::new(Bridge::Chat, "m", t0);
        let mut out = l.feed(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"cut\"}}]}\n\n",
            t0,
        );
        out.extend(l.finish(t0));
        assert!(
            lines(&out)[1]["error"]
                .as_str()
                .unwrap()
                .contains("before the model finished")
        );
    }

    #[test]
    fn embeddings_come_back_in_ollamas_shapes() {
        let t0 = Instant::now();
        let answer = br#"{"data":[{"index":1,"embedding":[0.5]},{"index":0,"embedding":[0.25]}],"usage":{"prompt_tokens":3}}"#;
        let mut l = Lines::new(Bridge::Embed, "m", t0);
        assert!(l.feed(answer, t0).is_empty());
        let v = body(&l.finish(t0)[0]);
        assert_eq!(v["embeddings"], json!([[0.25], [0.5]]));
        assert_eq!(v["prompt_eval_count"], 3);
        let mut l = Lines::new(Bridge::EmbedLegacy, "m", t0);
        l.feed(answer, t0);
        assert_eq!(body(&l.finish(t0)[0]), json!({"embedding": [0.25]}));
    }
}
