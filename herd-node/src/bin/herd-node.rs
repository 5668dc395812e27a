//! `herd-node`: run the agent on a machine with Ollama, or a simulated fleet.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use herd_node::agent::{self, AgentConfig, Controls};
use herd_node::cli::{Cli, Cmd, RunArgs, SimulateArgs, host_name};
use herd_node::ollama::{OllamaClient, OllamaLimits, RealSource};
use herd_node::{FleetConfig, start_fleet};

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
    let has_router = a.router.is_some() || fleet.router.is_some();
    let devices = start_fleet(fleet, a.router)
        .await
        .map_err(|e| e.to_string())?;
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

async fn run(a: RunArgs) -> Result<(), String> {
    let node_id = a.node_id.unwrap_or_else(host_name);
    let client = OllamaClient::new(a.ollama.clone());
    let source = Arc::new(RealSource::new(
        client,
        a.public_url.unwrap_or(a.ollama),
        OllamaLimits::from_env(),
    ));
    let mut cfg = AgentConfig::new(a.router, node_id);
    cfg.fleet_token = a.fleet_token.unwrap_or_default();
    let controls = Arc::new(Controls::default());
    let agent = tokio::spawn(agent::run(cfg, source, controls.clone()));
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
