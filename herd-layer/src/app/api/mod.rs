//! herd's HTTP surface: Ollama's API, OpenAI's API and herd's own `/fleet/*`.
//!
//! Inference requests are parsed once into a [`RouteRequest`] and handed to
//! the routing stack ([`crate::stack`]); everything else (model lists, show,
//! pull, version) is answered from the fleet view or by one node directly.
//! Every response names the node that served it (`x-herd-node`), and every
//! error is in the caller's own format.

pub mod dashboard;
pub mod error;
mod keys;
pub mod manage;
mod models;
pub mod observe;

use std::sync::Arc;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Extension, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, Uri};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::app::auth::Caller;
use crate::app::config::RouterConfig;
use crate::discovery::Attachments;
use crate::error::ClientError;
use crate::fleet::{Engine, Fleet};
use crate::live::Live;
use crate::proto;
use crate::rank::{self, ScoreInput};
use crate::request::{Dialect, ENDPOINTS, Endpoint};
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
    /// Client for calls whose body streams through (blob uploads).
    pub uploads: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        AxumBody,
    >,
    /// Which node took each uploaded blob.
    pub blobs: Arc<manage::Blobs>,
    /// Client API keys in force (see [`crate::app::auth`]).
    pub keys: crate::app::auth::Keys,
    /// The live dashboard (`/dashboard`, `/fleet/events`).
    pub dashboard: crate::dashboard::Dashboard,
}

/// The HTTP routes (the gRPC service is merged in by the server).
pub fn router(state: AppState) -> Router {
    let mut routes = Router::new();
    // Every inference endpoint, from the one table of them.
    for spec in ENDPOINTS {
        let endpoint = spec.endpoint;
        routes = routes.route(
            spec.path,
            post(move |s, c, h, b| infer(s, c, h, b, endpoint)),
        );
    }
    routes
        .route("/", get(root).head(root))
        .route("/api/version", get(version))
        .route("/api/tags", get(models::tags))
        .route("/api/ps", get(models::ps))
        .route("/api/show", post(models::show))
        .route("/api/pull", post(manage::pull))
        .route("/api/push", post(manage::push))
        .route("/api/delete", delete(manage::delete))
        .route("/api/copy", post(manage::copy))
        .route("/api/create", post(manage::create))
        .route(
            "/api/blobs/{digest}",
            post(manage::blob_post).head(manage::blob_head),
        )
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models::models))
        .route("/v1/models/{*id}", get(models::model))
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
        .route("/fleet/explain", get(explain).post(explain_request))
        .route("/fleet/pulls", get(pulls))
        .route("/fleet/nodes/{node}/command", post(command))
        .route("/fleet/events", get(dashboard::events))
        .route("/fleet/config", get(dashboard::config))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/info", get(dashboard::info))
        .route("/dashboard/{file}", get(dashboard::file))
        .route("/fleet/keys", get(keys::list).post(keys::create))
        .route("/fleet/keys/{name}", delete(keys::revoke))
        // Every route above answers only the callers its part allows
        // (`app::auth::policy`); unknown paths get their 404 unguarded.
        .route_layer(auth_layer(&state))
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

/// The auth check for the routes (see [`crate::app::auth`]).
fn auth_layer(st: &AppState) -> crate::app::auth::AuthLayer {
    let tls = &st.cfg.app.tls;
    crate::app::auth::AuthLayer::new(
        st.keys.clone(),
        Arc::new(st.cfg.app.auth.clone()),
        tls.files().is_some() && !tls.allow_plaintext,
    )
}

/// What the caller's key says about a parsed request: its tenant (whose
/// limits the limit layer applies), the models it may use, and whether a
/// model no node has may be pulled for it (admins only).
fn admit(
    st: &AppState,
    caller: Option<&Caller>,
    req: &mut crate::request::RouteRequest,
) -> Result<(), ClientError> {
    req.may_pull = caller.is_some_and(|c| c.admin);
    let Some(key) = caller.and_then(|c| c.key.as_ref()) else {
        return Ok(());
    };
    if !key.allows(&req.client_model) && !key.allows(&req.model) {
        return Err(ClientError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the key {:?} may not use model {:?}; it may use: {}",
                key.name,
                req.client_model,
                key.models.join(", ")
            ),
        )
        .code("model_not_allowed"));
    }
    req.fallback_models.retain(|m| key.allows(m));
    req.tenant = Some(crate::limit::Tenant {
        id: Arc::from(key.name.as_str()),
        limits: st.cfg.routing.limits.limits_for(&key.name, key.limits),
    });
    Ok(())
}

async fn infer(
    State(st): State<AppState>,
    caller: Option<Extension<Caller>>,
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
        if endpoint.multipart() {
            // Read as far as the form's model; the rest streams to the node.
            let read = crate::dialect::upload::read(
                &headers,
                body,
                st.cfg.routing.max_body_bytes,
                st.cfg.routing.body_timeout,
                &st.budget,
            )
            .await?;
            return crate::dialect::media::upload_request(
                endpoint,
                &headers,
                read,
                st.cfg.routing.parse_config(),
            );
        }
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
        Ok(mut r) => match admit(&st, caller.as_deref(), &mut r) {
            Ok(()) => Arc::new(r),
            Err(e) => return e.render(format),
        },
        Err(e) => return e.render(format),
    };
    if format == Dialect::Ollama && crate::dialect::ollama::is_unload(endpoint, &req.body) {
        // An unload goes to every node with the model: it changes the
        // fleet for everyone, so it is an admin's call.
        if !caller.as_deref().is_some_and(|c| c.admin) {
            return crate::app::auth::admin_refusal(
                caller.as_deref(),
                &st.keys,
                "unloading a model from every node (keep_alive: 0 with nothing asked)",
            )
            .render(format);
        }
        return manage::unload(&st, &headers, &req).await;
    }
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

