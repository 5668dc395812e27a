//! The live dashboard: a single page served by herd itself, and the event
//! stream that keeps it current.
//!
//! It lives in the core, not the app, because both shapes serve it: the
//! proxy on its own port with all eight views, herd-epp read-only on its
//! metrics port with the views it has data for (fleet, routing, models,
//! health). The pieces:
//!
//! - [`assets`]: the page (HTML, CSS, JS written for herd, compiled in; no
//!   other origin is ever asked for anything);
//! - [`hub`]: one bounded ring of events for every open tab, the latest
//!   state for a tab that connects, reconnection with `Last-Event-ID`;
//! - [`trail`]: the [`Tracer`](crate::routed::Tracer) that publishes each
//!   routing decision (winner, runner-up, every signal, every elimination)
//!   and how the request ended;
//! - [`sampler`]: one task that turns fleet, queue, history, pull and
//!   health state into events when they change;
//! - [`sse`]: `GET /fleet/events`, the hub as Server-Sent Events;
//! - [`views`]: the read-only JSON both shapes answer (`/fleet/status`,
//!   `/fleet/explain`, `/fleet/pulls`).
//!
//! Nothing here reads the store: the proxy adds its store-backed views
//! (trends, usage, benchmarks, control) through its own HTTP API, which the
//! page calls like any client — with the same authorisation.

pub mod assets;
pub mod event;
pub mod hub;
pub mod sampler;
pub mod settings;
pub mod sse;
pub mod trail;
pub mod views;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use serde_json::value::RawValue;

pub use hub::Hub;
pub use sampler::Sources;
pub use settings::DashboardConfig;
pub use trail::DecisionTracer;

use crate::fleet::Fleet;
use crate::live::Live;
use crate::routed::{Body, Tracer};

/// What the page is told about the herd serving it (`GET /dashboard/info`,
/// and the `info` of every snapshot).
#[derive(Clone, Debug, Serialize)]
pub struct Info {
    /// `herd` or `herd-epp`.
    pub shape: &'static str,
    /// herd's version.
    pub version: &'static str,
    /// No control actions (herd-epp).
    pub read_only: bool,
    /// The views this shape has data for, in tab order.
    pub views: Vec<&'static str>,
    /// The `by=` groupings `/fleet/analytics/usage` answers.
    pub usage_by: Vec<&'static str>,
}

/// The dashboard of one running herd. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Dashboard {
    hub: Hub,
    info: Arc<RawValue>,
    fleet: Fleet,
    live: Live,
}

impl Dashboard {
    /// A dashboard over `fleet` and `live`, told `info`.
    pub fn new(cfg: &DashboardConfig, info: &Info, fleet: Fleet, live: Live) -> Self {
        let info = serde_json::value::to_raw_value(info)
            .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"));
        Dashboard {
            hub: Hub::new(cfg),
            info: Arc::from(info),
            fleet,
            live,
        }
    }

    /// The event hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Whether `[dashboard] enabled`.
    pub fn enabled(&self) -> bool {
        self.hub.config().enabled
    }

    /// The tracer that feeds the routing view; `picks_only` for a leaf that
    /// returns picks (herd-epp).
    pub fn tracer(&self, picks_only: bool, cold_load_ms: f64) -> Arc<dyn Tracer> {
        Arc::new(DecisionTracer::new(
            self.hub.clone(),
            picks_only,
            cold_load_ms,
        ))
    }

    /// The sampler task (spawn it once; it ends when the dashboard closes).
    pub fn sampler(
        &self,
        sources: Arc<dyn Sources>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        sampler::run(
            self.hub.clone(),
            self.fleet.clone(),
            self.live.clone(),
            sources,
        )
    }

    /// `GET /dashboard` and its files; `None` for a path that is not one.
    pub fn page(&self, path: &str, headers: &http::HeaderMap) -> Option<http::Response<Body>> {
        if !self.enabled() {
            return Some(disabled());
        }
        let inm = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        assets::serve(path, inm)
    }

    /// `GET /fleet/events`.
    pub fn events(&self, headers: &http::HeaderMap, query: Option<&str>) -> http::Response<Body> {
        if !self.enabled() {
            return disabled();
        }
        let last = sse::last_event_id(headers, query);
        sse::response(&self.hub, last.as_deref(), &self.info)
    }

    /// `GET /dashboard/info`.
    pub fn info(&self) -> http::Response<Body> {
        if !self.enabled() {
            return disabled();
        }
        json_bytes(StatusCode::OK, Bytes::from(self.info.get().to_string()))
    }

    /// End every stream (herd is stopping).
    pub fn close(&self) {
        self.hub.close();
    }
}

fn disabled() -> http::Response<Body> {
    json_error(
        StatusCode::NOT_FOUND,
        "the dashboard is disabled ([dashboard] enabled = false)",
    )
}

fn json_bytes(status: StatusCode, body: Bytes) -> http::Response<Body> {
    let mut rsp = http::Response::new(Full::new(body).map_err(|e| match e {}).boxed());
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    rsp
}

/// A JSON response.
pub fn json_response(status: StatusCode, v: &serde_json::Value) -> http::Response<Body> {
    json_bytes(
        status,
        Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
    )
}

/// An error in Ollama's shape (`{"error": …}`), as herd's own routes answer.
pub fn json_error(status: StatusCode, message: &str) -> http::Response<Body> {
    json_response(status, &serde_json::json!({ "error": message }))
}
