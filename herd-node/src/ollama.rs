//! Real mode: reporting a local Ollama to the router.
//!
//! Everything here is read, never guessed: Ollama's own API gives the engine
//! state (or `/v1/models` for an OpenAI-only engine), the environment gives
//! Ollama's limits when they are set, the machine comes from
//! [`crate::probe`] and availability from [`crate::capacity`]. Whatever cannot
//! be read is reported as unknown with a reason. A router that sees a value
//! from this module can trust it.

use std::time::Duration;

use bytes::Bytes;
use herd_proto::v1::{
    Availability, DiskModel, EngineKind, EngineState, LoadedModel, NodeMode, NodeReport,
};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use herd_proto::ollama::Models;
pub use herd_proto::ollama::{Details, PsModel, TagModel, Version};

use crate::agent::StateSource;
use crate::capacity::CapacityModel;
use crate::probe::{Meeting, Prober};

/// Why a call to Ollama failed.
#[derive(Debug, thiserror::Error)]
pub enum OllamaError {
    /// The URL is not usable.
    #[error("invalid Ollama URL {0:?}")]
    Url(String),
    /// Connection or protocol failure.
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    /// Reading the body failed.
    #[error("reading body: {0}")]
    Body(#[from] hyper::Error),
    /// Ollama answered with an error status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// Status code.
        status: u16,
        /// Body text.
        body: String,
    },
    /// The body was not the JSON we expect.
    #[error("unexpected JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// A small client for the parts of Ollama's API the agent needs.
#[derive(Debug, Clone)]
pub struct OllamaClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl OllamaClient {
    /// A client for `base` (e.g. `http://127.0.0.1:11434`).
    pub fn new(base: impl Into<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_owned();
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            base,
            client,
            timeout: Duration::from_secs(3),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<T, OllamaError> {
        let uri: http::Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|_| OllamaError::Url(self.base.clone()))?;
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|_| OllamaError::Url(self.base.clone()))?;
        let fut = async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                let body = String::from_utf8_lossy(&bytes).into_owned();
                return Err(OllamaError::Status {
                    status: status.as_u16(),
                    body,
                });
            }
            Ok(serde_json::from_slice(&bytes)?)
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| OllamaError::Timeout(t))?,
            None => fut.await,
        }
    }

    /// `GET /api/version`.
    pub async fn version(&self) -> Result<Version, OllamaError> {
        self.call(http::Method::GET, "/api/version", None, Some(self.timeout))
            .await
    }

    /// `GET /api/ps`.
    pub async fn ps(&self) -> Result<Vec<PsModel>, OllamaError> {
        let m: Models<PsModel> = self
            .call(http::Method::GET, "/api/ps", None, Some(self.timeout))
            .await?;
        Ok(m.models)
    }

    /// `GET /api/tags`.
    pub async fn tags(&self) -> Result<Vec<TagModel>, OllamaError> {
        let m: Models<TagModel> = self
            .call(http::Method::GET, "/api/tags", None, Some(self.timeout))
            .await?;
        Ok(m.models)
    }

    /// `POST /api/pull` without streaming; waits for the whole download.
    pub async fn pull(&self, model: &str) -> Result<(), OllamaError> {
        let body = serde_json::json!({"model": model, "stream": false});
        let _: serde_json::Value = self
            .call(http::Method::POST, "/api/pull", Some(body), None)
            .await?;
        Ok(())
    }

    /// Loads the model: `POST /api/generate` with no prompt, or `/api/embed`
    /// with no input for an embedding model.
    pub async fn warm(&self, model: &str) -> Result<(), OllamaError> {
        let body = serde_json::json!({"model": model, "stream": false});
        let generate = self
            .call::<serde_json::Value>(http::Method::POST, "/api/generate", Some(body), None)
            .await;
        match generate {
            // Embedding models do not generate: load them through /api/embed.
            Err(OllamaError::Status { status: 400, .. }) => {
                let body = serde_json::json!({"model": model, "input": []});
                let _: serde_json::Value = self
                    .call(http::Method::POST, "/api/embed", Some(body), None)
                    .await?;
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }
}

/// Ollama's limits as set in its environment; 0 = unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OllamaLimits {
    /// `OLLAMA_NUM_PARALLEL`.
    pub num_parallel: u32,
    /// `OLLAMA_MAX_LOADED_MODELS`.
    pub max_loaded_models: u32,
    /// `OLLAMA_MAX_QUEUE`.
    pub max_queue: u32,
}

