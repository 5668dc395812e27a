//! The routing core's configuration: what discovery, scoring, queueing,
//! retry and forwarding need, shared by the proxy and the Endpoint Picker.
//!
//! Plain structs with serde; every field has a default, so no file is needed.
//! The proxy's own sections (listen address, store, telemetry, health, log)
//! live in the app's config, which embeds this one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::queueing::QueueConfig;
use crate::rank::ScoringConfig;
use crate::retry::RetryConfig;

/// What discovery, scoring, queueing, retry and forwarding need; shared by the proxy and herd-epp.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Ollama URLs without a herd-node ("agentless"); the router polls
    /// them. Other engines as `KIND+URL` (`openai+http://…`,
    /// `stt+http://…?model=whisper-1`, `image+http://…`; see
    /// `herd_proto::engine`).
    pub nodes: Vec<String>,
    /// How often agentless nodes are polled.
    #[serde(with = "crate::duration")]
    pub poll_interval: Duration,
    /// How often attached nodes should report.
    #[serde(with = "crate::duration")]
    pub report_interval: Duration,
    /// A node that has not reported for this long is offline.
    #[serde(with = "crate::duration")]
    pub report_timeout: Duration,
    /// Largest request body accepted, bytes (413 above).
    pub max_body_bytes: usize,
    /// Memory all request bodies together may hold while read, parsed and
    /// kept for retries, bytes; a body that finds it spent is shed (503),
    /// one that would need more than half of it alone is refused (413).
    pub body_memory: usize,
    /// Longest gap while a client sends a body, before herd gives up (408).
    #[serde(with = "crate::duration")]
    pub body_timeout: Duration,
    /// Largest non-streamed upstream response buffered, bytes.
    pub max_response_bytes: usize,
    /// Time to connect to a node.
    #[serde(with = "crate::duration")]
    pub connect_timeout: Duration,
    /// Time to the upstream's response headers (includes a cold load).
    #[serde(with = "crate::duration")]
    pub response_timeout: Duration,
    /// A node that sends nothing within this many times the time scoring
    /// expected for its first token (queue, cold load, prefill) is taken as
    /// hung: the request goes elsewhere, and the node is left out for a while.
    pub first_byte_factor: f64,
    /// …but never sooner than this.
    #[serde(with = "crate::duration")]
    pub first_byte_min: Duration,
    /// How long a node that went silent stays out of routing before it is
    /// tried again.
    #[serde(with = "crate::duration")]
    pub unresponsive_pause: Duration,
    /// Longest silence between two chunks of a streaming response.
    #[serde(with = "crate::duration")]
    pub idle_timeout: Duration,
    /// Fallback models per model, tried in order when it cannot be served.
    pub fallback_models: std::collections::BTreeMap<String, Vec<String>>,
    /// `[aliases]`: names clients use → models the fleet has (see [`crate::alias`]).
    pub aliases: crate::alias::Aliases,
    /// `[alias_tiers]`: the model for cloud ids (`claude-*`, `gpt-*`) by size class.
    pub alias_tiers: crate::alias::AliasTiers,
    /// A token nodes must present to attach.
    pub fleet_token: Option<String>,
    /// `[scoring]`: the scorer's tunables.
    pub scoring: ScoringConfig,
    /// `[queue]`: admission per node:model.
    pub queue: QueueConfig,
    /// `[retry]`: attempts and the retry budget.
    pub retry: RetryConfig,
    /// `[context]`: what herd does with clients' `num_ctx`.
    pub context: ContextConfig,
    /// `[mdns]`: zero-config discovery.
    pub mdns: MdnsConfig,
    /// Pull a model no node has to the node where it fits best.
    pub autopull: crate::retry::AutoPullConfig,
    /// Warm the runner-up when a model's queue builds.
    pub prewarm: crate::prewarm::PrewarmConfig,
    /// `[dashboard]`: the live dashboard's limits (see [`crate::dashboard`]).
    pub dashboard: crate::dashboard::settings::DashboardConfig,
    /// `[limits]`: requests, tokens and concurrency per tenant (an API key
    /// in the proxy, an identity header in herd-epp).
    pub limits: crate::limit::LimitsConfig,
}

