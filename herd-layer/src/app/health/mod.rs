//! Fleet health: named checks over the fleet view and a window of recent
//! requests, each with a severity, a message, its evidence (numbers) and a
//! fix, plus one score.
//!
//! Rates are computed over the last `health.recent` requests (not a clock
//! window), so a check clears as soon as enough good traffic replaces the bad
//! — and tests can drive it without waiting. Fleet-state checks (offline,
//! hot, paused, …) clear as soon as the state does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::fleet::{FleetView, Mode, NodeState, Pressure, Source, Thermal};
use crate::queueing::Admission;
use crate::app::store::{TraceRecord, TraceStatus};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub severity: Severity,
    pub subject: String,
    pub message: String,
    pub evidence: Value,
    pub fix: &'static str,
}

/// Every check id herd knows, so an operator can see what is watched.
pub const CHECK_IDS: &[&str] = &[
    "no_nodes_online",
    "node_offline",
    "node_stale",
    "engine_unreachable",
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
    pub checks: Vec<Check>,
    pub watched: &'static [&'static str],
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

/// Run every check.
pub fn evaluate(
    view: &FleetView,
    admission: &Admission,
    recent: &Recent,
    cfg: &HealthConfig,
    store_dropped: u64,
    report_interval_ms: u64,
    poll_interval_ms: u64,
) -> Report {
    let mut out = Vec::new();
    let mut add = |id, severity, subject: &str, message: String, evidence: Value, fix| {
        out.push(Check {
            id,
            severity,
            subject: subject.to_string(),
            message,
            evidence,
            fix,
        })
    };
    let w = recent.window();

    // Fleet state.
    if !view.nodes.is_empty() && view.online().count() == 0 {
        add(
            "no_nodes_online",
            Severity::Critical,
            "fleet",
            "no node is online; every request fails".into(),
            json!({"nodes": view.nodes.len()}),
            "start Ollama and herd-node on at least one machine, or check the network",
        );
    }
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in view.nodes.values() {
        let id = &*n.id;
        let silent_ms = n.last_seen.elapsed().as_millis() as u64;
        if !n.online {
            add(
                "node_offline",
                Severity::Critical,
                id,
                format!(
                    "node {id} is offline: {}",
                    n.offline_reason.as_deref().unwrap_or("unknown")
                ),
                json!({"silent_ms": silent_ms}),
                "check that the machine is awake and herd-node / Ollama run on it",
            );
            continue;
        }
        // Agentless nodes are polled, attached ones report: each has its own beat.
        let interval_ms = match n.source {
            Source::Attached => report_interval_ms,
            Source::Agentless => poll_interval_ms,
        };
        if interval_ms > 0 && silent_ms > interval_ms * 3 {
            add(
                "node_stale",
                Severity::Warning,
                id,
                format!("node {id} has not reported for {silent_ms} ms"),
                json!({"silent_ms": silent_ms, "interval_ms": interval_ms}),
                "the node may be sleeping or its network flaky; check herd-node's log",
            );
        }
        let refused = failed_connects(&w, id);
        if !n.engine_reachable || refused >= cfg.unreachable_after.max(1) {
            add(
                "engine_unreachable",
                Severity::Critical,
                id,
                if n.engine_reachable {
                    format!("herd could not connect to node {id}'s engine {refused} times in a row")
                } else {
                    format!("node {id} reports that its engine does not answer")
                },
                json!({"url": n.url, "reported_by_node": !n.engine_reachable, "failed_connects": refused}),
                "restart Ollama on the node, and check that it listens on the address herd uses",
            );
        }
        if let Some(free) = disk_low(n, cfg) {
            add(
                "disk_low",
                if free < cfg.disk_min_free_fraction / 5.0 {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                id,
                format!(
                    "node {id} has {:.1} GiB of disk free ({:.0}%)",
                    n.disk_available_bytes as f64 / GIB,
                    free * 100.0
                ),
                json!({"available_bytes": n.disk_available_bytes, "total_bytes": n.disk_total_bytes, "free_fraction": free}),
                "delete models the node no longer needs (ollama rm) or free disk space; pulls fail on a full disk",
            );
        }
        match n.memory_pressure {
            Pressure::Warn => add(
                "memory_pressure",
                Severity::Warning,
                id,
                format!("node {id} is under memory pressure"),
                json!({"pressure": "warn", "available_bytes": n.memory_available_bytes, "total_bytes": n.memory_total_bytes}),
                "unload models or lower OLLAMA_MAX_LOADED_MODELS on this node",
            ),
            Pressure::Critical => add(
                "memory_pressure",
                Severity::Critical,
                id,
                format!("node {id} is critically short of memory; it receives no requests"),
                json!({"pressure": "critical", "available_bytes": n.memory_available_bytes, "total_bytes": n.memory_total_bytes}),
                "close other applications or unload models on this node",
            ),
            _ => {}
        }
        match n.thermal {
            Thermal::Serious => add(
                "thermal_throttling",
                Severity::Warning,
                id,
                format!("node {id} is hot and throttling"),
                json!({"thermal": "serious"}),
                "improve cooling or move load away; herd already prefers cooler nodes",
            ),
            Thermal::Critical => add(
                "thermal_throttling",
                Severity::Critical,
                id,
                format!("node {id} is critically hot; it receives no requests"),
                json!({"thermal": "critical"}),
                "let the machine cool down; check its fans and vents",
            ),
            _ => {}
        }
        if n.mode == Mode::Paused {
            add(
                "node_paused",
                Severity::Info,
                id,
                format!("node {id} is paused and takes no requests"),
                json!({"mode": "paused"}),
                "resume it with POST /fleet/nodes/{node}/command {\"type\":\"mode\",\"mode\":\"full\"}",
            );
        }
        if n.draining {
            add(
                "node_draining",
                Severity::Info,
                id,
                format!("node {id} is draining"),
                json!({"draining": true}),
                "wait for in-flight requests to end, or undo the drain",
            );
        }
        if !n.engine_version.is_empty() {
            versions
                .entry(n.engine_version.clone())
                .or_default()
                .push(id.to_string());
        }
    }
    if versions.len() > 1 {
        add(
            "version_mismatch",
            Severity::Warning,
            "fleet",
            format!("nodes run {} different Ollama versions", versions.len()),
            json!({"versions": versions}),
            "upgrade every node to the same Ollama version",
        );
    }

    // Queues.
    let queues = admission.snapshot();
    let waiting: u32 = queues.iter().map(|q| q.2.waiting).sum();
    for (node, model, load, slots) in &queues {
        if load.waiting > 0 && load.waiting >= (*slots).max(1) * 2 {
            add(
                "queue_backlog",
                Severity::Warning,
                &format!("{node}:{model}"),
                format!("{} requests wait for {model} on {node}", load.waiting),
                json!({"waiting": load.waiting, "in_flight": load.in_flight, "slots": slots}),
                "load the model on another node or raise OLLAMA_NUM_PARALLEL",
            );
        }
    }
    if waiting > 0 {
        for n in view.online() {
            let loaded = n.loaded.len();
            let free = ratio(
                n.memory_available_bytes as usize,
                n.memory_total_bytes.max(1) as usize,
            );
            let busy = queues
                .iter()
                .any(|q| q.0 == n.id && (q.2.in_flight > 0 || q.2.waiting > 0));
            if !busy && free > 0.5 && loaded <= 2 && !n.draining && n.mode != Mode::Paused {
                add(
                    "memory_idle_while_queued",
                    Severity::Info,
                    &n.id,
                    format!(
                        "node {} has {:.0}% memory free and is idle while {waiting} requests wait elsewhere",
                        n.id,
                        free * 100.0
                    ),
                    json!({"free_fraction": free, "loaded_models": loaded, "waiting_elsewhere": waiting}),
                    "pull or warm the queued models on this node (POST /fleet/nodes/{node}/command)",
                );
            }
        }
    }

    // Traffic.
    let total = w.len();
    if total >= cfg.min_requests {
        let mut per_node: BTreeMap<String, (usize, usize, usize, usize)> = BTreeMap::new(); // (attempts, errors, cold, timeouts)
        for s in &w {
            if let Some(n) = &s.node {
                let e = per_node.entry(n.clone()).or_default();
                e.0 += 1;
                if !s.status.ok()
                    && matches!(s.status, TraceStatus::Failed | TraceStatus::Incomplete)
                {
                    e.1 += 1;
                }
                if s.load_ms.unwrap_or(0.0) >= cfg.cold_load_ms {
                    e.2 += 1;
                }
                e.3 += s.timeouts as usize;
            }
            for x in &s.excluded {
                let e = per_node.entry(x.clone()).or_default();
                e.0 += 1;
                e.1 += 1;
            }
        }
        for (node, (n, err, cold, timeouts)) in &per_node {
            let rate = ratio(*err, *n);
            if *n >= 1 && rate >= cfg.error_rate {
                add(
                    "high_error_rate",
                    if rate >= 0.25 {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    },
                    node,
                    format!("{:.0}% of attempts on node {node} failed", rate * 100.0),
                    json!({"attempts": n, "errors": err, "rate": rate}),
                    "check the node's Ollama log; herd retries elsewhere meanwhile",
                );
            }
            if *cold >= cfg.thrash_loads {
                add(
                    "model_thrashing",
                    Severity::Warning,
                    node,
                    format!(
                        "node {node} cold-loaded models {cold} times in the last {total} requests"
                    ),
                    json!({"cold_loads": cold, "window": total}),
                    "give the node fewer models or more memory; raise OLLAMA_MAX_LOADED_MODELS if memory allows",
                );
            }
            if *timeouts >= 2 {
                add(
                    "model_load_timeout",
                    Severity::Warning,
                    node,
                    format!("requests to node {node} timed out {timeouts} times"),
                    json!({"timeouts": timeouts}),
                    "the model may be too large to load in time; raise response_timeout or use a smaller model",
                );
            }
        }
        let retries: u32 = w.iter().map(|s| s.retries).sum();
        let rr = f64::from(retries) / total as f64;
        if rr >= cfg.retry_rate {
            add(
                "high_retry_rate",
                if rr >= 0.5 {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                "fleet",
                format!("{rr:.2} retries per request"),
                json!({"retries": retries, "requests": total}),
                "find the failing node in high_error_rate and fix or drain it",
            );
        }
        let count = |f: &dyn Fn(&Seen) -> bool| w.iter().filter(|s| f(s)).count();
        let disc = count(&|s| s.status == TraceStatus::ClientDisconnected);
        if disc >= 3 {
            add(
                "client_disconnects",
                if ratio(disc, total) > 0.01 {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                "fleet",
                format!("{disc} clients went away before their answer ended"),
                json!({"disconnects": disc, "requests": total}),
                "clients may time out too early; check their timeouts against the time to first token",
            );
        }
        let inc = count(&|s| s.status == TraceStatus::Incomplete);
        if inc >= 2 {
            add(
                "incomplete_streams",
                if ratio(inc, total) > 0.005 {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                "fleet",
                format!("{inc} streams ended before the model finished"),
                json!({"incomplete": inc, "requests": total}),
                "check the nodes' stability (crashes, out-of-memory kills)",
            );
        }
        let shed = count(&|s| s.status == TraceStatus::Shed);
        if shed > 0 {
            add(
                "requests_shed",
                Severity::Warning,
                "fleet",
                format!("{shed} requests were shed (429/503)"),
                json!({"shed": shed, "requests": total}),
                "add capacity for the busy models, or raise queue.max_waiting",
            );
        }
        let fb = count(&|s| s.fallback);
        if fb > 0 {
            add(
                "fallback_in_use",
                Severity::Info,
                "fleet",
                format!("{fb} requests were served by a fallback model"),
                json!({"fallbacks": fb, "requests": total}),
                "make the requested model available, or accept the fallback",
            );
        }
        let nf = count(&|s| s.no_candidates);
        if nf > 0 {
            add(
                "model_not_found",
                Severity::Warning,
                "fleet",
                format!("{nf} requests asked for a model no node can serve"),
                json!({"requests": nf}),
                "pull the model on a node (POST /api/pull) or fix the client's model name",
            );
        }
        let cp = count(&|s| s.context_action.as_deref() == Some("stripped"));
        if cp > 0 {
            add(
                "context_protection_active",
                Severity::Info,
                "fleet",
                format!("{cp} requests had num_ctx removed to avoid a model reload"),
                json!({"stripped": cp}),
                "clients can stop sending num_ctx; set context.protection = \"passthrough\" to disable",
            );
        }
        let over = count(&|s| s.context_action.as_deref() == Some("too_large"));
        if over > 0 {
            add(
                "context_overflow",
                Severity::Warning,
                "fleet",
                format!("{over} requests asked for more context than the loaded model has"),
                json!({"requests": over}),
                "load the model with a larger context (OLLAMA_CONTEXT_LENGTH) on a node",
            );
        }
        // Context waste and TTFT regressions, per node:model.
        let mut by_nm: BTreeMap<(String, String), Vec<&Seen>> = BTreeMap::new();
        for s in &w {
            if let Some(n) = &s.node {
                by_nm
                    .entry((n.clone(), s.model.clone()))
                    .or_default()
                    .push(s);
            }
        }
        let baseline = recent
            .baseline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for ((node, model), ss) in &by_nm {
            if let Some(ctx) = view
                .node(node)
                .and_then(|n| n.loaded_model(model))
                .map(|m| m.context_length)
                && ctx > 0
                && ss.len() >= cfg.min_requests
            {
                let mut t: Vec<f64> = ss
                    .iter()
                    .filter_map(|s| s.tokens)
                    .map(|t| t as f64)
                    .collect();
                t.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                if let Some(p99) = t.get(((t.len() as f64) * 0.99) as usize).or(t.last())
                    && f64::from(ctx) > 4.0 * p99.max(1.0)
                {
                    add(
                        "context_waste",
                        Severity::Info,
                        &format!("{node}:{model}"),
                        format!(
                            "{model} on {node} holds {ctx} tokens of context but requests use at most {p99:.0}"
                        ),
                        json!({"context_length": ctx, "p99_tokens": p99, "recommended_num_ctx": recommended_num_ctx(*p99)}),
                        "load the model with a smaller context (OLLAMA_CONTEXT_LENGTH) to free memory",
                    );
                }
            }
            let mut recent_ttft: Vec<f64> = ss
                .iter()
                .rev()
                .take(5)
                .filter(|s| s.load_ms.unwrap_or(0.0) < cfg.cold_load_ms)
                .filter_map(|s| s.ttft_ms)
                .collect();
            if recent_ttft.len() >= 3
                && let (Some(m), Some(b)) = (
                    median(&mut recent_ttft),
                    baseline.get(&(node.clone(), model.clone())),
                )
                && *b > 0.0
                && m > cfg.ttft_factor * b
            {
                add(
                    "ttft_regression",
                    Severity::Warning,
                    &format!("{node}:{model}"),
                    format!(
                        "time to first token of {model} on {node} is {:.1}× its baseline",
                        m / b
                    ),
                    json!({"recent_ttft_ms": m, "baseline_ttft_ms": b}),
                    "the node may be throttling, swapping or busy with other work; check its sensors",
                );
            }
        }
    }
    // Drops while the window's requests ended (since start until it fills),
    // so the check clears once a window's worth of records were all kept.
    let since = if recent.full(&w) {
        w.first().map_or(0, |s| s.store_dropped)
    } else {
        0
    };
    let dropped = store_dropped.saturating_sub(since);
    if dropped > 0 {
        add(
            "store_dropping",
            Severity::Warning,
            "store",
            format!("the store dropped {dropped} records it could not write in time"),
            json!({"dropped": dropped, "dropped_total": store_dropped, "window": total}),
            "the disk may be slow or full; check the data directory",
        );
    }
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

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

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
            view.nodes.insert(id.into(), n);
        }
        let (adm, r, cfg) = (
            Admission::default(),
            Recent::new(10),
            HealthConfig::default(),
        );
        // Reports every 100 ms, polls every 5 s: only the attached node is late.
        let rep = evaluate(&view, &adm, &r, &cfg, 0, 100, 5_000);
        assert_eq!(ids(&rep), vec![("node_stale", "attached")]);
        let rep = evaluate(&view, &adm, &r, &cfg, 0, 1_000, 200);
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
        assert!(ids(&evaluate(&view, &adm, &r, &cfg, 0, 0, 0)).is_empty());
        // Before the window fills, every drop since start counts.
        r.push(&t, seen(0));
        let rep = evaluate(&view, &adm, &r, &cfg, 2, 0, 0);
        assert_eq!(ids(&rep), vec![("store_dropping", "store")]);
        assert_eq!(rep.checks[0].evidence["dropped"], 2);
        for _ in 0..2 {
            r.push(&t, seen(2));
        }
        // Full window, oldest request saw 0 dropped: the 2 drops are inside it.
        assert_eq!(evaluate(&view, &adm, &r, &cfg, 2, 0, 0).checks.len(), 1);
        // One more request without drops pushes them out.
        r.push(&t, seen(2));
        assert!(ids(&evaluate(&view, &adm, &r, &cfg, 2, 0, 0)).is_empty());
        // New drops after the newest request still show.
        let rep = evaluate(&view, &adm, &r, &cfg, 5, 0, 0);
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
        let rep = evaluate(&view, &adm, &r, &cfg, 0, 0, 0);
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
        let rep = evaluate(&view, &adm, &r, &cfg, 0, 0, 0);
        assert!(!rep.checks.iter().any(|c| c.id == "high_error_rate"));
    }
}
