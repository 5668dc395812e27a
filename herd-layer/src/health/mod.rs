//! Health checks that read only the fleet's state and its queues: offline,
//! stale, hot, short of memory or disk, paused, draining, unreachable or
//! silent engines, mixed versions, backlogs, memory idle while requests wait.
//!
//! They live in the core, not the app, because both shapes of herd answer
//! them: the proxy adds the checks over its window of recent requests
//! (`app::health`), herd-epp shows these alone on its dashboard. Each
//! finding carries a severity, a sentence naming the node or model, its
//! evidence (numbers) and a fix; the score is 100 minus a fixed cost per
//! finding.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fleet::{FleetView, NodeId, NodeState};
use crate::queueing::Admission;

mod fleet;
mod queues;

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
    /// Which check fired.
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

/// The ids of the checks in this module, in the order a report lists them
/// when nothing else ranks them.
pub const STATE_CHECK_IDS: &[&str] = &[
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
    "queue_backlog",
    "memory_idle_while_queued",
];

/// Findings as the checks add them.
#[derive(Debug, Default)]
pub struct Checks(pub Vec<Check>);

impl Checks {
    /// Add one finding.
    pub fn add(
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

/// A health report: what `GET /fleet/health` returns.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// 100 minus 20 per critical, 10 per warning, 3 per info; at least 0.
    pub score: u32,
    /// Every finding, worst first, then by id.
    pub checks: Vec<Check>,
    /// Every check id this report ran, fired or not.
    pub watched: &'static [&'static str],
    /// Requests in the recent window the rates were computed over (0 where
    /// no window is kept, as in herd-epp).
    pub window_requests: usize,
}

impl Report {
    /// Sort the findings worst first and compute the score.
    pub fn new(checks: Checks, watched: &'static [&'static str], window_requests: usize) -> Self {
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
            watched,
            window_requests,
        }
    }
}

/// What the state checks read besides the fleet view.
#[derive(Clone, Copy)]
pub struct StateInputs<'a> {
    /// The admission queues.
    pub admission: &'a Admission,
    /// Thresholds.
    pub cfg: &'a HealthConfig,
    /// How often attached nodes report, ms.
    pub report_interval_ms: u64,
    /// How often agentless nodes are polled, ms.
    pub poll_interval_ms: u64,
    /// Nodes out of routing for going silent, and for how much longer.
    pub unresponsive: &'a [(NodeId, std::time::Duration)],
    /// Connection failures in a row herd itself saw per node (0 where no
    /// window of requests is kept).
    pub refused: &'a dyn Fn(&str) -> usize,
}

/// Add every state finding: the fleet's ([`fleet`]) and the queues'
/// ([`queues`]).
pub fn check_state(view: &FleetView, i: &StateInputs<'_>, c: &mut Checks) {
    fleet::check(view, i, c);
    for (node, left) in i.unresponsive {
        c.add(
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
    queues::check(view, i.admission, c);
}

/// The state checks alone, as a report (herd-epp keeps no request window).
pub fn state_report(view: &FleetView, i: &StateInputs<'_>) -> Report {
    let mut c = Checks::default();
    check_state(view, i, &mut c);
    Report::new(c, STATE_CHECK_IDS, 0)
}

/// Bytes in a GiB.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A node's free disk share when it is low (unknown disks never are).
pub fn disk_low(n: &NodeState, cfg: &HealthConfig) -> Option<f64> {
    if n.disk_total_bytes == 0 {
        return None;
    }
    let free = n.disk_available_bytes as f64 / n.disk_total_bytes as f64;
    (n.disk_available_bytes < cfg.disk_min_free_bytes || free < cfg.disk_min_free_fraction)
        .then_some(free)
}

/// `n / d`, 0 when `d` is 0.
pub fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Source;

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
    fn a_state_report_scores_and_orders_what_fired() {
        let mut view = FleetView::default();
        let mut hot = NodeState::new("hot".into(), Source::Attached, "http://127.0.0.1:1".into());
        hot.online = true;
        hot.engine_reachable = true;
        hot.thermal = crate::fleet::Thermal::Serious;
        hot.mode = crate::fleet::Mode::Paused;
        view.insert(hot);
        let mut gone = NodeState::new("gone".into(), Source::Attached, "http://127.0.0.1:2".into());
        gone.mark_offline("attachment closed");
        view.insert(gone);
        let adm = Admission::default();
        let cfg = HealthConfig::default();
        let rep = state_report(
            &view,
            &StateInputs {
                admission: &adm,
                cfg: &cfg,
                report_interval_ms: 0,
                poll_interval_ms: 0,
                unresponsive: &[],
                refused: &|_| 0,
            },
        );
        let ids: Vec<_> = rep
            .checks
            .iter()
            .map(|c| (c.id, c.subject.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("node_offline", "gone"),
                ("thermal_throttling", "hot"),
                ("node_paused", "hot"),
            ]
        );
        assert_eq!(rep.score, 100 - 20 - 10 - 3);
        assert_eq!(rep.window_requests, 0);
    }
}
