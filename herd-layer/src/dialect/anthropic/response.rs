//! Ollama's whole chat answer → an Anthropic `message`.

use serde_json::{Value, json};

/// The arguments of an Ollama tool call as an object (a string is parsed).
pub(super) fn arguments(call: &Value) -> Value {
    match call.get("function").and_then(|f| f.get("arguments")) {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!({})),
        Some(v @ Value::Object(_)) => v.clone(),
        _ => json!({}),
    }
}

/// A tool call's id: the node's, or one derived from the message id.
pub(super) fn tool_id(call: &Value, id: &str, i: usize) -> String {
    call.get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map_or_else(
            || format!("toolu_{}_{i}", id.trim_start_matches("msg_")),
            str::to_string,
        )
}

/// Anthropic's `stop_reason` for Ollama's `done_reason`.
pub(super) fn stop_reason(done_reason: Option<&str>, tool_calls: bool) -> &'static str {
    if tool_calls {
        return "tool_use";
    }
    match done_reason {
        Some("length") => "max_tokens",
        Some("stop") | None | Some("") => "end_turn",
        Some(_) => "stop_sequence",
    }
}

pub(super) fn count(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// An Ollama `/api/chat` answer (not streamed) → an Anthropic message.
pub fn message_response(ollama: &Value, id: &str, model: &str) -> Value {
    let m = ollama.get("message");
    let text = m
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let thinking = m
        .and_then(|m| m.get("thinking"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let calls: &[Value] = m
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let mut content = Vec::new();
    if !thinking.is_empty() {
        content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
    }
    if !text.is_empty() || (calls.is_empty() && thinking.is_empty()) {
        content.push(json!({"type": "text", "text": text}));
    }
    for (i, c) in calls.iter().enumerate() {
        content.push(json!({
            "type": "tool_use",
            "id": tool_id(c, id, i),
            "name": c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or(""),
            "input": arguments(c),
        }));
    }
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(ollama.get("done_reason").and_then(Value::as_str), !calls.is_empty()),
        "stop_sequence": null,
        "usage": {
            "input_tokens": count(ollama, "prompt_eval_count"),
            "output_tokens": count(ollama, "eval_count"),
        },
    })
}
