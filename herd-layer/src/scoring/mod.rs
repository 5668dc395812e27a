//! The scoring layer: ranks the fleet for each attempt and records the best
//! node as the request's [`Pick`](crate::routed::Pick).
//!
//! The ranking itself is the pure function [`crate::rank::score`]; this
//! layer only feeds it the attempt's fleet snapshot (set by discovery), the
//! live observations and the request, and turns "nobody can serve it" into
//! a [`NoCandidates`](crate::rank::NoCandidates) error the retry layer and
//! the edges understand.

mod layer;
mod service;

pub use layer::ScoringLayer;
pub use service::{MissingSnapshot, ResponseFuture, Scoring, pick};
