//! Fleet health: named checks over the fleet view and a window of recent
//! requests, each with a severity, a message, its evidence (numbers) and a
//! fix, plus one score.
//!
//! Rates are computed over the last `health.recent` requests (not a clock
//! window), so a check clears as soon as enough good traffic replaces the bad
//! — and tests can drive it without waiting. Fleet-state checks (offline,
//! hot, paused, …) clear as soon as the state does.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::store::{TraceRecord, TraceStatus};
use crate::fleet::{FleetView, NodeState};
use crate::queueing::Admission;

mod fleet;
mod queues;
mod traffic;

/// `[health]` in the config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Requests in the recent window the rate checks read.
    pub recent: usize,
    /// Fewest requests before a rate check speaks.
    pub min_requests: usize,
    /// Error rate (0..1) above which a node is flagged.
    pub error_rate: f64,
    /// Average retries per request above which retries are flagged.
    pub retry_rate: f64,
    /// Cold loads of one node in the window that count as thrashing.
    pub thrash_loads: usize,
    /// Engine load time (ms) above which a request counts as a cold load.
    pub cold_load_ms: f64,
    /// Recent TTFT this many times the node:model baseline is flagged.
    pub ttft_factor: f64,
    /// Connection failures in a row (no success between) after which herd
    /// calls a node's engine unreachable, whatever its agent reports.
    pub unreachable_after: usize,
    /// Free disk (bytes) below which a node's disk counts as low.
    pub disk_min_free_bytes: u64,
    /// Free disk (share of the total) below which a node's disk counts as low.
    pub disk_min_free_fraction: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            recent: 200,
            min_requests: 10,
            error_rate: 0.05,
            retry_rate: 0.3,
            thrash_loads: 3,
            cold_load_ms: 500.0,
            ttft_factor: 3.0,
            unreachable_after: 2,
            disk_min_free_bytes: 10 * 1024 * 1024 * 1024,
            disk_min_free_fraction: 0.05,
        }
    }
}

/// How much a finding matters; ordered, so the report lists the worst first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, nothing is failing (a paused node, a fallback in use).
    /// Costs the score 3.
    Info,
    /// Requests are slowed, retried or shed. Costs the score 10.
    Warning,
    /// Requests fail, or a node receives none. Costs the score 20.
    Critical,
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Which check fired, one of [`CHECK_IDS`].
    pub id: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// What it is about: `fleet`, `store`, a node id, or `node:model`.
    pub subject: String,
    /// One sentence for the operator, naming the node or model.
    pub message: String,
    /// The numbers behind it (rates, counts, thresholds), as JSON.
    pub evidence: Value,
    /// What to do about it.
    pub fix: &'static str,
}

/// Every check id herd knows, so an operator can see what is watched.
pub const CHECK_IDS: &[&str] = &[
    "no_nodes_online",
    "node_offline",
    "node_stale",
    "engine_unreachable",
    "node_unresponsive",
    "memory_pressure",
    "thermal_throttling",
    "disk_low",
    "node_paused",
    "node_draining",
    "version_mismatch",
    "model_thrashing",
    "model_load_timeout",
    "high_error_rate",
    "high_retry_rate",
    "client_disconnects",
    "incomplete_streams",
    "queue_backlog",
    "requests_shed",
    "fallback_in_use",
    "model_not_found",
    "context_overflow",
    "context_waste",
    "context_protection_active",
    "memory_idle_while_queued",
    "ttft_regression",
    "store_dropping",
];

/// What the health engine remembers of one request.
#[derive(Clone, Debug)]
struct Seen {
    node: Option<String>,
    model: String,
    status: TraceStatus,
    retries: u32,
    excluded: Vec<String>,
    fallback: bool,
    ttft_ms: Option<f64>,
    load_ms: Option<f64>,
    timeouts: u32,
    tokens: Option<u64>,
    no_candidates: bool,
    context_action: Option<String>,
    /// Nodes this request could not connect to.
    unreachable: Vec<String>,
    /// The store's dropped-records counter when this request ended.
    store_dropped: u64,
}

