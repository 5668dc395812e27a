//! herd's memory: one redb file with request traces, the per node:model
//! latency history scoring reads, benchmarks and settings.
//!
//! Why redb: one file, no server, ACID commits. A commit is all-or-nothing,
//! so a `kill -9` loses at most the batch that was not yet committed and no
//! reader ever sees half a record.
//!
//! Writes never sit on the request path: finished requests are handed to a
//! bounded channel ([`Store::submit`] never waits) and one writer thread
//! commits them in batches. When the channel is full the record is dropped
//! and counted, which is the right trade for telemetry.
//!
//! A store that cannot be opened — corrupt, locked by another herd, written by
//! a newer herd — is an error that stops herd with a message naming the file
//! and what to do. It never silently starts empty: history is what makes the
//! next routing decision good.

pub mod bench;
mod schema;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use schema::SCHEMA_VERSION;
use schema::{BENCH, BENCH_RUNS, KEYS, META, PERF, SETTINGS, TAGS, TRACES};

use crate::history::BookSnapshot;

/// Store tunables (`[store]` in the config file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Keep the store at all. Off: nothing is remembered across restarts.
    pub enabled: bool,
    /// Traces older than this are deleted.
    #[serde(with = "crate::duration")]
    pub max_age: Duration,
    /// Above this file size the oldest traces are deleted and the file compacted.
    pub max_bytes: u64,
    /// Most records committed in one transaction.
    pub batch: usize,
    /// How long the writer gathers records before one durable commit. A
    /// commit per record cost two thirds of herd's CPU under load (callgrind);
    /// a `kill -9` loses at most this window.
    #[serde(with = "crate::duration")]
    pub commit_window: Duration,
    /// Records that may wait for the writer; more are dropped and counted.
    pub queue: usize,
    /// How often retention runs.
    #[serde(with = "crate::duration")]
    pub retention_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            enabled: true,
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 512 * 1024 * 1024,
            batch: 512,
            commit_window: Duration::from_millis(100),
            queue: 16 * 1024,
            retention_interval: Duration::from_secs(600),
        }
    }
}

/// Why the store cannot be used. Each message says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another herd holds the store (its `herd.lock`, or redb's own lock).
    #[error(
        "the store {path} is in use by another herd (lock held{holder}); stop the other herd or start this one with a different --data-dir"
    )]
    Locked {
        /// The store file.
        path: PathBuf,
        /// ` by pid N` when the lock file names its holder, else empty.
        holder: String,
    },
    /// redb could not open or read the file (corrupt, truncated, not a redb
    /// file, …).
    #[error(
        "the store {path} cannot be opened: {cause}. It may be corrupt; move it aside (herd will then start with an empty store) or restore a backup"
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// redb's reason.
        cause: String,
    },
    /// The file was written by a newer herd, with a higher schema version.
    #[error(
        "the store {path} has schema version {found}, newer than this herd understands ({supported}); run a newer herd or move the file aside"
    )]
    TooNew {
        /// The store file.
        path: PathBuf,
        /// The schema version the file records.
        found: u64,
        /// The newest schema version this herd reads ([`SCHEMA_VERSION`]).
        supported: u64,
    },
    /// The data directory or its lock file cannot be created or opened.
    #[error("the store directory {path} cannot be used: {cause}")]
    Dir {
        /// The data directory.
        path: PathBuf,
        /// The I/O error.
        cause: String,
    },
    /// Any other failure, mostly a read, write or commit on the open store;
    /// the message is redb's.
    #[error("store: {0}")]
    Db(String),
}

impl StoreError {
    fn db(e: impl std::fmt::Display) -> Self {
        StoreError::Db(e.to_string())
    }
}

/// How one request ended, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceStatus {
    /// The whole answer arrived on the first attempt.
    Completed,
    /// Completed, but only after at least one failed attempt.
    Retried,
    /// The stack answered with an error instead of an answer (nothing
    /// eligible, every attempt failed, …).
    Failed,
    /// Turned away by queueing (queue full or queue wait too long): 429/503.
    Shed,
    /// The client went away before the answer ended.
    ClientDisconnected,
    /// The answer started but ended before the model finished.
    Incomplete,
    /// Refused because of the request itself (a 4xx the client caused: a
    /// body the node rejected, a model no node has); never counted against
    /// a node.
    Rejected,
    /// Refused by its API key's limits (429); never counted against a node.
    RateLimited,
}

