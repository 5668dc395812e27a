use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use tower::Service;

use super::{Admission, QueueConfig};
use crate::body::Guarded;
use crate::prefix::PrefixIndex;
use crate::routed::{Body, BoxError, MissingPick, ResponseFuture, Routed};

/// Holds each request until its node:model has a free slot, and keeps the
/// slot until the response body ends.
#[derive(Clone, Debug)]
pub struct Queueing<S> {
    inner: S,
    admission: Admission,
    cfg: Arc<QueueConfig>,
    prefix: Option<PrefixIndex>,
}

impl<S> Queueing<S> {
    /// Admits requests to `inner` through `admission`.
    pub fn new(inner: S, admission: Admission, cfg: Arc<QueueConfig>) -> Self {
        Queueing {
            inner,
            admission,
            cfg,
            prefix: None,
        }
    }

    /// Records each admitted request's prompt prefix in `index`, as sent to
    /// its node (prefix-cache affinity; see [`crate::prefix`]).
    pub fn with_prefix(mut self, index: Option<PrefixIndex>) -> Self {
        self.prefix = index;
        self
    }
}

/// Tokens of KV cache a node:model keeps: its slots times the loaded
/// context (4096, Ollama's default, when unknown).
fn cache_tokens(req: &Routed, pick: &crate::routed::Pick) -> u64 {
    let context = req
        .view
        .as_ref()
        .and_then(|v| v.node(&pick.node))
        .and_then(|n| n.loaded_model(&req.model))
        .map(|m| m.context_length)
        .filter(|c| *c > 0)
        .unwrap_or(4096);
    u64::from(pick.slots.max(1)) * u64::from(context)
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
        let prefix = self.prefix.clone();
        let fut = async move {
            let mut req = req;
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
            // Recorded again once the node answers when the model was not
            // loaded: the cache is only as old as the load, and a record
            // made before it finished would not count (see
            // `FleetView::loaded_since_ms`).
            let mut again = None;
            if let Some(index) = &prefix
                && !req.request.prefix.is_empty()
            {
                // The prompt goes to this node now: its slots will hold it.
                let capacity = cache_tokens(&req, pick);
                index.record(
                    &pick.node,
                    &req.model,
                    &req.request.prefix,
                    capacity,
                    crate::fleet::now_ms(),
                );
                if pick.temperature != crate::rank::Temperature::Hot {
                    again = Some((
                        index.clone(),
                        pick.node.clone(),
                        req.model.clone(),
                        req.request.prefix.clone(),
                        capacity,
                    ));
                }
            }
            if let Some(p) = req.pick.as_mut() {
                p.concurrency = permit.concurrency();
            }
            let mut inner = inner;
            let rsp = tower::ServiceExt::ready(&mut inner)
                .await?
                .call(req)
                .await?;
            if let Some((index, node, model, prefix, capacity)) = again {
                index.record(&node, &model, &prefix, capacity, crate::fleet::now_ms());
            }
            Ok(rsp.map(|body| Guarded::new(body, permit).boxed()))
        };
        ResponseFuture::new(fut)
    }
}
