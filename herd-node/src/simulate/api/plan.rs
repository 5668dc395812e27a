//! What a request will answer and when: the reply, the admission that holds
//! a slot, and the schedule (TTFT, then one token per interval) that both
//! dialects render.
//!
//! Deciding content and timing once, before any byte is written, is what
//! lets a streamed and a non-streamed answer agree to the token and the
//! nanosecond, whichever API asked.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::ApiError;
use super::wire::{Message, nanos};
use crate::config::ModelSpec;
use crate::simulate::content::{
    self, KeepAlive, approx_tokens, reply_tokens, split_json, split_tokens, tool_arguments,
};
use crate::simulate::engine::{Admission, Engine, EngineError};

/// What the model will answer.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Reply {
    /// Plain text, token by token; `cut` when the token limit ended it.
    Text { tokens: Vec<String>, cut: bool },
    /// A call of the first tool offered, with arguments from its schema.
    ToolCall {
        name: String,
        arguments: Map<String, Value>,
    },
}

/// What a generation needs before it is admitted.
#[derive(Debug)]
pub(super) struct GenInput {
    pub(super) model: String,
    pub(super) prompt_tokens: u32,
    pub(super) reply: Reply,
    pub(super) keep_alive: Option<KeepAlive>,
}

/// An admitted generation with its schedule. It holds the admission, so
/// the slot is taken for as long as the plan lives.
#[derive(Debug)]
pub(super) struct Plan {
    admission: Admission,
    pub(super) model: String,
    arrival: Instant,
    prompt_tokens: u32,
    ttft: Duration,
    /// When the first token is due.
    pub(super) first_at: Instant,
    /// Time between tokens.
    pub(super) interval: Duration,
    pub(super) reply: Reply,
}

impl Plan {
    /// Tokens generated: the text's, or an estimate of the tool call's.
    fn eval_count(&self) -> u32 {
        match &self.reply {
            Reply::Text { tokens, .. } => tokens.len() as u32,
            Reply::ToolCall { arguments, .. } => {
                approx_tokens(&Value::Object(arguments.clone()).to_string()) + 4
            }
        }
    }

    /// When the last token is due.
    pub(super) fn done_at(&self) -> Instant {
        self.first_at + self.interval * self.eval_count()
    }

    /// `length` when cut by the token limit, `stop` otherwise.
    pub(super) fn done_reason(&self) -> &'static str {
        match &self.reply {
            Reply::Text { cut: true, .. } => "length",
            _ => "stop",
        }
    }

    /// The whole text (empty for a tool call).
    pub(super) fn content(&self) -> String {
        match &self.reply {
            Reply::Text { tokens, .. } => tokens.concat(),
            Reply::ToolCall { .. } => String::new(),
        }
    }

    /// Ollama's timing fields of the final chunk.
    fn ollama_stats(&self) -> Map<String, Value> {
        let done = self.done_at();
        let mut m = Map::new();
        m.insert("total_duration".into(), json!(nanos(done - self.arrival)));
        m.insert(
            "load_duration".into(),
            json!(nanos(self.admission.load_duration)),
        );
        m.insert("prompt_eval_count".into(), json!(self.prompt_tokens));
        m.insert("prompt_eval_duration".into(), json!(nanos(self.ttft)));
        m.insert("eval_count".into(), json!(self.eval_count()));
        m.insert("eval_duration".into(), json!(nanos(done - self.first_at)));
        m
    }

    /// `v` (an object) as Ollama's last line or whole answer: done, why,
    /// and the timing fields.
    pub(super) fn ollama_final(&self, mut v: Value) -> Value {
        if let Value::Object(m) = &mut v {
            m.insert("done".into(), json!(true));
            m.insert("done_reason".into(), json!(self.done_reason()));
            m.extend(self.ollama_stats());
        }
        v
    }

    /// OpenAI's `usage` object.
    pub(super) fn usage(&self) -> Value {
        let (p, c) = (self.prompt_tokens, self.eval_count());
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    }
}

/// The prompt a chat makes and its approximate token count.
pub(super) fn chat_prompt(messages: &[Message]) -> (String, u32) {
    let text: String = messages
        .iter()
        .map(|m| format!("{}: {}\n", m.role, m.text()))
        .collect();
    let tokens = messages.iter().map(|m| approx_tokens(&m.text()) + 4).sum();
    (text, tokens)
}

