//! `relay_framing`: what the forward leaf makes of whatever a node sends.
//!
//! `forward::relay::Relay` (the NDJSON/SSE framing) is private, so this
//! target drives it through the public leaf, `herd_layer::forward::Forward`,
//! against a fake node on the loopback that answers with the fuzz input:
//! every mode of `dialect::plan` is reached (NDJSON and SSE pass-through,
//! chat/completion → SSE translation, collected and whole answers), with
//! `Relay::feed`, the tail check at the end of the stream, `finish_whole`,
//! the collector and `dialect::error_message` on error statuses.
//!
//! Input: byte 0 = endpoint (low 3 bits), engine OpenAI (0x08, OpenAI
//! endpoints only), stream (0x10), include_usage (0x20), base64 embeddings
//! (0x40), node closes the connection mid-answer (0x80); byte 1 = status
//! (< 0xf0: 200, and then bit 0 adds 8 to the endpoint index, which is
//! taken modulo `ENDPOINTS.len()`, and bit 1 makes the engine a recent
//! Ollama that serves more APIs natively; else an error status); the rest
//! is the
//! node's body, cut into HTTP chunks at every 0xff byte (0xff never occurs
//! in JSON text).
//!
//! Invariants (a panic is a bug in herd-layer):
//! - no panic, and every answer ends (bounded: a hang panics after 10 s);
//! - pass-through (NDJSON, SSE): the client gets the node's bytes cut at a
//!   line (event) boundary, then at most one well-formed error line (event)
//!   — never a torn line;
//! - translated OpenAI streams: only whole `data: <JSON object>\n\n`
//!   events or `data: [DONE]\n\n`, `[DONE]` at most once and last, and the
//!   stream ends with `[DONE]` or an error event;
//! - other SSE streams (Anthropic, Responses): whole events of `event:` and
//!   `data: <JSON>` lines;
//! - whole answers: one valid JSON value.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use herd_layer::budget::Charge;
use herd_layer::dialect::{self, Mode, ParseConfig};
use herd_layer::fleet::Engine;
use herd_layer::forward::{Forward, ForwardConfig};
use herd_layer::history::History;
use herd_layer::queueing::Admission;
use herd_layer::rank::{Ranking, Temperature};
use herd_layer::request::{Dialect, ENDPOINTS, Endpoint};
use herd_layer::routed::{Pick, Routed};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Service, ServiceExt};

const STATUSES: [u16; 16] = [
    400, 401, 403, 404, 408, 413, 422, 429, 500, 502, 503, 504, 507, 301, 302, 599,
];

#[derive(Clone, Default)]
struct Script {
    status: u16,
    chunks: Vec<Bytes>,
    abrupt: bool,
}

struct World {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    forward: Forward,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let s = script.clone();
        rt.spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let _ = conn.set_nodelay(true);
                tokio::spawn(serve(conn, s.clone()));
            }
        });
        let cfg = ForwardConfig {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_response_bytes: 4096,
            first_byte_min: Duration::from_secs(5),
            ..ForwardConfig::default()
        };
        let forward = Forward::new(Arc::new(cfg), History::new(), Admission::new());
        World {
            rt,
            addr,
            script,
            forward,
        }
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A minimal HTTP/1.1 node: reads each request, answers with the current
/// script as a chunked body.
async fn serve(mut conn: TcpStream, script: Arc<Mutex<Script>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match conn.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        // What herd sends upstream is JSON (the leaf splices it).
        assert!(
            serde_json::from_slice::<&serde_json::value::RawValue>(&body).is_ok(),
            "upstream body is not JSON: {:?}",
            String::from_utf8_lossy(&body)
        );
        let s = script.lock().unwrap().clone();
        let mut out = format!(
            "HTTP/1.1 {} X\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n",
            s.status
        )
        .into_bytes();
        if conn.write_all(&out).await.is_err() {
            return;
        }
        for c in s.chunks.iter().filter(|c| !c.is_empty()) {
            out.clear();
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
            if conn.write_all(&out).await.is_err() {
                return;
            }
            let _ = conn.flush().await;
            tokio::task::yield_now().await;
        }
        if s.abrupt {
            return;
        }
        if conn.write_all(b"0\r\n\r\n").await.is_err() {
            return;
        }
    }
}

fn request_body(endpoint: Endpoint, stream: bool, usage: bool, base64: bool) -> String {
    let opts = format!(r#""stream":{stream},"stream_options":{{"include_usage":{usage}}}"#);
    match endpoint {
        Endpoint::OllamaChat => format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"stream":{stream},"options":{{"num_ctx":4096}}}}"#
        ),
        Endpoint::OllamaGenerate => format!(r#"{{"model":"m","prompt":"hi","stream":{stream}}}"#),
        Endpoint::OllamaEmbed => r#"{"model":"m","input":["a","b"]}"#.to_string(),
        Endpoint::OllamaEmbeddings => r#"{"model":"m","prompt":"a"}"#.to_string(),
        Endpoint::OpenAiChat => format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],{opts}}}"#
        ),
        Endpoint::OpenAiCompletions => format!(r#"{{"model":"m","prompt":"hi",{opts}}}"#),
        Endpoint::OpenAiEmbeddings => format!(
            r#"{{"model":"m","input":["a"],"encoding_format":"{}"}}"#,
            if base64 { "base64" } else { "float" }
        ),
        // An endpoint added since: a body most chat-like APIs accept.
        #[allow(unreachable_patterns)]
        _ => format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"input":"hi","max_tokens":16,{opts}}}"#
        ),
    }
}

