//! The simulated inference engine: which models are loaded, who holds a slot,
//! how long things take.
//!
//! This is the part of a Mac running Ollama that a router actually feels:
//! memory fills up and least-recently-used idle models get evicted, a cold
//! model takes seconds to load, each loaded model serves `num_parallel`
//! requests at once and queues the rest up to `max_queue`, and the first token
//! arrives later for longer prompts. It knows nothing about HTTP so its
//! behaviour can be unit-tested with tokio's paused clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::content::{KeepAlive, digest_of};
use super::kv::{SlotRule, Slots, Token};
use crate::config::{DeviceConfig, Faults, GIB, ModelSpec, Sensors, normalize_model_name};

/// Why the engine would not serve a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The model is not on disk.
    #[error("model \"{0}\" not found, try pulling it first")]
    NotFound(String),
    /// More requests are waiting than `max_queue`.
    #[error("server busy, please try again.  maximum pending requests exceeded")]
    Busy,
    /// The model can never fit in this device's memory.
    #[error("model requires more system memory ({need:.1} GiB) than is available ({have:.1} GiB)")]
    TooBig {
        /// GiB the model needs.
        need: f64,
        /// GiB models may use on this device.
        have: f64,
    },
    /// The model is not in the pullable catalog.
    #[error("pull model manifest: file does not exist")]
    NotInCatalog,
    /// The model cannot do this (chat on an embedding model, and so on).
    #[error("\"{model}\" does not support {what}")]
    Unsupported {
        /// The model.
        model: String,
        /// `chat`, `generate`, `embeddings`.
        what: &'static str,
    },
}

/// Per-model counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStats {
    /// Requests admitted to a slot.
    pub served: u64,
    /// Requests holding a slot now.
    pub active: u64,
    /// Highest `active` since the last reset.
    pub max_active_seen: u64,
    /// Cold loads completed.
    pub cold_loads: u64,
}

/// What `/_sim/stats` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStats {
    /// Device name.
    pub name: String,
    /// Requests admitted to a slot, all models.
    pub served_total: u64,
    /// Requests holding a slot now.
    pub active: u64,
    /// Highest `active` since the last reset.
    pub max_active_seen: u64,
    /// Per model.
    pub per_model: BTreeMap<String, ModelStats>,
    /// Requests answered 503 because the queue was full.
    pub rejected_busy: u64,
    /// The last W3C `traceparent` header a request carried.
    #[serde(default)]
    pub last_traceparent: Option<String>,
    /// Requests per API path (`POST /v1/messages`…), so a test can tell a
    /// request served natively from one translated to `/api/chat`. Only the
    /// paths the device serves are counted, so the map stays small.
    #[serde(default)]
    pub per_path: BTreeMap<String, u64>,
    /// Prompt tokens of the generations admitted.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Of those, tokens a slot's KV cache already held (not prefilled).
    #[serde(default)]
    pub cached_tokens: u64,
    /// Requests that found every slot of their model busy and waited for
    /// one (a router sent more than the device could run at once).
    #[serde(default)]
    pub waited_for_slot: u64,
}

/// `modified_at` of the models a device starts with: one fixed date
/// (2025-10-01T12:00:00Z), so every device lists them alike.
pub const BUILTIN_MODIFIED_UNIX: u64 = 1_759_320_000;

/// Bytes of uploaded blobs (`POST /api/blobs/:digest`) a device keeps in
/// memory; an upload past this answers 413.
pub const BLOB_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// A model on disk: its spec and what Ollama's manifest adds (what
/// `/api/tags`, `/api/show` and the report list, what `/api/create` and
/// `/api/copy` write).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel {
    /// The model (name normalized).
    pub spec: ModelSpec,
    /// When it was written (pulled, created, copied).
    pub modified_at: SystemTime,
    /// The manifest's digest, 64 hex digits: derived from the name for a
    /// pulled or built-in model (so every device agrees), from the content
    /// for a created one, and kept by a copy, as Ollama's is.
    pub digest: String,
    /// What it was created `from`, as Ollama shows it; empty otherwise.
    pub parent_model: String,
    /// System prompt set by `/api/create`.
    pub system: Option<String>,
    /// Template set by `/api/create`.
    pub template: Option<String>,
    /// Parameters set by `/api/create`.
    pub parameters: Map<String, Value>,
    /// Licenses set by `/api/create`.
    pub license: Vec<String>,
}

impl StoredModel {
    /// A model as a pull (or the device's initial disk) leaves it.
    pub fn pulled(mut spec: ModelSpec, at: SystemTime) -> Self {
        spec.name = normalize_model_name(&spec.name);
        Self {
            digest: digest_of(&spec.name),
            spec,
            modified_at: at,
            parent_model: String::new(),
            system: None,
            template: None,
            parameters: Map::new(),
            license: Vec::new(),
        }
    }
}

