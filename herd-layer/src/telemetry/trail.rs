//! One request's trail: what each layer decided and how it ended, gathered
//! while the request runs and turned into a trace record, metrics, an OTel
//! span and a health sample when the last holder lets go.
//!
//! Why a drop type: a request ends in many places — an error before any
//! byte, a buffered answer, the end of a stream relayed on another task, a
//! client that went away. Each holder (the stack's copy of the request, the
//! relay task) holds an `Arc<Trail>`; when the last one drops, the request is
//! over, whatever way it ended. Finishing only hands records to channels
//! (store writer, span processor): nothing on the request path waits.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context as OtelContext, KeyValue};
use opentelemetry_sdk::trace::Span;

use super::Telemetry;
use crate::fleet::NodeId;
use crate::history::Outcome;
use crate::request::{Kind, RouteRequest};
use crate::routed::Pick;
use crate::store::{ScoreSummary, TraceRecord, TraceStatus, Write};

#[derive(Default)]
struct Draft {
    node: Option<NodeId>,
    addr: Option<std::net::SocketAddr>,
    model_served: Option<String>,
    winner: Option<ScoreSummary>,
    runner_up: Option<ScoreSummary>,
    score: f64,
    attempts: u32,
    failed_attempts: Vec<(NodeId, String)>,
    queue_wait_ms: Option<f64>,
    overhead_s: Option<f64>,
    outcome: Option<Outcome>,
    disconnected: bool,
    failure: Option<(TraceStatus, String)>,
    timeouts: u32,
    unreachable: Vec<String>,
    context_action: Option<String>,
    attempt_span: Option<Span>,
}

/// How an attempt failed, as far as health cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The node's engine did not answer in time.
    Timeout,
    /// The node's engine could not be connected to (refused, reset).
    Connect,
    /// Anything else (an error status, a broken body).
    Other,
}

/// See the module docs.
pub struct Trail {
    tel: Arc<Telemetry>,
    req: Arc<RouteRequest>,
    started: Instant,
    ts_ms: i64,
    span: Mutex<Option<Span>>,
    cx: OtelContext,
    draft: Mutex<Draft>,
}

impl std::fmt::Debug for Trail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trail")
            .field("request", &self.req.id)
            .finish_non_exhaustive()
    }
}

/// The GenAI `gen_ai.operation.name` for a kind of request.
pub fn operation(kind: Kind) -> &'static str {
    match kind {
        Kind::Chat => "chat",
        Kind::Generate => "text_completion",
        Kind::Embed => "embeddings",
    }
}

/// The client's W3C trace context, when it is well formed.
pub fn parent_context(traceparent: Option<&str>) -> OtelContext {
    use opentelemetry::propagation::TextMapPropagator;
    let Some(tp) = traceparent else {
        return OtelContext::new();
    };
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_string(), tp.to_string());
    opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier)
}

fn summary(c: &crate::scoring::Candidate) -> ScoreSummary {
    ScoreSummary {
        node: c.node.to_string(),
        score: c.score,
        signals: serde_json::to_value(c.signals).unwrap_or_default(),
    }
}

impl Trail {
    pub(super) fn start(tel: Arc<Telemetry>, req: Arc<RouteRequest>) -> Arc<Trail> {
        let parent = parent_context(req.traceparent.as_deref());
        let (span, cx) = match &tel.otel {
            Some(o) => {
                let op = operation(req.kind());
                let span = o.tracer.build_with_context(
                    o.tracer
                        .span_builder(format!("{op} {}", req.model))
                        .with_kind(SpanKind::Server)
                        .with_attributes([
                            KeyValue::new("gen_ai.operation.name", op),
                            KeyValue::new("gen_ai.request.model", req.model.clone()),
                            KeyValue::new("gen_ai.provider.name", "ollama"),
                            KeyValue::new("herd.request_id", req.id.clone()),
                        ]),
                    &parent,
                );
                let cx = parent.with_remote_span_context(span.span_context().clone());
                (Some(span), cx)
            }
            None => (None, parent),
        };
        Arc::new(Trail {
            tel,
            req,
            started: Instant::now(),
            ts_ms: crate::scoring::now_ms(),
            span: Mutex::new(span),
            cx,
            draft: Mutex::new(Draft::default()),
        })
    }

