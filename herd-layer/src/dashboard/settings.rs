//! `[dashboard]`: the live dashboard's limits (see [`crate::dashboard`]).
//!
//! A file of its own so the routing config can embed it without importing
//! the dashboard itself.

use serde::{Deserialize, Serialize};

/// `[dashboard]` in the config file (herd and herd-epp).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// Serve `/dashboard` and `/fleet/events` at all.
    pub enabled: bool,
    /// Open event streams at once (`/fleet/events`); one more is refused
    /// with 503.
    pub max_subscribers: usize,
    /// Events kept for reconnecting tabs (`Last-Event-ID`); a tab that falls
    /// further behind than this is dropped and starts again from a snapshot.
    pub ring: usize,
    /// Routing decisions shown per second at most; above it the feed shows
    /// a sample and counts the rest (a person reads a few a second, and the
    /// stream stays small whatever the request rate).
    pub decisions_per_s: f64,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            max_subscribers: 256,
            ring: 2048,
            decisions_per_s: 50.0,
        }
    }
}

impl DashboardConfig {
    /// The same, with every limit at least 1.
    pub fn sane(&self) -> DashboardConfig {
        DashboardConfig {
            enabled: self.enabled,
            max_subscribers: self.max_subscribers.max(1),
            ring: self.ring.clamp(16, 1 << 20),
            decisions_per_s: if self.decisions_per_s.is_finite() {
                self.decisions_per_s.max(0.0)
            } else {
                0.0
            },
        }
    }
}
