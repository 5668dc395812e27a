use tower::Layer;

use super::{Limited, Limiter};

/// Puts per-tenant limits in front of a service.
#[derive(Clone, Debug)]
pub struct LimitLayer {
    limiter: Limiter,
}

impl LimitLayer {
    /// Limits enforced through `limiter` (shared by every request).
    pub fn new(limiter: Limiter) -> Self {
        LimitLayer { limiter }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited::new(inner, self.limiter.clone())
    }
}
