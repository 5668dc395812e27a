use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::routed::{BoxError, Trail};

pin_project! {
    /// The inner future; an error is noted on the trail before it goes up.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        trail: Arc<dyn Trail>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, trail: Arc<dyn Trail>) -> Self {
        ResponseFuture { inner, trail }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, R> Future for ResponseFuture<F>
where
    F: Future<Output = Result<R, BoxError>>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let r = ready!(this.inner.poll(cx));
        if let Err(e) = &r {
            this.trail.failed(e);
        }
        Poll::Ready(r)
    }
}
