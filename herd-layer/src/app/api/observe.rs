//! herd's observability endpoints: `/metrics` (Prometheus), `/fleet/health`,
//! `/fleet/traces` (recent traces with filters), `/fleet/analytics/usage`
//! (by model, node, tag or time bucket), `/fleet/context` (recommended
//! `num_ctx` per model) and `/fleet/benchmark` (calibration).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::Render;
use crate::app::config::RouterConfig;
use crate::app::store::{TraceFilter, TraceStatus};
use crate::app::telemetry::Telemetry;
use crate::error::ClientError;
use crate::fleet::Fleet;
use crate::live::Live;
use crate::request::Dialect;

fn bad(e: impl std::fmt::Display) -> Response {
    ClientError::bad_request(e.to_string()).render(Dialect::Ollama)
}

fn no_store() -> Response {
    ClientError::new(
        StatusCode::NOT_FOUND,
        "the store is disabled ([store] enabled = false)",
    )
    .render(Dialect::Ollama)
}

/// `GET /metrics`: refresh the gauges of the present, then every series as
/// Prometheus text.
pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    let m = &st.telemetry.metrics;
    m.refresh(&st.fleet.snapshot(), &st.live.admission);
    if let Some(s) = &st.telemetry.store {
        m.store_dropped
            .set(s.stats().dropped.load(std::sync::atomic::Ordering::Relaxed) as i64);
    }
    m.health_score.set(i64::from(
        health_report(&st.fleet, &st.live, &st.telemetry, &st.cfg).score,
    ));
    m.body_memory
        .set(i64::try_from(st.budget.in_use()).unwrap_or(i64::MAX));
    m.connections
        .set(i64::try_from(st.connections.get()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            crate::app::telemetry::metrics::CONTENT_TYPE,
        )],
        m.encode(),
    )
        .into_response()
}

/// The health report as `/fleet/health` answers it.
pub fn health_report(
    fleet: &Fleet,
    live: &Live,
    telemetry: &Telemetry,
    cfg: &RouterConfig,
) -> crate::app::health::Report {
    let dropped = telemetry.store.as_ref().map_or(0, |s| {
        s.stats().dropped.load(std::sync::atomic::Ordering::Relaxed)
    });
    crate::app::health::evaluate(
        &fleet.snapshot(),
        &live.admission,
        &telemetry.recent,
        &cfg.app.health,
        dropped,
        cfg.routing.report_interval.as_millis() as u64,
        cfg.routing.poll_interval.as_millis() as u64,
        &live.history.hung_nodes(),
    )
}

/// `GET /fleet/health`: every check that fires now, and the score.
pub(super) async fn health(State(st): State<AppState>) -> Response {
    axum::Json(health_report(&st.fleet, &st.live, &st.telemetry, &st.cfg)).into_response()
}

/// `GET /fleet/traces`: stored traces that pass the filter, newest first.
pub(super) async fn traces(
    State(st): State<AppState>,
    q: Result<Query<TraceFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(f)) = q else {
        return bad("use /fleet/traces?model=&node=&tag=&status=&since_ms=&limit=");
    };
    let Some(store) = st.telemetry.store.clone() else {
        return no_store();
    };
    match tokio::task::spawn_blocking(move || store.traces(&f)).await {
        Ok(Ok(t)) => axum::Json(json!({"traces": t})).into_response(),
        Ok(Err(e)) => ClientError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            .render(Dialect::Ollama),
        Err(e) => ClientError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            .render(Dialect::Ollama),
    }
}

/// What `/fleet/analytics/usage` groups by (`by=`); the dashboard offers
/// the same list.
pub const USAGE_BY: &[&str] = &["model", "node", "tag", "key", "hour", "day"];

/// The query of `/fleet/analytics/usage`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// model, node, tag, key (the API key's name), hour or day
    by: String,
    #[serde(default)]
    since_ms: Option<i64>,
}

#[derive(Default, serde::Serialize)]
struct Usage {
    requests: u64,
    errors: u64,
    prompt_tokens: u64,
    output_tokens: u64,
    latency_ms_sum: f64,
    ttft_ms_sum: f64,
    ttft_n: u64,
    /// Every TTFT of the group, for its percentiles.
    ttfts: Vec<f64>,
}

/// The `q`-quantile (0..=1) of `v`, sorted in place; `None` when empty.
fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    Some(v[i.min(v.len() - 1)])
}

