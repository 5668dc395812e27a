//! Auto-pull: a request for a model no node has pulls it to the node where
//! it fits best, then routes as usual.
//!
//! It lives in the retry policy because it is a retry: the first attempt
//! fails with "no node has the model"; the policy's wait before the next
//! attempt is the pull itself. "Where it fits best" is decided by the same
//! scorer as every request, run on the fleet as if every node had the model
//! on disk. Concurrent requests for one model share one pull, and its
//! progress is visible at `GET /fleet/pulls`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fleet::{DiskModel, Engine, Fleet, Mode, NodeId};
use crate::rank::{self, NoObservations, ScoreInput, ScoringConfig};
use crate::request::{Kind, normalize_model};

/// `[autopull]` tunables.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoPullConfig {
    /// Pull at all.
    pub enabled: bool,
    /// Longest a pull may take before the request gives up.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
}

impl Default for AutoPullConfig {
    fn default() -> Self {
        AutoPullConfig {
            enabled: true,
            timeout: Duration::from_secs(300),
        }
    }
}

/// One pull as `/fleet/pulls` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PullStatus {
    /// The model pulled.
    pub model: String,
    /// The node it goes to.
    pub node: NodeId,
    /// The engine's last status line (e.g. `pulling manifest`).
    pub status: String,
    /// Bytes done.
    pub completed: u64,
    /// Bytes in all, when known.
    pub total: u64,
    /// Whether the pull ended.
    pub done: bool,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// When it last changed, milliseconds since the Unix epoch.
    pub updated_ms: i64,
}

type Outcome = Result<NodeId, String>;

/// Distinct models pulled at once; more wait for one to finish.
pub const MAX_PULLS: usize = 4;
/// Pulls `/fleet/pulls` remembers (finished ones are dropped oldest first).
pub const MAX_REMEMBERED: usize = 64;
/// A model whose pull failed is not pulled again for this long (a typo must
/// not send every request to the registry).
pub const FAILED_PULL_MEMORY: Duration = Duration::from_secs(600);

/// Pulls in flight and recently finished. Cheap to clone.
#[derive(Clone)]
pub struct AutoPull {
    fleet: Fleet,
    cfg: AutoPullConfig,
    scoring: Arc<ScoringConfig>,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
    in_flight: Arc<Mutex<HashMap<String, Shared<BoxFuture<'static, Outcome>>>>>,
    status: Arc<Mutex<HashMap<String, PullStatus>>>,
}

