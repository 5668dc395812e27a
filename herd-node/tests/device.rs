//! A simulated device over real sockets: what a router or an SDK sees.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use herd_node::agent::StateSource;
use herd_node::config::{GIB, ModelSpec};
use herd_node::ollama::{OllamaClient, OllamaLimits, RealSource};
use herd_node::{Device, DeviceConfig, DeviceHandle, FaultsPatch};

type Http = Client<HttpConnector, Full<Bytes>>;

fn client() -> Http {
    // No pooling: every request opens a new connection, so `refuse` is seen.
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

fn fast_config() -> DeviceConfig {
    let small = ModelSpec {
        name: "tiny:1b".into(),
        size_bytes: GIB / 4,
        ..ModelSpec::default()
    };
    let embed = ModelSpec {
        name: "embed:latest".into(),
        size_bytes: GIB / 8,
        embedding_dims: Some(64),
        ..ModelSpec::default()
    };
    DeviceConfig {
        name: "t".into(),
        speed: 500.0,
        ttft_base_ms: 2,
        ttft_ms_per_prompt_token: 0.0,
        load_base_ms: 5,
        load_ms_per_gb: 0,
        models: vec![small.clone(), embed],
        loaded: vec!["tiny:1b".into()],
        catalog: vec![ModelSpec {
            name: "pulled:2b".into(),
            size_bytes: 40_000_000,
            ..small
        }],
        pull_bytes_per_sec: 1_000_000_000,
        ..DeviceConfig::default()
    }
}

struct Resp {
    status: u16,
    content_type: String,
    body: Result<Bytes, String>,
}

impl Resp {
    fn json(&self) -> Value {
        let b = self.body.as_ref().expect("complete body");
        serde_json::from_slice(b).expect("json body")
    }

    fn lines(&self) -> Vec<Value> {
        let b = self.body.as_ref().expect("complete body");
        std::str::from_utf8(b)
            .expect("utf8")
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("ndjson line"))
            .collect()
    }
}

async fn call(c: &Http, method: &str, url: String, body: Option<Value>) -> Result<Resp, String> {
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    call_raw(c, method, url, body).await
}

async fn call_raw(c: &Http, method: &str, url: String, body: Bytes) -> Result<Resp, String> {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = c.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    Ok(Resp {
        status,
        content_type,
        body,
    })
}

async fn post(d: &DeviceHandle, path: &str, body: Value) -> Resp {
    call(&client(), "POST", format!("{}{path}", d.url()), Some(body))
        .await
        .expect("request")
}

async fn get(d: &DeviceHandle, path: &str) -> Resp {
    call(&client(), "GET", format!("{}{path}", d.url()), None)
        .await
        .expect("request")
}

