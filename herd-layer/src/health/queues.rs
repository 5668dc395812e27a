//! Checks on admission queues: backlogs, and memory idle while requests
//! wait elsewhere.

use serde_json::json;

use super::{Checks, Severity, ratio};
use crate::fleet::{FleetView, Mode};
use crate::queueing::Admission;

/// Adds the queue findings.
pub(super) fn check(view: &FleetView, admission: &Admission, c: &mut Checks) {
    // Queues.
    let queues = admission.snapshot();
    let waiting: u32 = queues.iter().map(|q| q.2.waiting).sum();
    for (node, model, load, slots) in &queues {
        if load.waiting > 0 && load.waiting >= (*slots).max(1) * 2 {
            c.add(
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
                c.add(
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
}