/// What the trail knows of a request beyond its trace record.
#[derive(Clone, Debug, Default)]
pub struct Attempts {
    /// Attempts that timed out waiting for the node's answer.
    pub timeouts: u32,
    /// Nodes whose engine refused or did not accept the connection.
    pub unreachable: Vec<String>,
    /// The store's dropped-records counter when the request ended.
    pub store_dropped: u64,
}

/// The recent-requests window.
#[derive(Debug, Default)]
pub struct Recent {
    cap: usize,
    seen: Mutex<VecDeque<Seen>>,
    /// Slow-moving TTFT baseline per node:model (an exponential average).
    baseline: Mutex<HashMap<(String, String), f64>>,
}

impl Recent {
    /// A window of the last `cap` requests (at least 1).
    pub fn new(cap: usize) -> Self {
        Recent {
            cap: cap.max(1),
            ..Default::default()
        }
    }

    /// Set a node:model's TTFT baseline (from a benchmark).
    pub fn set_baseline(&self, node: &str, model: &str, ttft_ms: f64) {
        self.baseline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                (node.to_string(), crate::request::normalize_model(model)),
                ttft_ms,
            );
    }

    pub(crate) fn push(&self, r: &TraceRecord, a: Attempts) {
        let model = crate::request::normalize_model(&r.model_served);
        let s = Seen {
            node: r.node.clone(),
            model: model.clone(),
            status: r.status,
            retries: r.retries,
            excluded: r.excluded.clone(),
            fallback: r.fallback_used,
            ttft_ms: r.ttft_ms,
            load_ms: r.load_ms,
            timeouts: a.timeouts,
            tokens: match (r.prompt_tokens, r.output_tokens) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            },
            no_candidates: r.node.is_none()
                && r.error
                    .as_deref()
                    .is_some_and(|e| e.contains("not") && e.contains("model")),
            context_action: r.context_action.clone(),
            unreachable: a.unreachable,
            store_dropped: a.store_dropped,
        };
        if let (Some(n), Some(t)) = (&r.node, r.ttft_ms)
            && r.load_ms.unwrap_or(0.0) < 500.0
        {
            let mut b = self.baseline.lock().unwrap_or_else(|p| p.into_inner());
            let e = b.entry((n.clone(), model)).or_insert(t);
            // Learns slowly, so a sudden slowdown stands out against it.
            *e += (t - *e) * 0.02;
        }
        let mut q = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() == self.cap {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// Whether the window holds its full `recent` requests.
    fn full(&self, w: &[Seen]) -> bool {
        w.len() >= self.cap
    }

    fn window(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// The report `GET /fleet/health` returns.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// 100 minus 20 per critical, 10 per warning, 3 per info; at least 0.
    pub score: u32,
    /// Every finding, worst first, then by id.
    pub checks: Vec<Check>,
    /// Every check id herd runs ([`CHECK_IDS`]), fired or not.
    pub watched: &'static [&'static str],
    /// Requests in the recent window the rates were computed over.
    pub window_requests: usize,
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Some(v[v.len() / 2])
}

/// Findings as the checks add them.
pub(super) struct Checks(Vec<Check>);

impl Checks {
    pub(super) fn add(
        &mut self,
        id: &'static str,
        severity: Severity,
        subject: &str,
        message: String,
        evidence: Value,
        fix: &'static str,
    ) {
        self.0.push(Check {
            id,
            severity,
            subject: subject.to_string(),
            message,
            evidence,
            fix,
        });
    }
}

