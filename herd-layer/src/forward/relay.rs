//! Moving an answer from a node to the client: passed through line by line,
//! or translated, observed on the way (time to first token, token counts,
//! completeness) and always ended well-formed.

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::dialect::{self, Mode, anthropic, openai, responses};
use crate::fleet::NodeId;
use crate::history::{History, Outcome};
use crate::request::Dialect;
use crate::routed::Body;

/// The longest line (or SSE event) herd holds while waiting for its end.
const MAX_PENDING: usize = 16 * 1024 * 1024;

/// Bytes of a node's stream herd translates at most. A converter keeps the
/// answer for its closing event (Responses' `response.completed`, an
/// engine's tool-call arguments), so a translated stream is bounded like a
/// whole answer (`max_response_bytes`' default) rather than by the node.
const MAX_CONVERTED: usize = 256 * 1024 * 1024;

/// What the relay needs to know about the request.
#[derive(Clone, Debug)]
pub struct Meta {
    pub request_id: String,
    /// The model served (may be a fallback).
    pub model: String,
    /// The model the client asked for.
    pub client_model: String,
    pub include_usage: bool,
    /// OpenAI `encoding_format: "base64"` for embeddings.
    pub embed_base64: bool,
    pub node: NodeId,
    pub started: Instant,
    /// The dialect the client receives.
    pub dialect: Dialect,
    /// herd's estimate of the prompt, tokens (until the node counts them).
    pub input_estimate: u32,
    /// The request's trail, told how the stream ended.
    pub trail: Option<std::sync::Arc<dyn crate::routed::Trail>>,
    /// The tenant's meter, told the tokens as they go (see [`crate::limit`]).
    pub meter: Option<std::sync::Arc<dyn crate::routed::Meter>>,
    /// Requests in flight on the node:model when this one got its slot
    /// (0: unknown), for [`crate::slots`].
    pub concurrency: u32,
}

impl Meta {
    fn openai_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.request_id)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Ollama's timing stats from a final chunk, into an outcome.
fn ollama_stats(v: &Value, o: &mut Outcome) {
    let ns = |k: &str| v.get(k).and_then(Value::as_f64).map(|n| n / 1e6);
    o.prompt_tokens = v.get("prompt_eval_count").and_then(Value::as_u64);
    o.output_tokens = v.get("eval_count").and_then(Value::as_u64);
    o.eval_ms = ns("eval_duration");
    o.load_ms = ns("load_duration");
    o.node_timings = crate::slots::NodeTimings::from_final(v);
}

/// Token counts from a native answer's `usage`: OpenAI's (`prompt_tokens`,
/// `completion_tokens`) or Anthropic's and Responses' (`input_tokens`,
/// `output_tokens`), at the top or inside `response`.
fn native_usage(v: &Value, o: &mut Outcome) {
    let u = v
        .get("usage")
        .or_else(|| v.get("response").and_then(|r| r.get("usage")))
        .or_else(|| v.get("message").and_then(|m| m.get("usage")))
        .filter(|u| u.is_object());
    if let Some(u) = u {
        let n = |a: &str, b: &str| u.get(a).or_else(|| u.get(b)).and_then(Value::as_u64);
        if let Some(p) = n("prompt_tokens", "input_tokens") {
            o.prompt_tokens = Some(p);
        }
        if let Some(c) = n("completion_tokens", "output_tokens") {
            o.output_tokens = Some(c);
        }
    }
}

