//! The event hub: one bounded ring of recent events shared by every open
//! dashboard, the latest state for a tab that connects, and the counters.
//!
//! Why a ring and not a channel per tab: the cost of an event on the
//! request path must not grow with the number of tabs. Publishing is one
//! short lock, a push and a wake-up; each tab keeps only a cursor into the
//! ring and sends what lies after it, in batches (see [`super::sse`]). A
//! tab whose cursor falls off the ring's far end — its connection stopped
//! draining — is dropped, not buffered for: it reconnects with
//! `Last-Event-ID` and starts again from a snapshot. The same ring is what
//! a reconnecting tab resumes from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::watch;

use super::event::{Decision, Event, Outcome};
use super::settings::DashboardConfig;
use crate::fleet::NodeId;

/// Feed events (decisions and outcomes) a fresh tab receives in its snapshot.
const SNAPSHOT_FEED: usize = 100;
/// Health changes remembered for the history chart.
const HEALTH_HISTORY: usize = 720;
/// node:model pairs whose cold loads are counted.
const COLD_LOAD_KEYS: usize = 1024;

/// The shared hub. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Random, per process: a `Last-Event-ID` from another run never matches.
    id: String,
    cfg: DashboardConfig,
    state: Mutex<State>,
    /// The decision rate's token bucket: (tokens, last refill). Apart from
    /// the ring, so a decision not shown never touches it.
    bucket: Mutex<(f64, Instant)>,
    /// The newest sequence number; tabs wait on it.
    wake: watch::Sender<u64>,
    /// Set when herd stops: every stream ends.
    closed: watch::Sender<bool>,
    subscribers: AtomicUsize,
    dropped: AtomicU64,
    decisions: AtomicU64,
    shown: AtomicU64,
    finished: AtomicU64,
    errors: AtomicU64,
}

#[derive(Debug)]
struct State {
    ring: VecDeque<Arc<Event>>,
    next: u64,
    nodes: BTreeMap<NodeId, Bytes>,
    latest: HashMap<&'static str, Bytes>,
    /// (what fired, the point with its time), one per change.
    health_history: VecDeque<(Bytes, Bytes)>,
    cold: HashMap<(NodeId, String), (u64, f64)>,
}

/// Where a tab's cursor stands.
#[derive(Debug)]
pub enum Since {
    /// Events after the cursor (possibly none yet).
    Events(Vec<Arc<Event>>),
    /// The cursor fell off the ring: the tab is too slow.
    Lagged,
}

/// How a new stream starts.
#[derive(Debug)]
pub struct Start {
    /// The first bytes to send: a snapshot event, or nothing when resuming.
    pub first: Option<Bytes>,
    /// The sequence number of the first event to send after it.
    pub cursor: u64,
}

/// An open stream, counted until dropped.
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.inner.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Too many streams are open.
#[derive(Debug, thiserror::Error)]
#[error("{0} dashboard event streams are open, the most [dashboard] max_subscribers allows")]
pub struct TooManySubscribers(pub usize);