impl TraceStatus {
    /// The snake_case name, as serialized, filtered on and used as a metric
    /// label.
    pub fn as_str(self) -> &'static str {
        match self {
            TraceStatus::Completed => "completed",
            TraceStatus::Retried => "retried",
            TraceStatus::Failed => "failed",
            TraceStatus::Shed => "shed",
            TraceStatus::ClientDisconnected => "client_disconnected",
            TraceStatus::Incomplete => "incomplete",
            TraceStatus::Rejected => "rejected",
            TraceStatus::RateLimited => "rate_limited",
        }
    }
    /// Whether the client got the whole answer (`Completed` or `Retried`).
    pub fn ok(self) -> bool {
        matches!(self, TraceStatus::Completed | TraceStatus::Retried)
    }
}

/// A candidate's score as scoring explained it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ScoreSummary {
    /// The candidate node's id.
    pub node: String,
    /// Its total score; higher is better.
    pub score: f64,
    /// The per-signal breakdown ([`crate::rank::Signals`]).
    pub signals: serde_json::Value,
    /// Prompt tokens scoring expected the node to hold in its KV cache
    /// (prefix-cache affinity; 0 in records from before it).
    #[serde(default)]
    pub expected_cached_tokens: u32,
}

/// One request as herd remembers it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TraceRecord {
    /// The store's key, assigned by the writer (time-ordered).
    #[serde(default)]
    pub seq: u64,
    /// herd's id for the request (sent to the node as `x-request-id`).
    pub request_id: String,
    /// Milliseconds since the Unix epoch when the request arrived.
    pub ts_ms: i64,
    /// `ollama` or `openai`.
    pub format: String,
    /// `chat`, `generate` or `embed`.
    pub kind: String,
    /// The model as the client named it.
    pub model_requested: String,
    /// The model that answered; differs from the request after a fallback.
    pub model_served: String,
    /// The node of the last attempt; `None` when no node was picked.
    pub node: Option<String>,
    /// The top candidate of the last attempt's ranking.
    pub winner: Option<ScoreSummary>,
    /// The second candidate of that ranking, when there was one.
    pub runner_up: Option<ScoreSummary>,
    /// How the request ended.
    pub status: TraceStatus,
    /// Milliseconds from arrival until the request was over (end of the
    /// answer, error or disconnect).
    pub latency_ms: f64,
    /// Time to first token, milliseconds; `None` when no answer came.
    pub ttft_ms: Option<f64>,
    /// Milliseconds spent waiting for a node:model slot, summed over
    /// attempts; `None` when the request never queued.
    pub queue_wait_ms: Option<f64>,
    /// Prompt tokens, as the engine counted them.
    pub prompt_tokens: Option<u64>,
    /// Output tokens, as the engine counted them.
    pub output_tokens: Option<u64>,
    /// Engine-reported load time, ms (a cold load when large).
    pub load_ms: Option<f64>,
    /// Attempts that failed before the first byte (one per node in
    /// `excluded`).
    pub retries: u32,
    /// Whether another model than the one requested served it.
    pub fallback_used: bool,
    /// Nodes whose attempt failed, in order; each was left out of the next
    /// pick.
    pub excluded: Vec<String>,
    /// The request's analytics tags (body `tags`/`metadata.tags`,
    /// `x-herd-tags`, `user:`…).
    pub tags: Vec<String>,
    /// What went wrong, when the request did not complete.
    pub error: Option<String>,
    /// The client's `options.num_ctx`, when it sent one.
    #[serde(default)]
    pub num_ctx: Option<u32>,
    /// What context protection did with `num_ctx`: `too_large`, `warned` or
    /// `stripped`; `None` when it left the request alone.
    #[serde(default)]
    pub context_action: Option<String>,
    /// The name of the API key that made the request (its tenant); `None`
    /// without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A calibration of one node:model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Benchmark {
    /// The node measured.
    pub node: String,
    /// The model measured, normalized (`name:tag`).
    pub model: String,
    /// When it was measured, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Time to first token of a warm request alone, milliseconds.
    pub ttft_ms: f64,
    /// Generation speed of one request alone.
    pub tokens_per_s_single: f64,
    /// Total generation speed with every parallel slot busy.
    pub tokens_per_s_parallel: f64,
    /// Requests run at once for the parallel figure (the node's slots).
    pub parallel: u32,
}

