//! The simulated device's Anthropic Messages and OpenAI Responses routes,
//! thinking, capabilities and model management, over real sockets, as
//! Ollama's own clients and herd see them.

use std::collections::BTreeSet;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use herd_node::agent::StateSource;
use herd_node::config::{GIB, ModelSpec};
use herd_node::ollama::{OllamaClient, OllamaLimits, RealSource};
use herd_node::{Device, DeviceConfig, DeviceHandle};

type Http = Client<HttpConnector, Full<Bytes>>;

fn client() -> Http {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// A fast device of Ollama `version` with a plain model, a reasoning
/// model, one without tools, an embedding model, and a catalog.
fn config(version: &str) -> DeviceConfig {
    let tiny = ModelSpec {
        name: "tiny:1b".into(),
        size_bytes: GIB / 4,
        ..ModelSpec::default()
    };
    let reasoner = ModelSpec {
        name: "reasoner:1b".into(),
        thinking: true,
        family: "qwen3".into(),
        ..tiny.clone()
    };
    let notools = ModelSpec {
        name: "notools:1b".into(),
        tools: false,
        vision: true,
        ..tiny.clone()
    };
    let embed = ModelSpec {
        name: "embed:latest".into(),
        size_bytes: GIB / 8,
        embedding_dims: Some(64),
        ..ModelSpec::default()
    };
    DeviceConfig {
        name: "t".into(),
        ollama_version: version.into(),
        speed: 1000.0,
        ttft_base_ms: 2,
        ttft_ms_per_prompt_token: 0.0,
        load_base_ms: 5,
        load_ms_per_gb: 0,
        models: vec![tiny.clone(), reasoner, notools, embed],
        loaded: vec!["tiny:1b".into()],
        catalog: vec![ModelSpec {
            name: "base:2b".into(),
            size_bytes: 40_000_000,
            quantization: "F16".into(),
            ..tiny
        }],
        pull_bytes_per_sec: 1_000_000_000,
        ..DeviceConfig::default()
    }
}

struct Resp {
    status: u16,
    content_type: String,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("json body ({e}): {:?}", self.text()))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("ndjson line"))
            .collect()
    }

    /// `(event, data)` of each SSE event; every event must have both lines.
    fn events(&self) -> Vec<(String, Value)> {
        self.text()
            .split("\n\n")
            .filter(|b| !b.trim().is_empty())
            .map(|block| {
                let mut lines = block.lines();
                let event = lines
                    .next()
                    .and_then(|l| l.strip_prefix("event: "))
                    .unwrap_or_else(|| panic!("no event line in {block:?}"));
                let data = lines
                    .next()
                    .and_then(|l| l.strip_prefix("data: "))
                    .unwrap_or_else(|| panic!("no data line in {block:?}"));
                assert_eq!(lines.next(), None, "one event, two lines");
                (
                    event.to_owned(),
                    serde_json::from_str(data).expect("event data"),
                )
            })
            .collect()
    }
}

async fn call(d: &DeviceHandle, method: &str, path: &str, body: Bytes) -> Resp {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", d.url()))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("request");
    let resp = client().request(req).await.expect("response");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        content_type,
        body,
    }
}

async fn post(d: &DeviceHandle, path: &str, body: Value) -> Resp {
    call(d, "POST", path, Bytes::from(body.to_string())).await
}

async fn get(d: &DeviceHandle, path: &str) -> Resp {
    call(d, "GET", path, Bytes::new()).await
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(e, _)| e.as_str()).collect()
}

fn tag_names(tags: &Value) -> Vec<String> {
    tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_owned())
        .collect()
}

fn tag<'a>(tags: &'a Value, name: &str) -> &'a Value {
    tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {tags}"))
}

const WEATHER_SCHEMA: &str =
    r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;

fn weather_schema() -> Value {
    serde_json::from_str(WEATHER_SCHEMA).expect("schema")
}

// ---------------------------------------------------------------- gating