/// Run every check: the fleet's state ([`fleet`]), its queues ([`queues`])
/// and the window of recent traffic ([`traffic`]).
pub fn evaluate(
    view: &FleetView,
    admission: &Admission,
    recent: &Recent,
    cfg: &HealthConfig,
    store_dropped: u64,
    report_interval_ms: u64,
    poll_interval_ms: u64,
    unresponsive: &[(crate::fleet::NodeId, std::time::Duration)],
) -> Report {
    let mut checks = Checks(Vec::new());
    let w = recent.window();
    fleet::check(
        view,
        &w,
        cfg,
        report_interval_ms,
        poll_interval_ms,
        &mut checks,
    );
    for (node, left) in unresponsive {
        checks.add(
            "node_unresponsive",
            Severity::Critical,
            node,
            format!(
                "node {node} sent nothing within its first-byte deadline; requests go elsewhere, and it is tried again in {} s",
                left.as_secs().max(1)
            ),
            serde_json::json!({"retry_in_s": left.as_secs().max(1)}),
            "check the node's Ollama (a runner may be stuck); restart it if it stays silent",
        );
    }
    queues::check(view, admission, &mut checks);
    traffic::check(view, recent, &w, cfg, store_dropped, &mut checks);
    let total = w.len();
    let mut out = checks.0;
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(b.id)));
    let penalty: u32 = out
        .iter()
        .map(|c| match c.severity {
            Severity::Critical => 20,
            Severity::Warning => 10,
            Severity::Info => 3,
        })
        .sum();
    Report {
        score: 100u32.saturating_sub(penalty),
        checks: out,
        watched: CHECK_IDS,
        window_requests: total,
    }
}

pub(super) const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A node's free disk share when it is low (unknown disks never are).
fn disk_low(n: &NodeState, cfg: &HealthConfig) -> Option<f64> {
    if n.disk_total_bytes == 0 {
        return None;
    }
    let free = n.disk_available_bytes as f64 / n.disk_total_bytes as f64;
    (n.disk_available_bytes < cfg.disk_min_free_bytes || free < cfg.disk_min_free_fraction)
        .then_some(free)
}

/// How many of the newest attempts on `node` failed to connect, counting
/// back to its last success.
fn failed_connects(w: &[Seen], node: &str) -> usize {
    let mut n = 0;
    for s in w.iter().rev() {
        if s.node.as_deref() == Some(node) && s.status.ok() {
            break;
        }
        n += s.unreachable.iter().filter(|u| *u == node).count();
    }
    n
}

