//! The dashboard's [`Tracer`]: what the routing feed shows of each request.
//!
//! It sits in the trace layer beside the proxy's telemetry (see
//! [`crate::trace::Tee`]) and alone in herd-epp, so both shapes feed the
//! same view from the same code. A decision is published when an attempt
//! starts on the picked node (or when nothing could be picked), and how the
//! request ended when its trail is let go. All it does on the request path
//! is move what it was handed (the `Arc`'d ranking, a few strings) into the
//! hub; the hub decides whether it is shown ([`Hub::decision`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::event::{Decision, Outcome};
use super::hub::Hub;
use crate::fleet::NodeId;
use crate::history::Outcome as Answer;
use crate::rank::NoCandidates;
use crate::request::RouteRequest;
use crate::routed::{AttemptFailure, BoxError, Pick, Tracer, Trail};

/// Starts a [`DecisionTrail`] per request.
#[derive(Clone, Debug)]
pub struct DecisionTracer {
    hub: Hub,
    /// herd-epp: the leaf only picks (Envoy carries the answer), so a trail
    /// let go without an answer is a pick, not a client that left.
    picks_only: bool,
    /// Engine load times from this many ms on count as cold loads.
    cold_load_ms: f64,
}

impl DecisionTracer {
    /// Trails that publish to `hub`.
    pub fn new(hub: Hub, picks_only: bool, cold_load_ms: f64) -> Self {
        DecisionTracer {
            hub,
            picks_only,
            cold_load_ms,
        }
    }
}

impl Tracer for DecisionTracer {
    fn start(&self, request: &Arc<RouteRequest>) -> Arc<dyn Trail> {
        Arc::new(DecisionTrail {
            tracer: self.clone(),
            req: request.clone(),
            started: Instant::now(),
            draft: Mutex::new(Draft::default()),
        })
    }
}

#[derive(Debug, Default)]
struct Draft {
    attempts: u32,
    shown: bool,
    node: Option<NodeId>,
    model: Option<String>,
    excluded: Vec<NodeId>,
    last_error: Option<String>,
    answer: Option<Answer>,
    disconnected: bool,
    failure: Option<(&'static str, String)>,
}

/// One request as the routing feed sees it.
#[derive(Debug)]
pub struct DecisionTrail {
    tracer: DecisionTracer,
    req: Arc<RouteRequest>,
    started: Instant,
    draft: Mutex<Draft>,
}

impl DecisionTrail {
    fn draft(&self) -> MutexGuard<'_, Draft> {
        self.draft.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn decision(
        &self,
        d: &Draft,
        model: &str,
        ranking: Arc<crate::rank::Ranking>,
        error: Option<String>,
    ) -> Decision {
        Decision {
            id: self.req.id.clone(),
            ts_ms: crate::fleet::now_ms(),
            model: self.req.model.clone(),
            tried: model.to_string(),
            kind: self.req.kind().as_str(),
            api: self.req.dialect().as_str(),
            prompt_tokens: self.req.est_prompt_tokens,
            attempt: d.attempts.max(1),
            excluded: d.excluded.clone(),
            ranking,
            error,
        }
    }
}

impl Trail for DecisionTrail {
    fn queue_started(&self, _node: &str) -> Option<Box<dyn Send>> {
        None
    }

    fn queued(&self, _wait: std::time::Duration) {}

    fn attempt(&self, pick: &Pick, model: &str) -> Option<String> {
        let mut d = self.draft();
        d.attempts += 1;
        d.node = Some(pick.node.clone());
        d.model = Some(model.to_string());
        let shown = self
            .tracer
            .hub
            .decision_with(|| self.decision(&d, model, pick.ranking.clone(), None));
        d.shown |= shown;
        self.req.traceparent.clone()
    }

    fn attempt_failed(&self, node: &NodeId, error: &str, _how: AttemptFailure) {
        let mut d = self.draft();
        d.excluded.push(node.clone());
        d.last_error = Some(error.to_string());
    }

    fn outcome(&self, outcome: &Answer, disconnected: bool) {
        let mut d = self.draft();
        d.answer = Some(outcome.clone());
        d.disconnected = disconnected;
    }

    fn context_action(&self, _action: &str) {}

    fn failed(&self, error: &BoxError) {
        let status = if error.downcast_ref::<crate::queueing::Shed>().is_some()
            || error
                .downcast_ref::<crate::queueing::QueueTimeout>()
                .is_some()
        {
            "shed"
        } else if crate::stack::failure::client_fault(error) {
            "rejected"
        } else {
            "failed"
        };
        let mut d = self.draft();
        d.failure = Some((status, error.to_string()));
        // Nothing could serve: the ranking says why, and that is the decision.
        if let Some(nc) = error.downcast_ref::<NoCandidates>() {
            d.attempts += 1;
            let shown = self.tracer.hub.decision_with(|| {
                self.decision(&d, &nc.model, nc.ranking.clone(), Some(error.to_string()))
            });
            d.shown |= shown;
        }
    }
}

impl Drop for DecisionTrail {
    fn drop(&mut self) {
        let d = std::mem::take(&mut *self.draft());
        if d.attempts == 0 && d.failure.is_none() {
            // Never reached scoring (a request refused before any pick).
            return;
        }
        let retried = !d.excluded.is_empty();
        let status = match (&d.answer, &d.failure) {
            (Some(a), _) if a.ok && retried => "retried",
            (Some(a), _) if a.ok => "ok",
            (Some(_), _) if d.disconnected => "disconnected",
            (Some(_), _) => "incomplete",
            (None, Some((s, _))) => s,
            (None, None) if self.tracer.picks_only => "picked",
            (None, None) => "disconnected",
        };
        let error = d.failure.as_ref().map(|(_, e)| e.clone()).or_else(|| {
            (!matches!(status, "ok" | "retried" | "picked"))
                .then(|| d.last_error.clone())
                .flatten()
        });
        let a = d.answer.as_ref();
        let o = Outcome {
            id: self.req.id.clone(),
            status,
            node: d.node.clone(),
            model: d.model.clone().unwrap_or_else(|| self.req.model.clone()),
            ttft_ms: a.and_then(|a| a.ttft_ms),
            latency_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens: a.and_then(|a| a.prompt_tokens),
            output_tokens: a.and_then(|a| a.output_tokens),
            load_ms: a.and_then(|a| a.load_ms),
            error,
        };
        self.tracer
            .hub
            .outcome(o, d.shown, self.tracer.cold_load_ms);
    }
}
