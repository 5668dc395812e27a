//! Who may do what on herd's HTTP API: client API keys, the parts of the
//! API, and the zero-config defaults.
//!
//! herd listens on a LAN, where anyone may call it. Inference stays as open
//! as Ollama's own API until the operator makes a key, so every client that
//! worked against Ollama works against herd. What changes the fleet or
//! reveals what others asked is another matter: with no key made, it is
//! allowed only from the router's own machine (loopback), and refused to
//! everyone else with a sentence saying how to make an admin key. Once any
//! key exists, every part needs one. Each part can be opened or closed
//! explicitly (`[auth]`).
//!
//! The parts ([`Part`]), each route's part in [`policy`]:
//!
//! | part | what | default with no key / with keys |
//! |---|---|---|
//! | `inference` | the inference APIs, model lists, `/api/show`, `/api/version` | open / any key |
//! | `fleet` | fleet state: `/fleet/status`, `/fleet/explain`, `/fleet/health`, `/fleet/context`, `/fleet/pulls`, stored benchmarks, `/metrics` | open / any key |
//! | `traces` | what clients asked: `/fleet/traces`, `/fleet/analytics/usage` | loopback / admin key |
//! | `public` | the dashboard's page (`/dashboard`, its files, `/dashboard/info`) | open / open |
//! | `admin` | what changes the fleet: node commands, pull/push/delete/copy/create/blobs, unload everywhere, auto-pull of a model no node has, benchmarks, settings, keys | loopback / admin key |
//!
//! The check runs as a tower layer on the matched routes ([`AuthLayer`]);
//! what it learnt about the caller rides on the request as a [`Caller`]
//! (its key, if any, and whether it may do admin things) so the inference
//! handler can name the tenant for the limit layer, apply the key's model
//! allow-list, and allow an unload or an auto-pull only to an admin.

pub mod keys;
mod layer;
pub mod policy;
mod service;

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

pub use keys::{KeyError, KeyRecord, Keys, NewKey, Scope};
pub use layer::AuthLayer;
pub use service::{Authenticate, ResponseFuture};

use crate::error::ClientError;

/// How one part of the API is guarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Open while no key exists (loopback only for `traces` and `admin`);
    /// a key of the part's scope once any key exists.
    #[default]
    Auto,
    /// Anyone, no key needed (a valid key still names the tenant).
    Open,
    /// Clients on this machine without a key; others need a key of the
    /// part's scope.
    Loopback,
    /// A key of the part's scope, from anywhere.
    Key,
}

/// A part of the API (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// Inference and model lists.
    Inference,
    /// Fleet state.
    Fleet,
    /// Traces and usage analytics.
    Traces,
    /// What changes the fleet.
    Admin,
    /// The dashboard's page files (`/dashboard`, its scripts and styles):
    /// static, they reveal nothing, and a browser cannot send a key when it
    /// opens a page — so always open. The page then calls the other parts
    /// with the key entered in it.
    Public,
}

impl Part {
    /// The part's name (its `[auth]` key).
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Inference => "inference",
            Part::Fleet => "fleet",
            Part::Traces => "traces",
            Part::Admin => "admin",
            Part::Public => "public",
        }
    }

    /// The scope a key needs for this part.
    pub fn scope(self) -> Scope {
        match self {
            Part::Inference | Part::Fleet | Part::Public => Scope::Inference,
            Part::Traces | Part::Admin => Scope::Admin,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Part::Inference => "inference",
            Part::Public => "the dashboard's page",
            Part::Fleet => "reading the fleet's state",
            Part::Traces => "reading traces and usage analytics (what clients asked)",
            Part::Admin => {
                "changing the fleet (node commands, pulling or deleting models, unloading everywhere, benchmarks, settings, keys)"
            }
        }
    }
}

/// `[auth]`: who may call each part of the API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Inference and model lists.
    pub inference: Access,
    /// Fleet state and `/metrics`.
    pub fleet: Access,
    /// Traces and usage analytics.
    pub traces: Access,
    /// What changes the fleet.
    pub admin: Access,
    /// Most keys herd holds (each is a metrics label value).
    pub max_keys: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            inference: Access::Auto,
            fleet: Access::Auto,
            traces: Access::Auto,
            admin: Access::Auto,
            max_keys: 1024,
        }
    }
}