#[tokio::test]
async fn ollama_api_streaming_and_not_agree_and_stats_count() {
    let d = Device::start(fast_config(), None).await.expect("start");
    assert_eq!(get(&d, "/").await.body.expect("body"), "Ollama is running");
    assert_eq!(
        get(&d, "/api/version").await.json(),
        json!({"version": "0.12.6"})
    );
    let tags = get(&d, "/api/tags").await.json();
    assert_eq!(tags["models"].as_array().expect("models").len(), 2);
    assert_eq!(tags["models"][1]["details"]["quantization_level"], "Q4_K_M");
    let ps = get(&d, "/api/ps").await.json();
    assert_eq!(ps["models"][0]["name"], "tiny:1b");

    let req = json!({"model": "tiny:1b", "messages": [{"role": "user", "content": "hi there"}]});
    let streamed = post(&d, "/api/chat", req.clone()).await;
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.content_type, "application/x-ndjson");
    let lines = streamed.lines();
    let last = lines.last().expect("final chunk");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["eval_count"], 24);
    for k in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(last[k].is_u64(), "{k} missing in {last}");
    }
    let text: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert!(text.starts_with("Hello from tiny:1b. "), "{text}");

    let mut whole = req.clone();
    whole["stream"] = json!(false);
    let one = post(&d, "/api/chat", whole).await.json();
    assert_eq!(one["message"]["content"], text.as_str());
    assert_eq!(one["done"], true);

    // OpenAI compat says the same thing.
    let oai = post(
        &d,
        "/v1/chat/completions",
        json!({"model": "tiny:1b", "messages": [{"role": "user", "content": "hi there"}]}),
    )
    .await
    .json();
    assert_eq!(oai["choices"][0]["message"]["content"], text.as_str());
    assert_eq!(oai["usage"]["completion_tokens"], 24);

    let sse = post(&d, "/v1/chat/completions", json!({
        "model": "tiny:1b", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    })).await;
    assert_eq!(sse.content_type, "text/event-stream");
    let sse_text = String::from_utf8(sse.body.expect("sse").to_vec()).expect("utf8");
    assert!(sse_text.ends_with("data: [DONE]\n\n"));
    let events: Vec<Value> = sse_text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str(l).expect("chunk"))
        .collect();
    let call = &events[0]["choices"][0]["delta"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], "{\"city\":\"sim\"}");
    assert!(
        events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "tool_calls")
    );
    assert!(events.last().expect("usage")["usage"]["total_tokens"].is_u64());

    let emb = post(
        &d,
        "/api/embed",
        json!({"model": "embed", "input": ["a", "b"]}),
    )
    .await
    .json();
    assert_eq!(emb["embeddings"].as_array().expect("vectors").len(), 2);
    assert_eq!(emb["embeddings"][0].as_array().expect("vector").len(), 64);
    let refused = post(
        &d,
        "/api/chat",
        json!({"model": "embed", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(
        (refused.status, refused.json()),
        (400, json!({"error": "\"embed\" does not support chat"}))
    );
    let missing = post(&d, "/api/generate", json!({"model": "nope", "prompt": "x"})).await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json(),
        json!({"error": "model \"nope\" not found, try pulling it first"})
    );
    let url = format!("{}/api/chat", d.url());
    let bad = call_raw(&client(), "POST", url, Bytes::from_static(b"{not json")).await;
    let bad = bad.expect("request");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].is_string());
    let oai_missing = post(
        &d,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(oai_missing.status, 404);
    assert_eq!(oai_missing.json()["error"]["type"], "not_found_error");
    assert!(oai_missing.json()["error"]["message"].is_string());

    let stats = get(&d, "/_sim/stats").await.json();
    assert_eq!(stats["name"], "t");
    assert_eq!(stats["per_model"]["tiny:1b"]["served"], 4);
    assert_eq!(stats["served_total"], 5);
    assert_eq!(stats["active"], 0);
    assert_eq!(d.stats().per_model["embed:latest"].cold_loads, 1);
    post(&d, "/_sim/stats/reset", json!({})).await;
    assert_eq!(d.stats().served_total, 0);
    d.shutdown().await;
}

#[tokio::test]
async fn pull_streams_progress_and_adds_the_model() {
    let d = Device::start(fast_config(), None).await.expect("start");
    let r = post(&d, "/api/pull", json!({"model": "pulled:2b"})).await;
    let lines = r.lines();
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(statuses.first(), Some(&"pulling manifest"));
    assert_eq!(
        &statuses[statuses.len() - 3..],
        ["verifying sha256 digest", "writing manifest", "success"]
    );
    let progress: Vec<&Value> = lines.iter().filter(|l| l["digest"].is_string()).collect();
    assert!(progress.len() > 5);
    assert!(
        progress
            .iter()
            .all(|p| p["completed"].as_u64() <= p["total"].as_u64())
    );
    let tags = get(&d, "/api/tags").await.json();
    assert!(
        tags["models"]
            .as_array()
            .expect("models")
            .iter()
            .any(|m| m["name"] == "pulled:2b")
    );
    let missing = post(
        &d,
        "/api/pull",
        json!({"model": "unknown:1b", "stream": false}),
    )
    .await;
    assert_eq!(
        (missing.status, missing.json()),
        (
            500,
            json!({"error": "pull model manifest: file does not exist"})
        )
    );
    d.shutdown().await;
}

