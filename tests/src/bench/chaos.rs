//! Scenario `chaos`: herd under faults and attacks, where the only
//! acceptable number of lost requests is zero.
//!
//! herd (with short deadlines and a connection cap, [`herd_toml`]) in front
//! of six simulated devices that all hold the same models
//! ([`chaos_fleet`]), so a failed-over request always has somewhere to go.
//! A closed loop of `workers` clients sends a mix of requests
//! ([`ReqKind`]: Ollama `/api/chat` and OpenAI `/v1/chat/completions`,
//! streamed and not, a few embeddings) while a fixed schedule runs against
//! the devices through their admin API — one fault per device, overlapping,
//! each cleared later: `kill` is killed (`/_sim/kill`) and revived (its
//! process restarted on the same port), `hang` hangs, `slow` slows 10×,
//! `err500` answers 500, `partition` refuses new connections; `steady` is
//! left alone. From the client side, a slowloris attack (sockets sending
//! their headers one byte a second, reconnecting when cut) and a connection
//! flood (thousands of idle TCP connections opened at once, over herd's
//! cap) hit herd during the run.
//!
//! Every answer is kept whole and judged ([`judge`]): a success (a 200 that
//! is well-formed to its end: JSON, or NDJSON/SSE with a final chunk), a
//! well-formed error (any status with a JSON error body, or a stream that
//! ends with a well-formed error line or event), or **lost** — no answer,
//! a body that broke off, a non-JSON error, a stream torn mid-line or
//! without its final chunk. Lost requests are listed with what they were,
//! which faults were active while they ran and what the client saw.
//! Afterwards: herd's peak RSS (VmHWM), its open connections and sockets,
//! and a few requests of every kind that must all answer 200.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herd_node::config::{GIB, ModelSpec};
use herd_node::{DeviceConfig, FleetConfig};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::load::{self, Bounds, HttpClient, Outcome, Req, Wire, hist, pct};
use super::procs::free_port;
use super::scenarios::{Bench, BenchResult, chat_body, model};
use super::targets::{Env, Herd, Sims, get_json, post_json};

/// The chat models every device holds, and the embedding model.
const CHAT_MODELS: [&str; 2] = ["small:3b", "medium:8b"];
const EMBED_MODEL: &str = "embed:latest";

/// The knobs of one chaos run (full or `--smoke`).
#[derive(Clone, Debug, serde::Serialize)]
struct Plan {
    requests: u64,
    workers: usize,
    /// Each request's own deadline on the client: past it, it is lost.
    client_timeout_s: f64,
    /// Multiplies every time of the schedule.
    time_scale: f64,
    /// Stop sending after this long even if `requests` were not all sent.
    max_load_s: f64,
    slowloris_sockets: usize,
    flood_connections: usize,
    /// How long the flood's connections are held open.
    flood_hold_s: f64,
    /// herd's `[server] max_connections`.
    max_connections: usize,
    /// herd's `[server] header_timeout`, seconds.
    header_timeout_s: f64,
    /// herd's `[server] idle_timeout`, seconds.
    idle_timeout_s: f64,
    /// herd's `first_byte_min`, seconds.
    first_byte_min_s: f64,
    /// herd's `unresponsive_pause`, seconds.
    unresponsive_pause_s: f64,
    /// herd's `response_timeout`, seconds.
    response_timeout_s: f64,
    /// Requests of every kind sent after the attack.
    final_per_kind: usize,
}

impl Plan {
    fn new(smoke: bool, scale: f64) -> Plan {
        if smoke {
            Plan {
                requests: 100_000,
                workers: 16,
                client_timeout_s: 30.0,
                time_scale: 0.2 * scale,
                max_load_s: 40.0 * 0.2 * scale,
                slowloris_sockets: 16,
                flood_connections: 300,
                flood_hold_s: 1.6 * scale,
                max_connections: 128,
                header_timeout_s: 1.0,
                idle_timeout_s: 30.0,
                first_byte_min_s: 1.0,
                unresponsive_pause_s: 2.0,
                response_timeout_s: 5.0,
                final_per_kind: 1,
            }
        } else {
            Plan {
                requests: 10_000,
                workers: 48,
                client_timeout_s: 120.0,
                time_scale: scale,
                max_load_s: 300.0,
                slowloris_sockets: 256,
                flood_connections: 3000,
                flood_hold_s: 15.0 * scale,
                max_connections: 1024,
                header_timeout_s: 5.0,
                idle_timeout_s: 10.0,
                first_byte_min_s: 2.0,
                unresponsive_pause_s: 5.0,
                response_timeout_s: 10.0,
                final_per_kind: 2,
            }
        }
    }

    fn at(&self, s: f64) -> Duration {
        Duration::from_secs_f64(s * self.time_scale)
    }
}

/// herd's config for the run: short deadlines so a hung node is failed
/// over in seconds, and a connection cap the flood can reach.
fn herd_toml(p: &Plan) -> String {
    format!(
        "first_byte_min = \"{}ms\"\nunresponsive_pause = \"{}ms\"\nresponse_timeout = \"{}ms\"\n\
         [server]\nmax_connections = {}\nheader_timeout = \"{}ms\"\nidle_timeout = \"{}ms\"\n",
        (p.first_byte_min_s * 1000.0) as u64,
        (p.unresponsive_pause_s * 1000.0) as u64,
        (p.response_timeout_s * 1000.0) as u64,
        p.max_connections,
        (p.header_timeout_s * 1000.0) as u64,
        (p.idle_timeout_s * 1000.0) as u64,
    )
}

fn embed_spec() -> ModelSpec {
    ModelSpec {
        name: EMBED_MODEL.into(),
        size_bytes: 300 * 1024 * 1024,
        family: "nomic-bert".into(),
        parameter_size: "137M".into(),
        quantization: "F16".into(),
        context_length: 2048,
        embedding_dims: Some(64),
        ..ModelSpec::default()
    }
}

/// The devices, named after what happens to them.
const DEVICES: [&str; 6] = ["kill", "hang", "slow", "err500", "partition", "steady"];

