//! Command line of the `herd-node` binary.
//!
//! It lives in the library so tests can check that every flag has its
//! `HERD_NODE_*` environment twin (a service manager sets env, a human types
//! flags; both must work, and a flag beats the environment).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// herd's agent on each machine, and its simulated-device mode.
#[derive(Debug, Parser)]
#[command(name = "herd-node", version, about)]
pub struct Cli {
    /// Log filter, `RUST_LOG` syntax (e.g. `info,herd_node=debug`).
    #[arg(long, env = "HERD_LOG", default_value = "info", global = true)]
    pub log: String,
    /// What to run.
    #[command(subcommand)]
    pub command: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run a fleet of simulated devices.
    Simulate(SimulateArgs),
    /// Report the local Ollama to a router.
    Run(RunArgs),
}

/// `herd-node simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Fleet TOML file.
    #[arg(long, env = "HERD_NODE_FLEET", conflicts_with = "demo")]
    pub fleet: Option<PathBuf>,
    /// Use the built-in demo fleet (the default when no --fleet is given).
    #[arg(long, env = "HERD_NODE_DEMO")]
    pub demo: bool,
    /// Router to attach every device to, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "HERD_NODE_ROUTER")]
    pub router: Option<String>,
    /// Address every device binds (overrides the fleet file).
    #[arg(long, env = "HERD_NODE_BIND")]
    pub bind: Option<IpAddr>,
    /// Print the demo fleet as TOML and exit.
    #[arg(long, env = "HERD_NODE_PRINT_DEMO_CONFIG")]
    pub print_demo_config: bool,
}

/// `herd-node run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The local Ollama to poll.
    #[arg(
        long,
        env = "HERD_NODE_OLLAMA",
        default_value = "http://127.0.0.1:11434"
    )]
    pub ollama: String,
    /// Router to attach to.
    #[arg(long, env = "HERD_NODE_ROUTER")]
    pub router: String,
    /// This node's id (default: the host name).
    #[arg(long, env = "HERD_NODE_ID")]
    pub node_id: Option<String>,
    /// Token the router requires, if any.
    #[arg(long, env = "HERD_NODE_FLEET_TOKEN")]
    pub fleet_token: Option<String>,
    /// URL the router should use to reach Ollama (default: --ollama).
    #[arg(long, env = "HERD_NODE_PUBLIC_URL")]
    pub public_url: Option<String>,
}

/// The host name, for a default node id.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "herd-node".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_has_an_env_twin() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or("");
                assert!(
                    env.starts_with("HERD_NODE_") || env == "HERD_LOG",
                    "{} --{id} has no HERD_NODE_* env",
                    sub.get_name()
                );
            }
        }
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "herd-node",
            "run",
            "--router",
            "http://r:1",
            "--node-id",
            "n1",
        ])
        .expect("parse");
        let Cmd::Run(r) = cli.command else {
            panic!("run")
        };
        assert_eq!(
            (r.router.as_str(), r.node_id.as_deref()),
            ("http://r:1", Some("n1"))
        );
        assert!(Cli::try_parse_from(["herd-node", "simulate", "--demo", "--fleet", "x"]).is_err());
    }
}
