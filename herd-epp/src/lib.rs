//! herd-epp: herd's brain as an Envoy `ext_proc` Endpoint Picker.
//!
//! Envoy (or Envoy AI Gateway) carries the bytes; herd-epp answers the
//! Gateway API Inference Extension question "which local machine serves
//! this request?". It runs the very same routing layers as the proxy —
//! retry/fallback → discovery → scoring → queueing, built once by
//! [`herd_layer::stack::around`] — with its own leaf ([`leaf::PickLeaf`])
//! that returns the pick instead of forwarding. The queueing layer's
//! admission permit rides in that leaf's (empty) response body, and the
//! [`processor`] keeps that body until Envoy reports the end of the HTTP
//! response, so a long generation holds its slot exactly as in the proxy.
//!
//! Modules:
//! - [`processor`]: the `ExternalProcessor/Process` stream state machine
//!   (every body mode, header/metadata answers, immediate errors; strict
//!   message order, body and message size limits, per-state timeouts);
//! - [`leaf`]: the pick-returning leaf and [`leaf::Picker`], which drives the stack;
//! - [`subset`]: the `envoy.lb.subset_hint` → node ids mapping;
//! - [`usage`]: time to first token and token usage from response bodies;
//! - [`metrics`]: Prometheus text on the metrics port;
//! - [`dashboard`]: the read-only dashboard on the metrics port;
//! - [`server`]: ports, TLS, gRPC health, node discovery.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod dashboard;
pub mod leaf;
pub mod metrics;
pub mod processor;
pub mod server;
pub mod subset;
pub mod tls;
pub mod usage;

pub use config::{EppConfig, TlsMode};
/// Envoy's generated types herd-epp speaks (`envoy.service.ext_proc.v3`
/// and its dependencies), for clients and tests that drive a raw stream.
pub use envoy_types;
pub use server::{Running, start};

/// Protocol names, exactly as the Gateway API Inference Extension spells them.
pub mod names {
    /// Request header (and `envoy.lb` metadata key) carrying the chosen `ip:port`.
    pub const DESTINATION: &str = "x-gateway-destination-endpoint";
    /// Metadata namespace Envoy's load balancing reads the pick from.
    pub const LB_NAMESPACE: &str = "envoy.lb";
    /// Metadata namespace of the subset hint.
    pub const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
    /// Key of the subset hint inside its namespace.
    pub const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";
    /// `envoy.lb` key the data plane fills with the endpoint that served (protocol v1.0.0).
    pub const SERVED_KEY: &str = "x-gateway-destination-endpoint-served";
    /// Model header set by Envoy AI Gateway's own ext_proc (headers-only requests).
    pub const MODEL_HEADER: &str = "x-ai-eg-model";
    /// Why a request was dropped (llm-d's header, for operators' dashboards).
    pub const DROPPED_REASON: &str = "x-llm-d-request-dropped-reason";
    /// Response header herd-epp adds with the endpoint it picked.
    pub const PICKED_HEADER: &str = "x-herd-epp-endpoint";
    /// The ext_proc gRPC service name, as health checks ask for it.
    pub const EXT_PROC_SERVICE: &str = "envoy.service.ext_proc.v3.ExternalProcessor";
    /// Largest `streamed_response` chunk sent back (llm-d's `BodyByteLimit`).
    pub const MAX_CHUNK: usize = 62_000;
}
