//! herd's HTTP surface: Ollama's API, OpenAI's API and herd's own `/fleet/*`.
//!
//! Inference requests are parsed once into a [`RouteRequest`] and handed to
//! the routing stack ([`crate::stack`]); everything else (model lists, show,
//! pull, version) is answered from the fleet view or by one node directly.
//! Every response names the node that served it (`x-herd-node`), and every
//! error is in the caller's own format.

pub mod error;
pub mod observe;

use std::sync::Arc;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::app::config::RouterConfig;
use crate::discovery::Attachments;
use crate::error::ClientError;
use crate::fleet::{Engine, Fleet};
use crate::live::Live;
use crate::proto;
use crate::rank::{self, ScoreInput};
use crate::request::{Dialect, ENDPOINTS, Endpoint, Kind, same_model};
use crate::routed::Routed;
use crate::stack::RoutingService;
use error::Render;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The routing stack every inference request goes through.
    pub stack: RoutingService,
    /// The nodes known and their latest reports.
    pub fleet: Fleet,
    /// Admission load and learned history, as scoring reads them.
    pub live: Live,
    /// The router's whole config.
    pub cfg: Arc<RouterConfig>,
    /// herd-nodes attached over herd.v1, for `/fleet/nodes/{node}/command`.
    pub attachments: Arc<Attachments>,
    /// Pooled client for the calls answered by one node directly (show,
    /// pull, benchmark).
    pub client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    /// Where the observability endpoints read metrics, traces and health.
    pub telemetry: Arc<crate::app::telemetry::Telemetry>,
    /// herd-nodes seen over mDNS (None when mDNS is off).
    pub seen_nodes: Option<crate::discovery::mdns::SeenNodes>,
    /// The memory request bodies may hold (see [`crate::budget`]).
    pub budget: crate::budget::BodyBudget,
    /// This router's id (its mDNS advert, `x-herd-hop`).
    pub router_id: String,
    /// HTTP connections open (see [`crate::serve`]).
    pub connections: crate::serve::Open,
    /// Warms issued to runners-up (see [`crate::prewarm`]).
    pub prewarms: crate::prewarm::Prewarms,
}

/// The HTTP routes (the gRPC service is merged in by the server).
pub fn router(state: AppState) -> Router {
    let mut routes = Router::new();
    // Every inference endpoint, from the one table of them.
    for spec in ENDPOINTS {
        let endpoint = spec.endpoint;
        routes = routes.route(spec.path, post(move |s, h, b| infer(s, h, b, endpoint)));
    }
    routes
        .route("/", get(root).head(root))
        .route("/api/version", get(version))
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/pull", post(pull))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/metrics", get(observe::metrics))
        .route("/fleet/health", get(observe::health))
        .route("/fleet/traces", get(observe::traces))
        .route("/fleet/analytics/usage", get(observe::usage))
        .route("/fleet/context", get(observe::context))
        .route(
            "/fleet/benchmark",
            get(observe::benchmarks).post(observe::benchmark),
        )
        .route("/fleet/status", get(status))
        .route("/fleet/explain", get(explain))
        .route("/fleet/pulls", get(pulls))
        .route("/fleet/nodes/{node}/command", post(command))
        .fallback(not_found)
        .with_state(state)
}

fn format_of(uri: &Uri) -> Dialect {
    if uri.path().starts_with("/v1/") {
        Dialect::OpenAi
    } else {
        Dialect::Ollama
    }
}

async fn not_found(uri: Uri) -> Response {
    ClientError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {}", uri.path()),
    )
    .code("not_found")
    .render(format_of(&uri))
}

/// Read a small management body (no budget: the limit is small).
async fn read_body(
    st: &AppState,
    body: AxumBody,
    limit: usize,
) -> Result<(Bytes, crate::budget::Charge), ClientError> {
    Ok(crate::budget::read(body, limit, st.cfg.routing.body_timeout, &st.budget).await?)
}

