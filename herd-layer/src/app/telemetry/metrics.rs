//! Prometheus series (`GET /metrics`, prometheus-client text exposition).
//!
//! Labels stay low-cardinality on purpose: model, node, operation and status
//! only — never request ids, tags or users, which belong in traces. Gauges
//! that describe the present (queue depth, in-flight, node up) are refreshed
//! from the live state when scraped, so they can never drift.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::fleet::FleetView;
use crate::queueing::Admission;

/// Labels of a finished request: what it was, where it ran, how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// GenAI operation name: `chat`, `text_completion` or `embeddings`.
    pub operation: String,
    /// The model that served it, normalized (`name:tag`).
    pub model: String,
    /// The node of its last attempt; empty when none was picked.
    pub node: String,
    /// How it ended ([`TraceStatus::as_str`](crate::app::store::TraceStatus::as_str)).
    pub status: String,
}

/// Labels of a per-model series (time to first token, queue wait, shed).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// GenAI operation name: `chat`, `text_completion` or `embeddings`.
    pub operation: String,
    /// The model that served it, normalized (`name:tag`).
    pub model: String,
}

/// Labels of the token-usage histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// GenAI operation name: `chat`, `text_completion` or `embeddings`.
    pub operation: String,
    /// The model that served it, normalized (`name:tag`).
    pub model: String,
    /// `input` (prompt) or `output` (generated).
    pub token_type: String,
}

/// Labels of the per node:model gauges (queue depth, in flight).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeModelLabels {
    /// The node's id.
    pub node: String,
    /// The model, as queueing keys it.
    pub model: String,
}

/// Labels of a per-key request count. Per-key series are bounded: names
/// of keys in force (`[auth] max_keys`, and a revoked key's series are
/// removed) plus `anonymous`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyStatusLabels {
    /// The key's name (`anonymous` without one).
    pub key: String,
    /// How the request ended.
    pub status: String,
}

/// Labels of a per-key token count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyTokenLabels {
    /// The key's name (`anonymous` without one).
    pub key: String,
    /// `input` or `output`.
    pub token_type: String,
}

/// Labels of a per-key refusal count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLimitLabels {
    /// The key's name.
    pub key: String,
    /// `requests`, `tokens`, `concurrent` or `tenants`.
    pub limit: String,
}

/// The label value for requests without a key.
pub const ANONYMOUS: &str = "anonymous";

const STATUSES: &[&str] = &[
    "completed",
    "retried",
    "failed",
    "shed",
    "client_disconnected",
    "incomplete",
    "rejected",
    "rate_limited",
];
const LIMITS: &[&str] = &["requests", "tokens", "concurrent", "tenants"];

/// Labels of the per-node gauge (node up).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// The node's id.
    pub node: String,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}
fn fast_seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}
fn tokens() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 12))
}

