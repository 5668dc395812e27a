//! Two-way translation between the OpenAI API and Ollama's native API.
//!
//! herd serves OpenAI clients (the official `openai` SDKs, LiteLLM, Open WebUI) from Ollama
//! nodes by *translating* each OpenAI request into Ollama's native `/api/chat`,
//! `/api/generate` and `/api/embed` calls, and each native response back into OpenAI's shapes.
//! It deliberately does **not** forward to Ollama's own `/v1` compatibility layer:
//!
//! * the native endpoints report Ollama's timing stats (`total_duration`, `load_duration`,
//!   `prompt_eval_count`, `prompt_eval_duration`, `eval_count`, `eval_duration`) on every
//!   response, which herd's scoring learns node speed from — `/v1` hides them;
//! * the native endpoints exist, with the same shapes, on every Ollama version herd supports,
//!   whereas `/v1` arrived late and its coverage (tools, images, `json_schema`) differs by
//!   version.
//!
//! Everything here is a pure function over [`serde_json::Value`]: no I/O, no clock, no
//! randomness (tool-call ids are derived deterministically from the response id).
//!
//! Supported and unsupported OpenAI features:
//!
//! * chat: roles `system`, `developer` (→ `system`), `user`, `assistant`, `tool`; text and
//!   `image_url` content parts (inline `data:` URLs only — herd never fetches URLs); tool
//!   calls and tool results; function `tools` (`tool_choice: "none"` drops them; other
//!   `tool_choice` values cannot be enforced by Ollama and are ignored); `response_format`
//!   (`text`, `json_object`, `json_schema`); sampling options; `stream` and
//!   `stream_options.include_usage`.
//! * Ollama extras passed through when present in an OpenAI body: `keep_alive`, `options`
//!   (explicit OpenAI parameters win over it), `think` (chat and completions) and `truncate`
//!   (embeddings).
//! * completions: one prompt (a string or an array holding one string), `suffix`, sampling
//!   options. `echo`, `logprobs`, `best_of` and `logit_bias` are ignored.
//! * embeddings: a string or an array of strings; `dimensions`; `encoding_format` `float` or
//!   `base64` (little-endian `f32`, as OpenAI does). Token-id inputs are rejected.
//! * `n > 1` is rejected; other unknown OpenAI fields are ignored.
//! * Model "thinking" is returned as a non-standard `reasoning` field on the message (or
//!   stream delta), only when non-empty.

use serde_json::{Map, Value, json};

/// A client request that cannot be translated. The `Display` text is meant for the API user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A required field is absent or `null`. Holds the field's path, e.g. `messages`.
    #[error("{0}: is required")]
    MissingField(String),
    /// A field has the wrong type or value. `field` is its path, e.g. `messages[1].role`.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A feature herd cannot serve from Ollama; `message` is the whole user-facing sentence.
    #[error("{message}")]
    Unsupported { field: String, message: String },
}

impl TranslateError {
    /// The request field the error is about (OpenAI's `error.param`).
    pub fn param(&self) -> &str {
        match self {
            Self::MissingField(field)
            | Self::Invalid { field, .. }
            | Self::Unsupported { field, .. } => field,
        }
    }

    /// This error as an OpenAI error body (`invalid_request_error`, with `param` set).
    pub fn to_openai(&self) -> Value {
        let mut body = openai_error(&self.to_string(), "invalid_request_error", None);
        body["error"]["param"] = Value::String(self.param().to_owned());
        body
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn unsupported(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            message: message.into(),
        }
    }
}

type Result<T, E = TranslateError> = std::result::Result<T, E>;

const FINGERPRINT: &str = "fp_ollama";

// ---------------------------------------------------------------------------------------------
// Small helpers for reading request bodies
// ---------------------------------------------------------------------------------------------

/// The field's value, treating `null` like absence (clients such as LiteLLM send explicit nulls).
fn get<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

fn opt_number(body: &Map<String, Value>, key: &'static str) -> Result<Option<Value>> {
    match get(body, key) {
        None => Ok(None),
        Some(v @ Value::Number(_)) => Ok(Some(v.clone())),
        Some(_) => Err(TranslateError::invalid(key, "must be a number")),
    }
}

fn opt_integer(body: &Map<String, Value>, key: &'static str) -> Result<Option<i64>> {
    match get(body, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| TranslateError::invalid(key, "must be an integer")),
    }
}

fn opt_bool(body: &Map<String, Value>, key: &'static str) -> Result<Option<bool>> {
    match get(body, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(TranslateError::invalid(key, "must be a boolean")),
    }
}

fn opt_string<'a>(body: &'a Map<String, Value>, key: &'static str) -> Result<Option<&'a str>> {
    match get(body, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TranslateError::invalid(key, "must be a string")),
    }
}

