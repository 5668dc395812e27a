//! The standalone router: one port for the HTTP API and herd.v1 gRPC.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::api::{self, AppState};
use crate::app::config::RouterConfig;
use crate::app::health::Recent;
use crate::app::store::Store;
use crate::app::telemetry::{Metrics, Otel, Telemetry};
use crate::discovery::{self, Attachments, FleetService};
use crate::fleet::Fleet;
use crate::live::Live;

/// Open the store (a store that cannot be opened stops herd), load what it
/// learned into the live history, and set up the exporters.
fn telemetry(cfg: &RouterConfig, fleet: &Fleet, live: &Live) -> std::io::Result<Telemetry> {
    let recent = Recent::new(cfg.app.health.recent);
    let store = if cfg.app.store.enabled {
        let dir = cfg.data_dir();
        let store = Store::open(&dir, &cfg.app.store).map_err(std::io::Error::other)?;
        let perf = store.perf().map_err(std::io::Error::other)?;
        for (node, model, book) in &perf {
            live.history.restore(node, model, book);
        }
        let benches = store.benchmarks().map_err(std::io::Error::other)?;
        for b in &benches {
            live.history
                .calibrate(&b.node, &b.model, b.ttft_ms, b.tokens_per_s_single);
            recent.set_baseline(&b.node, &b.model, b.ttft_ms);
        }
        tracing::info!(path = %store.path().display(), series = perf.len(), benchmarks = benches.len(), "store opened; history loaded");
        Some(store)
    } else {
        None
    };
    let otel = Otel::from_config(&cfg.app.telemetry, fleet, &live.admission)
        .map_err(std::io::Error::other)?;
    Ok(Telemetry {
        metrics: Metrics::new(),
        otel,
        store,
        history: live.history.clone(),
        recent,
    })
}

/// A running router.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (the real port when the config said 0).
    pub addr: SocketAddr,
    /// The nodes it knows and their latest reports.
    pub fleet: Fleet,
    /// Admission load and learned history, as the routing stack sees them.
    pub live: Live,
    /// herd-nodes attached over herd.v1: where to send them commands.
    pub attachments: Arc<Attachments>,
    /// Metrics, OTel export, the store and the health window.
    pub telemetry: Arc<Telemetry>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
    /// The `_herd._tcp` advert (withdrawn when the router stops) and the
    /// herd-node browser; `None` when mDNS is off.
    mdns: Option<discovery::mdns::RouterMdns>,
}

impl Running {
    /// `http://` and the listening address, for clients and nodes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// herd-nodes seen over mDNS, when mDNS is on.
    pub fn seen_nodes(&self) -> Option<&discovery::mdns::SeenNodes> {
        self.mdns.as_ref().map(|m| &m.seen)
    }

    /// Stop accepting, let in-flight requests finish, stop background tasks,
    /// flush telemetry and close the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in &self.background {
            t.abort();
        }
        let _ = self.task.await;
        self.telemetry.finish().await;
    }

    /// Wait until the server stops (it runs until shutdown).
    pub async fn wait(self) -> std::io::Result<()> {
        let r = self.task.await.unwrap_or(Ok(()));
        self.telemetry.finish().await;
        r
    }

    /// Stops accepting and drains in-flight requests when sent `true`: for a
    /// signal handler while [`Running::wait`] owns the router.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Bind and start the router.
pub async fn start(cfg: RouterConfig) -> std::io::Result<Running> {
    let listener = crate::serve::bind(cfg.app.listen)?;
    start_on(listener, cfg).await
}

