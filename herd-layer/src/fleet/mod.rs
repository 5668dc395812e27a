//! The fleet model: what herd believes about every node right now.
//!
//! Discovery is the only writer; it folds node reports, agentless polls and
//! timeouts into one [`FleetView`]. Readers take a cheap snapshot
//! (`Arc<FleetView>`) per request, so scoring sees one consistent picture and
//! never waits on a writer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::proto;
use crate::request::same_model;

/// A node's stable name (its `node_id`).
pub type NodeId = Arc<str>;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// How herd learned about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A herd-node (real or simulated) attached over herd.v1.
    Attached,
    /// An Ollama URL given to the router, polled by the router itself.
    Agentless,
}

/// Memory pressure as the device reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pressure {
    /// Not reported.
    #[default]
    Unknown,
    /// Plenty of memory.
    Normal,
    /// Short of memory: the system is compressing or swapping.
    Warn,
    /// Out of memory: the node takes no work.
    Critical,
}

/// The device's thermal state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Thermal {
    /// Not reported.
    #[default]
    Unknown,
    /// Cool.
    Nominal,
    /// Warm, not throttling.
    Fair,
    /// Throttling.
    Serious,
    /// Throttling hard: the node takes no work.
    Critical,
}

/// What the node's owner lets herd send it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Any work.
    #[default]
    Full,
    /// No new work.
    Paused,
    /// Small models only.
    SmallOnly,
}

/// The API the node's engine speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Ollama's native API (and its OpenAI compatibility).
    #[default]
    Ollama,
    /// OpenAI's API only (llama.cpp server, vLLM, LM Studio, MLX servers).
    #[serde(rename = "openai")]
    OpenAi,
    /// An OpenAI-compatible speech-to-text server (`/v1/audio/*`).
    Stt,
    /// An OpenAI-compatible image server (`/v1/images/*`).
    Image,
}

impl Engine {
    /// The engine's name in ids (`<node>/<kind>`) and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Ollama => "ollama",
            Engine::OpenAi => "openai",
            Engine::Stt => "stt",
            Engine::Image => "image",
        }
    }

    /// What every model of this engine can do when the engine does not
    /// say: a speech-to-text server transcribes, an image server draws.
    pub fn implied_caps(self) -> crate::capability::Caps {
        use crate::capability::{Capability, Caps};
        match self {
            Engine::Stt => Caps::NONE.with(Capability::Audio),
            Engine::Image => Caps::NONE.with(Capability::Image),
            Engine::Ollama | Engine::OpenAi => Caps::NONE,
        }
    }
}

impl From<proto::EngineKind> for Engine {
    fn from(k: proto::EngineKind) -> Self {
        match k {
            proto::EngineKind::Openai => Engine::OpenAi,
            proto::EngineKind::Stt => Engine::Stt,
            proto::EngineKind::Image => Engine::Image,
            proto::EngineKind::Ollama | proto::EngineKind::Unspecified => Engine::Ollama,
        }
    }
}

/// A model in the node's memory.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadedModel {
    /// e.g. `qwen3:8b`.
    pub name: String,
    /// Bytes in memory.
    pub size_bytes: u64,
    /// Bytes in GPU memory.
    pub vram_bytes: u64,
    /// The context it was loaded with, tokens (0 when unknown).
    pub context_length: u32,
    /// When it unloads, milliseconds since the Unix epoch (0 when unknown).
    pub expires_at_ms: i64,
    /// Its digest, as Ollama lists it (empty when unknown).
    pub digest: String,
}

/// A model on the node's disk.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DiskModel {
    /// e.g. `qwen3:8b`.
    pub name: String,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// e.g. `qwen3`.
    pub family: String,
    /// e.g. `8.2B`.
    pub parameter_size: String,
    /// e.g. `Q4_K_M`.
    pub quantization: String,
    /// Its digest (empty when unknown).
    pub digest: String,
    /// When it was last changed on the node, ms since the Unix epoch (0: unknown).
    pub modified_at_ms: i64,
    /// e.g. `gguf`.
    pub format: String,
    /// e.g. `["qwen3"]`.
    pub families: Vec<String>,
    /// The model it was made from.
    pub parent_model: String,
    /// What it can do (`completion`, `tools`, `vision`, …; empty: unknown).
    pub capabilities: Vec<String>,
}

