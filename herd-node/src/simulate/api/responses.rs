//! OpenAI's Responses API (`POST /v1/responses`) as Ollama serves it since
//! 0.13.3: its middleware turns the request into a chat
//! (`openai.FromResponsesRequest`), the chat handler answers, and a
//! converter writes the answer back (`ToResponse`,
//! `ResponsesStreamConverter`). Here the chat is the simulator's [`Plan`]
//! and the converter a port of Ollama's: the same items, ids, event order
//! and `sequence_number`s; errors in OpenAI's shape.
//!
//! Like Ollama: `status` is always `completed` (a length cut is not
//! `incomplete`), text after a tool call is dropped, and nothing is stored
//! (`previous_response_id` and friends are accepted and ignored).

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::openai::think_from_effort;
use super::plan::{
    Chunk, GenInput, Plan, Reply, cache_text, chat_prompt, chat_reply, check_model, check_tools,
    decide_think, start, thinking_for,
};
use super::stream::{Events, event_stream_response};
use super::wire::{Message, function_tool, sse_event, tool_call_id, wall};
use super::{ApiError, AppState};

// ---------------------------------------------------------------- requests

/// The chat Ollama makes of a Responses request, and what the answer
/// echoes back.
#[derive(Debug, Default)]
struct Converted {
    model: String,
    messages: Vec<Message>,
    tools: Vec<Value>,
    format: Option<Value>,
    think: Option<bool>,
    max_output_tokens: Option<i64>,
    stream: bool,
    /// The request fields the response object repeats.
    echo: Echo,
}

/// What a response object repeats from its request.
#[derive(Debug, Default, Clone)]
struct Echo {
    instructions: Option<String>,
    tools: Vec<Value>,
    text_format: Option<Value>,
    effort: Option<String>,
    summary: Option<String>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_output_tokens: Option<i64>,
    truncation: Option<String>,
    background: bool,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// An `input_image`'s `image_url` as Ollama's `decodeImageURL` takes it:
/// a base64 `data:` URL of jpeg, png or webp (or no media type); never a
/// web URL.
fn check_image_url(url: &str) -> Result<(), ApiError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Err(bad(
            "image URLs are not currently supported, please use base64 encoded data instead",
        ));
    }
    let data = [
        "data:;base64,",
        "data:image/jpeg;base64,",
        "data:image/jpg;base64,",
        "data:image/png;base64,",
        "data:image/webp;base64,",
    ]
    .iter()
    .find_map(|p| url.strip_prefix(p))
    .ok_or_else(|| bad("invalid image input"))?;
    let b = data.as_bytes();
    let pad = b.iter().rev().take_while(|c| **c == b'=').count();
    let body_ok = b[..b.len() - pad]
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/');
    if !body_ok || !b.len().is_multiple_of(4) || pad > 2 {
        return Err(bad("invalid image input"));
    }
    Ok(())
}

/// Content parts (or a string) as text; images checked, files refused.
/// `at` prefixes parse errors the way Go's decoder nests them.
fn parts_text(content: &Value, at: &str) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            let mut file = false;
            for (i, p) in parts.iter().enumerate() {
                match str_of(p, "type") {
                    "input_text" | "output_text" => text.push_str(str_of(p, "text")),
                    "input_image" => {
                        let url = str_of(p, "image_url");
                        if !url.is_empty() {
                            check_image_url(url)?;
                        }
                    }
                    "input_file" => file = true,
                    other => {
                        return Err(bad(format!(
                            "{at}content[{i}]: unknown content type: {other}"
                        )));
                    }
                }
            }
            if file {
                return Err(bad("file inputs are not currently supported"));
            }
            Ok(text)
        }
        _ => Err(bad(format!("{at}content must be a string or array"))),
    }
}

/// Tools as Ollama maps them: functions as they are, namespaces flattened
/// to `ns.member`, `web_search` as its own search function.
fn convert_tool(t: &Value, prefix: &str, out: &mut Vec<Value>) {
    let kind = str_of(t, "type");
    let name = str_of(t, "name");
    if kind == "web_search" {
        let params = json!({"type": "object", "required": ["query"],
            "properties": {"query": {"type": "string", "description": "The search query."}}});
        let desc = json!("Search the web for current information.");
        out.push(function_tool("web_search", Some(&desc), &params));
        return;
    }
    if kind == "namespace" {
        let inner = if name.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}{name}.")
        };
        for m in t
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            convert_tool(m, &inner, out);
        }
        return;
    }
    let full = if prefix.is_empty() || name.starts_with(prefix) {
        name.to_owned()
    } else {
        format!("{prefix}{name}")
    };
    let params = t.get("parameters").cloned().unwrap_or(Value::Null);
    out.push(function_tool(&full, t.get("description"), &params));
}

