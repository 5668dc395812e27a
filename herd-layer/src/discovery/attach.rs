//! Nodes attaching over herd.v1 (`Fleet.Attach`).
//!
//! The first message must be a `Hello`; the router answers `Welcome`, or
//! `Rejected` with a reason the node logs (wrong protocol version, missing or
//! wrong fleet token, bad node id). Reports then replace the node's state;
//! invalid reports are refused and logged, never half-applied. When the
//! stream ends, for whatever reason, the node is offline at once.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::fleet::{Fleet, NodeId, NodeState, Source};
use crate::proto::{self, node_message, router_message};

/// How long a node has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Most nodes attached at once (ids come from the network).
pub const MAX_ATTACHED: usize = 1024;

/// The router's side of each attached node: where to send commands.
#[derive(Debug, Default)]
pub struct Attachments {
    next: AtomicU64,
    senders: Mutex<HashMap<NodeId, (u64, mpsc::Sender<Result<proto::RouterMessage, Status>>)>>,
    /// The last reason each node id was refused (cleared when it attaches),
    /// so `/fleet/status` can say why an advertised node is not attached.
    refused: Mutex<HashMap<String, String>>,
}

/// Sending a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No node with this id is attached.
    #[error("node {0} is not attached")]
    NotAttached(String),
    /// The node's stream ended before the command could be sent.
    #[error("node {0} went away")]
    Gone(String),
}