/// Everything known about one node.
#[derive(Clone, Debug, Serialize)]
pub struct NodeState {
    /// Its stable name.
    pub id: NodeId,
    /// How herd learned of it.
    pub source: Source,
    /// Base URL of the node's engine, e.g. `http://10.0.0.5:11434`.
    pub url: String,
    /// The engine's socket address when the URL names an IP literal.
    pub addr: Option<SocketAddr>,
    /// A simulated device (herd-node's simulate mode).
    pub simulated: bool,
    /// Whether it may be routed to.
    pub online: bool,
    /// Why the node is offline, when it is.
    pub offline_reason: Option<String>,
    /// When it last reported or answered a poll.
    #[serde(skip)]
    pub last_seen: Instant,
    /// Reports (or polls) received.
    pub reports: u64,
    /// herd-node's version (empty when agentless).
    pub agent_version: String,
    /// The API its engine speaks.
    pub engine: Engine,
    /// The engine's version, e.g. `0.12.6`.
    pub engine_version: String,
    /// Whether the engine answered its last check.
    pub engine_reachable: bool,
    /// e.g. `Apple M2 Max`.
    pub chip: String,
    /// Memory, bytes.
    pub memory_total_bytes: u64,
    /// Memory free for models, bytes.
    pub memory_available_bytes: u64,
    /// Memory pressure.
    pub memory_pressure: Pressure,
    /// Thermal state.
    pub thermal: Thermal,
    /// CPU busy, 0..=1.
    pub cpu_utilization: f64,
    /// Memory bandwidth, GB/s (0 when unknown): decode speed follows it.
    pub memory_bandwidth_gbps: f64,
    /// Size of the disk that holds the models; 0 when unknown.
    pub disk_total_bytes: u64,
    /// Free space on that disk, bytes.
    pub disk_available_bytes: u64,
    /// Models in memory.
    pub loaded: Vec<LoadedModel>,
    /// Models on disk.
    pub available: Vec<DiskModel>,
    /// Models that left memory recently, with when (milliseconds since the Unix epoch).
    pub recently_unloaded: HashMap<String, i64>,
    /// Concurrent requests per loaded model (OLLAMA_NUM_PARALLEL); 0 when unknown.
    pub parallel_slots: u32,
    /// Models the engine keeps loaded at once (OLLAMA_MAX_LOADED_MODELS); 0 when unknown.
    pub max_loaded_models: u32,
    /// Requests the engine queues before refusing (OLLAMA_MAX_QUEUE); 0 when unknown.
    pub max_queue: u32,
    /// What its owner allows.
    pub mode: Mode,
    /// Finishing its requests and taking no new ones.
    pub draining: bool,
    /// Learned availability, 0..=1, when the node has learned it.
    pub availability: Option<f64>,
    /// Memory the node is willing to give to models; 0 means no ceiling.
    pub memory_ceiling_bytes: u64,
    /// When each loaded model came into memory at the latest, ms since the
    /// Unix epoch: the report before the one that first showed it (0 when
    /// it was loaded at the first report). A KV cache is no older.
    #[serde(skip)]
    pub loaded_since: HashMap<String, i64>,
    /// When the engine's state was last applied, ms since the Unix epoch.
    #[serde(skip)]
    pub engine_seen_ms: i64,
    /// For an engine a herd-node reports beside its Ollama (an id like
    /// `<node>/<kind>`): the node whose machine it runs on, whose hardware
    /// signals it shares.
    pub machine: Option<NodeId>,
}

