//! Ollama's whole chat answer → an OpenAI Responses `response` object.

use serde_json::{Value, json};

pub(super) fn count(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// The arguments of an Ollama tool call as a JSON string.
pub(super) fn arguments(call: &Value) -> String {
    match call.get("function").and_then(|f| f.get("arguments")) {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "{}".into(),
    }
}

pub(super) fn usage(ollama: &Value) -> Value {
    let (i, o) = (
        count(ollama, "prompt_eval_count"),
        count(ollama, "eval_count"),
    );
    json!({
        "input_tokens": i,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": o,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": i + o,
    })
}

/// The response object around `output`, in `status`.
pub(super) fn envelope(id: &str, model: &str, created: i64, status: &str, output: Value) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "store": false,
    })
}

/// The output items of a whole answer: reasoning, message, function calls.
pub(super) fn output_items(ollama: &Value, id: &str) -> Vec<Value> {
    let bare = id.trim_start_matches("resp_");
    let m = ollama.get("message");
    let s = |k: &str| {
        m.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let calls: &[Value] = m
        .and_then(|m| m.get("tool_calls"))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let mut out = Vec::new();
    if !s("thinking").is_empty() {
        out.push(json!({"id": format!("rs_{bare}"), "type": "reasoning",
            "summary": [{"type": "summary_text", "text": s("thinking")}]}));
    }
    if !s("content").is_empty() || calls.is_empty() {
        out.push(
            json!({"id": format!("msg_{bare}"), "type": "message", "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": s("content"), "annotations": []}]}),
        );
    }
    for (i, c) in calls.iter().enumerate() {
        out.push(json!({"id": format!("fc_{bare}_{i}"), "type": "function_call", "status": "completed",
            "call_id": c.get("id").and_then(Value::as_str).map_or_else(|| format!("call_{bare}_{i}"), str::to_string),
            "name": c.get("function").and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or(""),
            "arguments": arguments(c)}));
    }
    out
}

/// An Ollama `/api/chat` answer (not streamed) → a `response` object. A
/// generation cut by the token cap is `incomplete`, as OpenAI reports it.
pub fn response_object(ollama: &Value, id: &str, model: &str, created: i64) -> Value {
    let length = ollama.get("done_reason").and_then(Value::as_str) == Some("length");
    let mut r = envelope(
        id,
        model,
        created,
        if length { "incomplete" } else { "completed" },
        Value::Array(output_items(ollama, id)),
    );
    if length {
        r["incomplete_details"] = json!({"reason": "max_output_tokens"});
    }
    r["usage"] = usage(ollama);
    r
}
