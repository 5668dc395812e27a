//! What herd learns from the traffic it routes: per node:model time to first
//! token, generation speed and cold-load times.
//!
//! Scoring reads medians of recent samples through [`Observations`], so a node
//! that turns slow stops winning within a few requests, and a node that
//! recovers wins again as new samples replace old ones.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::fleet::NodeId;
use crate::rank::Perf;
use crate::slots::{Sample, SlotEstimate, SlotLearner};

/// Samples kept per series.
const WINDOW: usize = 32;

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The model finished.
    Completed,
    /// The attempt failed.
    Failed,
    /// The stream ended before the model finished.
    Incomplete,
    /// The client went away first.
    ClientDisconnected,
}

/// What one finished request taught us.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Time to first token, milliseconds.
    pub ttft_ms: Option<f64>,
    /// Time to the end of the answer, milliseconds.
    pub total_ms: f64,
    /// Prompt tokens, as the engine counted them.
    pub prompt_tokens: Option<u64>,
    /// Output tokens, as the engine counted them.
    pub output_tokens: Option<u64>,
    /// Engine-reported generation time, ms (Ollama `eval_duration`).
    pub eval_ms: Option<f64>,
    /// Engine-reported model load time, ms (Ollama `load_duration`).
    pub load_ms: Option<f64>,
    /// Whether the answer ended well.
    pub ok: bool,
    /// The engine's own timings of the answer (Ollama's final chunk): where
    /// its time went on the node, what [`crate::slots`] learns from.
    pub node_timings: Option<crate::slots::NodeTimings>,
    /// Requests herd had in flight on the node:model when this one got its
    /// slot, itself included (see [`crate::slots`]).
    pub concurrency: Option<u32>,
}

#[derive(Debug, Default)]
struct Series(VecDeque<f64>);

impl Series {
    fn push(&mut self, v: f64) {
        if self.0.len() == WINDOW {
            self.0.pop_front();
        }
        self.0.push_back(v);
    }
    fn median(&self) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.0.iter().copied().collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        Some(v[v.len() / 2])
    }
}

#[derive(Debug, Default)]
struct Book {
    /// Failures since the last success, and when the last one happened.
    failures_in_row: u32,
    last_failure: Option<tokio::time::Instant>,
    ttft_ms: Series,
    tokens_per_s: Series,
    cold_load_ms: Series,
    completed: u64,
    failed: u64,
    /// Medians of the series, kept current on every write so that scoring
    /// (many reads per request) never sorts.
    medians: (Option<f64>, Option<f64>, Option<f64>),
    /// How many requests the node serves at once, as answers tell.
    slots: SlotLearner,
    /// Its estimate, kept current on every write.
    slot_estimate: Option<SlotEstimate>,
}

impl Book {
    fn refresh(&mut self) {
        self.medians = (
            self.ttft_ms.median(),
            self.tokens_per_s.median(),
            self.cold_load_ms.median(),
        );
    }
}

type Books = HashMap<NodeId, HashMap<String, Book>>;

fn book_mut<'a>(books: &'a mut Books, node: &NodeId, model: &str) -> &'a mut Book {
    let model = crate::request::normalized(model);
    if !books.contains_key(&**node) {
        books.insert(node.clone(), HashMap::new());
    }
    let per = books.get_mut(&**node).expect("inserted above");
    if !per.contains_key(&*model) {
        per.insert(model.clone().into_owned(), Book::default());
    }
    per.get_mut(&*model).expect("inserted above")
}

fn book<'a>(books: &'a Books, node: &str, model: &str) -> Option<&'a Book> {
    books.get(node)?.get(&*crate::request::normalized(model))
}

/// Cold loads are told apart from warm requests by the engine's load time.
const COLD_LOAD_MS: f64 = 500.0;

