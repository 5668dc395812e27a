//! OpenAI's Responses API (`POST /v1/responses`), the API Codex speaks —
//! stateless, as Ollama serves it.
//!
//! A node whose Ollama serves `/v1/responses` itself (0.13.3 and later) gets
//! the request as it came; an older one gets it translated to `/api/chat`
//! here, and the answer translated back ([`response`], [`stream`]).
//! `previous_response_id` (server-side conversation state) is refused with
//! a 400 that says to send the whole conversation: herd keeps none, and
//! neither does Ollama.
//!
//! Translated: `input` (a string, or message / function_call /
//! function_call_output items, with `input_text`, `input_image` (data URLs)
//! and `output_text` parts), `instructions`, function `tools`,
//! `max_output_tokens`, `temperature`, `top_p`, `reasoning.effort` (or
//! `reasoning_effort`) → `think`, `text.format` → `format`. Errors are
//! OpenAI's shape.

mod response;
mod stream;

pub use response::response_object;
pub use stream::ResponsesStream;

use serde_json::{Map, Value, json};

use super::Size;
use super::json::{self, RawObject};
use crate::error::ClientError;

fn bad(message: impl Into<String>) -> ClientError {
    ClientError::bad_request(message)
}

/// The client's cap on output tokens.
pub fn max_output_tokens(obj: &RawObject) -> Option<u32> {
    super::positive_u32(obj.value("max_output_tokens").as_ref())
}

/// A data URL's base64 payload.
fn data_url(path: &str, url: &str) -> Result<String, ClientError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(bad(format!("{path}: {}", super::REMOTE_IMAGE)));
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| bad(format!("{path}: a data URL needs a comma")))?;
    if !meta.ends_with(";base64") {
        return Err(bad(format!("{path}: only base64 data URLs are supported")));
    }
    Ok(data.to_string())
}

/// The text and images of a message's `content` (a string or parts).
fn content(
    path: &str,
    c: Option<&Value>,
    size: &mut Size,
) -> Result<(String, Vec<Value>), ClientError> {
    match c {
        None | Some(Value::Null) => Ok((String::new(), Vec::new())),
        Some(Value::String(s)) => {
            size.chars += s.len();
            Ok((s.clone(), Vec::new()))
        }
        Some(Value::Array(parts)) => {
            let (mut text, mut images) = (Vec::new(), Vec::new());
            for (j, p) in parts.iter().enumerate() {
                let pp = format!("{path}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        let t = p.get("text").and_then(Value::as_str).unwrap_or("");
                        size.chars += t.len();
                        text.push(t.to_string());
                    }
                    Some("input_image") => {
                        let url = p
                            .get("image_url")
                            .and_then(|u| {
                                u.as_str().or_else(|| u.get("url").and_then(Value::as_str))
                            })
                            .ok_or_else(|| {
                                bad(format!(
                                    "{pp}.image_url is required (file_id is not supported)"
                                ))
                            })?;
                        images.push(Value::String(data_url(&pp, url)?));
                        size.images += 1;
                    }
                    Some("input_file") => {
                        return Err(bad(format!("{pp}: file inputs are not supported")));
                    }
                    other => {
                        return Err(bad(format!(
                            "{pp}: content part type {other:?} is not supported"
                        )));
                    }
                }
            }
            Ok((text.join("\n"), images))
        }
        Some(_) => Err(bad(format!("{path} must be a string or content parts"))),
    }
}

/// One input item → Ollama messages.
fn item(
    i: usize,
    it: &Value,
    names: &mut Vec<(String, String)>,
    size: &mut Size,
    out: &mut Vec<Value>,
) -> Result<(), ClientError> {
    let path = format!("input[{i}]");
    let kind = it
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(if it.get("role").is_some() {
            "message"
        } else {
            ""
        });
    match kind {
        "message" => {
            let role = match it.get("role").and_then(Value::as_str) {
                Some(r @ ("user" | "assistant" | "system")) => r,
                Some("developer") => "system",
                other => return Err(bad(format!("{path}.role {other:?} is not supported"))),
            };
            let (text, images) = content(&format!("{path}.content"), it.get("content"), size)?;
            let mut m = json!({"role": role, "content": text});
            if !images.is_empty() {
                m["images"] = Value::Array(images);
            }
            size.messages += 1;
            out.push(m);
        }
        "function_call" => {
            let name = it
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("{path}.name is required")))?;
            let call_id = it.get("call_id").and_then(Value::as_str).unwrap_or("");
            let args = match it.get("arguments") {
                Some(Value::String(s)) => serde_json::from_str::<Value>(s)
                    .map_err(|e| bad(format!("{path}.arguments is not JSON: {e}")))?,
                Some(v @ Value::Object(_)) => v.clone(),
                _ => json!({}),
            };
            size.chars += args.to_string().len();
            if !call_id.is_empty() && names.len() < 10_000 {
                names.push((call_id.to_string(), name.to_string()));
            }
            let call = json!({"function": {"name": name, "arguments": args}});
            // Consecutive calls belong to one assistant turn.
            match out.last_mut() {
                Some(last)
                    if last["role"] == "assistant"
                        && last.get("tool_calls").is_some_and(Value::is_array) =>
                {
                    last["tool_calls"]
                        .as_array_mut()
                        .expect("checked")
                        .push(call);
                }
                _ => {
                    size.messages += 1;
                    out.push(json!({"role": "assistant", "content": "", "tool_calls": [call]}));
                }
            }
        }
        "function_call_output" => {
            let call_id = it.get("call_id").and_then(Value::as_str).unwrap_or("");
            let (text, images) = content(&format!("{path}.output"), it.get("output"), size)?;
            let mut m = json!({"role": "tool", "content": text});
            if let Some((_, name)) = names.iter().rev().find(|(k, _)| k == call_id) {
                m["tool_name"] = Value::String(name.clone());
            }
            if !images.is_empty() {
                m["images"] = Value::Array(images);
            }
            size.messages += 1;
            out.push(m);
        }
        "reasoning" => {}
        other => return Err(bad(format!("{path}: item type {other:?} is not supported"))),
    }
    Ok(())
}