impl AuthConfig {
    /// How `part` is guarded, with `auto` resolved for whether any key exists.
    pub fn access(&self, part: Part, keys_exist: bool) -> Access {
        let set = match part {
            Part::Public => return Access::Open,
            Part::Inference => self.inference,
            Part::Fleet => self.fleet,
            Part::Traces => self.traces,
            Part::Admin => self.admin,
        };
        match set {
            Access::Auto if keys_exist => Access::Key,
            Access::Auto => match part {
                Part::Inference | Part::Fleet | Part::Public => Access::Open,
                Part::Traces | Part::Admin => Access::Loopback,
            },
            other => other,
        }
    }
}

/// What a request presented.
#[derive(Clone, Debug)]
pub enum Presented {
    /// No key.
    None,
    /// Something that is not a key in force (unknown, revoked, a dummy).
    Unknown,
    /// A key in force.
    Valid(Arc<KeyRecord>),
}

/// The keys a request carries: `Authorization: Bearer …` and `x-api-key`
/// (Anthropic's clients); valid if any of them is.
pub fn presented(headers: &HeaderMap, keys: &Keys) -> Presented {
    let bearer = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let api_key = headers
        .get_all("x-api-key")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim);
    let mut any = false;
    for k in bearer.chain(api_key).filter(|k| !k.is_empty()).take(4) {
        any = true;
        if let Some(r) = keys.verify(k) {
            return Presented::Valid(r);
        }
    }
    if any {
        Presented::Unknown
    } else {
        Presented::None
    }
}

/// What the auth layer learnt about a caller, in the request's extensions.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The caller's key, when it presented one in force.
    pub key: Option<Arc<KeyRecord>>,
    /// Whether it may also do admin things (an unload everywhere, an
    /// auto-pull) — decided by the same rules as the admin part.
    pub admin: bool,
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No key, and one is needed.
    Missing,
    /// A key that is not in force.
    Invalid,
    /// A key whose scope does not cover the part.
    Scope,
    /// Not from this machine, and no key exists yet that could allow it.
    NotLoopback,
}

/// Whether a caller may use `part` guarded by `access` (already resolved,
/// see [`AuthConfig::access`]): `loopback` when the connection comes from
/// this machine.
pub fn decide(
    part: Part,
    access: Access,
    loopback: bool,
    key: &Presented,
    keys_exist: bool,
) -> Result<(), Denied> {
    let scoped = |k: &KeyRecord| {
        if k.scope == Scope::Admin || part.scope() == Scope::Inference {
            Ok(())
        } else {
            Err(Denied::Scope)
        }
    };
    match access {
        Access::Open => Ok(()),
        Access::Loopback if loopback => Ok(()),
        Access::Loopback | Access::Key | Access::Auto => match key {
            Presented::Valid(k) => scoped(k),
            Presented::Unknown => Err(Denied::Invalid),
            Presented::None if access == Access::Loopback && !keys_exist => {
                Err(Denied::NotLoopback)
            }
            Presented::None => Err(Denied::Missing),
        },
    }
}

/// The refusal as the client is told it (then shaped in its dialect).
pub fn refusal(d: Denied, part: Part, key: &Presented) -> ClientError {
    refusal_for(d, part, part.what(), key)
}

/// The refusal of an admin action the inference API carries (an unload
/// everywhere) to a caller that is not an admin.
pub fn admin_refusal(caller: Option<&Caller>, keys: &Keys, what: &str) -> ClientError {
    let (d, key) = match caller.and_then(|c| c.key.clone()) {
        Some(k) => (Denied::Scope, Presented::Valid(k)),
        None if keys.any() => (Denied::Missing, Presented::None),
        None => (Denied::NotLoopback, Presented::None),
    };
    refusal_for(d, Part::Admin, what, &key)
}

fn refusal_for(d: Denied, part: Part, what: &str, key: &Presented) -> ClientError {
    let how = "send it as `Authorization: Bearer <key>` or `x-api-key: <key>`";
    match d {
        Denied::Missing => ClientError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "{what} on this herd needs an API key: {how} (an admin makes keys on the router machine with `herd keys create <name>`)"
            ),
        )
        .code("missing_api_key")
        .header("www-authenticate", "Bearer realm=\"herd\""),
        Denied::Invalid => ClientError::new(
            StatusCode::UNAUTHORIZED,
            "the API key is not valid on this herd (unknown or revoked)",
        )
        .code("invalid_api_key")
        .header("www-authenticate", "Bearer realm=\"herd\", error=\"invalid_token\""),
        Denied::Scope => {
            let (name, scope) = match key {
                Presented::Valid(k) => (k.name.as_str(), k.scope.as_str()),
                _ => ("?", "?"),
            };
            ClientError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the key {name:?} has scope {scope}; {what} needs a key with scope {} (`herd keys create <name> --scope admin`)",
                    part.scope().as_str()
                ),
            )
            .code("insufficient_scope")
        }
        Denied::NotLoopback => ClientError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{what} is allowed only from the router's own machine until an admin key exists. On the router machine run `herd keys create <name> --scope admin`, then {how}; or open this part explicitly with `[auth] {} = \"open\"`",
                part.as_str()
            ),
        )
        .code("admin_key_required"),
    }
}

