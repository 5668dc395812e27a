//! `herd-node`: run the agent on a machine with Ollama, or a simulated fleet.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use herd_node::agent::{self, AgentConfig, Controls};
use herd_node::capacity::{CapacityConfig, CapacityModel, SystemClock};
use herd_node::cli::{Cli, Cmd, MdnsArgs, ModeArg, RunArgs, SimulateArgs, host_name};
use herd_node::discover::{RouterFinder, advertise_node};
use herd_node::ollama::{OllamaClient, OllamaLimits, RealOptions, RealSource};
use herd_node::probe::Prober;
use herd_node::simulate::start_fleet_following;
use herd_node::{FleetConfig, start_fleet};
use herd_proto::mdns::Scope;
use herd_proto::v1::NodeMode;
use tokio::sync::watch;

/// How long a draining node waits for in-flight work.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Cmd::Simulate(a) => simulate(a).await,
        Cmd::Run(a) => run(a).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("herd-node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn simulate(a: SimulateArgs) -> Result<(), String> {
    if a.print_demo_config {
        print!(
            "{}",
            FleetConfig::demo().to_toml().map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let mut fleet = match &a.fleet {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            FleetConfig::from_toml(&text).map_err(|e| e.to_string())?
        }
        None => FleetConfig::demo(),
    };
    if let Some(bind) = a.bind {
        for d in &mut fleet.devices {
            d.bind = bind;
        }
    }
    if let Some(t) =
        herd_node::cli::fleet_token(a.fleet_token.clone(), a.fleet_token_file.as_deref())?
    {
        fleet.fleet_token = Some(t);
    }
    let mut has_router = a.router.is_some() || fleet.router.is_some();
    // Without a router, find one by mDNS — but only when the devices are
    // reachable from elsewhere: loopback-bound devices (tests, benchmarks)
    // never multicast.
    let bind = fleet.devices.first().map(|d| d.bind);
    let scope = match bind {
        Some(ip) if !has_router => mdns_scope(&a.mdns, ip),
        _ => Scope::Off("a router was given".into()),
    };
    let mut _finder = None;
    let devices = if let Scope::Off(_) = scope {
        start_fleet(fleet, a.router)
            .await
            .map_err(|e| e.to_string())?
    } else {
        let finder = RouterFinder::start(&scope, fleet.fleet_token.is_some())
            .map_err(|e| format!("mDNS discovery: {e}"))?;
        let devices = start_fleet_following(fleet, finder.urls())
            .await
            .map_err(|e| e.to_string())?;
        _finder = Some(finder);
        has_router = true;
        devices
    };
    let _adverts: Vec<_> = devices
        .iter()
        .filter_map(|d| advertise_node(&scope, d.name(), d.addr().port()))
        .collect();
    for d in &devices {
        println!("{} {}", d.name(), d.url());
    }
    shutdown_signal().await;
    tracing::info!("draining");
    for d in &devices {
        d.controls().set_draining(true);
    }
    let drain = async {
        if has_router {
            for d in &devices {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), d.controls().draining_reported())
                        .await;
            }
        }
        for d in &devices {
            d.wait_idle(DRAIN_LIMIT).await;
        }
    };
    if tokio::time::timeout(DRAIN_LIMIT, drain).await.is_err() {
        tracing::warn!("in-flight requests still running after {DRAIN_LIMIT:?}; exiting");
    }
    for d in devices {
        d.shutdown().await;
    }
    Ok(())
}

/// Where this node may multicast: `--mdns-interface`, else everywhere the
/// bind address allows (loopback → nowhere).
fn mdns_scope(m: &MdnsArgs, bind: std::net::IpAddr) -> Scope {
    Scope::for_listen(bind, !m.no_mdns, m.mdns_interface.as_deref())
}

