//! OpenAI requests → Ollama's native API.

use serde_json::{Map, Value, json};

use serde_json::value::RawValue;

use super::{Result, TranslateError};
use crate::dialect::Size;
use crate::dialect::json;

/// The field's value, treating `null` like absence (clients such as LiteLLM send explicit nulls).
pub(super) fn get<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

pub(super) fn opt_number(body: &Map<String, Value>, key: &'static str) -> Result<Option<Value>> {
    match get(body, key) {
        None => Ok(None),
        Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
        Some(_) => Err(TranslateError::invalid(key, "must be a number")),
    }
}

pub(super) fn opt_integer(body: &Map<String, Value>, key: &'static str) -> Result<Option<i64>> {
    match get(body, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| TranslateError::invalid(key, "must be an integer")),
    }
}

pub(super) fn opt_bool(body: &Map<String, Value>, key: &'static str) -> Result<Option<bool>> {
    match get(body, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(TranslateError::invalid(key, "must be a boolean")),
    }
}

pub(super) fn opt_string<'a>(
    body: &'a Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>> {
    match get(body, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TranslateError::invalid(key, "must be a string")),
    }
}

/// `stop`: a string or an array of strings → always an array.
pub(super) fn stop_sequences(body: &Map<String, Value>) -> Result<Option<Value>> {
    match get(body, "stop") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok(Some(Value::Array(items.clone())))
        }
        Some(_) => Err(TranslateError::invalid(
            "stop",
            "must be a string or an array of strings",
        )),
    }
}

pub(super) fn reject_n(body: &Map<String, Value>) -> Result<()> {
    match opt_integer(body, "n")? {
        Some(n) if n > 1 => Err(TranslateError::unsupported("n", "n > 1 is not supported")),
        Some(n) if n < 1 => Err(TranslateError::invalid("n", "must be at least 1")),
        _ => Ok(()),
    }
}

/// Whether an OpenAI request body asks for a streamed answer (`stream`, default false).
pub fn wants_stream(body: &Map<String, Value>) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// Whether an OpenAI streaming request asked for a final usage chunk
/// (`stream_options.include_usage`).
pub fn include_usage(body: &Map<String, Value>) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Whether an OpenAI embeddings request asked for `encoding_format: "base64"`.
pub fn embeddings_base64(body: &Map<String, Value>) -> bool {
    body.get("encoding_format").and_then(Value::as_str) == Some("base64")
}

/// Builds Ollama's `options` from the body's own `options` (Ollama extra) overlaid with the
/// explicit OpenAI sampling parameters, and writes the shared top-level fields.
pub(super) fn common_generation_fields(
    body: &Map<String, Value>,
    out: &mut Map<String, Value>,
    extras: &[&'static str],
) -> Result<()> {
    reject_n(body)?;

    let mut options = match get(body, "options") {
        None => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(TranslateError::invalid("options", "must be an object")),
    };
    for (openai, ollama) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("frequency_penalty", "frequency_penalty"),
        ("presence_penalty", "presence_penalty"),
    ] {
        if let Some(v) = opt_number(body, openai)? {
            options.insert(ollama.to_owned(), v);
        }
    }
    if let Some(seed) = opt_integer(body, "seed")? {
        options.insert("seed".to_owned(), json!(seed));
    }
    if let Some(stop) = stop_sequences(body)? {
        options.insert("stop".to_owned(), stop);
    }
    let max_completion = opt_integer(body, "max_completion_tokens")?;
    let max_tokens = opt_integer(body, "max_tokens")?;
    if let Some(n) = max_completion.or(max_tokens) {
        options.insert("num_predict".to_owned(), json!(n));
    }
    if !options.is_empty() {
        out.insert("options".to_owned(), Value::Object(options));
    }

    // Ollama streams by default; OpenAI does not. Always say which one we want.
    let stream = opt_bool(body, "stream")?.unwrap_or(false);
    out.insert("stream".to_owned(), Value::Bool(stream));

    for key in extras {
        if let Some(v) = get(body, key) {
            out.insert((*key).to_owned(), v.clone());
        }
    }
    Ok(())
}

