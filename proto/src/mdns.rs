//! herd on mDNS / DNS-SD: the service names, the TXT format and the
//! interface scope, shared by routers and nodes.
//!
//! Routers (`herd`, `herd-epp`) advertise `_herd._tcp.local.` with their
//! port and a TXT record (`version`, `protocol`, `token` = `required` |
//! `none`, `id`, `started`). herd-node browses for it continuously and
//! attaches; it also advertises itself as `_herd-node._tcp.local.` so a router
//! can list machines that run herd-node but have not attached, and say why.
//!
//! The TXT format is defined once, here, and both sides use these functions,
//! so a router and a node cannot drift apart. Everything read off the network
//! is validated ([`parse_router`], [`parse_node`]): a peer we cannot
//! understand is ignored with a reason, never trusted half-way.
//!
//! Multicast goes only where it is meant to: a router listening on loopback
//! does not advertise at all (no other machine could reach it), one bound to
//! an address advertises on that address's interface only, and
//! `--mdns-interface` restricts it to one named interface.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};
use serde::Serialize;

/// Events of one browse.
pub type BrowseReceiver = mdns_sd::Receiver<ServiceEvent>;

/// Service type of routers.
pub const ROUTER_SERVICE: &str = "_herd._tcp.local.";
/// Service type of herd-node agents.
pub const NODE_SERVICE: &str = "_herd-node._tcp.local.";
/// The herd.v1 protocol version advertised and accepted.
pub const PROTOCOL: &str = "1";

/// Why mDNS could not start.
#[derive(Debug, thiserror::Error)]
pub enum MdnsError {
    /// The daemon or a registration failed.
    #[error("mDNS: {0}")]
    Daemon(#[from] mdns_sd::Error),
    /// Nothing to do: mDNS is off for this scope.
    #[error("mDNS is off ({0})")]
    Off(String),
}

/// Where multicast may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every interface (a real deployment).
    All,
    /// One named interface, e.g. `en0` or a test veth.
    Interface(String),
    /// The interface carrying this address.
    Addr(IpAddr),
    /// No mDNS, and why.
    Off(String),
}

impl Scope {
    /// The scope for a server bound to `listen`: loopback → off; a
    /// specific address → its interface; unspecified → all (or `interface`
    /// when one is named).
    pub fn for_listen(listen: IpAddr, enabled: bool, interface: Option<&str>) -> Scope {
        if !enabled {
            return Scope::Off("disabled".into());
        }
        if let Some(i) = interface.filter(|i| !i.is_empty()) {
            return Scope::Interface(i.to_owned());
        }
        if listen.is_loopback() {
            return Scope::Off(format!(
                "listening on {listen}, which no other machine can reach"
            ));
        }
        if listen.is_unspecified() {
            Scope::All
        } else {
            Scope::Addr(listen)
        }
    }
}

/// A daemon restricted to `scope`.
pub fn daemon(scope: &Scope) -> Result<ServiceDaemon, MdnsError> {
    let kinds = match scope {
        Scope::Off(why) => return Err(MdnsError::Off(why.clone())),
        Scope::All => None,
        Scope::Interface(n) => Some(IfKind::Name(n.clone())),
        Scope::Addr(a) => Some(IfKind::Addr(*a)),
    };
    let d = ServiceDaemon::new()?;
    if let Some(k) = kinds {
        d.disable_interface(IfKind::All)?;
        d.enable_interface(k)?;
    }
    Ok(d)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A label safe in a host name.
fn host_label(s: &str) -> String {
    let l: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(60)
        .collect();
    l.trim_matches('-').to_owned()
}

/// A registration that is withdrawn (with a goodbye packet) when dropped.
pub struct Advert {
    daemon: ServiceDaemon,
    fullname: String,
}

impl std::fmt::Debug for Advert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advert")
            .field("fullname", &self.fullname)
            .finish()
    }
}

impl Advert {
    /// The full DNS-SD name, e.g. `herd-1a2b._herd._tcp.local.`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// The daemon, to browse with the same interface scope.
    pub fn daemon(&self) -> &ServiceDaemon {
        &self.daemon
    }
}