/// Finish a whole (non-streamed) answer: `body` as the node sent it, or,
/// for the collecting modes, `collected` (the stream folded into Ollama's
/// non-streamed object) with the time its first line arrived.
pub fn finish_whole(
    mode: Mode,
    meta: &Meta,
    body: &[u8],
    collected: Option<(Value, f64)>,
) -> Result<(Bytes, Outcome), String> {
    let mut o = Outcome {
        total_ms: meta.started.elapsed().as_secs_f64() * 1000.0,
        ok: true,
        concurrency: Some(meta.concurrency).filter(|k| *k > 0),
        ..Default::default()
    };
    let (v, ttft) = match collected {
        Some((v, ttft)) => (v, Some(ttft)),
        None => (
            serde_json::from_slice(body).map_err(|e| format!("node sent invalid JSON: {e}"))?,
            None,
        ),
    };
    o.ttft_ms = ttft;
    let out = match mode {
        Mode::OllamaJson => {
            ollama_stats(&v, &mut o);
            return Ok((Bytes::copy_from_slice(body), o));
        }
        Mode::CollectOllama => {
            ollama_stats(&v, &mut o);
            v
        }
        Mode::CollectChat => {
            ollama_stats(&v, &mut o);
            openai::chat_response(
                &v,
                &meta.openai_id("chatcmpl"),
                &meta.client_model,
                unix_now(),
            )
        }
        Mode::CollectCompletion => {
            ollama_stats(&v, &mut o);
            openai::completion_response(&v, &meta.openai_id("cmpl"), &meta.client_model, unix_now())
        }
        Mode::CollectMessages => {
            ollama_stats(&v, &mut o);
            anthropic::message_response(&v, &format!("msg_{}", meta.request_id), &meta.client_model)
        }
        Mode::CollectResponses => {
            ollama_stats(&v, &mut o);
            responses::response_object(
                &v,
                &format!("resp_{}", meta.request_id),
                &meta.client_model,
                unix_now(),
            )
        }
        Mode::EmbedToOpenAi => {
            o.prompt_tokens = v.get("prompt_eval_count").and_then(Value::as_u64);
            openai::embeddings_response(&v, &meta.client_model, meta.embed_base64)
        }
        Mode::NativeJson => {
            native_usage(&v, &mut o);
            return Ok((Bytes::copy_from_slice(body), o));
        }
        _ => unreachable!("streaming modes are relayed, not finished whole"),
    };
    Ok((
        Bytes::from(serde_json::to_vec(&out).map_err(|e| e.to_string())?),
        o,
    ))
}

enum Converter {
    Pass,
    Chat(openai::ChatStream),
    Completion(openai::CompletionStream),
    Messages(anthropic::MessagesStream),
    Responses(responses::ResponsesStream),
}

struct Relay {
    mode: Mode,
    meta: Meta,
    conv: Converter,
    buf: BytesMut,
    finished: bool,
    errored: bool,
    outcome: Outcome,
    /// Output chunks relayed and not yet reported to the meter (a chunk is
    /// about one token: Ollama streams one per line).
    chunks: u64,
    /// Bytes still to be translated before the stream is cut
    /// ([`MAX_CONVERTED`]).
    convert_budget: usize,
}

impl Relay {
    fn new(mode: Mode, meta: Meta) -> Self {
        let created = unix_now();
        let conv = match mode {
            Mode::ChatToSse => Converter::Chat(openai::ChatStream::new(
                &meta.openai_id("chatcmpl"),
                &meta.client_model,
                created,
                meta.include_usage,
            )),
            Mode::CompletionToSse => Converter::Completion(openai::CompletionStream::new(
                &meta.openai_id("cmpl"),
                &meta.client_model,
                created,
                meta.include_usage,
            )),
            Mode::MessagesToSse => Converter::Messages(anthropic::MessagesStream::new(
                &format!("msg_{}", meta.request_id),
                &meta.client_model,
                meta.input_estimate,
            )),
            Mode::ResponsesToSse => Converter::Responses(responses::ResponsesStream::new(
                &format!("resp_{}", meta.request_id),
                &meta.client_model,
                created,
            )),
            _ => Converter::Pass,
        };
        Relay {
            mode,
            meta,
            conv,
            buf: BytesMut::new(),
            finished: false,
            errored: false,
            outcome: Outcome::default(),
            chunks: 0,
            convert_budget: MAX_CONVERTED,
        }
    }