/// What the writer thread commits.
#[derive(Debug)]
pub enum Write {
    /// A finished request; the writer assigns its `seq`.
    Trace(Box<TraceRecord>),
    /// One node:model's latest history, replacing the stored one.
    Perf {
        /// The node's id.
        node: String,
        /// The model, normalized.
        model: String,
        /// The history, as it is restored into scoring on start.
        book: BookSnapshot,
    },
    /// A calibration, replacing the stored one of its node:model.
    Bench(Benchmark),
    /// A named setting, replacing any stored value.
    Setting {
        /// The setting's name.
        key: String,
        /// Its value, as JSON.
        value: serde_json::Value,
    },
    /// Reply once everything before it is committed.
    Flush(std::sync::mpsc::Sender<()>),
    /// Commit, stop the writer, reply once it let go of the file.
    Close(std::sync::mpsc::Sender<()>),
}

/// Filters for reading traces back.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TraceFilter {
    /// Only traces that requested or were served this model (`m` matches
    /// `m:latest`).
    pub model: Option<String>,
    /// Only traces whose last attempt went to this node.
    pub node: Option<String>,
    /// Only traces with this tag (read through the tag index).
    pub tag: Option<String>,
    /// Only traces that ended this way ([`TraceStatus::as_str`], e.g. `shed`).
    pub status: Option<String>,
    /// Only traces of this API key (by name).
    pub key: Option<String>,
    /// Only traces at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Most traces returned: 100 when unset, never more than 10 000.
    pub limit: Option<usize>,
}

impl TraceFilter {
    fn keeps(&self, t: &TraceRecord) -> bool {
        self.model.as_ref().is_none_or(|m| {
            crate::request::same_model(m, &t.model_served)
                || crate::request::same_model(m, &t.model_requested)
        }) && self
            .node
            .as_ref()
            .is_none_or(|n| t.node.as_deref() == Some(n.as_str()))
            && self
                .tag
                .as_ref()
                .is_none_or(|g| t.tags.iter().any(|x| x == g))
            && self.status.as_ref().is_none_or(|s| t.status.as_str() == s)
            && self
                .key
                .as_ref()
                .is_none_or(|k| t.key.as_deref() == Some(k.as_str()))
    }
}

/// Counters the writer keeps, for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Trace records committed since the store was opened.
    pub committed: AtomicU64,
    /// Records lost: the writer's queue was full, or their batch failed to
    /// commit.
    pub dropped: AtomicU64,
    /// Transactions committed (one per batch).
    pub commits: AtomicU64,
    /// Traces deleted by retention.
    pub deleted: AtomicU64,
}

/// The open store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
    tx: mpsc::Sender<Write>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// Reads take the read lock briefly; compaction takes the write lock.
    db: RwLock<Database>,
    stats: StoreStats,
    /// Held for as long as herd runs: one herd per store.
    _lock: File,
}

/// The default data directory: `$XDG_DATA_HOME/herd` or `~/.local/share/herd`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("herd");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/herd")
}

/// The store file inside a data directory.
pub fn file_in(dir: &Path) -> PathBuf {
    dir.join("herd.redb")
}

