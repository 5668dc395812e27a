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

use super::wire::{Message, full_model_name, nanos};
use super::{ApiError, THINK_BY_DEFAULT_SINCE};
use crate::config::{ModelSpec, normalize_model_name};
use crate::simulate::content::{
    self, KeepAlive, approx_tokens, reply_tokens, split_json, split_tokens, thinking_tokens,
    tool_arguments,
};
use crate::simulate::engine::{Admission, Engine, EngineError};
use crate::simulate::kv;

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
    /// The prompt as the runner renders it, which a slot's KV cache holds
    /// (see [`cache_text`]); empty: nothing to reuse.
    pub(super) prompt: String,
    /// What a reasoning model thinks first (empty when it does not).
    pub(super) thinking: Vec<String>,
    pub(super) reply: Reply,
    pub(super) keep_alive: Option<KeepAlive>,
}

/// One chunk of the chat stream Ollama's handler writes: a piece of
/// thinking, a piece of text, the tool call, or the final chunk. Every
/// dialect renders these; Ollama's Anthropic and Responses middlewares are
/// converters over exactly this sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Chunk<'a> {
    /// `message.thinking`.
    Thinking(&'a str),
    /// `message.content`.
    Content(&'a str),
    /// `message.tool_calls` with one call.
    ToolCall {
        name: &'a str,
        arguments: &'a Map<String, Value>,
    },
    /// The last chunk: `done`, the reason and the counts.
    Done,
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
    /// Thinking tokens, streamed before the reply.
    pub(super) thinking: Vec<String>,
    pub(super) reply: Reply,
}

impl Plan {
    /// Tokens generated: the thinking's, then the text's or an estimate of
    /// the tool call's.
    pub(super) fn eval_count(&self) -> u32 {
        let reply = match &self.reply {
            Reply::Text { tokens, .. } => tokens.len() as u32,
            Reply::ToolCall { arguments, .. } => {
                approx_tokens(&Value::Object(arguments.clone()).to_string()) + 4
            }
        };
        self.thinking.len() as u32 + reply
    }

    /// Prompt tokens evaluated (`prompt_eval_count`).
    pub(super) fn prompt_tokens(&self) -> u32 {
        self.prompt_tokens
    }

    /// When the reply (after any thinking) starts.
    fn reply_at(&self) -> Instant {
        self.first_at + self.interval * self.thinking.len() as u32
    }

    /// The whole thinking text (empty when the model did not think).
    pub(super) fn thinking_text(&self) -> String {
        self.thinking.concat()
    }

    /// The chat chunks of this generation, each with the time it is due:
    /// thinking tokens, then text tokens or the tool call, then the final
    /// chunk at [`Plan::done_at`].
    pub(super) fn chunks(&self) -> Vec<(Instant, Chunk<'_>)> {
        let mut out: Vec<(Instant, Chunk<'_>)> = self
            .thinking
            .iter()
            .enumerate()
            .map(|(i, t)| (self.first_at + self.interval * i as u32, Chunk::Thinking(t)))
            .collect();
        let start = self.reply_at();
        match &self.reply {
            Reply::Text { tokens, .. } => out.extend(
                tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (start + self.interval * i as u32, Chunk::Content(t))),
            ),
            Reply::ToolCall { name, arguments } => {
                out.push((start, Chunk::ToolCall { name, arguments }));
            }
        }
        out.push((self.done_at(), Chunk::Done));
        out
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

/// A request's `think` as Ollama reads it: absent or null, a boolean, or a
/// level (`high`, `medium`, `low`, `max`, which all mean on).
pub(super) fn parse_think(v: Option<&Value>) -> Result<Option<bool>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if matches!(s.as_str(), "high" | "medium" | "low" | "max") => {
            Ok(Some(true))
        }
        Some(Value::String(s)) => Err(ApiError::bad_request(format!(
            "invalid think value: {} (must be \"high\", \"medium\", \"low\", \"max\", true, or false)",
            Value::String(s.clone())
        ))),
        Some(_) => Err(ApiError::bad_request(
            "think must be a boolean or string (\"high\", \"medium\", \"low\", \"max\", true, or false)",
        )),
    }
}

/// Whether this generation thinks, as Ollama's chat and generate handlers
/// decide: a reasoning model thinks unless told not to (since 0.12.4; it
/// needed `think` before); asking a model that cannot is a 400
/// (`"m" does not support thinking`), unless `relax` (the Anthropic
/// route) drops the request instead.
pub(super) fn decide_think(
    engine: &Engine,
    spec: &ModelSpec,
    asked: Option<bool>,
    model_as_given: &str,
    relax: bool,
) -> Result<bool, ApiError> {
    if spec.thinking {
        let default = engine.config().ollama_at_least(THINK_BY_DEFAULT_SINCE);
        return Ok(asked.unwrap_or(default));
    }
    if asked == Some(true) && !relax {
        return Err(ApiError::bad_request(format!(
            "{} does not support thinking",
            Value::String(model_as_given.to_owned())
        )));
    }
    Ok(false)
}

/// The thinking a generation streams first, when it thinks.
pub(super) fn thinking_for(model: &str, prompt: &str, thinks: bool) -> Vec<String> {
    if thinks {
        thinking_tokens(model, prompt)
    } else {
        Vec::new()
    }
}

/// Tools offered to a model without the `tools` capability: Ollama's
/// scheduler refuses with a 400 naming the model in full.
pub(super) fn check_tools(spec: &ModelSpec, tools: &[Value]) -> Result<(), ApiError> {
    if tools.is_empty() || spec.tools {
        return Ok(());
    }
    let full = full_model_name(&normalize_model_name(&spec.name));
    Err(ApiError::bad_request(format!(
        "{full} does not support tools"
    )))
}

/// The reply cut before the first stop sequence it contains (`stop`,
/// `stop_sequences`): the runner stops there and says `stop`.
pub(super) fn apply_stop(reply: Reply, stops: &[String]) -> Reply {
    let Reply::Text { tokens, cut } = reply else {
        return reply;
    };
    let text = tokens.concat();
    let Some(at) = stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    else {
        return Reply::Text { tokens, cut };
    };
    let mut kept = Vec::new();
    let mut len = 0;
    for t in tokens {
        if len >= at {
            break;
        }
        let room = at - len;
        len += t.len();
        if t.len() <= room {
            kept.push(t);
        } else {
            kept.push(t[..room].to_owned());
        }
    }
    kept.retain(|t| !t.is_empty());
    Reply::Text {
        tokens: kept,
        cut: false,
    }
}

/// What a chat's rendered prompt ends with: the assistant's turn, which the
/// model's reply then continues.
const GENERATION_PROMPT: &str = "assistant: ";

/// The rendered prompt of a chat ([`chat_prompt`]'s text) as a runner's
/// slot holds it: the conversation, then the assistant's turn. Its reply
/// and a newline follow, which is how the next turn renders it — so the
/// next turn's prompt starts with everything the slot holds.
pub(super) fn cache_text(chat: &str) -> String {
    format!("{chat}{GENERATION_PROMPT}")
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
    // The slot will hold the prompt, the thinking and the reply.
    let prompt = kv::tokenize(&input.prompt);
    let reply = match &input.reply {
        Reply::Text { tokens, .. } => tokens.concat(),
        Reply::ToolCall { .. } => String::new(),
    };
    let then = kv::tokenize(&format!(
        "{}{}{reply}\n",
        input.prompt,
        input.thinking.concat()
    ));
    let admission = engine
        .admit_prompt(&input.model, input.keep_alive, &prompt, &then)
        .await?;
    // Pseudo-tokens reused, as a share of the prompt's counted tokens.
    let cached = if prompt.is_empty() {
        0
    } else {
        let share = admission.cached as f64 / prompt.len() as f64;
        ((f64::from(input.prompt_tokens) * share) as u32).min(input.prompt_tokens.saturating_sub(1))
    };
    engine.note_prompt(input.prompt_tokens, cached);
    let (ttft, interval) = engine.timing(&admission.spec, input.prompt_tokens - cached);
    let first_at = Instant::now() + ttft;
    Ok(Plan {
        admission,
        model: input.model,
        arrival,
        prompt_tokens: input.prompt_tokens,
        ttft,
        first_at,
        interval,
        thinking: input.thinking,
        reply: input.reply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequences_cut_the_reply() {
        let tokens = split_tokens("Hello from m. the herd moves ");
        let r = apply_stop(
            Reply::Text {
                tokens: tokens.clone(),
                cut: true,
            },
            &["om m".into(), "herd".into()],
        );
        let Reply::Text { tokens: t, cut } = r else {
            panic!("text")
        };
        assert_eq!(t.concat(), "Hello fr");
        assert!(!cut);
        let same = apply_stop(
            Reply::Text {
                tokens: tokens.clone(),
                cut: false,
            },
            &["zzz".into(), String::new()],
        );
        assert_eq!(same, Reply::Text { tokens, cut: false });
    }

    mod kv_reuse {
        use super::*;
        use crate::config::DeviceConfig;

        fn engine(num_parallel: u32, version: &str) -> Arc<Engine> {
            Engine::new(DeviceConfig {
                ttft_base_ms: 10,
                ttft_ms_per_prompt_token: 1.0,
                num_parallel,
                ollama_version: version.into(),
                models: vec![ModelSpec {
                    name: "m:1".into(),
                    context_length: 65_536,
                    ..ModelSpec::default()
                }],
                loaded: vec!["m:1".into()],
                ..DeviceConfig::default()
            })
        }

        fn msg(role: &str, text: &str) -> Message {
            Message {
                role: role.into(),
                content: Some(json!(text)),
            }
        }

        /// One turn of `history`; returns its time to first token and the
        /// history with the reply added.
        async fn turn(e: &Arc<Engine>, history: &[Message]) -> (Duration, Vec<Message>) {
            let (prompt, prompt_tokens) = chat_prompt(history);
            let plan = start(
                e,
                GenInput {
                    model: "m:1".into(),
                    prompt_tokens,
                    prompt: cache_text(&prompt),
                    thinking: Vec::new(),
                    reply: Reply::Text {
                        tokens: split_tokens("an answer of a few words "),
                        cut: false,
                    },
                    keep_alive: None,
                },
            )
            .await
            .expect("admitted");
            let mut next = history.to_vec();
            next.push(msg("assistant", &plan.content()));
            (plan.ttft, next)
        }

        fn conversation(system: &str) -> Vec<Message> {
            vec![msg("system", &system.repeat(1000)), msg("user", "first")]
        }

        #[tokio::test(start_paused = true)]
        async fn a_follow_up_prefills_only_what_is_new() {
            let e = engine(1, "0.12.6");
            let (t1, mut h) = turn(&e, &conversation("You are terse. ")).await;
            // 15,000 characters of system prompt: ~3,750 tokens at 1 ms each.
            assert!(t1 > Duration::from_millis(3_500), "{t1:?}");
            h.push(msg("user", "second"));
            let (t2, _) = turn(&e, &h).await;
            assert!(t2 < Duration::from_millis(40), "{t2:?}");
            let s = e.stats();
            assert!(
                s.cached_tokens > 3_700 && s.cached_tokens < s.prompt_tokens,
                "{s:?}"
            );
        }

        #[tokio::test(start_paused = true)]
        async fn another_conversation_overwrites_the_only_slot_and_an_unload_clears_all() {
            let e = engine(1, "0.12.6");
            let (_, mut a) = turn(&e, &conversation("Agent A. ")).await;
            turn(&e, &conversation("Agent B, different. ")).await;
            a.push(msg("user", "second"));
            let (t, mut a) = turn(&e, &a).await;
            assert!(t > Duration::from_millis(2_000), "B took the slot: {t:?}");
            // Cached again now; an unload takes it.
            e.unload("m:1");
            a.push(msg("user", "third"));
            let (t, _) = turn(&e, &a).await;
            assert!(t > Duration::from_millis(2_000), "unloaded: {t:?}");
        }

        #[tokio::test(start_paused = true)]
        async fn llama_server_keeps_two_conversations_in_two_slots() {
            for (version, both_kept) in [("0.30.0", true), ("0.12.6", false)] {
                let e = engine(2, version);
                let (_, mut a) = turn(&e, &conversation("Agent A. ")).await;
                let (_, mut b) = turn(&e, &conversation("Agent B, different. ")).await;
                a.push(msg("user", "second"));
                b.push(msg("user", "second"));
                let (ta, _) = turn(&e, &a).await;
                let (tb, _) = turn(&e, &b).await;
                // llama-server gives B the least recently used (empty) slot;
                // the Go runner gives it the free slot with the longest
                // match — A's, which shares "system: Agen" — and from then
                // on each conversation overwrites the other there.
                assert_eq!(
                    ta < Duration::from_millis(100),
                    both_kept,
                    "{version}: {ta:?}"
                );
                assert_eq!(
                    tb < Duration::from_millis(100),
                    both_kept,
                    "{version}: {tb:?}"
                );
            }
        }
    }

    #[test]
    fn think_values() {
        assert_eq!(parse_think(None).expect("none"), None);
        assert_eq!(parse_think(Some(&json!(false))).expect("f"), Some(false));
        assert_eq!(parse_think(Some(&json!("low"))).expect("low"), Some(true));
        assert!(parse_think(Some(&json!("extreme"))).is_err());
        assert!(parse_think(Some(&json!(1))).is_err());
    }

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
