//! Checks on the fleet's state: offline, stale, hot, short of memory or
//! disk, paused, unreachable engines, mixed versions.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Checks, GIB, Severity, StateInputs, disk_low};
use crate::fleet::{FleetView, Mode, Pressure, Source, Thermal};

/// Adds the fleet-state findings.
pub(super) fn check(view: &FleetView, i: &StateInputs<'_>, c: &mut Checks) {
    let cfg = i.cfg;
    // Fleet state.
    if !view.nodes.is_empty() && view.online().count() == 0 {
        c.add(
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
            c.add(
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
            Source::Attached => i.report_interval_ms,
            Source::Agentless => i.poll_interval_ms,
        };
        if interval_ms > 0 && silent_ms > interval_ms * 3 {
            c.add(
                "node_stale",
                Severity::Warning,
                id,
                format!("node {id} has not reported for {silent_ms} ms"),
                json!({"silent_ms": silent_ms, "interval_ms": interval_ms}),
                "the node may be sleeping or its network flaky; check herd-node's log",
            );
        }
        let refused = (i.refused)(id);
        if !n.engine_reachable || refused >= cfg.unreachable_after.max(1) {
            c.add(
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
            c.add(
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
            Pressure::Warn => c.add(
                "memory_pressure",
                Severity::Warning,
                id,
                format!("node {id} is under memory pressure"),
                json!({"pressure": "warn", "available_bytes": n.memory_available_bytes, "total_bytes": n.memory_total_bytes}),
                "unload models or lower OLLAMA_MAX_LOADED_MODELS on this node",
            ),
            Pressure::Critical => c.add(
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
            Thermal::Serious => c.add(
                "thermal_throttling",
                Severity::Warning,
                id,
                format!("node {id} is hot and throttling"),
                json!({"thermal": "serious"}),
                "improve cooling or move load away; herd already prefers cooler nodes",
            ),
            Thermal::Critical => c.add(
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
            c.add(
                "node_paused",
                Severity::Info,
                id,
                format!("node {id} is paused and takes no requests"),
                json!({"mode": "paused"}),
                "resume it with POST /fleet/nodes/{node}/command {\"type\":\"mode\",\"mode\":\"full\"}",
            );
        }
        if n.draining {
            c.add(
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
        c.add(
            "version_mismatch",
            Severity::Warning,
            "fleet",
            format!("nodes run {} different Ollama versions", versions.len()),
            json!({"versions": versions}),
            "upgrade every node to the same Ollama version",
        );
    }
}
