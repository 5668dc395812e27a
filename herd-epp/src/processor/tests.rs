//! The stream state machine, its limits and its timeouts, driven in memory
//! (no gRPC) over a one-node fleet, with tokio's paused clock: the default
//! timeouts (30 s, 600 s, 300 s) pass in virtual time.

use std::future::Future;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::config::core::v3::HeaderMap;
use envoy_types::pb::envoy::service::ext_proc::v3::{HttpTrailers, ProtocolConfiguration};
use herd_layer::fleet::{Fleet, LoadedModel, NodeState, Pressure, Source, Thermal};
use herd_layer::live::Live;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;

use super::*;

const G: u64 = 1 << 30;

fn node(slots: u32) -> NodeState {
    let mut n = NodeState::new(
        "a".into(),
        Source::Attached,
        "http://127.0.0.1:11434".into(),
    );
    n.online = true;
    n.offline_reason = None;
    n.engine_reachable = true;
    n.memory_total_bytes = 64 * G;
    n.memory_available_bytes = 48 * G;
    n.memory_pressure = Pressure::Normal;
    n.thermal = Thermal::Nominal;
    n.parallel_slots = slots;
    n.loaded = vec![LoadedModel {
        name: "m:8b".into(),
        size_bytes: 2 * G,
        vram_bytes: 2 * G,
        context_length: 8192,
        expires_at_ms: 0,
        ..Default::default()
    }];
    n
}

/// herd-epp's processor over one node with `slots` parallel slots.
struct Epp {
    p: Processor,
    live: Live,
    metrics: Metrics,
}

fn epp(cfg: RoutingConfig, slots: u32) -> Epp {
    epp_over(cfg, node(slots))
}

fn epp_over(cfg: RoutingConfig, n: NodeState) -> Epp {
    let fleet = Fleet::new();
    fleet.update(|v| v.insert(n));
    let live = Live::default();
    let metrics = Metrics::new();
    let p = Processor::new(
        Picker::new(fleet, live.clone(), Arc::new(cfg)),
        metrics.clone(),
    );
    Epp { p, live, metrics }
}

type Inbound = mpsc::UnboundedSender<Result<ProcessingRequest, Status>>;

/// One stream, as Envoy sees it.
struct Conn {
    tx: Option<Inbound>,
    rx: ReplyStream,
}

impl Epp {
    fn open(&self) -> Conn {
        let (tx, rx) = mpsc::unbounded_channel();
        Conn {
            tx: Some(tx),
            rx: self.p.spawn(UnboundedReceiverStream::new(rx)),
        }
    }

    fn load(&self) -> (u32, u32) {
        self.live
            .admission
            .snapshot()
            .iter()
            .fold((0, 0), |(f, w), (_, _, l, _)| {
                (f + l.in_flight, w + l.waiting)
            })
    }

    /// Every stream is over, and what they held is back: no slot, no
    /// running request, no open stream.
    async fn quiet(&self, what: &str) {
        for _ in 0..1000 {
            if self.metrics.streams_open() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            self.metrics.streams_open(),
            0,
            "{what}: a stream task lives on"
        );
        self.released(what);
    }

    /// No slot held or waited for, no running request (streams may be open).
    fn released(&self, what: &str) {
        assert_eq!(self.metrics.running(), 0, "{what}: running gauge");
        assert_eq!(self.load(), (0, 0), "{what}: slots held or waiting");
    }
}

impl Conn {
    fn send(&self, m: ProcessingRequest) {
        let _ = self.tx.as_ref().expect("open").send(Ok(m));
    }

    fn fail(&self, s: Status) {
        let _ = self.tx.as_ref().expect("open").send(Err(s));
    }

    async fn reply(&mut self) -> Resp {
        match self.rx.next().await {
            Some(Ok(r)) => r.response.expect("a response"),
            Some(Err(s)) => panic!("the stream failed where a reply was due: {s:?}"),
            None => panic!("the stream ended where a reply was due"),
        }
    }

