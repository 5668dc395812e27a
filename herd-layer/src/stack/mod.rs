//! The routing stack, written once.
//!
//! Outermost first — each layer sees the request after the ones above it:
//!
//! 0. **trace** ([`crate::trace`]): starts the request's [`Trail`] (the
//!    proxy's telemetry: span, trace record, metrics); it sits above retry so
//!    one request is one trace however many attempts it takes, and reports
//!    when the response body ends, not when headers leave.
//! 1. **limit** ([`crate::limit`]): a tenant's requests, tokens and
//!    requests at once; under trace so a refusal is traced for its tenant,
//!    above retry so three attempts are still one request.
//! 2. **retry/fallback** ([`crate::retry`]): replays an attempt that failed
//!    before the first byte, excluding the failed node; then fallback models.
//! 3. **discovery** ([`crate::discovery`]): hands the attempt a fresh fleet
//!    snapshot (so a retry sees the fleet as it is now).
//! 4. **scoring** ([`crate::scoring`]): ranks the snapshot, records the pick.
//! 5. **queueing** ([`crate::queueing`]): waits for a slot on the picked
//!    node:model, bounded; the slot lives in the response body. Once
//!    admitted, the request's prompt prefix is recorded as sent there
//!    ([`crate::prefix`]).
//! 6. **forward** ([`crate::forward`]): the leaf; talks to the node, streams
//!    the answer back, translated when needed.
//!
//! Each request is parsed once above this stack ([`crate::dialect::parse`]);
//! herd-epp drives the same layers with a leaf that returns the pick instead
//! of forwarding. When the stack fails, [`failure`] says what the client is
//! told — one mapping for both shapes.
//!
//! [`Trail`]: crate::routed::Trail

pub mod failure;

use std::sync::Arc;

use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::config::RoutingConfig;
use crate::discovery::DiscoveryLayer;
use crate::forward::{Forward, ForwardConfig};
use crate::limit::LimitLayer;
use crate::live::Live;
use crate::queueing::QueueingLayer;
use crate::retry::RetryLayer;
use crate::routed::{Body, BoxError, Routed, Tracer};
use crate::scoring::ScoringLayer;
use crate::trace::TraceLayer;

/// The boxed routing service the edges call.
pub type RoutingService = BoxCloneSyncService<Routed, http::Response<Body>, BoxError>;

/// The routing layers around any leaf, in the one documented order, with
/// the trace layer on top when a tracer is given. The proxy's leaf forwards
/// bytes; herd-epp's leaf answers with the pick. This is the one place the
/// order of the layers is written.
pub fn around<L>(
    leaf: L,
    fleet: crate::fleet::Fleet,
    live: Live,
    cfg: &RoutingConfig,
    tracer: Option<Arc<dyn Tracer>>,
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
        .option_layer(tracer.map(TraceLayer::new))
        .layer(LimitLayer::new(live.limits.clone()))
        .layer(RetryLayer::new(Arc::new(cfg.retry.clone())).with_autopull(live.autopull.clone()))
        .layer(DiscoveryLayer::new(fleet))
        .layer(ScoringLayer::new(
            Arc::new(live.clone()),
            Arc::new(cfg.scoring.clone()),
        ))
        .layer(
            QueueingLayer::new(live.admission.clone(), Arc::new(cfg.queue.clone()))
                .with_prefix(cfg.scoring.prefix_affinity.then(|| live.prefix.clone())),
        )
        .service(leaf);
    BoxCloneSyncService::new(stack)
}

/// The proxy's stack: [`around`] the [`Forward`] leaf; `router_id` names
/// this router in what it forwards (see [`crate::dialect::HOP_HEADER`]).
pub fn forwarding(
    fleet: crate::fleet::Fleet,
    live: Live,
    cfg: &RoutingConfig,
    tracer: Option<Arc<dyn Tracer>>,
    router_id: &str,
) -> RoutingService {
    let forward = Forward::new(
        Arc::new(ForwardConfig {
            connect_timeout: cfg.connect_timeout,
            response_timeout: cfg.response_timeout,
            idle_timeout: cfg.idle_timeout,
            max_response_bytes: cfg.max_response_bytes,
            context_protection: cfg.context.protection,
            first_byte_factor: cfg.first_byte_factor,
            first_byte_min: cfg.first_byte_min,
            unresponsive_pause: cfg.unresponsive_pause,
            router_id: router_id.to_string(),
        }),
        live.history.clone(),
        live.admission.clone(),
    );
    around(forward, fleet, live, cfg, tracer)
}
