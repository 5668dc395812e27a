//! herd-layer: the heart of herd.
//!
//! herd turns several machines running Ollama into one endpoint. This crate
//! holds everything both shapes of herd share: the fleet model, the pure
//! scoring function, and the Tower layers — discovery, scoring, queueing and
//! retry/fallback — plus the pieces of the standalone proxy `herd`. The stack
//! order is written once, in [`stack`].
#![forbid(unsafe_code)]

pub mod api;
pub mod body;
pub mod config;
pub mod discovery;
pub mod fleet;
pub mod forward;
pub mod health;
pub mod history;
pub mod queueing;
pub mod request;
pub mod retry;
pub mod routed;
pub mod scoring;
pub mod server;
pub mod stack;
pub mod store;
pub mod telemetry;
pub mod translate;

pub use herd_proto::ollama;
/// herd's own protocol between nodes and routers (`herd_proto::v1`).
pub use herd_proto::v1 as proto;