impl NodeState {
    /// A node herd knows only by URL; everything else is unknown until it reports.
    pub fn new(id: NodeId, source: Source, url: String) -> Self {
        let addr = addr_of(&url);
        NodeState {
            id,
            source,
            url,
            addr,
            simulated: false,
            online: false,
            offline_reason: Some("no report yet".into()),
            last_seen: Instant::now(),
            reports: 0,
            agent_version: String::new(),
            engine: Engine::Ollama,
            engine_version: String::new(),
            engine_reachable: false,
            chip: String::new(),
            memory_total_bytes: 0,
            memory_available_bytes: 0,
            memory_pressure: Pressure::Unknown,
            thermal: Thermal::Unknown,
            cpu_utilization: 0.0,
            memory_bandwidth_gbps: 0.0,
            disk_total_bytes: 0,
            disk_available_bytes: 0,
            loaded: Vec::new(),
            available: Vec::new(),
            recently_unloaded: HashMap::new(),
            parallel_slots: 0,
            max_loaded_models: 0,
            max_queue: 0,
            mode: Mode::Full,
            draining: false,
            availability: None,
            memory_ceiling_bytes: 0,
            loaded_since: HashMap::new(),
            engine_seen_ms: 0,
            machine: None,
        }
    }

    /// When `model` came into memory at the latest (see
    /// [`NodeState::loaded_since`]); `None` when it is not loaded.
    pub fn loaded_since_ms(&self, model: &str) -> Option<i64> {
        self.loaded_model(model)?;
        self.loaded_since
            .iter()
            .find(|(m, _)| same_model(m, model))
            .map(|(_, at)| *at)
    }

    /// The loaded copy of `model`, if loaded.
    pub fn loaded_model(&self, model: &str) -> Option<&LoadedModel> {
        self.loaded.iter().find(|m| same_model(&m.name, model))
    }

    /// `model` on disk, if there.
    pub fn disk_model(&self, model: &str) -> Option<&DiskModel> {
        self.available.iter().find(|m| same_model(&m.name, model))
    }

    /// What `model` can do here, when the node says (its `capabilities`,
    /// and what the engine's kind implies); `None` when unknown.
    pub fn model_caps(&self, model: &str) -> Option<crate::capability::Caps> {
        use crate::capability::Caps;
        let listed = self
            .disk_model(model)
            .map(|m| Caps::from_names(m.capabilities.iter().map(String::as_str)))
            .unwrap_or_default();
        let caps = listed.union(self.engine.implied_caps());
        (!caps.is_empty()).then_some(caps)
    }

    /// Whether `model` is on disk or loaded.
    pub fn has_model(&self, model: &str) -> bool {
        self.loaded_model(model).is_some() || self.disk_model(model).is_some()
    }

    /// Memory a model could use here: what is free, capped by the node's ceiling.
    pub fn usable_memory_bytes(&self) -> u64 {
        if self.memory_ceiling_bytes > 0 {
            self.memory_available_bytes.min(self.memory_ceiling_bytes)
        } else {
            self.memory_available_bytes
        }
    }

    /// Memory, GiB.
    pub fn memory_total_gib(&self) -> f64 {
        self.memory_total_bytes as f64 / GIB
    }

    /// Fold a report from an attached node into this state.
    pub fn apply_report(&mut self, r: &proto::NodeReport, now: Instant, now_ms: i64) {
        self.simulated = r.simulated;
        self.agent_version = bounded(&r.agent_version);
        if let Ok(url) = herd_proto::node::engine_url(&r.ollama_url)
            && url != self.url
        {
            self.url = url;
            self.addr = addr_of(&self.url);
        }
        if let Some(hw) = &r.hardware {
            self.chip = bounded(&hw.chip);
            self.memory_bandwidth_gbps = sane(hw.memory_bandwidth_gbps, 100_000.0);
            if let Some(m) = &hw.memory {
                self.memory_total_bytes = m.total_bytes.min(MAX_BYTES);
                self.memory_available_bytes = m.available_bytes.min(self.memory_total_bytes);
                self.memory_pressure = match proto::MemoryPressure::try_from(m.pressure) {
                    Ok(proto::MemoryPressure::Normal) => Pressure::Normal,
                    Ok(proto::MemoryPressure::Warn) => Pressure::Warn,
                    Ok(proto::MemoryPressure::Critical) => Pressure::Critical,
                    _ => Pressure::Unknown,
                };
            }
            if let Some(t) = &hw.thermal {
                self.thermal = match proto::ThermalState::try_from(t.state) {
                    Ok(proto::ThermalState::Nominal) => Thermal::Nominal,
                    Ok(proto::ThermalState::Fair) => Thermal::Fair,
                    Ok(proto::ThermalState::Serious) => Thermal::Serious,
                    Ok(proto::ThermalState::Critical) => Thermal::Critical,
                    _ => Thermal::Unknown,
                };
            }
            if let Some(c) = &hw.cpu {
                self.cpu_utilization = sane(c.utilization, 1.0);
            }
            if let Some(d) = &hw.disk {
                self.disk_total_bytes = d.total_bytes.min(MAX_BYTES);
                self.disk_available_bytes = d.available_bytes.min(self.disk_total_bytes);
            }
        }
        if let Some(e) = &r.engine {
            self.apply_engine(e, now_ms);
        }
        self.mode = match proto::NodeMode::try_from(r.mode) {
            Ok(proto::NodeMode::Paused) => Mode::Paused,
            Ok(proto::NodeMode::SmallOnly) => Mode::SmallOnly,
            _ => Mode::Full,
        };
        self.draining = r.draining;
        match &r.availability {
            Some(a) if a.known => {
                self.availability = Some(sane(a.score, 1.0));
                self.memory_ceiling_bytes = a.memory_ceiling_bytes.min(MAX_BYTES);
            }
            Some(a) => {
                self.availability = None;
                self.memory_ceiling_bytes = a.memory_ceiling_bytes.min(MAX_BYTES);
            }
            None => self.availability = None,
        }
        self.seen(now);
    }

