//! Limits per caller: requests per minute, tokens per minute and requests at
//! once, for each tenant.
//!
//! Who the caller is, is the edge's business: the proxy knows its callers
//! by their API keys, herd-epp by a header the gateway sets (Envoy AI
//! Gateway puts the caller's identity in one). Either way the edge puts a
//! [`Tenant`] — a name and its [`Limits`] — on the request, and this layer,
//! the same in both shapes, enforces it. A request without a tenant is not
//! limited.
//!
//! Why token buckets: "60 per minute" should let a quiet caller send its
//! minute's worth at once and then one a second, and never more than 60 in
//! any minute — a fixed window would allow 120 across its boundary.
//!
//! Tokens are known late. At admission herd has only its estimate of the
//! prompt, so that much is charged (and must fit in what is left); while
//! the answer streams, each chunk the leaf relays is charged as an output
//! token ([`crate::routed::Meter`]); at the end the engine's own counts
//! replace both, and the difference is charged or given back. A stream
//! that ends up costing more than was left puts the tenant in debt: its
//! next request waits until the debt is paid, as the `Retry-After` says.
//!
//! The layer sits under the trace layer (a refused request is still traced
//! and counted for its tenant) and above retry (a request that takes three
//! attempts is still one request). A refusal is a [`RateLimited`] error,
//! which [`crate::stack::failure`] turns into a 429 with `Retry-After` and
//! OpenAI's `x-ratelimit-*` headers; an admitted request's response carries
//! the same headers, and holds its concurrency slot until its body ends.

mod bucket;
mod future;
mod layer;
mod service;
mod table;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use bucket::Bucket;
pub use future::ResponseFuture;
pub use layer::LimitLayer;
pub use service::Limited;
pub use table::{Admitted, Limiter, SavedTenant, Ticket, Usage};

/// What one tenant may use. `None`: no limit of that kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Requests admitted per minute (a full minute may come at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Prompt and output tokens per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
    /// Requests in flight at once (held until the answer's end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent: Option<u32>,
}

impl Limits {
    /// Each limit of `self`, or `other`'s where `self` sets none.
    pub fn or(self, other: Limits) -> Limits {
        Limits {
            requests_per_minute: self.requests_per_minute.or(other.requests_per_minute),
            tokens_per_minute: self.tokens_per_minute.or(other.tokens_per_minute),
            concurrent: self.concurrent.or(other.concurrent),
        }
    }

    /// Whether no limit is set.
    pub fn is_none(&self) -> bool {
        *self == Limits::default()
    }

    /// A limit of zero would refuse everything forever; say so.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("requests_per_minute", self.requests_per_minute),
            ("tokens_per_minute", self.tokens_per_minute),
            ("concurrent", self.concurrent),
        ] {
            if v == Some(0) {
                return Err(format!(
                    "{name} = 0 would refuse every request; leave it unset for no limit (to block a key, revoke it)"
                ));
            }
        }
        Ok(())
    }
}

/// A caller whose usage is limited: its name (an API key's name in the
/// proxy, the identity header's value in herd-epp) and what it may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    /// The tenant's name, as traces, metrics and the limiter know it.
    pub id: Arc<str>,
    /// Its limits.
    pub limits: Limits,
}

/// The longest tenant name taken from a header.
pub const MAX_TENANT_ID: usize = 128;

/// The tenant every malformed identity header is counted as (so a bad
/// header is limited like the others, not let through unlimited).
pub const INVALID_TENANT: &str = "(invalid)";

/// `[limits]`: limits per tenant, shared by the proxy and herd-epp.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// herd-epp: the request header naming the caller (e.g. `x-user-id`);
    /// requests without it are not limited. The proxy ignores it: it knows
    /// its callers by their API keys.
    pub header: Option<String>,
    /// Limits of a tenant that sets none of its own (each kind separately).
    pub default: Limits,
    /// Limits per tenant name; they win over `default`, and an API key's
    /// own limits win over both.
    pub tenants: BTreeMap<String, Limits>,
    /// Most tenants tracked at once; beyond, the least recently seen idle
    /// one is forgotten (it starts again with full buckets).
    pub max_tenants: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header: None,
            default: Limits::default(),
            tenants: BTreeMap::new(),
            max_tenants: 10_000,
        }
    }
}

impl LimitsConfig {
    /// The limits of tenant `id` whose own limits are `own`.
    pub fn limits_for(&self, id: &str, own: Limits) -> Limits {
        let named = self.tenants.get(id).copied().unwrap_or_default();
        own.or(named).or(self.default)
    }

    /// The tenant a request's headers name (herd-epp), when `header` is set
    /// and present. A value that is not 1–128 visible ASCII characters is
    /// counted as the one tenant [`INVALID_TENANT`].
    pub fn tenant_from(&self, headers: &http::HeaderMap) -> Option<Tenant> {
        let name = self.header.as_deref()?;
        let v = headers.get(name)?;
        let id = v
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|s| {
                !s.is_empty() && s.len() <= MAX_TENANT_ID && s.bytes().all(|b| b.is_ascii_graphic())
            })
            .unwrap_or(INVALID_TENANT);
        Some(Tenant {
            id: Arc::from(id),
            limits: self.limits_for(id, Limits::default()),
        })
    }

    /// Reject values that would misbehave.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(h) = &self.header
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Err(format!("header {h:?} is not a valid header name"));
        }
        if self.max_tenants == 0 {
            return Err("max_tenants must be at least 1".into());
        }
        self.default.check().map_err(|e| format!("default: {e}"))?;
        for (name, l) in &self.tenants {
            l.check().map_err(|e| format!("tenants.{name}: {e}"))?;
        }
        Ok(())
    }
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Requests at once.
    Concurrent,
    /// The limiter tracks as many tenants as it may, all busy.
    Tenants,
}

