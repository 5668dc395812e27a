use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderName, HeaderValue};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use super::{RateHeaders, RateLimited, Ticket};
use crate::body::Guarded;
use crate::routed::{Body, BoxError};

pin_project! {
    /// The inner call of an admitted request (its answer then carries the
    /// tenant's quotas and holds the ticket until the body ends), or a
    /// refusal ready at once.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        refused: Option<Box<RateLimited>>,
        ticket: Option<Arc<Ticket>>,
        headers: RateHeaders,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn pass(inner: F) -> Self {
        ResponseFuture {
            inner: Some(inner),
            refused: None,
            ticket: None,
            headers: RateHeaders::default(),
        }
    }

    pub(super) fn refused(e: Box<RateLimited>) -> Self {
        ResponseFuture {
            inner: None,
            refused: Some(e),
            ticket: None,
            headers: RateHeaders::default(),
        }
    }

    pub(super) fn admitted(inner: F, ticket: Arc<Ticket>, headers: RateHeaders) -> Self {
        ResponseFuture {
            inner: Some(inner),
            refused: None,
            ticket: Some(ticket),
            headers,
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<Body>, BoxError>>,
{
    type Output = Result<http::Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(e) = this.refused.take() {
            return Poll::Ready(Err(e));
        }
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err("the limit layer was polled after it answered".into()));
        };
        let r = ready!(inner.poll(cx));
        let Some(ticket) = this.ticket.take() else {
            return Poll::Ready(r);
        };
        Poll::Ready(match r {
            Ok(mut rsp) => {
                for (k, v) in this.headers.pairs() {
                    if let Ok(v) = HeaderValue::from_str(&v) {
                        rsp.headers_mut().insert(HeaderName::from_static(k), v);
                    }
                }
                // The slot is held, and the answer charged, until its end.
                Ok(rsp.map(|b| Guarded::new(b, ticket).boxed()))
            }
            Err(e) => {
                ticket.refund();
                Err(e)
            }
        })
    }
}
