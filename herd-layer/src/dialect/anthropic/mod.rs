//! Anthropic's Messages API (`POST /v1/messages`), the API coding agents
//! such as Claude Code speak.
//!
//! A node whose Ollama serves `/v1/messages` itself (0.14 and later) gets
//! the request as it came and its answer passes through; an older one gets
//! it translated to `/api/chat` here, and its answer translated back
//! ([`response`], [`stream`]). Either way errors are Anthropic's:
//! `{"type":"error","error":{"type","message"}}`, with the error type
//! Anthropic uses for each status.
//!
//! Translated: `system` (a string or text blocks) → a first system message;
//! text, base64 image, `tool_use`, `tool_result` and `thinking` blocks →
//! Ollama's content, images, tool calls, tool messages and thinking;
//! `tools` → function tools; `thinking` → `think`; `max_tokens`,
//! `stop_sequences`, `temperature`, `top_p`, `top_k` → options. Image URLs
//! are refused (herd fetches nothing on a client's behalf); `tool_choice`
//! and `metadata` are read past, as Ollama does.

mod response;
mod stream;

pub use response::message_response;
pub use stream::{MessagesStream, event as stream_event};

use serde_json::{Map, Value, json};

use super::Size;
use super::json::{self, RawObject};
use crate::error::ClientError;

/// An Anthropic error body for `status` (the type names Anthropic uses).
pub fn anthropic_error(status: u16, message: &str) -> Value {
    let kind = match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn bad(message: impl Into<String>) -> ClientError {
    ClientError::bad_request(message)
}

/// The client's cap on output tokens (`max_tokens`, required).
pub fn max_output_tokens(obj: &RawObject) -> Option<u32> {
    super::positive_u32(obj.value("max_tokens").as_ref())
}

/// The text of `system`: a string, or the `text` of its text blocks.
fn system_text(v: Option<Value>) -> Result<Option<String>, ClientError> {
    match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Array(blocks)) => {
            let mut out = Vec::new();
            for (i, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(
                        b.get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| bad(format!("system[{i}].text must be a string")))?
                            .to_string(),
                    ),
                    _ => return Err(bad(format!("system[{i}] must be a text block"))),
                }
            }
            Ok(Some(out.join("\n")))
        }
        Some(_) => Err(bad("system must be a string or a list of text blocks")),
    }
}

/// One image block's base64 data.
fn image_data(path: &str, b: &Value) -> Result<String, ClientError> {
    let src = b
        .get("source")
        .ok_or_else(|| bad(format!("{path}.source is required")))?;
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => src
            .get("data")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .ok_or_else(|| bad(format!("{path}.source.data must be base64 image data"))),
        Some("url") => Err(bad(format!(
            "{path}: {}",
            super::REMOTE_IMAGE.replace("a base64 `data:` URL", "base64 (`source.type: base64`)")
        ))),
        other => Err(bad(format!(
            "{path}.source.type {other:?} is not supported; use base64"
        ))),
    }
}

/// The text and images of a `tool_result`'s content.
fn tool_result_content(
    path: &str,
    c: Option<&Value>,
) -> Result<(String, Vec<String>), ClientError> {
    match c {
        None | Some(Value::Null) => Ok((String::new(), Vec::new())),
        Some(Value::String(s)) => Ok((s.clone(), Vec::new())),
        Some(Value::Array(parts)) => {
            let (mut text, mut images) = (Vec::new(), Vec::new());
            for (j, p) in parts.iter().enumerate() {
                let pp = format!("{path}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => text.push(p.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some("image") => images.push(image_data(&pp, p)?),
                    _ => {}
                }
            }
            Ok((text.join("\n"), images))
        }
        Some(_) => Err(bad(format!("{path} must be a string or content blocks"))),
    }
}

