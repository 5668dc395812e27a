//! A hostile ext_proc client against a real herd-epp (issue #11 item 7):
//! raw gRPC streams that break the protocol's order, go silent, split a
//! body into thousands of empty chunks, or send messages that do not decode
//! or are too large. Each must end the stream with the right gRPC status,
//! send nothing after an immediate response, and give back the admission
//! slot and the `herd_epp_request_running` gauge on every path.
//!
//! Timeouts are configured small (half a second to a second and a half),
//! so the whole file runs in seconds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use herd_epp::envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use herd_epp::envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use herd_epp::envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use herd_epp::envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Req;
use herd_epp::envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Resp;
use herd_epp::envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, ProcessingResponse,
    ProtocolConfiguration,
};
use herd_tests::envoy::*;
use herd_tests::*;
use tokio::sync::mpsc;
use tonic::{Code, Status};

const BODY_TIMEOUT: Duration = Duration::from_millis(500);
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1500);
const IDLE_TIMEOUT: Duration = Duration::from_millis(1000);
/// max_body_bytes of these tests: above tonic's default 4 MiB message limit,
/// so a whole body in one message must be accepted.
const MAX_BODY: usize = 6 * 1024 * 1024;
/// herd-epp's chunk limit for `MAX_BODY`: one chunk per 2 KiB of the byte limit.
const MAX_CHUNKS: usize = MAX_BODY / 2048;
/// Longest a test waits for something herd-epp should do at once.
const PROMPTLY: Duration = Duration::from_secs(5);

async fn fleet() -> EppFleet {
    let mut cfg = epp_config();
    cfg.routing.body_timeout = BODY_TIMEOUT;
    cfg.routing.response_timeout = RESPONSE_TIMEOUT;
    cfg.routing.idle_timeout = IDLE_TIMEOUT;
    cfg.routing.max_body_bytes = MAX_BODY;
    let d = herd_node::DeviceConfig {
        num_parallel: 1,
        ..device("a", 64, vec![model("m:8b", 2.0)], &["m:8b"])
    };
    start_epp(cfg, vec![d]).await
}

/// One raw ext_proc stream.
struct Raw {
    tx: Option<mpsc::UnboundedSender<ProcessingRequest>>,
    rx: tonic::Streaming<ProcessingResponse>,
}

impl Raw {
    async fn open(addr: SocketAddr) -> Raw {
        let mut c = ExternalProcessorClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to herd-epp");
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = c
            .process(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
            .await
            .expect("open the ext_proc stream")
            .into_inner();
        Raw { tx: Some(tx), rx }
    }

    fn send(&self, m: ProcessingRequest) {
        // The stream may already be over on herd-epp's side; that is for the
        // reads to find out.
        let _ = self.tx.as_ref().expect("not closed").send(m);
    }

    /// The next reply; panics on an error status, the end, or silence.
    async fn reply(&mut self) -> Resp {
        match tokio::time::timeout(PROMPTLY, self.rx.message()).await {
            Ok(Ok(Some(r))) => r.response.expect("a reply with a response"),
            Ok(Ok(None)) => panic!("the stream ended where a reply was due"),
            Ok(Err(s)) => panic!("the stream failed where a reply was due: {s:?}"),
            Err(_) => panic!("no reply within {PROMPTLY:?}"),
        }
    }

    /// How the stream ends, within `within`: `Ok(())` for a clean end, the
    /// status otherwise. Panics if a reply comes first.
    async fn end(&mut self, within: Duration) -> Result<(), Status> {
        match tokio::time::timeout(within, self.rx.message()).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Err(s)) => Err(s),
            Ok(Ok(Some(r))) => panic!("a reply where the stream should have ended: {r:?}"),
            Err(_) => panic!("the stream was still open after {within:?}"),
        }
    }

    /// The stream ends with `code`, and its message says `what`.
    async fn fails(&mut self, code: Code, what: &[&str]) -> Status {
        let s = self
            .end(PROMPTLY)
            .await
            .expect_err("the stream must end with an error status, not OK");
        assert_eq!(s.code(), code, "{s:?}");
        for w in what {
            assert!(s.message().contains(w), "{w:?} not in {:?}", s.message());
        }
        s
    }
}

fn headers(pairs: &[(&str, &str)], eos: bool) -> HttpHeaders {
    HttpHeaders {
        headers: Some(HeaderMap {
            headers: pairs
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.to_string(),
                    raw_value: v.as_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
        }),
        end_of_stream: eos,
        ..Default::default()
    }
}

fn msg(r: Req) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(r),
        ..Default::default()
    }
}