impl OllamaLimits {
    /// Reads the limits through `get` (the environment in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let n = |k: &str| {
            get(k)
                .and_then(|v| v.trim().parse::<u32>().ok())
                .unwrap_or(0)
        };
        Self {
            num_parallel: n("OLLAMA_NUM_PARALLEL"),
            max_loaded_models: n("OLLAMA_MAX_LOADED_MODELS"),
            max_queue: n("OLLAMA_MAX_QUEUE"),
        }
    }

    /// Reads the limits from this process's environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// Parses `/proc/meminfo` into (total, available) bytes.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let mut parts = rest.split_whitespace();
            let n: u64 = parts.next()?.parse().ok()?;
            let mult = match parts.next() {
                Some("kB") | Some("KB") => 1024,
                None => 1,
                Some(_) => return None,
            };
            n.checked_mul(mult)
        })
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

/// Which engine the agent reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    /// Ollama when `/api/version` answers, else an OpenAI-only engine when
    /// `/v1/models` answers.
    #[default]
    Auto,
    /// Ollama.
    Ollama,
    /// An engine that speaks only the OpenAI API (llama.cpp server, vLLM,
    /// LM Studio): the router sends it only OpenAI-shaped requests.
    Openai,
}

/// What a meeting (camera or microphone in use) does to the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MeetingAction {
    /// Take no work while the owner is in a call.
    #[default]
    Pause,
    /// Take only small models while the owner is in a call.
    SmallOnly,
    /// Ignore meetings.
    Ignore,
}

/// Real-mode options beyond the engine's address.
#[derive(Debug, Clone, Default)]
pub struct RealOptions {
    /// Engine kind.
    pub engine: EngineChoice,
    /// Meeting behaviour.
    pub meeting: MeetingAction,
    /// The learned capacity model; `None` = learning off.
    pub capacity: Option<CapacityModel>,
    /// Least time between two capacity samples.
    pub sample_every: Duration,
    /// Engines beside the Ollama, reported as `extra_engines`.
    pub extra: Vec<herd_proto::engine::EngineDecl>,
}

/// `GET /v1/models` of an OpenAI-compatible server.
#[derive(Debug, Deserialize)]
struct OpenAiModels {
    #[serde(default)]
    data: Vec<OpenAiModel>,
}

#[derive(Debug, Deserialize)]
struct OpenAiModel {
    id: String,
}

impl OllamaClient {
    /// `POST /api/show`: what a model can do.
    pub async fn show(&self, model: &str) -> Result<herd_proto::ollama::Show, OllamaError> {
        let body = serde_json::json!({"model": model});
        self.call(
            http::Method::POST,
            "/api/show",
            Some(body),
            Some(self.timeout),
        )
        .await
    }

    /// `GET /v1/models` as the server lists them (with their context).
    pub async fn v1_models_raw(&self) -> Result<herd_proto::engine::OpenAiModels, OllamaError> {
        self.call(http::Method::GET, "/v1/models", None, Some(self.timeout))
            .await
    }

    /// `GET /v1/models`: model ids of an OpenAI-compatible server.
    pub async fn v1_models(&self) -> Result<Vec<String>, OllamaError> {
        let m: OpenAiModels = self
            .call(http::Method::GET, "/v1/models", None, Some(self.timeout))
            .await?;
        Ok(m.data
            .into_iter()
            .map(|m| m.id)
            .filter(|id| !id.is_empty() && id.len() <= 256)
            .take(10_000)
            .collect())
    }
}