impl Attachments {
    /// Bind `node` to this connection, unless a live connection holds it:
    /// a node id belongs to one attachment at a time, so a second machine
    /// (or a spoofer) using a live node's id is refused, not swapped in.
    /// The first connection counts as gone when its stream has closed or
    /// `alive` says it has stopped reporting.
    fn insert(
        &self,
        node: NodeId,
        tx: mpsc::Sender<Result<proto::RouterMessage, Status>>,
        alive: impl Fn() -> bool,
    ) -> Result<u64, String> {
        let mut m = self.lock();
        if let Some((_, old)) = m.get(&node)
            && !old.is_closed()
            && alive()
        {
            return Err(format!(
                "node id {node:?} is attached already on another connection; give each machine its own --node-id (this one can attach once the other stops reporting)"
            ));
        }
        if !m.contains_key(&node) && m.len() >= MAX_ATTACHED {
            return Err(format!(
                "this router has {MAX_ATTACHED} nodes attached, its limit"
            ));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        m.insert(node, (id, tx));
        Ok(id)
    }

    /// Ends every node's stream (the router is stopping): dropping the
    /// senders closes the response streams, so nodes see the router go.
    pub fn close_all(&self) {
        self.lock().clear();
    }

    /// Remove the node's entry if it is still this connection's; true when it was.
    fn remove(&self, node: &NodeId, conn: u64) -> bool {
        let mut m = self.lock();
        if m.get(node).is_some_and(|(c, _)| *c == conn) {
            m.remove(node);
            true
        } else {
            false
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        HashMap<NodeId, (u64, mpsc::Sender<Result<proto::RouterMessage, Status>>)>,
    > {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why `node` was last refused, if it was and has not attached since.
    pub fn refusal(&self, node: &str) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
    }

    fn set_refusal(&self, node: &str, reason: Option<String>) {
        let mut m = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        match reason {
            Some(r) => {
                // Bounded: node ids come from the network.
                if m.len() < 1024 || m.contains_key(node) {
                    m.insert(node.to_owned(), r);
                }
            }
            None => {
                m.remove(node);
            }
        }
    }

    /// Ids of the nodes attached right now.
    pub fn attached(&self) -> Vec<NodeId> {
        let mut v: Vec<_> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Send a command to an attached node.
    pub async fn command(
        &self,
        node: &str,
        kind: proto::command::Kind,
    ) -> Result<String, CommandError> {
        let tx = self
            .lock()
            .iter()
            .find(|(n, _)| &***n == node)
            .map(|(_, (_, tx))| tx.clone())
            .ok_or_else(|| CommandError::NotAttached(node.to_string()))?;
        let id = format!("cmd-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let msg = proto::RouterMessage {
            msg: Some(router_message::Msg::Command(proto::Command {
                id: id.clone(),
                kind: Some(kind),
            })),
        };
        tx.send(Ok(msg))
            .await
            .map_err(|_| CommandError::Gone(node.to_string()))?;
        Ok(id)
    }
}

/// The tonic service behind `herd.v1.Fleet`.
#[derive(Clone, Debug)]
pub struct FleetService {
    fleet: Fleet,
    attachments: std::sync::Arc<Attachments>,
    fleet_token: Option<String>,
    report_interval: Duration,
    report_timeout: Duration,
    router_id: String,
}

impl FleetService {
    /// The attach service, writing into `fleet`; `router_id` is this
    /// router's (see [`crate::dialect::HOP_HEADER`]).
    pub fn new(
        fleet: Fleet,
        attachments: std::sync::Arc<Attachments>,
        fleet_token: Option<String>,
        report_interval: Duration,
        report_timeout: Duration,
        router_id: String,
    ) -> Self {
        FleetService {
            fleet,
            attachments,
            fleet_token,
            report_interval,
            report_timeout,
            router_id,
        }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> proto::fleet_server::FleetServer<Self> {
        proto::fleet_server::FleetServer::new(self)
    }

    fn check_hello(&self, h: &proto::Hello) -> Result<(), String> {
        if h.protocol_version != proto::ProtocolVersion::ProtocolVersion1 as u32 {
            return Err(format!(
                "protocol version {} is not supported; this router speaks version 1",
                h.protocol_version
            ));
        }
        valid_node_id(&h.node_id)?;
        if let Some(expected) = &self.fleet_token
            && !token_eq(expected.as_bytes(), h.fleet_token.as_bytes())
        {
            return Err(if h.fleet_token.is_empty() {
                "this router requires a fleet token; start herd-node with --fleet-token".into()
            } else {
                "wrong fleet token".into()
            });
        }
        Ok(())
    }
}

/// Compare secrets without leaking where they differ through timing.
pub fn token_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub use herd_proto::node::valid_node_id;

fn valid_report(hello_id: &str, r: &proto::NodeReport) -> Result<(), String> {
    if r.node_id != hello_id {
        return Err(format!(
            "report names node {:?} but this stream belongs to {hello_id:?}",
            r.node_id
        ));
    }
    // herd talks plain HTTP to engines (they sit on the LAN); an https URL
    // would fail every request, so it is refused up front. A path or query
    // is dropped (see `engine_url`).
    herd_proto::node::engine_url(&r.ollama_url).map_err(|e| format!("ollama_url: {e}"))?;
    if let Some(e) = &r.engine
        && (e.loaded.len() > 10_000 || e.available.len() > 100_000)
    {
        return Err("report lists implausibly many models".into());
    }
    if r.extra_engines.len() > herd_proto::engine::MAX_EXTRA_ENGINES {
        return Err(format!(
            "report lists {} extra engines; at most {} are taken",
            r.extra_engines.len(),
            herd_proto::engine::MAX_EXTRA_ENGINES
        ));
    }
    for e in &r.extra_engines {
        herd_proto::node::engine_url(&e.url).map_err(|why| format!("extra engine: {why}"))?;
        if e.loaded.len() > 10_000 || e.available.len() > 100_000 {
            return Err("an extra engine lists implausibly many models".into());
        }
    }
    Ok(())
}

/// The ids a node's extra engines route under: `<node>/<kind>`, and
/// `<node>/<kind>-2`… for a second engine of a kind. A node id has no `/`,
/// so these never collide with a node's.
pub fn engine_ids<'a>(
    node: &NodeId,
    r: &'a proto::NodeReport,
) -> Vec<(NodeId, &'a proto::EngineState)> {
    let mut counts: HashMap<&'static str, u32> = HashMap::new();
    r.extra_engines
        .iter()
        .take(herd_proto::engine::MAX_EXTRA_ENGINES)
        .map(|e| {
            let kind = proto::EngineKind::try_from(e.kind)
                .map_or(crate::fleet::Engine::Ollama, crate::fleet::Engine::from)
                .as_str();
            let k = counts.entry(kind).or_default();
            *k += 1;
            let id = if *k == 1 {
                format!("{node}/{kind}")
            } else {
                format!("{node}/{kind}-{k}")
            };
            (NodeId::from(id), e)
        })
        .collect()
}

/// The engines `node` reported beside its Ollama, each folded into a node
/// of its own that shares the machine's hardware; engines it stopped
/// reporting go offline.
fn apply_extra_engines(
    v: &mut crate::fleet::FleetView,
    node: &NodeId,
    r: &proto::NodeReport,
    now: tokio::time::Instant,
    now_ms: i64,
) {
    let mut seen = Vec::new();
    for (id, e) in engine_ids(node, r) {
        let n = Arc::make_mut(v.nodes.entry(id.clone()).or_insert_with(|| {
            Arc::new(NodeState::new(id.clone(), Source::Attached, String::new()))
        }));
        n.source = Source::Attached;
        if n.apply_extra_engine(node, r, e, now, now_ms) {
            seen.push(id);
        }
    }
    for id in engines_of(v, node) {
        if !seen.contains(&id)
            && let Some(n) = v.node_mut(&id)
            && n.online
        {
            n.mark_offline(format!("{node} no longer reports this engine"));
        }
    }
}

/// The ids of the engines known to run on `node`'s machine.
fn engines_of(v: &crate::fleet::FleetView, node: &NodeId) -> Vec<NodeId> {
    let prefix = format!("{node}/");
    v.nodes
        .range::<str, _>((
            std::ops::Bound::Included(prefix.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(id, _)| id.starts_with(&prefix))
        .filter(|(_, n)| n.machine.as_ref() == Some(node))
        .map(|(id, _)| id.clone())
        .collect()
}

type AttachStream = Pin<Box<dyn Stream<Item = Result<proto::RouterMessage, Status>> + Send>>;

#[tonic::async_trait]
impl proto::fleet_server::Fleet for FleetService {
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        request: Request<Streaming<proto::NodeMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        // Answer at once and read the Hello on the stream's own task: a node
        // that waits for the response before sending must not deadlock.
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(self.clone().serve(inbound, tx, peer));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

type Outbound = mpsc::Sender<Result<proto::RouterMessage, Status>>;

impl FleetService {
    async fn serve(
        self,
        mut inbound: Streaming<proto::NodeMessage>,
        tx: Outbound,
        peer: Option<std::net::SocketAddr>,
    ) {
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => {
                let _ = tx
                    .send(Err(Status::deadline_exceeded("no Hello within 10s")))
                    .await;
                return;
            }
            Ok(Err(_)) | Ok(Ok(None)) => return,
            Ok(Ok(Some(proto::NodeMessage {
                msg: Some(node_message::Msg::Hello(h)),
            }))) => h,
            Ok(Ok(Some(_))) => {
                let _ = tx
                    .send(Err(Status::invalid_argument(
                        "the first message must be a Hello",
                    )))
                    .await;
                return;
            }
        };
        if let Err(reason) = self.check_hello(&hello) {
            tracing::warn!(node = %hello.node_id, ?peer, %reason, "refused a node");
            if valid_node_id(&hello.node_id).is_ok() {
                self.attachments
                    .set_refusal(&hello.node_id, Some(reason.clone()));
            }
            let msg = proto::RouterMessage {
                msg: Some(router_message::Msg::Rejected(proto::Rejected { reason })),
            };
            let _ = tx.send(Ok(msg)).await;
            return;
        }
        let node: NodeId = hello.node_id.as_str().into();
        let welcome = proto::RouterMessage {
            msg: Some(router_message::Msg::Welcome(proto::Welcome {
                router_id: self.router_id.clone(),
                router_version: env!("CARGO_PKG_VERSION").into(),
                report_interval_ms: self.report_interval.as_millis() as u32,
            })),
        };
        // A live attachment keeps its id; decide before welcoming.
        let alive = {
            let fleet = self.fleet.clone();
            let node = node.clone();
            let timeout = self.report_timeout;
            move || {
                fleet.snapshot().node(&node).is_some_and(|n| {
                    n.source == Source::Attached && n.online && n.last_seen.elapsed() <= timeout
                })
            }
        };
        let conn = match self.attachments.insert(node.clone(), tx.clone(), alive) {
            Ok(c) => c,
            Err(reason) => {
                tracing::warn!(node = %node, ?peer, %reason, "refused a node");
                let msg = proto::RouterMessage {
                    msg: Some(router_message::Msg::Rejected(proto::Rejected { reason })),
                };
                let _ = tx.send(Ok(msg)).await;
                return;
            }
        };
        let sent = tx.send(Ok(welcome)).await;
        // The attachments hold the only sender from here on: dropping it
        // there (router stopping) must end the stream.
        drop(tx);
        if sent.is_err() {
            self.attachments.remove(&node, conn);
            return;
        }
        self.attachments.set_refusal(&node, None);
        tracing::info!(node = %node, ?peer, version = %hello.agent_version, "node attached");

        let fleet = self.fleet;
        let reason = loop {
            match inbound.message().await {
                Ok(Some(proto::NodeMessage {
                    msg: Some(node_message::Msg::Report(r)),
                })) => {
                    if let Err(why) = valid_report(&node, &r) {
                        tracing::warn!(node = %node, %why, "ignored an invalid report");
                        continue;
                    }
                    let now = tokio::time::Instant::now();
                    let now_ms = crate::fleet::now_ms();
                    let url = herd_proto::node::engine_url(&r.ollama_url).unwrap_or_default();
                    fleet.update(|v| {
                        let n = Arc::make_mut(v.nodes.entry(node.clone()).or_insert_with(|| {
                            Arc::new(NodeState::new(node.clone(), Source::Attached, url))
                        }));
                        n.source = Source::Attached;
                        n.apply_report(&r, now, now_ms);
                        apply_extra_engines(v, &node, &r, now, now_ms);
                    });
                }
                Ok(Some(proto::NodeMessage {
                    msg: Some(node_message::Msg::Result(res)),
                })) => {
                    tracing::info!(node = %node, id = %res.id, ok = res.ok, message = %res.message, "command result");
                }
                Ok(Some(_)) => tracing::debug!(node = %node, "ignored an unexpected message"),
                Ok(None) => break "stream closed".to_string(),
                Err(e) => break format!("stream failed: {}", e.message()),
            }
        };
        if self.attachments.remove(&node, conn) {
            tracing::warn!(node = %node, %reason, "node detached; marking offline");
            fleet.update(|v| {
                for id in engines_of(v, &node) {
                    if let Some(n) = v.node_mut(&id) {
                        n.mark_offline(format!("{node}: {reason}"));
                    }
                }
                if let Some(n) = v.node_mut(&node) {
                    n.mark_offline(reason);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_eq(b"secret", b"secret"));
        assert!(!token_eq(b"secret", b"secreT"));
        assert!(!token_eq(b"secret", b"secret2"));
        assert!(!token_eq(b"", b"x"));
    }

    #[test]
    fn node_ids_are_validated() {
        assert!(valid_node_id("mac-studio.local").is_ok());
        assert!(valid_node_id("").is_err());
        assert!(valid_node_id("has space").is_err());
        assert!(valid_node_id(&"x".repeat(200)).is_err());
    }

    #[test]
    fn extra_engines_become_nodes_sharing_the_machine() {
        let engine = |kind: proto::EngineKind, url: &str, model: &str| proto::EngineState {
            kind: kind as i32,
            reachable: true,
            url: url.into(),
            available: vec![proto::DiskModel {
                name: model.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut r = proto::NodeReport {
            node_id: "mac".into(),
            ollama_url: "http://10.0.0.5:11434".into(),
            hardware: Some(proto::Hardware {
                memory: Some(proto::Memory {
                    total_bytes: 64 << 30,
                    available_bytes: 32 << 30,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            extra_engines: vec![
                engine(proto::EngineKind::Stt, "http://10.0.0.5:9000", "whisper"),
                engine(proto::EngineKind::Image, "http://10.0.0.5:7860/x", "sd"),
                engine(proto::EngineKind::Stt, "http://10.0.0.5:9001", "parakeet"),
            ],
            ..Default::default()
        };
        assert!(valid_report("mac", &r).is_ok());
        let node: NodeId = "mac".into();
        let mut v = crate::fleet::FleetView::default();
        let now = tokio::time::Instant::now();
        apply_extra_engines(&mut v, &node, &r, now, 1);
        let ids: Vec<&str> = v.nodes.keys().map(|k| &**k).collect();
        assert_eq!(ids, ["mac/image", "mac/stt", "mac/stt-2"]);
        let stt = v.node("mac/stt").unwrap();
        assert_eq!(stt.url, "http://10.0.0.5:9000");
        assert_eq!(stt.engine, crate::fleet::Engine::Stt);
        assert_eq!(stt.memory_total_bytes, 64 << 30, "the machine's hardware");
        assert!(stt.online && stt.has_model("whisper"));
        assert_eq!(stt.machine.as_deref(), Some("mac"));
        assert_eq!(v.node("mac/image").unwrap().url, "http://10.0.0.5:7860");
        // An engine no longer reported goes offline; an unreachable one too.
        r.extra_engines.truncate(2);
        r.extra_engines[1].reachable = false;
        r.extra_engines[1].unreachable_reason = "connection refused".into();
        apply_extra_engines(&mut v, &node, &r, now, 2);
        assert!(!v.node("mac/stt-2").unwrap().online);
        let img = v.node("mac/image").unwrap();
        assert_eq!(img.offline_reason.as_deref(), Some("connection refused"));
        assert!(v.node("mac/stt").unwrap().online);
        // Bad URLs and too many engines are refused whole.
        r.extra_engines[0].url = "https://x:1".into();
        assert!(valid_report("mac", &r).is_err());
        r.extra_engines = vec![engine(proto::EngineKind::Openai, "http://h:1", "m"); 9];
        assert!(valid_report("mac", &r).is_err());
    }

    #[test]
    fn reports_must_match_their_stream_and_name_a_url() {
        let mut r = proto::NodeReport {
            node_id: "a".into(),
            ollama_url: "http://127.0.0.1:11434".into(),
            ..Default::default()
        };
        assert!(valid_report("a", &r).is_ok());
        assert!(valid_report("b", &r).is_err());
        r.ollama_url = "ftp://x".into();
        assert!(valid_report("a", &r).is_err());
        r.ollama_url = "https://10.0.0.5:11434".into();
        assert!(valid_report("a", &r).is_err());
    }
}