    /// Fold one of the extra engines of `machine`'s report into this state:
    /// the machine's hardware, mode and availability, the engine's own
    /// models and URL. False (and nothing changed) when its URL is unusable.
    pub fn apply_extra_engine(
        &mut self,
        machine: &NodeId,
        r: &proto::NodeReport,
        e: &proto::EngineState,
        now: Instant,
        now_ms: i64,
    ) -> bool {
        let Ok(url) = herd_proto::node::engine_url(&e.url) else {
            return false;
        };
        // The machine's report with this engine in its Ollama's place.
        let shared = proto::NodeReport {
            ollama_url: url,
            simulated: r.simulated,
            agent_version: r.agent_version.clone(),
            hardware: r.hardware.clone(),
            engine: Some(e.clone()),
            mode: r.mode,
            availability: r.availability.clone(),
            draining: r.draining,
            ..Default::default()
        };
        self.machine = Some(machine.clone());
        self.apply_report(&shared, now, now_ms);
        if !e.reachable {
            let why = if e.unreachable_reason.is_empty() {
                "engine unreachable".to_string()
            } else {
                bounded(&e.unreachable_reason)
            };
            self.mark_offline(why);
        }
        true
    }

    /// Fold the engine's state (from a report, or from polling an agentless
    /// node) into this state.
    pub fn apply_engine(&mut self, e: &proto::EngineState, now_ms: i64) {
        self.engine = proto::EngineKind::try_from(e.kind).map_or(Engine::Ollama, Engine::from);
        self.engine_reachable = e.reachable;
        self.engine_version = bounded(&e.version);
        let loaded = e
            .loaded
            .iter()
            .filter(|m| herd_proto::node::model_name_ok(&m.name))
            .take(MAX_LOADED)
            .map(|m| LoadedModel {
                name: m.name.clone(),
                size_bytes: m.size_bytes.min(MAX_BYTES),
                vram_bytes: m.vram_bytes.min(MAX_BYTES),
                context_length: m.context_length.min(MAX_CONTEXT),
                expires_at_ms: m.expires_at_ms,
                digest: bounded(&m.digest),
            })
            .collect();
        self.set_loaded(loaded, now_ms);
        self.available = e
            .available
            .iter()
            .filter(|m| herd_proto::node::model_name_ok(&m.name))
            .take(MAX_ON_DISK)
            .map(|m| DiskModel {
                name: m.name.clone(),
                size_bytes: m.size_bytes.min(MAX_BYTES),
                family: bounded(&m.family),
                parameter_size: bounded(&m.parameter_size),
                quantization: bounded(&m.quantization),
                digest: bounded(&m.digest),
                modified_at_ms: m.modified_at_ms,
                format: bounded(&m.format),
                families: m
                    .families
                    .iter()
                    .take(MAX_LIST)
                    .map(|f| bounded(f))
                    .collect(),
                parent_model: bounded(&m.parent_model),
                capabilities: m
                    .capabilities
                    .iter()
                    .take(MAX_LIST)
                    .map(|c| bounded(c))
                    .collect(),
            })
            .collect();
        self.parallel_slots = e.parallel_slots.min(MAX_SLOTS);
        self.max_loaded_models = e.max_loaded_models.min(MAX_LOADED as u32);
        self.max_queue = e.max_queue.min(MAX_QUEUE);
    }

