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

use super::super::store::{ScoreSummary, TraceRecord, TraceStatus, Write};
use super::Telemetry;
use crate::fleet::NodeId;
use crate::history::Outcome;
use crate::request::{Kind, RouteRequest};
use crate::routed::{AttemptFailure, BoxError, Pick, Trail};

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

/// See the module docs.
pub struct RequestTrail {
    tel: Arc<Telemetry>,
    req: Arc<RouteRequest>,
    started: Instant,
    ts_ms: i64,
    span: Mutex<Option<Span>>,
    cx: OtelContext,
    draft: Mutex<Draft>,
}

impl std::fmt::Debug for RequestTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTrail")
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
        // Not GenAI's own names (it has none for these yet).
        Kind::Transcribe => "transcription",
        Kind::Image => "image_generation",
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

fn summary(c: &crate::rank::Candidate) -> ScoreSummary {
    ScoreSummary {
        node: c.node.to_string(),
        score: c.score,
        signals: serde_json::to_value(c.signals).unwrap_or_default(),
        expected_cached_tokens: c.expected_cached_tokens,
    }
}

impl RequestTrail {
    pub(super) fn start(tel: Arc<Telemetry>, req: Arc<RouteRequest>) -> Arc<RequestTrail> {
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
                            KeyValue::new(
                                "herd.key",
                                req.tenant.as_ref().map_or_else(
                                    || super::metrics::ANONYMOUS.to_string(),
                                    |t| t.id.to_string(),
                                ),
                            ),
                        ]),
                    &parent,
                );
                let cx = parent.with_remote_span_context(span.span_context().clone());
                (Some(span), cx)
            }
            None => (None, parent),
        };
        Arc::new(RequestTrail {
            tel,
            req,
            started: Instant::now(),
            ts_ms: crate::fleet::now_ms(),
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
}

impl Trail for RequestTrail {
    /// A child span covering the wait for a slot; ends when dropped.
    fn queue_started(&self, node: &str) -> Option<Box<dyn Send>> {
        let span = self.child(
            "herd.queue",
            vec![KeyValue::new("herd.node", node.to_string())],
        )?;
        Some(Box::new(span))
    }

    fn queued(&self, wait: std::time::Duration) {
        let mut d = self.draft();
        let ms = wait.as_secs_f64() * 1000.0;
        d.queue_wait_ms = Some(d.queue_wait_ms.unwrap_or(0.0) + ms);
    }

    /// An attempt begins on the picked node. Returns the `traceparent` to
    /// send the node: herd's attempt span when tracing, else the client's.
    fn attempt(&self, pick: &Pick, model: &str) -> Option<String> {
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
        if let Some(c) = pick.ranking.candidates.iter().find(|c| c.node == pick.node) {
            // Prefix-cache affinity: what scoring expected the node to hold.
            attrs.push(KeyValue::new(
                "herd.expected_cached_tokens",
                i64::from(c.expected_cached_tokens),
            ));
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
    fn attempt_failed(&self, node: &NodeId, error: &str, how: AttemptFailure) {
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
    fn outcome(&self, o: &Outcome, disconnected: bool) {
        let mut d = self.draft();
        d.outcome = Some(o.clone());
        d.disconnected = disconnected;
    }

    /// The stack answered with an error.
    fn failed(&self, error: &BoxError) {
        let status = if let Some(r) = error.downcast_ref::<crate::limit::RateLimited>() {
            self.tel
                .metrics
                .rate_limited
                .get_or_create(&super::metrics::KeyLimitLabels {
                    key: r.tenant.to_string(),
                    limit: r.which.as_str().into(),
                })
                .inc();
            TraceStatus::RateLimited
        } else if error.downcast_ref::<crate::queueing::Shed>().is_some()
            || error
                .downcast_ref::<crate::queueing::QueueTimeout>()
                .is_some()
        {
            TraceStatus::Shed
        } else if crate::stack::failure::client_fault(error) {
            TraceStatus::Rejected
        } else {
            TraceStatus::Failed
        };
        self.draft().failure = Some((status, error.to_string()));
    }

    /// What context protection did with the client's `num_ctx`.
    fn context_action(&self, action: &str) {
        self.draft().context_action = Some(action.to_string());
    }
}

impl RequestTrail {
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
            format: self.req.dialect().as_str().into(),
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
            key: self.req.tenant.as_ref().map(|t| t.id.to_string()),
        }
    }
}

impl Drop for RequestTrail {
    fn drop(&mut self) {
        let mut d = self.draft.lock().unwrap_or_else(|p| p.into_inner());
        let attempts = super::super::health::Attempts {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::health::{HealthConfig, Recent};
    use crate::app::store::{Store, StoreConfig};
    use crate::fleet::{Engine, FleetView, NodeState, Source};
    use crate::history::History;
    use crate::queueing::Admission;
    use crate::rank::{Ranking, Temperature};
    use crate::request::Endpoint;

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn telemetry(store: Option<Store>) -> Arc<Telemetry> {
        Arc::new(Telemetry {
            metrics: super::super::Metrics::new(),
            otel: None,
            store,
            history: History::new(),
            recent: Recent::new(10),
        })
    }

    fn request() -> Arc<RouteRequest> {
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", TRACEPARENT.parse().unwrap());
        h.insert("x-request-id", "req-1".parse().unwrap());
        h.insert("x-herd-tags", "team:a".parse().unwrap());
        let mut r = crate::dialect::model_only(Endpoint::OllamaChat, "m".into(), &h);
        r.stream = true;
        r.est_prompt_tokens = 3;
        r.tags = vec!["team:a".into()];
        r.traceparent = Some(TRACEPARENT.into());
        Arc::new(r)
    }

    fn pick(node: &str) -> Pick {
        Pick {
            node: node.into(),
            url: "http://127.0.0.1:1".into(),
            addr: None,
            engine: Engine::Ollama,
            version: String::new(),
            slots: 1,
            concurrency: 1,
            temperature: Temperature::Hot,
            score: 1.0,
            ranking: Arc::new(Ranking {
                model: "m:latest".into(),
                candidates: vec![],
                eliminated: vec![],
                model_known: true,
            }),
        }
    }

    fn ok() -> Outcome {
        Outcome {
            ttft_ms: Some(5.0),
            total_ms: 20.0,
            prompt_tokens: Some(3),
            output_tokens: Some(4),
            ok: true,
            ..Outcome::default()
        }
    }

    /// The record the trail would report now.
    fn record(t: &RequestTrail) -> TraceRecord {
        let mut d = t.draft();
        t.record(&mut d)
    }

    #[tokio::test]
    async fn reports_once_when_the_last_holder_lets_go() {
        let dir = crate::app::store::tests::dir("trail");
        let store = Store::open(&dir, &StoreConfig::default()).unwrap();
        let tel = telemetry(Some(store.clone()));
        let trail = RequestTrail::start(tel.clone(), request());
        let relay = trail.clone();
        // Without OTel the node gets the client's own trace context.
        assert_eq!(
            trail.attempt(&pick("a"), "m:latest").as_deref(),
            Some(TRACEPARENT)
        );
        trail.attempt_failed(
            &"a".into(),
            "cannot connect: refused",
            AttemptFailure::Connect,
        );
        trail.attempt(&pick("b"), "m:latest");
        relay.outcome(&ok(), false);
        drop(trail);
        store.flush().await;
        assert!(store.all_traces(None).unwrap().is_empty(), "reported early");
        drop(relay);
        store.flush().await;
        let t = store.all_traces(None).unwrap();
        assert_eq!(t.len(), 1);
        let t = &t[0];
        assert_eq!(t.status, TraceStatus::Retried);
        assert_eq!(t.node.as_deref(), Some("b"));
        assert_eq!(t.excluded, vec!["a".to_string()]);
        assert_eq!((t.retries, t.error.as_deref()), (1, None));
        assert_eq!((t.ttft_ms, t.output_tokens), (Some(5.0), Some(4)));
        assert_eq!(t.tags, vec!["team:a".to_string()]);
        assert!(!t.fallback_used);

        let text = tel.metrics.encode();
        assert!(
            text.contains(
                r#"herd_requests_total{operation="chat",model="m:latest",node="b",status="retried"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("herd_retries_total 1"), "{text}");

        // Health heard that node a could not be connected to.
        let mut view = FleetView::default();
        let mut a = NodeState::new("a".into(), Source::Attached, "http://127.0.0.1:1".into());
        a.seen(tokio::time::Instant::now());
        a.engine_reachable = true;
        view.insert(a);
        let cfg = HealthConfig {
            unreachable_after: 1,
            ..HealthConfig::default()
        };
        let rep = crate::app::health::evaluate(
            &view,
            &Admission::default(),
            &tel.recent,
            &cfg,
            0,
            0,
            0,
            &[],
        );
        assert!(
            rep.checks
                .iter()
                .any(|c| c.id == "engine_unreachable" && c.subject == "a"),
            "{:#?}",
            rep.checks
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn status_follows_how_the_request_ended() {
        let tel = telemetry(None);
        let t = RequestTrail::start(tel.clone(), request());
        assert_eq!(record(&t).status, TraceStatus::ClientDisconnected);

        t.attempt(&pick("a"), "m:latest");
        t.outcome(&Outcome::default(), false);
        let r = record(&t);
        assert_eq!(r.status, TraceStatus::Incomplete);
        assert_eq!(
            r.error.as_deref(),
            Some("the stream ended before the model finished")
        );

        t.outcome(&Outcome::default(), true);
        assert_eq!(record(&t).status, TraceStatus::ClientDisconnected);

        t.outcome(&ok(), false);
        assert_eq!(record(&t).status, TraceStatus::Completed);

        let t = RequestTrail::start(tel.clone(), request());
        let shed: BoxError = crate::queueing::Shed {
            node: "a".into(),
            model: "m".into(),
            waiting: 3,
            retry_after: std::time::Duration::from_secs(2),
        }
        .into();
        t.failed(&shed);
        let r = record(&t);
        assert_eq!(r.status, TraceStatus::Shed);
        assert_eq!(r.error, Some(shed.to_string()));
        assert_eq!(r.node, None);

        // A failed attempt's error stands when nothing better is known.
        let t = RequestTrail::start(tel.clone(), request());
        t.attempt(&pick("a"), "m:latest");
        t.attempt_failed(&"a".into(), "no answer within 1s", AttemptFailure::Timeout);
        assert_eq!(t.draft().timeouts, 1);
        t.failed(&BoxError::from("no node can serve m"));
        let r = record(&t);
        assert_eq!(r.status, TraceStatus::Failed);
        assert_eq!(r.error.as_deref(), Some("no node can serve m"));
        assert_eq!((r.retries, r.excluded.len()), (1, 1));
        assert!(t.draft().unreachable.is_empty());

        // Served by another model than asked: a fallback.
        let t = RequestTrail::start(tel, request());
        t.attempt(&pick("a"), "n:latest");
        t.outcome(&ok(), false);
        let r = record(&t);
        assert!(r.fallback_used);
        assert_eq!(
            (r.model_requested.as_str(), r.model_served.as_str()),
            ("m", "n:latest")
        );
    }
}