/// Whether `ip` is this machine's loopback (IPv4-mapped too).
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scope: Scope) -> Presented {
        let mut r = keys::record(
            &NewKey {
                name: "k".into(),
                scope: Some(scope),
                ..Default::default()
            },
            "herd-x",
        )
        .unwrap();
        r.scope = scope;
        Presented::Valid(Arc::new(r))
    }

    #[test]
    fn with_no_key_inference_is_open_and_admin_is_loopback_only() {
        let c = AuthConfig::default();
        let a = c.access(Part::Inference, false);
        assert_eq!(
            decide(Part::Inference, a, false, &Presented::Unknown, false),
            Ok(()),
            "a dummy key is ignored"
        );
        let a = c.access(Part::Admin, false);
        assert_eq!(
            decide(Part::Admin, a, true, &Presented::None, false),
            Ok(())
        );
        assert_eq!(
            decide(Part::Admin, a, false, &Presented::None, false),
            Err(Denied::NotLoopback)
        );
        let a = c.access(Part::Traces, false);
        assert_eq!(
            decide(Part::Traces, a, false, &Presented::None, false),
            Err(Denied::NotLoopback)
        );
        assert_eq!(c.access(Part::Fleet, false), Access::Open);
    }

    #[test]
    fn with_keys_everything_needs_one_of_the_right_scope() {
        let c = AuthConfig::default();
        for part in [Part::Inference, Part::Fleet, Part::Traces, Part::Admin] {
            let a = c.access(part, true);
            assert_eq!(a, Access::Key);
            assert_eq!(
                decide(part, a, true, &Presented::None, true),
                Err(Denied::Missing),
                "{part:?}: loopback too"
            );
            assert_eq!(
                decide(part, a, false, &Presented::Unknown, true),
                Err(Denied::Invalid)
            );
            assert_eq!(decide(part, a, false, &key(Scope::Admin), true), Ok(()));
        }
        let a = c.access(Part::Admin, true);
        assert_eq!(
            decide(Part::Admin, a, false, &key(Scope::Inference), true),
            Err(Denied::Scope)
        );
        assert_eq!(
            decide(Part::Inference, a, false, &key(Scope::Inference), true),
            Ok(())
        );
    }

    #[test]
    fn explicit_settings_win_over_auto() {
        let c = AuthConfig {
            inference: Access::Open,
            admin: Access::Loopback,
            traces: Access::Key,
            ..Default::default()
        };
        assert_eq!(c.access(Part::Inference, true), Access::Open);
        let a = c.access(Part::Admin, true);
        assert_eq!(decide(Part::Admin, a, true, &Presented::None, true), Ok(()));
        assert_eq!(
            decide(Part::Admin, a, false, &Presented::None, true),
            Err(Denied::Missing)
        );
        let a = c.access(Part::Traces, false);
        assert_eq!(
            decide(Part::Traces, a, true, &Presented::None, false),
            Err(Denied::Missing)
        );
    }

    #[test]
    fn loopback_is_127_8_and_1_including_mapped() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("127.9.9.9".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("10.0.0.1".parse().unwrap()));
        assert!(!is_loopback("::ffff:10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn refusals_say_what_to_do() {
        let e = refusal(Denied::NotLoopback, Part::Admin, &Presented::None);
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert!(
            e.message.contains("herd keys create <name> --scope admin"),
            "{}",
            e.message
        );
        let e = refusal(Denied::Missing, Part::Inference, &Presented::None);
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert!(e.headers.iter().any(|(k, _)| *k == "www-authenticate"));
        let e = refusal(Denied::Scope, Part::Admin, &key(Scope::Inference));
        assert!(e.message.contains("scope inference"), "{}", e.message);
    }
}
