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
    /// Fleet token every device presents (overrides the fleet file).
    #[arg(long, env = "HERD_NODE_FLEET_TOKEN", hide_env_values = true)]
    pub fleet_token: Option<String>,
    /// File holding the fleet token (first line).
    #[arg(long, env = "HERD_NODE_FLEET_TOKEN_FILE")]
    pub fleet_token_file: Option<PathBuf>,
    /// How the devices find a router and announce themselves on the LAN.
    #[command(flatten)]
    pub mdns: MdnsArgs,
}

/// mDNS discovery flags shared by `run` and `simulate`.
#[derive(Debug, Args, Clone, Default)]
pub struct MdnsArgs {
    /// Do not browse for a router nor advertise this node over mDNS.
    #[arg(long, env = "HERD_NODE_NO_MDNS")]
    pub no_mdns: bool,
    /// Use mDNS on this network interface only (e.g. en0).
    #[arg(long, env = "HERD_NODE_MDNS_INTERFACE")]
    pub mdns_interface: Option<String>,
}

/// `--mode`: who decides the node's mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// herd-node decides (full; paused or small-only in a meeting); the
    /// router's API can still pin it.
    #[default]
    Auto,
    /// Pinned: take any work.
    Full,
    /// Pinned: take no work.
    Paused,
    /// Pinned: take only small models.
    SmallOnly,
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
    /// Router to attach to (e.g. http://10.0.0.2:11435); default: found by
    /// mDNS, and followed when it restarts or moves.
    #[arg(long, env = "HERD_NODE_ROUTER")]
    pub router: Option<String>,
    /// This node's id (default: the host name).
    #[arg(long, env = "HERD_NODE_ID")]
    pub node_id: Option<String>,
    /// Token the router requires, if any.
    #[arg(long, env = "HERD_NODE_FLEET_TOKEN", hide_env_values = true)]
    pub fleet_token: Option<String>,
    /// File holding the fleet token (first line; beats --fleet-token).
    #[arg(long, env = "HERD_NODE_FLEET_TOKEN_FILE")]
    pub fleet_token_file: Option<PathBuf>,
    /// Mode: auto, or pinned to full, paused or small-only.
    #[arg(long, env = "HERD_NODE_MODE", value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,
    /// What a meeting (camera or microphone in use, macOS) does.
    #[arg(long, env = "HERD_NODE_MEETING", value_enum, default_value_t = crate::ollama::MeetingAction::Pause)]
    pub meeting: crate::ollama::MeetingAction,
    /// Engine kind: auto-detect, Ollama, or an OpenAI-only server.
    #[arg(long, env = "HERD_NODE_ENGINE", value_enum, default_value_t = crate::ollama::EngineChoice::Auto)]
    pub engine: crate::ollama::EngineChoice,
    /// Where the capacity model is stored (default: the user's data dir).
    #[arg(long, env = "HERD_NODE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Do not learn availability (report it as unknown).
    #[arg(long, env = "HERD_NODE_NO_LEARN")]
    pub no_learn: bool,
    /// Seconds between two capacity samples.
    #[arg(long, env = "HERD_NODE_SAMPLE_SECS", default_value_t = 60)]
    pub sample_secs: u64,
    /// How the node finds its router and announces itself on the LAN.
    #[command(flatten)]
    pub mdns: MdnsArgs,
    /// URL the router should use to reach Ollama (default: --ollama).
    #[arg(long, env = "HERD_NODE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Another engine on this machine, as KIND+URL (repeat, or
    /// comma-separate in HERD_NODE_ENGINES): `openai+http://127.0.0.1:8080`,
    /// `stt+http://127.0.0.1:9000?model=whisper-1`, `image+http://…`.
    /// The router reaches it at that URL: give an address it can reach.
    #[arg(long = "engine-url", env = "HERD_NODE_ENGINES", value_delimiter = ',')]
    pub engines: Vec<String>,
}

/// The token from a file (preferred) or a flag.
pub fn fleet_token(
    flag: Option<String>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    match file {
        Some(p) => herd_proto::token::read_token_file(p).map(Some),
        None => Ok(flag.filter(|t| !t.trim().is_empty())),
    }
}

/// herd-node's data directory: `$XDG_DATA_HOME/herd-node`,
/// `~/Library/Application Support/herd-node` on macOS, else
/// `~/.local/share/herd-node`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("herd-node");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    if cfg!(target_os = "macos") {
        home.join("Library/Application Support/herd-node")
    } else {
        home.join(".local/share/herd-node")
    }
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
            (r.router.as_deref(), r.node_id.as_deref()),
            (Some("http://r:1"), Some("n1"))
        );
        assert_eq!(r.mode, ModeArg::Auto);
        let cli = Cli::try_parse_from(["herd-node", "run", "--mode", "small-only", "--no-mdns"])
            .expect("parse");
        let Cmd::Run(r) = cli.command else {
            panic!("run")
        };
        assert!(r.router.is_none() && r.mdns.no_mdns);
        assert_eq!(r.mode, ModeArg::SmallOnly);
        let cli = Cli::try_parse_from([
            "herd-node",
            "run",
            "--engine-url",
            "stt+http://10.0.0.5:9000?model=w",
            "--engine-url",
            "image+http://10.0.0.5:7860",
        ])
        .expect("parse");
        let Cmd::Run(r) = cli.command else {
            panic!("run")
        };
        assert_eq!(r.engines.len(), 2);
        assert!(Cli::try_parse_from(["herd-node", "simulate", "--demo", "--fleet", "x"]).is_err());
    }
}
