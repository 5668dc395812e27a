//! Anthropic's Messages API (`POST /v1/messages`) as Ollama serves it
//! since 0.14.0: its middleware turns the request into a chat
//! (`anthropic.FromMessagesRequest`), the chat handler answers, and a
//! converter writes the answer back in Anthropic's shapes
//! (`ToMessagesResponse`, `StreamConverter`). Here the chat is the
//! simulator's [`Plan`], and the converter is a port of Ollama's.
//!
//! What Ollama does not do, this does not do either: no `ping` and no
//! `signature_delta` in streams, no `stop_sequence` value, no
//! `request-id` header, and no in-stream `error` events.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::plan::{
    Chunk, GenInput, Plan, Reply, apply_stop, cache_text, chat_prompt, chat_reply, check_model,
    check_tools, decide_think, start, thinking_for,
};
use super::stream::{Events, event_stream_response};
use super::wire::{Message, function_tool, nullable, parse, random_hex, sse_event, tool_call_id};
use super::{ApiError, AppState};

// ---------------------------------------------------------------- requests

/// `POST /v1/messages`' body; unknown keys (`cache_control`, `container`,
/// `service_tier`...) are ignored, as Ollama ignores them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessagesRequest {
    #[serde(deserialize_with = "nullable")]
    model: String,
    #[serde(deserialize_with = "nullable")]
    max_tokens: i64,
    #[serde(deserialize_with = "nullable")]
    messages: Vec<MessageParam>,
    system: Option<Value>,
    #[serde(deserialize_with = "nullable")]
    stream: bool,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<i64>,
    #[serde(deserialize_with = "nullable")]
    stop_sequences: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    tools: Vec<Tool>,
    /// Parsed and ignored, as by Ollama.
    tool_choice: Option<Value>,
    thinking: Option<ThinkingConfig>,
    /// Parsed and ignored, as by Ollama.
    metadata: Option<Value>,
    output_config: Option<OutputConfig>,
}

/// One message: a role and a string or a list of content blocks.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MessageParam {
    #[serde(deserialize_with = "nullable")]
    role: String,
    content: Value,
}

/// A tool: `{name, description, input_schema}`, or a server tool by type.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Tool {
    #[serde(rename = "type", deserialize_with = "nullable")]
    kind: String,
    #[serde(deserialize_with = "nullable")]
    name: String,
    description: Option<Value>,
    input_schema: Option<Value>,
}

/// `thinking: {type: enabled|disabled|adaptive, budget_tokens}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ThinkingConfig {
    #[serde(rename = "type", deserialize_with = "nullable")]
    kind: String,
    /// Ignored by Ollama.
    budget_tokens: Option<i64>,
}

/// `output_config: {effort}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OutputConfig {
    #[serde(deserialize_with = "nullable")]
    effort: String,
}

/// The chat Ollama makes of a Messages request.
#[derive(Debug, Default)]
struct Converted {
    messages: Vec<Message>,
    tools: Vec<Value>,
    think: Option<bool>,
}

/// The text of a system prompt: a string, or the `text` blocks joined.
fn system_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .collect(),
        _ => String::new(),
    }
}

/// Go's `base64.StdEncoding` accepts it (padded, standard alphabet);
/// `Err` carries the offset of the first bad byte, as Go reports it.
fn check_base64(data: &str) -> Result<(), usize> {
    let b = data.as_bytes();
    let pad = b.iter().rev().take_while(|c| **c == b'=').count();
    for (i, c) in b[..b.len() - pad].iter().enumerate() {
        if !(c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/') {
            return Err(i);
        }
    }
    if !b.len().is_multiple_of(4) || pad > 2 {
        return Err(b.len() - pad.min(b.len()));
    }
    Ok(())
}

/// An image block's source: base64 only (`resolveImageSource`).
fn check_image(source: Option<&Value>) -> Result<(), ApiError> {
    let Some(src) = source.filter(|s| s.is_object()) else {
        return Err(ApiError::bad_request("invalid image source"));
    };
    let kind = src["type"].as_str().unwrap_or("");
    if kind != "base64" {
        return Err(ApiError::bad_request(format!(
            "invalid image source type: {kind}. Only base64 images are supported."
        )));
    }
    check_base64(src["data"].as_str().unwrap_or("")).map_err(|at| {
        ApiError::bad_request(format!(
            "invalid base64 image data: illegal base64 data at input byte {at}"
        ))
    })
}

