//! `envoy.service.ext_proc.v3.ExternalProcessor/Process`: one stream per
//! HTTP request, driven as a strict state machine ([`Exchange`]).
//!
//! Envoy tells the body mode in the first message's `protocol_config`, and
//! the mode decides when herd can answer (epp.md §1.4–1.5):
//!
//! | request body mode | the pick is sent |
//! |---|---|
//! | NONE, or headers with `end_of_stream` | at once, in the headers reply (model from `x-ai-eg-model` or the path) |
//! | FULL_DUPLEX_STREAMED | after the body's end: headers reply (`clear_route_cache`, header, `envoy.lb` metadata), then the body re-emitted as `streamed_response` chunks of ≤ 62000 bytes |
//! | STREAMED / BUFFERED with `send_body_without_waiting_for_header_response` | after the body's end: headers reply, then one empty body reply per chunk received |
//! | BUFFERED (lockstep) | headers are let through empty; the pick rides on the body reply (header mutations there take effect only in this mode) |
//! | STREAMED (lockstep) | Envoy forwards the headers before any body, so the pick needs the model header; without it the request is refused with a 400 that says how to configure Envoy |
//!
//! # States
//!
//! | state | what it expects | silence allowed (from [`RoutingConfig`]) |
//! |---|---|---|
//! | `Start` | `request_headers` (a `request_body` is taken too: Envoy skips the headers when configured to) | `body_timeout` (30 s) |
//! | `Reading` | request body chunks or trailers, until the request's end | `body_timeout` between messages |
//! | `Picking` | nothing but the rest of a request still open (body, trailers): their replies wait for the pick's | none of its own: the queue's `max_wait` bounds it |
//! | `Routed` | `response_headers` (or the response body, when Envoy skips the headers); the rest of a request still open | the first-byte deadline: `first_byte_factor` × the TTFT scoring expected (with the generation, for a non-streamed answer), at least `first_byte_min` (15 s), at most `response_timeout` — the proxy's rule for a hung node |
//! | `Responding` | response body chunks, then the response's end (body `end_of_stream` or trailers) | `idle_timeout` (300 s) between messages |
//! | `Done` | nothing: Envoy closes the stream | `body_timeout`, then the stream ends cleanly |
//!
//! Anything else ends the stream with gRPC `INVALID_ARGUMENT`, the message
//! naming what was out of sequence: a second `request_headers`, request
//! body or trailers after the request ended (headers or body with
//! `end_of_stream`, or trailers), any response message before the pick, a
//! second `response_headers`, anything after the response ended, a message
//! with no request in it (herd-epp sends no flow-control window updates, so
//! Envoy has no reason to send one without a request). Silence beyond the
//! state's allowance ends the stream with `DEADLINE_EXCEEDED`; so does
//! Envoy not reading herd's replies for as long (every send waits at most
//! the same allowance). A refusal is one `ImmediateResponse` and then the
//! end of the stream (gRPC OK): nothing is sent or read after it. In
//! observability mode the same rules hold; the replies are just not sent.
//!
//! In the BUFFERED modes Envoy sends the body only once it holds all of
//! it, so `body_timeout` there also bounds how long the client's upload
//! may take after the headers; raise it for slow uploads of large bodies.
//! With the response body mode NONE herd-epp sees no response chunks, so
//! `idle_timeout` counts from the response headers to the trailers; the
//! deploy configs stream the response body to herd-epp.
//!
//! # Limits
//!
//! - The request body, whether buffered for the pick or passed through
//!   after it, is at most `max_body_bytes` bytes (32 MiB) **and** at most
//!   [`max_body_chunks`] chunks: one per [`BYTES_PER_CHUNK`] (2 KiB) of
//!   `max_body_bytes`, never fewer than [`MIN_BODY_CHUNKS`] (1024) — 16384
//!   for the default. Either limit crossed is an `ImmediateResponse` 413 in
//!   OpenAI's error shape (`body_too_large`), sent in place of any reply to
//!   the chunks, so a flood of empty chunks gets one answer, not one each.
//! - One gRPC message is at most [`max_message_bytes`]: `max_body_bytes`
//!   plus [`MESSAGE_HEADROOM`] (4 MiB, for headers and metadata), set as
//!   the server's `max_decoding_message_size`. tonic refuses a larger one
//!   (`OUT_OF_RANGE`), as it refuses one that does not decode (`INTERNAL`);
//!   the stream ends with that status, never OK.
//!
//! # The slot
//!
//! The admission slot the pick holds ([`Decision::hold`]) and its unit of
//! `herd_epp_request_running` ([`GaugeHold`]) live in the stream task's
//! state, so they are given back exactly once however the task ends: the
//! response's end (body or trailers with end of stream, or a headers-only
//! response), an error, a timeout, Envoy resetting the stream (which it
//! does when the HTTP stream ends: a normal end here, not an error), or a
//! panic unwinding. While a request waits in the queue for a slot, the
//! stream is still read, so a client that leaves gives its place up at
//! once, and a message out of sequence ends it at once.
//!
//! The replies go out through a bounded channel, the final status through
//! a one-shot behind them ([`ReplyStream`]): an error status always ends
//! the stream, even one whose replies Envoy stopped reading, and a task
//! that panics ends it with INTERNAL.
//!
//! [`RoutingConfig`]: herd_layer::config::RoutingConfig
//! [`GaugeHold`]: crate::metrics::GaugeHold

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Req;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Resp;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
    HttpHeaders, ImmediateResponse, ProcessingRequest, ProcessingResponse, StreamedBodyResponse,
    TrailersResponse, body_mutation::Mutation,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use herd_layer::config::RoutingConfig;