    fn draft(&self) -> std::sync::MutexGuard<'_, Draft> {
        self.draft.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn child(&self, name: &'static str, attrs: Vec<KeyValue>) -> Option<Span> {
        let o = self.tel.otel.as_ref()?;
        Some(
            o.tracer.build_with_context(
                o.tracer
                    .span_builder(name)
                    .with_kind(SpanKind::Internal)
                    .with_attributes(attrs),
                &self.cx,
            ),
        )
    }

    /// A child span covering the wait for a slot; ends when dropped.
    pub fn queue_span(&self, node: &str) -> Option<Span> {
        self.child(
            "herd.queue",
            vec![KeyValue::new("herd.node", node.to_string())],
        )
    }

    /// The slot was granted after `wait`.
    pub fn queued(&self, wait: std::time::Duration) {
        let mut d = self.draft();
        let ms = wait.as_secs_f64() * 1000.0;
        d.queue_wait_ms = Some(d.queue_wait_ms.unwrap_or(0.0) + ms);
    }

    /// An attempt begins on the picked node. Returns the `traceparent` to
    /// send the node: herd's attempt span when tracing, else the client's.
    pub fn attempt(&self, pick: &Pick, model: &str) -> Option<String> {
        let mut d = self.draft();
        d.attempts += 1;
        d.node = Some(pick.node.clone());
        d.addr = pick.addr;
        d.score = pick.score;
        d.model_served = Some(model.to_string());
        d.winner = pick.ranking.candidates.first().map(summary);
        d.runner_up = pick.ranking.candidates.get(1).map(summary);
        if d.overhead_s.is_none() {
            let spent =
                self.started.elapsed().as_secs_f64() - d.queue_wait_ms.unwrap_or(0.0) / 1000.0;
            d.overhead_s = Some(spent.max(0.0));
        }
        if let Some(mut old) = d.attempt_span.take() {
            old.end();
        }
        let mut attrs = vec![
            KeyValue::new("herd.node", pick.node.to_string()),
            KeyValue::new("herd.attempt", i64::from(d.attempts)),
            KeyValue::new("gen_ai.request.model", model.to_string()),
        ];
        if let Some(a) = pick.addr {
            attrs.push(KeyValue::new("server.address", a.ip().to_string()));
            attrs.push(KeyValue::new("server.port", i64::from(a.port())));
        }
        drop(d);
        let span = self.child("herd.upstream", attrs);
        let tp = match &span {
            Some(s) => {
                let sc = s.span_context();
                Some(format!(
                    "00-{}-{}-{:02x}",
                    sc.trace_id(),
                    sc.span_id(),
                    sc.trace_flags().to_u8()
                ))
            }
            None => self.req.traceparent.clone(),
        };
        self.draft().attempt_span = span;
        tp
    }

    /// The current attempt failed before the first byte.
    pub fn attempt_failed(&self, node: &NodeId, error: &str, how: AttemptFailure) {
        let mut d = self.draft();
        d.failed_attempts.push((node.clone(), error.to_string()));
        match how {
            AttemptFailure::Timeout => d.timeouts += 1,
            AttemptFailure::Connect => d.unreachable.push(node.to_string()),
            AttemptFailure::Other => {}
        }
        if let Some(mut s) = d.attempt_span.take() {
            s.set_status(Status::error(error.to_string()));
            s.end();
        }
    }

    /// The request's answer ended (buffered, or the end of a stream).
    pub fn outcome(&self, o: &Outcome, disconnected: bool) {
        let mut d = self.draft();
        d.outcome = Some(o.clone());
        d.disconnected = disconnected;
    }

    /// The stack answered with an error.
    pub fn failed(&self, status: TraceStatus, error: String) {
        self.draft().failure = Some((status, error));
    }

    /// What context protection did with the client's `num_ctx`.
    pub fn context_action(&self, action: &str) {
        self.draft().context_action = Some(action.to_string());
    }