/// A `tool_result`'s content: a string, or text and image blocks.
fn tool_result_text(content: &Value) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for b in blocks {
                match b["type"].as_str() {
                    Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
                    Some("image") => {
                        if !b["source"].is_object() {
                            return Err(ApiError::bad_request("invalid tool_result image source"));
                        }
                        check_image(b.get("source"))?;
                    }
                    _ => {}
                }
            }
            Ok(text)
        }
        _ => Ok(String::new()),
    }
}

/// One Anthropic message as the chat messages Ollama makes of it
/// (`convertMessage`): text joined, tool results as `tool` messages (before
/// the user's text in a user turn, after it otherwise).
fn convert_message(m: &MessageParam) -> Result<Vec<Message>, ApiError> {
    let role = m.role.to_lowercase();
    let blocks: Vec<Value> = match &m.content {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Null => Vec::new(),
        Value::Array(a) => a.clone(),
        other => {
            return Err(ApiError::bad_request(format!(
                "json: cannot unmarshal {} into Go value of type []anthropic.ContentBlock",
                json_kind(other)
            )));
        }
    };
    let mut text = String::new();
    let mut has_other = false;
    let mut results = Vec::new();
    for b in &blocks {
        match b["type"].as_str().unwrap_or("") {
            "text" => text.push_str(b["text"].as_str().unwrap_or("")),
            "image" => {
                check_image(b.get("source"))?;
                has_other = true;
            }
            "tool_use" => {
                if b["id"].as_str().unwrap_or("").is_empty() {
                    return Err(ApiError::bad_request(
                        "tool_use block missing required 'id' field",
                    ));
                }
                if b["name"].as_str().unwrap_or("").is_empty() {
                    return Err(ApiError::bad_request(
                        "tool_use block missing required 'name' field",
                    ));
                }
                has_other = true;
            }
            "server_tool_use" => has_other = true,
            "tool_result" => results.push(Message {
                role: "tool".into(),
                content: Some(json!(tool_result_text(&b["content"])?)),
            }),
            "web_search_tool_result" => results.push(Message {
                role: "tool".into(),
                content: Some(json!(b["content"].to_string())),
            }),
            "thinking" => has_other |= b["thinking"].as_str().is_some_and(|t| !t.is_empty()),
            _ => {}
        }
    }
    let own = (!text.is_empty() || has_other).then(|| Message {
        role: role.clone(),
        content: Some(json!(text)),
    });
    let mut out = Vec::new();
    if role == "user" && !results.is_empty() {
        out.extend(results);
        out.extend(own);
    } else {
        out.extend(own);
        out.extend(results);
    }
    Ok(out)
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::Null => "null",
    }
}

/// The request as the chat Ollama makes of it (`FromMessagesRequest`).
fn convert(req: &MessagesRequest) -> Result<Converted, ApiError> {
    let mut messages = Vec::new();
    if let Some(sys) = &req.system {
        let text = system_text(sys);
        if !text.is_empty() {
            messages.push(Message {
                role: "system".into(),
                content: Some(json!(text)),
            });
        }
    }
    for m in &req.messages {
        messages.extend(convert_message(m)?);
    }
    let builtin_search = req.tools.iter().any(|t| t.kind.starts_with("web_search"));
    let mut tools = Vec::new();
    for t in &req.tools {
        if t.kind.starts_with("web_search") {
            // Ollama's own web search tool (run server-side by Ollama; the
            // simulator only offers it to the model).
            let params = json!({"type": "object", "required": ["query"], "properties": {
                "query": {"type": "string", "description": "The search query to look up on the web"}}});
            let desc = json!(
                "Search the web for current information. Use this to find up-to-date information about any topic."
            );
            tools.push(function_tool("web_search", Some(&desc), &params));
            continue;
        }
        if builtin_search && t.name == "web_search" {
            continue;
        }
        let schema = t.input_schema.clone().unwrap_or(Value::Null);
        if !(schema.is_object() || schema.is_null()) {
            return Err(ApiError::bad_request(format!(
                "invalid input_schema for tool {}: json: cannot unmarshal {} into Go value of type api.ToolFunctionParameters",
                Value::String(t.name.clone()),
                json_kind(&schema)
            )));
        }
        tools.push(function_tool(&t.name, t.description.as_ref(), &schema));
    }
    let effort = req
        .output_config
        .as_ref()
        .map(|o| o.effort.trim().to_lowercase())
        .unwrap_or_default();
    let think = match req.thinking.as_ref().map(|t| t.kind.as_str()) {
        Some("enabled") => Some(true),
        Some("disabled") => Some(false),
        _ if matches!(effort.as_str(), "low" | "medium" | "high" | "xhigh" | "max") => Some(true),
        _ => None,
    };
    Ok(Converted {
        messages,
        tools,
        think,
    })
}

