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

use herd_layer::config::RoutingConfig;
use herd_layer::error::ClientError;
use herd_layer::fleet::{Fleet, FleetView, NodeId};
use herd_layer::live::Live;
use herd_layer::request::RouteRequest;
use herd_layer::routed::{Body, BoxError, Meter, MissingPick, Pick, Routed};
use herd_layer::stack::{RoutingService, around, failure};

/// What the leaf puts in the response extensions.
#[derive(Clone, Debug)]
struct Picked {
    /// The node scoring chose, with its URL and address.
    pick: Pick,
    /// The model that will be served (the client's, or a fallback).
    model: String,
    /// The tenant's meter, when its limits apply (see `herd_layer::limit`).
    meter: Option<Arc<dyn Meter>>,
}

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
            return ready(Err(MissingPick("the pick leaf").into()));
        };
        // The attempt starts here (Envoy carries it): the trail, when the
        // stack has one (the dashboard's feed), hears of the pick.
        if let Some(t) = &req.trail {
            t.attempt(&pick, &req.model);
        }
        let body = Empty::<Bytes>::new()
            .map_err(|never: Infallible| match never {})
            .boxed();
        let mut rsp = http::Response::new(body);
        rsp.extensions_mut().insert(Picked {
            pick,
            model: req.model,
            meter: req.meter,
        });
        ready(Ok(rsp))
    }
}

/// A decision: where to send the request, and the admission slot it holds.
#[derive(Debug)]
pub struct Decision {
    /// The node scoring chose, with its URL and address.
    pub(crate) pick: Pick,
    /// The model that will be served (the client's, or a fallback).
    pub(crate) model: String,
    /// `ip:port` as Envoy wants it (`[v6]:port` for IPv6).
    pub endpoint: String,
    /// Holds the admission slot until dropped.
    pub hold: http::Response<Body>,
    /// Scheduling time: scoring plus admission (queue wait included).
    pub took: Duration,
    /// Where the response's tokens are charged to its tenant, when the
    /// tenant is limited.
    pub(crate) meter: Option<Arc<dyn Meter>>,
}

/// Why no endpoint was picked, as the client will be told.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Rejection {
    /// HTTP status of the immediate response.
    pub(crate) status: u16,
    /// Human-readable reason, sent as the OpenAI error `message`.
    pub(crate) message: String,
    /// OpenAI error `code`.
    pub code: &'static str,
    /// Value for `x-llm-d-request-dropped-reason`.
    pub dropped_reason: &'static str,
    /// Sent as `retry-after` (whole seconds, at least 1) when set.
    pub(crate) retry_after: Option<Duration>,
    /// Extra headers (a tenant's `x-ratelimit-*`).
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Rejection {
    /// A 400: the request itself is wrong, so retrying it will not help.
    pub(crate) fn bad_request(message: impl Into<String>, code: &'static str) -> Self {
        Rejection {
            status: 400,
            message: message.into(),
            code,
            dropped_reason: "bad-request",
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// A 503 with `retry-after: 5`: no endpoint can take the request now.
    pub(crate) fn unavailable(message: impl Into<String>, code: &'static str) -> Self {
        Rejection {
            status: 503,
            message: message.into(),
            code,
            dropped_reason: "rejected-no-endpoints",
            retry_after: Some(Duration::from_secs(5)),
            headers: Vec::new(),
        }
    }

    /// A client error as the Endpoint Picker protocol words it: when no
    /// endpoint will serve the request the answer is 503 (GIE proposal 004:
    /// "no endpoint ready"), whether or not the model exists somewhere — an
    /// EPP cannot pull models — and every drop names its reason in
    /// `x-llm-d-request-dropped-reason`.
    pub fn from_client(e: ClientError) -> Self {
        let status = e.status.as_u16();
        let (status, code, dropped_reason) = match (status, e.code) {
            (404, Some("model_not_found")) => (503, "model_not_found", "rejected-no-endpoints"),
            (503, Some("no_eligible_node")) => {
                (503, "no_eligible_endpoint", "rejected-no-endpoints")
            }
            (429, code) => (429, code.unwrap_or("queue_full"), "rejected-saturated"),
            (503, Some("queue_timeout")) => (503, "queue_timeout", "rejected-ttl-expired"),
            (500, code) => (500, code.unwrap_or("internal_error"), "internal"),
            (s, code) if s >= 500 => (
                503,
                code.unwrap_or("no_eligible_endpoint"),
                "rejected-no-endpoints",
            ),
            (s, code) => (s, code.unwrap_or("invalid_request"), "bad-request"),
        };
        Rejection {
            status,
            message: e.message,
            code,
            dropped_reason,
            retry_after: e.retry_after,
            headers: e.headers,
        }
    }

    /// Map a routing-stack failure (through the one mapping every edge uses).
    pub fn from_stack(err: &BoxError, view: &FleetView) -> Self {
        Self::from_client(failure::client_error(err, view))
    }
}

/// Drives the shared routing stack with [`PickLeaf`].
#[derive(Clone)]
pub struct Picker {
    stack: RoutingService,
    /// The nodes picks are made among.
    pub(crate) fleet: Fleet,
    /// Admission slots and learned history the stack scores with.
    pub(crate) live: Live,
    /// The routing tunables the stack was built with.
    pub(crate) cfg: Arc<RoutingConfig>,
    /// The memory request bodies may hold.
    pub(crate) budget: herd_layer::budget::BodyBudget,
}

impl std::fmt::Debug for Picker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Picker").finish_non_exhaustive()
    }
}

impl Picker {
    /// Build the routing stack around [`PickLeaf`] over this fleet and live
    /// state, with no trace layer (the tests').
    #[cfg(test)]
    pub(crate) fn new(fleet: Fleet, live: Live, cfg: Arc<RoutingConfig>) -> Self {
        Self::with_tracer(fleet, live, cfg, None)
    }

    /// The same, with the trace layer on top when `tracer` is given (the
    /// dashboard's routing feed).
    pub(crate) fn with_tracer(
        fleet: Fleet,
        live: Live,
        cfg: Arc<RoutingConfig>,
        tracer: Option<Arc<dyn herd_layer::routed::Tracer>>,
    ) -> Self {
        let stack = around(PickLeaf, fleet.clone(), live.clone(), &cfg, tracer);
        Picker {
            stack,
            fleet,
            live,
            budget: cfg.body_budget(),
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
        // Envoy carries the body unchanged: only nodes that serve the
        // request's API themselves may get it.
        routed.native_only = true;
        let rsp = self
            .stack
            .clone()
            .oneshot(routed)
            .await
            .map_err(|e| Rejection::from_stack(&e, &self.fleet.snapshot()))?;
        let took = started.elapsed();
        let picked = rsp.extensions().get::<Picked>().cloned().ok_or_else(|| {
            Rejection::from_stack(&MissingPick("herd-epp").into(), &self.fleet.snapshot())
        })?;
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
            meter: picked.meter,
            hold: rsp,
            took,
        })
    }
}
