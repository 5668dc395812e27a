//! Agentless nodes: an Ollama URL given to the router, with no herd-node.
//!
//! The router polls `/api/version`, `/api/ps` and `/api/tags` itself. Such a
//! node is routable on what Ollama's own API shows (loaded models, models on
//! disk); hardware signals stay unknown and count as neutral.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Deserialize;

use crate::fleet::{Fleet, NodeId, NodeState, Source};
use crate::ollama::{self, Models, PsModel, TagModel, Version};
use crate::proto;

/// The id an agentless node gets: its URL's authority.
pub fn node_id_for(url: &str) -> NodeId {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| url.to_string())
        .into()
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

async fn get<T: for<'de> Deserialize<'de>>(client: &Client, url: &str) -> Result<T, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let fut = client.get(uri);
    let rsp = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| format!("{url}: no answer within 5s"))?
        .map_err(|e| format!("{url}: {}", crate::client::error_chain(&e)))?;
    if !rsp.status().is_success() {
        return Err(format!("{url}: status {}", rsp.status()));
    }
    let limited = http_body_util::Limited::new(rsp.into_body(), 16 * 1024 * 1024);
    let body = tokio::time::timeout(Duration::from_secs(5), limited.collect())
        .await
        .map_err(|_| format!("{url}: body too slow"))?
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("{url}: unexpected answer: {e}"))
}

/// Poll one agentless node forever.
pub async fn poll(fleet: Fleet, url: String, every: Duration) {
    let id = node_id_for(&url);
    let base = url.trim_end_matches('/').to_string();
    fleet.update(|v| {
        v.nodes.entry(id.clone()).or_insert_with(|| {
            Arc::new(NodeState::new(id.clone(), Source::Agentless, base.clone()))
        });
    });
    let client: Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let result = async {
            let version: Version = get(&client, &format!("{base}/api/version")).await?;
            if let Some(why) = version.not_an_engine() {
                return Err(why);
            }
            let ps: Models<PsModel> = get(&client, &format!("{base}/api/ps")).await?;
            let tags: Models<TagModel> = get(&client, &format!("{base}/api/tags")).await?;
            Ok::<_, String>((version, ps, tags))
        }
        .await;
        let now = tokio::time::Instant::now();
        let now_ms = crate::fleet::now_ms();
        fleet.update(|v| {
            let Some(n) = v.node_mut(&id) else {
                return;
            };
            match result {
                Ok((version, ps, tags)) => {
                    let engine = proto::EngineState {
                        kind: proto::EngineKind::Ollama as i32,
                        reachable: true,
                        version: version.version,
                        loaded: ollama::loaded_models(ps.models),
                        available: ollama::disk_models(tags.models),
                        ..Default::default()
                    };
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
    }
}
