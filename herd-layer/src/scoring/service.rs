use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::Service;

use crate::rank::{NoCandidates, Observations, ScoreInput, ScoringConfig, score, slots_for};
use crate::routed::{BoxError, Pick, Routed};

/// The discovery layer did not run before scoring (a stack built wrongly).
#[derive(Debug, thiserror::Error)]
#[error("scoring needs a fleet snapshot; the discovery layer must run first")]
pub struct MissingSnapshot;

/// Ranks the fleet for each request and records the best node as its [`Pick`].
#[derive(Clone)]
pub struct Scoring<S> {
    inner: S,
    obs: Arc<dyn Observations + Send + Sync>,
    cfg: Arc<ScoringConfig>,
}

impl<S> std::fmt::Debug for Scoring<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoring").finish_non_exhaustive()
    }
}

impl<S> Scoring<S> {
    /// Scores for `inner` with `obs` and `cfg`.
    pub fn new(
        inner: S,
        obs: Arc<dyn Observations + Send + Sync>,
        cfg: Arc<ScoringConfig>,
    ) -> Self {
        Scoring { inner, obs, cfg }
    }
}

/// Rank the fleet for one attempt of a request (the scoring step, callable
/// outside a Tower stack, e.g. by the Endpoint Picker).
pub fn pick(
    req: &Routed,
    obs: &(dyn Observations + Send + Sync),
    cfg: &ScoringConfig,
) -> Result<Pick, BoxError> {
    let view = req.view.as_ref().ok_or(MissingSnapshot)?;
    let input = ScoreInput {
        model: &req.model,
        kind: req.request.kind(),
        format: req.request.dialect(),
        est_prompt_tokens: req.request.est_prompt_tokens,
        max_output_tokens: req.request.max_output_tokens,
        exclude: &req.exclude,
        only: req.only.as_deref(),
        endpoint: req.request.endpoint,
        native_only: req.native_only,
        needs: req.request.needs,
        now_ms: crate::fleet::now_ms(),
        prefix: Some(&req.request.prefix).filter(|p| !p.is_empty()),
    };
    let ranking = Arc::new(score(view, obs, &input, cfg));
    let Some(best) = ranking.best() else {
        return Err(NoCandidates {
            model: req.model.clone(),
            summary: ranking.elimination_summary(),
            ranking,
        }
        .into());
    };
    let node = view
        .node(&best.node)
        .expect("a candidate comes from the same snapshot");
    Ok(Pick {
        node: best.node.clone(),
        url: best.url.clone(),
        addr: node.addr,
        engine: node.engine,
        version: node.engine_version.clone(),
        slots: slots_for(node, obs, &req.model, cfg).1,
        concurrency: 0,
        temperature: best.temperature,
        score: best.score,
        ranking: ranking.clone(),
    })
}

impl<S> Service<Routed> for Scoring<S>
where
    S: Service<Routed, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Routed) -> Self::Future {
        match pick(&req, &*self.obs, &self.cfg) {
            Ok(pick) => {
                req.pick = Some(pick);
                ResponseFuture::Called {
                    fut: self.inner.call(req),
                }
            }
            Err(e) => ResponseFuture::Failed { error: Some(e) },
        }
    }
}

pin_project! {
    /// Either the inner service's future, or the scoring failure.
    #[project = ResponseFutureProj]
    #[allow(missing_docs)] // the variants' fields are private in all but name
    pub enum ResponseFuture<F> {
        /// Scored; the inner service runs.
        Called { #[pin] fut: F },
        /// Scoring failed; this is why.
        Failed { error: Option<BoxError> },
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Called { fut } => fut.poll(cx),
            ResponseFutureProj::Failed { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}
