//! Agentless nodes: an engine URL given to the router, with no herd-node.
//!
//! For an Ollama the router polls `/api/version`, `/api/ps` and `/api/tags`
//! itself — and, for an Ollama older than 0.30 (whose `/api/tags` does not
//! say what each model can do), `/api/show` once per new model, a few per
//! poll. Any other engine is given as `KIND+URL` (`openai+http://…`,
//! `stt+http://…`, `image+http://…`, with declared models, slots and
//! context in the query: see [`herd_proto::engine`]) and polled at
//! `/v1/models`. Such a node is routable on what the engine's own API
//! shows (loaded models, models on disk); hardware signals stay unknown
//! and count as neutral.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;

use crate::fleet::{Fleet, NodeId, NodeState, Source};
use crate::ollama::{self, Capabilities, Models, PsModel, Show, TagModel, Version};
use crate::proto;
use herd_proto::engine::{EngineDecl, OpenAiModels};

/// The id an agentless node gets: its URL's authority.
pub fn node_id_for(url: &str) -> NodeId {
    let url = url.split_once("+http").map_or_else(
        || url.to_string(),
        |(k, r)| {
            if k.contains("://") {
                url.to_string()
            } else {
                format!("http{r}")
            }
        },
    );
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .unwrap_or(url)
        .into()
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// What a call answered: a status and the body, bounded and in time.
async fn call(client: &Client, url: &str, body: Option<Vec<u8>>) -> Result<(u16, Bytes), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let req = http::Request::builder()
        .method(if body.is_some() {
            http::Method::POST
        } else {
            http::Method::GET
        })
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| format!("{url}: {e}"))?;
    let rsp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| format!("{url}: no answer within 5s"))?
        .map_err(|e| format!("{url}: {}", crate::client::error_chain(&e)))?;
    let status = rsp.status().as_u16();
    let limited = http_body_util::Limited::new(rsp.into_body(), 16 * 1024 * 1024);
    let body = tokio::time::timeout(Duration::from_secs(5), limited.collect())
        .await
        .map_err(|_| format!("{url}: body too slow"))?
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((status, body))
}

async fn get<T: for<'de> Deserialize<'de>>(client: &Client, url: &str) -> Result<T, String> {
    let (status, body) = call(client, url, None).await?;
    if !(200..300).contains(&status) {
        return Err(format!("{url}: status {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: unexpected answer: {e}"))
}

/// One poll of an Ollama: its state, capabilities filled in from what
/// `/api/show` said (asking about a few new models now).
async fn poll_ollama(
    client: &Client,
    base: &str,
    caps: &mut Capabilities,
) -> Result<proto::EngineState, String> {
    let version: Version = get(client, &format!("{base}/api/version")).await?;
    if let Some(why) = version.not_an_engine() {
        return Err(why);
    }
    let ps: Models<PsModel> = get(client, &format!("{base}/api/ps")).await?;
    let tags: Models<TagModel> = get(client, &format!("{base}/api/tags")).await?;
    let mut available = ollama::disk_models(tags.models);
    for name in caps.apply(&mut available) {
        let digest = available
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.digest.clone())
            .unwrap_or_default();
        let body = serde_json::to_vec(&serde_json::json!({"model": name})).unwrap_or_default();
        let show = match call(client, &format!("{base}/api/show"), Some(body)).await {
            Ok((200, b)) => serde_json::from_slice::<Show>(&b).unwrap_or_default(),
            // Asked once: an error is not asked again until the model changes.
            Ok(_) => Show::default(),
            Err(e) => return Err(e),
        };
        caps.learn(&name, &digest, show.capabilities);
    }
    caps.apply(&mut available);
    Ok(proto::EngineState {
        kind: proto::EngineKind::Ollama as i32,
        reachable: true,
        version: version.version,
        loaded: ollama::loaded_models(ps.models),
        available,
        ..Default::default()
    })
}

/// One poll of an engine that speaks OpenAI's API: what `/v1/models`
/// lists (when it has one) and what was declared. An engine that answers
/// at all is up; one whose `/v1/models` is missing serves what was declared.
async fn poll_openai(client: &Client, decl: &EngineDecl) -> Result<proto::EngineState, String> {
    let url = format!("{}/v1/models", decl.url);
    let (status, body) = call(client, &url, None).await?;
    let listed = if (200..300).contains(&status) {
        Some(
            serde_json::from_slice::<OpenAiModels>(&body)
                .map_err(|e| format!("{url}: unexpected answer: {e}"))?,
        )
    } else if decl.models.is_empty() {
        return Err(format!(
            "{url}: status {status}, and no models were declared (add ?model=NAME to the engine's URL)"
        ));
    } else {
        None
    };
    Ok(herd_proto::engine::openai_engine_state(decl, listed))
}

/// Poll one agentless engine forever: `spec` is an Ollama URL or a
/// `KIND+URL` declaration.
pub async fn poll(fleet: Fleet, spec: String, every: Duration) {
    let decl = match herd_proto::engine::parse_engine(&spec) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(node = %spec, error = %e, "not an engine; not polling it");
            return;
        }
    };
    let id = node_id_for(&spec);
    let base = decl.url.clone();
    fleet.update(|v| {
        v.nodes.entry(id.clone()).or_insert_with(|| {
            Arc::new(NodeState::new(id.clone(), Source::Agentless, base.clone()))
        });
    });
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut caps = Capabilities::default();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let result = match decl.kind {
            proto::EngineKind::Ollama | proto::EngineKind::Unspecified => {
                poll_ollama(&client, &base, &mut caps).await
            }
            _ => poll_openai(&client, &decl).await,
        };
        let now = tokio::time::Instant::now();
        let now_ms = crate::fleet::now_ms();
        fleet.update(|v| {
            let Some(n) = v.node_mut(&id) else {
                return;
            };
            match result {
                Ok(engine) => {
                    n.apply_engine(&engine, now_ms);
                    if !n.online {
                        tracing::info!(node = %id, "agentless node is up");
                    }
                    n.seen(now);
                }
                Err(e) => {
                    if n.online {
                        tracing::warn!(node = %id, error = %e, "agentless node is down");
                    }
                    n.engine_reachable = false;
                    n.mark_offline(e);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_authorities() {
        assert_eq!(&*node_id_for("http://10.0.0.5:11434/"), "10.0.0.5:11434");
        assert_eq!(&*node_id_for("http://10.0.0.5:8080"), "10.0.0.5:8080");
        assert_eq!(
            &*node_id_for("openai+http://10.0.0.5:8080?model=x"),
            "10.0.0.5:8080"
        );
    }
}
