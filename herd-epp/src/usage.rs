//! What a response teaches: time to first token and token usage.
//!
//! herd-epp never sees the node itself, only the response body chunks Envoy
//! shows it, so it learns from those: the first non-empty chunk is the first
//! token (TTFT), and usage is read from the JSON `usage` object (OpenAI),
//! from SSE `data:` lines (OpenAI streaming with `include_usage`), or from
//! Ollama's final NDJSON line (`eval_count`, `eval_duration`, …). The result
//! goes into the same [`History`](herd_layer::history::History) the proxy
//! feeds, so scoring learns the same way in both shapes.
//!
//! Memory is bounded: lines are scanned as they complete, and a line (or a
//! non-streamed body) longer than [`MAX_KEPT`] is skipped, not buffered.

use std::time::Instant;

use serde_json::Value;

use herd_layer::history::Outcome;

/// Largest line or body kept for parsing.
pub const MAX_KEPT: usize = 4 * 1024 * 1024;

/// Token counts and engine timings found in a response.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Usage {
    /// `prompt_tokens`, `input_tokens` or Ollama's `prompt_eval_count`.
    prompt_tokens: Option<u64>,
    /// `completion_tokens`, `output_tokens` or Ollama's `eval_count`.
    output_tokens: Option<u64>,
    /// Ollama's `eval_duration` (generation time), in milliseconds.
    eval_ms: Option<f64>,
    /// Ollama's `load_duration` (model load time), in milliseconds.
    load_ms: Option<f64>,
    /// Ollama's timings of the answer (its final line).
    node_timings: Option<herd_layer::slots::NodeTimings>,
}

/// Watches one response body go by.
#[derive(Debug)]
pub struct Meter {
    started: Instant,
    first: Option<Instant>,
    line: Vec<u8>,
    line_overflow: bool,
    whole: Vec<u8>,
    whole_overflow: bool,
    usage: Usage,
    /// Output chunks seen and not yet taken (about one token each).
    chunks: u64,
}

impl Meter {
    /// `started` is when the request was sent on (the pick).
    pub fn new(started: Instant) -> Self {
        Meter {
            started,
            first: None,
            line: Vec::new(),
            line_overflow: false,
            whole: Vec::new(),
            whole_overflow: false,
            usage: Usage::default(),
            chunks: 0,
        }
    }

    /// Milliseconds from the pick to the first body byte, once seen.
    pub fn ttft_ms(&self) -> Option<f64> {
        self.first
            .map(|f| f.duration_since(self.started).as_secs_f64() * 1000.0)
    }

