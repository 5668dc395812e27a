//! The subset hint: the data plane narrowing where a request may go.
//!
//! It arrives as `metadata_context.filter_metadata["envoy.lb.subset_hint"]`
//! key `x-gateway-destination-endpoint-subset`, either a list of strings
//! (the protocol's form) or one comma-separated string (what Envoy's
//! `header_to_metadata` filter produces). Entries are `ip:port` (that
//! endpoint only) or a bare `ip` (every port on that address, the
//! data-parallel case). Both implementations in the wild disagree on these
//! details (epp.md §1.6); herd accepts all of them.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::value::Kind;

use herd_layer::fleet::{FleetView, NodeId};

use crate::names::{SUBSET_KEY, SUBSET_NAMESPACE};

/// One entry of the hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// `ip:port`: that endpoint only.
    Exact(SocketAddr),
    /// A bare `ip`: every port on that address.
    AnyPort(IpAddr),
}

impl Entry {
    /// Parse `ip:port`, `[v6]:port`, `ip` or `[v6]`; anything else is `None`.
    fn parse(s: &str) -> Option<Entry> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Some(Entry::Exact(a));
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().ok().map(Entry::AnyPort)
    }

    fn matches(&self, addr: SocketAddr) -> bool {
        match self {
            Entry::Exact(a) => *a == addr,
            Entry::AnyPort(ip) => *ip == addr.ip(),
        }
    }
}

/// The raw hint entries, or `None` when the data plane sent no hint.
pub fn hint(metadata: Option<&Metadata>) -> Option<Vec<String>> {
    let value = metadata?
        .filter_metadata
        .get(SUBSET_NAMESPACE)?
        .fields
        .get(SUBSET_KEY)?;
    let mut out = Vec::new();
    let mut push = |s: &str| {
        out.extend(
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        )
    };
    match value.kind.as_ref()? {
        Kind::StringValue(s) => push(s),
        Kind::ListValue(l) => {
            for v in &l.values {
                if let Some(Kind::StringValue(s)) = &v.kind {
                    push(s);
                }
            }
        }
        _ => {}
    }
    Some(out)
}

/// The nodes the hint allows: those whose address matches an entry.
/// Invalid entries match nothing.
pub fn resolve(entries: &[String], view: &FleetView) -> Vec<NodeId> {
    let parsed: Vec<Entry> = entries
        .iter()
        .filter_map(|e| {
            let p = Entry::parse(e);
            if p.is_none() {
                tracing::debug!(entry = %e, "ignoring a subset hint entry that is not ip or ip:port");
            }
            p
        })
        .collect();
    view.nodes
        .values()
        .filter(|n| n.addr.is_some_and(|a| parsed.iter().any(|e| e.matches(a))))
        .map(|n| n.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{ListValue, Struct, Value};
    use herd_layer::fleet::{NodeState, Source};

    fn md(v: Kind) -> Metadata {
        let mut s = Struct::default();
        s.fields
            .insert(SUBSET_KEY.to_string(), Value { kind: Some(v) });
        let mut m = Metadata::default();
        m.filter_metadata.insert(SUBSET_NAMESPACE.to_string(), s);
        m
    }

    fn s(x: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(x.into())),
        }
    }

    #[test]
    fn lists_and_comma_strings_are_both_hints() {
        assert_eq!(hint(None), None);
        assert_eq!(hint(Some(&Metadata::default())), None);
        let l = md(Kind::ListValue(ListValue {
            values: vec![s("10.0.0.1:80"), s("10.0.0.2")],
        }));
        assert_eq!(hint(Some(&l)).unwrap(), vec!["10.0.0.1:80", "10.0.0.2"]);
        let c = md(Kind::StringValue("10.0.0.1:80, 10.0.0.2,".into()));
        assert_eq!(hint(Some(&c)).unwrap(), vec!["10.0.0.1:80", "10.0.0.2"]);
        let empty = md(Kind::ListValue(ListValue { values: vec![] }));
        assert_eq!(hint(Some(&empty)).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn ip_port_matches_exactly_and_bare_ip_any_port() {
        let mut view = FleetView::default();
        for (id, url) in [
            ("a", "http://10.0.0.1:80"),
            ("b", "http://10.0.0.1:81"),
            ("c", "http://10.0.0.2:80"),
            ("d", "http://[::1]:80"),
        ] {
            view.insert(NodeState::new(id.into(), Source::Agentless, url.into()));
        }
        let ids = |e: &[&str]| {
            let v: Vec<String> = e.iter().map(|s| s.to_string()).collect();
            resolve(&v, &view)
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&["10.0.0.1:81"]), vec!["b"]);
        assert_eq!(ids(&["10.0.0.1"]), vec!["a", "b"]);
        assert_eq!(ids(&["[::1]:80", "10.0.0.2"]), vec!["c", "d"]);
        assert_eq!(ids(&["[::1]"]), vec!["d"]);
        assert!(ids(&["nonsense", "10.9.9.9:80"]).is_empty());
    }
}
