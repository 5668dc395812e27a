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
    /// Whether the listener speaks TLS (`[tls]`).
    tls: bool,
}

impl Running {
    /// `http://` (`https://` with `[tls]`) and the listening address, for
    /// clients.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `http://` and the listening address: where herd-node attaches
    /// (plain HTTP/2, also when the port speaks TLS).
    pub fn node_url(&self) -> String {
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
        save_limits(&self.live, &self.telemetry);
        self.telemetry.finish().await;
    }

    /// Wait until the server stops (it runs until shutdown).
    pub async fn wait(self) -> std::io::Result<()> {
        let r = self.task.await.unwrap_or(Ok(()));
        save_limits(&self.live, &self.telemetry);
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
    let mut live = Live {
        limits: crate::limit::Limiter::new(cfg.routing.limits.max_tenants),
        ..Live::default()
    };
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
    // Each request is traced twice: by telemetry (traces, metrics, store,
    // health) and by the dashboard's routing feed.
    let board = api::dashboard::dashboard(&cfg, fleet.clone(), live.clone());
    let tracer: Arc<dyn crate::routed::Tracer> = Arc::new(crate::trace::Tee::new(vec![
        Arc::new(telemetry.clone()),
        board.tracer(false, cfg.app.health.cold_load_ms),
    ]));
    let stack = crate::stack::forwarding(
        fleet.clone(),
        live.clone(),
        &cfg.routing,
        Some(tracer),
        &router_id,
    );
    let open = crate::serve::Open::default();
    let keys = crate::app::auth::Keys::load(telemetry.store.clone(), cfg.app.auth.max_keys)
        .map_err(std::io::Error::other)?;
    restore_limits(&live, &telemetry);
    let tls = match cfg.app.tls.files() {
        Some((cert, key)) => {
            Some(crate::serve::tls_acceptor(cert, key).map_err(std::io::Error::other)?)
        }
        None => None,
    };
    let over_tls = tls.is_some();
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
        keys: keys.clone(),
        dashboard: board.clone(),
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
                live.prefix.forget(gone);
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
    background.push(tokio::spawn(board.sampler(Arc::new(
        api::dashboard::AppSources {
            fleet: fleet.clone(),
            live: live.clone(),
            telemetry: telemetry.clone(),
            cfg: cfg.clone(),
            attachments: attachments.clone(),
            seen: mdns.as_ref().map(|m| m.seen.clone()),
        },
    ))));
    if telemetry.store.is_some() {
        // Buckets below full are kept every few seconds, so a crash loses
        // little of what callers used (see `save_limits`).
        let (live, telemetry) = (live.clone(), telemetry.clone());
        background.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(LIMITS_SAVE_EVERY);
            loop {
                tick.tick().await;
                save_limits(&live, &telemetry);
            }
        }));
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
    let closing_board = board.clone();
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
                        // Dashboards hold their event stream open too.
                        closing_board.close();
                        let _ = stop_tx.send(true);
                    });
                    stop_rx
                };
                crate::serve::serve_tls(listener, app, serve_cfg, open, stop, tls).await;
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
        tls: over_tls,
    })
}

/// The setting under which the limit buckets are kept across restarts.
const LIMITS_SETTING: &str = "limits.buckets";

/// How often the limit buckets are saved while herd runs.
const LIMITS_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Keep the tenants' buckets that are not full (requests and tokens used
/// this minute) in the store. Requests in flight are not kept: none
/// survives a restart, so concurrency starts at zero.
fn save_limits(live: &Live, telemetry: &Telemetry) {
    if let Some(store) = &telemetry.store {
        let saved = live.limits.save();
        if let Ok(value) = serde_json::to_value(&saved) {
            store.submit(crate::app::store::Write::Setting {
                key: LIMITS_SETTING.into(),
                value,
            });
        }
    }
}

/// Take back the buckets [`save_limits`] kept: a caller who spent its
/// minute before a restart has not got it back after one.
fn restore_limits(live: &Live, telemetry: &Telemetry) {
    let Some(store) = &telemetry.store else {
        return;
    };
    match store.setting(LIMITS_SETTING) {
        Ok(Some(v)) => match serde_json::from_value::<Vec<crate::limit::SavedTenant>>(v) {
            Ok(saved) => live.limits.restore(&saved),
            Err(e) => {
                tracing::warn!(error = %e, "the saved rate-limit buckets are unreadable; every key starts with a full minute")
            }
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the saved rate-limit buckets"),
    }
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