fn device(name: &str) -> DeviceConfig {
    DeviceConfig {
        name: name.into(),
        memory_total_bytes: 64 * GIB,
        models: vec![
            model(CHAT_MODELS[0], 2.0),
            model(CHAT_MODELS[1], 5.0),
            embed_spec(),
        ],
        loaded: vec![
            CHAT_MODELS[0].into(),
            CHAT_MODELS[1].into(),
            EMBED_MODEL.into(),
        ],
        max_loaded_models: 3,
        speed: 100.0,
        ttft_base_ms: 30,
        ttft_ms_per_prompt_token: 0.0,
        num_parallel: 8,
        max_queue: 512,
        keep_alive_secs: -1,
        ..DeviceConfig::default()
    }
}

/// Five devices in one process, and `kill` in its own on a fixed port (so
/// it can be killed for real and come back where it was).
fn chaos_fleet() -> (FleetConfig, FleetConfig) {
    let mut kill = device("kill");
    kill.port = free_port();
    let rest = DEVICES[1..].iter().map(|n| device(n)).collect();
    (
        FleetConfig {
            devices: rest,
            ..FleetConfig::default()
        },
        FleetConfig {
            devices: vec![kill],
            ..FleetConfig::default()
        },
    )
}

/// What a client asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub(super) enum ReqKind {
    OllamaStream,
    OllamaJson,
    OpenAiStream,
    OpenAiJson,
    OllamaEmbed,
    OpenAiEmbed,
}

const KINDS: [ReqKind; 6] = [
    ReqKind::OllamaStream,
    ReqKind::OllamaJson,
    ReqKind::OpenAiStream,
    ReqKind::OpenAiJson,
    ReqKind::OllamaEmbed,
    ReqKind::OpenAiEmbed,
];

impl ReqKind {
    fn label(self) -> &'static str {
        match self {
            ReqKind::OllamaStream => "ollama /api/chat stream",
            ReqKind::OllamaJson => "ollama /api/chat",
            ReqKind::OpenAiStream => "openai /v1/chat/completions stream",
            ReqKind::OpenAiJson => "openai /v1/chat/completions",
            ReqKind::OllamaEmbed => "ollama /api/embed",
            ReqKind::OpenAiEmbed => "openai /v1/embeddings",
        }
    }

    fn stream(self) -> bool {
        matches!(self, ReqKind::OllamaStream | ReqKind::OpenAiStream)
    }

    fn wire(self) -> Wire {
        match self {
            ReqKind::OllamaStream => Wire::Ndjson,
            ReqKind::OpenAiStream => Wire::Sse,
            _ => Wire::Json,
        }
    }

    fn path(self) -> &'static str {
        match self {
            ReqKind::OllamaStream | ReqKind::OllamaJson => "/api/chat",
            ReqKind::OpenAiStream | ReqKind::OpenAiJson => "/v1/chat/completions",
            ReqKind::OllamaEmbed => "/api/embed",
            ReqKind::OpenAiEmbed => "/v1/embeddings",
        }
    }

    /// Share of the mix, percent.
    fn share(self) -> u32 {
        match self {
            ReqKind::OllamaStream => 35,
            ReqKind::OllamaJson => 15,
            ReqKind::OpenAiStream => 30,
            ReqKind::OpenAiJson => 14,
            ReqKind::OllamaEmbed => 3,
            ReqKind::OpenAiEmbed => 3,
        }
    }
}

/// The `i`-th request of the run: its kind, model and body, the same for
/// the same `i` (so a lost request can be told apart afterwards).
fn request(base: &str, i: u64) -> (ReqKind, &'static str, Req) {
    let mut rng = fastrand::Rng::with_seed(0xC4A0_5000 + i);
    let roll = rng.u32(0..100);
    let mut acc = 0;
    let mut kind = ReqKind::OllamaStream;
    for k in KINDS {
        acc += k.share();
        if roll < acc {
            kind = k;
            break;
        }
    }
    req_of(base, kind, &mut rng, i)
}

fn req_of(
    base: &str,
    kind: ReqKind,
    rng: &mut fastrand::Rng,
    i: u64,
) -> (ReqKind, &'static str, Req) {
    let chat_model = CHAT_MODELS[rng.usize(0..CHAT_MODELS.len())];
    let tokens = rng.usize(8..=40);
    let (model, body) = match kind {
        ReqKind::OllamaStream | ReqKind::OllamaJson => {
            (chat_model, chat_body(chat_model, tokens, kind.stream()))
        }
        ReqKind::OpenAiStream | ReqKind::OpenAiJson => {
            let filler = vec!["w"; tokens.saturating_sub(3).max(1)].join(" ");
            let b = json!({
                "model": chat_model,
                "messages": [
                    {"role": "user", "content": "go"},
                    {"role": "tool", "content": filler, "tool_call_id": "call_1"},
                ],
                "stream": kind.stream(),
            });
            (chat_model, Bytes::from(b.to_string()))
        }
        ReqKind::OllamaEmbed => (
            EMBED_MODEL,
            Bytes::from(
                json!({"model": EMBED_MODEL, "input": format!("chaos request {i}"), "dimensions": 64})
                    .to_string(),
            ),
        ),
        ReqKind::OpenAiEmbed => (
            EMBED_MODEL,
            Bytes::from(
                json!({"model": EMBED_MODEL, "input": [format!("chaos request {i}")], "dimensions": 64})
                    .to_string(),
            ),
        ),
    };
    (
        kind,
        model,
        Req {
            url: format!("{base}{}", kind.path()),
            body,
            wire: kind.wire(),
        },
    )
}

/// How an answer was judged.
#[derive(Clone, Debug, PartialEq)]
enum Judged {
    /// A 200, well-formed to its end.
    Ok,
    /// A well-formed error: `status` (200 for a stream that ended with an
    /// error line or event after its first byte) and a code.
    Error {
        status: u16,
        code: String,
        in_stream: bool,
        message: String,
    },
    /// No answer, or not a well-formed one.
    Lost(String),
}

/// A stable code for an error message: OpenAI's `error.code` when there is
/// one, else read from the sentence herd writes for each failure (Ollama's
/// error shape has no code).
fn classify(message: &str) -> String {
    let m = message;
    let code = if m.contains("connections open, its limit") {
        "connection_cap"
    } else if m.starts_with("no node can serve model") {
        "no_eligible_node"
    } else if m.contains("requests already waiting") {
        "queue_full"
    } else if m.starts_with("waited ") && m.contains("for a slot") {
        "queue_timeout"
    } else if m.contains("stopped answering while this request waited") {
        "node_unresponsive"
    } else if m.contains("attempt(s) failed") {
        "upstream_failed"
    } else if m.contains("not found on any node") {
        "model_not_found"
    } else if m.contains("response broke off") || m.contains("stream broke") {
        "response_broke_off"
    } else if m.starts_with("node ") {
        "upstream_failed"
    } else {
        let short: String = m
            .chars()
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .take(60)
            .collect();
        return format!("other: {short}");
    };
    code.to_owned()
}

