//! Finding the router by mDNS, continuously.
//!
//! The Python anchor looked once at start and never again; a router that
//! restarted elsewhere stranded its nodes. Here a browser runs for the life
//! of the agent and publishes the router to use on a `watch` channel; the
//! agent re-attaches whenever the choice changes — the router restarted on a
//! new port, moved address, or a second router appeared.
//!
//! Which router, when several advertise: the most recently started one
//! (`started` in its TXT), ties broken by name — see
//! [`herd_proto::mdns::choose_router`]. Every node applies the
//! same rule to the same adverts, so a fleet converges on one router, and a
//! freshly started router takes the fleet over from a stale one.

use std::collections::BTreeMap;

use herd_proto::mdns::{
    self, Advert, MdnsError, NODE_SERVICE, ROUTER_SERVICE, RouterAd, Scope, ServiceDaemon,
    ServiceEvent,
};
use tokio::sync::watch;

/// A running browser. Dropping it stops browsing.
pub struct RouterFinder {
    urls: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
    daemon: ServiceDaemon,
}

impl std::fmt::Debug for RouterFinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterFinder")
            .field("url", &*self.urls.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for RouterFinder {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.daemon.shutdown();
    }
}

impl RouterFinder {
    /// Starts browsing `_herd._tcp` within `scope`. `has_token` only decides
    /// whether to warn about a router that requires one.
    pub fn start(scope: &Scope, has_token: bool) -> Result<Self, MdnsError> {
        let daemon = mdns::daemon(scope)?;
        let events = daemon.browse(ROUTER_SERVICE)?;
        let (tx, urls) = watch::channel(None);
        let task = tokio::spawn(follow(events, tx, has_token));
        tracing::info!(
            ?scope,
            "looking for a herd router over mDNS ({ROUTER_SERVICE})"
        );
        Ok(Self { urls, task, daemon })
    }

    /// The chosen router's URL, updated as routers come and go.
    pub fn urls(&self) -> watch::Receiver<Option<String>> {
        self.urls.clone()
    }
}

/// Keeps `tx` on the router [`mdns::choose_router`] picks from the adverts
/// seen so far.
pub async fn follow(
    events: mdns::BrowseReceiver,
    tx: watch::Sender<Option<String>>,
    has_token: bool,
) {
    let mut routers: BTreeMap<String, RouterAd> = BTreeMap::new();
    while let Ok(ev) = events.recv_async().await {
        match ev {
            ServiceEvent::ServiceResolved(s) => match mdns::parse_router(&s) {
                Ok(ad) => {
                    tracing::debug!(router = %ad.fullname, url = %ad.url, "router advert");
                    routers.insert(ad.fullname.clone(), ad);
                }
                Err(why) => {
                    tracing::warn!(service = %s.get_fullname(), %why, "ignoring a router advert")
                }
            },
            ServiceEvent::ServiceRemoved(_, fullname) => {
                if routers.remove(&fullname).is_some() {
                    tracing::info!(router = %fullname, "router withdrew its advert");
                }
            }
            _ => continue,
        }
        let chosen = mdns::choose_router(routers.values()).cloned();
        let url = chosen.as_ref().map(|r| r.url.clone());
        let changed = tx.send_if_modified(|cur| {
            if *cur == url {
                false
            } else {
                *cur = url.clone();
                true
            }
        });
        if changed && let Some(r) = &chosen {
            tracing::info!(router = %r.fullname, url = %r.url, version = %r.version, seen = routers.len(), "router chosen");
            if r.token_required && !has_token {
                tracing::error!(router = %r.url, "this router requires a fleet token and none was given: use --fleet-token, --fleet-token-file or HERD_NODE_FLEET_TOKEN");
            }
        }
    }
}

/// Advertises this node as `_herd-node._tcp` (so a router lists it even
/// before it attaches).
pub fn advertise_node(scope: &Scope, node_id: &str, engine_port: u16) -> Option<Advert> {
    match mdns::advertise_node(scope, node_id, engine_port) {
        Ok(a) => Some(a),
        Err(MdnsError::Off(_)) => None,
        Err(e) => {
            tracing::warn!(error = %e, service = NODE_SERVICE, "cannot advertise this node");
            None
        }
    }
}
