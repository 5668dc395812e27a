//! `translate_response`: Ollama's answers turned into the client's shapes.
//!
//! Input: byte 0 picks what is fed (low 3 bits) and flags (include_usage,
//! base64, a small collect limit); the rest is NDJSON lines as a node sends
//! them. Whole-answer converters get the first line; stream converters and
//! the collector get every line.
//!
//! Invariants (a panic is a bug in herd-layer):
//! - `openai::{chat_response, completion_response, embeddings_response}`,
//!   `ChatStream`, `CompletionStream` and `ollama::Collector` never panic on
//!   any JSON a node may send (including huge counts);
//! - every stream payload is a JSON object that serialises, and as an SSE
//!   event (`dialect::sse`) is exactly one `data: …\n\n` event;
//! - a stream converter emits exactly one `finish_reason` chunk, only on
//!   Ollama's final chunk, and after it only error payloads;
//! - usage counts add up (`total_tokens = prompt_tokens + completion_tokens`);
//! - the collector's answer is an object that converts like a whole answer.

#![no_main]

use herd_layer::dialect::{self, ollama::Collector, openai};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n')
}

fn parsed(data: &[u8]) -> impl Iterator<Item = Value> + '_ {
    lines(data).filter_map(|l| serde_json::from_slice::<Value>(l.trim_ascii()).ok())
}

fn check_usage(v: &Value) {
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        let (p, c, t) = (n("prompt_tokens"), n("completion_tokens"), n("total_tokens"));
        if let (Some(p), Some(c), Some(t)) = (p, c, t) {
            // Counts past u64 saturate (a node may send any number).
            assert_eq!(p.saturating_add(c), t, "usage does not add up: {u}");
        }
    }
}

fn check_event(p: &Value) {
    assert!(p.is_object(), "payload is not an object: {p}");
    let ev = dialect::sse(p);
    assert!(ev.starts_with(b"data: ") && ev.ends_with(b"\n\n"), "{ev:?}");
    let inner = &ev[6..ev.len() - 2];
    assert!(!inner.contains(&b'\n'), "an event spans lines: {ev:?}");
    let back: Value = serde_json::from_slice(inner).expect("event data is JSON");
    assert_eq!(&back, p);
    check_usage(p);
}

fn is_error(p: &Value) -> bool {
    p.get("error").is_some()
}

fn finish_reasons(p: &Value) -> usize {
    p.get("choices")
        .and_then(Value::as_array)
        .map_or(0, |c| {
            c.iter()
                .filter(|c| c.get("finish_reason").is_some_and(|f| !f.is_null()))
                .count()
        })
}

/// Feed `chunks` to a stream converter, checking its output.
fn stream<F, D>(data: &[u8], mut chunk: F, finished: D)
where
    F: FnMut(&Value) -> Vec<Value>,
    D: Fn() -> bool,
{
    let mut finishes = 0;
    let mut saw_done = false;
    for v in parsed(data) {
        let was_finished = finished();
        let done = v.get("done").and_then(Value::as_bool) == Some(true);
        let node_error = v.get("error").is_some_and(|e| !e.is_null());
        let out = chunk(&v);
        for p in &out {
            check_event(p);
        }
        if node_error {
            assert!(out.len() == 1 && is_error(&out[0]), "a node error is one error event");
            continue;
        }
        if was_finished {
            assert!(out.is_empty(), "payloads after the final chunk: {out:?}");
            continue;
        }
        let f: usize = out.iter().map(finish_reasons).sum();
        assert_eq!(f, usize::from(done), "finish_reason chunks for done={done}: {out:?}");
        finishes += f;
        saw_done |= done;
        assert_eq!(finished(), saw_done);
    }
    assert!(finishes <= 1);
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
    if known("usage-overflow") && data.get(1..).unwrap_or_default().split(|b| *b == b'\n').any(counts_overflow) {
        return;
    }
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let include_usage = sel & 0x10 != 0;
    let base64 = sel & 0x20 != 0;
    let limit = if sel & 0x40 != 0 { 64 } else { 1 << 20 };
    let (id, model, created) = ("chatcmpl-r1", "m", 1_700_000_000);
    match sel & 0x7 {
        0 | 1 | 2 => {
            let Some(v) = parsed(rest).next() else {
                return;
            };
            let out = match sel & 0x7 {
                0 => openai::chat_response(&v, id, model, created),
                1 => openai::completion_response(&v, "cmpl-r1", model, created),
                _ => openai::embeddings_response(&v, model, base64),
            };
            assert!(out.is_object());
            check_usage(&out);
            serde_json::to_vec(&out).expect("serialises");
        }
        3 => {
            let c = std::cell::RefCell::new(openai::ChatStream::new(id, model, created, include_usage));
            stream(rest, |v| c.borrow_mut().chunk(v), || c.borrow().finished());
        }
        4 => {
            let c = std::cell::RefCell::new(openai::CompletionStream::new(
                "cmpl-r1",
                model,
                created,
                include_usage,
            ));
            stream(rest, |v| c.borrow_mut().chunk(v), || c.borrow().finished());
        }
        _ => {
            let mut c = Collector::new();
            for l in lines(rest) {
                if c.line(l, limit).is_err() {
                    return;
                }
            }
            let done = c.done();
            match c.finish() {
                Ok(v) => {
                    assert!(done);
                    assert!(v.is_object());
                    assert_eq!(v.get("done").and_then(Value::as_bool), Some(true));
                    for out in [
                        openai::chat_response(&v, id, model, created),
                        openai::completion_response(&v, "cmpl-r1", model, created),
                    ] {
                        check_usage(&out);
                        serde_json::to_vec(&out).expect("serialises");
                    }
                }
                Err(e) => {
                    assert!(!done, "finished stream failed: {e}");
                }
            }
        }
    }
});
