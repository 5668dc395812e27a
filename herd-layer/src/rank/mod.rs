//! The pure scorer: rank every node for one request, and say why.
//!
//! [`score`] is a pure function of the fleet snapshot, the live load and
//! learned performance ([`Observations`]) and the request. It does no I/O, so
//! it is unit-tested without sockets, shared verbatim by the proxy and the
//! Endpoint Picker, and its output is what `/fleet/explain` and the dashboard
//! show: every candidate with its per-signal breakdown, and every eliminated
//! node with the reason.
//!
//! Signals (points; higher is better):
//!
//! | signal | range | what it rewards |
//! |---|---|---|
//! | `model_temperature` | 0…50 | model loaded (50), unloaded recently (30), on disk (10) |
//! | `memory_fit` | 0…20 | loaded (20), else room to load it comfortably |
//! | `queue_depth` | −30…0 | few requests in flight or waiting per slot, normalised by node speed |
//! | `expected_wait` | −60…0 | short expected time to first token: queue wait + cold load + prefill |
//! | `generation_speed` | −20…0 | short expected generation time at the node's learned tokens/s |
//! | `role_affinity` | 0…15 | big models on big machines, small models on small ones |
//! | `availability` | −10…10 | the node's learned availability (0 when unknown: neutral) |
//! | `context_fit` | −15…5 | the prompt fits the loaded context window |
//! | `device_thermal` | −25…0 | the device is not throttling |
//! | `memory_pressure` | −15…0 | the device is not short of memory |
//! | `reliability` | −60…0 | the node has not been failing attempts lately (fades in ~15 s) |
//! | `prefix_hit` | 0…30 | the node probably holds the prompt's head in its KV cache, worth the prefill it saves; discounted when no slot is free |
//!
//! Prefix-cache affinity ("residency is not occupancy"): a node that holds
//! a request's prompt prefix ([`crate::prefix`]) prefills only the rest, so
//! its expected time to first token drops by the tokens it holds, and
//! `prefix_hit` rewards the prefill saved. Both are weighed against the
//! same node's queue: `queue_depth` and the queue wait in `expected_wait`
//! grow with its load, and `prefix_hit` shrinks by the share of a slot left
//! when none is free (its cache may be overwritten before the request gets
//! one), so a warm but busy node wins only while the prefill it saves is
//! worth more than the wait.
//!
//! Parallel slots: what the node's agent reports; else `[scoring]
//! default_parallel_slots` when set; else what its answers taught
//! ([`crate::slots`]); else one (Ollama's default).
//!
//! Hard eliminations: offline, draining, paused, excluded by a retry, critical
//! memory pressure, critical thermal state, model absent, the model there
//! cannot do what the request needs (images, tools, thinking, audio, image
//! generation — when the node says what it can do), model does not fit,
//! an engine that does not serve the request's API, small-only mode with a
//! big model. Ties are broken by fewer requests in flight, then by node name, so
//! the result is deterministic.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::fleet::{Engine, FleetView, Mode, NodeId, NodeState, Pressure, Thermal};
use crate::request::{Dialect, Endpoint, Kind};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// What an image generation is expected to take before herd learns a
/// node's pace, ms (a diffusion model on a Mac, one 1024×1024 image).
const MEDIA_IMAGE_MS: f64 = 60_000.0;
/// What a transcription is expected to take before herd learns, ms.
const MEDIA_AUDIO_MS: f64 = 30_000.0;

/// Live load on one node:model, as the queueing layer sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Load {
    /// Requests holding a slot.
    pub in_flight: u32,
    /// Requests waiting for one.
    pub waiting: u32,
}

/// What herd has learned about one node:model from traffic it routed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Perf {
    /// Typical time to first token on a warm model, in milliseconds.
    pub ttft_ms: f64,
    /// Generation speed, tokens per second.
    pub tokens_per_s: f64,
    /// Typical time a cold load took, in milliseconds, when seen.
    pub cold_load_ms: Option<f64>,
    /// Samples the medians come from.
    pub samples: u32,
    /// Failed attempts in a row, fading with time (0 when healthy).
    pub recent_failures: f64,
}

