//! The sampler: one task per hub that turns the state the router already
//! holds into events — a node's state when it changed, queue depths,
//! learned speeds, auto-pulls, health, counters.
//!
//! It runs once for all tabs (a tab never reads the fleet, the queues or
//! the store itself), on a fixed beat, and publishes only what changed, so
//! an idle fleet sends almost nothing and a thousand tabs cost what one
//! does. It reads the fleet through its watch channel and everything else
//! through the same shared handles the routing stack uses ([`Live`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::hub::Hub;
use crate::fleet::{Fleet, FleetView, NodeId, NodeState};
use crate::live::Live;

/// The beat: queue depths are read this often.
const TICK: Duration = Duration::from_millis(500);
/// Fleet changes closer together than this are sent as one.
const COALESCE: Duration = Duration::from_millis(250);

/// What only the shape running the dashboard knows.
pub trait Sources: Send + Sync + 'static {
    /// The health report now, as JSON.
    fn health(&self) -> Value;
    /// Anything else about the fleet (the proxy: nodes seen over mDNS that
    /// did not attach, and why), as JSON; `null` when there is nothing.
    fn extras(&self) -> Value {
        Value::Null
    }
}

fn bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// A node as the dashboard shows it: its state without the report counter
/// (which changes on every report and would make every report an event).
pub fn node_json(n: &NodeState) -> Bytes {
    let mut v = serde_json::to_value(n).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("reports");
    }
    bytes(&v)
}

/// Queue depths per node:model, sorted.
pub fn queues_json(live: &Live) -> Value {
    let mut q = live.admission.snapshot();
    q.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Value::Array(
        q.into_iter()
            .map(|(node, model, load, slots)| {
                json!({"node": &*node, "model": model, "in_flight": load.in_flight, "waiting": load.waiting, "slots": slots})
            })
            .collect(),
    )
}

/// Publishes what changed, until the hub closes.
pub async fn run(hub: Hub, fleet: Fleet, live: Live, sources: Arc<dyn Sources>) {
    let mut rx = fleet.subscribe();
    let mut closed = hub.closed();
    let mut seen: HashMap<NodeId, (Arc<NodeState>, Bytes)> = HashMap::new();
    nodes(&hub, &rx.borrow_and_update().clone(), &mut seen);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat: u64 = 0;
    let mut rate = Rate::new(hub.counters());
    loop {
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    break;
                }
                tokio::time::sleep(COALESCE).await;
                let view = rx.borrow_and_update().clone();
                nodes(&hub, &view, &mut seen);
            }
            _ = tick.tick() => {
                hub.state_event("queues", bytes(&queues_json(&live)));
                if beat.is_multiple_of(2) {
                    let pulls = live.autopull.as_ref().map(|a| a.statuses()).unwrap_or_default();
                    hub.state_event("pulls", bytes(&json!(pulls)));
                }
                if beat.is_multiple_of(4) {
                    hub.state_event("health", bytes(&sources.health()));
                    hub.state_event("extras", bytes(&sources.extras()));
                    hub.state_event("stats", bytes(&rate.sample(hub.counters())));
                }
                if beat.is_multiple_of(10) {
                    let perf = json!({"series": live.history.summaries(), "cold_loads": hub.cold_loads()});
                    hub.state_event("perf", bytes(&perf));
                }
                beat += 1;
            }
            () = until_closed(&mut closed) => break,
        }
    }
}

async fn until_closed(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|c| *c).await;
}

/// Publish the nodes whose state changed, and those that left.
fn nodes(hub: &Hub, view: &FleetView, seen: &mut HashMap<NodeId, (Arc<NodeState>, Bytes)>) {
    for (id, n) in &view.nodes {
        if let Some((prev, _)) = seen.get(id)
            && Arc::ptr_eq(prev, n)
        {
            continue;
        }
        let json = node_json(n);
        let changed = seen.get(id).is_none_or(|(_, b)| *b != json);
        seen.insert(id.clone(), (n.clone(), json.clone()));
        if changed {
            hub.node(id.clone(), json);
        }
    }
    let gone: Vec<NodeId> = seen
        .keys()
        .filter(|id| !view.nodes.contains_key(*id))
        .cloned()
        .collect();
    for id in gone {
        seen.remove(&id);
        hub.node_gone(&id);
    }
}

/// Requests per second between two samples of the counters.
struct Rate {
    last: super::hub::Counters,
    at: tokio::time::Instant,
}

impl Rate {
    fn new(c: super::hub::Counters) -> Self {
        Rate {
            last: c,
            at: tokio::time::Instant::now(),
        }
    }

    fn sample(&mut self, c: super::hub::Counters) -> Value {
        let now = tokio::time::Instant::now();
        let secs = now.duration_since(self.at).as_secs_f64().max(0.001);
        let per_s = |a: u64, b: u64| ((a.saturating_sub(b)) as f64 / secs * 10.0).round() / 10.0;
        let v = json!({
            "decisions": c.decisions,
            "shown": c.shown,
            "finished": c.finished,
            "errors": c.errors,
            "requests_per_s": per_s(c.decisions, self.last.decisions),
            "errors_per_s": per_s(c.errors, self.last.errors),
            "subscribers": c.subscribers,
            "dropped": c.dropped,
        });
        self.last = c;
        self.at = now;
        v
    }
}
