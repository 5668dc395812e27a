use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use tower::Service;

use super::{Admission, QueueConfig};
use crate::body::Guarded;
use crate::routed::{Body, BoxError, MissingPick, ResponseFuture, Routed};

/// Holds each request until its node:model has a free slot, and keeps the
/// slot until the response body ends.
#[derive(Clone, Debug)]
pub struct Queueing<S> {
    inner: S,
    admission: Admission,
    cfg: Arc<QueueConfig>,
}

impl<S> Queueing<S> {
    /// Admits requests to `inner` through `admission`.
    pub fn new(inner: S, admission: Admission, cfg: Arc<QueueConfig>) -> Self {
        Queueing {
            inner,
            admission,
            cfg,
        }
    }
}

impl<S> Service<Routed> for Queueing<S>
where
    S: Service<Routed, Response = http::Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is decided per node in `call`, once the pick is known; the
        // inner service is readied there, after admission.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Routed) -> Self::Future {
        let admission = self.admission.clone();
        let cfg = self.cfg.clone();
        let inner = self.inner.clone();
        let fut = async move {
            let pick = req.pick.as_ref().ok_or(MissingPick("queueing"))?;
            let waited = std::time::Instant::now();
            let span = req.trail.as_ref().and_then(|t| t.queue_started(&pick.node));
            let permit = admission
                .acquire(&pick.node, &req.model, pick.slots, &cfg)
                .await?;
            drop(span);
            if let Some(t) = &req.trail {
                t.queued(waited.elapsed());
            }
            let mut inner = inner;
            let rsp = tower::ServiceExt::ready(&mut inner)
                .await?
                .call(req)
                .await?;
            Ok(rsp.map(|body| Guarded::new(body, permit).boxed()))
        };
        ResponseFuture::new(fut)
    }
}