/// The live inputs scoring reads besides the fleet snapshot.
pub trait Observations {
    /// Live load on `node`:`model`.
    fn load(&self, node: &str, model: &str) -> Load;
    /// What traffic taught about `node`:`model`, if anything.
    fn perf(&self, node: &str, model: &str) -> Option<Perf>;
    /// How much longer `node` stays out of routing because it went silent
    /// (a first-byte deadline passed), if it did.
    fn unresponsive(&self, _node: &str) -> Option<std::time::Duration> {
        None
    }
    /// Tokens of `prefix` that `node`:`model` probably holds in its KV
    /// cache: its leading blocks herd sent there no earlier than
    /// `since_ms` (when the model was loaded) and recently enough at
    /// `now_ms` (see [`crate::prefix::PrefixIndex`]).
    fn cached_tokens(
        &self,
        _node: &str,
        _model: &str,
        _prefix: &crate::prefix::Prefix,
        _since_ms: i64,
        _now_ms: i64,
    ) -> u32 {
        0
    }
    /// How many requests `node`:`model` serves at once, as its answers
    /// taught (see [`crate::slots`]).
    fn learned_slots(&self, _node: &str, _model: &str) -> Option<crate::slots::SlotEstimate> {
        None
    }
}

/// No load and nothing learned: for tests and `/fleet/explain` without traffic.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObservations;

impl Observations for NoObservations {
    fn load(&self, _: &str, _: &str) -> Load {
        Load::default()
    }
    fn perf(&self, _: &str, _: &str) -> Option<Perf> {
        None
    }
}

/// Tunables. Defaults need no file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    /// Slots assumed when a node does not report OLLAMA_NUM_PARALLEL;
    /// unset (the default), they are learned from how it answers
    /// ([`crate::slots`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_parallel_slots: Option<u32>,
    /// Prefix-cache affinity: send a request where its prompt's head was
    /// sent before, while that node has room ([`crate::prefix`]). Off,
    /// prompts are neither tracked nor scored.
    pub prefix_affinity: bool,
    /// Tokens/s assumed before anything is learned and no bandwidth is known.
    pub default_tokens_per_s: f64,
    /// Output tokens assumed when the client sets no cap.
    pub default_output_tokens: u32,
    /// Time to first token assumed on a warm model before anything is learned, ms.
    pub default_ttft_ms: f64,
    /// Prefill speed assumed, tokens per second.
    pub default_prefill_tokens_per_s: f64,
    /// Cold-load time assumed per GiB of model, ms.
    pub cold_load_ms_per_gib: f64,
    /// How long after unloading a model counts as "recently loaded", seconds.
    pub warm_window_s: u64,
    /// A model larger than this (GiB) is "large" for role affinity and small-only mode.
    pub large_model_gib: f64,
    /// A model smaller than this (GiB) is "small".
    pub small_model_gib: f64,
    /// Headroom required to load a model: size × this factor must fit.
    pub fit_factor: f64,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            default_parallel_slots: None,
            prefix_affinity: true,
            default_tokens_per_s: 30.0,
            default_output_tokens: 256,
            default_ttft_ms: 150.0,
            default_prefill_tokens_per_s: 1000.0,
            cold_load_ms_per_gib: 700.0,
            warm_window_s: 1800,
            large_model_gib: 20.0,
            small_model_gib: 8.0,
            fit_factor: 1.1,
        }
    }
}

