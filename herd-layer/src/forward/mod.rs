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

mod bridge;
mod relay;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::time::Instant;
use tower::Service;

use crate::client::{HttpClient, client, client_for, error_chain};
use crate::dialect;
use crate::dialect::upload::{UploadBody, UploadFailed};
use crate::fleet::{Engine, NodeId};
use crate::history::History;
use crate::queueing::Admission;
use crate::request::Dialect;
use crate::routed::{AttemptFailure, Body, BoxError, MissingPick, Pick, ResponseFuture, Routed};

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
    /// The first byte must come within this many times the expected time
    /// to first token…
    pub first_byte_factor: f64,
    /// …and never sooner than this: a node silent longer is taken as hung.
    pub first_byte_min: Duration,
    /// How long a node that went silent stays out of routing.
    pub unresponsive_pause: Duration,
    /// This router's id, sent in [`HOP_HEADER`].
    pub router_id: String,
}

pub use crate::dialect::HOP_HEADER;

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
            first_byte_factor: 8.0,
            first_byte_min: Duration::from_secs(15),
            unresponsive_pause: Duration::from_secs(30),
            router_id: "herd".into(),
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
    /// Not a byte within the first-byte deadline: the node may be hung.
    #[error("sent nothing within {0:?}, far longer than its first token takes; it may be hung")]
    Silent(Duration),
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
    /// For multipart uploads, whose bodies stream through.
    uploads: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        UploadBody,
    >,
    cfg: Arc<ForwardConfig>,
    history: History,
    admission: Admission,
}

impl std::fmt::Debug for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forward").finish_non_exhaustive()
    }
}

impl Forward {
    /// A leaf with its own pooled client, teaching `history` what each answer shows.
    pub fn new(cfg: Arc<ForwardConfig>, history: History, admission: Admission) -> Self {
        Forward {
            client: client(cfg.connect_timeout),
            uploads: client_for(cfg.connect_timeout),
            cfg,
            history,
            admission,
        }
    }

    fn first_byte_deadline(&self, pick: &Pick, whole: bool) -> Duration {
        first_byte_deadline(
            pick,
            whole,
            self.cfg.first_byte_factor,
            self.cfg.first_byte_min,
            self.cfg.response_timeout,
        )
    }
}

/// The model's name as `node` lists it (`qwen3` asked, `qwen3:latest`
/// served; `Library/Qwen3` asked, `qwen3:latest` served): what the node is
/// sent and what `x-herd-model` says. The name asked for when the node
/// does not list it (an auto-pull, say).
fn served_name(req: &Routed, node: &str) -> String {
    req.view
        .as_ref()
        .and_then(|v| v.node(node))
        .and_then(|n| {
            n.loaded_model(&req.model)
                .map(|m| &m.name)
                .or_else(|| n.disk_model(&req.model).map(|m| &m.name))
        })
        .unwrap_or(&req.model)
        .clone()
}

/// Context protection: what to do with the client's `num_ctx` on `node`
/// (`Some(strip)` says whether to remove it), and what was done, for the
/// trail.
fn protect_context(
    req: &Routed,
    node: &str,
    mode: ContextProtection,
) -> Option<(bool, &'static str)> {
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
        return Some((false, "too_large"));
    }
    match mode {
        ContextProtection::Passthrough => None,
        ContextProtection::Warn => {
            tracing::info!(request = %req.request.id, asked, loaded, "num_ctx would reload the model (context protection: warn)");
            Some((false, "warned"))
        }
        ContextProtection::Strip => Some((true, "stripped")),
    }
}

