//! An Ollama stream folded into the one object Ollama answers when asked
//! not to stream (see [`crate::dialect::Mode::CollectOllama`]).
//!
//! The final chunk carries everything but the text: `done_reason`, the
//! timing stats and, for `/api/generate`, `context`. The text, thinking and
//! tool calls arrive piece by piece before it. So the answer is the final
//! chunk with the pieces put back together — what Ollama itself builds.

use serde_json::{Map, Value};

/// Collects one stream.
#[derive(Debug, Default)]
pub struct Collector {
    role: Option<String>,
    content: String,
    thinking: String,
    response: String,
    tool_calls: Vec<Value>,
    images: Vec<Value>,
    chat: bool,
    last: Option<Map<String, Value>>,
    bytes: usize,
}

/// Why a stream could not be collected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectError {
    /// The node reported an error in the stream.
    #[error("{0}")]
    Node(String),
    /// A line was not a JSON object.
    #[error("the node sent an invalid line: {0}")]
    Invalid(String),
    /// The stream ended before its final chunk.
    #[error("the stream ended before the model finished")]
    Unfinished,
    /// More text than the limit, bytes.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

impl Collector {
    /// A collector for an answer of at most `limit` bytes of text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fold in one NDJSON line; `limit` bounds the text kept.
    pub fn line(&mut self, line: &[u8], limit: usize) -> Result<(), CollectError> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return Ok(());
        }
        self.bytes += line.len();
        if self.bytes > limit {
            return Err(CollectError::TooLarge(limit));
        }
        let v: Value =
            serde_json::from_slice(line).map_err(|e| CollectError::Invalid(e.to_string()))?;
        let Value::Object(mut o) = v else {
            return Err(CollectError::Invalid("not a JSON object".into()));
        };
        if let Some(e) = o.get("error").filter(|e| !e.is_null()) {
            return Err(CollectError::Node(match e {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }));
        }
        if let Some(Value::Object(m)) = o.get_mut("message") {
            self.chat = true;
            if let Some(Value::String(r)) = m.get("role") {
                self.role.get_or_insert_with(|| r.clone());
            }
            if let Some(Value::String(c)) = m.get("content") {
                self.content.push_str(c);
            }
            if let Some(Value::String(t)) = m.get("thinking") {
                self.thinking.push_str(t);
            }
            if let Some(Value::Array(calls)) = m.remove("tool_calls") {
                self.tool_calls.extend(calls);
            }
            if let Some(Value::Array(im)) = m.remove("images") {
                self.images.extend(im);
            }
        }
        if let Some(Value::String(r)) = o.get("response") {
            self.response.push_str(r);
        }
        if let Some(Value::String(t)) = o.get("thinking")
            && !self.chat
        {
            self.thinking.push_str(t);
        }
        if o.get("done").and_then(Value::as_bool) == Some(true) {
            self.last = Some(o);
        }
        Ok(())
    }

    /// Whether the final chunk arrived.
    pub fn done(&self) -> bool {
        self.last.is_some()
    }

    /// The whole answer, as Ollama answers without streaming.
    pub fn finish(self) -> Result<Value, CollectError> {
        let mut out = self.last.ok_or(CollectError::Unfinished)?;
        if self.chat {
            let mut m = Map::new();
            m.insert(
                "role".into(),
                Value::String(self.role.unwrap_or_else(|| "assistant".into())),
            );
            m.insert("content".into(), Value::String(self.content));
            if !self.thinking.is_empty() {
                m.insert("thinking".into(), Value::String(self.thinking));
            }
            if !self.tool_calls.is_empty() {
                m.insert("tool_calls".into(), Value::Array(self.tool_calls));
            }
            if !self.images.is_empty() {
                m.insert("images".into(), Value::Array(self.images));
            }
            out.insert("message".into(), Value::Object(m));
        } else {
            out.insert("response".into(), Value::String(self.response));
            if !self.thinking.is_empty() {
                out.insert("thinking".into(), Value::String(self.thinking));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn collect(lines: &[Value]) -> Result<Value, CollectError> {
        let mut c = Collector::new();
        for l in lines {
            c.line(l.to_string().as_bytes(), 1 << 20)?;
        }
        c.finish()
    }

    #[test]
    fn a_chat_stream_becomes_one_message() {
        let v = collect(&[
            json!({"model":"m","message":{"role":"assistant","content":"Hel","thinking":"h"},"done":false}),
            json!({"model":"m","message":{"role":"assistant","content":"lo","tool_calls":[{"function":{"name":"f","arguments":{}}}]},"done":false}),
            json!({"model":"m","created_at":"t","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":2,"prompt_eval_count":5}),
        ])
        .unwrap();
        assert_eq!(
            v,
            json!({"model":"m","created_at":"t","message":{"role":"assistant","content":"Hello","thinking":"h","tool_calls":[{"function":{"name":"f","arguments":{}}}]},"done":true,"done_reason":"stop","eval_count":2,"prompt_eval_count":5})
        );
    }

    #[test]
    fn a_generate_stream_keeps_context_and_stats() {
        let v = collect(&[
            json!({"model":"m","response":"a","done":false}),
            json!({"model":"m","response":"b","done":false}),
            json!({"model":"m","response":"","done":true,"context":[1,2],"eval_duration":9}),
        ])
        .unwrap();
        assert_eq!(
            v,
            json!({"model":"m","response":"ab","done":true,"context":[1,2],"eval_duration":9})
        );
    }

    #[test]
    fn errors_and_cuts_are_failures() {
        assert_eq!(
            collect(&[json!({"response":"a","done":false}), json!({"error":"oom"})]),
            Err(CollectError::Node("oom".into()))
        );
        assert_eq!(
            collect(&[json!({"response":"a","done":false})]),
            Err(CollectError::Unfinished)
        );
        let mut c = Collector::new();
        assert!(matches!(
            c.line(b"nope", 100),
            Err(CollectError::Invalid(_))
        ));
        let mut c = Collector::new();
        assert_eq!(
            c.line(br#"{"response":"aaaaaaaaaaaaaaaa"}"#, 10),
            Err(CollectError::TooLarge(10))
        );
    }
}
