//! herd-layer: the routing core of herd, and (behind the default `app`
//! feature) the standalone proxy built on it.
//!
//! herd turns several machines running Ollama into one endpoint. The core is
//! what both shapes of herd share — the proxy `herd` and the Endpoint Picker
//! `herd-epp`: the fleet model, the pure scorer, the Tower layers (trace,
//! retry/fallback, discovery, scoring, queueing), the forward leaf, and one
//! module per client dialect. The stack order is written once, in [`stack`].
//! The core imports nothing of [`app`] (the HTTP surface, store, telemetry,
//! health), so herd-epp builds without them; `docs/architecture.md` is the
//! map.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Data the request path carries.
pub mod alias;
pub mod body;
pub mod budget;
pub mod capability;
pub mod error;
pub mod fleet;
pub mod health;
pub mod history;
pub mod model_name;
pub mod prefix;
pub mod rank;
pub mod request;
pub mod routed;
pub mod slots;

// The dialects clients speak, and the node client.
pub mod client;
pub mod dialect;

// The layers, outermost first, and the leaf.
pub mod discovery;
pub mod forward;
pub mod limit;
pub mod queueing;
pub mod retry;
pub mod scoring;
pub mod trace;

// Wiring: shared state, background control, config, the stack.
pub mod config;
pub mod dashboard;
pub mod duration;
pub mod live;
pub mod prewarm;
pub mod prometheus;
pub mod serve;
pub mod stack;

#[cfg(feature = "app")]
pub mod app;

pub use herd_proto::ollama;
/// herd's own protocol between nodes and routers (`herd_proto::v1`).
pub use herd_proto::v1 as proto;