/// `stop`: a string or an array of strings → always an array.
fn stop_sequences(body: &Map<String, Value>) -> Result<Option<Value>> {
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

fn reject_n(body: &Map<String, Value>) -> Result<()> {
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
fn common_generation_fields(
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

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// POST /v1/chat/completions body → Ollama POST /api/chat body, for `model` (herd may
/// substitute a fallback model).
pub fn chat_request(
    body: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, TranslateError> {
    let messages = match get(body, "messages") {
        None => return Err(TranslateError::MissingField("messages".to_owned())),
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(_) => {
            return Err(TranslateError::invalid(
                "messages",
                "must be a non-empty array",
            ));
        }
    };

    // tool_call_id → function name, from earlier assistant messages.
    let mut tool_names: Vec<(String, String)> = Vec::new();
    let mut out_messages = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        out_messages.push(Value::Object(chat_message(i, message, &mut tool_names)?));
    }

    let mut out = Map::new();
    out.insert("model".to_owned(), Value::String(model.to_owned()));
    out.insert("messages".to_owned(), Value::Array(out_messages));

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

fn chat_message(
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
fn message_content(path: &str, content: Option<&Value>) -> Result<(String, Vec<String>)> {
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
fn image_data(path: &str, url: &str) -> Result<String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(TranslateError::unsupported(
            path,
            format!(
                "{path}: remote image URLs are not supported; herd does not fetch URLs, send the image inline as a base64 `data:` URL"
            ),
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
fn assistant_tool_calls(
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

fn chat_tools(tools: &Value) -> Result<Vec<Value>> {
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

fn response_format(body: &Map<String, Value>) -> Result<Option<Value>> {
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

/// POST /v1/embeddings body → Ollama POST /api/embed body.
pub fn embeddings_request(
    body: &Map<String, Value>,
    model: &str,
) -> Result<Map<String, Value>, TranslateError> {
    const TOKENS: &str = "input: token-id inputs are not supported; send text";
    let input = match get(body, "input") {
        None => return Err(TranslateError::MissingField("input".to_owned())),
        Some(v @ Value::String(_)) => v.clone(),
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(TranslateError::invalid("input", "must not be empty"));
            }
            if items.iter().all(Value::is_string) {
                Value::Array(items.clone())
            } else if items.iter().all(|v| v.is_number() || v.is_array()) {
                return Err(TranslateError::unsupported("input", TOKENS));
            } else {
                return Err(TranslateError::invalid(
                    "input",
                    "must be a string or an array of strings",
                ));
            }
        }
        Some(_) => {
            return Err(TranslateError::invalid(
                "input",
                "must be a string or an array of strings",
            ));
        }
    };
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
    out.insert("input".to_owned(), input);
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

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

fn count(ollama: &Value, key: &str) -> u64 {
    ollama.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn usage(ollama: &Value) -> Value {
    let prompt = count(ollama, "prompt_eval_count");
    let completion = count(ollama, "eval_count");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

fn finish_reason(ollama: &Value, tool_calls: bool) -> &'static str {
    if tool_calls {
        "tool_calls"
    } else if ollama.get("done_reason").and_then(Value::as_str) == Some("length") {
        "length"
    } else {
        "stop"
    }
}

/// FNV-1a, 64 bit: a stable, dependency-free hash for deterministic tool-call ids.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `call_<n>_<suffix>`: unique within a response (by `n`), distinct across responses (by the
/// response id), and reproducible (no randomness).
fn tool_call_id(response_id: &str, n: usize) -> String {
    format!("call_{n}_{:016x}", fnv1a(response_id))
}

/// Ollama `tool_calls` → OpenAI `tool_calls`, numbering from `first_index`.
fn openai_tool_calls(
    calls: &[Value],
    response_id: &str,
    first_index: usize,
    stream: bool,
) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(k, call)| {
            let n = first_index + k;
            let function = call.get("function");
            let name = function
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let arguments = match function.and_then(|f| f.get("arguments")) {
                None | Some(Value::Null) => "{}".to_owned(),
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            };
            let mut out = json!({
                "id": tool_call_id(response_id, n),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            });
            if stream {
                out["index"] = json!(n);
            }
            out
        })
        .collect()
}

fn message_tool_calls(message: Option<&Value>) -> &[Value] {
    message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn message_str<'a>(message: Option<&'a Value>, key: &str) -> &'a str {
    message
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Ollama /api/chat non-streaming response → OpenAI `chat.completion`.
pub fn chat_response(ollama: &Value, id: &str, model: &str, created: i64) -> Value {
    let message = ollama.get("message");
    let content = message_str(message, "content");
    let thinking = message_str(message, "thinking");
    let calls = openai_tool_calls(message_tool_calls(message), id, 0, false);

    let mut out_message = json!({"role": "assistant"});
    out_message["content"] = if content.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(content.to_owned())
    };
    if !thinking.is_empty() {
        out_message["reasoning"] = Value::String(thinking.to_owned());
    }
    let has_calls = !calls.is_empty();
    if has_calls {
        out_message["tool_calls"] = Value::Array(calls);
    }

    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{
            "index": 0,
            "message": out_message,
            "logprobs": null,
            "finish_reason": finish_reason(ollama, has_calls),
        }],
        "usage": usage(ollama),
    })
}

/// Ollama /api/generate non-streaming response → OpenAI `text_completion`.
pub fn completion_response(ollama: &Value, id: &str, model: &str, created: i64) -> Value {
    let text = ollama
        .get("response")
        .and_then(Value::as_str)
        .unwrap_or_default();
    json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{
            "text": text,
            "index": 0,
            "logprobs": null,
            "finish_reason": finish_reason(ollama, false),
        }],
        "usage": usage(ollama),
    })
}

/// Ollama /api/embed response → OpenAI embeddings list. With `encoding_format_base64`, each
/// embedding is the base64 of its little-endian `f32` values, as OpenAI encodes them.
/// (A legacy `/api/embeddings` body with a single `embedding` is accepted too.)
pub fn embeddings_response(ollama: &Value, model: &str, encoding_format_base64: bool) -> Value {
    let vectors: Vec<&Value> = match ollama.get("embeddings").and_then(Value::as_array) {
        Some(list) => list.iter().collect(),
        None => ollama.get("embedding").into_iter().collect(),
    };
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if encoding_format_base64 {
                let mut bytes = Vec::new();
                for x in vector.as_array().into_iter().flatten() {
                    // Narrowing to f32 is the point: OpenAI's base64 format is f32.
                    let x = x.as_f64().unwrap_or(0.0) as f32;
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
                Value::String(base64(&bytes))
            } else {
                vector.clone()
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let prompt = count(ollama, "prompt_eval_count");
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
    })
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

fn ollama_stream_error(chunk: &Value) -> Option<Value> {
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

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An OpenAI error body: `{"error":{"message","type","param":null,"code"}}`.
pub fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

/// An Ollama error body: `{"error": "..."}`.
pub fn ollama_error(message: &str) -> Value {
    json!({"error": message})
}

const MAX_ERROR_CHARS: usize = 500;

/// A human message from an Ollama error body (`{"error":"..."}`), an OpenAI one
/// (`{"error":{"message":"..."}}`), or else the raw text — trimmed, at most 500 characters.
pub fn error_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let extracted = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| match v.get("error") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(e) => e.get("message").and_then(Value::as_str).map(str::to_owned),
            None => v.get("message").and_then(Value::as_str).map(str::to_owned),
        });
    let message = extracted.as_deref().map_or(text, str::trim);
    message.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    fn chat(v: Value) -> Value {
        Value::Object(chat_request(&obj(v), "llama3.2").expect("translates"))
    }

    fn chat_err(v: Value) -> String {
        chat_request(&obj(v), "llama3.2")
            .expect_err("must be rejected")
            .to_string()
    }

    // ---- chat requests ----------------------------------------------------------------------

    #[test]
    fn chat_request_minimal_sets_model_and_stream_false() {
        let out = chat(json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}],
        }));
        assert_eq!(
            out,
            json!({
                "model": "llama3.2",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": false,
            })
        );
    }

    #[test]
    fn chat_request_maps_roles_and_null_content() {
        let out = chat(json!({
            "model": "m",
            "stream": true,
            "messages": [
                {"role": "developer", "content": "be terse"},
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "q", "name": "bob"},
                {"role": "assistant", "content": null},
            ],
        }));
        assert_eq!(
            out,
            json!({
                "model": "llama3.2",
                "messages": [
                    {"role": "system", "content": "be terse"},
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": ""},
                ],
                "stream": true,
            })
        );
    }

    #[test]
    fn chat_request_content_parts_and_images() {
        let out = chat(json!({
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                {"type": "text", "text": "in this picture?"},
                {"type": "image_url", "image_url": "data:image/jpeg;base64,/9j/4AAQ"},
            ]}],
        }));
        assert_eq!(
            out["messages"],
            json!([{
                "role": "user",
                "content": "what is\nin this picture?",
                "images": ["iVBORw0KGgo=", "/9j/4AAQ"],
            }])
        );
    }

    #[test]
    fn chat_request_rejects_remote_image_urls() {
        let err = chat_request(
            &obj(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ]}]})),
            "m",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "messages[0].content[0].image_url.url: remote image URLs are not supported; herd does not fetch URLs, send the image inline as a base64 `data:` URL"
        );
        assert_eq!(err.param(), "messages[0].content[0].image_url.url");
        assert_eq!(
            chat_err(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "HTTP://example.com/cat.png"}},
            ]}]})),
            "messages[0].content[0].image_url.url: remote image URLs are not supported; herd does not fetch URLs, send the image inline as a base64 `data:` URL"
        );
    }

    #[test]
    fn chat_request_rejects_bad_image_and_part_types() {
        assert_eq!(
            chat_err(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}},
            ]}]})),
            "messages[0].content[0].image_url.url: must be a base64 `data:` URL (e.g. data:image/png;base64,...)"
        );
        assert_eq!(
            chat_err(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {}},
            ]}]})),
            "messages[0].content[0].image_url.url: is required"
        );
        assert_eq!(
            chat_err(json!({"messages": [{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {}},
            ]}]})),
            "messages[0].content[0]: content part type `input_audio` is not supported (use `text` or `image_url`)"
        );
        assert_eq!(
            chat_err(json!({"messages": [{"role": "user", "content": 5}]})),
            "messages[0].content: must be a string, null or an array of content parts"
        );
    }

    #[test]
    fn chat_request_tool_calls_and_tool_results() {
        let out = chat(json!({
            "messages": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
                ]},
                {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "noon"}]},
                {"role": "tool", "tool_call_id": "unknown", "content": "?"},
            ],
        }));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_time", "arguments": {}}},
                ]},
                {"role": "tool", "content": "18C", "tool_name": "get_weather"},
                {"role": "tool", "content": "noon", "tool_name": "get_time"},
                {"role": "tool", "content": "?"},
            ])
        );
    }

    #[test]
    fn chat_request_rejects_invalid_tool_arguments() {
        let err = chat_err(json!({"messages": [
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{not json"}},
            ]},
        ]}));
        assert!(
            err.starts_with(
                "messages[0].tool_calls[0].function.arguments: arguments of tool call `lookup` are not valid JSON: "
            ),
            "{err}"
        );
        assert_eq!(
            chat_err(json!({"messages": [
                {"role": "assistant", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "[1,2]"}},
                ]},
            ]})),
            "messages[0].tool_calls[0].function.arguments: arguments of tool call `lookup` must encode a JSON object"
        );
        assert_eq!(
            chat_err(json!({"messages": [
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {}}]},
            ]})),
            "messages[0].tool_calls[0].function.name: is required"
        );
    }

    #[test]
    fn chat_request_tools_pass_through_and_tool_choice_none_drops_them() {
        let tools = json!([{
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": true,
            },
        }]);
        let out = chat(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "tools": tools,
            "tool_choice": "auto",
        }));
        assert_eq!(
            out["tools"],
            json!([{
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                },
            }])
        );
        let out = chat(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "tools": tools,
            "tool_choice": "none",
        }));
        assert_eq!(out.get("tools"), None);
        assert_eq!(
            chat_err(json!({
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "custom", "custom": {"name": "x"}}],
            })),
            "tools[0]: tool type `custom` is not supported (only `function` tools)"
        );
    }

    #[test]
    fn chat_request_response_format() {
        let base = |rf: Value| json!({"messages": [{"role": "user", "content": "hi"}], "response_format": rf});
        assert_eq!(
            chat(base(json!({"type": "json_object"})))["format"],
            json!("json")
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            chat(base(
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}})
            ))["format"],
            schema
        );
        assert_eq!(chat(base(json!({"type": "text"}))).get("format"), None);
        assert_eq!(
            chat_err(base(
                json!({"type": "json_schema", "json_schema": {"name": "x"}})
            )),
            "response_format.json_schema.schema: is required"
        );
        assert_eq!(
            chat_err(base(json!({"type": "yaml"}))),
            "response_format.type: unsupported type `yaml` (expected text, json_object or json_schema)"
        );
    }

    #[test]
    fn chat_request_options_and_extras() {
        let out = chat(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 42,
            "stop": "END",
            "frequency_penalty": 0.5,
            "presence_penalty": -0.5,
            "max_tokens": 100,
            "max_completion_tokens": 50,
            "n": 1,
            "user": "ignored",
            "logit_bias": {"1": 2},
            "options": {"num_ctx": 8192, "temperature": 1.5},
            "keep_alive": "10m",
            "think": true,
            "stream": true,
        }));
        assert_eq!(
            out,
            json!({
                "model": "llama3.2",
                "messages": [{"role": "user", "content": "hi"}],
                "options": {
                    "num_ctx": 8192,
                    "temperature": 0.2,
                    "top_p": 0.9,
                    "seed": 42,
                    "stop": ["END"],
                    "frequency_penalty": 0.5,
                    "presence_penalty": -0.5,
                    "num_predict": 50,
                },
                "keep_alive": "10m",
                "think": true,
                "stream": true,
            })
        );
    }

    #[test]
    fn chat_request_stop_array_max_tokens_and_nulls() {
        let out = chat(json!({
            "messages": [{"role": "user", "content": "hi"}],
            "stop": ["a", "b"],
            "max_tokens": 7,
            "temperature": null,
            "stream": null,
        }));
        assert_eq!(
            out["options"],
            json!({"stop": ["a", "b"], "num_predict": 7})
        );
        assert_eq!(out["stream"], json!(false));
    }

    #[test]
    fn chat_request_errors() {
        assert_eq!(chat_err(json!({})), "messages: is required");
        assert_eq!(
            chat_err(json!({"messages": []})),
            "messages: must be a non-empty array"
        );
        assert_eq!(
            chat_err(json!({"messages": "hi"})),
            "messages: must be a non-empty array"
        );
        assert_eq!(
            chat_err(json!({"messages": ["hi"]})),
            "messages[0]: must be an object"
        );
        assert_eq!(
            chat_err(json!({"messages": [{"content": "hi"}]})),
            "messages[0].role: is required"
        );
        assert_eq!(
            chat_err(
                json!({"messages": [{"role": "user", "content": "a"}, {"role": "function", "content": "x"}]})
            ),
            "messages[1].role: unsupported role `function` (expected system, developer, user, assistant or tool)"
        );
        let msgs = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(
            chat_err(json!({"messages": msgs, "n": 2})),
            "n > 1 is not supported"
        );
        assert_eq!(
            chat_err(json!({"messages": msgs, "temperature": "hot"})),
            "temperature: must be a number"
        );
        assert_eq!(
            chat_err(json!({"messages": msgs, "max_tokens": 1.5})),
            "max_tokens: must be an integer"
        );
        assert_eq!(
            chat_err(json!({"messages": msgs, "stop": [1]})),
            "stop: must be a string or an array of strings"
        );
        assert_eq!(
            chat_err(json!({"messages": msgs, "stream": "yes"})),
            "stream: must be a boolean"
        );
        assert_eq!(
            chat_err(json!({"messages": msgs, "options": 3})),
            "options: must be an object"
        );
    }

    #[test]
    fn translate_error_to_openai_sets_param() {
        let err = chat_request(&obj(json!({"messages": [], "model": "m"})), "m").unwrap_err();
        assert_eq!(
            err.to_openai(),
            json!({"error": {
                "message": "messages: must be a non-empty array",
                "type": "invalid_request_error",
                "param": "messages",
                "code": null,
            }})
        );
    }

    #[test]
    fn request_flags() {
        let body = obj(
            json!({"stream": true, "stream_options": {"include_usage": true}, "encoding_format": "base64"}),
        );
        assert!(wants_stream(&body));
        assert!(include_usage(&body));
        assert!(embeddings_base64(&body));
        let empty = Map::new();
        assert!(!wants_stream(&empty));
        assert!(!include_usage(&empty));
        assert!(!embeddings_base64(&empty));
    }

    // ---- completion and embedding requests --------------------------------------------------

    #[test]
    fn completion_request_maps_prompt_and_options() {
        let out = completion_request(
            &obj(json!({
                "model": "gpt-3.5-turbo-instruct",
                "prompt": ["def fib(n):"],
                "suffix": "\n\nprint(fib(10))",
                "max_tokens": 64,
                "temperature": 0,
                "top_p": 1,
                "seed": 3,
                "stop": ["\n\n"],
                "echo": true,
                "keep_alive": -1,
            })),
            "qwen2.5-coder",
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({
                "model": "qwen2.5-coder",
                "prompt": "def fib(n):",
                "suffix": "\n\nprint(fib(10))",
                "options": {"num_predict": 64, "temperature": 0, "top_p": 1, "seed": 3, "stop": ["\n\n"]},
                "keep_alive": -1,
                "stream": false,
            })
        );
        let out = completion_request(&obj(json!({"prompt": "hi", "stream": true})), "m").unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"model": "m", "prompt": "hi", "stream": true})
        );
    }

    #[test]
    fn completion_request_errors() {
        let err = |v: Value| completion_request(&obj(v), "m").unwrap_err().to_string();
        assert_eq!(err(json!({})), "prompt: is required");
        assert_eq!(
            err(json!({"prompt": ["a", "b"]})),
            "prompt: several prompts in one request are not supported; send one prompt per request"
        );
        assert_eq!(
            err(json!({"prompt": [1, 2, 3]})),
            "prompt: token-id prompts are not supported; send text"
        );
        assert_eq!(err(json!({"prompt": []})), "prompt: must not be empty");
        assert_eq!(
            err(json!({"prompt": 5})),
            "prompt: must be a string or an array of one string"
        );
        assert_eq!(
            err(json!({"prompt": "x", "n": 3})),
            "n > 1 is not supported"
        );
        assert_eq!(
            err(json!({"prompt": "x", "suffix": 1})),
            "suffix: must be a string"
        );
    }

    #[test]
    fn embeddings_request_maps_input_and_dimensions() {
        let out = embeddings_request(
            &obj(json!({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 256, "encoding_format": "float", "user": "u"})),
            "nomic-embed-text",
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"model": "nomic-embed-text", "input": ["a", "b"], "dimensions": 256})
        );
        let out = embeddings_request(
            &obj(json!({"input": "one", "encoding_format": "base64", "keep_alive": "5m", "truncate": false})),
            "e",
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"model": "e", "input": "one", "keep_alive": "5m", "truncate": false})
        );
    }

    #[test]
    fn embeddings_request_errors() {
        let err = |v: Value| embeddings_request(&obj(v), "m").unwrap_err().to_string();
        assert_eq!(err(json!({})), "input: is required");
        assert_eq!(err(json!({"input": []})), "input: must not be empty");
        assert_eq!(
            err(json!({"input": [1, 2]})),
            "input: token-id inputs are not supported; send text"
        );
        assert_eq!(
            err(json!({"input": [[1, 2]]})),
            "input: token-id inputs are not supported; send text"
        );
        assert_eq!(
            err(json!({"input": ["a", 1]})),
            "input: must be a string or an array of strings"
        );
        assert_eq!(
            err(json!({"input": "a", "encoding_format": "int8"})),
            "encoding_format: unsupported value `int8` (expected float or base64)"
        );
        assert_eq!(
            err(json!({"input": "a", "dimensions": 0})),
            "dimensions: must be positive"
        );
    }

    // ---- non-streaming responses ------------------------------------------------------------

    fn ollama_chat_done(message: Value, done_reason: &str) -> Value {
        json!({
            "model": "llama3.2",
            "created_at": "2024-07-22T20:33:28.123648Z",
            "message": message,
            "done": true,
            "done_reason": done_reason,
            "total_duration": 5_191_566_416_u64,
            "load_duration": 2_154_458,
            "prompt_eval_count": 26,
            "prompt_eval_duration": 383_809_000,
            "eval_count": 298,
            "eval_duration": 4_799_921_000_u64,
        })
    }

    #[test]
    fn chat_response_text() {
        let out = chat_response(
            &ollama_chat_done(json!({"role": "assistant", "content": "Hello!"}), "stop"),
            "chatcmpl-1",
            "gpt-4o",
            1_700_000_000,
        );
        assert_eq!(
            out,
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "gpt-4o",
                "system_fingerprint": "fp_ollama",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello!"},
                    "logprobs": null,
                    "finish_reason": "stop",
                }],
                "usage": {"prompt_tokens": 26, "completion_tokens": 298, "total_tokens": 324},
            })
        );
    }

    #[test]
    fn chat_response_length_thinking_and_missing_counts() {
        let out = chat_response(
            &json!({"message": {"role": "assistant", "content": "abc", "thinking": "hmm"}, "done": true, "done_reason": "length"}),
            "id",
            "m",
            1,
        );
        assert_eq!(
            out["choices"][0],
            json!({
                "index": 0,
                "message": {"role": "assistant", "content": "abc", "reasoning": "hmm"},
                "logprobs": null,
                "finish_reason": "length",
            })
        );
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        );
        let out = chat_response(
            &json!({"message": {"role": "assistant", "content": "x", "thinking": ""}, "done": true}),
            "id",
            "m",
            1,
        );
        assert_eq!(
            out["choices"][0]["message"],
            json!({"role": "assistant", "content": "x"})
        );
        assert_eq!(out["choices"][0]["finish_reason"], json!("stop"));
    }

    #[test]
    fn chat_response_tool_calls() {
        let out = chat_response(
            &ollama_chat_done(
                json!({"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}},
                    {"function": {"index": 1, "name": "get_time", "arguments": {}}},
                ]}),
                "stop",
            ),
            "chatcmpl-7",
            "m",
            5,
        );
        let suffix = format!("{:016x}", fnv1a("chatcmpl-7"));
        assert_eq!(
            out["choices"],
            json!([{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [
                        {"id": format!("call_0_{suffix}"), "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"c\"}"}},
                        {"id": format!("call_1_{suffix}"), "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                    ],
                },
                "logprobs": null,
                "finish_reason": "tool_calls",
            }])
        );
        // Deterministic: same id, same tool-call ids; different id, different ids.
        assert_eq!(tool_call_id("chatcmpl-7", 0), format!("call_0_{suffix}"));
        assert_ne!(tool_call_id("chatcmpl-8", 0), tool_call_id("chatcmpl-7", 0));
    }

    #[test]
    fn chat_response_keeps_content_beside_tool_calls() {
        let out = chat_response(
            &json!({"message": {"role": "assistant", "content": "Let me check.", "tool_calls": [
                {"function": {"name": "f", "arguments": {"a": 1}}},
            ]}, "done": true}),
            "x",
            "m",
            0,
        );
        assert_eq!(
            out["choices"][0]["message"]["content"],
            json!("Let me check.")
        );
        assert_eq!(out["choices"][0]["finish_reason"], json!("tool_calls"));
    }

    #[test]
    fn completion_response_maps_text_and_usage() {
        let out = completion_response(
            &json!({"model": "m", "response": "42", "done": true, "done_reason": "length", "prompt_eval_count": 3, "eval_count": 1}),
            "cmpl-1",
            "gpt-3.5-turbo-instruct",
            9,
        );
        assert_eq!(
            out,
            json!({
                "id": "cmpl-1",
                "object": "text_completion",
                "created": 9,
                "model": "gpt-3.5-turbo-instruct",
                "system_fingerprint": "fp_ollama",
                "choices": [{"text": "42", "index": 0, "logprobs": null, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            })
        );
    }

    #[test]
    fn embeddings_response_float_and_base64() {
        let ollama = json!({
            "model": "nomic-embed-text",
            "embeddings": [[1.0, -2.0], [0.5, 0.0]],
            "total_duration": 14_143_917,
            "prompt_eval_count": 8,
        });
        assert_eq!(
            embeddings_response(&ollama, "text-embedding-3-small", false),
            json!({
                "object": "list",
                "data": [
                    {"object": "embedding", "index": 0, "embedding": [1.0, -2.0]},
                    {"object": "embedding", "index": 1, "embedding": [0.5, 0.0]},
                ],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 8, "total_tokens": 8},
            })
        );
        // 1.0f32 = 00 00 80 3F, -2.0f32 = 00 00 00 C0, 0.5f32 = 00 00 00 3F, 0.0 = 00 00 00 00.
        assert_eq!(
            embeddings_response(&ollama, "e", true)["data"],
            json!([
                {"object": "embedding", "index": 0, "embedding": "AACAPwAAAMA="},
                {"object": "embedding", "index": 1, "embedding": "AAAAPwAAAAA="},
            ])
        );
    }

    #[test]
    fn embeddings_response_legacy_single_embedding() {
        let out = embeddings_response(&json!({"embedding": [0.25]}), "e", false);
        assert_eq!(
            out,
            json!({
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.25]}],
                "model": "e",
                "usage": {"prompt_tokens": 0, "total_tokens": 0},
            })
        );
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    // ---- streaming --------------------------------------------------------------------------

    fn chat_chunk(delta: Value, finish: Value) -> Value {
        json!({
            "id": "chatcmpl-s",
            "object": "chat.completion.chunk",
            "created": 100,
            "model": "gpt-4o",
            "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    }

    fn piece(content: &str) -> Value {
        json!({"model": "llama3.2", "created_at": "t", "message": {"role": "assistant", "content": content}, "done": false})
    }

    #[test]
    fn chat_stream_text_sequence_without_usage() {
        let mut s = ChatStream::new("chatcmpl-s", "gpt-4o", 100, false);
        assert!(!s.finished());
        assert_eq!(
            s.chunk(&piece("Hel")),
            vec![
                chat_chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chat_chunk(json!({"content": "Hel"}), Value::Null),
            ]
        );
        assert_eq!(s.chunk(&piece("")), Vec::<Value>::new());
        assert_eq!(
            s.chunk(&piece("lo")),
            vec![chat_chunk(json!({"content": "lo"}), Value::Null)]
        );
        let done = ollama_chat_done(json!({"role": "assistant", "content": ""}), "stop");
        assert_eq!(s.chunk(&done), vec![chat_chunk(json!({}), json!("stop"))]);
        assert!(s.finished());
        // Anything after Ollama's final chunk is ignored.
        assert_eq!(s.chunk(&piece("late")), Vec::<Value>::new());
    }

    #[test]
    fn chat_stream_with_usage_tool_calls_and_thinking() {
        let with_usage = |delta: Value, finish: Value| {
            let mut c = chat_chunk(delta, finish);
            c["usage"] = Value::Null;
            c
        };
        let mut s = ChatStream::new("chatcmpl-s", "gpt-4o", 100, true);
        let thinking = json!({"message": {"role": "assistant", "content": "", "thinking": "let me see"}, "done": false});
        assert_eq!(
            s.chunk(&thinking),
            vec![
                with_usage(json!({"role": "assistant", "content": ""}), Value::Null),
                with_usage(json!({"reasoning": "let me see"}), Value::Null),
            ]
        );
        let suffix = format!("{:016x}", fnv1a("chatcmpl-s"));
        let call1 = json!({"message": {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        ]}, "done": false});
        assert_eq!(
            s.chunk(&call1),
            vec![with_usage(
                json!({"tool_calls": [{"index": 0, "id": format!("call_0_{suffix}"), "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}),
                Value::Null
            )]
        );
        let call2 = json!({"message": {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_time", "arguments": {"tz": "CET"}}},
        ]}, "done": false});
        assert_eq!(
            s.chunk(&call2),
            vec![with_usage(
                json!({"tool_calls": [{"index": 1, "id": format!("call_1_{suffix}"), "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}}]}),
                Value::Null
            )]
        );
        let done = ollama_chat_done(json!({"role": "assistant", "content": ""}), "stop");
        assert_eq!(
            s.chunk(&done),
            vec![
                with_usage(json!({}), json!("tool_calls")),
                json!({
                    "id": "chatcmpl-s",
                    "object": "chat.completion.chunk",
                    "created": 100,
                    "model": "gpt-4o",
                    "system_fingerprint": "fp_ollama",
                    "choices": [],
                    "usage": {"prompt_tokens": 26, "completion_tokens": 298, "total_tokens": 324},
                }),
            ]
        );
        assert!(s.finished());
    }

    #[test]
    fn chat_stream_single_final_chunk_with_content_and_length() {
        let mut s = ChatStream::new("chatcmpl-s", "gpt-4o", 100, false);
        let only = json!({"message": {"role": "assistant", "content": "all at once"}, "done": true, "done_reason": "length", "eval_count": 3});
        assert_eq!(
            s.chunk(&only),
            vec![
                chat_chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                chat_chunk(json!({"content": "all at once"}), Value::Null),
                chat_chunk(json!({}), json!("length")),
            ]
        );
        assert!(s.finished());
    }

    #[test]
    fn chat_stream_error_chunk() {
        let mut s = ChatStream::new("chatcmpl-s", "gpt-4o", 100, false);
        assert_eq!(
            s.chunk(&json!({"error": "model runner has unexpectedly stopped"})),
            vec![json!({"error": {
                "message": "model runner has unexpectedly stopped",
                "type": "server_error",
                "param": null,
                "code": null,
            }})]
        );
        assert!(!s.finished());
    }

    #[test]
    fn completion_stream_sequence() {
        let chunk = |text: &str, finish: Value| {
            json!({
                "id": "cmpl-s",
                "object": "text_completion",
                "created": 7,
                "model": "m",
                "system_fingerprint": "fp_ollama",
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
            })
        };
        let mut s = CompletionStream::new("cmpl-s", "m", 7, false);
        assert_eq!(
            s.chunk(&json!({"response": "Once", "done": false})),
            vec![chunk("Once", Value::Null)]
        );
        assert_eq!(
            s.chunk(&json!({"response": "", "done": false})),
            Vec::<Value>::new()
        );
        assert_eq!(
            s.chunk(&json!({"response": " upon", "done": false})),
            vec![chunk(" upon", Value::Null)]
        );
        assert!(!s.finished());
        assert_eq!(
            s.chunk(&json!({"response": "", "done": true, "done_reason": "stop", "prompt_eval_count": 2, "eval_count": 2})),
            vec![chunk("", json!("stop"))]
        );
        assert!(s.finished());
        assert_eq!(
            s.chunk(&json!({"response": "x", "done": false})),
            Vec::<Value>::new()
        );
    }

    #[test]
    fn completion_stream_with_usage_and_error() {
        let mut s = CompletionStream::new("cmpl-s", "m", 7, true);
        let out = s.chunk(&json!({"response": "a", "done": true, "done_reason": "length", "prompt_eval_count": 2, "eval_count": 1}));
        assert_eq!(
            out,
            vec![
                json!({
                    "id": "cmpl-s", "object": "text_completion", "created": 7, "model": "m",
                    "system_fingerprint": "fp_ollama", "usage": null,
                    "choices": [{"text": "a", "index": 0, "logprobs": null, "finish_reason": null}],
                }),
                json!({
                    "id": "cmpl-s", "object": "text_completion", "created": 7, "model": "m",
                    "system_fingerprint": "fp_ollama", "usage": null,
                    "choices": [{"text": "", "index": 0, "logprobs": null, "finish_reason": "length"}],
                }),
                json!({
                    "id": "cmpl-s", "object": "text_completion", "created": 7, "model": "m",
                    "system_fingerprint": "fp_ollama", "choices": [],
                    "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
                }),
            ]
        );
        let mut s = CompletionStream::new("cmpl-s", "m", 7, true);
        assert_eq!(
            s.chunk(&json!({"error": {"message": "out of memory"}})),
            vec![openai_error("out of memory", "server_error", None)]
        );
    }

    // ---- errors -----------------------------------------------------------------------------

    #[test]
    fn error_payload_shapes() {
        assert_eq!(
            openai_error(
                "model not found",
                "invalid_request_error",
                Some("model_not_found")
            ),
            json!({"error": {"message": "model not found", "type": "invalid_request_error", "param": null, "code": "model_not_found"}})
        );
        assert_eq!(ollama_error("no nodes"), json!({"error": "no nodes"}));
    }

    #[test]
    fn error_message_extraction() {
        assert_eq!(
            error_message(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            error_message(br#"{"error":{"message":"bad key","type":"invalid_request_error","param":null,"code":null}}"#),
            "bad key"
        );
        assert_eq!(error_message(b"  \n502 Bad Gateway\n "), "502 Bad Gateway");
        assert_eq!(error_message(br#"{"detail":"x"}"#), r#"{"detail":"x"}"#);
        assert_eq!(error_message(b""), "");
        assert_eq!(error_message(b"bad \xff byte"), "bad \u{fffd} byte");
        let long = "é".repeat(600);
        assert_eq!(error_message(long.as_bytes()), "é".repeat(500));
        let long_json = serde_json::to_vec(&json!({"error": "x".repeat(900)})).unwrap();
        assert_eq!(error_message(&long_json), "x".repeat(500));
    }
}
