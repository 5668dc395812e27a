use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::fleet::NodeId;
use crate::rank::Load;

/// Admission tunables.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Requests that may wait for a slot on one node:model before new ones are shed (429).
    pub max_waiting: u32,
    /// How long a request may wait for a slot before it is shed (503).
    #[serde(with = "crate::duration")]
    pub max_wait: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_waiting: 64,
            max_wait: Duration::from_secs(120),
        }
    }
}

/// The node:model queue is full.
#[derive(Debug, thiserror::Error)]
#[error("{node} is busy with {model:?}: {waiting} requests already waiting")]
pub struct Shed {
    /// The node whose queue is full.
    pub node: NodeId,
    /// The model.
    pub model: String,
    /// Requests already waiting there.
    pub waiting: u32,
    /// When a retry may find room.
    pub retry_after: Duration,
}

/// A request waited for a slot longer than allowed.
#[derive(Debug, thiserror::Error)]
#[error("waited {waited:?} for a slot on {node} ({model:?})")]
pub struct QueueTimeout {
    /// The node waited for.
    pub node: NodeId,
    /// The model.
    pub model: String,
    /// How long the request waited.
    pub waited: Duration,
    /// When a retry may find room.
    pub retry_after: Duration,
}

/// The node stopped answering while the request waited for its slot; it
/// goes elsewhere (the retry layer excludes the node and scores again).
#[derive(Debug, thiserror::Error)]
#[error("{node} stopped answering while this request waited for it")]
pub struct Evicted {
    /// The node.
    pub node: NodeId,
    /// The model.
    pub model: String,
}

#[derive(Debug)]
struct GateState {
    in_flight: u32,
    limit: u32,
    next_ticket: u64,
    /// Each waiter is sent the requests in flight once it holds its slot
    /// (itself included).
    waiters: VecDeque<(u64, oneshot::Sender<u32>)>,
    /// Running mean of how long a slot is held, ms (for Retry-After).
    mean_hold_ms: f64,
}

/// One node:model: a resizable, FIFO, bounded semaphore.
#[derive(Debug)]
struct Gate {
    state: Mutex<GateState>,
}

