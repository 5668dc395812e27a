//! Anthropic Messages ⇄ Ollama, field by field.

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;

fn native(body: Value) -> Result<Value, ClientError> {
    let obj = RawObject::parse(Bytes::from(body.to_string())).unwrap();
    let (n, _) = to_ollama(&obj, "m:1b")?;
    Ok(serde_json::from_slice(n.bytes()).unwrap())
}

#[test]
fn a_conversation_becomes_ollama_chat() {
    let v = native(json!({
        "model": "claude-x", "max_tokens": 100, "stream": true,
        "system": [{"type": "text", "text": "Be brief."}],
        "temperature": 0.2, "top_k": 5, "stop_sequences": ["END"],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "What is the weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "check", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "And now?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}
        ]
    }))
    .unwrap();
    assert_eq!(v["model"], "m:1b");
    assert_eq!(v["stream"], true);
    assert_eq!(v["think"], true);
    assert_eq!(
        v["options"],
        json!({"num_predict": 100, "temperature": 0.2, "top_k": 5, "stop": ["END"]})
    );
    assert_eq!(v["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        v["tools"][0]["function"]["parameters"],
        json!({"type": "object"})
    );
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(
        m[1],
        json!({"role": "user", "content": "What is the weather?"})
    );
    assert_eq!(m[2]["thinking"], "check");
    assert_eq!(m[2]["content"], "Checking.");
    assert_eq!(
        m[2]["tool_calls"][0]["function"],
        json!({"name": "get_weather", "arguments": {"city": "Paris"}})
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "content": "18C", "tool_name": "get_weather", "tool_call_id": "toolu_1"})
    );
    assert_eq!(
        m[4],
        json!({"role": "user", "content": "And now?", "images": ["AAAA"]})
    );
}

#[test]
fn what_cannot_be_served_is_refused_with_reasons() {
    let base =
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        native(b).unwrap_err().message
    };
    assert!(with("max_tokens", json!(0)).contains("max_tokens"));
    assert!(with("messages", json!([])).contains("empty"));
    assert!(with("messages", json!([{"role": "system", "content": "x"}])).contains("role"));
    let url = with(
        "messages",
        json!([{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/a.png"}}]}]),
    );
    assert!(url.contains("base64"), "{url}");
    assert!(with("thinking", json!({"type": "sometimes"})).contains("thinking"));
}

#[test]
fn an_answer_becomes_a_message() {
    let r = message_response(
        &json!({"message": {"role": "assistant", "content": "Hi", "thinking": "hm",
            "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            "done": true, "done_reason": "stop", "prompt_eval_count": 5, "eval_count": 9}),
        "msg_1",
        "claude-x",
    );
    assert_eq!(r["type"], "message");
    assert_eq!(r["model"], "claude-x");
    let kinds: Vec<&str> = r["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["thinking", "text", "tool_use"]);
    assert_eq!(r["content"][2]["input"], json!({"a": 1}));
    assert_eq!(r["stop_reason"], "tool_use");
    assert_eq!(r["usage"], json!({"input_tokens": 5, "output_tokens": 9}));
    let r = message_response(
        &json!({"message": {"content": "x"}, "done_reason": "length"}),
        "msg_2",
        "m",
    );
    assert_eq!(r["stop_reason"], "max_tokens");
}

fn events(frames: &[Bytes]) -> Vec<(String, Value)> {
    frames
        .iter()
        .map(|f| {
            let t = std::str::from_utf8(f).unwrap();
            let mut lines = t.lines();
            let name = lines
                .next()
                .unwrap()
                .strip_prefix("event: ")
                .unwrap()
                .to_string();
            let data: Value =
                serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                    .unwrap();
            assert_eq!(data["type"], name.as_str(), "data.type names the event");
            assert!(t.ends_with("\n\n"));
            (name, data)
        })
        .collect()
}

#[test]
fn a_stream_becomes_named_events_in_order() {
    let mut s = MessagesStream::new("msg_1", "claude-x", 7);
    let mut out = Vec::new();
    for c in [
        json!({"message": {"thinking": "let me"}, "done": false}),
        json!({"message": {"content": "Hel"}, "done": false}),
        json!({"message": {"content": "lo"}, "done": false}),
        json!({"message": {"tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]}, "done": false}),
        json!({"message": {"content": ""}, "done": true, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 4}),
    ] {
        out.extend(s.chunk(&c));
    }
    assert!(s.finished());
    let ev = events(&out);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(ev[0].1["message"]["usage"]["input_tokens"], 7);
    assert_eq!(ev[1].1["content_block"]["type"], "thinking");
    assert_eq!(
        ev[2].1["delta"],
        json!({"type": "thinking_delta", "thinking": "let me"})
    );
    assert_eq!(ev[4].1["index"], 1);
    assert_eq!(
        ev[6].1["delta"],
        json!({"type": "text_delta", "text": "lo"})
    );
    assert_eq!(ev[8].1["content_block"]["type"], "tool_use");
    assert_eq!(
        ev[9].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"x\":1}"})
    );
    assert_eq!(ev[11].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(ev[11].1["usage"]["output_tokens"], 4);
    let errs = events(&MessagesStream::new("msg_2", "m", 1).chunk(&json!({"error": "oom"})));
    assert_eq!(errs.last().unwrap().0, "error");
}

#[test]
fn count_tokens_needs_no_max_tokens() {
    let obj = RawObject::parse(Bytes::from(
        json!({"model": "m", "system": "x".repeat(400), "messages": [{"role": "user", "content": "y".repeat(400)}]}).to_string(),
    ))
    .unwrap();
    let n = count_tokens(&obj).unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    assert!((200..260).contains(&n), "{n}");
}