async fn infer(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: AxumBody,
    endpoint: Endpoint,
) -> Response {
    let format = endpoint.dialect();
    if crate::dialect::looped(&headers, &st.router_id) {
        return ClientError::new(
            StatusCode::LOOP_DETECTED,
            format!(
                "this request already passed through this herd ({}: {}); a node's engine URL leads back to the router",
                crate::dialect::HOP_HEADER,
                st.router_id
            ),
        )
        .code("loop_detected")
        .render(format);
    }
    let parsed = async {
        let (bytes, mut charge) = read_body(&st, body, st.cfg.routing.max_body_bytes).await?;
        st.budget.for_parse(&mut charge, &bytes)?;
        crate::dialect::parse(
            endpoint,
            &headers,
            bytes,
            st.cfg.routing.parse_config(),
            charge,
        )
    };
    let req = match parsed.await {
        Ok(r) => Arc::new(r),
        Err(e) => return e.render(format),
    };
    let started = tokio::time::Instant::now();
    let id = req.id.clone();
    match st.stack.clone().oneshot(Routed::new(req.clone())).await {
        Ok(rsp) => {
            let (parts, body) = rsp.into_parts();
            tracing::debug!(request = %id, model = %req.model, node = ?parts.headers.get("x-herd-node"), "routed");
            Response::from_parts(parts, AxumBody::new(body))
        }
        Err(err) => {
            let e = crate::stack::failure::client_error(&err, &st.fleet.snapshot());
            tracing::info!(request = %id, model = %req.model, status = e.status.as_u16(), error = %e.message, elapsed_ms = started.elapsed().as_millis() as u64, "request failed");
            let mut rsp = e.render(format);
            if let Ok(v) = HeaderValue::from_str(&id) {
                rsp.headers_mut().insert("x-request-id", v);
            }
            rsp
        }
    }
}

async fn root() -> &'static str {
    "Ollama is running (herd)"
}

/// The lowest engine version among online Ollama nodes: what every node supports.
async fn version(State(st): State<AppState>) -> Response {
    let view = st.fleet.snapshot();
    let mut versions: Vec<&str> = view
        .online()
        .filter(|n| n.engine == Engine::Ollama && !n.engine_version.is_empty())
        .map(|n| n.engine_version.as_str())
        .collect();
    versions.sort_by_key(|v| {
        v.split(['.', '-'])
            .map(|p| p.parse::<u64>().unwrap_or(0))
            .take(3)
            .collect::<Vec<_>>()
    });
    let v = versions.first().copied().unwrap_or("0.0.0");
    axum::Json(json!({"version": v, "herd_version": env!("CARGO_PKG_VERSION")})).into_response()
}

/// `GET /api/tags`: every model on any node's disk, once, with the online
/// nodes that have it. One pass over the nodes (a fleet of hundreds of
/// nodes with a thousand models each is a few hundred thousand entries; a
/// lookup per model per node was minutes of one core).
async fn tags(State(st): State<AppState>) -> Response {
    let view = st.fleet.snapshot();
    struct Entry<'a> {
        disk: Option<&'a crate::fleet::DiskModel>,
        size: u64,
        online: Vec<&'a str>,
    }
    let mut merged: std::collections::BTreeMap<&str, Entry<'_>> = Default::default();
    for n in view.nodes.values() {
        for m in &n.available {
            let e = merged.entry(&m.name).or_insert(Entry {
                disk: None,
                size: 0,
                online: Vec::new(),
            });
            e.disk = e.disk.or(Some(m));
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
    let out: Vec<Value> = merged
        .into_iter()
        .map(|(name, e)| {
            let details = e.disk.map_or_else(
                || json!({}),
                |m| {
                    json!({
                        "format": "gguf",
                        "family": m.family,
                        "families": [m.family],
                        "parameter_size": m.parameter_size,
                        "quantization_level": m.quantization,
                    })
                },
            );
            json!({"name": name, "model": name, "size": e.size, "details": details, "nodes": e.online})
        })
        .collect();
    axum::Json(json!({ "models": out })).into_response()
}

async fn ps(State(st): State<AppState>) -> Response {
    let view = st.fleet.snapshot();
    let mut out = Vec::new();
    for n in view.online() {
        for m in &n.loaded {
            out.push(json!({
                "name": m.name, "model": m.name, "size": m.size_bytes, "size_vram": m.vram_bytes,
                "context_length": m.context_length, "node": &*n.id,
            }));
        }
    }
    axum::Json(json!({ "models": out })).into_response()
}

async fn models(State(st): State<AppState>) -> Response {
    let view = st.fleet.snapshot();
    let data: Vec<Value> = view
        .models()
        .keys()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "herd"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn model(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let view = st.fleet.snapshot();
    if view.models().keys().any(|m| same_model(m, &id)) {
        axum::Json(json!({"id": id, "object": "model", "created": 0, "owned_by": "herd"}))
            .into_response()
    } else {
        ClientError::new(
            StatusCode::NOT_FOUND,
            format!(
                "model {id:?} not found; {}",
                crate::stack::failure::where_models_are(&view)
            ),
        )
        .code("model_not_found")
        .render(Dialect::OpenAi)
    }
}

/// Proxy a small JSON call to one node and relay its answer.
async fn relay_to(
    st: &AppState,
    node: &crate::fleet::NodeState,
    path: &str,
    body: Vec<u8>,
) -> Response {
    let uri = format!("{}{}", node.url.trim_end_matches('/'), path);
    let req = match http::Request::post(&uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
    {
        Ok(r) => r,
        Err(e) => {
            return ClientError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                .render(Dialect::Ollama);
        }
    };
    match st.client.request(req).await {
        Ok(rsp) => {
            let (mut parts, body) = rsp.into_parts();
            if let Ok(v) = HeaderValue::from_str(&node.id) {
                parts.headers.insert("x-herd-node", v);
            }
            Response::from_parts(parts, AxumBody::new(body))
        }
        Err(e) => ClientError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "node {} did not answer: {}",
                node.id,
                crate::client::error_chain(&e)
            ),
        )
        .render(Dialect::Ollama),
    }
}

fn model_field(o: &serde_json::Map<String, Value>) -> Result<String, ClientError> {
    o.get("model")
        .or_else(|| o.get("name"))
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().to_string())
        .ok_or_else(|| ClientError::bad_request("model is required"))
}