impl Drop for Advert {
    fn drop(&mut self) {
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            // Give the goodbye packet a moment to leave.
            let _ = rx.recv_timeout(Duration::from_millis(500));
        }
        let _ = self.daemon.shutdown();
    }
}

/// What a router says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterAdvertisement {
    /// `herd` or `herd-epp`.
    pub kind: String,
    /// Unique per process, e.g. the router id.
    pub id: String,
    /// The port serving herd.v1 (`Fleet.Attach`).
    pub port: u16,
    /// Whether nodes must present a fleet token.
    pub token_required: bool,
}

/// Advertises a router (`herd`, or `herd-epp` — its owner calls this too)
/// as `_herd._tcp.local.` until the returned [`Advert`] is dropped.
pub fn advertise(scope: &Scope, ad: &RouterAdvertisement) -> Result<Advert, MdnsError> {
    let d = daemon(scope)?;
    let instance = format!("{}-{}", host_label(&ad.kind), host_label(&ad.id));
    let props = [
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("protocol", PROTOCOL.to_owned()),
        (
            "token",
            if ad.token_required {
                "required"
            } else {
                "none"
            }
            .to_owned(),
        ),
        ("id", ad.id.clone()),
        ("kind", ad.kind.clone()),
        ("started", now_ms().to_string()),
    ];
    register(d, scope, ROUTER_SERVICE, &instance, ad.port, &props[..])
}

/// Advertises a herd-node as `_herd-node._tcp.local.` (port = its engine's).
pub fn advertise_node(scope: &Scope, node_id: &str, engine_port: u16) -> Result<Advert, MdnsError> {
    let d = daemon(scope)?;
    let instance = format!("herd-node-{}", host_label(node_id));
    let props = [
        ("node_id", node_id.to_owned()),
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("protocol", PROTOCOL.to_owned()),
    ];
    register(d, scope, NODE_SERVICE, &instance, engine_port, &props[..])
}

/// Registers one service on `d`, returning the guard that withdraws it.
pub fn register(
    d: ServiceDaemon,
    scope: &Scope,
    service: &str,
    instance: &str,
    port: u16,
    props: &[(&str, String)],
) -> Result<Advert, MdnsError> {
    let host = format!("{}.local.", host_label(instance));
    let info = match scope {
        Scope::Addr(a) => ServiceInfo::new(service, instance, &host, *a, port, props)?,
        _ => ServiceInfo::new(service, instance, &host, "", port, props)?.enable_addr_auto(),
    };
    let fullname = info.get_fullname().to_owned();
    d.register(info)?;
    tracing::info!(service = %fullname, port, ?scope, "advertising over mDNS");
    Ok(Advert {
        daemon: d,
        fullname,
    })
}

/// A router found on the network, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterAd {
    /// DNS-SD full name.
    pub fullname: String,
    /// `http://ip:port` of its herd.v1 endpoint.
    pub url: String,
    /// When the router started (its own clock), Unix ms; 0 when not given.
    pub started_ms: i64,
    /// Whether it wants a fleet token.
    pub token_required: bool,
    /// Its version.
    pub version: String,
}

/// Reads a resolved `_herd._tcp` service. Refuses one that speaks another
/// protocol version, has no usable address or port 0.
pub fn parse_router(s: &ResolvedService) -> Result<RouterAd, String> {
    let txt = |k: &str| s.get_property_val_str(k).map(str::to_owned);
    match txt("protocol").as_deref() {
        Some(PROTOCOL) => {}
        Some(other) => return Err(format!("speaks herd.v{other}, we speak v{PROTOCOL}")),
        None => return Err("no protocol in TXT".into()),
    }
    if s.get_port() == 0 {
        return Err("port 0".into());
    }
    let ip = best_address(s.get_addresses().iter().map(|a| a.to_ip_addr()))
        .ok_or("no usable address")?;
    let url = match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{}", s.get_port()),
        IpAddr::V6(v6) => format!("http://[{v6}]:{}", s.get_port()),
    };
    Ok(RouterAd {
        fullname: s.get_fullname().to_owned(),
        url,
        started_ms: txt("started")
            .and_then(|v| v.parse().ok())
            .filter(|v: &i64| *v > 0)
            .unwrap_or(0),
        token_required: txt("token").as_deref() == Some("required"),
        version: txt("version")
            .unwrap_or_default()
            .chars()
            .take(32)
            .collect(),
    })
}

