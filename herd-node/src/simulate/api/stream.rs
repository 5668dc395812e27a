//! A [`Plan`] played out on the wire: every chunk rendered up front with its
//! deadline, then written when due.
//!
//! Rendering first and sleeping until each deadline (rather than sleeping
//! between chunks) keeps the pace exact however late the writer runs, which
//! is what a router measuring TTFT and tokens/s must see. The body owns the
//! plan, so the slot is released when the stream ends or the client drops it.
//!
//! Ollama's and OpenAI's chat chunks are rendered here; the Anthropic and
//! Responses converters render theirs in their own modules and hand the
//! events to [`event_stream_response`].

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::plan::{Chunk, Plan};
use super::wire::{ndjson, ollama_tool_calls, openai_tool_calls, sse, wall};
use crate::simulate::content::rfc3339;
use crate::simulate::engine::Engine;

/// The wire format of a streamed generation.
#[derive(Debug, Clone)]
pub(super) enum Wire {
    /// Ollama's `/api/chat`: NDJSON, text under `message`.
    Chat,
    /// Ollama's `/api/generate`: NDJSON, text under `response`.
    Generate,
    /// OpenAI's chat completions: SSE chunks, then `[DONE]`.
    OpenAi {
        id: String,
        created: u64,
        include_usage: bool,
    },
}

/// Pre-rendered events, each with the time it is due.
pub(super) type Events = Vec<(Instant, Bytes)>;

/// A stream of chunks, each written when due, cut after `die_after` chunks
/// when that fault is on. The admission (the slot) lives inside it.
#[cfg(test)]
pub(super) fn paced_stream(
    plan: Plan,
    wire: Wire,
    die_after: u32,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let events = render_events(&plan, &wire);
    paced(plan, events, die_after)
}

/// `events` written when due, holding `plan` (its slot) until they are
/// all out or the stream is dropped.
fn paced<P: Send + 'static>(
    plan: P,
    events: Events,
    die_after: u32,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let state = (events.into_iter(), plan, 0u32, false);
    futures::stream::unfold(state, move |(mut it, plan, sent, dead)| async move {
        if dead {
            return None;
        }
        let (due, bytes) = it.next()?;
        tokio::time::sleep_until(due).await;
        if die_after > 0 && sent >= die_after {
            let err = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "simulated death");
            return Some((Err(err), (it, plan, sent, true)));
        }
        Some((Ok(bytes), (it, plan, sent + 1, false)))
    })
}

/// Every chunk of a streamed answer with its deadline.
fn render_events(plan: &Plan, wire: &Wire) -> Events {
    match wire {
        Wire::Chat | Wire::Generate => render_ollama(plan, matches!(wire, Wire::Chat)),
        Wire::OpenAi {
            id,
            created,
            include_usage,
        } => render_openai(plan, id, *created, *include_usage),
    }
}

/// Ollama's NDJSON: one object per chunk, the last with the counts.
fn render_ollama(plan: &Plan, chat: bool) -> Events {
    let model = &plan.model;
    let piece = |at: Instant, text: &str, thinking: Option<&str>, tool: Option<Value>| {
        let mut v = json!({"model": model, "created_at": rfc3339(wall(at))});
        if chat {
            let mut msg = json!({"role": "assistant", "content": text});
            if let Some(t) = thinking {
                msg["thinking"] = json!(t);
            }
            if let Some(t) = tool {
                msg["tool_calls"] = t;
            }
            v["message"] = msg;
        } else {
            v["response"] = json!(text);
            if let Some(t) = thinking {
                v["thinking"] = json!(t);
            }
        }
        v
    };
    plan.chunks()
        .into_iter()
        .map(|(at, chunk)| {
            let v = match chunk {
                Chunk::Thinking(t) => piece(at, "", Some(t), None),
                Chunk::Content(t) => piece(at, t, None, None),
                Chunk::ToolCall { name, arguments } => {
                    piece(at, "", None, Some(ollama_tool_calls(name, arguments)))
                }
                Chunk::Done => return (at, ndjson(&plan.ollama_final(piece(at, "", None, None)))),
            };
            let mut v = v;
            v["done"] = json!(false);
            (at, ndjson(&v))
        })
        .collect()
}

/// OpenAI's SSE chunks (`reasoning` for thinking, as Ollama's compat layer
/// writes it), the finish chunk, the usage chunk if asked, `[DONE]`.
fn render_openai(plan: &Plan, id: &str, created: u64, include_usage: bool) -> Events {
    let model = &plan.model;
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": "fp_ollama",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
        })
    };
    let mut out = Vec::new();
    let mut finish = plan.done_reason();
    for (at, c) in plan.chunks() {
        match c {
            Chunk::Thinking(t) => {
                let delta = json!({"role": "assistant", "content": "", "reasoning": t});
                out.push((at, sse(&chunk(delta, Value::Null))));
            }
            Chunk::Content(t) => {
                let delta = json!({"role": "assistant", "content": t});
                out.push((at, sse(&chunk(delta, Value::Null))));
            }
            Chunk::ToolCall { name, arguments } => {
                let calls = openai_tool_calls(id, name, arguments, true);
                let delta = json!({"role": "assistant", "content": "", "tool_calls": calls});
                out.push((at, sse(&chunk(delta, Value::Null))));
                finish = "tool_calls";
            }
            Chunk::Done => {
                let last = chunk(json!({"role": "assistant", "content": ""}), json!(finish));
                out.push((at, sse(&last)));
                if include_usage {
                    let usage = json!({
                        "id": id, "object": "chat.completion.chunk", "created": created,
                        "model": model, "system_fingerprint": "fp_ollama",
                        "choices": [], "usage": plan.usage()
                    });
                    out.push((at, sse(&usage)));
                }
                out.push((at, Bytes::from_static(b"data: [DONE]\n\n")));
            }
        }
    }
    out
}