/// `[mdns]`: zero-config discovery (see [`crate::discovery::mdns`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MdnsConfig {
    /// Advertise `_herd._tcp` and list `_herd-node._tcp` machines. Off by
    /// itself when the router listens on loopback.
    pub enabled: bool,
    /// Only this network interface (e.g. `en0`); default: the interface of
    /// the listen address, or all when listening on 0.0.0.0.
    pub interface: Option<String>,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        MdnsConfig {
            enabled: true,
            interface: None,
        }
    }
}

impl MdnsConfig {
    /// Where multicast may go for a router listening on `listen`.
    pub fn scope(&self, listen: std::net::IpAddr) -> crate::discovery::mdns::Scope {
        crate::discovery::mdns::Scope::for_listen(listen, self.enabled, self.interface.as_deref())
    }
}

/// `[context]`: how herd treats clients' context sizes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextConfig {
    /// `strip` (default), `warn` or `passthrough`; see [`crate::forward::ContextProtection`].
    pub protection: crate::forward::ContextProtection,
}

pub use herd_proto::token::read_token_file;

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            nodes: Vec::new(),
            poll_interval: Duration::from_secs(5),
            report_interval: Duration::from_secs(2),
            report_timeout: Duration::from_secs(10),
            max_body_bytes: 32 * 1024 * 1024,
            body_memory: 1024 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
            max_response_bytes: 256 * 1024 * 1024,
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(600),
            first_byte_factor: 8.0,
            first_byte_min: Duration::from_secs(15),
            unresponsive_pause: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            fallback_models: Default::default(),
            aliases: Default::default(),
            alias_tiers: Default::default(),
            fleet_token: None,
            scoring: ScoringConfig::default(),
            queue: QueueConfig::default(),
            retry: RetryConfig::default(),
            context: Default::default(),
            mdns: Default::default(),
            autopull: Default::default(),
            prewarm: Default::default(),
            dashboard: Default::default(),
            limits: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
/// A config value that would make herd misbehave.
pub enum ConfigError {
    /// `name` cannot be used, and why.
    #[error("invalid value for {name}: {reason}")]
    Invalid {
        /// The setting, as written in the config file.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Top-level keys of the standalone proxy's own sections (`herd`'s listen
/// address, store, telemetry, health, log). One config file serves both
/// shapes: herd-epp reads the routing part and skips these.
pub const PROXY_KEYS: &[&str] = &[
    "listen",
    "shutdown_grace",
    "data_dir",
    "store",
    "telemetry",
    "health",
    "log",
    "server",
    "auth",
    "tls",
];

/// Why a config file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for herd.
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Where and why.
        source: toml::de::Error,
    },
    /// A value is not usable.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Reads a config file's text: the routing part, and the proxy's own
/// sections left as TOML (unknown keys are refused either way).
pub fn read_toml(text: &str, path: &str) -> Result<(RoutingConfig, toml::Table), ConfigFileError> {
    let parse = |source| ConfigFileError::Parse {
        path: path.to_string(),
        source,
    };
    let mut routing: toml::Table = toml::from_str(text).map_err(parse)?;
    let mut proxy = toml::Table::new();
    for k in PROXY_KEYS {
        if let Some(v) = routing.remove(*k) {
            proxy.insert((*k).to_string(), v);
        }
    }
    Ok((routing.try_into().map_err(parse)?, proxy))
}

/// Reads a config file (see [`read_toml`]).
pub fn read_file(path: &std::path::Path) -> Result<(RoutingConfig, toml::Table), ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    read_toml(&text, &path.display().to_string())
}

impl RoutingConfig {
    /// The body budget this config asks for (see [`crate::budget`]).
    pub fn body_budget(&self) -> crate::budget::BodyBudget {
        crate::budget::BodyBudget::new(self.body_memory, self.body_memory / 2)
    }

