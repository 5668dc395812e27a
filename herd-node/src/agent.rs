//! Attaching a node to a router over `herd.v1`.
//!
//! The same loop serves a real machine and a simulated device: only the
//! [`StateSource`] differs, so the router cannot tell them apart except by the
//! `simulated` flag in the report. The loop never gives up and never spins: a
//! refused `Hello` or a dropped stream is retried after a capped, jittered
//! exponential backoff, so a fleet of nodes restarting together does not hammer
//! a router that is coming back up.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_proto::v1::fleet_client::FleetClient;
use herd_proto::v1::{
    Command, CommandResult, Hello, NodeMessage, NodeMode, NodeReport, ProtocolVersion,
    RouterMessage, command, node_message, router_message,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// The agent's version, sent in `Hello` and in every report.
pub(crate) const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Report interval when the router's `Welcome` leaves it at 0.
pub(crate) const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_millis(2000);

/// Where a node's report and its commands are carried out.
pub trait StateSource: Send + Sync + 'static {
    /// The node's state now. The agent fills `node_id`, `sequence`,
    /// `timestamp_ms`, `agent_version`, `mode` and `draining`.
    fn report(&self) -> impl Future<Output = NodeReport> + Send;
    /// Pulls a model; `Ok` carries a message for the router.
    fn pull(&self, model: String) -> impl Future<Output = Result<String, String>> + Send;
    /// Loads a model into memory.
    fn warm(&self, model: String) -> impl Future<Output = Result<String, String>> + Send;
}

/// How to reach the router.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `http://host:port` of the router's gRPC endpoint.
    pub router_url: String,
    /// This node's id.
    pub node_id: String,
    /// Token presented in `Hello`; empty when the router needs none.
    pub fleet_token: String,
    /// First retry delay.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl AgentConfig {
    /// A config with the default backoff (0.5 s doubling to 30 s).
    pub fn new(router_url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            router_url: router_url.into(),
            node_id: node_id.into(),
            fleet_token: String::new(),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Knobs shared between the agent and whoever runs it (the binary's signal
/// handler, the router's commands).
#[derive(Debug)]
pub struct Controls {
    mode: Mutex<NodeMode>,
    /// Set when a person (CLI or router API) chose the mode: it then beats
    /// what the source suggests (a meeting pausing the node).
    pinned: AtomicBool,
    draining: AtomicBool,
    sequence: AtomicU64,
    wake: Notify,
    /// Last sequence sent with `draining: true` (0 = none).
    drained_seq: watch::Sender<u64>,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            mode: Mutex::new(NodeMode::Full),
            pinned: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            sequence: AtomicU64::new(0),
            wake: Notify::new(),
            drained_seq: watch::Sender::new(0),
        }
    }
}

