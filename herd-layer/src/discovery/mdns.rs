//! The router's side of mDNS: advertise `_herd._tcp`, and list herd-nodes
//! that advertise `_herd-node._tcp` but have not attached (and why). The
//! names and TXT format both sides read live in [`herd_proto::mdns`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use herd_proto::mdns::*;

use crate::discovery::Attachments;

/// Most herd-node adverts remembered.
pub const MAX_SEEN: usize = 1024;

/// herd-nodes the router has seen advertised, by DNS-SD name.
#[derive(Debug, Default, Clone)]
pub struct SeenNodes {
    inner: Arc<Mutex<BTreeMap<String, SeenNode>>>,
}

/// A machine that advertises herd-node but is not attached, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Unattached {
    /// The node.
    #[serde(flatten)]
    pub node: SeenNode,
    /// Why it is not attached, as far as the router can tell.
    pub why: String,
}

impl SeenNodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SeenNode>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a node (tests and the browser). Bounded: adverts come from
    /// the network, so past [`MAX_SEEN`] names new ones are not kept.
    pub fn insert(&self, fullname: String, n: SeenNode) {
        let mut m = self.lock();
        if m.len() < MAX_SEEN || m.contains_key(&fullname) {
            m.insert(fullname, n);
        }
    }

    /// Forgets a node.
    pub fn remove(&self, fullname: &str) {
        self.lock().remove(fullname);
    }

    /// Advertised nodes that are not attached, with the router's best
    /// explanation: the reason it last refused them, or that they never
    /// tried.
    pub fn unattached(&self, attachments: &Attachments, token_required: bool) -> Vec<Unattached> {
        let attached = attachments.attached();
        self.lock()
            .values()
            .filter(|n| !attached.iter().any(|a| **a == *n.node_id))
            .map(|n| {
                let why = match attachments.refusal(&n.node_id) {
                    Some(reason) => format!("refused: {reason}"),
                    None if token_required => "has not attached; this router requires a fleet token — check the node's --fleet-token, and that it can reach this router".to_owned(),
                    None => "has not attached; it may be attached to another router (herd-node picks the most recently started one) or unable to reach this one".to_owned(),
                };
                Unattached {
                    node: n.clone(),
                    why,
                }
            })
            .collect()
    }
}

/// Browses `_herd-node._tcp` on `daemon` forever, keeping `seen` current.
pub async fn watch_nodes(daemon: ServiceDaemon, seen: SeenNodes) {
    let rx = match daemon.browse(NODE_SERVICE) {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(error = %e, "cannot browse for herd-nodes");
            return;
        }
    };
    while let Ok(ev) = rx.recv_async().await {
        match ev {
            ServiceEvent::ServiceResolved(s) => match parse_node(&s) {
                Ok(n) => seen.insert(s.get_fullname().to_owned(), n),
                Err(why) => {
                    tracing::debug!(service = %s.get_fullname(), %why, "ignored a herd-node advert")
                }
            },
            ServiceEvent::ServiceRemoved(_, fullname) => seen.remove(&fullname),
            _ => {}
        }
    }
}

/// The router side, running: its advert and the node browser.
#[derive(Debug)]
pub struct RouterMdns {
    /// Withdrawn on drop.
    pub advert: Advert,
    /// Nodes seen.
    pub seen: SeenNodes,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RouterMdns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Advertises the router and starts listing herd-nodes.
pub fn start_router(scope: &Scope, ad: &RouterAdvertisement) -> Result<RouterMdns, MdnsError> {
    let advert = advertise(scope, ad)?;
    let seen = SeenNodes::default();
    let task = tokio::spawn(watch_nodes(advert.daemon().clone(), seen.clone()));
    Ok(RouterMdns { advert, seen, task })
}
