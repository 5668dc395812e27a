//! Starting herd-epp: the ext_proc port (TLS by default, with gRPC health and
//! herd.v1 node attachments), the health port, the metrics port, and the
//! discovery tasks that fill the fleet (attached herd-nodes, polled static
//! endpoints, the offline sweep).
//!
//! Each listener is owned by its own accept task, so stopping herd-epp closes
//! the ports at once (Envoy sees "connection refused", its failure mode
//! decides), while open HTTP/2 connections get a graceful GOAWAY.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use herd_layer::discovery::{self, Attachments, FleetService};
use herd_layer::fleet::Fleet;
use herd_layer::live::Live;

use crate::config::EppConfig;
use crate::leaf::Picker;
use crate::metrics::Metrics;
use crate::names::EXT_PROC_SERVICE;
use crate::processor::Processor;

/// Health service names answered SERVING.
pub const HEALTH_SERVICES: &[&str] = &[
    "",
    "liveness",
    "readiness",
    EXT_PROC_SERVICE,
    "inference-extension",
];

/// Why [`start`] failed. It fails before serving anything, so no port stays bound.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port could not be bound (in use, or not permitted).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate could not be generated or read.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// tonic refused the TLS identity (for example a key that does not parse).
    #[error("TLS setup failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The routing tunables are out of range ([`RoutingConfig::validate`]).
    ///
    /// [`RoutingConfig::validate`]: herd_layer::config::RoutingConfig::validate
    #[error(transparent)]
    Config(#[from] herd_layer::config::ConfigError),
}

/// A running herd-epp.
#[derive(Debug)]
pub struct Running {
    /// The bound ext_proc address (the real port when port 0 was asked for).
    pub grpc_addr: SocketAddr,
    /// The bound gRPC health address.
    pub health_addr: SocketAddr,
    /// The bound address of `/metrics` and `/debug/picks`.
    pub metrics_addr: SocketAddr,
    /// The separate node-attachment port, when one was configured.
    fleet_addr: Option<SocketAddr>,
    /// Whether the ext_proc port speaks TLS.
    pub tls: bool,
    /// The nodes herd-epp routes over, as discovery fills it.
    pub fleet: Fleet,
    /// Admission slots and learned history, shared with the routing stack.
    pub live: Live,
    /// The counters and histograms served on `metrics_addr`.
    pub metrics: Metrics,
    /// Open node attachment streams, closed at shutdown.
    attachments: Arc<Attachments>,
    /// The dashboard, whose event streams end at shutdown.
    board: herd_layer::dashboard::Dashboard,
    /// The `_herd._tcp` advertisement, withdrawn when dropped.
    _advert: Option<discovery::mdns::Advert>,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Where herd-nodes attach (`http://…`; plaintext only).
    pub fn fleet_url(&self) -> String {
        format!("http://{}", self.fleet_addr.unwrap_or(self.grpc_addr))
    }

    /// Stop: close the ports, GOAWAY open connections, stop background tasks.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        // End the nodes' attachment streams so they finish the drain (and
        // the nodes look for a picker again) instead of being cut.
        self.attachments.close_all();
        // Open dashboards hold their event stream; end it too.
        self.board.close();
        for t in &self.background {
            t.abort();
        }
        for t in self.servers {
            // Long-lived streams (node attachments) may hold a graceful
            // shutdown open; the ports are closed already, so cut it short.
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    herd_layer::serve::bind(addr).map_err(|source| StartError::Bind { addr, source })
}

/// Accept on `listener` until shutdown, then drop it (the port closes).
fn incoming(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> ReceiverStream<std::io::Result<TcpStream>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => None,
                r = listener.accept() => Some(r),
            };
            let Some(r) = accepted else { break };
            let r = r.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                s
            });
            if tx.send(r).await.is_err() {
                break;
            }
        }
    });
    ReceiverStream::new(rx)
}