impl std::fmt::Debug for AutoPull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoPull")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl AutoPull {
    /// Pulls onto `fleet`'s nodes, placed by the scorer with `scoring`.
    pub fn new(fleet: Fleet, cfg: AutoPullConfig, scoring: Arc<ScoringConfig>) -> Self {
        AutoPull {
            fleet,
            cfg,
            scoring,
            client: crate::client::client(Duration::from_secs(3)),
            in_flight: Default::default(),
            status: Default::default(),
        }
    }

    /// Whether auto-pull is on.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// Every pull herd started, newest state first.
    pub fn statuses(&self) -> Vec<PullStatus> {
        let mut v: Vec<_> = self.lock_status().values().cloned().collect();
        v.sort_by(|a, b| (a.done, &a.model).cmp(&(b.done, &b.model)));
        v
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, HashMap<String, PullStatus>> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node where `model` would fit best if it were on disk everywhere.
    pub fn choose(&self, model: &str, kind: Kind) -> Option<NodeId> {
        let mut view = (*self.fleet.snapshot()).clone();
        view.nodes.retain(|_, n| {
            n.online
                && n.engine == Engine::Ollama
                && n.engine_reachable
                && n.mode == Mode::Full
                && !n.draining
        });
        for n in view.nodes.values_mut() {
            Arc::make_mut(n).available.push(assumed_on_disk(model));
        }
        let input = ScoreInput {
            model,
            kind,
            format: crate::request::Dialect::Ollama,
            est_prompt_tokens: 1,
            max_output_tokens: None,
            exclude: &[],
            only: None,
            endpoint: crate::request::Endpoint::OllamaChat,
            native_only: false,
            needs: crate::capability::Caps::NONE,
            prefix: None,
            now_ms: crate::fleet::now_ms(),
        };
        rank::score(&view, &NoObservations, &input, &self.scoring)
            .best()
            .map(|c| c.node.clone())
    }

    /// Pull `model` (once, however many requests ask) and wait for the end.
    /// At most [`MAX_PULLS`] models are pulled at once, and a model whose
    /// pull failed lately fails again at once, with the same reason.
    pub fn pull(&self, model: &str, kind: Kind) -> Shared<BoxFuture<'static, Outcome>> {
        let key = normalize_model(model);
        let now_ms = crate::fleet::now_ms();
        if let Some(s) = self.lock_status().get(&key)
            && s.done
            && let Some(e) = &s.error
            && now_ms.saturating_sub(s.updated_ms) < FAILED_PULL_MEMORY.as_millis() as i64
        {
            let e = format!(
                "{e} (tried {} s ago; not tried again yet)",
                (now_ms - s.updated_ms) / 1000
            );
            return futures::future::ready(Err(e)).boxed().shared();
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = in_flight.get(&key) {
            return f.clone();
        }
        if in_flight.len() >= MAX_PULLS {
            let e =
                format!("herd is pulling {MAX_PULLS} models already; try again when one is done");
            return futures::future::ready(Err(e)).boxed().shared();
        }
        let this = self.clone();
        let model = model.to_string();
        // A task of its own: the pull runs to its end (or timeout) and frees
        // its place even when every request waiting for it goes away —
        // driven only by their polls, an abandoned pull would hold one of
        // the MAX_PULLS places for ever.
        let task = tokio::spawn(async move {
            let out = match this.choose(&model, kind) {
                None => Err("no online node can take a new model".to_string()),
                Some(node) => {
                    let r = tokio::time::timeout(this.cfg.timeout, this.run(&model, &node)).await;
                    match r {
                        Ok(Ok(())) => Ok(node),
                        Ok(Err(e)) => Err(format!("pulling to {node} failed: {e}")),
                        Err(_) => Err(format!(
                            "pulling to {node} took longer than {:?}",
                            this.cfg.timeout
                        )),
                    }
                }
            };
            this.in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&normalize_model(&model));
            out
        });
        let fut = async move {
            task.await
                .unwrap_or_else(|e| Err(format!("the pull stopped: {e}")))
        }
        .boxed()
        .shared();
        in_flight.insert(key, fut.clone());
        fut
    }

    async fn run(&self, model: &str, node: &NodeId) -> Result<(), String> {
        let url = self
            .fleet
            .snapshot()
            .node(node)
            .map(|n| format!("{}/api/pull", n.url.trim_end_matches('/')))
            .ok_or("the node went away")?;
        let set = |f: &dyn Fn(&mut PullStatus)| {
            let mut st = self.lock_status();
            let key = normalize_model(model);
            if !st.contains_key(&key) {
                forget_oldest(&mut st);
            }
            let s = st.entry(key).or_insert_with(|| PullStatus {
                model: model.to_string(),
                node: node.clone(),
                status: "starting".into(),
                completed: 0,
                total: 0,
                done: false,
                error: None,
                updated_ms: 0,
            });
            f(s);
            s.updated_ms = crate::fleet::now_ms();
        };
        set(&|s| {
            s.node = node.clone();
            s.status = "starting".into();
            s.done = false;
            s.error = None;
        });
        tracing::info!(%model, %node, "auto-pulling a model no node has");
        let body = serde_json::to_vec(&serde_json::json!({"model": model, "stream": true}))
            .map_err(|e| e.to_string())?;
        let req = http::Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let result = async {
            let rsp = self
                .client
                .request(req)
                .await
                .map_err(|e| crate::client::error_chain(&e))?;
            let status = rsp.status();
            let mut body = rsp.into_body();
            let mut buf = Vec::new();
            let mut ok = false;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| e.to_string())?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                if buf.len() > 1024 * 1024 {
                    return Err("the node's pull progress has a line over 1 MiB".to_string());
                }
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    if let Some(e) = v.get("error").and_then(Value::as_str) {
                        return Err(e.to_string());
                    }
                    let st = v
                        .get("status")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    ok |= st == "success";
                    set(&|s| {
                        s.status = st.clone();
                        if let Some(t) = v.get("total").and_then(Value::as_u64) {
                            s.total = t;
                        }
                        if let Some(c) = v.get("completed").and_then(Value::as_u64) {
                            s.completed = c;
                        }
                    });
                }
            }
            if !status.is_success() {
                return Err(crate::dialect::error_message(&buf));
            }
            if ok {
                Ok(())
            } else {
                Err("the pull ended without success".to_string())
            }
        }
        .await;
        match &result {
            Ok(()) => {
                set(&|s| {
                    s.done = true;
                    s.status = "success".into();
                });
                // Routable now, without waiting for the node's next report.
                self.fleet.update(|v| {
                    if let Some(n) = v.node_mut(node)
                        && !n.has_model(model)
                    {
                        n.available.push(assumed_on_disk(model));
                    }
                });
            }
            Err(e) => set(&|s| {
                s.done = true;
                s.error = Some(e.clone());
            }),
        }
        result
    }
}

