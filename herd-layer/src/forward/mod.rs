//! The leaf: forward one attempt to the picked node and stream the answer back.
//!
//! A pooled hyper client talks to the node. Requests in Ollama's dialect go
//! to Ollama nodes unchanged (only the model may be swapped for a fallback);
//! OpenAI requests are translated to Ollama's native API and the answer back,
//! so every request yields Ollama's timing stats; OpenAI-only engines get
//! OpenAI requests as they are.
//!
//! The leaf waits for the node's first body bytes before answering, so a
//! node that fails before producing anything is still a retryable failure.
//! After that, bytes stream straight through (translated line by line when
//! needed); a failure mid-stream ends the stream with a well-formed error in
//! the client's format, never a truncated line. Non-streamed answers are
//! buffered whole (bounded) and therefore stay retryable to the end.

mod relay;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tower::Service;

use crate::client::{HttpClient, client, error_chain};
use crate::dialect::{self, openai};
use crate::fleet::{Engine, NodeId};
use crate::history::History;
use crate::request::{Dialect, Endpoint};
use crate::routed::{AttemptFailure, Body, BoxError, MissingPick, ResponseFuture, Routed};

/// Forwarding tunables (copied from the router config).
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// Longest time to open a connection to a node.
    pub connect_timeout: Duration,
    /// Longest time to the node's response headers (a cold load included).
    pub response_timeout: Duration,
    /// Longest silence between two chunks of a streamed answer.
    pub idle_timeout: Duration,
    /// Largest non-streamed answer buffered, bytes.
    pub max_response_bytes: usize,
    /// What to do with a client's `options.num_ctx` (see [`ContextProtection`]).
    pub context_protection: ContextProtection,
}

/// Context protection: a `num_ctx` different from the loaded one makes
/// Ollama reload the model, so a client's `num_ctx` that the loaded context
/// already covers is removed (`strip`), only logged (`warn`), or sent as is
/// (`passthrough`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextProtection {
    /// Remove a `num_ctx` the loaded context already covers (default).
    #[default]
    Strip,
    /// Only log it.
    Warn,
    /// Send it as is.
    Passthrough,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            max_response_bytes: 256 * 1024 * 1024,
            context_protection: ContextProtection::default(),
        }
    }
}

/// What went wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamErrorKind {
    /// The connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// No answer within this time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The node answered with an error status.
    #[error("answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The node's error message.
        message: String,
    },
    /// The answer broke off before it was whole.
    #[error("response broke off: {0}")]
    Body(String),
    /// The answer is larger than this many bytes.
    #[error("response too large (over {0} bytes)")]
    TooLarge(usize),
}

/// A failed attempt on one node.
#[derive(Debug, thiserror::Error)]
#[error("node {node}: {kind}")]
pub struct UpstreamError {
    /// The node that failed.
    pub node: NodeId,
    /// How it failed.
    pub kind: UpstreamErrorKind,
}

impl UpstreamError {
    /// Whether another node (or model) might succeed where this one failed.
    pub fn retryable(&self) -> bool {
        match &self.kind {
            UpstreamErrorKind::Status { status, .. } => {
                // 404: the node lost the model since it last reported.
                *status >= 500 || *status == 429 || *status == 404
            }
            UpstreamErrorKind::TooLarge(_) => false,
            _ => true,
        }
    }

    /// The status the node answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match &self.kind {
            UpstreamErrorKind::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The request cannot be expressed for the picked engine (a client error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

/// The leaf service.
#[derive(Clone)]
pub struct Forward {
    client: HttpClient,
    cfg: Arc<ForwardConfig>,
    history: History,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward").finish_non_exhaustive()
    }
}

impl Forward {
    /// A leaf with its own pooled client, teaching `history` what each answer shows.
    pub fn new(cfg: Arc<ForwardConfig>, history: History) -> Self {
        Forward {
            client: client(cfg.connect_timeout),
            cfg,
            history,
        }
    }
}

/// The body to send upstream.
/// Apply context protection to an Ollama body; says what it did.
fn protect_context(
    body: &mut Map<String, Value>,
    req: &Routed,
    node: &str,
    mode: ContextProtection,
) -> Option<&'static str> {
    let asked = req.request.num_ctx?;
    let loaded = req
        .view
        .as_ref()
        .and_then(|v| v.node(node))
        .and_then(|n| n.loaded_model(&req.model))
        .map(|m| m.context_length)
        .filter(|c| *c > 0)?;
    if asked > loaded {
        tracing::warn!(request = %req.request.id, asked, loaded, %node, "num_ctx is larger than the loaded context; the model will reload");
        return Some("too_large");
    }
    match mode {
        ContextProtection::Passthrough => None,
        ContextProtection::Warn => {
            tracing::info!(request = %req.request.id, asked, loaded, "num_ctx would reload the model (context protection: warn)");
            Some("warned")
        }
        ContextProtection::Strip => {
            if let Some(Value::Object(o)) = body.get_mut("options") {
                o.remove("num_ctx");
            }
            Some("stripped")
        }
    }
}