/// Per node:model history. Cheap to clone; clones share it.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// node → model (normalised) → book; read by `&str` without allocating.
    books: Arc<Mutex<Books>>,
    /// Nodes that went silent, and until when they stay out of routing.
    hung: Arc<Mutex<HashMap<NodeId, tokio::time::Instant>>>,
}

/// One node:model's record, for `/fleet/status`.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The node.
    pub node: NodeId,
    /// The model (normalised).
    pub model: String,
    /// Requests that ended well.
    pub completed: u64,
    /// Requests that failed.
    pub failed: u64,
    /// The medians scoring reads.
    pub perf: Option<Perf>,
    /// Parallel slots learned from its answers (see [`crate::slots`]).
    pub learned_slots: Option<SlotEstimate>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Learn from one finished request.
    pub fn record(&self, node: &NodeId, model: &str, o: &Outcome) {
        let mut books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        let b = book_mut(&mut books, node, model);
        if !o.ok {
            b.failed += 1;
            return;
        }
        b.completed += 1;
        b.failures_in_row = 0;
        let load = o.load_ms.unwrap_or(0.0);
        if o.concurrency.is_some() || o.node_timings.is_some() {
            b.slots.sample(&Sample {
                concurrency: o.concurrency.unwrap_or(0),
                timings: o.node_timings,
                ttft_ms: o.ttft_ms,
                load_ms: load,
                sent_ms_ago: o.total_ms,
            });
            b.slot_estimate = b.slots.estimate();
        }
        if let Some(t) = o.ttft_ms {
            if load >= COLD_LOAD_MS {
                b.cold_load_ms.push(load);
                // Keep the warm TTFT series clean of load time.
                b.ttft_ms.push((t - load).max(1.0));
            } else {
                b.ttft_ms.push(t);
            }
        }
        if let (Some(n), Some(ms)) = (o.output_tokens, o.eval_ms)
            && n >= 4
            && ms > 0.0
        {
            b.tokens_per_s.push(n as f64 / (ms / 1000.0));
        } else if let (Some(n), Some(t)) = (o.output_tokens, o.ttft_ms)
            && n >= 4
            && o.total_ms > t
        {
            b.tokens_per_s.push(n as f64 / ((o.total_ms - t) / 1000.0));
        }
        b.refresh();
    }

    /// The node failed an attempt (connect error, 5xx, broke mid-stream):
    /// scoring turns away from it until it succeeds again or time passes.
    pub fn node_failed(&self, node: &NodeId, model: &str) {
        let mut books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        let b = book_mut(&mut books, node, model);
        b.failures_in_row = b.failures_in_row.saturating_add(1);
        b.last_failure = Some(tokio::time::Instant::now());
    }

    /// What scoring reads for one node:model: medians and recent failures.
    pub fn perf(&self, node: &str, model: &str) -> Option<Perf> {
        let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        let b = book(&books, node, model)?;
        let samples = b.ttft_ms.0.len().max(b.tokens_per_s.0.len()) as u32;
        // Failures in a row, fading with a 15 s time constant so a node that
        // got no traffic after failing is tried again.
        let recent_failures = match b.last_failure {
            Some(at) if b.failures_in_row > 0 => {
                b.failures_in_row as f64 * (-at.elapsed().as_secs_f64() / 15.0).exp()
            }
            _ => 0.0,
        };
        if samples == 0 && b.cold_load_ms.0.is_empty() && recent_failures < 0.01 {
            return None;
        }
        let (ttft, tps, cold) = b.medians;
        Some(Perf {
            ttft_ms: ttft.unwrap_or(0.0),
            tokens_per_s: tps.unwrap_or(0.0),
            cold_load_ms: cold,
            samples,
            recent_failures,
        })
    }

    /// What answers taught about how many requests `node`:`model` serves
    /// at once (see [`crate::slots`]), once any did.
    pub fn slots(&self, node: &str, model: &str) -> Option<SlotEstimate> {
        let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        book(&books, node, model)?.slot_estimate
    }

    /// Drop what was learned about these nodes (they left the fleet).
    pub fn forget(&self, nodes: &[NodeId]) {
        let mut books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        for n in nodes {
            books.remove(&**n);
        }
        drop(books);
        let mut hung = self.hung.lock().unwrap_or_else(|p| p.into_inner());
        for n in nodes {
            hung.remove(&**n);
        }
    }

    /// The node sent nothing within its first-byte deadline: keep it out of
    /// routing for `pause`, then try it again.
    pub fn node_hung(&self, node: &NodeId, pause: std::time::Duration) {
        let mut hung = self.hung.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        hung.retain(|_, until| *until > now);
        hung.insert(node.clone(), now + pause);
    }

    /// How much longer `node` stays out of routing, when it hung lately.
    pub fn hung(&self, node: &str) -> Option<std::time::Duration> {
        let hung = self.hung.lock().unwrap_or_else(|p| p.into_inner());
        let until = *hung.get(node)?;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Nodes out of routing because they hung, with how long is left.
    pub fn hung_nodes(&self) -> Vec<(NodeId, std::time::Duration)> {
        let hung = self.hung.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        let mut v: Vec<_> = hung
            .iter()
            .filter(|(_, u)| **u > now)
            .map(|(n, u)| (n.clone(), u.saturating_duration_since(now)))
            .collect();
        v.sort();
        v
    }

    /// Every node:model's record, sorted.
    pub fn summaries(&self) -> Vec<Summary> {
        let mut keys: Vec<(NodeId, String)> = {
            let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
            books
                .iter()
                .flat_map(|(n, per)| per.keys().map(move |m| (n.clone(), m.clone())))
                .collect()
        };
        keys.sort();
        keys.into_iter()
            .map(|(node, model)| {
                let perf = self.perf(&node, &model);
                let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
                let (completed, failed, learned_slots) = book(&books, &node, &model)
                    .map_or((0, 0, None), |b| (b.completed, b.failed, b.slot_estimate));
                Summary {
                    completed,
                    failed,
                    learned_slots,
                    node,
                    model,
                    perf,
                }
            })
            .collect()
    }
}

