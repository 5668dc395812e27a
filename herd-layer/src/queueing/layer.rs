use std::sync::Arc;

use tower::Layer;

use super::{Admission, QueueConfig, Queueing};
use crate::prefix::PrefixIndex;

/// Adds per node:model admission in front of a service.
#[derive(Clone, Debug)]
pub struct QueueingLayer {
    admission: Admission,
    cfg: Arc<QueueConfig>,
    prefix: Option<PrefixIndex>,
}

impl QueueingLayer {
    /// Admission through `admission`, waits bounded by `cfg`.
    pub fn new(admission: Admission, cfg: Arc<QueueConfig>) -> Self {
        QueueingLayer {
            admission,
            cfg,
            prefix: None,
        }
    }

    /// Records admitted prompts' prefixes in `index` (see
    /// [`Queueing::with_prefix`]).
    pub fn with_prefix(mut self, index: Option<PrefixIndex>) -> Self {
        self.prefix = index;
        self
    }
}

impl<S> Layer<S> for QueueingLayer {
    type Service = Queueing<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Queueing::new(inner, self.admission.clone(), self.cfg.clone())
            .with_prefix(self.prefix.clone())
    }
}