/// A real engine and machine as the agent sees them.
#[derive(Debug)]
pub struct RealSource {
    client: OllamaClient,
    /// URL the router uses to reach this engine (may differ from the one we poll).
    public_url: String,
    limits: OllamaLimits,
    prober: Prober,
    opts: RealOptions,
    last_sample: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// What `/api/show` said each model can do (Ollama before 0.30).
    caps: std::sync::Mutex<herd_proto::ollama::Capabilities>,
}

impl RealSource {
    /// Polls `client`; tells the router to use `public_url`; no learning.
    pub fn new(client: OllamaClient, public_url: String, limits: OllamaLimits) -> Self {
        Self::with_options(
            client,
            public_url,
            limits,
            Prober::default(),
            RealOptions::default(),
        )
    }

    /// With probes and options chosen by the caller.
    pub fn with_options(
        client: OllamaClient,
        public_url: String,
        limits: OllamaLimits,
        prober: Prober,
        opts: RealOptions,
    ) -> Self {
        Self {
            client,
            public_url,
            limits,
            prober,
            opts,
            last_sample: std::sync::Mutex::new(None),
            caps: std::sync::Mutex::new(Default::default()),
        }
    }

    async fn engine(&self) -> EngineState {
        match self.opts.engine {
            EngineChoice::Openai => self.openai_engine().await,
            EngineChoice::Ollama => self.ollama_engine().await,
            EngineChoice::Auto => {
                let e = self.ollama_engine().await;
                // Reachable but not Ollama (404 on /api/version): try OpenAI.
                if !e.reachable && e.unreachable_reason.contains("HTTP 404") {
                    let o = self.openai_engine().await;
                    if o.reachable {
                        return o;
                    }
                }
                e
            }
        }
    }

    async fn openai_engine(&self) -> EngineState {
        let mut e = EngineState {
            kind: EngineKind::Openai as i32,
            ..EngineState::default()
        };
        match self.client.v1_models().await {
            Ok(ids) => {
                e.reachable = true;
                // An OpenAI-only server serves what it lists: loaded and on disk.
                e.loaded = ids
                    .iter()
                    .map(|id| LoadedModel {
                        name: id.clone(),
                        ..LoadedModel::default()
                    })
                    .collect();
                e.available = ids
                    .into_iter()
                    .map(|name| DiskModel {
                        name,
                        ..DiskModel::default()
                    })
                    .collect();
            }
            Err(err) => {
                e.unreachable_reason = format!("{}/v1/models: {err}", self.client.base());
            }
        }
        e
    }

    async fn ollama_engine(&self) -> EngineState {
        let mut e = EngineState {
            kind: EngineKind::Ollama as i32,
            parallel_slots: self.limits.num_parallel,
            max_loaded_models: self.limits.max_loaded_models,
            max_queue: self.limits.max_queue,
            ..EngineState::default()
        };
        let (v, ps, tags) =
            tokio::join!(self.client.version(), self.client.ps(), self.client.tags());
        match (v, ps, tags) {
            (Ok(v), _, _) if v.not_an_engine().is_some() => {
                e.reachable = false;
                e.unreachable_reason = format!(
                    "{}: {}",
                    self.client.base(),
                    v.not_an_engine().unwrap_or_default()
                );
            }
            (Ok(v), Ok(ps), Ok(tags)) => {
                e.reachable = true;
                e.version = v.version;
                e.loaded = herd_proto::ollama::loaded_models(ps);
                e.available = herd_proto::ollama::disk_models(tags);
                self.fill_capabilities(&mut e.available).await;
            }
            (v, ps, tags) => {
                let reason = [v.err(), ps.err(), tags.err()]
                    .into_iter()
                    .flatten()
                    .next()
                    .map_or_else(String::new, |e| e.to_string());
                e.reachable = false;
                e.unreachable_reason = format!("{}: {reason}", self.client.base());
            }
        }
        e
    }