/// `POST /v1/messages/count_tokens`: herd's own estimate, as Anthropic
/// shapes it; the model must be one the fleet (or an alias) can serve.
async fn count_tokens(State(st): State<AppState>, headers: HeaderMap, body: AxumBody) -> Response {
    let run = async {
        let (bytes, mut charge) = read_body(&st, body, st.cfg.routing.max_body_bytes).await?;
        st.budget.for_parse(&mut charge, &bytes)?;
        let obj = crate::dialect::object(&headers, bytes)?;
        let model = match obj.value("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => m.trim().to_string(),
            _ => return Err(ClientError::bad_request("model is required").code("model_required")),
        };
        crate::request::check_model_name(&model)?;
        let served = st.cfg.routing.resolve(&model);
        let view = st.fleet.snapshot();
        if !view.online().any(|n| n.has_model(&served)) {
            return Err(manage::not_found(&view, &served));
        }
        crate::dialect::anthropic::count_tokens(&obj)
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.render(Dialect::Anthropic),
    }
}

async fn root() -> &'static str {
    // Ollama's clients look for this sentence at the start.
    "Ollama is running (herd) — dashboard: /dashboard"
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
        "prefix_index": st.live.prefix.stats(),
    }))
    .into_response()
}

/// `GET /fleet/explain?model=…`: the ranking scoring would make now (the
/// core's [`crate::dashboard::views::explain`], which herd-epp serves too).
async fn explain(State(st): State<AppState>, uri: Uri) -> Response {
    let view = st.fleet.snapshot();
    match crate::dashboard::views::explain(uri.query(), &view, &st.live, &st.cfg.routing.scoring) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// The query of `POST /fleet/explain`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainRequestQuery {
    /// The inference path the body is for (default `/api/chat`).
    #[serde(default)]
    path: Option<String>,
}

/// `POST /fleet/explain[?path=/api/chat]` with an inference body: the
/// ranking that very request would get now — its prompt measured and
/// hashed as routing does, so each candidate shows the prompt tokens it
/// probably holds in its KV cache (`expected_cached_tokens`, the
/// `prefix_hit` signal). Nothing is sent to any node.
async fn explain_request(
    State(st): State<AppState>,
    q: Result<Query<ExplainRequestQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let usage = "POST /fleet/explain[?path=/api/chat|/api/generate|/v1/chat/completions|…] with the request's body";
    let run = async {
        let q = q.map_err(|e| ClientError::bad_request(format!("{e}; {usage}")))?;
        let path = q.0.path.as_deref().unwrap_or("/api/chat");
        let endpoint = Endpoint::from_path(path)
            .filter(|e| !e.multipart())
            .ok_or_else(|| {
                ClientError::bad_request(format!(
                    "{path:?} is not an inference path with a JSON body; {usage}"
                ))
            })?;
        let (bytes, mut charge) = read_body(&st, body, st.cfg.routing.max_body_bytes).await?;
        st.budget.for_parse(&mut charge, &bytes)?;
        let req = crate::dialect::parse(
            endpoint,
            &headers,
            bytes,
            st.cfg.routing.parse_config(),
            charge,
        )?;
        let view = st.fleet.snapshot();
        let input = ScoreInput {
            model: &req.model,
            kind: req.kind(),
            format: req.dialect(),
            est_prompt_tokens: req.est_prompt_tokens,
            max_output_tokens: req.max_output_tokens,
            exclude: &[],
            only: None,
            endpoint,
            native_only: false,
            now_ms: crate::fleet::now_ms(),
            needs: req.needs,
            prefix: Some(&req.prefix).filter(|p| !p.is_empty()),
        };
        let ranking = rank::score(&view, &st.live, &input, &st.cfg.routing.scoring);
        Ok::<_, ClientError>(json!({
            "model": req.model,
            "prompt_tokens": req.est_prompt_tokens,
            "prefix_blocks": req.prefix.blocks().len(),
            "winner": ranking.best().map(|c| &*c.node),
            "ranking": ranking,
        }))
    };
    match run.await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.render(Dialect::Ollama),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
enum CommandBody {
    Pull { model: String },
    Warm { model: String },
    Drain,
    Undrain,
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
            .map_err(|e| ClientError::bad_request(format!("{e}; expected {{\"type\":\"pull\"|\"warm\",\"model\":…}}, {{\"type\":\"drain\"}}, {{\"type\":\"undrain\"}} or {{\"type\":\"mode\",\"mode\":\"full\"|\"paused\"|\"small-only\"}}")))?;
        let kind = match cmd {
            CommandBody::Pull { model } => proto::command::Kind::Pull(proto::PullModel { model }),
            CommandBody::Warm { model } => proto::command::Kind::Warm(proto::WarmModel { model }),
            CommandBody::Drain => proto::command::Kind::Drain(proto::Drain {}),
            CommandBody::Undrain => proto::command::Kind::Undrain(proto::Undrain {}),
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
