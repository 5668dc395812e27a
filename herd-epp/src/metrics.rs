//! Prometheus metrics on the metrics port (`/metrics`, Prometheus text
//! 0.0.4, encoded like herd's own — see
//! [`herd_layer::prometheus::encode_classic`]).
//!
//! Names follow the llm-d/GIE EPPs where a counterpart exists
//! (`…_request_total`, `…_scheduler_e2e_duration_seconds`, TTFT, tokens,
//! running requests) under herd's own `herd_epp_` prefix, so existing
//! dashboards map over with a rename. The last picks' scheduling times are
//! also kept in memory, exact rather than bucketed: [`Metrics::recent_picks`]
//! in process and `GET /debug/picks?since=N` on the metrics port, which is
//! how `herd-bench` reads a running herd-epp's p50/p99 per phase (the
//! histogram's doubling buckets are too coarse for a ~100 µs pick).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How many recent pick durations are kept.
const RECENT: usize = 100_000;

/// Labels of `herd_epp_request_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// `picked`, or the HTTP status of an immediate response.
    outcome: String,
}

/// Labels of the token counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelLabels {
    /// The model served (the client's, or a fallback).
    pub(crate) model: String,
    /// The `ip:port` that served it.
    pub(crate) endpoint: String,
}

/// herd-epp's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<OutcomeLabels, Counter>,
    scheduling: Histogram,
    pub(crate) ttft: Histogram,
    pub(crate) input_tokens: Family<ModelLabels, Counter>,
    pub(crate) output_tokens: Family<ModelLabels, Counter>,
    /// Only ever moved by a [`GaugeHold`] ([`Metrics::hold_running`]).
    running: Gauge,
    streams: Counter,
    /// Only ever moved by a [`GaugeHold`] ([`Metrics::open_stream`]).
    streams_open: Gauge,
    recent: Arc<Mutex<Recent>>,
}

/// One unit of an up/down gauge, raised when made and lowered when dropped.
///
/// Whoever owns it owns the unit: a stream task that ends normally, fails,
/// times out, is reset or unwinds from a panic drops what it holds, so the
/// gauge comes down exactly once on every path. Nothing else moves these
/// gauges.
#[must_use = "the gauge comes back down as soon as this is dropped"]
#[derive(Debug)]
pub(crate) struct GaugeHold(Gauge);

impl GaugeHold {
    fn new(g: &Gauge) -> Self {
        g.inc();
        GaugeHold(g.clone())
    }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The last [`RECENT`] pick durations and how many picks there were in all,
/// so a reader can ask for "everything after the `since`-th pick".
#[derive(Debug, Default)]
struct Recent {
    total: u64,
    picks: VecDeque<Duration>,
}

/// Picks after a given count, as `GET /debug/picks` returns them.
#[derive(Debug, serde::Serialize)]
pub struct PicksSince {
    /// Picks made since the process started.
    pub total: u64,
    /// Scheduling time of each pick after `since` that is still kept
    /// (oldest first), in microseconds.
    pub micros: Vec<f64>,
    /// Picks after `since` that were no longer kept.
    pub dropped: u64,
}

#[derive(Debug, serde::Deserialize)]
struct PicksQuery {
    #[serde(default)]
    since: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut r = Registry::with_prefix("herd_epp");
        let requests = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "request",
            "ext_proc requests by outcome (picked, or the immediate response status)",
            requests.clone(),
        );
        let scheduling = Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        r.register(
            "scheduler_e2e_duration_seconds",
            "Time to pick an endpoint: scoring plus admission (queue wait included)",
            scheduling.clone(),
        );
        let ttft = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        r.register(
            "request_ttft_seconds",
            "Time from the pick to the first response body chunk",
            ttft.clone(),
        );
        let input_tokens = Family::<ModelLabels, Counter>::default();
        r.register(
            "request_input_tokens",
            "Prompt tokens reported by responses",
            input_tokens.clone(),
        );
        let output_tokens = Family::<ModelLabels, Counter>::default();
        r.register(
            "request_output_tokens",
            "Output tokens reported by responses",
            output_tokens.clone(),
        );
        let running = Gauge::default();
        r.register(
            "request_running",
            "Requests holding an admission slot",
            running.clone(),
        );
        let streams = Counter::default();
        r.register("streams", "ext_proc streams opened", streams.clone());
        let streams_open = Gauge::default();
        r.register(
            "streams_open",
            "ext_proc streams open now",
            streams_open.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            requests,
            scheduling,
            ttft,
            input_tokens,
            output_tokens,
            running,
            streams,
            streams_open,
            recent: Arc::new(Mutex::new(Recent::default())),
        }
    }

    /// Count one request under `outcome` (`picked`, or an HTTP status).
    pub(crate) fn outcome(&self, outcome: &str) {
        self.requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// A stream opens: counted, and open until the hold is dropped.
    pub(crate) fn open_stream(&self) -> GaugeHold {
        self.streams.inc();
        GaugeHold::new(&self.streams_open)
    }

    /// A request holds an admission slot until the hold is dropped.
    pub(crate) fn hold_running(&self) -> GaugeHold {
        GaugeHold::new(&self.running)
    }

    /// Requests holding an admission slot now (`herd_epp_request_running`).
    pub fn running(&self) -> i64 {
        self.running.get()
    }

    /// ext_proc streams open now (`herd_epp_streams_open`).
    pub fn streams_open(&self) -> i64 {
        self.streams_open.get()
    }

    /// Count a pick and keep its scheduling time, for the histogram and `/debug/picks`.
    pub(crate) fn picked(&self, took: Duration) {
        self.outcome("picked");
        self.scheduling.observe(took.as_secs_f64());
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.picks.len() == RECENT {
            r.picks.pop_front();
        }
        r.picks.push_back(took);
        r.total += 1;
    }

    /// Scheduling times of recent picks, oldest first.
    pub fn recent_picks(&self) -> Vec<Duration> {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.picks.iter().copied().collect()
    }

    /// The picks after the first `since` (those still kept).
    pub fn picks_since(&self, since: u64) -> PicksSince {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let after = r.total.saturating_sub(since);
        let kept = (r.picks.len() as u64).min(after);
        PicksSince {
            total: r.total,
            micros: r
                .picks
                .iter()
                .skip(r.picks.len() - kept as usize)
                .map(|d| d.as_secs_f64() * 1e6)
                .collect(),
            dropped: after - kept,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        herd_layer::prometheus::encode_classic(&self.registry)
    }

    /// The metrics port's HTTP app: `/metrics` and `/debug/picks`.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .route("/metrics", get(exposition))
            .route("/debug/picks", get(debug_picks))
            .with_state(self.clone())
    }
}

