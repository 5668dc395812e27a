//! herd-node: herd's agent on each machine, and its simulated-device mode.
//!
//! Both modes share one [`agent`]: it attaches to a router over `herd.v1` and
//! reports what a [`agent::StateSource`] says. In real mode that source is the
//! local Ollama ([`ollama`]); in simulate mode it is a [`simulate::Device`],
//! a faithful Ollama look-alike that end-to-end tests and benchmarks run in
//! fleets.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod capacity;
pub mod cli;
pub mod config;
pub mod discover;
pub mod ollama;
pub mod probe;
pub mod simulate;

pub use config::{ConfigError, DeviceConfig, FleetConfig};
pub use simulate::{
    Device, DeviceHandle, DeviceStats, FaultsPatch, SensorsPatch, SimError, start_fleet,
};