use herd_layer::dialect;
use herd_layer::fleet::NodeId;
use herd_layer::history::History;
use herd_layer::request::{Endpoint, RouteRequest};

use crate::leaf::{Decision, Picker, Rejection};
use crate::metrics::{GaugeHold, Metrics, ModelLabels};
use crate::names::*;
use crate::usage::Meter;

#[cfg(test)]
mod tests;

/// `HeaderValueOption.append_action`: OVERWRITE_IF_EXISTS_OR_ADD. A client
/// must never steer the upstream by sending the destination header itself.
const OVERWRITE: i32 = 2;

/// Bytes one gRPC message may carry beyond `max_body_bytes`: the request
/// headers (Envoy allows 60 KiB by default) and metadata.
pub const MESSAGE_HEADROOM: usize = 4 * 1024 * 1024;

/// A request body may come in one chunk per this many bytes of `max_body_bytes`…
pub const BYTES_PER_CHUNK: usize = 2048;

/// …and in at least this many chunks, however small `max_body_bytes` is.
pub const MIN_BODY_CHUNKS: usize = 1024;

/// The most chunks a request body may come in (16384 for the default 32 MiB).
pub fn max_body_chunks(max_body_bytes: usize) -> usize {
    (max_body_bytes / BYTES_PER_CHUNK).max(MIN_BODY_CHUNKS)
}

/// The largest gRPC message herd-epp decodes: the body limit plus headroom.
pub fn max_message_bytes(max_body_bytes: usize) -> usize {
    max_body_bytes.saturating_add(MESSAGE_HEADROOM)
}

/// The ext_proc service.
#[derive(Clone, Debug)]
pub struct Processor {
    picker: Picker,
    metrics: Metrics,
}

type Outbound = mpsc::Sender<Result<ProcessingResponse, Status>>;

/// The replies of one stream, then its final status when it failed.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

impl Processor {
    pub(crate) fn new(picker: Picker, metrics: Metrics) -> Self {
        Processor { picker, metrics }
    }

    /// The tonic service to mount on the ext_proc port, refusing messages
    /// larger than [`max_message_bytes`].
    pub(crate) fn into_server(self) -> ExternalProcessorServer<Self> {
        let max = max_message_bytes(self.picker.cfg.max_body_bytes);
        ExternalProcessorServer::new(self).max_decoding_message_size(max)
    }

    /// Run one stream in its own task. The replies go through a bounded
    /// channel; the final status through a one-shot that never blocks, so a
    /// failed stream ends with its error even when Envoy stopped reading.
    fn spawn<S>(&self, inbound: S) -> ReplyStream
    where
        S: Stream<Item = Result<ProcessingRequest, Status>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        let (end_tx, end_rx) = oneshot::channel();
        let open = self.metrics.open_stream();
        tokio::spawn(run(self.clone(), inbound, tx, Ending(Some(end_tx)), open));
        let status =
            futures::stream::once(end_rx).filter_map(|r| std::future::ready(r.ok().map(Err)));
        Box::pin(ReceiverStream::new(rx).chain(status))
    }
}

/// Where a stream's final status goes. Dropped without [`Ending::finish`]
/// — the task panicked, or was dropped with the runtime — it ends the
/// stream with INTERNAL, not OK.
struct Ending(Option<oneshot::Sender<Status>>);

impl Ending {
    /// The stream ends: cleanly (`None`) or with `status`.
    fn finish(mut self, status: Option<Status>) {
        if let (Some(tx), Some(s)) = (self.0.take(), status) {
            let _ = tx.send(s);
        }
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Status::internal(
                "herd-epp: the stream's task ended abnormally",
            ));
        }
    }
}

#[tonic::async_trait]
impl ExternalProcessor for Processor {
    type ProcessStream = ReplyStream;

    async fn process(
        &self,
        request: tonic::Request<Streaming<ProcessingRequest>>,
    ) -> Result<tonic::Response<Self::ProcessStream>, Status> {
        Ok(tonic::Response::new(self.spawn(request.into_inner())))
    }
}

/// How the replies to a pick are shaped (depends on the body mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Reply to the request headers.
    Headers,
    /// Headers reply, then the buffered body as `streamed_response` chunks.
    FullDuplex { body_ends: bool },
    /// Headers reply, then `chunks` empty body replies.
    Deferred { chunks: usize },
    /// One body reply carrying the header mutation (BUFFERED lockstep).
    InBody,
}

/// A pick to make before replying.
struct Job {
    request: RouteRequest,
    only: Option<Arc<[NodeId]>>,
    shape: Shape,
    /// Trailers arrived: answer them after the pick's replies.
    trailers: bool,
}

