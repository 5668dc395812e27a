//! The OpenAI ⇄ Ollama translation, field by field.

use super::request::*;
use super::response::*;
use super::stream::*;
use super::*;
use crate::dialect::error_message;
use crate::dialect::ollama::ollama_error;

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
        format!(
            "messages[0].content[0].image_url.url: {}",
            crate::dialect::REMOTE_IMAGE
        )
    );
    assert_eq!(err.param(), "messages[0].content[0].image_url.url");
    assert_eq!(
        chat_err(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "HTTP://example.com/cat.png"}},
        ]}]})),
        format!(
            "messages[0].content[0].image_url.url: {}",
            crate::dialect::REMOTE_IMAGE
        )
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
    let base =
        |rf: Value| json!({"messages": [{"role": "user", "content": "hi"}], "response_format": rf});
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
