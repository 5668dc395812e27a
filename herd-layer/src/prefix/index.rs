//! Which prompt blocks herd sent to which node:model, and when.
//!
//! The index is fed by what herd routed (the queueing layer records a
//! request's [`Prefix`] once it has a slot on its node), never by what the
//! engine says it holds: Ollama publishes nothing about its slots. So it
//! records *placement*, and bounds it by what a node can really keep:
//!
//! - per node:model, a least-recently-used set of block hashes whose size is
//!   what the node's slots hold (slots × context, in blocks) — a prefix
//!   pushed out of it by newer traffic is taken as overwritten, as it is in
//!   a runner whose free slot gets the next prompt;
//! - a block older than [`TTL_MS`] counts for nothing;
//! - a block recorded before the model was last loaded counts for nothing
//!   (an unload takes every slot's cache with it; the caller passes when
//!   the model came into memory);
//! - the whole index holds at most [`MAX_TOTAL_BLOCKS`] hashes in at most
//!   [`MAX_BOOKS`] node:models; past that the least recently used
//!   node:model is dropped.
//!
//! Scoring asks how many leading blocks of a request a node:model holds;
//! the walk stops at the first block it does not hold, as a runner's
//! longest-common-prefix match does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{BLOCK_TOKENS, Prefix};
use crate::fleet::NodeId;

/// A block not sent again within this long counts for nothing.
pub const TTL_MS: i64 = 30 * 60 * 1000;

/// Hashes kept per node:model, at least and at most.
pub const BOOK_BLOCKS: (usize, usize) = (64, 32_768);

/// Hashes kept in all (about 40 bytes each).
pub const MAX_TOTAL_BLOCKS: usize = 1 << 19;

/// Node:models kept.
pub const MAX_BOOKS: usize = 4_096;

#[derive(Debug, Default)]
struct Book {
    /// Block hash → when it was last sent (ms since the epoch).
    seen: HashMap<u64, i64>,
    /// Oldest first; an entry is stale when `seen` has a newer time for it.
    order: VecDeque<(u64, i64)>,
    capacity: usize,
    touched: i64,
}

impl Book {
    fn record(&mut self, prefix: &Prefix, capacity: usize, now_ms: i64) {
        self.capacity = capacity;
        self.touched = now_ms;
        for &h in prefix.blocks() {
            self.seen.insert(h, now_ms);
            self.order.push_back((h, now_ms));
        }
        while self.seen.len() > self.capacity {
            let Some((h, at)) = self.order.pop_front() else {
                break;
            };
            if self.seen.get(&h) == Some(&at) {
                self.seen.remove(&h);
            }
        }
        // Stale entries (blocks sent again) pile up at the back: rebuild
        // the order when they outnumber the live ones.
        if self.order.len() > 2 * self.seen.len() + 64 {
            let mut live: Vec<(u64, i64)> = self.seen.iter().map(|(h, t)| (*h, *t)).collect();
            live.sort_by_key(|(_, t)| *t);
            self.order = live.into();
        }
    }

    fn held(&self, prefix: &Prefix, since_ms: i64, now_ms: i64) -> usize {
        prefix
            .blocks()
            .iter()
            .take_while(|h| {
                self.seen
                    .get(h)
                    .is_some_and(|t| *t >= since_ms && now_ms.saturating_sub(*t) < TTL_MS)
            })
            .count()
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// node → model (normalised) → book; read by `&str` without allocating.
    books: HashMap<NodeId, HashMap<String, Book>>,
    total: usize,
}

impl Inner {
    fn recount(&mut self) {
        self.total = self
            .books
            .values()
            .flat_map(|m| m.values())
            .map(|b| b.seen.len())
            .sum();
    }

    fn count_books(&self) -> usize {
        self.books.values().map(HashMap::len).sum()
    }

    /// Drop the least recently used node:model other than `keep`.
    fn evict_one(&mut self, keep: (&str, &str)) -> bool {
        let victim = self
            .books
            .iter()
            .flat_map(|(n, m)| m.iter().map(move |(k, b)| (n, k, b.touched)))
            .filter(|(n, k, _)| (&***n, k.as_str()) != keep)
            .min_by_key(|(_, _, t)| *t)
            .map(|(n, k, _)| (n.clone(), k.clone()));
        let Some((n, k)) = victim else {
            return false;
        };
        if let Some(per) = self.books.get_mut(&n) {
            if let Some(b) = per.remove(&k) {
                self.total = self.total.saturating_sub(b.seen.len());
            }
            if per.is_empty() {
                self.books.remove(&n);
            }
        }
        true
    }
}

/// The prefix index: see the module docs. Cheap to clone; clones share it.
#[derive(Clone, Debug, Default)]
pub struct PrefixIndex {
    inner: Arc<Mutex<Inner>>,
}

/// The index's size, for `/fleet/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IndexStats {
    /// Node:models with blocks.
    pub node_models: usize,
    /// Block hashes held.
    pub blocks: usize,
}