/// What to do after a message.
enum Step {
    /// Send these replies (none is fine) and read on.
    Reply(Vec<ProcessingResponse>),
    /// Send these (an immediate response) and end the stream.
    End(Vec<ProcessingResponse>),
    /// Pick, then reply.
    Pick(Job),
}

/// Where a stream is; see the module docs for what each state expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing received yet.
    Start,
    /// Reading the request (headers seen, body buffered) before the pick.
    Reading,
    /// Waiting for the pick (a slot in the queue).
    Picking,
    /// Picked, holding the slot; the response has not begun.
    Routed,
    /// The response is streaming.
    Responding,
    /// The response ended; the slot is given back.
    Done,
    /// An immediate response was sent.
    Refused,
}

/// The limits and patience of one stream, from the routing config.
#[derive(Clone, Copy, Debug)]
struct Limits {
    max_body: usize,
    max_chunks: usize,
    body_timeout: Duration,
    response_timeout: Duration,
    idle_timeout: Duration,
    first_byte_factor: f64,
    first_byte_min: Duration,
}

impl Limits {
    fn new(cfg: &RoutingConfig) -> Self {
        Limits {
            max_body: cfg.max_body_bytes,
            max_chunks: max_body_chunks(cfg.max_body_bytes),
            body_timeout: cfg.body_timeout,
            response_timeout: cfg.response_timeout,
            idle_timeout: cfg.idle_timeout,
            first_byte_factor: cfg.first_byte_factor,
            first_byte_min: cfg.first_byte_min,
        }
    }
}

/// The routed request while its response streams.
#[derive(Debug)]
struct Routing {
    decision: Decision,
    /// The client asked for a stream (else Envoy's response starts only
    /// when the whole answer is ready).
    stream: bool,
    meter: Meter,
    status: Option<u16>,
    /// This request's unit of `herd_epp_request_running`.
    _running: GaugeHold,
}

/// One ext_proc stream's state.
struct Exchange {
    metrics: Metrics,
    history: History,
    limits: Limits,
    phase: Phase,
    req_mode: BodySendMode,
    rsp_mode: BodySendMode,
    /// The headers reply waits for the body (full duplex, or Envoy sends the
    /// body without waiting for it).
    defer: bool,
    observe: bool,
    first: bool,
    /// `request_headers` came (Envoy may be configured to skip them).
    headers_seen: bool,
    /// The request's end was seen (headers or body with `end_of_stream`, or trailers).
    request_ended: bool,
    headers: http::HeaderMap,
    path: String,
    subset: Option<Vec<String>>,
    body: BytesMut,
    /// The whole request body, once received, until re-emitted.
    frozen: Bytes,
    /// Request body chunks received, before and after the pick.
    chunks: usize,
    /// Request body bytes received, before and after the pick.
    bytes: usize,
    /// The body's share of the memory budget, while it is buffered.
    budget: herd_layer::budget::BodyBudget,
    charge: herd_layer::budget::Charge,
    routing: Option<Routing>,
}

/// Why a stream stops before Envoy closes it.
enum Stop {
    /// Nobody reads the replies any more.
    Gone,
    /// End with this status.
    Status(Status),
}

impl From<Status> for Stop {
    fn from(s: Status) -> Self {
        Stop::Status(s)
    }
}

async fn run<S>(p: Processor, inbound: S, tx: Outbound, ending: Ending, _open: GaugeHold)
where
    S: Stream<Item = Result<ProcessingRequest, Status>>,
{
    let limits = Limits::new(&p.picker.cfg);
    let mut x = Exchange::new(
        p.metrics.clone(),
        p.picker.live.history.clone(),
        limits,
        p.picker.budget.clone(),
    );
    let end = drive(&p.picker, &mut x, pin!(inbound), &tx).await;
    // Learn from what was seen and give the slot back before anything else.
    x.end_response(false);
    drop(x);
    drop(tx);
    let status = match end {
        Ok(()) | Err(Stop::Gone) => None,
        Err(Stop::Status(status)) => {
            if status.code() == tonic::Code::Cancelled {
                tracing::debug!(%status, "ext_proc stream reset");
            } else {
                tracing::info!(code = ?status.code(), message = status.message(), "ext_proc stream failed");
            }
            Some(status)
        }
    };
    ending.finish(status);
}

/// Read, answer and pick until the stream ends.
async fn drive<S>(
    picker: &Picker,
    x: &mut Exchange,
    mut inbound: Pin<&mut S>,
    tx: &Outbound,
) -> Result<(), Stop>
where
    S: Stream<Item = Result<ProcessingRequest, Status>>,
{
    loop {
        let wait = x.patience();
        let msg = match tokio::time::timeout(wait, inbound.next()).await {
            Err(_) => return x.silent(wait),
            Ok(None) => return Ok(()),
            Ok(Some(Err(status))) => return Err(status.into()),
            Ok(Some(Ok(m))) => m,
        };
        let job = match x.handle(msg, picker)? {
            Step::Reply(r) => {
                send(x, tx, r).await?;
                continue;
            }
            Step::End(r) => return send(x, tx, r).await,
            Step::Pick(job) => job,
        };
        // While the pick waits for a slot, the stream is still read: a
        // client that leaves gives its place up, a message out of sequence
        // ends it, and the rest of a request still open is answered after
        // the pick's replies.
        let mut held = Vec::new();
        let result = {
            let mut pick = pin!(picker.pick(job.request.clone(), job.only.clone()));
            loop {
                tokio::select! {
                    biased;
                    r = &mut pick => break r,
                    m = inbound.next() => match m {
                        None => {
                            tracing::debug!("stream ended while waiting for a slot");
                            return Ok(());
                        }
                        Some(Err(status)) => return Err(status.into()),
                        Some(Ok(m)) => match x.handle(m, picker)? {
                            Step::Reply(r) => held.extend(r),
                            Step::End(r) => return send(x, tx, r).await,
                            Step::Pick(_) => {
                                return Err(Status::internal("herd-epp: a second pick").into());
                            }
                        },
                    },
                }
            }
        };
        match x.picked(result, &job) {
            Step::Reply(r) => {
                send(x, tx, r).await?;
                send(x, tx, held).await?;
            }
            Step::End(r) => return send(x, tx, r).await,
            Step::Pick(_) => return Err(Status::internal("herd-epp: a second pick").into()),
        }
    }
}

