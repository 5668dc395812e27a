//! Discovery: where nodes come from, folded into one [`Fleet`].
//!
//! Three sources feed the same view: nodes that attach over herd.v1
//! ([`attach`]), Ollama URLs the router polls itself ([`agentless`]), and the
//! clock — a node that stops reporting goes offline after the report timeout
//! ([`sweep`]). A dropped attachment marks its node offline at once.
//!
//! In the request path, the discovery layer hands each attempt a snapshot of
//! the fleet, so everything below it (scoring, explanations, the pick) sees
//! one consistent picture, and a retry sees a fresh one.

pub mod agentless;
pub mod attach;
pub mod mdns;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use crate::fleet::Fleet;
use crate::routed::Routed;

pub use attach::{Attachments, FleetService};

/// An attached node offline this long is forgotten: node ids come from the
/// network, and a fleet that keeps every id it ever saw grows without bound.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Mark nodes offline when they have been silent too long, and forget
/// attached nodes offline for `forget_after` (configured agentless nodes
/// stay: they are the operator's); `forgotten` hears which, to drop what
/// else was kept per node.
pub async fn sweep<F>(fleet: Fleet, timeout: Duration, forget_after: Duration, mut forgotten: F)
where
    F: FnMut(&[crate::fleet::NodeId]) + Send,
{
    let mut tick = tokio::time::interval(Duration::from_millis(500).min(timeout / 4));
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let view = fleet.snapshot();
        let attached = view
            .nodes
            .values()
            .filter(|n| n.source == crate::fleet::Source::Attached);
        let (mut stale, mut gone) = (Vec::new(), Vec::new());
        for n in attached {
            let silent = now.duration_since(n.last_seen);
            if n.online && silent > timeout {
                stale.push(n.id.clone());
            } else if !n.online && silent > forget_after {
                gone.push(n.id.clone());
            }
        }
        if stale.is_empty() && gone.is_empty() {
            continue;
        }
        fleet.update(|v| {
            for id in &stale {
                if let Some(n) = v.node_mut(id) {
                    tracing::warn!(node = %id, "no report for {timeout:?}; marking offline");
                    n.mark_offline(format!("no report for {}s", timeout.as_secs()));
                }
            }
            for id in &gone {
                tracing::info!(node = %id, "offline for {forget_after:?}; forgetting it");
                v.nodes.remove(id);
            }
        });
        if !gone.is_empty() {
            forgotten(&gone);
        }
    }
}

/// Gives each attempt the current fleet snapshot.
#[derive(Clone, Debug)]
pub struct DiscoveryLayer {
    fleet: Fleet,
}

impl DiscoveryLayer {
    /// Snapshots come from `fleet`.
    pub fn new(fleet: Fleet) -> Self {
        DiscoveryLayer { fleet }
    }
}

impl<S> Layer<S> for DiscoveryLayer {
    type Service = Discovery<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Discovery {
            inner,
            fleet: self.fleet.clone(),
        }
    }
}

/// Attaches a fleet snapshot to each request.
#[derive(Clone, Debug)]
pub struct Discovery<S> {
    inner: S,
    fleet: Fleet,
}

impl<S> Service<Routed> for Discovery<S>
where
    S: Service<Routed>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Routed) -> Self::Future {
        req.view = Some(self.fleet.snapshot());
        self.inner.call(req)
    }
}

/// Shared handle for code that needs the fleet and the attachments.
#[derive(Clone, Debug)]
pub struct Registry {
    /// The fleet the service writes.
    pub fleet: Fleet,
    /// The live attachments (commands go through them).
    pub attachments: Arc<Attachments>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{NodeState, Source};

    #[tokio::test(start_paused = true)]
    async fn silent_nodes_go_offline_then_are_forgotten() {
        let fleet = Fleet::new();
        fleet.update(|v| {
            for (id, source) in [("att", Source::Attached), ("cfg", Source::Agentless)] {
                let mut n = NodeState::new(id.into(), source, "http://127.0.0.1:1".into());
                n.seen(tokio::time::Instant::now());
                v.insert(n);
            }
        });
        let forgotten = Arc::new(std::sync::Mutex::new(Vec::new()));
        let f = forgotten.clone();
        let task = tokio::spawn(sweep(
            fleet.clone(),
            Duration::from_secs(1),
            Duration::from_secs(5),
            move |gone: &[crate::fleet::NodeId]| f.lock().unwrap().extend(gone.to_vec()),
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let v = fleet.snapshot();
        assert!(!v.node("att").unwrap().online, "silent past the timeout");
        assert!(
            v.node("cfg").unwrap().online,
            "agentless nodes are polled, not swept"
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(fleet.snapshot().node("att").is_none(), "forgotten");
        assert!(
            fleet.snapshot().node("cfg").is_some(),
            "configured nodes stay"
        );
        assert_eq!(forgotten.lock().unwrap().len(), 1);
        task.abort();
    }
}
