//! Retry and fallback: a failure before the first byte reached the client is
//! not the client's problem.
//!
//! Built on `tower::retry` with herd's own [`Policy`]: when an attempt fails
//! before any response byte was sent (connect error, 5xx, a node's full
//! queue, a cut during a buffered response), the policy excludes that node
//! and the request goes through discovery and scoring again, so the retry
//! lands on the next-best node with fresh state. When no node is left for the
//! model, the policy moves to the fallback models (from the body's
//! `fallback_models`, the `x-herd-fallback-models` header, or config).
//!
//! Retries draw on a [`TpsBudget`] shared by all requests: a fleet in trouble
//! sees a bounded number of extra attempts, never a storm. Failures after the
//! first byte never reach this layer: the forward leaf ends such a stream with
//! a well-formed error in the client's format.

mod autopull;

use std::future::ready;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower::retry::budget::{Budget, TpsBudget};

use crate::forward::UpstreamError;
use crate::queueing::{Evicted, Shed};
use crate::rank::NoCandidates;
use crate::routed::{BoxError, Routed};

pub use autopull::{AutoPull, AutoPullConfig, AutoPullFailed, PullNotAllowed, PullStatus};
pub use tower::retry::Retry;

/// Retry tunables.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Most attempts per model (the first included).
    pub max_attempts_per_model: u32,
    /// Retries allowed as a fraction of recent requests (0.2 = 20%).
    pub budget_ratio: f32,
    /// Retries always allowed per second, whatever the ratio.
    pub budget_min_per_s: u32,
    /// Window over which the budget counts requests.
    #[serde(with = "crate::duration")]
    pub budget_window: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts_per_model: 3,
            budget_ratio: 0.2,
            budget_min_per_s: 10,
            budget_window: Duration::from_secs(10),
        }
    }
}

/// Every attempt failed; says what the last failure was.
#[derive(Debug, thiserror::Error)]
#[error("{attempts} attempt(s) failed; last on {node}: {last}")]
pub struct RetriesExhausted {
    /// Attempts made.
    pub attempts: u32,
    /// The node of the last attempt.
    pub node: String,
    /// What the last attempt's failure was.
    pub last: String,
    /// Status of the last upstream answer, when there was one.
    pub status: Option<u16>,
}

/// Decides, after each failed attempt, whether and how to try again.
#[derive(Clone, Debug)]
pub struct Policy {
    budget: Arc<TpsBudget>,
    cfg: Arc<RetryConfig>,
    /// Attempts on the current model.
    attempts: u32,
    /// Fallback models not yet tried.
    fallbacks: std::collections::VecDeque<String>,
    started: bool,
    last: Option<(String, String, Option<u16>)>,
    /// The last node that shed this request (node, waiting, retry after).
    last_shed: Option<(crate::fleet::NodeId, u32, Duration)>,
    autopull: Option<AutoPull>,
    pull_tried: bool,
    /// Why the auto-pull failed, written by the pull future.
    pull_error: Arc<Mutex<Option<String>>>,
}

impl Policy {
    /// A policy drawing on `budget`.
    pub fn new(budget: Arc<TpsBudget>, cfg: Arc<RetryConfig>) -> Self {
        Policy {
            budget,
            cfg,
            attempts: 0,
            fallbacks: Default::default(),
            started: false,
            last: None,
            last_shed: None,
            autopull: None,
            pull_tried: false,
            pull_error: Arc::default(),
        }
    }

    fn next_model(&mut self, req: &mut Routed) -> bool {
        let Some(next) = self.fallbacks.pop_front() else {
            return false;
        };
        tracing::info!(request = %req.request.id, from = %req.model, to = %next, "falling back to another model");
        req.model = next;
        req.exclude.clear();
        req.attempt += 1;
        self.attempts = 0;
        true
    }
}

impl<Res> tower::retry::Policy<Routed, Res, BoxError> for Policy {
    type Future = BoxFuture<'static, ()>;