    /// Take in one body chunk: the first non-empty one marks the first token.
    pub(crate) fn chunk(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.first.is_none() {
            self.first = Some(Instant::now());
        }
        if !self.whole_overflow {
            if self.whole.len() + data.len() > MAX_KEPT {
                self.whole_overflow = true;
                self.whole = Vec::new();
            } else {
                self.whole.extend_from_slice(data);
            }
        }
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(pos);
            if !self.line_overflow {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.scan_line(&line);
            }
            self.line.clear();
            self.line_overflow = false;
            rest = &tail[1..];
        }
        if !self.line_overflow {
            if self.line.len() + rest.len() > MAX_KEPT {
                self.line_overflow = true;
                self.line = Vec::new();
            } else {
                self.line.extend_from_slice(rest);
            }
        }
    }

    /// The body ended: scan what is left.
    pub fn finish(&mut self) {
        if !self.line_overflow && !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.scan_line(&line);
        }
        if self.usage.output_tokens.is_none() && !self.whole_overflow && !self.whole.is_empty() {
            // A pretty-printed, non-streamed JSON body spans lines.
            if let Ok(v) = serde_json::from_slice::<Value>(&self.whole) {
                self.absorb(&v);
            }
        }
        self.whole = Vec::new();
    }

    /// Output chunks seen since the last call: an SSE event with a
    /// `delta`, or an Ollama line not yet `done` (a limited tenant is
    /// charged these while the answer streams).
    pub fn take_chunks(&mut self) -> u64 {
        std::mem::take(&mut self.chunks)
    }

    fn scan_line(&mut self, line: &[u8]) {
        let mut l = line.trim_ascii();
        if let Some(d) = l.strip_prefix(b"data:") {
            l = d.trim_ascii();
        }
        let has = |n: &[u8]| l.windows(n.len()).any(|w| w == n);
        if has(b"\"delta\"") || has(b"\"done\":false") || has(b"\"done\": false") {
            self.chunks += 1;
        }
        if l.first() != Some(&b'{') {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(l) {
            self.absorb(&v);
        }
    }

    fn absorb(&mut self, v: &Value) {
        let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            if let Some(p) = num(u, "prompt_tokens").or_else(|| num(u, "input_tokens")) {
                self.usage.prompt_tokens = Some(p);
            }
            if let Some(o) = num(u, "completion_tokens").or_else(|| num(u, "output_tokens")) {
                self.usage.output_tokens = Some(o);
            }
        }
        // Ollama's last line (or non-streamed body).
        if let Some(n) = num(v, "eval_count") {
            self.usage.output_tokens = Some(n);
        }
        if let Some(n) = num(v, "prompt_eval_count") {
            self.usage.prompt_tokens = Some(n);
        }
        if let Some(ns) = num(v, "eval_duration") {
            self.usage.eval_ms = Some(ns as f64 / 1e6);
        }
        if let Some(ns) = num(v, "load_duration") {
            self.usage.load_ms = Some(ns as f64 / 1e6);
        }
        if let Some(t) = herd_layer::slots::NodeTimings::from_final(v) {
            self.usage.node_timings = Some(t);
        }
    }

    /// What to record in the history.
    pub fn outcome(&self, ok: bool) -> Outcome {
        Outcome {
            ttft_ms: self.ttft_ms(),
            total_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens: self.usage.prompt_tokens,
            output_tokens: self.usage.output_tokens,
            eval_ms: self.usage.eval_ms,
            load_ms: self.usage.load_ms,
            ok,
            node_timings: self.usage.node_timings,
            concurrency: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(chunks: &[&str]) -> Meter {
        let mut m = Meter::new(Instant::now());
        for c in chunks {
            m.chunk(c.as_bytes());
        }
        m.finish();
        m
    }

    #[test]
    fn openai_json_usage_even_pretty_printed() {
        let m = meter(&[
            "{\n  \"id\": \"x\",\n  \"usage\": {\"prompt_tokens\": 7,",
            " \"completion_tokens\": 12}\n}",
        ]);
        assert_eq!(m.usage.prompt_tokens, Some(7));
        assert_eq!(m.usage.output_tokens, Some(12));
        assert!(m.ttft_ms().is_some());
    }

    #[test]
    fn sse_usage_split_across_chunks() {
        let m = meter(&[
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"comp",
            "letion_tokens\":5}}\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(m.usage.prompt_tokens, Some(3));
        assert_eq!(m.usage.output_tokens, Some(5));
    }

    #[test]
    fn ollama_final_line() {
        let m = meter(&[
            "{\"message\":{\"content\":\"a\"},\"done\":false}\n",
            "{\"done\":true,\"eval_count\":9,\"prompt_eval_count\":4,\"eval_duration\":90000000,\"load_duration\":2000000}\n",
        ]);
        assert_eq!(
            m.usage,
            Usage {
                prompt_tokens: Some(4),
                output_tokens: Some(9),
                eval_ms: Some(90.0),
                load_ms: Some(2.0),
                node_timings: None,
            }
        );
        let o = m.outcome(true);
        assert!(o.ok && o.output_tokens == Some(9));
    }

    #[test]
    fn nothing_to_learn_from_garbage_or_empty() {
        let m = meter(&["not json\n", "data: [DONE]\n"]);
        assert_eq!(m.usage, Usage::default());
        let m = meter(&[]);
        assert!(m.ttft_ms().is_none());
    }
}