impl Hub {
    /// An empty hub with `cfg`'s limits.
    pub fn new(cfg: &DashboardConfig) -> Self {
        let cfg = cfg.sane();
        Hub {
            inner: Arc::new(Inner {
                id: format!("{:08x}", fastrand::u32(..)),
                state: Mutex::new(State {
                    ring: VecDeque::with_capacity(cfg.ring),
                    next: 1,
                    nodes: BTreeMap::new(),
                    latest: HashMap::new(),
                    health_history: VecDeque::new(),
                    cold: HashMap::new(),
                }),
                bucket: Mutex::new((cfg.decisions_per_s * 2.0, Instant::now())),
                cfg,
                wake: watch::Sender::new(0),
                closed: watch::Sender::new(false),
                subscribers: AtomicUsize::new(0),
                dropped: AtomicU64::new(0),
                decisions: AtomicU64::new(0),
                shown: AtomicU64::new(0),
                finished: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
        }
    }

    /// The limits in effect.
    pub fn config(&self) -> &DashboardConfig {
        &self.inner.cfg
    }

    /// This hub's id (the prefix of every event id).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Push one event made from its sequence number; returns that number.
    fn push(&self, s: &mut State, make: impl FnOnce(u64) -> Event) -> u64 {
        let seq = s.next;
        s.next += 1;
        if s.ring.len() == self.inner.cfg.ring {
            s.ring.pop_front();
        }
        s.ring.push_back(Arc::new(make(seq)));
        seq
    }

    fn woke(&self, seq: u64) {
        self.inner.wake.send_replace(seq);
    }

    /// A routing decision is made. Returns whether it is shown (when it is,
    /// its [`Hub::outcome`] is too); above `decisions_per_s` only a sample
    /// is.
    pub fn decision(&self, d: Decision) -> bool {
        self.decision_with(|| d)
    }

    /// [`Hub::decision`], making the decision only when it will be shown
    /// (above the rate, a decision costs a counter and one short lock).
    pub fn decision_with(&self, make: impl FnOnce() -> Decision) -> bool {
        self.inner.decisions.fetch_add(1, Ordering::Relaxed);
        {
            let mut b = self.inner.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let rate = self.inner.cfg.decisions_per_s;
            b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate * 2.0);
            b.1 = now;
            if b.0 < 1.0 {
                return false;
            }
            b.0 -= 1.0;
        }
        let d = make();
        let seq = {
            let mut s = self.state();
            self.push(&mut s, |seq| Event::decision(seq, d))
        };
        self.inner.shown.fetch_add(1, Ordering::Relaxed);
        self.woke(seq);
        true
    }

    /// A request ended; `shown` says whether its decision was published.
    /// Cold loads are counted either way.
    pub fn outcome(&self, o: Outcome, shown: bool, cold_load_ms: f64) {
        self.inner.finished.fetch_add(1, Ordering::Relaxed);
        if !matches!(o.status, "ok" | "retried" | "picked") {
            self.inner.errors.fetch_add(1, Ordering::Relaxed);
        }
        let cold = match (&o.node, o.load_ms) {
            (Some(n), Some(ms)) if ms >= cold_load_ms => Some((n.clone(), ms)),
            _ => None,
        };
        if cold.is_none() && !shown {
            return;
        }
        let mut s = self.state();
        if let Some((node, ms)) = cold {
            let model = o.model.clone();
            let full = s.cold.len() >= COLD_LOAD_KEYS;
            let key = (node, model);
            if let Some(e) = s.cold.get_mut(&key) {
                *e = (e.0 + 1, ms);
            } else if !full {
                s.cold.insert(key, (1, ms));
            }
        }
        if shown {
            let seq = self.push(&mut s, |seq| Event::outcome(seq, o));
            drop(s);
            self.woke(seq);
        }
    }

    /// A node's state, as JSON (the sampler, when it changed).
    pub fn node(&self, id: NodeId, json: Bytes) {
        let seq = {
            let mut s = self.state();
            s.nodes.insert(id, json.clone());
            self.push(&mut s, |seq| Event::json(seq, "node", json))
        };
        self.woke(seq);
    }

    /// A node left the fleet.
    pub fn node_gone(&self, id: &NodeId) {
        let seq = {
            let mut s = self.state();
            s.nodes.remove(id);
            let json =
                Bytes::from(serde_json::to_vec(&serde_json::json!({"id": id})).unwrap_or_default());
            self.push(&mut s, |seq| Event::json(seq, "node_gone", json))
        };
        self.woke(seq);
    }

    /// The latest value of a state event (`queues`, `health`, `perf`,
    /// `pulls`, `extras`, `stats`, `bench`), published when it differs from the last.
    pub fn state_event(&self, kind: &'static str, json: Bytes) {
        let seq = {
            let mut s = self.state();
            if s.latest.get(kind) == Some(&json) {
                return;
            }
            s.latest.insert(kind, json.clone());
            if kind == "health" {
                let (key, point) = health_point(&json);
                if s.health_history.back().map(|(k, _)| k) != Some(&key) {
                    if s.health_history.len() == HEALTH_HISTORY {
                        s.health_history.pop_front();
                    }
                    s.health_history.push_back((key, point));
                }
            }
            self.push(&mut s, |seq| Event::json(seq, kind, json))
        };
        self.woke(seq);
    }

    /// Cold loads counted per node:model (the perf event carries them).
    pub fn cold_loads(&self) -> Vec<serde_json::Value> {
        let s = self.state();
        let mut v: Vec<_> = s
            .cold
            .iter()
            .map(|((n, m), (count, last))| serde_json::json!({"node": n, "model": m, "count": count, "last_ms": last}))
            .collect();
        v.sort_by(|a, b| {
            (a["node"].as_str(), a["model"].as_str())
                .cmp(&(b["node"].as_str(), b["model"].as_str()))
        });
        v
    }

    /// Counters for the `stats` event.
    pub fn counters(&self) -> Counters {
        let i = &self.inner;
        Counters {
            decisions: i.decisions.load(Ordering::Relaxed),
            shown: i.shown.load(Ordering::Relaxed),
            finished: i.finished.load(Ordering::Relaxed),
            errors: i.errors.load(Ordering::Relaxed),
            subscribers: i.subscribers.load(Ordering::Relaxed),
            dropped: i.dropped.load(Ordering::Relaxed),
        }
    }

    /// Open a stream: counted, refused above the limit.
    pub fn subscribe(&self) -> Result<Subscription, TooManySubscribers> {
        let max = self.inner.cfg.max_subscribers;
        let prev = self.inner.subscribers.fetch_add(1, Ordering::Relaxed);
        let sub = Subscription { hub: self.clone() };
        if prev >= max {
            return Err(TooManySubscribers(max));
        }
        Ok(sub)
    }

    /// A stream was dropped for falling behind.
    pub fn note_dropped(&self) {
        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Where a stream starts: after `last` (a `Last-Event-ID`) when every
    /// event since is still in the ring, else from a snapshot.
    pub fn start(&self, last: Option<&str>, info: &RawValue) -> Start {
        let s = self.state();
        if let Some(seq) = last.and_then(|l| self.resumable(&s, l)) {
            return Start {
                first: None,
                cursor: seq + 1,
            };
        }
        let cursor = s.next;
        let snap = self.snapshot(&s, info);
        drop(s);
        let mut out = Vec::with_capacity(snap.len() + 64);
        out.extend_from_slice(b"retry: 2000\n");
        out.extend_from_slice(
            format!(
                "id: {}:{}\nevent: snapshot\ndata: ",
                self.inner.id,
                cursor - 1
            )
            .as_bytes(),
        );
        out.extend_from_slice(&snap);
        out.extend_from_slice(b"\n\n");
        Start {
            first: Some(Bytes::from(out)),
            cursor,
        }
    }

    fn resumable(&self, s: &State, last: &str) -> Option<u64> {
        let (hub, seq) = last.trim().split_once(':')?;
        let seq: u64 = seq.parse().ok()?;
        if hub != self.inner.id || seq >= s.next {
            return None;
        }
        let oldest = s.ring.front().map_or(s.next, |e| e.seq);
        (seq + 1 >= oldest).then_some(seq)
    }

    /// Everything a fresh tab needs, as one JSON object.
    fn snapshot(&self, s: &State, info: &RawValue) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        out.extend_from_slice(b"{\"info\":");
        out.extend_from_slice(info.get().as_bytes());
        out.extend_from_slice(b",\"nodes\":[");
        join(&mut out, s.nodes.values());
        out.extend_from_slice(b"]");
        for kind in [
            "queues", "health", "perf", "pulls", "extras", "stats", "bench",
        ] {
            out.extend_from_slice(format!(",\"{kind}\":").as_bytes());
            match s.latest.get(kind) {
                Some(b) => out.extend_from_slice(b),
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(b",\"health_history\":[");
        join(&mut out, s.health_history.iter().map(|(_, p)| p));
        out.extend_from_slice(b"],\"feed\":[");
        let feed: Vec<&Arc<Event>> = s
            .ring
            .iter()
            .rev()
            .filter(|e| e.is_feed())
            .take(SNAPSHOT_FEED)
            .collect();
        let mut first = true;
        for e in feed.into_iter().rev() {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(format!("{{\"event\":\"{}\",\"data\":", e.kind).as_bytes());
            out.extend_from_slice(&e.data());
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// Events from `cursor` on, at most `max`.
    pub fn since(&self, cursor: u64, max: usize) -> Since {
        let s = self.state();
        let Some(front) = s.ring.front() else {
            return Since::Events(Vec::new());
        };
        if cursor < front.seq {
            return Since::Lagged;
        }
        let skip = (cursor - front.seq) as usize;
        Since::Events(s.ring.iter().skip(skip).take(max).cloned().collect())
    }

    /// Wakes when a new event is published.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.wake.subscribe()
    }

    /// Becomes true when the hub is closed.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.inner.closed.subscribe()
    }

    /// End every stream (herd is stopping) and refuse new ones.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }
}

/// The hub's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Routing decisions made.
    pub decisions: u64,
    /// Decisions published to the feed.
    pub shown: u64,
    /// Requests that ended.
    pub finished: u64,
    /// Requests that ended badly.
    pub errors: u64,
    /// Streams open.
    pub subscribers: usize,
    /// Streams dropped for falling behind.
    pub dropped: u64,
}

fn join<'a>(out: &mut Vec<u8>, items: impl Iterator<Item = &'a Bytes>) {
    let mut first = true;
    for b in items {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(b);
    }
}

/// The part of a health report the history keeps: the score and which
/// checks fired (the key a change is told by), and the same with its time.
fn health_point(report: &[u8]) -> (Bytes, Bytes) {
    let v: serde_json::Value = serde_json::from_slice(report).unwrap_or_default();
    let firing: Vec<serde_json::Value> = v["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| serde_json::json!({"id": c["id"], "subject": c["subject"], "severity": c["severity"]}))
        .collect();
    let key = serde_json::json!({"score": v["score"], "firing": firing});
    let point =
        serde_json::json!({"ts": crate::fleet::now_ms(), "score": v["score"], "firing": firing});
    (
        Bytes::from(serde_json::to_vec(&key).unwrap_or_default()),
        Bytes::from(serde_json::to_vec(&point).unwrap_or_default()),
    )
}
