//! What scoring reads besides the fleet snapshot: the queueing layer's live
//! load per node:model and the history learned from traffic — plus the
//! auto-pulls requests started, which the retry layer waits on.
//!
//! One [`Live`] is shared by every layer of a stack (and by `/fleet/*` and
//! the dashboard), so they all see the same counters.

use crate::history::History;
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
    /// Pulls of models no node has, started by requests (none in herd-epp).
    pub autopull: Option<AutoPull>,
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
}