/// `GET /fleet/analytics/usage`: requests, errors, tokens and average
/// latencies of the stored traces, grouped by `by`.
pub(super) async fn usage(
    State(st): State<AppState>,
    q: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return bad(format!(
            "use /fleet/analytics/usage?by={}[&since_ms=N]",
            USAGE_BY.join("|")
        ));
    };
    if !USAGE_BY.contains(&q.by.as_str()) {
        return bad(format!(
            "by={:?} is not one of {}",
            q.by,
            USAGE_BY.join(", ")
        ));
    }
    let Some(store) = st.telemetry.store.clone() else {
        return no_store();
    };
    let since = q.since_ms;
    let all = match tokio::task::spawn_blocking(move || store.all_traces(since)).await {
        Ok(Ok(t)) => t,
        _ => {
            return ClientError::new(StatusCode::INTERNAL_SERVER_ERROR, "store read failed")
                .render(Dialect::Ollama);
        }
    };
    let mut groups: BTreeMap<String, Usage> = BTreeMap::new();
    for t in &all {
        let keys: Vec<String> = match q.by.as_str() {
            "model" => vec![crate::request::normalize_model(&t.model_served)],
            "node" => vec![t.node.clone().unwrap_or_else(|| "(none)".into())],
            "tag" => t.tags.clone(),
            // The API key's name: each key is a tenant.
            "key" => vec![
                t.key
                    .clone()
                    .unwrap_or_else(|| crate::app::telemetry::metrics::ANONYMOUS.into()),
            ],
            "hour" => vec![(t.ts_ms / 3_600_000 * 3_600_000).to_string()],
            _ => vec![(t.ts_ms / 86_400_000 * 86_400_000).to_string()],
        };
        for k in keys {
            let u = groups.entry(k).or_default();
            u.requests += 1;
            u.errors += u64::from(!t.status.ok());
            u.prompt_tokens += t.prompt_tokens.unwrap_or(0);
            u.output_tokens += t.output_tokens.unwrap_or(0);
            u.latency_ms_sum += t.latency_ms;
            if let Some(x) = t.ttft_ms {
                u.ttft_ms_sum += x;
                u.ttft_n += 1;
                u.ttfts.push(x);
            }
        }
    }
    let rows: Vec<Value> = groups
        .into_iter()
        .map(|(k, mut u)| {
            let p50 = quantile(&mut u.ttfts, 0.5);
            let p90 = quantile(&mut u.ttfts, 0.9);
            json!({"key": k, "ttft_p50_ms": p50, "ttft_p90_ms": p90, "requests": u.requests, "errors": u.errors, "prompt_tokens": u.prompt_tokens,
                "output_tokens": u.output_tokens, "avg_latency_ms": u.latency_ms_sum / u.requests.max(1) as f64,
                "avg_ttft_ms": if u.ttft_n > 0 { Some(u.ttft_ms_sum / u.ttft_n as f64) } else { None }})
        })
        .collect();
    axum::Json(json!({"by": q.by, "groups": rows})).into_response()
}

/// Recommended `num_ctx` per model from the observed prompt + completion tokens.
pub(super) async fn context(State(st): State<AppState>) -> Response {
    let Some(store) = st.telemetry.store.clone() else {
        return no_store();
    };
    let all = match tokio::task::spawn_blocking(move || store.all_traces(None)).await {
        Ok(Ok(t)) => t,
        _ => {
            return ClientError::new(StatusCode::INTERNAL_SERVER_ERROR, "store read failed")
                .render(Dialect::Ollama);
        }
    };
    let mut per: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for t in all
        .iter()
        .filter(|t| t.status == TraceStatus::Completed || t.status == TraceStatus::Retried)
    {
        if let (Some(p), o) = (t.prompt_tokens, t.output_tokens) {
            per.entry(crate::request::normalize_model(&t.model_served))
                .or_default()
                .push((p + o.unwrap_or(0)) as f64);
        }
    }
    let view = st.fleet.snapshot();
    let rows: Vec<Value> = per
        .into_iter()
        .map(|(model, mut v)| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            let p99 = v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)];
            let max = v[v.len() - 1];
            let loaded: Vec<Value> = view
                .online()
                .filter_map(|n| n.loaded_model(&model).map(|m| json!({"node": &*n.id, "context_length": m.context_length})))
                .collect();
            json!({"model": model, "requests": v.len(), "p99_tokens": p99, "max_tokens": max,
                "recommended_num_ctx": crate::app::health::recommended_num_ctx(p99.max(max)), "loaded": loaded})
        })
        .collect();
    axum::Json(json!({"protection": st.cfg.routing.context.protection, "models": rows}))
        .into_response()
}

/// `POST /fleet/benchmark`: calibrate now (see [`crate::app::store::bench`])
/// and answer with what was measured and what failed.
pub(super) async fn benchmark(
    State(st): State<AppState>,
    body: Option<axum::Json<crate::app::store::bench::BenchRequest>>,
) -> Response {
    let req = body.map(|b| b.0).unwrap_or_default();
    let view = st.fleet.snapshot();
    let (done, errors) = crate::app::store::bench::run(
        &st.client,
        &view,
        &req,
        &st.live.history,
        &st.telemetry.recent,
        st.telemetry.store.as_ref(),
        // The dashboard's Benchmarks view shows how far it is.
        &|p| {
            st.dashboard.hub().state_event(
                "bench",
                bytes::Bytes::from(serde_json::to_vec(p).unwrap_or_default()),
            )
        },
    )
    .await;
    if let Some(s) = &st.telemetry.store {
        s.flush().await;
    }
    axum::Json(json!({"benchmarks": done, "errors": errors})).into_response()
}

/// `GET /fleet/benchmark`: the stored calibrations (the latest of each
/// node:model) and the runs kept (`runs`, oldest first per node:model).
pub(super) async fn benchmarks(State(st): State<AppState>) -> Response {
    let Some(store) = st.telemetry.store.clone() else {
        return no_store();
    };
    let read = move || {
        Ok::<_, crate::app::store::StoreError>((store.benchmarks()?, store.benchmark_runs()?))
    };
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok((b, runs))) => axum::Json(json!({"benchmarks": b, "runs": runs})).into_response(),
        _ => ClientError::new(StatusCode::INTERNAL_SERVER_ERROR, "store read failed")
            .render(Dialect::Ollama),
    }
}