/// Send replies, each within the state's patience (Envoy must read them).
async fn send(x: &Exchange, tx: &Outbound, replies: Vec<ProcessingResponse>) -> Result<(), Stop> {
    if x.observe {
        return Ok(());
    }
    let wait = x.patience();
    for r in replies {
        match tokio::time::timeout(wait, tx.send(Ok(r))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Stop::Gone),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "herd-epp: Envoy read no reply for {wait:?} {}",
                    x.phase.doing()
                ))
                .into());
            }
        }
    }
    Ok(())
}

impl Phase {
    /// What the stream is doing, for messages.
    fn doing(self) -> &'static str {
        match self {
            Phase::Start => "before the request headers (body_timeout)",
            Phase::Reading => "while reading the request before the pick (body_timeout)",
            Phase::Picking => "while picking",
            Phase::Routed => {
                "after the pick, before the response headers (the first-byte deadline)"
            }
            Phase::Responding => "while the response streams (idle_timeout)",
            Phase::Done => "after the response ended",
            Phase::Refused => "after an immediate response",
        }
    }
}

/// The name of a message, as the proto spells it.
fn name(r: &Req) -> &'static str {
    match r {
        Req::RequestHeaders(_) => "request_headers",
        Req::RequestBody(_) => "request_body",
        Req::RequestTrailers(_) => "request_trailers",
        Req::ResponseHeaders(_) => "response_headers",
        Req::ResponseBody(_) => "response_body",
        Req::ResponseTrailers(_) => "response_trailers",
    }
}

fn out_of_sequence(what: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("ext_proc message out of sequence: {what}"))
}

impl Exchange {
    fn new(
        metrics: Metrics,
        history: History,
        limits: Limits,
        budget: herd_layer::budget::BodyBudget,
    ) -> Self {
        Exchange {
            metrics,
            history,
            limits,
            phase: Phase::Start,
            req_mode: BodySendMode::Buffered,
            rsp_mode: BodySendMode::None,
            defer: false,
            observe: false,
            first: true,
            headers_seen: false,
            request_ended: false,
            headers: http::HeaderMap::new(),
            path: String::new(),
            subset: None,
            body: BytesMut::new(),
            frozen: Bytes::new(),
            chunks: 0,
            bytes: 0,
            budget,
            charge: herd_layer::budget::Charge::none(),
            routing: None,
        }
    }

    /// How long the stream may stay silent (or leave a reply unread) now.
    fn patience(&self) -> Duration {
        match self.phase {
            Phase::Start | Phase::Reading | Phase::Done | Phase::Refused => {
                self.limits.body_timeout
            }
            Phase::Picking => self.limits.response_timeout,
            // Envoy's response must start as soon as the node's would in
            // the proxy: a stream that goes silent after its pick does not
            // hold the slot for the whole response timeout.
            Phase::Routed => self
                .routing
                .as_ref()
                .map_or(self.limits.response_timeout, |r| {
                    herd_layer::forward::first_byte_deadline(
                        &r.decision.pick,
                        !r.stream,
                        self.limits.first_byte_factor,
                        self.limits.first_byte_min,
                        self.limits.response_timeout,
                    ) + herd_layer::forward::upload_allowance(self.upload_len())
                }),
            Phase::Responding => self.limits.idle_timeout,
        }
    }

    /// An upload's declared size (its answer takes time in proportion).
    fn upload_len(&self) -> Option<u64> {
        Endpoint::from_path(&self.path)
            .filter(|e| e.multipart())
            .and(self.headers.get(http::header::CONTENT_LENGTH))
            .and_then(|v| v.to_str().ok()?.parse().ok())
    }

    /// Envoy sent nothing for `wait`.
    fn silent(&self, wait: Duration) -> Result<(), Stop> {
        if self.phase == Phase::Done {
            // Everything was answered and nothing is held: just end.
            return Ok(());
        }
        Err(Status::deadline_exceeded(format!(
            "herd-epp: no message from Envoy for {wait:?} {}",
            self.phase.doing()
        ))
        .into())
    }

