//! Smart benchmarking: a short calibration of each node:model — time to
//! first token and tokens/s alone, then tokens/s with every parallel slot
//! busy — stored, and fed to scoring as if it were a few real requests (so
//! a fresh herd routes well before traffic has taught it anything, and real
//! traffic takes over as it arrives).

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Benchmark, Store, Write};
use crate::app::health::Recent;
use crate::fleet::{Engine, FleetView};
use crate::history::History;

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// What to calibrate (all loaded node:models when empty).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BenchRequest {
    /// Only this node (every online Ollama node when unset).
    pub node: Option<String>,
    /// Only this model (every model loaded on the node when unset).
    pub model: Option<String>,
    /// Tokens to generate per request.
    pub tokens: Option<u32>,
}

struct One {
    ttft_ms: f64,
    tokens: u64,
    gen_ms: f64,
}

async fn generate(client: &Client, url: &str, model: &str, tokens: u32) -> Result<One, String> {
    let body = json!({"model": model, "prompt": "Count from one to one hundred.", "stream": true,
        "options": {"num_predict": tokens}});
    let req = http::Request::post(format!("{}/api/generate", url.trim_end_matches('/')))
        .header("content-type", "application/json")
        .header("x-herd-benchmark", "1")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let rsp = client.request(req).await.map_err(|e| e.to_string())?;
    if !rsp.status().is_success() {
        return Err(format!("node answered {}", rsp.status()));
    }
    let mut body = rsp.into_body();
    let mut ttft = None;
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(d) = frame.into_data() {
            ttft.get_or_insert_with(|| started.elapsed().as_secs_f64() * 1000.0);
            buf.extend_from_slice(&d);
        }
    }
    let total_ms = started.elapsed().as_secs_f64() * 1000.0;
    let last = buf
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .find(|v| v.get("done").and_then(Value::as_bool) == Some(true))
        .ok_or("the stream had no final chunk")?;
    let tokens = last.get("eval_count").and_then(Value::as_u64).unwrap_or(0);
    let ttft_ms = ttft.unwrap_or(total_ms);
    let gen_ms = last
        .get("eval_duration")
        .and_then(Value::as_f64)
        .map(|n| n / 1e6)
        .filter(|ms| *ms > 0.0)
        .unwrap_or((total_ms - ttft_ms).max(1.0));
    Ok(One {
        ttft_ms,
        tokens,
        gen_ms,
    })
}

/// How far a run is, as it goes (the dashboard shows it).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Progress {
    /// Whether the run is still going.
    pub running: bool,
    /// node:models measured (or failed) so far.
    pub done: usize,
    /// node:models the run measures.
    pub total: usize,
    /// The node:model being measured now.
    pub current: Option<String>,
    /// Failures so far.
    pub errors: usize,
    /// When the run started, ms since the Unix epoch.
    pub started_ms: i64,
}

/// Calibrate, store and feed scoring, telling `progress` before each
/// node:model and at the end. Returns what was measured and what failed.
pub async fn run(
    client: &Client,
    view: &FleetView,
    req: &BenchRequest,
    history: &History,
    recent: &Recent,
    store: Option<&Store>,
    progress: &(dyn Fn(&Progress) + Send + Sync),
) -> (Vec<Benchmark>, Vec<String>) {
    let tokens = req.tokens.unwrap_or(32).clamp(4, 512);
    let mut done = Vec::new();
    let mut errors = Vec::new();
    let mut plan = Vec::new();
    for n in view.online() {
        if n.engine != Engine::Ollama || req.node.as_deref().is_some_and(|x| x != &*n.id) {
            continue;
        }
        match &req.model {
            Some(m) if n.has_model(m) => plan.push((n, m.clone())),
            Some(_) => {}
            None => plan.extend(n.loaded.iter().map(|m| (n, m.name.clone()))),
        }
    }
    let mut p = Progress {
        running: true,
        total: plan.len(),
        started_ms: crate::fleet::now_ms(),
        ..Progress::default()
    };
    for (i, (n, model)) in plan.into_iter().enumerate() {
        p.done = i;
        p.errors = errors.len();
        p.current = Some(format!("{}:{model}", n.id));
        progress(&p);
        let single = match generate(client, &n.url, &model, tokens).await {
            Ok(o) => o,
            Err(e) => {
                errors.push(format!("{}:{model}: {e}", n.id));
                continue;
            }
        };
        // The first request may have loaded the model; measure warm.
        let single = generate(client, &n.url, &model, tokens)
            .await
            .unwrap_or(single);
        let parallel = n.parallel_slots.max(1);
        let started = Instant::now();
        let all = futures::future::join_all(
            (0..parallel).map(|_| generate(client, &n.url, &model, tokens)),
        )
        .await;
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        let total: u64 = all
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|o| o.tokens)
            .sum();
        let b = Benchmark {
            node: n.id.to_string(),
            model: crate::request::normalize_model(&model),
            ts_ms: crate::fleet::now_ms(),
            ttft_ms: single.ttft_ms,
            tokens_per_s_single: single.tokens as f64 / (single.gen_ms / 1000.0),
            tokens_per_s_parallel: total as f64 / (wall_ms / 1000.0),
            parallel,
        };
        history.calibrate(&b.node, &b.model, b.ttft_ms, b.tokens_per_s_single);
        recent.set_baseline(&b.node, &b.model, b.ttft_ms);
        if let Some(s) = store {
            s.submit(Write::Bench(b.clone()));
        }
        done.push(b);
    }
    p.running = false;
    p.done = p.total;
    p.errors = errors.len();
    p.current = None;
    progress(&p);
    (done, errors)
}
