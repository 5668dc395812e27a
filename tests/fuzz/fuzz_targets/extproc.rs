//! `extproc`: herd-epp's `ExternalProcessor/Process` stream driven with an
//! arbitrary sequence of `ProcessingRequest` messages.
//!
//! herd-epp has no in-process hook (`processor::Processor::new` and
//! `into_server` are `pub(crate)`), so herd-epp is started once with
//! `herd_epp::start` on 127.0.0.1:0 (plaintext, mDNS off) in a runtime kept
//! in a static, a small fleet is put in its `Running::fleet`, and each case
//! is one ext_proc stream over a tonic client on the loopback.
//!
//! Input: byte 0 = `protocol_config` of the first message (request body
//! mode = bits 0-2, response body mode = bits 3-5, both raw so invalid
//! values are sent too; 0x40 `send_body_without_waiting_for_header_response`;
//! 0x80 `observability_mode`), then messages, each `kind, len_lo, len_hi,
//! payload[len]`:
//! - kind & 7: 0 request headers, 1 request body, 2 request trailers,
//!   3 response headers, 4 response body, 5 response trailers, 6 raw
//!   (payload decoded as a protobuf `ProcessingRequest`), 7 empty message;
//! - kind & 0x80: `end_of_stream` (headers and bodies);
//! - header payloads are `name: value` lines; `@subset: a, b` sets the
//!   subset hint (metadata `envoy.lb.subset_hint`), `@subset-list: a, b`
//!   the same as a list, `@served: ip:port` the data plane's served
//!   endpoint.
//!
//! The client sends all messages, reads replies until none came for a while
//! (herd-epp may be waiting to pick), then half-closes, as Envoy does when
//! the HTTP stream ends. Invariants (a panic anywhere is a bug):
//! - the processor never panics (a panic in herd-epp's tasks aborts the
//!   process: libfuzzer-sys installs an aborting panic hook);
//! - the reply stream ends after the client half-closes (10 s bound);
//! - every reply carries a response; an `ImmediateResponse` is a 4xx/5xx
//!   with an OpenAI-shaped JSON error body; a destination (header or
//!   `envoy.lb` metadata) is an `ip:port` of a fleet node, the same in both,
//!   inside the subset hint when one was sent; in observability mode
//!   nothing is answered.

#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Req;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Resp;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    HttpBody, HttpHeaders, HttpTrailers, ProcessingRequest, ProcessingResponse,
    ProtocolConfiguration,
};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};
use herd_epp::{EppConfig, TlsMode};
use herd_layer::config::RoutingConfig;
use herd_layer::fleet::{Engine, NodeState, Source};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const DESTINATION: &str = "x-gateway-destination-endpoint";

struct World {
    rt: tokio::runtime::Runtime,
    client: ExternalProcessorClient<Channel>,
    endpoints: HashSet<String>,
}

