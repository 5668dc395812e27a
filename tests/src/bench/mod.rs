//! `herd-bench`: herd against the direct path, nginx and Envoy, in one run.
//!
//! The pieces, bottom up: [`echo`] (a zero-think-time replay of a
//! simulated device), [`load`] (the streaming-aware load generator),
//! [`procs`] (child processes, pinning, `/proc` readings), [`targets`]
//! (simulated devices, herd, herd-epp, nginx, Envoy), [`scenarios`] (what
//! the scenarios of issue 5 share: the run's knobs, the harness's state,
//! request bodies), then one file per scenario: [`overhead`] (1,
//! non-streaming overhead), [`streaming`] (2, streaming overhead),
//! [`routing`] (3, routing quality), [`adaptation`] (4, a device slows,
//! dies, comes back), [`epp`] (5, herd-epp behind Envoy) and [`chaos`]
//! (faults and attacks under load, not in the default list), [`auth`]
//! (what API keys and per-key limits cost per request, not in the default
//! list either), [`dashboard`] (what 100 open dashboards cost routing, not
//! in the default list), [`affinity`] (multi-turn conversations and
//! prefix-cache affinity, not in the default list); last
//! [`stats`] and [`report`] (medians of round medians, the markdown and
//! JSON results).

pub mod adaptation;
pub mod affinity;
pub mod auth;
pub mod chaos;
pub mod dashboard;
pub mod echo;
pub mod epp;
pub mod load;
pub mod overhead;
pub mod procs;
pub mod report;
pub mod routing;
pub mod scenarios;
pub mod stats;
pub mod streaming;
pub mod targets;
