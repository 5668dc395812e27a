//! The standalone proxy `herd`, built on the routing core: its HTTP surface
//! (Ollama's, OpenAI's and herd's own `/fleet/*` APIs), the store, telemetry
//! and health, and the server that runs them beside the herd.v1 attach
//! service. Nothing in the core imports this module; herd-epp links none of
//! it.

pub mod api;
pub mod auth;
pub mod config;
pub mod health;
pub mod server;
pub mod store;
pub mod telemetry;