/// A node as the router holds it after its report (built through
/// `apply_report`, so new fields of the fleet model need no change here).
fn node(id: &str, url: &str, loaded: &[&str], disk: &[&str], engine: Engine) -> NodeState {
    use herd_layer::proto as pb;
    let gib = 1u64 << 30;
    let report = pb::NodeReport {
        node_id: id.into(),
        ollama_url: url.into(),
        hardware: Some(pb::Hardware {
            memory: Some(pb::Memory {
                total_bytes: 64 * gib,
                available_bytes: 32 * gib,
                pressure: pb::MemoryPressure::Normal as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        engine: Some(pb::EngineState {
            kind: match engine {
                Engine::OpenAi => pb::EngineKind::Openai,
                _ => pb::EngineKind::Ollama,
            } as i32,
            reachable: true,
            version: "0.12.6".into(),
            loaded: loaded
                .iter()
                .map(|m| pb::LoadedModel {
                    name: (*m).into(),
                    size_bytes: 5 * gib,
                    vram_bytes: 5 * gib,
                    context_length: 8192,
                    ..Default::default()
                })
                .collect(),
            available: loaded
                .iter()
                .chain(disk)
                .map(|m| pb::DiskModel {
                    name: (*m).into(),
                    size_bytes: 5 * gib,
                    family: "qwen3".into(),
                    ..Default::default()
                })
                .collect(),
            parallel_slots: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    // http://mac.local:11434 is kept as given: engine_url accepts host names.
    let mut n = NodeState::new(id.into(), Source::Agentless, url.into());
    n.apply_report(&report, tokio::time::Instant::now(), herd_layer::fleet::now_ms());
    n.source = Source::Agentless;
    n
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut routing = RoutingConfig::default();
        routing.mdns.enabled = false;
        routing.queue.max_wait = Duration::from_millis(200);
        routing.max_body_bytes = 64 * 1024;
        routing
            .fallback_models
            .insert("gone:1b".into(), vec!["qwen3:8b".into()]);
        let cfg = EppConfig {
            grpc_listen: "127.0.0.1:0".parse().unwrap(),
            health_listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            fleet_listen: None,
            tls: TlsMode::Plaintext,
            endpoints: Vec::new(),
            routing,
        };
        let (client, endpoints) = rt.block_on(async {
            let running = herd_epp::start(cfg).await.expect("herd-epp starts");
            let nodes = [
                node("mac-a", "http://10.0.0.5:11434", &["m:latest", "qwen3:8b"], &[], Engine::Ollama),
                node("mac-b", "http://10.0.0.6:11434", &[], &["qwen3:8b", "llama3.2:1b"], Engine::Ollama),
                node("v6", "http://[fd00::7]:11434", &["m:latest"], &["nomic-embed-text:latest"], Engine::Ollama),
                node("named", "http://mac.local:11434", &["named-only:1b"], &[], Engine::Ollama),
                node("vllm", "http://10.0.0.9:8000", &["gpt-oss:20b"], &[], Engine::OpenAi),
            ];
            let endpoints = nodes
                .iter()
                .filter_map(|n| n.addr)
                .map(|a| a.to_string())
                .collect();
            running.fleet.update(|v| {
                for n in nodes {
                    v.nodes.insert(n.id.clone(), n.into());
                }
            });
            let url = format!("http://{}", running.grpc_addr);
            // Kept for the life of the process.
            Box::leak(Box::new(running));
            let client = ExternalProcessorClient::connect(url).await.expect("connect");
            (client, endpoints)
        });
        World {
            rt,
            client,
            endpoints,
        }
    })
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

/// `HERD_FUZZ_DEBUG=1`: print every reply (to look at a case).
fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("HERD_FUZZ_DEBUG").is_some())
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

/// Header lines → headers, and the metadata the `@` lines ask for.
fn headers(payload: &[u8], eos: bool, subset: &mut Option<Vec<String>>) -> (HttpHeaders, Option<Metadata>) {
    let mut hv = Vec::new();
    let mut md: Option<Metadata> = None;
    let mut put = |ns: &str, key: &str, v: Value| {
        let mut s = Struct::default();
        s.fields.insert(key.to_string(), v);
        md.get_or_insert_with(Metadata::default)
            .filter_metadata
            .insert(ns.to_string(), s);
    };
    for line in payload.split(|b| *b == b'\n') {
        // A leading ':' belongs to the name (pseudo-headers: ":path: /v1/…").
        let skip = usize::from(line.first() == Some(&b':'));
        let Some(i) = line[skip..].iter().position(|b| *b == b':').map(|i| i + skip) else {
            continue;
        };
        let (k, v) = (&line[..i], line[i + 1..].trim_ascii());
        // Known bug `model-char-boundary`: a model named in the path that is
        // not ASCII panics in `request::normalized`.
        let ascii;
        let v = if known("model-char-boundary") && k.eq_ignore_ascii_case(b":path") {
            ascii = v.iter().map(|b| if b.is_ascii() { *b } else { b'x' }).collect::<Vec<u8>>();
            &ascii[..]
        } else {
            v
        };
        let key = String::from_utf8_lossy(k).into_owned();
        let text = String::from_utf8_lossy(v).into_owned();
        let list = || text.split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>();
        match key.as_str() {
            "@subset" => {
                *subset = Some(list());
                put("envoy.lb.subset_hint", "x-gateway-destination-endpoint-subset", string_value(&text));
            }
            "@subset-list" => {
                *subset = Some(list());
                let values = list().iter().map(|s| string_value(s)).collect();
                put(
                    "envoy.lb.subset_hint",
                    "x-gateway-destination-endpoint-subset",
                    Value {
                        kind: Some(Kind::ListValue(ListValue { values })),
                    },
                );
            }
            "@served" => put("envoy.lb", "x-gateway-destination-endpoint-served", string_value(&text)),
            _ => {
                // Alternate between `value` and `raw_value`, as Envoy versions do.
                let raw = v.len() % 2 == 1;
                hv.push(HeaderValue {
                    key,
                    value: if raw { String::new() } else { text },
                    raw_value: if raw { v.to_vec() } else { Vec::new() },
                });
            }
        }
    }
    (
        HttpHeaders {
            headers: Some(HeaderMap { headers: hv }),
            end_of_stream: eos,
            ..Default::default()
        },
        md,
    )
}

fn messages(data: &[u8], subset: &mut Option<Vec<String>>) -> Option<(Vec<ProcessingRequest>, bool)> {
    let (&cfg, mut rest) = data.split_first()?;
    let observe = cfg & 0x80 != 0;
    let mut out = Vec::new();
    let mut raw_headers = false;
    while let [kind, lo, hi, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        let eos = kind & 0x80 != 0;
        let mut msg = ProcessingRequest::default();
        match kind & 7 {
            0 => {
                let (h, md) = headers(payload, eos, subset);
                msg.request = Some(Req::RequestHeaders(h));
                msg.metadata_context = md;
            }
            1 => {
                msg.request = Some(Req::RequestBody(HttpBody {
                    body: payload.to_vec(),
                    end_of_stream: eos,
                    ..Default::default()
                }))
            }
            2 => msg.request = Some(Req::RequestTrailers(HttpTrailers::default())),
            3 => {
                let (h, md) = headers(payload, eos, &mut None);
                msg.request = Some(Req::ResponseHeaders(h));
                msg.metadata_context = md;
            }
            4 => {
                msg.request = Some(Req::ResponseBody(HttpBody {
                    body: payload.to_vec(),
                    end_of_stream: eos,
                    ..Default::default()
                }))
            }
            5 => msg.request = Some(Req::ResponseTrailers(HttpTrailers::default())),
            6 if known("model-char-boundary") && !payload.is_ascii() => continue,
            6 => match ProcessingRequest::decode(payload) {
                Ok(m) => {
                    raw_headers |= matches!(m.request, Some(Req::RequestHeaders(_)));
                    msg = m;
                }
                Err(_) => continue,
            },
            _ => {}
        }
        out.push(msg);
        if out.len() >= 64 {
            break;
        }
    }
    // The hint checked is the one sent with the only request headers; with
    // several (Envoy never sends that) or a raw one, it is not checked.
    let request_headers = out
        .iter()
        .filter(|m| matches!(m.request, Some(Req::RequestHeaders(_))))
        .count();
    if request_headers != 1 || raw_headers {
        *subset = None;
    }
    let first = out.first_mut()?;
    first.observability_mode |= observe;
    first.protocol_config.get_or_insert(ProtocolConfiguration {
        request_body_mode: i32::from(cfg & 7),
        response_body_mode: i32::from(cfg >> 3 & 7),
        send_body_without_waiting_for_header_response: cfg & 0x40 != 0,
    });
    let observe = first.observability_mode;
    Some((out, observe))
}

fn destination_in_metadata(r: &ProcessingResponse) -> Option<String> {
    let lb = r.dynamic_metadata.as_ref()?.fields.get("envoy.lb")?;
    let Some(Kind::StructValue(s)) = &lb.kind else {
        panic!("envoy.lb metadata is not a struct: {lb:?}");
    };
    match &s.fields.get(DESTINATION)?.kind {
        Some(Kind::StringValue(v)) => Some(v.clone()),
        other => panic!("envoy.lb destination is not a string: {other:?}"),
    }
}

fn check_reply(w: &World, r: &ProcessingResponse, subset: &Option<Vec<String>>) {
    let resp = r.response.as_ref().expect("a reply without a response");
    let common = match resp {
        Resp::ImmediateResponse(i) => {
            let code = i.status.as_ref().map_or(0, |s| s.code);
            assert!((400..=599).contains(&code), "immediate response status {code}");
            let v: serde_json::Value =
                serde_json::from_slice(&i.body).expect("immediate response body is JSON");
            assert!(v["error"]["message"].is_string(), "not an OpenAI error: {v}");
            return;
        }
        Resp::RequestHeaders(h) | Resp::ResponseHeaders(h) => h.response.as_ref(),
        Resp::RequestBody(b) | Resp::ResponseBody(b) => b.response.as_ref(),
        Resp::RequestTrailers(_) | Resp::ResponseTrailers(_) => None,
        Resp::StreamedImmediateResponse(_) => None,
    };
    let header = common
        .and_then(|c| c.header_mutation.as_ref())
        .into_iter()
        .flat_map(|m| &m.set_headers)
        .filter_map(|h| h.header.as_ref())
        .find(|h| h.key == DESTINATION)
        .map(|h| String::from_utf8(h.raw_value.clone()).expect("destination is UTF-8"));
    let meta = destination_in_metadata(r);
    if header.is_some() || meta.is_some() {
        assert_eq!(header, meta, "destination header and envoy.lb metadata differ");
        let d = header.unwrap();
        let addr: SocketAddr = d.parse().unwrap_or_else(|_| panic!("destination {d:?} is not ip:port"));
        assert!(w.endpoints.contains(&d), "destination {d} is not a fleet node");
        if let Some(entries) = subset {
            let ok = entries.iter().any(|e| {
                e.parse::<SocketAddr>().is_ok_and(|a| a == addr)
                    || e.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip == addr.ip())
            });
            assert!(ok, "destination {d} is outside the subset hint {entries:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut subset = None;
    let Some((msgs, observe)) = messages(data, &mut subset) else {
        return;
    };
    let w = world();
    let mut client = w.client.clone();
    w.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (tx, rx) = tokio::sync::mpsc::channel(msgs.len() + 1);
            for m in msgs {
                tx.try_send(m).expect("room for every message");
            }
            let Ok(rsp) = client.process(ReceiverStream::new(rx)).await else {
                panic!("herd-epp refused the stream");
            };
            let mut inbound = rsp.into_inner();
            let mut tx = Some(tx);
            let mut quiet = 0;
            loop {
                tokio::select! {
                    biased;
                    m = inbound.message() => match m {
                        Ok(Some(r)) => {
                            if debug() {
                                eprintln!("reply: {r:?}");
                            }
                            assert!(!observe, "a reply in observability mode: {r:?}");
                            check_reply(w, &r, &subset);
                            quiet = 0;
                        }
                        Ok(None) | Err(_) => break,
                    },
                    _ = tokio::task::yield_now(), if tx.is_some() => {
                        quiet += 1;
                        if quiet > 64 {
                            // Nothing more is coming: the HTTP stream ends.
                            tx = None;
                        }
                    }
                }
            }
        })
        .await
        .expect("the ext_proc stream did not end within 10 s after the client closed (hang)")
    });
});
