//! What the scenarios of issue 5 share: the run's knobs ([`Opts`]), the
//! harness's working state ([`Bench`]), request bodies, and the steps every
//! scenario takes (start herd with a fleet, wait until a target answers,
//! warm streams).
//!
//! Each scenario is a method of [`Bench`] in its own file that starts what
//! it needs, runs interleaved rounds and leaves its numbers in [`Metrics`]:
//! [`super::overhead`] (1), [`super::streaming`] (2), [`super::routing`]
//! (3), [`super::adaptation`] (4) and [`super::epp`] (5).
//!
//! Within a round every target runs once, in an order rotated per round
//! ([`rotated`]), so drift on the machine (another build starting) lands on
//! all of them.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use herd_node::config::{GIB, ModelSpec};
use herd_node::{DeviceConfig, FleetConfig};
use serde_json::json;

use super::echo;
use super::load::{self, HttpClient, Req, Wire};
use super::stats::Metrics;
use super::targets::{Env, Herd, Kind, Sims, Target};

/// Knobs of a whole run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Opts {
    /// Interleaved rounds per scenario.
    pub rounds: usize,
    /// Multiplies every phase's duration.
    pub scale: f64,
    /// Tiny counts for the test suite.
    pub smoke: bool,
    /// Scenarios to run (`1`..=`5`, `chaos`).
    pub scenarios: Vec<String>,
    /// Fixed open-loop rates of scenario 1, requests/s.
    pub rates: Vec<f64>,
    /// Concurrent streams of scenario 2.
    pub streams: Vec<usize>,
}

impl Opts {
    pub(super) fn secs(&self, s: f64) -> Duration {
        Duration::from_secs_f64(s * self.scale)
    }
}

/// The harness's working state.
pub struct Bench {
    pub env: Env,
    pub opts: Opts,
    pub client: HttpClient,
    pub m: Metrics,
    /// Things a reader must know (skipped targets, failures).
    pub notes: Vec<String>,
    /// Per-scenario extras that are not per-round metrics.
    pub extra: BTreeMap<String, serde_json::Value>,
}

pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub(super) const MODEL: &str = "bench:1b";

pub(super) fn model(name: &str, gib: f64) -> ModelSpec {
    ModelSpec {
        name: name.to_owned(),
        size_bytes: (gib * GIB as f64) as u64,
        context_length: 8192,
        ..ModelSpec::default()
    }
}

/// An Ollama chat whose answer has exactly `tokens` chunks of content.
///
/// The simulator caps generated replies at 24 tokens, but echoes a `tool`
/// message word by word ("Tool result received: …"), so a tool message of
/// `tokens - 3` words yields a reply of `tokens` tokens.
pub(super) fn chat_body(model: &str, tokens: usize, stream: bool) -> Bytes {
    let words = tokens.saturating_sub(3).max(1);
    let filler = vec!["w"; words].join(" ");
    Bytes::from(
        json!({
            "model": model,
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "tool", "content": filler},
            ],
            "stream": stream,
        })
        .to_string(),
    )
}

/// The same in OpenAI's format.
pub(super) fn openai_body(model: &str, tokens: usize) -> Bytes {
    let words = tokens.saturating_sub(3).max(1);
    let filler = vec!["w"; words].join(" ");
    Bytes::from(
        json!({
            "model": model,
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "tool", "content": filler, "tool_call_id": "call_1"},
            ],
            "stream": true,
        })
        .to_string(),
    )
}

/// A small non-streaming chat (≈200 B in, ≈0.5 KB out).
pub(super) fn small_chat() -> Bytes {
    Bytes::from(
        json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hello to the benchmark, briefly please."}],
            "stream": false,
            "options": {"num_predict": 8},
        })
        .to_string(),
    )
}

pub(super) fn rotated<T: Clone>(v: &[T], r: usize) -> Vec<T> {
    let mut out = v.to_vec();
    if !out.is_empty() {
        out.rotate_left(r % v.len());
    }
    out
}

impl Bench {
    pub(super) fn available(&mut self, kinds: &[Kind]) -> Vec<Kind> {
        let mut out = Vec::new();
        for k in kinds {
            if k.needs_nginx() && self.env.nginx.is_none() {
                self.note(format!("{}: skipped, nginx is not installed", k.label()));
                continue;
            }
            if k.needs_envoy() && self.env.envoy.is_none() {
                self.note(format!("{}: skipped, envoy is not installed", k.label()));
                continue;
            }
            out.push(*k);
        }
        out
    }

    pub fn note(&mut self, s: String) {
        if !self.notes.contains(&s) {
            eprintln!("note: {s}");
            self.notes.push(s);
        }
    }

    /// herd on the proxy CPU with the fleet attached to it.
    pub(super) async fn herd_with(&self, fleet: &FleetConfig) -> BenchResult<(Herd, Sims)> {
        let herd = Herd::start(&self.env, "").await?;
        let sims = Sims::start(&self.env, fleet, Some(&herd.url())).await?;
        herd.wait_online(&self.client, fleet.devices.len(), Duration::from_secs(20))
            .await?;
        Ok((herd, sims))
    }

    /// A simulated device's answers to `body` on `/api/chat` (and the GETs a
    /// router polls), recorded to be replayed with no timer by [`Echo`] (see
    /// [`super::echo`] for why).
    pub(super) async fn zero_think_recording(&self, body: &Bytes) -> BenchResult<echo::Recording> {
        let dev = DeviceConfig {
            name: "zero".into(),
            models: vec![model(MODEL, 1.0)],
            loaded: vec![MODEL.into()],
            speed: 1e9,
            ttft_base_ms: 0,
            ttft_ms_per_prompt_token: 0.0,
            num_parallel: 4096,
            max_queue: 100_000,
            keep_alive_secs: -1,
            ..DeviceConfig::default()
        };
        let fleet = FleetConfig {
            devices: vec![dev],
            ..FleetConfig::default()
        };
        let sims = Sims::start(&self.env, &fleet, None).await?;
        let base = format!("http://{}", sims.addrs()[0]);
        Ok(echo::record(&self.client, &base, "/api/chat", body.clone()).await?)
    }

    /// One short stream through every target, once it answers at all.
    pub(super) async fn warm_streams(&self, scen: &str, targets: &[Target]) -> BenchResult<()> {
        for t in targets {
            let req = Req {
                url: format!("{}/api/chat", t.base),
                body: chat_body(MODEL, 5, true),
                wire: Wire::Ndjson,
            };
            self.until_answered(scen, t.kind, &req).await?;
        }
        Ok(())
    }

    /// Sends `req` until it succeeds, for up to 20 s: a picker polls its
    /// endpoints before it can pick, a fresh proxy may still be connecting.
    pub(super) async fn until_answered(
        &self,
        scen: &str,
        kind: Kind,
        req: &Req,
    ) -> BenchResult<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let o = load::send(
                &self.client,
                req,
                tokio::time::Instant::now(),
                Duration::from_secs(10),
            )
            .await;
            if o.ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{scen}: {} never answered: {o:?}", kind.label()).into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A device that streams: 50 ms to the first token, then one every 20 ms,
/// with slots for every stream a scenario opens.
pub(super) fn stream_device(name: &str) -> DeviceConfig {
    DeviceConfig {
        name: name.into(),
        models: vec![model(MODEL, 1.0)],
        loaded: vec![MODEL.into()],
        speed: 50.0, // one token every 20 ms
        ttft_base_ms: 50,
        ttft_ms_per_prompt_token: 0.0,
        num_parallel: 8192,
        max_queue: 100_000,
        keep_alive_secs: -1,
        ..DeviceConfig::default()
    }
}
