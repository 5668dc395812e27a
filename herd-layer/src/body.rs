//! Body wrappers that tie work to the life of a response stream.
//!
//! A response is not over when its headers are sent: an LLM keeps a node busy
//! until the last token. These wrappers hold a guard (an admission permit, a
//! completion hook) until the body reaches its end or is dropped because the
//! client went away.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Holds `guard` until the inner body ends or is dropped.
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> Guarded<B, G> {
    /// Holds `guard` until `inner` ends or is dropped.
    pub fn new(inner: B, guard: G) -> Self {
        Guarded {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B, G> HttpBody for Guarded<B, G>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let out = this.inner.poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &out {
            this.guard.take();
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn guard_is_released_at_end_of_stream() {
        let released = Arc::new(AtomicBool::new(false));
        let mut b = Guarded::new(Full::new(Bytes::from_static(b"x")), Flag(released.clone()));
        let f = b.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "x");
        assert!(!released.load(Ordering::SeqCst) || b.is_end_stream());
        assert!(b.frame().await.is_none());
        assert!(released.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn guard_is_released_when_the_client_goes_away() {
        let released = Arc::new(AtomicBool::new(false));
        let b = Guarded::new(Full::new(Bytes::from_static(b"x")), Flag(released.clone()));
        drop(b);
        assert!(released.load(Ordering::SeqCst));
    }
}