/// The error in a JSON error body (Ollama's `{"error": "…"}` or OpenAI's
/// `{"error": {message, type, code}}`): (code, message).
fn error_of(v: &Value) -> Option<(String, String)> {
    match v.get("error")? {
        Value::String(s) => Some((classify(s), s.clone())),
        Value::Object(o) => {
            let message = o
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let code = o
                .get("code")
                .and_then(Value::as_str)
                .map_or_else(|| classify(&message), str::to_owned);
            Some((code, message))
        }
        Value::Null => None,
        other => Some((classify(&other.to_string()), other.to_string())),
    }
}

fn lossy_tail(b: &[u8], n: usize) -> String {
    let start = b.len().saturating_sub(n);
    String::from_utf8_lossy(&b[start..]).into_owned()
}

/// Judges one answer (see the module's documentation).
fn judge(kind: ReqKind, o: &Outcome) -> Judged {
    let body = o.body.clone().unwrap_or_default();
    if let Some(e) = &o.error {
        return Judged::Lost(if o.status == 0 {
            format!("no answer: {e}")
        } else {
            format!(
                "status {} then the body failed: {e} (after {} bytes)",
                o.status,
                body.len()
            )
        });
    }
    if o.status != 200 {
        return match serde_json::from_slice::<Value>(&body) {
            Ok(v) => match error_of(&v) {
                Some((code, message)) => Judged::Error {
                    status: o.status,
                    code,
                    in_stream: false,
                    message,
                },
                None => Judged::Lost(format!(
                    "status {} with a JSON body that is not an error: {}",
                    o.status,
                    lossy_tail(&body, 200)
                )),
            },
            Err(_) => Judged::Lost(format!(
                "status {} with a non-JSON body: {:?}",
                o.status,
                lossy_tail(&body, 200)
            )),
        };
    }
    match kind.wire() {
        Wire::Json => {
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return Judged::Lost(format!(
                    "200 with a body that is not JSON ({} bytes): {:?}",
                    body.len(),
                    lossy_tail(&body, 200)
                ));
            };
            if let Some((code, message)) = error_of(&v) {
                return Judged::Lost(format!("200 carrying an error ({code}): {message}"));
            }
            let whole = match kind {
                ReqKind::OllamaJson => {
                    v["done"] == json!(true) && v["message"]["content"].is_string()
                }
                ReqKind::OpenAiJson => {
                    v["choices"][0]["message"].is_object()
                        && v["choices"][0]["finish_reason"].is_string()
                }
                ReqKind::OllamaEmbed => {
                    v["embeddings"][0].as_array().is_some_and(|a| !a.is_empty())
                }
                ReqKind::OpenAiEmbed => v["data"][0]["embedding"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty()),
                _ => false,
            };
            if whole {
                Judged::Ok
            } else {
                Judged::Lost(format!(
                    "200 without the answer's final fields: {}",
                    lossy_tail(&body, 200)
                ))
            }
        }
        Wire::Ndjson => judge_ndjson(&body),
        Wire::Sse => judge_sse(&body),
    }
}

fn judge_ndjson(body: &[u8]) -> Judged {
    if body.is_empty() {
        return Judged::Lost("200 with an empty stream".into());
    }
    if !body.ends_with(b"\n") {
        return Judged::Lost(format!(
            "stream ends inside a line: {:?}",
            lossy_tail(body, 200)
        ));
    }
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let mut done = false;
    for (n, line) in lines.iter().enumerate() {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            return Judged::Lost(format!(
                "stream line {} is not JSON: {:?}",
                n + 1,
                String::from_utf8_lossy(line)
            ));
        };
        if done {
            return Judged::Lost(format!("line {} after the final chunk", n + 1));
        }
        if let Some((code, message)) = error_of(&v) {
            if n + 1 != lines.len() {
                return Judged::Lost(format!("stream goes on after an error line: {message}"));
            }
            return Judged::Error {
                status: 200,
                code,
                in_stream: true,
                message,
            };
        }
        if v["done"] == json!(true) {
            done = true;
        }
    }
    if done {
        Judged::Ok
    } else {
        Judged::Lost(format!(
            "stream ended without a final chunk (done:true) after {} lines: {:?}",
            lines.len(),
            lossy_tail(body, 200)
        ))
    }
}

fn judge_sse(body: &[u8]) -> Judged {
    if body.is_empty() {
        return Judged::Lost("200 with an empty event stream".into());
    }
    if !body.ends_with(b"\n\n") {
        return Judged::Lost(format!(
            "event stream ends inside an event: {:?}",
            lossy_tail(body, 200)
        ));
    }
    let text = String::from_utf8_lossy(body);
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    let mut finished = false;
    let mut done = false;
    for (n, ev) in events.iter().enumerate() {
        let mut data = String::new();
        for line in ev.lines() {
            if line.starts_with(':') {
                continue;
            }
            match line.strip_prefix("data:") {
                Some(d) => data.push_str(d.trim_start()),
                None => {
                    return Judged::Lost(format!(
                        "event {} has a line that is not data: {line:?}",
                        n + 1
                    ));
                }
            }
        }
        if done {
            return Judged::Lost(format!("event {} after [DONE]", n + 1));
        }
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return Judged::Lost(format!("event {} is not JSON: {data:?}", n + 1));
        };
        if let Some((code, message)) = error_of(&v) {
            if n + 1 != events.len() {
                return Judged::Lost(format!("stream goes on after an error event: {message}"));
            }
            return Judged::Error {
                status: 200,
                code,
                in_stream: true,
                message,
            };
        }
        if v["choices"][0]["finish_reason"].is_string() {
            finished = true;
        }
    }
    match (finished, done) {
        (true, true) => Judged::Ok,
        (false, true) => Judged::Lost("[DONE] without a chunk carrying finish_reason".into()),
        _ => Judged::Lost(format!(
            "event stream ended without data: [DONE] after {} events: {:?}",
            events.len(),
            lossy_tail(body, 200)
        )),
    }
}