/// Make room for one more remembered pull: finished ones go, oldest first.
fn forget_oldest(st: &mut HashMap<String, PullStatus>) {
    while st.len() >= MAX_REMEMBERED {
        let oldest = st
            .iter()
            .filter(|(_, s)| s.done)
            .min_by_key(|(_, s)| s.updated_ms)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                st.remove(&k);
            }
            None => break,
        }
    }
}

/// Auto-pull was tried and failed; says why.
#[derive(Debug, thiserror::Error)]
#[error("model {model:?} not found on any node, and auto-pull failed: {reason}")]
pub struct AutoPullFailed {
    /// The model.
    pub model: String,
    /// Why the pull failed.
    pub reason: String,
}
/// A model no node has, which this caller may not have pulled (auto-pull
/// changes the fleet: the proxy allows it to admin callers only).
#[derive(Debug, thiserror::Error)]
#[error(
    "model {model:?} not found on any node; herd pulls a missing model only for an admin caller (from the router's machine, or with an admin key: `herd keys create <name> --scope admin`), or pull it with `POST /api/pull`"
)]
pub struct PullNotAllowed {
    /// The model.
    pub model: String,
}

/// `model` as a node would list it on disk, before it has said so: the
/// size estimated from the name (the real one comes with the next report).
fn assumed_on_disk(model: &str) -> DiskModel {
    DiskModel {
        name: model.to_string(),
        size_bytes: (rank::name_size_gib(model) * 1024.0 * 1024.0 * 1024.0) as u64,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(model: &str, done: bool, at: i64) -> PullStatus {
        PullStatus {
            model: model.into(),
            node: "n".into(),
            status: String::new(),
            completed: 0,
            total: 0,
            done,
            error: None,
            updated_ms: at,
        }
    }

    #[test]
    fn remembered_pulls_are_bounded_oldest_finished_first() {
        let mut st = HashMap::new();
        for i in 0..MAX_REMEMBERED {
            st.insert(format!("m{i}"), status(&format!("m{i}"), i != 3, i as i64));
        }
        forget_oldest(&mut st);
        assert_eq!(st.len(), MAX_REMEMBERED - 1);
        assert!(
            !st.contains_key("m0"),
            "the oldest finished pull goes first"
        );
        assert!(st.contains_key("m3"), "a pull in progress stays");
    }

    #[tokio::test]
    async fn failed_pulls_are_not_tried_again_at_once_and_pulls_are_capped() {
        let ap = AutoPull::new(Fleet::new(), AutoPullConfig::default(), Arc::default());
        ap.lock_status().insert(
            "typo:latest".into(),
            PullStatus {
                error: Some("pull model manifest: file does not exist".into()),
                ..status("typo", true, crate::fleet::now_ms())
            },
        );
        let e = ap.pull("typo", Kind::Chat).await.unwrap_err();
        assert!(e.contains("not tried again yet"), "{e}");
        // With no node at all, a pull fails at once (nothing to pull to).
        let e = ap.pull("other:1b", Kind::Chat).await.unwrap_err();
        assert!(e.contains("no online node"), "{e}");
    }

    /// A pull nobody waits for any more still ends and gives its place
    /// back (it used to live only in its waiters' polls).
    #[tokio::test]
    async fn an_abandoned_pull_still_frees_its_place() {
        let ap = AutoPull::new(Fleet::new(), AutoPullConfig::default(), Arc::default());
        for i in 0..MAX_PULLS {
            drop(ap.pull(&format!("m{i}:1b"), Kind::Chat));
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !ap.in_flight.lock().unwrap().is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "abandoned pulls still hold their places"
            );
            tokio::task::yield_now().await;
        }
        let e = ap.pull("next:1b", Kind::Chat).await.unwrap_err();
        assert!(!e.contains("already"), "{e}");
    }
}
