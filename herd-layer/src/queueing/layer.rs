use std::sync::Arc;

use tower::Layer;

use super::{Admission, QueueConfig, Queueing};

/// Adds per node:model admission in front of a service.
#[derive(Clone, Debug)]
pub struct QueueingLayer {
    admission: Admission,
    cfg: Arc<QueueConfig>,
}

impl QueueingLayer {
    /// Admission through `admission`, waits bounded by `cfg`.
    pub fn new(admission: Admission, cfg: Arc<QueueConfig>) -> Self {
        QueueingLayer { admission, cfg }
    }
}

impl<S> Layer<S> for QueueingLayer {
    type Service = Queueing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Queueing::new(inner, self.admission.clone(), self.cfg.clone())
    }
}