/// One node:model's history as the store keeps it (see [`crate::store`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BookSnapshot {
    /// Recent times to first token, milliseconds, oldest first.
    pub ttft_ms: Vec<f64>,
    /// Recent generation speeds, tokens per second.
    pub tokens_per_s: Vec<f64>,
    /// Recent cold-load times, milliseconds.
    pub cold_load_ms: Vec<f64>,
    /// Requests that ended well.
    pub completed: u64,
    /// Requests that failed.
    pub failed: u64,
}

fn series_from(v: &[f64]) -> Series {
    let mut s = Series::default();
    for x in v.iter().rev().take(WINDOW).rev() {
        s.push(*x);
    }
    s
}

impl History {
    /// The history of one node:model, for the store.
    pub fn export(&self, node: &str, model: &str) -> Option<BookSnapshot> {
        let books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        let b = book(&books, node, model)?;
        Some(BookSnapshot {
            ttft_ms: b.ttft_ms.0.iter().copied().collect(),
            tokens_per_s: b.tokens_per_s.0.iter().copied().collect(),
            cold_load_ms: b.cold_load_ms.0.iter().copied().collect(),
            completed: b.completed,
            failed: b.failed,
        })
    }

    /// Load a node:model's history from the store (at start).
    pub fn restore(&self, node: &str, model: &str, s: &BookSnapshot) {
        let mut books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        let b = book_mut(&mut books, &NodeId::from(node), model);
        *b = Book {
            ttft_ms: series_from(&s.ttft_ms),
            tokens_per_s: series_from(&s.tokens_per_s),
            cold_load_ms: series_from(&s.cold_load_ms),
            completed: s.completed,
            failed: s.failed,
            ..Book::default()
        };
        b.refresh();
    }

