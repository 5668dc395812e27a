//! The HTTP client herd talks to nodes with: pooled, no Nagle delay, plain
//! `http` only (engines are reached over the LAN, never with TLS), and a
//! bounded connect time. One builder, so the forward leaf, auto-pull,
//! pre-warm, the agentless poller and the proxy's pass-through endpoints all
//! connect the same way.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The pooled client type.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A pooled HTTP client for talking to nodes.
pub fn client(connect_timeout: Duration) -> HttpClient {
    client_for(connect_timeout)
}

/// [`client`] for another request body type (a streamed upload, say).
pub fn client_for<B>(connect_timeout: Duration) -> Client<HttpConnector, B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(http)
}

/// The whole chain of an error's causes, for messages that say what happened.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