    /// Capabilities for an Ollama whose `/api/tags` does not list them
    /// (before 0.30): from `/api/show`, asked once per model, a few per
    /// report.
    async fn fill_capabilities(&self, disk: &mut [DiskModel]) {
        let ask = self.lock_caps().apply(disk);
        for name in ask {
            let digest = disk
                .iter()
                .find(|m| m.name == name)
                .map(|m| m.digest.clone())
                .unwrap_or_default();
            let caps = match self.client.show(&name).await {
                Ok(show) => show.capabilities,
                // Down now: asked again next time.
                Err(OllamaError::Request(_) | OllamaError::Timeout(_)) => continue,
                Err(_) => Vec::new(),
            };
            self.lock_caps().learn(&name, &digest, caps);
        }
        self.lock_caps().apply(disk);
    }

    fn lock_caps(&self) -> std::sync::MutexGuard<'_, herd_proto::ollama::Capabilities> {
        self.caps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The declared engines beside the Ollama, each as its `/v1/models`
    /// and its declaration say.
    async fn extra_engines(&self) -> Vec<EngineState> {
        let polls = self.opts.extra.iter().map(|d| async move {
            let client = OllamaClient::new(d.url.clone());
            match client.v1_models_raw().await {
                Ok(listed) => herd_proto::engine::openai_engine_state(d, Some(listed)),
                // It answers, without a model list: it serves what was declared.
                Err(OllamaError::Status { .. } | OllamaError::Json(_)) if !d.models.is_empty() => {
                    herd_proto::engine::openai_engine_state(d, None)
                }
                Err(e) => {
                    herd_proto::engine::unreachable_state(d, format!("{}/v1/models: {e}", d.url))
                }
            }
        });
        futures::future::join_all(polls).await
    }

    /// Availability: learned when learning is on, with a sample taken at
    /// most every `sample_every`.
    async fn availability(&self, memory_total: u64) -> Availability {
        let Some(model) = self.opts.capacity.clone() else {
            return Availability {
                known: false,
                reason: "capacity learning is off".to_owned(),
                ..Availability::default()
            };
        };
        let load = self.prober.load();
        let due = {
            let mut last = self.last_sample.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            let due = last.is_none_or(|t| now.duration_since(t) >= self.opts.sample_every);
            if due && load.is_some() {
                *last = Some(now);
            }
            due
        };
        if due && let Some(l) = load {
            let m = model.clone();
            let saved = tokio::task::spawn_blocking(move || m.record(l.cpu, l.memory)).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!(error = %e, "cannot save a capacity sample");
            }
        }
        model.availability(load.map(|l| l.cpu), memory_total)
    }
}

impl StateSource for RealSource {
    async fn report(&self) -> NodeReport {
        let (hardware, engine, meeting, extra_engines) = tokio::join!(
            self.prober.hardware(),
            self.engine(),
            self.prober.meeting(),
            self.extra_engines()
        );
        let total = hardware.memory.as_ref().map_or(0, |m| m.total_bytes);
        let mut availability = self.availability(total).await;
        let mut mode = NodeMode::Unspecified;
        if let Meeting::InMeeting(why) = &meeting {
            mode = match self.opts.meeting {
                MeetingAction::Pause => NodeMode::Paused,
                MeetingAction::SmallOnly => NodeMode::SmallOnly,
                MeetingAction::Ignore => NodeMode::Unspecified,
            };
            if mode != NodeMode::Unspecified {
                availability.reason = format!("in a meeting ({why}); {}", availability.reason);
            }
        }
        NodeReport {
            ollama_url: self.public_url.clone(),
            simulated: false,
            hardware: Some(hardware),
            engine: Some(engine),
            availability: Some(availability),
            mode: mode as i32,
            extra_engines,
            ..NodeReport::default()
        }
    }

    async fn pull(&self, model: String) -> Result<String, String> {
        self.client.pull(&model).await.map_err(|e| e.to_string())?;
        Ok(format!("pulled {model}"))
    }