/// POST /v1/chat/completions body → Ollama POST /api/chat body, for `model` (herd may
/// substitute a fallback model). The whole body as one map: for tests and
/// callers holding one; the request path uses [`chat_messages`] and
/// [`chat_fields`], which never hold the messages as a tree.
pub fn chat_request(
    body: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, TranslateError> {
    let raw = match get(body, "messages") {
        None => return Err(TranslateError::MissingField("messages".to_owned())),
        Some(m @ Value::Array(_)) => m.to_string(),
        Some(_) => {
            return Err(TranslateError::invalid(
                "messages",
                "must be a non-empty array",
            ));
        }
    };
    let messages = chat_messages(&raw, &mut Size::default())?;
    let mut out = chat_fields(body, model)?;
    let messages: Value = serde_json::from_str(&messages)
        .map_err(|e| TranslateError::invalid("messages", e.to_string()))?;
    out.insert("messages".to_owned(), messages);
    Ok(out)
}

/// A chat's `messages` (raw JSON) → Ollama's messages (JSON text), one
/// message at a time, sizing the prompt on the way.
pub fn chat_messages(raw: &str, size: &mut Size) -> Result<String, TranslateError> {
    // tool_call_id → function name, from earlier assistant messages.
    let mut tool_names: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(raw.len() + 2);
    out.push(b'[');
    let mut failed: Option<TranslateError> = None;
    let n = json::each::<Value, _>(raw, |i, message| {
        let m = match chat_message(i, &message, &mut tool_names) {
            Ok(m) => m,
            Err(e) => {
                failed = Some(e);
                return Err(String::new());
            }
        };
        if let Some(c) = message.get("content") {
            size.content(&c.to_string());
        }
        size.messages += 1;
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &m).map_err(|e| e.to_string())
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let n = n.map_err(|e| TranslateError::invalid("messages", e.to_string()))?;
    if n == 0 {
        return Err(TranslateError::invalid(
            "messages",
            "must be a non-empty array",
        ));
    }
    out.push(b']');
    String::from_utf8(out).map_err(|e| TranslateError::invalid("messages", e.to_string()))
}

/// Everything of a chat body but its messages → Ollama's fields.
pub fn chat_fields(
    body: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, TranslateError> {
    let mut out = Map::new();
    out.insert("model".to_owned(), Value::String(model.to_owned()));

    let tool_choice_none = get(body, "tool_choice").and_then(Value::as_str) == Some("none");
    if let Some(tools) = get(body, "tools") {
        let tools = chat_tools(tools)?;
        if !tool_choice_none && !tools.is_empty() {
            out.insert("tools".to_owned(), Value::Array(tools));
        }
    }

    if let Some(format) = response_format(body)? {
        out.insert("format".to_owned(), format);
    }

    common_generation_fields(body, &mut out, &["keep_alive", "think"])?;
    Ok(out)
}

pub(super) fn chat_message(
    i: usize,
    message: &Value,
    tool_names: &mut Vec<(String, String)>,
) -> Result<Map<String, Value>> {
    let path = format!("messages[{i}]");
    let Some(message) = message.as_object() else {
        return Err(TranslateError::invalid(path, "must be an object"));
    };
    let role = match get(message, "role") {
        None => return Err(TranslateError::MissingField(format!("{path}.role"))),
        Some(Value::String(r)) => r.as_str(),
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.role"),
                "must be a string",
            ));
        }
    };
    let role = match role {
        "system" | "user" | "assistant" | "tool" => role,
        "developer" => "system",
        other => {
            return Err(TranslateError::invalid(
                format!("{path}.role"),
                format!(
                    "unsupported role `{other}` (expected system, developer, user, assistant or tool)"
                ),
            ));
        }
    };

    let (content, images) = message_content(&path, get(message, "content"))?;
    let mut out = Map::new();
    out.insert("role".to_owned(), Value::String(role.to_owned()));
    out.insert("content".to_owned(), Value::String(content));
    if !images.is_empty() {
        out.insert(
            "images".to_owned(),
            Value::Array(images.into_iter().map(Value::String).collect()),
        );
    }

    if role == "assistant"
        && let Some(calls) = get(message, "tool_calls")
    {
        let calls = assistant_tool_calls(&path, calls, tool_names)?;
        if !calls.is_empty() {
            out.insert("tool_calls".to_owned(), Value::Array(calls));
        }
    }
    // Search from the latest call backwards: ids may repeat across turns in some clients.
    if role == "tool"
        && let Some(id) = get(message, "tool_call_id").and_then(Value::as_str)
        && let Some((_, name)) = tool_names.iter().rev().find(|(known, _)| known == id)
    {
        out.insert("tool_name".to_owned(), Value::String(name.clone()));
    }
    Ok(out)
}