#[tokio::test]
async fn faults_kill_and_revive() {
    let d = Device::start(fast_config(), None).await.expect("start");
    let chat = json!({"model": "tiny:1b", "messages": [{"role": "user", "content": "hi"}]});

    let r = post(&d, "/_sim/faults", json!({"error_500": true})).await;
    assert_eq!(r.json()["error_500"], true);
    let failed = post(&d, "/api/chat", chat.clone()).await;
    assert_eq!(failed.status, 500);
    assert!(failed.json()["error"].is_string());
    // Discovery endpoints still answer.
    assert_eq!(get(&d, "/api/tags").await.status, 200);

    // hang: the request is read and never answered; the admin API still works.
    post(&d, "/_sim/faults", json!({"clear": true, "hang": true})).await;
    let url = format!("{}/api/version", d.url());
    let c = client();
    let hung = tokio::time::timeout(Duration::from_millis(200), call(&c, "GET", url, None));
    assert!(hung.await.is_err(), "a hung device must not answer");
    let sensors = post(
        &d,
        "/_sim/sensors",
        json!({"thermal": "serious", "cpu_utilization": 0.5}),
    )
    .await;
    assert_eq!(sensors.json()["thermal"], "serious");
    assert_eq!(d.sensors().cpu_utilization, 0.5);
    let rejected = post(&d, "/_sim/faults", json!({"hnag": true})).await;
    assert_eq!(rejected.status, 400, "unknown fault names are refused");

    d.set_faults(FaultsPatch {
        clear: true,
        die_mid_stream_after: Some(3),
        ..FaultsPatch::default()
    });
    let cut = post(&d, "/api/chat", chat.clone()).await;
    assert_eq!(cut.status, 200);
    assert!(
        cut.body.is_err(),
        "the stream must end without its final chunk"
    );

    d.set_faults(FaultsPatch {
        clear: true,
        refuse: Some(true),
        ..FaultsPatch::default()
    });
    assert!(call(&client(), "GET", d.url(), None).await.is_err());

    d.set_faults(FaultsPatch {
        clear: true,
        ..FaultsPatch::default()
    });
    assert_eq!(post(&d, "/api/chat", chat.clone()).await.status, 200);

    // Kill cuts a stream in flight and refuses new connections.
    let slow = herd_node::config::FaultsPatch {
        slowdown: Some(200.0),
        ..FaultsPatch::default()
    };
    d.set_faults(slow);
    let url = format!("{}/api/chat", d.url());
    let c = client();
    let in_flight = tokio::spawn(async move { call(&c, "POST", url, Some(chat)).await });
    for _ in 0..200 {
        if d.stats().active == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(d.stats().active, 1);
    d.kill();
    let cut = in_flight.await.expect("join");
    assert!(
        cut.is_err() || cut.as_ref().is_ok_and(|r| r.body.is_err()),
        "stream was not cut"
    );
    assert_eq!(d.stats().active, 0);
    assert!(call(&client(), "GET", d.url(), None).await.is_err());
    d.revive();
    assert_eq!(get(&d, "/api/version").await.status, 200);
    d.shutdown().await;
}

#[tokio::test]
async fn busy_device_answers_503_over_http() {
    let cfg = DeviceConfig {
        num_parallel: 1,
        max_queue: 0,
        ..fast_config()
    };
    let d = Device::start(cfg, None).await.expect("start");
    d.set_faults(FaultsPatch {
        slowdown: Some(100.0),
        ..FaultsPatch::default()
    });
    let url = format!("{}/api/chat", d.url());
    let c = client();
    let chat = json!({"model": "tiny:1b", "messages": [{"role": "user", "content": "hi"}]});
    let body = chat.clone();
    let first = tokio::spawn(async move { call(&c, "POST", url, Some(body)).await });
    for _ in 0..200 {
        if d.stats().active == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy = post(&d, "/api/chat", chat).await;
    assert_eq!(busy.status, 503);
    assert_eq!(
        busy.json(),
        json!({"error": "server busy, please try again.  maximum pending requests exceeded"})
    );
    assert_eq!(d.stats().rejected_busy, 1);
    first.abort();
    d.shutdown().await;
}

#[tokio::test]
async fn real_mode_reads_a_device_like_an_ollama() {
    let d = Device::start(fast_config(), None).await.expect("start");
    let src = RealSource::new(
        OllamaClient::new(d.url()),
        d.url(),
        OllamaLimits {
            num_parallel: 4,
            ..OllamaLimits::default()
        },
    );
    let r = src.report().await;
    assert!(!r.simulated);
    let e = r.engine.expect("engine");
    assert!(e.reachable, "{}", e.unreachable_reason);
    assert_eq!(e.version, "0.12.6");
    assert_eq!(e.loaded.len(), 1);
    assert_eq!(e.loaded[0].name, "tiny:1b");
    assert!(e.loaded[0].expires_at_ms > 0);
    assert_eq!(e.available.len(), 2);
    assert_eq!(e.parallel_slots, 4);
    assert_eq!(src.warm("embed".into()).await.map(|_| ()), Ok(()));
    assert_eq!(d.stats().per_model["embed:latest"].cold_loads, 1);
    d.shutdown().await;
}
