//! OpenAI Responses ⇄ Ollama, field by field.

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;

fn native(body: Value) -> Result<Value, ClientError> {
    let obj = RawObject::parse(Bytes::from(body.to_string())).unwrap();
    let (n, _) = to_ollama(&obj, "m:1b")?;
    Ok(serde_json::from_slice(n.bytes()).unwrap())
}

#[test]
fn input_items_become_ollama_chat() {
    let v = native(json!({
        "model": "gpt-x", "instructions": "Be brief.", "max_output_tokens": 50,
        "reasoning": {"effort": "high"}, "stream": true,
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": true}],
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
        "input": [
            {"role": "user", "content": "hi"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "see"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "done"}
        ]
    }))
    .unwrap();
    assert_eq!(v["think"], "high");
    assert_eq!(v["format"], json!({"type": "object"}));
    assert_eq!(v["options"]["num_predict"], 50);
    assert_eq!(v["tools"][0]["function"]["name"], "f");
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(m[1], json!({"role": "user", "content": "hi"}));
    assert_eq!(
        m[2],
        json!({"role": "user", "content": "see", "images": ["AAAA"]})
    );
    assert_eq!(
        m[3]["tool_calls"][0]["function"],
        json!({"name": "f", "arguments": {"a": 1}})
    );
    assert_eq!(
        m[4],
        json!({"role": "tool", "content": "done", "tool_name": "f"})
    );
    let v = native(json!({"model": "m", "input": "plain"})).unwrap();
    assert_eq!(v["messages"], json!([{"role": "user", "content": "plain"}]));
}

#[test]
fn state_and_unsupported_inputs_are_refused() {
    let e =
        native(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"})).unwrap_err();
    assert!(e.message.contains("whole conversation"), "{}", e.message);
    assert!(
        native(json!({"model": "m"}))
            .unwrap_err()
            .message
            .contains("input")
    );
    let e = native(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://x/a.png"}]}]}))
    .unwrap_err();
    assert!(e.message.contains("`data:` URL"), "{}", e.message);
    let e =
        native(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})).unwrap_err();
    assert!(e.message.contains("function"), "{}", e.message);
    assert!(native(json!({"model": "m", "input": "x", "reasoning": {"effort": "huge"}})).is_err());
}

#[test]
fn an_answer_becomes_a_response_object() {
    let r = response_object(
        &json!({"message": {"content": "Hi", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
            "done_reason": "stop", "prompt_eval_count": 2, "eval_count": 3}),
        "resp_1",
        "gpt-x",
        7,
    );
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert_eq!(
        r["output"][0]["content"][0],
        json!({"type": "output_text", "text": "Hi", "annotations": []})
    );
    assert_eq!(r["output"][1]["type"], "function_call");
    assert_eq!(r["output"][1]["arguments"], "{\"a\":1}");
    assert_eq!(r["usage"]["total_tokens"], 5);
    let r = response_object(
        &json!({"message": {"content": "x"}, "done_reason": "length"}),
        "resp_2",
        "m",
        0,
    );
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
}

#[test]
fn a_stream_follows_the_sdk_helpers_rules() {
    let mut s = ResponsesStream::new("resp_1", "gpt-x", 7);
    let mut frames = Vec::new();
    for c in [
        json!({"message": {"thinking": "hm"}, "done": false}),
        json!({"message": {"content": "Hel"}, "done": false}),
        json!({"message": {"content": "lo"}, "done": false}),
        json!({"message": {"tool_calls": [{"function": {"name": "f", "arguments": {}}}]}, "done": false}),
        json!({"done": true, "done_reason": "stop", "prompt_eval_count": 1, "eval_count": 2}),
    ] {
        frames.extend(s.chunk(&c));
    }
    let ev: Vec<Value> = frames
        .iter()
        .map(|f| {
            let t = std::str::from_utf8(f).unwrap();
            serde_json::from_str(t.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap()
        })
        .collect();
    assert_eq!(ev[0]["type"], "response.created");
    assert_eq!(ev.last().unwrap()["type"], "response.completed");
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["sequence_number"], i, "{e}");
    }
    // Every item added is done, text deltas come after their part.
    let count = |t: &str| ev.iter().filter(|e| e["type"] == t).count();
    assert_eq!(count("response.output_item.added"), 3);
    assert_eq!(count("response.output_item.done"), 3);
    let part = ev
        .iter()
        .position(|e| e["type"] == "response.content_part.added")
        .unwrap();
    let delta = ev
        .iter()
        .position(|e| e["type"] == "response.output_text.delta")
        .unwrap();
    assert!(part < delta);
    let done = ev.last().unwrap();
    assert_eq!(done["response"]["output"].as_array().unwrap().len(), 3);
    assert_eq!(done["response"]["output"][1]["content"][0]["text"], "Hello");
    assert_eq!(done["response"]["usage"]["output_tokens"], 2);
    assert_eq!(done["response"]["id"], ev[0]["response"]["id"]);
}