/// Message `content`: string, null, or an array of parts → (text, base64 images).
pub(super) fn message_content(
    path: &str,
    content: Option<&Value>,
) -> Result<(String, Vec<String>)> {
    let parts = match content {
        None => return Ok((String::new(), Vec::new())),
        Some(Value::String(s)) => return Ok((s.clone(), Vec::new())),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(TranslateError::invalid(
                format!("{path}.content"),
                "must be a string, null or an array of content parts",
            ));
        }
    };
    let mut texts: Vec<&str> = Vec::new();
    let mut images = Vec::new();
    for (j, part) in parts.iter().enumerate() {
        let part_path = format!("{path}.content[{j}]");
        let kind = part.get("type").and_then(Value::as_str);
        match kind {
            Some("text") => match part.get("text") {
                Some(Value::String(t)) => texts.push(t),
                _ => {
                    return Err(TranslateError::invalid(
                        format!("{part_path}.text"),
                        "must be a string",
                    ));
                }
            },
            Some("image_url") => {
                // `image_url` is normally `{"url": ..., "detail": ...}`; accept a bare string too.
                let url = match part.get("image_url") {
                    Some(Value::String(u)) => Some(u.as_str()),
                    Some(obj) => obj.get("url").and_then(Value::as_str),
                    None => None,
                };
                let Some(url) = url else {
                    return Err(TranslateError::MissingField(format!(
                        "{part_path}.image_url.url"
                    )));
                };
                images.push(image_data(&format!("{part_path}.image_url.url"), url)?);
            }
            Some(other) => {
                return Err(TranslateError::unsupported(
                    part_path.clone(),
                    format!(
                        "{part_path}: content part type `{other}` is not supported (use `text` or `image_url`)"
                    ),
                ));
            }
            None => return Err(TranslateError::MissingField(format!("{part_path}.type"))),
        }
    }
    Ok((texts.join("\n"), images))
}

/// An `image_url.url` → the base64 payload Ollama wants in `images`.
pub(super) fn image_data(path: &str, url: &str) -> Result<String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(TranslateError::unsupported(
            path,
            format!("{path}: {}", crate::dialect::REMOTE_IMAGE),
        ));
    }
    if !lower.starts_with("data:") {
        return Err(TranslateError::invalid(
            path,
            "must be a base64 `data:` URL (e.g. data:image/png;base64,...)",
        ));
    }
    match url.split_once(',') {
        Some((header, payload)) if header.ends_with(";base64") && !payload.is_empty() => {
            Ok(payload.to_owned())
        }
        _ => Err(TranslateError::invalid(
            path,
            "must be a base64 `data:` URL (e.g. data:image/png;base64,...)",
        )),
    }
}