    /// What request parsing needs.
    pub fn parse_config(&self) -> crate::dialect::ParseConfig<'_> {
        crate::dialect::ParseConfig {
            fallback_models: &self.fallback_models,
            aliases: Some((&self.aliases, &self.alias_tiers)),
        }
    }

    /// The model `name` stands for under `[aliases]` and `[alias_tiers]`
    /// (itself when none maps it).
    pub fn resolve(&self, name: &str) -> String {
        self.aliases
            .resolve(&self.alias_tiers, name)
            .unwrap_or(name)
            .to_string()
    }

    /// Reject values that would make the router misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.alias_tiers
            .validate()
            .map_err(|e| ConfigError::Invalid {
                name: "alias_tiers",
                reason: e.to_string(),
            })?;
        if self
            .fleet_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ConfigError::Invalid {
                name: "fleet_token",
                reason: "is empty; give a real token or none".into(),
            });
        }
        if self.body_memory < self.max_body_bytes.saturating_mul(4) {
            return Err(ConfigError::Invalid {
                name: "body_memory",
                reason: format!(
                    "{} bytes cannot hold one body of max_body_bytes ({}) and its translation in the half one request may take; give at least four times max_body_bytes",
                    self.body_memory, self.max_body_bytes
                ),
            });
        }
        if !(self.first_byte_factor >= 1.0 && self.first_byte_factor.is_finite()) {
            return Err(ConfigError::Invalid {
                name: "first_byte_factor",
                reason: format!("{} must be at least 1", self.first_byte_factor),
            });
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "max_body_bytes",
                reason: "must be greater than 0".into(),
            });
        }
        if self.report_timeout <= self.report_interval {
            return Err(ConfigError::Invalid {
                name: "report_timeout",
                reason: format!(
                    "must be longer than report_interval ({:?})",
                    self.report_interval
                ),
            });
        }
        let window = self.retry.budget_window;
        if window < Duration::from_secs(1) || window > Duration::from_secs(60) {
            return Err(ConfigError::Invalid {
                name: "retry.budget_window",
                reason: format!("{window:?} is outside 1s..=60s"),
            });
        }
        if !(0.0..=1000.0).contains(&self.retry.budget_ratio) {
            return Err(ConfigError::Invalid {
                name: "retry.budget_ratio",
                reason: format!("{} is outside 0..=1000", self.retry.budget_ratio),
            });
        }
        self.limits
            .validate()
            .map_err(|reason| ConfigError::Invalid {
                name: "limits",
                reason,
            })?;
        for url in &self.nodes {
            // An Ollama URL, or another engine as `KIND+URL` (see
            // `herd_proto::engine`).
            if let Err(why) = herd_proto::engine::parse_engine(url) {
                return Err(ConfigError::Invalid {
                    name: "nodes",
                    reason: format!(
                        "{why}; give an http URL like http://10.0.0.5:11434, or an engine like openai+http://10.0.0.5:8080"
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file_and_validate() {
        RoutingConfig::default().validate().unwrap();
    }

    #[test]
    fn the_routing_part_of_a_shared_file_reads_alone() {
        let (r, proxy) = read_toml(
            "listen = \"127.0.0.1:1\"\nreport_timeout = \"30s\"\n[store]\nenabled = false\n",
            "t",
        )
        .unwrap();
        assert_eq!(r.report_timeout, Duration::from_secs(30));
        assert_eq!(proxy.len(), 2);
        let e = read_toml("lisen = 1", "t").unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c = RoutingConfig {
            nodes: vec!["not a url".into()],
            ..Default::default()
        };
        assert!(c.validate().is_err());
        c.nodes = vec!["https://10.0.0.5:11434".into()];
        assert!(c.validate().is_err(), "engines are reached over plain http");
        c.nodes = vec!["tts+http://10.0.0.5:1".into()];
        assert!(c.validate().is_err(), "no such engine kind");
        c.nodes = vec![
            "http://10.0.0.5:11434".into(),
            "openai+http://10.0.0.5:8080".into(),
            "stt+http://10.0.0.5:9000?model=whisper-1".into(),
        ];
        c.validate().unwrap();
        c.nodes.clear();
        c.report_timeout = Duration::from_secs(1);
        assert!(c.validate().is_err());
        c.report_timeout = Duration::from_secs(30);
        c.retry.budget_window = Duration::from_secs(120);
        assert!(
            c.validate().is_err(),
            "tower's budget panics outside 1..=60s"
        );
    }
}