/// Ollama's estimate of the input tokens (`EstimateInputTokens`), which is
/// what `message_start` reports before the real count is known: a quarter
/// of the bytes of the system prompt, roles, texts, tool blocks and tools.
fn estimate_input_tokens(req: &MessagesRequest) -> u32 {
    let block_len = |b: &Value| -> usize {
        let mut n =
            b["text"].as_str().map_or(0, str::len) + b["thinking"].as_str().map_or(0, str::len);
        if matches!(b["type"].as_str(), Some("tool_use" | "tool_result")) {
            n += b.to_string().len();
        }
        n
    };
    let mut len = match &req.system {
        Some(Value::String(s)) => s.len(),
        Some(Value::Array(a)) => a.iter().map(block_len).sum(),
        Some(other) => other.to_string().len(),
        None => 0,
    };
    for m in &req.messages {
        len += m.role.len();
        len += match &m.content {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(block_len).sum(),
            _ => 0,
        };
    }
    for t in &req.tools {
        len += t.name.len()
            + t.description
                .as_ref()
                .and_then(Value::as_str)
                .map_or(0, str::len)
            + t.input_schema.as_ref().map_or(0, |s| s.to_string().len());
    }
    let tokens = u32::try_from(len / 4).unwrap_or(u32::MAX);
    if tokens == 0 && (!req.messages.is_empty() || req.system.is_some()) {
        1
    } else {
        tokens
    }
}

// ---------------------------------------------------------------- answers

/// `stop_reason` as Ollama maps `done_reason` (`mapStopReason`).
fn stop_reason(plan: &Plan) -> &'static str {
    match (&plan.reply, plan.done_reason()) {
        (Reply::ToolCall { .. }, _) => "tool_use",
        (_, "stop") => "end_turn",
        (_, "length") => "max_tokens",
        _ => "stop_sequence",
    }
}

/// The whole answer (`ToMessagesResponse`): `[thinking][text][tool_use]`.
fn message(plan: &Plan, id: &str, model: &str, tool_id: &str) -> Value {
    let mut content = Vec::new();
    let thinking = plan.thinking_text();
    if !thinking.is_empty() {
        content.push(json!({"type": "thinking", "thinking": thinking}));
    }
    let text = plan.content();
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Reply::ToolCall { name, arguments } = &plan.reply {
        content.push(json!({"type": "tool_use", "id": tool_id, "name": name, "input": arguments}));
    }
    json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        "content": content,
        "stop_reason": stop_reason(plan),
        "usage": {"input_tokens": plan.prompt_tokens(), "output_tokens": plan.eval_count()},
    })
}

/// The stream, event by event, as Ollama's `StreamConverter` writes it
/// for the chat chunks of `plan`.
fn stream_events(plan: &Plan, id: &str, model: &str, tool_id: &str, estimate: u32) -> Events {
    let mut out: Events = Vec::new();
    let mut index = 0u32;
    let (mut thinking_started, mut thinking_done, mut text_started) = (false, false, false);
    let mut first = true;
    for (at, chunk) in plan.chunks() {
        let mut ev = |name: &str, v: Value| out.push((at, sse_event(name, &v)));
        if first {
            first = false;
            // Intermediate chunks carry no counts, so the estimate it is.
            ev(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": id, "type": "message", "role": "assistant", "model": model,
                    "content": [], "usage": {"input_tokens": estimate, "output_tokens": 0}}}),
            );
        }
        let stop = |i: u32| json!({"type": "content_block_stop", "index": i});
        match chunk {
            Chunk::Thinking(t) if !thinking_done => {
                if !thinking_started {
                    thinking_started = true;
                    ev(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "thinking", "thinking": ""}}),
                    );
                }
                ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "thinking_delta", "thinking": t}}),
                );
            }
            Chunk::Thinking(_) => {}
            Chunk::Content(t) => {
                if thinking_started && !thinking_done {
                    thinking_done = true;
                    ev("content_block_stop", stop(index));
                    index += 1;
                }
                if !text_started {
                    text_started = true;
                    ev(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "text", "text": ""}}),
                    );
                }
                ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": t}}),
                );
            }
            Chunk::ToolCall { name, arguments } => {
                if thinking_started && !thinking_done {
                    thinking_done = true;
                    ev("content_block_stop", stop(index));
                    index += 1;
                }
                if text_started {
                    text_started = false;
                    ev("content_block_stop", stop(index));
                    index += 1;
                }
                ev(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index,
                           "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}}),
                );
                // The whole arguments in one delta, as Ollama sends them.
                let args = Value::Object(arguments.clone()).to_string();
                ev(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": args}}),
                );
                ev("content_block_stop", stop(index));
                index += 1;
            }
            Chunk::Done => {
                if text_started || (thinking_started && !thinking_done) {
                    ev("content_block_stop", stop(index));
                }
                ev(
                    "message_delta",
                    json!({"type": "message_delta",
                           "delta": {"stop_reason": stop_reason(plan)},
                           "usage": {"input_tokens": plan.prompt_tokens(), "output_tokens": plan.eval_count()}}),
                );
                ev("message_stop", json!({"type": "message_stop"}));
            }
        }
    }
    out
}

