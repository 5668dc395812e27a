//! What the dashboard's event stream carries, and its wire form.
//!
//! Events are made on the request path (a routing decision, how the request
//! ended) or by the sampler (a node changed, queue depths, health). The
//! request path only moves data it already holds into an [`Event`] — the
//! ranking is an `Arc` scoring made anyway — and the JSON is written once,
//! by the first subscriber that sends it ([`Event::frame`]), whatever the
//! number of subscribers, or never when nobody watches.

use std::io::Write as _;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde::Serialize;

use crate::fleet::NodeId;
use crate::rank::{Candidate, Ranking};

/// One event of the stream.
#[derive(Debug)]
pub struct Event {
    /// Its place in the hub's sequence (the SSE `id`, after the hub's id).
    pub seq: u64,
    /// The SSE event name.
    pub kind: &'static str,
    payload: Payload,
    frame: OnceLock<Bytes>,
}

#[derive(Debug)]
enum Payload {
    /// JSON made by the sampler.
    Json(Bytes),
    /// A routing decision.
    Decision(Box<Decision>),
    /// How a request ended.
    Outcome(Box<Outcome>),
}

impl Event {
    pub(super) fn json(seq: u64, kind: &'static str, json: Bytes) -> Self {
        Event {
            seq,
            kind,
            payload: Payload::Json(json),
            frame: OnceLock::new(),
        }
    }

    pub(super) fn decision(seq: u64, d: Decision) -> Self {
        Event {
            seq,
            kind: "decision",
            payload: Payload::Decision(Box::new(d)),
            frame: OnceLock::new(),
        }
    }

    pub(super) fn outcome(seq: u64, o: Outcome) -> Self {
        Event {
            seq,
            kind: "outcome",
            payload: Payload::Outcome(Box::new(o)),
            frame: OnceLock::new(),
        }
    }

    /// The event's data as JSON.
    pub fn data(&self) -> Bytes {
        match &self.payload {
            Payload::Json(b) => b.clone(),
            Payload::Decision(d) => Bytes::from(serde_json::to_vec(&d.wire()).unwrap_or_default()),
            Payload::Outcome(o) => Bytes::from(serde_json::to_vec(&**o).unwrap_or_default()),
        }
    }

    /// Whether it belongs in the routing feed (decisions and outcomes).
    pub fn is_feed(&self) -> bool {
        matches!(self.payload, Payload::Decision(_) | Payload::Outcome(_))
    }

    /// The whole SSE frame (`id`, `event`, `data`), written once.
    pub fn frame(&self, hub: &str) -> &Bytes {
        self.frame.get_or_init(|| {
            let data = self.data();
            let mut out = Vec::with_capacity(data.len() + 48);
            let _ = write!(out, "id: {hub}:{}\nevent: {}\ndata: ", self.seq, self.kind);
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\n\n");
            Bytes::from(out)
        })
    }
}

/// One routing decision: the attempt's ranking and what it was for.
#[derive(Debug)]
pub struct Decision {
    /// herd's request id.
    pub id: String,
    /// When, ms since the Unix epoch.
    pub ts_ms: i64,
    /// The model the client asked for.
    pub model: String,
    /// The model this attempt tries (a fallback differs).
    pub tried: String,
    /// `chat`, `generate`, …
    pub kind: &'static str,
    /// The client's API (`ollama`, `openai`, …).
    pub api: &'static str,
    /// Estimated prompt tokens.
    pub prompt_tokens: u32,
    /// The attempt, from 1.
    pub attempt: u32,
    /// Nodes earlier attempts failed on.
    pub excluded: Vec<NodeId>,
    /// The ranking the pick came from (no winner: nothing could serve).
    pub ranking: Arc<Ranking>,
    /// Why nothing was picked, when nothing was.
    pub error: Option<String>,
}

#[derive(Serialize)]
struct Side<'a> {
    node: &'a str,
    score: f64,
    temperature: crate::rank::Temperature,
    in_flight: u32,
    waiting: u32,
    slots: u32,
    expected_ttft_ms: f64,
    expected_generation_ms: f64,
    signals: &'a crate::rank::Signals,
}

impl<'a> From<&'a Candidate> for Side<'a> {
    fn from(c: &'a Candidate) -> Self {
        Side {
            node: &c.node,
            score: c.score,
            temperature: c.temperature,
            in_flight: c.load.in_flight,
            waiting: c.load.waiting,
            slots: c.slots,
            expected_ttft_ms: c.expected_ttft_ms,
            expected_generation_ms: c.expected_generation_ms,
            signals: &c.signals,
        }
    }
}

#[derive(Serialize)]
struct Ranked<'a> {
    node: &'a str,
    score: f64,
}

#[derive(Serialize)]
struct Out<'a> {
    node: &'a str,
    reason: serde_json::Value,
    why: String,
}

#[derive(Serialize)]
struct DecisionWire<'a> {
    id: &'a str,
    ts: i64,
    model: &'a str,
    tried: &'a str,
    kind: &'a str,
    api: &'a str,
    prompt_tokens: u32,
    attempt: u32,
    excluded: &'a [NodeId],
    winner: Option<Side<'a>>,
    runner_up: Option<Side<'a>>,
    candidates: Vec<Ranked<'a>>,
    eliminated: Vec<Out<'a>>,
    error: Option<&'a str>,
}

impl Decision {
    fn wire(&self) -> DecisionWire<'_> {
        let r = &self.ranking;
        DecisionWire {
            id: &self.id,
            ts: self.ts_ms,
            model: &self.model,
            tried: &self.tried,
            kind: self.kind,
            api: self.api,
            prompt_tokens: self.prompt_tokens,
            attempt: self.attempt,
            excluded: &self.excluded,
            winner: r.candidates.first().map(Side::from),
            runner_up: r.candidates.get(1).map(Side::from),
            candidates: r
                .candidates
                .iter()
                .map(|c| Ranked {
                    node: &c.node,
                    score: c.score,
                })
                .collect(),
            eliminated: r
                .eliminated
                .iter()
                .map(|e| Out {
                    node: &e.node,
                    reason: serde_json::to_value(&e.why).unwrap_or_default(),
                    why: e.why.to_string(),
                })
                .collect(),
            error: self.error.as_deref(),
        }
    }
}

/// How a request whose decision was shown ended.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    /// herd's request id.
    pub id: String,
    /// `ok`, `retried`, `incomplete`, `disconnected`, `shed`, `rejected`,
    /// `failed`, or `picked` (herd-epp: Envoy carries the answer).
    pub status: &'static str,
    /// The node that served (or failed) last.
    pub node: Option<NodeId>,
    /// The model it served (or tried).
    pub model: String,
    /// Time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Time from arrival to the end, ms.
    pub latency_ms: f64,
    /// Prompt tokens, as the engine counted.
    pub prompt_tokens: Option<u64>,
    /// Output tokens, as the engine counted.
    pub output_tokens: Option<u64>,
    /// The engine's model load time, ms (a cold load when large).
    pub load_ms: Option<f64>,
    /// What went wrong, when something did.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_one_sse_event_with_the_hub_s_id() {
        let e = Event::json(7, "queues", Bytes::from_static(b"[1,2]"));
        assert_eq!(
            &e.frame("ab12")[..],
            b"id: ab12:7\nevent: queues\ndata: [1,2]\n\n"
        );
        assert!(!e.is_feed());
    }
}