async fn exposition(State(m): State<Metrics>) -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            herd_layer::prometheus::CONTENT_TYPE,
        )],
        m.render(),
    )
}

async fn debug_picks(
    State(m): State<Metrics>,
    q: Result<Query<PicksQuery>, QueryRejection>,
) -> Response {
    match q {
        Ok(Query(q)) => Json(m.picks_since(q.since)).into_response(),
        Err(e) => (
            http::StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "error": format!(
                    "`since` must be a count of picks (a non-negative integer): {}",
                    e.body_text()
                )
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_what_happened() {
        let m = Metrics::new();
        m.picked(Duration::from_micros(300));
        m.outcome("429");
        let text = m.render();
        assert!(
            text.contains("herd_epp_request_total{outcome=\"picked\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("herd_epp_request_total{outcome=\"429\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("herd_epp_scheduler_e2e_duration_seconds_count 1"),
            "{text}"
        );
        assert_eq!(m.recent_picks(), vec![Duration::from_micros(300)]);
    }

    #[test]
    fn holds_lower_their_gauge_once_however_they_end() {
        let m = Metrics::new();
        let a = m.hold_running();
        let b = m.hold_running();
        let s = m.open_stream();
        assert_eq!((m.running(), m.streams_open()), (2, 1));
        drop(a);
        assert_eq!(m.running(), 1);
        // A panic unwinding through the owner drops it too.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _owned = (b, s);
            panic!("the owner fails");
        }));
        assert!(r.is_err());
        assert_eq!((m.running(), m.streams_open()), (0, 0));
        let text = m.render();
        assert!(text.contains("herd_epp_request_running 0"), "{text}");
        assert!(text.contains("herd_epp_streams_open 0"), "{text}");
        assert!(text.contains("herd_epp_streams_total 1"), "{text}");
    }

    #[test]
    fn picks_since_counts_from_the_start_and_says_what_was_dropped() {
        let m = Metrics::new();
        for us in 1..=(RECENT as u64 + 10) {
            m.picked(Duration::from_micros(us));
        }
        let all = m.picks_since(0);
        assert_eq!(all.total, RECENT as u64 + 10);
        assert_eq!(all.micros.len(), RECENT);
        assert_eq!(all.dropped, 10);
        assert_eq!(all.micros[0], 11.0);
        let tail = m.picks_since(RECENT as u64 + 8);
        assert_eq!(tail.micros, vec![RECENT as f64 + 9.0, RECENT as f64 + 10.0]);
        assert_eq!(tail.dropped, 0);
        let none = m.picks_since(u64::MAX);
        assert!(none.micros.is_empty());
        assert_eq!(none.dropped, 0);
    }

    #[tokio::test]
    async fn debug_picks_answers_json_and_rejects_a_bad_since() {
        use tower::ServiceExt;
        let m = Metrics::new();
        m.picked(Duration::from_micros(120));
        m.picked(Duration::from_micros(80));
        let get = |uri: &str| {
            http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let rsp = m
            .router()
            .oneshot(get("/debug/picks?since=1"))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        let body = axum::body::to_bytes(rsp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["total"], 2);
        assert_eq!(v["micros"], serde_json::json!([80.0]));
        let rsp = m
            .router()
            .oneshot(get("/debug/picks?since=-3"))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 400);
        let body = axum::body::to_bytes(rsp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("since"), "{v}");
    }
}
