//! The proxy's dashboard routes: the page (`/dashboard`, its files,
//! `/dashboard/info`), the live stream (`/fleet/events`), the config in
//! effect (`/fleet/config`), and what the core's dashboard needs from the
//! proxy ([`AppSources`]: the full health report, nodes seen over mDNS that
//! did not attach).
//!
//! The page and the stream are the core's ([`crate::dashboard`]), shared
//! with herd-epp; the store-backed views (trends, usage, benchmarks) and
//! the control actions are the proxy's own HTTP API, which the page calls
//! like any client, under the same authorisation.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};

use super::AppState;
use crate::app::config::RouterConfig;
use crate::app::telemetry::Telemetry;
use crate::dashboard::{Dashboard, Info, Sources};
use crate::discovery::Attachments;
use crate::discovery::mdns::SeenNodes;
use crate::fleet::Fleet;
use crate::live::Live;

/// The proxy's views, in tab order.
pub const VIEWS: &[&str] = &[
    "fleet",
    "routing",
    "models",
    "trends",
    "health",
    "usage",
    "benchmarks",
    "control",
];

/// The dashboard of the proxy.
pub fn dashboard(cfg: &RouterConfig, fleet: Fleet, live: Live) -> Dashboard {
    let info = Info {
        shape: "herd",
        version: env!("CARGO_PKG_VERSION"),
        read_only: false,
        views: VIEWS.to_vec(),
        usage_by: super::observe::USAGE_BY
            .iter()
            .copied()
            .filter(|b| !matches!(*b, "hour" | "day"))
            .collect(),
    };
    Dashboard::new(&cfg.routing.dashboard, &info, fleet, live)
}

/// What the proxy tells the dashboard's sampler.
#[derive(Debug)]
pub struct AppSources {
    /// The fleet.
    pub fleet: Fleet,
    /// Queues and learned history.
    pub live: Live,
    /// The health window and the store.
    pub telemetry: Arc<Telemetry>,
    /// The config.
    pub cfg: Arc<RouterConfig>,
    /// Attached herd-nodes.
    pub attachments: Arc<Attachments>,
    /// herd-nodes seen over mDNS.
    pub seen: Option<SeenNodes>,
}

impl Sources for AppSources {
    fn health(&self) -> Value {
        json!(super::observe::health_report(
            &self.fleet,
            &self.live,
            &self.telemetry,
            &self.cfg
        ))
    }

    fn extras(&self) -> Value {
        extras(
            &self.attachments,
            self.seen.as_ref(),
            self.cfg.routing.fleet_token.is_some(),
        )
    }
}

/// Attached nodes, and nodes seen over mDNS that did not attach (and why).
pub fn extras(attachments: &Attachments, seen: Option<&SeenNodes>, token: bool) -> Value {
    json!({
        "mdns": seen.is_some(),
        "attached": attachments.attached().iter().map(|n| &**n).collect::<Vec<_>>(),
        "unattached": seen.map(|s| s.unattached(attachments, token)).unwrap_or_default(),
    })
}

/// `GET /dashboard` and `GET /dashboard/{file}`.
pub(super) async fn page(State(st): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    match st.dashboard.page(uri.path(), &headers) {
        Some(r) => r.into_response(),
        None => crate::dashboard::json_error(
            StatusCode::NOT_FOUND,
            &format!("no dashboard file {}", uri.path()),
        )
        .into_response(),
    }
}

/// `GET /dashboard/{file}` (the path is read from the URI).
pub(super) async fn file(
    st: State<AppState>,
    Path(_file): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    page(st, uri, headers).await
}

/// `GET /dashboard/info`.
pub(super) async fn info(State(st): State<AppState>) -> Response {
    st.dashboard.info().into_response()
}

/// `GET /fleet/events`: the live stream.
pub(super) async fn events(State(st): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    st.dashboard.events(&headers, uri.query()).into_response()
}

/// `GET /fleet/config`: the config in effect, secrets replaced by `(set)`.
pub(super) async fn config(State(st): State<AppState>) -> Response {
    let mut v = serde_json::to_value(&*st.cfg).unwrap_or_default();
    redact(&mut v);
    axum::Json(v).into_response()
}

/// Replace the values of secret-looking keys (`token`, `…_token`, `…_key`,
/// secrets, passwords, hashes) with `(set)`; unset ones stay null.
fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                let k = k.to_ascii_lowercase();
                let secret = k == "token"
                    || k.ends_with("_token")
                    || k == "key"
                    || k.ends_with("_key")
                    || k.contains("secret")
                    || k.contains("password")
                    || k.contains("hash");
                if secret {
                    if !x.is_null() && !x.is_boolean() {
                        *x = Value::String("(set)".into());
                    }
                } else {
                    redact(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut v = json!({"fleet_token": "abc", "default_output_tokens": 256,
            "a": {"otlp_secret": "s", "n": 1, "api_key": "k"}, "list": [{"token": "x"}], "unset_token": null});
        redact(&mut v);
        assert_eq!(v["fleet_token"], "(set)");
        assert_eq!(v["a"]["otlp_secret"], "(set)");
        assert_eq!(v["a"]["api_key"], "(set)");
        assert_eq!(v["list"][0]["token"], "(set)");
        assert_eq!(v["a"]["n"], 1);
        assert_eq!(v["default_output_tokens"], 256);
        assert_eq!(v["unset_token"], Value::Null);
    }
}