    /// How the stream ends; panics if a reply comes instead.
    async fn end(&mut self) -> Result<(), Status> {
        match self.rx.next().await {
            None => Ok(()),
            Some(Err(s)) => {
                assert!(
                    self.rx.next().await.is_none(),
                    "the status is the last thing"
                );
                Err(s)
            }
            Some(Ok(r)) => panic!("a reply where the stream should have ended: {r:?}"),
        }
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

const CHAT: &[(&str, &str)] = &[(":method", "POST"), (":path", "/v1/chat/completions")];
const MODEL: (&str, &str) = ("x-ai-eg-model", "m:8b");

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

fn full_duplex() -> ProcessingRequest {
    start(BodySendMode::FullDuplexStreamed, false, CHAT, false)
}

/// STREAMED with the body sent without waiting: one reply per chunk once picked.
fn deferred() -> ProcessingRequest {
    start(BodySendMode::Streamed, true, CHAT, false)
}

/// Picked at once from the model header (no body).
fn headers_only() -> ProcessingRequest {
    start(BodySendMode::None, false, &[CHAT[0], CHAT[1], MODEL], true)
}

fn body(b: &[u8], eos: bool) -> ProcessingRequest {
    msg(Req::RequestBody(HttpBody {
        body: b.to_vec(),
        end_of_stream: eos,
        ..Default::default()
    }))
}

/// A body first, as Envoy sends it when configured to skip the headers.
fn headless_body() -> ProcessingRequest {
    ProcessingRequest {
        protocol_config: Some(ProtocolConfiguration {
            request_body_mode: BodySendMode::FullDuplexStreamed as i32,
            ..Default::default()
        }),
        ..body(b"{", false)
    }
}

fn trailers() -> ProcessingRequest {
    msg(Req::RequestTrailers(HttpTrailers::default()))
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

fn response_trailers() -> ProcessingRequest {
    msg(Req::ResponseTrailers(HttpTrailers::default()))
}

fn chat() -> Vec<u8> {
    br#"{"model":"m:8b","messages":[{"role":"user","content":"hi"}]}"#.to_vec()
}

fn is_pick(r: &Resp) -> bool {
    matches!(r, Resp::RequestHeaders(h)
        if h.response.as_ref().is_some_and(|c| c.clear_route_cache))
}

fn immediate_status(r: &Resp) -> (i32, serde_json::Value) {
    let Resp::ImmediateResponse(ir) = r else {
        panic!("expected an immediate response, got {r:?}")
    };
    (
        ir.status.as_ref().unwrap().code,
        serde_json::from_slice(&ir.body).unwrap(),
    )
}

#[test]
fn limits_follow_max_body_bytes() {
    assert_eq!(
        max_body_chunks(RoutingConfig::default().max_body_bytes),
        16_384
    );
    assert_eq!(max_body_chunks(64 << 20), 32_768);
    assert_eq!(max_body_chunks(4096), MIN_BODY_CHUNKS);
    assert_eq!(max_body_chunks(0), MIN_BODY_CHUNKS);
    assert_eq!(max_message_bytes(32 << 20), 36 << 20);
    assert_eq!(max_message_bytes(usize::MAX), usize::MAX);
}

#[tokio::test(start_paused = true)]
async fn messages_out_of_sequence_end_the_stream_with_invalid_argument() {
    let e = epp(RoutingConfig::default(), 4);
    // (case, messages that are in order, replies they get, the wrong one, what the error says)
    let cases: Vec<(&str, Vec<ProcessingRequest>, usize, ProcessingRequest, &str)> = vec![
        (
            "second headers after a pick",
            vec![headers_only()],
            1,
            headers_only(),
            "a second request_headers",
        ),
        (
            "second headers while reading",
            vec![full_duplex()],
            0,
            full_duplex(),
            "a second request_headers",
        ),
        (
            "headers after a headless body",
            vec![headless_body()],
            0,
            headers_only(),
            "request_headers after the request body",
        ),
        (
            "response headers first",
            vec![],
            0,
            response_headers(false),
            "response_headers before the pick",
        ),
        (
            "response trailers first",
            vec![],
            0,
            response_trailers(),
            "response_trailers before the pick",
        ),
        (
            "response body while reading",
            vec![full_duplex()],
            0,
            response_body(b"x", false),
            "response_body before the pick",
        ),
        (
            "trailers first",
            vec![],
            0,
            trailers(),
            "request_trailers before request_headers",
        ),
        (
            "body after the body ended",
            vec![full_duplex(), body(&chat(), true)],
            2,
            body(b"x", false),
            "request_body after the request ended",
        ),
        (
            "trailers after the body ended",
            vec![full_duplex(), body(&chat(), true)],
            2,
            trailers(),
            "request_trailers after the request ended",
        ),
        (
            "body after headers-only",
            vec![headers_only()],
            1,
            body(b"x", true),
            "request_body after the request ended",
        ),
        (
            "trailers after trailers",
            vec![full_duplex(), body(&chat(), false), trailers()],
            3,
            trailers(),
            "request_trailers after the request ended",
        ),
        (
            "second response headers",
            vec![headers_only(), response_headers(false)],
            2,
            response_headers(false),
            "a second response_headers",
        ),
        (
            "trailers after the response body ended",
            vec![
                headers_only(),
                response_headers(false),
                response_body(b"{}", true),
            ],
            3,
            response_trailers(),
            "response_trailers after the response ended",
        ),
        (
            "body after a headers-only response",
            vec![headers_only(), response_headers(true)],
            2,
            response_body(b"x", false),
            "response_body after the response ended",
        ),
        (
            "headers after the response ended",
            vec![headers_only(), response_trailers()],
            2,
            headers_only(),
            "request_headers after the response ended",
        ),
        (
            "a message with no request",
            vec![],
            0,
            ProcessingRequest::default(),
            "no request",
        ),
    ];
    for (what, ok, replies, wrong, says) in cases {
        let mut c = e.open();
        for m in ok {
            c.send(m);
        }
        for _ in 0..replies {
            c.reply().await;
        }
        c.send(wrong);
        let s = c.end().await.expect_err(what);
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
        assert!(s.message().contains(says), "{what}: {s:?}");
        e.quiet(what).await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_immediate_response_is_the_last_thing_sent() {
    let e = epp(RoutingConfig::default(), 4);
    // Refused while reading (bad body), before any pick.
    let mut c = e.open();
    c.send(full_duplex());
    c.send(body(b"{not json", true));
    c.send(response_headers(false));
    c.send(response_body(b"x", true));
    let (status, v) = immediate_status(&c.reply().await);
    assert_eq!(status, 400, "{v}");
    clean(c.end().await, "nothing after the immediate response");
    e.quiet("refused body").await;

    // Refused after the pick (the passed-through body grows too large):
    // the slot is given back at once.
    let cfg = RoutingConfig {
        max_body_bytes: 1000,
        ..Default::default()
    };
    let e = epp(cfg, 4);
    let mut c = e.open();
    c.send(start(
        BodySendMode::Streamed,
        false,
        &[CHAT[0], CHAT[1], MODEL],
        false,
    ));
    assert!(is_pick(&c.reply().await));
    assert_eq!(e.metrics.running(), 1);
    c.send(body(&[b' '; 600], false));
    let Resp::RequestBody(_) = c.reply().await else {
        panic!("the body passes")
    };
    c.send(body(&[b' '; 600], false));
    c.send(response_headers(false));
    let (status, v) = immediate_status(&c.reply().await);
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["code"], "body_too_large");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1000 bytes"),
        "{v}"
    );
    clean(c.end().await, "clean end");
    e.quiet("refused after the pick").await;
}

#[tokio::test(start_paused = true)]
async fn the_slot_and_the_running_gauge_come_back_on_every_exit() {
    let e = epp(RoutingConfig::default(), 1);
    #[derive(Debug, Clone, Copy)]
    enum Exit {
        Complete,
        OutOfSequence,
        HalfClose,
        Reset,
        DecodeError,
        Timeout,
    }
    for exit in [
        Exit::Complete,
        Exit::OutOfSequence,
        Exit::HalfClose,
        Exit::Reset,
        Exit::DecodeError,
        Exit::Timeout,
    ] {
        let what = format!("{exit:?}");
        let mut c = e.open();
        c.send(headers_only());
        assert!(is_pick(&c.reply().await), "{what}");
        c.send(response_headers(false));
        c.reply().await;
        assert_eq!((e.metrics.running(), e.load()), (1, (1, 0)), "{what}");
        let end = match exit {
            Exit::Complete => {
                c.send(response_body(b"{}", true));
                c.reply().await;
                e.released(&what);
                c.tx = None;
                c.end().await
            }
            Exit::OutOfSequence => {
                c.send(headers_only());
                c.end().await
            }
            Exit::HalfClose => {
                c.tx = None;
                c.end().await
            }
            Exit::Reset => {
                c.fail(Status::cancelled("stream reset"));
                c.end().await
            }
            Exit::DecodeError => {
                c.fail(Status::internal("failed to decode Protobuf message"));
                c.end().await
            }
            Exit::Timeout => c.end().await,
        };
        match exit {
            Exit::Complete | Exit::HalfClose => clean(end, &what),
            Exit::OutOfSequence => assert_eq!(end.unwrap_err().code(), Code::InvalidArgument),
            Exit::Reset => assert_eq!(end.unwrap_err().code(), Code::Cancelled),
            // Whatever tonic says about the inbound stream is the stream's end.
            Exit::DecodeError => {
                let s = end.unwrap_err();
                assert_eq!(s.code(), Code::Internal);
                assert!(s.message().contains("decode"), "{s:?}");
            }
            Exit::Timeout => assert_eq!(end.unwrap_err().code(), Code::DeadlineExceeded),
        }
        e.quiet(&what).await;
    }

    // A panic in the stream's task: unwinding gives everything back, and
    // the stream ends with INTERNAL, not OK.
    let (go, mut boom) = oneshot::channel::<()>();
    let mut first = Some(headers_only());
    let inbound = futures::stream::poll_fn(
        move |cx: &mut Context<'_>| -> Poll<Option<Result<ProcessingRequest, Status>>> {
            if let Some(m) = first.take() {
                return Poll::Ready(Some(Ok(m)));
            }
            match Pin::new(&mut boom).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(_) => panic!("a bug while the slot is held (this panic is the test)"),
            }
        },
    );
    let mut c = Conn {
        tx: None,
        rx: e.p.spawn(inbound),
    };
    assert!(is_pick(&c.reply().await));
    assert_eq!((e.metrics.running(), e.load()), (1, (1, 0)));
    go.send(()).unwrap();
    let s = c.end().await.expect_err("never OK");
    assert_eq!(s.code(), Code::Internal, "{s:?}");
    e.quiet("panic").await;
}

fn clean(end: Result<(), Status>, what: &str) {
    if let Err(s) = end {
        panic!("{what}: the stream should end cleanly, not with {s:?}");
    }
}

fn assert_deadline(end: Result<(), Status>, wait: Duration, since: Instant, says: &str) {
    let s = end.expect_err("a silent stream must not end OK");
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert!(s.message().contains(says), "{says:?} not in {s:?}");
    let took = since.elapsed();
    assert!(
        took >= wait && took < wait + Duration::from_millis(10),
        "{says}: ended after {took:?}, not {wait:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn silence_ends_the_stream_with_the_timeout_of_its_state() {
    let cfg = RoutingConfig::default();
    let (body_t, response_t, idle_t) = (cfg.body_timeout, cfg.response_timeout, cfg.idle_timeout);
    assert_eq!(
        (body_t, response_t, idle_t),
        (
            Duration::from_secs(30),
            Duration::from_secs(600),
            Duration::from_secs(300)
        )
    );
    let e = epp(cfg.clone(), 1);

    // Nothing at all.
    let mut c = e.open();
    let t = Instant::now();
    assert_deadline(c.end().await, body_t, t, "body_timeout");
    // The body stops coming before the pick.
    let mut c = e.open();
    c.send(full_duplex());
    c.send(body(b"{\"model\":", false));
    let t = Instant::now();
    assert_deadline(c.end().await, body_t, t, "before the pick (body_timeout)");
    e.quiet("before the pick").await;

    // Picked, and the response never starts: the slot comes back after the
    // first-byte deadline (eight times the expected time to the whole
    // answer, at least first_byte_min), not the whole response timeout,
    // although the stream is still open.
    let mut c = e.open();
    c.send(headers_only());
    assert!(is_pick(&c.reply().await));
    let t = Instant::now();
    let s = c.end().await.expect_err("a silent stream must not end OK");
    assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
    assert!(s.message().contains("first-byte deadline"), "{s:?}");
    let took = t.elapsed();
    assert!(
        took >= cfg.first_byte_min && took < response_t / 4,
        "ended after {took:?}"
    );
    e.quiet("no response").await;

    // The response stops between chunks.
    let mut c = e.open();
    c.send(headers_only());
    c.reply().await;
    c.send(response_headers(false));
    c.reply().await;
    c.send(response_body(b"{", false));
    c.reply().await;
    let t = Instant::now();
    assert_deadline(c.end().await, idle_t, t, "idle_timeout");
    e.quiet("idle response").await;

    // Envoy stops reading the replies (64 are buffered): the sends time out too.
    let mut c = e.open();
    c.send(deferred());
    let json = chat();
    for i in 0..199 {
        c.send(body(if i == 0 { &json[..] } else { b"" }, i == 198));
    }
    let t = Instant::now();
    tokio::time::sleep(response_t + Duration::from_secs(1)).await;
    e.quiet("replies not read").await;
    let mut got = 0;
    let end = loop {
        match c.rx.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(s)) => break s,
            None => panic!("a stream that timed out must not end OK"),
        }
    };
    assert!(got < 200, "{got}");
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end:?}");
    assert!(end.message().contains("read no reply"), "{end:?}");
    assert!(t.elapsed() >= cfg.first_byte_min);

    // After the response ended nothing is held; the stream just ends.
    let mut c = e.open();
    c.send(headers_only());
    c.reply().await;
    c.send(response_headers(true));
    c.reply().await;
    e.released("headers-only response");
    let t = Instant::now();
    clean(c.end().await, "done");
    let took = t.elapsed();
    assert!(
        took >= body_t && took < body_t + Duration::from_millis(10),
        "{took:?}"
    );

    // A slow but living exchange is never cut: a response that starts just
    // under the first-byte deadline's floor, then chunks just under
    // idle_timeout apart — most of an hour in all.
    let mut c = e.open();
    c.send(headers_only());
    c.reply().await;
    tokio::time::sleep(cfg.first_byte_min - Duration::from_secs(1)).await;
    c.send(response_headers(false));
    c.reply().await;
    for i in 0..10 {
        tokio::time::sleep(idle_t - Duration::from_secs(1)).await;
        c.send(response_body(b"{\"x\":1}\n", i == 9));
        let Resp::ResponseBody(_) = c.reply().await else {
            panic!("chunk {i} answered")
        };
    }
    c.tx = None;
    clean(c.end().await, "clean end");
    e.quiet("slow response").await;
}