/// Translate one Anthropic message into Ollama messages (a user turn's tool
/// results become tool messages ahead of its text), sizing the prompt.
fn message(
    i: usize,
    m: &Value,
    tool_names: &mut Vec<(String, String)>,
    size: &mut Size,
    out: &mut Vec<Value>,
) -> Result<(), ClientError> {
    let path = format!("messages[{i}]");
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        Some(other) => {
            return Err(bad(format!(
                "{path}.role {other:?} is not supported (user or assistant)"
            )));
        }
        None => return Err(bad(format!("{path}.role is required"))),
    };
    size.messages += 1;
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            size.chars += s.len();
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => {
            return Err(bad(format!(
                "{path}.content must be a string or content blocks"
            )));
        }
    };
    let (mut text, mut images, mut thinking, mut calls) =
        (Vec::<&str>::new(), Vec::new(), String::new(), Vec::new());
    for (j, b) in blocks.iter().enumerate() {
        let bp = format!("{path}.content[{j}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{bp}.text must be a string")))?;
                size.chars += t.len();
                text.push(t);
            }
            Some("image") => {
                images.push(Value::String(image_data(&bp, b)?));
                size.images += 1;
            }
            Some("thinking") => {
                thinking.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""));
            }
            Some("redacted_thinking") => {}
            Some("tool_use") if role == "assistant" => {
                let id = b.get("id").and_then(Value::as_str).unwrap_or("");
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| bad(format!("{bp}.name is required")))?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                size.chars += input.to_string().len();
                if !id.is_empty() && tool_names.len() < 10_000 {
                    tool_names.push((id.to_string(), name.to_string()));
                }
                let mut call = json!({"function": {"name": name, "arguments": input}});
                if !id.is_empty() {
                    call["id"] = Value::String(id.to_string());
                }
                calls.push(call);
            }
            Some("tool_result") if role == "user" => {
                let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                let (content, imgs) =
                    tool_result_content(&format!("{bp}.content"), b.get("content"))?;
                size.chars += content.len();
                size.images += imgs.len();
                let mut t = json!({"role": "tool", "content": content});
                if let Some((_, name)) = tool_names.iter().rev().find(|(k, _)| k == id) {
                    t["tool_name"] = Value::String(name.clone());
                }
                if !id.is_empty() {
                    t["tool_call_id"] = Value::String(id.to_string());
                }
                if !imgs.is_empty() {
                    t["images"] = json!(imgs);
                }
                out.push(t);
            }
            Some(kind @ ("tool_use" | "tool_result")) => {
                return Err(bad(format!(
                    "{bp}: a {kind} block cannot be in a {role} message"
                )));
            }
            Some(other) => {
                return Err(bad(format!(
                    "{bp}: content block type {other:?} is not supported (text, image, tool_use, tool_result, thinking)"
                )));
            }
            None => return Err(bad(format!("{bp}.type is required"))),
        }
    }
    if !text.is_empty() || !images.is_empty() || !thinking.is_empty() || !calls.is_empty() {
        let mut msg = json!({"role": role, "content": text.join("\n")});
        if !images.is_empty() {
            msg["images"] = Value::Array(images);
        }
        if !thinking.is_empty() {
            msg["thinking"] = Value::String(thinking);
        }
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        out.push(msg);
    }
    Ok(())
}