/// Why an uploaded blob was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The in-memory blob store would exceed [`BLOB_BUDGET_BYTES`].
    #[error("simulated blob store is full: {need} bytes do not fit in the {left} left")]
    Full {
        /// Size of the upload.
        need: usize,
        /// Bytes still free.
        left: usize,
    },
}

/// A model in memory.
#[derive(Debug)]
struct Loaded {
    spec: ModelSpec,
    digest: String,
    ready: bool,
    slots: Arc<Semaphore>,
    /// Requests that hold or wait for a slot of this model.
    users: u32,
    /// LRU clock value of the last use.
    last_used: u64,
    keep_alive: KeepAlive,
    expires_at: Option<Instant>,
    /// Its slots' KV caches (gone with it when it unloads).
    kv: Slots,
}

#[derive(Debug)]
struct State {
    disk: BTreeMap<String, StoredModel>,
    /// Uploaded blobs by digest (`sha256:<hex>`), and their total size.
    blobs: HashMap<String, Bytes>,
    blob_bytes: usize,
    loaded: HashMap<String, Loaded>,
    lru_clock: u64,
    /// Requests that do not hold a slot yet.
    pending: u32,
    stats: DeviceStats,
    sensors: Sensors,
    faults: Faults,
}

/// A loaded model as `/api/ps` and the report show it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedView {
    /// The model.
    pub spec: ModelSpec,
    /// Its manifest digest (as `/api/ps` shows it).
    pub digest: String,
    /// When it unloads; `None` = never (or busy).
    pub expires_in: Option<Duration>,
}

/// The simulated engine of one device.
#[derive(Debug)]
pub struct Engine {
    cfg: DeviceConfig,
    state: Mutex<State>,
    /// Woken whenever memory or slots may have been freed.
    changed: Notify,
}

/// A request that holds a slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Admission {
    engine: Arc<Engine>,
    model: String,
    _permit: OwnedSemaphorePermit,
    /// Time spent loading the model for this request.
    pub load_duration: Duration,
    /// The model's spec.
    pub spec: ModelSpec,
    /// The KV cache slot it holds, when it brought a prompt.
    kv_slot: Option<usize>,
    /// Prompt pseudo-tokens its slot already held (not prefilled again).
    pub cached: usize,
}

/// Holds a model against eviction while a request waits or runs.
struct UseGuard {
    engine: Arc<Engine>,
    model: String,
    armed: bool,
}

/// Counts a request as pending until it gets a slot.
struct PendingGuard<'a>(&'a Engine);

/// Removes a half-loaded model if its loader is cancelled.
struct LoadGuard<'a> {
    engine: &'a Engine,
    model: String,
    done: bool,
}

