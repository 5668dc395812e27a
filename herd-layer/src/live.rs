//! What scoring reads besides the fleet snapshot: the queueing layer's live
//! load per node:model, the history learned from traffic (speeds, learned
//! parallel slots) and the prompt prefixes herd sent where — plus the
//! auto-pulls requests started, which the retry layer waits on.
//!
//! One [`Live`] is shared by every layer of a stack (and by `/fleet/*` and
//! the dashboard), so they all see the same counters.

use crate::history::History;
use crate::prefix::{Prefix, PrefixIndex};
use crate::queueing::Admission;
use crate::rank::{Load, Observations, Perf};
use crate::retry::AutoPull;

/// The live observations scoring reads: admission load plus learned history.
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Slots in use and waiting, per node:model.
    pub admission: Admission,
    /// Learned latency and speed, per node:model.
    pub history: History,
    /// Prompt blocks sent to each node:model, for prefix-cache affinity
    /// (fed by the queueing layer).
    pub prefix: PrefixIndex,
    /// Pulls of models no node has, started by requests (none in herd-epp).
    pub autopull: Option<AutoPull>,
    /// Each tenant's usage against its limits (see [`crate::limit`]).
    pub limits: crate::limit::Limiter,
}

impl Observations for Live {
    fn load(&self, node: &str, model: &str) -> Load {
        self.admission.load(node, model)
    }
    fn perf(&self, node: &str, model: &str) -> Option<Perf> {
        self.history.perf(node, model)
    }
    fn unresponsive(&self, node: &str) -> Option<std::time::Duration> {
        self.history.hung(node)
    }
    fn cached_tokens(
        &self,
        node: &str,
        model: &str,
        prefix: &Prefix,
        since_ms: i64,
        now_ms: i64,
    ) -> u32 {
        self.prefix
            .cached_tokens(node, model, prefix, since_ms, now_ms)
    }
    fn learned_slots(&self, node: &str, model: &str) -> Option<crate::slots::SlotEstimate> {
        self.history.slots(node, model)
    }
}