const CHAT: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    ("content-type", "application/json"),
];

/// The first message: request headers with the body modes.
fn start(
    mode: BodySendMode,
    without_waiting: bool,
    pairs: &[(&str, &str)],
    eos: bool,
) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Req::RequestHeaders(headers(pairs, eos))),
        protocol_config: Some(ProtocolConfiguration {
            request_body_mode: mode as i32,
            response_body_mode: BodySendMode::FullDuplexStreamed as i32,
            send_body_without_waiting_for_header_response: without_waiting,
        }),
        ..Default::default()
    }
}

/// A headers-only request (model from `x-ai-eg-model`), picked at once.
fn headers_only() -> ProcessingRequest {
    start(
        BodySendMode::None,
        false,
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("x-ai-eg-model", "m:8b"),
        ],
        true,
    )
}

fn body(b: &[u8], eos: bool) -> ProcessingRequest {
    msg(Req::RequestBody(HttpBody {
        body: b.to_vec(),
        end_of_stream: eos,
        ..Default::default()
    }))
}

fn response_headers(eos: bool) -> ProcessingRequest {
    msg(Req::ResponseHeaders(headers(&[(":status", "200")], eos)))
}

fn response_body(b: &[u8], eos: bool) -> ProcessingRequest {
    msg(Req::ResponseBody(HttpBody {
        body: b.to_vec(),
        end_of_stream: eos,
        ..Default::default()
    }))
}

fn chat_body() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "m:8b", "messages": [{"role": "user", "content": "hi"}],
    }))
    .unwrap()
}

/// The pick in a headers reply.
fn assert_pick(r: &Resp) {
    let Resp::RequestHeaders(h) = r else {
        panic!("expected the pick in a headers reply, got {r:?}")
    };
    let set = &h
        .response
        .as_ref()
        .unwrap()
        .header_mutation
        .as_ref()
        .unwrap()
        .set_headers;
    assert!(
        set.iter()
            .any(|o| o.header.as_ref().unwrap().key == "x-gateway-destination-endpoint"),
        "{h:?}"
    );
}

/// An immediate response with `status`, OpenAI's error shape and `code`.
fn assert_immediate(r: &Resp, status: i32, code: &str) -> serde_json::Value {
    let Resp::ImmediateResponse(ir) = r else {
        panic!("expected an immediate response, got {r:?}")
    };
    assert_eq!(ir.status.as_ref().unwrap().code, status, "{ir:?}");
    let v: serde_json::Value = serde_json::from_slice(&ir.body).unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(v["error"]["type"].is_string(), "{v}");
    v
}

