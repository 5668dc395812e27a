//! Ollama's model management, across the fleet: each call goes to the
//! nodes it concerns.
//!
//! | call | goes to |
//! |---|---|
//! | `POST /api/pull` | the node named (`node` in the body or `x-herd-node`), else the online node with the most room |
//! | `POST /api/push` | the node named, else a node that has the model |
//! | `DELETE /api/delete`, `POST /api/copy` | the node named, else **every** online node that has the model |
//! | `HEAD`/`POST /api/blobs/:digest` | the node named, else the node that already holds the blob, else the one with the most disk |
//! | `POST /api/create` | the node named, else the node holding its blobs (`files`, `adapters`), else one with its `from` model, else the one with the most disk |
//! | unload (`keep_alive: 0`, nothing asked) | the node named (`x-herd-node`), else every online node with the model loaded |
//!
//! herd remembers which node took each blob (bounded, [`MAX_BLOBS`]), so
//! `ollama create` through herd uploads and creates on the same machine.
//! A call that fans out answers as Ollama does when every node agreed, and
//! says which nodes did what when they did not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body as AxumBody;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Map, Value};

use super::AppState;
use super::error::Render;
use crate::error::ClientError;
use crate::fleet::{DiskModel, Engine, FleetView, NodeId, NodeState};
use crate::request::{Dialect, Endpoint, RouteRequest, check_model_name, same_model};

/// Blobs whose node herd remembers.
pub const MAX_BLOBS: usize = 4096;
/// How long herd remembers where a blob went.
const BLOB_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Calls in flight at once when a call fans out.
const FAN_OUT: usize = 16;
/// Most of a node's answer read back when a call fans out.
const ANSWER_LIMIT: usize = 64 * 1024;
/// Most of the management bodies (create carries a template, messages, a license).
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Which node took each blob.
#[derive(Debug, Default)]
pub struct Blobs {
    /// Digest → (node, when, order of arrival).
    at: Mutex<HashMap<String, (NodeId, Instant, u64)>>,
}

impl Blobs {
    fn remember(&self, digest: &str, node: &NodeId) {
        let mut m = self.at.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, (_, t, _)| t.elapsed() < BLOB_MEMORY);
        if m.len() >= MAX_BLOBS
            && !m.contains_key(digest)
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (_, _, seq))| *seq)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        let seq = m.values().map(|(_, _, s)| s + 1).max().unwrap_or(0);
        m.insert(digest.to_string(), (node.clone(), Instant::now(), seq));
    }

    fn node_of(&self, digest: &str) -> Option<NodeId> {
        let m = self.at.lock().unwrap_or_else(|e| e.into_inner());
        m.get(digest)
            .filter(|(_, t, _)| t.elapsed() < BLOB_MEMORY)
            .map(|(n, _, _)| n.clone())
    }

    /// How many blobs are remembered.
    pub fn len(&self) -> usize {
        self.at.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `model` (or the older `name`) of a management body, checked.
pub(super) fn model_field(o: &Map<String, Value>) -> Result<String, ClientError> {
    name_field(o, "model")
        .or_else(|_| name_field(o, "name"))
        .map_err(|_| ClientError::bad_request("model is required"))
}

fn name_field(o: &Map<String, Value>, key: &str) -> Result<String, ClientError> {
    let m = o
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ClientError::bad_request(format!("{key} is required")))?;
    check_model_name(m)?;
    Ok(m.to_string())
}

/// Ollama's 404 for a model no online node has, with where models are.
pub(super) fn not_found(view: &FleetView, model: &str) -> ClientError {
    ClientError::new(
        StatusCode::NOT_FOUND,
        format!(
            "model '{model}' not found on any online node; {}",
            crate::stack::failure::where_models_are(view)
        ),
    )
    .code("model_not_found")
}

/// The node a call names (`node` in the body, else `x-herd-node`), online.
fn named(
    view: &FleetView,
    headers: &HeaderMap,
    obj: &mut Map<String, Value>,
) -> Result<Option<NodeState>, ClientError> {
    let id = match obj.remove("node") {
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(ClientError::bad_request("node must be a node id")),
        None => header_node(headers)?,
    };
    id.map(|id| online(view, &id)).transpose()
}