impl Engine {
    /// Builds the engine with the configured models on disk and loaded.
    pub fn new(cfg: DeviceConfig) -> Arc<Self> {
        let builtin = UNIX_EPOCH + Duration::from_secs(BUILTIN_MODIFIED_UNIX);
        let disk: BTreeMap<String, StoredModel> = cfg
            .models
            .iter()
            .map(|m| {
                let m = StoredModel::pulled(m.clone(), builtin);
                (m.spec.name.clone(), m)
            })
            .collect();
        let keep_alive = default_keep_alive(&cfg);
        let now = Instant::now();
        let mut loaded = HashMap::new();
        for (i, name) in cfg.loaded.iter().enumerate() {
            let name = normalize_model_name(name);
            if let Some(m) = disk.get(&name) {
                loaded.insert(
                    name,
                    Loaded {
                        spec: m.spec.clone(),
                        digest: m.digest.clone(),
                        ready: true,
                        slots: Arc::new(Semaphore::new(cfg.num_parallel as usize)),
                        users: 0,
                        last_used: i as u64,
                        keep_alive,
                        expires_at: expiry(now, keep_alive),
                        kv: kv_slots(&cfg, &m.spec),
                    },
                );
            }
        }
        let state = State {
            disk,
            blobs: HashMap::new(),
            blob_bytes: 0,
            lru_clock: loaded.len() as u64,
            loaded,
            pending: 0,
            stats: DeviceStats {
                name: cfg.name.clone(),
                ..DeviceStats::default()
            },
            sensors: cfg.sensors.clone(),
            faults: cfg.faults.clone(),
        };
        Arc::new(Self {
            cfg,
            state: Mutex::new(state),
            changed: Notify::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters in a state
        // worse than stale, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Memory models may use, in bytes.
    pub fn model_budget(&self) -> u64 {
        (self.cfg.memory_total_bytes as f64 * self.cfg.model_memory_fraction) as u64
    }

    /// The model on disk, if any.
    pub fn find(&self, model: &str) -> Option<ModelSpec> {
        self.stored(model).map(|m| m.spec)
    }

    /// The model on disk with its manifest, if any.
    pub fn stored(&self, model: &str) -> Option<StoredModel> {
        self.lock().disk.get(&normalize_model_name(model)).cloned()
    }

    /// Models on disk, newest first (as Ollama's `/api/tags` sorts them),
    /// then by name.
    pub fn disk(&self) -> Vec<StoredModel> {
        let mut v: Vec<StoredModel> = self.lock().disk.values().cloned().collect();
        v.sort_by(|a, b| {
            b.modified_at
                .cmp(&a.modified_at)
                .then_with(|| a.spec.name.cmp(&b.spec.name))
        });
        v
    }

    /// Writes a model to disk (a create, a copy or a pull), replacing one
    /// of the same name.
    pub fn put_model(&self, mut m: StoredModel) {
        m.spec.name = normalize_model_name(&m.spec.name);
        self.lock().disk.insert(m.spec.name.clone(), m);
    }

    /// Deletes a model from disk; false when there was none. Like Ollama's
    /// `/api/delete`, it leaves a loaded copy running until it expires.
    pub fn remove_model(&self, model: &str) -> bool {
        self.lock()
            .disk
            .remove(&normalize_model_name(model))
            .is_some()
    }

    /// Copies a model's manifest to another name (same digest, modified
    /// now).
    pub fn copy_model(&self, source: &str, destination: &str) -> Result<(), EngineError> {
        let mut st = self.lock();
        let mut m = st
            .disk
            .get(&normalize_model_name(source))
            .cloned()
            .ok_or_else(|| EngineError::NotFound(source.to_owned()))?;
        m.spec.name = normalize_model_name(destination);
        m.modified_at = SystemTime::now();
        st.disk.insert(m.spec.name.clone(), m);
        Ok(())
    }

    /// An uploaded blob, by digest (`sha256:<hex>`).
    pub fn blob(&self, digest: &str) -> Option<Bytes> {
        self.lock().blobs.get(digest).cloned()
    }

    /// Keeps an uploaded blob; `Ok(true)` when it was new, `Ok(false)` when
    /// it was already there. The caller vouches for the digest.
    pub fn put_blob(&self, digest: &str, data: Bytes) -> Result<bool, BlobError> {
        let mut st = self.lock();
        if st.blobs.contains_key(digest) {
            return Ok(false);
        }
        let left = BLOB_BUDGET_BYTES.saturating_sub(st.blob_bytes);
        if data.len() > left {
            return Err(BlobError::Full {
                need: data.len(),
                left,
            });
        }
        st.blob_bytes += data.len();
        st.blobs.insert(digest.to_owned(), data);
        Ok(true)
    }

    /// Bytes the blob store can still take.
    pub fn blob_room(&self) -> usize {
        BLOB_BUDGET_BYTES.saturating_sub(self.lock().blob_bytes)
    }

    /// Loaded (and ready) models, most recently used first.
    pub fn loaded(&self) -> Vec<LoadedView> {
        let now = Instant::now();
        let mut st = self.lock();
        expire(&mut st, now);
        let mut v: Vec<(&Loaded, LoadedView)> = st
            .loaded
            .values()
            .filter(|l| l.ready)
            .map(|l| {
                let expires_in = match (l.users, l.expires_at, l.keep_alive) {
                    (0, Some(at), _) => Some(at.saturating_duration_since(now)),
                    (_, _, KeepAlive::For(d)) => Some(d),
                    _ => None,
                };
                (
                    l,
                    LoadedView {
                        spec: l.spec.clone(),
                        digest: l.digest.clone(),
                        expires_in,
                    },
                )
            })
            .collect();
        v.sort_by_key(|(l, _)| std::cmp::Reverse(l.last_used));
        v.into_iter().map(|(_, view)| view).collect()
    }

    /// Current sensors.
    pub fn sensors(&self) -> Sensors {
        self.lock().sensors.clone()
    }

    /// Current faults.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Changes sensors.
    pub fn set_sensors(&self, p: &crate::config::SensorsPatch) {
        self.lock().sensors.apply(p);
    }

    /// Changes faults.
    pub fn set_faults(&self, p: &crate::config::FaultsPatch) {
        self.lock().faults.apply(p);
        self.changed.notify_waiters();
    }

    /// Counts a request to a route the device has (see [`DeviceStats::per_path`]).
    pub fn note_path(&self, method: &str, route: &str) {
        *self
            .lock()
            .stats
            .per_path
            .entry(format!("{method} {route}"))
            .or_default() += 1;
    }

    /// Records the trace context of a request (see [`DeviceStats::last_traceparent`]).
    pub fn note_traceparent(&self, tp: &str) {
        self.lock().stats.last_traceparent = Some(tp.chars().take(128).collect());
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DeviceStats {
        self.lock().stats.clone()
    }

    /// Zeroes the counters; requests in flight stay counted as active.
    pub fn reset_stats(&self) {
        let mut st = self.lock();
        let s = &mut st.stats;
        s.served_total = 0;
        s.rejected_busy = 0;
        s.prompt_tokens = 0;
        s.cached_tokens = 0;
        s.waited_for_slot = 0;
        s.max_active_seen = s.active;
        s.per_model.retain(|_, m| m.active > 0);
        for m in s.per_model.values_mut() {
            *m = ModelStats {
                active: m.active,
                max_active_seen: m.active,
                ..ModelStats::default()
            };
        }
    }

    /// Tokens per second of a model on this device, before faults.
    pub fn speed_of(&self, spec: &ModelSpec) -> f64 {
        spec.speed.unwrap_or(self.cfg.speed)
    }

    /// Time to first token and time per token for a prompt of this size.
    pub fn timing(&self, spec: &ModelSpec, prompt_tokens: u32) -> (Duration, Duration) {
        let slow = self.faults().slowdown;
        let ttft_ms = self.cfg.ttft_base_ms as f64
            + self.cfg.ttft_ms_per_prompt_token * f64::from(prompt_tokens);
        let ttft = Duration::from_secs_f64(ttft_ms * slow / 1000.0);
        let interval = Duration::from_secs_f64(slow / self.speed_of(spec));
        (ttft, interval)
    }

    /// Time a cold load of this model takes.
    pub fn load_time(&self, spec: &ModelSpec) -> Duration {
        let gb = spec.size_bytes as f64 / GIB as f64;
        let ms = self.cfg.load_base_ms as f64 + self.cfg.load_ms_per_gb as f64 * gb;
        Duration::from_secs_f64(ms * self.faults().slowdown / 1000.0)
    }

    /// The model on disk that `model` names, if it can ever fit, with the
    /// keep-alive to apply.
    fn resolve(
        &self,
        model: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<(String, ModelSpec, KeepAlive), EngineError> {
        let name = normalize_model_name(model);
        let spec = self
            .find(&name)
            .ok_or_else(|| EngineError::NotFound(model.to_owned()))?;
        let budget = self.model_budget();
        if spec.size_bytes > budget {
            return Err(EngineError::TooBig {
                need: spec.size_bytes as f64 / GIB as f64,
                have: budget as f64 / GIB as f64,
            });
        }
        let keep_alive = keep_alive.unwrap_or_else(|| default_keep_alive(&self.cfg));
        Ok((name, spec, keep_alive))
    }

    /// Waits for a slot of `model`, loading it first when needed.
    pub async fn admit(
        self: &Arc<Self>,
        model: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Admission, EngineError> {
        let (name, spec, keep_alive) = self.resolve(model, keep_alive)?;

        // Fast path: loaded, ready and a slot free.
        {
            let mut st = self.lock();
            expire(&mut st, Instant::now());
            let clock = bump(&mut st);
            if let Some(l) = st.loaded.get_mut(&name).filter(|l| l.ready)
                && let Ok(permit) = l.slots.clone().try_acquire_owned()
            {
                l.users += 1;
                l.last_used = clock;
                l.keep_alive = keep_alive;
                l.expires_at = None;
                drop(st);
                return Ok(self.admitted(name, permit, Duration::ZERO, spec));
            }
            if st.pending >= self.cfg.max_queue {
                st.stats.rejected_busy += 1;
                return Err(EngineError::Busy);
            }
            st.pending += 1;
        }
        let _pending = PendingGuard(self);
        let started = Instant::now();
        let (slots, mut use_guard) = self.ensure_loaded(&name, &spec, keep_alive).await;
        let load_duration = started.elapsed();
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.lock().stats.waited_for_slot += 1;
                match slots.acquire_owned().await {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => return Err(EngineError::Busy),
                }
            }
        };
        use_guard.armed = false;
        Ok(self.admitted(name, permit, load_duration, spec))
    }

    fn admitted(
        self: &Arc<Self>,
        model: String,
        permit: OwnedSemaphorePermit,
        load_duration: Duration,
        spec: ModelSpec,
    ) -> Admission {
        let mut st = self.lock();
        let s = &mut st.stats;
        s.served_total += 1;
        s.active += 1;
        s.max_active_seen = s.max_active_seen.max(s.active);
        let m = s.per_model.entry(model.clone()).or_default();
        m.served += 1;
        m.active += 1;
        m.max_active_seen = m.max_active_seen.max(m.active);
        drop(st);
        Admission {
            engine: self.clone(),
            model,
            _permit: permit,
            load_duration,
            spec,
            kv_slot: None,
            cached: 0,
        }
    }

    /// As [`Engine::admit`], then takes a KV cache slot of the model for
    /// `prompt` (see [`super::kv`]), which will hold `then` (the prompt and
    /// what will be generated). The admission says how many of the
    /// prompt's tokens the slot already held.
    pub async fn admit_prompt(
        self: &Arc<Self>,
        model: &str,
        keep_alive: Option<KeepAlive>,
        prompt: &[Token],
        then: &[Token],
    ) -> Result<Admission, EngineError> {
        let mut a = self.admit(model, keep_alive).await?;
        let rule = SlotRule::for_version(self.cfg.ollama_at_least((0, 30, 0)));
        let mut st = self.lock();
        // A held admission means a free slot: there are as many as permits.
        if let Some(l) = st.loaded.get_mut(&a.model)
            && let Some((slot, reused)) = l.kv.take(rule, prompt, then)
        {
            a.kv_slot = Some(slot);
            a.cached = reused;
        }
        Ok(a)
    }

    /// Counts a prompt's tokens and those its slot held (see
    /// [`DeviceStats::prompt_tokens`]).
    pub fn note_prompt(&self, prompt_tokens: u32, cached_tokens: u32) {
        let mut st = self.lock();
        st.stats.prompt_tokens += u64::from(prompt_tokens);
        st.stats.cached_tokens += u64::from(cached_tokens);
    }

    /// Makes sure the model is loaded and marks one more user of it.
    async fn ensure_loaded(
        self: &Arc<Self>,
        name: &str,
        spec: &ModelSpec,
        keep_alive: KeepAlive,
    ) -> (Arc<Semaphore>, UseGuard) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let load = {
                let mut st = self.lock();
                let now = Instant::now();
                expire(&mut st, now);
                let clock = bump(&mut st);
                if let Some(l) = st.loaded.get_mut(name) {
                    if l.ready {
                        l.users += 1;
                        l.last_used = clock;
                        l.keep_alive = keep_alive;
                        l.expires_at = None;
                        let guard = UseGuard {
                            engine: self.clone(),
                            model: name.to_owned(),
                            armed: true,
                        };
                        return (l.slots.clone(), guard);
                    }
                    false
                } else if make_room(&mut st, spec.size_bytes, &self.cfg, self.model_budget()) {
                    let digest = st
                        .disk
                        .get(name)
                        .map_or_else(|| digest_of(name), |m| m.digest.clone());
                    st.loaded.insert(
                        name.to_owned(),
                        Loaded {
                            spec: spec.clone(),
                            digest,
                            ready: false,
                            slots: Arc::new(Semaphore::new(self.cfg.num_parallel as usize)),
                            users: 0,
                            last_used: clock,
                            keep_alive,
                            expires_at: None,
                            kv: kv_slots(&self.cfg, spec),
                        },
                    );
                    true
                } else {
                    false
                }
            };
            if load {
                let mut guard = LoadGuard {
                    engine: self,
                    model: name.to_owned(),
                    done: false,
                };
                tokio::time::sleep(self.load_time(spec)).await;
                guard.done = true;
                let mut st = self.lock();
                st.stats
                    .per_model
                    .entry(name.to_owned())
                    .or_default()
                    .cold_loads += 1;
                let slots = st.loaded.get_mut(name).map(|l| {
                    l.ready = true;
                    l.users += 1;
                    l.slots.clone()
                });
                drop(st);
                self.changed.notify_waiters();
                if let Some(slots) = slots {
                    let guard = UseGuard {
                        engine: self.clone(),
                        model: name.to_owned(),
                        armed: true,
                    };
                    return (slots, guard);
                }
                continue;
            }
            notified.await;
        }
    }

    /// Loads a model without serving a request (a warm-up); returns the time
    /// it took, zero when it was already loaded.
    pub async fn warm(
        self: &Arc<Self>,
        model: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Duration, EngineError> {
        let (name, spec, keep_alive) = self.resolve(model, keep_alive)?;
        let started = Instant::now();
        let (_, guard) = self.ensure_loaded(&name, &spec, keep_alive).await;
        drop(guard);
        Ok(started.elapsed())
    }

    /// Unloads a model now if nobody uses it (`keep_alive: 0` with no prompt).
    pub fn unload(&self, model: &str) {
        let name = normalize_model_name(model);
        let mut st = self.lock();
        if st
            .loaded
            .get(&name)
            .is_some_and(|l| l.users == 0 && l.ready)
        {
            st.loaded.remove(&name);
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Ends a use of a model: sets its expiry once idle.
    fn release_use(&self, model: &str) {
        let mut st = self.lock();
        let now = Instant::now();
        let mut remove = false;
        if let Some(l) = st.loaded.get_mut(model) {
            l.users = l.users.saturating_sub(1);
            if l.users == 0 {
                l.expires_at = expiry(now, l.keep_alive);
                remove = l.expires_at.is_some_and(|at| at <= now);
            }
        }
        if remove {
            st.loaded.remove(model);
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// The steps of pulling `model`: (offset from start, progress event).
    /// Call [`Engine::finish_pull`] after the last one.
    pub fn pull_plan(
        &self,
        model: &str,
    ) -> Result<(ModelSpec, Vec<(Duration, Value)>), EngineError> {
        let name = normalize_model_name(model);
        let spec = self
            .cfg
            .catalog
            .iter()
            .find(|m| normalize_model_name(&m.name) == name)
            .cloned()
            .ok_or(EngineError::NotInCatalog)?;
        let mut spec = spec;
        spec.name = name.clone();
        let already = self.lock().disk.contains_key(&name);
        let rate = self.cfg.pull_bytes_per_sec.max(1) as f64;
        let slow = self.faults().slowdown;
        let mut steps = vec![(Duration::ZERO, json!({"status": "pulling manifest"}))];
        // Ollama pulls the weights layer then small template/license/params layers.
        let layers = [
            (format!("{name}/weights"), spec.size_bytes),
            (format!("{name}/template"), 1_429),
            (format!("{name}/license"), 7_711),
            (format!("{name}/params"), 96),
        ];
        let mut t = 0.0f64;
        for (layer, total) in layers {
            let digest = digest_of(&layer);
            let status = format!("pulling {}", &digest[..12]);
            let parts: u64 = if already || total < 1_000_000 { 1 } else { 10 };
            steps.push((secs(t), progress(&status, &digest, total, 0)));
            for k in 1..=parts {
                let completed = total * k / parts;
                if !already {
                    t += (total / parts) as f64 / rate * slow;
                }
                steps.push((secs(t), progress(&status, &digest, total, completed)));
            }
        }
        for s in ["verifying sha256 digest", "writing manifest", "success"] {
            steps.push((secs(t), json!({"status": s})));
        }
        Ok((spec, steps))
    }

    /// Puts a pulled model on disk.
    pub fn finish_pull(&self, spec: ModelSpec) {
        self.put_model(StoredModel::pulled(spec, SystemTime::now()));
    }

    /// Requests holding a slot now.
    pub fn active(&self) -> u64 {
        self.lock().stats.active
    }
}

fn secs(t: f64) -> Duration {
    Duration::from_secs_f64(t)
}

fn progress(status: &str, digest: &str, total: u64, completed: u64) -> Value {
    json!({"status": status, "digest": format!("sha256:{digest}"), "total": total, "completed": completed})
}

/// The KV cache slots of a model as it loads: one per parallel request,
/// each as long as the model's context.
fn kv_slots(cfg: &DeviceConfig, spec: &ModelSpec) -> Slots {
    let context = if spec.context_length > 0 {
        spec.context_length
    } else {
        4096
    };
    Slots::new(cfg.num_parallel as usize, context as usize)
}

fn default_keep_alive(cfg: &DeviceConfig) -> KeepAlive {
    match u64::try_from(cfg.keep_alive_secs) {
        Ok(s) => KeepAlive::For(Duration::from_secs(s)),
        Err(_) => KeepAlive::Forever,
    }
}

fn expiry(now: Instant, k: KeepAlive) -> Option<Instant> {
    match k {
        KeepAlive::For(d) => Some(now + d),
        KeepAlive::Forever => None,
    }
}

fn bump(st: &mut State) -> u64 {
    st.lru_clock += 1;
    st.lru_clock
}

/// Unloads idle models whose keep-alive ran out.
fn expire(st: &mut State, now: Instant) {
    st.loaded
        .retain(|_, l| !(l.ready && l.users == 0 && l.expires_at.is_some_and(|at| at <= now)));
}

/// Evicts least-recently-used idle models until `size` fits in the budget
/// and under `max_loaded_models`. False when busy models are in the way.
fn make_room(st: &mut State, size: u64, cfg: &DeviceConfig, budget: u64) -> bool {
    loop {
        let used: u64 = st.loaded.values().map(|l| l.spec.size_bytes).sum();
        let count = st.loaded.len() as u32;
        let max = if cfg.max_loaded_models == 0 {
            u32::MAX
        } else {
            cfg.max_loaded_models
        };
        if used + size <= budget && count < max {
            return true;
        }
        let victim = st
            .loaded
            .iter()
            .filter(|(_, l)| l.ready && l.users == 0)
            .min_by_key(|(_, l)| l.last_used)
            .map(|(k, _)| k.clone());
        match victim {
            Some(k) => {
                tracing::debug!(model = %k, "evicting least recently used model");
                st.loaded.remove(&k);
            }
            None => return false,
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        {
            let mut st = self.engine.lock();
            let s = &mut st.stats;
            s.active = s.active.saturating_sub(1);
            if let Some(m) = s.per_model.get_mut(&self.model) {
                m.active = m.active.saturating_sub(1);
            }
            if let Some(slot) = self.kv_slot
                && let Some(l) = st.loaded.get_mut(&self.model)
            {
                l.kv.release(slot);
            }
        }
        self.engine.release_use(&self.model);
    }
}

impl Drop for UseGuard {
    fn drop(&mut self) {
        if self.armed {
            self.engine.release_use(&self.model);
        }
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.pending = st.pending.saturating_sub(1);
    }
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut st = self.engine.lock();
            if st.loaded.get(&self.model).is_some_and(|l| !l.ready) {
                st.loaded.remove(&self.model);
            }
            drop(st);
            self.engine.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, gib: u64) -> ModelSpec {
        ModelSpec {
            name: name.to_owned(),
            size_bytes: gib * GIB,
            ..ModelSpec::default()
        }
    }

    fn cfg() -> DeviceConfig {
        DeviceConfig {
            memory_total_bytes: 16 * GIB,
            model_memory_fraction: 0.75, // 12 GiB for models
            models: vec![
                model("a:1", 5),
                model("b:1", 5),
                model("c:1", 5),
                model("huge:1", 13),
            ],
            load_base_ms: 100,
            load_ms_per_gb: 500,
            max_loaded_models: 3,
            ..DeviceConfig::default()
        }
    }

    fn loaded_names(e: &Engine) -> Vec<String> {
        let mut v: Vec<String> = e.loaded().into_iter().map(|l| l.spec.name).collect();
        v.sort();
        v
    }

    #[tokio::test(start_paused = true)]
    async fn cold_load_takes_configured_time_and_is_counted_once() {
        let e = Engine::new(cfg());
        let t0 = Instant::now();
        let a = e.admit("a:1", None).await.expect("admit");
        assert_eq!(t0.elapsed(), Duration::from_millis(100 + 5 * 500));
        assert_eq!(a.load_duration, Duration::from_millis(2600));
        drop(a);
        let t1 = Instant::now();
        let a = e.admit("a:1", None).await.expect("admit warm");
        assert_eq!(t1.elapsed(), Duration::ZERO);
        assert_eq!(a.load_duration, Duration::ZERO);
        drop(a);
        let s = e.stats();
        assert_eq!(s.per_model["a:1"].cold_loads, 1);
        assert_eq!(s.per_model["a:1"].served, 2);
        assert_eq!(s.served_total, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn lru_eviction_within_memory_budget() {
        let e = Engine::new(cfg());
        drop(e.admit("a:1", None).await.expect("a"));
        drop(e.admit("b:1", None).await.expect("b"));
        assert_eq!(loaded_names(&e), ["a:1", "b:1"]);
        // Touch a, so b is least recently used; c needs room for 5 GiB.
        drop(e.admit("a:1", None).await.expect("a again"));
        drop(e.admit("c:1", None).await.expect("c"));
        assert_eq!(loaded_names(&e), ["a:1", "c:1"]);
        assert_eq!(e.stats().per_model["b:1"].cold_loads, 1);
        drop(e.admit("b:1", None).await.expect("b again"));
        assert_eq!(e.stats().per_model["b:1"].cold_loads, 2);
        // a was the least recently used this time.
        assert_eq!(loaded_names(&e), ["b:1", "c:1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_models_are_not_evicted_the_load_waits() {
        let e = Engine::new(cfg());
        let a = e.admit("a:1", None).await.expect("a");
        let b = e.admit("b:1", None).await.expect("b");
        let e2 = e.clone();
        let c = tokio::spawn(async move { e2.admit("c:1", None).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!c.is_finished(), "c must wait while a and b are busy");
        drop(b);
        c.await.expect("join").expect("c admitted after b freed");
        assert_eq!(loaded_names(&e), ["a:1", "c:1"]);
        drop(a);
    }

    #[tokio::test(start_paused = true)]
    async fn model_that_never_fits_is_refused() {
        let e = Engine::new(cfg());
        let err = e.admit("huge:1", None).await.expect_err("too big");
        assert!(matches!(err, EngineError::TooBig { .. }));
        assert_eq!(
            err.to_string(),
            "model requires more system memory (13.0 GiB) than is available (12.0 GiB)"
        );
        assert!(matches!(
            e.admit("nope", None).await,
            Err(EngineError::NotFound(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_zero_unloads_and_expiry_unloads_later() {
        let e = Engine::new(cfg());
        drop(
            e.admit("a:1", Some(KeepAlive::For(Duration::ZERO)))
                .await
                .expect("a"),
        );
        assert!(loaded_names(&e).is_empty());
        drop(
            e.admit("b:1", Some(KeepAlive::For(Duration::from_secs(10))))
                .await
                .expect("b"),
        );
        assert_eq!(loaded_names(&e), ["b:1"]);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(loaded_names(&e).is_empty());
        drop(e.admit("c:1", Some(KeepAlive::Forever)).await.expect("c"));
        tokio::time::sleep(Duration::from_secs(100_000)).await;
        assert_eq!(loaded_names(&e), ["c:1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_one_makes_the_second_request_wait_and_queue_cap_rejects() {
        let e = Engine::new(DeviceConfig {
            num_parallel: 1,
            max_queue: 1,
            loaded: vec!["a:1".into()],
            ..cfg()
        });
        let first = e.admit("a:1", None).await.expect("first");
        let e2 = e.clone();
        let second = tokio::spawn(async move { e2.admit("a:1", None).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!second.is_finished(), "second waits for the only slot");
        let third = tokio::time::timeout(Duration::from_secs(1), e.admit("a:1", None)).await;
        let third = third.expect("the third request must be refused, not queued");
        assert_eq!(third.expect_err("third"), EngineError::Busy);
        assert_eq!(e.stats().rejected_busy, 1);
        assert_eq!(e.stats().max_active_seen, 1);
        drop(first);
        second.await.expect("join").expect("second admitted");
        let s = e.stats();
        assert_eq!((s.served_total, s.active, s.max_active_seen), (2, 0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn parallel_slots_admit_together() {
        let e = Engine::new(DeviceConfig {
            num_parallel: 2,
            loaded: vec!["a:1".into()],
            ..cfg()
        });
        let t0 = Instant::now();
        let x = e.admit("a:1", None).await.expect("x");
        let y = e.admit("a:1", None).await.expect("y");
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert_eq!(e.stats().per_model["a:1"].max_active_seen, 2);
        drop((x, y));
    }

    #[tokio::test(start_paused = true)]
    async fn ttft_grows_with_prompt_and_slowdown_scales_it() {
        let e = Engine::new(DeviceConfig {
            ttft_base_ms: 50,
            ttft_ms_per_prompt_token: 1.0,
            speed: 40.0,
            ..cfg()
        });
        let spec = model("a:1", 1);
        let (short, iv) = e.timing(&spec, 10);
        let (long, _) = e.timing(&spec, 1000);
        assert_eq!(short, Duration::from_millis(60));
        assert_eq!(long, Duration::from_millis(1050));
        assert_eq!(iv, Duration::from_millis(25));
        e.set_faults(&crate::config::FaultsPatch {
            slowdown: Some(2.0),
            ..Default::default()
        });
        let (slow, iv2) = e.timing(&spec, 10);
        assert_eq!(
            (slow, iv2),
            (Duration::from_millis(120), Duration::from_millis(50))
        );
    }

    #[test]
    fn blobs_are_bounded_and_kept_once() {
        let e = Engine::new(cfg());
        assert_eq!(
            e.put_blob("sha256:a", Bytes::from_static(b"GGUF")),
            Ok(true)
        );
        assert_eq!(
            e.put_blob("sha256:a", Bytes::from_static(b"GGUF")),
            Ok(false)
        );
        assert_eq!(e.blob("sha256:a").as_deref(), Some(&b"GGUF"[..]));
        assert_eq!(e.blob_room(), BLOB_BUDGET_BYTES - 4);
        let big = Bytes::from(vec![0u8; BLOB_BUDGET_BYTES - 3]);
        assert_eq!(
            e.put_blob("sha256:b", big),
            Err(BlobError::Full {
                need: BLOB_BUDGET_BYTES - 3,
                left: BLOB_BUDGET_BYTES - 4
            })
        );
        assert!(e.blob("sha256:b").is_none());
    }

    #[test]
    fn copy_keeps_the_digest_and_delete_leaves_a_loaded_model_running() {
        let e = Engine::new(DeviceConfig {
            loaded: vec!["a:1".into()],
            ..cfg()
        });
        let a = e.stored("a:1").expect("a");
        assert_eq!(a.digest, digest_of("a:1"));
        e.copy_model("a:1", "copy").expect("copy");
        let c = e.stored("copy:latest").expect("copied");
        assert_eq!(c.digest, a.digest);
        assert!(c.modified_at > a.modified_at);
        assert_eq!(e.disk()[0].spec.name, "copy:latest", "newest first");
        assert_eq!(
            e.copy_model("nope", "x"),
            Err(EngineError::NotFound("nope".into()))
        );
        assert!(e.remove_model("a:1"));
        assert!(!e.remove_model("a:1"));
        assert!(e.find("a:1").is_none());
        let loaded = e.loaded();
        assert_eq!(loaded[0].spec.name, "a:1");
        assert_eq!(loaded[0].digest, a.digest);
    }

    #[test]
    fn pull_plan_takes_time_proportional_to_size() {
        let e = Engine::new(DeviceConfig {
            catalog: vec![model("new:1", 2)],
            pull_bytes_per_sec: GIB,
            ..cfg()
        });
        let (spec, steps) = e.pull_plan("new:1").expect("plan");
        assert_eq!(spec.name, "new:1");
        let last = steps.last().expect("steps");
        assert_eq!(last.1, json!({"status": "success"}));
        assert!((last.0.as_secs_f64() - 2.0).abs() < 0.01, "{:?}", last.0);
        assert_eq!(
            e.pull_plan("other").expect_err("missing"),
            EngineError::NotInCatalog
        );
        e.finish_pull(spec);
        assert!(e.find("new:1").is_some());
    }
}