/// Ollama's `think` for an effort.
fn think(effort: &str) -> Result<Value, ClientError> {
    Ok(match effort {
        "none" => Value::Bool(false),
        "minimal" | "low" => json!("low"),
        "medium" => json!("medium"),
        "high" | "xhigh" | "max" => json!("high"),
        other => return Err(bad(format!("reasoning.effort {other:?} is not supported"))),
    })
}

/// The body as Ollama's `/api/chat` call, and the prompt's size.
pub fn to_ollama(obj: &RawObject, model: &str) -> Result<(RawObject, Size), ClientError> {
    if obj.has("previous_response_id") {
        return Err(bad(
            "previous_response_id is not supported: herd keeps no conversations (like Ollama's /v1/responses); send the whole conversation in input",
        )
        .code("unsupported_parameter"));
    }
    if obj.has("conversation") {
        return Err(bad(
            "conversation is not supported: herd keeps no conversations; send the whole conversation in input",
        ));
    }
    let mut size = Size::default();
    let mut messages = Vec::new();
    messages.push(b'[');
    let mut n = 0usize;
    let mut push = |messages: &mut Vec<u8>, v: &Value| -> Result<(), String> {
        if n > 0 {
            messages.push(b',');
        }
        n += 1;
        serde_json::to_writer(messages, v).map_err(|e| e.to_string())
    };
    match obj.value("instructions") {
        None => {}
        Some(Value::String(s)) => {
            size.chars += s.len();
            size.messages += 1;
            push(&mut messages, &json!({"role": "system", "content": s})).map_err(bad)?;
        }
        Some(_) => return Err(bad("instructions must be a string")),
    }
    match obj.raw("input") {
        Some(r) if r.starts_with('"') => {
            let s: String = serde_json::from_str(r).map_err(|e| bad(e.to_string()))?;
            size.chars += s.len();
            size.messages += 1;
            push(&mut messages, &json!({"role": "user", "content": s})).map_err(bad)?;
        }
        Some(r) if r.starts_with('[') => {
            let mut names = Vec::new();
            let mut failed: Option<ClientError> = None;
            let mut buf = Vec::new();
            let count = json::each::<Value, _>(r, |i, it| {
                buf.clear();
                if let Err(e) = item(i, &it, &mut names, &mut size, &mut buf) {
                    failed = Some(e);
                    return Err(String::new());
                }
                for v in &buf {
                    push(&mut messages, v)?;
                }
                Ok(())
            });
            if let Some(e) = failed {
                return Err(e);
            }
            if count.map_err(|e| bad(format!("input: {e}")))? == 0 {
                return Err(bad("input must not be empty"));
            }
        }
        _ => return Err(bad("input is required (a string or a list of items)")),
    }
    messages.push(b']');
    let messages = String::from_utf8(messages).map_err(|e| bad(e.to_string()))?;

    let mut options = Map::new();
    if let Some(n) = max_output_tokens(obj) {
        options.insert("num_predict".into(), json!(n));
    }
    for k in ["temperature", "top_p"] {
        match obj.value(k) {
            None => {}
            Some(v @ Value::Number(_)) => {
                options.insert(k.into(), v);
            }
            Some(_) => return Err(bad(format!("{k} must be a number"))),
        }
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
                if t.get("type").and_then(Value::as_str) != Some("function") {
                    return Err(bad(format!(
                        "tools[{i}]: only function tools are supported"
                    )));
                }
                let name = t
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("tools[{i}].name is required")))?;
                size.chars += t.to_string().len();
                out.push(json!({"type": "function", "function": {
                    "name": name,
                    "description": t.get("description").cloned().unwrap_or(Value::String(String::new())),
                    "parameters": t.get("parameters").filter(|p| !p.is_null()).cloned().unwrap_or_else(|| json!({"type": "object"})),
                }}));
            }
            let none = obj.value("tool_choice").as_ref().and_then(Value::as_str) == Some("none");
            if !out.is_empty() && !none {
                rest.insert("tools".into(), Value::Array(out));
            }
        }
        Some(_) => return Err(bad("tools must be a list of tools")),
    }
    let effort = obj
        .value("reasoning")
        .and_then(|r| r.get("effort").and_then(Value::as_str).map(str::to_string))
        .or_else(|| {
            obj.value("reasoning_effort")
                .and_then(|v| v.as_str().map(str::to_string))
        });
    if let Some(e) = effort {
        rest.insert("think".into(), think(&e)?);
    }
    if let Some(f) = obj.value("text").and_then(|t| t.get("format").cloned()) {
        match f.get("type").and_then(Value::as_str) {
            Some("json_schema") => {
                if let Some(s) = f.get("schema") {
                    rest.insert("format".into(), s.clone());
                }
            }
            Some("json_object") => {
                rest.insert("format".into(), json!("json"));
            }
            Some("text") | None => {}
            Some(other) => return Err(bad(format!("text.format.type {other:?} is not supported"))),
        }
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

#[cfg(test)]
mod tests;
