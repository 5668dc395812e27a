//! `envoy.service.ext_proc.v3.ExternalProcessor/Process`: one stream per
//! HTTP request, driven as a small state machine ([`Exchange`]).
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
//! The admission slot the pick holds ([`Decision::hold`]) is kept until the
//! response ends (body or trailers with end of stream, or a headers-only
//! response), or until the stream goes away — Envoy resets the ext_proc
//! stream when the HTTP stream ends, which is a normal end here, not an
//! error. While a request waits in the queue for a slot, the stream is still
//! watched, so a client that leaves gives its place up at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

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
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use herd_layer::dialect;
use herd_layer::fleet::NodeId;
use herd_layer::history::History;
use herd_layer::request::{Endpoint, RouteRequest};

use crate::leaf::{Decision, Picker, Rejection};
use crate::metrics::{Metrics, ModelLabels};
use crate::names::*;
use crate::usage::Meter;

/// `HeaderValueOption.append_action`: OVERWRITE_IF_EXISTS_OR_ADD. A client
/// must never steer the upstream by sending the destination header itself.
const OVERWRITE: i32 = 2;

/// The ext_proc service.
#[derive(Clone, Debug)]
pub struct Processor {
    picker: Picker,
    metrics: Metrics,
}

impl Processor {
    pub(crate) fn new(picker: Picker, metrics: Metrics) -> Self {
        Processor { picker, metrics }
    }

    /// The tonic service to mount on the ext_proc port.
    pub(crate) fn into_server(self) -> ExternalProcessorServer<Self> {
        ExternalProcessorServer::new(self)
    }
}

#[tonic::async_trait]
impl ExternalProcessor for Processor {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: tonic::Request<Streaming<ProcessingRequest>>,
    ) -> Result<tonic::Response<Self::ProcessStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        self.metrics.streams.inc();
        tokio::spawn(run(self.clone(), request.into_inner(), tx));
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
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

enum Action {
    Reply(Vec<ProcessingResponse>),
    Pick(Job),
}

/// The routed request while its response streams.
#[derive(Debug)]
struct Routing {
    decision: Decision,
    meter: Meter,
    status: Option<u16>,
}

/// One ext_proc stream's state.
struct Exchange {
    metrics: Metrics,
    history: History,
    req_mode: BodySendMode,
    rsp_mode: BodySendMode,
    /// The headers reply waits for the body (full duplex, or Envoy sends the
    /// body without waiting for it).
    defer: bool,
    observe: bool,
    first: bool,
    headers: http::HeaderMap,
    path: String,
    subset: Option<Vec<String>>,
    body: BytesMut,
    /// The whole request body, once received, until re-emitted.
    frozen: Bytes,
    chunks: usize,
    max_body: usize,
    /// The body's share of the memory budget, while it is buffered.
    budget: herd_layer::budget::BodyBudget,
    charge: herd_layer::budget::Charge,
    /// The request phase is settled (picked or refused).
    settled: bool,
    routing: Option<Routing>,
}

async fn run(
    p: Processor,
    mut inbound: Streaming<ProcessingRequest>,
    tx: mpsc::Sender<Result<ProcessingResponse, Status>>,
) {
    let mut x = Exchange::new(
        p.metrics.clone(),
        p.picker.live.history.clone(),
        p.picker.cfg.max_body_bytes,
        p.picker.budget.clone(),
    );
    let mut pending: VecDeque<ProcessingRequest> = VecDeque::new();
    'stream: loop {
        let msg = match pending.pop_front() {
            Some(m) => m,
            None => match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => {
                    // Envoy resets the stream when the HTTP stream ends.
                    tracing::debug!(%status, "ext_proc stream reset");
                    break;
                }
            },
        };
        let replies = match x.handle(msg, &p.picker) {
            Action::Reply(r) => r,
            Action::Pick(job) => {
                let pick = p.picker.pick(job.request.clone(), job.only.clone());
                tokio::pin!(pick);
                let result = loop {
                    tokio::select! {
                        biased;
                        r = &mut pick => break r,
                        m = inbound.message() => match m {
                            Ok(Some(m)) => pending.push_back(m),
                            Ok(None) | Err(_) => {
                                tracing::debug!("stream ended while waiting for a slot");
                                break 'stream;
                            }
                        },
                    }
                };
                x.picked(result, &job)
            }
        };
        if x.observe {
            continue;
        }
        for r in replies {
            if tx.send(Ok(r)).await.is_err() {
                break 'stream;
            }
        }
    }
    x.end_response(false);
}

impl Exchange {
    fn new(
        metrics: Metrics,
        history: History,
        max_body: usize,
        budget: herd_layer::budget::BodyBudget,
    ) -> Self {
        Exchange {
            metrics,
            history,
            req_mode: BodySendMode::Buffered,
            rsp_mode: BodySendMode::None,
            defer: false,
            observe: false,
            first: true,
            headers: http::HeaderMap::new(),
            path: String::new(),
            subset: None,
            body: BytesMut::new(),
            frozen: Bytes::new(),
            chunks: 0,
            max_body,
            budget,
            charge: herd_layer::budget::Charge::none(),
            settled: false,
            routing: None,
        }
    }