/// The request as Ollama's middleware reads it.
fn convert(body: &[u8]) -> Result<Converted, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("EOF"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if !v.is_object() {
        return Err(bad(format!(
            "json: cannot unmarshal {v} into Go value of type openai.ResponsesRequest"
        )));
    }
    let mut c = Converted {
        model: str_of(&v, "model").to_owned(),
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        max_output_tokens: v.get("max_output_tokens").and_then(Value::as_i64),
        ..Converted::default()
    };
    let instructions = str_of(&v, "instructions");
    if !instructions.is_empty() {
        c.messages.push(Message {
            role: "system".into(),
            content: Some(json!(instructions)),
        });
    }
    match v.get("input") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                c.messages.push(Message {
                    role: "user".into(),
                    content: Some(json!(s)),
                });
            }
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("input[{i}]: ");
                let mut kind = str_of(item, "type");
                if kind.is_empty() && !str_of(item, "role").is_empty() {
                    kind = "message";
                }
                match kind {
                    "message" => {
                        let text = parts_text(item.get("content").unwrap_or(&Value::Null), &at)?;
                        c.messages.push(Message {
                            role: str_of(item, "role").to_owned(),
                            content: Some(json!(text)),
                        });
                    }
                    "function_call" => {
                        let args = str_of(item, "arguments");
                        if !args.is_empty()
                            && serde_json::from_str::<Map<String, Value>>(args).is_err()
                        {
                            return Err(bad(format!(
                                "failed to parse function call arguments: invalid arguments {}",
                                Value::String(args.to_owned())
                            )));
                        }
                        // Joins the assistant turn before it, or starts one.
                        if c.messages.last().is_none_or(|m| m.role != "assistant") {
                            c.messages.push(Message {
                                role: "assistant".into(),
                                content: Some(json!("")),
                            });
                        }
                    }
                    "function_call_output" => {
                        let out = match item.get("output") {
                            Some(o @ Value::Array(_)) => parts_text(o, &format!("{at}output"))?,
                            Some(Value::String(s)) => s.clone(),
                            _ => String::new(),
                        };
                        c.messages.push(Message {
                            role: "tool".into(),
                            content: Some(json!(out)),
                        });
                    }
                    "reasoning" | "web_search_call" => {}
                    "" => return Err(bad(format!("{at}input item missing required 'type' field"))),
                    other => {
                        return Err(bad(format!(
                            "{at}unknown input item type: {}",
                            Value::String(other.to_owned())
                        )));
                    }
                }
            }
        }
        Some(_) => return Err(bad("input must be a string or array")),
    }
    let effort = v.pointer("/reasoning/effort").and_then(Value::as_str);
    c.think = think_from_effort(effort)?;
    let req_tools: Vec<Value> = v
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for t in &req_tools {
        convert_tool(t, "", &mut c.tools);
    }
    let format = v.pointer("/text/format").filter(|f| f.is_object()).cloned();
    if let Some(f) = &format
        && str_of(f, "type") == "json_schema"
    {
        c.format = f.get("schema").filter(|s| !s.is_null()).cloned();
    }
    c.echo = Echo {
        instructions: (!instructions.is_empty()).then(|| instructions.to_owned()),
        tools: req_tools,
        text_format: format,
        effort: effort.filter(|e| !e.is_empty()).map(str::to_owned),
        summary: v
            .pointer("/reasoning/summary")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(str::to_owned),
        temperature: v.get("temperature").and_then(Value::as_f64),
        top_p: v.get("top_p").and_then(Value::as_f64),
        max_output_tokens: c.max_output_tokens,
        truncation: v
            .get("truncation")
            .and_then(Value::as_str)
            .map(str::to_owned),
        background: v
            .get("background")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    Ok(c)
}

