//! herd-epp's configuration: ports, TLS, where nodes come from, and the
//! router tunables it shares with the proxy (scoring, queueing, retry).
//!
//! The binary fills this from flags and `HERD_EPP_*` variables; tests build
//! it directly. Static endpoints are validated here, once, so a typo fails at
//! start instead of leaving a node silently unroutable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use herd_layer::config::RoutingConfig;

/// How the ext_proc port speaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS with a certificate generated at start (Envoy AI Gateway's default
    /// EPP cluster speaks TLS and accepts any certificate).
    SelfSigned,
    /// TLS with a certificate and key from PEM files.
    Files {
        /// PEM certificate (chain) presented to Envoy.
        cert: PathBuf,
        /// PEM private key of `cert`.
        key: PathBuf,
    },
    /// Plain HTTP/2 (a raw Envoy with a plaintext cluster).
    Plaintext,
}

/// Everything herd-epp needs to run.
#[derive(Clone, Debug)]
pub struct EppConfig {
    /// ext_proc gRPC (plus gRPC health and, unless `fleet_listen` is set, herd.v1).
    pub grpc_listen: SocketAddr,
    /// gRPC health only, always plaintext (Kubernetes probes).
    pub health_listen: SocketAddr,
    /// Prometheus text at `/metrics`.
    pub metrics_listen: SocketAddr,
    /// A separate plaintext port for herd.v1 node attachments; when unset
    /// nodes attach on the ext_proc port (which needs `Plaintext` for
    /// herd-node, as it connects over plain HTTP/2).
    pub fleet_listen: Option<SocketAddr>,
    /// Whether the ext_proc port speaks TLS; the other ports are always plaintext.
    pub tls: TlsMode,
    /// Static endpoints (`ip:port` of an Ollama), polled agentlessly.
    pub endpoints: Vec<SocketAddr>,
    /// Scoring, queueing, retry, poll and report intervals, body limit, fleet token.
    pub routing: RoutingConfig,
}

impl Default for EppConfig {
    fn default() -> Self {
        EppConfig {
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], 9002)),
            health_listen: SocketAddr::from(([0, 0, 0, 0], 9003)),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            fleet_listen: None,
            tls: TlsMode::SelfSigned,
            endpoints: Vec::new(),
            routing: RoutingConfig::default(),
        }
    }
}

/// A static endpoint that is not usable.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// Not a socket address; host names are refused, as Envoy routes to IPs.
    #[error("endpoint {0:?} is not an ip:port (or http://ip:port) address")]
    Invalid(String),
    /// The endpoints file could not be read.
    #[error("cannot read endpoints file {path}: {source}")]
    Read {
        /// The file, as given.
        path: String,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// A line of the endpoints file is not a usable endpoint.
    #[error("{path}:{line}: {source}")]
    InFile {
        /// The file, as given.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with that line.
        source: Box<EndpointError>,
    },
}

/// Parse one endpoint: `ip:port`, `[v6]:port` or `http://ip:port`.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, EndpointError> {
    let t = s.trim();
    let t = t.strip_prefix("http://").unwrap_or(t);
    let t = t.trim_end_matches('/');
    t.parse::<SocketAddr>()
        .map_err(|_| EndpointError::Invalid(s.to_string()))
}

/// Read an endpoints file: one `ip:port` per line; blank lines and `#`
/// comments are ignored.
pub fn read_endpoints_file(path: &Path) -> Result<Vec<SocketAddr>, EndpointError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| EndpointError::Read {
        path: p.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(parse_endpoint(line).map_err(|e| EndpointError::InFile {
            path: p.clone(),
            line: i + 1,
            source: Box::new(e),
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_endpoint("127.0.0.1:8000").unwrap(),
            "127.0.0.1:8000".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("http://10.0.0.5:11434/").unwrap(),
            "10.0.0.5:11434".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("[::1]:9").unwrap(),
            "[::1]:9".parse().unwrap()
        );
        assert!(parse_endpoint("mac.local:11434").is_err());
        assert!(parse_endpoint("10.0.0.5").is_err());
    }

    #[test]
    fn endpoints_files_skip_comments_and_report_lines() {
        let dir = std::env::temp_dir().join(format!("herd-epp-eps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("eps.txt");
        std::fs::write(&f, "# macs\n10.0.0.5:11434\n\n10.0.0.6:11434 # studio\n").unwrap();
        assert_eq!(read_endpoints_file(&f).unwrap().len(), 2);
        std::fs::write(&f, "10.0.0.5:11434\nnope\n").unwrap();
        let e = read_endpoints_file(&f).unwrap_err().to_string();
        assert!(e.contains(":2:"), "{e}");
    }
}