    /// Feed bytes from the node; return what to send to the client. Only
    /// whole lines are sent, so a cut never leaves half a line behind.
    fn feed(&mut self, data: &[u8], out: &mut Vec<Bytes>) {
        if self.errored {
            return;
        }
        if self.mode == Mode::Opaque {
            // A media answer has no lines: bytes go on as they come.
            if !data.is_empty() {
                out.push(Bytes::copy_from_slice(data));
            }
            return;
        }
        let scanned = self.buf.len();
        self.buf.extend_from_slice(data);
        // Whole lines (NDJSON) or whole events (SSE: up to a blank line), so
        // a cut never leaves half of one behind.
        let boundary = match self.mode {
            // Only the bytes just added (and the three before them, where a
            // boundary may straddle two reads) are scanned: linear overall.
            Mode::Sse => event_end(&self.buf, scanned.saturating_sub(3)),
            _ => self.buf[scanned..]
                .iter()
                .rposition(|b| *b == b'\n')
                .map(|i| scanned + i + 1),
        };
        let Some(end) = boundary else {
            if self.buf.len() > MAX_PENDING {
                self.buf.clear();
                self.fail("the node sent a line longer than 16 MiB", out);
            }
            return;
        };
        let complete = self.buf.split_to(end).freeze();
        match self.mode {
            Mode::Ndjson | Mode::Sse => {
                for line in complete.split(|b| *b == b'\n') {
                    self.observe(line);
                }
                out.push(complete);
            }
            _ => {
                if complete.len() > self.convert_budget {
                    self.convert_budget = 0;
                    self.fail(
                        "the node's answer is larger than herd translates (256 MiB)",
                        out,
                    );
                    return;
                }
                self.convert_budget -= complete.len();
                let mut rest = complete;
                while rest.has_remaining() && !self.errored {
                    let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
                    let line = rest.split_to(end);
                    if rest.has_remaining() {
                        rest.advance(1);
                    }
                    self.convert(&line, out);
                }
            }
        }
    }

    /// Watch passed-through lines for the final stats and errors.
    fn observe(&mut self, line: &[u8]) {
        let line = trim(line);
        if line.is_empty() {
            return;
        }
        match self.mode {
            Mode::Ndjson => {
                // Only the final chunk (and errors) need parsing.
                if contains(line, b"\"done\":true") || contains(line, b"\"done\": true") {
                    if let Ok(v) = serde_json::from_slice::<Value>(line) {
                        ollama_stats(&v, &mut self.outcome);
                    }
                    self.finished = true;
                } else if !self.finished
                    && contains(line, b"\"error\"")
                    && let Ok(v) = serde_json::from_slice::<Value>(line)
                    && v.get("error").is_some()
                {
                    self.errored = true;
                } else if !self.finished {
                    self.chunks += 1;
                }
            }
            Mode::Sse => {
                if let Some(data) = line.strip_prefix(b"data:") {
                    let data = trim(data);
                    // OpenAI ends with [DONE]; Anthropic with message_stop;
                    // Responses with response.completed (or .incomplete).
                    if data == b"[DONE]"
                        || contains(data, b"\"message_stop\"")
                        || contains(data, b"\"response.completed\"")
                        || contains(data, b"\"response.incomplete\"")
                    {
                        self.finished = true;
                    }
                    if contains(data, b"\"delta\"") {
                        self.chunks += 1;
                    }
                    if contains(data, b"\"usage\"")
                        && let Ok(v) = serde_json::from_slice::<Value>(data)
                    {
                        native_usage(&v, &mut self.outcome);
                    } else if (contains(data, b"\"type\":\"error\"")
                        || contains(data, b"\"response.failed\""))
                        && !self.finished
                    {
                        self.errored = true;
                    }
                }
            }
            _ => {}
        }
    }

