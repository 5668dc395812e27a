//! The proxy's configuration: the routing core's [`RoutingConfig`] plus what
//! only the standalone router has — its listen address, shutdown grace, the
//! store, telemetry, health and the JSON log.
//!
//! One TOML file holds both, flat, as users write it. Precedence, highest
//! first: command-line flags, `HERD_*` environment variables, the file given
//! with `--config`, defaults; every field has a default, so no file is
//! needed. Unknown keys are refused, whichever part they would belong to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigFileError, RoutingConfig};

/// Everything `herd` runs with.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RouterConfig {
    /// What the routing core needs (shared with herd-epp).
    #[serde(flatten)]
    pub routing: RoutingConfig,
    /// The proxy's own sections.
    #[serde(flatten)]
    pub app: AppSections,
}

/// The sections only the standalone router reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSections {
    /// Where the router listens (HTTP API and the herd.v1 gRPC service).
    pub listen: SocketAddr,
    /// On SIGTERM, how long requests in flight may take to finish before
    /// herd exits anyway (streams still open then are cut).
    #[serde(with = "crate::duration")]
    pub shutdown_grace: Duration,
    /// Where the store (and the JSON log) live; default: the user's data dir.
    pub data_dir: Option<PathBuf>,
    /// `[store]`.
    pub store: super::store::StoreConfig,
    /// `[telemetry]`.
    pub telemetry: super::telemetry::TelemetryConfig,
    /// `[health]`.
    pub health: super::health::HealthConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[server]`: connection cap, header and idle timeouts.
    pub server: crate::serve::ServeConfig,
    /// `[auth]`: who may call each part of the API (see [`crate::app::auth`]).
    pub auth: crate::app::auth::AuthConfig,
    /// `[tls]`: https on the listener.
    pub tls: TlsConfig,
}

/// `[tls]`: https on herd's listener, from PEM files. The same port keeps
/// speaking plain HTTP for herd-node's attachment (nodes speak plain
/// HTTP/2, authenticated by the fleet token).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM. With `key`, turns TLS on.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM.
    pub key: Option<PathBuf>,
    /// Plain-HTTP API calls on the TLS port: `false` (default) refuses
    /// them with a pointer to https, since keys travel in headers; `true`
    /// serves them too.
    pub allow_plaintext: bool,
}

impl TlsConfig {
    /// The certificate and key, when TLS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert.as_deref()?, self.key.as_deref()?))
    }
}

impl Default for AppSections {
    fn default() -> Self {
        AppSections {
            listen: SocketAddr::from(([0, 0, 0, 0], 11435)),
            shutdown_grace: Duration::from_secs(30),
            data_dir: None,
            store: Default::default(),
            telemetry: Default::default(),
            health: Default::default(),
            log: Default::default(),
            server: Default::default(),
            auth: Default::default(),
            tls: Default::default(),
        }
    }
}

/// `[log]`: the JSON log beside stderr.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Write `logs/herd-YYYY-MM-DD.jsonl` under the data dir.
    pub json: bool,
    /// Bound on all JSON log files together, bytes.
    pub max_total_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            json: true,
            max_total_bytes: 256 * 1024 * 1024,
        }
    }
}

impl RouterConfig {
    /// Read a TOML text (`path` only names it in errors).
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigFileError> {
        let (routing, app) = crate::config::read_toml(text, path)?;
        Self::assemble(routing, app, path)
    }

    /// Read a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigFileError> {
        let (routing, app) = crate::config::read_file(path)?;
        Self::assemble(routing, app, &path.display().to_string())
    }

    fn assemble(
        routing: RoutingConfig,
        app: toml::Table,
        path: &str,
    ) -> Result<Self, ConfigFileError> {
        let app = app.try_into().map_err(|source| ConfigFileError::Parse {
            path: path.to_string(),
            source,
        })?;
        Ok(RouterConfig { routing, app })
    }

    /// Reject values that would make the router misbehave.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if self.app.tls.cert.is_some() != self.app.tls.key.is_some() {
            return Err(crate::config::ConfigError::Invalid {
                name: "tls",
                reason: "give both cert and key (PEM files), or neither".into(),
            });
        }
        self.routing.validate()
    }

    /// The data directory in effect.
    pub fn data_dir(&self) -> PathBuf {
        self.app
            .data_dir
            .clone()
            .unwrap_or_else(super::store::default_data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PROXY_KEYS;

    #[test]
    fn defaults_need_no_file_and_validate() {
        let c = RouterConfig::default();
        c.validate().unwrap();
        assert_eq!(c.app.listen.port(), 11435);
    }

    #[test]
    fn toml_overrides_both_parts_and_rejects_unknown_fields() {
        let c = RouterConfig::from_toml(
            "listen = \"127.0.0.1:9\"\nnodes = [\"http://127.0.0.1:11434\"]\nreport_timeout = \"30s\"\n[queue]\nmax_waiting = 3\nmax_wait = \"1500ms\"\n[log]\njson = false\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.app.listen.port(), 9);
        assert!(!c.app.log.json);
        assert_eq!(c.routing.nodes.len(), 1);
        assert_eq!(c.routing.report_timeout, Duration::from_secs(30));
        assert_eq!(c.routing.queue.max_waiting, 3);
        assert_eq!(c.routing.queue.max_wait, Duration::from_millis(1500));
        let err = RouterConfig::from_toml("lisen = \"x\"", "t").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let err = RouterConfig::from_toml("[log]\njsn = true", "t").unwrap_err();
        assert!(err.to_string().contains("jsn"), "{err}");
    }

    #[test]
    fn app_keys_name_every_app_section() {
        // Serialize with every optional field set: each top-level key must be
        // one of PROXY_KEYS, or the app's part would never see it.
        let a = AppSections {
            data_dir: Some("/x".into()),
            tls: TlsConfig {
                cert: Some("/c".into()),
                key: Some("/k".into()),
                allow_plaintext: false,
            },
            ..Default::default()
        };
        let t: toml::Table = toml::Table::try_from(&a).unwrap();
        let mut keys: Vec<&str> = t.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = PROXY_KEYS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn printed_config_reads_back() {
        let c = RouterConfig::default();
        let text = toml::to_string(&c).unwrap();
        let back = RouterConfig::from_toml(&text, "printed").unwrap();
        assert_eq!(back.app.listen, c.app.listen);
        assert_eq!(back.routing.queue.max_waiting, c.routing.queue.max_waiting);
    }
}