/// What scoring needs to know about the request.
#[derive(Clone, Debug)]
pub struct ScoreInput<'a> {
    /// The model to serve.
    pub model: &'a str,
    /// The work asked for.
    pub kind: Kind,
    /// The client's dialect (engines that cannot serve it are eliminated).
    pub format: Dialect,
    /// Estimated prompt tokens.
    pub est_prompt_tokens: u32,
    /// The client's cap on output tokens.
    pub max_output_tokens: Option<u32>,
    /// Nodes a retry has already tried.
    pub exclude: &'a [NodeId],
    /// When set (EPP subset hint), only these nodes may serve.
    pub only: Option<&'a [NodeId]>,
    /// The endpoint called.
    pub endpoint: Endpoint,
    /// Only engines that serve `endpoint` themselves qualify (herd-epp).
    pub native_only: bool,
    /// Wall-clock now, milliseconds since the Unix epoch (injected: scoring reads no clock).
    pub now_ms: i64,
    /// What the model must be able to do ([`crate::dialect::needs`]).
    pub needs: crate::capability::Caps,
    /// The prompt's block hashes, for prefix-cache affinity (`None`: no
    /// prompt known, as for `/fleet/explain?model=`).
    pub prefix: Option<&'a crate::prefix::Prefix>,
}

/// The per-signal breakdown of one candidate's score.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Signals {
    /// Model loaded (50), unloaded recently (30), on disk (10).
    pub model_temperature: f64,
    /// Loaded (20), else room to load it comfortably.
    pub memory_fit: f64,
    /// Few requests in flight or waiting per slot, normalised by node speed (−30…0).
    pub queue_depth: f64,
    /// Short expected time to first token: wait + cold load + prefill (−60…0).
    pub expected_wait: f64,
    /// Short expected generation time (−20…0).
    pub generation_speed: f64,
    /// Big models on big machines, small on small (0…15).
    pub role_affinity: f64,
    /// Learned availability (−10…10; 0 when unknown).
    pub availability: f64,
    /// The prompt fits the loaded context (−15…5).
    pub context_fit: f64,
    /// The device is not throttling (−25…0).
    pub device_thermal: f64,
    /// The device is not short of memory (−15…0).
    pub memory_pressure: f64,
    /// The node has not been failing lately (−60…0).
    pub reliability: f64,
    /// The node probably holds the prompt's head in its KV cache: the
    /// prefill it saves, less when no slot is free (0…30).
    pub prefix_hit: f64,
}

impl Signals {
    /// The score: the sum of the signals.
    pub fn total(&self) -> f64 {
        self.model_temperature
            + self.memory_fit
            + self.queue_depth
            + self.expected_wait
            + self.generation_speed
            + self.role_affinity
            + self.availability
            + self.context_fit
            + self.device_thermal
            + self.memory_pressure
            + self.reliability
            + self.prefix_hit
    }
}

/// How warm the model is on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Temperature {
    /// Loaded.
    Hot,
    /// Unloaded recently (the OS may still cache its file).
    Warm,
    /// On disk only.
    Cold,
}

/// A node that can serve the request, with its score and the reasons.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Its engine's base URL.
    pub url: String,
    /// Its score (higher is better).
    pub score: f64,
    /// The score's parts.
    pub signals: Signals,
    /// How warm the model is there.
    pub temperature: Temperature,
    /// Live load there.
    pub load: Load,
    /// Parallel slots there.
    pub slots: u32,
    /// Where `slots` comes from.
    pub slots_source: crate::slots::SlotSource,
    /// Expected milliseconds until the first token.
    pub expected_ttft_ms: f64,
    /// Expected milliseconds from the first token to the last.
    pub expected_generation_ms: f64,
    /// Prompt tokens the node probably holds in its KV cache (not prefilled
    /// again there).
    pub expected_cached_tokens: u32,
}