    /// Feed a calibration: it replaces what traffic taught only while traffic
    /// has taught little (fewer samples than a calibration counts for).
    pub fn calibrate(&self, node: &str, model: &str, ttft_ms: f64, tokens_per_s: f64) {
        const WEIGHT: usize = 3;
        let mut books = self.books.lock().unwrap_or_else(|p| p.into_inner());
        let b = book_mut(&mut books, &NodeId::from(node), model);
        if b.ttft_ms.0.len() > WEIGHT {
            return;
        }
        b.ttft_ms = Series::default();
        b.tokens_per_s = Series::default();
        for _ in 0..WEIGHT {
            b.ttft_ms.push(ttft_ms.max(1.0));
            if tokens_per_s > 0.0 {
                b.tokens_per_s.push(tokens_per_s);
            }
        }
        b.refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_from_json_bit_for_bit() {
        // The store keeps snapshots as JSON; a learned median must be the
        // same number after a restart. 25.793205999999998 read back as
        // 25.793206 (one ULP off) before serde_json's float_roundtrip.
        let s = BookSnapshot {
            ttft_ms: vec![25.793205999999998, 0.1 + 0.2, 1e-300, 123456.78901234567],
            tokens_per_s: vec![50.0 - 7e-15],
            cold_load_ms: vec![],
            completed: 3,
            failed: 0,
        };
        let back: BookSnapshot = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
        for (a, b) in s.ttft_ms.iter().zip(&back.ttft_ms) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a} read back as {b}");
        }
        assert_eq!(back, s);
    }

    #[test]
    fn medians_follow_recent_samples() {
        let h = History::new();
        let n: NodeId = "n".into();
        for _ in 0..WINDOW {
            h.record(
                &n,
                "m",
                &Outcome {
                    ttft_ms: Some(100.0),
                    total_ms: 1100.0,
                    output_tokens: Some(40),
                    eval_ms: Some(1000.0),
                    ok: true,
                    ..Default::default()
                },
            );
        }
        let p = h.perf("n", "m:latest").unwrap();
        assert_eq!(p.ttft_ms, 100.0);
        assert_eq!(p.tokens_per_s, 40.0);
        // The node slows down 4x: within a window the median follows.
        for _ in 0..WINDOW / 2 + 1 {
            h.record(
                &n,
                "m",
                &Outcome {
                    ttft_ms: Some(400.0),
                    total_ms: 4400.0,
                    output_tokens: Some(40),
                    eval_ms: Some(4000.0),
                    ok: true,
                    ..Default::default()
                },
            );
        }
        let p = h.perf("n", "m").unwrap();
        assert_eq!(p.ttft_ms, 400.0);
        assert_eq!(p.tokens_per_s, 10.0);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_fade_and_reset_on_success() {
        let h = History::new();
        let n: NodeId = "n".into();
        h.node_failed(&n, "m");
        h.node_failed(&n, "m");
        assert!((h.perf("n", "m").unwrap().recent_failures - 2.0).abs() < 1e-9);
        tokio::time::advance(std::time::Duration::from_secs(15)).await;
        let faded = h.perf("n", "m").unwrap().recent_failures;
        assert!((faded - 2.0 / std::f64::consts::E).abs() < 1e-6, "{faded}");
        h.record(
            &n,
            "m",
            &Outcome {
                ok: true,
                ttft_ms: Some(10.0),
                ..Default::default()
            },
        );
        assert_eq!(h.perf("n", "m").unwrap().recent_failures, 0.0);
    }

    #[test]
    fn cold_loads_are_kept_apart() {
        let h = History::new();
        let n: NodeId = "n".into();
        h.record(
            &n,
            "m",
            &Outcome {
                ttft_ms: Some(3100.0),
                load_ms: Some(3000.0),
                ok: true,
                ..Default::default()
            },
        );
        let p = h.perf("n", "m").unwrap();
        assert_eq!(p.cold_load_ms, Some(3000.0));
        assert_eq!(p.ttft_ms, 100.0);
        assert!(h.perf("other", "m").is_none());
    }
}