async fn run(a: RunArgs) -> Result<(), String> {
    let node_id = a.node_id.clone().unwrap_or_else(host_name);
    herd_proto::node::valid_node_id(&node_id).map_err(|e| format!("--node-id: {e}"))?;
    let token = herd_node::cli::fleet_token(a.fleet_token.clone(), a.fleet_token_file.as_deref())?;
    let capacity = if a.no_learn {
        None
    } else {
        let dir = a
            .data_dir
            .clone()
            .unwrap_or_else(herd_node::cli::default_data_dir);
        match CapacityModel::open(
            &dir,
            Arc::new(SystemClock::local()),
            CapacityConfig::default(),
        ) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(error = %e, "capacity learning off: cannot open its store");
                None
            }
        }
    };
    // Engines are reached at http://host:port; a path or query would be
    // sent to the router as is and followed by it.
    let ollama = herd_proto::node::engine_url(&a.ollama).map_err(|e| format!("--ollama: {e}"))?;
    let public = match &a.public_url {
        Some(u) => herd_proto::node::engine_url(u).map_err(|e| format!("--public-url: {e}"))?,
        None => ollama.clone(),
    };
    let extra = a
        .engines
        .iter()
        .map(|e| herd_proto::engine::parse_engine(e).map_err(|why| format!("--engine-url: {why}")))
        .collect::<Result<Vec<_>, _>>()?;
    if extra.len() > herd_proto::engine::MAX_EXTRA_ENGINES {
        return Err(format!(
            "--engine-url: at most {} engines",
            herd_proto::engine::MAX_EXTRA_ENGINES
        ));
    }
    let client = OllamaClient::new(ollama.clone());
    // A herd router is not an Ollama: reporting it as this node's engine
    // would send the router's requests back to itself.
    if let Ok(v) = client.version().await
        && let Some(why) = v.not_an_engine()
    {
        return Err(format!("--ollama {ollama}: {why}"));
    }
    let source = Arc::new(RealSource::with_options(
        client,
        public,
        OllamaLimits::from_env(),
        Prober::default(),
        RealOptions {
            engine: a.engine,
            meeting: a.meeting,
            capacity,
            sample_every: Duration::from_secs(a.sample_secs.max(1)),
            extra,
        },
    ));
    let controls = Arc::new(Controls::default());
    match a.mode {
        ModeArg::Auto => {}
        ModeArg::Full => controls.set_mode(NodeMode::Full),
        ModeArg::Paused => controls.set_mode(NodeMode::Paused),
        ModeArg::SmallOnly => controls.set_mode(NodeMode::SmallOnly),
    }
    let mut cfg = AgentConfig::new(a.router.clone().unwrap_or_default(), node_id.clone());
    cfg.fleet_token = token.clone().unwrap_or_default();
    let scope = Scope::for_listen(
        std::net::Ipv4Addr::UNSPECIFIED.into(),
        !a.mdns.no_mdns,
        a.mdns.mdns_interface.as_deref(),
    );
    let engine_port = herd_proto::node::addr_of(&a.ollama).map_or(11434, |s| s.port());
    let _advert = advertise_node(&scope, &node_id, engine_port);
    let (_finder, routers) = match &a.router {
        Some(url) => (None, watch::channel(Some(url.clone())).1),
        None => {
            if let Scope::Off(why) = &scope {
                return Err(format!(
                    "no --router given and mDNS is off ({why}); give --router URL"
                ));
            }
            let f = RouterFinder::start(&scope, token.is_some())
                .map_err(|e| format!("mDNS discovery: {e}; give --router URL"))?;
            let urls = f.urls();
            (Some(f), urls)
        }
    };
    let agent = tokio::spawn(agent::run_following(cfg, source, controls.clone(), routers));
    shutdown_signal().await;
    tracing::info!("draining");
    controls.set_draining(true);
    // Ollama does not expose in-flight requests; tell the router, give it a
    // moment to stop sending, and leave.
    let _ = tokio::time::timeout(Duration::from_secs(5), controls.draining_reported()).await;
    agent.abort();
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