/// A streamed answer: the paced body with its content type, cut by the
/// `die_mid_stream_after` fault when that is set.
pub(super) fn streaming_response(plan: Plan, wire: Wire, engine: &Engine) -> Response {
    let content_type = match wire {
        Wire::OpenAi { .. } => "text/event-stream",
        _ => "application/x-ndjson",
    };
    let events = render_events(&plan, &wire);
    paced_response(plan, events, content_type, engine)
}

/// Events rendered by a dialect module (Anthropic, Responses) streamed as
/// `text/event-stream`, paced and faulted like every other stream.
pub(super) fn event_stream_response(plan: Plan, events: Events, engine: &Engine) -> Response {
    paced_response(plan, events, "text/event-stream", engine)
}

/// Events that need no slot (an answer without a generation) as
/// `text/event-stream`.
pub(super) fn plain_event_stream(events: Events) -> Response {
    let body = Body::from_stream(paced((), events, 0));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn paced_response(plan: Plan, events: Events, content_type: &str, engine: &Engine) -> Response {
    let die_after = engine.faults().die_mid_stream_after;
    let body = Body::from_stream(paced(plan, events, die_after));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::config::{DeviceConfig, GIB, ModelSpec};
    use crate::simulate::api::plan::{GenInput, Reply, chat_prompt, start};
    use crate::simulate::api::wire::Message;
    use crate::simulate::content::reply_tokens;

    fn engine(speed: f64) -> Arc<Engine> {
        Engine::new(DeviceConfig {
            speed,
            ttft_base_ms: 100,
            ttft_ms_per_prompt_token: 1.0,
            models: vec![ModelSpec {
                name: "m:1".into(),
                size_bytes: GIB,
                ..ModelSpec::default()
            }],
            loaded: vec!["m:1".into()],
            ..DeviceConfig::default()
        })
    }

    fn input(tokens: usize) -> GenInput {
        let (tokens, _) = reply_tokens("m:1", "p", Some(tokens));
        GenInput {
            model: "m:1".into(),
            prompt_tokens: 40,
            prompt: String::new(),
            thinking: Vec::new(),
            reply: Reply::Text { tokens, cut: false },
            keep_alive: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_paced_on_a_deadline() {
        let e = engine(20.0);
        let plan = start(&e, input(20)).await.expect("plan");
        let t0 = Instant::now();
        let mut stream = Box::pin(paced_stream(plan, Wire::Generate, 0));
        let mut first = None;
        let mut n = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.expect("chunk");
            first.get_or_insert_with(Instant::now);
            n += 1;
            let v: Value = serde_json::from_slice(&chunk).expect("ndjson");
            if v["done"] == json!(true) {
                assert_eq!(v["eval_count"], json!(20));
                assert_eq!(v["eval_duration"], json!(1_000_000_000u64));
                assert_eq!(v["prompt_eval_duration"], json!(140_000_000u64));
            }
        }
        let first = first.expect("first chunk");
        // TTFT = 100 ms + 40 prompt tokens * 1 ms.
        assert_eq!(first - t0, Duration::from_millis(140));
        // 20 tokens at 20 tok/s take one second from the first token to done.
        assert_eq!(Instant::now() - first, Duration::from_secs(1));
        assert_eq!(n, 21);
        assert_eq!(e.stats().active, 0, "slot released at end of stream");
    }

    #[tokio::test(start_paused = true)]
    async fn slot_is_held_until_the_stream_ends_or_is_dropped() {
        let e = engine(10.0);
        let plan = start(&e, input(10)).await.expect("plan");
        let mut stream = Box::pin(paced_stream(plan, Wire::Chat, 0));
        stream.next().await.expect("one chunk").expect("ok");
        assert_eq!(e.stats().active, 1);
        drop(stream);
        assert_eq!(e.stats().active, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ttft_grows_with_prompt_length() {
        let e = engine(100.0);
        let mut ttfts = Vec::new();
        for words in [1usize, 400, 4000] {
            let msg = Message {
                role: "user".into(),
                content: Some(json!("word ".repeat(words))),
            };
            let (_, prompt_tokens) = chat_prompt(std::slice::from_ref(&msg));
            let mut i = input(3);
            i.prompt_tokens = prompt_tokens;
            let t0 = Instant::now();
            let plan = start(&e, i).await.expect("plan");
            let mut stream = Box::pin(paced_stream(plan, Wire::Chat, 0));
            stream.next().await.expect("chunk").expect("ok");
            ttfts.push(t0.elapsed());
        }
        assert!(ttfts[0] < ttfts[1] && ttfts[1] < ttfts[2], "{ttfts:?}");
        // 4000 words * 5 chars / 4 + 4 tokens, 1 ms each, plus 100 ms.
        assert_eq!(ttfts[2], Duration::from_millis(100 + 5000 + 4));
    }

    #[tokio::test(start_paused = true)]
    async fn die_mid_stream_cuts_after_n_chunks() {
        let e = engine(100.0);
        let plan = start(&e, input(10)).await.expect("plan");
        let items: Vec<_> = paced_stream(plan, Wire::Chat, 3).collect().await;
        assert_eq!(items.len(), 4);
        assert!(items[..3].iter().all(Result::is_ok));
        assert!(items[3].is_err());
    }
}