#[tokio::test]
async fn routes_and_fields_exist_from_the_version_that_added_them() {
    let msg = json!({"model": "tiny:1b", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    let resp = json!({"model": "tiny:1b", "input": "hi"});
    for (version, responses, messages, caps, ctx) in [
        ("0.9.6", false, false, false, false),
        ("0.13.2", false, false, false, true),
        ("0.13.3", true, false, false, true),
        ("0.14.0", true, true, false, true),
        ("0.29.9", true, true, false, true),
        ("0.30.0", true, true, true, true),
    ] {
        let d = Device::start(config(version), None).await.expect("start");
        let r = post(&d, "/v1/responses", resp.clone()).await;
        assert_eq!(
            r.status == 200,
            responses,
            "{version} /v1/responses: {}",
            r.status
        );
        if !responses {
            assert_eq!((r.status, r.text().as_str()), (404, "404 page not found"));
            assert_eq!(r.content_type, "text/plain");
        }
        let r = post(&d, "/v1/messages", msg.clone()).await;
        assert_eq!(
            r.status == 200,
            messages,
            "{version} /v1/messages: {}",
            r.status
        );
        if !messages {
            assert_eq!(r.status, 404);
        }
        let tags = get(&d, "/api/tags").await.json();
        let tiny = tag(&tags, "tiny:1b");
        assert_eq!(
            tiny.get("capabilities").is_some(),
            caps,
            "{version}: {tiny}"
        );
        if caps {
            assert_eq!(tiny["capabilities"], json!(["completion", "tools"]));
            assert_eq!(
                tag(&tags, "reasoner:1b")["capabilities"],
                json!(["completion", "tools", "thinking"])
            );
            assert_eq!(
                tag(&tags, "embed:latest")["capabilities"],
                json!(["embedding"])
            );
        }
        let ps = get(&d, "/api/ps").await.json();
        assert_eq!(
            ps["models"][0].get("context_length").is_some(),
            ctx,
            "{version}"
        );
        d.shutdown().await;
    }
}

// ---------------------------------------------------------------- entries

#[tokio::test]
async fn tags_ps_show_and_the_report_carry_full_entries() {
    let d = Device::start(config("0.30.0"), None).await.expect("start");
    let tags = get(&d, "/api/tags").await.json();
    let tiny = tag(&tags, "tiny:1b");
    for k in ["name", "model", "modified_at", "size", "digest", "details"] {
        assert!(tiny.get(k).is_some(), "{k} missing in {tiny}");
    }
    // Go prints RFC3339Nano: trailing zeros of the fraction dropped.
    assert_eq!(tiny["modified_at"], "2025-10-01T12:00:00Z");
    let digest = tiny["digest"].as_str().expect("digest");
    assert_eq!(digest.len(), 64);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        tiny["details"],
        json!({"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
               "parameter_size": "1B", "quantization_level": "Q4_K_M"})
    );
    let ps = get(&d, "/api/ps").await.json();
    let p = &ps["models"][0];
    for k in [
        "name",
        "model",
        "size",
        "digest",
        "details",
        "expires_at",
        "size_vram",
        "context_length",
    ] {
        assert!(p.get(k).is_some(), "{k} missing in {p}");
    }
    assert_eq!(p["digest"], digest);

    let show = post(&d, "/api/show", json!({"model": "notools:1b"}))
        .await
        .json();
    assert_eq!(show["capabilities"], json!(["completion", "vision"]));
    assert!(show["model_info"]["general.architecture"].is_string());
    assert_eq!(show["modified_at"], "2025-10-01T12:00:00Z");

    // What the device reports is what a real agent reads from its API.
    let report = d.report();
    let e = report.engine.expect("engine");
    let t = e
        .available
        .iter()
        .find(|m| m.name == "tiny:1b")
        .expect("tiny");
    assert_eq!(t.digest, digest);
    assert_eq!(t.format, "gguf");
    assert_eq!(t.families, ["llama"]);
    assert_eq!(t.modified_at_ms, 1_759_320_000_000);
    assert_eq!(t.capabilities, ["completion", "tools"]);
    assert_eq!(e.loaded[0].digest, digest);
    let real = RealSource::new(OllamaClient::new(d.url()), d.url(), OllamaLimits::default());
    let seen = real.report().await.engine.expect("engine");
    let mut sim = e.available.clone();
    let mut read = seen.available.clone();
    sim.sort_by(|a, b| a.name.cmp(&b.name));
    read.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(sim, read, "report and /api/tags must agree");
    d.shutdown().await;
}

// ---------------------------------------------------------------- thinking

#[tokio::test]
async fn thinking_models_think_and_others_refuse_like_ollama() {
    let d = Device::start(config("0.14.0"), None).await.expect("start");
    let chat = |model: &str, think: Value| json!({"model": model, "think": think, "messages": [{"role": "user", "content": "why?"}]});
    // A reasoning model thinks by default (Ollama >= 0.12.4), thinking first.
    let r = post(&d, "/api/chat", chat("reasoner:1b", Value::Null)).await;
    assert_eq!(r.status, 200);
    let lines = r.lines();
    let thinking: String = lines
        .iter()
        .filter_map(|l| l["message"]["thinking"].as_str())
        .collect();
    assert!(thinking.starts_with("Okay, "), "{thinking}");
    let first_content = lines
        .iter()
        .position(|l| l["message"]["content"] != "")
        .expect("content");
    let last_thinking = lines
        .iter()
        .rposition(|l| l["message"].get("thinking").is_some())
        .expect("thinking");
    assert!(last_thinking < first_content, "thinking comes first");
    let done = lines.last().expect("done");
    let n_thinking = lines
        .iter()
        .filter(|l| l["message"].get("thinking").is_some())
        .count();
    assert_eq!(done["eval_count"], json!(24 + n_thinking));

    let mut whole = chat("reasoner:1b", json!("high"));
    whole["stream"] = json!(false);
    let one = post(&d, "/api/chat", whole).await.json();
    assert_eq!(one["message"]["thinking"], thinking.as_str());

    let off = post(&d, "/api/chat", chat("reasoner:1b", json!(false))).await;
    assert!(
        off.lines()
            .iter()
            .all(|l| l["message"].get("thinking").is_none())
    );

    let refused = post(&d, "/api/chat", chat("tiny:1b", json!(true))).await;
    assert_eq!(
        (refused.status, refused.json()),
        (
            400,
            json!({"error": "\"tiny:1b\" does not support thinking"})
        )
    );
    // `think: false` is fine for any model (Ollama >= 0.12.5).
    assert_eq!(
        post(&d, "/api/chat", chat("tiny:1b", json!(false)))
            .await
            .status,
        200
    );
    let bad = post(&d, "/api/chat", chat("tiny:1b", json!("extreme"))).await;
    assert_eq!(bad.status, 400);

    let generated = post(
        &d,
        "/api/generate",
        json!({"model": "reasoner:1b", "prompt": "why?", "stream": false}),
    )
    .await
    .json();
    assert!(
        generated["thinking"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    let oai = post(
        &d,
        "/v1/chat/completions",
        json!({"model": "reasoner:1b", "messages": [{"role": "user", "content": "why?"}]}),
    )
    .await
    .json();
    assert_eq!(oai["choices"][0]["message"]["reasoning"], thinking.as_str());
    let oai_refused = post(
        &d,
        "/v1/chat/completions",
        json!({"model": "tiny:1b", "reasoning_effort": "low", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(oai_refused.status, 400);
    assert_eq!(
        oai_refused.json()["error"]["message"],
        "\"tiny:1b\" does not support thinking"
    );

    // Tools offered to a model without the capability.
    let no_tools = post(
        &d,
        "/api/chat",
        json!({"model": "notools:1b", "messages": [{"role": "user", "content": "x"}],
               "tools": [{"type": "function", "function": {"name": "f"}}]}),
    )
    .await;
    assert_eq!(
        (no_tools.status, no_tools.json()),
        (
            400,
            json!({"error": "registry.ollama.ai/library/notools:1b does not support tools"})
        )
    );
    d.shutdown().await;

    // Before 0.12.4 a reasoning model thought only when asked.
    let old = Device::start(config("0.12.3"), None).await.expect("start");
    let r = post(&old, "/api/chat", chat("reasoner:1b", Value::Null)).await;
    assert!(
        r.lines()
            .iter()
            .all(|l| l["message"].get("thinking").is_none())
    );
    old.shutdown().await;
}

// ---------------------------------------------------------------- messages

#[tokio::test]
async fn anthropic_messages_answer_and_stream_like_ollama() {
    let d = Device::start(config("0.14.0"), None).await.expect("start");
    let chat = post(
        &d,
        "/api/chat",
        json!({"model": "tiny:1b", "stream": false, "messages": [{"role": "user", "content": "hi there"}]}),
    )
    .await
    .json();
    let text = chat["message"]["content"]
        .as_str()
        .expect("text")
        .to_owned();

    let req = json!({"model": "tiny:1b", "max_tokens": 1024,
                     "messages": [{"role": "user", "content": "hi there"}]});
    let whole = post(&d, "/v1/messages", req.clone()).await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.content_type, "application/json");
    let m = whole.json();
    let id = m["id"].as_str().expect("id");
    assert!(id.starts_with("msg_") && id.len() == 4 + 24, "{id}");
    assert_eq!(
        (m["type"].as_str(), m["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(m["model"], "tiny:1b");
    assert_eq!(m["content"], json!([{"type": "text", "text": text}]));
    assert_eq!(m["stop_reason"], "end_turn");
    assert!(m.get("stop_sequence").is_none(), "Ollama never sets it");
    assert_eq!(m["usage"]["output_tokens"], 24);
    assert_eq!(m["usage"]["input_tokens"], chat["prompt_eval_count"]);

    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let s = post(&d, "/v1/messages", streamed).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.content_type, "text/event-stream");
    let events = s.events();
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "data.type is the event name");
    }
    let n = names(&events);
    assert_eq!(n[0], "message_start");
    assert_eq!(n[1], "content_block_start");
    assert!(
        n[2..26].iter().all(|e| *e == "content_block_delta"),
        "{n:?}"
    );
    assert_eq!(
        &n[26..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(!n.contains(&"ping"), "Ollama sends no ping");
    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["usage"]["output_tokens"], 0);
    assert!(
        start["usage"]["input_tokens"]
            .as_u64()
            .is_some_and(|t| t > 0)
    );
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let streamed_text: String = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(streamed_text, text);
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"], json!({"stop_reason": "end_turn"}));
    assert_eq!(delta["usage"]["output_tokens"], 24);

    // Thinking, then text: two blocks, indexed in order.
    let think = json!({"model": "reasoner:1b", "max_tokens": 100, "stream": true,
                       "thinking": {"type": "enabled", "budget_tokens": 2048},
                       "messages": [{"role": "user", "content": "why?"}]});
    let events = post(&d, "/v1/messages", think.clone()).await.events();
    let starts: Vec<(u64, &str)> = events
        .iter()
        .filter(|(e, _)| e == "content_block_start")
        .map(|(_, d)| {
            (
                d["index"].as_u64().expect("i"),
                d["content_block"]["type"].as_str().expect("t"),
            )
        })
        .collect();
    assert_eq!(starts, [(0, "thinking"), (1, "text")]);
    let kinds: BTreeSet<&str> = events
        .iter()
        .filter_map(|(_, d)| d["delta"]["type"].as_str())
        .collect();
    assert_eq!(kinds, BTreeSet::from(["text_delta", "thinking_delta"]));
    let first_text = events
        .iter()
        .position(|(_, d)| d["delta"]["type"] == "text_delta")
        .expect("text");
    assert_eq!(events[first_text - 2].0, "content_block_stop");
    assert_eq!(events[first_text - 2].1["index"], 0);
    let mut think_whole = think.clone();
    think_whole["stream"] = json!(false);
    let m = post(&d, "/v1/messages", think_whole).await.json();
    let types: Vec<&str> = m["content"]
        .as_array()
        .expect("content")
        .iter()
        .map(|b| b["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["thinking", "text"]);
    // A model that cannot think just does not (Ollama relaxes `think` here).
    let relaxed = post(
        &d,
        "/v1/messages",
        json!({"model": "tiny:1b", "max_tokens": 10, "thinking": {"type": "enabled"},
               "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(relaxed.status, 200);
    assert_eq!(relaxed.json()["content"][0]["type"], "text");

    // Tools: one tool_use block with the whole arguments in one delta.
    let tools = json!({"model": "tiny:1b", "max_tokens": 100, "stream": true,
        "tools": [{"name": "get_weather", "description": "Weather", "input_schema": weather_schema()}],
        "messages": [{"role": "user", "content": "weather in Paris?"}]});
    let events = post(&d, "/v1/messages", tools.clone()).await.events();
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let block = &events[1].1["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));
    assert!(block["id"].as_str().is_some_and(|i| i.starts_with("call_")));
    assert_eq!(
        events[2].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"city\":\"sim\"}"})
    );
    assert_eq!(events[4].1["delta"]["stop_reason"], "tool_use");
    let mut tools_whole = tools.clone();
    tools_whole["stream"] = json!(false);
    let m = post(&d, "/v1/messages", tools_whole).await.json();
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["content"][0]["input"], json!({"city": "sim"}));
    // The tool's result, then the model answers in text.
    let follow = json!({"model": "tiny:1b", "max_tokens": 100,
        "tools": [{"name": "get_weather", "input_schema": weather_schema()}],
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"}]}]});
    let m = post(&d, "/v1/messages", follow).await.json();
    assert_eq!(m["content"][0]["text"], "Tool result received: 18C");

    // max_tokens and stop_sequences.
    let short = post(
        &d,
        "/v1/messages",
        json!({"model": "tiny:1b", "max_tokens": 3, "messages": [{"role": "user", "content": "hi there"}]}),
    )
    .await
    .json();
    assert_eq!(short["stop_reason"], "max_tokens");
    assert_eq!(short["usage"]["output_tokens"], 3);
    let stopped = post(
        &d,
        "/v1/messages",
        json!({"model": "tiny:1b", "max_tokens": 100, "stop_sequences": ["from"],
               "messages": [{"role": "user", "content": "hi there"}]}),
    )
    .await
    .json();
    assert_eq!(stopped["content"][0]["text"], "Hello ");
    assert_eq!(stopped["stop_reason"], "end_turn");

    // Errors in Anthropic's shape with Ollama's types.
    let err = |r: &Resp| {
        let v = r.json();
        assert_eq!(v["type"], "error");
        assert!(
            v["request_id"]
                .as_str()
                .is_some_and(|i| i.starts_with("req_"))
        );
        (
            r.status,
            v["error"]["type"].as_str().expect("type").to_owned(),
            v["error"]["message"].as_str().expect("message").to_owned(),
        )
    };
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (
            json!({"max_tokens": 5, "messages": user}),
            400,
            "invalid_request_error",
            "model is required",
        ),
        (
            json!({"model": "tiny:1b", "messages": user}),
            400,
            "invalid_request_error",
            "max_tokens is required and must be positive",
        ),
        (
            json!({"model": "tiny:1b", "max_tokens": 5, "messages": []}),
            400,
            "invalid_request_error",
            "messages is required",
        ),
        (
            json!({"model": "nope", "max_tokens": 5, "messages": user}),
            404,
            "not_found_error",
            "model 'nope' not found",
        ),
        (
            json!({"model": "embed", "max_tokens": 5, "messages": user}),
            400,
            "invalid_request_error",
            "\"embed\" does not support chat",
        ),
        (
            json!({"model": "tiny:1b", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}),
            400,
            "invalid_request_error",
            "invalid image source type: url. Only base64 images are supported.",
        ),
    ];
    for (body, status, ty, message) in cases {
        let r = post(&d, "/v1/messages", body.clone()).await;
        assert_eq!(
            err(&r),
            (status, ty.to_owned(), message.to_owned()),
            "{body}"
        );
    }
    post(&d, "/_sim/faults", json!({"error_500": true})).await;
    let r = post(&d, "/v1/messages", req.clone()).await;
    assert_eq!(err(&r).0, 500);
    assert_eq!(err(&r).1, "api_error");
    d.shutdown().await;
}

// ---------------------------------------------------------------- responses

#[tokio::test]
async fn responses_answer_and_stream_like_ollama() {
    let d = Device::start(config("0.13.3"), None).await.expect("start");
    let chat = post(
        &d,
        "/api/chat",
        json!({"model": "tiny:1b", "stream": false, "messages": [{"role": "user", "content": "hi there"}]}),
    )
    .await
    .json();
    let text = chat["message"]["content"]
        .as_str()
        .expect("text")
        .to_owned();

    let whole = post(
        &d,
        "/v1/responses",
        json!({"model": "tiny:1b", "input": "hi there"}),
    )
    .await;
    assert_eq!(whole.status, 200);
    let r = whole.json();
    assert!(r["id"].as_str().is_some_and(|i| i.starts_with("resp_")));
    assert_eq!(r["object"], "response");
    assert_eq!(r["status"], "completed");
    assert!(r["completed_at"].is_u64() && r["created_at"].is_u64());
    assert_eq!(r["output"].as_array().expect("output").len(), 1);
    let item = &r["output"][0];
    assert_eq!(item["type"], "message");
    assert!(item["id"].as_str().is_some_and(|i| i.starts_with("msg_")));
    assert_eq!(item["content"][0]["type"], "output_text");
    assert_eq!(item["content"][0]["text"], text.as_str());
    assert_eq!(r["usage"]["output_tokens"], 24);
    assert_eq!(
        r["usage"]["total_tokens"],
        json!(24 + chat["prompt_eval_count"].as_u64().expect("prompt"))
    );
    assert_eq!(r["temperature"], 1.0);
    assert_eq!(r["text"], json!({"format": {"type": "text"}}));

    let s = post(
        &d,
        "/v1/responses",
        json!({"model": "tiny:1b", "input": "hi there", "stream": true}),
    )
    .await;
    assert_eq!(s.content_type, "text/event-stream");
    let events = s.events();
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i, "numbered from 0");
    }
    let n = names(&events);
    assert_eq!(
        n[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert!(
        n[4..28].iter().all(|e| *e == "response.output_text.delta"),
        "{n:?}"
    );
    assert_eq!(
        n[28..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let id = &events[0].1["response"]["id"];
    assert!(
        events
            .iter()
            .filter_map(|(_, d)| d.get("response"))
            .all(|r| r["id"] == *id)
    );
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    let done = &events.last().expect("completed").1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], text.as_str());
    assert_eq!(done["output"][0]["id"], events[2].1["item"]["id"]);
    assert_eq!(done["usage"]["output_tokens"], 24);

    // Reasoning first, then the message at the next output index.
    let events = post(
        &d,
        "/v1/responses",
        json!({"model": "reasoner:1b", "input": "why?", "stream": true, "reasoning": {"effort": "high"}}),
    )
    .await
    .events();
    let n = names(&events);
    assert_eq!(n[2], "response.output_item.added");
    assert_eq!(events[2].1["item"]["type"], "reasoning");
    let done_at = n
        .iter()
        .position(|e| *e == "response.reasoning_summary_text.done")
        .expect("reasoning done");
    assert!(
        n[3..done_at]
            .iter()
            .all(|e| *e == "response.reasoning_summary_text.delta")
    );
    assert_eq!(n[done_at + 1], "response.output_item.done");
    assert_eq!(n[done_at + 2], "response.output_item.added");
    assert_eq!(events[done_at + 2].1["output_index"], 1);
    let out = &events.last().expect("completed").1["response"]["output"];
    assert_eq!(out[0]["type"], "reasoning");
    assert_eq!(out[1]["type"], "message");
    let whole = post(
        &d,
        "/v1/responses",
        json!({"model": "reasoner:1b", "input": "why?"}),
    )
    .await
    .json();
    assert_eq!(whole["output"][0]["type"], "reasoning");
    assert!(whole["output"][0]["summary"][0]["text"].is_string());

    // A function call, then its output answered in text.
    let tool = json!({"type": "function", "name": "get_weather", "description": "Weather",
                      "parameters": weather_schema(), "strict": true});
    let events = post(
        &d,
        "/v1/responses",
        json!({"model": "tiny:1b", "input": "weather?", "stream": true, "tools": [tool.clone()]}),
    )
    .await
    .events();
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(events[2].1["item"]["status"], "in_progress");
    assert_eq!(events[3].1["delta"], "{\"city\":\"sim\"}");
    let fc = &events[6].1["response"]["output"][0];
    assert_eq!(fc["type"], "function_call");
    assert_eq!(fc["name"], "get_weather");
    assert!(
        fc["call_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("call_"))
    );
    assert_eq!(events[6].1["response"]["tools"][0]["name"], "get_weather");
    let whole = post(
        &d,
        "/v1/responses",
        json!({"model": "tiny:1b", "tools": [tool.clone()], "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"}]}),
    )
    .await
    .json();
    assert_eq!(
        whole["output"][0]["content"][0]["text"],
        "Tool result received: 18C"
    );

    // max_output_tokens and a JSON schema.
    let short = post(
        &d,
        "/v1/responses",
        json!({"model": "tiny:1b", "input": "hi", "max_output_tokens": 2}),
    )
    .await
    .json();
    assert_eq!(short["usage"]["output_tokens"], 2);
    assert_eq!(short["status"], "completed", "Ollama never says incomplete");
    assert_eq!(short["max_output_tokens"], 2);
    let schema = post(
        &d,
        "/v1/responses",
        json!({"model": "tiny:1b", "input": "hi", "text": {"format": {"type": "json_schema", "name": "w", "schema": weather_schema()}}}),
    )
    .await
    .json();
    let out: Value = serde_json::from_str(
        schema["output"][0]["content"][0]["text"]
            .as_str()
            .expect("text"),
    )
    .expect("json output");
    assert_eq!(out, json!({"city": "sim"}));

    // Errors in OpenAI's shape.
    let cases = [
        (
            json!({"model": "nope", "input": "x"}),
            404,
            "not_found_error",
            "model 'nope' not found",
        ),
        (
            json!({"model": "tiny:1b", "input": "x", "reasoning": {"effort": "low"}}),
            400,
            "invalid_request_error",
            "\"tiny:1b\" does not support thinking",
        ),
        (
            json!({"model": "tiny:1b", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
            400,
            "invalid_request_error",
            "file inputs are not currently supported",
        ),
        (
            json!({"input": "x"}),
            400,
            "invalid_request_error",
            "model is required",
        ),
    ];
    for (body, status, ty, message) in cases {
        let r = post(&d, "/v1/responses", body.clone()).await;
        assert_eq!(r.status, status, "{body}");
        assert_eq!(
            r.json(),
            json!({"error": {"message": message, "type": ty, "param": null, "code": null}}),
            "{body}"
        );
    }
    d.shutdown().await;
}

// ---------------------------------------------------------------- management

#[tokio::test]
async fn create_copy_delete_change_tags_and_the_report() {
    let d = Device::start(config("0.30.0"), None).await.expect("start");
    let available = |d: &DeviceHandle| -> Vec<herd_proto::v1::DiskModel> {
        d.report().engine.expect("engine").available
    };
    let tiny_digest = tag(&get(&d, "/api/tags").await.json(), "tiny:1b")["digest"].clone();

    // Copy: same manifest (digest) under a new name, newest first.
    let r = post(
        &d,
        "/api/copy",
        json!({"source": "tiny:1b", "destination": "tiny-copy"}),
    )
    .await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    let tags = get(&d, "/api/tags").await.json();
    assert_eq!(tag_names(&tags)[0], "tiny-copy:latest");
    assert_eq!(tag(&tags, "tiny-copy:latest")["digest"], tiny_digest);
    assert!(available(&d).iter().any(|m| m.name == "tiny-copy:latest"
        && m.digest == tiny_digest.as_str().expect("digest")
        && m.modified_at_ms > 1_759_320_000_000));
    let r = post(
        &d,
        "/api/copy",
        json!({"source": "nope", "destination": "x"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "model \"nope\" not found"}))
    );
    let r = post(
        &d,
        "/api/copy",
        json!({"source": "tiny:1b", "destination": "bad name"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "destination \"bad name\" is invalid"}))
    );

    // Create from a model: NDJSON status lines ending in success.
    let r = post(
        &d,
        "/api/create",
        json!({"model": "mario", "from": "tiny:1b", "system": "You are Mario",
               "parameters": {"num_ctx": 8192, "stop": ["</s>"]}}),
    )
    .await;
    assert_eq!(
        (r.status, r.content_type.as_str()),
        (200, "application/x-ndjson")
    );
    let statuses: Vec<String> = r
        .lines()
        .iter()
        .map(|l| l["status"].as_str().expect("status").to_owned())
        .collect();
    assert!(
        statuses[0].starts_with("using existing layer sha256:"),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("creating new layer sha256:"))
    );
    assert_eq!(
        statuses[statuses.len() - 2..],
        ["writing manifest", "success"]
    );
    let tags = get(&d, "/api/tags").await.json();
    let mario = tag(&tags, "mario:latest");
    assert_eq!(mario["details"]["parent_model"], "tiny:1b");
    assert_ne!(mario["digest"], tiny_digest);
    assert_eq!(mario["capabilities"], json!(["completion", "tools"]));
    let show = post(&d, "/api/show", json!({"model": "mario"}))
        .await
        .json();
    assert_eq!(show["system"], "You are Mario");
    assert!(
        show["parameters"]
            .as_str()
            .is_some_and(|p| p.contains("num_ctx"))
    );
    let m = available(&d)
        .into_iter()
        .find(|m| m.name == "mario:latest")
        .expect("reported");
    assert_eq!(m.parent_model, "tiny:1b");
    let chat = post(
        &d,
        "/api/chat",
        json!({"model": "mario", "stream": false, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(chat.status, 200, "a created model answers");

    // stream:false is one object; errors before any line are plain JSON.
    let r = post(
        &d,
        "/api/create",
        json!({"model": "luigi", "from": "mario", "stream": false}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "success"})));
    let r = post(&d, "/api/create", json!({"model": "x"})).await;
    assert_eq!(
        (r.status, r.json()),
        (
            400,
            json!({"error": "neither 'from' or 'files' was specified"})
        )
    );
    let r = post(
        &d,
        "/api/create",
        json!({"model": "bad name", "from": "tiny:1b"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "invalid model name"}))
    );
    // A `from` nobody has fails after Ollama starts pulling it...
    let r = post(&d, "/api/create", json!({"model": "x", "from": "ghost:1b"})).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.lines(),
        [
            json!({"status": "pulling manifest"}),
            json!({"error": "pull model manifest: file does not exist"})
        ]
    );
    let r = post(
        &d,
        "/api/create",
        json!({"model": "x", "from": "ghost:1b", "stream": false}),
    )
    .await;
    assert_eq!(r.status, 500);
    // ...and one from the catalog is pulled first, then created from.
    let r = post(
        &d,
        "/api/create",
        json!({"model": "small", "from": "base:2b", "quantize": "q4_K_M", "stream": false}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "success"})));
    let tags = get(&d, "/api/tags").await.json();
    assert!(tag_names(&tags).contains(&"base:2b".to_owned()));
    let small = tag(&tags, "small:latest");
    assert_eq!(small["details"]["quantization_level"], "Q4_K_M");
    assert!(small["size"].as_u64().expect("size") < 40_000_000);
    // Quantizing an already quantized model is Ollama's error.
    let r = post(
        &d,
        "/api/create",
        json!({"model": "q", "from": "tiny:1b", "quantize": "q8_0", "stream": false}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (
            500,
            json!({"error": "quantization is only supported for F16, BF16 and F32 models"})
        )
    );

    // Blobs, then a model from files.
    let gguf = Bytes::from_static(b"GGUF\x03\x00\x00\x00 a tiny fake model");
    let digest = format!("sha256:{}", "ab".repeat(32));
    let path = format!("/api/blobs/{digest}");
    assert_eq!(call(&d, "HEAD", &path, Bytes::new()).await.status, 404);
    assert_eq!(
        call(&d, "HEAD", "/api/blobs/sha256:123", Bytes::new())
            .await
            .status,
        400
    );
    let bad = call(&d, "POST", "/api/blobs/md5:abc", gguf.clone()).await;
    assert_eq!(
        (bad.status, bad.json()),
        (400, json!({"error": "invalid digest format"}))
    );
    assert_eq!(call(&d, "POST", &path, gguf.clone()).await.status, 201);
    assert_eq!(call(&d, "POST", &path, gguf.clone()).await.status, 200);
    assert_eq!(call(&d, "HEAD", &path, Bytes::new()).await.status, 200);
    let r = post(
        &d,
        "/api/create",
        json!({"model": "fromfile", "files": {"model.gguf": digest}}),
    )
    .await;
    let lines = r.lines();
    assert_eq!(lines[0], json!({"status": "parsing GGUF"}));
    assert_eq!(lines.last(), Some(&json!({"status": "success"})));
    let tags = get(&d, "/api/tags").await.json();
    assert_eq!(tag(&tags, "fromfile:latest")["size"], gguf.len());
    let missing = format!("sha256:{}", "cd".repeat(32));
    let r = post(
        &d,
        "/api/create",
        json!({"model": "y", "files": {"weights": missing}}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "unknown type"}))
    );
    let r = post(
        &d,
        "/api/create",
        json!({"model": "y", "files": {"model.gguf": missing}, "stream": false}),
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(
        r.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("no such file or directory"))
    );
    let not_gguf = format!("sha256:{}", "ef".repeat(32));
    call(
        &d,
        "POST",
        &format!("/api/blobs/{not_gguf}"),
        Bytes::from_static(b"PK zip"),
    )
    .await;
    let r = post(
        &d,
        "/api/create",
        json!({"model": "y", "files": {"model.gguf": not_gguf}}),
    )
    .await;
    assert_eq!(
        r.lines().last(),
        Some(&json!({"error": "supplied file was not in GGUF format"}))
    );

    // Delete: gone from tags and the report; a second delete is a 404.
    let r = call(
        &d,
        "DELETE",
        "/api/delete",
        Bytes::from(json!({"model": "mario"}).to_string()),
    )
    .await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert!(!tag_names(&get(&d, "/api/tags").await.json()).contains(&"mario:latest".to_owned()));
    assert!(available(&d).iter().all(|m| m.name != "mario:latest"));
    let r = call(
        &d,
        "DELETE",
        "/api/delete",
        Bytes::from(json!({"model": "mario"}).to_string()),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "model 'mario' not found"}))
    );
    let r = call(&d, "DELETE", "/api/delete", Bytes::new()).await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "missing request body"}))
    );
    assert_eq!(
        post(&d, "/api/delete", json!({"model": "luigi"}))
            .await
            .status,
        405
    );
    d.shutdown().await;
}