/// The body to send upstream: the client's (or its translation to the
/// node's API) spliced with the model tried, an explicit `stream` for
/// Ollama, and `options` without `num_ctx` when context protection strips it.
fn upstream_body(
    req: &Routed,
    served: &str,
    engine: Engine,
    mode: dialect::Mode,
    strip_num_ctx: bool,
) -> Result<Vec<u8>, BoxError> {
    // The node gets the request translated to Ollama's API when the plan
    // translates; else the client's own body (Ollama's dialect, or a node
    // that speaks the client's API itself).
    let translated = if mode.translates() {
        match &req.request.native {
            Some(b) => Some(b),
            None => {
                return Err(
                    InvalidRequest("the request was not translated for Ollama".into()).into(),
                );
            }
        }
    } else {
        None
    };
    let src = translated.unwrap_or(&req.request.body);
    let model = serde_json::to_string(served)?;
    let mut edits: Vec<(&str, Option<&str>)> = vec![("model", Some(&model))];
    let ollama_generation = engine == Engine::Ollama
        && (mode.translates() || req.request.dialect() == Dialect::Ollama)
        && matches!(
            req.request.endpoint.kind(),
            crate::request::Kind::Chat | crate::request::Kind::Generate
        );
    if ollama_generation {
        // herd asks Ollama to stream whenever it can (see `Mode::CollectOllama`).
        edits.push((
            "stream",
            Some(if mode.upstream_streams() {
                "true"
            } else {
                "false"
            }),
        ));
    }
    let options;
    if strip_num_ctx && let Some(Value::Object(mut o)) = src.value("options") {
        o.remove("num_ctx");
        options = Value::Object(o).to_string();
        edits.push(("options", Some(&options)));
    }
    Ok(src.write(&edits))
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
            let admission = this.admission.clone();
            let pause = this.cfg.unresponsive_pause;
            let r = this.forward(req).await;
            // A node that fails attempts loses traffic until it succeeds
            // again (see the `reliability` signal).
            if let Err(e) = &r
                && let Some(up) = e.downcast_ref::<UpstreamError>()
                && up.retryable()
            {
                history.node_failed(&up.node, &model);
                if let UpstreamErrorKind::Silent(d) = up.kind {
                    // Hung: nothing more goes there for a while, and those
                    // waiting for its slots go elsewhere now.
                    tracing::warn!(node = %up.node, ?d, "node sent nothing within the first-byte deadline; taking it out of routing");
                    history.node_hung(&up.node, pause);
                    admission.evict_waiters(&up.node);
                }
                if up.status() == Some(508) {
                    // Its engine URL leads back to a herd that already saw
                    // this request: the same pause as a hung node.
                    tracing::warn!(node = %up.node, "the node's engine URL leads back to this router (508); taking it out of routing");
                    history.node_hung(&up.node, pause);
                }
            }
            // A failed attempt is one another node may take over; a refusal
            // of the request itself (a 4xx) is the client's, not the node's.
            if let (Err(e), Some(t)) = (&r, &trail)
                && let Some(up) = e.downcast_ref::<UpstreamError>()
                && up.retryable()
            {
                t.attempt_failed(
                    &up.node,
                    &up.to_string(),
                    match up.kind {
                        UpstreamErrorKind::Timeout(_) | UpstreamErrorKind::Silent(_) => {
                            AttemptFailure::Timeout
                        }
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
        let plan = dialect::plan(
            req.request.endpoint,
            pick.engine,
            &pick.version,
            req.request.stream,
        );
        let context = (pick.engine == Engine::Ollama)
            .then(|| protect_context(&req, &pick.node, self.cfg.context_protection))
            .flatten();
        if let (Some((_, action)), Some(t)) = (context, &req.trail) {
            t.context_action(action);
        }
        let strip = context.is_some_and(|(strip, _)| strip);
        let served = served_name(&req, &pick.node);
        // What the node is sent: an upload streamed through (its model
        // field renamed when the model served is another), the request in
        // OpenAI's API for an OpenAI-only engine, or the JSON body.
        let (path, outgoing) = match (&req.request.upload, plan.bridge) {
            (Some(up), _) => {
                let rename = (!crate::request::same_model(&served, &req.request.client_model))
                    .then_some(served.as_str());
                let (body, sent) = up.body(rename).map_err(UploadFailed)?;
                (plan.path, Outgoing::Upload(body, sent))
            }
            (None, Some(bridge)) => {
                let src = if req.request.dialect() == Dialect::Ollama {
                    &req.request.body
                } else {
                    req.request.native.as_ref().ok_or_else(|| {
                        InvalidRequest("the request was not translated for Ollama".into())
                    })?
                };
                let (path, bytes) = dialect::openai::engine::request(bridge, src, &served);
                (path, Outgoing::Json(bytes))
            }
            (None, None) => (
                plan.path,
                Outgoing::Json(upstream_body(&req, &served, pick.engine, plan.mode, strip)?),
            ),
        };
        let url = format!("{}{}", pick.url.trim_end_matches('/'), path);
        let hops = match &req.request.via {
            Some(via) => format!("{via}, {}", self.cfg.router_id),
            None => self.cfg.router_id.clone(),
        };
        let content_type = match &req.request.upload {
            Some(up) => up.content_type().clone(),
            None => HeaderValue::from_static("application/json"),
        };
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(header::CONTENT_TYPE, content_type)
            .header("x-request-id", &req.request.id)
            .header(HOP_HEADER, hops);
        // The node sees herd's attempt span as its parent when tracing is
        // on, and the client's own context otherwise.
        let traceparent = match &req.trail {
            Some(t) => t.attempt(&pick, &req.model),
            None => req.request.traceparent.clone(),
        };
        if let Some(tp) = &traceparent {
            builder = builder.header("traceparent", tp);
        }
        let (sending, sent) = match outgoing {
            Outgoing::Json(bytes) => (
                self.client
                    .request(builder.body(Full::new(Bytes::from(bytes)))?),
                None,
            ),
            Outgoing::Upload(body, sent) => (self.uploads.request(builder.body(body)?), Some(sent)),
        };
        let node = pick.node.clone();
        let fail = |kind| UpstreamError {
            node: node.clone(),
            kind,
        };
        // A node that takes far longer than expected to send anything is
        // taken as hung, and the request goes elsewhere.
        // A media answer comes whole, when the work is done.
        let whole = !plan.mode.upstream_streams() || plan.mode == dialect::Mode::Opaque;
        let first_byte = self.first_byte_deadline(&pick, whole)
            + upload_allowance(req.request.upload.as_ref().and_then(|u| u.declared_len()));
        let mut deadline = started + first_byte;

        // An upload's first-byte deadline starts once it is sent: the node
        // answers only after the whole file arrived, however slowly the
        // client sends it (each gap is bounded by the body timeout).
        let mut sending = std::pin::pin!(sending);
        let answered = match sent {
            None => tokio::time::timeout_at(deadline, &mut sending).await,
            Some(sent) => {
                let early = tokio::select! {
                    r = &mut sending => Some(r),
                    _ = sent => None,
                };
                match early {
                    Some(r) => Ok(r),
                    None => {
                        deadline = Instant::now() + first_byte;
                        tokio::time::timeout_at(deadline, &mut sending).await
                    }
                }
            }
        };
        let failed_upload = || req.request.upload.as_ref().and_then(|u| u.failure());
        let rsp = match answered {
            Err(_) => return Err(fail(UpstreamErrorKind::Silent(first_byte)).into()),
            Ok(Err(e)) => {
                // The client's upload failed (too large, stalled): its fault.
                if let Some(e) = failed_upload() {
                    return Err(UploadFailed(e).into());
                }
                return Err(fail(UpstreamErrorKind::Connect(error_chain(&e))).into());
            }
            Ok(Ok(rsp)) => rsp,
        };
        let status = rsp.status();
        if !status.is_success() {
            let body = read_limited(rsp.into_body(), 64 * 1024, self.cfg.idle_timeout)
                .await
                .unwrap_or_default();
            if let Some(e) = failed_upload() {
                return Err(UploadFailed(e).into());
            }
            let message = dialect::error_message(&body);
            return Err(fail(UpstreamErrorKind::Status {
                status: status.as_u16(),
                message,
            })
            .into());
        }

        // A media answer keeps the engine's content type.
        let engine_type = rsp.headers().get(header::CONTENT_TYPE).cloned();
        let upstream: UnsyncBoxBody<Bytes, hyper::Error> = match plan.bridge {
            Some(b) => bridge::Bridged::new(
                rsp.into_body(),
                dialect::openai::engine::Lines::new(b, &served, started.into_std()),
            )
            .boxed_unsync(),
            None => rsp.into_body().boxed_unsync(),
        };
        let meta = relay::Meta {
            request_id: req.request.id.clone(),
            model: req.model.clone(),
            client_model: req.request.client_model.clone(),
            include_usage: req.request.include_usage,
            embed_base64: req
                .request
                .body
                .get::<String>("encoding_format")
                .ok()
                .flatten()
                .as_deref()
                == Some("base64"),
            node: pick.node.clone(),
            started,
            dialect: plan.dialect,
            input_estimate: req.request.est_prompt_tokens,
            trail: req.trail.clone(),
            meter: req.meter.clone(),
            concurrency: pick.concurrency,
        };
        let mut headers = http::HeaderMap::new();
        headers.insert("x-herd-node", header_value(&pick.node));
        headers.insert("x-herd-model", header_value(&served));
        headers.insert(
            "x-herd-attempts",
            header_value(&(req.attempt + 1).to_string()),
        );
        headers.insert("x-request-id", header_value(&req.request.id));
        if req.fallback_used() {
            headers.insert("x-herd-fallback", header_value(&req.model));
        }

        if !plan.mode.streams_to_client() {
            let (body, collected) = if plan.mode.collects() {
                let (v, ttft) = self
                    .collect(upstream, deadline, first_byte, started)
                    .await
                    .map_err(&fail)?;
                (Bytes::new(), Some((v, ttft)))
            } else {
                let body =
                    read_limited(upstream, self.cfg.max_response_bytes, self.cfg.idle_timeout)
                        .await
                        .map_err(&fail)?;
                (body, None)
            };
            let (out, outcome) = relay::finish_whole(plan.mode, &meta, &body, collected)
                .map_err(|e| fail(UpstreamErrorKind::Body(e)))?;
            self.history.record(&pick.node, &req.model, &outcome);
            if let Some(t) = &req.trail {
                t.outcome(&outcome, false);
            }
            if let Some(m) = &req.meter {
                m.finished(&outcome);
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
        let mut upstream = upstream;
        // Ollama answers 200 and then an `{"error": …}` line when a runner
        // dies before its first token: read up to the first whole line, so
        // that case is still a retryable failure (nothing reached the client).
        let mut first = bytes::BytesMut::new();
        let wants_line = !matches!(plan.mode, dialect::Mode::Sse | dialect::Mode::Opaque);
        loop {
            match tokio::time::timeout_at(deadline, upstream.frame()).await {
                Err(_) => return Err(fail(UpstreamErrorKind::Silent(first_byte)).into()),
                // A media answer may be empty; a token stream may not.
                Ok(None) if first.is_empty() && plan.mode != dialect::Mode::Opaque => {
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
        if plan.mode == dialect::Mode::Opaque {
            headers.insert(
                header::CONTENT_TYPE,
                engine_type.unwrap_or(HeaderValue::from_static("application/json")),
            );
        } else {
            let content_type = dialect::stream_content_type(plan.dialect);
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
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

    /// Read an Ollama stream whole and fold it into its non-streamed answer
    /// ([`dialect::ollama::Collector`]): the first line within the
    /// first-byte deadline, the rest with the idle timeout between chunks.
    /// The time of the first line is the time to first token.
    async fn collect<B>(
        &self,
        mut body: B,
        deadline: Instant,
        first_byte: Duration,
        started: Instant,
    ) -> Result<(Value, f64), UpstreamErrorKind>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::error::Error + 'static,
    {
        let mut c = dialect::ollama::Collector::new();
        let mut buf = bytes::BytesMut::new();
        let mut ttft: Option<f64> = None;
        let limit = self.cfg.max_response_bytes;
        let broken = |e: dialect::ollama::CollectError| match e {
            dialect::ollama::CollectError::TooLarge(n) => UpstreamErrorKind::TooLarge(n),
            dialect::ollama::CollectError::Node(m) => UpstreamErrorKind::Status {
                status: 500,
                message: m,
            },
            other => UpstreamErrorKind::Body(other.to_string()),
        };
        loop {
            let frame = if ttft.is_none() {
                tokio::time::timeout_at(deadline, body.frame())
                    .await
                    .map_err(|_| UpstreamErrorKind::Silent(first_byte))?
            } else {
                tokio::time::timeout(self.cfg.idle_timeout, body.frame())
                    .await
                    .map_err(|_| UpstreamErrorKind::Timeout(self.cfg.idle_timeout))?
            };
            match frame {
                None => break,
                Some(Err(e)) => return Err(UpstreamErrorKind::Body(error_chain(&e))),
                Some(Ok(f)) => {
                    let Ok(d) = f.into_data() else { continue };
                    buf.extend_from_slice(&d);
                    while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        let line = buf.split_to(i + 1);
                        if ttft.is_none() && !line.trim_ascii().is_empty() {
                            ttft = Some(started.elapsed().as_secs_f64() * 1000.0);
                        }
                        c.line(&line, limit).map_err(broken)?;
                    }
                    if buf.len() > limit {
                        return Err(UpstreamErrorKind::TooLarge(limit));
                    }
                }
            }
        }
        c.line(&buf, limit).map_err(broken)?;
        let ttft = ttft.unwrap_or_else(|| started.elapsed().as_secs_f64() * 1000.0);
        Ok((c.finish().map_err(broken)?, ttft))
    }
}

/// How long a node may take to its first byte before it is taken as hung:
/// `factor` times what scoring expected (wait, cold load, prefill — and for
/// an answer the node only sends whole, its generation too), at least
/// `min`, at most `cap`. herd-epp holds Envoy's response to the same rule.
pub fn first_byte_deadline(
    pick: &Pick,
    whole: bool,
    factor: f64,
    min: Duration,
    cap: Duration,
) -> Duration {
    let expected_ms = pick
        .ranking
        .candidates
        .iter()
        .find(|c| c.node == pick.node)
        .map_or(0.0, |c| {
            if whole {
                c.expected_ttft_ms + c.expected_generation_ms
            } else {
                c.expected_ttft_ms
            }
        });
    let d = Duration::from_secs_f64((expected_ms * factor / 1000.0).clamp(0.0, 1e9));
    d.max(min).min(cap)
}

/// Upload bytes a node works through per second at the least: an upload's
/// answer (a transcription) takes time in proportion to its size, which
/// the learned pace of earlier, maybe shorter, uploads does not know. 32
/// KiB/s is real time for 16 kHz 16-bit mono audio, the largest common
/// speech format; a node slower than real time is taken as hung.
const UPLOAD_BYTES_PER_S: u64 = 32 * 1024;

/// Time added to the first-byte deadline for an upload of `len` bytes.
pub fn upload_allowance(len: Option<u64>) -> Duration {
    Duration::from_secs(len.unwrap_or(0) / UPLOAD_BYTES_PER_S)
}

/// What one attempt sends the node.
enum Outgoing {
    /// A JSON body.
    Json(Vec<u8>),
    /// A multipart upload, streamed, and what says when it was sent whole.
    Upload(UploadBody, tokio::sync::oneshot::Receiver<()>),
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