/// One thing that happened on the schedule.
#[derive(Clone, Debug, serde::Serialize)]
struct Event {
    /// Seconds from the start of the load.
    at: f64,
    who: String,
    what: String,
    result: String,
}

/// A fault or attack and when it was in effect (seconds from the start).
#[derive(Clone, Debug, serde::Serialize)]
struct Window {
    who: String,
    what: String,
    from: f64,
    /// `None`: never ended.
    to: Option<f64>,
}

/// The schedule's shared log.
#[derive(Clone)]
struct Log {
    t0: Instant,
    events: Arc<Mutex<Vec<Event>>>,
    windows: Arc<Mutex<Vec<Window>>>,
}

impl Log {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn event(&self, who: &str, what: &str, result: impl Into<String>) -> f64 {
        let at = self.now();
        let result = result.into();
        eprintln!("   {at:6.1} s  {who}: {what} → {result}");
        lock(&self.events).push(Event {
            at,
            who: who.into(),
            what: what.into(),
            result,
        });
        at
    }

    fn window(&self, who: &str, what: &str, from: f64, to: Option<f64>) {
        lock(&self.windows).push(Window {
            who: who.into(),
            what: what.into(),
            from,
            to,
        });
    }

    async fn until(&self, d: Duration) {
        tokio::time::sleep_until(self.t0 + d).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn result_of(r: &Result<u16, String>) -> String {
    match r {
        Ok(s) => format!("HTTP {s}"),
        Err(e) => format!("failed: {e}"),
    }
}

/// One HTTP/1.1 connection kept open to a device: `partition` refuses new
/// connections, so the call that lifts it must travel on one opened
/// before.
struct AdminConn {
    tx: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

impl AdminConn {
    async fn open(addr: SocketAddr) -> Result<AdminConn, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(AdminConn { tx, addr })
    }

    async fn call(&mut self, method: http::Method, path: &str, body: &str) -> Result<u16, String> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        let run = async {
            self.tx.ready().await.map_err(|e| e.to_string())?;
            let rsp = self.tx.send_request(req).await.map_err(|e| e.to_string())?;
            let status = rsp.status().as_u16();
            let _ = rsp.into_body().collect().await;
            Ok(status)
        };
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .map_err(|_| "timeout".to_owned())?
    }
}

/// What the slowloris attack saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
struct SlowlorisStats {
    sockets: usize,
    connections_opened: u64,
    connect_failed: u64,
    /// herd closed the connection without a response.
    cut_by_herd: u64,
    /// herd answered (status line → count).
    answered: BTreeMap<String, u64>,
    /// Still open when the attack stopped.
    open_at_end: u64,
    /// Header bytes delivered before herd cut a connection, all connections.
    bytes_sent: u64,
    cut_after_p50_s: f64,
    cut_after_max_s: f64,
}

/// Many sockets, each sending a request's headers one byte a second;
/// each reconnects when herd cuts it, until `until`.
async fn slowloris(addr: SocketAddr, sockets: usize, until: Instant) -> SlowlorisStats {
    const HEAD: &[u8] = b"POST /api/chat HTTP/1.1\r\nHost: herd\r\nContent-Type: application/json\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    #[derive(Default)]
    struct One {
        opened: u64,
        failed: u64,
        cut: Vec<f64>,
        answered: Vec<String>,
        open_at_end: u64,
        bytes: u64,
    }
    let mut tasks = Vec::new();
    for k in 0..sockets {
        tasks.push(tokio::spawn(async move {
            let mut me = One::default();
            // Spread the sockets' byte ticks over the second.
            tokio::time::sleep(Duration::from_millis((k as u64 * 1000) / sockets.max(1) as u64)).await;
            while Instant::now() < until {
                let conn = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await;
                let Ok(Ok(tcp)) = conn else {
                    me.failed += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                };
                me.opened += 1;
                let born = Instant::now();
                let (mut rd, mut wr) = tcp.into_split();
                let mut i = 0usize;
                let mut buf = [0u8; 512];
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let ended = loop {
                    tokio::select! {
                        r = rd.read(&mut buf) => {
                            break match r {
                                Ok(0) | Err(_) => None,
                                Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned()),
                            };
                        }
                        _ = tick.tick() => {
                            if Instant::now() >= until {
                                me.open_at_end += 1;
                                break Some(String::new());
                            }
                            let b = HEAD[i % HEAD.len()];
                            if wr.write_all(&[b]).await.is_err() {
                                break None;
                            }
                            me.bytes += 1;
                            i += 1;
                        }
                    }
                };
                match ended {
                    None => me.cut.push(born.elapsed().as_secs_f64()),
                    Some(s) if s.is_empty() => {}
                    Some(status) => {
                        me.answered.push(status);
                        // Answered (refused): keep the pace of one step a second.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            me
        }));
    }
    let mut s = SlowlorisStats {
        sockets,
        ..SlowlorisStats::default()
    };
    let mut cuts = Vec::new();
    for t in tasks {
        let Ok(me) = t.await else { continue };
        s.connections_opened += me.opened;
        s.connect_failed += me.failed;
        s.cut_by_herd += me.cut.len() as u64;
        cuts.extend(me.cut);
        for a in me.answered {
            *s.answered.entry(a).or_default() += 1;
        }
        s.open_at_end += me.open_at_end;
        s.bytes_sent += me.bytes;
    }
    s.cut_after_p50_s = super::stats::median(&cuts);
    s.cut_after_max_s = cuts.iter().copied().fold(f64::NAN, f64::max);
    s
}

/// What the connection flood saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
struct FloodStats {
    connections: usize,
    connected: u64,
    connect_failed: u64,
    first_connect_error: Option<String>,
    /// Slowest connect, seconds (SYN retries when the backlog overflows).
    connect_max_s: f64,
    /// Answered `503` by herd's cap and closed.
    refused_503: u64,
    /// Answered something else (status line → count).
    answered_other: BTreeMap<String, u64>,
    /// Accepted, then closed by herd without a response.
    closed_by_herd: u64,
    closed_after_p50_s: f64,
    /// Connected on our side, neither answered nor closed by the release:
    /// accepted by herd and idle, or never reached it (see `kernel`).
    held_open: u64,
    /// The kernel's TCP counters over the flood (`/proc/net/netstat`,
    /// machine-wide): `ListenOverflows`, `SyncookiesSent`, … A connection
    /// the kernel completed with a SYN cookie while herd's accept queue
    /// was full is established for the client and unknown to herd.
    kernel: BTreeMap<String, i64>,
    /// herd's listen backlog (`ss -lnt`, Send-Q of the listener).
    listen_backlog: Option<u64>,
}

/// The kernel's `TcpExt` counters.
fn tcp_ext() -> BTreeMap<String, i64> {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let mut out = BTreeMap::new();
    if let [names, values] = lines[..] {
        for (n, v) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if let Ok(v) = v.parse() {
                out.insert(n.to_owned(), v);
            }
        }
    }
    out
}

/// The listen backlog of whatever listens on 127.0.0.1:`port`, from `ss`.
fn listen_backlog(port: u16) -> Option<u64> {
    let o = std::process::Command::new("ss")
        .args(["-lnt", &format!("sport = :{port}")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.starts_with("LISTEN"))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
}

/// `n` idle TCP connections opened at once and held for `hold`.
async fn flood(addr: SocketAddr, n: usize, hold: Duration) -> FloodStats {
    let before = tcp_ext();
    let start = Instant::now();
    let release = start + hold;
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let tcp = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                .await
            {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => return (Err(e.to_string()), 0.0, None),
                Err(_) => return (Err("connect timed out after 5 s".into()), 5.0, None),
            };
            let took = t.elapsed().as_secs_f64();
            let mut tcp = tcp;
            let mut buf = [0u8; 256];
            let r = tokio::time::timeout_at(release.max(Instant::now()), tcp.read(&mut buf)).await;
            let seen = match r {
                Err(_) => None,
                Ok(Ok(0)) | Ok(Err(_)) => Some((String::new(), t.elapsed().as_secs_f64())),
                Ok(Ok(k)) => Some((
                    String::from_utf8_lossy(&buf[..k])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                    t.elapsed().as_secs_f64(),
                )),
            };
            // Hold until the release whatever happened, then drop.
            tokio::time::sleep_until(release).await;
            drop(tcp);
            (Ok(()), took, seen)
        }));
    }
    let mut results = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(r) = t.await {
            results.push(r);
        }
    }
    let after = tcp_ext();
    let mut s = FloodStats {
        connections: n,
        listen_backlog: listen_backlog(addr.port()),
        kernel: [
            "ListenOverflows",
            "ListenDrops",
            "SyncookiesSent",
            "SyncookiesRecv",
            "TCPReqQFullDoCookies",
        ]
        .iter()
        .filter_map(|k| {
            Some((
                k.to_string(),
                after.get(*k)? - before.get(*k).copied().unwrap_or(0),
            ))
        })
        .collect(),
        ..FloodStats::default()
    };
    let mut closed = Vec::new();
    for (r, took, seen) in results {
        s.connect_max_s = s.connect_max_s.max(took);
        match r {
            Err(e) => {
                s.connect_failed += 1;
                s.first_connect_error.get_or_insert(e);
                continue;
            }
            Ok(()) => s.connected += 1,
        }
        match seen {
            None => s.held_open += 1,
            Some((line, _)) if line.starts_with("HTTP/1.1 503") => s.refused_503 += 1,
            Some((line, at)) if line.is_empty() => {
                s.closed_by_herd += 1;
                closed.push(at);
            }
            Some((line, _)) => *s.answered_other.entry(line).or_default() += 1,
        }
    }
    s.closed_after_p50_s = super::stats::median(&closed);
    s
}

