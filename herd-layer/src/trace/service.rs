use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use super::ResponseFuture;
use crate::routed::{BoxError, Routed, Tracer};

/// Starts a trail for each request and hands it down with the request.
#[derive(Clone, Debug)]
pub struct Traced<S> {
    inner: S,
    tracer: Arc<dyn Tracer>,
}

impl<S> Traced<S> {
    /// Trace requests to `inner` with `tracer`.
    pub fn new(inner: S, tracer: Arc<dyn Tracer>) -> Self {
        Traced { inner, tracer }
    }
}

impl<S, R> Service<Routed> for Traced<S>
where
    S: Service<Routed, Response = R, Error = BoxError>,
{
    type Response = R;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Routed) -> Self::Future {
        let trail = self.tracer.start(&req.request);
        req.trail = Some(trail.clone());
        ResponseFuture::new(self.inner.call(req), trail)
    }
}
