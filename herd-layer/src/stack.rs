//! The routing stack, written once.
//!
//! Outermost first — each layer sees the request after the ones above it:
//!
//! 0. **telemetry** ([`crate::telemetry`]): starts the request's trail (span,
//!    trace record, metrics); it sits above retry so one request is one
//!    trace however many attempts it takes, and reports when the response
//!    body ends, not when headers leave.
//! 1. **retry/fallback** ([`crate::retry`]): replays an attempt that failed
//!    before the first byte, excluding the failed node; then fallback models.
//! 2. **discovery** ([`crate::discovery`]): hands the attempt a fresh fleet
//!    snapshot (so a retry sees the fleet as it is now).
//! 3. **scoring** ([`crate::scoring`]): ranks the snapshot, records the pick.
//! 4. **queueing** ([`crate::queueing`]): waits for a slot on the picked
//!    node:model, bounded; the slot lives in the response body.
//! 5. **forward** ([`crate::forward`]): the leaf; talks to the node, streams
//!    the answer back, translated when needed.
//!
//! The HTTP surface ([`crate::api`]) parses each request once above this
//! stack; herd-epp drives the same discovery, scoring and queueing pieces with
//! a leaf that returns the pick instead of forwarding.

use std::sync::Arc;

use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::config::RouterConfig;
use crate::discovery::DiscoveryLayer;
use crate::fleet::Fleet;
use crate::forward::{Forward, ForwardConfig};
use crate::history::Live;
use crate::queueing::QueueingLayer;
use crate::retry::RetryLayer;
use crate::routed::{Body, BoxError, Routed};
use crate::scoring::ScoringLayer;

/// The boxed routing service the HTTP surface calls.
pub type RoutingService = BoxCloneSyncService<Routed, http::Response<Body>, BoxError>;

/// The routing layers around any leaf, in the one documented order. The
/// proxy's leaf forwards bytes; herd-epp's leaf answers with the pick.
pub fn around<L>(leaf: L, fleet: Fleet, live: Live, cfg: &RouterConfig) -> RoutingService
where
    L: tower::Service<Routed, Response = http::Response<Body>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    L::Future: Send + 'static,
{
    around_traced(leaf, fleet, live, cfg, None)
}

/// [`around`], with the telemetry layer on top when given. This is the one
/// place the order of the layers is written.
pub fn around_traced<L>(
    leaf: L,
    fleet: Fleet,
    live: Live,
    cfg: &RouterConfig,
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
) -> RoutingService
where
    L: tower::Service<Routed, Response = http::Response<Body>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    L::Future: Send + 'static,
{
    let stack = ServiceBuilder::new()
        .option_layer(telemetry.map(crate::telemetry::TelemetryLayer::new))
        .layer(RetryLayer::new(Arc::new(cfg.retry.clone())).with_autopull(live.autopull.clone()))
        .layer(DiscoveryLayer::new(fleet))
        .layer(ScoringLayer::new(
            Arc::new(live.clone()),
            Arc::new(cfg.scoring.clone()),
        ))
        .layer(QueueingLayer::new(
            live.admission.clone(),
            Arc::new(cfg.queue.clone()),
        ))
        .service(leaf);
    BoxCloneSyncService::new(stack)
}

/// Build the proxy's routing stack (without telemetry).
pub fn routing(fleet: Fleet, live: Live, cfg: &RouterConfig) -> RoutingService {
    routing_traced(fleet, live, cfg, None)
}

/// Build the proxy's routing stack, with the telemetry layer on top when given.
pub fn routing_traced(
    fleet: Fleet,
    live: Live,
    cfg: &RouterConfig,
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
) -> RoutingService {
    let forward = Forward::new(
        Arc::new(ForwardConfig {
            connect_timeout: cfg.connect_timeout,
            response_timeout: cfg.response_timeout,
            idle_timeout: cfg.idle_timeout,
            max_response_bytes: cfg.max_response_bytes,
            context_protection: cfg.context.protection,
        }),
        live.history.clone(),
    );
    around_traced(forward, fleet, live, cfg, telemetry)
}