// ---------------------------------------------------------------- answers

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The response object around `output`, as Ollama builds it. `streamed`
/// picks the streaming converter's spelling of `reasoning` (both keys,
/// null when unset) over `ToResponse`'s (only the keys set).
fn response_object(
    id: &str,
    model: &str,
    echo: &Echo,
    status: &str,
    created_at: u64,
    output: Vec<Value>,
    usage: Value,
    streamed: bool,
) -> Value {
    let tools: Vec<Value> = echo
        .tools
        .iter()
        .map(|t| {
            json!({"type": t.get("type"), "name": t.get("name"),
                   "description": t.get("description"), "strict": t.get("strict"),
                   "parameters": t.get("parameters")})
        })
        .collect();
    let text_format = echo.text_format.as_ref().map_or_else(
        || json!({"type": "text"}),
        |f| {
            let mut out = Map::new();
            out.insert("type".into(), f.get("type").cloned().unwrap_or(Value::Null));
            for k in ["name", "schema", "strict"] {
                if let Some(x) = f.get(k).filter(|x| !x.is_null()) {
                    out.insert(k.into(), x.clone());
                }
            }
            Value::Object(out)
        },
    );
    let reasoning = if echo.effort.is_none() && echo.summary.is_none() {
        Value::Null
    } else if streamed {
        json!({"effort": echo.effort, "summary": echo.summary})
    } else {
        let mut r = Map::new();
        if let Some(e) = &echo.effort {
            r.insert("effort".into(), json!(e));
        }
        if let Some(s) = &echo.summary {
            r.insert("summary".into(), json!(s));
        }
        Value::Object(r)
    };
    json!({
        "id": id, "object": "response", "created_at": created_at, "completed_at": null,
        "status": status, "incomplete_details": null, "model": model,
        "previous_response_id": null, "instructions": echo.instructions,
        "output": output, "error": null, "tools": tools, "tool_choice": "auto",
        "truncation": echo.truncation.as_deref().unwrap_or("disabled"),
        "parallel_tool_calls": true, "text": {"format": text_format},
        "top_p": echo.top_p.unwrap_or(1.0), "presence_penalty": 0, "frequency_penalty": 0,
        "top_logprobs": 0, "temperature": echo.temperature.unwrap_or(1.0),
        "reasoning": reasoning, "usage": usage,
        "max_output_tokens": echo.max_output_tokens, "max_tool_calls": null,
        "store": false, "background": echo.background, "service_tier": "default",
        "metadata": {}, "safety_identifier": null, "prompt_cache_key": null,
    })
}

/// `usage` of a finished response.
fn usage(prompt: u32, eval: u32) -> Value {
    json!({"input_tokens": prompt, "output_tokens": eval, "total_tokens": prompt + eval,
           "input_tokens_details": {"cached_tokens": 0},
           "output_tokens_details": {"reasoning_tokens": 0}})
}