/// Why a node cannot serve the request.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Elimination {
    /// Offline, with the reason.
    Offline {
        /// Why it is offline.
        detail: String,
    },
    /// Draining.
    Draining,
    /// Paused by its owner.
    Paused,
    /// In small-only mode, and the model is big.
    SmallOnly {
        /// The model's size, GiB.
        model_gib: f64,
    },
    /// Already tried by this request.
    Excluded,
    /// Outside the EPP's subset hint.
    NotInSubset,
    /// Out of memory.
    MemoryPressureCritical,
    /// Throttling hard.
    ThermalCritical,
    /// Its engine does not answer.
    EngineUnreachable,
    /// It went silent on a recent request; tried again after a pause.
    Unresponsive {
        /// Seconds until it is tried again.
        retry_in_s: u64,
    },
    /// Its engine cannot serve this API.
    EngineMismatch {
        /// The node's engine.
        engine: Engine,
        /// The API's path.
        api: &'static str,
        /// The Ollama release that first served the API itself, when the
        /// request must be served natively (herd-epp) and the node is older.
        since: Option<&'static str>,
    },
    /// The model is not on it.
    ModelAbsent,
    /// The model there cannot do what the request needs.
    Incapable {
        /// What it lacks.
        lacks: crate::capability::Caps,
        /// What it can do, as the node says.
        can: crate::capability::Caps,
    },
    /// The model would not fit in its memory.
    DoesNotFit {
        /// Memory the model needs, GiB.
        need_gib: f64,
        /// Memory the node can give, GiB.
        usable_gib: f64,
    },
}

impl std::fmt::Display for Elimination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Elimination::Offline { detail } => write!(f, "offline ({detail})"),
            Elimination::Draining => f.write_str("draining"),
            Elimination::Paused => f.write_str("paused"),
            Elimination::SmallOnly { model_gib } => {
                write!(f, "small models only ({model_gib:.1} GiB is too big)")
            }
            Elimination::Excluded => f.write_str("already tried"),
            Elimination::NotInSubset => f.write_str("not in the subset hint"),
            Elimination::MemoryPressureCritical => f.write_str("memory pressure critical"),
            Elimination::ThermalCritical => f.write_str("thermal state critical"),
            Elimination::EngineUnreachable => f.write_str("engine unreachable"),
            Elimination::Unresponsive { retry_in_s } => write!(
                f,
                "sent nothing within its first-byte deadline lately (tried again in {retry_in_s} s)"
            ),
            Elimination::EngineMismatch {
                engine,
                api,
                since: Some(since),
            } => write!(
                f,
                "its {engine:?} does not serve {api} itself ({since} and later do)"
            ),
            Elimination::EngineMismatch {
                engine,
                api,
                since: None,
            } => write!(f, "engine {engine:?} cannot serve {api}"),
            Elimination::ModelAbsent => f.write_str("model not on this node"),
            Elimination::Incapable { lacks, can } => {
                let doing: Vec<&str> = lacks.iter().map(|c| c.doing()).collect();
                write!(
                    f,
                    "the model here cannot {} (lacks {lacks}; it can: {})",
                    doing.join(" or "),
                    if can.is_empty() {
                        "nothing listed".into()
                    } else {
                        can.to_string()
                    }
                )
            }
            Elimination::DoesNotFit {
                need_gib,
                usable_gib,
            } => write!(
                f,
                "model needs {need_gib:.1} GiB, {usable_gib:.1} GiB usable"
            ),
        }
    }
}

/// A node that cannot serve, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Eliminated {
    /// The node.
    pub node: NodeId,
    /// Why.
    #[serde(flatten)]
    pub why: Elimination,
}

/// Every node, ranked or eliminated.
#[derive(Clone, Debug, Serialize)]
pub struct Ranking {
    /// The model ranked for.
    pub model: String,
    /// Best first.
    pub candidates: Vec<Candidate>,
    /// Nodes that cannot serve, with the reason.
    pub eliminated: Vec<Eliminated>,
    /// Whether any node in the fleet, online or not, has the model.
    pub model_known: bool,
}

impl Ranking {
    /// The winner, if any node can serve.
    pub fn best(&self) -> Option<&Candidate> {
        self.candidates.first()
    }

    /// True when no node in the fleet has the model at all.
    pub fn model_unknown(&self) -> bool {
        !self.model_known
    }