#[tokio::test(start_paused = true)]
async fn a_body_in_too_many_chunks_is_413_with_no_reply_per_chunk() {
    let e = epp(RoutingConfig::default(), 4);
    let max = max_body_chunks(RoutingConfig::default().max_body_bytes);
    assert_eq!(max, 16_384);
    // Empty chunks, before the pick, in the two modes that buffer them.
    for first in [full_duplex(), deferred()] {
        let mut c = e.open();
        c.send(first);
        for _ in 0..=max {
            c.send(body(b"", false));
        }
        let (status, v) = immediate_status(&c.reply().await);
        assert_eq!(status, 413, "{v}");
        assert_eq!(v["error"]["code"], "body_too_large", "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("16384 chunks"),
            "{v}"
        );
        clean(c.end().await, "no reply per chunk after the 413");
        e.quiet("too many chunks").await;
    }
    // At the limit, a request as any other: picked, one reply per chunk.
    let mut c = e.open();
    c.send(deferred());
    let json = chat();
    for i in 0..max {
        c.send(body(if i == 0 { &json[..] } else { b"" }, i + 1 == max));
    }
    assert!(is_pick(&c.reply().await));
    for _ in 0..max {
        let Resp::RequestBody(_) = c.reply().await else {
            panic!("a reply per chunk")
        };
    }
    c.tx = None;
    clean(c.end().await, "clean end");
    // Passed through after a pick from the headers, chunks count the same.
    let mut c = e.open();
    c.send(start(
        BodySendMode::Streamed,
        false,
        &[CHAT[0], CHAT[1], MODEL],
        false,
    ));
    assert!(is_pick(&c.reply().await));
    for _ in 0..=max {
        c.send(body(b"", false));
    }
    for _ in 0..max {
        let Resp::RequestBody(_) = c.reply().await else {
            panic!("passed through")
        };
    }
    assert_eq!(immediate_status(&c.reply().await).0, 413);
    clean(c.end().await, "clean end");
    e.quiet("chunks passed through").await;
}