/// A finished message item.
fn message_item(id: &str, text: &str) -> Value {
    json!({"id": id, "type": "message", "status": "completed", "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

/// A finished reasoning item (the thinking is also its "encrypted" content,
/// in plain text, as Ollama sends it).
fn reasoning_item(id: &str, thinking: &str) -> Value {
    json!({"id": id, "type": "reasoning",
           "summary": [{"type": "summary_text", "text": thinking}],
           "encrypted_content": thinking})
}

/// Ids of one response, drawn as Ollama draws them.
struct Ids {
    response: String,
    item: String,
    call: String,
}

/// The whole answer (`ToResponse`).
fn whole(plan: &Plan, ids: &Ids, model: &str, echo: &Echo) -> Value {
    let mut output = Vec::new();
    let thinking = plan.thinking_text();
    if !thinking.is_empty() {
        output.push(reasoning_item(&format!("rs_{}", ids.response), &thinking));
    }
    match &plan.reply {
        Reply::ToolCall { name, arguments } => output.push(json!({
            "id": format!("fc_{}_0", ids.response), "type": "function_call", "status": "completed",
            "call_id": ids.call, "name": name,
            "arguments": Value::Object(arguments.clone()).to_string(),
        })),
        Reply::Text { .. } => output.push(message_item(&ids.item, &plan.content())),
    }
    let mut r = response_object(
        &ids.response,
        model,
        echo,
        "completed",
        unix(wall(plan.done_at())),
        output,
        usage(plan.prompt_tokens(), plan.eval_count()),
        false,
    );
    r["completed_at"] = json!(unix(SystemTime::now()));
    r
}

/// The stream, event by event, as Ollama's `ResponsesStreamConverter`
/// writes it for these chat chunks.
fn stream_events(
    chunks: &[(Instant, Chunk<'_>)],
    counts: (u32, u32),
    ids: &Ids,
    model: &str,
    echo: &Echo,
) -> Events {
    let mut out: Events = Vec::new();
    let mut seq = 0u64;
    let mut output_index = 0u64;
    let (mut content_started, mut tool_calls_sent) = (false, false);
    let mut text = String::new();
    let mut thinking = String::new();
    let mut reasoning_id: Option<String> = None;
    let mut completed: Vec<Value> = Vec::new();
    for (i, (at, chunk)) in chunks.iter().enumerate() {
        let at = *at;
        let mut ev = |kind: &str, mut v: Value| {
            v["type"] = json!(kind);
            v["sequence_number"] = json!(seq);
            seq += 1;
            out.push((at, sse_event(kind, &v)));
        };
        let now = unix(wall(at));
        if i == 0 {
            for kind in ["response.created", "response.in_progress"] {
                let r = response_object(
                    &ids.response,
                    model,
                    echo,
                    "in_progress",
                    now,
                    Vec::new(),
                    Value::Null,
                    true,
                );
                ev(kind, json!({ "response": r }));
            }
        }
        // Closes an open reasoning item (`finishReasoning`).
        let mut finish_reasoning = |ev: &mut dyn FnMut(&str, Value)| {
            if let Some(id) = reasoning_id.take() {
                let item = reasoning_item(&id, &thinking);
                ev(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "text": thinking}),
                );
                ev(
                    "response.output_item.done",
                    json!({"output_index": output_index, "item": item}),
                );
                completed.push(item);
                thinking.clear();
                output_index += 1;
            }
        };
        match *chunk {
            Chunk::Thinking(t) => {
                let id = match &reasoning_id {
                    Some(id) => id.clone(),
                    None => {
                        let id = format!("rs_{}", fastrand::u32(0..999_999));
                        ev(
                            "response.output_item.added",
                            json!({"output_index": output_index,
                                   "item": {"id": id, "type": "reasoning", "summary": []}}),
                        );
                        reasoning_id = Some(id.clone());
                        id
                    }
                };
                thinking.push_str(t);
                ev(
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "delta": t}),
                );
            }
            Chunk::ToolCall { name, arguments } => {
                finish_reasoning(&mut ev);
                let fc_id = format!("fc_{}_0", fastrand::u32(0..999_999));
                let args = Value::Object(arguments.clone()).to_string();
                let item = json!({"id": fc_id, "type": "function_call", "status": "completed",
                                  "call_id": ids.call, "name": name, "arguments": args});
                ev(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": {
                        "id": fc_id, "type": "function_call", "status": "in_progress",
                        "call_id": ids.call, "name": name, "arguments": ""}}),
                );
                ev(
                    "response.function_call_arguments.delta",
                    json!({"item_id": fc_id, "output_index": output_index, "delta": args}),
                );
                ev(
                    "response.function_call_arguments.done",
                    json!({"item_id": fc_id, "output_index": output_index, "arguments": args}),
                );
                ev(
                    "response.output_item.done",
                    json!({"output_index": output_index, "item": item}),
                );
                completed.push(item);
                output_index += 1;
                tool_calls_sent = true;
            }
            Chunk::Content(t) if !tool_calls_sent && !t.is_empty() => {
                finish_reasoning(&mut ev);
                if !content_started {
                    content_started = true;
                    ev(
                        "response.output_item.added",
                        json!({"output_index": output_index, "item": {
                            "id": ids.item, "type": "message", "status": "in_progress",
                            "role": "assistant", "content": []}}),
                    );
                    ev(
                        "response.content_part.added",
                        json!({"item_id": ids.item, "output_index": output_index, "content_index": 0,
                               "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                    );
                }
                text.push_str(t);
                ev(
                    "response.output_text.delta",
                    json!({"item_id": ids.item, "output_index": output_index, "content_index": 0,
                           "delta": t, "logprobs": []}),
                );
            }
            Chunk::Content(_) => {}
            Chunk::Done => {
                finish_reasoning(&mut ev);
                let mut output = completed.clone();
                if !tool_calls_sent && content_started {
                    let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                    ev(
                        "response.output_text.done",
                        json!({"item_id": ids.item, "output_index": output_index, "content_index": 0,
                               "text": text, "logprobs": []}),
                    );
                    ev(
                        "response.content_part.done",
                        json!({"item_id": ids.item, "output_index": output_index, "content_index": 0,
                               "part": part}),
                    );
                    ev(
                        "response.output_item.done",
                        json!({"output_index": output_index, "item": message_item(&ids.item, &text)}),
                    );
                }
                if content_started {
                    output.push(message_item(&ids.item, &text));
                }
                let mut r = response_object(
                    &ids.response,
                    model,
                    echo,
                    "completed",
                    now,
                    output,
                    usage(counts.0, counts.1),
                    true,
                );
                r["completed_at"] = json!(now);
                ev("response.completed", json!({ "response": r }));
            }
        }
    }
    out
}

/// `POST /v1/responses` (Ollama ≥ 0.13.3).
pub(super) async fn responses(State(s): State<Arc<AppState>>, body: Bytes) -> Response {
    responses_inner(&s, &body)
        .await
        .unwrap_or_else(ApiError::openai)
}

async fn responses_inner(s: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let c = convert(body)?;
    // From here on it is Ollama's chat handler.
    if c.model.trim().is_empty() {
        return Err(bad("model is required"));
    }
    let found = s.engine.find(&c.model).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model '{}' not found", c.model),
        )
    })?;
    let thinks = decide_think(&s.engine, &found, c.think, &c.model, false)?;
    let spec = check_model(&s.engine, &c.model, "chat")?;
    check_tools(&spec, &c.tools)?;
    let ids = Ids {
        response: format!("resp_{}", fastrand::u32(0..999_999)),
        item: format!("msg_{}", fastrand::u32(0..999_999)),
        call: tool_call_id(),
    };
    let name = spec.name.clone();
    if c.messages.is_empty() {
        // No input: the chat handler only loads the model and answers an
        // empty chunk.
        s.engine.warm(&name, None).await?;
        let now = Instant::now();
        let chunks = [(now, Chunk::Done)];
        if c.stream {
            let events = stream_events(&chunks, (0, 0), &ids, &c.model, &c.echo);
            return Ok(super::stream::plain_event_stream(events));
        }
        let mut r = response_object(
            &ids.response,
            &c.model,
            &c.echo,
            "completed",
            unix(SystemTime::now()),
            vec![message_item(&ids.item, "")],
            usage(0, 0),
            false,
        );
        r["completed_at"] = json!(unix(SystemTime::now()));
        return Ok(Json(r).into_response());
    }
    let n = c.max_output_tokens.and_then(|n| usize::try_from(n).ok());
    let reply = chat_reply(&name, &c.messages, &c.tools, c.format.as_ref(), n);
    let (prompt, prompt_tokens) = chat_prompt(&c.messages);
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
    if c.stream {
        let chunks = plan.chunks();
        let counts = (plan.prompt_tokens(), plan.eval_count());
        let events = stream_events(&chunks, counts, &ids, &c.model, &c.echo);
        drop(chunks);
        return Ok(event_stream_response(plan, events, &s.engine));
    }
    tokio::time::sleep_until(plan.done_at()).await;
    Ok(Json(whole(&plan, &ids, &c.model, &c.echo)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_items_become_a_chat() {
        let body = json!({
            "model": "m", "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "hi"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "yo"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
                {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "42"}]}
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}},
                      {"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": "g"}]}],
            "reasoning": {"effort": "minimal"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}
        });
        let c = convert(body.to_string().as_bytes()).expect("convert");
        let roles: Vec<&str> = c.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(c.messages[3].text(), "42");
        assert_eq!(c.tools[1]["function"]["name"], "ns.g");
        assert_eq!(c.think, Some(true));
        assert_eq!(c.format, Some(json!({"type": "object"})));
    }

    #[test]
    fn bad_inputs_are_ollamas_400s() {
        let err = |v: Value| convert(v.to_string().as_bytes()).expect_err("bad").message;
        assert_eq!(
            err(
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]})
            ),
            "file inputs are not currently supported"
        );
        assert_eq!(
            err(json!({"model": "m", "input": [{"role": "user", "content": [{"type": "audio"}]}]})),
            "input[0]: content[0]: unknown content type: audio"
        );
        assert_eq!(
            err(json!({"model": "m", "input": [{"content": "x"}]})),
            "input[0]: input item missing required 'type' field"
        );
        assert!(
            err(json!({"model": "m", "input": "x", "reasoning": {"effort": "huge"}}))
                .starts_with("invalid reasoning value: \"huge\"")
        );
        assert_eq!(
            err(json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_image", "image_url": "https://x/y.png"}]}]})),
            "image URLs are not currently supported, please use base64 encoded data instead"
        );
    }
}