#[tokio::test]
async fn push_streams_progress_or_fails_like_ollama() {
    let d = Device::start(config("0.12.6"), None).await.expect("start");
    let r = post(&d, "/api/push", json!({"model": "tiny:1b"})).await;
    assert_eq!(r.status, 200);
    let lines = r.lines();
    assert_eq!(lines[0], json!({"status": "retrieving manifest"}));
    let pushing = &lines[1];
    assert!(
        pushing["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("pushing "))
    );
    assert!(
        pushing["digest"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:"))
    );
    assert!(pushing["total"].is_u64() && pushing["completed"].is_u64());
    let n = lines.len();
    assert_eq!(
        lines[n - 2..],
        [
            json!({"status": "pushing manifest"}),
            json!({"status": "success"})
        ]
    );
    let r = post(
        &d,
        "/api/push",
        json!({"model": "tiny:1b", "stream": false}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "success"})));

    // A missing model: Ollama has already said it is looking.
    let r = post(&d, "/api/push", json!({"model": "nope"})).await;
    assert_eq!(r.status, 200);
    let lines = r.lines();
    assert_eq!(
        lines[..2],
        [
            json!({"status": "retrieving manifest"}),
            json!({"status": "couldn't retrieve manifest"})
        ]
    );
    assert!(
        lines[2]["error"]
            .as_str()
            .is_some_and(|e| e.ends_with("no such file or directory"))
    );
    let r = post(&d, "/api/push", json!({"model": "nope", "stream": false})).await;
    assert_eq!(r.status, 500);
    let r = post(&d, "/api/push", json!({})).await;
    assert_eq!(
        (r.status, r.json()),
        (400, json!({"error": "model is required"}))
    );
    d.shutdown().await;
}
