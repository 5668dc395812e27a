use std::sync::Arc;

use tower::Layer;

use super::Scoring;
use crate::rank::{Observations, ScoringConfig};

/// Adds a [`Scoring`] step in front of a service.
#[derive(Clone)]
pub struct ScoringLayer {
    obs: Arc<dyn Observations + Send + Sync>,
    cfg: Arc<ScoringConfig>,
}

impl ScoringLayer {
    /// Scores with `obs` (live load and history) and `cfg`.
    pub fn new(obs: Arc<dyn Observations + Send + Sync>, cfg: Arc<ScoringConfig>) -> Self {
        ScoringLayer { obs, cfg }
    }
}

impl std::fmt::Debug for ScoringLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoringLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ScoringLayer {
    type Service = Scoring<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Scoring::new(inner, self.obs.clone(), self.cfg.clone())
    }
}