    fn record(&self, d: &mut Draft) -> TraceRecord {
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let o = d.outcome.take();
        let retries = d.failed_attempts.len() as u32;
        let status = match (&o, &d.failure) {
            (Some(o), _) if o.ok && retries > 0 => TraceStatus::Retried,
            (Some(o), _) if o.ok => TraceStatus::Completed,
            (Some(_), _) if d.disconnected => TraceStatus::ClientDisconnected,
            (Some(_), _) => TraceStatus::Incomplete,
            (None, Some((s, _))) => *s,
            // Dropped with neither answer nor error: the client left first.
            (None, None) => TraceStatus::ClientDisconnected,
        };
        let error = d
            .failure
            .as_ref()
            .map(|(_, e)| e.clone())
            .or_else(|| {
                (!status.ok())
                    .then(|| d.failed_attempts.last().map(|(_, e)| e.clone()))
                    .flatten()
            })
            .or_else(|| {
                (status == TraceStatus::Incomplete)
                    .then(|| "the stream ended before the model finished".to_string())
            });
        let model_served = d
            .model_served
            .clone()
            .unwrap_or_else(|| self.req.model.clone());
        TraceRecord {
            seq: 0,
            request_id: self.req.id.clone(),
            ts_ms: self.ts_ms,
            format: match self.req.format() {
                crate::request::ClientFormat::Ollama => "ollama".into(),
                crate::request::ClientFormat::OpenAi => "openai".into(),
            },
            kind: format!("{:?}", self.req.kind()).to_lowercase(),
            fallback_used: !crate::request::same_model(&model_served, &self.req.model),
            model_requested: self.req.model.clone(),
            model_served,
            node: d.node.as_ref().map(|n| n.to_string()),
            winner: d.winner.take(),
            runner_up: d.runner_up.take(),
            status,
            latency_ms,
            ttft_ms: o.as_ref().and_then(|o| o.ttft_ms),
            queue_wait_ms: d.queue_wait_ms,
            prompt_tokens: o.as_ref().and_then(|o| o.prompt_tokens),
            output_tokens: o.as_ref().and_then(|o| o.output_tokens),
            load_ms: o.as_ref().and_then(|o| o.load_ms),
            retries,
            excluded: d
                .failed_attempts
                .iter()
                .map(|(n, _)| n.to_string())
                .collect(),
            tags: self.req.tags.clone(),
            error,
            num_ctx: self.req.num_ctx,
            context_action: d.context_action.take(),
        }
    }
}

impl Drop for Trail {
    fn drop(&mut self) {
        let mut d = self.draft.lock().unwrap_or_else(|p| p.into_inner());
        let attempts = crate::health::Attempts {
            timeouts: d.timeouts,
            unreachable: std::mem::take(&mut d.unreachable),
            store_dropped: 0,
        };
        let overhead = d.overhead_s;
        let addr = d.addr;
        let score = d.score;
        let attempt_span = d.attempt_span.take();
        let rec = self.record(&mut d);
        drop(d);
        let op = operation(self.req.kind());
        self.tel.observe(&rec, op, overhead, attempts);
        if let Some(mut s) = attempt_span {
            s.end();
        }
        if let Some(mut s) = self.span.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let mut attrs = vec![
                KeyValue::new("gen_ai.response.model", rec.model_served.clone()),
                KeyValue::new("herd.status", rec.status.as_str()),
                KeyValue::new("herd.retries", i64::from(rec.retries)),
                KeyValue::new("herd.fallback", rec.fallback_used),
            ];
            if let Some(n) = &rec.node {
                attrs.push(KeyValue::new("herd.node", n.clone()));
                attrs.push(KeyValue::new("herd.score", score));
            }
            if let Some(a) = addr {
                attrs.push(KeyValue::new("server.address", a.ip().to_string()));
                attrs.push(KeyValue::new("server.port", i64::from(a.port())));
            }
            if let Some(t) = rec.prompt_tokens {
                attrs.push(KeyValue::new("gen_ai.usage.input_tokens", t as i64));
            }
            if let Some(t) = rec.output_tokens {
                attrs.push(KeyValue::new("gen_ai.usage.output_tokens", t as i64));
            }
            if let Some(q) = rec.queue_wait_ms {
                attrs.push(KeyValue::new("herd.queue_wait_ms", q));
            }
            if !rec.tags.is_empty() {
                attrs.push(KeyValue::new("herd.tags", rec.tags.join(",")));
            }
            s.set_attributes(attrs);
            if !rec.status.ok() {
                s.set_attribute(KeyValue::new("error.type", rec.status.as_str()));
                s.set_status(Status::error(rec.error.clone().unwrap_or_default()));
            }
            s.end();
        }
        if let Some(store) = &self.tel.store {
            if let Some(node) = &rec.node
                && let Some(book) = self.tel.history.export(node, &rec.model_served)
            {
                store.submit(Write::Perf {
                    node: node.clone(),
                    model: crate::request::normalize_model(&rec.model_served),
                    book,
                });
            }
            store.submit(Write::Trace(Box::new(rec)));
        }
    }
}