impl Which {
    /// The name in metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Which::Requests => "requests",
            Which::Tokens => "tokens",
            Which::Concurrent => "concurrent",
            Which::Tenants => "tenants",
        }
    }
}

/// A tenant's quota of one kind, as the `x-ratelimit-*` headers say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The limit per minute.
    pub limit: u32,
    /// What is left now.
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// A tenant's state as the response headers tell it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// Requests per minute.
    pub requests: Option<Quota>,
    /// Tokens per minute.
    pub tokens: Option<Quota>,
    /// Requests at once: the limit and what is left.
    pub concurrent: Option<(u32, u32)>,
}

impl RateHeaders {
    /// The headers, OpenAI's names (`x-ratelimit-limit-requests`, …) plus
    /// `x-ratelimit-limit-concurrent` / `-remaining-concurrent`.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(q) = &self.requests {
            v.push(("x-ratelimit-limit-requests", q.limit.to_string()));
            v.push(("x-ratelimit-remaining-requests", q.remaining.to_string()));
            v.push(("x-ratelimit-reset-requests", go_duration(q.reset)));
        }
        if let Some(q) = &self.tokens {
            v.push(("x-ratelimit-limit-tokens", q.limit.to_string()));
            v.push(("x-ratelimit-remaining-tokens", q.remaining.to_string()));
            v.push(("x-ratelimit-reset-tokens", go_duration(q.reset)));
        }
        if let Some((limit, left)) = self.concurrent {
            v.push(("x-ratelimit-limit-concurrent", limit.to_string()));
            v.push(("x-ratelimit-remaining-concurrent", left.to_string()));
        }
        v
    }
}

/// A duration as OpenAI writes its reset headers (Go's notation): `20ms`,
/// `1.5s`, `6m0s`, `1h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let s = format!("{:.3}", d.as_secs_f64());
        let s = s.trim_end_matches('0').trim_end_matches('.');
        return format!("{s}s");
    }
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

/// A tenant is over one of its limits: 429, and when to come back.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct RateLimited {
    /// The tenant.
    pub tenant: Arc<str>,
    /// The limit that refused it (the one that frees last, when several do).
    pub which: Which,
    /// When the request would be admitted, as far as is known now.
    pub retry_after: Duration,
    /// The tenant's quotas now.
    pub headers: RateHeaders,
    /// A sentence for the caller.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_durations_read_like_openai_s() {
        assert_eq!(go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_millis(59_999)), "59.999s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    #[test]
    fn own_limits_win_then_named_then_default() {
        let mut c = LimitsConfig {
            default: Limits {
                requests_per_minute: Some(10),
                tokens_per_minute: Some(1000),
                concurrent: None,
            },
            ..Default::default()
        };
        c.tenants.insert(
            "a".into(),
            Limits {
                tokens_per_minute: Some(5000),
                ..Default::default()
            },
        );
        let own = Limits {
            concurrent: Some(2),
            ..Default::default()
        };
        assert_eq!(
            c.limits_for("a", own),
            Limits {
                requests_per_minute: Some(10),
                tokens_per_minute: Some(5000),
                concurrent: Some(2)
            }
        );
        assert_eq!(c.limits_for("b", Limits::default()), c.default);
    }

    #[test]
    fn tenants_come_from_the_configured_header_only() {
        let mut h = http::HeaderMap::new();
        h.insert("x-user-id", "alice".parse().unwrap());
        assert_eq!(LimitsConfig::default().tenant_from(&h), None);
        let c = LimitsConfig {
            header: Some("x-user-id".into()),
            ..Default::default()
        };
        assert_eq!(&*c.tenant_from(&h).unwrap().id, "alice");
        h.insert("x-user-id", "a b".parse().unwrap());
        assert_eq!(&*c.tenant_from(&h).unwrap().id, INVALID_TENANT);
        h.insert("x-user-id", "x".repeat(200).parse().unwrap());
        assert_eq!(&*c.tenant_from(&h).unwrap().id, INVALID_TENANT);
        assert_eq!(c.tenant_from(&http::HeaderMap::new()), None);
    }

    #[test]
    fn zero_limits_and_bad_headers_are_refused() {
        let mut c = LimitsConfig::default();
        c.validate().unwrap();
        c.default.concurrent = Some(0);
        assert!(c.validate().unwrap_err().contains("concurrent"));
        c.default.concurrent = None;
        c.header = Some("bad header".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn headers_are_openai_s_names() {
        let h = RateHeaders {
            requests: Some(Quota {
                limit: 60,
                remaining: 0,
                reset: Duration::from_secs(60),
            }),
            tokens: None,
            concurrent: Some((2, 1)),
        };
        let p = h.pairs();
        assert!(p.contains(&("x-ratelimit-limit-requests", "60".into())));
        assert!(p.contains(&("x-ratelimit-remaining-requests", "0".into())));
        assert!(p.contains(&("x-ratelimit-reset-requests", "1m0s".into())));
        assert!(p.contains(&("x-ratelimit-remaining-concurrent", "1".into())));
        assert!(!p.iter().any(|(k, _)| k.ends_with("tokens")));
    }
}
