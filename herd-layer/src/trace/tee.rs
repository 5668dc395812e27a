//! Several tracers on one trace layer: every trail hears every note.
//!
//! The proxy traces each request twice — its telemetry (traces, metrics,
//! store, health) and the dashboard's feed — and the trace layer takes one
//! [`Tracer`]; the tee is that one. The `traceparent` sent to the node is
//! the first tracer's that offers one (put telemetry first).

use std::sync::Arc;

use crate::fleet::NodeId;
use crate::history::Outcome;
use crate::request::RouteRequest;
use crate::routed::{AttemptFailure, BoxError, Pick, Tracer, Trail};

/// Starts one trail per tracer and tells them all.
#[derive(Clone, Debug)]
pub struct Tee(Vec<Arc<dyn Tracer>>);

impl Tee {
    /// Trace with each of `tracers`, in order.
    pub fn new(tracers: Vec<Arc<dyn Tracer>>) -> Self {
        Tee(tracers)
    }
}

impl Tracer for Tee {
    fn start(&self, request: &Arc<RouteRequest>) -> Arc<dyn Trail> {
        Arc::new(TeeTrail(self.0.iter().map(|t| t.start(request)).collect()))
    }
}

/// The trails of one request, one per tracer.
#[derive(Debug)]
struct TeeTrail(Vec<Arc<dyn Trail>>);

impl Trail for TeeTrail {
    fn queue_started(&self, node: &str) -> Option<Box<dyn Send>> {
        let guards: Vec<Box<dyn Send>> = self
            .0
            .iter()
            .filter_map(|t| t.queue_started(node))
            .collect();
        (!guards.is_empty()).then(|| Box::new(guards) as Box<dyn Send>)
    }

    fn queued(&self, wait: std::time::Duration) {
        for t in &self.0 {
            t.queued(wait);
        }
    }

    fn attempt(&self, pick: &Pick, model: &str) -> Option<String> {
        let mut first = None;
        for t in &self.0 {
            let tp = t.attempt(pick, model);
            if first.is_none() {
                first = tp;
            }
        }
        first
    }

    fn attempt_failed(&self, node: &NodeId, error: &str, how: AttemptFailure) {
        for t in &self.0 {
            t.attempt_failed(node, error, how);
        }
    }

    fn outcome(&self, outcome: &Outcome, disconnected: bool) {
        for t in &self.0 {
            t.outcome(outcome, disconnected);
        }
    }

    fn context_action(&self, action: &str) {
        for t in &self.0 {
            t.context_action(action);
        }
    }

    fn failed(&self, error: &BoxError) {
        for t in &self.0 {
            t.failed(error);
        }
    }
}
