//! Checks on the window of recent requests: error, timeout, cold-load and
//! shed rates, context waste, TTFT regressions, store drops.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Checks, HealthConfig, Recent, Seen, Severity, median, ratio, recommended_num_ctx};
use crate::app::store::TraceStatus;
use crate::fleet::FleetView;

/// Adds the traffic findings.
pub(super) fn check(
    view: &FleetView,
    recent: &Recent,
    w: &[Seen],
    cfg: &HealthConfig,
    store_dropped: u64,
    c: &mut Checks,
) {
    // Traffic.
    let total = w.len();
    if total >= cfg.min_requests {
        let mut per_node: BTreeMap<String, (usize, usize, usize, usize)> = BTreeMap::new(); // (attempts, errors, cold, timeouts)
        for s in w {
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
                c.add(
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
                c.add(
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
                c.add(
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
            c.add(
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
            c.add(
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
            c.add(
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
            c.add(
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
            c.add(
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
            c.add(
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
            c.add(
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
            c.add(
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
        for s in w {
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
                    c.add(
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
                c.add(
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
    let since = if recent.full(w) {
        w.first().map_or(0, |s| s.store_dropped)
    } else {
        0
    };
    let dropped = store_dropped.saturating_sub(since);
    if dropped > 0 {
        c.add(
            "store_dropping",
            Severity::Warning,
            "store",
            format!("the store dropped {dropped} records it could not write in time"),
            json!({"dropped": dropped, "dropped_total": store_dropped, "window": total}),
            "the disk may be slow or full; check the data directory",
        );
    }
}
