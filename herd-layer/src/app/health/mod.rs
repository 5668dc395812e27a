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

use crate::app::store::{TraceRecord, TraceStatus};
use crate::fleet::FleetView;
use crate::queueing::Admission;

pub(super) use crate::health::ratio;
pub use crate::health::{Check, Checks, HealthConfig, Report, Severity};

mod traffic;

/// Every check id herd knows, so an operator can see what is watched: the
/// fleet-state checks of the core ([`crate::health`]) and the traffic
/// checks here.
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

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    Some(v[v.len() / 2])
}

/// Run every check: the fleet's state and its queues
/// ([`crate::health::check_state`]) and the window of recent traffic
/// ([`traffic`]).
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
    let w = recent.window();
    let refused = |node: &str| failed_connects(&w, node);
    let mut checks = Checks::default();
    crate::health::check_state(
        view,
        &crate::health::StateInputs {
            admission,
            cfg,
            report_interval_ms,
            poll_interval_ms,
            unresponsive,
            refused: &refused,
        },
        &mut checks,
    );
    traffic::check(view, recent, &w, cfg, store_dropped, &mut checks);
    Report::new(checks, CHECK_IDS, w.len())
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
    use crate::fleet::{NodeState, Source};

    /// The full list repeats the core's state checks in report order: a
    /// state check added to the core must be listed here too.
    #[test]
    fn every_state_check_is_listed() {
        for id in crate::health::STATE_CHECK_IDS {
            assert!(CHECK_IDS.contains(id), "{id} is missing from CHECK_IDS");
        }
        let mut seen = std::collections::HashSet::new();
        assert!(CHECK_IDS.iter().all(|id| seen.insert(id)), "an id twice");
    }

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