    /// When the model is on some node and every node that has it lacks
    /// what the request needs (the others not having it, or not serving
    /// the API at all), what was lacking: the request cannot be served as
    /// it is, now or later.
    pub fn incapable(&self) -> Option<String> {
        if !self.candidates.is_empty() {
            return None;
        }
        let mut lacking = Vec::new();
        for e in &self.eliminated {
            match &e.why {
                Elimination::Incapable { .. } => lacking.push(format!("{}: {}", e.node, e.why)),
                Elimination::ModelAbsent | Elimination::EngineMismatch { .. } => {}
                _ => return None,
            }
        }
        (!lacking.is_empty()).then(|| lacking.join("; "))
    }

    /// One line naming why each node was eliminated.
    pub fn elimination_summary(&self) -> String {
        self.eliminated
            .iter()
            .map(|e| format!("{}: {}", e.node, e.why))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// No node can serve the request; carries the full ranking so the edge can
/// say why (404 when no node has the model, 503 when none is eligible).
#[derive(Debug, thiserror::Error)]
#[error("no node can serve model {model:?}: {summary}")]
pub struct NoCandidates {
    /// The model asked for.
    pub model: String,
    /// Why each node was eliminated, on one line.
    pub summary: String,
    /// The whole ranking.
    pub ranking: std::sync::Arc<Ranking>,
}

impl NoCandidates {
    /// True when no node in the fleet has the model.
    pub fn model_unknown(&self) -> bool {
        self.ranking.model_unknown()
    }
}

/// Rank every node of `view` for `input`.
pub fn score(
    view: &FleetView,
    obs: &dyn Observations,
    input: &ScoreInput<'_>,
    cfg: &ScoringConfig,
) -> Ranking {
    let model_size = view.model_size(input.model).unwrap_or(0);
    let model_gib = if model_size > 0 {
        model_size as f64 / GIB
    } else {
        name_size_gib(input.model)
    };
    // Speeds of online nodes, to normalise queue depth against the fleet median.
    let median_speed = median(
        view.online()
            .map(|n| node_speed(n, obs, input.model, model_gib, cfg))
            .collect(),
    );

    let mut candidates = Vec::new();
    let mut eliminated = Vec::new();
    for node in view.nodes.values() {
        let why = match obs.unresponsive(&node.id) {
            Some(left) if node.online => Some(Elimination::Unresponsive {
                retry_in_s: left.as_secs().max(1),
            }),
            _ => eliminate(node, input, model_gib, cfg),
        };
        match why {
            Some(why) => eliminated.push(Eliminated {
                node: node.id.clone(),
                why,
            }),
            None => candidates.push(rate(node, obs, input, model_gib, median_speed, cfg)),
        }
    }
    candidates.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| {
                (a.load.in_flight + a.load.waiting).cmp(&(b.load.in_flight + b.load.waiting))
            })
            .then_with(|| a.node.cmp(&b.node))
    });
    Ranking {
        model: input.model.to_string(),
        model_known: view.nodes.values().any(|n| n.has_model(input.model)),
        candidates,
        eliminated,
    }
}