    fn convert(&mut self, line: &[u8], out: &mut Vec<Bytes>) {
        let line = trim(line);
        // Once the answer is complete (and `[DONE]` sent), whatever else the
        // node sends is ignored: nothing may follow the end of a stream, and
        // a whole answer is not a failure.
        if line.is_empty() || self.finished {
            return;
        }
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                self.fail(&format!("node sent an invalid line: {e}"), out);
                return;
            }
        };
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            ollama_stats(&v, &mut self.outcome);
        } else if v.get("error").is_none() {
            self.chunks += 1;
        }
        if v.get("error").is_some() {
            self.errored = true;
        }
        let payloads = match &mut self.conv {
            Converter::Chat(c) => c.chunk(&v),
            Converter::Completion(c) => c.chunk(&v),
            Converter::Messages(c) => {
                out.extend(c.chunk(&v));
                Vec::new()
            }
            Converter::Responses(c) => {
                out.extend(c.chunk(&v));
                Vec::new()
            }
            Converter::Pass => Vec::new(),
        };
        for p in payloads {
            out.push(dialect::sse(&p));
        }
        let (finished, done_line) = match &self.conv {
            Converter::Chat(c) => (c.finished(), true),
            Converter::Completion(c) => (c.finished(), true),
            Converter::Messages(c) => (c.finished(), false),
            Converter::Responses(c) => (c.finished(), false),
            Converter::Pass => (false, false),
        };
        if finished && !self.finished {
            self.finished = true;
            if done_line {
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
        }
    }

    /// Tell the meter the chunks relayed since the last report.
    fn report(&mut self) {
        if self.chunks > 0
            && let Some(m) = &self.meta.meter
        {
            m.streamed(self.chunks);
        }
        self.chunks = 0;
    }

    /// End the stream with an error in the client's format.
    fn fail(&mut self, message: &str, out: &mut Vec<Bytes>) {
        if self.errored {
            return;
        }
        self.errored = true;
        if self.mode == Mode::Opaque {
            // No framing to end well in: the client's body is aborted.
            tracing::warn!(node = %self.meta.node, "{message}");
            return;
        }
        let message = format!("{message} (node {})", self.meta.node);
        out.push(dialect::stream_error(self.meta.dialect, &message));
    }
}

/// Send to the client; a client that stops reading for `idle` counts as gone
/// (it must not hold the node's slot forever).
async fn send(tx: &Sender, b: Bytes, idle: std::time::Duration) -> bool {
    matches!(tokio::time::timeout(idle, tx.send(Ok(b))).await, Ok(Ok(())))
}

/// What the client's body is fed through: data, or the error that aborts it.
type Sender = mpsc::Sender<Result<Bytes, crate::routed::BoxError>>;

/// Whether what is left when the node closes without a final newline is a
/// whole line or event (passed on) rather than a torn one (dropped).
fn whole_tail(mode: Mode, rest: &[u8]) -> bool {
    let rest = trim(rest);
    if rest.is_empty() {
        return false;
    }
    match mode {
        Mode::Sse => rest.split(|b| *b == b'\n').all(|line| {
            let line = trim(line);
            match line.strip_prefix(b"data:") {
                Some(d) => {
                    let d = trim(d);
                    d == b"[DONE]" || serde_json::from_slice::<Value>(d).is_ok()
                }
                None => true,
            }
        }),
        _ => rest
            .split(|b| *b == b'\n')
            .all(|l| trim(l).is_empty() || serde_json::from_slice::<Value>(trim(l)).is_ok()),
    }
}

