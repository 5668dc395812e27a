use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use super::{Limiter, ResponseFuture};
use crate::routed::{Body, BoxError, Meter, Routed};

/// Admits each request of a tenant within its limits, refuses the rest
/// with [`super::RateLimited`]; requests without a tenant pass untouched.
#[derive(Clone, Debug)]
pub struct Limited<S> {
    inner: S,
    limiter: Limiter,
}

impl<S> Limited<S> {
    /// Limit requests to `inner` through `limiter`.
    pub fn new(inner: S, limiter: Limiter) -> Self {
        Limited { inner, limiter }
    }
}

impl<S> Service<Routed> for Limited<S>
where
    S: Service<Routed, Response = http::Response<Body>, Error = BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Routed) -> Self::Future {
        let Some(tenant) = req.request.tenant.clone() else {
            return ResponseFuture::pass(self.inner.call(req));
        };
        match self.limiter.admit(&tenant, req.request.est_prompt_tokens) {
            Err(refused) => ResponseFuture::refused(refused),
            Ok(admitted) => {
                let ticket = Arc::new(admitted.ticket);
                req.meter = Some(ticket.clone() as Arc<dyn Meter>);
                ResponseFuture::admitted(self.inner.call(req), ticket, admitted.headers)
            }
        }
    }
}