/// Start the router on a listener already bound (`cfg.app.listen` is not
/// used).
pub async fn start_on(listener: TcpListener, cfg: RouterConfig) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let cfg = Arc::new(cfg);
    let fleet = Fleet::new();
    let mut live = Live::default();
    if cfg.routing.autopull.enabled {
        live.autopull = Some(crate::retry::AutoPull::new(
            fleet.clone(),
            cfg.routing.autopull.clone(),
            Arc::new(cfg.routing.scoring.clone()),
        ));
    }
    let attachments = Arc::new(Attachments::default());
    let telemetry = Arc::new(telemetry(&cfg, &fleet, &live)?);
    // One id names this router: in its mDNS advert, to nodes that attach,
    // and in `x-herd-hop` on everything it forwards.
    let router_id = format!("herd-{:08x}", fastrand::u32(..));
    let mdns = start_mdns(&cfg, addr, &router_id);
    let prewarms = crate::prewarm::Prewarms::default();
    let tracer: Arc<dyn crate::routed::Tracer> = Arc::new(telemetry.clone());
    let stack = crate::stack::forwarding(
        fleet.clone(),
        live.clone(),
        &cfg.routing,
        Some(tracer),
        &router_id,
    );
    let open = crate::serve::Open::default();
    let state = AppState {
        stack,
        fleet: fleet.clone(),
        live: live.clone(),
        cfg: cfg.clone(),
        attachments: attachments.clone(),
        client: crate::client::client(cfg.routing.connect_timeout),
        telemetry: telemetry.clone(),
        seen_nodes: mdns.as_ref().map(|m| m.seen.clone()),
        prewarms: prewarms.clone(),
        budget: cfg.routing.body_budget(),
        router_id: router_id.clone(),
        connections: open.clone(),
        uploads: crate::client::client_for(cfg.routing.connect_timeout),
        blobs: Default::default(),
    };
    let grpc = FleetService::new(
        fleet.clone(),
        attachments.clone(),
        cfg.routing.fleet_token.clone(),
        cfg.routing.report_interval,
        cfg.routing.report_timeout,
        router_id.clone(),
    )
    .into_server();
    // gRPC shares the port: its one service lives under its own path, and
    // every other path stays with the HTTP API (and its client-format 404).
    let app = api::router(state)
        .route_service("/herd.v1.Fleet/{*method}", grpc)
        .layer(tower_http::catch_panic::CatchPanicLayer::new());

    let mut background = vec![tokio::spawn(discovery::sweep(
        fleet.clone(),
        cfg.routing.report_timeout,
        discovery::FORGET_AFTER,
        {
            let live = live.clone();
            move |gone: &[crate::fleet::NodeId]| {
                live.history.forget(gone);
                live.admission.forget(gone);
            }
        },
    ))];
    if cfg.routing.prewarm.enabled {
        background.push(tokio::spawn(crate::prewarm::run(
            fleet.clone(),
            live.clone(),
            live.admission.clone(),
            attachments.clone(),
            Arc::new(cfg.routing.scoring.clone()),
            cfg.routing.prewarm.clone(),
            prewarms,
        )));
    }
    for url in &cfg.routing.nodes {
        background.push(tokio::spawn(discovery::agentless::poll(
            fleet.clone(),
            url.clone(),
            cfg.routing.poll_interval,
        )));
    }

    let (tx, rx) = watch::channel(false);
    let grace = cfg.app.shutdown_grace;
    let serve_cfg = cfg.app.server.clone();
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let closing = attachments.clone();
    let task = tokio::spawn(async move {
        // Routes are built once (`Router` clones share them); TCP_NODELAY,
        // header and idle timeouts and the connection cap are the serve
        // loop's (see [`crate::serve`]).
        let serve = {
            let rx = rx.clone();
            async move {
                let stop = {
                    let (stop_tx, stop_rx) = watch::channel(false);
                    tokio::spawn(async move {
                        stopped(rx).await;
                        // Attached nodes hold a gRPC stream open for as long
                        // as the router runs; ending them lets the drain
                        // finish and tells the nodes to look for a router.
                        closing.close_all();
                        let _ = stop_tx.send(true);
                    });
                    stop_rx
                };
                crate::serve::serve(listener, app, serve_cfg, open, stop).await;
                Ok::<(), std::io::Error>(())
            }
        };
        // In-flight requests get `shutdown_grace` to finish; then herd
        // stops anyway (a stream can last many minutes).
        tokio::select! {
            r = serve => r,
            () = async {
                stopped(rx).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(?grace, "requests still in flight after the shutdown grace; stopping anyway");
                Ok(())
            }
        }
    });
    tracing::info!(%addr, nodes = cfg.routing.nodes.len(), "herd router listening");
    Ok(Running {
        addr,
        fleet,
        live,
        attachments,
        telemetry,
        shutdown: tx,
        task,
        background,
        mdns,
    })
}

/// Advertise `_herd._tcp` where the config allows; a failure is logged, not
/// fatal (nodes can still be pointed at the router with `--router`).
fn start_mdns(
    cfg: &RouterConfig,
    addr: SocketAddr,
    router_id: &str,
) -> Option<discovery::mdns::RouterMdns> {
    let scope = cfg.routing.mdns.scope(addr.ip());
    if let discovery::mdns::Scope::Off(why) = &scope {
        tracing::info!(%why, "mDNS off");
        return None;
    }
    let ad = discovery::mdns::RouterAdvertisement {
        kind: "herd".into(),
        id: router_id.to_string(),
        port: addr.port(),
        token_required: cfg.routing.fleet_token.is_some(),
    };
    match discovery::mdns::start_router(&scope, &ad) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "cannot advertise over mDNS; nodes need --router");
            None
        }
    }
}
