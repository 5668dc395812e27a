//! herd-proto: what every herd binary says on the wire.
//!
//! The router (`herd`), the Endpoint Picker (`herd-epp`) and the agent
//! (`herd-node`) share these and nothing else: herd-node links no routing
//! code, and a change to a shape here is a change to the protocol, seen in
//! one place.
//!
//! - [`v1`]: herd's own node ⇄ router protocol (`herd/v1/fleet.proto`),
//!   compiled at build time with protox (no system `protoc`);
//! - [`ollama`]: Ollama's JSON shapes as herd reads them, and their
//!   conversion into herd.v1's engine state;
//! - [`mdns`]: service names, the TXT format and the interface scope of
//!   zero-config discovery;
//! - [`node`]: node ids and node URLs, validated the same way everywhere;
//! - [`engine`]: engines beside (or instead of) Ollama: their declarations
//!   (`stt+http://…`) and what their `/v1/models` says;
//! - [`token`]: reading a fleet token from a file.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod engine;
pub mod mdns;
pub mod node;
pub mod ollama;
pub mod time;
pub mod token;

/// herd's own protocol between nodes and routers (`herd/v1/fleet.proto`).
pub mod v1 {
    #![allow(missing_docs, clippy::all, unreachable_pub)]
    tonic::include_proto!("herd.v1");
}