fn header_node(headers: &HeaderMap) -> Result<Option<String>, ClientError> {
    headers
        .get("x-herd-node")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| ClientError::bad_request("x-herd-node must be a node id"))
        })
        .transpose()
}

fn online(view: &FleetView, id: &str) -> Result<NodeState, ClientError> {
    herd_proto::node::valid_node_id(id).map_err(ClientError::bad_request)?;
    view.node(id).filter(|n| n.online).cloned().ok_or_else(|| {
        ClientError::new(StatusCode::NOT_FOUND, format!("node {id:?} is not online"))
            .code("node_not_found")
    })
}

/// Online Ollama nodes that can take work.
fn usable(view: &FleetView) -> impl Iterator<Item = &NodeState> {
    view.online()
        .filter(|n| n.engine == Engine::Ollama && n.engine_reachable && !n.draining)
}

/// The usable node with the most free disk (then memory) that can hold
/// `need` bytes of model in memory.
fn roomiest(view: &FleetView, need: u64, what: &str) -> Result<NodeState, ClientError> {
    usable(view)
        .filter(|n| n.memory_total_bytes == 0 || n.memory_total_bytes >= need)
        .filter(|n| n.disk_total_bytes == 0 || n.disk_available_bytes >= need)
        .max_by_key(|n| (n.disk_available_bytes, n.usable_memory_bytes()))
        .cloned()
        .ok_or_else(|| {
            ClientError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no online node has room for {what}"),
            )
            .code("no_capacity")
        })
}

fn node_header(rsp: &mut http::HeaderMap, nodes: &[&str]) {
    let mut list = String::new();
    for n in nodes {
        if list.len() + n.len() > 4096 {
            list.push_str(",…");
            break;
        }
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(n);
    }
    if let Ok(v) = HeaderValue::from_str(&list) {
        rsp.insert("x-herd-node", v);
    }
}

/// Sends one call to `node` and relays its answer as it streams.
async fn forward(
    st: &AppState,
    node: &NodeState,
    method: Method,
    path: &str,
    content_type: Option<&HeaderValue>,
    body: AxumBody,
) -> Response {
    let uri = format!("{}{}", node.url.trim_end_matches('/'), path);
    let mut req = http::Request::builder().method(method).uri(&uri);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let req = match req.body(body) {
        Ok(r) => r,
        Err(e) => {
            return ClientError::new(StatusCode::BAD_REQUEST, e.to_string())
                .render(Dialect::Ollama);
        }
    };
    match tokio::time::timeout(st.cfg.routing.response_timeout, st.uploads.request(req)).await {
        Ok(Ok(rsp)) => {
            let (mut parts, body) = rsp.into_parts();
            node_header(&mut parts.headers, &[&node.id]);
            Response::from_parts(parts, AxumBody::new(body))
        }
        Ok(Err(e)) => ClientError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "node {} did not answer: {}",
                node.id,
                crate::client::error_chain(&e)
            ),
        )
        .code("node_unreachable")
        .render(Dialect::Ollama),
        Err(_) => ClientError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("node {} did not answer in time", node.id),
        )
        .code("node_timeout")
        .render(Dialect::Ollama),
    }
}

/// Proxies a small JSON call to one node and relays its answer.
pub(super) async fn relay(st: &AppState, node: &NodeState, path: &str, body: Vec<u8>) -> Response {
    let json = HeaderValue::from_static("application/json");
    forward(
        st,
        node,
        Method::POST,
        path,
        Some(&json),
        AxumBody::from(body),
    )
    .await
}

/// One node's answer to a call that fanned out.
struct Answer {
    node: NodeId,
    result: Result<(StatusCode, Bytes), String>,
}

impl Answer {
    fn ok(&self) -> bool {
        matches!(&self.result, Ok((s, _)) if s.is_success())
    }

    fn error(&self) -> String {
        match &self.result {
            Ok((s, body)) => format!("{} ({})", crate::dialect::error_message(body), s.as_u16()),
            Err(e) => e.clone(),
        }
    }
}

