//! The read-only JSON the dashboard's fleet, routing, models and health
//! views read, built from state both shapes hold: `/fleet/status` (nodes,
//! queues, learned history), `/fleet/explain` (a ranking on demand) and
//! `/fleet/pulls`. The proxy answers these routes with the same builders
//! and adds what only it knows (attachments, mDNS, pre-warms); herd-epp
//! serves them as they are on its metrics port.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ClientError;
use crate::fleet::FleetView;
use crate::live::Live;
use crate::rank::{self, ScoreInput, ScoringConfig};
use crate::request::Endpoint;

/// `/fleet/status` as the core knows it: the nodes, queue depths and what
/// traffic taught about each node:model.
pub fn status(view: &FleetView, live: &Live) -> serde_json::Map<String, Value> {
    let nodes: Vec<&crate::fleet::NodeState> = view.nodes.values().map(|n| &**n).collect();
    let mut m = serde_json::Map::new();
    m.insert("nodes_total".into(), json!(view.nodes.len()));
    m.insert("nodes_online".into(), json!(view.online().count()));
    m.insert("nodes".into(), json!(nodes));
    m.insert("queues".into(), super::sampler::queues_json(live));
    m.insert("history".into(), json!(live.history.summaries()));
    m.insert("prefix_index".into(), json!(live.prefix.stats()));
    m
}

/// The query of `/fleet/explain`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    model: String,
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    kind: Option<String>,
    /// Capabilities the request needs, comma-separated (`vision,tools`).
    #[serde(default)]
    needs: Option<String>,
}

/// How to call `/fleet/explain`, for its error messages.
const EXPLAIN_USAGE: &str = "use /fleet/explain?model=NAME[&prompt_tokens=N&max_tokens=N&kind=chat|generate|embed|transcribe|image&needs=vision,tools,…]";

/// `/fleet/explain?…`: the full ranking for a model, prompt size, kind and
/// needed capabilities, as scoring would make it now.
pub fn explain(
    query: Option<&str>,
    view: &FleetView,
    live: &Live,
    scoring: &ScoringConfig,
) -> Result<Value, ClientError> {
    let q: ExplainQuery = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ClientError::bad_request(format!("{e}; {EXPLAIN_USAGE}")))?;
    // The kind stands for its Ollama endpoint, or the media one.
    let endpoint = match q.kind.as_deref() {
        None | Some("chat") => Endpoint::OllamaChat,
        Some("generate") => Endpoint::OllamaGenerate,
        Some("embed") => Endpoint::OllamaEmbed,
        Some("transcribe") => Endpoint::AudioTranscriptions,
        Some("image") => Endpoint::ImageGenerations,
        Some(other) => {
            return Err(ClientError::bad_request(format!(
                "kind {other:?} is not one of chat, generate, embed, transcribe, image"
            )));
        }
    };
    crate::request::check_model_name(&q.model)?;
    let kind = endpoint.kind();
    let mut needs =
        crate::dialect::needs::needs(kind, &crate::dialect::json::RawObject::empty(), 0);
    for name in q.needs.as_deref().unwrap_or("").split(',').map(str::trim) {
        match crate::capability::Capability::parse(name) {
            Some(c) => needs = needs.with(c),
            None if name.is_empty() => {}
            None => {
                return Err(ClientError::bad_request(format!(
                    "needs: {name:?} is not one of completion, tools, vision, thinking, embedding, audio, image"
                )));
            }
        }
    }
    let input = ScoreInput {
        model: &q.model,
        kind,
        format: endpoint.dialect(),
        est_prompt_tokens: q.prompt_tokens.unwrap_or(100),
        max_output_tokens: q.max_tokens,
        exclude: &[],
        only: None,
        endpoint,
        native_only: false,
        now_ms: crate::fleet::now_ms(),
        needs,
        prefix: None,
    };
    let ranking = rank::score(view, live, &input, scoring);
    Ok(
        json!({"model": q.model, "kind": kind, "needs": needs, "winner": ranking.best().map(|c| &*c.node), "ranking": ranking}),
    )
}

/// `/fleet/pulls`: pulls started by auto-pull, with progress.
pub fn pulls(live: &Live) -> Value {
    let pulls = live
        .autopull
        .as_ref()
        .map(|a| a.statuses())
        .unwrap_or_default();
    json!({ "pulls": pulls })
}