async fn signal(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Bind every port and start serving.
pub async fn start(cfg: EppConfig) -> Result<Running, StartError> {
    cfg.routing.validate()?;
    if !cfg.routing.aliases.is_empty() || cfg.routing.alias_tiers != Default::default() {
        tracing::warn!(
            "[aliases] and [alias_tiers] are not applied by herd-epp (it does not rewrite bodies); rename models with AI Gateway's modelNameOverride"
        );
    }
    let grpc = bind(cfg.grpc_listen).await?;
    let health = bind(cfg.health_listen).await?;
    let metrics_l = bind(cfg.metrics_listen).await?;
    let fleet_l = match cfg.fleet_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let local = |l: &TcpListener, a: SocketAddr| l.local_addr().unwrap_or(a);
    let grpc_addr = local(&grpc, cfg.grpc_listen);
    let health_addr = local(&health, cfg.health_listen);
    let metrics_addr = local(&metrics_l, cfg.metrics_listen);
    let fleet_addr = fleet_l.as_ref().map(|l| local(l, grpc_addr));

    let fleet = Fleet::new();
    let live = Live {
        limits: herd_layer::limit::Limiter::new(cfg.routing.limits.max_tenants),
        ..Live::default()
    };
    let attachments = Arc::new(Attachments::default());
    let router_cfg = Arc::new(cfg.routing.clone());
    let metrics = Metrics::new();
    // The read-only dashboard on the metrics port; its tracer feeds the
    // routing view with every pick.
    let board = crate::dashboard::dashboard(&cfg.routing, fleet.clone(), live.clone());
    let picker = Picker::with_tracer(
        fleet.clone(),
        live.clone(),
        router_cfg.clone(),
        Some(board.tracer(
            true,
            herd_layer::health::HealthConfig::default().cold_load_ms,
        )),
    );
    let processor = Processor::new(picker, metrics.clone()).into_server();
    let router_id = format!("herd-epp-{}-{}", std::process::id(), grpc_addr.port());
    let fleet_svc = FleetService::new(
        fleet.clone(),
        attachments.clone(),
        cfg.routing.fleet_token.clone(),
        cfg.routing.report_interval,
        cfg.routing.report_timeout,
        router_id,
    )
    .into_server();
    let (reporter, health_svc) = tonic_health::server::health_reporter();
    for name in HEALTH_SERVICES {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();

    let mut builder = Server::builder();
    let tls = crate::tls::server_config(&cfg.tls)?;
    let with_tls = tls.is_some();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let routes = builder
        .add_service(processor)
        .add_service(health_svc.clone());
    let routes = if fleet_l.is_none() {
        routes.add_service(fleet_svc.clone())
    } else {
        routes
    };
    let (inc, sig) = (incoming(grpc, stop_rx.clone()), signal(stop_rx.clone()));
    servers.push(tokio::spawn(async move {
        if let Err(e) = routes.serve_with_incoming_shutdown(inc, sig).await {
            tracing::error!(error = %e, "ext_proc server failed");
        }
    }));

    let (inc, sig) = (incoming(health, stop_rx.clone()), signal(stop_rx.clone()));
    let health_routes = Server::builder().add_service(health_svc);
    servers.push(tokio::spawn(async move {
        if let Err(e) = health_routes.serve_with_incoming_shutdown(inc, sig).await {
            tracing::error!(error = %e, "health server failed");
        }
    }));

    if let Some(l) = fleet_l {
        let (inc, sig) = (incoming(l, stop_rx.clone()), signal(stop_rx.clone()));
        let r = Server::builder().add_service(fleet_svc);
        servers.push(tokio::spawn(async move {
            if let Err(e) = r.serve_with_incoming_shutdown(inc, sig).await {
                tracing::error!(error = %e, "fleet server failed");
            }
        }));
    }

    let board_routes = crate::dashboard::Board {
        dashboard: board.clone(),
        fleet: fleet.clone(),
        live: live.clone(),
        cfg: router_cfg.clone(),
    };
    let app = metrics
        .router()
        .merge(crate::dashboard::router(board_routes.clone()));
    let sig = signal(stop_rx.clone());
    servers.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_l, app)
            .with_graceful_shutdown(sig)
            .await
        {
            tracing::error!(error = %e, "metrics server failed");
        }
    }));

    let mut background = vec![tokio::spawn(board.sampler(Arc::new(board_routes)))];
    background.push(tokio::spawn(discovery::sweep(
        fleet.clone(),
        cfg.routing.report_timeout,
        discovery::FORGET_AFTER,
        {
            let live = live.clone();
            move |gone: &[herd_layer::fleet::NodeId]| {
                live.history.forget(gone);
                live.admission.forget(gone);
                live.prefix.forget(gone);
            }
        },
    )));
    let urls = cfg
        .endpoints
        .iter()
        .map(|a| format!("http://{a}"))
        .chain(cfg.routing.nodes.iter().cloned());
    for url in urls {
        background.push(tokio::spawn(discovery::agentless::poll(
            fleet.clone(),
            url,
            cfg.routing.poll_interval,
        )));
    }
    let advert = advertise(&cfg, grpc_addr, fleet_addr, with_tls);
    tracing::info!(
        %grpc_addr, %health_addr, %metrics_addr, tls = with_tls,
        endpoints = cfg.endpoints.len(),
        "herd-epp listening"
    );
    Ok(Running {
        grpc_addr,
        health_addr,
        metrics_addr,
        fleet_addr,
        _advert: advert,
        tls: with_tls,
        fleet,
        live,
        metrics,
        attachments,
        board,
        shutdown: stop_tx,
        servers,
        background,
    })
}

/// Advertise herd-epp as `_herd._tcp` so herd-nodes attach to it with no
/// flags, like they do to the proxy. Nodes speak plaintext herd.v1, so with
/// TLS on the ext_proc port the advertised port is the plaintext fleet port;
/// without one there is nothing a node could attach to.
fn advertise(
    cfg: &EppConfig,
    grpc: SocketAddr,
    fleet: Option<SocketAddr>,
    tls: bool,
) -> Option<discovery::mdns::Advert> {
    let port_addr = match (tls, fleet) {
        (_, Some(f)) => f,
        (false, None) => grpc,
        (true, None) => {
            tracing::info!(
                "mDNS off: with TLS on the ext_proc port, nodes need a plaintext --fleet-port to attach"
            );
            return None;
        }
    };
    let scope = cfg.routing.mdns.scope(port_addr.ip());
    if let discovery::mdns::Scope::Off(why) = &scope {
        tracing::info!(%why, "mDNS off");
        return None;
    }
    let ad = discovery::mdns::RouterAdvertisement {
        kind: "herd-epp".into(),
        id: format!("{:08x}-{}", std::process::id(), grpc.port()),
        port: port_addr.port(),
        token_required: cfg.routing.fleet_token.is_some(),
    };
    match discovery::mdns::advertise(&scope, &ad) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(error = %e, "cannot advertise over mDNS; nodes need --router");
            None
        }
    }
}