fn lock(dir: &Path, path: &Path) -> Result<File, StoreError> {
    let lock_path = dir.join("herd.lock");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Dir {
            path: dir.to_path_buf(),
            cause: e.to_string(),
        })?;
    match f.try_lock() {
        Ok(()) => {
            use std::io::{Seek, Write as _};
            let _ = f.set_len(0);
            let _ = f.seek(std::io::SeekFrom::Start(0));
            let _ = write!(f, "{}", std::process::id());
            Ok(f)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&lock_path)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(|s| format!(" by pid {}", s.trim()))
                .unwrap_or_default();
            Err(StoreError::Locked {
                path: path.to_path_buf(),
                holder,
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Dir {
            path: dir.to_path_buf(),
            cause: e.to_string(),
        }),
    }
}

impl Store {
    /// Open (or create) the store in `dir` and start its writer thread.
    pub fn open(dir: &Path, cfg: &StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir {
            path: dir.to_path_buf(),
            cause: e.to_string(),
        })?;
        let path = file_in(dir);
        let lock = lock(dir, &path)?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: path.clone(),
                holder: String::new(),
            },
            other => StoreError::Corrupt {
                path: path.clone(),
                cause: other.to_string(),
            },
        })?;
        schema::prepare(&db, &path)?;
        let inner = Arc::new(Inner {
            path,
            db: RwLock::new(db),
            stats: StoreStats::default(),
            _lock: lock,
        });
        let (tx, rx) = mpsc::channel(cfg.queue.max(16));
        let w = inner.clone();
        let wcfg = cfg.clone();
        std::thread::Builder::new()
            .name("herd-store".into())
            .spawn(move || writer(w, rx, wcfg))
            .map_err(StoreError::db)?;
        Ok(Store { inner, tx })
    }

    /// The store file (`herd.redb` in the data directory).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The writer's counters, shared with `/metrics` and health.
    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// Hand a write to the writer without waiting. Dropped (and counted) when
    /// the writer is behind.
    pub fn submit(&self, w: Write) {
        if self.tx.try_send(w).is_err() {
            self.inner.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Wait until everything submitted so far is committed (tests, shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Write::Flush(tx)).await.is_ok() {
            let _ =
                tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30))).await;
        }
    }

    /// Commit what is pending and stop writing. The file is closed (and the
    /// lock released) once the last clone of this store is dropped.
    pub async fn close(self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.tx.send(Write::Close(tx)).await.is_ok() {
            let _ =
                tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30))).await;
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let db = self.inner.db.read().unwrap_or_else(|p| p.into_inner());
        f(&db)
    }

    /// The newest traces that pass the filter, newest first.
    pub fn traces(&self, filter: &TraceFilter) -> Result<Vec<TraceRecord>, StoreError> {
        let limit = filter.limit.unwrap_or(100).min(10_000);
        self.read(|db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let traces = txn.open_table(TRACES).map_err(StoreError::db)?;
            let mut out = Vec::new();
            let mut take = |v: &[u8]| -> bool {
                if let Ok(t) = serde_json::from_slice::<TraceRecord>(v) {
                    if filter.since_ms.is_some_and(|s| t.ts_ms < s) {
                        return false;
                    }
                    if filter.keeps(&t) {
                        out.push(t);
                    }
                }
                out.len() < limit
            };
            if let Some(tag) = &filter.tag {
                let tags = txn.open_multimap_table(TAGS).map_err(StoreError::db)?;
                let mut ids: Vec<u64> = tags
                    .get(tag.as_str())
                    .map_err(StoreError::db)?
                    .filter_map(|r| r.ok().map(|g| g.value()))
                    .collect();
                ids.sort_unstable_by(|a, b| b.cmp(a));
                for id in ids {
                    if let Some(v) = traces.get(id).map_err(StoreError::db)?
                        && !take(v.value())
                    {
                        break;
                    }
                }
            } else {
                for row in traces.iter().map_err(StoreError::db)?.rev() {
                    let (_, v) = row.map_err(StoreError::db)?;
                    if !take(v.value()) {
                        break;
                    }
                }
            }
            Ok(out)
        })
    }

    /// Every stored trace, oldest first (analytics and tests).
    pub fn all_traces(&self, since_ms: Option<i64>) -> Result<Vec<TraceRecord>, StoreError> {
        let mut v = self.traces(&TraceFilter {
            since_ms,
            limit: Some(usize::MAX),
            ..Default::default()
        })?;
        v.reverse();
        Ok(v)
    }

    /// The stored history of every node:model.
    pub fn perf(&self) -> Result<Vec<(String, String, BookSnapshot)>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = txn.open_table(PERF).map_err(StoreError::db)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(StoreError::db)? {
                let (k, v) = row.map_err(StoreError::db)?;
                if let (Some((n, m)), Ok(b)) = (
                    k.value().split_once('\t'),
                    serde_json::from_slice(v.value()),
                ) {
                    out.push((n.to_string(), m.to_string(), b));
                }
            }
            Ok(out)
        })
    }

    /// The latest calibration of every node:model benchmarked.
    pub fn benchmarks(&self) -> Result<Vec<Benchmark>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = txn.open_table(BENCH).map_err(StoreError::db)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(StoreError::db)? {
                let (_, v) = row.map_err(StoreError::db)?;
                if let Ok(b) = serde_json::from_slice(v.value()) {
                    out.push(b);
                }
            }
            Ok(out)
        })
    }

    /// Every benchmark run kept (the last [`BENCH_RUNS_KEPT`] of each
    /// node:model), oldest first per node:model.
    pub fn benchmark_runs(&self) -> Result<Vec<Benchmark>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = match txn.open_table(BENCH_RUNS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(StoreError::db(e)),
            };
            let mut out = Vec::new();
            for row in t.iter().map_err(StoreError::db)? {
                let (_, v) = row.map_err(StoreError::db)?;
                if let Ok(b) = serde_json::from_slice(v.value()) {
                    out.push(b);
                }
            }
            Ok(out)
        })
    }

    /// A setting stored with [`Write::Setting`]; `None` when unset or
    /// unreadable.
    pub fn setting(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = txn.open_table(SETTINGS).map_err(StoreError::db)?;
            Ok(t.get(key)
                .map_err(StoreError::db)?
                .and_then(|v| serde_json::from_slice(v.value()).ok()))
        })
    }

    /// The client API keys (their hashes), by name.
    pub fn keys(&self) -> Result<Vec<crate::app::auth::KeyRecord>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = txn.open_table(KEYS).map_err(StoreError::db)?;
            let mut out = Vec::new();
            for row in t.iter().map_err(StoreError::db)? {
                let (_, v) = row.map_err(StoreError::db)?;
                match serde_json::from_slice(v.value()) {
                    Ok(k) => out.push(k),
                    Err(e) => return Err(StoreError::db(format!("unreadable API key: {e}"))),
                }
            }
            Ok(out)
        })
    }

    /// Store a key, committed before this returns (not through the
    /// batching writer: a key shown to its owner must survive a crash).
    pub fn put_key(&self, k: &crate::app::auth::KeyRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(k).map_err(StoreError::db)?;
        self.write_now(|txn| {
            txn.open_table(KEYS)
                .map_err(StoreError::db)?
                .insert(k.name.as_str(), bytes.as_slice())
                .map_err(StoreError::db)?;
            Ok(())
        })
    }

    /// Delete the key named `name`, committed before this returns.
    pub fn delete_key(&self, name: &str) -> Result<(), StoreError> {
        self.write_now(|txn| {
            txn.open_table(KEYS)
                .map_err(StoreError::db)?
                .remove(name)
                .map_err(StoreError::db)?;
            Ok(())
        })
    }

    fn write_now(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.read(|db| {
            let txn = db.begin_write().map_err(StoreError::db)?;
            f(&txn)?;
            txn.commit().map_err(StoreError::db)
        })
    }

    /// Traces stored, and the file's size in bytes.
    pub fn size(&self) -> (u64, u64) {
        let n = self
            .read(|db| {
                let txn = db.begin_read().map_err(StoreError::db)?;
                let t = txn.open_table(TRACES).map_err(StoreError::db)?;
                t.len().map_err(StoreError::db)
            })
            .unwrap_or(0);
        let bytes = std::fs::metadata(&self.inner.path)
            .map(|m| m.len())
            .unwrap_or(0);
        (n, bytes)
    }

    /// Delete traces by age and size; compact when anything was deleted.
    /// Returns how many traces were deleted.
    pub fn retain(&self, cfg: &StoreConfig, now_ms: i64) -> Result<u64, StoreError> {
        retain(&self.inner, cfg, now_ms)
    }

    /// The schema version the file records (0 when it records none).
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let t = txn.open_table(META).map_err(StoreError::db)?;
            Ok(t.get("schema_version")
                .map_err(StoreError::db)?
                .map(|v| v.value())
                .unwrap_or(0))
        })
    }
}