/// Wait (in virtual time) until `f` holds.
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{what}");
}

#[tokio::test(start_paused = true)]
async fn while_waiting_for_a_slot_the_stream_is_read_and_checked() {
    let e = epp(RoutingConfig::default(), 1);
    let mut a = e.open();
    a.send(headers_only());
    assert!(is_pick(&a.reply().await));

    // B waits for A's slot and meanwhile sends the rest of its request:
    // answered after the pick, in order.
    let mut b = e.open();
    b.send(start(
        BodySendMode::Streamed,
        false,
        &[CHAT[0], CHAT[1], MODEL],
        false,
    ));
    until("B waits", || e.load() == (1, 1)).await;
    b.send(body(b"{}", false));
    b.send(trailers());
    // C waits too, and breaks the order: it leaves the queue at once.
    let mut c = e.open();
    c.send(headers_only());
    until("C waits", || e.load() == (1, 2)).await;
    c.send(response_headers(false));
    let s = c.end().await.expect_err("out of sequence");
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("before the pick"), "{s:?}");
    until("C left the queue", || e.load() == (1, 1)).await;

    a.send(response_headers(true));
    a.reply().await;
    assert!(is_pick(&b.reply().await), "B's pick comes first");
    let Resp::RequestBody(_) = b.reply().await else {
        panic!("then its body")
    };
    let Resp::RequestTrailers(_) = b.reply().await else {
        panic!("then its trailers")
    };
    b.send(response_headers(true));
    b.reply().await;
    a.tx = None;
    b.tx = None;
    clean(a.end().await, "clean end");
    clean(b.end().await, "clean end");
    e.quiet("queue").await;
}

