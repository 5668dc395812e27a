//! herd's eyes: the [`Tracer`](crate::routed::Tracer) the proxy plugs into
//! the routing stack's trace layer, and where what it sees goes — Prometheus series ([`metrics`]), OpenTelemetry
//! spans and metrics ([`otel`]), the store's traces, the health engine's
//! recent window, and the JSON log ([`jsonlog`]).
//!
//! The trace layer ([`crate::trace`]) asks [`Telemetry`] for a
//! [`RequestTrail`] per request; the layers below add what they decide, and
//! the trail reports once when the request is truly over (see [`trail`]).

pub mod jsonlog;
pub mod metrics;
pub mod otel;
pub mod trail;

use std::sync::Arc;

use opentelemetry::KeyValue;

pub use metrics::Metrics;
pub use otel::{Otel, TelemetryConfig};
pub use trail::RequestTrail;

use super::health::Recent;
use super::store::{Store, TraceRecord, TraceStatus};
use crate::history::History;

/// Everything a finished request is reported to. Shared by all requests.
#[derive(Debug)]
pub struct Telemetry {
    /// Prometheus series.
    pub metrics: Metrics,
    /// OpenTelemetry export, when configured.
    pub otel: Option<Otel>,
    /// The store, when enabled.
    pub store: Option<Store>,
    /// Learned per node:model history.
    pub history: History,
    /// The health engine's recent window.
    pub recent: Recent,
}

impl Telemetry {
    fn observe(
        &self,
        rec: &TraceRecord,
        op: &'static str,
        overhead_s: Option<f64>,
        mut attempts: super::health::Attempts,
    ) {
        let m = &self.metrics;
        let node = rec.node.clone().unwrap_or_default();
        let model = crate::request::normalize_model(&rec.model_served);
        let labels = metrics::RequestLabels {
            operation: op.into(),
            model: model.clone(),
            node: node.clone(),
            status: rec.status.as_str().into(),
        };
        m.requests.get_or_create(&labels).inc();
        let key = rec.key.as_deref().unwrap_or(metrics::ANONYMOUS);
        m.key_requests
            .get_or_create(&metrics::KeyStatusLabels {
                key: key.to_string(),
                status: rec.status.as_str().into(),
            })
            .inc();
        for (ty, n) in [("input", rec.prompt_tokens), ("output", rec.output_tokens)] {
            if let Some(n) = n.filter(|n| *n > 0) {
                m.key_tokens
                    .get_or_create(&metrics::KeyTokenLabels {
                        key: key.to_string(),
                        token_type: ty.into(),
                    })
                    .inc_by(n);
            }
        }
        m.duration
            .get_or_create(&labels)
            .observe(rec.latency_ms / 1000.0);
        let ml = metrics::ModelLabels {
            operation: op.into(),
            model: model.clone(),
        };
        if let Some(t) = rec.ttft_ms {
            m.ttft.get_or_create(&ml).observe(t / 1000.0);
        }
        if let Some(q) = rec.queue_wait_ms {
            m.queue_wait.get_or_create(&ml).observe(q / 1000.0);
        }
        for (ty, n) in [("input", rec.prompt_tokens), ("output", rec.output_tokens)] {
            if let Some(n) = n {
                m.token_usage
                    .get_or_create(&metrics::TokenLabels {
                        operation: op.into(),
                        model: model.clone(),
                        token_type: ty.into(),
                    })
                    .observe(n as f64);
            }
        }
        if let Some(o) = overhead_s {
            m.routing_overhead.observe(o);
        }
        if rec.status == TraceStatus::Shed {
            m.shed.get_or_create(&ml).inc();
        }
        if rec.retries > 0 {
            m.retries.inc_by(u64::from(rec.retries));
        }
        if rec.fallback_used {
            m.fallbacks.inc();
        }
        if let Some(o) = &self.otel {
            let i = &o.instruments;
            let attrs = [
                KeyValue::new("gen_ai.operation.name", op),
                KeyValue::new("gen_ai.request.model", rec.model_requested.clone()),
                KeyValue::new("gen_ai.response.model", model.clone()),
                KeyValue::new("herd.node", node),
                KeyValue::new("herd.status", rec.status.as_str()),
                KeyValue::new("herd.key", key.to_string()),
            ];
            i.duration.record(rec.latency_ms / 1000.0, &attrs);
            i.requests.add(1, &attrs);
            if let Some(t) = rec.ttft_ms {
                i.ttft.record(t / 1000.0, &attrs[..3]);
            }
            for (ty, n) in [("input", rec.prompt_tokens), ("output", rec.output_tokens)] {
                if let Some(n) = n {
                    i.tokens.record(
                        n,
                        &[
                            attrs[0].clone(),
                            attrs[2].clone(),
                            KeyValue::new("gen_ai.token.type", ty),
                        ],
                    );
                }
            }
            if rec.status == TraceStatus::Shed {
                i.shed.add(1, &attrs[..3]);
            }
            if let Some(s) = overhead_s {
                i.overhead.record(s, &[]);
            }
        }
        attempts.store_dropped = self.store.as_ref().map_or(0, |s| {
            s.stats().dropped.load(std::sync::atomic::Ordering::Relaxed)
        });
        self.recent.push(rec, attempts);
    }

    /// Flush and stop the exporters and close the store (shutdown).
    pub async fn finish(&self) {
        if let Some(o) = &self.otel {
            o.shutdown();
        }
        if let Some(s) = &self.store {
            s.clone().close().await;
        }
    }

    /// Flush spans, metrics and the store (tests, shutdown).
    pub async fn flush(&self) {
        if let Some(o) = &self.otel {
            o.flush();
        }
        if let Some(s) = &self.store {
            s.flush().await;
        }
    }
}

/// Each trail reports to the shared telemetry, so the tracer is the `Arc`.
impl crate::routed::Tracer for Arc<Telemetry> {
    fn start(&self, request: &Arc<crate::request::RouteRequest>) -> Arc<dyn crate::routed::Trail> {
        RequestTrail::start(self.clone(), request.clone())
    }
}