    fn handle(&mut self, msg: ProcessingRequest, picker: &Picker) -> Action {
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
            return Action::Reply(vec![]);
        };
        match req {
            Req::RequestHeaders(h) => {
                self.request_headers(h, msg.metadata_context.as_ref(), picker)
            }
            Req::RequestBody(b) => self.request_body(b, picker),
            Req::RequestTrailers(_) => {
                if !self.settled && self.chunks > 0 {
                    return self.decide_body(picker, true);
                }
                Action::Reply(vec![reply(Resp::RequestTrailers(
                    TrailersResponse::default(),
                ))])
            }
            Req::ResponseHeaders(h) => {
                let rs = self.response_headers(&h, msg.metadata_context.as_ref());
                Action::Reply(rs)
            }
            Req::ResponseBody(b) => Action::Reply(self.response_body(b)),
            Req::ResponseTrailers(_) => {
                self.end_response(true);
                Action::Reply(vec![reply(Resp::ResponseTrailers(
                    TrailersResponse::default(),
                ))])
            }
        }
    }

    fn request_headers(
        &mut self,
        h: HttpHeaders,
        metadata: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>,
        picker: &Picker,
    ) -> Action {
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
            return Action::Reply(vec![]);
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
        Action::Reply(vec![reply(Resp::RequestHeaders(HeadersResponse {
            response: Some(CommonResponse::default()),
        }))])
    }

    fn request_body(&mut self, b: HttpBody, picker: &Picker) -> Action {
        if self.settled {
            // Picked from the headers already: let the body through.
            return Action::Reply(self.pass_request_body(b));
        }
        if self.body.len() + b.body.len() > self.max_body {
            return self.refuse(Rejection {
                status: 413,
                message: format!("request body is larger than {} bytes", self.max_body),
                code: "body_too_large",
                dropped_reason: "bad-request",
                retry_after: None,
            });
        }
        self.body.extend_from_slice(&b.body);
        self.chunks += 1;
        if self.body.len() > self.charge.held() {
            // Grow in steps, not per chunk.
            let want = (self.body.len() * 2)
                .min(self.max_body)
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
        Action::Reply(vec![])
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
    fn decide_headers_only(&mut self, picker: &Picker) -> Action {
        let model = self
            .headers
            .get(MODEL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .or_else(|| model_from_path(&self.path));
        let Some(model) = model else {
            return self.refuse(Rejection::bad_request(
                format!(
                    "no model: a request without a body needs the {MODEL_HEADER} header or a /models/<name> path"
                ),
                "model_required",
            ));
        };
        let endpoint = Endpoint::from_path(&self.path).unwrap_or(Endpoint::OpenAiChat);
        let request = dialect::model_only(endpoint, model, &self.headers);
        self.job(request, Shape::Headers, false, picker)
    }

    fn decide_body(&mut self, picker: &Picker, trailers: bool) -> Action {
        let body = std::mem::take(&mut self.body).freeze();
        let mut charge = std::mem::replace(&mut self.charge, herd_layer::budget::Charge::none());
        let request = match Endpoint::from_path(&self.path) {
            Some(ep) => self
                .budget
                .for_parse(&mut charge, &body)
                .map_err(Into::into)
                .and_then(|()| {
                    dialect::parse(
                        ep,
                        &self.headers,
                        body.clone(),
                        picker.cfg.parse_config(),
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
        request: RouteRequest,
        shape: Shape,
        trailers: bool,
        picker: &Picker,
    ) -> Action {
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
        Action::Pick(Job {
            request,
            only,
            shape,
            trailers,
        })
    }

    fn refuse(&mut self, rej: Rejection) -> Action {
        self.settled = true;
        self.metrics.outcome(&rej.status.to_string());
        tracing::debug!(status = rej.status, message = %rej.message, "refusing request");
        Action::Reply(vec![immediate(&rej)])
    }

    /// Replies once the pick is made (or refused).
    fn picked(
        &mut self,
        result: Result<Decision, Rejection>,
        job: &Job,
    ) -> Vec<ProcessingResponse> {
        let d = match result {
            Ok(d) => d,
            Err(rej) => {
                let Action::Reply(r) = self.refuse(rej) else {
                    unreachable!()
                };
                return r;
            }
        };
        self.settled = true;
        self.metrics.picked(d.took);
        self.metrics.running.inc();
        tracing::debug!(endpoint = %d.endpoint, node = %d.pick.node, model = %d.model, took_us = d.took.as_micros() as u64, "picked");
        let endpoint = d.endpoint.clone();
        let body = std::mem::take(&mut self.frozen);
        self.routing = Some(Routing {
            decision: d,
            meter: Meter::new(Instant::now()),
            status: None,
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
        out
    }

    fn response_headers(
        &mut self,
        h: &HttpHeaders,
        metadata: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>,
    ) -> Vec<ProcessingResponse> {
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
        if let Some(r) = &mut self.routing {
            r.meter.chunk(&b.body);
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

    /// The response is over (`complete`), or the stream went away: learn
    /// from it and release the slot.
    fn end_response(&mut self, complete: bool) {
        let Some(mut r) = self.routing.take() else {
            return;
        };
        r.meter.finish();
        let d = &r.decision;
        // Without a status (response phase not sent to us, or a reset before
        // it) there is nothing to learn; the slot is released all the same.
        if let Some(status) = r.status {
            let ok = status < 500 && (complete || self.rsp_mode == BodySendMode::None);
            let outcome = r.meter.outcome(ok);
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
        self.metrics.running.dec();
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
        set.push(header("retry-after", &d.as_secs().max(1).to_string()));
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