/// The `num_ctx` to recommend for requests that used up to `max_tokens`:
/// 1.5× headroom, rounded up to a power of two, at least 2048.
pub fn recommended_num_ctx(max_tokens: f64) -> u32 {
    let want = (max_tokens * 1.5).max(2048.0) as u32;
    want.next_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Source;

    #[test]
    fn recommendation_has_headroom() {
        assert_eq!(recommended_num_ctx(100.0), 2048);
        assert_eq!(recommended_num_ctx(3000.0), 8192);
    }

    fn ids(r: &Report) -> Vec<(&str, &str)> {
        r.checks
            .iter()
            .map(|c| (c.id, c.subject.as_str()))
            .collect()
    }

    #[test]
    fn staleness_follows_each_source_s_own_beat() {
        let mut view = FleetView::default();
        for (id, source) in [
            ("polled", Source::Agentless),
            ("attached", Source::Attached),
        ] {
            let mut n = NodeState::new(id.into(), source, "http://127.0.0.1:1".into());
            n.seen(tokio::time::Instant::now() - std::time::Duration::from_secs(1));
            n.engine_reachable = true;
            view.insert(n);
        }
        let (adm, r, cfg) = (
            Admission::default(),
            Recent::new(10),
            HealthConfig::default(),
        );
        // Reports every 100 ms, polls every 5 s: only the attached node is late.
        let rep = evaluate(&view, &adm, &r, &cfg, 0, 100, 5_000, &[]);
        assert_eq!(ids(&rep), vec![("node_stale", "attached")]);
        let rep = evaluate(&view, &adm, &r, &cfg, 0, 1_000, 200, &[]);
        assert_eq!(ids(&rep), vec![("node_stale", "polled")]);
    }

    #[test]
    fn store_drops_count_over_the_window_and_clear() {
        let r = Recent::new(3);
        let t = crate::app::store::tests::trace("x", 0, &[]);
        let (view, adm, cfg) = (
            FleetView::default(),
            Admission::default(),
            HealthConfig::default(),
        );
        let seen = |dropped| Attempts {
            store_dropped: dropped,
            ..Default::default()
        };
        assert!(ids(&evaluate(&view, &adm, &r, &cfg, 0, 0, 0, &[])).is_empty());
        // Before the window fills, every drop since start counts.
        r.push(&t, seen(0));
        let rep = evaluate(&view, &adm, &r, &cfg, 2, 0, 0, &[]);
        assert_eq!(ids(&rep), vec![("store_dropping", "store")]);
        assert_eq!(rep.checks[0].evidence["dropped"], 2);
        for _ in 0..2 {
            r.push(&t, seen(2));
        }
        // Full window, oldest request saw 0 dropped: the 2 drops are inside it.
        assert_eq!(
            evaluate(&view, &adm, &r, &cfg, 2, 0, 0, &[]).checks.len(),
            1
        );
        // One more request without drops pushes them out.
        r.push(&t, seen(2));
        assert!(ids(&evaluate(&view, &adm, &r, &cfg, 2, 0, 0, &[])).is_empty());
        // New drops after the newest request still show.
        let rep = evaluate(&view, &adm, &r, &cfg, 5, 0, 0, &[]);
        assert_eq!(rep.checks[0].evidence["dropped"], 3);
    }

    #[test]
    fn refused_connections_count_back_to_the_last_success() {
        let r = Recent::new(10);
        let mut ok = crate::app::store::tests::trace("x", 0, &[]);
        ok.node = Some("a".into());
        let mut failed = ok.clone();
        failed.status = TraceStatus::Failed;
        let refused = || Attempts {
            unreachable: vec!["a".into()],
            ..Default::default()
        };
        r.push(&failed, refused());
        r.push(&ok, Attempts::default());
        r.push(&failed, refused());
        assert_eq!(failed_connects(&r.window(), "a"), 1);
        r.push(&failed, refused());
        assert_eq!(failed_connects(&r.window(), "a"), 2);
        assert_eq!(failed_connects(&r.window(), "b"), 0);
        r.push(&ok, Attempts::default());
        assert_eq!(failed_connects(&r.window(), "a"), 0);
    }

    #[test]
    fn disk_is_low_by_bytes_or_by_share_and_unknown_is_not() {
        let cfg = HealthConfig::default();
        let mut n = NodeState::new("a".into(), Source::Attached, "http://127.0.0.1:1".into());
        assert_eq!(disk_low(&n, &cfg), None);
        let gib = 1024 * 1024 * 1024;
        (n.disk_total_bytes, n.disk_available_bytes) = (1000 * gib, 100 * gib);
        assert_eq!(disk_low(&n, &cfg), None);
        n.disk_available_bytes = 40 * gib; // 4%
        assert_eq!(disk_low(&n, &cfg), Some(0.04));
        (n.disk_total_bytes, n.disk_available_bytes) = (100 * gib, 9 * gib); // 9%, under 10 GiB
        assert_eq!(disk_low(&n, &cfg), Some(0.09));
    }

    #[test]
    fn rate_checks_clear_when_good_traffic_replaces_bad() {
        let r = Recent::new(10);
        let mut t = crate::app::store::tests::trace("x", 0, &[]);
        let cfg = HealthConfig {
            min_requests: 5,
            ..Default::default()
        };
        t.status = TraceStatus::Failed;
        for _ in 0..5 {
            r.push(&t, Attempts::default());
        }
        let view = FleetView::default();
        let adm = Admission::default();
        let rep = evaluate(&view, &adm, &r, &cfg, 0, 0, 0, &[]);
        assert!(
            rep.checks.iter().any(|c| c.id == "high_error_rate"),
            "{:#?}",
            rep.checks
        );
        assert!(rep.score < 100);
        t.status = TraceStatus::Completed;
        for _ in 0..10 {
            r.push(&t, Attempts::default());
        }
        let rep = evaluate(&view, &adm, &r, &cfg, 0, 0, 0, &[]);
        assert!(!rep.checks.iter().any(|c| c.id == "high_error_rate"));
    }
}
