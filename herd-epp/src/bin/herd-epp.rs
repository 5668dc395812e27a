//! `herd-epp`: herd as an Envoy ext_proc Endpoint Picker.
//!
//! Every flag has a `HERD_EPP_*` environment variable; flags win over the
//! environment, which wins over the router config file (`--config`, the
//! same TOML the `herd` proxy reads for scoring, queueing and retry).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use herd_epp::config::{EppConfig, TlsMode, parse_endpoint, read_endpoints_file};
use herd_layer::config::RoutingConfig;
use herd_layer::duration;

#[derive(Parser, Debug)]
#[command(
    name = "herd-epp",
    version,
    about = "herd's Endpoint Picker for Envoy / Envoy AI Gateway (ext_proc)"
)]
struct Cli {
    /// ext_proc gRPC port (also gRPC health and herd.v1 node attachments).
    #[arg(long, env = "HERD_EPP_GRPC_PORT", default_value_t = 9002)]
    grpc_port: u16,
    /// gRPC health port (plaintext).
    #[arg(long, env = "HERD_EPP_GRPC_HEALTH_PORT", default_value_t = 9003)]
    grpc_health_port: u16,
    /// Prometheus metrics port (`/metrics`).
    #[arg(long, env = "HERD_EPP_METRICS_PORT", default_value_t = 9090)]
    metrics_port: u16,
    /// Separate plaintext port for herd.v1 node attachments (default: the ext_proc port).
    #[arg(long, env = "HERD_EPP_FLEET_PORT")]
    fleet_port: Option<u16>,
    /// Address every port binds to.
    #[arg(long, env = "HERD_EPP_BIND", default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    /// Serve ext_proc without TLS.
    #[arg(long, env = "HERD_EPP_PLAINTEXT")]
    plaintext: bool,
    /// TLS certificate (PEM); with --tls-key, replaces the self-signed one.
    #[arg(long, env = "HERD_EPP_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "HERD_EPP_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Static endpoint `ip:port` of an Ollama (repeat, or comma-separate in the env var).
    #[arg(long = "endpoint", env = "HERD_EPP_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// File with one `ip:port` per line (`#` comments).
    #[arg(long, env = "HERD_EPP_ENDPOINTS_FILE")]
    endpoints_file: Option<PathBuf>,
    /// Router TOML (scoring, queue, retry, intervals) shared with `herd`.
    #[arg(long, env = "HERD_EPP_CONFIG")]
    config: Option<PathBuf>,
    /// Token nodes must present to attach.
    #[arg(long, env = "HERD_EPP_FLEET_TOKEN", hide_env_values = true)]
    fleet_token: Option<String>,
    /// How often static endpoints are polled (e.g. 2s).
    #[arg(long, env = "HERD_EPP_POLL_INTERVAL", value_parser = duration::parse)]
    poll_interval: Option<Duration>,
    /// Requests that may wait per endpoint:model before shedding with 429.
    #[arg(long, env = "HERD_EPP_QUEUE_MAX_WAITING")]
    queue_max_waiting: Option<u32>,
    /// Longest wait for a slot before refusing with 503 (e.g. 30s).
    #[arg(long, env = "HERD_EPP_QUEUE_MAX_WAIT", value_parser = duration::parse)]
    queue_max_wait: Option<Duration>,
    /// Largest request body, bytes.
    #[arg(long, env = "HERD_EPP_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Do not advertise `_herd._tcp` over mDNS.
    #[arg(long, env = "HERD_EPP_NO_MDNS")]
    no_mdns: bool,
    /// Advertise over mDNS only on this interface.
    #[arg(long, env = "HERD_EPP_MDNS_INTERFACE")]
    mdns_interface: Option<String>,
    /// The request header naming the caller (e.g. x-user-id): each value
    /// is a tenant limited by the config's `[limits]`.
    #[arg(long, env = "HERD_EPP_TENANT_HEADER")]
    tenant_header: Option<String>,
    /// Log filter, e.g. info or herd_epp=debug.
    #[arg(long, env = "HERD_EPP_LOG", default_value = "info")]
    log: String,
}

impl Cli {
    fn config(&self) -> Result<EppConfig, Box<dyn std::error::Error>> {
        // herd's own config file works here too: its proxy-only sections
        // (store, telemetry, …) are read past.
        let mut router = match &self.config {
            Some(p) => herd_layer::config::read_file(p)?.0,
            None => RoutingConfig::default(),
        };
        if let Some(t) = &self.fleet_token {
            router.fleet_token = Some(t.clone());
        }
        if let Some(d) = self.poll_interval {
            router.poll_interval = d;
        }
        if let Some(n) = self.queue_max_waiting {
            router.queue.max_waiting = n;
        }
        if let Some(d) = self.queue_max_wait {
            router.queue.max_wait = d;
        }
        if let Some(n) = self.max_body_bytes {
            router.max_body_bytes = n;
        }
        if self.no_mdns {
            router.mdns.enabled = false;
        }
        if let Some(i) = &self.mdns_interface {
            router.mdns.interface = Some(i.clone());
        }
        if let Some(h) = &self.tenant_header {
            router.limits.header = Some(h.clone());
        }
        let mut endpoints = Vec::new();
        for e in &self.endpoints {
            endpoints.push(parse_endpoint(e)?);
        }
        if let Some(f) = &self.endpoints_file {
            endpoints.extend(read_endpoints_file(f)?);
        }
        let tls = match (&self.tls_cert, &self.tls_key, self.plaintext) {
            (_, _, true) => TlsMode::Plaintext,
            (Some(cert), Some(key), false) => TlsMode::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsMode::SelfSigned,
        };
        let at = |port| SocketAddr::new(self.bind, port);
        Ok(EppConfig {
            grpc_listen: at(self.grpc_port),
            health_listen: at(self.grpc_health_port),
            metrics_listen: at(self.metrics_port),
            fleet_listen: self.fleet_port.map(at),
            tls,
            endpoints,
            routing: router,
        })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cfg = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herd-epp: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let running = match herd_epp::start(cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herd-epp: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    std::process::ExitCode::SUCCESS
}