/// IPv4 first (lowest, for determinism), then global IPv6; never a
/// link-local v6 (it needs a scope id we cannot put in a URL portably).
fn best_address(addrs: impl Iterator<Item = IpAddr>) -> Option<IpAddr> {
    let mut v: Vec<IpAddr> = addrs
        .filter(|a| match a {
            IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_unicast_link_local(),
        })
        .collect();
    v.sort_by_key(|a| (a.is_ipv6(), *a));
    v.into_iter().next()
}

/// The router a node should attach to among those it sees: the one started
/// most recently (a restarted or newly added router takes the fleet over),
/// ties broken by name. Every node applies the same rule to the same
/// adverts, so the fleet converges on one router.
pub fn choose_router<'a>(routers: impl Iterator<Item = &'a RouterAd>) -> Option<&'a RouterAd> {
    routers.max_by(|a, b| {
        a.started_ms
            .cmp(&b.started_ms)
            .then_with(|| b.fullname.cmp(&a.fullname))
    })
}

/// A herd-node seen on the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeenNode {
    /// The id it will attach with.
    pub node_id: String,
    /// Where it is.
    pub address: String,
    /// Its version.
    pub version: String,
}

/// Reads a resolved `_herd-node._tcp` service.
pub fn parse_node(s: &ResolvedService) -> Result<SeenNode, String> {
    let node_id = s
        .get_property_val_str("node_id")
        .ok_or("no node_id in TXT")?
        .to_owned();
    crate::node::valid_node_id(&node_id)?;
    let ip = best_address(s.get_addresses().iter().map(|a| a.to_ip_addr()))
        .ok_or("no usable address")?;
    Ok(SeenNode {
        node_id,
        address: match ip {
            IpAddr::V4(v4) => format!("{v4}:{}", s.get_port()),
            IpAddr::V6(v6) => format!("[{v6}]:{}", s.get_port()),
        },
        version: s
            .get_property_val_str("version")
            .unwrap_or_default()
            .chars()
            .take(32)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_follows_the_listen_address() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let one: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(matches!(Scope::for_listen(lo, true, None), Scope::Off(_)));
        assert_eq!(Scope::for_listen(any, true, None), Scope::All);
        assert_eq!(Scope::for_listen(one, true, None), Scope::Addr(one));
        assert_eq!(
            Scope::for_listen(lo, true, Some("veth0")),
            Scope::Interface("veth0".into())
        );
        assert!(matches!(
            Scope::for_listen(any, false, Some("x")),
            Scope::Off(_)
        ));
        assert!(matches!(
            daemon(&Scope::Off("t".into())),
            Err(MdnsError::Off(_))
        ));
    }

    fn ad(name: &str, started: i64) -> RouterAd {
        RouterAd {
            fullname: name.into(),
            url: format!("http://{name}"),
            started_ms: started,
            token_required: false,
            version: String::new(),
        }
    }

    #[test]
    fn newest_router_wins_deterministically() {
        let a = ad("a", 100);
        let b = ad("b", 200);
        let c = ad("c", 200);
        assert_eq!(choose_router([&a, &b].into_iter()), Some(&b));
        assert_eq!(choose_router([&b, &a].into_iter()), Some(&b));
        // Same start: the smaller name, whatever the order seen.
        assert_eq!(choose_router([&c, &b].into_iter()), Some(&b));
        assert_eq!(choose_router([&b, &c].into_iter()), Some(&b));
        assert_eq!(choose_router(std::iter::empty()), None);
    }

    #[test]
    fn addresses_prefer_ipv4_and_skip_link_local() {
        let a: Vec<IpAddr> = ["fe80::1", "10.0.0.9", "10.0.0.2", "2001:db8::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            best_address(a.into_iter()),
            Some("10.0.0.2".parse().unwrap())
        );
        let v6: Vec<IpAddr> = ["fe80::1", "2001:db8::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            best_address(v6.into_iter()),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(best_address(std::iter::empty()), None);
    }

    #[test]
    fn host_labels_are_safe() {
        assert_eq!(host_label("mac studio.local"), "mac-studio-local");
        assert_eq!(host_label("--x--"), "x");
    }
}
