use std::sync::Arc;

use super::Traced;
use crate::routed::Tracer;

/// Puts a [`Traced`] step on top of a service.
#[derive(Clone, Debug)]
pub struct TraceLayer {
    tracer: Arc<dyn Tracer>,
}

impl TraceLayer {
    /// Trails come from `tracer`.
    pub fn new(tracer: Arc<dyn Tracer>) -> Self {
        TraceLayer { tracer }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced::new(inner, self.tracer.clone())
    }
}
