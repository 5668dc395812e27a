use std::sync::Arc;

use tower::Layer;

use super::{AuthConfig, Authenticate, Keys};

/// Checks every matched route's caller (see [`super`]).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    keys: Keys,
    cfg: Arc<AuthConfig>,
    https_only: bool,
}

impl AuthLayer {
    /// Callers checked against `keys` under `cfg`; with `https_only`, a
    /// request that came over plain HTTP is refused whoever sends it.
    pub fn new(keys: Keys, cfg: Arc<AuthConfig>, https_only: bool) -> Self {
        AuthLayer {
            keys,
            cfg,
            https_only,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Authenticate<S> {
        Authenticate {
            inner,
            keys: self.keys.clone(),
            cfg: self.cfg.clone(),
            https_only: self.https_only,
        }
    }
}