    /// Whether `req` may come now; the error names what is wrong.
    fn in_sequence(&self, req: &Req) -> Result<(), Status> {
        let n = name(req);
        match self.phase {
            Phase::Refused => {
                return Err(out_of_sequence(format_args!(
                    "{n} after an immediate response was sent"
                )));
            }
            Phase::Done => {
                return Err(out_of_sequence(format_args!(
                    "{n} after the response ended"
                )));
            }
            _ => {}
        }
        let picked = matches!(self.phase, Phase::Routed | Phase::Responding);
        match req {
            Req::RequestHeaders(_) if self.headers_seen => {
                Err(out_of_sequence("a second request_headers"))
            }
            Req::RequestHeaders(_) if self.phase != Phase::Start => {
                Err(out_of_sequence("request_headers after the request body"))
            }
            Req::RequestTrailers(_) if self.phase == Phase::Start => {
                Err(out_of_sequence("request_trailers before request_headers"))
            }
            Req::RequestBody(_) | Req::RequestTrailers(_) if self.request_ended => {
                Err(out_of_sequence(format_args!("{n} after the request ended")))
            }
            Req::ResponseHeaders(_) | Req::ResponseBody(_) | Req::ResponseTrailers(_)
                if !picked =>
            {
                Err(out_of_sequence(format_args!(
                    "{n} before the pick (the request is not routed yet)"
                )))
            }
            Req::ResponseHeaders(_) if self.phase == Phase::Responding => {
                Err(out_of_sequence("a second response_headers"))
            }
            _ => Ok(()),
        }
    }

    fn handle(&mut self, msg: ProcessingRequest, picker: &Picker) -> Result<Step, Status> {
        if self.first {
            self.first = false;
            self.observe = msg.observability_mode;
            if let Some(pc) = &msg.protocol_config {
                self.req_mode = BodySendMode::try_from(pc.request_body_mode).unwrap_or_default();
                self.rsp_mode = BodySendMode::try_from(pc.response_body_mode).unwrap_or_default();
                self.defer = self.req_mode == BodySendMode::FullDuplexStreamed
                    || pc.send_body_without_waiting_for_header_response;
            }
        }
        let Some(req) = msg.request else {
            return Err(Status::invalid_argument(
                "ext_proc message with no request in it",
            ));
        };
        self.in_sequence(&req)?;
        Ok(match req {
            Req::RequestHeaders(h) => {
                self.request_headers(h, msg.metadata_context.as_ref(), picker)
            }
            Req::RequestBody(b) => self.request_body(b, picker),
            Req::RequestTrailers(_) => {
                self.request_ended = true;
                if self.phase == Phase::Reading {
                    self.decide_body(picker, true)
                } else {
                    Step::Reply(vec![reply(Resp::RequestTrailers(
                        TrailersResponse::default(),
                    ))])
                }
            }
            Req::ResponseHeaders(h) => {
                Step::Reply(self.response_headers(&h, msg.metadata_context.as_ref()))
            }
            Req::ResponseBody(b) => Step::Reply(self.response_body(b)),
            Req::ResponseTrailers(_) => {
                self.end_response(true);
                Step::Reply(vec![reply(Resp::ResponseTrailers(
                    TrailersResponse::default(),
                ))])
            }
        })
    }