    /// Replace the loaded set, remembering what just left memory (the "warm" tier).
    pub fn set_loaded(&mut self, loaded: Vec<LoadedModel>, now_ms: i64) {
        for old in &self.loaded {
            if !loaded.iter().any(|m| same_model(&m.name, &old.name)) {
                self.recently_unloaded.insert(old.name.clone(), now_ms);
            }
        }
        for m in &loaded {
            self.recently_unloaded.remove(&m.name);
            if !self.loaded.iter().any(|old| same_model(&m.name, &old.name)) {
                // It came in since the last report, at the earliest then.
                self.loaded_since
                    .insert(m.name.clone(), self.engine_seen_ms.min(now_ms));
            }
        }
        self.loaded_since
            .retain(|name, _| loaded.iter().any(|m| &m.name == name));
        self.engine_seen_ms = now_ms;
        // Forget entries older than a day so the map stays small.
        self.recently_unloaded
            .retain(|_, at| now_ms.saturating_sub(*at) < 24 * 3600 * 1000);
        self.loaded = loaded;
    }

    /// The node was heard from at `now`.
    pub fn seen(&mut self, now: Instant) {
        self.last_seen = now;
        self.reports += 1;
        self.online = true;
        self.offline_reason = None;
    }

    /// Take the node out of routing, saying why.
    pub fn mark_offline(&mut self, reason: impl Into<String>) {
        self.online = false;
        self.offline_reason = Some(reason.into());
    }
}

pub use herd_proto::node::addr_of;

// What a node may claim. Reports come off the network: numbers beyond these
// are not real machines, and each one feeds something herd sizes by it (a
// benchmark sends `parallel_slots` requests at once; admission opens that
// many slots).

/// Parallel slots per model (Ollama's OLLAMA_NUM_PARALLEL is 1–4 in practice).
pub const MAX_SLOTS: u32 = 64;
/// Requests an engine queues.
const MAX_QUEUE: u32 = 100_000;
/// Models in memory at once.
const MAX_LOADED: usize = 256;
/// Models on disk.
const MAX_ON_DISK: usize = 4096;
/// Bytes of memory, disk or model: 1 PiB.
const MAX_BYTES: u64 = 1 << 50;
/// Context length, tokens.
const MAX_CONTEXT: u32 = 16 * 1024 * 1024;
/// Free-text fields (chip, versions, model details).
const MAX_TEXT: usize = 128;
/// Longest list in a model entry (families, capabilities).
const MAX_LIST: usize = 16;

fn bounded(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_string();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn sane(x: f64, max: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, max)
    } else {
        0.0
    }
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One consistent picture of the fleet.
///
/// Nodes are shared between views (`Arc`): a change copies the one node it
/// touches, not the fleet — with hundreds of nodes reporting every two
/// seconds, each holding a thousand models, copying everything on every
/// report would be most of the router's work.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FleetView {
    /// Every node known, by id.
    pub nodes: BTreeMap<NodeId, Arc<NodeState>>,
    /// Bumped on every change.
    pub generation: u64,
    /// Every model and the nodes that have it, built once per view when
    /// first asked (see [`FleetView::models`]).
    #[serde(skip)]
    merged: std::sync::OnceLock<Arc<BTreeMap<String, Vec<NodeId>>>>,
}

impl FleetView {
    /// The node with `id`.
    pub fn node(&self, id: &str) -> Option<&NodeState> {
        self.nodes.get(id).map(|n| &**n)
    }

    /// The nodes that may be routed to.
    pub fn online(&self) -> impl Iterator<Item = &NodeState> {
        self.nodes.values().map(|n| &**n).filter(|n| n.online)
    }

