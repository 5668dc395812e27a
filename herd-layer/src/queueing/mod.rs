//! Queueing: per node:model admission.
//!
//! Ollama serves `OLLAMA_NUM_PARALLEL` requests per loaded model at once and
//! queues the rest itself, invisibly. herd keeps that queue on its own side,
//! where it can see it: a request may start on a node only while that
//! node:model has a free slot; otherwise it waits in a bounded FIFO for at
//! most `max_wait`, and is shed with 429 (queue full) or 503 (waited too long)
//! and a `Retry-After` estimate. Scoring reads the same counters, so a queue
//! building on one node steers new requests elsewhere.
//!
//! The slot is a [`Permit`], a drop guard. It is moved into the response body
//! and released when the stream ends or the client goes away — not when the
//! response headers are sent — so a long generation keeps its slot.
//!
//! The node is only known once scoring has picked it, so admission happens in
//! `call`, not `poll_ready` (the usual tower reservation), and the future owns
//! a clone of the inner service to call once admitted.

mod gate;
mod layer;
mod service;

pub use crate::routed::ResponseFuture;
pub use gate::{Admission, Evicted, Permit, QueueConfig, QueueTimeout, Shed};
pub use layer::QueueingLayer;
pub use service::Queueing;
