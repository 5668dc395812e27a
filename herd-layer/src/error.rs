//! The one error a client sees: status, message, machine-readable code and,
//! when waiting helps, a `Retry-After`.
//!
//! Whatever went wrong — a body herd refuses, a stack failure (mapped once,
//! in [`crate::stack::failure`]) — becomes a [`ClientError`]; each dialect
//! then shapes it the way its clients expect ([`crate::dialect::error_body`]),
//! and each edge sends it its own way (an HTTP response in the proxy, an
//! `ImmediateResponse` in herd-epp).

use std::time::Duration;

use http::StatusCode;

/// An error as a client will be told it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ClientError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A sentence for a person.
    pub message: String,
    /// A stable code for programs (OpenAI's `error.code`), when there is one.
    pub code: Option<&'static str>,
    /// How long to wait before trying again, when waiting helps.
    pub retry_after: Option<Duration>,
    /// Extra response headers (`WWW-Authenticate`, `x-ratelimit-*`).
    pub headers: Vec<(&'static str, String)>,
}

impl ClientError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ClientError {
            status,
            message: message.into(),
            code: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// With a machine-readable code.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// With a `Retry-After`.
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    /// With an extra response header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The `Retry-After` header value: whole seconds, rounded up (a client
    /// that waits exactly that long must find room), at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(retry_after_secs)
    }
}

/// A wait as `Retry-After` says it: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(d: std::time::Duration) -> u64 {
    let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(super::retry_after_secs(Duration::from_millis(31_600)), 32);
        assert_eq!(super::retry_after_secs(Duration::from_secs(5)), 5);
        assert_eq!(super::retry_after_secs(Duration::ZERO), 1);
    }
}