    fn request_headers(
        &mut self,
        h: HttpHeaders,
        metadata: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>,
        picker: &Picker,
    ) -> Step {
        self.phase = Phase::Reading;
        self.headers_seen = true;
        if h.end_of_stream {
            self.request_ended = true;
        }
        for hv in h.headers.iter().flat_map(|m| m.headers.iter()) {
            let value = if hv.raw_value.is_empty() {
                hv.value.as_bytes()
            } else {
                &hv.raw_value[..]
            };
            let key = hv.key.to_ascii_lowercase();
            if key == ":path" {
                self.path = String::from_utf8_lossy(value).into_owned();
                continue;
            }
            if key.starts_with(':') {
                continue;
            }
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(key.as_bytes()),
                http::HeaderValue::from_bytes(value),
            ) {
                self.headers.append(k, v);
            }
        }
        self.subset = crate::subset::hint(metadata);
        let headers_only = h.end_of_stream || self.req_mode == BodySendMode::None;
        if headers_only {
            return self.decide_headers_only(picker);
        }
        if self.defer {
            return Step::Reply(vec![]);
        }
        if self.req_mode == BodySendMode::Streamed {
            if self.headers.contains_key(MODEL_HEADER) {
                return self.decide_headers_only(picker);
            }
            return self.refuse(Rejection::bad_request(
                "herd-epp cannot pick before it sees the model: in STREAMED mode set \
                 send_body_without_waiting_for_header_response, use FULL_DUPLEX_STREAMED or \
                 BUFFERED, or send the x-ai-eg-model header",
                "model_required",
            ));
        }
        // BUFFERED lockstep: let the headers through; the pick rides on the body reply.
        Step::Reply(vec![reply(Resp::RequestHeaders(HeadersResponse {
            response: Some(CommonResponse::default()),
        }))])
    }

    /// Count a request body chunk against both limits.
    fn count_body(&mut self, len: usize) -> Result<(), Rejection> {
        self.chunks += 1;
        self.bytes = self.bytes.saturating_add(len);
        let too_large = |message: String| Rejection {
            status: 413,
            message,
            code: "body_too_large",
            dropped_reason: "bad-request",
            retry_after: None,
            headers: Vec::new(),
        };
        if self.chunks > self.limits.max_chunks {
            return Err(too_large(format!(
                "request body is split into more than {} chunks",
                self.limits.max_chunks
            )));
        }
        if self.bytes > self.limits.max_body {
            return Err(too_large(format!(
                "request body is larger than {} bytes",
                self.limits.max_body
            )));
        }
        Ok(())
    }

    fn request_body(&mut self, b: HttpBody, picker: &Picker) -> Step {
        if let Err(rej) = self.count_body(b.body.len()) {
            return self.refuse(rej);
        }
        if b.end_of_stream {
            self.request_ended = true;
        }
        if !matches!(self.phase, Phase::Start | Phase::Reading) {
            // Picked (or picking) from the headers already: let the body through.
            return Step::Reply(self.pass_request_body(b));
        }
        self.phase = Phase::Reading;
        self.body.extend_from_slice(&b.body);
        if self.body.len() > self.charge.held() {
            // Grow in steps, not per chunk.
            let want = (self.body.len() * 2)
                .min(self.limits.max_body)
                .max(self.body.len());
            if let Err(e) = self.budget.grow(&mut self.charge, want) {
                return self.refuse(Rejection::from_client(e.into()));
            }
        }
        let lockstep = !self.defer
            && matches!(
                self.req_mode,
                BodySendMode::Buffered | BodySendMode::BufferedPartial
            );
        if b.end_of_stream || lockstep {
            return self.decide_body(picker, false);
        }
        Step::Reply(vec![])
    }

    fn pass_request_body(&self, b: HttpBody) -> Vec<ProcessingResponse> {
        if self.req_mode == BodySendMode::FullDuplexStreamed {
            chunked(Bytes::from(b.body), b.end_of_stream)
                .into_iter()
                .map(|c| reply(Resp::RequestBody(c)))
                .collect()
        } else {
            vec![reply(Resp::RequestBody(BodyResponse::default()))]
        }
    }

    /// The request's routing inputs, from headers only.
    fn decide_headers_only(&mut self, picker: &Picker) -> Step {
        let model = self
            .headers
            .get(MODEL_HEADER)
            // Not `to_str`: a name that is not ASCII must be refused as a
            // bad name, not read as no name at all.
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
            .filter(|m| !m.is_empty())
            .or_else(|| model_from_path(&self.path));
        let Some(model) = model else {
            return self.refuse(Rejection::bad_request(
                format!(
                    "no model: a request without a body needs the {MODEL_HEADER} header or a /models/<name> path"
                ),
                "model_required",
            ));
        };
        // A name from a header or a path is checked like one from a body.
        if let Err(e) = dialect::check_model_name(&model) {
            return self.refuse(Rejection::from_client(e));
        }
        let endpoint = Endpoint::from_path(&self.path).unwrap_or(Endpoint::OpenAiChat);
        let request = dialect::model_only(endpoint, model, &self.headers);
        self.job(request, Shape::Headers, false, picker)
    }

    fn decide_body(&mut self, picker: &Picker, trailers: bool) -> Step {
        let body = std::mem::take(&mut self.body).freeze();
        let mut charge = std::mem::replace(&mut self.charge, herd_layer::budget::Charge::none());
        let request = match Endpoint::from_path(&self.path) {
            Some(ep) => {
                // A multipart upload is read only as far as its model
                // field: it costs no JSON parse.
                if ep.multipart() {
                    Ok(())
                } else {
                    self.budget.for_parse(&mut charge, &body)
                }
            }
            .map_err(Into::into)
            .and_then(|()| {
                dialect::parse(
                    ep,
                    &self.headers,
                    body.clone(),
                    // Aliases are not applied here: the body goes to the
                    // engine as the client wrote it (AI Gateway's
                    // `modelNameOverride` renames models in the gateway).
                    dialect::ParseConfig {
                        aliases: None,
                        ..picker.cfg.parse_config()
                    },
                    charge,
                )
            }),
            None => dialect::parse_unknown(&self.headers, body.clone()),
        }
        .map_err(Rejection::from_client);
        let request = match request {
            Ok(r) => r,
            Err(rej) => return self.refuse(rej),
        };
        let shape = if self.req_mode == BodySendMode::FullDuplexStreamed {
            Shape::FullDuplex {
                body_ends: !trailers,
            }
        } else if self.defer {
            Shape::Deferred {
                chunks: self.chunks,
            }
        } else {
            Shape::InBody
        };
        self.frozen = body;
        self.job(request, shape, trailers, picker)
    }

    fn job(
        &mut self,
        mut request: RouteRequest,
        shape: Shape,
        trailers: bool,
        picker: &Picker,
    ) -> Step {
        // The caller, as the gateway names it (`[limits] header`): the
        // same limits as the proxy's keys, applied by the same layer.
        request.tenant = picker.cfg.limits.tenant_from(&self.headers);
        let only = match &self.subset {
            None => None,
            Some(entries) if entries.is_empty() => {
                return self.refuse(Rejection::unavailable(
                    "the subset hint is empty: no endpoint may serve this request",
                    "no_eligible_endpoint",
                ));
            }
            Some(entries) => {
                let ids = crate::subset::resolve(entries, &picker.fleet.snapshot());
                if ids.is_empty() {
                    return self.refuse(Rejection::unavailable(
                        format!(
                            "no known endpoint matches the subset hint [{}]",
                            entries.join(", ")
                        ),
                        "no_eligible_endpoint",
                    ));
                }
                Some(Arc::from(ids))
            }
        };
        self.phase = Phase::Picking;
        Step::Pick(Job {
            request,
            only,
            shape,
            trailers,
        })
    }

    /// Refuse with an immediate response, the last thing the stream sends;
    /// a slot already held is given back at once.
    fn refuse(&mut self, rej: Rejection) -> Step {
        if self.routing.is_none() {
            // A request refused after its pick was counted as picked.
            self.metrics.outcome(&rej.status.to_string());
        }
        tracing::debug!(status = rej.status, message = %rej.message, "refusing request");
        self.end_response(false);
        self.phase = Phase::Refused;
        self.body = BytesMut::new();
        self.frozen = Bytes::new();
        self.charge = herd_layer::budget::Charge::none();
        Step::End(vec![immediate(&rej)])
    }

    /// Replies once the pick is made (or refused).
    fn picked(&mut self, result: Result<Decision, Rejection>, job: &Job) -> Step {
        let d = match result {
            Ok(d) => d,
            Err(rej) => return self.refuse(rej),
        };
        self.phase = Phase::Routed;
        self.metrics.picked(d.took);
        tracing::debug!(endpoint = %d.endpoint, node = %d.pick.node, model = %d.model, took_us = d.took.as_micros() as u64, "picked");
        let endpoint = d.endpoint.clone();
        let body = std::mem::take(&mut self.frozen);
        self.routing = Some(Routing {
            decision: d,
            stream: job.request.stream,
            meter: Meter::new(Instant::now()),
            status: None,
            _running: self.metrics.hold_running(),
        });
        let mut out = Vec::new();
        match job.shape {
            Shape::Headers => out.push(route(&endpoint, None, false)),
            Shape::FullDuplex { body_ends } => {
                out.push(route(&endpoint, Some(body.len()), false));
                out.extend(
                    chunked(body, body_ends)
                        .into_iter()
                        .map(|c| reply(Resp::RequestBody(c))),
                );
            }
            Shape::Deferred { chunks } => {
                out.push(route(&endpoint, None, false));
                for _ in 0..chunks {
                    out.push(reply(Resp::RequestBody(BodyResponse::default())));
                }
            }
            Shape::InBody => out.push(route(&endpoint, None, true)),
        }
        if job.trailers {
            out.push(reply(Resp::RequestTrailers(TrailersResponse::default())));
        }
        Step::Reply(out)
    }

    fn response_headers(
        &mut self,
        h: &HttpHeaders,
        metadata: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>,
    ) -> Vec<ProcessingResponse> {
        self.phase = Phase::Responding;
        let mut set = Vec::new();
        if let Some(r) = &mut self.routing {
            r.status = h
                .headers
                .iter()
                .flat_map(|m| m.headers.iter())
                .find(|hv| hv.key == ":status")
                .and_then(|hv| {
                    let v = if hv.raw_value.is_empty() {
                        hv.value.as_bytes()
                    } else {
                        &hv.raw_value[..]
                    };
                    std::str::from_utf8(v).ok()?.parse().ok()
                });
            if let Some(served) = served_endpoint(metadata)
                && served != r.decision.endpoint
            {
                tracing::warn!(picked = %r.decision.endpoint, %served, "the data plane served another endpoint than the one picked");
            }
            set.push(header(PICKED_HEADER, &r.decision.endpoint));
            // The tenant's quotas, as the limit layer put them on the pick.
            for (k, v) in r.decision.hold.headers() {
                if k.as_str().starts_with("x-ratelimit-")
                    && let Ok(v) = v.to_str()
                {
                    set.push(header(k.as_str(), v));
                }
            }
        }
        let out = vec![reply(Resp::ResponseHeaders(HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers: set,
                    remove_headers: vec![],
                }),
                ..Default::default()
            }),
        }))];
        if h.end_of_stream {
            self.end_response(true);
        }
        out
    }

    fn response_body(&mut self, b: HttpBody) -> Vec<ProcessingResponse> {
        self.phase = Phase::Responding;
        if let Some(r) = &mut self.routing {
            r.meter.chunk(&b.body);
            let tokens = r.meter.take_chunks();
            if let Some(m) = &r.decision.meter {
                m.streamed(tokens);
            }
        }
        let eos = b.end_of_stream;
        let out = if self.rsp_mode == BodySendMode::FullDuplexStreamed {
            chunked(Bytes::from(b.body), eos)
                .into_iter()
                .map(|c| reply(Resp::ResponseBody(c)))
                .collect()
        } else {
            vec![reply(Resp::ResponseBody(BodyResponse::default()))]
        };
        if eos {
            self.end_response(true);
        }
        out
    }

    /// The response is over (`complete`: the stream is `Done`), or the
    /// stream is going away: learn from it and give the slot back. Safe to
    /// call more than once; only the first call with a slot held does anything.
    fn end_response(&mut self, complete: bool) {
        if complete {
            self.phase = Phase::Done;
        }
        let Some(mut r) = self.routing.take() else {
            return;
        };
        r.meter.finish();
        let d = &r.decision;
        // Without a status (response phase not sent to us, or a reset before
        // it) there is nothing to learn; the slot is released all the same.
        if let Some(status) = r.status {
            let ok = status < 500 && (complete || self.rsp_mode == BodySendMode::None);
            let mut outcome = r.meter.outcome(ok);
            if let Some(m) = &d.meter {
                m.finished(&outcome);
            }
            // What the node's parallelism is learned from (herd_layer::slots).
            outcome.concurrency = Some(d.pick.concurrency).filter(|k| *k > 0);
            let labels = ModelLabels {
                model: d.model.clone(),
                endpoint: d.endpoint.clone(),
            };
            if let Some(t) = outcome.ttft_ms {
                self.metrics.ttft.observe(t / 1000.0);
            }
            if let Some(n) = outcome.prompt_tokens {
                self.metrics.input_tokens.get_or_create(&labels).inc_by(n);
            }
            if let Some(n) = outcome.output_tokens {
                self.metrics.output_tokens.get_or_create(&labels).inc_by(n);
            }
            if status < 500 && !complete && self.rsp_mode != BodySendMode::None {
                // Reset mid-response: the client left; not the node's fault.
                tracing::debug!(endpoint = %d.endpoint, "stream ended before the response did");
            } else {
                // Recorded through the same history the proxy feeds.
                self.history.record(&d.pick.node, &d.model, &outcome);
            }
        }
        // Dropping the routing gives the slot and the running gauge back.
        drop(r);
    }
}