/// `POST /v1/messages` (Ollama ≥ 0.14.0).
pub(super) async fn messages(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    messages_inner(&s, &body)
        .await
        .unwrap_or_else(ApiError::anthropic)
}

async fn messages_inner(s: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let req: MessagesRequest = if body.iter().all(u8::is_ascii_whitespace) {
        // gin's JSON binding on an empty body.
        return Err(ApiError::bad_request("EOF"));
    } else {
        parse(body)?
    };
    let _ = (
        req.temperature,
        req.top_p,
        req.top_k,
        &req.tool_choice,
        &req.metadata,
    );
    let _ = req.thinking.as_ref().map(|t| t.budget_tokens);
    if req.model.is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    if req.max_tokens <= 0 {
        return Err(ApiError::bad_request(
            "max_tokens is required and must be positive",
        ));
    }
    if req.messages.is_empty() {
        return Err(ApiError::bad_request("messages is required"));
    }
    let conv = convert(&req)?;
    // From here on it is Ollama's chat handler.
    let found = s.engine.find(&req.model).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model '{}' not found", req.model),
        )
    })?;
    // The middleware sets `relax_thinking`: a model that cannot think just
    // does not, instead of the 400 `/api/chat` answers.
    let thinks = decide_think(&s.engine, &found, conv.think, &req.model, true)?;
    let spec = check_model(&s.engine, &req.model, "chat")?;
    check_tools(&spec, &conv.tools)?;
    let name = spec.name.clone();
    let n = usize::try_from(req.max_tokens).ok();
    let reply = chat_reply(&name, &conv.messages, &conv.tools, None, n);
    let reply = apply_stop(reply, &req.stop_sequences);
    let (prompt, prompt_tokens) = chat_prompt(&conv.messages);
    let estimate = estimate_input_tokens(&req);
    let plan = start(
        &s.engine,
        GenInput {
            thinking: thinking_for(&name, &prompt, thinks),
            model: name,
            prompt_tokens,
            prompt: cache_text(&prompt),
            reply,
            keep_alive: None,
        },
    )
    .await?;
    let id = format!("msg_{}", random_hex(12));
    let tool_id = tool_call_id();
    if req.stream {
        let events = stream_events(&plan, &id, &req.model, &tool_id, estimate);
        return Ok(event_stream_response(plan, events, &s.engine));
    }
    tokio::time::sleep_until(plan.done_at()).await;
    Ok(Json(message(&plan, &id, &req.model, &tool_id)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> MessagesRequest {
        serde_json::from_value(v).expect("request")
    }

    #[test]
    fn messages_map_like_ollamas_middleware() {
        let r = req(json!({
            "model": "m", "max_tokens": 5,
            "system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "x"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "and?"},
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]}]}
            ],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "stop_sequences": null
        }));
        let c = convert(&r).expect("convert");
        let roles: Vec<&str> = c.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool", "user"]);
        assert_eq!(c.messages[0].text(), "Be brief.");
        assert_eq!(c.messages[3].text(), "42");
        assert_eq!(c.tools[0]["function"]["name"], "f");
        assert_eq!(c.think, Some(true));
        assert!(estimate_input_tokens(&r) > 0);
    }

    #[test]
    fn bad_blocks_are_ollamas_400s() {
        let url = req(
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}),
        );
        assert_eq!(
            convert(&url).expect_err("url").message,
            "invalid image source type: url. Only base64 images are supported."
        );
        let no_id = req(
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "assistant", "content": [
            {"type": "tool_use", "name": "f", "input": {}}]}]}),
        );
        assert_eq!(
            convert(&no_id).expect_err("id").message,
            "tool_use block missing required 'id' field"
        );
        let b64 = req(
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGk="}}]}]}),
        );
        assert!(convert(&b64).is_ok());
        assert_eq!(check_base64("a!=="), Err(1));
        assert_eq!(check_base64("abc"), Err(3));
    }
}