/// Sends the same small call to each node, a few at a time.
async fn fan_out(
    st: &AppState,
    nodes: Vec<NodeState>,
    method: Method,
    path: &str,
    body: Bytes,
) -> Vec<Answer> {
    let timeout = st.cfg.routing.response_timeout;
    futures::stream::iter(nodes)
        .map(|n| {
            let (method, body) = (method.clone(), body.clone());
            let uri = format!("{}{}", n.url.trim_end_matches('/'), path);
            async move {
                let call = async {
                    let req = http::Request::builder()
                        .method(method)
                        .uri(&uri)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Full::new(body))
                        .map_err(|e| e.to_string())?;
                    let rsp = st
                        .client
                        .request(req)
                        .await
                        .map_err(|e| crate::client::error_chain(&e))?;
                    let status = rsp.status();
                    let bytes = Limited::new(rsp.into_body(), ANSWER_LIMIT)
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    Ok((status, bytes))
                };
                let result = tokio::time::timeout(timeout, call)
                    .await
                    .unwrap_or_else(|_| Err("no answer in time".into()));
                Answer { node: n.id, result }
            }
        })
        .buffer_unordered(FAN_OUT)
        .collect()
        .await
}

/// One answer for a call that went to several nodes: what the nodes said
/// when they agreed, else a 502 saying which nodes did what.
fn summarize(what: &str, answers: &[Answer], ok_body: impl FnOnce() -> Response) -> Response {
    let done: Vec<&str> = answers
        .iter()
        .filter(|a| a.ok())
        .map(|a| &*a.node)
        .collect();
    let failed: Vec<&Answer> = answers.iter().filter(|a| !a.ok()).collect();
    if failed.is_empty() {
        let mut rsp = ok_body();
        node_header(rsp.headers_mut(), &done);
        return rsp;
    }
    // Every node refused the same way (a bad name, say): that answer.
    let same_status = failed
        .iter()
        .all(|a| matches!((&a.result, &failed[0].result), (Ok((s, _)), Ok((t, _))) if s == t));
    if done.is_empty()
        && same_status
        && let Ok((status, body)) = &failed[0].result
    {
        let mut rsp = (
            *status,
            axum::Json(crate::dialect::ollama::ollama_error(
                &crate::dialect::error_message(body),
            )),
        )
            .into_response();
        node_header(rsp.headers_mut(), &[&failed[0].node]);
        return rsp;
    }
    let failures: Vec<String> = failed
        .iter()
        .map(|a| format!("{}: {}", a.node, a.error()))
        .collect();
    let message = if done.is_empty() {
        format!("{what} failed on every node ({})", failures.join("; "))
    } else {
        format!(
            "{what} done on {} but failed on {}",
            done.join(", "),
            failures.join("; ")
        )
    };
    let mut rsp = ClientError::new(StatusCode::BAD_GATEWAY, message)
        .code("partial_failure")
        .render(Dialect::Ollama);
    node_header(rsp.headers_mut(), &done);
    rsp
}

fn empty_ok() -> Response {
    StatusCode::OK.into_response()
}

/// Reads a management body as a JSON object.
async fn object(
    st: &AppState,
    headers: &HeaderMap,
    body: AxumBody,
) -> Result<Map<String, Value>, ClientError> {
    let (bytes, _charge) = super::read_body(st, body, BODY_LIMIT).await?;
    crate::dialect::object_map(headers, bytes)
}

fn to_bytes(obj: &Map<String, Value>) -> Bytes {
    Bytes::from(serde_json::to_vec(obj).unwrap_or_default())
}