/// A token limit from `num_predict` / `max_tokens`; negative means none.
pub(super) fn limit(n: Option<i64>) -> Option<usize> {
    n.and_then(|n| usize::try_from(n).ok())
}

/// The model must exist and be able to do `what`.
pub(super) fn check_model(
    engine: &Engine,
    model: &str,
    what: &'static str,
) -> Result<ModelSpec, ApiError> {
    if model.trim().is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let spec = engine
        .find(model)
        .ok_or_else(|| EngineError::NotFound(model.to_owned()))?;
    let embedding_only = spec.is_embedding();
    let ok = if what == "embeddings" {
        embedding_only
    } else {
        !embedding_only
    };
    if !ok {
        return Err(EngineError::Unsupported {
            model: model.to_owned(),
            what,
        }
        .into());
    }
    Ok(spec)
}

/// The `error_500` fault: fail this request with Ollama's runner error.
pub(super) fn injected_failure(engine: &Engine) -> Result<(), ApiError> {
    let f = engine.faults();
    if f.error_500 && fastrand::f64() < f.error_500_probability {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "simulated failure: llama runner process has terminated",
        ));
    }
    Ok(())
}

/// What a chat answers: a tool call when the user speaks and tools are
/// offered, an echo of a tool result, else text (JSON if `format` asks).
pub(super) fn chat_reply(
    model: &str,
    messages: &[Message],
    tools: &[Value],
    format: Option<&Value>,
    n: Option<usize>,
) -> Reply {
    let (prompt, _) = chat_prompt(messages);
    let last = messages.last();
    if let Some(last) = last.filter(|m| m.role == "user")
        && let Some(tool) = tools.first()
    {
        let _ = last;
        let f = tool.get("function").unwrap_or(tool);
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("tool")
            .to_owned();
        let arguments = tool_arguments(f.get("parameters").unwrap_or(&Value::Null));
        return Reply::ToolCall { name, arguments };
    }
    if let Some(last) = last.filter(|m| m.role == "tool") {
        let tokens = split_tokens(&format!("Tool result received: {}", last.text()));
        return Reply::Text { tokens, cut: false };
    }
    text_reply(model, &prompt, format, n)
}

/// Text for a prompt: JSON when `format` asks for it, else prose cut at `n`.
pub(super) fn text_reply(
    model: &str,
    prompt: &str,
    format: Option<&Value>,
    n: Option<usize>,
) -> Reply {
    match format {
        Some(f @ (Value::String(_) | Value::Object(_))) if !matches!(f, Value::String(s) if s.is_empty()) => {
            Reply::Text {
                tokens: split_json(&content::json_reply(model, prompt, f)),
                cut: false,
            }
        }
        _ => {
            let (tokens, cut) = reply_tokens(model, prompt, n);
            Reply::Text { tokens, cut }
        }
    }
}

/// Admits a generation (waiting for a slot, loading the model) and fixes
/// its schedule; fails as the `error_500` fault or the engine says.
pub(super) async fn start(engine: &Arc<Engine>, input: GenInput) -> Result<Plan, ApiError> {
    let arrival = Instant::now();
    injected_failure(engine)?;
    let admission = engine.admit(&input.model, input.keep_alive).await?;
    let (ttft, interval) = engine.timing(&admission.spec, input.prompt_tokens);
    let first_at = Instant::now() + ttft;
    Ok(Plan {
        admission,
        model: input.model,
        arrival,
        prompt_tokens: input.prompt_tokens,
        ttft,
        first_at,
        interval,
        reply: input.reply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_call_from_schema_when_last_message_is_user() {
        let tools = vec![
            json!({"type": "function", "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "number"}}, "required": ["city"]}
            }}),
            json!({"type": "function", "function": {"name": "other"}}),
        ];
        let user = Message {
            role: "user".into(),
            content: Some(json!("weather?")),
        };
        let reply = chat_reply("m:1", std::slice::from_ref(&user), &tools, None, None);
        let Reply::ToolCall { name, arguments } = reply else {
            panic!("expected a tool call")
        };
        assert_eq!(name, "get_weather");
        assert_eq!(Value::Object(arguments), json!({"city": "sim"}));
        let tool = Message {
            role: "tool".into(),
            content: Some(json!("22C")),
        };
        let reply = chat_reply("m:1", &[user, tool], &tools, None, None);
        let Reply::Text { tokens, .. } = reply else {
            panic!("expected text")
        };
        assert_eq!(tokens.concat(), "Tool result received: 22C");
    }
}
