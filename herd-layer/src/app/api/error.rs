//! Errors as the client expects them: a [`ClientError`] shaped by the
//! caller's dialect ([`crate::dialect::error_body`]), with the right status
//! and, when waiting helps, a `Retry-After`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use crate::dialect;
use crate::error::ClientError;
use crate::request::Dialect;

/// The HTTP response for `e` in `dialect`.
pub fn render(e: &ClientError, dialect: Dialect) -> Response {
    let body = dialect::error_body(dialect, e);
    let mut rsp = (e.status, axum::Json(body)).into_response();
    if let Some(secs) = e.retry_after_secs()
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        rsp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    for (k, v) in &e.headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            rsp.headers_mut()
                .insert(http::HeaderName::from_static(k), v);
        }
    }
    rsp
}

/// `.render(dialect)` on a [`ClientError`].
pub trait Render {
    /// The HTTP response for this error in `dialect`.
    fn render(&self, dialect: Dialect) -> Response;
}

impl Render for ClientError {
    fn render(&self, dialect: Dialect) -> Response {
        render(self, dialect)
    }
}
