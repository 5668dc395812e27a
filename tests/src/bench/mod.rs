//! `herd-bench`: herd against the direct path, nginx and Envoy, in one run.
//!
//! The pieces, bottom up: [`echo`] (a zero-think-time replay of a
//! simulated device), [`load`] (the streaming-aware load generator),
//! [`procs`] (child processes, pinning, `/proc` readings), [`targets`]
//! (simulated devices, herd, herd-epp, nginx, Envoy), [`scenarios`] (the
//! first four scenarios of issue 5), [`epp`] (the fifth: herd-epp behind
//! Envoy), [`stats`] and [`report`] (medians of round medians, the markdown
//! and JSON results).

pub mod echo;
pub mod epp;
pub mod load;
pub mod procs;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod targets;