fn upstream_body(req: &Routed, engine: Engine) -> Result<Map<String, Value>, BoxError> {
    let translated = match (engine, &req.request.ollama_body) {
        (Engine::Ollama, Some(b)) => Some(b),
        _ => None,
    };
    if req.request.dialect() == Dialect::OpenAi && engine == Engine::Ollama && translated.is_none()
    {
        return Err(InvalidRequest("the request was not translated for Ollama".into()).into());
    }
    let mut b = (**translated.unwrap_or(&req.request.body)).clone();
    b.insert("model".into(), Value::String(req.model.clone()));
    if engine == Engine::Ollama
        && matches!(
            req.request.endpoint,
            Endpoint::OllamaChat | Endpoint::OllamaGenerate
        )
    {
        // Ollama streams unless told otherwise; say it explicitly.
        b.insert("stream".into(), Value::Bool(req.request.stream));
    }
    Ok(b)
}

impl Service<Routed> for Forward {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Routed) -> Self::Future {
        let this = self.clone();
        ResponseFuture::new(async move {
            let trail = req.trail.clone();
            let model = req.model.clone();
            let history = this.history.clone();
            let r = this.forward(req).await;
            // A node that fails attempts loses traffic until it succeeds
            // again (see the `reliability` signal).
            if let Err(e) = &r
                && let Some(up) = e.downcast_ref::<UpstreamError>()
                && up.retryable()
            {
                history.node_failed(&up.node, &model);
            }
            if let (Err(e), Some(t)) = (&r, &trail)
                && let Some(up) = e.downcast_ref::<UpstreamError>()
            {
                t.attempt_failed(
                    &up.node,
                    &up.to_string(),
                    match up.kind {
                        UpstreamErrorKind::Timeout(_) => AttemptFailure::Timeout,
                        UpstreamErrorKind::Connect(_) => AttemptFailure::Connect,
                        _ => AttemptFailure::Other,
                    },
                );
            }
            r
        })
    }
}

