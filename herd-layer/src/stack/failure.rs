//! What a client is told when the stack fails: one mapping from the layers'
//! error types to a [`ClientError`], used by the proxy's HTTP surface and by
//! herd-epp alike (herd-epp then applies the Endpoint Picker protocol's own
//! status rule, see `herd_epp::leaf`).

use std::time::Duration;

use http::StatusCode;

use crate::error::ClientError;
use crate::fleet::FleetView;
use crate::forward::{InvalidRequest, UpstreamError, UpstreamErrorKind};
use crate::limit::{RateLimited, Which};
use crate::queueing::{Evicted, QueueTimeout, Shed};
use crate::rank::NoCandidates;
use crate::retry::{AutoPullFailed, PullNotAllowed, RetriesExhausted};
use crate::routed::BoxError;

/// Map a routing-stack failure to what the client should see.
pub fn client_error(err: &BoxError, view: &FleetView) -> ClientError {
    if let Some(e) = err.downcast_ref::<NoCandidates>() {
        if let Some(why) = e.ranking.incapable() {
            // Every copy of the model lacks what the request needs: asking
            // again will not help; another model will.
            return ClientError::bad_request(format!(
                "model {:?} cannot serve this request on any node: {why}",
                e.model
            ))
            .code("model_not_capable");
        }
        if e.model_unknown() {
            return ClientError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "model {:?} not found on any node; {}",
                    e.model,
                    where_models_are(view)
                ),
            )
            .code("model_not_found");
        }
        return ClientError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no node can serve model {:?} right now: {}",
                e.model, e.summary
            ),
        )
        .code("no_eligible_node")
        .retry_after(Duration::from_secs(5));
    }
    if let Some(e) = err.downcast_ref::<AutoPullFailed>() {
        return ClientError::new(
            StatusCode::NOT_FOUND,
            format!("{e}; {}", where_models_are(view)),
        )
        .code("model_not_found");
    }
    if let Some(e) = err.downcast_ref::<RateLimited>() {
        let (status, code) = match e.which {
            Which::Tenants => (StatusCode::SERVICE_UNAVAILABLE, "too_many_tenants"),
            _ => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded"),
        };
        let mut c = ClientError::new(status, e.message.clone())
            .code(code)
            .retry_after(e.retry_after);
        c.headers = e.headers.pairs();
        return c;
    }
    if let Some(e) = err.downcast_ref::<PullNotAllowed>() {
        return ClientError::new(
            StatusCode::NOT_FOUND,
            format!("{e}; {}", where_models_are(view)),
        )
        .code("model_not_found");
    }
    if let Some(e) = err.downcast_ref::<Shed>() {
        return ClientError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            .code("queue_full")
            .retry_after(e.retry_after);
    }
    if let Some(e) = err.downcast_ref::<Evicted>() {
        return ClientError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            .code("node_unresponsive")
            .retry_after(Duration::from_secs(5));
    }
    if let Some(e) = err.downcast_ref::<QueueTimeout>() {
        return ClientError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            .code("queue_timeout")
            .retry_after(e.retry_after);
    }
    if let Some(e) = err.downcast_ref::<RetriesExhausted>() {
        let status = e
            .status
            .filter(|s| (400..500).contains(s) && *s != 404 && *s != 429)
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_GATEWAY);
        return ClientError::new(status, e.to_string()).code("upstream_failed");
    }
    if let Some(e) = err.downcast_ref::<UpstreamError>() {
        return match &e.kind {
            UpstreamErrorKind::Status { status, message } if (400..500).contains(status) => {
                ClientError::new(
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                    message.clone(),
                )
            }
            _ => ClientError::new(StatusCode::BAD_GATEWAY, e.to_string()).code("upstream_failed"),
        };
    }
    if let Some(e) = err.downcast_ref::<crate::dialect::upload::UploadFailed>() {
        return e.0.clone();
    }
    if let Some(e) = err.downcast_ref::<InvalidRequest>() {
        return ClientError::bad_request(e.to_string());
    }
    tracing::error!(error = %err, "unexpected routing failure");
    ClientError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).code("internal_error")
}

/// Whether the request itself caused the failure (a 4xx other than a
/// timeout or a full queue): a body the node refused, a model no node has
/// and no registry could pull. Health never counts these against a node.
pub fn client_fault(err: &BoxError) -> bool {
    let e = client_error(err, &FleetView::default());
    e.status.is_client_error()
        && e.status != StatusCode::REQUEST_TIMEOUT
        && e.status != StatusCode::TOO_MANY_REQUESTS
}

/// "available models: a (n1, n2), b (n3)", bounded in length.
pub fn where_models_are(view: &FleetView) -> String {
    let models = view.models();
    if models.is_empty() {
        return "no node reports any model yet".into();
    }
    let mut parts = Vec::new();
    for (name, nodes) in models.iter().take(20) {
        let nodes: Vec<&str> = nodes.iter().map(|n| &**n).collect();
        parts.push(format!("{name} ({})", nodes.join(", ")));
    }
    let more = models.len().saturating_sub(20);
    let mut s = format!("available models: {}", parts.join(", "));
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    s
}