/// The body as Ollama's `/api/chat` call, and the prompt's size. Messages
/// are translated one at a time, never held as a tree of the whole body.
pub fn to_ollama(obj: &RawObject, model: &str) -> Result<(RawObject, Size), ClientError> {
    let mut size = Size::default();
    if max_output_tokens(obj).is_none() {
        return Err(bad("max_tokens is required and must be a positive integer"));
    }
    let raw = match obj.raw("messages") {
        Some(r) if r.starts_with('[') => r,
        _ => return Err(bad("messages is required (a list of messages)")),
    };
    let mut messages = Vec::with_capacity(raw.len() + 2);
    messages.push(b'[');
    let mut n = 0usize;
    if let Some(system) = system_text(obj.value("system"))? {
        size.chars += system.len();
        size.messages += 1;
        serde_json::to_writer(&mut messages, &json!({"role": "system", "content": system}))
            .map_err(|e| bad(e.to_string()))?;
        n += 1;
    }
    let mut tool_names = Vec::new();
    let mut failed: Option<ClientError> = None;
    let mut buf = Vec::new();
    let count = json::each::<Value, _>(raw, |i, m| {
        buf.clear();
        if let Err(e) = message(i, &m, &mut tool_names, &mut size, &mut buf) {
            failed = Some(e);
            return Err(String::new());
        }
        for v in buf.drain(..) {
            if n > 0 {
                messages.push(b',');
            }
            serde_json::to_writer(&mut messages, &v).map_err(|e| e.to_string())?;
            n += 1;
        }
        Ok(())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let count = count.map_err(|e| bad(format!("messages: {e}")))?;
    if count == 0 {
        return Err(bad("messages must not be empty"));
    }
    messages.push(b']');
    let messages = String::from_utf8(messages).map_err(|e| bad(e.to_string()))?;

    let mut options = Map::new();
    if let Some(n) = max_output_tokens(obj) {
        options.insert("num_predict".into(), json!(n));
    }
    for (k, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
    ] {
        match obj.value(k) {
            None => {}
            Some(v @ Value::Number(_)) => {
                options.insert(to.into(), v);
            }
            Some(_) => return Err(bad(format!("{k} must be a number"))),
        }
    }
    match obj.value("stop_sequences") {
        None => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            options.insert("stop".into(), Value::Array(a));
        }
        Some(_) => return Err(bad("stop_sequences must be a list of strings")),
    }
    let mut rest = Map::new();
    rest.insert("model".into(), Value::String(model.to_string()));
    rest.insert("options".into(), Value::Object(options));
    rest.insert(
        "stream".into(),
        Value::Bool(obj.get::<bool>("stream").ok().flatten().unwrap_or(false)),
    );
    match obj.value("tools") {
        None => {}
        Some(Value::Array(tools)) => {
            let mut out = Vec::new();
            for (i, t) in tools.iter().enumerate() {
                let name = t
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("tools[{i}].name is required")))?;
                size.chars += t.to_string().len();
                out.push(json!({"type": "function", "function": {
                    "name": name,
                    "description": t.get("description").cloned().unwrap_or(Value::String(String::new())),
                    "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
                }}));
            }
            if !out.is_empty() {
                rest.insert("tools".into(), Value::Array(out));
            }
        }
        Some(_) => return Err(bad("tools must be a list of tools")),
    }
    match obj.value("thinking") {
        None => {}
        Some(t) => match t.get("type").and_then(Value::as_str) {
            Some("enabled" | "adaptive") => {
                rest.insert("think".into(), Value::Bool(true));
            }
            Some("disabled") => {
                rest.insert("think".into(), Value::Bool(false));
            }
            other => return Err(bad(format!("thinking.type {other:?} is not supported"))),
        },
    }
    if let Some(k) = obj.value("keep_alive") {
        rest.insert("keep_alive".into(), k);
    }
    let texts: Vec<(String, String)> = rest
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let mut fields: Vec<(&str, &str)> = texts
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    fields.push(("messages", &messages));
    Ok((RawObject::from_fields(fields), size))
}

/// `POST /v1/messages/count_tokens`: herd's estimate of the prompt, in
/// Anthropic's shape (`{"input_tokens": N}`); no node is asked.
pub fn count_tokens(obj: &RawObject) -> Result<Value, ClientError> {
    let mut probe = obj.clone();
    // The same reading as a real request, without its required max_tokens.
    let with_max = probe.write(&[("max_tokens", Some("1"))]);
    probe = RawObject::parse(bytes::Bytes::from(with_max)).map_err(|e| bad(e.to_string()))?;
    let (_, size) = to_ollama(&probe, "count")?;
    Ok(json!({"input_tokens": size.tokens()}))
}

#[cfg(test)]
mod tests;