fn eliminate(
    node: &NodeState,
    input: &ScoreInput<'_>,
    model_gib: f64,
    cfg: &ScoringConfig,
) -> Option<Elimination> {
    if !node.online {
        return Some(Elimination::Offline {
            detail: node.offline_reason.clone().unwrap_or_default(),
        });
    }
    if let Some(only) = input.only
        && !only.contains(&node.id)
    {
        return Some(Elimination::NotInSubset);
    }
    if input.exclude.contains(&node.id) {
        return Some(Elimination::Excluded);
    }
    if node.draining {
        return Some(Elimination::Draining);
    }
    if node.mode == Mode::Paused {
        return Some(Elimination::Paused);
    }
    if !node.engine_reachable {
        return Some(Elimination::EngineUnreachable);
    }
    let serves = if input.native_only {
        crate::dialect::serves_natively(input.endpoint, node.engine, &node.engine_version)
    } else {
        crate::dialect::engine_serves(input.endpoint, node.engine, &node.engine_version)
    };
    if !serves {
        // An Ollama older than the release that added the API says so.
        let since = crate::dialect::native_since(input.endpoint)
            .filter(|(v, _)| {
                node.engine == Engine::Ollama
                    && !crate::dialect::version_at_least(&node.engine_version, *v)
            })
            .map(|(_, text)| text);
        return Some(Elimination::EngineMismatch {
            engine: node.engine,
            api: input.endpoint.path(),
            since,
        });
    }
    if node.memory_pressure == Pressure::Critical {
        return Some(Elimination::MemoryPressureCritical);
    }
    if node.thermal == Thermal::Critical {
        return Some(Elimination::ThermalCritical);
    }
    if !node.has_model(input.model) {
        return Some(Elimination::ModelAbsent);
    }
    // What the model can do, when the node says: lacking a need is final.
    if let Some(can) = node.model_caps(input.model) {
        let lacks = can.lacking(input.needs);
        if !lacks.is_empty() {
            return Some(Elimination::Incapable { lacks, can });
        }
    }
    if node.mode == Mode::SmallOnly && model_gib > cfg.small_model_gib {
        return Some(Elimination::SmallOnly { model_gib });
    }
    if node.loaded_model(input.model).is_none() {
        let usable = node.usable_memory_bytes() as f64 / GIB;
        // Memory held by idle loaded models can be reclaimed by the engine's LRU.
        let reclaimable: f64 = node
            .loaded
            .iter()
            .map(|m| m.size_bytes as f64 / GIB)
            .sum::<f64>();
        let total = node.memory_total_bytes as f64 / GIB;
        let usable_after_eviction = if node.memory_ceiling_bytes > 0 {
            usable.max(0.0)
        } else {
            (usable + reclaimable).min(total)
        };
        let need = model_gib * cfg.fit_factor;
        if node.memory_total_bytes > 0 && need > usable_after_eviction {
            return Some(Elimination::DoesNotFit {
                need_gib: round1(need),
                usable_gib: round1(usable_after_eviction),
            });
        }
    }
    None
}

