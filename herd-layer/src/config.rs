//! The router's configuration.
//!
//! Plain structs with serde; every field has a default, so no file is needed.
//! Precedence, highest first: command-line flags, `HERD_*` environment
//! variables, the TOML file given with `--config`, defaults.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::queueing::QueueConfig;
use crate::retry::RetryConfig;
use crate::scoring::ScoringConfig;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Where the router listens (HTTP API and the herd.v1 gRPC service).
    pub listen: SocketAddr,
    /// Ollama URLs without a herd-node ("agentless"); the router polls them.
    pub nodes: Vec<String>,
    /// How often agentless nodes are polled.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// How often attached nodes should report.
    #[serde(with = "duration")]
    pub report_interval: Duration,
    /// A node that has not reported for this long is offline.
    #[serde(with = "duration")]
    pub report_timeout: Duration,
    /// On SIGTERM, how long requests in flight may take to finish before
    /// herd exits anyway (streams still open then are cut).
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Largest request body accepted, bytes (413 above).
    pub max_body_bytes: usize,
    /// Largest non-streamed upstream response buffered, bytes.
    pub max_response_bytes: usize,
    /// Time to connect to a node.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Time to the upstream's response headers (includes a cold load).
    #[serde(with = "duration")]
    pub response_timeout: Duration,
    /// Longest silence between two chunks of a streaming response.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Fallback models per model, tried in order when it cannot be served.
    pub fallback_models: std::collections::BTreeMap<String, Vec<String>>,
    /// A token nodes must present to attach.
    pub fleet_token: Option<String>,
    pub scoring: ScoringConfig,
    pub queue: QueueConfig,
    pub retry: RetryConfig,
    /// Where the store (and the JSON log) live; default: the user's data dir.
    pub data_dir: Option<std::path::PathBuf>,
    pub store: crate::store::StoreConfig,
    pub telemetry: crate::telemetry::TelemetryConfig,
    pub health: crate::health::HealthConfig,
    pub context: ContextConfig,
    pub log: LogConfig,
    pub mdns: MdnsConfig,
    /// Pull a model no node has to the node where it fits best.
    pub autopull: crate::retry::AutoPullConfig,
    /// Warm the runner-up when a model's queue builds.
    pub prewarm: crate::queueing::PrewarmConfig,
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
    /// The data directory in effect.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(crate::store::default_data_dir)
    }
}

pub use herd_proto::token::read_token_file;

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 11435)),
            nodes: Vec::new(),
            poll_interval: Duration::from_secs(5),
            report_interval: Duration::from_secs(2),
            report_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            max_body_bytes: 32 * 1024 * 1024,
            max_response_bytes: 256 * 1024 * 1024,
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(300),
            fallback_models: Default::default(),
            fleet_token: None,
            scoring: ScoringConfig::default(),
            queue: QueueConfig::default(),
            retry: RetryConfig::default(),
            data_dir: None,
            store: Default::default(),
            telemetry: Default::default(),
            health: Default::default(),
            context: Default::default(),
            log: Default::default(),
            mdns: Default::default(),
            autopull: Default::default(),
            prewarm: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("invalid value for {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl RouterConfig {
    pub fn from_toml(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_string(),
            source,
        })
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Reject values that would make the router misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
        for url in &self.nodes {
            let ok = url
                .parse::<http::Uri>()
                .ok()
                .is_some_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
            if !ok {
                return Err(ConfigError::Invalid {
                    name: "nodes",
                    reason: format!("{url:?} is not an http URL like http://10.0.0.5:11434"),
                });
            }
        }
        Ok(())
    }
}

/// Durations written as `"500ms"`, `"10s"`, `"2m"`, `"1h"`, or a number of seconds.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de};

    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s, 2m or 1h"))?;
        let secs = match unit.trim() {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
        };
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("{s:?} is not a valid duration"));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_millis() == 0 {
            s.serialize_str(&format!("{}s", d.as_secs()))
        } else {
            s.serialize_str(&format!("{}ms", d.as_millis()))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) if n.is_finite() && n >= 0.0 => Ok(Duration::from_secs_f64(n)),
            Raw::Num(n) => Err(de::Error::custom(format!("{n} is not a valid duration"))),
            Raw::Str(s) => parse(&s).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file_and_validate() {
        let c = RouterConfig::default();
        c.validate().unwrap();
        assert_eq!(c.listen.port(), 11435);
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_fields() {
        let c = RouterConfig::from_toml(
            "nodes = [\"http://127.0.0.1:11434\"]\nreport_timeout = \"30s\"\n[queue]\nmax_waiting = 3\nmax_wait = \"1500ms\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.report_timeout, Duration::from_secs(30));
        assert_eq!(c.queue.max_waiting, 3);
        assert_eq!(c.queue.max_wait, Duration::from_millis(1500));
        let err = RouterConfig::from_toml("lisen = \"x\"", "t").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let mut c = RouterConfig {
            nodes: vec!["not a url".into()],
            ..Default::default()
        };
        assert!(c.validate().is_err());
        c.nodes = vec!["https://10.0.0.5:11434".into()];
        assert!(c.validate().is_err(), "engines are reached over plain http");
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

    #[test]
    fn durations_parse() {
        assert_eq!(
            duration::parse("250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(duration::parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration::parse("3").unwrap(), Duration::from_secs(3));
        assert!(duration::parse("3 fortnights").is_err());
        assert!(duration::parse("x").is_err());
    }
}
