//! `/fleet/keys`: client API keys over the admin API — the same as
//! `herd keys create|list|revoke` (which calls these on a running router).
//!
//! `POST /fleet/keys` answers the key itself, once; herd keeps only its
//! hash. `GET /fleet/keys` lists names, scopes, allow-lists, limits (the
//! key's own and those in force with `[limits]`) and each key's usage now.
//! `DELETE /fleet/keys/{name}` revokes at once: the next request with the
//! key is refused.

use axum::body::Body as AxumBody;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::error::Render;
use crate::app::auth::{KeyError, KeyRecord, NewKey};
use crate::error::ClientError;
use crate::request::Dialect;

fn client_error(e: KeyError) -> ClientError {
    let status = match &e {
        KeyError::BadName(_) | KeyError::Invalid(_) => StatusCode::BAD_REQUEST,
        KeyError::Exists(_) | KeyError::TooMany(_) | KeyError::NoStore => StatusCode::CONFLICT,
        KeyError::Unknown(_) => StatusCode::NOT_FOUND,
        KeyError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ClientError::new(status, e.to_string())
}

/// A key as listed (never the key itself).
pub fn describe(st: &AppState, k: &KeyRecord) -> Value {
    json!({
        "name": k.name,
        "scope": k.scope,
        "prefix": k.prefix,
        "models": k.models,
        "limits": k.limits,
        "limits_in_force": st.cfg.routing.limits.limits_for(&k.name, k.limits),
        "created_ms": k.created_ms,
        "usage": st.live.limits.usage(&k.name),
    })
}

/// `GET /fleet/keys`.
pub(super) async fn list(State(st): State<AppState>) -> Response {
    let keys: Vec<Value> = st.keys.list().iter().map(|k| describe(&st, k)).collect();
    axum::Json(json!({"keys": keys})).into_response()
}

/// `POST /fleet/keys` `{"name", "scope"?, "models"?, "limits"?}`.
pub(super) async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: AxumBody,
) -> Response {
    let run = async {
        let (bytes, _charge) = super::read_body(&st, body, 64 * 1024).await?;
        let obj = crate::dialect::object_map(&headers, bytes)?;
        let new: NewKey = serde_json::from_value(Value::Object(obj)).map_err(|e| {
            ClientError::bad_request(format!(
                "{e}; expected {{\"name\":…, \"scope\":\"inference\"|\"admin\", \"models\":[…], \"limits\":{{\"requests_per_minute\":…, \"tokens_per_minute\":…, \"concurrent\":…}}}}"
            ))
        })?;
        let (key, rec) = st.keys.create(&new).await.map_err(client_error)?;
        tracing::info!(name = %rec.name, scope = rec.scope.as_str(), "API key created");
        let mut v = describe(&st, &rec);
        v["key"] = Value::String(key);
        v["note"] = "the key is shown this once; herd keeps only its hash".into();
        Ok::<_, ClientError>(v)
    };
    match run.await {
        Ok(v) => (StatusCode::CREATED, axum::Json(v)).into_response(),
        Err(e) => e.render(Dialect::Ollama),
    }
}

/// `DELETE /fleet/keys/{name}` (the name, or the key's first characters).
pub(super) async fn revoke(State(st): State<AppState>, Path(name): Path<String>) -> Response {
    match st.keys.revoke(&name).await {
        Ok(rec) => {
            st.live.limits.forget(&rec.name);
            st.telemetry.metrics.forget_key(&rec.name);
            tracing::info!(name = %rec.name, "API key revoked");
            axum::Json(json!({"revoked": rec.name})).into_response()
        }
        Err(e) => client_error(e).render(Dialect::Ollama),
    }
}
