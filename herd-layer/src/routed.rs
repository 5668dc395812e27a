//! The request as it travels down the routing stack, and the error type the
//! stack speaks.
//!
//! Each layer adds what it decided: discovery the fleet snapshot, scoring the
//! [`Pick`], retry the exclusions and the model being tried. Cloning is cheap
//! (the parsed request is shared), which is what lets the retry layer replay
//! a request without re-parsing or re-buffering its body.

use std::sync::Arc;

use bytes::Bytes;

use crate::fleet::{Engine, FleetView, NodeId};
use crate::request::RouteRequest;
use crate::scoring::{Ranking, Temperature};

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
    pub request: Arc<RouteRequest>,
    /// The model being tried: the client's, or a fallback.
    pub model: String,
    /// Attempts made before this one.
    pub attempt: u32,
    /// Nodes that already failed this request.
    pub exclude: Vec<NodeId>,
    /// When set (the EPP's subset hint), only these nodes may serve.
    pub only: Option<Arc<[NodeId]>>,
    /// Set by the discovery layer: the fleet as this attempt sees it.
    pub view: Option<Arc<FleetView>>,
    /// Set by the scoring layer.
    pub pick: Option<Pick>,
    /// Set by the telemetry layer: where layers note what they decided.
    pub trail: Option<Arc<crate::telemetry::Trail>>,
}

impl Routed {
    pub fn new(request: Arc<RouteRequest>) -> Self {
        let model = request.model.clone();
        Routed {
            request,
            model,
            attempt: 0,
            exclude: Vec::new(),
            only: None,
            view: None,
            pick: None,
            trail: None,
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
    pub node: NodeId,
    pub url: String,
    pub addr: Option<std::net::SocketAddr>,
    pub engine: Engine,
    pub slots: u32,
    pub temperature: Temperature,
    pub score: f64,
    pub ranking: Arc<Ranking>,
}