/// `POST /api/pull`: to the node named, or the online node with the most
/// room; progress streams back.
pub(super) async fn pull(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let run = async {
        let mut obj = object(&st, &headers, body).await?;
        let model = model_field(&obj)?;
        let view = st.fleet.snapshot();
        let node = match named(&view, &headers, &mut obj)? {
            Some(n) => n,
            None => {
                let need = (crate::rank::name_size_gib(&model) * 1024.0 * 1024.0 * 1024.0) as u64;
                roomiest(&view, need, &format!("{model:?}"))?
            }
        };
        Ok::<_, ClientError>((node, to_bytes(&obj)))
    };
    match run.await {
        Ok((node, body)) => relay(&st, &node, "/api/pull", body.to_vec()).await,
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// `POST /api/push`: from the node named, or one that has the model.
pub(super) async fn push(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let run = async {
        let mut obj = object(&st, &headers, body).await?;
        let model = model_field(&obj)?;
        let view = st.fleet.snapshot();
        let node = match named(&view, &headers, &mut obj)? {
            Some(n) => n,
            None => usable(&view)
                .find(|n| n.disk_model(&model).is_some())
                .cloned()
                .ok_or_else(|| not_found(&view, &model))?,
        };
        Ok::<_, ClientError>((node, to_bytes(&obj)))
    };
    match run.await {
        Ok((node, body)) => relay(&st, &node, "/api/push", body.to_vec()).await,
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// The nodes a delete or copy of `model` goes to: the one named, else every
/// online node that has it.
fn holders(
    view: &FleetView,
    headers: &HeaderMap,
    obj: &mut Map<String, Value>,
    model: &str,
) -> Result<Vec<NodeState>, ClientError> {
    if let Some(n) = named(view, headers, obj)? {
        return Ok(vec![n]);
    }
    let nodes: Vec<NodeState> = view
        .online()
        .filter(|n| n.disk_model(model).is_some())
        .cloned()
        .collect();
    if nodes.is_empty() {
        return Err(not_found(view, model));
    }
    Ok(nodes)
}

/// `DELETE /api/delete`: on the node named, or on every online node that
/// has the model. The fleet view forgets it at once on the nodes that did.
pub(super) async fn delete(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let run = async {
        let mut obj = object(&st, &headers, body).await?;
        let model = model_field(&obj)?;
        let view = st.fleet.snapshot();
        let nodes = holders(&view, &headers, &mut obj, &model)?;
        Ok::<_, ClientError>((model, nodes, to_bytes(&obj)))
    };
    let (model, nodes, body) = match run.await {
        Ok(x) => x,
        Err(e) => return e.render(Dialect::Ollama),
    };
    let answers = fan_out(&st, nodes, Method::DELETE, "/api/delete", body).await;
    let now = crate::fleet::now_ms();
    st.fleet.update(|v| {
        for a in answers.iter().filter(|a| a.ok()) {
            if let Some(n) = v.node_mut(&a.node) {
                n.available.retain(|m| !same_model(&m.name, &model));
                let loaded = n
                    .loaded
                    .iter()
                    .filter(|m| !same_model(&m.name, &model))
                    .cloned()
                    .collect();
                n.set_loaded(loaded, now);
            }
        }
    });
    summarize(&format!("delete of {model}"), &answers, empty_ok)
}

/// `POST /api/copy`: on the node named, or on every online node that has
/// the source; the copies are listed at once.
pub(super) async fn copy(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let run = async {
        let mut obj = object(&st, &headers, body).await?;
        let source = name_field(&obj, "source")?;
        let destination = name_field(&obj, "destination")?;
        let view = st.fleet.snapshot();
        let nodes = holders(&view, &headers, &mut obj, &source)?;
        Ok::<_, ClientError>((source, destination, nodes, to_bytes(&obj)))
    };
    let (source, destination, nodes, body) = match run.await {
        Ok(x) => x,
        Err(e) => return e.render(Dialect::Ollama),
    };
    let answers = fan_out(&st, nodes, Method::POST, "/api/copy", body).await;
    st.fleet.update(|v| {
        for a in answers.iter().filter(|a| a.ok()) {
            if let Some(n) = v.node_mut(&a.node)
                && n.disk_model(&destination).is_none()
                && let Some(src) = n.disk_model(&source).cloned()
            {
                n.available.push(DiskModel {
                    name: crate::request::normalize_model(&destination),
                    modified_at_ms: crate::fleet::now_ms(),
                    ..src
                });
            }
        }
    });
    summarize(&format!("copy of {source}"), &answers, empty_ok)
}

/// A blob digest as Ollama takes it: `sha256:` (or `sha256-`) and 64 hex
/// digits. The key herd remembers is the `sha256:` form, lower case.
fn digest_key(d: &str) -> Result<String, ClientError> {
    let hex = d
        .strip_prefix("sha256:")
        .or_else(|| d.strip_prefix("sha256-"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            let shown: String = d.chars().take(80).collect();
            ClientError::bad_request(format!(
                "invalid digest {shown:?}: expected sha256:<64 hex digits>"
            ))
            .code("invalid_digest")
        })?;
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// The node that holds `digest`: the one herd remembers, else the first
/// usable node that says it has it (remembered from then on).
async fn find_blob(st: &AppState, view: &FleetView, digest: &str) -> Option<NodeState> {
    if let Some(n) = st
        .blobs
        .node_of(digest)
        .and_then(|id| view.node(&id).filter(|n| n.online).cloned())
    {
        return Some(n);
    }
    let nodes: Vec<NodeState> = usable(view).cloned().collect();
    let answers = fan_out(
        st,
        nodes,
        Method::HEAD,
        &format!("/api/blobs/{digest}"),
        Bytes::new(),
    )
    .await;
    let holder = answers.into_iter().find(Answer::ok)?;
    st.blobs.remember(digest, &holder.node);
    view.node(&holder.node).cloned()
}

/// `HEAD /api/blobs/:digest`: whether the blob is on the node named, or on
/// any node (200 names it in `x-herd-node`); 404 when none has it.
pub(super) async fn blob_head(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let key = digest_key(&digest)?;
        let view = st.fleet.snapshot();
        let named = header_node(&headers)?
            .map(|id| online(&view, &id))
            .transpose()?;
        Ok::<_, ClientError>((key, view, named))
    };
    match run.await {
        Ok((key, _, Some(node))) => {
            let path = format!("/api/blobs/{key}");
            forward(&st, &node, Method::HEAD, &path, None, AxumBody::empty()).await
        }
        Ok((key, view, None)) => match find_blob(&st, &view, &key).await {
            Some(n) => {
                let mut rsp = StatusCode::OK.into_response();
                node_header(rsp.headers_mut(), &[&n.id]);
                rsp
            }
            None => StatusCode::NOT_FOUND.into_response(),
        },
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// `POST /api/blobs/:digest`: the upload streams to the node named, or the
/// node that already holds the blob, or the one with the most free disk;
/// herd remembers which, so the `create` that follows goes there too.
pub(super) async fn blob_post(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let run = async {
        let key = digest_key(&digest)?;
        let view = st.fleet.snapshot();
        let size = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let node = match header_node(&headers)? {
            Some(id) => online(&view, &id)?,
            None => match st
                .blobs
                .node_of(&key)
                .and_then(|id| view.node(&id).filter(|n| n.online).cloned())
            {
                Some(n) => n,
                None => roomiest(&view, size, &format!("a blob of {size} bytes"))?,
            },
        };
        Ok::<_, ClientError>((key, node))
    };
    let (key, node) = match run.await {
        Ok(x) => x,
        Err(e) => return e.render(Dialect::Ollama),
    };
    // The upload streams through; a client that stops sending for
    // `body_timeout` ends it.
    let body = AxumBody::new(tower_http::timeout::TimeoutBody::new(
        st.cfg.routing.body_timeout,
        body,
    ));
    let path = format!("/api/blobs/{key}");
    let ct = headers.get(header::CONTENT_TYPE);
    let rsp = forward(&st, &node, Method::POST, &path, ct, body).await;
    if rsp.status().is_success() {
        st.blobs.remember(&key, &node.id);
    }
    rsp
}

/// `POST /api/create`: see the module's table for where it goes.
pub(super) async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let run = async {
        let mut obj = object(&st, &headers, body).await?;
        let model = model_field(&obj)?;
        let view = st.fleet.snapshot();
        if let Some(n) = named(&view, &headers, &mut obj)? {
            return Ok((n, to_bytes(&obj)));
        }
        let mut digests = Vec::new();
        for key in ["files", "adapters", "draft_files"] {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Object(files)) => {
                    for d in files.values() {
                        let d = d.as_str().ok_or_else(|| {
                            ClientError::bad_request(format!("{key} maps file names to digests"))
                        })?;
                        digests.push(digest_key(d)?);
                    }
                }
                Some(_) => {
                    return Err(ClientError::bad_request(format!(
                        "{key} maps file names to digests"
                    )));
                }
            }
        }
        let mut holder: Option<NodeState> = None;
        for d in &digests {
            let n = find_blob(&st, &view, d).await.ok_or_else(|| {
                ClientError::bad_request(format!(
                    "blob {d} is on no online node; upload it first (POST /api/blobs/{d})"
                ))
            })?;
            match &holder {
                Some(h) if h.id != n.id => {
                    return Err(ClientError::new(
                        StatusCode::CONFLICT,
                        format!(
                            "the blobs of {model} are on different nodes ({} and {}); upload them to one (x-herd-node)",
                            h.id, n.id
                        ),
                    ));
                }
                _ => holder = Some(n),
            }
        }
        let node = match holder {
            Some(n) => n,
            None => match obj.get("from").and_then(Value::as_str) {
                Some(from) => {
                    check_model_name(from)?;
                    usable(&view)
                        .filter(|n| n.disk_model(from).is_some())
                        .max_by_key(|n| n.disk_available_bytes)
                        .cloned()
                        .ok_or_else(|| not_found(&view, from))?
                }
                None => roomiest(&view, 0, &format!("{model:?}"))?,
            },
        };
        Ok::<_, ClientError>((node, to_bytes(&obj)))
    };
    match run.await {
        Ok((node, body)) => relay(&st, &node, "/api/create", body.to_vec()).await,
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// An unload (`keep_alive: 0` and nothing asked): sent to every online node
/// that has the model loaded, answered as Ollama answers one.
pub(super) async fn unload(st: &AppState, headers: &HeaderMap, req: &RouteRequest) -> Response {
    let view = st.fleet.snapshot();
    let named = header_node(headers).and_then(|id| id.map(|id| online(&view, &id)).transpose());
    let nodes: Vec<NodeState> = match named {
        Ok(Some(n)) => vec![n],
        Ok(None) => view
            .online()
            .filter(|n| n.loaded_model(&req.model).is_some())
            .cloned()
            .collect(),
        Err(e) => return e.render(Dialect::Ollama),
    };
    let model = serde_json::to_string(&req.model).unwrap_or_default();
    let body = Bytes::from(
        req.body
            .write(&[("model", Some(&model)), ("stream", Some("false"))]),
    );
    let path = req.endpoint.path();
    let answers = fan_out(st, nodes, Method::POST, path, body).await;
    let now = crate::fleet::now_ms();
    st.fleet.update(|v| {
        for a in answers.iter().filter(|a| a.ok()) {
            if let Some(n) = v.node_mut(&a.node) {
                let loaded = n
                    .loaded
                    .iter()
                    .filter(|m| !same_model(&m.name, &req.model))
                    .cloned()
                    .collect();
                n.set_loaded(loaded, now);
            }
        }
    });
    let endpoint = req.endpoint;
    summarize(&format!("unload of {}", req.model), &answers, || {
        debug_assert!(matches!(
            endpoint,
            Endpoint::OllamaChat | Endpoint::OllamaGenerate
        ));
        axum::Json(crate::dialect::ollama::unload_response(
            endpoint,
            &req.client_model,
            &herd_proto::time::rfc3339_now(),
        ))
        .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked_and_keyed_one_way() {
        let hex = "ab".repeat(32);
        assert_eq!(
            digest_key(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{hex}")
        );
        assert_eq!(
            digest_key(&format!("sha256-{}", hex.to_uppercase())).unwrap(),
            format!("sha256:{hex}")
        );
        for bad in [
            "",
            "sha256:",
            "md5:abc",
            &format!("sha256:{}", "z".repeat(64)),
        ] {
            assert_eq!(
                digest_key(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn remembered_blobs_are_bounded() {
        let b = Blobs::default();
        let node: NodeId = "n".into();
        for i in 0..MAX_BLOBS + 10 {
            b.remember(&format!("sha256:{i:064}"), &node);
        }
        assert_eq!(b.len(), MAX_BLOBS);
        assert_eq!(
            b.node_of(&format!("sha256:{:064}", MAX_BLOBS + 9)),
            Some(node)
        );
        assert_eq!(b.node_of(&format!("sha256:{:064}", 0)), None);
    }
}
