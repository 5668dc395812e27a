//! OpenTelemetry export over OTLP/gRPC, off unless configured.
//!
//! The standard environment turns it on: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! the traces/metrics variants); the exporter itself reads
//! `OTEL_EXPORTER_OTLP_HEADERS`, `…_TIMEOUT` and `…_COMPRESSION`, and the
//! resource reads `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`. Only the
//! `grpc` protocol is built in; another `OTEL_EXPORTER_OTLP_PROTOCOL` is
//! refused with a message rather than silently ignored.
//!
//! Providers are owned by the router (not installed globally), so several
//! routers in one process — the tests — each export on their own.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use serde::{Deserialize, Serialize};

use crate::fleet::Fleet;
use crate::queueing::Admission;

/// `[telemetry]` in the config file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. When unset,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` decides; when both are unset, OTel is off.
    pub otlp_endpoint: Option<String>,
    /// How often metrics are pushed (and spans flushed at most this late).
    #[serde(with = "crate::duration")]
    pub export_interval: Duration,
    /// `service.name` when `OTEL_SERVICE_NAME` is not set.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            export_interval: Duration::from_secs(10),
            service_name: "herd".into(),
        }
    }
}

/// Why OTel export cannot start; herd refuses to run rather than export
/// nothing.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` asks for a protocol other than `grpc`.
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not supported; herd exports OTLP over gRPC (use \"grpc\", port 4317)"
    )]
    Protocol(String),
    /// The span or metric exporter could not be built (e.g. a bad endpoint).
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(String),
}

impl TelemetryConfig {
    /// The endpoint to export to, config first, then the standard environment.
    pub fn endpoint(&self) -> Option<String> {
        self.otlp_endpoint.clone().or_else(|| {
            [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        })
    }
}

/// The GenAI and herd instruments.
#[derive(Clone, Debug)]
pub struct Instruments {
    /// Seconds from arrival to the end of the stream
    /// (`gen_ai.server.request.duration`).
    pub duration: Histogram<f64>,
    /// Time to first token, seconds (`gen_ai.server.time_to_first_token`).
    pub ttft: Histogram<f64>,
    /// Tokens per request, by `gen_ai.token.type` (`gen_ai.client.token.usage`).
    pub tokens: Histogram<u64>,
    /// Requests finished, by outcome (`herd.requests`).
    pub requests: Counter<u64>,
    /// Requests shed with 429/503 (`herd.shed`).
    pub shed: Counter<u64>,
    /// Seconds herd spent before the upstream call, queue wait excluded
    /// (`herd.routing.overhead`).
    pub overhead: Histogram<f64>,
}

/// Tracer and meter, with the providers that flush them.
#[derive(Debug)]
pub struct Otel {
    /// Starts the request, queue and upstream spans.
    pub tracer: SdkTracer,
    /// Where each finished request is recorded.
    pub instruments: Instruments,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

impl Otel {
    /// `None` when OTel is off.
    pub fn from_config(
        cfg: &TelemetryConfig,
        fleet: &Fleet,
        admission: &Admission,
    ) -> Result<Option<Otel>, OtelError> {
        let Some(endpoint) = cfg.endpoint() else {
            return Ok(None);
        };
        if let Ok(p) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && !p.trim().is_empty()
            && p.trim() != "grpc"
        {
            return Err(OtelError::Protocol(p));
        }
        use opentelemetry_otlp::WithExportConfig;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(cfg.service_name.clone());
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| OtelError::Exporter(e.to_string()))?;
        let processor = BatchSpanProcessor::builder(spans)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(cfg.export_interval.min(Duration::from_secs(5)))
                    .build(),
            )
            .build();
        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_span_processor(processor)
            .build();
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|e| OtelError::Exporter(e.to_string()))?;
        let reader = PeriodicReader::builder(metrics)
            .with_interval(cfg.export_interval)
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        let meter = meter_provider.meter("herd");
        let instruments = instruments(&meter, fleet.clone(), admission.clone());
        tracing::info!(%endpoint, "exporting traces and metrics over OTLP/gRPC");
        Ok(Some(Otel {
            tracer: tracer_provider.tracer("herd"),
            instruments,
            tracer_provider,
            meter_provider,
        }))
    }

    /// Push out what is buffered (tests, shutdown).
    pub fn flush(&self) {
        let _ = self.tracer_provider.force_flush();
        let _ = self.meter_provider.force_flush();
    }

    /// Flush, then stop both providers; nothing is exported afterwards.
    pub fn shutdown(&self) {
        self.flush();
        let _ = self.tracer_provider.shutdown();
        let _ = self.meter_provider.shutdown();
    }
}

fn instruments(meter: &Meter, fleet: Fleet, admission: Admission) -> Instruments {
    let a = admission.clone();
    meter
        .i64_observable_gauge("herd.queue.depth")
        .with_description("Requests waiting per node:model")
        .with_callback(move |obs| {
            for (node, model, load, _) in a.snapshot() {
                obs.observe(
                    i64::from(load.waiting),
                    &[
                        KeyValue::new("herd.node", node.to_string()),
                        KeyValue::new("gen_ai.request.model", model),
                    ],
                );
            }
        })
        .build();
    meter
        .i64_observable_gauge("herd.in_flight")
        .with_description("Requests being served per node:model")
        .with_callback(move |obs| {
            for (node, model, load, _) in admission.snapshot() {
                obs.observe(
                    i64::from(load.in_flight),
                    &[
                        KeyValue::new("herd.node", node.to_string()),
                        KeyValue::new("gen_ai.request.model", model),
                    ],
                );
            }
        })
        .build();
    meter
        .i64_observable_gauge("herd.node.up")
        .with_description("1 when the node is online")
        .with_callback(move |obs| {
            for n in fleet.snapshot().nodes.values() {
                obs.observe(
                    i64::from(n.online),
                    &[KeyValue::new("herd.node", n.id.to_string())],
                );
            }
        })
        .build();
    Instruments {
        duration: meter
            .f64_histogram("gen_ai.server.request.duration")
            .with_unit("s")
            .with_description("GenAI server request duration")
            .build(),
        ttft: meter
            .f64_histogram("gen_ai.server.time_to_first_token")
            .with_unit("s")
            .with_description("GenAI time to first token")
            .build(),
        tokens: meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("GenAI tokens used")
            .build(),
        requests: meter.u64_counter("herd.requests").build(),
        shed: meter.u64_counter("herd.shed").build(),
        overhead: meter
            .f64_histogram("herd.routing.overhead")
            .with_unit("s")
            .with_description("Time herd spent before the upstream call, excluding queue wait")
            .build(),
    }
}
