//! The Endpoint Picker's leaf, and the [`Picker`] that drives the shared
//! routing stack with it.
//!
//! The proxy's leaf forwards bytes to the node; this one answers at once
//! with the [`Pick`] scoring made, carried in the response's extensions,
//! and an empty body. Everything above it is the proxy's own stack
//! ([`herd_layer::stack::around`]): retry/fallback (a shed node is excluded
//! and the request re-scored), discovery, scoring and queueing. The
//! queueing layer wraps the empty body in a guard holding the admission
//! permit; the caller keeps that response ([`Decision::hold`]) for as long
//! as the HTTP response it routed is streaming.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tower::{Service, ServiceExt};

use herd_layer::config::RouterConfig;
use herd_layer::fleet::{Fleet, NodeId};
use herd_layer::history::Live;
use herd_layer::queueing::{QueueTimeout, Shed};
use herd_layer::request::RouteRequest;
use herd_layer::retry::RetriesExhausted;
use herd_layer::routed::{Body, BoxError, Pick, Routed};
use herd_layer::scoring::NoCandidates;
use herd_layer::stack::{RoutingService, around};

/// What the leaf puts in the response extensions.
#[derive(Clone, Debug)]
pub struct Picked {
    pub pick: Pick,
    /// The model that will be served (the client's, or a fallback).
    pub model: String,
}

/// The leaf ran without a pick (a stack built wrongly).
#[derive(Debug, thiserror::Error)]
#[error("the pick leaf needs a pick; the scoring layer must run first")]
pub struct MissingPick;

/// Returns the pick instead of forwarding.
#[derive(Clone, Copy, Debug, Default)]
pub struct PickLeaf;

impl Service<Routed> for PickLeaf {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Ready<Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Routed) -> Self::Future {
        let Some(pick) = req.pick else {
            return ready(Err(MissingPick.into()));
        };
        let body = Empty::<Bytes>::new()
            .map_err(|never: Infallible| match never {})
            .boxed();
        let mut rsp = http::Response::new(body);
        rsp.extensions_mut().insert(Picked {
            pick,
            model: req.model,
        });
        ready(Ok(rsp))
    }
}

/// A decision: where to send the request, and the admission slot it holds.
#[derive(Debug)]
pub struct Decision {
    pub pick: Pick,
    pub model: String,
    /// `ip:port` as Envoy wants it (`[v6]:port` for IPv6).
    pub endpoint: String,
    /// Holds the admission slot until dropped.
    pub hold: http::Response<Body>,
    /// Scheduling time: scoring plus admission (queue wait included).
    pub took: Duration,
}

/// Why no endpoint was picked, as the client will be told.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Rejection {
    pub status: u16,
    pub message: String,
    /// OpenAI error `code`.
    pub code: &'static str,
    /// Value for `x-llm-d-request-dropped-reason`.
    pub dropped_reason: &'static str,
    pub retry_after: Option<Duration>,
}

impl Rejection {
    pub fn bad_request(message: impl Into<String>, code: &'static str) -> Self {
        Rejection {
            status: 400,
            message: message.into(),
            code,
            dropped_reason: "bad-request",
            retry_after: None,
        }
    }

    pub fn unavailable(message: impl Into<String>, code: &'static str) -> Self {
        Rejection {
            status: 503,
            message: message.into(),
            code,
            dropped_reason: "rejected-no-endpoints",
            retry_after: Some(Duration::from_secs(5)),
        }
    }

    /// Map a routing-stack failure.
    pub fn from_stack(err: &BoxError) -> Self {
        if let Some(e) = err.downcast_ref::<NoCandidates>() {
            if e.model_unknown() {
                return Rejection::unavailable(
                    format!("model {:?} is not on any endpoint", e.model),
                    "model_not_found",
                );
            }
            return Rejection::unavailable(
                format!("no endpoint can serve model {:?}: {}", e.model, e.summary),
                "no_eligible_endpoint",
            );
        }
        if let Some(e) = err.downcast_ref::<Shed>() {
            return Rejection {
                status: 429,
                message: e.to_string(),
                code: "queue_full",
                dropped_reason: "rejected-saturated",
                retry_after: Some(e.retry_after),
            };
        }
        if let Some(e) = err.downcast_ref::<QueueTimeout>() {
            return Rejection {
                status: 503,
                message: e.to_string(),
                code: "queue_timeout",
                dropped_reason: "rejected-ttl-expired",
                retry_after: Some(e.retry_after),
            };
        }
        if let Some(e) = err.downcast_ref::<RetriesExhausted>() {
            return Rejection::unavailable(e.to_string(), "no_eligible_endpoint");
        }
        tracing::error!(error = %err, "unexpected routing failure");
        Rejection {
            status: 500,
            message: err.to_string(),
            code: "internal_error",
            dropped_reason: "internal",
            retry_after: None,
        }
    }
}

/// Drives the shared routing stack with [`PickLeaf`].
#[derive(Clone)]
pub struct Picker {
    stack: RoutingService,
    pub fleet: Fleet,
    pub live: Live,
    pub cfg: Arc<RouterConfig>,
}

impl std::fmt::Debug for Picker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picker").finish_non_exhaustive()
    }
}

impl Picker {
    pub fn new(fleet: Fleet, live: Live, cfg: Arc<RouterConfig>) -> Self {
        let stack = around(PickLeaf, fleet.clone(), live.clone(), &cfg);
        Picker {
            stack,
            fleet,
            live,
            cfg,
        }
    }

    /// Pick an endpoint for one request, inside `only` when given.
    pub async fn pick(
        &self,
        req: RouteRequest,
        only: Option<Arc<[NodeId]>>,
    ) -> Result<Decision, Rejection> {
        let started = Instant::now();
        let mut routed = Routed::new(Arc::new(req));
        routed.only = only;
        let rsp = self
            .stack
            .clone()
            .oneshot(routed)
            .await
            .map_err(|e| Rejection::from_stack(&e))?;
        let took = started.elapsed();
        let picked = rsp
            .extensions()
            .get::<Picked>()
            .cloned()
            .ok_or_else(|| Rejection::from_stack(&MissingPick.into()))?;
        let Some(addr) = picked.pick.addr else {
            return Err(Rejection::unavailable(
                format!(
                    "endpoint {} has no IP address in its URL {}; Envoy needs ip:port",
                    picked.pick.node, picked.pick.url
                ),
                "no_eligible_endpoint",
            ));
        };
        Ok(Decision {
            endpoint: addr.to_string(),
            pick: picked.pick,
            model: picked.model,
            hold: rsp,
            took,
        })
    }
}