impl Forward {
    async fn forward(self, req: Routed) -> Result<http::Response<Body>, BoxError> {
        let pick = req.pick.clone().ok_or(MissingPick("forward"))?;
        let started = Instant::now();
        let plan = dialect::plan(req.request.endpoint, pick.engine, req.request.stream);
        let mut body = upstream_body(&req, pick.engine)?;
        if pick.engine == Engine::Ollama
            && let Some(action) =
                protect_context(&mut body, &req, &pick.node, self.cfg.context_protection)
            && let Some(t) = &req.trail
        {
            t.context_action(action);
        }
        let bytes = serde_json::to_vec(&body)?;
        let url = format!("{}{}", pick.url.trim_end_matches('/'), plan.path);
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", &req.request.id);
        // The node sees herd's attempt span as its parent when tracing is
        // on, and the client's own context otherwise.
        let traceparent = match &req.trail {
            Some(t) => t.attempt(&pick, &req.model),
            None => req.request.traceparent.clone(),
        };
        if let Some(tp) = &traceparent {
            builder = builder.header("traceparent", tp);
        }
        let upstream_req = builder.body(Full::new(Bytes::from(bytes)))?;
        let node = pick.node.clone();
        let fail = |kind| UpstreamError {
            node: node.clone(),
            kind,
        };

        let rsp = match tokio::time::timeout(
            self.cfg.response_timeout,
            self.client.request(upstream_req),
        )
        .await
        {
            Err(_) => {
                return Err(fail(UpstreamErrorKind::Timeout(self.cfg.response_timeout)).into());
            }
            Ok(Err(e)) => return Err(fail(UpstreamErrorKind::Connect(error_chain(&e))).into()),
            Ok(Ok(rsp)) => rsp,
        };
        let status = rsp.status();
        if !status.is_success() {
            let body = read_limited(rsp.into_body(), 64 * 1024, self.cfg.idle_timeout)
                .await
                .unwrap_or_default();
            let message = dialect::error_message(&body);
            return Err(fail(UpstreamErrorKind::Status {
                status: status.as_u16(),
                message,
            })
            .into());
        }

        let meta = relay::Meta {
            request_id: req.request.id.clone(),
            model: req.model.clone(),
            client_model: req.request.model.clone(),
            include_usage: req.request.include_usage,
            embed_base64: openai::embeddings_base64(&req.request.body),
            node: pick.node.clone(),
            started,
            trail: req.trail.clone(),
        };
        let mut headers = http::HeaderMap::new();
        headers.insert("x-herd-node", header_value(&pick.node));
        headers.insert("x-herd-model", header_value(&req.model));
        headers.insert(
            "x-herd-attempts",
            header_value(&(req.attempt + 1).to_string()),
        );
        headers.insert("x-request-id", header_value(&req.request.id));
        if req.fallback_used() {
            headers.insert("x-herd-fallback", header_value(&req.model));
        }

        if plan.mode.is_buffered() {
            let body = read_limited(
                rsp.into_body(),
                self.cfg.max_response_bytes,
                self.cfg.idle_timeout,
            )
            .await
            .map_err(&fail)?;
            let (out, outcome) = relay::finish_buffered(plan.mode, &meta, &body)
                .map_err(|e| fail(UpstreamErrorKind::Body(e)))?;
            self.history.record(&pick.node, &req.model, &outcome);
            if let Some(t) = &req.trail {
                t.outcome(&outcome, false);
            }
            let mut rsp = http::Response::new(Full::new(out).map_err(|e| match e {}).boxed());
            *rsp.status_mut() = StatusCode::OK;
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            rsp.headers_mut().extend(headers);
            return Ok(rsp);
        }

        // Streaming: wait for the first bytes so a node that dies before
        // producing anything is still a retryable failure.
        let mut upstream = rsp.into_body();
        // Ollama answers 200 and then an `{"error": …}` line when a runner
        // dies before its first token: read up to the first whole line, so
        // that case is still a retryable failure (nothing reached the client).
        let mut first = bytes::BytesMut::new();
        let wants_line = plan.mode != dialect::Mode::Sse;
        loop {
            match tokio::time::timeout(self.cfg.response_timeout, upstream.frame()).await {
                Err(_) => {
                    return Err(fail(UpstreamErrorKind::Timeout(self.cfg.response_timeout)).into());
                }
                Ok(None) if first.is_empty() => {
                    return Err(fail(UpstreamErrorKind::Body("empty response".into())).into());
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(fail(UpstreamErrorKind::Body(error_chain(&e))).into());
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(d) = frame.into_data() {
                        first.extend_from_slice(&d);
                    }
                    let line_done = first.contains(&b'\n') || first.len() >= 1024 * 1024;
                    if !first.is_empty() && (!wants_line || line_done) {
                        break;
                    }
                }
            }
        }
        let first = first.freeze();
        if wants_line {
            let line = first.split(|b| *b == b'\n').next().unwrap_or_default();
            if let Ok(v) = serde_json::from_slice::<Value>(line)
                && let Some(msg) = v.get("error").and_then(Value::as_str)
            {
                return Err(fail(UpstreamErrorKind::Status {
                    status: 500,
                    message: msg.to_string(),
                })
                .into());
            }
        }
        let content_type = dialect::stream_content_type(plan.mode.dialect());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let body = relay::spawn(
            plan.mode,
            meta,
            first,
            upstream,
            self.cfg.idle_timeout,
            self.history.clone(),
        );
        let mut rsp = http::Response::new(body);
        rsp.headers_mut().extend(headers);
        Ok(rsp)
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

async fn read_limited<B>(
    mut body: B,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, UpstreamErrorKind>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::error::Error + 'static,
{
    let mut buf = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(UpstreamErrorKind::Timeout(idle)),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(UpstreamErrorKind::Body(error_chain(&e))),
            Ok(Some(Ok(frame))) => {
                if let Ok(d) = frame.into_data() {
                    if buf.len() + d.len() > limit {
                        return Err(UpstreamErrorKind::TooLarge(limit));
                    }
                    buf.extend_from_slice(&d);
                }
            }
        }
    }
}
