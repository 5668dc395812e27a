use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use axum::response::Response;
use http::{Request, StatusCode};
use pin_project_lite::pin_project;
use tower::Service;

use super::{
    AuthConfig, Caller, Keys, Part, Presented, decide, is_loopback, policy, presented, refusal,
};
use crate::app::api::error::render;
use crate::error::ClientError;
use crate::request::{Dialect, Endpoint};
use crate::serve::{Peer, Tls};

/// The auth check in front of a route (see [`super`]).
#[derive(Clone, Debug)]
pub struct Authenticate<S> {
    pub(super) inner: S,
    pub(super) keys: Keys,
    pub(super) cfg: Arc<AuthConfig>,
    pub(super) https_only: bool,
}

/// The dialect a refusal is written in, from the path called.
pub fn dialect_of(path: &str) -> Dialect {
    if let Some(e) = Endpoint::from_path(path) {
        return e.dialect();
    }
    if path.starts_with("/v1/messages") {
        Dialect::Anthropic
    } else if path.starts_with("/v1/") {
        Dialect::OpenAi
    } else {
        Dialect::Ollama
    }
}

impl<S, B> Service<Request<B>> for Authenticate<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let dialect = dialect_of(req.uri().path());
        let loopback = req
            .extensions()
            .get::<Peer>()
            .is_some_and(|p| is_loopback(p.0.ip()));
        // Keys travel in headers: off this machine, only over TLS.
        if self.https_only && !loopback && req.extensions().get::<Tls>().is_none() {
            let e = ClientError::new(
                StatusCode::FORBIDDEN,
                "this herd takes API calls from other machines over https only (plain http is kept for herd-node attachments and this machine); use https:// in the client's base URL",
            )
            .code("https_required");
            return ResponseFuture::refused(render(&e, dialect));
        }
        let path = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| req.uri().path().to_string(), |m| m.as_str().to_string());
        let part = policy::part_of(req.method(), &path);
        let keys_exist = self.keys.any();
        let key = presented(req.headers(), &self.keys);
        let access = self.cfg.access(part, keys_exist);
        if let Err(d) = decide(part, access, loopback, &key, keys_exist) {
            return ResponseFuture::refused(render(&refusal(d, part, &key), dialect));
        }
        let admin_access = self.cfg.access(Part::Admin, keys_exist);
        let admin = decide(Part::Admin, admin_access, loopback, &key, keys_exist).is_ok();
        req.extensions_mut().insert(Caller {
            key: match key {
                Presented::Valid(k) => Some(k),
                _ => None,
            },
            admin,
        });
        // The clone that was readied is the one called (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::inner(inner.call(req))
    }
}

pin_project! {
    /// The route's answer, or a refusal ready at once.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        refused: Option<Response>,
    }
}

impl<F> ResponseFuture<F> {
    fn inner(f: F) -> Self {
        ResponseFuture {
            inner: Some(f),
            refused: None,
        }
    }

    fn refused(r: Response) -> Self {
        ResponseFuture {
            inner: None,
            refused: Some(r),
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
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(r) = this.refused.take() {
            return Poll::Ready(Ok(r));
        }
        match this.inner.as_pin_mut() {
            Some(f) => f.poll(cx),
            None => Poll::Ready(Ok(Response::new(axum::body::Body::empty()))),
        }
    }
}