/// Any SSE stream herd writes: whole events, each of `event: <name>` and
/// `data: <JSON>` lines.
fn check_sse(out: &[u8], mode: Mode) {
    let text = std::str::from_utf8(out).expect("SSE output is UTF-8");
    assert!(text.ends_with("\n\n"), "{mode:?}: torn last event: {text:?}");
    for e in text[..text.len() - 2].split("\n\n") {
        for line in e.split('\n') {
            if let Some(data) = line.strip_prefix("data: ") {
                if data != "[DONE]" {
                    serde_json::from_str::<Value>(data)
                        .unwrap_or_else(|err| panic!("{mode:?}: event data is not JSON ({err}): {e:?}"));
                }
            } else {
                assert!(line.starts_with("event: "), "{mode:?}: not an SSE line: {line:?} in {text:?}");
            }
        }
    }
}

/// An error body in any dialect: `{"error": …}`, or a `"type": "error"`
/// event (Anthropic, Responses).
fn is_error_json(v: &[u8]) -> bool {
    serde_json::from_slice::<Value>(v)
        .ok()
        .is_some_and(|v| v.get("error").is_some() || v.get("type").and_then(Value::as_str) == Some("error"))
}

/// Pass-through: `out` is the node's bytes up to a `sep` boundary, then at
/// most one error line/event built by herd.
fn check_pass_through(out: &[u8], node: &[u8], sep: &[u8], mode: Mode) {
    let mut expected = node.to_vec();
    expected.extend_from_slice(sep);
    let common = out.iter().zip(&expected).take_while(|(a, b)| a == b).count();
    let boundary = (sep.len()..=common)
        .rev()
        .find(|&i| &out[i - sep.len()..i] == sep)
        .unwrap_or(0);
    let rest = &out[boundary..];
    if rest.is_empty() {
        return;
    }
    let ok = match mode {
        Mode::Ndjson => {
            rest.ends_with(b"\n")
                && !rest[..rest.len() - 1].contains(&b'\n')
                && is_error_json(&rest[..rest.len() - 1])
        }
        // One SSE event (`event: …` lines allowed: Anthropic names its
        // events) whose data is an error.
        _ => {
            rest.ends_with(b"\n\n")
                && std::str::from_utf8(&rest[..rest.len() - 2]).is_ok_and(|e| {
                    !e.contains("\n\n")
                        && e.split('\n').all(|l| l.starts_with("event: ") || l.starts_with("data: "))
                        && e.split('\n')
                            .filter_map(|l| l.strip_prefix("data: "))
                            .any(|d| is_error_json(d.as_bytes()))
                })
        }
    };
    assert!(
        ok,
        "{mode:?}: the client got bytes the node did not send, or a torn line: {:?}\n(node sent {:?})",
        String::from_utf8_lossy(rest),
        String::from_utf8_lossy(node)
    );
}

/// Translated streams: whole events of JSON objects, `[DONE]` once and last,
/// and a well-formed end.
fn check_translated(out: &[u8], mode: Mode) {
    let text = std::str::from_utf8(out).expect("SSE output is UTF-8");
    assert!(text.ends_with("\n\n"), "{mode:?}: torn last event: {text:?}");
    let events: Vec<&str> = text[..text.len() - 2].split("\n\n").collect();
    let mut done_at = None;
    for (i, e) in events.iter().enumerate() {
        let data = e
            .strip_prefix("data: ")
            .unwrap_or_else(|| panic!("{mode:?}: not a data event: {e:?}"));
        assert!(!data.contains('\n'), "{mode:?}: multi-line event {e:?}");
        if data == "[DONE]" {
            assert!(done_at.is_none(), "{mode:?}: [DONE] twice: {text:?}");
            done_at = Some(i);
            continue;
        }
        let v: Value = serde_json::from_str(data)
            .unwrap_or_else(|err| panic!("{mode:?}: event is not JSON ({err}): {e:?}"));
        assert!(v.is_object(), "{mode:?}: event is not an object: {e:?}");
    }
    let last = events.len() - 1;
    if let Some(d) = done_at {
        if known("events-after-done") && d < last {
            // Only the reported case: a node error after the final chunk.
            assert!(events[d + 1..].iter().all(|e| is_error_json(e["data: ".len()..].as_bytes())));
            return;
        }
        assert_eq!(d, last, "{mode:?}: events after [DONE]: {text:?}");
    } else {
        let data = &events[last]["data: ".len()..];
        assert!(
            is_error_json(data.as_bytes()),
            "{mode:?}: stream ended without [DONE] or an error: {text:?}"
        );
    }
}