fn reply(r: Resp) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(r),
        ..Default::default()
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: OVERWRITE,
        ..Default::default()
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// The pick: header + `envoy.lb` metadata (same value) + `clear_route_cache`.
fn route(endpoint: &str, content_length: Option<usize>, in_body: bool) -> ProcessingResponse {
    let mut set = vec![header(DESTINATION, endpoint)];
    if let Some(n) = content_length {
        set.push(header("content-length", &n.to_string()));
    }
    let common = CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers: set,
            remove_headers: vec![],
        }),
        clear_route_cache: true,
        ..Default::default()
    };
    let mut lb = Struct::default();
    lb.fields
        .insert(DESTINATION.to_string(), string_value(endpoint));
    let mut md = Struct::default();
    md.fields.insert(
        LB_NAMESPACE.to_string(),
        Value {
            kind: Some(Kind::StructValue(lb)),
        },
    );
    let response = if in_body {
        Resp::RequestBody(BodyResponse {
            response: Some(common),
        })
    } else {
        Resp::RequestHeaders(HeadersResponse {
            response: Some(common),
        })
    };
    ProcessingResponse {
        response: Some(response),
        dynamic_metadata: Some(md),
        ..Default::default()
    }
}

/// A body as `streamed_response` replies of at most [`MAX_CHUNK`] bytes.
fn chunked(body: Bytes, end_of_stream: bool) -> Vec<BodyResponse> {
    let mut parts: Vec<Bytes> = Vec::new();
    let mut rest = body;
    while rest.len() > MAX_CHUNK {
        parts.push(rest.split_to(MAX_CHUNK));
    }
    parts.push(rest);
    let n = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, b)| BodyResponse {
            response: Some(CommonResponse {
                body_mutation: Some(BodyMutation {
                    mutation: Some(Mutation::StreamedResponse(StreamedBodyResponse {
                        body: b.to_vec(),
                        end_of_stream: end_of_stream && i + 1 == n,
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
        })
        .collect()
}

/// An `ImmediateResponse` with an OpenAI-shaped JSON error body.
fn immediate(rej: &Rejection) -> ProcessingResponse {
    let kind = match rej.status {
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    let body = herd_layer::dialect::openai::openai_error(&rej.message, kind, Some(rej.code));
    let mut set = vec![
        header("content-type", "application/json"),
        header(DROPPED_REASON, rej.dropped_reason),
    ];
    if let Some(d) = rej.retry_after {
        set.push(header(
            "retry-after",
            &herd_layer::error::retry_after_secs(d).to_string(),
        ));
    }
    for (k, v) in &rej.headers {
        set.push(header(k, v));
    }
    reply(Resp::ImmediateResponse(ImmediateResponse {
        status: Some(HttpStatus {
            code: i32::from(rej.status),
        }),
        headers: Some(HeaderMutation {
            set_headers: set,
            remove_headers: vec![],
        }),
        body: serde_json::to_vec(&body).unwrap_or_default(),
        details: format!("herd_epp_{}", rej.code),
        grpc_status: None,
    }))
}

fn served_endpoint(
    metadata: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>,
) -> Option<String> {
    let v = metadata?
        .filter_metadata
        .get(LB_NAMESPACE)?
        .fields
        .get(SERVED_KEY)?;
    match &v.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// `/…/models/<name>` → `<name>`.
fn model_from_path(path: &str) -> Option<String> {
    let p = path.split('?').next().unwrap_or("");
    let (_, rest) = p.split_once("/models/")?;
    let m = rest.trim_matches('/');
    (!m.is_empty() && m.len() <= 256).then(|| m.to_string())
}