impl Controls {
    /// Current mode.
    pub fn mode(&self) -> NodeMode {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pins the mode (it now beats the source's suggestion) and reports it
    /// at once.
    pub fn set_mode(&self, m: NodeMode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = m;
        self.pinned.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Back to automatic: the source decides (full unless it says otherwise).
    pub fn unpin_mode(&self) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = NodeMode::Full;
        self.pinned.store(false, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Whether a person pinned the mode.
    pub fn mode_pinned(&self) -> bool {
        self.pinned.load(Ordering::SeqCst)
    }

    /// Sends a report now instead of at the next tick.
    pub fn report_now(&self) {
        self.wake.notify_one();
    }

    /// Whether the node is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts (or stops) draining and reports it at once.
    pub fn set_draining(&self, d: bool) {
        self.draining.store(d, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Waits until a report with `draining: true` reached the stream.
    pub async fn draining_reported(&self) {
        let mut rx = self.drained_seq.subscribe();
        // The sender lives in self, so this cannot fail while we borrow self.
        let _ = rx.wait_for(|s| *s > 0).await;
    }

    fn next_report(&self, mut r: NodeReport, node_id: &str) -> NodeReport {
        r.node_id = node_id.to_owned();
        r.sequence = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        r.timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        r.agent_version = AGENT_VERSION.to_owned();
        // A pinned mode wins; otherwise the source may suggest one (a meeting
        // pauses the node); otherwise full.
        let suggested = NodeMode::try_from(r.mode).unwrap_or(NodeMode::Unspecified);
        r.mode = if self.mode_pinned() || suggested == NodeMode::Unspecified {
            self.mode() as i32
        } else {
            suggested as i32
        };
        r.draining = self.draining();
        r
    }
}

/// Why one attachment ended.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Could not connect.
    #[error("connect to {url}: {source}")]
    Connect {
        /// Router URL.
        url: String,
        /// The transport error.
        source: tonic::transport::Error,
    },
    /// The router answered the stream with an error status.
    #[error("attach: {0}")]
    Status(#[from] tonic::Status),
    /// The router refused our Hello.
    #[error("router rejected this node: {0}")]
    Rejected(String),
    /// The stream ended.
    #[error("router closed the stream")]
    Closed,
    /// The router broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`.
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The next delay: the current step, ±20 % jitter, then doubles.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = 0.8 + fastrand::f64() * 0.4;
        base.mul_f64(jitter).min(self.max)
    }

    /// Back to `min` after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Runs the agent forever against `cfg.router_url`: attach, report, obey,
/// reconnect.
pub async fn run<S: StateSource>(cfg: AgentConfig, source: Arc<S>, controls: Arc<Controls>) {
    let (_keep, routers) = watch::channel(Some(cfg.router_url.clone()));
    run_following(cfg, source, controls, routers).await;
}

/// Runs the agent forever, attached to whichever router `routers` names
/// (discovery updates it). A new router URL ends the current attachment at
/// once and attaches to the new one without backoff; `None` waits.
pub async fn run_following<S: StateSource>(
    cfg: AgentConfig,
    source: Arc<S>,
    controls: Arc<Controls>,
    mut routers: watch::Receiver<Option<String>>,
) {
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    loop {
        let Some(url) = routers.borrow_and_update().clone() else {
            tracing::info!(node = %cfg.node_id, "no router known yet; waiting for one to be discovered");
            changed(&mut routers).await;
            continue;
        };
        let cfg = AgentConfig {
            router_url: url,
            ..cfg.clone()
        };
        let outcome = tokio::select! {
            r = attach_once(&cfg, &source, &controls, &mut backoff) => Some(r),
            _ = changed(&mut routers) => None,
        };
        match outcome {
            None => {
                tracing::info!(old = %cfg.router_url, new = ?*routers.borrow(), node = %cfg.node_id, "router changed; re-attaching");
                backoff.reset();
                continue;
            }
            Some(Err(AttachError::Rejected(reason))) => {
                tracing::error!(router = %cfg.router_url, node = %cfg.node_id, %reason, "router rejected this node; will retry");
                // A rejection will not fix itself quickly: wait longer.
                backoff.next_delay();
            }
            Some(Err(e)) => {
                tracing::warn!(router = %cfg.router_url, node = %cfg.node_id, error = %e, "attachment ended; reconnecting");
            }
            Some(Ok(())) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = changed(&mut routers) => backoff.reset(),
        }
    }
}

/// Resolves when the router changes; never when nobody can change it.
async fn changed(rx: &mut watch::Receiver<Option<String>>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn attach_once<S: StateSource>(
    cfg: &AgentConfig,
    source: &Arc<S>,
    controls: &Arc<Controls>,
    backoff: &mut Backoff,
) -> Result<(), AttachError> {
    let mut client = FleetClient::connect(cfg.router_url.clone())
        .await
        .map_err(|source| AttachError::Connect {
            url: cfg.router_url.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel::<NodeMessage>(32);
    let hello = Hello {
        node_id: cfg.node_id.clone(),
        protocol_version: ProtocolVersion::ProtocolVersion1 as u32,
        agent_version: AGENT_VERSION.to_owned(),
        fleet_token: cfg.fleet_token.clone(),
    };
    // Queue the Hello before the call: a router may wait for it before it
    // sends response headers.
    send(&tx, node_message::Msg::Hello(hello)).await?;
    let mut inbound = client.attach(ReceiverStream::new(rx)).await?.into_inner();

    let interval = match inbound.next().await {
        Some(Ok(RouterMessage {
            msg: Some(router_message::Msg::Welcome(w)),
        })) => {
            tracing::info!(router = %cfg.router_url, router_id = %w.router_id, node = %cfg.node_id, "attached");
            if w.report_interval_ms == 0 {
                DEFAULT_REPORT_INTERVAL
            } else {
                Duration::from_millis(u64::from(w.report_interval_ms))
            }
        }
        Some(Ok(RouterMessage {
            msg: Some(router_message::Msg::Rejected(r)),
        })) => {
            return Err(AttachError::Rejected(r.reason));
        }
        Some(Ok(other)) => {
            return Err(AttachError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )));
        }
        Some(Err(status)) => return Err(status.into()),
        None => return Err(AttachError::Closed),
    };
    backoff.reset();

    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Command results come back through this channel so slow commands (a pull)
    // do not hold up reports.
    let (results_tx, mut results_rx) = mpsc::channel::<CommandResult>(16);
    loop {
        tokio::select! {
            _ = ticker.tick() => send_report(cfg, source, controls, &tx).await?,
            _ = controls.wake.notified() => send_report(cfg, source, controls, &tx).await?,
            Some(result) = results_rx.recv() => {
                send(&tx, node_message::Msg::Result(result)).await?;
                send_report(cfg, source, controls, &tx).await?;
            }
            msg = inbound.next() => match msg {
                Some(Ok(RouterMessage { msg: Some(router_message::Msg::Command(c)) })) => {
                    let source = source.clone();
                    let controls = controls.clone();
                    let results_tx = results_tx.clone();
                    tokio::spawn(async move {
                        let r = execute(c, &*source, &controls).await;
                        let _ = results_tx.send(r).await;
                    });
                }
                Some(Ok(RouterMessage { msg: Some(router_message::Msg::Rejected(r)) })) => {
                    return Err(AttachError::Rejected(r.reason));
                }
                Some(Ok(other)) => tracing::debug!(?other, "ignoring router message"),
                Some(Err(status)) => return Err(status.into()),
                None => return Err(AttachError::Closed),
            },
        }
    }
}

async fn send(tx: &mpsc::Sender<NodeMessage>, msg: node_message::Msg) -> Result<(), AttachError> {
    tx.send(NodeMessage { msg: Some(msg) })
        .await
        .map_err(|_| AttachError::Closed)
}

async fn send_report<S: StateSource>(
    cfg: &AgentConfig,
    source: &Arc<S>,
    controls: &Controls,
    tx: &mpsc::Sender<NodeMessage>,
) -> Result<(), AttachError> {
    let report = controls.next_report(source.report().await, &cfg.node_id);
    let (seq, draining) = (report.sequence, report.draining);
    send(tx, node_message::Msg::Report(report)).await?;
    if draining {
        controls.drained_seq.send_replace(seq);
    }
    Ok(())
}

/// Carries out one router command.
pub(crate) async fn execute<S: StateSource>(
    c: Command,
    source: &S,
    controls: &Controls,
) -> CommandResult {
    let outcome = match c.kind {
        Some(command::Kind::Pull(p)) => source.pull(p.model).await,
        Some(command::Kind::Warm(w)) => source.warm(w.model).await,
        Some(command::Kind::Drain(_)) => {
            controls.set_draining(true);
            Ok("draining".to_owned())
        }
        Some(command::Kind::Undrain(_)) => {
            controls.set_draining(false);
            Ok("taking work again".to_owned())
        }
        Some(command::Kind::SetMode(m)) => match NodeMode::try_from(m.mode) {
            Ok(mode) if mode != NodeMode::Unspecified => {
                controls.set_mode(mode);
                // Full means full: a drain asked for earlier ends too.
                let undrained = mode == NodeMode::Full && controls.draining();
                if undrained {
                    controls.set_draining(false);
                }
                Ok(format!(
                    "mode set to {}{}",
                    mode.as_str_name(),
                    if undrained {
                        "; no longer draining"
                    } else {
                        ""
                    }
                ))
            }
            _ => Err(format!("unknown mode {}", m.mode)),
        },
        None => Err("empty command".to_owned()),
    };
    match outcome {
        Ok(message) => CommandResult {
            id: c.id,
            ok: true,
            message,
        },
        Err(message) => CommandResult {
            id: c.id,
            ok: false,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_proto::v1::{Drain, PullModel, SetMode, Undrain};

    struct Fake;

    impl StateSource for Fake {
        async fn report(&self) -> NodeReport {
            NodeReport {
                simulated: true,
                ..NodeReport::default()
            }
        }
        async fn pull(&self, model: String) -> Result<String, String> {
            if model == "ok" {
                Ok("pulled".into())
            } else {
                Err("no such model".into())
            }
        }
        async fn warm(&self, _model: String) -> Result<String, String> {
            Ok("warm".into())
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(80) && d[0] <= Duration::from_millis(120));
        assert!(d[1] >= Duration::from_millis(160) && d[1] <= Duration::from_millis(240));
        assert!(d[5] <= Duration::from_secs(1) && d[5] >= Duration::from_millis(800));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }

    #[tokio::test]
    async fn commands_are_answered_with_results() {
        let c = Controls::default();
        let cmd = |id: &str, kind| Command {
            id: id.into(),
            kind: Some(kind),
        };
        let r = execute(
            cmd("1", command::Kind::Pull(PullModel { model: "ok".into() })),
            &Fake,
            &c,
        )
        .await;
        assert!(r.ok && r.id == "1");
        let r = execute(
            cmd("2", command::Kind::Pull(PullModel { model: "x".into() })),
            &Fake,
            &c,
        )
        .await;
        assert!(!r.ok && r.message == "no such model");
        let r = execute(cmd("3", command::Kind::Drain(Drain {})), &Fake, &c).await;
        assert!(r.ok && c.draining());
        let mode = NodeMode::SmallOnly as i32;
        let r = execute(
            cmd("4", command::Kind::SetMode(SetMode { mode })),
            &Fake,
            &c,
        )
        .await;
        assert!(r.ok);
        assert_eq!(c.mode(), NodeMode::SmallOnly);
        let report = c.next_report(Fake.report().await, "n1");
        assert_eq!(
            (report.node_id.as_str(), report.sequence, report.draining),
            ("n1", 1, true)
        );
        assert_eq!(report.mode, NodeMode::SmallOnly as i32);
        // Undrain ends a drain; so does mode full.
        let r = execute(cmd("5", command::Kind::Undrain(Undrain {})), &Fake, &c).await;
        assert!(r.ok && !c.draining());
        execute(cmd("6", command::Kind::Drain(Drain {})), &Fake, &c).await;
        let full = NodeMode::Full as i32;
        let r = execute(
            cmd("7", command::Kind::SetMode(SetMode { mode: full })),
            &Fake,
            &c,
        )
        .await;
        assert!(r.ok && !c.draining(), "{}", r.message);
        assert!(r.message.contains("no longer draining"), "{}", r.message);
    }
}
