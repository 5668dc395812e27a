//! The request as it travels down the routing stack, the error type the
//! stack speaks, and the [`Trail`] its layers report to.
//!
//! Each layer adds what it decided: discovery the fleet snapshot, scoring the
//! [`Pick`], retry the exclusions and the model being tried. Cloning is cheap
//! (the parsed request is shared), which is what lets the retry layer replay
//! a request without re-parsing or re-buffering its body.
//!
//! The trail is a trait, not the proxy's telemetry: the core tells it what
//! happened (a wait, an attempt, how the answer ended) and never learns where
//! that goes — the proxy turns it into traces, metrics and spans, herd-epp
//! runs without one.

use std::sync::Arc;

use bytes::Bytes;

use crate::fleet::{Engine, FleetView, NodeId};
use crate::history::Outcome;
use crate::rank::{Ranking, Temperature};
use crate::request::RouteRequest;

/// The stack's error: small per-layer error types, boxed, found again by downcast
/// (the tower convention, so layers can be reordered without changing types).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Response bodies inside herd.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// The future of a layer whose work is a multi-step `async` block (admission
/// then call, connect then first byte): boxed once, behind a named type, so
/// stack types stay nameable without spelling out each state machine.
pub struct ResponseFuture {
    inner: std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<http::Response<Body>, BoxError>> + Send>,
    >,
}

impl ResponseFuture {
    /// Box `fut` once.
    pub fn new(
        fut: impl std::future::Future<Output = Result<http::Response<Body>, BoxError>> + Send + 'static,
    ) -> Self {
        ResponseFuture {
            inner: Box::pin(fut),
        }
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl std::future::Future for ResponseFuture {
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// A request on its way through the routing stack.
#[derive(Clone, Debug)]
pub struct Routed {
    /// The request as parsed (shared by every attempt).
    pub request: Arc<RouteRequest>,
    /// The model being tried: the client's, or a fallback.
    pub model: String,
    /// Attempts made before this one.
    pub attempt: u32,
    /// Nodes that already failed this request.
    pub exclude: Vec<NodeId>,
    /// When set (the EPP's subset hint), only these nodes may serve.
    pub only: Option<Arc<[NodeId]>>,
    /// Only nodes that serve the request's API themselves may serve (herd-epp:
    /// Envoy forwards the body unchanged, herd cannot translate it).
    pub native_only: bool,
    /// Set by the discovery layer: the fleet as this attempt sees it.
    pub view: Option<Arc<FleetView>>,
    /// Set by the scoring layer.
    pub pick: Option<Pick>,
    /// Set by the trace layer: where layers note what they decided.
    pub trail: Option<Arc<dyn Trail>>,
    /// Set by the limit layer for a limited tenant: where the leaf reports
    /// the tokens the answer costs.
    pub meter: Option<Arc<dyn Meter>>,
}

impl Routed {
    /// The first attempt of `request`.
    pub fn new(request: Arc<RouteRequest>) -> Self {
        let model = request.model.clone();
        Routed {
            request,
            model,
            attempt: 0,
            exclude: Vec::new(),
            only: None,
            native_only: false,
            view: None,
            pick: None,
            trail: None,
            meter: None,
        }
    }

    /// True when the model being tried is a fallback, not the client's.
    pub fn fallback_used(&self) -> bool {
        !crate::request::same_model(&self.model, &self.request.model)
    }
}

/// The node scoring chose for one attempt.
#[derive(Clone, Debug)]
pub struct Pick {
    /// The node.
    pub node: NodeId,
    /// Its engine's base URL.
    pub url: String,
    /// The engine's `ip:port`, when its URL names an IP.
    pub addr: Option<std::net::SocketAddr>,
    /// What kind of engine it runs.
    pub engine: Engine,
    /// Its engine's version (which APIs it serves itself).
    pub version: String,
    /// Parallel slots for the model there (admission's limit).
    pub slots: u32,
    /// Requests in flight on the node:model when this one got its slot,
    /// itself included; set by the queueing layer (0 before). What a node's
    /// parallelism is learned from (see [`crate::slots`]).
    pub concurrency: u32,
    /// How warm the model is there.
    pub temperature: Temperature,
    /// Its score.
    pub score: f64,
    /// The whole ranking the pick came from.
    pub ranking: Arc<Ranking>,
}

/// A layer that needs the pick ran before scoring did (a stack built wrongly).
#[derive(Debug, thiserror::Error)]
#[error("{0} needs a pick; the scoring layer must run first")]
pub struct MissingPick(pub &'static str);

/// How an attempt failed, as far as health cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The node's engine did not answer in time.
    Timeout,
    /// The node's engine could not be connected to (refused, reset).
    Connect,
    /// Anything else (an error status, a broken body).
    Other,
}

/// What the layers tell about one request while it runs. Implemented by the
/// proxy's telemetry; every method is a note, none may block.
pub trait Trail: Send + Sync + std::fmt::Debug {
    /// The request starts waiting for a slot on `node`; the wait ends when
    /// the returned guard is dropped (a span, for instance).
    fn queue_started(&self, node: &str) -> Option<Box<dyn Send>>;
    /// The slot was granted after `wait`.
    fn queued(&self, wait: std::time::Duration);
    /// An attempt begins on the picked node. Returns the `traceparent` to
    /// send the node (the attempt's own context when tracing, else the
    /// client's).
    fn attempt(&self, pick: &Pick, model: &str) -> Option<String>;
    /// The current attempt failed before the first byte.
    fn attempt_failed(&self, node: &NodeId, error: &str, how: AttemptFailure);
    /// The answer ended (buffered, or the end of a stream); `disconnected`
    /// when the client went away first.
    fn outcome(&self, outcome: &Outcome, disconnected: bool);
    /// What context protection did with the client's `num_ctx`.
    fn context_action(&self, action: &str);
    /// The stack answered with an error instead of a response.
    fn failed(&self, error: &BoxError);
}

/// Where the leaf tells what an answer costs in tokens while it goes to
/// the client: the limit layer charges its tenant through it (see
/// [`crate::limit`]). Every method is a note; none may block.
pub trait Meter: Send + Sync + std::fmt::Debug {
    /// `tokens` more output tokens were relayed (a chunk is about one).
    fn streamed(&self, tokens: u64);
    /// The answer ended: the engine's own counts, when it gave them, replace
    /// the estimates.
    fn finished(&self, outcome: &Outcome);
}

/// Starts a [`Trail`] for each request (see [`crate::trace`]).
pub trait Tracer: Send + Sync + std::fmt::Debug {
    /// A new request enters the stack.
    fn start(&self, request: &Arc<RouteRequest>) -> Arc<dyn Trail>;
}