/// `herd_epp_request_running` as `/metrics` shows it.
fn running(f: &EppFleet) -> i64 {
    let text = f.epp.metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix("herd_epp_request_running "))
        .unwrap_or_else(|| panic!("no running gauge in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn in_flight(f: &EppFleet) -> u32 {
    f.epp
        .live
        .admission
        .snapshot()
        .iter()
        .map(|(_, _, l, _)| l.in_flight)
        .sum()
}

/// Once a stream is over, its slot and its share of the gauge come back.
async fn all_released(f: &EppFleet, what: &str) {
    let deadline = Instant::now() + PROMPTLY;
    while running(f) != 0 || in_flight(f) != 0 {
        assert!(
            Instant::now() < deadline,
            "{what}: running gauge {} and {} slots still held",
            running(f),
            in_flight(f)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_out_of_sequence_messages_end_the_stream_with_invalid_argument() {
    let f = fleet().await;
    let addr = f.epp.grpc_addr;

    // A second request_headers after a pick: the stream fails, and the
    // gauge the first pick raised comes back down (it leaked before).
    let mut s = Raw::open(addr).await;
    s.send(headers_only());
    assert_pick(&s.reply().await);
    assert_eq!(running(&f), 1);
    s.send(headers_only());
    s.fails(Code::InvalidArgument, &["request_headers"]).await;
    all_released(&f, "second request_headers").await;

    // Response messages before any pick.
    for (m, name) in [
        (response_headers(false), "response_headers"),
        (response_body(b"x", false), "response_body"),
    ] {
        let mut s = Raw::open(addr).await;
        s.send(m);
        s.fails(Code::InvalidArgument, &[name, "pick"]).await;
    }
    // …also once the request is read but not picked yet.
    let mut s = Raw::open(addr).await;
    s.send(start(BodySendMode::FullDuplexStreamed, false, CHAT, false));
    s.send(response_headers(false));
    s.fails(Code::InvalidArgument, &["response_headers", "pick"])
        .await;

    // Request body and trailers after the request ended.
    for late in [
        body(b"more", false),
        msg(Req::RequestTrailers(HttpTrailers::default())),
    ] {
        let mut s = Raw::open(addr).await;
        s.send(start(BodySendMode::FullDuplexStreamed, false, CHAT, false));
        s.send(body(&chat_body(), true));
        assert_pick(&s.reply().await);
        let Resp::RequestBody(_) = s.reply().await else {
            panic!("the body is re-emitted after the pick")
        };
        s.send(late);
        s.fails(Code::InvalidArgument, &["after the request ended"])
            .await;
        all_released(&f, "request message after the request ended").await;
    }

    // Anything after the response ended.
    let mut s = Raw::open(addr).await;
    s.send(headers_only());
    assert_pick(&s.reply().await);
    s.send(response_headers(false));
    let Resp::ResponseHeaders(_) = s.reply().await else {
        panic!("response headers answered")
    };
    s.send(response_body(b"{}", true));
    let Resp::ResponseBody(_) = s.reply().await else {
        panic!("response body answered")
    };
    all_released(&f, "complete response").await;
    s.send(response_body(b"{}", false));
    s.fails(
        Code::InvalidArgument,
        &["response_body", "after the response ended"],
    )
    .await;

    // A message that carries no request at all.
    let mut s = Raw::open(addr).await;
    s.send(ProcessingRequest::default());
    s.fails(Code::InvalidArgument, &["no request"]).await;

    all_released(&f, "every case").await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_nothing_is_sent_after_an_immediate_response() {
    let f = fleet().await;
    let addr = f.epp.grpc_addr;
    for mode in [BodySendMode::FullDuplexStreamed, BodySendMode::Buffered] {
        let mut s = Raw::open(addr).await;
        s.send(start(mode, false, CHAT, false));
        if mode == BodySendMode::Buffered {
            let Resp::RequestHeaders(_) = s.reply().await else {
                panic!("BUFFERED: headers answered first")
            };
        }
        s.send(body(b"{not json", true));
        assert_immediate(&s.reply().await, 400, "invalid_request");
        // Whatever comes next is not answered: the stream is over.
        s.send(response_headers(false));
        s.send(response_body(b"x", true));
        s.end(PROMPTLY)
            .await
            .expect("the stream ends cleanly right after an immediate response");
    }
    all_released(&f, "refused requests").await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_silent_streams_time_out_and_free_their_slot() {
    let f = fleet().await;
    let addr = f.epp.grpc_addr;
    let slack = Duration::from_secs(3);

    // Before the pick: the body never comes (body_timeout).
    let mut s = Raw::open(addr).await;
    let t = Instant::now();
    s.send(start(BodySendMode::FullDuplexStreamed, false, CHAT, false));
    s.send(body(b"{\"model\":", false));
    let e = s.end(BODY_TIMEOUT + slack).await.expect_err("not OK");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t.elapsed() >= BODY_TIMEOUT, "{:?}", t.elapsed());

    // After the pick, no response ever starts (response_timeout): the
    // client keeps its end open, yet the slot comes back.
    let mut s = Raw::open(addr).await;
    s.send(headers_only());
    let t = Instant::now();
    assert_pick(&s.reply().await);
    assert_eq!(in_flight(&f), 1);
    let e = s.end(RESPONSE_TIMEOUT + slack).await.expect_err("not OK");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("response"), "{e:?}");
    assert!(t.elapsed() >= RESPONSE_TIMEOUT, "{:?}", t.elapsed());
    all_released(&f, "no response").await;

    // The response started, then nothing more (idle_timeout).
    let mut s = Raw::open(addr).await;
    s.send(headers_only());
    assert_pick(&s.reply().await);
    s.send(response_headers(false));
    let t = Instant::now();
    let Resp::ResponseHeaders(_) = s.reply().await else {
        panic!("response headers answered")
    };
    let e = s.end(IDLE_TIMEOUT + slack).await.expect_err("not OK");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(t.elapsed() >= IDLE_TIMEOUT, "{:?}", t.elapsed());
    all_released(&f, "idle response").await;

    // A response that keeps coming is not cut, however long it lasts in
    // all: a first byte after half of response_timeout, then chunks half
    // of idle_timeout apart, for longer than both together.
    let mut s = Raw::open(addr).await;
    s.send(headers_only());
    assert_pick(&s.reply().await);
    tokio::time::sleep(RESPONSE_TIMEOUT / 2).await;
    s.send(response_headers(false));
    let Resp::ResponseHeaders(_) = s.reply().await else {
        panic!("response headers answered")
    };
    for i in 0..6 {
        tokio::time::sleep(IDLE_TIMEOUT / 2).await;
        s.send(response_body(b"{\"x\":1}\n", i == 5));
        let Resp::ResponseBody(_) = s.reply().await else {
            panic!("chunk {i} answered")
        };
    }
    all_released(&f, "slow but complete response").await;

    // One slot on the device: it is usable again.
    let mut s = Raw::open(addr).await;
    s.send(headers_only());
    assert_pick(&s.reply().await);
    drop(s);
    all_released(&f, "client reset mid-response").await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_too_many_body_chunks_is_413_without_per_chunk_replies() {
    let f = fleet().await;
    let addr = f.epp.grpc_addr;
    // FULL_DUPLEX_STREAMED, and STREAMED with the body sent without waiting
    // (which answers every chunk once picked).
    for (mode, without_waiting) in [
        (BodySendMode::FullDuplexStreamed, false),
        (BodySendMode::Streamed, true),
    ] {
        let mut s = Raw::open(addr).await;
        s.send(start(mode, without_waiting, CHAT, false));
        for _ in 0..=MAX_CHUNKS {
            s.send(body(b"", false));
        }
        let v = assert_immediate(&s.reply().await, 413, "body_too_large");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("chunks"),
            "{v}"
        );
        // …and the stream is over: no reply for the chunks.
        s.send(body(b"", true));
        s.end(PROMPTLY).await.expect("clean end after the 413");
    }
    // At the limit it is still a request: picked, one reply per chunk.
    let mut s = Raw::open(addr).await;
    s.send(start(BodySendMode::Streamed, true, CHAT, false));
    let b = chat_body();
    for i in 0..MAX_CHUNKS {
        let part: &[u8] = if i == 0 { &b } else { b"" };
        s.send(body(part, i + 1 == MAX_CHUNKS));
    }
    assert_pick(&s.reply().await);
    for i in 0..MAX_CHUNKS {
        let Resp::RequestBody(_) = s.reply().await else {
            panic!("body reply {i}")
        };
    }
    drop(s);
    all_released(&f, "chunk limit").await;
    f.shutdown().await;
}

/// Bytes as they are, so a test can send what is not a `ProcessingRequest`.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epp_undecodable_or_oversized_messages_end_with_an_error_status() {
    let f = fleet().await;
    let addr = f.epp.grpc_addr;

    // Not a ProcessingRequest: field 2 (request_headers) claims 5 bytes and has 1.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let garbage = vec![0x12u8, 0x05, 0x01];
    let rsp = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![garbage])),
            http::uri::PathAndQuery::from_static(
                "/envoy.service.ext_proc.v3.ExternalProcessor/Process",
            ),
            RawCodec,
        )
        .await
        .expect("the stream opens");
    let mut rx = rsp.into_inner();
    match tokio::time::timeout(PROMPTLY, rx.message()).await {
        Ok(Err(s)) => assert_ne!(s.code(), Code::Ok, "{s:?}"),
        other => panic!("an undecodable message must end the stream with an error: {other:?}"),
    }

    // A whole body in one message, larger than tonic's default 4 MiB but
    // within max_body_bytes, is read (BUFFERED sends the body whole).
    let mut s = Raw::open(addr).await;
    s.send(start(BodySendMode::Buffered, false, CHAT, false));
    let Resp::RequestHeaders(_) = s.reply().await else {
        panic!("BUFFERED: headers answered first")
    };
    let pad = "x".repeat(5 * 1024 * 1024);
    let big = serde_json::to_vec(&serde_json::json!({
        "model": "m:8b", "messages": [{"role": "user", "content": pad}],
    }))
    .unwrap();
    assert!(big.len() > 4 * 1024 * 1024 && big.len() < MAX_BODY);
    s.send(body(&big, true));
    let Resp::RequestBody(b) = s.reply().await else {
        panic!("the pick rides on the body reply")
    };
    assert!(b.response.unwrap().clear_route_cache);
    drop(s);
    all_released(&f, "big body").await;

    // A message larger than the body limit plus the headroom for headers:
    // refused by the gRPC decoder, and the stream ends with that status.
    let mut s = Raw::open(addr).await;
    s.send(start(BodySendMode::FullDuplexStreamed, false, CHAT, false));
    s.send(body(&vec![b' '; MAX_BODY + 5 * 1024 * 1024], false));
    let e = s.end(PROMPTLY).await.expect_err("never OK");
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    all_released(&f, "oversized message").await;
    f.shutdown().await;
}