    fn retry(
        &mut self,
        req: &mut Routed,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        // tower calls `retry` on this request's own copy of the policy, but
        // the first `clone_request` on the service's shared copy: session
        // state is therefore set up here, not there.
        if !self.started {
            self.started = true;
            self.fallbacks = req.request.fallback_models.iter().cloned().collect();
        }
        let err = match result {
            Ok(_) => return None,
            Err(e) => e,
        };
        if let Some(up) = err.downcast_ref::<UpstreamError>() {
            // An upload whose rest already went to the failed node cannot
            // be sent again: that failure is final.
            let spent = req.request.upload.as_ref().is_some_and(|u| !u.replayable());
            if !up.retryable() || spent {
                return None;
            }
            self.last = Some((up.node.to_string(), up.to_string(), up.status()));
            req.exclude.push(up.node.clone());
            self.attempts += 1;
            if self.attempts < self.cfg.max_attempts_per_model && self.budget.withdraw() {
                tracing::warn!(request = %req.request.id, node = %up.node, error = %up, "attempt failed before the first byte; retrying on another node");
                req.attempt += 1;
                return Some(ready(()).boxed());
            }
            // Moving to a fallback model is another upstream attempt: it
            // draws on the budget too, so a fleet in trouble sees no storm.
            if !self.fallbacks.is_empty() && self.budget.withdraw() && self.next_model(req) {
                return Some(ready(()).boxed());
            }
            *result = Err(self.exhausted(req));
            return None;
        }
        if let Some(shed) = err.downcast_ref::<Shed>() {
            // The node's queue is full; another node (even a cold one) may take it.
            req.exclude.push(shed.node.clone());
            self.last_shed = Some((shed.node.clone(), shed.waiting, shed.retry_after));
            self.attempts += 1;
            if self.attempts < self.cfg.max_attempts_per_model {
                req.attempt += 1;
                return Some(ready(()).boxed());
            }
            return self.next_model(req).then(|| ready(()).boxed());
        }
        if let Some(ev) = err.downcast_ref::<Evicted>() {
            // The node went silent while this request waited for it.
            req.exclude.push(ev.node.clone());
            self.attempts += 1;
            if self.attempts < self.cfg.max_attempts_per_model {
                req.attempt += 1;
                return Some(ready(()).boxed());
            }
            return self.next_model(req).then(|| ready(()).boxed());
        }
        if let Some(nc) = err.downcast_ref::<NoCandidates>() {
            if self.next_model(req) {
                return Some(ready(()).boxed());
            }
            if self.last.is_some() {
                // Earlier attempts failed upstream: report that failure, not
                // what is left after excluding the failed nodes.
                *result = Err(self.exhausted(req));
                return None;
            }
            if nc.model_unknown() {
                let may_pull = self.autopull.as_ref().is_some_and(|a| a.enabled())
                    && !self.pull_tried
                    && !req.fallback_used();
                if may_pull && !req.request.may_pull {
                    // Pulling changes the fleet: the edge allows it to admins only.
                    *result = Err(PullNotAllowed {
                        model: req.model.clone(),
                    }
                    .into());
                    return None;
                }
                // Only the client's own model is pulled, never a fallback.
                // Image models are not Ollama's to pull (it dropped image
                // generation in 0.32.6): they come with their engine.
                if let Some(ap) = self.autopull.as_ref().filter(|a| a.enabled())
                    && !self.pull_tried
                    && !req.fallback_used()
                    && req.request.kind() != crate::request::Kind::Image
                {
                    // The wait before the next attempt is the pull itself.
                    self.pull_tried = true;
                    req.attempt += 1;
                    let pull = ap.pull(&req.model, req.request.kind());
                    self.pull_error = Arc::default();
                    let slot = self.pull_error.clone();
                    return Some(
                        async move {
                            if let Err(e) = pull.await {
                                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            }
                        }
                        .boxed(),
                    );
                }
                let failed = self
                    .pull_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if let Some(reason) = failed {
                    *result = Err(AutoPullFailed {
                        model: req.model.clone(),
                        reason,
                    }
                    .into());
                    return None;
                }
            }
            if let Some((node, waiting, retry_after)) = self.last_shed.clone() {
                // Every node with the model was full: that is a 429, not "no node".
                *result = Err(Shed {
                    node,
                    model: req.model.clone(),
                    waiting,
                    retry_after,
                }
                .into());
                return None;
            }
            return None;
        }
        None
    }

    fn clone_request(&mut self, req: &Routed) -> Option<Routed> {
        if req.attempt == 0 {
            self.budget.deposit();
        }
        Some(req.clone())
    }
}

impl Policy {
    fn exhausted(&self, req: &Routed) -> BoxError {
        let (node, last, status) = self
            .last
            .clone()
            .unwrap_or_else(|| ("?".into(), "unknown failure".into(), None));
        RetriesExhausted {
            attempts: req.attempt + 1,
            node,
            last,
            status,
        }
        .into()
    }
}

/// Wraps a service in retry/fallback with a shared budget.
#[derive(Clone, Debug)]
pub struct RetryLayer {
    budget: Arc<TpsBudget>,
    cfg: Arc<RetryConfig>,
    autopull: Option<AutoPull>,
}

impl RetryLayer {
    /// Retries with a fresh budget from `cfg`.
    pub fn new(cfg: Arc<RetryConfig>) -> Self {
        let budget = Arc::new(TpsBudget::new(
            cfg.budget_window,
            cfg.budget_min_per_s,
            cfg.budget_ratio,
        ));
        RetryLayer {
            budget,
            cfg,
            autopull: None,
        }
    }

    /// Pull models no node has before giving up on them.
    pub fn with_autopull(mut self, autopull: Option<AutoPull>) -> Self {
        self.autopull = autopull;
        self
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<Policy, S>;

    fn layer(&self, inner: S) -> Self::Service {
        let mut policy = Policy::new(self.budget.clone(), self.cfg.clone());
        policy.autopull = self.autopull.clone();
        Retry::new(policy, inner)
    }
}
