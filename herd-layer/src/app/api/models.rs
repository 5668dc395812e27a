//! The fleet's models as one Ollama would list them: `/api/tags`, `/api/ps`,
//! `/api/show`, and OpenAI's `/v1/models`.
//!
//! Entries keep Ollama's full shape (`modified_at`, `digest`, `details`,
//! `capabilities`, `expires_at`), so tools that read them (Open WebUI, the
//! `ollama` CLI, LiteLLM's model info) see what they would see on one
//! machine; herd adds the nodes each model is on.

use std::collections::BTreeMap;

use axum::body::Body as AxumBody;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{Value, json};

use super::AppState;
use super::error::Render;
use crate::error::ClientError;
use crate::fleet::{DiskModel, FleetView};
use crate::request::{Dialect, same_model};
use herd_proto::time::rfc3339;

/// Ollama's `details` of a model on disk.
fn details(m: &DiskModel) -> Value {
    let families = if m.families.is_empty() && !m.family.is_empty() {
        vec![m.family.clone()]
    } else {
        m.families.clone()
    };
    json!({
        "parent_model": m.parent_model,
        "format": if m.format.is_empty() { "gguf" } else { &m.format },
        "family": m.family,
        "families": families,
        "parameter_size": m.parameter_size,
        "quantization_level": m.quantization,
    })
}

/// `GET /api/tags`: every model on any node's disk, once, with the online
/// nodes that have it, newest first like Ollama. One pass over the nodes (a
/// fleet of hundreds of nodes with a thousand models each is a few hundred
/// thousand entries; a lookup per model per node was minutes of one core).
/// When nodes disagree about a model, the most recently changed copy's
/// entry is shown.
pub(super) async fn tags(State(st): State<AppState>) -> Response {
    let view = st.fleet.snapshot();
    struct Entry<'a> {
        disk: Option<&'a DiskModel>,
        size: u64,
        online: Vec<&'a str>,
    }
    let mut merged: BTreeMap<&str, Entry<'_>> = BTreeMap::new();
    for n in view.nodes.values() {
        for m in &n.available {
            let e = merged.entry(&m.name).or_insert(Entry {
                disk: None,
                size: 0,
                online: Vec::new(),
            });
            if e.disk.is_none_or(|d| d.modified_at_ms < m.modified_at_ms) {
                e.disk = Some(m);
            }
            e.size = e.size.max(m.size_bytes);
            if n.online && e.online.last() != Some(&&*n.id) {
                e.online.push(&n.id);
            }
        }
        for m in &n.loaded {
            let e = merged.entry(&m.name).or_insert(Entry {
                disk: None,
                size: m.size_bytes,
                online: Vec::new(),
            });
            if n.online && e.online.last() != Some(&&*n.id) {
                e.online.push(&n.id);
            }
        }
    }
    let mut out: Vec<(i64, Value)> = merged
        .into_iter()
        .map(|(name, e)| {
            let modified = e.disk.map_or(0, |m| m.modified_at_ms);
            let mut v = json!({
                "name": name,
                "model": name,
                "modified_at": rfc3339(modified),
                "size": e.size,
                "digest": e.disk.map_or("", |m| m.digest.as_str()),
                "details": e.disk.map_or_else(|| json!({}), details),
                "nodes": e.online,
            });
            if let Some(m) = e.disk.filter(|m| !m.capabilities.is_empty()) {
                v["capabilities"] = json!(m.capabilities);
            }
            (modified, v)
        })
        .collect();
    // Newest first; the sort is stable, so equal times stay in name order.
    out.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    let models: Vec<Value> = out.into_iter().map(|(_, v)| v).collect();
    axum::Json(json!({ "models": models })).into_response()
}

/// `GET /api/ps`: every loaded model on every online node, the one that
/// unloads last first (as Ollama sorts), each naming its node.
pub(super) async fn ps(State(st): State<AppState>) -> Response {
    let view = st.fleet.snapshot();
    let mut out: Vec<(i64, Value)> = Vec::new();
    for n in view.online() {
        for m in &n.loaded {
            let disk = n.disk_model(&m.name);
            let digest = if m.digest.is_empty() {
                disk.map_or("", |d| d.digest.as_str())
            } else {
                m.digest.as_str()
            };
            out.push((
                m.expires_at_ms,
                json!({
                    "name": m.name, "model": m.name, "size": m.size_bytes, "digest": digest,
                    "details": disk.map_or_else(|| json!({}), details),
                    "expires_at": rfc3339(m.expires_at_ms),
                    "size_vram": m.vram_bytes, "context_length": m.context_length, "node": &*n.id,
                }),
            ));
        }
    }
    out.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    let models: Vec<Value> = out.into_iter().map(|(_, v)| v).collect();
    axum::Json(json!({ "models": models })).into_response()
}

/// When the model was last changed on any node, Unix seconds (OpenAI's
/// `created`).
fn created(view: &FleetView, model: &str) -> i64 {
    view.nodes
        .values()
        .filter_map(|n| n.disk_model(model))
        .map(|m| m.modified_at_ms / 1000)
        .max()
        .unwrap_or(0)
}

fn model_object(id: &str, created: i64, owned_by: &str) -> Value {
    json!({"id": id, "object": "model", "created": created, "owned_by": owned_by})
}

/// `GET /v1/models`: every model in the fleet, then the configured aliases
/// (an agent that lists models finds the cloud names it was set up with).
pub(super) async fn models(State(st): State<AppState>) -> Response {
    let view = st.fleet.snapshot();
    let mut data: Vec<Value> = view
        .models()
        .keys()
        .map(|id| model_object(id, created(&view, id), "herd"))
        .collect();
    data.extend(
        st.cfg
            .routing
            .aliases
            .exact_names()
            .map(|a| model_object(a, 0, "herd-alias")),
    );
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`.
pub(super) async fn model(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let view = st.fleet.snapshot();
    let routing = &st.cfg.routing;
    if view.models().keys().any(|m| same_model(m, &id)) {
        return axum::Json(model_object(&id, created(&view, &id), "herd")).into_response();
    }
    if routing.aliases.exact_names().any(|a| same_model(a, &id)) {
        return axum::Json(model_object(&id, 0, "herd-alias")).into_response();
    }
    super::manage::not_found(&view, &id).render(Dialect::OpenAi)
}

/// `POST /api/show`: answered by a node that has the model (one that has
/// it loaded first); an alias shows the model it stands for.
pub(super) async fn show(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let run = async {
        let (bytes, _charge) = super::read_body(&st, body, 1024 * 1024).await?;
        let mut obj = crate::dialect::object_map(&headers, bytes)?;
        let model = super::manage::model_field(&obj)?;
        let model = st.cfg.routing.resolve(&model);
        obj.remove("name");
        obj.insert("model".into(), Value::String(model.clone()));
        let view = st.fleet.snapshot();
        let node = view
            .online()
            .filter(|n| n.has_model(&model))
            .max_by_key(|n| n.loaded_model(&model).is_some())
            .cloned()
            .ok_or_else(|| super::manage::not_found(&view, &model))?;
        Ok::<_, ClientError>((node, serde_json::to_vec(&obj).unwrap_or_default()))
    };
    match run.await {
        Ok((node, body)) => super::manage::relay(&st, &node, "/api/show", body).await,
        Err(e) => e.render(Dialect::Ollama),
    }
}