fn rate(
    node: &NodeState,
    obs: &dyn Observations,
    input: &ScoreInput<'_>,
    model_gib: f64,
    median_speed: f64,
    cfg: &ScoringConfig,
) -> Candidate {
    let loaded = node.loaded_model(input.model);
    let now_ms = input.now_ms;
    let temperature = if loaded.is_some() {
        Temperature::Hot
    } else if node.recently_unloaded.iter().any(|(m, at)| {
        crate::request::same_model(m, input.model)
            && now_ms.saturating_sub(*at) < (cfg.warm_window_s as i64) * 1000
    }) {
        Temperature::Warm
    } else {
        Temperature::Cold
    };
    let load = obs.load(&node.id, input.model);
    let perf = obs.perf(&node.id, input.model);
    let (slots, _, slots_source) = slots_for(node, obs, input.model, cfg);
    let speed = node_speed(node, obs, input.model, model_gib, cfg);
    // Prompt tokens the node probably holds: only where the model is loaded
    // (an unload takes the cache), counted from when it was loaded.
    let cached = match (input.prefix, loaded) {
        (Some(p), Some(_)) if cfg.prefix_affinity => obs
            .cached_tokens(
                &node.id,
                input.model,
                p,
                node.loaded_since_ms(input.model).unwrap_or(i64::MIN),
                now_ms,
            )
            .min(input.est_prompt_tokens),
        _ => 0,
    };

    let mut s = Signals {
        model_temperature: match temperature {
            Temperature::Hot => 50.0,
            Temperature::Warm => 30.0,
            Temperature::Cold => 10.0,
        },
        ..Signals::default()
    };

    // Memory fit: loaded models fit by definition; otherwise reward headroom.
    s.memory_fit = if loaded.is_some() || model_gib <= 0.0 {
        20.0
    } else {
        let usable = node.usable_memory_bytes() as f64 / GIB;
        let ratio = usable / model_gib.max(0.1);
        if ratio >= 1.0 {
            (20.0 * ((ratio - 1.0) / 3.0).min(1.0)).max(3.0)
        } else {
            // Fits only after the engine evicts something.
            1.0
        }
    };

    // Queue depth per slot, faster nodes drain faster.
    let occupancy = (load.in_flight + load.waiting) as f64 / slots as f64;
    let speed_norm = if median_speed > 0.0 {
        (speed / median_speed).clamp(0.25, 4.0)
    } else {
        1.0
    };
    s.queue_depth = -(6.0 * occupancy / speed_norm).min(30.0);

    // Expected time to first token: waiting for a slot, loading, prefill.
    let out_tokens = input
        .max_output_tokens
        .unwrap_or(cfg.default_output_tokens)
        .min(cfg.default_output_tokens.max(1) * 4) as f64;
    let gen_ms = match input.kind {
        Kind::Embed => 0.0,
        // Media work is not paced by tokens: what a Mac takes for an image
        // or a few minutes of audio, until herd learns better (the learned
        // time to first byte of these is the whole job).
        Kind::Image => MEDIA_IMAGE_MS,
        Kind::Transcribe => MEDIA_AUDIO_MS,
        Kind::Chat | Kind::Generate => out_tokens / speed.max(0.1) * 1000.0,
    };
    // Only the tokens the node does not hold are prefilled.
    let prefill_rate = cfg.default_prefill_tokens_per_s.max(1.0);
    let uncached = input.est_prompt_tokens.saturating_sub(cached);
    let ttft_ms = perf
        .filter(|p| p.samples > 0 && p.ttft_ms > 0.0)
        .map(|p| p.ttft_ms)
        .unwrap_or(cfg.default_ttft_ms)
        + uncached as f64 / prefill_rate * 1000.0;
    let service_ms = ttft_ms + gen_ms;
    let busy = load.in_flight + load.waiting;
    let ahead = (busy + 1).saturating_sub(slots) as f64;
    let wait_ms = ahead / slots as f64 * service_ms;
    // The prefill a hit saves, worth full points while a slot is free; with
    // none free, nothing beyond what `expected_wait` already weighs (the
    // saved prefill against the wait for a slot): a bonus on top made the
    // first node to hold a shared prompt collect a queue of everyone's
    // conversations while the others sat idle.
    let saved_ms = cached as f64 / prefill_rate * 1000.0;
    let room = if busy < slots { 1.0 } else { 0.0 };
    s.prefix_hit = 30.0 * (1.0 - (-saved_ms / 5_000.0).exp()) * room;
    let cold_ms = match temperature {
        Temperature::Hot => 0.0,
        _ => perf
            .and_then(|p| p.cold_load_ms)
            .unwrap_or(model_gib * cfg.cold_load_ms_per_gib),
    };
    let expected_ttft_ms = wait_ms + cold_ms + ttft_ms;
    s.expected_wait = -60.0 * (1.0 - (-expected_ttft_ms / 10_000.0).exp());
    s.generation_speed = -20.0 * (1.0 - (-gen_ms / 30_000.0).exp());

    // Role affinity: keep big machines for big models.
    let total_gib = node.memory_total_gib();
    s.role_affinity = if total_gib <= 0.0 {
        5.0
    } else if model_gib >= cfg.large_model_gib {
        if total_gib >= 128.0 {
            15.0
        } else if total_gib >= 64.0 {
            10.0
        } else {
            3.0
        }
    } else if model_gib > 0.0 && model_gib <= cfg.small_model_gib {
        if total_gib <= 32.0 {
            8.0
        } else if total_gib <= 96.0 {
            6.0
        } else {
            4.0
        }
    } else {
        5.0
    };

    s.availability = node.availability.map(|a| (a - 0.5) * 20.0).unwrap_or(0.0);

    s.context_fit = match loaded {
        Some(m) if m.context_length > 0 && input.est_prompt_tokens > 0 => {
            let need = input.est_prompt_tokens as f64 + out_tokens.min(1024.0);
            let r = m.context_length as f64 / need;
            if r < 1.0 {
                -15.0
            } else if r < 1.5 {
                1.0
            } else if r < 3.0 {
                3.0
            } else {
                5.0
            }
        }
        _ => 0.0,
    };

    s.device_thermal = match node.thermal {
        Thermal::Serious => -25.0,
        Thermal::Fair => -5.0,
        _ => 0.0,
    };
    s.memory_pressure = match node.memory_pressure {
        Pressure::Warn => -15.0,
        _ => 0.0,
    };
    s.reliability = -(20.0 * perf.map_or(0.0, |p| p.recent_failures)).min(60.0);

    Candidate {
        node: node.id.clone(),
        url: node.url.clone(),
        score: round2(s.total()),
        signals: s,
        temperature,
        load,
        slots,
        slots_source,
        expected_ttft_ms: round1(expected_ttft_ms),
        expected_generation_ms: round1(gen_ms),
        expected_cached_tokens: cached,
    }
}