impl Gate {
    fn new(limit: u32) -> Self {
        Gate {
            state: Mutex::new(GateState {
                in_flight: 0,
                limit: limit.max(1),
                next_ticket: 0,
                waiters: VecDeque::new(),
                mean_hold_ms: 0.0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hand free slots to waiters, oldest first.
    fn wake(state: &mut GateState) {
        while state.in_flight < state.limit {
            let Some((_, tx)) = state.waiters.pop_front() else {
                break;
            };
            if tx.send(state.in_flight + 1).is_ok() {
                state.in_flight += 1;
            }
        }
    }

    fn release(&self, held: Duration) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        let ms = held.as_secs_f64() * 1000.0;
        s.mean_hold_ms = if s.mean_hold_ms == 0.0 {
            ms
        } else {
            s.mean_hold_ms * 0.9 + ms * 0.1
        };
        Gate::wake(&mut s);
    }

    fn retry_after(s: &GateState) -> Duration {
        let per_slot = if s.mean_hold_ms > 0.0 {
            s.mean_hold_ms
        } else {
            5_000.0
        };
        let ahead = s.waiters.len() as f64 + 1.0;
        let secs = (ahead * per_slot / s.limit as f64 / 1000.0).ceil();
        Duration::from_secs(secs.clamp(1.0, 300.0) as u64)
    }
}

/// All node:model gates. Cheap to clone; clones share the gates.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// node → model (normalised) → gate; looked up by `&str` without allocating.
    gates: Arc<Mutex<HashMap<NodeId, HashMap<String, Arc<Gate>>>>>,
}

impl Admission {
    /// No slot taken anywhere.
    pub fn new() -> Self {
        Self::default()
    }

    fn gate(&self, node: &NodeId, model: &str, limit: u32) -> Arc<Gate> {
        let model = crate::request::normalized(model);
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        let per_node = match gates.get_mut(&**node) {
            Some(m) => m,
            None => gates.entry(node.clone()).or_default(),
        };
        let gate = match per_node.get(&*model) {
            Some(g) => g.clone(),
            None => per_node
                .entry(model.into_owned())
                .or_insert_with(|| Arc::new(Gate::new(limit)))
                .clone(),
        };
        drop(gates);
        let mut s = gate.lock();
        if s.limit != limit.max(1) {
            s.limit = limit.max(1);
            Gate::wake(&mut s);
        }
        drop(s);
        gate
    }

    /// Send everyone waiting for a slot on `node` elsewhere now (it went
    /// silent; its slots may not free up for a long time).
    pub fn evict_waiters(&self, node: &str) {
        let gates: Vec<Arc<Gate>> = {
            let g = self.gates.lock().unwrap_or_else(|p| p.into_inner());
            g.get(node)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        };
        for gate in gates {
            // Dropping the senders wakes the waiters with "gone".
            gate.lock().waiters.clear();
        }
    }

    /// Drop these nodes' idle gates (they left the fleet); a gate with a
    /// request in flight or waiting stays until it is idle.
    pub fn forget(&self, nodes: &[NodeId]) {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        for n in nodes {
            if let Some(per) = gates.get_mut(&**n) {
                per.retain(|_, g| {
                    let s = g.lock();
                    s.in_flight > 0 || !s.waiters.is_empty()
                });
                if per.is_empty() {
                    gates.remove(&**n);
                }
            }
        }
    }

    /// Current load on a node:model.
    pub fn load(&self, node: &str, model: &str) -> Load {
        let model = crate::request::normalized(model);
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        let found = gates.get(node).and_then(|m| m.get(&*model)).cloned();
        drop(gates);
        match found {
            Some(g) => {
                let s = g.lock();
                Load {
                    in_flight: s.in_flight,
                    waiting: s.waiters.len() as u32,
                }
            }
            None => Load::default(),
        }
    }

    /// Load on every node:model with any activity.
    pub fn snapshot(&self) -> Vec<(NodeId, String, Load, u32)> {
        let gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = gates
            .iter()
            .flat_map(|(n, per)| per.iter().map(move |(m, g)| ((n, m), g)))
            .map(|((n, m), g)| {
                let s = g.lock();
                (
                    n.clone(),
                    m.clone(),
                    Load {
                        in_flight: s.in_flight,
                        waiting: s.waiters.len() as u32,
                    },
                    s.limit,
                )
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Take a slot on `node` for `model`, waiting in line if needed.
    pub async fn acquire(
        &self,
        node: &NodeId,
        model: &str,
        limit: u32,
        cfg: &QueueConfig,
    ) -> Result<Permit, crate::routed::BoxError> {
        let gate = self.gate(node, model, limit);
        let started = tokio::time::Instant::now();
        let (ticket, rx) = {
            let mut s = gate.lock();
            if s.in_flight < s.limit && s.waiters.is_empty() {
                s.in_flight += 1;
                return Ok(Permit::new(gate.clone(), s.in_flight));
            }
            if s.waiters.len() as u32 >= cfg.max_waiting {
                return Err(Shed {
                    node: node.clone(),
                    model: model.to_string(),
                    waiting: s.waiters.len() as u32,
                    retry_after: Gate::retry_after(&s),
                }
                .into());
            }
            let (tx, rx) = oneshot::channel();
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.waiters.push_back((ticket, tx));
            (ticket, rx)
        };
        // If this future is dropped while waiting, the guard takes the ticket
        // out of line (or gives back a slot handed over at that instant).
        let mut waiting = Waiting {
            gate: gate.clone(),
            ticket,
            rx: Some(rx),
        };
        let rx = waiting.rx.as_mut().expect("set above");
        match tokio::time::timeout(cfg.max_wait, rx).await {
            Ok(Ok(concurrency)) => {
                waiting.rx = None;
                Ok(Permit::new(gate.clone(), concurrency))
            }
            Ok(Err(_)) => {
                // Evicted: the ticket is out of line already.
                waiting.rx = None;
                Err(Evicted {
                    node: node.clone(),
                    model: model.to_string(),
                }
                .into())
            }
            _ => {
                drop(waiting);
                let s = gate.lock();
                Err(QueueTimeout {
                    node: node.clone(),
                    model: model.to_string(),
                    waited: started.elapsed(),
                    retry_after: Gate::retry_after(&s),
                }
                .into())
            }
        }
    }
}

struct Waiting {
    gate: Arc<Gate>,
    ticket: u64,
    rx: Option<oneshot::Receiver<u32>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut s = self.gate.lock();
        if let Some(pos) = s.waiters.iter().position(|(t, _)| *t == self.ticket) {
            s.waiters.remove(pos);
        } else if rx.try_recv().is_ok() {
            // A slot was handed to us as we gave up: pass it on.
            s.in_flight = s.in_flight.saturating_sub(1);
            Gate::wake(&mut s);
        }
    }
}

/// A held slot. Dropping it frees the slot for the next request in line.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    since: tokio::time::Instant,
    concurrency: u32,
}

impl Permit {
    fn new(gate: Arc<Gate>, concurrency: u32) -> Self {
        Permit {
            gate,
            since: tokio::time::Instant::now(),
            concurrency,
        }
    }

    /// Requests in flight on the node:model when this slot was granted,
    /// this one included (what [`crate::slots`] learns from).
    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.gate.release(self.since.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_waiting: u32, secs: u64) -> QueueConfig {
        QueueConfig {
            max_waiting,
            max_wait: Duration::from_secs(secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slots_limit_concurrency_and_waiters_go_in_order() {
        let adm = Admission::new();
        let n: NodeId = "n".into();
        let c = cfg(8, 60);
        let p1 = adm.acquire(&n, "m", 1, &c).await.unwrap();
        assert_eq!(adm.load("n", "m").in_flight, 1);
        assert_eq!(p1.concurrency(), 1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (adm, n, c, order) = (adm.clone(), n.clone(), c.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let p = adm.acquire(&n, "m", 1, &c).await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(p);
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(
            adm.load("n", "m"),
            Load {
                in_flight: 1,
                waiting: 3
            }
        );
        drop(p1);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!(adm.load("n", "m"), Load::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_sheds_with_retry_after() {
        let adm = Admission::new();
        let n: NodeId = "n".into();
        let c = cfg(1, 60);
        let _p = adm.acquire(&n, "m", 1, &c).await.unwrap();
        let (adm2, n2, c2) = (adm.clone(), n.clone(), c.clone());
        let waiter = tokio::spawn(async move { adm2.acquire(&n2, "m", 1, &c2).await.map(|_| ()) });
        tokio::task::yield_now().await;
        let err = adm.acquire(&n, "m", 1, &c).await.unwrap_err();
        let shed = err.downcast_ref::<Shed>().expect("shed");
        assert!(shed.retry_after >= Duration::from_secs(1));
        waiter.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_too_long_times_out_and_leaves_the_line() {
        let adm = Admission::new();
        let n: NodeId = "n".into();
        let c = cfg(4, 5);
        let p = adm.acquire(&n, "m", 1, &c).await.unwrap();
        let err = adm.acquire(&n, "m", 1, &c).await.unwrap_err();
        assert!(err.downcast_ref::<QueueTimeout>().is_some());
        assert_eq!(
            adm.load("n", "m"),
            Load {
                in_flight: 1,
                waiting: 0
            }
        );
        drop(p);
        assert_eq!(adm.load("n", "m"), Load::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_gives_its_place_back() {
        let adm = Admission::new();
        let n: NodeId = "n".into();
        let c = cfg(4, 60);
        let p = adm.acquire(&n, "m", 1, &c).await.unwrap();
        let (adm2, n2, c2) = (adm.clone(), n.clone(), c.clone());
        let w = tokio::spawn(async move { adm2.acquire(&n2, "m", 1, &c2).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(adm.load("n", "m").waiting, 1);
        w.abort();
        let _ = w.await;
        assert_eq!(adm.load("n", "m").waiting, 0);
        drop(p);
        assert_eq!(adm.load("n", "m").in_flight, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn raising_the_limit_admits_waiters() {
        let adm = Admission::new();
        let n: NodeId = "n".into();
        let c = cfg(4, 60);
        let _p = adm.acquire(&n, "m", 1, &c).await.unwrap();
        let (adm2, n2, c2) = (adm.clone(), n.clone(), c.clone());
        let w = tokio::spawn(async move { adm2.acquire(&n2, "m", 1, &c2).await.map(|_| ()) });
        tokio::task::yield_now().await;
        let p2 = adm.acquire(&n, "m", 3, &c).await.unwrap();
        w.await.unwrap().unwrap();
        // The waiter was admitted second, this one third.
        assert_eq!(p2.concurrency(), 3);
    }
}