fn perf_key(node: &str, model: &str) -> String {
    format!("{node}\t{model}")
}

/// Benchmark runs kept per node:model (older ones are deleted).
pub const BENCH_RUNS_KEPT: usize = 100;

/// A benchmark run's key: node, model, then the time, zero-padded so runs
/// sort oldest first.
fn run_key(b: &Benchmark) -> String {
    format!("{}\t{:020}", perf_key(&b.node, &b.model), b.ts_ms.max(0))
}

/// The writer thread: one transaction per batch.
fn writer(inner: Arc<Inner>, mut rx: mpsc::Receiver<Write>, cfg: StoreConfig) {
    let mut last_retention = std::time::Instant::now();
    while let Some(first) = rx.blocking_recv() {
        let urgent = matches!(first, Write::Flush(_) | Write::Close(_));
        let mut batch = vec![first];
        if !urgent && !cfg.commit_window.is_zero() {
            std::thread::sleep(cfg.commit_window);
        }
        while batch.len() < cfg.batch.max(1) {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let mut flushes = Vec::new();
        let close = batch.iter().position(|w| matches!(w, Write::Close(_)));
        let close = close.map(|i| match batch.remove(i) {
            Write::Close(ack) => ack,
            _ => unreachable!(),
        });
        let records = batch
            .iter()
            .filter(|w| !matches!(w, Write::Flush(_) | Write::Close(_)))
            .count() as u64;
        if let Err(e) = commit(&inner, batch, &mut flushes) {
            // The whole batch is lost: count it, so health says so.
            inner.stats.dropped.fetch_add(records, Ordering::Relaxed);
            tracing::error!(error = %e, path = %inner.path.display(), records, "store write failed");
        }
        for f in flushes {
            let _ = f.send(());
        }
        if let Some(ack) = close {
            rx.close();
            drop(inner);
            let _ = ack.send(());
            return;
        }
        if last_retention.elapsed() >= cfg.retention_interval {
            last_retention = std::time::Instant::now();
            if let Err(e) = retain(&inner, &cfg, crate::fleet::now_ms()) {
                tracing::warn!(error = %e, "store retention failed");
            }
        }
    }
}

fn commit(
    inner: &Inner,
    batch: Vec<Write>,
    flushes: &mut Vec<std::sync::mpsc::Sender<()>>,
) -> Result<(), StoreError> {
    let db = inner.db.read().unwrap_or_else(|p| p.into_inner());
    let txn = db.begin_write().map_err(StoreError::db)?;
    let mut traces_written = 0;
    {
        let mut meta = txn.open_table(META).map_err(StoreError::db)?;
        let mut next = meta
            .get("next_seq")
            .map_err(StoreError::db)?
            .map(|v| v.value())
            .unwrap_or(1);
        let mut traces = txn.open_table(TRACES).map_err(StoreError::db)?;
        let mut tags = txn.open_multimap_table(TAGS).map_err(StoreError::db)?;
        let mut perf = txn.open_table(PERF).map_err(StoreError::db)?;
        let mut bench = txn.open_table(BENCH).map_err(StoreError::db)?;
        let mut runs = txn.open_table(BENCH_RUNS).map_err(StoreError::db)?;
        let mut settings = txn.open_table(SETTINGS).map_err(StoreError::db)?;
        for w in batch {
            match w {
                Write::Trace(mut t) => {
                    t.seq = next;
                    next += 1;
                    let bytes = serde_json::to_vec(&t).map_err(StoreError::db)?;
                    traces
                        .insert(t.seq, bytes.as_slice())
                        .map_err(StoreError::db)?;
                    for g in &t.tags {
                        tags.insert(g.as_str(), t.seq).map_err(StoreError::db)?;
                    }
                    traces_written += 1;
                }
                Write::Perf { node, model, book } => {
                    let bytes = serde_json::to_vec(&book).map_err(StoreError::db)?;
                    perf.insert(perf_key(&node, &model).as_str(), bytes.as_slice())
                        .map_err(StoreError::db)?;
                }
                Write::Bench(b) => {
                    let bytes = serde_json::to_vec(&b).map_err(StoreError::db)?;
                    bench
                        .insert(perf_key(&b.node, &b.model).as_str(), bytes.as_slice())
                        .map_err(StoreError::db)?;
                    runs.insert(run_key(&b).as_str(), bytes.as_slice())
                        .map_err(StoreError::db)?;
                    // Keep the newest runs of this node:model only.
                    let from = format!("{}\t", perf_key(&b.node, &b.model));
                    let to = format!("{}\n", perf_key(&b.node, &b.model));
                    let old: Vec<String> = {
                        let all: Vec<String> = runs
                            .range(from.as_str()..to.as_str())
                            .map_err(StoreError::db)?
                            .filter_map(|r| r.ok().map(|(k, _)| k.value().to_string()))
                            .collect();
                        let extra = all.len().saturating_sub(BENCH_RUNS_KEPT);
                        all.into_iter().take(extra).collect()
                    };
                    for k in old {
                        runs.remove(k.as_str()).map_err(StoreError::db)?;
                    }
                }
                Write::Setting { key, value } => {
                    let bytes = serde_json::to_vec(&value).map_err(StoreError::db)?;
                    settings
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(StoreError::db)?;
                }
                Write::Flush(tx) => flushes.push(tx),
                Write::Close(tx) => flushes.push(tx),
            }
        }
        meta.insert("next_seq", next).map_err(StoreError::db)?;
    }
    txn.commit().map_err(StoreError::db)?;
    inner
        .stats
        .committed
        .fetch_add(traces_written, Ordering::Relaxed);
    inner.stats.commits.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn retain(inner: &Inner, cfg: &StoreConfig, now_ms: i64) -> Result<u64, StoreError> {
    let cutoff = now_ms - cfg.max_age.as_millis() as i64;
    let size = std::fs::metadata(&inner.path).map(|m| m.len()).unwrap_or(0);
    let deleted = {
        let db = inner.db.read().unwrap_or_else(|p| p.into_inner());
        let txn = db.begin_write().map_err(StoreError::db)?;
        let mut deleted = 0u64;
        {
            let mut traces = txn.open_table(TRACES).map_err(StoreError::db)?;
            let mut tags = txn.open_multimap_table(TAGS).map_err(StoreError::db)?;
            let total = traces.len().map_err(StoreError::db)?;
            // Over the size limit: drop the oldest tenth on top of the expired.
            let extra = if size > cfg.max_bytes {
                total / 10 + 1
            } else {
                0
            };
            loop {
                let Some((k, v)) = traces.first().map_err(StoreError::db)? else {
                    break;
                };
                let (id, rec) = (
                    k.value(),
                    serde_json::from_slice::<TraceRecord>(v.value()).ok(),
                );
                drop((k, v));
                let old = rec.as_ref().is_none_or(|r| r.ts_ms < cutoff);
                if !old && deleted >= extra {
                    break;
                }
                traces.remove(id).map_err(StoreError::db)?;
                if let Some(r) = rec {
                    for g in &r.tags {
                        tags.remove(g.as_str(), id).map_err(StoreError::db)?;
                    }
                }
                deleted += 1;
            }
        }
        txn.commit().map_err(StoreError::db)?;
        deleted
    };
    if deleted > 0 {
        inner.stats.deleted.fetch_add(deleted, Ordering::Relaxed);
        let mut db = inner.db.write().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = db.compact() {
            tracing::debug!(error = %e, "store compaction skipped");
        }
    }
    Ok(deleted)
}

#[cfg(test)]
pub(crate) mod tests;