/// Known bugs, already reported, whose checks `HERD_FUZZ_KNOWN=a,b` (or
/// `all`) turns off so a long run can look for others. Unset (the smoke
/// test): every check is on.
fn known(issue: &str) -> bool {
    static K: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    K.get_or_init(|| std::env::var("HERD_FUZZ_KNOWN").unwrap_or_default())
        .split(',')
        .any(|s| s.trim() == issue || s.trim() == "all")
}

/// A node line whose token counts overflow when added (known bug
/// `usage-overflow`: `openai::response::usage` adds them unchecked).
fn counts_overflow(line: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(line.trim_ascii()).is_ok_and(|v| {
        let n = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        matches!((n("prompt_eval_count"), n("eval_count")), (Some(a), Some(b)) if a.checked_add(b).is_none())
    })
}

fuzz_target!(|data: &[u8]| {
    let [flags, status, body @ ..] = data else {
        return;
    };
    let high = if *status < 0xf0 { usize::from(*status & 1) << 3 } else { 0 };
    let version = if *status < 0xf0 && *status & 2 != 0 { "99.0.0" } else { "0.12.6" };
    let spec = &ENDPOINTS[(usize::from(*flags & 7) | high) % ENDPOINTS.len()];
    let engine = if *flags & 0x08 != 0 && spec.dialect == Dialect::OpenAi {
        Engine::OpenAi
    } else {
        Engine::Ollama
    };
    let stream = *flags & 0x10 != 0;
    let usage = *flags & 0x20 != 0;
    let base64 = *flags & 0x40 != 0;
    let abrupt = *flags & 0x80 != 0;
    let status = if *status < 0xf0 {
        200
    } else {
        STATUSES[(*status & 0x0f) as usize]
    };
    let node: Vec<u8> = body.iter().copied().filter(|b| *b != 0xff).collect();
    if known("usage-overflow") && node.split(|b| *b == b'\n').any(counts_overflow) {
        return;
    }
    let chunks: Vec<Bytes> = body
        .split(|b| *b == 0xff)
        .map(Bytes::copy_from_slice)
        .collect();

    let w = world();
    *w.script.lock().unwrap() = Script {
        status,
        chunks,
        abrupt,
    };
    let fallbacks = Default::default();
    let Ok(request) = dialect::parse(
        spec.endpoint,
        &http::HeaderMap::new(),
        Bytes::from(request_body(spec.endpoint, stream, usage, base64)),
        ParseConfig {
            fallback_models: &fallbacks,
            aliases: None,
        },
        Charge::none(),
    ) else {
        // The canned bodies parse for the endpoints above; an endpoint
        // added since may want another.
        assert!(spec.endpoint as usize > Endpoint::OpenAiEmbeddings as usize, "the canned {:?} body does not parse", spec.endpoint);
        return;
    };
    let plan = dialect::plan(request.endpoint, engine, version, request.stream);
    let url = format!("http://{}", w.addr);
    let mut routed = Routed::new(Arc::new(request));
    routed.pick = Some(Pick {
        node: "n".into(),
        url,
        addr: Some(w.addr),
        engine,
        version: version.to_string(),
        slots: 1,
        concurrency: 1,
        temperature: Temperature::Hot,
        score: 0.0,
        ranking: Arc::new(Ranking {
            model: "m".into(),
            candidates: Vec::new(),
            eliminated: Vec::new(),
            model_known: true,
        }),
    });

    let mut forward = w.forward.clone();
    let out = w.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            let rsp = forward.ready().await.unwrap().call(routed).await;
            match rsp {
                Err(e) => {
                    if std::env::var_os("HERD_FUZZ_DEBUG").is_some() {
                        eprintln!("error: {e}");
                    }
                    None
                }
                Ok(rsp) => {
                    assert_eq!(rsp.status(), http::StatusCode::OK);
                    let bytes = rsp
                        .into_body()
                        .collect()
                        .await
                        .expect("herd's answer body never errors")
                        .to_bytes();
                    Some(bytes)
                }
            }
        })
        .await
        .expect("the answer did not end within 10 s (hang)")
    });
    if std::env::var_os("HERD_FUZZ_DEBUG").is_some() {
        eprintln!("{:?} → {:?}", plan.mode, out.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()));
    }
    let Some(out) = out else {
        return;
    };
    assert_eq!(status, 200, "an error status was answered as a success");
    match plan.mode {
        Mode::Ndjson => check_pass_through(&out, &node, b"\n", plan.mode),
        Mode::Sse => check_pass_through(&out, &node, b"\n\n", plan.mode),
        Mode::ChatToSse | Mode::CompletionToSse => check_translated(&out, plan.mode),
        // The other SSE streams (Anthropic Messages, Responses).
        m if m.streams_to_client() => check_sse(&out, m),
        _ => {
            assert!(
                serde_json::from_slice::<&serde_json::value::RawValue>(&out).is_ok(),
                "{:?}: whole answer is not JSON: {:?}",
                plan.mode,
                String::from_utf8_lossy(&out)
            );
        }
    }
});