    /// The largest size any node reports for a model (loaded size first, then disk size).
    pub fn model_size(&self, model: &str) -> Option<u64> {
        let loaded = self
            .nodes
            .values()
            .filter_map(|n| n.loaded_model(model))
            .map(|m| m.size_bytes)
            .max();
        loaded.or_else(|| {
            self.nodes
                .values()
                .filter_map(|n| n.disk_model(model))
                .map(|m| m.size_bytes)
                .max()
        })
    }

    /// Every model name in the fleet with the nodes that have it, built
    /// once per view (a view is immutable; the next change makes a new one).
    pub fn models(&self) -> Arc<BTreeMap<String, Vec<NodeId>>> {
        self.merged
            .get_or_init(|| {
                let mut out: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
                for n in self.nodes.values() {
                    let names = n
                        .loaded
                        .iter()
                        .map(|m| &m.name)
                        .chain(n.available.iter().map(|m| &m.name));
                    for name in names {
                        let e = out.entry(name.clone()).or_default();
                        // A node's names come together: only the last can repeat it.
                        if e.last() != Some(&n.id) {
                            e.push(n.id.clone());
                        }
                    }
                }
                Arc::new(out)
            })
            .clone()
    }

    /// A node to change (copied out of the views that share it).
    pub fn node_mut(&mut self, id: &str) -> Option<&mut NodeState> {
        self.nodes.get_mut(id).map(Arc::make_mut)
    }

    /// Add or replace a node.
    pub fn insert(&mut self, n: NodeState) {
        self.nodes.insert(n.id.clone(), Arc::new(n));
    }
}

/// The shared, watchable fleet. Cloning is cheap; all clones see one view.
#[derive(Clone, Debug)]
pub struct Fleet {
    tx: Arc<watch::Sender<Arc<FleetView>>>,
}

impl Default for Fleet {
    fn default() -> Self {
        Self::new()
    }
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(Arc::new(FleetView::default()));
        Fleet { tx: Arc::new(tx) }
    }

    /// The current view; cheap (an `Arc` clone).
    pub fn snapshot(&self) -> Arc<FleetView> {
        self.tx.borrow().clone()
    }

    /// Apply a change. Readers holding older snapshots are unaffected.
    pub fn update<R>(&self, f: impl FnOnce(&mut FleetView) -> R) -> R {
        let mut out = None;
        self.tx.send_modify(|view| {
            let v = Arc::make_mut(view);
            out = Some(f(v));
            v.generation += 1;
            v.merged = std::sync::OnceLock::new();
        });
        out.expect("send_modify runs the closure")
    }

    /// Changes as they happen.
    pub fn subscribe(&self) -> watch::Receiver<Arc<FleetView>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unloading_is_remembered() {
        let mut n = NodeState::new("a".into(), Source::Agentless, "http://127.0.0.1:1".into());
        let m = |name: &str| LoadedModel {
            name: name.into(),
            size_bytes: 1,
            vram_bytes: 1,
            context_length: 4096,
            expires_at_ms: 0,
            ..Default::default()
        };
        n.set_loaded(vec![m("a:1b")], 1_000);
        n.set_loaded(vec![], 2_000);
        assert_eq!(n.recently_unloaded.get("a:1b"), Some(&2_000));
        n.set_loaded(vec![m("a:1b")], 3_000);
        assert!(n.recently_unloaded.is_empty());
        // Loaded again after the report at 2,000: its cache is no older.
        assert_eq!(n.loaded_since_ms("a:1b"), Some(2_000));
        n.set_loaded(vec![m("a:1b")], 4_000);
        assert_eq!(n.loaded_since_ms("a:1b"), Some(2_000));
        assert_eq!(n.loaded_since_ms("b:1b"), None);
    }

    #[test]
    fn snapshots_are_isolated_from_updates() {
        let fleet = Fleet::new();
        let before = fleet.snapshot();
        fleet.update(|v| {
            v.insert(NodeState::new(
                "n".into(),
                Source::Agentless,
                "http://127.0.0.1:1".into(),
            ));
        });
        assert!(before.nodes.is_empty());
        assert_eq!(fleet.snapshot().nodes.len(), 1);
        assert_eq!(fleet.snapshot().generation, 1);
    }
}