/// The end of the last whole SSE event in `buf` at or after `from`: a
/// blank line, whether lines end in `\n` or `\r\n`.
fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    (from.max(1)..buf.len())
        .rev()
        .find(|&i| {
            buf[i] == b'\n'
                && (buf[i - 1] == b'\n' || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n'))
        })
        .map(|i| i + 1)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Relay the rest of a streaming answer on its own task; the returned body
/// is what the client reads. A client that goes away closes the channel,
/// which ends the task and drops the connection to the node.
pub fn spawn<B>(
    mode: Mode,
    meta: Meta,
    first: Bytes,
    mut upstream: B,
    idle: std::time::Duration,
    history: History,
) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<Bytes, crate::routed::BoxError>>(32);
    let ttft_ms = meta.started.elapsed().as_secs_f64() * 1000.0;
    tokio::spawn(async move {
        let node = meta.node.clone();
        let model = meta.model.clone();
        let started = meta.started;
        let mut relay = Relay::new(mode, meta);
        relay.outcome.ttft_ms = Some(ttft_ms);
        relay.outcome.concurrency = Some(relay.meta.concurrency).filter(|k| *k > 0);
        let mut out = Vec::new();
        relay.feed(&first, &mut out);
        relay.report();
        let mut disconnected = false;
        'relay: loop {
            for b in out.drain(..) {
                if !send(&tx, b, idle).await {
                    disconnected = true;
                    break 'relay;
                }
            }
            if relay.errored && !matches!(relay.mode, Mode::Ndjson | Mode::Sse) {
                break;
            }
            match tokio::time::timeout(idle, upstream.frame()).await {
                Err(_) => relay.fail(&format!("node went silent for {idle:?}"), &mut out),
                Ok(None) => {
                    if relay.mode == Mode::Opaque {
                        // A media answer is whole when the engine ends it.
                        relay.finished = true;
                    }
                    let rest = std::mem::take(&mut relay.buf);
                    if whole_tail(relay.mode, &rest) {
                        let end: &[u8] = if relay.mode == Mode::Sse {
                            b"\n\n"
                        } else {
                            b"\n"
                        };
                        relay.feed(&[&rest[..], end].concat(), &mut out);
                        relay.report();
                    }
                    if !relay.finished {
                        relay.fail("the stream ended before the model finished", &mut out);
                    }
                    for b in out.drain(..) {
                        if !send(&tx, b, idle).await {
                            disconnected = true;
                            break;
                        }
                    }
                    break;
                }
                Ok(Some(Err(e))) => relay.fail(
                    &format!(
                        "the node's stream broke: {}",
                        crate::client::error_chain(&e)
                    ),
                    &mut out,
                ),
                Ok(Some(Ok(frame))) => {
                    if let Ok(d) = frame.into_data() {
                        relay.feed(&d, &mut out);
                        relay.report();
                    }
                }
            }
            if relay.errored && !relay.finished {
                for b in out.drain(..) {
                    if !send(&tx, b, idle).await {
                        break;
                    }
                }
                break;
            }
        }
        if relay.mode == Mode::Opaque && relay.errored && !disconnected {
            let _ = tx.send(Err("the engine's answer broke off".into())).await;
        }
        let trail = relay.meta.trail.take();
        let meter = relay.meta.meter.take();
        let mut o = relay.outcome;
        o.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        o.ok = relay.finished && !disconnected && !relay.errored;
        if disconnected {
            tracing::info!(%node, %model, "client went away mid-stream");
        } else if !o.ok {
            // The node broke the stream (not the client): it counts against it.
            tracing::warn!(%node, %model, "stream ended with an error");
            history.node_failed(&node, &model);
        }
        history.record(&node, &model, &o);
        if let Some(t) = trail {
            t.outcome(&o, disconnected);
        }
        if let Some(m) = meter {
            m.finished(&o);
        }
    });
    BodyExt::boxed(StreamBody::new(
        ReceiverStream::new(rx).map(|r| r.map(Frame::data)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(dialect: Dialect) -> Meta {
        Meta {
            request_id: "r1".into(),
            model: "m".into(),
            client_model: "m".into(),
            include_usage: false,
            embed_base64: false,
            node: "n".into(),
            started: Instant::now(),
            dialect,
            input_estimate: 1,
            trail: None,
            meter: None,
            concurrency: 0,
        }
    }

    #[test]
    fn ndjson_passes_whole_lines_only() {
        let mut r = Relay::new(Mode::Ndjson, meta(Dialect::Ollama));
        let mut out = Vec::new();
        r.feed(b"{\"a\":1}\n{\"b\":", &mut out);
        assert_eq!(out, vec![Bytes::from_static(b"{\"a\":1}\n")]);
        out.clear();
        r.feed(b"2}\n{\"done\":true,\"eval_count\":7}\n", &mut out);
        assert_eq!(
            out.concat(),
            b"{\"b\":2}\n{\"done\":true,\"eval_count\":7}\n"
        );
        assert!(r.finished);
        assert_eq!(r.outcome.output_tokens, Some(7));
    }

    #[test]
    fn a_cut_ends_ndjson_with_an_error_line() {
        let mut r = Relay::new(Mode::Ndjson, meta(Dialect::Ollama));
        let mut out = Vec::new();
        r.feed(b"{\"a\":1}\n{\"trunc", &mut out);
        r.fail("cut", &mut out);
        let text = String::from_utf8(out.concat()).unwrap();
        let last = text.lines().last().unwrap();
        let v: Value = serde_json::from_str(last).unwrap();
        assert!(v["error"].as_str().unwrap().contains("cut"));
        assert!(!text.contains("trunc"));
    }

    #[test]
    fn sse_passes_whole_events_only() {
        let mut r = Relay::new(Mode::Sse, meta(Dialect::OpenAi));
        let mut out = Vec::new();
        r.feed(b"data: {\"a\":1}\n\ndata: {\"b\":2}\n", &mut out);
        assert_eq!(out.concat(), b"data: {\"a\":1}\n\n");
        r.fail("cut", &mut out);
        let text = String::from_utf8(out.concat()).unwrap();
        assert!(
            !text.contains("\"b\""),
            "a half event never reaches the client: {text}"
        );
        assert!(text.ends_with("\n\n"));
    }

    #[test]
    fn torn_tails_are_dropped_whole_ones_kept() {
        assert!(whole_tail(Mode::Ndjson, b"{\"done\":true}"));
        assert!(!whole_tail(Mode::Ndjson, b"{\"done\":tr"));
        assert!(whole_tail(Mode::Sse, b"data: [DONE]"));
        assert!(!whole_tail(Mode::Sse, b"data: {\"a\""));
    }

    #[test]
    fn an_endless_line_is_cut_with_an_error() {
        let mut r = Relay::new(Mode::Ndjson, meta(Dialect::Ollama));
        let mut out = Vec::new();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..17 {
            r.feed(&chunk, &mut out);
        }
        assert!(r.errored);
        assert!(r.buf.is_empty());
        let text = String::from_utf8(out.concat()).unwrap();
        assert!(text.contains("16 MiB"), "{text}");
    }

    #[test]
    fn sse_passthrough_sees_done_and_usage() {
        let mut r = Relay::new(Mode::Sse, meta(Dialect::OpenAi));
        let mut out = Vec::new();
        r.feed(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n\ndata: [DONE]\n\n",
            &mut out,
        );
        assert!(r.finished);
        assert_eq!(r.outcome.output_tokens, Some(5));
    }

    #[test]
    fn sse_events_end_at_crlf_blank_lines_too_and_across_reads() {
        let mut r = Relay::new(Mode::Sse, meta(Dialect::OpenAi));
        let mut out = Vec::new();
        r.feed(b"data: {\"a\":1}\r\n\r", &mut out);
        assert!(out.is_empty(), "half a boundary is not an event end");
        r.feed(b"\ndata: [DONE]\r\n\r\n", &mut out);
        assert_eq!(out.concat(), b"data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n");
        assert!(r.finished);
        assert_eq!(event_end(b"x\n\ny", 0), Some(3));
        assert_eq!(event_end(b"x\ny\n", 0), None);
    }

    #[test]
    fn a_translated_stream_is_bounded() {
        let mut r = Relay::new(Mode::ResponsesToSse, meta(Dialect::OpenAi));
        r.convert_budget = 200;
        let mut out = Vec::new();
        let line = b"{\"message\":{\"content\":\"0123456789\"},\"done\":false}\n";
        for _ in 0..10 {
            r.feed(line, &mut out);
        }
        assert!(r.errored, "a stream past the budget is cut");
        let text = String::from_utf8(out.concat()).unwrap();
        assert!(text.contains("larger than herd translates"), "{text}");
    }

    #[test]
    fn nothing_follows_the_end_of_a_translated_stream() {
        // Found by fuzzing: bytes after the final chunk gave the client an
        // error event after `[DONE]`, and a whole answer counted as failed.
        let mut r = Relay::new(Mode::ChatToSse, meta(Dialect::OpenAi));
        let mut out = Vec::new();
        r.feed(
            b"{\"message\":{\"content\":\"x\"},\"done\":true}\nnot json\n{\"error\":\"late\"}\n",
            &mut out,
        );
        let text = String::from_utf8(out.concat()).unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        assert!(r.finished && !r.errored);

        let mut r = Relay::new(Mode::Ndjson, meta(Dialect::Ollama));
        let mut out = Vec::new();
        r.feed(b"{\"done\":true}\n{\"error\":\"late\"}\n", &mut out);
        assert!(r.finished && !r.errored);
    }
}