    async fn warm(&self, model: String) -> Result<String, String> {
        self.client.warm(&model).await.map_err(|e| e.to_string())?;
        Ok(format!("{model} loaded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       16315412 kB\nMemFree:         1203400 kB\nMemAvailable:    9876543 kB\nBuffers:          123 kB\nHugePages_Total:       0\n";

    #[test]
    fn meminfo_parser_reads_total_and_available() {
        assert_eq!(
            parse_meminfo(MEMINFO),
            Some((16_315_412 * 1024, 9_876_543 * 1024))
        );
        assert_eq!(parse_meminfo("MemTotal: 10 kB\n"), None, "no MemAvailable");
        assert_eq!(parse_meminfo("MemTotal: x kB\nMemAvailable: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotalX: 5 kB\nMemAvailable: 1 kB\n"), None);
    }

    #[test]
    fn limits_come_from_env_or_are_unknown() {
        let l = OllamaLimits::from_lookup(|k| match k {
            "OLLAMA_NUM_PARALLEL" => Some("2".into()),
            "OLLAMA_MAX_QUEUE" => Some("junk".into()),
            _ => None,
        });
        assert_eq!(
            l,
            OllamaLimits {
                num_parallel: 2,
                max_loaded_models: 0,
                max_queue: 0
            }
        );
    }

    #[tokio::test]
    async fn unreachable_ollama_is_reported_not_invented() {
        // Bind and drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let url = format!("http://127.0.0.1:{port}");
        let src = RealSource::new(OllamaClient::new(url.clone()), url, OllamaLimits::default());
        let r = src.report().await;
        let e = r.engine.expect("engine");
        assert!(!e.reachable);
        assert!(!e.unreachable_reason.is_empty());
        assert!(!r.simulated);
        let hw = r.hardware.expect("hw");
        let t = hw.thermal.expect("thermal");
        assert!(t.state != 0 || !t.unknown_reason.is_empty(), "{t:?}");
        let a = r.availability.expect("availability");
        assert!(!a.known && !a.reason.is_empty());
    }

    #[tokio::test]
    async fn capabilities_come_from_show_and_engines_beside_ollama_are_reported() {
        use crate::config::{DeviceConfig, ModelSpec, SimEngine};
        use crate::simulate::Device;
        // An Ollama before 0.30: /api/tags lists no capabilities.
        let ollama = Device::start(
            DeviceConfig {
                name: "old".into(),
                ollama_version: "0.12.6".into(),
                models: vec![ModelSpec {
                    name: "llava:7b".into(),
                    vision: true,
                    ..ModelSpec::default()
                }],
                ..DeviceConfig::default()
            },
            None,
        )
        .await
        .expect("ollama");
        let stt = Device::start(
            DeviceConfig {
                name: "stt".into(),
                engine: SimEngine::Stt,
                models: vec![ModelSpec {
                    name: "whisper-1".into(),
                    ..ModelSpec::default()
                }],
                num_parallel: 2,
                ..DeviceConfig::default()
            },
            None,
        )
        .await
        .expect("stt");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let decl = |s: String| herd_proto::engine::parse_engine(&s).expect("declaration");
        let src = RealSource::with_options(
            OllamaClient::new(ollama.url()),
            ollama.url(),
            OllamaLimits::default(),
            Prober::default(),
            RealOptions {
                extra: vec![
                    decl(format!("stt+{}?slots=3", stt.url())),
                    decl(format!("image+http://127.0.0.1:{port}?model=sd")),
                ],
                ..RealOptions::default()
            },
        );
        let r = src.report().await;
        let e = r.engine.expect("engine");
        assert_eq!(
            e.available[0].capabilities,
            ["completion", "tools", "vision"]
        );
        assert_eq!(r.extra_engines.len(), 2);
        let s = &r.extra_engines[0];
        assert!(s.reachable, "{s:?}");
        assert_eq!((s.kind, s.parallel_slots), (EngineKind::Stt as i32, 3));
        assert_eq!(s.url, stt.url());
        assert_eq!(s.available[0].name, "whisper-1:latest");
        assert_eq!(s.available[0].capabilities, ["audio"]);
        let down = &r.extra_engines[1];
        assert!(
            !down.reachable && !down.unreachable_reason.is_empty(),
            "{down:?}"
        );
        ollama.shutdown().await;
        stt.shutdown().await;
    }
}