/// Parallel slots for a node, without what traffic taught: what it
/// reports, else the configured default, else one.
pub fn slots_of(node: &NodeState, cfg: &ScoringConfig) -> u32 {
    if node.parallel_slots > 0 {
        node.parallel_slots
    } else {
        cfg.default_parallel_slots.unwrap_or(1).max(1)
    }
}

/// Parallel slots for `node`:`model` — the slots scoring divides load by,
/// admission's limit (one more while probing, see [`crate::slots`]), and
/// where they come from: what the node reports, else the configured
/// default, else what its answers taught, else one slot (Ollama's default)
/// with a limit of two to find out more.
pub fn slots_for(
    node: &NodeState,
    obs: &dyn Observations,
    model: &str,
    cfg: &ScoringConfig,
) -> (u32, u32, crate::slots::SlotSource) {
    use crate::slots::{SlotEstimate, SlotSource};
    if node.parallel_slots > 0 {
        return (
            node.parallel_slots,
            node.parallel_slots,
            SlotSource::Reported,
        );
    }
    if let Some(n) = cfg.default_parallel_slots {
        let n = n.max(1);
        return (n, n, SlotSource::Configured);
    }
    match obs.learned_slots(&node.id, model) {
        Some(e) => (e.slots.max(1), e.limit.max(1), SlotSource::Learned),
        None => {
            let a = SlotEstimate::assumed();
            (a.slots, a.limit, SlotSource::Assumed)
        }
    }
}

/// Expected generation speed of a node for a model: learned, else from memory
/// bandwidth, else the configured default.
fn node_speed(
    node: &NodeState,
    obs: &dyn Observations,
    model: &str,
    model_gib: f64,
    cfg: &ScoringConfig,
) -> f64 {
    if let Some(p) = obs.perf(&node.id, model)
        && p.samples > 0
        && p.tokens_per_s > 0.0
    {
        return p.tokens_per_s;
    }
    if node.memory_bandwidth_gbps > 0.0 && model_gib > 0.0 {
        // Decoding reads the weights once per token; real engines reach ~60% of peak.
        return (node.memory_bandwidth_gbps * 0.6 / model_gib).max(1.0);
    }
    cfg.default_tokens_per_s
}

/// A rough size from the model's name, when no node reports one.
pub fn name_size_gib(model: &str) -> f64 {
    let lower = model.to_ascii_lowercase();
    // Parameter counts such as "8b", "0.5b", "70b" in the tag or name.
    let mut best: Option<f64> = None;
    for part in lower.split([':', '-', '_', '/']) {
        if let Some(num) = part.strip_suffix('b')
            && let Ok(b) = num.parse::<f64>()
            // `infb`, `1e999b`, `nanb`: not a parameter count.
            && b.is_finite()
            && (0.0..=100_000.0).contains(&b)
        {
            best = Some(best.map_or(b, |x: f64| x.max(b)));
        }
    }
    match best {
        // ~4.5 bits per weight at the usual Q4 quantisation, plus runtime overhead.
        Some(b) => (b * 0.6).max(0.3),
        None if lower.contains("embed") => 0.3,
        None => 5.0,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    xs[xs.len() / 2]
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
