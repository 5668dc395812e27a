//! Pre-warm: when a model's queue builds on one node, load the model on the
//! node that would win next, before a request needs it there.
//!
//! Every `interval`, each node:model whose waiting line reached
//! `queue_threshold` is re-ranked; the best node that does not have the model
//! loaded gets a warm (herd.v1 `WarmModel` when attached, else Ollama's
//! load-only `POST /api/generate`). A node:model is warmed at most once per
//! `cooldown`. What was warmed, and why, shows in `/fleet/status`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use crate::discovery::Attachments;
use crate::fleet::{Fleet, NodeId};
use crate::live::Live;
use crate::queueing::Admission;
use crate::rank::{self, ScoreInput, ScoringConfig, Temperature};
use crate::request::{Dialect, Kind};

/// `[prewarm]` tunables.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrewarmConfig {
    /// Warm runners-up at all.
    pub enabled: bool,
    /// Requests waiting on one node:model that trigger a warm elsewhere.
    pub queue_threshold: u32,
    /// How often queues are looked at.
    #[serde(with = "crate::duration")]
    pub interval: Duration,
    /// Least time between two warms of one node:model.
    #[serde(with = "crate::duration")]
    pub cooldown: Duration,
}

impl Default for PrewarmConfig {
    fn default() -> Self {
        PrewarmConfig {
            enabled: true,
            queue_threshold: 2,
            interval: Duration::from_secs(1),
            cooldown: Duration::from_secs(60),
        }
    }
}

/// One warm herd issued.
#[derive(Clone, Debug, Serialize)]
pub struct Prewarm {
    /// The node warmed.
    pub node: NodeId,
    /// The model warmed.
    pub model: String,
    /// The node whose queue built.
    pub busy_node: NodeId,
    /// Requests waiting for the model when the warm was sent.
    pub waiting: u32,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// How: `herd.v1` (a Warm command) or `ollama` (a load-only generate).
    pub via: &'static str,
    /// The error, when the warm failed.
    pub result: Option<String>,
}

/// Recent warms (the last 50). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Prewarms {
    recent: Arc<Mutex<Vec<Prewarm>>>,
}

impl Prewarms {
    /// The recent warms, newest last.
    pub fn recent(&self) -> Vec<Prewarm> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn push(&self, w: Prewarm) {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == 50 {
            r.remove(0);
        }
        r.push(w);
    }

    fn set_result(&self, node: &NodeId, model: &str, result: String) {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = r
            .iter_mut()
            .rev()
            .find(|w| &w.node == node && w.model == model)
        {
            w.result = Some(result);
        }
    }
}

/// Which node to warm for `model`, given that `busy` has a queue: the best
/// ranked node, other than `busy`, without the model loaded.
pub fn runner_up(
    fleet: &Fleet,
    live: &Live,
    scoring_cfg: &ScoringConfig,
    model: &str,
    busy: &NodeId,
) -> Option<NodeId> {
    let view = fleet.snapshot();
    let exclude = [busy.clone()];
    let input = ScoreInput {
        model,
        kind: Kind::Chat,
        format: Dialect::Ollama,
        est_prompt_tokens: 100,
        max_output_tokens: None,
        exclude: &exclude,
        only: None,
        endpoint: crate::request::Endpoint::OllamaChat,
        native_only: false,
        now_ms: crate::fleet::now_ms(),
        needs: crate::capability::Caps::NONE,
        prefix: None,
    };
    let ranking = rank::score(&view, live, &input, scoring_cfg);
    let best = ranking.best()?;
    (best.temperature != Temperature::Hot).then(|| best.node.clone())
}

/// Watch the queues and warm runners-up, forever.
pub async fn run(
    fleet: Fleet,
    live: Live,
    admission: Admission,
    attachments: Arc<Attachments>,
    scoring_cfg: Arc<ScoringConfig>,
    cfg: PrewarmConfig,
    prewarms: Prewarms,
) {
    let client = crate::client::client(Duration::from_secs(3));
    let mut last: HashMap<(NodeId, String), tokio::time::Instant> = HashMap::new();
    let mut tick = tokio::time::interval(cfg.interval);
    loop {
        tick.tick().await;
        for (busy, model, load, _slots) in admission.snapshot() {
            if load.waiting < cfg.queue_threshold {
                continue;
            }
            let Some(node) = runner_up(&fleet, &live, &scoring_cfg, &model, &busy) else {
                continue;
            };
            let key = (node.clone(), model.clone());
            let now = tokio::time::Instant::now();
            if last
                .get(&key)
                .is_some_and(|t| now.duration_since(*t) < cfg.cooldown)
            {
                continue;
            }
            last.insert(key, now);
            let attached = attachments.attached().contains(&node);
            tracing::info!(%node, %model, %busy, waiting = load.waiting, "warming the runner-up");
            prewarms.push(Prewarm {
                node: node.clone(),
                model: model.clone(),
                busy_node: busy.clone(),
                waiting: load.waiting,
                at_ms: crate::fleet::now_ms(),
                via: if attached { "herd.v1" } else { "http" },
                result: None,
            });
            let (attachments, client, fleet, prewarms) = (
                attachments.clone(),
                client.clone(),
                fleet.clone(),
                prewarms.clone(),
            );
            tokio::spawn(async move {
                let result = if attached {
                    attachments
                        .command(
                            &node,
                            crate::proto::command::Kind::Warm(crate::proto::WarmModel {
                                model: model.clone(),
                            }),
                        )
                        .await
                        .map(|id| format!("sent {id}"))
                        .map_err(|e| e.to_string())
                } else {
                    warm_http(&client, &fleet, &node, &model).await
                };
                let text = match result {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(%node, %model, error = %e, "warming failed");
                        format!("failed: {e}")
                    }
                };
                prewarms.set_result(&node, &model, text);
            });
        }
    }
}

/// Ollama loads a model on a generate request without a prompt.
async fn warm_http(
    client: &crate::client::HttpClient,
    fleet: &Fleet,
    node: &NodeId,
    model: &str,
) -> Result<String, String> {
    let url = fleet
        .snapshot()
        .node(node)
        .map(|n| format!("{}/api/generate", n.url.trim_end_matches('/')))
        .ok_or("node went away")?;
    let body = serde_json::to_vec(&serde_json::json!({"model": model, "stream": false}))
        .map_err(|e| e.to_string())?;
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let rsp = tokio::time::timeout(Duration::from_secs(300), client.request(req))
        .await
        .map_err(|_| "no answer within 300s".to_string())?
        .map_err(|e| crate::client::error_chain(&e))?;
    if rsp.status().is_success() {
        Ok("loaded".into())
    } else {
        Err(format!("status {}", rsp.status()))
    }
}
