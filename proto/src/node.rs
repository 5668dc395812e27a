//! Node identity on the wire: ids and engine URLs, validated the same way
//! by the router that accepts them and the agent that sends them.

use std::net::SocketAddr;

/// The longest model name herd accepts (Ollama's own names are far shorter).
pub const MAX_MODEL_NAME: usize = 256;

/// Whether `m` can be a model name: 1 to [`MAX_MODEL_NAME`] bytes of
/// letters, digits and `._-:/@+` (registry, namespace, tag and digest
/// forms included). Everything a client or a node names a model by is
/// checked with this before it is used as a key.
pub fn model_name_ok(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= MAX_MODEL_NAME
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/@+".contains(&b))
}

/// Node ids are names people read: 1–128 printable characters without spaces.
pub fn valid_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 128 {
        return Err("node_id must be 1 to 128 characters".into());
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))
    {
        return Err(format!(
            "node_id {id:?} may only contain letters, digits and - _ . : @"
        ));
    }
    Ok(())
}

/// The parsed socket address of a URL's authority, when it is an IP literal
/// (`localhost` is taken as 127.0.0.1).
pub fn addr_of(url: &str) -> Option<SocketAddr> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse().ok()?
    };
    Some(SocketAddr::new(ip, port))
}

/// An engine's base URL as herd uses it: `http://host:port`, nothing more.
///
/// herd appends API paths to this URL and relays what comes back, so a path,
/// query or credentials in it would let whoever sets it (a node's report, a
/// config line) point herd at any URL it can reach. Engines are reached over
/// plain HTTP on the LAN: `https` is refused, as is anything without a host.
/// Without a port, Ollama's 11434 is meant.
pub fn engine_url(url: &str) -> Result<String, String> {
    let uri: http::Uri = url
        .trim()
        .parse()
        .map_err(|_| format!("{url:?} is not a URL like http://10.0.0.5:11434"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "{url:?}: engines are reached over plain http:// (like http://10.0.0.5:11434)"
        ));
    }
    let auth = uri
        .authority()
        .ok_or_else(|| format!("{url:?} names no host"))?;
    if auth.as_str().contains('@') {
        return Err(format!(
            "{url:?}: credentials in an engine URL are not supported"
        ));
    }
    let host = auth.host();
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    // The URI parser is lenient about hosts (`a[` passes); herd builds
    // URLs from this one, so the host must be a name, an IPv4 address or a
    // bracketed IPv6 address — nothing else.
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        }
    };
    if !host_ok {
        return Err(format!("{url:?}: {host:?} is not a host name or address"));
    }
    let port = auth.port_u16().unwrap_or(11434);
    Ok(format!("http://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        assert!(valid_node_id("mac-studio.local:1@x_y").is_ok());
        assert!(valid_node_id("").is_err());
        assert!(valid_node_id("a b").is_err());
        assert!(valid_node_id(&"x".repeat(129)).is_err());
    }

    #[test]
    fn engine_urls_keep_scheme_host_and_port_only() {
        assert_eq!(
            engine_url("http://10.0.0.5:11434/api/x?y=1#z").unwrap(),
            "http://10.0.0.5:11434"
        );
        assert_eq!(
            engine_url(" http://mac.local ").unwrap(),
            "http://mac.local:11434"
        );
        assert_eq!(engine_url("http://[::1]:9/").unwrap(), "http://[::1]:9");
        for bad in [
            "https://10.0.0.5:11434",
            "ftp://x",
            "http://user:pw@10.0.0.5:1",
            "10.0.0.5:11434",
            "not a url",
            "",
            // Found by fuzzing: the URI parser takes `a[` as a host.
            "http://a[:1]",
            "http://[zz]:1",
        ] {
            assert!(engine_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_of_urls() {
        assert_eq!(
            addr_of("http://10.0.0.5:11434"),
            Some("10.0.0.5:11434".parse().unwrap())
        );
        assert_eq!(
            addr_of("http://localhost"),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            addr_of("http://[::1]:9/x"),
            Some("[::1]:9".parse().unwrap())
        );
        assert_eq!(addr_of("http://mac.local:11434"), None);
    }
}