/// Anthropic Messages and OpenAI Responses bodies are picked for like any
/// other, but only to nodes whose Ollama serves the API itself (herd-epp
/// passes bodies through; it cannot translate them for an older node).
#[tokio::test]
async fn messages_and_responses_bodies_go_to_nodes_that_serve_them() {
    let cases: [(&str, &[u8]); 2] = [
        (
            "/v1/messages",
            br#"{"model":"m:8b","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#,
        ),
        ("/v1/responses", br#"{"model":"m:8b","input":"hi"}"#),
    ];
    for (version, served) in [("0.14.0", true), ("0.12.6", false)] {
        for (path, b) in cases {
            let mut n = node(4);
            n.engine_version = version.into();
            let e = epp_over(RoutingConfig::default(), n);
            let mut c = e.open();
            c.send(start(
                BodySendMode::FullDuplexStreamed,
                false,
                &[(":method", "POST"), (":path", path)],
                false,
            ));
            c.send(body(b, true));
            let r = c.reply().await;
            if served {
                assert!(is_pick(&r), "{path} on {version}: {r:?}");
            } else {
                let (status, v) = immediate_status(&r);
                assert_eq!(status, 503, "{path} on {version}: {v}");
                let m = v["error"]["message"].as_str().unwrap();
                assert!(m.contains(path) && m.contains("and later do"), "{m}");
            }
        }
    }
}

/// A model named by a header or a path is checked like one in a body: a
/// name no node could have is a 400, before it reaches the scorer (found by
/// fuzzing: a non-ASCII name in `/v1/models/…` panicked in name matching).
#[tokio::test]
async fn a_model_named_by_a_header_or_path_is_checked() {
    for pairs in [
        vec![CHAT[0], CHAT[1], ("x-ai-eg-model", "aaaaaaaé")],
        vec![CHAT[0], (":path", "/v1/models/aaaaaaaé")],
    ] {
        let e = epp(RoutingConfig::default(), 4);
        let mut c = e.open();
        c.send(start(BodySendMode::None, false, &pairs, true));
        let (status, v) = immediate_status(&c.reply().await);
        assert_eq!(status, 400, "{pairs:?}: {v}");
        assert_eq!(v["error"]["code"], "invalid_model", "{v}");
    }
}

#[tokio::test(start_paused = true)]
async fn uploads_are_picked_by_the_model_in_their_form() {
    use herd_layer::fleet::DiskModel;
    let mut n = node(4);
    n.engine_version = "0.20.1".into();
    for (name, caps) in [("whisper:latest", "audio"), ("llama:1b", "completion")] {
        n.available.push(DiskModel {
            name: name.into(),
            capabilities: vec![caps.into()],
            ..Default::default()
        });
    }
    let e = epp_over(RoutingConfig::default(), n);
    let form = |model: &str| {
        format!(
            "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\u{0}\u{1}\r\n--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n--B--\r\n"
        )
    };
    let upload = [
        (":method", "POST"),
        (":path", "/v1/audio/transcriptions"),
        ("content-type", "multipart/form-data; boundary=B"),
    ];
    // The model is read from the form (after the file): a pick.
    let mut c = e.open();
    c.send(start(
        BodySendMode::FullDuplexStreamed,
        false,
        &upload,
        false,
    ));
    c.send(body(form("whisper").as_bytes(), true));
    assert!(is_pick(&c.reply().await));
    drop(c);
    // A model that cannot hear: refused, saying why.
    let mut c = e.open();
    c.send(start(
        BodySendMode::FullDuplexStreamed,
        false,
        &upload,
        false,
    ));
    c.send(body(form("llama:1b").as_bytes(), true));
    let (status, v) = immediate_status(&c.reply().await);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "model_not_capable");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("transcribe audio"),
        "{v}"
    );
    drop(c);
    // A form without a model.
    let mut c = e.open();
    c.send(start(
        BodySendMode::FullDuplexStreamed,
        false,
        &upload,
        false,
    ));
    c.send(body(
        b"--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--B--\r\n",
        true,
    ));
    let (status, v) = immediate_status(&c.reply().await);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("model_required")),
        "{v}"
    );
}