/// Assistant `tool_calls` (OpenAI, arguments as a JSON string) → Ollama (arguments as an object).
pub(super) fn assistant_tool_calls(
    path: &str,
    calls: &Value,
    tool_names: &mut Vec<(String, String)>,
) -> Result<Vec<Value>> {
    let Some(calls) = calls.as_array() else {
        return Err(TranslateError::invalid(
            format!("{path}.tool_calls"),
            "must be an array",
        ));
    };
    let mut out = Vec::with_capacity(calls.len());
    for (k, call) in calls.iter().enumerate() {
        let call_path = format!("{path}.tool_calls[{k}]");
        let function = call.get("function").and_then(Value::as_object);
        let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) else {
            return Err(TranslateError::MissingField(format!(
                "{call_path}.function.name"
            )));
        };
        let arguments = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::String(s)) if s.trim().is_empty() => Value::Object(Map::new()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return Err(TranslateError::invalid(
                        format!("{call_path}.function.arguments"),
                        format!("arguments of tool call `{name}` must encode a JSON object"),
                    ));
                }
                Err(e) => {
                    return Err(TranslateError::invalid(
                        format!("{call_path}.function.arguments"),
                        format!("arguments of tool call `{name}` are not valid JSON: {e}"),
                    ));
                }
            },
            // Lenient: some clients send the object itself.
            Some(v @ Value::Object(_)) => v.clone(),
            Some(_) => {
                return Err(TranslateError::invalid(
                    format!("{call_path}.function.arguments"),
                    format!("arguments of tool call `{name}` must be a JSON string"),
                ));
            }
        };
        if let Some(id) = call.get("id").and_then(Value::as_str) {
            tool_names.push((id.to_owned(), name.to_owned()));
        }
        out.push(json!({"function": {"name": name, "arguments": arguments}}));
    }
    Ok(out)
}

pub(super) fn chat_tools(tools: &Value) -> Result<Vec<Value>> {
    let Some(tools) = tools.as_array() else {
        return Err(TranslateError::invalid("tools", "must be an array"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let path = format!("tools[{i}]");
        let kind = tool
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("function");
        if kind != "function" {
            return Err(TranslateError::unsupported(
                path.clone(),
                format!("{path}: tool type `{kind}` is not supported (only `function` tools)"),
            ));
        }
        let Some(function) = tool.get("function").and_then(Value::as_object) else {
            return Err(TranslateError::MissingField(format!("{path}.function")));
        };
        let Some(name) = function.get("name").and_then(Value::as_str) else {
            return Err(TranslateError::MissingField(format!(
                "{path}.function.name"
            )));
        };
        let mut f = Map::new();
        f.insert("name".to_owned(), Value::String(name.to_owned()));
        for key in ["description", "parameters"] {
            if let Some(v) = get(function, key) {
                f.insert(key.to_owned(), v.clone());
            }
        }
        out.push(json!({"type": "function", "function": f}));
    }
    Ok(out)
}

pub(super) fn response_format(body: &Map<String, Value>) -> Result<Option<Value>> {
    let Some(rf) = get(body, "response_format") else {
        return Ok(None);
    };
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Value::String("json".to_owned()))),
        Some("json_schema") => match rf.get("json_schema").and_then(|s| s.get("schema")) {
            Some(schema @ Value::Object(_)) => Ok(Some(schema.clone())),
            _ => Err(TranslateError::MissingField(
                "response_format.json_schema.schema".to_owned(),
            )),
        },
        Some(other) => Err(TranslateError::invalid(
            "response_format.type",
            format!("unsupported type `{other}` (expected text, json_object or json_schema)"),
        )),
        None => Err(TranslateError::MissingField(
            "response_format.type".to_owned(),
        )),
    }
}