/// Sockets herd holds open (entries of /proc/PID/fd that are sockets).
fn sockets_of(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count() as u64
        })
        .unwrap_or(0)
}

/// A counter or gauge of herd's `/metrics`, summed over its labels.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

async fn get_text(client: &HttpClient, url: &str) -> Result<String, String> {
    let req = http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let rsp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let body = rsp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One request's record, for the report.
#[derive(Clone, Debug, serde::Serialize)]
struct Lost {
    seq: u64,
    kind: &'static str,
    model: &'static str,
    sent_at_s: f64,
    took_s: f64,
    status: u16,
    node: Option<String>,
    /// Faults and attacks in effect while it ran.
    faults: Vec<String>,
    what: String,
    body_tail: String,
}

/// Per request kind.
#[derive(Debug)]
struct PerKind {
    sent: u64,
    ok: u64,
    errors: u64,
    lost: u64,
    /// TTFT of successful streams, or whole time of the others, µs.
    lat: load::Hist,
}

impl Bench {
    /// Faults and attacks under load; nothing may be lost.
    pub async fn chaos(&mut self) -> BenchResult<()> {
        eprintln!("== scenario chaos: faults and attacks under load");
        let plan = Plan::new(self.opts.smoke, self.opts.scale);
        let (fleet, kill_fleet) = chaos_fleet();
        let herd = Herd::start(&self.env, &herd_toml(&plan)).await?;
        let herd_url = herd.url();
        let sims = Sims::start(&self.env, &fleet, Some(&herd_url)).await?;
        let kill_sims = Sims::start(&self.env, &kill_fleet, Some(&herd_url)).await?;
        herd.wait_online(&self.client, DEVICES.len(), Duration::from_secs(20))
            .await?;
        let herd_addr: SocketAddr = ([127, 0, 0, 1], herd.port).into();
        let addrs: BTreeMap<String, SocketAddr> = sims
            .devices
            .iter()
            .chain(&kill_sims.devices)
            .cloned()
            .collect();
        let addr = |name: &str| addrs[name];
        // Warm every kind once, so the run starts from a working fleet.
        for k in KINDS {
            let mut rng = fastrand::Rng::with_seed(7);
            let (_, _, req) = req_of(&herd_url, k, &mut rng, 0);
            self.until_answered("chaos", super::targets::Kind::Herd, &req)
                .await?;
        }
        let herd_pid = herd.proc.pid();

        let t0 = Instant::now();
        let log = Log {
            t0,
            events: Default::default(),
            windows: Default::default(),
        };
        let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        // --- the devices' faults: one device each, overlapping ---
        for (name, what, patch, from, to) in [
            ("hang", "hang", json!({"hang": true}), 7.0, 26.0),
            (
                "slow",
                "slowdown 10×",
                json!({"slowdown": 10.0}),
                10.0,
                38.0,
            ),
            (
                "err500",
                "error_500",
                json!({"error_500": true}),
                13.0,
                30.0,
            ),
        ] {
            let (client, log, url) = (
                self.client.clone(),
                log.clone(),
                format!("http://{}/_sim/faults", addr(name)),
            );
            let (from, to) = (plan.at(from), plan.at(to));
            tasks.push(tokio::spawn(async move {
                log.until(from).await;
                let r = post_json(&client, &url, &patch).await;
                let a = log.event(name, what, result_of(&r));
                log.until(to).await;
                let r = post_json(&client, &url, &json!({"clear": true})).await;
                let b = log.event(name, "cleared", result_of(&r));
                log.window(name, what, a, r.is_ok().then_some(b));
            }));
        }
        {
            // partition: new connections refused; lifted over a connection
            // opened before.
            let (log, daddr) = (log.clone(), addr("partition"));
            let (from, to) = (plan.at(16.0), plan.at(34.0));
            tasks.push(tokio::spawn(async move {
                let mut conn = AdminConn::open(daddr).await;
                log.until(from).await;
                let r = match &mut conn {
                    Ok(c) => {
                        c.call(http::Method::POST, "/_sim/faults", r#"{"refuse":true}"#)
                            .await
                    }
                    Err(e) => Err(format!("no admin connection: {e}")),
                };
                let a = log.event("partition", "refuse (partition)", result_of(&r));
                // Keep the admin connection busy so nothing closes it idle.
                while Instant::now() < log.t0 + to {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    if let Ok(c) = &mut conn {
                        let _ = c.call(http::Method::GET, "/_sim/faults", "").await;
                    }
                }
                let r = match &mut conn {
                    Ok(c) => {
                        c.call(http::Method::POST, "/_sim/faults", r#"{"clear":true}"#)
                            .await
                    }
                    Err(e) => Err(format!("no admin connection: {e}")),
                };
                let b = log.event("partition", "cleared", result_of(&r));
                log.window("partition", "refuse (partition)", a, r.is_ok().then_some(b));
            }));
        }
        // kill: /_sim/kill, then its process is stopped and started again
        // on the same port, and herd must take it back.
        let revived: Arc<Mutex<Option<Sims>>> = Arc::default();
        {
            let (client, log, env, url) = (
                self.client.clone(),
                log.clone(),
                self.env.clone(),
                herd_url.clone(),
            );
            let kaddr = addr("kill");
            let revived = revived.clone();
            let mut kill_sims = kill_sims;
            let kill_fleet = kill_fleet.clone();
            let (from, to) = (plan.at(4.0), plan.at(22.0));
            tasks.push(tokio::spawn(async move {
                log.until(from).await;
                let r = post_json(&client, &format!("http://{kaddr}/_sim/kill"), &json!({})).await;
                // The kill cuts the very connection that asked for it.
                let a = log.event(
                    "kill",
                    "/_sim/kill",
                    match r {
                        Ok(s) => format!("HTTP {s}"),
                        Err(e) => format!("connection cut ({e}), as expected"),
                    },
                );
                log.until(to).await;
                kill_sims.proc.kill();
                let r = revive(&env, &kill_fleet, &url).await;
                let b = log.event(
                    "kill",
                    "revived (process restarted, same port)",
                    match &r {
                        Ok(_) => "up".to_owned(),
                        Err(e) => format!("failed: {e}"),
                    },
                );
                log.window("kill", "killed", a, Some(b));
                if let Ok(s) = r {
                    *lock(&revived) = Some(s);
                    // When does herd route to it again?
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while Instant::now() < deadline {
                        if let Ok(v) = get_json(&client, &format!("{url}/fleet/status")).await
                            && v["attached"]
                                .as_array()
                                .is_some_and(|a| a.iter().any(|n| n == "kill"))
                        {
                            log.event("kill", "attached to herd again", "online");
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
        }
        // --- attacks on herd itself ---
        let slowloris_stats: Arc<Mutex<Option<SlowlorisStats>>> = Arc::default();
        {
            let (log, out) = (log.clone(), slowloris_stats.clone());
            let (from, to) = (plan.at(18.0), plan.at(33.0));
            let n = plan.slowloris_sockets;
            tasks.push(tokio::spawn(async move {
                log.until(from).await;
                let a = log.event(
                    "herd",
                    "slowloris",
                    format!("{n} sockets, 1 header byte/s each"),
                );
                let s = slowloris(herd_addr, n, log.t0 + to).await;
                let b = log.event(
                    "herd",
                    "slowloris stopped",
                    format!(
                        "{} connections, {} cut by herd (median after {:.1} s)",
                        s.connections_opened, s.cut_by_herd, s.cut_after_p50_s
                    ),
                );
                log.window("herd", "slowloris", a, Some(b));
                *lock(&out) = Some(s);
            }));
        }
        let flood_stats: Arc<Mutex<Option<FloodStats>>> = Arc::default();
        {
            let (log, out) = (log.clone(), flood_stats.clone());
            let from = plan.at(24.0);
            let (n, hold) = (
                plan.flood_connections,
                Duration::from_secs_f64(plan.flood_hold_s),
            );
            tasks.push(tokio::spawn(async move {
                log.until(from).await;
                let a = log.event(
                    "herd",
                    "connection flood",
                    format!("{n} idle connections at once"),
                );
                let s = flood(herd_addr, n, hold).await;
                let b = log.event(
                    "herd",
                    "flood released",
                    format!(
                        "{} connected, {} refused 503, {} closed by herd, {} held open",
                        s.connected, s.refused_503, s.closed_by_herd, s.held_open
                    ),
                );
                log.window("herd", "connection flood", a, Some(b));
                *lock(&out) = Some(s);
            }));
        }
        // herd's sockets, sampled.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut peak = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let pid = herd_pid;
                    let n = tokio::task::spawn_blocking(move || sockets_of(pid))
                        .await
                        .unwrap_or(0);
                    peak = peak.max(n);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                peak
            })
        };
        // --- the load ---
        let schedule_end = plan.at(38.0);
        let load_client = load::http_client();
        let base = herd_url.clone();
        let outs = load::closed_loop_with(
            &load_client,
            plan.workers,
            Bounds {
                duration: if self.opts.smoke {
                    schedule_end + Duration::from_millis(500)
                } else {
                    Duration::from_secs_f64(plan.max_load_s)
                },
                max_requests: plan.requests,
                timeout: Duration::from_secs_f64(plan.client_timeout_s),
            },
            t0,
            true,
            move |i| request(&base, i).2,
        )
        .await;
        let load_s = t0.elapsed().as_secs_f64();
        log.event("load", "finished", format!("{} requests", outs.len()));
        for t in tasks {
            t.await?;
        }
        drop(load_client);

        // --- judge every answer ---
        let windows = lock(&log.windows).clone();
        let mut per_kind: BTreeMap<ReqKind, PerKind> = BTreeMap::new();
        let mut errors: BTreeMap<(u16, String, bool), (u64, f64, String)> = BTreeMap::new();
        let mut lost: Vec<Lost> = Vec::new();
        let (mut n_ok, mut n_err) = (0u64, 0u64);
        let mut ttft_all = hist();
        let mut by_node: BTreeMap<String, u64> = BTreeMap::new();
        // (node, sent at) of every success.
        let mut ok_at: Vec<(String, f64)> = Vec::new();
        for o in &outs {
            let (kind, model, _) = request("", o.seq);
            let pk = per_kind.entry(kind).or_insert_with(|| PerKind {
                sent: 0,
                ok: 0,
                errors: 0,
                lost: 0,
                lat: hist(),
            });
            pk.sent += 1;
            let from = o.sent_at.as_secs_f64();
            let to = from + o.e2e.as_secs_f64();
            match judge(kind, o) {
                Judged::Ok => {
                    n_ok += 1;
                    pk.ok += 1;
                    let lat = if kind.stream() {
                        o.ttft.unwrap_or(o.e2e)
                    } else {
                        o.e2e
                    };
                    let us = (lat.as_micros() as u64).clamp(1, 600_000_000);
                    let _ = pk.lat.record(us);
                    let _ = ttft_all.record(us);
                    if let Some(n) = &o.node {
                        *by_node.entry(n.clone()).or_default() += 1;
                        ok_at.push((n.clone(), from));
                    }
                }
                Judged::Error {
                    status,
                    code,
                    in_stream,
                    message,
                } => {
                    n_err += 1;
                    pk.errors += 1;
                    let e = errors
                        .entry((status, code, in_stream))
                        .or_insert((0, from, message));
                    e.0 += 1;
                }
                Judged::Lost(what) => {
                    pk.lost += 1;
                    let faults = windows
                        .iter()
                        .filter(|w| w.from < to && w.to.is_none_or(|t| t > from))
                        .map(|w| format!("{} ({})", w.what, w.who))
                        .collect();
                    lost.push(Lost {
                        seq: o.seq,
                        kind: kind.label(),
                        model,
                        sent_at_s: from,
                        took_s: o.e2e.as_secs_f64(),
                        status: o.status,
                        node: o.node.clone(),
                        faults,
                        what,
                        body_tail: o
                            .body
                            .as_deref()
                            .map(|b| lossy_tail(b, 300))
                            .unwrap_or_default(),
                    });
                }
            }
        }
        lost.sort_by(|a, b| a.sent_at_s.total_cmp(&b.sent_at_s));
        drop(outs);
        // What each faulty device still served while its fault was on.
        let during: Vec<Value> = windows
            .iter()
            .filter(|w| DEVICES.contains(&w.who.as_str()))
            .map(|w| {
                let to = w.to.unwrap_or(f64::INFINITY);
                let n = ok_at
                    .iter()
                    .filter(|(n, at)| *n == w.who && *at >= w.from && *at < to)
                    .count();
                let all = ok_at
                    .iter()
                    .filter(|(_, at)| *at >= w.from && *at < to)
                    .count();
                json!({
                    "device": w.who, "fault": w.what, "from_s": w.from, "to_s": w.to,
                    "successes_from_it": n, "successes_all": all,
                })
            })
            .collect();

        // --- after the attack: does herd still answer normally? ---
        let online_again = herd
            .wait_online(&self.client, DEVICES.len(), Duration::from_secs(20))
            .await
            .is_ok();
        let check_client = load::http_client();
        let mut after = Vec::new();
        for k in KINDS {
            for j in 0..plan.final_per_kind {
                let mut rng = fastrand::Rng::with_seed(99 + j as u64);
                let (_, _, req) = req_of(&herd_url, k, &mut rng, 1_000_000 + j as u64);
                let o = load::send_with(
                    &check_client,
                    &req,
                    Instant::now(),
                    Duration::from_secs(30),
                    true,
                )
                .await;
                let j = judge(k, &o);
                after.push(json!({
                    "kind": k.label(),
                    "status": o.status,
                    "ok": j == Judged::Ok,
                    "node": o.node,
                    "ms": o.e2e.as_secs_f64() * 1000.0,
                    "judged": format!("{j:?}"),
                }));
            }
        }
        drop(check_client);
        let after_ok = after.iter().filter(|a| a["ok"] == json!(true)).count();

        // --- herd's resources at the end ---
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak_sockets = sampler.await.unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss_end, hwm) = herd.proc.memory_kib();
        let sockets_end = sockets_of(herd_pid);
        let scrape_client = load::http_client();
        let metrics = get_text(&scrape_client, &format!("{herd_url}/metrics"))
            .await
            .unwrap_or_default();
        drop(scrape_client);
        let conns_end = metric_sum(&metrics, "herd_http_connections");
        let retries = metric_sum(&metrics, "herd_retries_total");
        let shed = metric_sum(&metrics, "herd_shed_total");
        let mut served = BTreeMap::new();
        for name in DEVICES {
            let a = if name == "kill" {
                lock(&revived).as_ref().and_then(|s| s.addr(name))
            } else {
                sims.addr(name)
            };
            if let Some(a) = a
                && let Ok(v) = get_json(&self.client, &format!("http://{a}/_sim/stats")).await
            {
                served.insert(name, v["served_total"].as_u64().unwrap_or(0));
            }
        }

        // --- record ---
        let n_lost = lost.len() as u64;
        let m = &mut self.m;
        m.add("chaos/herd/sent", (n_ok + n_err + n_lost) as f64);
        m.add("chaos/herd/ok", n_ok as f64);
        m.add("chaos/herd/errors", n_err as f64);
        m.add("chaos/herd/lost", n_lost as f64);
        m.add("chaos/herd/lat_p50_us", pct(&ttft_all, 0.5));
        m.add("chaos/herd/lat_p99_us", pct(&ttft_all, 0.99));
        m.add("chaos/herd/peak_rss_kib", hwm as f64);
        m.add("chaos/herd/rss_end_kib", rss_end as f64);
        m.add("chaos/herd/connections_end", conns_end);
        m.add("chaos/herd/sockets_end", sockets_end as f64);
        m.add("chaos/herd/sockets_peak", peak_sockets as f64);
        m.add("chaos/herd/retries", retries);
        m.add("chaos/herd/shed", shed);
        m.add("chaos/herd/after_sent", after.len() as f64);
        m.add("chaos/herd/after_ok", after_ok as f64);
        m.add("chaos/herd/load_s", load_s);
        let kinds_json: Vec<Value> = per_kind
            .iter()
            .map(|(k, p)| {
                json!({
                    "kind": k.label(),
                    "latency": if k.stream() { "ttft" } else { "whole" },
                    "sent": p.sent, "ok": p.ok, "errors": p.errors, "lost": p.lost,
                    "p50_ms": pct(&p.lat, 0.5) / 1000.0,
                    "p99_ms": pct(&p.lat, 0.99) / 1000.0,
                })
            })
            .collect();
        let errors_json: Vec<Value> = errors
            .iter()
            .map(|((status, code, in_stream), (n, first, message))| {
                json!({
                    "status": status, "code": code, "in_stream": in_stream,
                    "count": n, "first_at_s": first, "example": message,
                })
            })
            .collect();
        let events = lock(&log.events).clone();
        let slowloris = lock(&slowloris_stats).clone().unwrap_or_default();
        let flood = lock(&flood_stats).clone().unwrap_or_default();
        self.extra.insert(
            "chaos".into(),
            json!({
                "plan": plan,
                "herd_config": herd_toml(&plan),
                "devices": DEVICES,
                "load_seconds": load_s,
                "requests": n_ok + n_err + n_lost,
                "ok": n_ok,
                "errors": n_err,
                "lost": n_lost,
                "lost_requests": lost,
                "errors_by_kind": errors_json,
                "by_kind": kinds_json,
                "latency_all_p50_ms": pct(&ttft_all, 0.5) / 1000.0,
                "latency_all_p99_ms": pct(&ttft_all, 0.99) / 1000.0,
                "answered_by_node": by_node,
                "during_faults": during,
                "served_by_device": served,
                "timeline": events,
                "windows": windows,
                "slowloris": slowloris,
                "flood": flood,
                "herd": {
                    "peak_rss_kib": hwm,
                    "rss_end_kib": rss_end,
                    "http_connections_end": conns_end,
                    "sockets_end": sockets_end,
                    "sockets_peak": peak_sockets,
                    "retries_total": retries,
                    "shed_total": shed,
                },
                "after": {
                    "all_nodes_online": online_again,
                    "sent": after.len(),
                    "ok": after_ok,
                    "requests": after,
                },
            }),
        );
        if n_lost > 0 {
            self.note(format!(
                "chaos: {n_lost} request(s) LOST; first: #{} {} at {:.1} s: {}",
                lost[0].seq, lost[0].kind, lost[0].sent_at_s, lost[0].what
            ));
        }
        drop(sims);
        drop(revived);
        drop(herd);
        Ok(())
    }
}

async fn revive(env: &Env, fleet: &FleetConfig, router: &str) -> Result<Sims, String> {
    // The port may take a moment to be free again.
    let mut last = String::new();
    for _ in 0..20 {
        match Sims::start(env, fleet, Some(router)).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(status: u16, body: &[u8]) -> Outcome {
        Outcome {
            status,
            body: Some(Bytes::copy_from_slice(body)),
            ..Outcome::default()
        }
    }

    #[test]
    fn streams_are_judged_to_their_end() {
        let ok = b"{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"done\":true}\n";
        assert_eq!(judge(ReqKind::OllamaStream, &out(200, ok)), Judged::Ok);
        let torn = b"{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"do";
        assert!(matches!(
            judge(ReqKind::OllamaStream, &out(200, torn)),
            Judged::Lost(_)
        ));
        let no_final = b"{\"message\":{\"content\":\"a\"},\"done\":false}\n";
        assert!(matches!(
            judge(ReqKind::OllamaStream, &out(200, no_final)),
            Judged::Lost(_)
        ));
        let err = b"{\"done\":false}\n{\"error\":\"response broke off: x (node n)\"}\n";
        assert!(matches!(
            judge(ReqKind::OllamaStream, &out(200, err)),
            Judged::Error {
                in_stream: true,
                ..
            }
        ));
        let sse = b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        assert_eq!(judge(ReqKind::OpenAiStream, &out(200, sse)), Judged::Ok);
        let sse_cut = b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":null}]}\n\n";
        assert!(matches!(
            judge(ReqKind::OpenAiStream, &out(200, sse_cut)),
            Judged::Lost(_)
        ));
        let sse_err = b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"m\",\"type\":\"server_error\",\"code\":null}}\n\n";
        assert!(matches!(
            judge(ReqKind::OpenAiStream, &out(200, sse_err)),
            Judged::Error {
                in_stream: true,
                ..
            }
        ));
    }

    #[test]
    fn errors_need_a_json_body() {
        let e = br#"{"error":{"message":"no","type":"server_error","code":"no_eligible_node"}}"#;
        assert_eq!(
            judge(ReqKind::OpenAiJson, &out(503, e)),
            Judged::Error {
                status: 503,
                code: "no_eligible_node".into(),
                in_stream: false,
                message: "no".into()
            }
        );
        assert!(matches!(
            judge(ReqKind::OllamaJson, &out(502, b"Bad Gateway")),
            Judged::Lost(_)
        ));
        let cap = br#"{"error":"herd has 1024 connections open, its limit; close idle connections or try again in a moment"}"#;
        assert!(matches!(
            judge(ReqKind::OllamaJson, &out(503, cap)),
            Judged::Error { ref code, .. } if code == "connection_cap"
        ));
        let none = Outcome {
            error: Some("timed out".into()),
            ..Outcome::default()
        };
        assert!(matches!(judge(ReqKind::OllamaJson, &none), Judged::Lost(_)));
    }

    #[test]
    fn kernel_counters_are_read() {
        let c = tcp_ext();
        assert!(c.contains_key("ListenOverflows"), "{c:?}");
    }

    #[test]
    fn the_mix_is_deterministic() {
        for i in 0..50 {
            assert_eq!(request("x", i).0, request("y", i).0);
        }
    }
}