impl PrefixIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `prefix` was sent to `node`:`model` at `now_ms`; the node:model's
    /// slots hold about `capacity_tokens` tokens of cache.
    pub fn record(
        &self,
        node: &NodeId,
        model: &str,
        prefix: &Prefix,
        capacity_tokens: u64,
        now_ms: i64,
    ) {
        if prefix.is_empty() {
            return;
        }
        let capacity = usize::try_from(capacity_tokens / u64::from(BLOCK_TOKENS))
            .unwrap_or(usize::MAX)
            .clamp(BOOK_BLOCKS.0, BOOK_BLOCKS.1);
        let model = crate::model_name::normalized(model);
        let mut inner = self.lock();
        let is_new = inner
            .books
            .get(&**node)
            .is_none_or(|m| !m.contains_key(&*model));
        if is_new && inner.count_books() >= MAX_BOOKS {
            inner.evict_one((&**node, &*model));
        }
        let per = match inner.books.get_mut(&**node) {
            Some(m) => m,
            None => inner.books.entry(node.clone()).or_default(),
        };
        let book = match per.get_mut(&*model) {
            Some(b) => b,
            None => per.entry(model.clone().into_owned()).or_default(),
        };
        let before = book.seen.len();
        book.record(prefix, capacity, now_ms);
        let after = book.seen.len();
        inner.total = (inner.total + after).saturating_sub(before);
        if inner.total > MAX_TOTAL_BLOCKS {
            inner.recount();
            while inner.total > MAX_TOTAL_BLOCKS && inner.evict_one((&**node, &*model)) {}
        }
    }

    /// Tokens of `prefix` that `node`:`model` probably still holds: its
    /// leading blocks sent there no earlier than `since_ms` (when the model
    /// was loaded) and within [`TTL_MS`] of `now_ms`.
    pub fn cached_tokens(
        &self,
        node: &str,
        model: &str,
        prefix: &Prefix,
        since_ms: i64,
        now_ms: i64,
    ) -> u32 {
        if prefix.is_empty() {
            return 0;
        }
        let model = crate::model_name::normalized(model);
        let inner = self.lock();
        let held = inner
            .books
            .get(node)
            .and_then(|m| m.get(&*model))
            .map_or(0, |b| b.held(prefix, since_ms, now_ms));
        prefix.tokens_in(held)
    }

    /// Forget these nodes (they left the fleet).
    pub fn forget(&self, nodes: &[NodeId]) {
        let mut inner = self.lock();
        for n in nodes {
            inner.books.remove(&**n);
        }
        inner.recount();
    }

    /// How much the index holds.
    pub fn stats(&self) -> IndexStats {
        let inner = self.lock();
        IndexStats {
            node_models: inner.count_books(),
            blocks: inner.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BLOCK_BYTES, PrefixHasher};
    use super::*;

    fn prefix(text: &str) -> Prefix {
        let mut h = PrefixHasher::new();
        h.feed(text.as_bytes());
        h.finish()
    }

    #[test]
    fn a_node_holds_what_was_sent_there_and_nothing_else() {
        let idx = PrefixIndex::new();
        let a: NodeId = "a".into();
        let head = "h".repeat(BLOCK_BYTES * 10);
        idx.record(&a, "m", &prefix(&head), 100_000, 1_000);
        let next = prefix(&format!("{head}and more"));
        // Ten full blocks held, the new tail not.
        assert_eq!(idx.cached_tokens("a", "m:latest", &next, 0, 2_000), 640);
        assert_eq!(idx.cached_tokens("b", "m", &next, 0, 2_000), 0);
        assert_eq!(idx.cached_tokens("a", "other", &next, 0, 2_000), 0);
        // Loaded again after it was sent: the cache went with the unload.
        assert_eq!(idx.cached_tokens("a", "m", &next, 1_001, 2_000), 0);
        // Too old.
        assert_eq!(idx.cached_tokens("a", "m", &next, 0, 1_000 + TTL_MS), 0);
        // A prefix that differs from the first block matches nothing.
        let other = prefix(&format!("x{head}"));
        assert_eq!(idx.cached_tokens("a", "m", &other, 0, 2_000), 0);
    }

    #[test]
    fn newer_traffic_pushes_out_the_oldest_prefixes() {
        let idx = PrefixIndex::new();
        let a: NodeId = "a".into();
        // Room for 64 blocks (the minimum): 4096 tokens.
        let convs: Vec<Prefix> = (0..4)
            .map(|i| prefix(&format!("{i}").repeat(BLOCK_BYTES * 30)))
            .collect();
        for (t, p) in convs.iter().enumerate() {
            idx.record(&a, "m", p, 4_096, t as i64);
        }
        // The last two conversations fit; the first two were pushed out.
        let held: Vec<u32> = convs
            .iter()
            .map(|p| idx.cached_tokens("a", "m", p, 0, 10))
            .collect();
        assert_eq!(held[0], 0);
        assert_eq!(held[3], 30 * 64);
        assert!(idx.stats().blocks <= 64, "{:?}", idx.stats());
        // Sending the first again refreshes it.
        idx.record(&a, "m", &convs[0], 4_096, 20);
        assert_eq!(idx.cached_tokens("a", "m", &convs[0], 0, 21), 30 * 64);
        idx.forget(&[a]);
        assert_eq!(idx.stats(), IndexStats::default());
    }

    #[test]
    fn the_whole_index_is_bounded() {
        let idx = PrefixIndex::new();
        let conv = |i: usize| {
            let mut h = PrefixHasher::new();
            h.feed(format!("{i}").as_bytes());
            h.feed("q".repeat(BLOCK_BYTES * 2048).as_bytes());
            h.finish()
        };
        // Many node:models, each as full as it may be.
        let n = MAX_TOTAL_BLOCKS / 2048 + 40;
        for i in 0..n {
            idx.record(
                &NodeId::from(format!("n{i}")),
                "m",
                &conv(i),
                1 << 30,
                i as i64,
            );
        }
        let s = idx.stats();
        assert!(s.blocks <= MAX_TOTAL_BLOCKS, "{s:?}");
        assert!(s.node_models <= MAX_BOOKS);
        // The newest is kept, the oldest dropped.
        let last = n - 1;
        assert!(idx.cached_tokens(&format!("n{last}"), "m", &conv(last), 0, 1_000) > 0);
        assert_eq!(idx.cached_tokens("n0", "m", &conv(0), 0, 1_000), 0);
    }
}