/// POST /v1/completions body → Ollama POST /api/generate body.
pub fn completion_request(
    body: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, TranslateError> {
    let prompt = match get(body, "prompt") {
        None => return Err(TranslateError::MissingField("prompt".to_owned())),
        Some(Value::String(p)) => p.clone(),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(p)] => p.clone(),
            [] => return Err(TranslateError::invalid("prompt", "must not be empty")),
            items if items.iter().all(Value::is_string) => {
                return Err(TranslateError::unsupported(
                    "prompt",
                    "prompt: several prompts in one request are not supported; send one prompt per request",
                ));
            }
            _ => {
                return Err(TranslateError::unsupported(
                    "prompt",
                    "prompt: token-id prompts are not supported; send text",
                ));
            }
        },
        Some(_) => {
            return Err(TranslateError::invalid(
                "prompt",
                "must be a string or an array of one string",
            ));
        }
    };

    let mut out = Map::new();
    out.insert("model".to_owned(), Value::String(model.to_owned()));
    out.insert("prompt".to_owned(), Value::String(prompt));
    if let Some(suffix) = opt_string(body, "suffix")? {
        out.insert("suffix".to_owned(), Value::String(suffix.to_owned()));
    }
    common_generation_fields(body, &mut out, &["keep_alive", "think"])?;
    Ok(out)
}

/// POST /v1/embeddings body → Ollama POST /api/embed body (the whole body
/// as one map; the request path uses [`embeddings_input`] and
/// [`embeddings_fields`]).
pub fn embeddings_request(
    body: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, TranslateError> {
    let raw = get(body, "input").map(Value::to_string);
    embeddings_input(raw.as_deref(), &mut Size::default())?;
    let mut out = embeddings_fields(body, model)?;
    if let Some(v) = get(body, "input") {
        out.insert("input".to_owned(), v.clone());
    }
    Ok(out)
}

/// Checks an embeddings `input` (raw JSON): a string or a non-empty array
/// of strings, walked without building it; sizes the prompt.
pub fn embeddings_input(raw: Option<&str>, size: &mut Size) -> Result<(), TranslateError> {
    const TOKENS: &str = "input: token-id inputs are not supported; send text";
    let invalid = || TranslateError::invalid("input", "must be a string or an array of strings");
    match raw {
        None | Some("null") => Err(TranslateError::MissingField("input".to_owned())),
        Some(r) if r.starts_with('"') => {
            size.string(Some(r));
            Ok(())
        }
        Some(r) if r.starts_with('[') => {
            let (mut strings, mut tokens, mut other) = (0usize, 0usize, 0usize);
            let n = json::each::<&RawValue, _>(r, |_, v| {
                match v.get().as_bytes().first() {
                    Some(b'"') => {
                        strings += 1;
                        size.string(Some(v.get()));
                    }
                    Some(b'[' | b'-' | b'0'..=b'9') => tokens += 1,
                    _ => other += 1,
                }
                Ok(())
            })
            .map_err(|_| invalid())?;
            if n == 0 {
                Err(TranslateError::invalid("input", "must not be empty"))
            } else if strings == n {
                Ok(())
            } else if tokens == n {
                Err(TranslateError::unsupported("input", TOKENS))
            } else {
                Err(invalid())
            }
        }
        Some(_) => Err(invalid()),
    }
}

/// Everything of an embeddings body but its input → Ollama's fields.
pub fn embeddings_fields(
    body: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, TranslateError> {
    match opt_string(body, "encoding_format")? {
        None | Some("float") | Some("base64") => {}
        Some(other) => {
            return Err(TranslateError::invalid(
                "encoding_format",
                format!("unsupported value `{other}` (expected float or base64)"),
            ));
        }
    }

    let mut out = Map::new();
    out.insert("model".to_owned(), Value::String(model.to_owned()));
    match opt_integer(body, "dimensions")? {
        Some(d) if d < 1 => return Err(TranslateError::invalid("dimensions", "must be positive")),
        Some(d) => {
            out.insert("dimensions".to_owned(), json!(d));
        }
        None => {}
    }
    for key in ["keep_alive", "options", "truncate"] {
        if let Some(v) = get(body, key) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    Ok(out)
}
