//! Embeddings, which Ollama (`/api/embed`, `/api/embeddings`) and OpenAI
//! (`/v1/embeddings`) serve from one core and wrap differently.
//!
//! Vectors are a pure function of the text, so a test can compare what two
//! devices or two APIs return; they take a slot and a prompt's TTFT like a
//! generation, so a router sees embedding load where it really is.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;

use super::ApiError;
use super::plan::{check_model, injected_failure};
use crate::simulate::content::{self, KeepAlive, approx_tokens, embedding};
use crate::simulate::engine::Engine;

/// `/api/embed`, `/api/embeddings` and `/v1/embeddings` in one shape: each
/// reads the fields its API defines and ignores the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct EmbedRequest {
    pub(super) model: String,
    pub(super) input: Value,
    pub(super) prompt: Option<String>,
    pub(super) truncate: Option<bool>,
    pub(super) options: Option<Value>,
    pub(super) keep_alive: Option<Value>,
    pub(super) dimensions: Option<usize>,
    pub(super) encoding_format: Option<String>,
}

/// The texts of `input`: one string, a list of strings, or token arrays
/// (embedded as their JSON text).
pub(super) fn inputs(v: &Value) -> Result<Vec<String>, ApiError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Array(toks) => Ok(Value::Array(toks.clone()).to_string()),
                other => Err(ApiError::bad_request(format!("invalid input: {other}"))),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        other => Err(ApiError::bad_request(format!(
            "invalid input type: {other}"
        ))),
    }
}

/// Vectors and the counts both APIs report about them.
pub(super) struct Embedded {
    pub(super) model: String,
    pub(super) vectors: Vec<Vec<f32>>,
    pub(super) prompt_tokens: u32,
    pub(super) load: Duration,
    pub(super) total: Duration,
}

/// Embeds `texts` with the timing of a prompt of that length, each vector
/// cut to `dims` and normalized; holds a slot while it works.
pub(super) async fn embed_core(
    engine: &Arc<Engine>,
    model: &str,
    texts: Vec<String>,
    dims: Option<usize>,
    keep_alive: Option<KeepAlive>,
) -> Result<Embedded, ApiError> {
    let arrival = Instant::now();
    let spec = check_model(engine, model, "embeddings")?;
    injected_failure(engine)?;
    let admission = engine.admit(&spec.name, keep_alive).await?;
    let prompt_tokens: u32 = texts.iter().map(|t| approx_tokens(t) + 1).sum();
    let (ttft, _) = engine.timing(&spec, prompt_tokens);
    tokio::time::sleep(ttft).await;
    let full = spec.embedding_dims.unwrap_or(384) as usize;
    let d = dims.filter(|d| *d > 0).map_or(full, |d| d.min(full));
    let vectors = texts
        .iter()
        .map(|t| {
            let mut v = embedding(t, full);
            v.truncate(d);
            content::normalize(&mut v);
            v
        })
        .collect();
    let load = admission.load_duration;
    drop(admission);
    Ok(Embedded {
        model: spec.name,
        vectors,
        prompt_tokens,
        load,
        total: arrival.elapsed(),
    })
}
