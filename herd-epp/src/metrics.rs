//! Prometheus metrics on the metrics port (`/metrics`, Prometheus text
//! 0.0.4, encoded like herd's own — see
//! [`herd_layer::telemetry::metrics::encode_classic`]).
//!
//! Names follow the llm-d/GIE EPPs where a counterpart exists
//! (`…_request_total`, `…_scheduler_e2e_duration_seconds`, TTFT, tokens,
//! running requests) under herd's own `herd_epp_` prefix, so existing
//! dashboards map over with a rename. The last picks' scheduling times are
//! also kept in memory for [`Metrics::recent_picks`] (benchmarks, tests).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How many recent pick durations are kept.
const RECENT: usize = 100_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `picked`, or the HTTP status of an immediate response.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
    pub endpoint: String,
}

/// herd-epp's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub requests: Family<OutcomeLabels, Counter>,
    pub scheduling: Histogram,
    pub ttft: Histogram,
    pub input_tokens: Family<ModelLabels, Counter>,
    pub output_tokens: Family<ModelLabels, Counter>,
    pub running: Gauge,
    pub streams: Counter,
    recent: Arc<Mutex<VecDeque<Duration>>>,
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
    pub fn new() -> Self {
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
        Metrics {
            registry: Arc::new(r),
            requests,
            scheduling,
            ttft,
            input_tokens,
            output_tokens,
            running,
            streams,
            recent: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    pub fn outcome(&self, outcome: &str) {
        self.requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn picked(&self, took: Duration) {
        self.outcome("picked");
        self.scheduling.observe(took.as_secs_f64());
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == RECENT {
            r.pop_front();
        }
        r.push_back(took);
    }

    /// Scheduling times of recent picks, oldest first.
    pub fn recent_picks(&self) -> Vec<Duration> {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().copied().collect()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        herd_layer::telemetry::metrics::encode_classic(&self.registry)
    }

    /// The `/metrics` HTTP app.
    pub fn router(&self) -> axum::Router {
        let m = self.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            herd_layer::telemetry::metrics::CONTENT_TYPE,
                        )],
                        m.render(),
                    )
                }
            }),
        )
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
}
