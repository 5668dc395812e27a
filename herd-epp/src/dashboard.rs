//! The dashboard on herd-epp's metrics port, read-only: the fleet, routing
//! (the live decision feed and the explain form), models and health views
//! of herd's own dashboard ([`herd_layer::dashboard`]), from the same page,
//! the same event stream and the same JSON routes the proxy serves
//! (`/fleet/status`, `/fleet/explain`, `/fleet/pulls`, `/fleet/health`).
//!
//! herd-epp keeps no store and no window of requests, so its health report
//! is the fleet-state checks alone ([`herd_layer::health::state_report`]);
//! there are no control actions (Envoy's operator owns the data plane).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;

use herd_layer::config::RoutingConfig;
use herd_layer::dashboard::{Dashboard, Info, Sources, json_error, json_response, views};
use herd_layer::fleet::Fleet;
use herd_layer::health::{HealthConfig, StateInputs, state_report};
use herd_layer::live::Live;

/// The views herd-epp has data for.
pub const VIEWS: &[&str] = &["fleet", "routing", "models", "health"];

/// herd-epp's dashboard over its fleet.
pub fn dashboard(cfg: &RoutingConfig, fleet: Fleet, live: Live) -> Dashboard {
    let info = Info {
        shape: "herd-epp",
        version: env!("CARGO_PKG_VERSION"),
        read_only: true,
        views: VIEWS.to_vec(),
        usage_by: Vec::new(),
    };
    Dashboard::new(&cfg.dashboard, &info, fleet, live)
}

/// What the routes read.
#[derive(Clone, Debug)]
pub struct Board {
    /// The page and the event stream.
    pub dashboard: Dashboard,
    /// The nodes.
    pub fleet: Fleet,
    /// Queues and learned history.
    pub live: Live,
    /// Scoring, intervals.
    pub cfg: Arc<RoutingConfig>,
}

/// The fleet-state health report (herd-epp has no traffic window).
pub fn health(fleet: &Fleet, live: &Live, cfg: &RoutingConfig) -> herd_layer::health::Report {
    let hc = HealthConfig::default();
    state_report(
        &fleet.snapshot(),
        &StateInputs {
            admission: &live.admission,
            cfg: &hc,
            report_interval_ms: cfg.report_interval.as_millis() as u64,
            poll_interval_ms: cfg.poll_interval.as_millis() as u64,
            unresponsive: &live.history.hung_nodes(),
            refused: &|_| 0,
        },
    )
}

impl Sources for Board {
    fn health(&self) -> Value {
        serde_json::to_value(health(&self.fleet, &self.live, &self.cfg)).unwrap_or_default()
    }
}

/// The dashboard's routes, to merge into the metrics port's app.
pub fn router(board: Board) -> axum::Router {
    axum::Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/info", get(info))
        .route("/dashboard/{file}", get(page))
        .route("/fleet/events", get(events))
        .route("/fleet/status", get(status))
        .route("/fleet/explain", get(explain))
        .route("/fleet/pulls", get(pulls))
        .route("/fleet/health", get(health_route))
        .with_state(board)
}

async fn page(State(b): State<Board>, uri: Uri, headers: HeaderMap) -> Response {
    match b.dashboard.page(uri.path(), &headers) {
        Some(r) => r.into_response(),
        None => json_error(
            StatusCode::NOT_FOUND,
            &format!("no dashboard file {}", uri.path()),
        )
        .into_response(),
    }
}

async fn info(State(b): State<Board>) -> Response {
    b.dashboard.info().into_response()
}

async fn events(State(b): State<Board>, uri: Uri, headers: HeaderMap) -> Response {
    b.dashboard.events(&headers, uri.query()).into_response()
}

async fn status(State(b): State<Board>) -> Response {
    let m = views::status(&b.fleet.snapshot(), &b.live);
    json_response(StatusCode::OK, &Value::Object(m)).into_response()
}

async fn explain(State(b): State<Board>, uri: Uri) -> Response {
    match views::explain(uri.query(), &b.fleet.snapshot(), &b.live, &b.cfg.scoring) {
        Ok(v) => json_response(StatusCode::OK, &v).into_response(),
        Err(e) => json_error(e.status, &e.message).into_response(),
    }
}

async fn pulls(State(b): State<Board>) -> Response {
    json_response(StatusCode::OK, &views::pulls(&b.live)).into_response()
}

async fn health_route(State(b): State<Board>) -> Response {
    axum::Json(health(&b.fleet, &b.live, &b.cfg)).into_response()
}