/// herd's Prometheus series. Cheap to clone; clones share the series.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Requests finished, by outcome (`herd_requests_total`).
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from arrival to the end of the stream
    /// (`gen_ai_server_request_duration_seconds`).
    pub duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Time to first token, seconds
    /// (`gen_ai_server_time_to_first_token_seconds`).
    pub ttft: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// Tokens per request, input and output (`gen_ai_client_token_usage`).
    pub token_usage: Family<TokenLabels, Histogram, fn() -> Histogram>,
    /// Seconds waited for a node:model slot (`herd_queue_wait_seconds`).
    pub queue_wait: Family<ModelLabels, Histogram, fn() -> Histogram>,
    /// Seconds herd spent before the upstream call, queue wait excluded
    /// (`herd_routing_overhead_seconds`).
    pub routing_overhead: Histogram,
    /// Requests shed with 429/503 (`herd_shed_total`).
    pub shed: Family<ModelLabels, Counter>,
    /// Attempts retried on another node (`herd_retries_total`).
    pub retries: Counter,
    /// Requests a fallback model served (`herd_fallbacks_total`).
    pub fallbacks: Counter,
    /// Requests waiting per node:model; set when scraped.
    pub queue_depth: Family<NodeModelLabels, Gauge>,
    /// Requests being served per node:model; set when scraped.
    pub in_flight: Family<NodeModelLabels, Gauge>,
    /// 1 for an online node, 0 for a known offline one; set when scraped.
    pub node_up: Family<NodeLabels, Gauge>,
    /// Records the store writer dropped since start; set when scraped.
    pub store_dropped: Gauge,
    /// The fleet's health score, 0 to 100; set when scraped.
    pub health_score: Gauge,
    /// Bytes request bodies hold of the body budget; set when scraped.
    pub body_memory: Gauge,
    /// HTTP connections open; set when scraped.
    pub connections: Gauge,
    /// Requests per API key, by outcome (`herd_key_requests_total{key,status}`).
    pub key_requests: Family<KeyStatusLabels, Counter>,
    /// Tokens per API key (`herd_key_tokens_total{key,token_type}`).
    pub key_tokens: Family<KeyTokenLabels, Counter>,
    /// Requests refused by a key's limits (`herd_rate_limited_total{key,limit}`).
    pub rate_limited: Family<KeyLimitLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every series, empty, registered under its Prometheus name.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            requests: Family::default(),
            duration: Family::new_with_constructor(seconds),
            ttft: Family::new_with_constructor(seconds),
            token_usage: Family::new_with_constructor(tokens),
            queue_wait: Family::new_with_constructor(seconds),
            routing_overhead: fast_seconds(),
            shed: Family::default(),
            retries: Counter::default(),
            fallbacks: Counter::default(),
            queue_depth: Family::default(),
            in_flight: Family::default(),
            node_up: Family::default(),
            store_dropped: Gauge::default(),
            health_score: Gauge::default(),
            body_memory: Gauge::default(),
            connections: Gauge::default(),
            key_requests: Family::default(),
            key_tokens: Family::default(),
            rate_limited: Family::default(),
        };
        r.register(
            "herd_requests",
            "Requests finished, by outcome",
            m.requests.clone(),
        );
        r.register(
            "gen_ai_server_request_duration_seconds",
            "GenAI server request duration (arrival to end of stream)",
            m.duration.clone(),
        );
        r.register(
            "gen_ai_server_time_to_first_token_seconds",
            "GenAI time to first token",
            m.ttft.clone(),
        );
        r.register(
            "gen_ai_client_token_usage",
            "GenAI tokens used per request, by token type (input, output)",
            m.token_usage.clone(),
        );
        r.register(
            "herd_queue_wait_seconds",
            "Time requests waited for a node:model slot",
            m.queue_wait.clone(),
        );
        r.register(
            "herd_routing_overhead_seconds",
            "Time herd spent before the upstream call, excluding queue wait",
            m.routing_overhead.clone(),
        );
        r.register("herd_shed", "Requests shed with 429/503", m.shed.clone());
        r.register(
            "herd_retries",
            "Attempts retried on another node",
            m.retries.clone(),
        );
        r.register(
            "herd_fallbacks",
            "Requests served by a fallback model",
            m.fallbacks.clone(),
        );
        r.register(
            "herd_queue_depth",
            "Requests waiting per node:model",
            m.queue_depth.clone(),
        );
        r.register(
            "herd_in_flight",
            "Requests being served per node:model",
            m.in_flight.clone(),
        );
        r.register(
            "herd_node_up",
            "1 when the node is online",
            m.node_up.clone(),
        );
        r.register(
            "herd_store_dropped_records",
            "Records the store writer could not keep up with",
            m.store_dropped.clone(),
        );
        r.register(
            "herd_health_score",
            "Fleet health score, 0..100",
            m.health_score.clone(),
        );
        r.register(
            "herd_body_memory_bytes",
            "Bytes request bodies hold of the body budget",
            m.body_memory.clone(),
        );
        r.register(
            "herd_http_connections",
            "HTTP connections open",
            m.connections.clone(),
        );
        r.register(
            "herd_key_requests",
            "Requests per API key (anonymous without one), by outcome",
            m.key_requests.clone(),
        );
        r.register(
            "herd_key_tokens",
            "Tokens per API key, input and output",
            m.key_tokens.clone(),
        );
        r.register(
            "herd_rate_limited",
            "Requests refused by an API key's limits, by limit",
            m.rate_limited.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Drop a revoked key's series (keeps the label set bounded by the
    /// keys in force).
    pub fn forget_key(&self, key: &str) {
        let key = key.to_string();
        for s in STATUSES {
            self.key_requests.remove(&KeyStatusLabels {
                key: key.clone(),
                status: (*s).to_string(),
            });
        }
        for t in ["input", "output"] {
            self.key_tokens.remove(&KeyTokenLabels {
                key: key.clone(),
                token_type: t.to_string(),
            });
        }
        for l in LIMITS {
            self.rate_limited.remove(&KeyLimitLabels {
                key: key.clone(),
                limit: (*l).to_string(),
            });
        }
    }

    /// Set the gauges that describe the present.
    pub fn refresh(&self, view: &FleetView, admission: &Admission) {
        self.node_up.clear();
        for n in view.nodes.values() {
            self.node_up
                .get_or_create(&NodeLabels {
                    node: n.id.to_string(),
                })
                .set(i64::from(n.online));
        }
        self.queue_depth.clear();
        self.in_flight.clear();
        for (node, model, load, _slots) in admission.snapshot() {
            let l = NodeModelLabels {
                node: node.to_string(),
                model,
            };
            self.queue_depth
                .get_or_create(&l)
                .set(i64::from(load.waiting));
            self.in_flight
                .get_or_create(&l)
                .set(i64::from(load.in_flight));
        }
    }

    /// The text exposition of every series.
    pub fn encode(&self) -> String {
        encode_classic(&self.registry)
    }
}

pub use crate::prometheus::{CONTENT_TYPE, encode_classic};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn herd_s_own_series_come_out_classic() {
        let m = Metrics::new();
        m.retries.inc();
        m.requests
            .get_or_create(&RequestLabels {
                operation: "chat".into(),
                model: "m:latest".into(),
                node: "a".into(),
                status: "completed".into(),
            })
            .inc();
        let text = m.encode();
        assert!(!text.contains("# EOF"), "{text}");
        let mut counters = 0;
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ")
                && let Some(name) = rest.strip_suffix(" counter")
            {
                counters += 1;
                assert!(name.ends_with("_total"), "{l}");
                assert!(
                    text.contains(&format!("# HELP {name} ")),
                    "HELP for {name}: {text}"
                );
            }
        }
        assert!(counters >= 3, "{text}");
        assert!(text.contains("herd_retries_total 1\n"), "{text}");
    }
}
