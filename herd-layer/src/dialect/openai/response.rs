//! Ollama's native answers → OpenAI's (non-streamed).

use serde_json::{Value, json};

use super::FINGERPRINT;

pub(super) fn count(ollama: &Value, key: &str) -> u64 {
    ollama.get(key).and_then(Value::as_u64).unwrap_or(0)
}

pub(super) fn usage(ollama: &Value) -> Value {
    let prompt = count(ollama, "prompt_eval_count");
    let completion = count(ollama, "eval_count");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        // A node's counts are its own business; their sum must not overflow.
        "total_tokens": prompt.saturating_add(completion),
    })
}

pub(super) fn finish_reason(ollama: &Value, tool_calls: bool) -> &'static str {
    if tool_calls {
        "tool_calls"
    } else if ollama.get("done_reason").and_then(Value::as_str) == Some("length") {
        "length"
    } else {
        "stop"
    }
}

/// FNV-1a, 64 bit: a stable, dependency-free hash for deterministic tool-call ids.
pub(super) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `call_<n>_<suffix>`: unique within a response (by `n`), distinct across responses (by the
/// response id), and reproducible (no randomness).
pub(super) fn tool_call_id(response_id: &str, n: usize) -> String {
    format!("call_{n}_{:016x}", fnv1a(response_id))
}

/// Ollama `tool_calls` → OpenAI `tool_calls`, numbering from `first_index`.
pub(super) fn openai_tool_calls(
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

pub(super) fn message_tool_calls(message: Option<&Value>) -> &[Value] {
    message
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

pub(super) fn message_str<'a>(message: Option<&'a Value>, key: &str) -> &'a str {
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
pub(super) fn base64(bytes: &[u8]) -> String {
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