async fn show(State(st): State<AppState>, headers: HeaderMap, body: AxumBody) -> Response {
    let run = async {
        let (bytes, _charge) = read_body(&st, body, 1024 * 1024).await?;
        let obj = crate::dialect::object_map(&headers, bytes)?;
        let model = model_field(&obj)?;
        let view = st.fleet.snapshot();
        let node = view
            .online()
            .filter(|n| n.has_model(&model))
            .max_by_key(|n| n.loaded_model(&model).is_some())
            .cloned()
            .ok_or_else(|| {
                ClientError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "model {model:?} not found on any online node; {}",
                        crate::stack::failure::where_models_are(&view)
                    ),
                )
            })?;
        Ok::<_, ClientError>((node, serde_json::to_vec(&obj).unwrap_or_default()))
    };
    match run.await {
        Ok((node, body)) => relay_to(&st, &node, "/api/show", body).await,
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// Pull a model to a chosen node (`node` in the body or `x-herd-node`), or to
/// the online node with the most usable memory; progress streams back.
async fn pull(State(st): State<AppState>, headers: HeaderMap, body: AxumBody) -> Response {
    let run = async {
        let (bytes, _charge) = read_body(&st, body, 1024 * 1024).await?;
        let mut obj = crate::dialect::object_map(&headers, bytes)?;
        let model = model_field(&obj)?;
        let wanted = obj
            .remove("node")
            .and_then(|v| v.as_str().map(str::to_string))
            .or_else(|| {
                headers
                    .get("x-herd-node")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
        let view = st.fleet.snapshot();
        let node = match wanted {
            Some(id) => view
                .node(&id)
                .filter(|n| n.online)
                .cloned()
                .ok_or_else(|| {
                    ClientError::new(StatusCode::NOT_FOUND, format!("node {id:?} is not online"))
                })?,
            None => {
                let need = (rank::name_size_gib(&model) * 1024.0 * 1024.0 * 1024.0) as u64;
                view.online()
                    .filter(|n| n.engine == Engine::Ollama && n.engine_reachable && !n.draining)
                    .filter(|n| n.memory_total_bytes == 0 || n.memory_total_bytes >= need)
                    .max_by_key(|n| n.usable_memory_bytes())
                    .cloned()
                    .ok_or_else(|| {
                        ClientError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("no online node has room for {model:?}"),
                        )
                    })?
            }
        };
        Ok::<_, ClientError>((node, serde_json::to_vec(&obj).unwrap_or_default()))
    };
    match run.await {
        Ok((node, body)) => relay_to(&st, &node, "/api/pull", body).await,
        Err(e) => e.render(Dialect::Ollama),
    }
}

async fn status(State(st): State<AppState>) -> Response {
    let view = st.fleet.snapshot();
    let queues: Vec<Value> = st
        .live
        .admission
        .snapshot()
        .into_iter()
        .map(|(node, model, load, slots)| {
            json!({"node": &*node, "model": model, "in_flight": load.in_flight, "waiting": load.waiting, "slots": slots})
        })
        .collect();
    let nodes: Vec<&crate::fleet::NodeState> = view.nodes.values().map(|n| &**n).collect();
    axum::Json(json!({
        "nodes_total": view.nodes.len(),
        "nodes_online": view.online().count(),
        "nodes": nodes,
        "attached": st.attachments.attached().iter().map(|n| &**n).collect::<Vec<_>>(),
        "prewarms": st.prewarms.recent(),
        "unattached": st.seen_nodes.as_ref().map(|s| s.unattached(&st.attachments, st.cfg.routing.fleet_token.is_some())).unwrap_or_default(),
        "mdns": st.seen_nodes.is_some(),
        "queues": queues,
        "history": st.live.history.summaries(),
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainQuery {
    model: String,
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    kind: Option<String>,
}

async fn explain(
    State(st): State<AppState>,
    q: Result<Query<ExplainQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return ClientError::bad_request(format!("{e}; use /fleet/explain?model=NAME[&prompt_tokens=N&max_tokens=N&kind=chat|generate|embed]")).render(Dialect::Ollama),
    };
    let kind = match q.kind.as_deref() {
        None | Some("chat") => Kind::Chat,
        Some("generate") => Kind::Generate,
        Some("embed") => Kind::Embed,
        Some(other) => {
            return ClientError::bad_request(format!(
                "kind {other:?} is not one of chat, generate, embed"
            ))
            .render(Dialect::Ollama);
        }
    };
    let view = st.fleet.snapshot();
    let input = ScoreInput {
        model: &q.model,
        kind,
        format: Dialect::Ollama,
        est_prompt_tokens: q.prompt_tokens.unwrap_or(100),
        max_output_tokens: q.max_tokens,
        exclude: &[],
        only: None,
        now_ms: crate::fleet::now_ms(),
    };
    let ranking = rank::score(&view, &st.live, &input, &st.cfg.routing.scoring);
    axum::Json(
        json!({"model": q.model, "winner": ranking.best().map(|c| &*c.node), "ranking": ranking}),
    )
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
enum CommandBody {
    Pull { model: String },
    Warm { model: String },
    Drain,
    Mode { mode: String },
}

async fn command(
    State(st): State<AppState>,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let run = async {
        let (bytes, _charge) = read_body(&st, body, 64 * 1024).await?;
        let obj = crate::dialect::object_map(&headers, bytes)?;
        let cmd: CommandBody = serde_json::from_value(Value::Object(obj))
            .map_err(|e| ClientError::bad_request(format!("{e}; expected {{\"type\":\"pull\"|\"warm\",\"model\":…}}, {{\"type\":\"drain\"}} or {{\"type\":\"mode\",\"mode\":\"full\"|\"paused\"|\"small-only\"}}")))?;
        let kind = match cmd {
            CommandBody::Pull { model } => proto::command::Kind::Pull(proto::PullModel { model }),
            CommandBody::Warm { model } => proto::command::Kind::Warm(proto::WarmModel { model }),
            CommandBody::Drain => proto::command::Kind::Drain(proto::Drain {}),
            CommandBody::Mode { mode } => {
                let m = match mode.as_str() {
                    "full" => proto::NodeMode::Full,
                    "paused" => proto::NodeMode::Paused,
                    "small-only" => proto::NodeMode::SmallOnly,
                    other => {
                        return Err(ClientError::bad_request(format!(
                            "mode {other:?} is not one of full, paused, small-only"
                        )));
                    }
                };
                proto::command::Kind::SetMode(proto::SetMode { mode: m as i32 })
            }
        };
        st.attachments
            .command(&node, kind)
            .await
            .map_err(|e| ClientError::new(StatusCode::NOT_FOUND, e.to_string()))
    };
    match run.await {
        Ok(id) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"id": id, "node": node})),
        )
            .into_response(),
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// Pulls started by auto-pull, with progress.
async fn pulls(State(st): State<AppState>) -> Response {
    let pulls = st
        .live
        .autopull
        .as_ref()
        .map(|a| a.statuses())
        .unwrap_or_default();
    axum::Json(json!({"pulls": pulls})).into_response()
}