/// `[limits] header`: each value of the identity header is a tenant, limited
/// by the same layer as the proxy's keys. A refusal is a 429 with the
/// `x-ratelimit-*` headers; an admitted response carries them; the tokens
/// are charged as the response streams and corrected by its usage.
#[tokio::test(start_paused = true)]
async fn tenants_named_by_a_header_are_limited_like_keys() {
    let mut cfg = RoutingConfig::default();
    cfg.limits.header = Some("x-user-id".into());
    cfg.limits.tenants.insert(
        "alice".into(),
        herd_layer::limit::Limits {
            requests_per_minute: Some(2),
            tokens_per_minute: Some(1000),
            concurrent: None,
        },
    );
    let e = epp(cfg, 4);
    let as_alice = [CHAT[0], CHAT[1], MODEL, ("x-user-id", "alice")];
    let set_headers = |r: &Resp| -> Vec<(String, String)> {
        let Resp::ResponseHeaders(h) = r else {
            panic!("expected response headers, got {r:?}")
        };
        h.response
            .as_ref()
            .and_then(|c| c.header_mutation.as_ref())
            .map(|m| {
                m.set_headers
                    .iter()
                    .filter_map(|o| o.header.as_ref())
                    .map(|h| {
                        (
                            h.key.clone(),
                            String::from_utf8_lossy(&h.raw_value).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };

    // First request: picked; its response says what is left, and streams.
    let mut c = e.open();
    c.send(start(BodySendMode::None, false, &as_alice, true));
    assert!(is_pick(&c.reply().await));
    c.send(response_headers(false));
    let h = set_headers(&c.reply().await);
    assert!(
        h.contains(&("x-ratelimit-limit-requests".into(), "2".into())),
        "{h:?}"
    );
    assert!(
        h.contains(&("x-ratelimit-remaining-requests".into(), "1".into())),
        "{h:?}"
    );
    c.send(response_body(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        false,
    ));
    c.reply().await;
    let u = e.live.limits.usage("alice").unwrap();
    assert_eq!(
        (u.in_flight, u.tokens_charged),
        (1, 2),
        "estimate 1 + one streamed chunk"
    );
    c.send(response_body(
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n",
        true,
    ));
    c.reply().await;
    let u = e.live.limits.usage("alice").unwrap();
    assert_eq!(
        (u.in_flight, u.tokens_charged),
        (0, 10),
        "the usage replaced the estimates"
    );

    // Second: the last of the minute. Third: 429, as Envoy relays it.
    let mut c = e.open();
    c.send(start(BodySendMode::None, false, &as_alice, true));
    assert!(is_pick(&c.reply().await));
    let mut c3 = e.open();
    c3.send(start(BodySendMode::None, false, &as_alice, true));
    let r = c3.reply().await;
    let (status, body) = immediate_status(&r);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    let Resp::ImmediateResponse(ir) = &r else {
        unreachable!()
    };
    let set: Vec<(String, String)> = ir
        .headers
        .as_ref()
        .unwrap()
        .set_headers
        .iter()
        .filter_map(|o| o.header.as_ref())
        .map(|h| {
            (
                h.key.clone(),
                String::from_utf8_lossy(&h.raw_value).into_owned(),
            )
        })
        .collect();
    assert!(
        set.contains(&("retry-after".into(), "30".into())),
        "{set:?}"
    );
    assert!(
        set.contains(&("x-ratelimit-remaining-requests".into(), "0".into())),
        "{set:?}"
    );
    // Without the header, nobody is limited.
    let mut c4 = e.open();
    c4.send(headers_only());
    assert!(is_pick(&c4.reply().await));
    drop((c, c3, c4));
}
